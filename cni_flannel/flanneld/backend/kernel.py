"""Kernel helpers the flanneld backends share: links, addresses, routes, neighbours, FDB, monitor.

One :class:`Kernel` per backend. It remembers the network namespace it was made in and
keeps one pyroute2 socket per thread, each opened inside that namespace: pyroute2 0.9's
sync ``IPRoute`` silently opens a fresh socket in the *calling thread's* namespace when
used from another thread (measured), which would program the wrong namespace.

Every kernel failure comes out as :class:`KernelError` with what was being done and the
errno by name ("failed to add route 10.42.2.0/24 via 192.168.77.2 dev eth0: network is
unreachable (ENETUNREACH)"), never a Python repr.

Route constants follow the Go flanneld (vishvananda/netlink's defaults): main table,
``proto boot``, scope universe, so a Go flanneld and ours see each other's routes.
"""
from __future__ import annotations

import errno as errno_mod
import ipaddress
import logging
import os
import select
import socket
import struct
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from typing import Any

from ...net.netns import entered
from ...records import record
from ..config import ci_get
from .base import ReconcileReport

log = logging.getLogger("flanneld.kernel")

IPAddr = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNet = ipaddress.IPv4Network | ipaddress.IPv6Network

RTPROT_BOOT = 3
RT_TABLE_MAIN = 254
RTN_UNICAST = 1
RT_SCOPE_UNIVERSE = 0
RTNH_F_ONLINK = 0x4
NUD_PERMANENT = 0x80
NTF_SELF = 0x02
IFF_UP = 0x1
IFA_F_TEMPORARY = 0x01
IFA_F_DEPRECATED = 0x20
IFA_F_PERMANENT = 0x80

# rtnetlink multicast groups (bit masks for bind(), RTMGRP_*)
GROUP_LINK = 0x1
GROUP_NEIGH = 0x4
GROUP_IPV4_ROUTE = 0x40
GROUP_IPV6_ROUTE = 0x400

_RTM_NAMES = {16: ("link", "new"), 17: ("link", "del"), 24: ("route", "new"), 25: ("route", "del"),
              28: ("neigh", "new"), 29: ("neigh", "del")}


class KernelError(Exception):
    """A netlink request failed; ``str()`` is the whole translated message."""

    def __init__(self, message: str, code: int = 0) -> None:
        super().__init__(message)
        self.code = code


def errno_text(code: int) -> str:
    """``network is unreachable (ENETUNREACH)``: Go's lowercase wording plus the errno name."""
    text = os.strerror(code)
    text = text[:1].lower() + text[1:]
    return f"{text} ({errno_mod.errorcode.get(code, f'errno {code}')})"


def translate(exc: BaseException, doing: str) -> KernelError:
    code = getattr(exc, "code", None)
    if code is None:
        code = getattr(exc, "errno", None)
    if isinstance(code, int) and code > 0:
        return KernelError(f"failed to {doing}: {errno_text(code)}", code)
    return KernelError(f"failed to {doing}: {exc}")


@record
class Link:
    index: int
    name: str
    kind: str          # "" for a device without IFLA_LINKINFO
    mtu: int
    mac: str
    flags: int
    txqlen: int
    info: dict[str, Any]  # IFLA_INFO_DATA attributes by NLA name (IFLA_VXLAN_ID, ...)

    @property
    def up(self) -> bool:
        return bool(self.flags & IFF_UP)


@record
class Addr:
    ip: IPAddr
    prefixlen: int
    flags: int  # IFA_FLAGS (32 bit) when present, else ifa_flags


