"""The external interface: --iface / --iface-regex / --iface-can-reach / default route.

flanneld-reference §2 (`main.go@H`, `pkg/ipmatch/match.go@H`, `pkg/ip/iface.go@H`), with the
reference's messages. Runs in the current network namespace.

Where we do better (⚠ in the reference):
* ``--public-ip`` alone (no selector) that is not a local address: the reference exits
  ("no interface with given IP found", #1978). We log it and fall back to the default-route
  interface, advertising the public IP while the local address stays ``iface_addr``
  (§14 complaint 7: the two are kept apart).
* ``--public-ip`` / ``--public-ipv6`` of the wrong family is refused with a message
  instead of a panic (#1629, #1985).
* ``--iface <IP>`` in dual-stack without ``--public-ipv6`` still finds the v6 address.
* ``--iface-regex`` in dual-stack: a v4 hit on an interface whose v6 did not match is
  not carried over to the interface later matched by name.
"""
from __future__ import annotations

import ipaddress
import logging
import re
import socket
from collections.abc import Callable
from typing import Any

from ..records import record
from .backend.base import ExternalInterface
from .backend.kernel import IFA_F_DEPRECATED, IFA_F_PERMANENT, IFA_F_TEMPORARY, Addr, Kernel, KernelError, Link

log = logging.getLogger("flanneld.iface")

V4, V6, DUAL = "ipv4", "ipv6", "dual"
IP = ipaddress.IPv4Address | ipaddress.IPv6Address


class IfaceError(Exception):
    """No usable interface: fatal (flanneld exits 1 with this message)."""


class _Miss(Exception):
    """One lookup failed (logged; the next --iface / regex is tried)."""


@record
class _Found:
    link: Link
    addr4: ipaddress.IPv4Address | None = None
    addr6: ipaddress.IPv6Address | None = None


def _go_ip(ip: IP | None) -> str:
    return "<nil>" if ip is None else str(ip)


def _go_ips(ips: list[IP]) -> str:
    return "[" + " ".join(str(i) for i in ips) + "]"


def is_global_unicast(ip: IP) -> bool:
    """Go's net.IP.IsGlobalUnicast (private ranges and ULAs count as global)."""
    if ip.is_unspecified or ip.is_loopback or ip.is_multicast or ip.is_link_local:
        return False
    return not (ip.version == 4 and ip == ipaddress.IPv4Address("255.255.255.255"))


def _rank(a: Addr) -> tuple[int, int, int]:
    """compareAddrs@H: global before link-local, permanent before dynamic, non-temporary first."""
    return (0 if is_global_unicast(a.ip) else 1,
            0 if a.flags & IFA_F_PERMANENT else 1,
            1 if (a.ip.version == 6 and a.flags & IFA_F_TEMPORARY) else 0)


def usable_addrs(addrs: list[Addr], version: int) -> list[IP]:
    """GetInterfaceIP{4,6}Addrs@H: global or link-local unicast, not deprecated, best first
    (a stable sort: the kernel's order breaks ties)."""
    ok = [a for a in addrs if a.ip.version == version
          and (is_global_unicast(a.ip) or a.ip.is_link_local) and not a.flags & IFA_F_DEPRECATED]
    return [a.ip for a in sorted(ok, key=_rank)]


class _Net:
    """What the lookups read from the kernel, behind one socket."""

    def __init__(self, kernel: Kernel) -> None:
        self.k = kernel
        self._links: list[Link] | None = None

    def links(self) -> list[Link]:
        if self._links is None:
            self._links = self.k.links()  # net.Interfaces(): index order
        return self._links

    def by_index(self, index: int) -> Link | None:
        return next((link for link in self.links() if link.index == index), None)

    def ips(self, link: Link, version: int) -> list[IP]:
        family = socket.AF_INET if version == 4 else socket.AF_INET6
        return usable_addrs(self.k.addrs(link.index, family), version)

    def owner(self, ip: IP) -> Link | None:
        family = socket.AF_INET if ip.version == 4 else socket.AF_INET6
        for link in self.links():
            if any(a.ip == ip for a in self.k.addrs(link.index, family)):
                return link
        return None

    def default_link(self, version: int) -> Link:
        """GetDefault{,V6}GatewayInterface: the first main-table route with no Dst."""
        family = socket.AF_INET if version == 4 else socket.AF_INET6
        v6 = " v6" if version == 6 else ""
        for route in self.k.routes(family, names={}):
            if route.dst.prefixlen == 0:
                if not route.oif:
                    raise _Miss(f"found default{v6} route but could not determine interface")
                link = self.by_index(route.oif)
                if link is None:
                    raise _Miss("route ip+net: no such network interface")
                return link
        raise _Miss(f"unable to find default{v6} route")


def _stack(enable_ipv4: bool, enable_ipv6: bool) -> str:
    if enable_ipv4 and enable_ipv6:
        return DUAL
    if enable_ipv4:
        return V4
    if enable_ipv6:
        return V6
    raise IfaceError("none defined stack")


