"""The udp forwarder's pure logic: TTL and checksum, the ICMP net-unreachable, the route
lookup, the control encoding, the config checks; and the loop itself with a SEQPACKET
socketpair standing in for the TUN (packet boundaries like a TUN) and UDP on loopback."""
from __future__ import annotations

import ipaddress
import random
import socket
import struct
import threading
import time

import pytest

from cni_flannel.flanneld.backend.base import BackendError, ExternalInterface
from cni_flannel.flanneld.backend.udp import UDPBackend, ipv4_network, parse_config
from cni_flannel.flanneld.backend.udpproxy import (
    CMD_REPLACE,
    CMD_SET_ROUTE,
    Forwarder,
    RouteTable,
    decode_routes,
    decrement_ttl,
    encode_routes,
    ip_checksum,
    net_unreachable,
)
from cni_flannel.flanneld.config import NetworkConfig
from cni_flannel.flanneld.subnet.lease import Lease, LeaseAttrs

N = ipaddress.IPv4Network


def header(ttl: int = 64, proto: int = 17, src: str = "10.244.1.2", dst: str = "10.244.2.2", ident: int = 0x1234,
           frag: int = 0x4000, options: bytes = b"", tos: int = 0, total: int | None = None) -> bytearray:
    ihl = (20 + len(options)) // 4
    h = bytearray(struct.pack("!BBHHHBBH4s4s", 0x40 | ihl, tos, total or 20 + len(options), ident, frag, ttl, proto, 0,
                              socket.inet_aton(src), socket.inet_aton(dst)) + options)
    struct.pack_into("!H", h, 10, ip_checksum(h))
    return h


def reference_ttl_checksum(check: int) -> int:
    """The reference's update modelled on its little-endian u16 (`decrement_ttl`, proxy_amd64.c)."""
    m = ((check & 0xFF) << 8) | (check >> 8)          # the bytes as an x86 u16 sees them
    m = (m + 2) & 0xFFFF if m >= 0xFFFE else (m + 1) & 0xFFFF  # htons(0xFFFF-0x100) = 0xFFFE, htons(0x100) = 1
    return ((m & 0xFF) << 8) | (m >> 8)


# --- TTL and checksum -----------------------------------------------------------------

def test_decrement_ttl_matches_a_full_recomputation() -> None:
    rng = random.Random(7)
    seen_edges = set()
    for _ in range(20000):
        h = header(ttl=rng.randint(2, 255), proto=rng.randint(0, 255), ident=rng.randint(0, 0xFFFF),
                   frag=rng.randint(0, 0xFFFF), tos=rng.randint(0, 255), total=rng.randint(20, 0xFFFF),
                   src=socket.inet_ntoa(rng.randbytes(4)), dst=socket.inet_ntoa(rng.randbytes(4)))
        before = (h[10] << 8) | h[11]
        seen_edges.add(before >> 8 == 0xFF)
        want = bytearray(h)
        want[8] -= 1
        want[10:12] = b"\0\0"
        struct.pack_into("!H", want, 10, ip_checksum(want))
        assert decrement_ttl(h)
        assert h == want
        assert ip_checksum(h) == 0  # the header verifies
        assert (h[10] << 8) | h[11] == reference_ttl_checksum(before)  # and the reference's bytes agree
    assert seen_edges == {True, False}  # the end-around carry was exercised


@pytest.mark.parametrize("check", [0x0000, 0x00FF, 0xFEFF, 0xFF00, 0xFFFE, 0xFFFF, 0x1234])
def test_decrement_ttl_checksum_edges(check: int) -> None:
    h = header()
    h[10:12] = check.to_bytes(2, "big")
    decrement_ttl(h)
    assert (h[10] << 8) | h[11] == reference_ttl_checksum(check)


@pytest.mark.parametrize("ttl", [0, 1])
def test_ttl_that_would_reach_zero_is_refused_untouched(ttl: int) -> None:
    h = header(ttl=ttl)
    before = bytes(h)
    assert not decrement_ttl(h)  # ⚠ the reference wraps TTL 0 to 255 and forwards it
    assert bytes(h) == before


def test_ttl_2_becomes_1() -> None:
    h = header(ttl=2)
    assert decrement_ttl(h) and h[8] == 1 and ip_checksum(h) == 0


# --- ICMP net-unreachable --------------------------------------------------------------

