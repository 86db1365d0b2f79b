"""Result types and their conversions (SPEC.md "Success", cni-reference §1.5-1.6).

The model is the 1.1.0 result; every other version is a view of it, converted
the way libcni's types020/types040/types100 packages convert.
"""
from __future__ import annotations

import ipaddress

from ..records import field, record
from . import jsonlite  # not json: ~4.5 ms per frozen exec (re, enum)
from .errors import DECODING_FAILURE, CNIError
from .version import result_family

TYPE_CHECKING = False
if TYPE_CHECKING:  # annotations only: typing costs ~2 ms per frozen exec
    from typing import Any

# Field order matches the Go structs, so our JSON is byte-identical to theirs.
_IFACE_KEYS_100 = ("name", "mac", "mtu", "sandbox", "socketPath", "pciID")
_IFACE_KEYS_040 = ("name", "mac", "sandbox")
_ROUTE_KEYS = ("dst", "gw", "mtu", "advmss", "priority", "table", "scope")
_DNS_KEYS = ("nameservers", "domain", "search", "options")


@record
class Interface:
    name: str
    mac: str = ""
    sandbox: str = ""
    mtu: int = 0
    socketPath: str = ""  # noqa: N815 - the spec's spelling
    pciID: str = ""  # noqa: N815

    def to_dict(self, keys: tuple[str, ...]) -> dict[str, Any]:
        return {k: getattr(self, k) for k in keys if getattr(self, k)}


@record
class IPConfig:
    address: str  # "ip/prefix"
    gateway: str = ""
    interface: int | None = None

    @property
    def version(self) -> str:
        return "6" if ":" in self.address else "4"

    @property
    def ip(self) -> str:
        return self.address.split("/", 1)[0]


@record
class Route:
    dst: str
    gw: str = ""
    extra: dict[str, Any] = field(default_factory=dict)  # mtu, advmss, priority, table, scope

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> Route:
        return cls(dst=raw["dst"], gw=raw.get("gw") or "",
                   extra={k: raw[k] for k in _ROUTE_KEYS[2:] if raw.get(k) not in (None, 0, "")})

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"dst": self.dst}
        if self.gw:
            out["gw"] = self.gw
        for k in _ROUTE_KEYS[2:]:
            if k in self.extra:
                out[k] = self.extra[k]
        return out

    @property
    def is_v6(self) -> bool:
        return ":" in self.dst


@record
class DNS:
    nameservers: list[str] = field(default_factory=list)
    domain: str = ""
    search: list[str] = field(default_factory=list)
    options: list[str] = field(default_factory=list)

    @classmethod
    def from_dict(cls, raw: dict[str, Any] | None) -> DNS:
        raw = raw or {}
        return cls(list(raw.get("nameservers") or []), raw.get("domain") or "",
                   list(raw.get("search") or []), list(raw.get("options") or []))

    def to_dict(self) -> dict[str, Any]:
        return {k: getattr(self, k) for k in _DNS_KEYS if getattr(self, k)}

    def empty(self) -> bool:
        return not self.to_dict()


@record
class Result:
    cni_version: str
    interfaces: list[Interface] = field(default_factory=list)
    ips: list[IPConfig] = field(default_factory=list)
    routes: list[Route] = field(default_factory=list)
    dns: DNS = field(default_factory=DNS)

    # -- output -------------------------------------------------------------
    def to_dict(self, version: str | None = None) -> dict[str, Any]:
        version = version or self.cni_version
        family = result_family(version)
        if family == "020":
            return self._to_020(version)
        out: dict[str, Any] = {"cniVersion": version}
        iface_keys = _IFACE_KEYS_100 if family == "100" else _IFACE_KEYS_040
        if self.interfaces:
            out["interfaces"] = [i.to_dict(iface_keys) for i in self.interfaces]
        if self.ips:
            out["ips"] = [_ip_to_dict(ip, family) for ip in self.ips]
        if self.routes:
            out["routes"] = [r.to_dict() for r in self.routes]
        out["dns"] = self.dns.to_dict()  # Go marshals the DNS struct even when empty
        return out

    def _to_020(self, version: str) -> dict[str, Any]:
        out: dict[str, Any] = {"cniVersion": version}
        v4 = next((ip for ip in self.ips if ip.version == "4"), None)
        v6 = next((ip for ip in self.ips if ip.version == "6"), None)
        if v4 is None and v6 is None:
            raise CNIError(DECODING_FAILURE, "cannot convert: no valid IP addresses",
                           f"a cniVersion {version} result needs at least one IP address")
        for key, ip, want_v6 in (("ip4", v4, False), ("ip6", v6, True)):
            if ip is None:
                continue
            cfg: dict[str, Any] = {"ip": ip.address}
            if ip.gateway:
                cfg["gateway"] = ip.gateway
            routes = [r.to_dict() for r in self.routes if r.is_v6 == want_v6]
            if routes:
                cfg["routes"] = routes
            out[key] = cfg
        out["dns"] = self.dns.to_dict()
        return out

    def to_json(self, version: str | None = None) -> str:
        return jsonlite.dumps(self.to_dict(version), indent=4)

    # -- input --------------------------------------------------------------
    @classmethod
    def from_dict(cls, raw: dict[str, Any], version: str | None = None) -> Result:
        """Parse a result of any version (a plugin's stdout or a prevResult)."""
        if not isinstance(raw, dict):
            raise CNIError(DECODING_FAILURE, "result is not a JSON object",
                           "a CNI result must be an object with cniVersion")
        ver = raw.get("cniVersion") or version or "0.1.0"
        try:
            if result_family(ver) == "020":
                return cls._from_020(raw, ver)
            return cls(
                cni_version=ver,
                interfaces=[Interface(**{k: i[k] for k in _IFACE_KEYS_100 if k in i})
                            for i in raw.get("interfaces") or []],
                ips=[IPConfig(address=_canon_cidr(i["address"]), gateway=i.get("gateway") or "",
                              interface=i.get("interface")) for i in raw.get("ips") or []],
                routes=[Route.from_dict(r) for r in raw.get("routes") or []],
                dns=DNS.from_dict(raw.get("dns")),
            )
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            raise CNIError(DECODING_FAILURE, f"failed to parse cniVersion {ver} result",
                           f"malformed field: {exc}") from None

    @classmethod
    def _from_020(cls, raw: dict[str, Any], ver: str) -> Result:
        res = cls(cni_version=ver, dns=DNS.from_dict(raw.get("dns")))
        for key in ("ip4", "ip6"):
            cfg = raw.get(key)
            if not cfg:
                continue
            res.ips.append(IPConfig(address=_canon_cidr(cfg["ip"]), gateway=cfg.get("gateway") or ""))
            res.routes.extend(Route.from_dict(r) for r in cfg.get("routes") or [])
        return res


def _ip_to_dict(ip: IPConfig, family: str) -> dict[str, Any]:
    out: dict[str, Any] = {}
    if family == "040":
        out["version"] = ip.version
    if ip.interface is not None:
        out["interface"] = ip.interface
    out["address"] = ip.address
    if ip.gateway:
        out["gateway"] = ip.gateway
    return out


def _canon_cidr(value: str) -> str:
    """Validate "ip/prefix" keeping the host bits, as net.IPNet does."""
    iface = ipaddress.ip_interface(value)
    if "/" not in value:
        raise ValueError(f"address {value!r} has no prefix length")
    return f"{iface.ip}/{iface.network.prefixlen}"
