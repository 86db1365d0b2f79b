"""The bridge plugin (containernetworking/plugins plugins/main/bridge, cni-reference §3).

Creates the same kernel objects as the Go bridge, in the same order. IPAM of
type host-local runs in this process; any other IPAM type is exec'd.
"""
from __future__ import annotations

import ipaddress
import os
from _socket import AF_INET, AF_INET6  # not `socket`: its enums cost ~2 ms per frozen exec

from .. import delegate
from ..cni import schemas
from ..cni.conf import NetConf
from ..cni.env import CmdArgs
from ..cni.errors import INVALID_CONFIG, TRY_AGAIN_LATER, CNIError, errno_of, from_os_error, kernel_step
from ..cni.result import DNS, Interface, Result, Route
from ..cni.skel import Plugin
from ..records import field, record

TYPE_CHECKING = False
if TYPE_CHECKING:  # annotations only: typing costs ~2 ms per frozen exec
    from typing import Any

_HEX = frozenset("0123456789abcdefABCDEF")


def is_mac(value: str) -> bool:
    """^([0-9a-fA-F]{2}[:-]){5}[0-9a-fA-F]{2}$ over the whole string, without `re` (~3 ms per frozen exec)."""
    return len(value) == 17 and all(value[i] in ":-" if i % 3 == 2 else value[i] in _HEX for i in range(17))


ARGS_KNOWN = ("MAC",)

SCHEMA = schemas.netconf({
    "bridge": {"type": "string", "minLength": 1, "maxLength": 15, "pattern": r"^[^/:\s]+$",
               "description": "a Linux interface name of at most 15 characters"},
    "isGateway": {"type": "boolean"}, "isDefaultGateway": {"type": "boolean"},
    "forceAddress": {"type": "boolean"}, "ipMasq": {"type": "boolean"},
    "ipMasqBackend": {"enum": ["iptables", "nftables"]},
    "mtu": {"type": "integer", "minimum": 0, "maximum": 65535},
    "hairpinMode": {"type": "boolean"}, "promiscMode": {"type": "boolean"},
    "vlan": {"type": "integer", "minimum": 0, "maximum": 4094, "description": "a VLAN id from 0 to 4094"},
    "vlanTrunk": {"type": "array", "items": {"type": "object", "properties": {
        "id": {"type": "integer", "minimum": 1, "maximum": 4094},
        "minID": {"type": "integer", "minimum": 1, "maximum": 4094},
        "maxID": {"type": "integer", "minimum": 1, "maximum": 4094}}}},
    "preserveDefaultVlan": {"type": "boolean"}, "enabledad": {"type": "boolean"},
    "macspoofchk": {"type": "boolean"}, "disableContainerInterface": {"type": "boolean"},
    "portIsolation": {"type": "boolean"},
    "ipam": {"type": "object", "properties": {"type": {"type": "string"}}},
}, runtime_config={"mac": {}}, cni_args={"mac": {}})


@record
class BridgeConf:
    name: str
    cni_version: str
    bridge: str = "cni0"
    is_gw: bool = False
    is_default_gw: bool = False
    force_address: bool = False
    ip_masq: bool = False
    ip_masq_backend: str | None = None
    mtu: int = 0
    hairpin: bool = False
    promisc: bool = False
    vlan: int = 0
    vlans: list[int] = field(default_factory=list)
    preserve_default_vlan: bool = False
    enable_dad: bool = False
    mac_spoof_check: bool = False
    disable_container_interface: bool = False
    port_isolation: bool = False
    ipam_type: str = ""
    dns: DNS | None = None
    mac: str = ""


def _trunk_vlans(raw: list[dict[str, Any]]) -> list[int]:
    out: set[int] = set()
    for i, item in enumerate(raw):
        if "id" in item:
            out.add(item["id"])
        if "minID" in item or "maxID" in item:
            lo, hi = item.get("minID"), item.get("maxID")
            if lo is None or hi is None or lo > hi:
                raise CNIError(INVALID_CONFIG, f"invalid VLAN trunk range in vlanTrunk[{i}]",
                               "give both minID and maxID with minID <= maxID (1..4094)")
            out.update(range(lo, hi + 1))
    return sorted(out)


