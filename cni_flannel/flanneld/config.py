"""net-conf.json / the etcd `config` key -> NetworkConfig (flanneld-reference §3, `pkg/subnet/config.go@H`).

Decoded as Go's encoding/json decodes into `subnet.Config`: keys match case-insensitively at every
level (the last duplicate wins), unknown keys are ignored. ``check=True`` is etcd mode
(`ParseConfig` + `CheckNetworkConfig`: defaults and validation, the reference's messages);
``check=False`` is kube mode, where the reference reads only the networks, the Enable* switches
and the Backend. Where the reference is weak (⚠) we do better: JSON ``null`` is "absent", no
Backend means vxlan (the reference picks udp, its docs say vxlan), SubnetMin > SubnetMax is refused,
an IPv4 CIDR in IPv6Network is refused.
"""
from __future__ import annotations

import ipaddress
import json
from collections.abc import Iterator, Mapping
from typing import Any

from ..records import field, record
from .subnet.manager import ConfigError

IPv4Net = ipaddress.IPv4Network
IPv6Net = ipaddress.IPv6Network

DEFAULT_BACKEND = "vxlan"  # ⚠ the reference's default is udp (parseBackendType)
_PARSE = "error parsing subnet config: "  # kube.go's wrapping of ParseConfig errors; we use it in both modes


@record
class NetworkConfig:
    enable_ipv4: bool = True
    enable_ipv6: bool = False
    enable_nftables: bool = False
    network: IPv4Net | None = None
    subnet_len: int = 0
    subnet_min: IPv4Net | None = None  # the first subnet to hand out (address/SubnetLen)
    subnet_max: IPv4Net | None = None  # the last one
    ipv6_network: IPv6Net | None = None
    ipv6_subnet_len: int = 0
    ipv6_subnet_min: IPv6Net | None = None
    ipv6_subnet_max: IPv6Net | None = None
    backend_type: str = DEFAULT_BACKEND  # lowercased
    backend: dict[str, Any] = field(default_factory=dict)  # the raw Backend object, keys as given
    backend_defaulted: bool = False  # no Backend in the file: we picked vxlan (the daemon logs it)
    raw: dict[str, Any] = field(default_factory=dict)


# -- Go encoding/json helpers ----------------------------------------------------------------------

def _fold(key: str) -> str:
    return key.casefold()


def ci_get(obj: Mapping[str, Any], key: str, default: Any = None) -> Any:
    """Go's field matching: case-insensitive, the last match wins; JSON null is `default`.

    A null leaves the field as it was in Go, so a later null does not undo an earlier value."""
    found: Any = None
    want = _fold(key)
    for k, v in obj.items():
        if v is not None and (k == key or _fold(k) == want):
            found = v
    return default if found is None else found


class _Number(float):
    """A JSON number with a fraction or exponent, keeping its text for Go's error messages."""

    text: str


def _parse_float(text: str) -> _Number:
    n = _Number(text)
    n.text = text
    return n


