"""The udp backend's forwarder: TUN <-> UDP in user space (flanneld-reference §9).

The reference runs a C loop (`pkg/backend/udp/proxy_amd64.c@H`) in a goroutine; we run
the same loop in Python, by default in a **separate process** so that a busy forwarder
never holds the daemon's GIL (renewals, watches and healthz keep their latency), with
the route table pushed over a SOCK_SEQPACKET socketpair as the reference's
CMD_SET_ROUTE/CMD_DEL_ROUTE do. A thread mode runs the very same loop in-process (the
benchmark compares both).

Wire format (the reference's, so a Go udp node and ours interoperate): the UDP payload
is the raw IPv4 packet, no header. TUN -> UDP: route lookup on the destination (no route
-> ICMP net-unreachable back into the TUN), TTL-1 (a packet reaching 0 is dropped,
without ICMP), sendto the peer's PublicIP:port. UDP -> TUN: TTL-1, write.

Better than the reference (⚠ there): a longest-prefix lookup (the reference takes the
first match), TTL 0 is dropped instead of wrapping to 255, non-IPv4 frames (the kernel's
own IPv6 chatter on the TUN) are dropped instead of being routed on garbage, the receive
buffer is 64 KiB instead of MTU bytes (a peer with a larger MTU is not truncated), the
control socket is served even under load, and every command is acknowledged.

Standard library only: the process mode starts ``python -m`` on this module (or, frozen,
``cni-flannel udpproxy``), which must stay cheap to import.
"""
from __future__ import annotations

import argparse
import errno
import io
import ipaddress
import json
import os
import select
import socket
import struct
import subprocess
import sys
import threading
import time
from collections.abc import Iterable, Mapping
from typing import Any

# control commands (the reference's CMD_SET_ROUTE/CMD_DEL_ROUTE/CMD_STOP, plus REPLACE and STATS)
CMD_SET_ROUTE = 1
CMD_DEL_ROUTE = 2
CMD_STOP = 3
CMD_REPLACE = 4   # the whole table at once: one atomic swap, so no peer is ever missing mid-update
CMD_STATS = 5

EXIT_STOPPED = 0
EXIT_TUN_GONE = 3   # the TUN device was deleted under us: the backend recreates it and a new forwarder
EXIT_CTL_GONE = 4   # the daemon went away

_ENTRY = struct.Struct("!4sB4sH")   # subnet, prefix length, next-hop IP, next-hop port
_U32 = struct.Struct("!I")
BUF_SIZE = 65536
DRAIN_BUDGET = 256                  # packets per burst before the control socket is looked at again

Addr = tuple[str, int]
RouteMap = Mapping[ipaddress.IPv4Network, Addr]


# --- pure packet logic ---------------------------------------------------------------

def ip_checksum(data: bytes | bytearray | memoryview) -> int:
    """The Internet checksum (RFC 1071) of ``data``, odd lengths padded with a zero byte."""
    b = bytes(data)
    if len(b) % 2:
        b += b"\0"
    total = sum(struct.unpack(f"!{len(b) // 2}H", b))
    while total >> 16:
        total = (total & 0xFFFF) + (total >> 16)
    return ~total & 0xFFFF


def decrement_ttl(pkt: bytearray | memoryview) -> bool:
    """TTL-1 in place with the incremental checksum update of RFC 1624 (eqn. 3).

    Returns False (and leaves the packet alone) when the TTL would reach 0: the caller
    drops it. HC' = ~(~HC + ~m + m'); the TTL is the high byte of its 16-bit word, so
    ~m + m' is the one's-complement -0x0100, i.e. 0xFEFF. The result equals a full
    recomputation, -0 cases included (the reference's byte trick gives the same values).
    """
    ttl = pkt[8]
    if ttl <= 1:
        return False
    pkt[8] = ttl - 1
    c = (~((pkt[10] << 8) | pkt[11]) & 0xFFFF) + 0xFEFF
    c = ~((c & 0xFFFF) + (c >> 16)) & 0xFFFF
    pkt[10] = c >> 8
    pkt[11] = c & 0xFF
    return True


