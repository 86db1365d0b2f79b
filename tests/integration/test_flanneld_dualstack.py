"""flanneld's vxlan and host-gw backends dual-stack (flanneld-reference §7, §8, §2, §3) on a real
kernel. Lab hosts get a v6 underlay (fd77::N/64 on eth0, default via fd77::fe on the switch);
each backend runs in-process in its node's namespace with a fake ``acquire`` and static peers.
Every test also checks that the v4 side is untouched by what happens to v6."""
from __future__ import annotations

import ipaddress
import logging
import os

import pytest
from flanneld_lab import KernelWatch

from cni_flannel.flanneld.backend.hostgw import HostGWBackend
from cni_flannel.flanneld.backend.vxlan import VXLANBackend
from cni_flannel.flanneld.config import NetworkConfig
from cni_flannel.flanneld.iface import IfaceError, select_interface
from cni_flannel.flanneld.subnet.lease import Lease, LeaseAttrs
from cni_flannel.net.netns import entered
from cni_flannel.tools.traffic import request, server

NETWORK = "10.42.0.0/16"
NETWORK6 = "fd42::/56"
SWITCH6 = "fd77::fe"


def sub4(n: int) -> str:
    return f"10.42.{n}.0/24"


def sub6(n: int) -> str:
    return f"fd42:0:0:{n:x}::/64"


def net6(n: int) -> str:
    return f"fd42:0:0:{n:x}::"


def netconf() -> NetworkConfig:
    return NetworkConfig(enable_ipv6=True, network=ipaddress.ip_network(NETWORK),
                         ipv6_network=ipaddress.ip_network(NETWORK6))


@pytest.fixture
def lab6(lab):
    """The lab with a v6 address on the switch bridge (the hosts' v6 default gateway)."""
    lab.switch.run("sysctl", "-qw", "net.ipv6.conf.all.disable_ipv6=0")
    lab.switch.run("ip", "-6", "addr", "add", f"{SWITCH6}/64", "dev", "sw0", "nodad")
    return lab


def add_host6(lab, name: str):
    """A lab host with fd77::<last octet of its v4>/64 on eth0 and a v6 default route via the switch."""
    host = lab.add_host(name)
    host.ip6 = f"fd77::{host.ip.rsplit('.', 1)[1]}"
    ns = host.ns
    ns.run("sysctl", "-qw", "net.ipv6.conf.all.disable_ipv6=0")
    ns.run("sysctl", "-qw", "net.ipv6.conf.all.forwarding=1")
    ns.run("ip", "-6", "addr", "add", f"{host.ip6}/64", "dev", "eth0", "nodad")
    ns.run("ip", "-6", "route", "add", "default", "via", SWITCH6, "dev", "eth0")
    return host


def sel(host, **kw):
    args = {"ifaces": [], "iface_regex": [], "iface_can_reach": "", "public_ip": "", "public_ipv6": "",
            "enable_ipv4": True, "enable_ipv6": True}
    args.update(kw)
    with entered(host.netns_path):
        return select_interface(**args)


class Node:
    """One dual-stack node: the host, its backend (vxlan or host-gw) and its lease."""

    def __init__(self, host, n: int, kind: str = "vxlan", backend_cfg: dict | None = None,
                 state_dir: str | None = None) -> None:
        self.host, self.n, self.kind = host, n, kind
        cls = VXLANBackend if kind == "vxlan" else HostGWBackend
        with entered(host.netns_path):
            self.ext = select_interface(ifaces=["eth0"], iface_regex=[], iface_can_reach="", public_ip="",
                                        public_ipv6="", enable_ipv4=True, enable_ipv6=True)
            self.backend = cls(self.ext, netconf(), backend_cfg or {"Type": kind}, state_dir or host.dir)
        self.published: LeaseAttrs | None = None

        def acquire(attrs: LeaseAttrs) -> Lease:
            self.published = attrs
            return Lease(subnet=ipaddress.ip_network(sub4(n)), ipv6_subnet=ipaddress.ip_network(sub6(n)),
                         attrs=attrs)

        self.lease = self.backend.register_network(acquire)

    @property
    def mac(self) -> str:
        return self.lease.attrs.backend_data["VtepMAC"]

    @property
    def mac6(self) -> str:
        return self.lease.attrs.backend_v6_data["VtepMAC"]

    def run(self, *cmd: str, check: bool = True):
        return self.host.ns.run(*cmd, check=check)

    def json(self, *cmd: str):
        return self.host.ns.json(*cmd)

    def link(self, name: str) -> dict:
        return self.json("ip", "-j", "-d", "link", "show", name)[0]

    def neighs(self, dev: str, family: str = "-4") -> list[dict]:
        return sorted(({k: n[k] for k in ("dst", "lladdr", "state")}
                       for n in self.json("ip", "-j", family, "neigh", "show", "dev", dev)
                       if "PERMANENT" in n.get("state", [])), key=lambda n: n["dst"])

    def fdb(self, dev: str) -> list[dict]:
        return sorted(({k: f.get(k) for k in ("mac", "dst", "flags", "state")}
                       for f in self.json("bridge", "-j", "fdb", "show", "dev", dev) if f.get("dst")),
                      key=lambda f: f["mac"])

    def net_routes(self, family: str = "-4") -> list[dict]:
        """Main-table routes inside the family's Network, but the pod bridge's and the kernel's (the
        /128 of the device's own address), as ip shows them."""
        net = ipaddress.ip_network(NETWORK if family == "-4" else NETWORK6)
        out = []
        for r in self.json("ip", "-j", family, "route", "show", "table", "main"):
            if r["dst"] in ("default", "multicast") or r.get("dev") == "cni0" or r.get("protocol") == "kernel":
                continue
            dst = ipaddress.ip_network(r["dst"], strict=False)
            if dst.version == net.version and dst.subnet_of(net) and dst.prefixlen > net.prefixlen:
                out.append({k: r[k] for k in ("dst", "gateway", "dev", "flags") if k in r and r[k] != []})
        return sorted(out, key=lambda r: r["dst"])

    def state4(self) -> tuple:
        """Everything v4 the backend owns, to show that v6 work leaves it alone."""
        if self.kind == "hostgw":
            return (self.net_routes("-4"),)
        return (self.link("flannel.1")["ifindex"], self.neighs("flannel.1"), self.fdb("flannel.1"),
                self.net_routes("-4"), self.addrs("flannel.1", "-4"))

    def addrs(self, dev: str, family: str) -> list[tuple[str, int]]:
        info = self.json("ip", "-j", family, "addr", "show", "dev", dev)
        return [(a["local"], a["prefixlen"]) for a in (info[0]["addr_info"] if info else [])
                if a.get("scope") != "link"]

    def add_pod(self, make_netns):
        """A pod netns on a bridge cni0 holding <subnet>.1 and <v6 subnet>::1; the pod has .2 and ::2."""
        pod = make_netns("flpod")
        base, base6 = f"10.42.{self.n}", net6(self.n)
        self.run("ip", "link", "add", "cni0", "type", "bridge")
        self.run("ip", "addr", "add", f"{base}.1/24", "dev", "cni0")
        self.run("ip", "-6", "addr", "add", f"{base6}1/64", "dev", "cni0", "nodad")
        self.run("ip", "link", "set", "cni0", "up")
        self.run("ip", "link", "add", "vethpod", "type", "veth", "peer", "name", "eth0", "netns", pod.name)
        self.run("ip", "link", "set", "vethpod", "master", "cni0", "up")
        pod.run("sysctl", "-qw", "net.ipv6.conf.all.disable_ipv6=0")
        pod.run("ip", "addr", "add", f"{base}.2/24", "dev", "eth0")
        pod.run("ip", "-6", "addr", "add", f"{base6}2/64", "dev", "eth0", "nodad")
        pod.run("ip", "link", "set", "eth0", "up")
        pod.run("ip", "link", "set", "lo", "up")
        pod.run("ip", "route", "add", "default", "via", f"{base}.1")
        pod.run("ip", "-6", "route", "add", "default", "via", f"{base6}1")
        return pod


