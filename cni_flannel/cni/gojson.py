"""Config keys decoded the way Go's encoding/json decodes them into the reference's structs.

Go matches a JSON key to a struct field ignoring case, lets the last of two
spellings win, and leaves a field at its zero value for ``null``. The Go
plugins therefore accept ``"RuntimeConfig"``, ``"isdefaultgateway"`` and
``"routes": null``. ``fold`` applies those rules once, right after decoding and
before validation, driven by each plugin's schema (cni_flannel.cni.schemas):

- a key listed in an object schema's ``properties`` is a struct field: any
  spelling is renamed to the listed one; the last spelling in the document wins;
- ``null`` for such a key is "absent" (a Go zero value): it is dropped, and it
  clears an earlier spelling of an array or object (Go sets a slice, map or
  pointer to nil) but leaves an earlier scalar as it was (Go: "no effect");
- unknown keys pass through unchanged, with their spelling and value;
- an object schema marked ``GO_MAP`` or without ``properties`` is a Go map:
  its keys are exact and its values, nulls included, are kept as they are.

The document order that "last wins" needs comes from ``last_wins_pairs``, the
``object_pairs_hook`` of our JSON decoding.
"""
from __future__ import annotations

from .schemas import GO_MAP

TYPE_CHECKING = False
if TYPE_CHECKING:  # annotations only: typing costs ~2 ms per frozen exec
    from typing import Any

_CANON: dict[int, tuple[dict[str, Any], dict[str, str]]] = {}


class Repeated(dict):  # type: ignore[type-arg]
    """An object with a key given more than once; ``pairs`` keeps every occurrence in order."""

    pairs: list[tuple[str, Any]]


def last_wins_pairs(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    """The ``object_pairs_hook``: a plain dict, or a ``Repeated`` one when a key repeats.

    A repeated key's value is its last one; ``fold`` replays ``pairs`` so that a
    later ``null`` is judged as Go judges it (no effect on an earlier scalar).
    """
    out = dict(pairs)
    if len(out) == len(pairs):
        return out
    rep = Repeated()
    for key, value in pairs:
        rep.pop(key, None)  # a repeated key sits where it last appears
        rep[key] = value
    rep.pairs = pairs
    return rep


def _canon(props: dict[str, Any]) -> dict[str, str]:
    """lower-cased key -> the schema's spelling, cached per properties object."""
    hit = _CANON.get(id(props))
    if hit is None or hit[0] is not props:
        hit = (props, {k.lower(): k for k in props})
        _CANON[id(props)] = hit
    return hit[1]


def _clears(schema: dict[str, Any]) -> bool:
    """Does null reset an earlier value (a Go slice, map or pointer)?"""
    return schema.get("type") in ("array", "object") or "items" in schema or "properties" in schema


def fold(value: Any, schema: dict[str, Any]) -> Any:
    """``value`` with the keys the schema knows renamed and their nulls dropped (see module doc)."""
    if isinstance(value, dict):
        props = schema.get("properties")
        if props is None or schema.get(GO_MAP):
            return value
        canon = _canon(props)
        out: dict[str, Any] = {}
        pairs = value.pairs if isinstance(value, Repeated) else value.items()
        for key, item in pairs:
            known = canon.get(key.lower())
            if known is None:
                out.pop(key, None)
                out[key] = item
            elif item is None:
                if known in out and _clears(props[known]):
                    del out[known]
            else:
                out.pop(known, None)  # the later spelling wins, at its own position
                out[known] = fold(item, props[known])
        return out
    if isinstance(value, list):
        items = schema.get("items")
        if isinstance(items, dict) and ("properties" in items or "items" in items):
            return [fold(v, items) for v in value]
    return value


def get_folded(obj: dict[str, Any], key: str) -> Any:
    """One key of a not yet folded object, as Go would read it (last spelling, null = None)."""
    lk = key.lower()
    found = None
    for k, v in obj.items():
        if k.lower() == lk and v is not None:
            found = v
    return found
