"""The three PATCH bodies the API server accepts, applied to plain JSON values.

* JSON merge patch (RFC 7386): objects merge, ``null`` deletes, anything else replaces.
* JSON patch (RFC 6902): add, remove, replace, move, copy, test over JSON pointers (RFC 6901).
* Strategic merge patch (apimachinery ``strategicpatch``): like merge patch, but lists declared
  ``patchStrategy: merge`` merge (lists of maps by their ``patchMergeKey``, lists of primitives as a
  set), with the directives ``$patch: replace|delete``, ``$retainKeys``, ``$setElementOrder/<f>`` and
  ``$deleteFromPrimitiveList/<f>``. The order of a merged list follows ``mergeSlice`` /
  ``normalizeElementOrder`` (patch items in patch order, live-only items interleaved by live order;
  an item new to the list goes before the live ones it is not ordered against).

Errors: ``PatchError`` is a malformed patch (the server answers 400 BadRequest); ``PatchConflict``
is a JSON patch that does not apply, e.g. a failed ``test`` (422 Invalid, as the apiserver does).
"""
from __future__ import annotations

import copy
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

DIRECTIVE = "$patch"
RETAIN_KEYS = "$retainKeys"
SET_ORDER = "$setElementOrder/"
DELETE_FROM_PRIMITIVE = "$deleteFromPrimitiveList/"


class PatchError(ValueError):
    """The patch document is malformed (HTTP 400)."""


class PatchConflict(ValueError):
    """A well-formed JSON patch that cannot be applied to this object (HTTP 422)."""


# ---------------------------------------------------------------------------------------------
# RFC 7386


def merge_patch(target: Any, patch: Any) -> Any:
    """RFC 7386 MergePatch(target, patch); neither argument is modified."""
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    result = copy.deepcopy(target) if isinstance(target, dict) else {}
    for key, value in patch.items():
        if value is None:
            result.pop(key, None)
        else:
            result[key] = merge_patch(result.get(key), value)
    return result


# ---------------------------------------------------------------------------------------------
# RFC 6902 / RFC 6901


def json_equal(a: Any, b: Any) -> bool:
    """JSON value equality: 1 == 1.0, but true != 1 (Python's == conflates bools and numbers)."""
    if isinstance(a, bool) or isinstance(b, bool):
        return isinstance(a, bool) and isinstance(b, bool) and a == b
    if isinstance(a, int | float) and isinstance(b, int | float):
        return a == b
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(json_equal(a[k], b[k]) for k in a)
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(json_equal(x, y) for x, y in zip(a, b, strict=True))
    return type(a) is type(b) and a == b


def parse_pointer(pointer: Any) -> list[str]:
    if not isinstance(pointer, str):
        raise PatchConflict(f"JSON pointer must be a string, not {pointer!r}")
    if pointer == "":
        return []
    if not pointer.startswith("/"):
        raise PatchConflict(f"JSON pointer {pointer!r} must start with '/'")
    return [tok.replace("~1", "/").replace("~0", "~") for tok in pointer[1:].split("/")]


def _index(token: str, size: int, *, allow_end: bool) -> int:
    if token == "-" and allow_end:
        return size
    if not token.isdigit() or (len(token) > 1 and token[0] == "0"):
        raise PatchConflict(f"invalid array index {token!r}")
    idx = int(token)
    if idx > size or (idx == size and not allow_end):
        raise PatchConflict(f"array index {idx} out of bounds (length {size})")
    return idx


def _resolve(doc: Any, tokens: list[str]) -> Any:
    node = doc
    for tok in tokens:
        if isinstance(node, dict):
            if tok not in node:
                raise PatchConflict(f"missing key {tok!r}")
            node = node[tok]
        elif isinstance(node, list):
            node = node[_index(tok, len(node), allow_end=False)]
        else:
            raise PatchConflict(f"cannot descend into a scalar at {tok!r}")
    return node