def net_unreachable(offender: bytes | bytearray | memoryview, tun_ip: bytes) -> bytes | None:
    """The ICMP destination-unreachable/net-unreachable the reference writes back into the TUN.

    IP header: version 4, IHL 5, TOS 0, ID 0, no flags, TTL 8, protocol ICMP, source the
    TUN address, destination the offender's source. ICMP: type 3, code 1, unused 0, then
    the offender's IP header and the first 8 bytes of its payload (RFC 792). None when no
    ICMP is due: an ICMP offender (RFC 792: no ICMP about ICMP), a non-first fragment, a
    malformed header. (⚠ The reference also refuses IHL 15 and quotes bytes past a short
    packet's end; we quote a full 60-byte header and only the bytes that exist.)
    """
    if len(offender) < 20 or offender[0] >> 4 != 4:
        return None
    ihl = (offender[0] & 0x0F) * 4
    if ihl < 20 or len(offender) < ihl:
        return None
    if offender[9] == socket.IPPROTO_ICMP:
        return None
    if ((offender[6] << 8) | offender[7]) & 0x1FFF:
        return None
    quote = bytes(offender[: ihl + 8])
    icmp = bytearray(struct.pack("!BBHI", 3, 1, 0, 0) + quote)
    struct.pack_into("!H", icmp, 2, ip_checksum(icmp))
    total = 20 + len(icmp)
    iph = bytearray(struct.pack("!BBHHHBBH4s4s", 0x45, 0, total, 0, 0, 8, socket.IPPROTO_ICMP, 0,
                                tun_ip, bytes(offender[12:16])))
    struct.pack_into("!H", iph, 10, ip_checksum(iph))
    return bytes(iph + icmp)


class RouteTable:
    """Peer subnet -> (PublicIP, port), looked up by longest prefix.

    The reference scans a list and takes the first match; peers' subnets do not overlap,
    so that is the same answer, but longest-prefix is deterministic when they do (a
    stale wider lease). One dict per prefix length, longest first: with one SubnetLen in
    the cluster a lookup is one mask and one dict probe.
    """

    def __init__(self, routes: RouteMap | None = None) -> None:
        self._by_len: list[tuple[int, dict[int, Addr]]] = []
        self.routes: dict[ipaddress.IPv4Network, Addr] = {}
        for net, addr in (routes or {}).items():
            self.set(net, addr)

    def set(self, net: ipaddress.IPv4Network, addr: Addr) -> None:
        self.routes[net] = addr
        self._rebuild()

    def delete(self, net: ipaddress.IPv4Network) -> bool:
        found = self.routes.pop(net, None) is not None
        self._rebuild()
        return found

    def _rebuild(self) -> None:
        lens: dict[int, dict[int, Addr]] = {}
        for net, addr in self.routes.items():
            lens.setdefault(net.prefixlen, {})[int(net.network_address)] = addr
        self._by_len = [(_mask(p), d) for p, d in sorted(lens.items(), reverse=True)]

    def lookup(self, dst: int) -> Addr | None:
        for mask, nets in self._by_len:
            hit = nets.get(dst & mask)
            if hit is not None:
                return hit
        return None

    def __len__(self) -> int:
        return len(self.routes)


def _mask(prefixlen: int) -> int:
    return (0xFFFFFFFF << (32 - prefixlen)) & 0xFFFFFFFF if prefixlen else 0


# --- the control protocol ------------------------------------------------------------

def encode_routes(cmd: int, routes: Iterable[tuple[ipaddress.IPv4Network, Addr]]) -> bytes:
    out = bytearray([cmd])
    for net, (ip, port) in routes:
        out += _ENTRY.pack(net.network_address.packed, net.prefixlen, ipaddress.IPv4Address(ip).packed, port)
    return bytes(out)


def decode_routes(body: bytes) -> list[tuple[ipaddress.IPv4Network, Addr]]:
    out = []
    for off in range(0, len(body) - len(body) % _ENTRY.size, _ENTRY.size):
        net, plen, ip, port = _ENTRY.unpack_from(body, off)
        # the reference masks dest_net with the prefix (process_cmd); so do we
        network = ipaddress.IPv4Network((int.from_bytes(net, "big") & _mask(plen), plen))
        out.append((network, (socket.inet_ntoa(ip), port)))
    return out