@record
class Route:
    """A main-table unicast route, as we create and compare them."""

    dst: IPNet
    gateway: IPAddr | None = None
    oif: int | None = None
    onlink: bool = False
    dev: str = ""  # the name of oif, for messages
    protocol: int = RTPROT_BOOT
    priority: int = 0
    prefsrc: IPAddr | None = None

    def same_as(self, other: Route) -> bool:
        """What Go's routeEqual compares (Dst, Gw, LinkIndex), plus onlink for the vxlan routes.
        A wanted route without oif (the kernel picks) matches any device."""
        return (self.dst == other.dst and self.gateway == other.gateway and self.onlink == other.onlink
                and (self.oif is None or other.oif is None or self.oif == other.oif))

    def describe(self) -> str:
        out = f"{self.dst}"
        if self.gateway is not None:
            out += f" via {self.gateway}"
        if self.dev or self.oif:
            out += f" dev {self.dev or self.oif}"
        if self.onlink:
            out += " onlink"
        return out


@record
class Neigh:
    ip: IPAddr
    lladdr: str
    ifindex: int
    dev: str = ""
    state: int = NUD_PERMANENT

    def describe(self) -> str:
        return f"{self.ip} lladdr {self.lladdr} dev {self.dev or self.ifindex} nud permanent"


@record
class Fdb:
    lladdr: str
    dst: IPAddr | None
    ifindex: int
    dev: str = ""
    state: int = NUD_PERMANENT
    flags: int = NTF_SELF

    def describe(self) -> str:
        return f"{self.lladdr} dev {self.dev or self.ifindex} dst {self.dst} self permanent"


def _ip(value: Any) -> IPAddr | None:
    return ipaddress.ip_address(value) if value not in (None, "") else None


