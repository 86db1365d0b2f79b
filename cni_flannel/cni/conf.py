"""Stdin: the request configuration (SPEC.md "Section 1: Network configuration format").

Decoding, the name and version rules, JSON-schema validation and prevResult.
Unknown keys are always kept: the spec says runtimes and plugins pass them through.
"""
from __future__ import annotations

from ..records import record
from . import jsonlite  # not json: ~4.5 ms per frozen exec (re, enum)
from .env import is_valid_id
from .errors import DECODING_FAILURE, INVALID_CONFIG, CNIError
from .result import Result
from .version import require_supported

TYPE_CHECKING = False
if TYPE_CHECKING:  # annotations only: typing costs ~2 ms per frozen exec
    from typing import Any

DEFAULT_VERSION = "0.1.0"  # create.DecodeVersion: a config without cniVersion is 0.1.0


@record
class NetConf:
    raw: dict[str, Any]
    name: str
    cni_version: str
    type: str

    @property
    def prev_result(self) -> Result | None:
        prev = self.raw.get("prevResult")
        if not prev:
            return None
        return parse_prev_result(prev, self.cni_version)

    def runtime_config(self) -> dict[str, Any]:
        rc = self.raw.get("runtimeConfig")
        return rc if isinstance(rc, dict) else {}


def decode_json(data: bytes, what: str = "network config on stdin") -> Any:
    """json.loads, with a repeated key's last occurrence deciding its position (Go: last wins)."""
    from .gojson import last_wins_pairs

    try:
        return jsonlite.loads(data, object_pairs_hook=last_wins_pairs)
    except UnicodeDecodeError as exc:
        raise CNIError(DECODING_FAILURE, f"failed to decode {what}: not UTF-8",
                       f"byte offset {exc.start}: the config must be UTF-8 JSON") from None
    except ValueError as exc:
        import json  # already loaded: jsonlite leaves every error to json

        if not isinstance(exc, json.JSONDecodeError):
            raise
        raise CNIError(DECODING_FAILURE,
                       f"failed to decode {what}: {exc.msg} at line {exc.lineno} column {exc.colno}",
                       "the config must be a single JSON object") from None
    except RecursionError:
        raise CNIError(DECODING_FAILURE, f"failed to decode {what}: nesting too deep",
                       "the config must be a plain JSON object") from None


def version_of(raw: Any) -> str:
    """The config's cniVersion, defaulting to 0.1.0, for errors as well as results."""
    if isinstance(raw, dict):
        from .gojson import get_folded

        v = get_folded(raw, "cniVersion")
        if isinstance(v, str) and v:
            return v
    return DEFAULT_VERSION


def parse_netconf(data: bytes, schema: dict[str, Any] | None = None) -> NetConf:
    """Decode, fold keys as Go's encoding/json does (gojson), check name and version, validate."""
    raw = decode_json(data)
    if not isinstance(raw, dict):
        raise CNIError(DECODING_FAILURE, "network config on stdin is not a JSON object",
                       f"got a JSON {_json_type(raw)}")
    from .gojson import fold
    from .schemas import netconf

    raw = fold(raw, schema if schema is not None else _common_schema(netconf))
    version = raw.get("cniVersion", DEFAULT_VERSION)
    if not isinstance(version, str):
        raise CNIError(DECODING_FAILURE, "field cniVersion must be a string",
                       f"got {jsonlite.dumps(version)[:80]}")
    require_supported(version or DEFAULT_VERSION)
    name = raw.get("name")
    if not isinstance(name, str) or not name:
        raise CNIError(INVALID_CONFIG, "missing network name in field name",
                       "set \"name\" in the network config")
    if not is_valid_id(name) or len(name) > 253:
        raise CNIError(INVALID_CONFIG, f"invalid network name {name[:80]!r} in field name",
                       "it must match ^[a-zA-Z0-9][a-zA-Z0-9_.\\-]*$")
    if schema is not None:
        validate(raw, schema)
    ptype = raw.get("type", "")
    return NetConf(raw=raw, name=name, cni_version=version or DEFAULT_VERSION,
                   type=ptype if isinstance(ptype, str) else "")