def _pairs(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    """Keep the order of *last* occurrences, so that 'last duplicate wins' survives case folding."""
    out: dict[str, Any] = {}
    for k, v in pairs:
        out.pop(k, None)
        out[k] = v
    return out


def _reject_constant(name: str) -> Any:
    raise ValueError(f"invalid character {_quote_char(name[0])} looking for beginning of value")


def _quote_char(c: str) -> str:
    """encoding/json quoteChar."""
    if c == "'":
        return "'\\''"
    if c == '"':
        return "'\"'"
    return "'" + json.dumps(c)[1:-1] + "'"


_GO_PHRASES = {
    "Expecting value": "looking for beginning of value",
    "Expecting property name enclosed in double quotes": "looking for beginning of object key string",
    "Expecting ':' delimiter": "after object key",
    "Expecting ',' delimiter": "after object key:value pair or array element",
    "Extra data": "after top-level value",
    "Invalid control character at": "in string literal",
    "Invalid \\escape": "in string escape code",
}


def _go_syntax_error(exc: json.JSONDecodeError) -> str:
    """A Go-like `encoding/json` SyntaxError text, with the position added."""
    if exc.pos >= len(exc.doc.rstrip()) or exc.msg.startswith("Unterminated string"):
        return "unexpected end of JSON input"
    phrase = _GO_PHRASES.get(exc.msg, exc.msg.lower())
    return f"invalid character {_quote_char(exc.doc[exc.pos])} {phrase} (line {exc.lineno}, column {exc.colno})"


def _decode(data: str | bytes) -> Any:
    text = data.decode("utf-8", errors="replace") if isinstance(data, bytes) else data
    text = text.removeprefix("\ufeff")
    try:
        return json.loads(text, object_pairs_hook=_pairs, parse_float=_parse_float,
                          parse_constant=_reject_constant)
    except json.JSONDecodeError as exc:
        raise ConfigError(_PARSE + _go_syntax_error(exc)) from None
    except ValueError as exc:
        raise ConfigError(_PARSE + str(exc)) from None


def _json_kind(value: Any) -> str:
    """The JSON type word Go's UnmarshalTypeError uses."""
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, int | float):
        return "number"
    if isinstance(value, str):
        return "string"
    return "array" if isinstance(value, list) else "object"


def _type_error(value: Any, go_field: str, go_type: str, *, literal: bool = False) -> ConfigError:
    kind = _json_kind(value)
    if literal and kind == "number":
        kind += " " + (value.text if isinstance(value, _Number) else str(value))
    return ConfigError(f"{_PARSE}json: cannot unmarshal {kind} into Go struct field Config.{go_field} "
                       f"of type {go_type}")


def _raw_text(value: Any) -> str:
    """What ip.*.UnmarshalJSON sees after trimming the quotes."""
    return value if isinstance(value, str) else json.dumps(value, separators=(",", ":"))


# -- field decoders (pkg/ip/ipnet.go@H, ip6net.go@H) -------------------------------------------------

def _bool(obj: Mapping[str, Any], key: str, default: bool) -> bool:
    value = ci_get(obj, key)
    if value is None:
        return default
    if not isinstance(value, bool):
        raise _type_error(value, key, "bool")
    return value


def _uint(obj: Mapping[str, Any], key: str) -> int:
    value = ci_get(obj, key)
    if value is None:
        return 0
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise _type_error(value, key, "uint")
    if isinstance(value, float) or value < 0 or value >= 1 << 64:
        raise _type_error(value, key, "uint", literal=True)
    return value


def go_parse_cidr(text: str) -> IPv4Net | IPv6Net:
    """net.ParseCIDR: `addr/len`, decimal length, no zone; host bits masked. ValueError with Go's text."""
    addr_text, slash, mask = text.partition("/")
    bad = ValueError(f"invalid CIDR address: {text}")
    if not slash or not mask or not (mask.isascii() and mask.isdigit()) or "%" in addr_text:
        raise bad
    try:
        addr = ipaddress.ip_address(addr_text)
    except ValueError:
        raise bad from None
    if int(mask) > addr.max_prefixlen:
        raise bad
    return ipaddress.ip_network((addr, int(mask)), strict=False)


def _network(obj: Mapping[str, Any], key: str, v6: bool) -> Any:
    value = ci_get(obj, key)
    if value is None:
        return None
    try:
        net = go_parse_cidr(_raw_text(value))
    except ValueError as exc:
        raise ConfigError(_PARSE + str(exc)) from None
    if net.version != (6 if v6 else 4):
        raise ConfigError(_PARSE + ("invalid IPv6 CIDR format" if v6 else "invalid IPv4 CIDR format"))
    if int(net.network_address) == 0 and net.prefixlen == 0:
        return None  # IP4Net.Empty()/IP6Net.Empty(): "not defined"
    return net