def test_net_unreachable_is_built_as_the_reference_builds_it() -> None:
    offender = header(proto=6, src="10.244.1.2", dst="10.244.99.7", total=60) + bytes(range(40))
    pkt = net_unreachable(offender, socket.inet_aton("10.244.1.0"))
    assert pkt is not None and len(pkt) == 20 + 8 + 20 + 8
    ver_ihl, tos, total, ident, frag, ttl, proto, _, src, dst = struct.unpack("!BBHHHBBH4s4s", pkt[:20])
    assert (ver_ihl, tos, total, ident, frag, ttl, proto) == (0x45, 0, 56, 0, 0, 8, 1)
    assert (socket.inet_ntoa(src), socket.inet_ntoa(dst)) == ("10.244.1.0", "10.244.1.2")
    assert ip_checksum(pkt[:20]) == 0
    icmp = pkt[20:]
    assert icmp[0] == 3 and icmp[1] == 1 and icmp[4:8] == b"\0\0\0\0"  # dest unreachable, net unreachable
    assert icmp[8:] == bytes(offender[:28])  # the offender's header and 8 bytes of its payload
    assert ip_checksum(icmp) == 0


def test_net_unreachable_quotes_ip_options() -> None:
    offender = header(proto=17, options=b"\x01" * 8, total=40) + b"ABCDEFGHIJKL"
    pkt = net_unreachable(offender, socket.inet_aton("10.244.1.0"))
    assert pkt is not None and pkt[28:] == bytes(offender[:28 + 8]) and len(pkt) == 20 + 8 + 28 + 8


def test_net_unreachable_short_packet_quotes_what_exists() -> None:
    offender = header(proto=17) + b"abc"  # the reference would quote 5 bytes past the end
    pkt = net_unreachable(offender, socket.inet_aton("10.244.1.0"))
    assert pkt is not None and pkt[28:] == bytes(offender) and ip_checksum(pkt[20:]) == 0


@pytest.mark.parametrize("offender", [
    header(proto=1) + bytes(8),                       # ICMP: no ICMP about ICMP (RFC 792)
    header(frag=0x2001) + bytes(8),                   # not the first fragment
    header(frag=0x0010) + bytes(8),                   # offset without MF: still not the first
    bytearray(b"\x60" + bytes(47)),                   # IPv6
    bytearray(b"\x44" + bytes(27)),                   # IHL 4: malformed
    bytearray(10),                                    # runt
])
def test_no_icmp_due(offender: bytearray) -> None:
    assert net_unreachable(offender, socket.inet_aton("10.244.1.0")) is None


def test_icmp_for_first_fragment_with_mf() -> None:
    assert net_unreachable(header(frag=0x2000) + bytes(8), socket.inet_aton("10.244.1.0")) is not None


# --- the route table -------------------------------------------------------------------

def _ip(s: str) -> int:
    return int(ipaddress.IPv4Address(s))


def test_route_lookup_longest_prefix() -> None:
    t = RouteTable({N("10.244.0.0/16"): ("192.168.0.1", 8285), N("10.244.2.0/24"): ("192.168.0.2", 8285),
                    N("10.244.2.128/25"): ("192.168.0.3", 8285)})
    assert t.lookup(_ip("10.244.2.200")) == ("192.168.0.3", 8285)
    assert t.lookup(_ip("10.244.2.5")) == ("192.168.0.2", 8285)
    assert t.lookup(_ip("10.244.9.5")) == ("192.168.0.1", 8285)
    assert t.lookup(_ip("10.245.0.1")) is None


def test_route_lookup_first_match_for_disjoint_peers() -> None:
    """Peers' subnets are disjoint: longest-prefix is the reference's first match."""
    rng = random.Random(3)
    nets = {N(f"10.244.{i}.0/24"): (f"192.168.1.{i}", 8285) for i in range(0, 256, 3)}
    t = RouteTable(nets)
    for _ in range(2000):
        ip = ipaddress.IPv4Address(f"10.244.{rng.randint(0, 255)}.{rng.randint(0, 255)}")
        first = next((addr for net, addr in nets.items() if ip in net), None)
        assert t.lookup(int(ip)) == first


def test_route_set_replace_delete() -> None:
    t = RouteTable()
    assert t.lookup(_ip("10.244.1.1")) is None and len(t) == 0
    t.set(N("10.244.1.0/24"), ("192.168.0.1", 1))
    t.set(N("10.244.1.0/24"), ("192.168.0.9", 2))  # SET on an existing dst replaces the next hop
    assert t.lookup(_ip("10.244.1.1")) == ("192.168.0.9", 2) and len(t) == 1
    assert t.delete(N("10.244.1.0/24")) and not t.delete(N("10.244.1.0/24"))
    assert t.lookup(_ip("10.244.1.1")) is None
    assert RouteTable({N("0.0.0.0/0"): ("1.2.3.4", 5)}).lookup(_ip("8.8.8.8")) == ("1.2.3.4", 5)