class Kernel:
    """Netlink in the namespace this object was created in, from any thread."""

    def __init__(self) -> None:
        self._netns_fd = os.open("/proc/thread-self/ns/net", os.O_RDONLY | os.O_CLOEXEC)
        self._local = threading.local()
        self._all: list[Any] = []
        self._lock = threading.Lock()

    # -- plumbing ---------------------------------------------------------------------------
    @property
    def netns_path(self) -> str:
        return f"/proc/{os.getpid()}/fd/{self._netns_fd}"

    @contextmanager
    def inside(self) -> Iterator[None]:
        """Run the body in this Kernel's namespace (for sysctl files, raw sockets)."""
        with entered(self.netns_path):
            yield

    @property
    def ipr(self) -> Any:
        ipr = getattr(self._local, "ipr", None)
        if ipr is None:
            from ...net.netlink import socket_here  # pyroute2 without its package __init__ (as frozen)

            with self.inside():
                ipr = socket_here()
            self._local.ipr = ipr
            with self._lock:
                self._all.append(ipr)
        return ipr

    def close(self) -> None:
        with self._lock:
            for ipr in self._all:
                try:
                    ipr.close()
                except Exception:  # closing is best effort
                    pass
            self._all.clear()
        self._local = threading.local()
        if self._netns_fd >= 0:
            os.close(self._netns_fd)
            self._netns_fd = -1

    def _call(self, doing: str, fn: Callable[[], Any]) -> Any:
        from ...net.netlink import netlink_errors

        NetlinkError = netlink_errors()[0]  # noqa: N806 - the class, imported as frozen bundles can

        try:
            return fn()
        except NetlinkError as exc:
            raise translate(exc, doing) from None
        except OSError as exc:
            raise translate(exc, doing) from None

    # -- links ------------------------------------------------------------------------------
    @staticmethod
    def _link(msg: Any) -> Link:
        kind, info = "", {}
        linkinfo = msg.get_attr("IFLA_LINKINFO")
        if linkinfo is not None:
            kind = linkinfo.get_attr("IFLA_INFO_KIND") or ""
            data = linkinfo.get_attr("IFLA_INFO_DATA")
            if data is not None and hasattr(data, "get"):
                info = {k: v for k, v in data.get("attrs", []) if k != "UNKNOWN"}
        return Link(index=msg["index"], name=msg.get_attr("IFLA_IFNAME") or "", kind=kind,
                    mtu=msg.get_attr("IFLA_MTU") or 0, mac=(msg.get_attr("IFLA_ADDRESS") or "").lower(),
                    flags=msg["flags"], txqlen=msg.get_attr("IFLA_TXQLEN") or 0, info=info)

    def links(self) -> list[Link]:
        msgs = self._call("list links", lambda: list(self.ipr.get_links()))
        return sorted((self._link(m) for m in msgs), key=lambda link: link.index)

    def link(self, name: str | None = None, index: int | None = None) -> Link | None:
        from ...net.netlink import netlink_errors

        NetlinkError = netlink_errors()[0]  # noqa: N806 - the class, imported as frozen bundles can

        try:
            if index is None:
                found = self.ipr.link_lookup(ifname=name)
                if not found:
                    return None
                index = found[0]
            msgs = list(self.ipr.get_links(index))
        except NetlinkError as exc:
            if getattr(exc, "code", 0) in (errno_mod.ENODEV, errno_mod.ENOENT):
                return None
            raise translate(exc, f"look up link {name or index}") from None
        return self._link(msgs[0]) if msgs else None

    def names(self) -> dict[int, str]:
        return {link.index: link.name for link in self.links()}

    def link_add(self, name: str, **kw: Any) -> None:
        self._call(f"create {kw.get('kind', 'link')} device {name}", lambda: self.ipr.link("add", ifname=name, **kw))

    def link_del(self, index: int, name: str = "") -> None:
        self._call(f"delete link {name or index}", lambda: self.ipr.link("del", index=index))

    def link_set(self, index: int, name: str, what: str, **kw: Any) -> None:
        self._call(f"set {what} of {name}", lambda: self.ipr.link("set", index=index, **kw))

    # -- addresses --------------------------------------------------------------------------
    def addrs(self, index: int, family: int = socket.AF_INET) -> list[Addr]:
        msgs = self._call(f"list addresses of link {index}",
                          lambda: list(self.ipr.get_addr(index=index, family=family)))
        out = []
        for m in msgs:
            if m["index"] != index:
                continue
            ip = _ip(m.get_attr("IFA_ADDRESS") or m.get_attr("IFA_LOCAL"))
            if ip is None:
                continue
            flags = m.get_attr("IFA_FLAGS")
            out.append(Addr(ip=ip, prefixlen=m["prefixlen"], flags=flags if flags is not None else m["flags"]))
        return out

    def addr_add(self, index: int, dev: str, ip: IPAddr, prefixlen: int) -> None:
        self._call(f"add address {ip}/{prefixlen} to {dev}",
                   lambda: self.ipr.addr("add", index=index, address=str(ip), prefixlen=prefixlen))

    def addr_del(self, index: int, dev: str, ip: IPAddr, prefixlen: int) -> None:
        self._call(f"remove address {ip}/{prefixlen} from {dev}",
                   lambda: self.ipr.addr("del", index=index, address=str(ip), prefixlen=prefixlen))

    # -- routes -----------------------------------------------------------------------------
    def routes(self, family: int = socket.AF_INET, names: dict[int, str] | None = None) -> list[Route]:
        """Main-table unicast routes with a destination prefix (the default route included)."""
        msgs = self._call("list routes", lambda: list(self.ipr.get_routes(family=family, table=RT_TABLE_MAIN)))
        names = names if names is not None else self.names()
        out = []
        for m in msgs:
            table = m.get_attr("RTA_TABLE") or m["table"]
            if table != RT_TABLE_MAIN or m["type"] != RTN_UNICAST:
                continue
            out.append(self._route(m, family, names))
        return out

    @staticmethod
    def _route(m: Any, family: int, names: dict[int, str]) -> Route:
        dst_ip = m.get_attr("RTA_DST") or ("0.0.0.0" if family == socket.AF_INET else "::")
        oif = m.get_attr("RTA_OIF")
        return Route(dst=ipaddress.ip_network(f"{dst_ip}/{m['dst_len']}", strict=False),
                     gateway=_ip(m.get_attr("RTA_GATEWAY")), oif=oif,
                     onlink=bool(m["flags"] & RTNH_F_ONLINK), dev=names.get(oif or 0, ""),
                     protocol=m["proto"], priority=m.get_attr("RTA_PRIORITY") or 0,
                     prefsrc=_ip(m.get_attr("RTA_PREFSRC")))

    def route_get(self, ip: IPAddr) -> list[Route]:
        """``ip route get``; raises KernelError (e.g. ENETUNREACH) when there is no route."""
        family = socket.AF_INET if ip.version == 4 else socket.AF_INET6
        msgs = self._call(f"look up route to {ip}", lambda: list(self.ipr.route("get", dst=str(ip))))
        return [self._route(m, family, {}) for m in msgs]

    def _route_kw(self, r: Route) -> dict[str, Any]:
        kw: dict[str, Any] = {"dst": str(r.dst), "table": RT_TABLE_MAIN, "proto": r.protocol,
                              "scope": RT_SCOPE_UNIVERSE, "type": RTN_UNICAST}
        if r.gateway is not None:
            kw["gateway"] = str(r.gateway)
        if r.oif:
            kw["oif"] = r.oif
        if r.onlink:
            kw["flags"] = RTNH_F_ONLINK
        if r.priority:
            kw["priority"] = r.priority
        return kw

    @contextmanager
    def batch(self) -> Iterator[Batch]:
        """Defer route/neighbour/FDB writes made in the body (on this thread) and send them
        together at its end; failures are in ``batch.failures`` as (tag, KernelError)."""
        b = Batch(self)
        self._local.batch = b
        try:
            yield b
        finally:
            self._local.batch = None
        b.run()

    def _deferred(self) -> Batch | None:
        return getattr(self._local, "batch", None)

    def route_replace(self, r: Route) -> None:
        if (b := self._deferred()) is not None:
            return b.add(encode_route(r), f"add route {r.describe()}")
        self._call(f"add route {r.describe()}", lambda: self.ipr.route("replace", **self._route_kw(r)))

    def route_del(self, r: Route) -> None:
        if (b := self._deferred()) is not None:
            return b.add(encode_route(r, delete=True), f"delete route {r.describe()}")
        kw = self._route_kw(r)
        kw.pop("scope")
        kw.pop("flags", None)
        self._call(f"delete route {r.describe()}", lambda: self.ipr.route("del", **kw))

    # -- neighbours (ARP / NDP) -------------------------------------------------------------
    def neighbours(self, ifindex: int, family: int = socket.AF_INET, dev: str = "") -> list[Neigh]:
        msgs = self._call(f"list neighbours of {dev or ifindex}",
                          lambda: list(self.ipr.get_neighbours(ifindex=ifindex, family=family)))
        out = []
        for m in msgs:
            ip = _ip(m.get_attr("NDA_DST"))
            if m["ifindex"] != ifindex or m["family"] != family or ip is None:
                continue
            out.append(Neigh(ip=ip, lladdr=(m.get_attr("NDA_LLADDR") or "").lower(), ifindex=ifindex, dev=dev,
                             state=m["state"]))
        return out

    def neigh_replace(self, n: Neigh) -> None:
        if (b := self._deferred()) is not None:
            return b.add(encode_neigh(n), f"add neighbour {n.describe()}")
        family = socket.AF_INET if n.ip.version == 4 else socket.AF_INET6
        self._call(f"add neighbour {n.describe()}",
                   lambda: self.ipr.neigh("replace", dst=str(n.ip), lladdr=n.lladdr, ifindex=n.ifindex,
                                          state=NUD_PERMANENT, family=family))

    def neigh_del(self, n: Neigh) -> None:
        if (b := self._deferred()) is not None:
            return b.add(encode_neigh(n, delete=True), f"delete neighbour {n.describe()}")
        family = socket.AF_INET if n.ip.version == 4 else socket.AF_INET6
        self._call(f"delete neighbour {n.describe()}",
                   lambda: self.ipr.neigh("del", dst=str(n.ip), ifindex=n.ifindex, family=family))

    # -- FDB (AF_BRIDGE, NTF_SELF: the vxlan device's own table) ----------------------------
    def fdb_entries(self, ifindex: int, dev: str = "") -> list[Fdb]:
        msgs = self._call(f"list fdb entries of {dev or ifindex}", lambda: list(self.ipr.fdb("dump", ifindex=ifindex)))
        out = []
        for m in msgs:
            if m["ifindex"] != ifindex:
                continue
            out.append(Fdb(lladdr=(m.get_attr("NDA_LLADDR") or "").lower(), dst=_ip(m.get_attr("NDA_DST")),
                           ifindex=ifindex, dev=dev, state=m["state"], flags=m["flags"]))
        return out

    def fdb_replace(self, f: Fdb) -> None:
        if (b := self._deferred()) is not None:
            return b.add(encode_fdb(f), f"add fdb entry {f.describe()}")
        self._call(f"add fdb entry {f.describe()}",
                   lambda: self.ipr.fdb("replace", ifindex=f.ifindex, lladdr=f.lladdr, dst=str(f.dst),
                                        state=NUD_PERMANENT, flags=NTF_SELF))

    def fdb_del(self, f: Fdb) -> None:
        if (b := self._deferred()) is not None:
            return b.add(encode_fdb(f, delete=True), f"delete fdb entry {f.describe()}")
        kw: dict[str, Any] = {"ifindex": f.ifindex, "lladdr": f.lladdr, "flags": NTF_SELF}
        if f.dst is not None:
            kw["dst"] = str(f.dst)  # only this remote of the entry
        self._call(f"delete fdb entry {f.describe()}", lambda: self.ipr.fdb("del", **kw))