def _address(obj: Mapping[str, Any], key: str, v6: bool) -> Any:
    value = ci_get(obj, key)
    if value is None:
        return None
    try:
        addr = ipaddress.ip_address(_raw_text(value))
    except ValueError:
        raise ConfigError(_PARSE + "invalid IP address format") from None
    if not v6 and isinstance(addr, ipaddress.IPv6Address):
        if addr.ipv4_mapped is None:
            raise ConfigError(_PARSE + "invalid IPv4 address format")
        addr = addr.ipv4_mapped  # net.IP.To4 accepts ::ffff:a.b.c.d
    if v6 and isinstance(addr, ipaddress.IPv4Address):
        raise ConfigError(_PARSE + "invalid IPv6 address format")  # ⚠ the reference maps it into ::ffff:0:0/96
    return None if int(addr) == 0 else addr  # 0.0.0.0 / :: mean "use the default"


def _backend(obj: Mapping[str, Any]) -> tuple[str, dict[str, Any], bool]:
    value = ci_get(obj, "Backend")
    if value is None:
        return DEFAULT_BACKEND, {}, True
    if not isinstance(value, dict):
        raise ConfigError(f"{_PARSE}error decoding Backend property of config: json: cannot unmarshal "
                          f"{_json_kind(value)} into Go value of type struct {{ Type string }}")
    btype = ci_get(value, "Type", "")
    if not isinstance(btype, str):
        raise ConfigError(f"{_PARSE}error decoding Backend property of config: json: cannot unmarshal "
                          f"{_json_kind(btype)} into Go struct field .Type of type string")
    if not btype:
        raise ConfigError("unknown backend type: ")
    return btype.lower(), value, False


# -- CheckNetworkConfig --------------------------------------------------------------------------------

def _default_subnet_len(prefix: int, v6: bool) -> int:
    if v6:
        if prefix > 124:
            raise ConfigError("IPv6Network is too small. Minimum useful network prefix is /124")
        return 64 if prefix <= 62 else prefix + 2
    if prefix > 28:
        raise ConfigError("network is too small. Minimum useful network prefix is /28")
    return 24 if prefix <= 22 else prefix + 2


def _subnet_len(length: int, prefix: int, v6: bool) -> int:
    """The given SubnetLen checked, or the default when it is 0 (absent)."""
    if length == 0:
        return _default_subnet_len(prefix, v6)
    if length > (126 if v6 else 30):
        raise ConfigError("SubnetLen must be less than /127" if v6 else "SubnetLen must be less than /31")
    if length < prefix + 2:
        raise ConfigError("network must be able to accommodate at least four subnets")
    return length


def _range(net: Any, length: int, lo: Any, hi: Any, v6: bool) -> tuple[Any, Any]:
    """SubnetMin/SubnetMax: defaults skip the first and last subnets; both in Network, aligned."""
    bits = 128 if v6 else 32
    size = 1 << (bits - length)
    names = ("IPv6SubnetMin", "IPv6SubnetMax", "IPv6Network") if v6 else ("SubnetMin", "SubnetMax", "Network")
    addr_type = ipaddress.IPv6Address if v6 else ipaddress.IPv4Address
    start, end = int(net.network_address), int(net.network_address) + net.num_addresses
    values = []
    for value, default, name in ((lo, start + size, names[0]), (hi, end - size, names[1])):
        if value is None:
            value = addr_type(default % (1 << bits))  # IP4 is a uint32: Go wraps
        elif value not in net:
            raise ConfigError(f"{name} is not in the range of the {names[2]}")
        values.append(value)
    mask = ((1 << bits) - 1) ^ (size - 1)
    for value, name in zip(values, names[:2], strict=True):
        if int(value) & mask != int(value):
            raise ConfigError(f"{name} is not on a SubnetLen boundary: {value}")
    if values[0] > values[1]:  # ⚠ not checked upstream: the allocator would find nothing, "out of subnets"
        raise ConfigError(f"{names[0]} {values[0]} is above {names[1]} {values[1]}: no subnet can be allocated")
    return (ipaddress.ip_network((values[0], length)), ipaddress.ip_network((values[1], length)))


