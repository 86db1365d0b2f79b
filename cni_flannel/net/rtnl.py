"""A small rtnetlink socket for the plugins: exactly the messages they send, standard library only.

A plugin exec paid ~150 ms importing pyroute2 to send a dozen messages. This class
offers the subset of pyroute2's IPRoute API that net/link.py and net/addr.py call
(same method names and keywords), encodes each request to the very bytes pyroute2
sends (tests/unit/test_rtnl.py compares them) and decodes replies into dicts keyed
as pyroute2's ``msg.get()`` is (``"index"``, ``"IFLA_MTU"``, ...). flanneld keeps
pyroute2 (net/netlink.py ``socket_here``). Kernel ABI: include/uapi/linux/rtnetlink.h,
if_link.h, if_addr.h, if_bridge.h.
"""
from __future__ import annotations

import _socket as socket  # the C module: `socket` adds enums that cost ~2 ms per frozen exec
import os
import struct

TYPE_CHECKING = False
if TYPE_CHECKING:  # annotations only: typing costs ~2 ms per frozen exec
    from collections.abc import Iterator
    from typing import Any

NETLINK_ROUTE = 0
NLMSG_ERROR, NLMSG_DONE = 2, 3
F_REQUEST, F_ACK, F_DUMP, F_EXCL, F_CREATE = 0x1, 0x4, 0x300, 0x200, 0x400
RTM_NEWLINK, RTM_DELLINK, RTM_GETLINK, RTM_SETLINK = 16, 17, 18, 19
RTM_NEWADDR, RTM_DELADDR, RTM_GETADDR = 20, 21, 22
RTM_NEWROUTE, RTM_GETROUTE = 24, 26
AF_BRIDGE = 7
IFF_UP = 0x1
# IFLA_* used here, in the order tables below
IFLA_ADDRESS, IFLA_IFNAME, IFLA_MTU, IFLA_LINK, IFLA_MASTER, IFLA_TXQLEN = 1, 3, 4, 5, 10, 13
IFLA_OPERSTATE, IFLA_LINKINFO, IFLA_AF_SPEC, IFLA_NET_NS_FD = 16, 18, 26, 28
IFLA_INFO_KIND, IFLA_INFO_DATA, IFLA_INFO_SLAVE_DATA = 1, 2, 5
IFLA_BR_VLAN_FILTERING, VETH_INFO_PEER = 7, 1
IFLA_BRPORT_MODE, IFLA_BRPORT_ISOLATED, IFLA_BRIDGE_VLAN_INFO = 4, 33, 2
IFA_ADDRESS, IFA_LOCAL, IFA_BROADCAST, IFA_FLAGS = 1, 2, 4, 8
RTA_DST, RTA_OIF, RTA_GATEWAY, RTA_PRIORITY, RTA_METRICS, RTA_TABLE = 1, 4, 5, 6, 8, 15
RTAX = {"RTAX_MTU": 2, "RTAX_ADVMSS": 8}
OPERSTATES = ("UNKNOWN", "NOTPRESENT", "DOWN", "LOWERLAYERDOWN", "TESTING", "DORMANT", "UP")

_IFINFO = struct.Struct("=BxHiII")  # family, type, index, flags, change
_IFADDR = struct.Struct("=BBBBI")  # family, prefixlen, flags, scope, index
_RTMSG = struct.Struct("=BBBBBBBBI")  # family, dst_len, src_len, tos, table, proto, scope, type, flags
_HDR = struct.Struct("=IHHII")


class NetlinkError(Exception):
    """A kernel error reply; named, built and printed as pyroute2's (``(17, 'File exists')``)."""

    def __init__(self, code: int, msg: str | None = None) -> None:
        super().__init__(code, msg or os.strerror(code))
        self.code = code


def _attr(kind: int, payload: bytes) -> bytes:
    head = struct.pack("=HH", 4 + len(payload), kind)
    return head + payload + b"\0" * (-len(payload) % 4)


def _u32(kind: int, value: int) -> bytes:
    return _attr(kind, struct.pack("=I", value))