def load_conf(conf: NetConf, args: CmdArgs) -> BridgeConf:
    raw = conf.raw
    ipam = raw.get("ipam") or {}
    n = BridgeConf(
        name=conf.name, cni_version=conf.cni_version, bridge=raw.get("bridge") or "cni0",
        is_gw=bool(raw.get("isGateway")), is_default_gw=bool(raw.get("isDefaultGateway")),
        force_address=bool(raw.get("forceAddress")), ip_masq=bool(raw.get("ipMasq")),
        ip_masq_backend=raw.get("ipMasqBackend"), mtu=int(raw.get("mtu") or 0),
        hairpin=bool(raw.get("hairpinMode")), promisc=bool(raw.get("promiscMode")),
        vlan=int(raw.get("vlan") or 0), vlans=_trunk_vlans(raw.get("vlanTrunk") or []),
        preserve_default_vlan=bool(raw.get("preserveDefaultVlan")), enable_dad=bool(raw.get("enabledad")),
        mac_spoof_check=bool(raw.get("macspoofchk")),
        disable_container_interface=bool(raw.get("disableContainerInterface")),
        port_isolation=bool(raw.get("portIsolation")), ipam_type=str(ipam.get("type") or ""),
        dns=DNS.from_dict(raw["dns"]) if raw.get("dns") else None,
    )
    if n.is_default_gw:
        n.is_gw = True
    if n.hairpin and n.promisc:
        raise CNIError(INVALID_CONFIG, "cannot set hairpin mode and promiscuous mode at the same time",
                       "set only one of hairpinMode and promiscMode")
    if n.disable_container_interface and n.ipam_type:
        raise CNIError(INVALID_CONFIG, "cannot use IPAM when DisableContainerInterface flag is set",
                       "remove ipam, or disableContainerInterface")
    # The container MAC: CNI_ARGS MAC=, then args.cni.mac, then runtimeConfig.mac; the later wins.
    mac = args.cni_args((*ARGS_KNOWN, "IP")).get("MAC", "")
    cargs = raw.get("args")
    if isinstance(cargs, dict) and isinstance(cargs.get("cni"), dict) and cargs["cni"].get("mac"):
        mac = str(cargs["cni"]["mac"])
    if conf.runtime_config().get("mac"):
        mac = str(conf.runtime_config()["mac"])
    if mac and not is_mac(mac):
        raise CNIError(INVALID_CONFIG, f"invalid MAC address {mac[:40]!r}", "use the form 0a:58:0a:2a:01:05")
    n.mac = mac.lower().replace("-", ":")
    return n


# -- IPAM ---------------------------------------------------------------------------------------

def _ipam(verb: str, n: BridgeConf, args: CmdArgs) -> Result | None:
    return delegate.run(verb, n.ipam_type, args.stdin, args)


def _ipam_del_quietly(n: BridgeConf, args: CmdArgs) -> None:
    try:
        _ipam("DEL", n, args)
    except CNIError:
        pass


# -- ADD ----------------------------------------------------------------------------------------

def _gateway_for(address: str) -> str:
    return str(ipaddress.ip_interface(address).network.network_address + 1)