def _parse_public(value: str, version: int) -> Any:
    if not value:
        return None
    flag = "IP" if version == 4 else "IPv6"
    try:
        ip = ipaddress.ip_address(value)
    except ValueError:
        raise IfaceError(f"invalid public {flag} address: {value}") from None
    if ip.version != version:
        raise IfaceError(f"invalid public {flag} address: {value} (not an IPv{version} address)")
    return ip


def select_interface(*, ifaces: list[str], iface_regex: list[str], iface_can_reach: str, public_ip: str,
                     public_ipv6: str, enable_ipv4: bool, enable_ipv6: bool) -> ExternalInterface:
    """The reference's main.go interface loop around LookupExtIface. Raises IfaceError."""
    stack = _stack(enable_ipv4, enable_ipv6)
    pub4 = _parse_public(public_ip, 4)
    pub6 = _parse_public(public_ipv6, 6)
    kernel = Kernel()
    try:
        net = _Net(kernel)
        try:
            return _select(net, stack, ifaces, iface_regex, iface_can_reach, pub4, pub6)
        except KernelError as exc:
            raise IfaceError(f"Failed to find any valid interface to use: {exc}") from None
    finally:
        kernel.close()


def _select(net: _Net, stack: str, ifaces: list[str], iface_regex: list[str], can_reach: str,
            pub4: ipaddress.IPv4Address | None, pub6: ipaddress.IPv6Address | None) -> ExternalInterface:
    def lookup(fn: Callable[[], _Found]) -> ExternalInterface:
        return _finish(net, stack, fn(), pub4, pub6)

    if not ifaces and not iface_regex and not can_reach:
        public = str(pub4) if pub4 is not None else (str(pub6) if pub6 is not None else "")
        try:
            if public:
                try:
                    return lookup(lambda: _by_name_or_ip(net, stack, public, pub6))
                except _Miss as exc:
                    # ⚠ the reference exits here; a NAT'd --public-ip need not be local (§14.7)
                    log.info("%s is not a local address (%s); using the default route interface and "
                             "advertising %s", public, exc, public)
            return lookup(lambda: _default(net, stack))
        except _Miss as exc:
            raise IfaceError(f"Failed to find any valid interface to use: {exc}") from None

    for name in ifaces:
        try:
            return lookup(lambda: _by_name_or_ip(net, stack, name, pub6))  # noqa: B023 - called at once
        except _Miss as exc:
            log.info("Could not find valid interface matching %s: %s", name, exc)
    for pattern in iface_regex:
        try:
            return lookup(lambda: _by_regex(net, stack, pattern))  # noqa: B023 - called at once
        except _Miss as exc:
            log.info("Could not find valid interface matching %s: %s", pattern, exc)
    if can_reach:
        try:
            return lookup(lambda: _can_reach(net, can_reach))
        except _Miss as exc:
            log.info("Could not find valid interface matching ifaceCanReach: %s: %s", can_reach, exc)
    raise IfaceError("Failed to find interface to use that matches the interfaces and/or regexes provided")


def _by_name_or_ip(net: _Net, stack: str, ifname: str, pub6: ipaddress.IPv6Address | None) -> _Found:
    try:
        ip: IP | None = ipaddress.ip_address(ifname)
    except ValueError:
        ip = None
    if ip is None:
        by_name = next((link for link in net.links() if link.name == ifname), None)
        if by_name is None:
            raise _Miss(f"error looking up interface {ifname}: route ip+net: no such network interface")
        return _Found(by_name)
    log.info("Searching for interface using %s", ip)
    if stack == V6 or (stack == DUAL and ip.version == 6 and pub6 is None):
        link = net.owner(ip) if ip.version == 6 else None
        if link is None:
            raise _Miss(f"error looking up v6 interface {ifname}: no interface with given IPv6 found")
        return _Found(link, addr6=ip)  # type: ignore[arg-type]
    found: _Found | None = None
    if ip.version == 4:
        link = net.owner(ip)
        if link is None:
            raise _Miss(f"error looking up interface {ifname}: no interface with given IP found")
        found = _Found(link, addr4=ip)
    elif stack == V4:
        raise _Miss(f"error looking up interface {ifname}: no interface with given IP found")
    if stack == DUAL and pub6 is not None:
        v6link = net.owner(pub6)
        if v6link is None:
            raise _Miss(f"error looking up v6 interface {pub6}: no interface with given IPv6 found")
        if found is None:
            return _Found(v6link, addr6=pub6)
        if v6link.name != found.link.name:
            raise _Miss(f"v6 interface {v6link.name} must be the same with v4 interface {found.link.name}")
        found.addr6 = pub6
    assert found is not None
    return found