def _u8(kind: int, value: int) -> bytes:
    return _attr(kind, struct.pack("=B", value))


def _str(kind: int, value: str) -> bytes:
    return _attr(kind, value.encode() + b"\0")


def _mac(kind: int, value: str) -> bytes:
    return _attr(kind, bytes.fromhex(value.replace(":", "")))


def _ip(kind: int, family: int, value: str) -> bytes:
    return _attr(kind, socket.inet_pton(family, value))


def _attrs(data: bytes, offset: int) -> Iterator[tuple[int, bytes]]:
    while offset + 4 <= len(data):
        length, kind = struct.unpack_from("=HH", data, offset)
        if length < 4:
            return
        yield kind & 0x3FFF, data[offset + 4:offset + length]  # drop NLA_F_NESTED / NET_BYTEORDER
        offset += (length + 3) & ~3


def _cstr(payload: bytes) -> str:
    return payload.split(b"\0", 1)[0].decode()


def _link_attrs(kw: dict[str, Any]) -> bytes:
    """ifinfmsg attributes from pyroute2-style keywords: in keyword order, IFLA_LINKINFO last."""
    out = b""
    for key, value in kw.items():
        if key == "ifname":
            out += _str(IFLA_IFNAME, value)
        elif key in ("mtu", "txqlen", "master", "net_ns_fd"):
            out += _u32({"mtu": IFLA_MTU, "txqlen": IFLA_TXQLEN, "master": IFLA_MASTER,
                         "net_ns_fd": IFLA_NET_NS_FD}[key], value)
        elif key == "address":
            out += _mac(IFLA_ADDRESS, value)
        elif key not in ("kind", "peer", "br_vlan_filtering", "index", "flags", "change", "state"):
            raise TypeError(f"rtnl: unsupported link keyword {key!r}")
    kind = kw.get("kind")
    if kind:
        data = b""
        if "br_vlan_filtering" in kw:
            data = _u8(IFLA_BR_VLAN_FILTERING, kw["br_vlan_filtering"])
        if "peer" in kw:
            data = _attr(VETH_INFO_PEER, _IFINFO.pack(0, 0, 0, 0, 0) + _link_attrs(kw["peer"]))
        out += _attr(IFLA_LINKINFO, _str(IFLA_INFO_KIND, kind) + (_attr(IFLA_INFO_DATA, data) if data else b""))
    return out


def _link_header(kw: dict[str, Any]) -> bytes:
    flags, change = kw.get("flags", 0), kw.get("change", 0)
    if "state" in kw:
        flags, change = (IFF_UP if kw["state"] == "up" else 0), IFF_UP
    return _IFINFO.pack(0, 0, kw.get("index", 0), flags, change)


def _parse_link(body: bytes) -> dict[Any, Any]:
    _fam, _typ, index, flags, _chg = _IFINFO.unpack_from(body)
    msg: dict[Any, Any] = {"index": index, "flags": flags}
    for kind, payload in _attrs(body, _IFINFO.size):
        if kind == IFLA_IFNAME:
            msg["ifname"] = msg["IFLA_IFNAME"] = _cstr(payload)
        elif kind == IFLA_ADDRESS:
            msg["IFLA_ADDRESS"] = ":".join(f"{b:02x}" for b in payload)
        elif kind in (IFLA_MTU, IFLA_MASTER, IFLA_LINK):
            msg[{IFLA_MTU: "IFLA_MTU", IFLA_MASTER: "IFLA_MASTER", IFLA_LINK: "IFLA_LINK"}[kind]] = \
                struct.unpack_from("=I", payload)[0]
        elif kind == IFLA_OPERSTATE:
            state = payload[0]
            msg["IFLA_OPERSTATE"] = OPERSTATES[state] if state < len(OPERSTATES) else str(state)
        elif kind == IFLA_LINKINFO:
            for sub, sub_payload in _attrs(payload, 0):
                if sub == IFLA_INFO_KIND:
                    msg[("IFLA_LINKINFO", "IFLA_INFO_KIND")] = _cstr(sub_payload)
    return msg