# -- batched writes ----------------------------------------------------------------------------
_NLM_F_REQUEST, _NLM_F_ACK, _NLM_F_REPLACE, _NLM_F_CREATE = 0x1, 0x4, 0x100, 0x400
_RTM_NEWROUTE, _RTM_DELROUTE, _RTM_NEWNEIGH, _RTM_DELNEIGH, _NLMSG_ERROR = 24, 25, 28, 29, 2
_RTA_DST, _RTA_OIF, _RTA_GATEWAY, _RTA_PRIORITY, _RTA_TABLE = 1, 4, 5, 6, 15
_NDA_DST, _NDA_LLADDR = 1, 2
_RT_SCOPE_NOWHERE = 255
_PER_SEND = 200  # requests per sendmsg: their acks must fit the receive buffer


def _nla(kind: int, value: bytes) -> bytes:
    size = 4 + len(value)
    return struct.pack("HH", size, kind) + value + b"\0" * (-size % 4)


def _mac(lladdr: str) -> bytes:
    return bytes.fromhex(lladdr.replace(":", ""))


def encode_route(r: Route, delete: bool = False) -> tuple[int, int, bytes]:
    """(type, flags, body) of RTM_NEWROUTE (create|replace) or RTM_DELROUTE, as iproute2 sends them:
    a delete names dst, gateway, device, priority and protocol with scope "nowhere" (any)."""
    family = socket.AF_INET if r.dst.version == 4 else socket.AF_INET6
    scope, rtype = (_RT_SCOPE_NOWHERE, 0) if delete else (RT_SCOPE_UNIVERSE, RTN_UNICAST)
    flags = RTNH_F_ONLINK if (r.onlink and not delete) else 0
    body = struct.pack("BBBBBBBBI", family, r.dst.prefixlen, 0, 0, RT_TABLE_MAIN, r.protocol, scope, rtype, flags)
    body += _nla(_RTA_TABLE, struct.pack("I", RT_TABLE_MAIN)) + _nla(_RTA_DST, r.dst.network_address.packed)
    if r.gateway is not None:
        body += _nla(_RTA_GATEWAY, r.gateway.packed)
    if r.oif:
        body += _nla(_RTA_OIF, struct.pack("i", r.oif))
    if r.priority:
        body += _nla(_RTA_PRIORITY, struct.pack("I", r.priority))
    if delete:
        return _RTM_DELROUTE, _NLM_F_REQUEST | _NLM_F_ACK, body
    return _RTM_NEWROUTE, _NLM_F_REQUEST | _NLM_F_ACK | _NLM_F_CREATE | _NLM_F_REPLACE, body