def _check(cfg: NetworkConfig, raw: Mapping[str, Any]) -> None:
    # ParseConfig decodes every field before CheckNetworkConfig looks at any
    lens = _uint(raw, "SubnetLen"), _uint(raw, "IPv6SubnetLen")
    v4_range = _address(raw, "SubnetMin", False), _address(raw, "SubnetMax", False)
    v6_range = _address(raw, "IPv6SubnetMin", True), _address(raw, "IPv6SubnetMax", True)
    if cfg.enable_ipv4:
        if cfg.network is None:
            raise ConfigError("please define a correct Network parameter in the flannel config")
        cfg.subnet_len = _subnet_len(lens[0], cfg.network.prefixlen, False)
        cfg.subnet_min, cfg.subnet_max = _range(cfg.network, cfg.subnet_len, *v4_range, False)
    if cfg.enable_ipv6:
        if cfg.ipv6_network is None:
            raise ConfigError("please define a correct IPv6Network parameter in the flannel config")
        cfg.ipv6_subnet_len = _subnet_len(lens[1], cfg.ipv6_network.prefixlen, True)
        cfg.ipv6_subnet_min, cfg.ipv6_subnet_max = _range(cfg.ipv6_network, cfg.ipv6_subnet_len, *v6_range, True)


def parse_network_config(data: str | bytes, *, check: bool = True) -> NetworkConfig:
    """ParseConfig (+ CheckNetworkConfig when ``check``). Raises ConfigError with the reference's text."""
    raw = _decode(data)
    if raw is None:
        raw = {}  # Go: unmarshalling null into a struct is a no-op
    if not isinstance(raw, dict):
        raise ConfigError(f"{_PARSE}json: cannot unmarshal {_json_kind(raw)} into Go value of type subnet.Config")
    cfg = NetworkConfig(
        enable_ipv4=_bool(raw, "EnableIPv4", True),
        enable_ipv6=_bool(raw, "EnableIPv6", False),
        enable_nftables=_bool(raw, "EnableNFTables", False),
        network=_network(raw, "Network", False),
        ipv6_network=_network(raw, "IPv6Network", True),
        raw=raw,
    )
    if check:
        # decoded (and so type-checked) in etcd mode only: kube mode ignores them (§3)
        _check(cfg, raw)
    cfg.backend_type, cfg.backend, cfg.backend_defaulted = _backend(raw)
    return cfg


# -- subnet arithmetic for AcquireLease (§5.2) ---------------------------------------------------------

def candidate_subnets(cfg: NetworkConfig, *, v6: bool = False) -> Iterator[IPv4Net | IPv6Net]:
    """SubnetMin, SubnetMin + 1 subnet, ... SubnetMax (allocateSubnet's walk)."""
    lo, hi = (cfg.ipv6_subnet_min, cfg.ipv6_subnet_max) if v6 else (cfg.subnet_min, cfg.subnet_max)
    if lo is None or hi is None:
        return
    net_type = IPv6Net if v6 else IPv4Net
    for start in range(int(lo.network_address), int(hi.network_address) + 1, lo.num_addresses):
        yield net_type((start, lo.prefixlen))


def in_range(cfg: NetworkConfig, subnet: IPv4Net | IPv6Net) -> bool:
    """isSubnetConfigCompat / isIPv6SubnetConfigCompat: within Min..Max with the configured SubnetLen."""
    if isinstance(subnet, IPv6Net):
        lo6, hi6, length = cfg.ipv6_subnet_min, cfg.ipv6_subnet_max, cfg.ipv6_subnet_len
        if lo6 is None or hi6 is None:
            return False
        return subnet.prefixlen == length and lo6.network_address <= subnet.network_address <= hi6.network_address
    lo4, hi4, length = cfg.subnet_min, cfg.subnet_max, cfg.subnet_len
    if lo4 is None or hi4 is None:
        return False
    return subnet.prefixlen == length and lo4.network_address <= subnet.network_address <= hi4.network_address
