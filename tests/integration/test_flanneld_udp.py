"""The udp backend in lab namespaces (flanneld-reference §9): flannel0 field by field, pods on
three nodes reaching each other through the user-space forwarder (ping, TCP, UDP), peers
added and removed under traffic, TTL and ICMP behaviour, restart and repair, and the wire
format against a raw socket playing a Go udp node.

The backend runs in-process inside each node's namespace, with a fake acquire and static
peer lists (the subnet managers are tested elsewhere); its forwarder is a child process
(the default) except where a test says otherwise.
"""
from __future__ import annotations

import ipaddress
import json
import os
import subprocess
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import pytest
from flanneld_lab import KernelWatch

from cni_flannel.flanneld.backend.base import BackendError, ExternalInterface
from cni_flannel.flanneld.backend.udp import UDPBackend
from cni_flannel.flanneld.config import NetworkConfig
from cni_flannel.flanneld.subnet.lease import Lease, LeaseAttrs
from cni_flannel.net.netns import entered

NETWORK = ipaddress.IPv4Network("10.244.0.0/16")
PORT = 8285


@dataclass
class Node:
    host: object  # flanneld_lab.Host
    pod: object   # harness.Netns
    subnet: ipaddress.IPv4Network
    backend: UDPBackend | None = None
    lease: Lease | None = None
    acquired: LeaseAttrs | None = None

    @property
    def ns(self):  # the node's harness.Netns
        return self.host.ns

    @property
    def pod_ip(self) -> str:
        return str(self.subnet.network_address + 2)

    def start(self, mode: str = "process", backend_config: dict | None = None) -> UDPBackend:
        ext = ExternalInterface(name="eth0", index=0, mtu=1500, iface_addr=ipaddress.IPv4Address(self.host.ip),
                                ext_addr=ipaddress.IPv4Address(self.host.ip))

        def acquire(attrs: LeaseAttrs) -> Lease:
            self.acquired = attrs
            return Lease(subnet=self.subnet, ipv6_subnet=None, attrs=attrs)

        with entered(self.host.netns_path):
            be = UDPBackend(ext, NetworkConfig(network=NETWORK, subnet_len=24), backend_config or {"Type": "udp"},
                            self.host.dir, forwarder_mode=mode)
            self.lease = be.register_network(acquire)
        self.backend = be
        return be

    def stop(self) -> None:
        if self.backend is not None:
            self.backend.close()
            self.backend = None

    def reconcile(self, peers: list[Lease]):
        with entered(self.host.netns_path):
            return self.backend.reconcile(peers)


def tun_fds() -> int:
    """How many fds of this process are open on /dev/net/tun (a leak check)."""
    n = 0
    for fd in os.listdir("/proc/self/fd"):
        try:
            n += os.readlink(f"/proc/self/fd/{fd}") == "/dev/net/tun"
        except OSError:
            pass
    return n


def add_pod(host, pod, subnet: ipaddress.IPv4Network) -> None:
    """A simple veth "pod": eth0 .2/24 in the pod, the node side .1/24 as the gateway."""
    gw, ip = subnet.network_address + 1, subnet.network_address + 2
    subprocess.run(["ip", "link", "add", "vpod", "netns", host.ns.name, "type", "veth", "peer", "name", "eth0",
                    "netns", pod.name], check=True)
    host.ns.run("ip", "addr", "add", f"{gw}/24", "dev", "vpod")
    host.ns.run("ip", "link", "set", "vpod", "up")
    pod.run("ip", "addr", "add", f"{ip}/24", "dev", "eth0")
    pod.run("ip", "link", "set", "eth0", "up")
    pod.run("ip", "route", "add", "default", "via", str(gw))


@pytest.fixture
def cluster(lab, make_netns) -> Iterator[Callable[[int], list[Node]]]:
    nodes: list[Node] = []
    before = tun_fds()

    def make(count: int) -> list[Node]:
        for _ in range(count):
            host = lab.add_host(f"node{len(nodes) + 1}")
            pod = make_netns("udppod")
            subnet = ipaddress.IPv4Network(f"10.244.{len(nodes) + 1}.0/24")
            add_pod(host, pod, subnet)
            nodes.append(Node(host=host, pod=pod, subnet=subnet))
        return nodes

    yield make
    procs = [n.backend.forwarder for n in nodes if n.backend is not None and n.backend.forwarder is not None]
    for n in nodes:
        n.stop()
    assert all(not f.alive() for f in procs), "a forwarder outlived its backend"
    assert tun_fds() == before, "a TUN fd leaked"