def encode_neigh(n: Neigh, delete: bool = False) -> tuple[int, int, bytes]:
    """`ip neigh replace <ip> lladdr <mac> dev <dev> nud permanent` (or `del`)."""
    family = socket.AF_INET if n.ip.version == 4 else socket.AF_INET6
    body = struct.pack("BBHiHBB", family, 0, 0, n.ifindex, 0 if delete else NUD_PERMANENT, 0, 0)
    body += _nla(_NDA_DST, n.ip.packed)
    if delete:
        return _RTM_DELNEIGH, _NLM_F_REQUEST | _NLM_F_ACK, body
    return _RTM_NEWNEIGH, _NLM_F_REQUEST | _NLM_F_ACK | _NLM_F_CREATE | _NLM_F_REPLACE, body + _nla(
        _NDA_LLADDR, _mac(n.lladdr))


def encode_fdb(f: Fdb, delete: bool = False) -> tuple[int, int, bytes]:
    """`bridge fdb replace <mac> dev <dev> dst <ip> self permanent` (or `del`, of that remote only)."""
    body = struct.pack("BBHiHBB", socket.AF_BRIDGE, 0, 0, f.ifindex, 0 if delete else NUD_PERMANENT, NTF_SELF, 0)
    body += _nla(_NDA_LLADDR, _mac(f.lladdr))
    if f.dst is not None:
        body += _nla(_NDA_DST, f.dst.packed)
    if delete:
        return _RTM_DELNEIGH, _NLM_F_REQUEST | _NLM_F_ACK, body
    return _RTM_NEWNEIGH, _NLM_F_REQUEST | _NLM_F_ACK | _NLM_F_CREATE | _NLM_F_REPLACE, body


