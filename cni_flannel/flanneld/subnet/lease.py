"""Leases: the record every subnet manager produces and every backend consumes.

The etcd key format and the lease JSON are the reference's (flanneld-reference §5.1,
`pkg/subnet/subnet.go@H`, `pkg/lease/lease.go@H`), byte for byte, so a Go flanneld and
ours read each other's leases.
"""
from __future__ import annotations

import ipaddress
import json
import re
from typing import Any

from ...records import field, record

IPv4Net = ipaddress.IPv4Network
IPv6Net = ipaddress.IPv6Network

# pkg/subnet/subnet.go@H: (\d+\.\d+.\d+.\d+)-(\d+)(?:&([a-f\d:]+)-(\d+))?$  (the unescaped '.' is theirs)
_KEY_RE = re.compile(r"(\d+\.\d+.\d+.\d+)-(\d+)(?:&([a-f\d:]+)-(\d+))?$")


class LeaseFormatError(ValueError):
    """A subnet key or lease value that is not in the reference's format."""


@record
class LeaseAttrs:
    """What a node publishes about itself (the lease value / the Node annotations)."""

    public_ip: ipaddress.IPv4Address | None = None
    public_ipv6: ipaddress.IPv6Address | None = None
    backend_type: str = ""
    backend_data: Any = None  # decoded JSON (dict) or None
    backend_v6_data: Any = None


@record
class Lease:
    subnet: IPv4Net | None
    ipv6_subnet: IPv6Net | None
    attrs: LeaseAttrs = field(default_factory=LeaseAttrs)
    expiration: float = 0.0  # unix time; 0 = never (an etcd key without a lease: a reservation)
    # manager-specific bookkeeping: the etcd lease id and mod revision, the Node's resourceVersion
    lease_id: int = 0
    revision: int = 0

    @property
    def key(self) -> str:
        return subnet_key(self.subnet, self.ipv6_subnet)


def subnet_key(subnet: IPv4Net | None, ipv6_subnet: IPv6Net | None = None) -> str:
    """`MakeSubnetKey`: ``10.5.52.0-24`` or ``10.5.52.0-24&fc00:0:0:1::-64``; an IPv6-only lease is
    ``0.0.0.0-0&<v6>-<len>``, as Go writes a zero IPv4 subnet."""
    if subnet is None and ipv6_subnet is None:
        raise LeaseFormatError("a lease key needs a subnet")
    key = f"{subnet.network_address}-{subnet.prefixlen}" if subnet is not None else "0.0.0.0-0"
    if ipv6_subnet is not None:
        key += f"&{ipv6_subnet.network_address}-{ipv6_subnet.prefixlen}"
    return key


def parse_subnet_key(key: str) -> tuple[IPv4Net, IPv6Net | None]:
    """`ParseSubnetKey`: the last path element of ``<prefix>/subnets/<key>``."""
    m = _KEY_RE.search(key)
    if not m:
        raise LeaseFormatError(f"{key!r} is not a subnet key (want e.g. 10.5.52.0-24)")
    try:
        v4 = ipaddress.IPv4Network(f"{m.group(1)}/{m.group(2)}")
        v6 = ipaddress.IPv6Network(f"{m.group(3)}/{m.group(4)}") if m.group(3) else None
    except ValueError as exc:
        raise LeaseFormatError(f"{key!r}: {exc}") from None
    return v4, v6


def attrs_to_json(attrs: LeaseAttrs) -> str:
    """The lease value as Go's json.Marshal writes `LeaseAttrs` (field order, omitempty, no spaces).

    PublicIP is always present ("0.0.0.0" when unset), PublicIPv6 is a string or null,
    BackendType/BackendData/BackendV6Data are omitted when empty.
    """
    out: dict[str, Any] = {
        "PublicIP": str(attrs.public_ip) if attrs.public_ip is not None else "0.0.0.0",
        "PublicIPv6": str(attrs.public_ipv6) if attrs.public_ipv6 is not None else None,
    }
    if attrs.backend_type:
        out["BackendType"] = attrs.backend_type
    if attrs.backend_data is not None:
        out["BackendData"] = attrs.backend_data
    if attrs.backend_v6_data is not None:
        out["BackendV6Data"] = attrs.backend_v6_data
    # Go's json.Marshal writes UTF-8 and escapes <, >, &, U+2028 and U+2029
    text = json.dumps(out, separators=(",", ":"), ensure_ascii=False)
    for ch, esc in (("<", "\\u003c"), (">", "\\u003e"), ("&", "\\u0026"), ("\u2028", "\\u2028"),
                    ("\u2029", "\\u2029")):
        text = text.replace(ch, esc)
    return text


def _ci_get(obj: dict[str, Any], name: str) -> Any:
    """Go's encoding/json: keys match case-insensitively, the last one wins."""
    found = None
    for k, v in obj.items():
        if k.lower() == name.lower():
            found = v
    return found


def attrs_from_json(raw: str | bytes) -> LeaseAttrs:
    try:
        obj = json.loads(raw)
    except (ValueError, UnicodeDecodeError) as exc:
        raise LeaseFormatError(f"lease value is not JSON: {exc}") from None
    if not isinstance(obj, dict):
        raise LeaseFormatError("lease value is not a JSON object")
    try:
        pub = _ci_get(obj, "PublicIP")
        pub6 = _ci_get(obj, "PublicIPv6")
        v4 = ipaddress.IPv4Address(pub) if pub not in (None, "") else None
        v6 = ipaddress.IPv6Address(pub6) if pub6 not in (None, "") else None
    except ValueError as exc:
        raise LeaseFormatError(f"lease value has a bad address: {exc}") from None
    if v4 is not None and int(v4) == 0:
        v4 = None
    btype = _ci_get(obj, "BackendType") or ""
    if not isinstance(btype, str):
        raise LeaseFormatError("lease value: BackendType is not a string")
    return LeaseAttrs(public_ip=v4, public_ipv6=v6, backend_type=btype,
                      backend_data=_ci_get(obj, "BackendData"), backend_v6_data=_ci_get(obj, "BackendV6Data"))


def subnet_env_address(subnet: IPv4Net | IPv6Net) -> str:
    """FLANNEL_SUBNET: the network address + 1 with the lease's prefix (`10.244.3.1/24`)."""
    return f"{subnet.network_address + 1}/{subnet.prefixlen}"