def _calc_gateways(result: Result, n: BridgeConf) -> dict[int, list[ipaddress.IPv4Interface
                                                                     | ipaddress.IPv6Interface]]:
    """calcGateways: fill gateways, add default routes, and collect the bridge's addresses."""
    gws: dict[int, list[Any]] = {4: [], 6: []}
    default_found = {4: False, 6: False}
    for ipc in result.ips:
        ipc.interface = 2
        fam = int(ipc.version)
        default = "0.0.0.0/0" if fam == 4 else "::/0"
        if not ipc.gateway and n.is_gw:
            ipc.gateway = _gateway_for(ipc.address)
        if n.is_default_gw and not default_found[fam]:
            default_found[fam] = any(r.gw and r.dst == default for r in result.routes)
            if not default_found[fam]:
                result.routes.append(Route(dst=default, gw=ipc.gateway))
                default_found[fam] = True
        if n.is_gw:
            prefix = ipaddress.ip_interface(ipc.address).network.prefixlen
            gws[fam].append(ipaddress.ip_interface(f"{ipc.gateway}/{prefix}"))
    return gws


def _ensure_addr(ipr: Any, br_index: int, br_name: str, gw: Any, force: bool) -> None:
    from ..net import addr

    fam = AF_INET if gw.version == 4 else AF_INET6
    for a in addr.list_addrs(ipr, br_index, fam):
        if a == gw:
            return
        if a.ip.is_link_local and gw.version == 6:
            continue
        if gw.version == 4 or gw.ip in a.network or a.ip in gw.network:
            if not force:
                raise CNIError(INVALID_CONFIG, f'"{br_name}" already has an IP address different from {gw}',
                               f"it has {a}; set forceAddress to true to replace it, or fix the subnet")
            with kernel_step(f"remove {a} from {br_name}", "remove the address by hand and retry"):
                addr.del_addr(ipr, br_index, a)
    with kernel_step(f"add the gateway address {gw} to {br_name}", "check the bridge and the subnet"):
        addr.add_addr(ipr, br_index, str(gw), ignore_exists=True)


def _configure_container(cont_ipr: Any, netns: str, ifname: str, index: int, result: Result,
                         enable_dad: bool) -> None:
    """The DAD and ARP sysctls, then ipam.ConfigureIface: addresses, link up, routes."""
    from ..net import addr, sysctl
    from ..net.link import set_up
    from ..net.netns import entered

    has_v6 = any(ip.version == "6" for ip in result.ips)
    with entered(netns), kernel_step(f"set the sysctls of {ifname} in {netns}",
                                     "the container's /proc/sys/net must be writable"):
        if enable_dad:
            sysctl.write(f"net/ipv6/conf/{ifname}/enhanced_dad", "1")
            sysctl.write(f"net/ipv6/conf/{ifname}/accept_dad", "1")
        else:
            sysctl.write(f"net/ipv6/conf/{ifname}/accept_dad", "0")
        sysctl.write(f"net/ipv4/conf/{ifname}/arp_notify", "1")
        if has_v6:
            for dev in ("lo", ifname):
                sysctl.ensure(f"net/ipv6/conf/{dev}/disable_ipv6", "0")
            sysctl.write(f"net/ipv6/conf/{ifname}/keep_addr_on_down", "1")
    v4gw = next((ip.gateway for ip in result.ips if ip.version == "4" and ip.gateway), None)
    v6gw = next((ip.gateway for ip in result.ips if ip.version == "6" and ip.gateway), None)
    for ip in result.ips:
        with kernel_step(f"add IP addr {ip.address} to {ifname}", "check the IPAM result and the container"):
            addr.add_addr(cont_ipr, index, ip.address)
    if v6gw and enable_dad:
        addr.settle(cont_ipr, index)
    with kernel_step(f"set {ifname!r} up", "check the container's network namespace"):
        set_up(cont_ipr, index)
    for r in result.routes:
        gw = r.gw or (v6gw if r.is_v6 else v4gw)
        # the reference's message, with the errno in words: "... dev eth0': network is unreachable (ENETUNREACH)"
        with kernel_step(f"add route '{r.dst} via {gw} dev {ifname}'", "check ipam.routes for duplicates or "
                         "unreachable gateways", code=INVALID_CONFIG):
            addr.add_route(cont_ipr, index, r.dst, gw, r.extra)