# --- the loop ------------------------------------------------------------------------

class Stats:
    __slots__ = ("icmp", "no_route", "not_ipv4", "rx", "send_errors", "ttl_drop", "tx")

    def __init__(self) -> None:
        self.tx = self.rx = self.ttl_drop = self.no_route = self.icmp = self.not_ipv4 = self.send_errors = 0

    def as_dict(self) -> dict[str, int]:
        return {k: getattr(self, k) for k in self.__slots__}


class Loop:
    """One forwarder: owns nothing but borrowed fds (the backend closes them)."""

    def __init__(self, tun_fd: int, sock: socket.socket, ctl: socket.socket, tun_ip: str) -> None:
        self.tun_fd = tun_fd
        self.sock = sock
        self.ctl = ctl
        self.tun_ip = ipaddress.IPv4Address(tun_ip).packed
        self.table = RouteTable()
        self.cache: dict[int, Addr | None] = {}
        self.stats = Stats()
        self.buf = bytearray(BUF_SIZE)
        self.tun = io.FileIO(tun_fd, "r+", closefd=False)

    # control ----------------------------------------------------------------
    def _control(self) -> int | None:
        """Serve every pending command; returns an exit code to stop with."""
        while True:
            try:
                msg = self.ctl.recv(1 << 20, socket.MSG_DONTWAIT)
            except BlockingIOError:
                return None
            except OSError:
                return EXIT_CTL_GONE
            if not msg:
                return EXIT_CTL_GONE
            cmd, body = msg[0], msg[1:]
            reply = b"ok"
            if cmd == CMD_REPLACE:
                self.table = RouteTable(dict(decode_routes(body)))
            elif cmd == CMD_SET_ROUTE:
                for net, addr in decode_routes(body):
                    self.table.set(net, addr)
            elif cmd == CMD_DEL_ROUTE:
                for net, _ in decode_routes(body):
                    self.table.delete(net)
            elif cmd == CMD_STATS:
                reply = json.dumps({**self.stats.as_dict(), "routes": len(self.table)}).encode()
            elif cmd == CMD_STOP:
                self._reply(b"ok")
                return EXIT_STOPPED
            else:
                reply = b"unknown command"
            self.cache = {}  # the table may have changed: forget memoised lookups
            self._reply(reply)

    def _reply(self, data: bytes) -> None:
        try:
            self.ctl.send(data)
        except OSError:
            pass

    # data -------------------------------------------------------------------
    def run(self) -> int:
        os.set_blocking(self.tun_fd, False)
        self.sock.setblocking(True)  # blocking sendto: a full socket buffer pushes back instead of dropping
        ep = select.epoll()
        try:
            ep.register(self.tun_fd, select.EPOLLIN)
            ep.register(self.sock.fileno(), select.EPOLLIN)
            ep.register(self.ctl.fileno(), select.EPOLLIN)
            return self._run(ep)
        finally:
            ep.close()

    def _run(self, ep: select.epoll) -> int:
        ctl_fd, tun_fd = self.ctl.fileno(), self.tun_fd
        bad = select.EPOLLERR | select.EPOLLHUP
        while True:
            try:
                events = ep.poll()
            except InterruptedError:
                continue
            for fd, ev in events:
                if fd == ctl_fd:
                    code = self._control()
                    if code is not None:
                        return code
                elif fd == tun_fd and ev & bad:
                    return EXIT_TUN_GONE
            code = self._drain()
            if code is not None:
                return code

    def _drain(self) -> int | None:
        """Move packets both ways until both sides are dry (the reference's inner loop),
        looking at the control socket every DRAIN_BUDGET packets so updates never wait."""
        buf = self.buf
        mv = memoryview(buf)
        readinto, tun_write = self.tun.readinto, self.tun.write
        recv_into, sendto = self.sock.recv_into, self.sock.sendto
        unpack = _U32.unpack_from
        st, cache, dontwait = self.stats, self.cache, socket.MSG_DONTWAIT
        while True:
            for _ in range(DRAIN_BUDGET):
                active = False
                # TUN -> UDP
                try:
                    n = readinto(mv)
                except OSError as exc:
                    if exc.errno in (errno.EBADFD, errno.EBADF, errno.EIO):
                        return EXIT_TUN_GONE
                    n = None
                if n:
                    active = True
                    if n < 20 or buf[0] >> 4 != 4:
                        st.not_ipv4 += 1
                    else:
                        dst = unpack(buf, 16)[0]
                        addr: Any = cache.get(dst, False)
                        if addr is False:
                            addr = self.table.lookup(dst)
                            if len(cache) > 4096:
                                cache.clear()
                            cache[dst] = addr
                        if addr is None:
                            st.no_route += 1
                            self._unreachable(mv[:n], tun_write)
                        else:
                            ttl = buf[8]
                            if ttl <= 1:
                                st.ttl_drop += 1
                            else:  # decrement_ttl(), inlined: this is the hot path
                                buf[8] = ttl - 1
                                c = (~((buf[10] << 8) | buf[11]) & 0xFFFF) + 0xFEFF
                                c = ~((c & 0xFFFF) + (c >> 16)) & 0xFFFF
                                buf[10] = c >> 8
                                buf[11] = c & 0xFF
                                try:
                                    sendto(mv[:n], addr)
                                    st.tx += 1
                                except OSError:
                                    st.send_errors += 1
                # UDP -> TUN
                try:
                    n = recv_into(mv, 0, dontwait)
                except BlockingIOError:
                    n = 0
                except OSError:
                    n = 0  # e.g. ECONNREFUSED reported for an earlier datagram
                if n >= 20:
                    active = True
                    ttl = buf[8]
                    if ttl <= 1:
                        st.ttl_drop += 1
                    else:
                        buf[8] = ttl - 1
                        c = (~((buf[10] << 8) | buf[11]) & 0xFFFF) + 0xFEFF
                        c = ~((c & 0xFFFF) + (c >> 16)) & 0xFFFF
                        buf[10] = c >> 8
                        buf[11] = c & 0xFF
                        try:
                            tun_write(mv[:n])
                            st.rx += 1
                        except OSError as exc:
                            if exc.errno in (errno.EBADFD, errno.EBADF, errno.EIO):
                                return EXIT_TUN_GONE
                            st.send_errors += 1
                elif n:
                    active = True  # a runt datagram: dropped, as the reference does
                if not active:
                    return None
            # a long burst: serve the control socket, then go on
            code = self._control()
            if code is not None:
                return code
            cache = self.cache

    def _unreachable(self, pkt: memoryview, tun_write: Any) -> None:
        reply = net_unreachable(pkt, self.tun_ip)
        if reply is not None:
            try:
                tun_write(reply)
                self.stats.icmp += 1
            except OSError:
                pass