def _add(doc: Any, tokens: list[str], value: Any) -> Any:
    if not tokens:
        return value
    parent = _resolve(doc, tokens[:-1])
    last = tokens[-1]
    if isinstance(parent, dict):
        parent[last] = value
    elif isinstance(parent, list):
        parent.insert(_index(last, len(parent), allow_end=True), value)
    else:
        raise PatchConflict("add: the parent is not an object or array")
    return doc


def _remove(doc: Any, tokens: list[str]) -> tuple[Any, Any]:
    if not tokens:
        raise PatchConflict("remove: cannot remove the whole document")
    parent = _resolve(doc, tokens[:-1])
    last = tokens[-1]
    if isinstance(parent, dict):
        if last not in parent:
            raise PatchConflict(f"remove: missing key {last!r}")
        return doc, parent.pop(last)
    if isinstance(parent, list):
        return doc, parent.pop(_index(last, len(parent), allow_end=False))
    raise PatchConflict("remove: the parent is not an object or array")


def _op_field(op: dict[str, Any], name: str) -> Any:
    if name not in op:
        raise PatchConflict(f"operation {op.get('op')!r} is missing {name!r}")
    return op[name]


def json_patch(doc: Any, ops: Any) -> Any:
    """Apply an RFC 6902 patch atomically (on a copy); raises PatchError / PatchConflict."""
    if not isinstance(ops, list) or not all(isinstance(op, dict) for op in ops):
        raise PatchError("json: cannot unmarshal into Go value of type jsonpatch.Patch (want an array of objects)")
    result = copy.deepcopy(doc)
    for op in ops:
        result = _apply_op(result, op)
    return result


def _apply_op(doc: Any, op: dict[str, Any]) -> Any:
    kind = op.get("op")
    path = parse_pointer(_op_field(op, "path"))
    if kind == "add":
        return _add(doc, path, copy.deepcopy(_op_field(op, "value")))
    if kind == "remove":
        return _remove(doc, path)[0]
    if kind == "replace":
        value = copy.deepcopy(_op_field(op, "value"))
        if not path:
            return value
        _resolve(doc, path)  # the target must exist
        doc, _ = _remove(doc, path)
        return _add(doc, path, value)
    if kind in ("move", "copy"):
        source = parse_pointer(_op_field(op, "from"))
        if kind == "move":
            if source == path:
                return doc
            if path[: len(source)] == source:
                raise PatchConflict("move: 'from' cannot be a prefix of 'path'")
            doc, value = _remove(doc, source)
        else:
            value = copy.deepcopy(_resolve(doc, source))
        return _add(doc, path, value)
    if kind == "test":
        if not json_equal(_resolve(doc, path), _op_field(op, "value")):
            raise PatchConflict(f"test failed at {op['path']!r}")
        return doc
    raise PatchConflict(f"unexpected operation {kind!r}")


# ---------------------------------------------------------------------------------------------
# Strategic merge patch


@dataclass(frozen=True)
class Field:
    """Patch metadata of one Go struct field: ``patchStrategy``, ``patchMergeKey`` and its sub-fields.

    For a list field, ``fields`` describes the list's elements. Unknown fields: maps merge, lists replace.
    """

    strategy: str = ""
    key: str = ""
    fields: Mapping[str, Field] = field(default_factory=dict)

    def child(self, name: str) -> Field:
        return self.fields.get(name, _PLAIN)


_PLAIN = Field()

OBJECT_META = Field(fields={
    "finalizers": Field("merge"),
    "ownerReferences": Field("merge", "uid"),
})

# core/v1 Node (k8s.io/api/core/v1/types.go): NodeSpec.PodCIDRs is `patchStrategy:"merge"` (a set of
# strings); NodeSpec.Taints has no strategy (replace); NodeStatus.Conditions and .Addresses merge by "type".
NODE = Field(fields={
    "metadata": OBJECT_META,
    "spec": Field(fields={"podCIDRs": Field("merge")}),
    "status": Field(fields={
        "conditions": Field("merge", "type"),
        "addresses": Field("merge", "type"),
    }),
})