def cmd_add(args: CmdArgs, conf: NetConf) -> Result:
    n = load_conf(conf, args)
    from ..net import link, netlink, netns, sysctl

    host_ipr = netlink.rtnl_here()
    cont_ipr = netlink.rtnl_in(args.netns) if args.netns else None
    if cont_ipr is None:
        raise CNIError(4, "CNI_NETNS is empty", "ADD needs the container's network namespace")
    if link.by_name(cont_ipr, args.ifname) is not None:
        raise CNIError(INVALID_CONFIG, f"container veth name {args.ifname!r} already exists in {args.netns}",
                       "DEL the attachment first, or choose another CNI_IFNAME")
    vlan_option = "vlan" if n.vlan else "vlanTrunk"
    try:
        with kernel_step(f"create bridge {n.bridge!r}", "check the node's bridge module and CAP_NET_ADMIN",
                         feature="bridge VLAN filtering" if n.vlan or n.vlans else "",
                         option=vlan_option if n.vlan or n.vlans else ""):
            br = link.ensure_bridge(host_ipr, n.bridge, n.mtu, n.promisc, bool(n.vlan or n.vlans))
    except link.NotABridge:
        raise CNIError(INVALID_CONFIG, f'"{n.bridge}" already exists but is not a bridge',
                       "pick another name in field bridge, or remove that link") from None
    with kernel_step(f"set up bridge {n.bridge!r}", "check the node's /proc/sys/net and the bridge"):
        sysctl.write(f"net/ipv6/conf/{n.bridge}/accept_ra", "0")
        link.set_up(host_ipr, br.index)

    host_fd = netns.host_fd()
    try:
        with kernel_step(f"create veth pair {args.ifname!r} in {args.netns}",
                         "check the container's network namespace and the MAC address"):
            host_name, cont = link.create_veth(cont_ipr, args.ifname, n.mtu, n.mac, host_fd)
    finally:
        os.close(host_fd)
    ipam_done = False
    try:
        host = link.by_name(host_ipr, host_name)
        assert host is not None
        port_feature = ("bridge port hairpin/isolation" if n.hairpin or n.port_isolation else "")
        with kernel_step(f"connect {host_name!r} to bridge {n.bridge}", "check the bridge and the host veth",
                         feature=port_feature, option="portIsolation" if n.port_isolation else
                         ("hairpinMode" if n.hairpin else "")):
            link.set_up(host_ipr, host.index)
            sysctl.write(f"net/ipv6/conf/{host_name}/accept_ra", "0")
            link.set_bridge_port(host_ipr, host.index, br.index, n.hairpin, n.port_isolation)
        _setup_vlans(host_ipr, host.index, br.index, n)
        result = Result(cni_version=n.cni_version, interfaces=[
            Interface(name=n.bridge, mac=br.mac), Interface(name=host_name, mac=host.mac),
            Interface(name=args.ifname, mac=cont.mac, sandbox=args.netns)])
        if n.mac_spoof_check:
            from ..net import spoofcheck

            spoofcheck.setup(host_name, cont.mac, f"{args.container_id}-{args.ifname}")
        if n.ipam_type:
            ipam_result = _ipam("ADD", n, args)
            ipam_done = True
            if ipam_result is None or not ipam_result.ips:
                raise CNIError(INVALID_CONFIG, "IPAM plugin returned missing IP config",
                               f"check the {n.ipam_type} configuration in field ipam")
            result.ips, result.routes, result.dns = ipam_result.ips, ipam_result.routes, ipam_result.dns
            gws = _calc_gateways(result, n)
            _configure_container(cont_ipr, args.netns, args.ifname, cont.index, result, n.enable_dad)
            if n.is_gw:
                _setup_gateway(host_ipr, br.index, br.mac, n, gws)
            if n.ip_masq:
                from ..net import ipmasq

                addrs = [ipaddress.ip_interface(ip.address) for ip in result.ips]
                ipmasq.choose(n.ip_masq_backend).setup(addrs, n.name, args.ifname, args.container_id)
        elif not n.disable_container_interface:
            with kernel_step(f"set {args.ifname!r} up", "check the container's network namespace"):
                link.set_up(cont_ipr, cont.index)
        if link.wait_oper_up(host_ipr, host.index) is None and not n.disable_container_interface:
            raise CNIError(TRY_AGAIN_LATER, f"bridge port in error state: {host_name} did not come up",
                           "retry the ADD; the port never reached the UP state")
        fresh = link.by_index(host_ipr, br.index)
        if fresh is not None:
            result.interfaces[0].mac = fresh.mac
        if n.dns is not None:
            result.dns = n.dns
        return result
    except BaseException:
        _rollback(n, args, cont_ipr, ipam_done)
        raise
    finally:
        cont_ipr.close()
        host_ipr.close()