_COMMON: list[dict[str, Any]] = []


def _common_schema(netconf: Any) -> dict[str, Any]:
    if not _COMMON:
        _COMMON.append(netconf({}))
    return _COMMON[0]


def _json_type(value: Any) -> str:
    return {list: "array", str: "string", bool: "boolean", int: "number", float: "number",
            type(None): "null"}.get(type(value), "value")


def parse_prev_result(prev: Any, conf_version: str) -> Result:
    """version.ParsePrevResult: a prevResult without cniVersion takes the config's."""
    if not isinstance(prev, dict):
        raise CNIError(DECODING_FAILURE, "field prevResult is not a JSON object",
                       "prevResult must be the previous plugin's result")
    prev = dict(prev)
    prev.setdefault("cniVersion", conf_version)
    res = Result.from_dict(prev)
    res.cni_version = conf_version
    return res


def json_path(parts: Any) -> str:
    out = ""
    for p in parts:
        out += f"[{p}]" if isinstance(p, int) else (f".{p}" if out else str(p))
    return out or "(top level)"


def validate(raw: dict[str, Any], schema: dict[str, Any]) -> None:
    """Validate against a plugin's JSON schema; code 7 naming the path of the first error.

    The fast subset validator decides; jsonschema is imported only to word an error.
    """
    from .schemas import first_error
    from .trace import span

    with span("schema"):
        fast = first_error(raw, schema)
    if fast is None:
        return
    import jsonschema

    validator = jsonschema.Draft202012Validator(schema)
    error = jsonschema.exceptions.best_match(validator.iter_errors(raw))
    if error is None:  # cannot happen while the two agree (tests/unit/test_schemas.py)
        raise CNIError(INVALID_CONFIG, f"invalid network config: field {json_path(fast)}",
                       "see the plugin's documented options")
    where = json_path(error.absolute_path)
    value = jsonlite.dumps(error.instance, default=str)
    if len(value) > 120:
        value = value[:117] + "..."
    allowed = _describe(error)
    raise CNIError(INVALID_CONFIG, f"invalid network config: field {where}: {_message(error)[:200]}",
                   f"got {value}; {allowed}")


def _message(error: Any) -> str:
    """jsonschema's message with JSON spellings: it prints Python reprs (None, True, 'x')."""
    shown = jsonlite.dumps(error.instance, default=str)
    if len(shown) > 60:
        shown = shown[:57] + "..."
    expected = error.validator_value
    if error.validator == "type":
        return f"{shown} is not of type {jsonlite.dumps(expected)}"
    if error.validator == "enum":
        return f"{shown} is not one of {', '.join(jsonlite.dumps(v) for v in expected)}"
    if error.validator == "required":
        missing = [k for k in expected if isinstance(error.instance, dict) and k not in error.instance]
        return f"{jsonlite.dumps(missing[0] if missing else expected)} is a required property"
    if error.validator in ("minimum", "maximum"):
        word = "less" if error.validator == "minimum" else "greater"
        return f"{shown} is {word} than the {error.validator} of {expected}"
    if error.validator in ("minLength", "minItems"):
        return f"{shown} is too short (at least {expected})"
    if error.validator == "maxLength":
        return f"{shown} is too long (at most {expected})"
    if error.validator == "pattern":
        return f"{shown} does not match {jsonlite.dumps(expected)}"
    return str(error.message)


def _describe(error: Any) -> str:
    schema = error.schema if isinstance(error.schema, dict) else {}
    if "description" in schema:
        return f"expected {schema['description']}"
    if error.validator == "type":
        return f"expected type {error.validator_value}"
    if error.validator == "enum":
        return f"allowed values are {', '.join(jsonlite.dumps(v) for v in error.validator_value)}"
    if error.validator in ("minimum", "maximum"):
        return f"{error.validator} is {error.validator_value}"
    return f"the schema requires {error.validator} {jsonlite.dumps(error.validator_value, default=str)[:80]}"