def _kind(value: Any) -> str:
    if isinstance(value, dict):
        return "map"
    if isinstance(value, list):
        return "list"
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, int | float):
        return "number"
    return type(value).__name__


def strategic_merge_patch(original: Any, patch: Any, schema: Field = NODE) -> dict[str, Any]:
    """StrategicMergeMapPatch(original, patch, schema); neither argument is modified."""
    if not isinstance(patch, dict):
        raise PatchError("json: cannot unmarshal into Go value of type map[string]interface {} (want an object)")
    base = copy.deepcopy(original) if isinstance(original, dict) else {}
    return _merge_map(base, copy.deepcopy(patch), schema)


def _directive_map(directive: Any, patch: dict[str, Any]) -> dict[str, Any]:
    if directive == "replace":
        patch.pop(DIRECTIVE)
        return patch
    if directive == "delete":
        return {}
    raise PatchError(f"Unknown patch type: {directive}, in map: {patch}")


def _merge_map(original: dict[str, Any], patch: dict[str, Any], schema: Field) -> dict[str, Any]:
    if DIRECTIVE in patch:
        return _directive_map(patch[DIRECTIVE], patch)
    _retain_keys(original, patch)
    _set_element_orders(original, patch, schema)
    for key, value in patch.items():
        if key.startswith(DELETE_FROM_PRIMITIVE):
            name = key[len(DELETE_FROM_PRIMITIVE):]
            if not isinstance(value, list):
                raise PatchError("invalid patch format of $deleteFromPrimitiveList")
            if isinstance(original.get(name), list):
                original[name] = [x for x in original[name] if not any(json_equal(x, d) for d in value)]
            continue
        child = schema.child(key)
        if value is None:
            original.pop(key, None)  # IgnoreUnmatchedNulls: a null for a missing key is dropped
        elif key not in original or _kind(original[key]) != _kind(value):
            original[key] = _fresh(value, child)
        elif isinstance(value, dict):
            original[key] = value if child.strategy == "replace" else _merge_map(original[key], value, child)
        elif isinstance(value, list):
            original[key] = _merge_slice(original[key], value, child) if child.strategy == "merge" else value
        else:
            original[key] = value
    return original


def _fresh(value: Any, schema: Field) -> Any:
    """A value for a key the original lacks: directives inside it still apply (the typed decode drops them)."""
    if isinstance(value, dict):
        return _merge_map({}, value, schema)
    if isinstance(value, list) and schema.strategy == "merge":
        return _merge_slice([], value, schema)
    return value


def _retain_keys(original: dict[str, Any], patch: dict[str, Any]) -> None:
    if RETAIN_KEYS not in patch:
        return
    keep = patch.pop(RETAIN_KEYS)
    if not isinstance(keep, list):
        raise PatchError("invalid patch format of retainKeys")
    for key, value in patch.items():
        if value is not None and not key.startswith("$") and key not in keep:
            raise PatchError("invalid patch format of retainKeys")
    for key in [k for k in original if k not in keep]:
        del original[key]


def _set_element_orders(original: dict[str, Any], patch: dict[str, Any], schema: Field) -> None:
    for directive in [k for k in patch if k.startswith(SET_ORDER)]:
        order = patch.pop(directive)
        name = directive[len(SET_ORDER):]
        if not isinstance(order, list):
            raise PatchError("invalid patch format of setElementOrder list")
        child = schema.child(name)
        live, patched = original.get(name), patch.get(name)
        if live is None and patched is None:
            continue
        merged: Any
        if isinstance(live, list) and isinstance(patched, list):
            merged = _merge_slice(live, patched, child) if child.strategy == "merge" else patched
        else:
            merged = patched if isinstance(patched, list) else live
        if not isinstance(merged, list):
            raise PatchError(f"{name}: a list was expected")
        in_order, server_only = _partition(merged, order, child.key)
        original[name] = _normalize(in_order, server_only, order, live if isinstance(live, list) else [], child.key)
        patch.pop(name, None)