def _setup_vlans(ipr: Any, host_index: int, br_index: int, n: BridgeConf) -> None:
    if not (n.vlan or n.vlans):
        return
    from ..net import link

    try:
        if not n.preserve_default_vlan:
            link.bridge_vlan(ipr, host_index, 1, False, False, add=False)
        if n.vlan:
            link.bridge_vlan(ipr, host_index, n.vlan, True, True)
        for vid in n.vlans:
            link.bridge_vlan(ipr, host_index, vid, False, False)
    except CNIError:
        raise
    except Exception as exc:
        raise from_os_error("set up VLANs on the bridge port", exc, "check vlan and vlanTrunk",
                            code=INVALID_CONFIG, feature="bridge VLAN filtering",
                            option="vlan" if n.vlan else "vlanTrunk") from None


def _setup_gateway(ipr: Any, br_index: int, br_mac: str, n: BridgeConf, gws: dict[int, list[Any]]) -> None:
    """Gateway addresses, the pinned bridge MAC, forwarding.

    ``br_mac`` is the bridge's MAC from before the port was attached: like Go (which
    re-sets the MAC it read at that point), we pin the bridge to it, so the bridge
    keeps its own address instead of adopting the lowest port MAC.
    """
    from ..net import sysctl

    target_index, target_name = br_index, n.bridge
    if n.vlan:
        target_index, target_name = _ensure_vlan_gateway_iface(ipr, br_index, n)
    for fam in (4, 6):
        for gw in gws[fam]:
            _ensure_addr(ipr, target_index, target_name, gw, n.force_address)
        if gws[fam]:
            # Pin the bridge MAC: otherwise it follows the lowest port MAC and churns.
            # A port-less bridge that had adopted a port's MAC reads 00:00:00:00:00:00,
            # which cannot be set (Go fails there): pin the MAC it has now instead.
            if int(br_mac.replace(":", "") or "0", 16) == 0:
                from ..net import link

                current = link.by_index(ipr, br_index)
                br_mac = current.mac if current is not None else br_mac
            with kernel_step(f"set the MAC address of {n.bridge} to {br_mac}", "check the bridge"):
                ipr.link("set", index=br_index, address=br_mac)
            ok = sysctl.ensure("net/ipv4/ip_forward" if fam == 4 else "net/ipv6/conf/all/forwarding", "1")
            if not ok:
                raise CNIError(INVALID_CONFIG, "failed to enable forwarding",
                               "make /proc/sys/net writable for the plugin")


def _ensure_vlan_gateway_iface(ipr: Any, br_index: int, n: BridgeConf) -> tuple[int, str]:
    """Go's ensureVlanInterface: a veth ``<br>.<vlan>`` on the bridge carries the VLAN gateway."""
    from ..net import link

    name = f"{n.bridge}.{n.vlan}"[:15]
    existing = link.by_name(ipr, name)
    if existing is not None:
        return existing.index, name
    peer = f"{name}.gw"[:15] if len(name) < 12 else "vgw" + link.random_veth_name()[4:]
    with kernel_step(f"create the VLAN gateway veth {name!r}", "check the bridge",
                     feature="bridge VLAN filtering", option="vlan"):
        ipr.link("add", ifname=name, kind="veth", peer={"ifname": peer})
    host = link.by_name(ipr, name)
    gw_end = link.by_name(ipr, peer)
    assert host is not None and gw_end is not None
    link.set_bridge_port(ipr, host.index, br_index, False, False)
    _setup_vlans(ipr, host.index, br_index, n)
    link.set_up(ipr, host.index)
    link.set_up(ipr, gw_end.index)
    return gw_end.index, peer