# --- the control side (used by the backend) ------------------------------------------

class ForwarderError(Exception):
    """The forwarder did not answer or is gone."""


class Forwarder:
    """Starts a Loop in a child process (default) or a thread and talks to it over a socketpair.

    The fds stay the caller's: ``stop()`` ends the loop but closes neither the TUN nor the
    UDP socket. Calls are serialised by a lock; each waits for the loop's acknowledgement.
    """

    def __init__(self, tun_fd: int, sock: socket.socket, tun_ip: str, mode: str = "process") -> None:
        if mode not in ("process", "thread"):
            raise ValueError(f"forwarder mode {mode!r}: want process or thread")
        self.tun_fd, self.sock, self.tun_ip, self.mode = tun_fd, sock, tun_ip, mode
        self._lock = threading.Lock()
        self._ctl: socket.socket | None = None
        self._proc: subprocess.Popen[bytes] | None = None
        self._thread: threading.Thread | None = None
        self.exit_code: int | None = None
        self.routes: dict[ipaddress.IPv4Network, Addr] = {}

    @property
    def pid(self) -> int:
        return self._proc.pid if self._proc is not None else os.getpid()

    @property
    def native_id(self) -> int | None:
        """The forwarding thread's kernel id in thread mode (for CPU accounting)."""
        return self._thread.native_id if self._thread is not None else None

    def start(self) -> None:
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        for s in (ours, theirs):
            s.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 1 << 21)
        self._ctl = ours
        if self.mode == "thread":
            loop = Loop(self.tun_fd, self.sock, theirs, self.tun_ip)

            def run() -> None:
                try:
                    self.exit_code = loop.run()
                finally:
                    theirs.close()

            self._thread = threading.Thread(target=run, name="udp-forwarder", daemon=True)
            self._thread.start()
        else:
            fds = (self.tun_fd, self.sock.fileno(), theirs.fileno())
            self._proc = subprocess.Popen(
                [*_child_argv(), "--tun-fd", str(fds[0]), "--sock-fd", str(fds[1]), "--ctl-fd", str(fds[2]),
                 "--tun-ip", self.tun_ip], pass_fds=fds, env=_child_env(), stdin=subprocess.DEVNULL)
            theirs.close()
        self.routes = {}
        self._command(bytes([CMD_STATS]), timeout=30)  # wait until the loop serves commands

    def alive(self) -> bool:
        if self._proc is not None:
            code = self._proc.poll()
            if code is not None:
                self.exit_code = code
            return code is None
        return self._thread is not None and self._thread.is_alive()

    def _command(self, msg: bytes, timeout: float = 5.0) -> bytes:
        with self._lock:
            if self._ctl is None:
                raise ForwarderError("the udp forwarder is not running")
            self._ctl.settimeout(timeout)
            try:
                self._ctl.send(msg)
                reply = self._ctl.recv(1 << 16)
            except (OSError, TimeoutError) as exc:
                raise ForwarderError(f"the udp forwarder did not answer: {exc}") from None
            if not reply:
                raise ForwarderError("the udp forwarder has exited")
            return reply

    def set_routes(self, routes: RouteMap) -> None:
        """Replace the whole table in one step (packets to unchanged peers are never affected)."""
        self._command(encode_routes(CMD_REPLACE, sorted(routes.items())))
        self.routes = dict(routes)

    def set_route(self, net: ipaddress.IPv4Network, addr: Addr) -> None:
        self._command(encode_routes(CMD_SET_ROUTE, [(net, addr)]))
        self.routes[net] = addr

    def del_route(self, net: ipaddress.IPv4Network) -> None:
        self._command(encode_routes(CMD_DEL_ROUTE, [(net, ("0.0.0.0", 0))]))
        self.routes.pop(net, None)

    def stats(self) -> dict[str, int]:
        return json.loads(self._command(bytes([CMD_STATS])))  # type: ignore[no-any-return]

    def stop(self, timeout: float = 5.0) -> None:
        if self._ctl is not None and self.alive():
            try:
                self._command(bytes([CMD_STOP]), timeout=timeout)
            except ForwarderError:
                pass
        if self._ctl is not None:
            self._ctl.close()  # a loop that missed STOP sees EOF and exits
            self._ctl = None
        if self._proc is not None:
            try:
                self._proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self._proc.kill()
                self._proc.wait()
            self.exit_code = self._proc.returncode
        if self._thread is not None:
            self._thread.join(timeout)


