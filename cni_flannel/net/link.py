"""Links: bridges, veth pairs and bridge ports, through one netlink socket per namespace.

``ipr`` is our rtnl.Rtnl (the plugins) or pyroute2's IPRoute (doctor): both take the same calls.
"""
from __future__ import annotations

import errno
import os
import time

from ..records import record
from .netlink import kernel_errors

TYPE_CHECKING = False
if TYPE_CHECKING:  # annotations only: typing costs ~2 ms per frozen exec
    from collections.abc import Callable
    from typing import Any


@record
class LinkInfo:
    index: int
    name: str
    kind: str
    mac: str
    mtu: int
    master: int
    oper_state: str
    flags: int
    peer_index: int

    @property
    def promisc(self) -> bool:
        return bool(self.flags & 0x100)  # IFF_PROMISC


def _info(msg: Any) -> LinkInfo:
    return LinkInfo(index=msg["index"], name=msg.get("ifname"),
                    kind=msg.get(("IFLA_LINKINFO", "IFLA_INFO_KIND")) or "",
                    mac=msg.get("IFLA_ADDRESS") or "", mtu=msg.get("IFLA_MTU") or 0,
                    master=msg.get("IFLA_MASTER") or 0, oper_state=msg.get("IFLA_OPERSTATE") or "",
                    flags=msg["flags"], peer_index=msg.get("IFLA_LINK") or 0)


def errno_of(exc: BaseException) -> int:
    return int(getattr(exc, "code", 0) or 0)


def _get(ipr: Any, **key: Any) -> LinkInfo | None:
    try:
        msgs = ipr.link("get", **key)
    except kernel_errors() as exc:
        if errno_of(exc) == errno.ENODEV:
            return None
        raise
    return _info(msgs[0]) if msgs else None


def by_name(ipr: Any, name: str) -> LinkInfo | None:
    return _get(ipr, ifname=name)


def by_index(ipr: Any, index: int) -> LinkInfo | None:
    return _get(ipr, index=index)


def all_links(ipr: Any) -> list[LinkInfo]:
    return [_info(m) for m in ipr.get_links()]


class NotABridge(Exception):
    pass


def ensure_bridge(ipr: Any, name: str, mtu: int, promisc: bool, vlan_filtering: bool) -> LinkInfo:
    """Create the bridge (MTU given at creation, so the kernel keeps managing it) or reuse it."""
    kwargs: dict[str, Any] = {"ifname": name, "kind": "bridge"}
    if mtu:
        kwargs["mtu"] = mtu
    if vlan_filtering:
        kwargs["br_vlan_filtering"] = 1
    try:
        ipr.link("add", **kwargs)
    except kernel_errors() as exc:
        if errno_of(exc) != errno.EEXIST:
            raise
    br = by_name(ipr, name)
    if br is None or br.kind != "bridge":
        raise NotABridge(name)
    if promisc and not br.promisc:
        ipr.link("set", index=br.index, flags=br.flags | 0x100, change=0x100)
    return br


def set_up(ipr: Any, index: int) -> None:
    ipr.link("set", index=index, state="up")


def random_veth_name() -> str:
    return "veth" + os.urandom(4).hex()


def create_veth(cont_ipr: Any, ifname: str, mtu: int, mac: str, host_ns_fd: int) -> tuple[str, LinkInfo]:
    """Create ``ifname`` in the container namespace with its peer ``veth<8 hex>`` in the host one.

    Returns (host veth name, container link). Retries on a name collision, as Go does.
    """
    last: BaseException | None = None
    for _ in range(10):
        host_name = random_veth_name()
        # txqlen 0 on both ends, as Go's netlink.Veth{} literal creates them (a veth needs no queue)
        kwargs: dict[str, Any] = {"ifname": ifname, "kind": "veth", "txqlen": 0,
                                  "peer": {"ifname": host_name, "net_ns_fd": host_ns_fd, "txqlen": 0}}
        if mtu:
            kwargs["mtu"] = mtu
            kwargs["peer"]["mtu"] = mtu
        if mac:
            kwargs["address"] = mac
        try:
            cont_ipr.link("add", **kwargs)
        except kernel_errors() as exc:
            if errno_of(exc) == errno.EEXIST and by_name(cont_ipr, ifname) is None:
                last = exc  # the host-side name collided: pick another
                continue
            raise
        cont = by_name(cont_ipr, ifname)
        assert cont is not None
        return host_name, cont
    raise RuntimeError(f"could not find a free veth name: {last}")


def set_bridge_port(ipr: Any, index: int, master: int, hairpin: bool, isolated: bool) -> None:
    ipr.link("set", index=index, master=master)
    settings: dict[str, int] = {}
    if hairpin:
        settings["mode"] = 1  # IFLA_BRPORT_MODE: hairpin
    if isolated:
        settings["isolated"] = 1
    if settings:
        ipr.brport("set", index=index, **settings)


def bridge_vlan(ipr: Any, index: int, vid: int, pvid: bool, untagged: bool, add: bool = True) -> None:
    flags = (0x2 if pvid else 0) | (0x4 if untagged else 0)  # BRIDGE_VLAN_INFO_PVID / _UNTAGGED
    ipr.vlan_filter("add" if add else "del", index=index, vlan_info={"vid": vid, "flags": flags})


def delete(ipr: Any, index: int) -> None:
    try:
        ipr.link("del", index=index)
    except kernel_errors() as exc:
        if errno_of(exc) != errno.ENODEV:
            raise


def act_on_link_in(netns_path: str, ifname: str, action: Callable[[Any, LinkInfo], None]) -> None:
    """Run ``action(ipr, link)`` on ``ifname`` inside a netns; nothing when the netns or link is gone.

    The DEL paths use it: a vanished namespace or interface means there is nothing to undo.
    """
    from .netlink import rtnl_in
    from .netns import NetnsGone

    try:
        ipr = rtnl_in(netns_path)
    except NetnsGone:
        return
    try:
        found = by_name(ipr, ifname)
        if found is not None:
            action(ipr, found)
    finally:
        ipr.close()


def wait_oper_up(ipr: Any, index: int, delays_ms: tuple[int, ...] = (0, 50, 500, 1000, 1000)) -> LinkInfo | None:
    """Wait for a port to be operationally up, with Go bridge's back-off; None if it never is."""
    for delay in delays_ms:
        if delay:
            time.sleep(delay / 1000)
        link = by_index(ipr, index)
        if link is not None and link.oper_state == "UP":
            return link
    return None