def _identity(item: Any, key: str) -> Any:
    return item.get(key) if key and isinstance(item, dict) else item


def _position(items: list[Any], item: Any, key: str) -> int:
    ident = _identity(item, key)
    for i, other in enumerate(items):
        if json_equal(_identity(other, key), ident):
            return i
    return -1


def _partition(merged: list[Any], by: list[Any], key: str) -> tuple[list[Any], list[Any]]:
    inside = [x for x in merged if _position(by, x, key) >= 0]
    outside = [x for x in merged if _position(by, x, key) < 0]
    return inside, outside


def _normalize(patch_items: list[Any], server_only: list[Any], patch_order: list[Any], server_order: list[Any],
               key: str) -> list[Any]:
    """normalizeElementOrder: sort each side by its own order, then mergeSortedSlice by live order."""
    def sort_by(items: list[Any], order: list[Any]) -> list[Any]:
        return sorted(items, key=lambda x: (_position(order, x, key) < 0, _position(order, x, key)))

    left, right = sort_by(server_only, server_order), sort_by(patch_items, patch_order)
    out: list[Any] = []
    i = j = 0
    while i < len(left) or j < len(right):
        if j >= len(right):
            out.append(left[i])
            i += 1
        elif i >= len(left):
            out.append(right[j])
            j += 1
        else:
            li, ri = _position(server_order, left[i], key), _position(server_order, right[j], key)
            if li >= 0 and ri >= 0 and li < ri:
                out.append(left[i])
                i += 1
            else:
                out.append(right[j])
                j += 1
    return out


def _merge_slice(original: list[Any], patch: list[Any], schema: Field) -> list[Any]:
    if not original and not patch:
        return original
    kinds = {_kind(x) for x in original + patch}
    if len(kinds) > 1:
        raise PatchError(f"list element types are not identical: {original} {patch}")
    if "list" in kinds:
        raise PatchError("lists of lists are not supported")
    if "map" not in kinds:
        merged: list[Any] = []
        for item in original + patch:
            if not any(json_equal(item, m) for m in merged):
                merged.append(item)
        inside, outside = _partition(merged, patch, "")
        return _normalize(inside, outside, patch, original, "")
    if not schema.key:
        raise PatchError("cannot merge lists without merge key")
    original, patch = _special_elements(original, patch, schema.key)
    merged = list(original)
    for item in patch:
        if schema.key not in item:
            raise PatchError(f"map: {item} does not contain declared merge key: {schema.key}")
        at = _position(merged, item, schema.key)
        if at >= 0:
            merged[at] = _merge_map(merged[at], item, schema)
        else:
            merged.append(_merge_map({}, item, schema))
    inside, outside = _partition(merged, patch, schema.key)
    return _normalize(inside, outside, patch, original, schema.key)


def _special_elements(original: list[Any], patch: list[Any], key: str) -> tuple[list[Any], list[Any]]:
    """mergeSliceWithSpecialElements: ``{"$patch": "delete", key: v}`` and ``{"$patch": "replace"}``."""
    plain: list[Any] = []
    replace = False
    for item in patch:
        directive = item.get(DIRECTIVE)
        if directive is None:
            plain.append(item)
        elif directive == "delete":
            if key not in item:
                raise PatchError(f"map: {item} does not contain declared merge key: {key}")
            original = [x for x in original if not json_equal(x.get(key), item[key])]
        elif directive == "replace":
            replace = True
        elif directive == "merge":
            raise PatchError("merging lists cannot yet be specified in the patch")
        else:
            raise PatchError(f"Unknown patch type: {directive}, in map: {item}")
    if replace:
        return plain, []
    return original, plain