class Batch:
    """Writes collected during a reconcile and sent together (see `Kernel.batch`).

    pyroute2 pays one asyncio round trip per request (~1 ms): programming 1,000 vxlan peers
    (3,000 objects) took 3 s. Here each request is encoded by hand (the six message shapes
    above), up to 200 go in one sendmsg on a raw rtnetlink socket in the Kernel's namespace,
    and the acks are matched back by sequence number: the same 3,000 objects take ~0.15 s.
    The kernel handles the messages of one sendmsg in order, so a peer's ARP, FDB and route
    still go in the reference's order. ``tag`` (the peer being planned) travels with each
    request, so a failure is reported against its peer."""

    def __init__(self, kernel: Kernel) -> None:
        self.kernel = kernel
        self.tag: str | None = None
        self.requests: list[tuple[int, int, bytes, str, str | None]] = []
        self.failures: list[tuple[str | None, KernelError]] = []

    def add(self, encoded: tuple[int, int, bytes], doing: str) -> None:
        self.requests.append((*encoded, doing, self.tag))

    def run(self) -> None:
        if not self.requests:
            return
        with self.kernel.inside():
            sock = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW | socket.SOCK_CLOEXEC, 0)
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 20)
            sock.bind((0, 0))
            sock.settimeout(5.0)
            for start in range(0, len(self.requests), _PER_SEND):
                self._send(sock, start, self.requests[start:start + _PER_SEND])
        finally:
            sock.close()
            self.requests = []

    def _send(self, sock: socket.socket, base: int, chunk: list[tuple[int, int, bytes, str, str | None]]) -> None:
        data = b"".join(struct.pack("IHHII", 16 + len(body), kind, flags, base + i + 1, 0) + body
                        for i, (kind, flags, body, _, _) in enumerate(chunk))
        pending = set(range(base + 1, base + len(chunk) + 1))
        try:
            sock.send(data)
            while pending:
                reply = sock.recv(1 << 20)
                off = 0
                while off + 16 <= len(reply):
                    size, kind, _, seq, _ = struct.unpack_from("IHHII", reply, off)
                    if kind == _NLMSG_ERROR and seq in pending:
                        pending.discard(seq)
                        code = -struct.unpack_from("i", reply, off + 16)[0]
                        if code:
                            _, _, _, doing, tag = chunk[seq - base - 1]
                            self.failures.append((tag, KernelError(f"failed to {doing}: {errno_text(code)}", code)))
                    off += max(16, (size + 3) & ~3)
        except OSError as exc:
            for seq in sorted(pending):
                _, _, _, doing, tag = chunk[seq - base - 1]
                self.failures.append((tag, translate(exc, doing)))