def start_all(nodes: list[Node], mode: str = "process") -> None:
    for n in nodes:
        n.start(mode)
    for n in nodes:
        report = n.reconcile(peers_of(n, nodes))
        assert report.clean, report.errors


def peers_of(me: Node, nodes: list[Node]) -> list[Lease]:
    return [n.lease for n in nodes if n is not me]


def ping(ns, ip: str, count: int = 2, extra: tuple[str, ...] = ()) -> subprocess.CompletedProcess[str]:
    return ns.run("ping", "-c", str(count), "-i", "0.2", "-W", "2", *extra, ip, check=False, timeout=60)


# scripts run inside pod namespaces with `python3 -c`
TCP_SERVER = """
import socket, sys
s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("0.0.0.0", int(sys.argv[1]))); s.listen(1); print("ready", flush=True)
c, _ = s.accept(); data = b""
while len(data) < int(sys.argv[2]):
    chunk = c.recv(65536)
    if not chunk: break
    data += chunk
c.sendall(str(len(data)).encode() + b" " + str(sum(data) % 65521).encode()); c.close()
"""
TCP_CLIENT = """
import socket, sys, os
payload = os.urandom(int(sys.argv[3]))
c = socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=20); c.sendall(payload)
print(c.recv(100).decode(), len(payload), sum(payload) % 65521)
"""
UDP_ECHO = """
import socket, sys
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); s.bind(("0.0.0.0", int(sys.argv[1]))); print("ready", flush=True)
s.settimeout(30)
data, peer = s.recvfrom(65535); s.sendto(b"echo:" + data, peer)
"""
UDP_CLIENT = """
import socket, sys
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); s.settimeout(3)
ttl = int(sys.argv[4]) if len(sys.argv) > 4 else 64
s.setsockopt(socket.IPPROTO_IP, socket.IP_TTL, ttl)
for _ in range(int(sys.argv[5]) if len(sys.argv) > 5 else 5):
    s.sendto(sys.argv[3].encode(), (sys.argv[1], int(sys.argv[2])))
    try:
        data, peer = s.recvfrom(65535); print(data.decode(), peer[0]); break
    except socket.timeout:
        pass
else:
    print("timeout")
"""
# send one UDP datagram and catch the ICMP error that comes back (source, type, code, quoted dst)
ICMP_PROBE = """
import socket, sys, json, struct
raw = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_ICMP); raw.settimeout(5)
u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); u.sendto(b"probe", (sys.argv[1], 9))
try:
    while True:
        pkt, src = raw.recvfrom(65535)
        ihl = (pkt[0] & 15) * 4
        t, code = pkt[ihl], pkt[ihl + 1]
        inner, msg = pkt[ihl + 8:], pkt[ihl:]
        total = sum(struct.unpack("!%dH" % (len(msg) // 2), msg[: len(msg) // 2 * 2]))
        while total >> 16:
            total = (total & 0xFFFF) + (total >> 16)
        print(json.dumps({"src": src[0], "type": t, "code": code, "ttl": pkt[8], "len": len(pkt),
                          "quoted_dst": socket.inet_ntoa(inner[16:20]), "quoted_proto": inner[9],
                          "icmp_ok": total == 0xFFFF and len(msg) % 2 == 0}))
        break
except socket.timeout:
    print(json.dumps(None))
"""