def peer(node: Node, mac: str | None = None, mac6: str | None = None, public6: str | None = None) -> Lease:
    attrs = LeaseAttrs(public_ip=ipaddress.ip_address(node.host.ip),
                       public_ipv6=ipaddress.ip_address(public6 or node.host.ip6), backend_type=node.backend.type_name)
    if node.kind == "vxlan":
        attrs.backend_data = {"VNI": 1, "VtepMAC": mac or node.mac}
        attrs.backend_v6_data = {"VNI": 1, "VtepMAC": mac6 or node.mac6}
    return Lease(subnet=ipaddress.ip_network(sub4(node.n)), ipv6_subnet=ipaddress.ip_network(sub6(node.n)),
                 attrs=attrs)


def fake_peer(n: int, public: str, public6: str, mac: str, mac6: str, btype: str = "vxlan") -> Lease:
    attrs = LeaseAttrs(public_ip=ipaddress.ip_address(public), public_ipv6=ipaddress.ip_address(public6),
                       backend_type=btype)
    if btype == "vxlan":
        attrs.backend_data = {"VNI": 1, "VtepMAC": mac}
        attrs.backend_v6_data = {"VNI": 1, "VtepMAC": mac6}
    return Lease(subnet=ipaddress.ip_network(sub4(n)), ipv6_subnet=ipaddress.ip_network(sub6(n)), attrs=attrs)


@pytest.fixture
def nodes(lab6):
    made: list[Node] = []

    def make(n: int, host=None, **kw) -> Node:
        node = Node(host or add_host6(lab6, f"node{n}"), n, **kw)
        made.append(node)
        return node

    yield make
    for node in made:
        node.backend.close()


def ping6(ns_run, target: str, src: str | None = None):
    cmd = ["ping", "-6", "-c", "2", "-W", "2", "-i", "0.3"]
    if src:
        cmd += ["-I", src]
    return ns_run(*cmd, target, check=False)


def ping4(ns_run, target: str):
    return ns_run("ping", "-c", "2", "-W", "2", "-i", "0.3", target, check=False)


def vxlan6_objects(p: Node) -> tuple[dict, dict, dict]:
    gw = net6(p.n)
    return ({"dst": gw, "lladdr": p.mac6, "state": ["PERMANENT"]},
            {"mac": p.mac6, "dst": p.host.ip6, "flags": ["self"], "state": "permanent"},
            {"dst": sub6(p.n), "gateway": gw, "dev": "flannel-v6.1", "flags": ["onlink"]})


def vxlan4_objects(p: Node) -> tuple[dict, dict, dict]:
    gw = f"10.42.{p.n}.0"
    return ({"dst": gw, "lladdr": p.mac, "state": ["PERMANENT"]},
            {"mac": p.mac, "dst": p.host.ip, "flags": ["self"], "state": "permanent"},
            {"dst": sub4(p.n), "gateway": gw, "dev": "flannel.1", "flags": ["onlink"]})


def by_mac(entries: list[dict]) -> list[dict]:
    return sorted(entries, key=lambda f: f["mac"])