# -- the netlink monitor ---------------------------------------------------------------------
@record
class Event:
    """One rtnetlink notification, reduced to what the backends' filters look at."""

    kind: str              # "link" | "route" | "neigh"
    action: str            # "new" | "del"
    ifindex: int = 0
    name: str = ""         # link events
    up: bool = False       # link events: IFF_UP
    family: int = 0
    route: Route | None = None
    neigh_state: int = 0
    neigh_flags: int = 0
    table: int = 0
    lladdr: str = ""
    ip: IPAddr | None = None


def to_event(msg: Any) -> Event | None:
    kind_action = _RTM_NAMES.get(msg["header"]["type"])
    if kind_action is None:
        return None
    kind, action = kind_action
    if kind == "link":
        return Event(kind, action, ifindex=msg["index"], name=msg.get_attr("IFLA_IFNAME") or "",
                     up=bool(msg["flags"] & IFF_UP), family=msg["family"])
    if kind == "route":
        family = msg["family"]
        if family not in (socket.AF_INET, socket.AF_INET6):
            return None
        table = msg.get_attr("RTA_TABLE") or msg["table"]
        return Event(kind, action, ifindex=msg.get_attr("RTA_OIF") or 0, family=family, table=table,
                     route=Kernel._route(msg, family, {}))
    return Event(kind, action, ifindex=msg["ifindex"], family=msg["family"], neigh_state=msg["state"],
                 neigh_flags=msg["flags"], lladdr=(msg.get_attr("NDA_LLADDR") or "").lower(),
                 ip=_ip(msg.get_attr("NDA_DST")))


def monitor(groups: int, filter: Callable[[Event], str | None], trigger: Callable[[str], None],
            stop: threading.Event, *, netns_path: str | None = None, debounce: float = 0.2,
            poll: float = 0.5) -> None:
    """Call ``trigger(reason)`` for notifications that ``filter`` names, until ``stop`` is set.

    Reasons arriving within ``debounce`` seconds of the first are joined into one trigger
    (a flap deletes many objects at once). A receive-buffer overflow (ENOBUFS: events were
    lost) triggers too, since the caller's reconcile is level-triggered. Returns within
    ``poll`` seconds of ``stop``.
    """
    from ...net.netlink import netlink_errors

    netlink_errors()  # registers the bare pyroute2 package first (the frozen bundle has no NDB, ethtool...)
    from pyroute2.netlink.rtnl.marshal import MarshalRtnl

    def make() -> socket.socket:
        s = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW | socket.SOCK_CLOEXEC, 0)  # NETLINK_ROUTE
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 20)
        s.bind((0, groups))
        return s

    if netns_path:
        with entered(netns_path):
            sock = make()
    else:
        sock = make()
    marshal = MarshalRtnl()
    pending: list[str] = []
    first = 0.0
    try:
        while not stop.is_set():
            timeout = poll if not pending else max(0.0, min(poll, first + debounce - time.monotonic()))
            ready, _, _ = select.select([sock], [], [], timeout)
            if ready:
                try:
                    data = sock.recv(1 << 20)
                except OSError as exc:
                    if exc.errno != errno_mod.ENOBUFS:
                        raise
                    data = b""
                    if not pending:
                        first = time.monotonic()
                    pending.append("netlink monitor overflow: events lost (ENOBUFS)")
                for msg in marshal.parse(data) if data else ():
                    event = to_event(msg)
                    reason = filter(event) if event is not None else None
                    if reason:
                        if not pending:
                            first = time.monotonic()
                        if reason not in pending:
                            pending.append(reason)
            if pending and time.monotonic() - first >= debounce and not stop.is_set():
                reasons, pending = "; ".join(pending), []
                trigger(reasons)
    finally:
        sock.close()


