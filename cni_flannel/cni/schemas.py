"""JSON-schema fragments shared by the plugins' config schemas.

Schemas never forbid unknown keys: the spec says they must be passed through.
"""
from __future__ import annotations

import re
from typing import Any

CIDR = {"type": "string", "minLength": 1, "maxLength": 64, "description": "a CIDR such as 10.1.0.0/24"}
IP = {"type": "string", "minLength": 1, "maxLength": 64, "description": "an IP address"}
ROUTE = {"type": "object", "required": ["dst"], "properties": {"dst": CIDR, "gw": IP}}
POOL = {
    "type": "object", "required": ["subnet"],
    "properties": {"subnet": CIDR, "rangeStart": IP, "rangeEnd": IP, "gateway": IP},
}
RANGE_SET = {"type": "array", "minItems": 1, "items": POOL,
             "description": "a list of pools such as [{\"subnet\": \"10.1.0.0/24\"}]"}
DNS = {
    "type": "object",
    "properties": {
        "nameservers": {"type": "array", "items": {"type": "string"}},
        "domain": {"type": "string"},
        "search": {"type": "array", "items": {"type": "string"}},
        "options": {"type": "array", "items": {"type": "string"}},
    },
}
ABS_PATH = {"type": "string", "pattern": "^/", "maxLength": 4096, "description": "an absolute path"}
ATTACHMENTS = {"type": "array", "items": {"type": "object",
                                          "properties": {"containerID": {"type": "string"},
                                                         "ifname": {"type": "string"}}}}

IPAM_HOST_LOCAL = {
    "type": "object",
    "properties": {
        "type": {"type": "string"},
        "ranges": {"type": "array", "items": RANGE_SET},
        "subnet": CIDR, "rangeStart": IP, "rangeEnd": IP, "gateway": IP,
        "routes": {"type": "array", "items": ROUTE},
        "dataDir": ABS_PATH,
        "resolvConf": {"type": "string"},
    },
}


def netconf(properties: dict[str, Any], required: list[str] | None = None) -> dict[str, Any]:
    """A plugin config schema: the common keys plus the plugin's own."""
    props: dict[str, Any] = {
        "cniVersion": {"type": "string"},
        "name": {"type": "string"},
        "type": {"type": "string"},
        "dns": DNS,
        "args": {"type": "object"},
        "runtimeConfig": {"type": "object"},
        "capabilities": {"type": "object"},
        "prevResult": {"type": "object"},
        "logFile": ABS_PATH,
        "cni.dev/valid-attachments": ATTACHMENTS,
        "cni.dev/attachments": ATTACHMENTS,
    }
    props.update(properties)
    return {"type": "object", "required": ["name", *(required or [])], "properties": props}


def valid_attachments(raw: dict[str, Any]) -> set[tuple[str, str]]:
    """GC's keep-list: cni.dev/valid-attachments, or the legacy cni.dev/attachments."""
    items = raw.get("cni.dev/valid-attachments")
    if items is None:
        items = raw.get("cni.dev/attachments") or []
    return {(str(a.get("containerID", "")), str(a.get("ifname", ""))) for a in items if isinstance(a, dict)}


# -- a fast validator for the subset of JSON Schema our schemas use -----------------------------
#
# ``import jsonschema`` costs ~125 ms per exec, more than a whole Go plugin call.
# The hot path validates with this ~50-line subset (type, properties, required,
# items, enum, minimum, maximum, minLength, maxLength, minItems, pattern); only
# when it finds an error is jsonschema imported, to word the message.
# tests/unit/test_schemas.py checks that both agree on every schema.

_TYPES: dict[str, Any] = {
    "object": dict, "array": list, "string": str, "boolean": bool,
    "integer": lambda v: (isinstance(v, int) and not isinstance(v, bool)) or (isinstance(v, float) and v.is_integer()),
    "number": lambda v: isinstance(v, int | float) and not isinstance(v, bool),
}


def _is_type(value: Any, name: str) -> bool:
    check = _TYPES[name]
    return bool(check(value)) if callable(check) and not isinstance(check, type) else isinstance(value, check)


def first_error(value: Any, schema: dict[str, Any], path: tuple[Any, ...] = ()) -> tuple[Any, ...] | None:
    """The JSON path of the first violation, or None when ``value`` is valid."""
    t = schema.get("type")
    if t is not None and not _is_type(value, t):
        return path
    if "enum" in schema and not any(value == e and type(value) is type(e) for e in schema["enum"]):
        return path
    if isinstance(value, dict):
        if any(k not in value for k in schema.get("required", ())):
            return path
        for key, sub in schema.get("properties", {}).items():
            if key in value:
                err = first_error(value[key], sub, (*path, key))
                if err is not None:
                    return err
    elif isinstance(value, list):
        if len(value) < schema.get("minItems", 0):
            return path
        if "items" in schema:
            for i, item in enumerate(value):
                err = first_error(item, schema["items"], (*path, i))
                if err is not None:
                    return err
    elif isinstance(value, str):
        if len(value) < schema.get("minLength", 0) or len(value) > schema.get("maxLength", 1 << 62):
            return path
        if "pattern" in schema and not re.search(schema["pattern"], value):
            return path
    elif _is_type(value, "number"):
        if "minimum" in schema and value < schema["minimum"]:
            return path
        if "maximum" in schema and value > schema["maximum"]:
            return path
    return None