# -- vxlan: the two devices -----------------------------------------------------------------------
def test_vxlan_v6_device_attributes_field_by_field(nodes):
    node = nodes(1)
    v4, v6 = node.link("flannel.1"), node.link("flannel-v6.1")
    i4, i6 = v4["linkinfo"]["info_data"], v6["linkinfo"]["info_data"]
    assert v6["linkinfo"]["info_kind"] == "vxlan"
    assert (i6["id"], i6["port"], i6["link"], i6["learning"], i6["ttl"]) == (1, 8472, "eth0", False, 0)
    assert i6["local6"] == node.host.ip6 and "local" not in i6
    assert i4["local"] == node.host.ip and "local6" not in i4
    assert i6.get("udp_zero_csum6_tx", False) is False and i6.get("udp_zero_csum6_rx", False) is False
    assert "gbp" not in i6 or i6["gbp"] is False
    assert (v4["mtu"], v6["mtu"]) == (1450, 1430)  # ⚠ §7.2: v6 needs 70 bytes, not 50
    assert node.backend.mtu() == 1430  # FLANNEL_MTU fits both families
    assert "txqlen" not in v6 and "txqlen" not in v4
    assert "UP" in v6["flags"]
    # one MAC per family, each published, on its device and persisted in its own file
    assert v6["address"] == node.mac6 and v4["address"] == node.mac and node.mac6 != node.mac
    first = int(node.mac6.split(":")[0], 16)
    assert first & 0x02 and not first & 0x01
    for dev, mac in (("flannel.1", node.mac), ("flannel-v6.1", node.mac6)):
        path = os.path.join(node.host.dir, f"{dev}.mac")
        assert open(path).read().strip() == mac
        assert os.stat(path).st_mode & 0o777 == 0o644
    assert node.run("cat", "/proc/sys/net/ipv6/conf/flannel-v6.1/accept_ra").stdout.strip() == "0"
    # the network addresses: v4 /32, v6 /128 (plus only the kernel's link-local)
    assert node.addrs("flannel.1", "-4") == [("10.42.1.0", 32)]
    assert node.addrs("flannel-v6.1", "-6") == [(net6(1), 128)]
    assert node.addrs("flannel.1", "-6") == []
    attrs = node.published
    assert (attrs.backend_type, str(attrs.public_ip), str(attrs.public_ipv6)) == ("vxlan", node.host.ip,
                                                                                   node.host.ip6)
    assert attrs.backend_data == {"VNI": 1, "VtepMAC": node.mac}
    assert attrs.backend_v6_data == {"VNI": 1, "VtepMAC": node.mac6}


def test_vxlan_v6_mac_persisted_per_family_and_reused(nodes):
    node = nodes(1)
    mac4, mac6 = node.mac, node.mac6
    idx6 = node.link("flannel-v6.1")["ifindex"]
    node.backend.close()
    again = nodes(1, host=node.host)
    assert (again.mac, again.mac6) == (mac4, mac6)
    assert again.link("flannel-v6.1")["ifindex"] == idx6  # adopted, not recreated
    # only the v6 file lost: v6 takes the existing device's MAC, v4 keeps its file
    os.unlink(os.path.join(node.host.dir, "flannel-v6.1.mac"))
    again.backend.close()
    third = nodes(1, host=node.host)
    assert (third.mac, third.mac6) == (mac4, mac6)
    assert open(os.path.join(node.host.dir, "flannel-v6.1.mac")).read().strip() == mac6


def test_vxlan_stray_v6_addresses_on_the_device_are_removed(nodes, lab6):
    host = add_host6(lab6, "node1")
    first = nodes(1, host=host)
    first.run("ip", "-6", "addr", "add", "fd42:0:0:9::/128", "dev", "flannel-v6.1", "nodad")
    first.run("ip", "-6", "addr", "add", "2001:db8::1/64", "dev", "flannel-v6.1", "nodad")
    first.run("ip", "addr", "add", "10.99.0.1/32", "dev", "flannel.1")  # v4 outside Network: kept
    first.backend.close()
    again = nodes(1, host=host)
    assert again.addrs("flannel-v6.1", "-6") == [(net6(1), 128)]
    assert sorted(again.addrs("flannel.1", "-4")) == [("10.42.1.0", 32), ("10.99.0.1", 32)]


# -- vxlan: peers ---------------------------------------------------------------------------------
def test_vxlan_v6_peer_objects_exactly_and_traffic(nodes, make_netns):
    n1, n2, n3 = nodes(1), nodes(2), nodes(3)
    for node in (n1, n2, n3):
        report = node.backend.reconcile([peer(p) for p in (n1, n2, n3) if p is not node])
        assert report.clean, report.errors
        assert report.programmed == {f"10.42.{p.n}.0-24&{net6(p.n)}-64" for p in (n1, n2, n3) if p is not node}
    arp2, fdb2, route2 = vxlan6_objects(n2)
    arp3, fdb3, route3 = vxlan6_objects(n3)
    assert n1.neighs("flannel-v6.1", "-6") == [arp2, arp3]
    assert n1.fdb("flannel-v6.1") == by_mac([fdb2, fdb3])
    assert n1.net_routes("-6") == [route2, route3]  # none for the own subnet, none for the Network
    raw = next(r for r in n1.json("ip", "-j", "-6", "route", "show", "table", "main") if r["dst"] == sub6(2))
    assert raw.get("protocol", "boot") == "boot"
    # the v4 side is complete too, and the two families do not mix
    a4, f4, r4 = vxlan4_objects(n2)
    assert a4 in n1.neighs("flannel.1") and f4 in n1.fdb("flannel.1") and r4 in n1.net_routes("-4")
    assert n1.neighs("flannel.1", "-6") == [] and n1.neighs("flannel-v6.1", "-4") == []
    assert all(f["dst"].count(":") == 0 for f in n1.fdb("flannel.1"))
    # a second pass changes nothing (in either family)
    again = n1.backend.reconcile([peer(n2), peer(n3)])
    assert (again.added, again.changed, again.removed, again.errors) == ([], [], [], [])
    # real traffic, pod to pod both ways over v6 and v4, and TCP over v6
    pod1, pod2 = n1.add_pod(make_netns), n2.add_pod(make_netns)
    assert ping6(pod1.run, f"{net6(2)}2").returncode == 0
    assert ping6(pod2.run, f"{net6(1)}2").returncode == 0
    assert ping4(pod1.run, "10.42.2.2").returncode == 0
    with server(pod2.name, 7306, "hello6", "tcp6"):
        assert request(pod1.name, f"{net6(2)}2", 7306) == f"hello6 {net6(1)}2"
    # the underlay carried it as vxlan over v6 (the pods' packets never appear on eth0 bare)
    assert ping6(n1.run, f"{net6(2)}1", src=f"{net6(1)}1").returncode == 0


