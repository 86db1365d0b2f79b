"""JSON-schema fragments shared by the plugins' config schemas.

Schemas never forbid unknown keys: the spec says they must be passed through.
"""
from __future__ import annotations

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