def start_script(ns, script: str, *args: str) -> subprocess.Popen[str]:
    proc = subprocess.Popen(["ip", "netns", "exec", ns.name, "python3", "-c", script, *args],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    assert proc.stdout is not None
    line = proc.stdout.readline()
    assert line.strip() == "ready", proc.stderr.read() if proc.stderr else line
    return proc


def run_script(ns, script: str, *args: str, timeout: float = 60) -> str:
    out = ns.run("python3", "-c", script, *args, timeout=timeout)
    return out.stdout.strip()


def tcp_exchange(src: Node, dst: Node, size: int = 2_000_000, port: int = 5201) -> None:
    server = start_script(dst.pod, TCP_SERVER, str(port), str(size))
    try:
        got = run_script(src.pod, TCP_CLIENT, dst.pod_ip, str(port), str(size)).split()
        assert got[0] == got[2] == str(size) and got[1] == got[3], got  # every byte, in order
    finally:
        server.kill()
        server.wait()


def udp_exchange(src: Node, dst: Node, port: int = 5300, text: str = "hello") -> str:
    server = start_script(dst.pod, UDP_ECHO, str(port))
    try:
        return run_script(src.pod, UDP_CLIENT, dst.pod_ip, str(port), text)
    finally:
        server.kill()
        server.wait()


# --- the device ----------------------------------------------------------------------

def test_flannel0_field_by_field(cluster) -> None:
    (n1,) = cluster(1)
    n1.start()
    link = n1.ns.json("ip", "-d", "-j", "link", "show", "flannel0")[0]
    assert link["ifname"] == "flannel0"
    assert link["link_type"] == "none"
    assert link["linkinfo"]["info_kind"] == "tun"
    info = link["linkinfo"]["info_data"]
    assert info["type"] == "tun" and info["pi"] is False  # IFF_TUN | IFF_NO_PI
    assert info["persist"] is False and info["multi_queue"] is False and info["vnet_hdr"] is False
    assert link["mtu"] == 1500 - 28 == n1.backend.mtu()
    assert "UP" in link["flags"] and "LOWER_UP" in link["flags"]
    text = n1.ns.run("ip", "-d", "link", "show", "flannel0").stdout
    assert "tun type tun pi off" in text
    addrs = n1.ns.json("ip", "-j", "addr", "show", "flannel0")[0]["addr_info"]
    assert [(a["family"], a["local"], a["prefixlen"]) for a in addrs if a["family"] == "inet"] == \
        [("inet", "10.244.1.0", 32)]
    routes = [r for r in n1.ns.json("ip", "-j", "route", "show", "table", "main") if r.get("dev") == "flannel0"]
    assert len(routes) == 1 and routes[0]["dst"] == "10.244.0.0/16" and "gateway" not in routes[0]
    detail = n1.ns.json("ip", "-d", "-j", "route", "show", "10.244.0.0/16")[0]
    assert detail["protocol"] == "boot" and detail["scope"] == "global" and detail["type"] == "unicast"
    # the UDP socket listens on IfaceAddr:8285 (not 0.0.0.0)
    ss = n1.ns.run("ss", "-H", "-u", "-l", "-n").stdout.split()
    assert f"{n1.host.ip}:{PORT}" in ss
    # the lease publishes BackendType udp and the PublicIP, no backend data (the reference sends none)
    assert n1.acquired == LeaseAttrs(public_ip=ipaddress.IPv4Address(n1.host.ip), backend_type="udp")


def test_custom_port_and_bad_configs(cluster) -> None:
    (n1,) = cluster(1)
    n1.start(backend_config={"Type": "udp", "port": 9999})  # keys match case-insensitively, as in Go
    assert f"{n1.host.ip}:9999" in n1.ns.run("ss", "-H", "-u", "-l", "-n").stdout.split()
    n1.stop()
    ext = ExternalInterface(name="eth0", index=0, mtu=1500, iface_addr=ipaddress.IPv4Address(n1.host.ip))
    with pytest.raises(BackendError, match="IPv4 only"):
        UDPBackend(ext, NetworkConfig(network=NETWORK, enable_ipv6=True,
                                      ipv6_network=ipaddress.IPv6Network("fd00::/56")), {}, n1.host.dir)
    with pytest.raises(BackendError, match="Port"):
        UDPBackend(ext, NetworkConfig(network=NETWORK), {"Port": "8285"}, n1.host.dir)
    with pytest.raises(BackendError, match="Port 0"):
        UDPBackend(ext, NetworkConfig(network=NETWORK), {"Port": 0}, n1.host.dir)


# --- traffic -------------------------------------------------------------------------

@pytest.mark.parametrize("mode", ["process", "thread"])
def test_pods_on_three_nodes(cluster, mode: str) -> None:
    nodes = cluster(3)
    start_all(nodes, mode)
    for a in nodes:
        for b in nodes:
            if a is not b:
                out = ping(a.pod, b.pod_ip)
                assert out.returncode == 0, out.stdout + out.stderr
                # pod TTL 64, -1 per kernel hop (2) and per forwarder (2)
                assert "ttl=60" in out.stdout, out.stdout
    n1, n2, n3 = nodes
    tcp_exchange(n1, n2)
    tcp_exchange(n3, n1)
    assert udp_exchange(n2, n3) == f"echo:hello {n3.pod_ip}"
    # node to remote pod: the source is the TUN's /32 (the reason it exists)
    out = ping(n1.ns, n2.pod_ip, 1)
    assert out.returncode == 0, out.stdout
    stats = n1.backend.forwarder.stats()
    assert stats["tx"] > 0 and stats["rx"] > 0 and stats["routes"] == 2 and stats["send_errors"] == 0


def test_peer_added_and_removed_under_traffic(cluster) -> None:
    n1, n2, n3 = nodes = cluster(3)
    start_all(nodes)
    n1.reconcile([n2.lease])  # n3 not yet known to n1
    flood = subprocess.Popen(["ip", "netns", "exec", n1.pod.name, "ping", "-c", "400", "-i", "0.005", "-W", "2",
                              "-q", n2.pod_ip], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        for _ in range(5):
            r = n1.reconcile([n2.lease, n3.lease])
            assert r.added == [f"udp route 10.244.3.0/24 -> {n3.host.ip}:{PORT}"] and r.clean
            assert ping(n1.pod, n3.pod_ip, 1).returncode == 0
            r = n1.reconcile([n2.lease])
            assert r.removed == [f"udp route 10.244.3.0/24 -> {n3.host.ip}:{PORT}"] and r.clean
            assert ping(n1.pod, n3.pod_ip, 1).returncode != 0
        out, _ = flood.communicate(timeout=120)
    finally:
        if flood.poll() is None:
            flood.kill()
            flood.wait()
    assert "400 packets transmitted, 400 received, 0% packet loss" in out, out
    # an unchanged reconcile changes nothing
    r = n1.reconcile([n2.lease])
    assert not (r.added or r.removed or r.changed) and r.programmed == {n2.lease.key}


def test_other_backend_types_ignored_empty_taken_as_udp(cluster) -> None:
    n1, n2, n3 = nodes = cluster(3)
    start_all(nodes)
    vx = Lease(subnet=n2.subnet, ipv6_subnet=None,
               attrs=LeaseAttrs(public_ip=n2.lease.attrs.public_ip, backend_type="vxlan",
                                backend_data={"VNI": 1, "VtepMAC": "aa:bb:cc:dd:ee:ff"}))
    go = Lease(subnet=n3.subnet, ipv6_subnet=None, attrs=LeaseAttrs(public_ip=n3.lease.attrs.public_ip))
    assert not n1.backend.accepts(vx) and n1.backend.accepts(go)
    r = n1.reconcile([vx, go])
    assert r.clean and r.programmed == {go.key}
    assert n1.backend.forwarder.routes == {n3.subnet: (n3.host.ip, PORT)}
    assert ping(n1.pod, n3.pod_ip, 1).returncode == 0
    assert ping(n1.pod, n2.pod_ip, 1).returncode != 0


def test_ttl_and_net_unreachable(cluster) -> None:
    n1, n2 = nodes = cluster(2)
    start_all(nodes)
    server = start_script(n2.pod, UDP_ECHO, "5400")
    try:
        # the pod's TTL 2 reaches flannel0 as 1 (the node forwarded it): the forwarder drops it
        assert run_script(n1.pod, UDP_CLIENT, n2.pod_ip, "5400", "x", "2", "1") == "timeout"
        assert n1.backend.forwarder.stats()["ttl_drop"] == 1
        # TTL 3: sent with TTL 1, dropped by the receiving forwarder
        assert run_script(n1.pod, UDP_CLIENT, n2.pod_ip, "5400", "x", "3", "1") == "timeout"
        assert n2.backend.forwarder.stats()["ttl_drop"] == 1
        # TTL 5 is the least that reaches the pod (2 kernel hops, 2 forwarders)
        assert run_script(n1.pod, UDP_CLIENT, n2.pod_ip, "5400", "x", "5", "1") == f"echo:x {n2.pod_ip}"
    finally:
        server.kill()
        server.wait()
    # in the Network but in no peer's subnet: ICMP net-unreachable from the TUN address
    got = json.loads(run_script(n1.pod, ICMP_PROBE, "10.244.99.7"))
    assert got is not None, "no ICMP came back"
    assert (got["src"], got["type"], got["code"]) == ("10.244.1.0", 3, 1)
    assert got["quoted_dst"] == "10.244.99.7" and got["quoted_proto"] == 17
    assert got["ttl"] == 7  # the reference's TTL 8, minus the node's hop to the pod
    assert got["len"] == 20 + 8 + 20 + 8 and got["icmp_ok"]  # the ICMP checksum over the whole message holds
    assert n1.backend.forwarder.stats()["icmp"] == 1
    # no ICMP about ICMP: a ping gets no answer at all
    out = ping(n1.pod, "10.244.99.7", 1)
    assert "Unreachable" not in out.stdout and out.returncode != 0
    assert n1.backend.forwarder.stats()["icmp"] == 1


# --- restart and repair --------------------------------------------------------------

def test_backend_restart(cluster) -> None:
    n1, n2 = nodes = cluster(2)
    start_all(nodes)
    assert ping(n1.pod, n2.pod_ip, 1).returncode == 0
    n1.stop()
    # not persistent: the device goes with the last fd, as the reference's does
    assert n1.ns.run("ip", "link", "show", "flannel0", check=False).returncode != 0
    assert ping(n1.pod, n2.pod_ip, 1).returncode != 0
    n1.start()
    assert n1.reconcile([n2.lease]).clean
    out = ping(n1.pod, n2.pod_ip)
    assert out.returncode == 0, out.stdout
    tcp_exchange(n2, n1)


def test_repairs_by_reconcile(cluster) -> None:
    n1, n2 = nodes = cluster(2)
    start_all(nodes)
    # the device deleted by hand: recreated, configured, forwarder restarted, peers replayed
    n1.ns.run("ip", "link", "del", "flannel0")
    deadline = time.monotonic() + 10
    while n1.backend.forwarder.alive() and time.monotonic() < deadline:
        time.sleep(0.05)  # the forwarder notices the dead TUN fd and exits
    r = n1.reconcile([n2.lease])
    assert r.clean and r.device_recreated, r
    assert f"udp route 10.244.2.0/24 -> {n2.host.ip}:{PORT}" in r.added
    link = n1.ns.json("ip", "-d", "-j", "link", "show", "flannel0")[0]
    assert link["mtu"] == 1472 and "UP" in link["flags"] and link["linkinfo"]["info_data"]["pi"] is False
    assert ping(n1.pod, n2.pod_ip).returncode == 0
    # address, route, MTU and link state, each broken by hand and repaired
    n1.ns.run("ip", "addr", "add", "10.244.77.0/32", "dev", "flannel0")  # a stale address in the Network
    n1.ns.run("ip", "addr", "del", "10.244.1.0/32", "dev", "flannel0")
    n1.ns.run("ip", "route", "del", "10.244.0.0/16")
    n1.ns.run("ip", "link", "set", "flannel0", "mtu", "1300")
    r = n1.reconcile([n2.lease])
    assert r.clean and not r.device_recreated
    assert "address 10.244.1.0/32 dev flannel0" in r.added and "route 10.244.0.0/16 dev flannel0" in r.added
    assert "address 10.244.77.0/32 dev flannel0" in r.removed and "mtu 1472 dev flannel0" in r.changed
    addrs = n1.ns.json("ip", "-j", "addr", "show", "flannel0")[0]["addr_info"]
    assert [(a["local"], a["prefixlen"]) for a in addrs if a["family"] == "inet"] == [("10.244.1.0", 32)]
    n1.ns.run("ip", "link", "set", "flannel0", "down")
    r = n1.reconcile([n2.lease])
    assert "link flannel0 up" in r.changed
    assert "route 10.244.0.0/16 dev flannel0" in r.added  # the kernel drops the route with the link
    assert ping(n1.pod, n2.pod_ip).returncode == 0
    # a killed forwarder is restarted and gets the peers again
    os.kill(n1.backend.forwarder.pid, 9)
    n1.backend.forwarder._proc.wait(10)
    r = n1.reconcile([n2.lease])
    assert r.clean and not r.device_recreated and r.added == [f"udp route 10.244.2.0/24 -> {n2.host.ip}:{PORT}"]
    assert ping(n1.pod, n2.pod_ip).returncode == 0
    # nothing to do any more
    r = n1.reconcile([n2.lease])
    assert not (r.added or r.removed or r.changed)


def test_kernel_watch_triggers_on_device_loss(cluster) -> None:
    (n1,) = cluster(1)
    n1.start()
    with KernelWatch(n1.backend) as w:
        time.sleep(0.3)  # let the monitor bind before the event
        n1.ns.run("ip", "route", "del", "10.244.0.0/16")
        w.fired.wait(10)
        assert w.reasons and "flannel0" in w.reasons[0]


# --- wire format: a raw socket plays the Go udp node -----------------------------------

GO_PEER = """
import socket, struct, sys, json
def csum(b):
    if len(b) % 2: b += b"\\0"
    s = sum(struct.unpack("!%dH" % (len(b) // 2), b))
    while s >> 16: s = (s & 0xFFFF) + (s >> 16)
    return ~s & 0xFFFF
me, port = sys.argv[1], int(sys.argv[2])
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); s.bind((me, port)); s.settimeout(20)
print("ready", flush=True)
pkt, frm = s.recvfrom(65535)
ihl = (pkt[0] & 15) * 4
src, dst = socket.inet_ntoa(pkt[12:16]), socket.inet_ntoa(pkt[16:20])
sport, dport = struct.unpack("!HH", pkt[ihl:ihl + 4])
print(json.dumps({"from": list(frm), "version": pkt[0] >> 4, "ttl": pkt[8], "hdr_ok": csum(pkt[:ihl]) == 0,
                  "len_ok": struct.unpack("!H", pkt[2:4])[0] == len(pkt), "src": src, "dst": dst,
                  "payload": pkt[ihl + 8:].decode()}), flush=True)
# answer the way the Go proxy would: the raw IPv4 packet, TTL 64, as the UDP payload
data = b"from-go"
udp = struct.pack("!HHHH", dport, sport, 8 + len(data), 0) + data
for ttl in (1, 64):  # the TTL-1 one must be dropped by our forwarder
    iph = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(udp), 7, 0, ttl, 17, 0, pkt[16:20], pkt[12:16])
    iph = iph[:10] + struct.pack("!H", csum(iph)) + iph[12:]
    s.sendto(iph + udp, frm)
"""


def test_wire_format_with_a_go_peer(cluster, lab) -> None:
    (n1,) = cluster(1)
    gopeer = lab.add_host("gopeer")
    n1.start()
    go_lease = Lease(subnet=ipaddress.IPv4Network("10.244.9.0/24"), ipv6_subnet=None,
                     attrs=LeaseAttrs(public_ip=ipaddress.IPv4Address(gopeer.ip)))  # BackendType "" as Go writes
    assert n1.reconcile([go_lease]).programmed == {go_lease.key}
    peer = start_script(gopeer.ns, GO_PEER, gopeer.ip, str(PORT))
    try:
        out = run_script(n1.pod, UDP_CLIENT, "10.244.9.7", "5000", "hi-go", "64", "1")
        seen = json.loads(peer.stdout.readline())
    finally:
        peer.kill()
        peer.wait()
    assert seen["from"] == [n1.host.ip, PORT]  # sent from IfaceAddr:Port
    assert seen["version"] == 4 and seen["hdr_ok"] and seen["len_ok"]
    assert seen["ttl"] == 62  # 64, -1 by the node's kernel, -1 by our forwarder, checksum still right
    assert (seen["src"], seen["dst"], seen["payload"]) == (n1.pod_ip, "10.244.9.7", "hi-go")
    # the Go node's reply: its TTL-64 packet reached the pod, the TTL-1 one did not
    assert out == "from-go 10.244.9.7"
    stats = n1.backend.forwarder.stats()
    assert stats["rx"] == 1 and stats["ttl_drop"] == 1