def _parse_addr(body: bytes) -> dict[Any, Any]:
    family, prefixlen, flags, _scope, index = _IFADDR.unpack_from(body)
    msg: dict[Any, Any] = {"family": family, "prefixlen": prefixlen, "flags": flags, "index": index}
    for kind, payload in _attrs(body, _IFADDR.size):
        if kind in (IFA_ADDRESS, IFA_LOCAL):
            msg["IFA_ADDRESS" if kind == IFA_ADDRESS else "IFA_LOCAL"] = socket.inet_ntop(family, payload)
        elif kind == IFA_FLAGS:
            msg["IFA_FLAGS"] = struct.unpack_from("=I", payload)[0]
    return msg


def _parse_route(body: bytes) -> dict[Any, Any]:
    family, dst_len, _src, _tos, table, *_rest = _RTMSG.unpack_from(body)
    msg: dict[Any, Any] = {"family": family, "dst_len": dst_len, "table": table}
    for kind, payload in _attrs(body, _RTMSG.size):
        if kind in (RTA_DST, RTA_GATEWAY):
            msg["RTA_DST" if kind == RTA_DST else "RTA_GATEWAY"] = socket.inet_ntop(family, payload)
        elif kind in (RTA_OIF, RTA_TABLE):
            msg["RTA_OIF" if kind == RTA_OIF else "RTA_TABLE"] = struct.unpack_from("=I", payload)[0]
    return msg


