"""JSON-schema fragments shared by the plugins' config schemas.

Schemas never forbid unknown keys: the spec says they must be passed through.
They also drive Go-style decoding (cni_flannel.cni.gojson): every key listed in
``properties`` is a Go struct field, matched case-insensitively; an object schema
marked ``GO_MAP`` (or without ``properties``) is a Go map, whose keys are exact.
An empty schema ``{}`` names a known key without constraining its value.
"""
from __future__ import annotations

TYPE_CHECKING = False
if TYPE_CHECKING:  # annotations only: typing costs ~2 ms per frozen exec
    from typing import Any

CIDR = {"type": "string", "minLength": 1, "maxLength": 64, "description": "a CIDR such as 10.1.0.0/24"}
IP = {"type": "string", "minLength": 1, "maxLength": 64, "description": "an IP address"}
ROUTE = {"type": "object", "required": ["dst"],
         "properties": {"dst": CIDR, "gw": IP, "mtu": {}, "advmss": {}, "priority": {}, "table": {}, "scope": {}}}
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

# "x-goMap": a Go map[string]interface{}: keys kept exactly, values (null included) untouched.
# jsonschema ignores unknown keywords, and so does the fast validator below.
GO_MAP = "x-goMap"

ROUTE_KEYS: dict[str, Any] = {
    "properties": {k: {} for k in ("dst", "gw", "mtu", "advmss", "priority", "table", "scope")}}
# A result as a previous plugin printed it (any version): Go parses prevResult into its
# result types, so these keys fold too. No constraints: Result.from_dict checks values.
PREV_RESULT = {
    "type": "object",
    "properties": {
        "cniVersion": {}, "dns": {"properties": {k: {} for k in ("nameservers", "domain", "search", "options")}},
        "interfaces": {"items": {"properties": {k: {} for k in ("name", "mac", "mtu", "sandbox", "socketPath",
                                                                    "pciID")}}},
        "ips": {"items": {"properties": {k: {} for k in ("version", "interface", "address", "gateway")}}},
        "routes": {"items": ROUTE_KEYS},
        "ip4": {"properties": {"ip": {}, "gateway": {}, "routes": {"items": ROUTE_KEYS}}},
        "ip6": {"properties": {"ip": {}, "gateway": {}, "routes": {"items": ROUTE_KEYS}}},
    },
}

POOL_KEYS: dict[str, Any] = {"properties": {k: {} for k in ("subnet", "rangeStart", "rangeEnd", "gateway")}}

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


def netconf(properties: dict[str, Any], required: list[str] | None = None, *,
            runtime_config: dict[str, Any] | None = None, cni_args: dict[str, Any] | None = None) -> dict[str, Any]:
    """A plugin config schema: the common keys (types.NetConf) plus the plugin's own.

    ``runtime_config`` and ``cni_args`` are the keys of the plugin's RuntimeConfig and
    ``args.cni`` structs; without them those objects are Go maps (keys kept exactly).
    """
    rc: dict[str, Any] = {"type": "object", GO_MAP: True}
    if runtime_config is not None:
        rc = {"type": "object", "properties": runtime_config}
    args: dict[str, Any] = {"type": "object", GO_MAP: True}
    if cni_args is not None:
        args = {"type": "object", "properties": {"cni": {"properties": cni_args}}}
    props: dict[str, Any] = {
        "cniVersion": {"type": "string"},
        "name": {"type": "string"},
        "type": {"type": "string"},
        "dns": DNS,
        "args": args,
        "runtimeConfig": rc,
        "capabilities": {"type": "object", GO_MAP: True},
        "prevResult": PREV_RESULT,
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
        if "pattern" in schema and not _pattern_matches(schema["pattern"], value):
            return path
    elif _is_type(value, "number"):
        if "minimum" in schema and value < schema["minimum"]:
            return path
        if "maximum" in schema and value > schema["maximum"]:
            return path
    return None


def _no_slash_colon_space(value: str) -> bool:
    """re.search(r"^[^/:\\s]+$", value), `$` quirk included (it also matches before a final newline)."""
    if value.endswith("\n"):
        value = value[:-1]
    return bool(value) and not any(c in "/:" or c.isspace() for c in value)


# The patterns our schemas use, matched without `re` (~3 ms per frozen exec), exactly as re.search
# (and so jsonschema) does; tests/unit/test_hot_path.py checks each against re.
_KNOWN_PATTERNS = {"^/": lambda v: v.startswith("/"), r"^[^/:\s]+$": _no_slash_colon_space}


def _pattern_matches(pattern: str, value: str) -> bool:
    known = _KNOWN_PATTERNS.get(pattern)
    if known is not None:
        return bool(known(value))
    import re

    return re.search(pattern, value) is not None