def test_vxlan_v6_only_mac_change_replaces_only_v6(nodes):
    n1, n2 = nodes(1), nodes(2)
    n1.backend.reconcile([peer(n2)])
    before4 = n1.state4()
    report = n1.backend.reconcile([peer(n2, mac6="0a:00:00:00:06:99")])
    assert report.clean, report.errors
    gw = net6(2)
    assert n1.neighs("flannel-v6.1", "-6") == [{"dst": gw, "lladdr": "0a:00:00:00:06:99", "state": ["PERMANENT"]}]
    assert n1.fdb("flannel-v6.1") == [{"mac": "0a:00:00:00:06:99", "dst": n2.host.ip6, "flags": ["self"],
                                       "state": "permanent"}]  # the old v6 MAC's entry is gone (⚠ #1036)
    assert sorted(report.removed) == [f"fdb {n2.mac6} dev flannel-v6.1 dst {n2.host.ip6} self permanent"]
    assert n1.state4() == before4
    _a, _f, route = vxlan6_objects(n2)
    assert n1.net_routes("-6") == [route]


def test_vxlan_v6_public_ip_change_rewrites_the_fdb_remote(nodes):
    n1, n2 = nodes(1), nodes(2)
    n1.backend.reconcile([peer(n2)])
    before4 = n1.state4()
    report = n1.backend.reconcile([peer(n2, public6="fd77::99")])
    assert report.clean, report.errors
    assert n1.fdb("flannel-v6.1") == [{"mac": n2.mac6, "dst": "fd77::99", "flags": ["self"], "state": "permanent"}]
    assert n1.state4() == before4


def test_vxlan_v6_stale_objects_removed(nodes, lab6):
    host = add_host6(lab6, "node1")
    first = nodes(1, host=host)
    n2 = nodes(2)
    gone = fake_peer(7, "192.168.77.77", "fd77::77", "0a:00:00:00:00:07", "0a:00:00:00:06:07")
    first.backend.reconcile([peer(n2), gone])
    assert len(first.net_routes("-6")) == 2 and len(first.fdb("flannel-v6.1")) == 2
    first.backend.close()
    # restarted while peer 7 left: its v4 and v6 objects go, node2's stay
    again = nodes(1, host=host)
    report = again.backend.reconcile([peer(n2)])
    assert report.clean, report.errors
    assert sorted(x for x in report.removed if "flannel-v6" in x) == sorted([
        f"route {sub6(7)} via {net6(7)} dev flannel-v6.1 onlink",
        f"neighbour {net6(7)} lladdr 0a:00:00:00:06:07 dev flannel-v6.1 nud permanent",
        "fdb 0a:00:00:00:06:07 dev flannel-v6.1 dst fd77::77 self permanent"])
    assert len(report.removed) == 6
    arp, fdb, route = vxlan6_objects(n2)
    assert again.neighs("flannel-v6.1", "-6") == [arp] and again.fdb("flannel-v6.1") == [fdb]
    assert again.net_routes("-6") == [route]


def test_vxlan_v6_peer_removed_takes_only_its_v6_objects_and_unrelated_v6_state_survives(nodes):
    n1, n2, n3 = nodes(1), nodes(2), nodes(3)
    # unrelated v6 state: a route outside IPv6Network, a static one inside it, a permanent
    # neighbour on eth0, and the own subnet's route on the bridge
    n1.run("ip", "-6", "route", "add", "fd99::/64", "via", SWITCH6)
    n1.run("ip", "-6", "route", "add", "fd42:0:0:c8::/64", "via", SWITCH6, "proto", "static")
    n1.run("ip", "-6", "neigh", "add", "fd77::c8", "lladdr", "0a:00:00:00:00:c8", "dev", "eth0", "nud", "permanent")
    n1.run("ip", "link", "add", "cni0", "type", "bridge")
    n1.run("ip", "-6", "addr", "add", f"{net6(1)}1/64", "dev", "cni0", "nodad")
    n1.run("ip", "link", "set", "cni0", "up")
    n1.backend.reconcile([peer(n2), peer(n3)])
    report = n1.backend.reconcile([peer(n2)])
    assert report.clean, report.errors
    assert len(report.removed) == 6  # three per family
    arp, fdb, route = vxlan6_objects(n2)
    assert n1.neighs("flannel-v6.1", "-6") == [arp] and n1.fdb("flannel-v6.1") == [fdb]
    assert n1.net_routes("-6") == [route, {"dst": "fd42:0:0:c8::/64", "gateway": SWITCH6, "dev": "eth0"}]
    routes = {r["dst"]: r for r in n1.json("ip", "-j", "-6", "route", "show", "table", "main")}
    assert "fd99::/64" in routes and "fd42:0:0:c8::/64" in routes and routes[sub6(1)]["dev"] == "cni0"
    assert sub6(3) not in routes
    eth0 = n1.json("ip", "-j", "-6", "neigh", "show", "dev", "eth0")
    assert any(n["dst"] == "fd77::c8" and n["state"] == ["PERMANENT"] for n in eth0)


