"""The portmap plugin (containernetworking/plugins plugins/meta/portmap, cni-reference §5).

Chained only. No netlink: the sysctl is a file write, rules are one batch per
family, conntrack is one exec per UDP port.
"""
from __future__ import annotations

import ipaddress
import sys

from ..cni import schemas
from ..cni.conf import NetConf
from ..cni.env import CmdArgs
from ..cni.errors import INVALID_CONFIG, PLUGIN_NOT_AVAILABLE, CNIError, errno_text
from ..cni.result import Result
from ..cni.skel import Plugin
from ..net import spawn

TYPE_CHECKING = False
if TYPE_CHECKING:  # annotations only: typing costs ~2 ms per frozen exec
    from typing import Any

PROTOCOLS = ("tcp", "udp", "sctp")
SCHEMA = schemas.netconf({
    "backend": {"enum": ["iptables", "nftables"]},
    "snat": {"type": "boolean"}, "masqAll": {"type": "boolean"},
    "markMasqBit": {"type": "integer", "minimum": 0, "maximum": 31, "description": "a bit number from 0 to 31"},
    "externalSetMarkChain": {"type": "string", "minLength": 1, "maxLength": 28},
    "conditionsV4": {"type": "array", "items": {"type": "string"}},
    "conditionsV6": {"type": "array", "items": {"type": "string"}},
}, runtime_config={"portMappings": {"items": {"properties": {
    k: {} for k in ("hostPort", "containerPort", "protocol", "hostIP")}}}})


def _ci(entry: dict[str, Any], key: str) -> Any:
    """Go's JSON decoding ignores case: containerd sends HostPort, podman hostPort."""
    lk = key.lower()
    for k, v in entry.items():
        if k.lower() == lk:
            return v
    return None


def parse_mappings(conf: NetConf) -> list[Any]:
    from ..net.hostport import Mapping

    raw = conf.runtime_config().get("portMappings") or []
    if not isinstance(raw, list):
        raise CNIError(INVALID_CONFIG, "runtimeConfig.portMappings must be a list",
                       'use [{"hostPort": 8080, "containerPort": 80, "protocol": "tcp"}]')
    out = []
    for i, e in enumerate(raw):
        where = f"runtimeConfig.portMappings[{i}]"
        if not isinstance(e, dict):
            raise CNIError(INVALID_CONFIG, f"{where} is not an object", "each mapping is an object")
        hp, cp = _ci(e, "hostPort"), _ci(e, "containerPort")
        proto = str(_ci(e, "protocol") or "tcp").lower()
        host_ip = _ci(e, "hostIP") or ""
        for name, port in (("host", hp), ("container", cp)):
            if not isinstance(port, int) or isinstance(port, bool) or not 0 < port <= 65535:
                raise CNIError(INVALID_CONFIG, f"Invalid {name} port number: {port} in {where}",
                               "ports must be integers from 1 to 65535")
        if proto not in PROTOCOLS:
            raise CNIError(INVALID_CONFIG, f"invalid protocol {proto!r} in {where}",
                           f"protocol must be one of {', '.join(PROTOCOLS)}")
        if host_ip:
            try:
                host_ip = str(ipaddress.ip_address(str(host_ip)))
            except ValueError:
                raise CNIError(INVALID_CONFIG, f"invalid hostIP {str(host_ip)[:60]!r} in {where}",
                               "hostIP must be an IP address, or empty for any address") from None
        out.append(Mapping(hp, cp, proto, host_ip))
    return out


def _is_iptables_style(conditions: list[str]) -> bool:
    return bool(conditions) and conditions[0][:1] in ("-", "!")


def build_spec(conf: NetConf, args: CmdArgs) -> tuple[Any, str]:
    """(PortMapSpec, backend name), validated as the reference validates it."""
    from ..net import iptables, nftables
    from ..net.hostport import PortMapSpec

    raw = conf.raw
    if "markMasqBit" in raw and "externalSetMarkChain" in raw:
        raise CNIError(INVALID_CONFIG, "Cannot specify externalSetMarkChain and markMasqBit",
                       "remove one of them")
    c4, c6 = list(raw.get("conditionsV4") or []), list(raw.get("conditionsV6") or [])
    backend = raw.get("backend")
    if backend is None:
        backend = "iptables" if iptables.available() else ("nftables" if nftables.available() else None)
        if backend is None:
            raise CNIError(PLUGIN_NOT_AVAILABLE, "neither iptables nor nftables is usable",
                           "install iptables or nftables on the node")
    other: list[str] = []
    if backend == "nftables":
        other = [k for k in ("markMasqBit", "externalSetMarkChain") if k in raw]
        other += [k for k, c in (("conditionsV4", c4), ("conditionsV6", c6)) if _is_iptables_style(c)]
    else:
        other = [k for k, c in (("conditionsV4", c4), ("conditionsV6", c6)) if c and not _is_iptables_style(c)]
    if other:
        owner = "iptables" if backend == "nftables" else "nftables"
        raise CNIError(INVALID_CONFIG, f"{backend} backend was requested but configuration contains "
                       f"{owner}-specific options {other}", f"remove {', '.join(other)} or set backend to {owner}")
    spec = PortMapSpec(network=conf.name, container_id=args.container_id, mappings=parse_mappings(conf),
                       snat=raw.get("snat", True) is not False, masq_all=bool(raw.get("masqAll")),
                       mark_bit=int(raw.get("markMasqBit", 13)), external_setmark=raw.get("externalSetMarkChain"),
                       conditions_v4=c4, conditions_v6=c6)
    return spec, backend