def test_control_encoding_round_trip_and_masking() -> None:
    routes = [(N("10.244.1.0/24"), ("192.168.77.2", 8285)), (N("10.0.0.0/8"), ("1.2.3.4", 1))]
    msg = encode_routes(CMD_REPLACE, routes)
    assert msg[0] == CMD_REPLACE and decode_routes(msg[1:]) == routes
    # the reference masks dest_net by the prefix length when it installs a route
    raw = bytes([CMD_SET_ROUTE]) + socket.inet_aton("10.244.1.77") + bytes([24]) + socket.inet_aton("9.9.9.9") \
        + (8285).to_bytes(2, "big")
    assert decode_routes(raw[1:]) == [(N("10.244.1.0/24"), ("9.9.9.9", 8285))]


# --- config and peers ------------------------------------------------------------------

def test_parse_config() -> None:
    assert parse_config({}) == 8285 and parse_config({"Type": "udp"}) == 8285
    assert parse_config({"Type": "udp", "Port": 9000}) == 9000
    assert parse_config({"PORT": 1, "port": 2}) == 2  # case-insensitive, last wins (Go)
    for bad in ("8285", 8285.5, True, 0, 65536, -1, None):
        with pytest.raises(BackendError, match="error decoding UDP backend config"):
            parse_config({"Port": bad})


def test_ipv4_only() -> None:
    assert ipv4_network(NetworkConfig(network=N("10.244.0.0/16"))) == N("10.244.0.0/16")
    assert ipv4_network({"Network": "10.5.0.0/16"}) == N("10.5.0.0/16")
    with pytest.raises(BackendError, match="IPv4 only"):
        ipv4_network(NetworkConfig(network=N("10.244.0.0/16"), enable_ipv6=True,
                                   ipv6_network=ipaddress.IPv6Network("fd00::/56")))
    with pytest.raises(BackendError, match="IPv4 only"):
        ipv4_network({"Network": "10.5.0.0/16", "IPv6Network": "fd00::/56"})
    with pytest.raises(BackendError, match="needs IPv4"):
        ipv4_network(NetworkConfig(enable_ipv4=False, network=None))


def _backend() -> UDPBackend:
    ext = ExternalInterface(name="eth0", index=2, mtu=9000, iface_addr=ipaddress.IPv4Address("192.168.77.1"))
    return UDPBackend(ext, NetworkConfig(network=N("10.244.0.0/16")), {"Type": "udp"}, "/nonexistent")


def _lease(subnet: str, btype: str, ip: str = "192.168.77.2") -> Lease:
    return Lease(subnet=N(subnet), ipv6_subnet=None,
                 attrs=LeaseAttrs(public_ip=ipaddress.IPv4Address(ip), backend_type=btype))


def test_accepts_and_desired_routes(caplog: pytest.LogCaptureFixture) -> None:
    from cni_flannel.flanneld.backend.base import ReconcileReport

    be = _backend()
    assert be.mtu() == 9000 - 28
    peers = [_lease("10.244.2.0/24", "udp"), _lease("10.244.3.0/24", "", "192.168.77.3"),
             _lease("10.244.4.0/24", "vxlan"), _lease("10.244.5.0/24", "host-gw"),
             Lease(subnet=N("10.244.6.0/24"), ipv6_subnet=None, attrs=LeaseAttrs(backend_type="udp"))]
    with caplog.at_level("INFO", logger="flanneld.udp"):
        report = ReconcileReport()
        routes, keys = be.desired_routes(peers, report)
        be.desired_routes(peers, ReconcileReport())  # logged once per lease, not once per pass
    assert routes == {N("10.244.2.0/24"): ("192.168.77.2", 8285), N("10.244.3.0/24"): ("192.168.77.3", 8285)}
    assert set(keys.values()) == {"10.244.2.0-24", "10.244.3.0-24"}
    assert report.errors == ["peer 10.244.6.0-24: no IPv4 subnet or PublicIP"]
    ignored = [r.getMessage() for r in caplog.records if "ignoring" in r.getMessage()]
    assert ignored == ["ignoring non-udp subnet 10.244.4.0-24: type=vxlan",
                       "ignoring non-udp subnet 10.244.5.0-24: type=host-gw"]