def test_vxlan_v6_device_deleted_is_recreated_with_its_peers(nodes, make_netns):
    n1, n2, n3 = nodes(1), nodes(2), nodes(3)
    peers = [peer(n2), peer(n3)]
    n1.backend.reconcile(peers)
    n2.backend.reconcile([peer(n1), peer(n3)])
    pod1, _pod2 = n1.add_pod(make_netns), n2.add_pod(make_netns)
    before4 = n1.state4()
    mac6, index = n1.mac6, n1.link("flannel-v6.1")["ifindex"]
    n1.run("ip", "link", "del", "flannel-v6.1")
    report = n1.backend.reconcile(peers)
    assert report.device_recreated and report.clean, report.errors
    link = n1.link("flannel-v6.1")
    assert link["ifindex"] != index and link["address"] == mac6 and "UP" in link["flags"]
    assert link["mtu"] == 1430 and link["linkinfo"]["info_data"]["local6"] == n1.host.ip6
    assert n1.addrs("flannel-v6.1", "-6") == [(net6(1), 128)]
    arp2, fdb2, route2 = vxlan6_objects(n2)
    arp3, fdb3, route3 = vxlan6_objects(n3)
    assert n1.neighs("flannel-v6.1", "-6") == [arp2, arp3]
    assert n1.fdb("flannel-v6.1") == by_mac([fdb2, fdb3])
    assert n1.net_routes("-6") == [route2, route3]
    assert n1.state4() == before4  # flannel.1 and its peers untouched
    assert ping6(pod1.run, f"{net6(2)}2").returncode == 0
    assert not n1.backend.reconcile(peers).device_recreated


def test_vxlan_v6_hand_deleted_objects_come_back(nodes):
    n1, n2 = nodes(1), nodes(2)
    peers = [peer(n2)]
    n1.backend.reconcile(peers)
    before4 = n1.state4()
    n1.run("ip", "-6", "route", "del", sub6(2))
    n1.run("ip", "-6", "neigh", "del", net6(2), "dev", "flannel-v6.1")
    n1.run("bridge", "fdb", "del", n2.mac6, "dev", "flannel-v6.1", "dst", n2.host.ip6, "self")
    assert n1.net_routes("-6") == [] and n1.fdb("flannel-v6.1") == []
    report = n1.backend.reconcile(peers)
    assert report.clean and len(report.added) == 3, report
    arp, fdb, route = vxlan6_objects(n2)
    assert n1.neighs("flannel-v6.1", "-6") == [arp] and n1.fdb("flannel-v6.1") == [fdb]
    assert n1.net_routes("-6") == [route] and n1.state4() == before4


# -- vxlan: DirectRouting over v6 -----------------------------------------------------------------
def test_vxlan_v6_direct_routing_on_segment_vxlan_off_segment(nodes, make_netns):
    cfg = {"Type": "vxlan", "DirectRouting": True}
    n1, n2 = nodes(1, backend_cfg=cfg), nodes(2, backend_cfg=cfg)
    off = fake_peer(9, "10.77.0.9", "fd78::9", "0a:00:00:00:00:09", "0a:00:00:00:06:09")  # behind the switch
    report = n1.backend.reconcile([peer(n2), off])
    assert report.clean, report.errors
    assert n1.net_routes("-6") == [
        {"dst": sub6(2), "gateway": n2.host.ip6, "dev": "eth0"},
        {"dst": sub6(9), "gateway": net6(9), "dev": "flannel-v6.1", "flags": ["onlink"]}]
    assert n1.neighs("flannel-v6.1", "-6") == [{"dst": net6(9), "lladdr": "0a:00:00:00:06:09",
                                                "state": ["PERMANENT"]}]
    assert n1.fdb("flannel-v6.1") == [{"mac": "0a:00:00:00:06:09", "dst": "fd78::9", "flags": ["self"],
                                       "state": "permanent"}]
    assert {"dst": sub4(2), "gateway": n2.host.ip, "dev": "eth0"} in n1.net_routes("-4")
    again = n1.backend.reconcile([peer(n2), off])
    assert (again.added, again.changed, again.removed, again.errors) == ([], [], [], [])
    n2.backend.reconcile([peer(n1)])
    pod1, pod2 = n1.add_pod(make_netns), n2.add_pod(make_netns)
    assert ping6(pod1.run, f"{net6(2)}2").returncode == 0 and ping6(pod2.run, f"{net6(1)}2").returncode == 0
    with server(pod1.name, 7307, "direct6", "tcp6"):
        assert request(pod2.name, f"{net6(1)}2", 7307) == f"direct6 {net6(2)}2"


def test_vxlan_v6_peer_turning_direct_and_back(nodes):
    n1, n2 = nodes(1), nodes(2)
    n1.backend.reconcile([peer(n2)])
    n1.backend.cfg.direct_routing = True  # as after a restart with DirectRouting on
    report = n1.backend.reconcile([peer(n2)])
    assert report.clean, report.errors
    assert n1.neighs("flannel-v6.1", "-6") == [] and n1.fdb("flannel-v6.1") == []  # ⚠ the reference leaves them
    assert n1.net_routes("-6") == [{"dst": sub6(2), "gateway": n2.host.ip6, "dev": "eth0"}]
    n1.backend.cfg.direct_routing = False
    report = n1.backend.reconcile([peer(n2)])
    assert report.clean, report.errors
    arp, fdb, route = vxlan6_objects(n2)
    assert n1.neighs("flannel-v6.1", "-6") == [arp] and n1.fdb("flannel-v6.1") == [fdb]
    assert n1.net_routes("-6") == [route]


# -- host-gw dual-stack ---------------------------------------------------------------------------
def test_hostgw_v6_route_per_peer_and_traffic(nodes, make_netns):
    n1, n2, n3 = nodes(1, kind="hostgw"), nodes(2, kind="hostgw"), nodes(3, kind="hostgw")
    assert n1.published.backend_type == "host-gw" and n1.published.backend_data is None
    assert n1.published.backend_v6_data is None
    assert (str(n1.published.public_ip), str(n1.published.public_ipv6)) == (n1.host.ip, n1.host.ip6)
    assert n1.backend.mtu() == 1500
    for node in (n1, n2, n3):
        report = node.backend.reconcile([peer(p) for p in (n1, n2, n3) if p is not node])
        assert report.clean, report.errors
        assert report.programmed == {f"10.42.{p.n}.0-24&{net6(p.n)}-64" for p in (n1, n2, n3) if p is not node}
    assert n1.net_routes("-6") == [{"dst": sub6(2), "gateway": n2.host.ip6, "dev": "eth0"},
                                   {"dst": sub6(3), "gateway": n3.host.ip6, "dev": "eth0"}]
    assert n1.net_routes("-4") == [{"dst": sub4(2), "gateway": n2.host.ip, "dev": "eth0"},
                                   {"dst": sub4(3), "gateway": n3.host.ip, "dev": "eth0"}]
    raw = next(r for r in n1.json("ip", "-j", "-6", "route", "show", "table", "main") if r["dst"] == sub6(2))
    assert raw.get("protocol", "boot") == "boot"
    again = n1.backend.reconcile([peer(n2), peer(n3)])
    assert (again.added, again.changed, again.removed, again.errors) == ([], [], [], [])
    pod1, pod2 = n1.add_pod(make_netns), n2.add_pod(make_netns)
    assert ping6(pod1.run, f"{net6(2)}2").returncode == 0 and ping6(pod2.run, f"{net6(1)}2").returncode == 0
    assert ping4(pod1.run, "10.42.2.2").returncode == 0
    with server(pod2.name, 7308, "hostgw6", "tcp6"):
        assert request(pod1.name, f"{net6(2)}2", 7308) == f"hostgw6 {net6(1)}2"