class Rtnl:
    """One NETLINK_ROUTE socket in the namespace it was created in (as pyroute2's IPRoute)."""

    def __init__(self) -> None:
        self.sock = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW | socket.SOCK_CLOEXEC, NETLINK_ROUTE)
        self.sock.bind((0, 0))
        self.seq = 0
        self.sent: list[bytes] | None = None  # tests record the requests here

    def close(self) -> None:
        self.sock.close()

    def request(self, mtype: int, flags: int, body: bytes) -> list[tuple[int, bytes]]:
        """Send one message; return the (type, body) replies up to the ACK or NLMSG_DONE."""
        self.seq += 1
        data = _HDR.pack(_HDR.size + len(body), mtype, flags, self.seq, 0) + body
        if self.sent is not None:
            self.sent.append(data)
        self.sock.send(data)
        out: list[tuple[int, bytes]] = []
        while True:
            buf = self.sock.recv(1 << 16)
            offset = 0
            while offset + _HDR.size <= len(buf):
                length, rtype, _fl, seq, _pid = _HDR.unpack_from(buf, offset)
                body_ = buf[offset + _HDR.size:offset + length]
                offset += (length + 3) & ~3
                if seq != self.seq:
                    continue
                if rtype == NLMSG_DONE:
                    return out
                if rtype == NLMSG_ERROR:
                    code = -struct.unpack_from("=i", body_)[0]
                    if code:
                        raise NetlinkError(code)
                    return out
                out.append((rtype, body_))

    # -- links ---------------------------------------------------------------------------------

    def link(self, command: str, **kw: Any) -> list[dict[Any, Any]]:
        body = _link_header(kw) + _link_attrs(kw)
        if command == "get":
            return [_parse_link(b) for t, b in self.request(RTM_GETLINK, F_REQUEST | F_ACK, body)
                    if t == RTM_NEWLINK]
        mtype, flags = {"add": (RTM_NEWLINK, F_REQUEST | F_ACK | F_EXCL | F_CREATE),
                        "set": (RTM_NEWLINK, F_REQUEST | F_ACK),
                        "del": (RTM_DELLINK, F_REQUEST | F_ACK)}[command]
        self.request(mtype, flags, body)
        return []

    def get_links(self) -> list[dict[Any, Any]]:
        replies = self.request(RTM_GETLINK, F_REQUEST | F_DUMP, _IFINFO.pack(0, 0, 0, 0, 0))
        return [_parse_link(b) for t, b in replies if t == RTM_NEWLINK]

    def brport(self, command: str, index: int, mode: int | None = None, isolated: int | None = None) -> None:
        """Bridge port flags, encoded as pyroute2 does: IFLA_INFO_KIND "bridge_slave" + slave data."""
        data = (_u8(IFLA_BRPORT_MODE, mode) if mode is not None else b"") + \
            (_u8(IFLA_BRPORT_ISOLATED, isolated) if isolated is not None else b"")
        info = _str(IFLA_INFO_KIND, "bridge_slave") + _attr(IFLA_INFO_SLAVE_DATA, data)
        self.request(RTM_NEWLINK, F_REQUEST | F_ACK, _IFINFO.pack(0, 0, index, 0, 0) + _attr(IFLA_LINKINFO, info))

    def vlan_filter(self, command: str, index: int, vlan_info: dict[str, int]) -> None:
        spec = _attr(IFLA_BRIDGE_VLAN_INFO, struct.pack("=HH", vlan_info["flags"], vlan_info["vid"]))
        body = _IFINFO.pack(AF_BRIDGE, 0, index, 0, 0) + _attr(IFLA_AF_SPEC, spec)
        self.request(RTM_SETLINK if command == "add" else RTM_DELLINK, F_REQUEST | F_ACK, body)

    # -- addresses and routes ------------------------------------------------------------------

    def addr(self, command: str, index: int, address: str, prefixlen: int, broadcast: str | None = None) -> None:
        family = socket.AF_INET6 if ":" in address else socket.AF_INET
        body = _IFADDR.pack(family, prefixlen, 0, 0, index) + _ip(IFA_ADDRESS, family, address)
        if broadcast is not None:
            body += _ip(IFA_BROADCAST, family, broadcast)
        if family == socket.AF_INET:
            body += _ip(IFA_LOCAL, family, address)
        add = command == "add"
        self.request(RTM_NEWADDR if add else RTM_DELADDR,
                     F_REQUEST | F_ACK | (F_EXCL | F_CREATE if add else 0), body)

    def get_addr(self, index: int | None = None, family: int | None = None) -> list[dict[Any, Any]]:
        replies = self.request(RTM_GETADDR, F_REQUEST | F_DUMP, _IFADDR.pack(family or 0, 0, 0, 0, 0))
        msgs = [_parse_addr(b) for t, b in replies if t == RTM_NEWADDR]
        return [m for m in msgs if (index is None or m["index"] == index)
                and (not family or m["family"] == family)]

    def route(self, command: str, *, dst: str, oif: int, family: int, proto: int = 3, gateway: str | None = None,
              priority: int | None = None, table: int | None = None, scope: int | None = None,
              metrics: dict[str, int] | None = None) -> None:
        if command != "add":
            raise TypeError(f"rtnl: unsupported route command {command!r}")
        net, _, plen = dst.partition("/")
        dst_len = int(plen) if plen else (128 if family == socket.AF_INET6 else 32)
        tbl = table or 254
        body = _RTMSG.pack(family, dst_len, 0, 0, tbl if tbl < 256 else 252, proto, scope or 0, 1, 0)
        if dst_len:
            body += _ip(RTA_DST, family, net)
        body += _u32(RTA_OIF, oif)
        if gateway:
            body += _ip(RTA_GATEWAY, family, gateway)
        if priority:
            body += _u32(RTA_PRIORITY, priority)
        if table:
            body += _u32(RTA_TABLE, table)
        if metrics:
            body += _attr(RTA_METRICS, b"".join(_u32(RTAX[k], v) for k, v in metrics.items()))
        self.request(RTM_NEWROUTE, F_REQUEST | F_ACK | F_EXCL | F_CREATE, body)

    def get_routes(self, family: int, table: int = 254) -> list[dict[Any, Any]]:
        replies = self.request(RTM_GETROUTE, F_REQUEST | F_DUMP,
                               _RTMSG.pack(family, 0, 0, 0, table if table < 256 else 252, 0, 0, 0, 0))
        msgs = [_parse_route(b) for t, b in replies if t == RTM_NEWROUTE]
        return [m for m in msgs if m.get("RTA_TABLE", m["table"]) == table and m["family"] == family]