def _child_argv() -> list[str]:
    if getattr(sys, "frozen", False):
        return [sys.executable, "udpproxy"]  # the multi-call binary's command (cni_flannel.__main__)
    return [sys.executable, "-m", "cni_flannel.flanneld.backend.udpproxy"]


def _child_env() -> dict[str, str]:
    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (root, env.get("PYTHONPATH", "")) if p)
    return env


def main(argv: list[str] | None = None) -> int:
    """The forwarder process: ``udpproxy --tun-fd N --sock-fd N --ctl-fd N --tun-ip A``."""
    p = argparse.ArgumentParser(prog="udpproxy")
    p.add_argument("--tun-fd", type=int, required=True)
    p.add_argument("--sock-fd", type=int, required=True)
    p.add_argument("--ctl-fd", type=int, required=True)
    p.add_argument("--tun-ip", required=True)
    a = p.parse_args(argv)
    sock = socket.socket(fileno=a.sock_fd)
    ctl = socket.socket(fileno=a.ctl_fd)
    started = time.monotonic()
    code = Loop(a.tun_fd, sock, ctl, a.tun_ip).run()
    if code == EXIT_TUN_GONE:
        sys.stderr.write(f"udpproxy: the TUN device is gone after {time.monotonic() - started:.1f}s\n")
    return code


if __name__ == "__main__":
    sys.exit(main())