# -- shared reconcile steps ----------------------------------------------------------------------
class Index(list):  # type: ignore[type-arg]
    """A list of kernel objects with a lookup by one key, kept in step on append/remove.

    A reconcile looks up every peer's route, neighbour and FDB entry among what it read from
    the kernel: with a plain list that is O(peers²) (1,000 peers: 1.5 M comparisons, ~1 s)."""

    def __init__(self, items: Iterable[Any], key: Callable[[Any], Any]) -> None:
        super().__init__(items)
        self._key = key
        self._by: dict[Any, list[Any]] = {}
        for item in self:
            self._by.setdefault(key(item), []).append(item)

    def lookup(self, key: Any) -> list[Any]:
        return self._by.get(key, [])

    def append(self, item: Any) -> None:
        super().append(item)
        self._by.setdefault(self._key(item), []).append(item)

    def remove(self, item: Any) -> None:
        super().remove(item)
        self._by[self._key(item)].remove(item)


def by_dst(routes: Iterable[Route]) -> Index:
    return Index(routes, lambda r: r.dst)


IP6_RT_PRIO_USER = 1024


def ensure_route(k: Kernel, want: Route, have: Index, report: ReconcileReport) -> None:
    """Make ``want`` present: nothing if an equal route exists in ``have`` (the main table as
    read, ``by_dst``), else ``route replace``; a route with the same dst but another gateway or
    device is replaced (route_network.go@H's message). ``have`` is updated to match the kernel."""
    same_dst = have.lookup(want.dst)
    if any(want.same_as(r) for r in same_dst):
        return
    # the kernel stores a v6 route sent with metric 0 as metric 1024 (IP6_RT_PRIO_USER): that
    # is the route our replace overwrites, not a second one to delete as stale afterwards
    prio = want.priority or (IP6_RT_PRIO_USER if want.dst.version == 6 else 0)
    old = next((r for r in same_dst if r.priority == prio), None)
    if old is not None:
        log.warning("Replacing existing route to %s with %s", old.describe(), want.describe())
        if want.dst.version == 6 and want.onlink and old.oif != want.oif:
            # v6 refuses an onlink gateway that an existing route sends out of another device
            # (ip6_route_check_nh_onlink: EINVAL), as a direct route to the gateway's subnet does
            k.route_del(old)
    k.route_replace(want)
    (report.changed if old is not None else report.added).append(f"route {want.describe()}")
    if old is not None:
        have.remove(old)
    have.append(want)


def setting(cfg: Any, name: str, default: Any = None) -> Any:
    """A NetworkConfig attribute (snake_case, e.g. ``enable_ipv6``) or, for a raw net-conf dict,
    its key matched case-insensitively without underscores (``EnableIPv6``)."""
    if isinstance(cfg, dict):
        return ci_get(cfg, name.replace("_", ""), default)  # the config module's Go-style lookup
    value = getattr(cfg, name, None)
    return default if value is None else value
