"""Addresses and routes on one link, through an IPRoute socket."""
from __future__ import annotations

import _socket as socket  # the C module: `socket` adds enums that cost ~2 ms per frozen exec
import errno
import ipaddress
import time

from .link import errno_of
from .netlink import kernel_errors

TYPE_CHECKING = False
if TYPE_CHECKING:  # annotations only: typing costs ~2 ms per frozen exec
    from typing import Any

IFA_F_TENTATIVE = 0x40


def list_addrs(ipr: Any, index: int, family: int | None = None) -> list[ipaddress.IPv4Interface
                                                                      | ipaddress.IPv6Interface]:
    kwargs: dict[str, Any] = {"index": index}
    if family:
        kwargs["family"] = family
    out = []
    for m in ipr.get_addr(**kwargs):
        out.append(ipaddress.ip_interface(f"{m.get('IFA_ADDRESS')}/{m['prefixlen']}"))
    return out


def broadcast_of(iface: ipaddress.IPv4Interface | ipaddress.IPv6Interface) -> str | None:
    """The broadcast address Go's netlink.AddrAdd sets: IPv4 with a prefix shorter than /31."""
    if iface.version != 4 or iface.network.prefixlen >= 31:
        return None
    return str(iface.network.broadcast_address)


def add_addr(ipr: Any, index: int, cidr: str, ignore_exists: bool = False) -> None:
    iface = ipaddress.ip_interface(cidr)
    kwargs: dict[str, Any] = {"index": index, "address": str(iface.ip), "prefixlen": iface.network.prefixlen}
    brd = broadcast_of(iface)
    if brd is not None:
        kwargs["broadcast"] = brd  # "inet 10.42.1.2/24 brd 10.42.1.255", as with the Go plugins
    try:
        ipr.addr("add", **kwargs)
    except kernel_errors() as exc:
        if not (ignore_exists and errno_of(exc) == errno.EEXIST):
            raise


def del_addr(ipr: Any, index: int, iface: ipaddress.IPv4Interface | ipaddress.IPv6Interface) -> None:
    try:
        ipr.addr("del", index=index, address=str(iface.ip), prefixlen=iface.network.prefixlen)
    except kernel_errors() as exc:
        if errno_of(exc) not in (errno.EADDRNOTAVAIL, errno.ENOENT):
            raise


def global_unicast(ipr: Any, index: int) -> list[ipaddress.IPv4Interface | ipaddress.IPv6Interface]:
    """Go's IsGlobalUnicast: anything but link-local, loopback, multicast and unspecified."""
    return [a for a in list_addrs(ipr, index)
            if not (a.ip.is_link_local or a.ip.is_loopback or a.ip.is_multicast or a.ip.is_unspecified)]


def add_route(ipr: Any, index: int, dst: str, gw: str | None, extra: dict[str, Any] | None = None) -> None:
    net = ipaddress.ip_network(dst, strict=False)
    kwargs: dict[str, Any] = {"dst": str(net), "oif": index, "proto": 3,  # RTPROT_BOOT, as Go netlink
                              "family": socket.AF_INET6 if net.version == 6 else socket.AF_INET}
    if gw:
        kwargs["gateway"] = gw
    extra = extra or {}
    if extra.get("priority"):
        kwargs["priority"] = extra["priority"]
    if extra.get("table"):
        kwargs["table"] = extra["table"]
    if extra.get("scope"):
        kwargs["scope"] = extra["scope"]
    metrics = {}
    if extra.get("mtu"):
        metrics["RTAX_MTU"] = extra["mtu"]
    if extra.get("advmss"):
        metrics["RTAX_ADVMSS"] = extra["advmss"]
    if metrics:
        kwargs["metrics"] = metrics
    ipr.route("add", **kwargs)


def list_routes(ipr: Any, family: int) -> list[dict[str, Any]]:
    out = []
    for r in ipr.get_routes(family=family, table=254):
        dst = r.get("RTA_DST")
        out.append({"dst": f"{dst}/{r['dst_len']}" if dst else ("::/0" if family == socket.AF_INET6
                                                               else "0.0.0.0/0"),
                    "gw": r.get("RTA_GATEWAY"), "oif": r.get("RTA_OIF")})
    return out


def settle(ipr: Any, index: int, timeout: float = 5.0) -> None:
    """Wait until no IPv6 address on the link is tentative (DAD finished)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        tentative = [m for m in ipr.get_addr(index=index, family=socket.AF_INET6)
                     if (m.get("IFA_FLAGS") or m["flags"]) & IFA_F_TENTATIVE]
        if not tentative:
            return
        time.sleep(0.05)