def _rollback(n: BridgeConf, args: CmdArgs, cont_ipr: Any, ipam_done: bool) -> None:
    """A failed ADD leaves nothing: veth, masquerade rules, spoof-check and the reservation."""
    from ..net import link

    try:
        cont = link.by_name(cont_ipr, args.ifname)
        if cont is not None:
            link.delete(cont_ipr, cont.index)
    except Exception:
        pass
    if n.ip_masq:
        try:
            from ..net import ipmasq

            ipmasq.teardown_all(n.name, args.ifname, args.container_id)
        except Exception:
            pass
    if n.mac_spoof_check:
        try:
            from ..net import spoofcheck

            spoofcheck.teardown(f"{args.container_id}-{args.ifname}")
        except Exception:
            pass
    if ipam_done or n.ipam_type:
        _ipam_del_quietly(n, args)


# -- DEL ----------------------------------------------------------------------------------------

def cmd_del(args: CmdArgs, conf: NetConf) -> None:
    n = load_conf(conf, args)
    link_error: BaseException | None = None
    if args.netns:
        try:
            _delete_container_link(args)
        except CNIError as exc:
            link_error = exc
        except Exception as exc:
            link_error = exc
    if n.ipam_type:
        _ipam("DEL", n, args)
    if n.mac_spoof_check:
        from ..net import spoofcheck

        spoofcheck.teardown(f"{args.container_id}-{args.ifname}")
    if n.ip_masq:
        # By chain name / comment: works with the netns gone (the reference leaks, plugins#810).
        from ..net import ipmasq

        ipmasq.teardown_all(n.name, args.ifname, args.container_id)
    if link_error is not None:
        if isinstance(link_error, CNIError):
            raise link_error
        if errno_of(link_error) is None:
            raise link_error
        raise from_os_error(f"delete {args.ifname} in {args.netns}", link_error,
                            "the IPAM reservation and rules were released; retry DEL")


def _delete_container_link(args: CmdArgs) -> None:
    from ..net import link

    link.act_on_link_in(args.netns, args.ifname, lambda ipr, cont: link.delete(ipr, cont.index))


# -- CHECK --------------------------------------------------------------------------------------