def test_hostgw_v6_stale_removed_and_unrelated_kept(nodes, lab6):
    host = add_host6(lab6, "node1")
    first = nodes(1, host=host, kind="hostgw")
    n2 = nodes(2, kind="hostgw")
    gone = fake_peer(7, "192.168.77.77", "fd77::77", "", "", btype="host-gw")
    first.backend.reconcile([peer(n2), gone])
    first.run("ip", "-6", "route", "add", "fd42:0:0:c8::/64", "via", SWITCH6, "proto", "static")
    first.backend.close()
    again = nodes(1, host=host, kind="hostgw")
    report = again.backend.reconcile([peer(n2)])
    assert report.clean, report.errors
    assert sorted(report.removed) == sorted([f"route {sub6(7)} via fd77::77 dev eth0",
                                             f"route {sub4(7)} via 192.168.77.77 dev eth0"])
    assert again.net_routes("-6") == [{"dst": sub6(2), "gateway": n2.host.ip6, "dev": "eth0"},
                                      {"dst": "fd42:0:0:c8::/64", "gateway": SWITCH6, "dev": "eth0"}]


def test_hostgw_v6_replacement_of_a_changed_or_foreign_route(nodes, make_netns, caplog):
    n1, n2 = nodes(1, kind="hostgw"), nodes(2, kind="hostgw")
    n1.backend.reconcile([peer(n2)])
    before4 = n1.state4()
    # the peer's PublicIPv6 changes: the route is replaced, not doubled, not lost
    n2.run("ip", "-6", "addr", "add", "fd77::42/64", "dev", "eth0", "nodad")
    report = n1.backend.reconcile([peer(n2, public6="fd77::42")])
    assert report.clean, report.errors
    assert n1.net_routes("-6") == [{"dst": sub6(2), "gateway": "fd77::42", "dev": "eth0"}]
    assert report.removed == []
    assert n1.state4() == before4
    # a foreign route with our dst (another gateway) is replaced by ours
    caplog.set_level(logging.WARNING)
    n1.run("ip", "-6", "route", "replace", sub6(2), "via", SWITCH6, "dev", "eth0")
    report = n1.backend.reconcile([peer(n2, public6="fd77::42")])
    assert report.clean, report.errors
    assert n1.net_routes("-6") == [{"dst": sub6(2), "gateway": "fd77::42", "dev": "eth0"}]
    assert "Replacing existing route to" in caplog.text
    # a route deleted by hand comes back
    n1.run("ip", "-6", "route", "del", sub6(2))
    report = n1.backend.reconcile([peer(n2, public6="fd77::42")])
    assert report.clean and n1.net_routes("-6") == [{"dst": sub6(2), "gateway": "fd77::42", "dev": "eth0"}]
    n2.backend.reconcile([peer(n1)])
    pod1, pod2 = n1.add_pod(make_netns), n2.add_pod(make_netns)
    assert ping6(pod1.run, f"{net6(2)}2").returncode == 0  # over the replaced route
    assert ping6(pod2.run, f"{net6(1)}2").returncode == 0
    assert n1.state4() == before4


def test_hostgw_v6_refuses_nat_public_ipv6(lab6):
    from cni_flannel.flanneld.backend.base import BackendError
    from cni_flannel.flanneld.backend.hostgw import NAT_MESSAGE

    host = add_host6(lab6, "node1")
    ext = sel(host, public_ipv6="2001:db8::7")
    assert (str(ext.iface_addr6), str(ext.ext_addr6)) == (host.ip6, "2001:db8::7")
    with entered(host.netns_path), pytest.raises(BackendError) as err:
        HostGWBackend(ext, netconf(), {"Type": "host-gw"}, host.dir)
    assert str(err.value) == NAT_MESSAGE


# -- interface selection dual-stack ---------------------------------------------------------------
@pytest.fixture
def host6(lab6):
    h = add_host6(lab6, "node1")
    ns = h.ns
    ns.run("ip", "link", "add", "eth1", "mtu", "1400", "type", "veth", "peer", "name", "eth1p", "mtu", "1400")
    ns.run("ip", "addr", "add", "10.20.0.5/24", "dev", "eth1")
    ns.run("ip", "-6", "addr", "add", "fd20::5/64", "dev", "eth1", "nodad")
    ns.run("ip", "link", "set", "eth1", "up")
    ns.run("ip", "link", "set", "eth1p", "up")
    return h


def test_iface_dual_stack_default_routes_on_one_interface(host6, caplog):
    caplog.set_level(logging.INFO)
    ext = sel(host6)
    assert (ext.name, str(ext.iface_addr), str(ext.iface_addr6), str(ext.ext_addr), str(ext.ext_addr6)) == \
        ("eth0", host6.ip, host6.ip6, host6.ip, host6.ip6)
    assert f"Using interface with name eth0 and v6 address {host6.ip6}" in caplog.text
    assert f"Defaulting external v6 address to interface address ({host6.ip6})" in caplog.text


