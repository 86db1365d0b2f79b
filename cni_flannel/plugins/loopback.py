"""The loopback plugin (containernetworking/plugins plugins/main/loopback).

containerd runs it for ``lo`` on every pod, in parallel with the main chain.
"""
from __future__ import annotations

import ipaddress

from ..cni import schemas
from ..cni.conf import NetConf
from ..cni.env import CmdArgs
from ..cni.errors import INVALID_CONFIG, CNIError
from ..cni.result import Interface, IPConfig, Result
from ..cni.skel import Plugin

SCHEMA = schemas.netconf({})


def cmd_add(args: CmdArgs, conf: NetConf) -> Result:
    from ..net import addr, link, netlink

    ipr = netlink.rtnl_in(args.netns)
    try:
        lo = link.by_name(ipr, args.ifname)
        if lo is None:
            raise CNIError(INVALID_CONFIG, f"no interface {args.ifname} in {args.netns}",
                           "loopback expects CNI_IFNAME=lo")
        link.set_up(ipr, lo.index)
        ips = addr.list_addrs(ipr, lo.index)
    finally:
        ipr.close()
    result = Result(cni_version=conf.cni_version)
    prev = conf.prev_result
    if prev is not None:
        return prev
    # The reference reports lo and its loopback addresses (1.x results), like it does since v0.8.
    result.interfaces = [Interface(name=args.ifname, mac="00:00:00:00:00:00", sandbox=args.netns)]
    for a in ips:
        if isinstance(a, ipaddress.IPv4Interface | ipaddress.IPv6Interface) and a.ip.is_loopback:
            result.ips.append(IPConfig(address=str(a), interface=0))
    return result


def cmd_del(args: CmdArgs, conf: NetConf) -> None:
    if not args.netns:
        return
    from ..net import link

    link.act_on_link_in(args.netns, args.ifname, lambda ipr, lo: ipr.link("set", index=lo.index, state="down"))


def cmd_check(args: CmdArgs, conf: NetConf) -> None:
    from ..net import link, netlink

    ipr = netlink.rtnl_in(args.netns)
    try:
        lo = link.by_name(ipr, args.ifname)
    finally:
        ipr.close()
    if lo is None or not lo.flags & 1:
        raise CNIError(INVALID_CONFIG, f"loopback interface {args.ifname} is down in {args.netns}",
                       "re-ADD the pod")


def cmd_noop(args: CmdArgs, conf: NetConf) -> None:
    return None


PLUGIN = Plugin(name="loopback", about="CNI loopback plugin (cni-flannel)", add=cmd_add, delete=cmd_del,
                check=cmd_check, gc=cmd_noop, status=cmd_noop, schema=SCHEMA)