def cmd_check(args: CmdArgs, conf: NetConf) -> None:
    n = load_conf(conf, args)
    if n.ipam_type:
        _ipam("CHECK", n, args)
    prev = conf.prev_result
    if prev is None:
        raise CNIError(INVALID_CONFIG, "Required prevResult missing", "CHECK needs the cached ADD result")
    from ..net import addr, link, netlink

    br_iface = next((i for i in prev.interfaces if i.name == n.bridge), None)
    cont_iface = next((i for i in prev.interfaces if i.name == args.ifname and i.sandbox == args.netns), None)
    if br_iface is None or cont_iface is None:
        raise CNIError(INVALID_CONFIG, "prevResult lacks the bridge or container interface",
                       f"expected interfaces {n.bridge} and {args.ifname} (sandbox {args.netns})")
    host_ipr = netlink.rtnl_here()
    cont_ipr = netlink.rtnl_in(args.netns)
    try:
        br = link.by_name(host_ipr, n.bridge)
        if br is None or br.kind != "bridge":
            raise CNIError(INVALID_CONFIG, f"bridge {n.bridge} is missing or not a bridge", "re-ADD the pod")
        if br_iface.mac and br.mac != br_iface.mac:
            raise CNIError(INVALID_CONFIG, f"bridge {n.bridge} has MAC {br.mac}, prevResult says {br_iface.mac}",
                           "the bridge was re-created; re-ADD the pod")
        if br.promisc != n.promisc:
            raise CNIError(INVALID_CONFIG, f"bridge {n.bridge} promiscuous mode is {br.promisc}, config says "
                           f"{n.promisc}", "fix promiscMode or the bridge")
        cont = link.by_name(cont_ipr, args.ifname)
        if cont is None or cont.kind != "veth":
            raise CNIError(INVALID_CONFIG, f"container interface {args.ifname} is missing or not a veth",
                           "re-ADD the pod")
        if cont_iface.mac and cont.mac != cont_iface.mac:
            raise CNIError(INVALID_CONFIG, f"{args.ifname} has MAC {cont.mac}, prevResult says {cont_iface.mac}",
                           "re-ADD the pod")
        host = next((lk for lk in link.all_links(host_ipr)
                     if lk.kind == "veth" and lk.master == br.index and lk.index == cont.peer_index), None)
        if host is None:
            raise CNIError(INVALID_CONFIG, f"no host veth on {n.bridge} is the peer of {args.ifname}",
                           "re-ADD the pod")
        if n.mtu and (cont.mtu != n.mtu or host.mtu != n.mtu):
            raise CNIError(INVALID_CONFIG, f"MTU mismatch: {args.ifname}={cont.mtu} {host.name}={host.mtu}, "
                           f"config mtu={n.mtu}", "re-ADD the pod after fixing mtu")
        have = addr.list_addrs(cont_ipr, cont.index)
        for ip in prev.ips:
            if ipaddress.ip_interface(ip.address) not in have:
                raise CNIError(INVALID_CONFIG, f"address {ip.address} missing on {args.ifname}", "re-ADD the pod")
        routes = addr.list_routes(cont_ipr, AF_INET) + addr.list_routes(cont_ipr, AF_INET6)
        for r in prev.routes:
            dst = str(ipaddress.ip_network(r.dst, strict=False))
            if not any(x["dst"] == dst and (not r.gw or x["gw"] == r.gw) for x in routes):
                raise CNIError(INVALID_CONFIG, f"route {r.dst} via {r.gw or '-'} missing in {args.netns}",
                               "re-ADD the pod")
    finally:
        host_ipr.close()
        cont_ipr.close()
    if n.ip_masq and prev.ips:
        from ..net import ipmasq

        addrs = [ipaddress.ip_interface(ip.address) for ip in prev.ips]
        missing = ipmasq.choose(n.ip_masq_backend).check(addrs, n.name, args.ifname, args.container_id)
        if missing:
            raise CNIError(INVALID_CONFIG, f"masquerade rules missing: {'; '.join(missing)}", "re-ADD the pod")


# -- GC / STATUS --------------------------------------------------------------------------------

def cmd_gc(args: CmdArgs, conf: NetConf) -> None:
    n = load_conf(conf, args)
    valid = schemas.valid_attachments(conf.raw)
    from ..net import ipmasq, iptables, nftables

    errors = []
    for backend, usable in ((ipmasq.IptablesMasq(), iptables.available()),
                            (ipmasq.NftablesMasq(), nftables.available())):
        if usable:
            try:
                backend.gc(n.name, valid)
            except CNIError as err:
                errors.append(err.msg)
    if n.ipam_type:
        _ipam("GC", n, args)
    if errors:
        raise CNIError(999, "bridge GC failed: " + "; ".join(errors),
                       "those rules were left in place; check iptables/nft on the node and retry GC")


def cmd_status(args: CmdArgs, conf: NetConf) -> None:
    n = load_conf(conf, args)
    if n.ipam_type:
        _ipam("STATUS", n, args)


PLUGIN = Plugin(name="bridge", about="CNI bridge plugin (cni-flannel)", add=cmd_add, delete=cmd_del,
                check=cmd_check, gc=cmd_gc, status=cmd_status, schema=SCHEMA)