def test_iface_dual_stack_default_route_mismatch_and_missing(host6):
    host6.ns.run("ip", "-6", "route", "replace", "default", "via", "fd20::1", "dev", "eth1")
    with pytest.raises(IfaceError) as err:
        sel(host6)
    assert str(err.value) == ("Failed to find any valid interface to use: v6 default route interface eth1 must be "
                              "the same with v4 default route interface eth0")
    host6.ns.run("ip", "-6", "route", "del", "default")
    with pytest.raises(IfaceError) as err:
        sel(host6)
    assert str(err.value) == ("Failed to find any valid interface to use: failed to get default v6 interface: "
                              "unable to find default v6 route")


def test_iface_public_ipv6_with_iface_ip(host6, caplog):
    caplog.set_level(logging.INFO)
    # --iface <v4 IP> with --public-ipv6 on the same interface: both taken as given
    ext = sel(host6, ifaces=["10.20.0.5"], public_ipv6="fd20::5")
    assert (ext.name, str(ext.iface_addr), str(ext.iface_addr6), str(ext.ext_addr6)) == \
        ("eth1", "10.20.0.5", "fd20::5", "fd20::5")
    assert "Using fd20::5 as external address" in caplog.text
    # on different interfaces: the reference's message, then no interface left
    caplog.clear()
    with pytest.raises(IfaceError) as err:
        sel(host6, ifaces=["10.20.0.5"], public_ipv6=host6.ip6)
    assert str(err.value) == "Failed to find interface to use that matches the interfaces and/or regexes provided"
    assert ("Could not find valid interface matching 10.20.0.5: v6 interface eth0 must be the same with v4 "
            "interface eth1") in caplog.text
    # --iface by name with a --public-ipv6: the name picks the interface, its v6 stays the local one
    ext = sel(host6, ifaces=["eth1"], public_ipv6="2001:db8::9")
    assert (ext.name, str(ext.iface_addr6), str(ext.ext_addr6)) == ("eth1", "fd20::5", "2001:db8::9")


def test_iface_public_ipv6_alone_picks_its_interface(host6):
    # --public-ipv6 alone, local: dual-stack needs the v4 on the same interface
    ext = sel(host6, public_ipv6="fd20::5")
    assert (ext.name, str(ext.iface_addr), str(ext.iface_addr6), str(ext.ext_addr6)) == \
        ("eth1", "10.20.0.5", "fd20::5", "fd20::5")


def test_iface_v6_only_stack(host6):
    ext = sel(host6, enable_ipv4=False)
    assert (ext.name, ext.iface_addr, ext.ext_addr, str(ext.iface_addr6)) == ("eth0", None, None, host6.ip6)
    ext = sel(host6, enable_ipv4=False, ifaces=["fd20::5"])
    assert (ext.name, str(ext.iface_addr6)) == ("eth1", "fd20::5")


def test_iface_regex_dual_stack_needs_both_on_one_interface(host6):
    ext = sel(host6, iface_regex=[r"^(10\.20\.0\.5|fd20::5)$"])
    assert (ext.name, str(ext.iface_addr), str(ext.iface_addr6)) == ("eth1", "10.20.0.5", "fd20::5")
    # a v4 hit on eth1 and a v6 hit on eth0: no IP match; the names do not match either
    with pytest.raises(IfaceError):
        sel(host6, iface_regex=[rf"^(10\.20\.0\.5|{host6.ip6})$"])


# -- single-family peers in a dual-stack network ----------------------------------------------------
def single_family_peers(btype: str) -> tuple[Lease, Lease]:
    """A v4-only peer (a node without IPv6) and a v6-only peer (Go's key: 0.0.0.0-0&<v6>)."""
    v4only = Lease(subnet=ipaddress.ip_network(sub4(5)), ipv6_subnet=None,
                   attrs=LeaseAttrs(public_ip=ipaddress.ip_address("192.168.77.55"), backend_type=btype))
    v6only = Lease(subnet=None, ipv6_subnet=ipaddress.ip_network(sub6(6)),
                   attrs=LeaseAttrs(public_ipv6=ipaddress.ip_address("fd77::66"), backend_type=btype))
    if btype == "vxlan":
        v4only.attrs.backend_data = {"VNI": 1, "VtepMAC": "0a:00:00:00:00:05"}
        v6only.attrs.backend_v6_data = {"VNI": 1, "VtepMAC": "0a:00:00:00:06:06"}
    return v4only, v6only


def test_vxlan_single_family_peers_are_programmed_in_their_family(nodes):
    n1 = nodes(1)
    v4only, v6only = single_family_peers("vxlan")
    report = n1.backend.reconcile([v4only, v6only])
    assert report.clean, report.errors
    assert report.programmed == {"10.42.5.0-24", f"0.0.0.0-0&{net6(6)}-64"}  # readiness counts both
    assert n1.net_routes("-4") == [{"dst": sub4(5), "gateway": "10.42.5.0", "dev": "flannel.1", "flags": ["onlink"]}]
    assert n1.net_routes("-6") == [{"dst": sub6(6), "gateway": net6(6), "dev": "flannel-v6.1", "flags": ["onlink"]}]
    assert n1.fdb("flannel.1") == [{"mac": "0a:00:00:00:00:05", "dst": "192.168.77.55", "flags": ["self"],
                                    "state": "permanent"}]
    assert n1.fdb("flannel-v6.1") == [{"mac": "0a:00:00:00:06:06", "dst": "fd77::66", "flags": ["self"],
                                       "state": "permanent"}]
    # a v6 lease without PublicIPv6 is an error for that peer, and it is not programmed
    broken = Lease(subnet=ipaddress.ip_network(sub4(8)), ipv6_subnet=ipaddress.ip_network(sub6(8)),
                   attrs=LeaseAttrs(public_ip=ipaddress.ip_address("192.168.77.88"), backend_type="vxlan",
                                    backend_data={"VNI": 1, "VtepMAC": "0a:00:00:00:00:08"},
                                    backend_v6_data={"VNI": 1, "VtepMAC": "0a:00:00:00:06:08"}))
    report = n1.backend.reconcile([v4only, v6only, broken])
    assert report.errors == [f"peer 10.42.8.0-24&{net6(8)}-64: the lease has no PublicIPv6"]
    assert f"10.42.8.0-24&{net6(8)}-64" not in report.programmed