# --- the loop, with a socketpair as the TUN and UDP on loopback ------------------------

class Rig:
    """TUN side: a SEQPACKET pair (one packet per read, like a TUN). Wire side: loopback UDP."""

    def __init__(self, mode: str) -> None:
        self.tun_app, tun_dev = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        self.tun_dev = tun_dev
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind(("127.0.0.1", 0))
        self.peer = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.peer.bind(("127.0.0.1", 0))
        self.peer.settimeout(5)
        self.tun_app.settimeout(5)
        self.fwd = Forwarder(tun_dev.fileno(), self.sock, "10.244.1.0", mode=mode)
        self.fwd.start()

    def close(self) -> None:
        self.fwd.stop()
        assert not self.fwd.alive()
        for s in (self.tun_app, self.tun_dev, self.sock, self.peer):
            s.close()


@pytest.fixture(params=["thread", "process"])
def rig(request: pytest.FixtureRequest):
    r = Rig(request.param)
    yield r
    r.close()


def test_loop_tun_to_udp_udp_to_tun_and_icmp(rig: Rig) -> None:
    rig.fwd.set_routes({N("10.244.2.0/24"): rig.peer.getsockname()})
    pkt = header(ttl=10, dst="10.244.2.9") + b"payload"
    rig.tun_app.send(bytes(pkt))
    got, frm = rig.peer.recvfrom(65535)
    assert frm == rig.sock.getsockname()
    want = bytearray(pkt)
    decrement_ttl(want)
    assert got == bytes(want)  # the raw packet, TTL-1, nothing around it
    # back from the peer: TTL-1, written to the TUN
    rig.peer.sendto(got, rig.sock.getsockname())
    back = rig.tun_app.recv(65535)
    decrement_ttl(want)
    assert back == bytes(want)
    # no route: net-unreachable into the TUN
    rig.tun_app.send(bytes(header(dst="10.244.9.9") + bytes(8)))
    icmp = rig.tun_app.recv(65535)
    assert icmp == net_unreachable(header(dst="10.244.9.9") + bytes(8), socket.inet_aton("10.244.1.0"))
    # TTL 1 both ways: dropped
    rig.tun_app.send(bytes(header(ttl=1, dst="10.244.2.9")))
    rig.peer.sendto(bytes(header(ttl=1)), rig.sock.getsockname())
    rig.tun_app.send(bytes(header(ttl=3, dst="10.244.2.9")))  # a marker behind them
    assert rig.peer.recvfrom(65535)[0][8] == 2
    stats = rig.fwd.stats()
    assert stats["ttl_drop"] == 2 and stats["icmp"] == 1 and stats["no_route"] == 1
    assert stats["tx"] == 2 and stats["rx"] == 1 and stats["routes"] == 1


def test_loop_keeps_forwarding_while_the_table_changes(rig: Rig) -> None:
    """A peer added and removed 200 times while a stream to another peer flows: nothing lost."""
    other = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    other.bind(("127.0.0.1", 0))
    try:
        base = {N("10.244.2.0/24"): rig.peer.getsockname()}
        rig.fwd.set_routes(base)
        count = 2000
        done = threading.Event()
        idents: set[int] = set()

        def receive() -> None:  # concurrently: a loopback socket buffer holds only a few hundred
            for _ in range(count):
                idents.add(struct.unpack("!H", rig.peer.recvfrom(65535)[0][4:6])[0])

        def send() -> None:
            for i in range(count):
                while i - len(idents) > 100 and threads[0].is_alive():
                    time.sleep(0.001)  # flow control: the loopback receiver's buffer must never overflow
                rig.tun_app.send(bytes(header(dst="10.244.2.9", ident=i & 0xFFFF)))
            done.set()

        threads = [threading.Thread(target=receive), threading.Thread(target=send)]
        for t in threads:
            t.start()
        flips = 0
        while not done.is_set() or flips < 200:
            rig.fwd.set_routes({**base, N("10.244.3.0/24"): other.getsockname()} if flips % 2 == 0 else base)
            flips += 1
        for t in threads:
            t.join(30)
        assert idents == set(range(count))
        stats = rig.fwd.stats()
        assert stats["tx"] == count and stats["send_errors"] == 0
    finally:
        other.close()


def test_forwarder_stop_closes_nothing_it_borrowed(rig: Rig) -> None:
    rig.fwd.stop()
    assert not rig.fwd.alive()
    rig.sock.getsockname()  # still open
    rig.tun_dev.send(b"x")
    assert rig.tun_app.recv(10) == b"x"