def _by_regex(net: _Net, stack: str, pattern: str) -> _Found:
    try:
        rx = re.compile(pattern)
    except re.error as exc:
        raise _Miss(f"could not compile the IP address regex '{pattern}': {exc}") from None

    def hit(ips: list[IP]) -> IP | None:
        return next((i for i in ips if rx.search(str(i))), None)

    for link in net.links():  # IPs first, in net.Interfaces() order
        v4 = hit(net.ips(link, 4)) if stack in (V4, DUAL) else None
        v6 = hit(net.ips(link, 6)) if stack in (V6, DUAL) else None
        if stack == V4 and v4 is not None:
            return _Found(link, addr4=v4)  # type: ignore[arg-type]
        if stack == V6 and v6 is not None:
            return _Found(link, addr6=v6)  # type: ignore[arg-type]
        if stack == DUAL and v4 is not None and v6 is not None:
            return _Found(link, addr4=v4, addr6=v6)  # type: ignore[arg-type]
    for link in net.links():  # then names
        if rx.search(link.name):
            return _Found(link)
    version = 6 if stack == V6 else 4
    faces = ", ".join(f"{link.name}:{_go_ips(net.ips(link, version))}" for link in net.links())
    raise _Miss(f"could not match pattern {pattern} to any of the available network interfaces ({faces})")


def _can_reach(net: _Net, target: str) -> _Found:
    log.info("Determining interface to use based on given ifcanreach: %s", target)
    try:
        ip = ipaddress.ip_address(target)
    except ValueError:
        raise _Miss(f"failed to get ifcanreach based interface: couldn't lookup route to <nil>: "
                    f"invalid address {target}") from None
    try:
        routes = net.k.route_get(ip)
    except KernelError as exc:
        reason = str(exc).split(": ", 1)[-1]
        raise _Miss(f"failed to get ifcanreach based interface: couldn't lookup route to {ip}: {reason}") from None
    for route in routes:
        link = net.by_index(route.oif or 0)
        if link is None:
            raise _Miss("failed to get ifcanreach based interface: couldn't lookup interface: "
                        "route ip+net: no such network interface")
        src = route.prefsrc
        if isinstance(src, ipaddress.IPv4Address):
            return _Found(link, addr4=src)
        if isinstance(src, ipaddress.IPv6Address):
            return _Found(link, addr6=src)
        return _Found(link)
    raise _Miss("failed to get ifcanreach based interface: no interface with given IP found")


def _default(net: _Net, stack: str) -> _Found:
    log.info("Determining IP address of default interface")
    if stack in (V4, DUAL):
        try:
            link = net.default_link(4)
        except _Miss as exc:
            raise _Miss(f"failed to get default interface: {exc}") from None
    if stack in (V6, DUAL):
        try:
            v6link = net.default_link(6)
        except _Miss as exc:
            raise _Miss(f"failed to get default v6 interface: {exc}") from None
        if stack == V6:
            return _Found(v6link)
        if v6link.name != link.name:
            raise _Miss(f"v6 default route interface {v6link.name} must be the same with v4 default route "
                        f"interface {link.name}")
    return _Found(link)


def _finish(net: _Net, stack: str, found: _Found, pub4: ipaddress.IPv4Address | None,
            pub6: ipaddress.IPv6Address | None) -> ExternalInterface:
    link = found.link
    if stack in (V4, DUAL) and found.addr4 is None:
        ips = net.ips(link, 4)
        if not ips:
            raise _Miss(f"failed to find IPv4 address for interface {link.name}")
        found.addr4 = ips[0]  # type: ignore[assignment]
    if stack in (V6, DUAL) and found.addr6 is None:
        ips = net.ips(link, 6)
        if not ips:
            raise _Miss(f"failed to find IPv6 address for interface {link.name}")
        found.addr6 = ips[0]  # type: ignore[assignment]
    if stack == V6:
        found.addr4 = None
    if stack == V4:
        found.addr6 = None
    if found.addr4 is not None:
        log.info("Using interface with name %s and address %s", link.name, found.addr4)
    if found.addr6 is not None:
        log.info("Using interface with name %s and v6 address %s", link.name, found.addr6)
    if link.mtu == 0:
        raise _Miss(f"failed to determine MTU for {_go_ip(found.addr4)} interface")
    ext4, ext6 = pub4, pub6
    if ext4 is not None:
        log.info("Using %s as external address", ext4)
    elif stack != V6:
        log.info("Defaulting external address to interface address (%s)", _go_ip(found.addr4))
        ext4 = found.addr4
    if ext6 is not None:
        log.info("Using %s as external address", ext6)
    elif stack != V4:
        log.info("Defaulting external v6 address to interface address (%s)", _go_ip(found.addr6))
        ext6 = found.addr6
    return ExternalInterface(name=link.name, index=link.index, mtu=link.mtu, iface_addr=found.addr4,
                             iface_addr6=found.addr6, ext_addr=ext4 if stack != V6 else None,
                             ext_addr6=ext6 if stack != V4 else None)