def test_hostgw_single_family_peers_are_programmed_in_their_family(nodes):
    n1 = nodes(1, kind="hostgw")
    v4only, v6only = single_family_peers("host-gw")
    report = n1.backend.reconcile([v4only, v6only])
    assert report.clean, report.errors
    assert report.programmed == {"10.42.5.0-24", f"0.0.0.0-0&{net6(6)}-64"}
    assert n1.net_routes("-4") == [{"dst": sub4(5), "gateway": "192.168.77.55", "dev": "eth0"}]
    assert n1.net_routes("-6") == [{"dst": sub6(6), "gateway": "fd77::66", "dev": "eth0"}]


# -- the v6 device flapping and the kernel watch ----------------------------------------------------
def test_vxlan_v6_link_flap_loses_the_address_and_it_comes_back(nodes):
    n1, n2 = nodes(1), nodes(2)
    peers = [peer(n2)]
    n1.backend.reconcile(peers)
    before4 = n1.state4()
    # unlike v4, a v6 link down drops the device's addresses too (keep_addr_on_down=0)
    n1.run("ip", "link", "set", "flannel-v6.1", "down")
    n1.run("ip", "link", "set", "flannel-v6.1", "up")
    assert n1.addrs("flannel-v6.1", "-6") == [] and n1.net_routes("-6") == []
    report = n1.backend.reconcile(peers)
    assert report.clean, report.errors
    assert f"address {net6(1)}/128 dev flannel-v6.1" in report.added
    assert n1.addrs("flannel-v6.1", "-6") == [(net6(1), 128)]
    arp, fdb, route = vxlan6_objects(n2)
    assert n1.neighs("flannel-v6.1", "-6") == [arp] and n1.fdb("flannel-v6.1") == [fdb]
    assert n1.net_routes("-6") == [route] and n1.state4() == before4


def test_watch_kernel_triggers_on_a_deleted_v6_route(nodes):
    n1, n2 = nodes(1), nodes(2)
    n1.backend.reconcile([peer(n2)])
    with KernelWatch(n1.backend) as w:
        n1.run("ip", "-6", "route", "add", "fd99::/64", "via", SWITCH6)  # unrelated: no trigger
        n1.run("ip", "-6", "route", "del", "fd99::/64")
        n1.run("ip", "-6", "route", "del", sub6(2))
        assert w.fired.wait(10), "no trigger for a deleted v6 route"
        assert w.reasons[0] == f"route {sub6(2)} via {net6(2)} dev flannel-v6.1 onlink deleted", w.reasons
        w.fired.clear()
        n1.run("ip", "link", "del", "flannel-v6.1")
        assert w.fired.wait(10) and any("flannel-v6.1" in r for r in w.reasons), w.reasons


# -- the v6 device: incompatible, and a lease without IPv6 ------------------------------------------
def test_vxlan_incompatible_v6_device_is_recreated_v4_kept(nodes, lab6, caplog):
    host = add_host6(lab6, "node1")
    host.ns.run("ip", "link", "add", "flannel-v6.1", "type", "vxlan", "id", "1", "local", "2001:db8::9", "dev",
                "eth0", "nolearning", "dstport", "8472")
    index = host.ns.json("ip", "-j", "link", "show", "flannel-v6.1")[0]["ifindex"]
    caplog.set_level(logging.WARNING)
    node = nodes(1, host=host)
    link = node.link("flannel-v6.1")
    assert link["ifindex"] != index and link["linkinfo"]["info_data"]["local6"] == host.ip6
    assert ("'flannel-v6.1' already exists with incompatible configuration: vtep (external) IP: "
            f"{host.ip6} vs 2001:db8::9; recreating device") in caplog.text
    assert "'flannel.1' already exists" not in caplog.text


def test_vxlan_lease_without_ipv6_is_fatal_with_the_reference_text(lab6):
    from cni_flannel.flanneld.backend.base import BackendError

    host = add_host6(lab6, "node1")
    with entered(host.netns_path):
        ext = select_interface(ifaces=["eth0"], iface_regex=[], iface_can_reach="", public_ip="", public_ipv6="",
                               enable_ipv4=True, enable_ipv6=True)
        backend = VXLANBackend(ext, netconf(), {"Type": "vxlan"}, host.dir)
    try:
        with pytest.raises(BackendError) as err:
            backend.register_network(lambda attrs: Lease(subnet=ipaddress.ip_network(sub4(1)), ipv6_subnet=None,
                                                         attrs=attrs))
        assert str(err.value) == ("failed to configure interface flannel-v6.1: IPv6 is enabled but the lease has "
                                  "no IPv6")
    finally:
        backend.close()


def test_vxlan_v6_direct_peer_removed_takes_its_route_only(nodes):
    cfg = {"Type": "vxlan", "DirectRouting": True}
    n1, n2 = nodes(1, backend_cfg=cfg), nodes(2)
    n1.run("ip", "-6", "route", "add", "fd42:0:0:c8::/64", "via", SWITCH6, "proto", "static")  # not ours
    n1.backend.reconcile([peer(n2)])
    report = n1.backend.reconcile([])
    assert report.clean, report.errors
    assert sorted(report.removed) == sorted([f"route {sub6(2)} via {n2.host.ip6} dev eth0",
                                             f"route {sub4(2)} via {n2.host.ip} dev eth0"])
    assert n1.net_routes("-6") == [{"dst": "fd42:0:0:c8::/64", "gateway": SWITCH6, "dev": "eth0"}]