def _backend(name: str) -> Any:
    from ..net import hostport

    return hostport.NftablesHostPort() if name == "nftables" else hostport.IptablesHostPort()


def container_addrs(prev: Result, ifname: str) -> list[ipaddress.IPv4Interface | ipaddress.IPv6Interface]:
    """The first IPv4 and first IPv6 address of the sandbox interface, picked as Go picks them."""
    picked: dict[int, Any] = {}
    for ip in prev.ips:
        addr = ipaddress.ip_interface(ip.address)
        if addr.version in picked:
            continue
        if ip.interface is not None and 0 <= ip.interface < len(prev.interfaces):
            iface = prev.interfaces[ip.interface]
            if iface.name != ifname or not iface.sandbox:
                continue
        picked[addr.version] = addr
    return [picked[f] for f in (4, 6) if f in picked]


def _route_localnet(container_ip: str) -> None:
    """route_localnet=1 on the host interface that routes to the pod, so 127.0.0.1 can be DNAT'ed."""
    from ..net import sysctl

    dev = _route_dev_v4(container_ip)
    if dev:
        sysctl.write(f"net/ipv4/conf/{dev}/route_localnet", "1")


def _route_dev_v4(ip: str) -> str:
    """Longest-prefix match over /proc/net/route, which saves importing netlink."""
    target = int(ipaddress.IPv4Address(ip))
    best, best_len = "", -1
    try:
        with open("/proc/net/route") as f:
            lines = f.readlines()[1:]
    except OSError:
        return ""
    for line in lines:
        parts = line.split()
        if len(parts) < 8:
            continue
        dest = int.from_bytes(bytes.fromhex(parts[1]), "little")
        mask = int.from_bytes(bytes.fromhex(parts[7]), "little")
        plen = bin(mask).count("1")
        if target & mask == dest and plen > best_len:
            best, best_len = parts[0], plen
    return best


def _flush_udp_conntrack(mappings: list[Any], fam: int) -> None:
    tool = spawn.which("conntrack")
    if not tool:
        return
    for m in mappings:
        if m.protocol != "udp":
            continue
        proc = spawn.run([tool, "-D", "-f", "ipv4" if fam == 4 else "ipv6", "-p", "udp", "--dport", str(m.host_port)])
        if proc.returncode not in (0, 1):  # 1: nothing to delete
            sys.stderr.write(f"portmap: failed to flush UDP conntrack for port {m.host_port}\n")


def cmd_add(args: CmdArgs, conf: NetConf) -> Result:
    prev = conf.prev_result
    if prev is None:
        raise CNIError(INVALID_CONFIG, "must be called as chained plugin",
                       "put portmap after the interface plugin in a .conflist")
    spec, backend_name = build_spec(conf, args)
    if not spec.mappings:
        return prev
    backend = _backend(backend_name)
    done = []
    try:
        for addr in container_addrs(prev, args.ifname):
            backend.forward(spec, addr)
            done.append(addr)
            if addr.version == 4 and spec.snat:
                _route_localnet(str(addr.ip))
            _flush_udp_conntrack(spec.mappings, addr.version)
    except BaseException:
        if done:
            try:
                backend.unforward(spec.network, spec.container_id)
            except CNIError:
                pass
        raise
    return prev


def cmd_del(args: CmdArgs, conf: NetConf) -> None:
    spec, backend_name = build_spec(conf, args)
    if not spec.mappings:
        return
    _backend(backend_name).unforward(spec.network, spec.container_id)


def cmd_check(args: CmdArgs, conf: NetConf) -> None:
    spec, backend_name = build_spec(conf, args)
    if not spec.mappings:
        return
    prev = conf.prev_result
    if prev is None:
        raise CNIError(INVALID_CONFIG, "portmap CHECK: Required prevResult missing",
                       "CHECK needs the cached ADD result")
    backend = _backend(backend_name)
    missing: list[str] = []
    # Only the families the pod has: the reference also demands IPv6 rules for an IPv4 pod (plugins#819).
    for addr in container_addrs(prev, args.ifname):
        missing += backend.check(spec, addr)
    if missing:
        raise CNIError(INVALID_CONFIG, f"portmap CHECK: missing rules: {'; '.join(missing)[:600]}",
                       "re-ADD the pod to restore its hostPort rules")


def cmd_gc(args: CmdArgs, conf: NetConf) -> None:
    spec, backend_name = build_spec(conf, args)
    valid_ids = {cid for cid, _ in schemas.valid_attachments(conf.raw)}
    _backend(backend_name).gc(spec.network, valid_ids)


def cmd_status(args: CmdArgs, conf: NetConf) -> None:
    _spec, backend_name = build_spec(conf, args)
    tool = "iptables-save" if backend_name == "iptables" else "nft"
    cmd = [tool, "-t", "nat"] if backend_name == "iptables" else [tool, "list", "tables"]
    try:
        proc = spawn.run(cmd, text=True)
    except OSError as exc:
        raise CNIError(PLUGIN_NOT_AVAILABLE, f"portmap {backend_name} backend is not usable: {errno_text(exc)}",
                       f"install {backend_name}") from None
    if proc.returncode != 0:
        raise CNIError(PLUGIN_NOT_AVAILABLE, f"portmap {backend_name} backend is not usable: "
                       f"{proc.stderr.strip()[:200]}", f"check {backend_name} on this node")


PLUGIN = Plugin(name="portmap", about="CNI portmap plugin (cni-flannel)", add=cmd_add, delete=cmd_del,
                check=cmd_check, gc=cmd_gc, status=cmd_status, schema=SCHEMA)
