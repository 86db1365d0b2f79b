"""flanneld's vxlan backend on a real kernel: nodes are lab namespaces on one underlay, the
backend runs in-process inside a node's namespace with a fake ``acquire`` and static peers."""
from __future__ import annotations

import ipaddress
import json
import os
import subprocess

import pytest
from flanneld_lab import KernelWatch

from cni_flannel.flanneld.backend.base import BackendError, ExternalInterface
from cni_flannel.flanneld.backend.vxlan import VXLANBackend
from cni_flannel.flanneld.config import NetworkConfig
from cni_flannel.flanneld.iface import select_interface
from cni_flannel.flanneld.subnet.lease import Lease, LeaseAttrs
from cni_flannel.net.netns import entered

NETWORK = "10.42.0.0/16"


def subnet_of(n: int) -> str:
    return f"10.42.{n}.0/24"


class Node:
    """One flanneld node: the lab host, its backend and its lease."""

    def __init__(self, host, n: int, backend_cfg: dict | None = None, ext: ExternalInterface | None = None,
                 previous: dict | None = None, state_dir: str | None = None) -> None:
        self.host, self.n = host, n
        with entered(host.netns_path):
            self.ext = ext or select_interface(ifaces=["eth0"], iface_regex=[], iface_can_reach="", public_ip="",
                                               public_ipv6="", enable_ipv4=True, enable_ipv6=False)
            self.backend = VXLANBackend(self.ext, NetworkConfig(network=ipaddress.ip_network(NETWORK)),
                                        backend_cfg or {"Type": "vxlan"}, state_dir or host.dir)
        self.backend.previous_backend_data = previous
        self.published: LeaseAttrs | None = None

        def acquire(attrs: LeaseAttrs) -> Lease:
            self.published = attrs
            return Lease(subnet=ipaddress.ip_network(subnet_of(n)), ipv6_subnet=None, attrs=attrs)

        self.lease = self.backend.register_network(acquire)

    @property
    def mac(self) -> str:
        return self.lease.attrs.backend_data["VtepMAC"]

    def run(self, *cmd: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        return self.host.ns.run(*cmd, check=check)

    def json(self, *cmd: str):
        return self.host.ns.json(*cmd)

    def link(self) -> dict:
        return self.json("ip", "-j", "-d", "link", "show", "flannel.1")[0]

    def neighs(self) -> list[dict]:
        return self.json("ip", "-j", "neigh", "show", "dev", "flannel.1")

    def fdb(self) -> list[dict]:
        return self.json("bridge", "-j", "fdb", "show", "dev", "flannel.1")

    def routes(self) -> list[dict]:
        return self.json("ip", "-j", "route", "show", "table", "main")

    def net_routes(self) -> list[dict]:
        """Main-table routes inside Network but the pod bridge's, without the fields the kernel adds."""
        net = ipaddress.ip_network(NETWORK)
        out = []
        for r in self.routes():
            if r["dst"] != "default" and ipaddress.ip_network(r["dst"]).subnet_of(net) and r["dev"] != "cni0":
                out.append({k: r[k] for k in ("dst", "gateway", "dev", "flags") if k in r and r[k] != []})
        return sorted(out, key=lambda r: r["dst"])

    def add_pod(self, make_netns):
        """A pod: a netns with a veth to a bridge cni0 holding <subnet>.1, pod address <subnet>.2."""
        pod = make_netns("flpod")
        base = f"10.42.{self.n}"
        self.run("ip", "link", "add", "cni0", "type", "bridge")
        self.run("ip", "addr", "add", f"{base}.1/24", "dev", "cni0")
        self.run("ip", "link", "set", "cni0", "up")
        self.run("ip", "link", "add", "vethpod", "type", "veth", "peer", "name", "eth0", "netns", pod.name)
        self.run("ip", "link", "set", "vethpod", "master", "cni0", "up")
        pod.run("ip", "addr", "add", f"{base}.2/24", "dev", "eth0")
        pod.run("ip", "link", "set", "eth0", "up")
        pod.run("ip", "route", "add", "default", "via", f"{base}.1")
        return pod


def peer_lease(node: Node, mac: str | None = None, public: str | None = None, btype: str = "vxlan") -> Lease:
    data = {"VNI": 1, "VtepMAC": mac or node.mac}
    return Lease(subnet=ipaddress.ip_network(subnet_of(node.n)), ipv6_subnet=None,
                 attrs=LeaseAttrs(public_ip=ipaddress.ip_address(public or node.host.ip), backend_type=btype,
                                  backend_data=data))


def fake_lease(n: int, public: str, mac: str) -> Lease:
    return Lease(subnet=ipaddress.ip_network(subnet_of(n)), ipv6_subnet=None,
                 attrs=LeaseAttrs(public_ip=ipaddress.ip_address(public), backend_type="vxlan",
                                  backend_data={"VNI": 1, "VtepMAC": mac}))


@pytest.fixture
def nodes(lab):
    made: list[Node] = []

    def make(n: int, **kw) -> Node:
        host = kw.pop("host", None) or lab.add_host(f"node{n}")
        node = Node(host, n, **kw)
        made.append(node)
        return node

    yield make
    for node in made:
        node.backend.close()


def ping(ns_run, target: str, src: str | None = None) -> subprocess.CompletedProcess[str]:
    cmd = ["ping", "-c", "2", "-W", "2", "-i", "0.3"]
    if src:
        cmd += ["-I", src]
    return ns_run(*cmd, target, check=False)


# -- the device -----------------------------------------------------------------------------------
def test_device_attributes_field_by_field(nodes):
    node = nodes(1)
    link = node.link()
    info = link["linkinfo"]["info_data"]
    assert link["linkinfo"]["info_kind"] == "vxlan"
    assert info["id"] == 1
    assert info["port"] == 8472  # Port 0 is not sent: the kernel's default
    assert info["local"] == node.host.ip
    assert info["link"] == "eth0"
    assert info["learning"] is False
    assert "gbp" not in info or info["gbp"] is False
    assert info["ttl"] == 0
    assert link["mtu"] == 1500 - 50
    assert "txqlen" not in link  # txqlen 0, as the Go netlink library sends it: ip shows no qlen
    assert "UP" in link["flags"]
    # the MAC: published, on the device, persisted (0644), locally administered unicast
    assert link["address"] == node.mac
    first = int(node.mac.split(":")[0], 16)
    assert first & 0x02 and not first & 0x01
    path = os.path.join(node.host.dir, "flannel.1.mac")
    assert open(path).read().strip() == node.mac
    assert oct(os.stat(path).st_mode & 0o777) == "0o644"
    assert node.run("cat", "/proc/sys/net/ipv6/conf/flannel.1/accept_ra").stdout.strip() == "0"
    addrs = node.json("ip", "-j", "-4", "addr", "show", "dev", "flannel.1")[0]["addr_info"]
    assert [(a["local"], a["prefixlen"]) for a in addrs] == [("10.42.1.0", 32)]
    assert node.published.backend_type == "vxlan"
    assert node.published.backend_data == {"VNI": 1, "VtepMAC": node.mac}
    assert str(node.published.public_ip) == node.host.ip
    assert node.backend.mtu() == 1450


def test_options_port_gbp_learning_mtu_vni(nodes):
    node = nodes(1, backend_cfg={"type": "vxlan", "vni": 7, "PORT": 4789, "gbp": True, "Learning": True,
                                 "mtu": 1400, "DirectRouting": None})
    link = node.json("ip", "-j", "-d", "link", "show", "flannel.7")[0]
    info = link["linkinfo"]["info_data"]
    assert (info["id"], info["port"], info["learning"], info.get("gbp")) == (7, 4789, True, True)
    assert link["mtu"] == 1350 and node.backend.mtu() == 1350
    assert node.lease.attrs.backend_data["VNI"] == 7


def test_mac_persisted_and_reused_by_a_second_instance(nodes, lab):
    node = nodes(1)
    mac, index = node.mac, node.link()["ifindex"]
    node.backend.close()
    again = nodes(1, host=node.host)
    assert again.mac == mac and again.link()["ifindex"] == index  # adopted, not recreated
    # the device gone and the file kept: a new device with the same MAC
    node.run("ip", "link", "del", "flannel.1")
    again.backend.close()
    third = nodes(1, host=node.host)
    assert third.mac == mac and third.link()["address"] == mac


def test_mac_from_previous_backend_data_when_no_file(nodes, lab):
    host = lab.add_host("node1")
    node = nodes(1, host=host, previous={"VNI": 1, "VtepMAC": "0A:58:0A:2A:01:00"})
    assert node.mac == "0a:58:0a:2a:01:00" and node.link()["address"] == node.mac
    assert open(os.path.join(host.dir, "flannel.1.mac")).read().strip() == node.mac


def test_adopted_device_gets_mtu_and_mac_fixed(nodes, lab):
    host = lab.add_host("node1")
    with open(os.path.join(host.dir, "flannel.1.mac"), "w") as f:
        f.write("0a:00:00:00:01:01\n")
    host.ns.run("ip", "link", "add", "flannel.1", "address", "0a:00:00:00:09:09", "mtu", "1300", "type", "vxlan",
                "id", "1", "local", host.ip, "dev", "eth0", "nolearning", "dstport", "8472")
    index = host.ns.json("ip", "-j", "link", "show", "flannel.1")[0]["ifindex"]
    node = nodes(1, host=host)
    link = node.link()
    assert link["ifindex"] == index
    assert (link["mtu"], link["address"], node.mac) == (1450, "0a:00:00:00:01:01", "0a:00:00:00:01:01")


def test_incompatible_device_is_recreated(nodes, lab, caplog):
    host = lab.add_host("node1")
    # a Go flanneld ≥ v0.27.4 with a --public-ip would have made LOCAL the public IP
    host.ns.run("ip", "link", "add", "flannel.1", "type", "vxlan", "id", "1", "local", "203.0.113.9", "dev", "eth0",
                "nolearning", "dstport", "8472")
    index = host.ns.json("ip", "-j", "link", "show", "flannel.1")[0]["ifindex"]
    caplog.set_level("WARNING")
    node = nodes(1, host=host)
    assert node.link()["ifindex"] != index
    assert node.link()["linkinfo"]["info_data"]["local"] == host.ip
    assert ("'flannel.1' already exists with incompatible configuration: vtep (external) IP: "
            f"{host.ip} vs 203.0.113.9; recreating device") in caplog.text


def test_non_local_public_ip_is_advertised_but_vtep_stays_local(nodes, lab):
    host = lab.add_host("node1")
    with entered(host.netns_path):
        ext = select_interface(ifaces=[], iface_regex=[], iface_can_reach="", public_ip="203.0.113.7",
                               public_ipv6="", enable_ipv4=True, enable_ipv6=False)
    assert (str(ext.iface_addr), str(ext.ext_addr)) == (host.ip, "203.0.113.7")
    node = nodes(1, host=host, ext=ext)
    assert str(node.published.public_ip) == "203.0.113.7"
    assert node.link()["linkinfo"]["info_data"]["local"] == host.ip


def test_bad_options_are_fatal_with_go_wording(lab):
    host = lab.add_host("node1")
    ext = ExternalInterface(name="eth0", index=2, mtu=1500, iface_addr=ipaddress.ip_address(host.ip),
                            ext_addr=ipaddress.ip_address(host.ip))
    with entered(host.netns_path), pytest.raises(BackendError) as err:
        VXLANBackend(ext, NetworkConfig(network=ipaddress.ip_network(NETWORK)), {"VNI": "1"}, host.dir)
    assert str(err.value) == ("error decoding VXLAN backend config: json: cannot unmarshal string into Go struct "
                              "field VXLANConfig.vni of type int")


# -- peers ----------------------------------------------------------------------------------------
def expected_vxlan_objects(peer: Node) -> tuple[dict, dict, dict]:
    sub = f"10.42.{peer.n}.0"
    return ({"dst": sub, "lladdr": peer.mac, "state": ["PERMANENT"]},
            {"mac": peer.mac, "dst": peer.host.ip, "flags": ["self"], "state": "permanent"},
            {"dst": f"{sub}/24", "gateway": sub, "dev": "flannel.1", "flags": ["onlink"]})


def neigh_view(node: Node) -> list[dict]:
    return sorted(({k: n[k] for k in ("dst", "lladdr", "state")} for n in node.neighs()), key=lambda n: n["dst"])


def fdb_view(node: Node) -> list[dict]:
    return sorted(({k: f.get(k) for k in ("mac", "dst", "flags", "state")} for f in node.fdb()),
                  key=lambda f: f["mac"])


def test_peer_objects_exactly_and_traffic_both_ways(nodes, make_netns):
    n1, n2, n3 = nodes(1), nodes(2), nodes(3)
    for node in (n1, n2, n3):
        report = node.backend.reconcile([peer_lease(p) for p in (n1, n2, n3) if p is not node])
        assert report.clean, report.errors
        assert report.programmed == {f"10.42.{p.n}.0-24" for p in (n1, n2, n3) if p is not node}
    arp2, fdb2, route2 = expected_vxlan_objects(n2)
    arp3, fdb3, route3 = expected_vxlan_objects(n3)
    assert neigh_view(n1) == [arp2, arp3]
    assert fdb_view(n1) == sorted([fdb2, fdb3], key=lambda f: f["mac"])
    assert n1.net_routes() == [route2, route3]  # no route for the own subnet, none for the Network
    raw = next(r for r in n1.routes() if r["dst"] == "10.42.2.0/24")
    assert "protocol" not in raw and "scope" not in raw  # proto boot, scope universe (ip hides both)
    # a second pass changes nothing
    again = n1.backend.reconcile([peer_lease(n2), peer_lease(n3)])
    assert (again.added, again.changed, again.removed, again.errors) == ([], [], [], [])
    # real traffic: pod to pod across vxlan, both directions
    pod1, pod2 = n1.add_pod(make_netns), n2.add_pod(make_netns)
    assert ping(pod1.run, "10.42.2.2").returncode == 0
    assert ping(pod2.run, "10.42.1.2").returncode == 0
    assert ping(n1.run, "10.42.2.1", src="10.42.1.1").returncode == 0


def test_device_recreated_with_same_mac_and_all_peers(nodes, make_netns):
    n1, n2, n3 = nodes(1), nodes(2), nodes(3)
    peers1 = [peer_lease(n2), peer_lease(n3)]
    n1.backend.reconcile(peers1)
    n2.backend.reconcile([peer_lease(n1), peer_lease(n3)])
    pod1, _pod2 = n1.add_pod(make_netns), n2.add_pod(make_netns)
    mac, index = n1.mac, n1.link()["ifindex"]
    n1.run("ip", "link", "del", "flannel.1")
    report = n1.backend.reconcile(peers1)
    assert report.device_recreated and report.clean, report.errors
    link = n1.link()
    assert link["ifindex"] != index and link["address"] == mac and "UP" in link["flags"]
    assert [(a["local"], a["prefixlen"]) for a in n1.json("ip", "-j", "-4", "addr", "show", "dev",
                                                          "flannel.1")[0]["addr_info"]] == [("10.42.1.0", 32)]
    arp2, fdb2, route2 = expected_vxlan_objects(n2)
    arp3, fdb3, route3 = expected_vxlan_objects(n3)
    assert neigh_view(n1) == [arp2, arp3] and n1.net_routes() == [route2, route3]
    assert fdb_view(n1) == sorted([fdb2, fdb3], key=lambda f: f["mac"])
    assert ping(pod1.run, "10.42.2.2").returncode == 0
    assert not n1.backend.reconcile(peers1).device_recreated


def test_hand_deleted_route_neigh_and_fdb_come_back(nodes):
    n1, n2 = nodes(1), nodes(2)
    peers = [peer_lease(n2)]
    n1.backend.reconcile(peers)
    n1.run("ip", "route", "del", "10.42.2.0/24")
    n1.run("ip", "neigh", "del", "10.42.2.0", "dev", "flannel.1")
    n1.run("bridge", "fdb", "del", n2.mac, "dev", "flannel.1", "dst", n2.host.ip, "self")
    assert n1.neighs() == [] and n1.fdb() == [] and n1.net_routes() == []
    report = n1.backend.reconcile(peers)
    assert report.clean and len(report.added) == 3
    arp, fdb, route = expected_vxlan_objects(n2)
    assert neigh_view(n1) == [arp] and fdb_view(n1) == [fdb] and n1.net_routes() == [route]


def test_link_flap_of_the_device_is_repaired(nodes):
    n1, n2 = nodes(1), nodes(2)
    peers = [peer_lease(n2)]
    n1.backend.reconcile(peers)
    n1.run("ip", "link", "set", "flannel.1", "down")  # flushes neighbours and the routes via it
    n1.run("ip", "link", "set", "flannel.1", "up")
    report = n1.backend.reconcile(peers)
    assert report.clean
    arp, fdb, route = expected_vxlan_objects(n2)
    assert neigh_view(n1) == [arp] and n1.net_routes() == [route] and fdb_view(n1) == [fdb]


def test_peer_removed_takes_exactly_its_objects(nodes):
    n1, n2, n3 = nodes(1), nodes(2), nodes(3)
    # unrelated state that must survive: a route outside Network, a static route inside it,
    # a permanent neighbour on eth0, the own subnet's bridge route
    n1.run("ip", "route", "add", "10.99.0.0/24", "via", "192.168.77.254")
    n1.run("ip", "route", "add", "10.42.200.0/24", "via", "192.168.77.254", "proto", "static")
    n1.run("ip", "neigh", "add", "192.168.77.200", "lladdr", "0a:00:00:00:00:c8", "dev", "eth0", "nud", "permanent")
    n1.run("ip", "link", "add", "cni0", "type", "bridge")
    n1.run("ip", "addr", "add", "10.42.1.1/24", "dev", "cni0")
    n1.run("ip", "link", "set", "cni0", "up")
    assert any(r["dst"] == "10.42.1.0/24" for r in n1.routes())
    before_other = [r for r in n1.routes() if not r["dst"].startswith("10.42.2.") and
                    not r["dst"].startswith("10.42.3.")]
    n1.backend.reconcile([peer_lease(n2), peer_lease(n3)])
    report = n1.backend.reconcile([peer_lease(n2)])
    assert report.clean
    assert sorted(report.removed) == sorted([
        "route 10.42.3.0/24 via 10.42.3.0 dev flannel.1 onlink",
        f"neighbour 10.42.3.0 lladdr {n3.mac} dev flannel.1 nud permanent",
        f"fdb {n3.mac} dev flannel.1 dst {n3.host.ip} self permanent"])
    arp2, fdb2, _route2 = expected_vxlan_objects(n2)
    assert neigh_view(n1) == [arp2] and fdb_view(n1) == [fdb2]
    assert [r for r in n1.routes() if not r["dst"].startswith("10.42.2.")] == before_other
    eth0 = n1.json("ip", "-j", "neigh", "show", "dev", "eth0")
    assert any(n["dst"] == "192.168.77.200" and n["state"] == ["PERMANENT"] for n in eth0)


def test_peer_mac_change_removes_the_old_fdb_entry(nodes):
    n1, n2 = nodes(1), nodes(2)
    n1.backend.reconcile([peer_lease(n2)])
    report = n1.backend.reconcile([peer_lease(n2, mac="0a:00:00:00:00:99")])
    assert report.clean
    assert neigh_view(n1) == [{"dst": "10.42.2.0", "lladdr": "0a:00:00:00:00:99", "state": ["PERMANENT"]}]
    assert fdb_view(n1) == [{"mac": "0a:00:00:00:00:99", "dst": n2.host.ip, "flags": ["self"],
                             "state": "permanent"}]  # the old MAC's entry is gone (⚠ #1036)


def test_peer_public_ip_change_rewrites_the_fdb_remote(nodes):
    n1, n2 = nodes(1), nodes(2)
    n1.backend.reconcile([peer_lease(n2)])
    n1.backend.reconcile([peer_lease(n2, public="192.168.77.99")])
    assert fdb_view(n1) == [{"mac": n2.mac, "dst": "192.168.77.99", "flags": ["self"], "state": "permanent"}]


def test_stale_objects_of_a_previous_run_removed_at_first_reconcile(nodes, lab):
    host = lab.add_host("node1")
    first = nodes(1, host=host)
    n2 = nodes(2)
    first.backend.reconcile([peer_lease(n2), fake_lease(7, "192.168.77.77", "0a:00:00:00:00:07")])
    first.backend.close()
    # flanneld was down while peer 7 left; the new run gets only node2
    again = nodes(1, host=host)
    report = again.backend.reconcile([peer_lease(n2)])
    assert report.clean and len(report.removed) == 3
    arp2, fdb2, route2 = expected_vxlan_objects(n2)
    assert neigh_view(again) == [arp2] and fdb_view(again) == [fdb2] and again.net_routes() == [route2]


def test_non_vxlan_and_broken_peers(nodes, caplog):
    n1, n2 = nodes(1), nodes(2)
    caplog.set_level("WARNING")
    hostgw = Lease(subnet=ipaddress.ip_network("10.42.5.0/24"), ipv6_subnet=None,
                   attrs=LeaseAttrs(public_ip=ipaddress.ip_address("192.168.77.5"), backend_type="host-gw"))
    broken = fake_lease(6, "192.168.77.6", "not-a-mac")
    outside = Lease(subnet=ipaddress.ip_network("10.43.1.0/24"), ipv6_subnet=None,
                    attrs=LeaseAttrs(public_ip=ipaddress.ip_address("192.168.77.8"), backend_type="vxlan",
                                     backend_data={"VNI": 1, "VtepMAC": "0a:00:00:00:00:08"}))
    report = n1.backend.reconcile([hostgw, broken, outside, peer_lease(n2)])
    n1.backend.reconcile([hostgw, peer_lease(n2)])
    assert report.programmed == {"10.42.2.0-24"}
    assert len(report.errors) == 2 and any("10.42.6.0-24" in e and "VtepMAC" in e for e in report.errors)
    assert any("10.43.1.0/24 is not inside Network" in e for e in report.errors)
    assert caplog.text.count("ignoring non-vxlan v4Subnet(10.42.5.0/24) v6Subnet(None): type=host-gw") == 1
    assert [r["dst"] for r in n1.net_routes()] == ["10.42.2.0/24"]


# -- DirectRouting --------------------------------------------------------------------------------
def test_direct_routing_on_segment_and_vxlan_off_segment(nodes, lab, make_netns):
    n1 = nodes(1, backend_cfg={"Type": "vxlan", "DirectRouting": True})
    n2 = nodes(2, backend_cfg={"Type": "vxlan", "DirectRouting": True})
    # a peer behind the router (.254): its PublicIP is reached through a gateway
    off = fake_lease(9, "10.77.0.9", "0a:00:00:00:00:09")
    report = n1.backend.reconcile([peer_lease(n2), off])
    assert report.clean, report.errors
    arp9, fdb9, route9 = ({"dst": "10.42.9.0", "lladdr": "0a:00:00:00:00:09", "state": ["PERMANENT"]},
                          {"mac": "0a:00:00:00:00:09", "dst": "10.77.0.9", "flags": ["self"], "state": "permanent"},
                          {"dst": "10.42.9.0/24", "gateway": "10.42.9.0", "dev": "flannel.1", "flags": ["onlink"]})
    assert n1.net_routes() == [{"dst": "10.42.2.0/24", "gateway": n2.host.ip, "dev": "eth0"}, route9]
    assert neigh_view(n1) == [arp9] and fdb_view(n1) == [fdb9]  # nothing vxlan for the direct peer
    n2.backend.reconcile([peer_lease(n1)])
    pod1, pod2 = n1.add_pod(make_netns), n2.add_pod(make_netns)
    assert ping(pod1.run, "10.42.2.2").returncode == 0 and ping(pod2.run, "10.42.1.2").returncode == 0


def test_peer_turning_direct_loses_its_arp_and_fdb(nodes):
    n1 = nodes(1)
    n2 = nodes(2)
    n1.backend.reconcile([peer_lease(n2)])
    assert neigh_view(n1) and fdb_view(n1)
    n1.backend.cfg.direct_routing = True  # as after a restart with DirectRouting on
    report = n1.backend.reconcile([peer_lease(n2)])
    assert report.clean
    assert n1.neighs() == [] and n1.fdb() == []  # ⚠ the reference leaves them
    assert n1.net_routes() == [{"dst": "10.42.2.0/24", "gateway": n2.host.ip, "dev": "eth0"}]


def test_direct_route_lost_in_an_ext_flap_comes_back(nodes):
    n1 = nodes(1, backend_cfg={"Type": "vxlan", "DirectRouting": True})
    n2 = nodes(2)
    n1.backend.reconcile([peer_lease(n2)])
    n1.run("ip", "link", "set", "eth0", "down")
    n1.run("ip", "link", "set", "eth0", "up")
    n1.run("ip", "route", "replace", "default", "via", "192.168.77.254", "dev", "eth0")
    assert n1.net_routes() == []
    n1.backend.reconcile([peer_lease(n2)])
    assert n1.net_routes() == [{"dst": "10.42.2.0/24", "gateway": n2.host.ip, "dev": "eth0"}]


# -- the kernel watch -----------------------------------------------------------------------------
def test_watch_kernel_triggers_on_a_deleted_route_and_stops(nodes):
    n1, n2 = nodes(1), nodes(2)
    n1.backend.reconcile([peer_lease(n2)])
    with KernelWatch(n1.backend) as w:
        # unrelated changes do not trigger
        n1.run("ip", "route", "add", "10.99.0.0/24", "via", "192.168.77.254")
        n1.run("ip", "route", "del", "10.99.0.0/24")
        n1.run("ip", "route", "del", "10.42.2.0/24")
        assert w.fired.wait(10), "no trigger for a deleted route"
        assert w.reasons[0] == "route 10.42.2.0/24 via 10.42.2.0 dev flannel.1 onlink deleted", w.reasons
        assert not any("10.99" in r for r in w.reasons)
        w.fired.clear()
        n1.run("ip", "link", "del", "flannel.1")
        assert w.fired.wait(10) and any("flannel.1" in r for r in w.reasons), w.reasons


def test_published_lease_json_shape(nodes):
    from cni_flannel.flanneld.subnet.lease import attrs_to_json

    n1 = nodes(1)
    assert json.loads(attrs_to_json(n1.published)) == {"PublicIP": n1.host.ip, "PublicIPv6": None,
                                                        "BackendType": "vxlan",
                                                        "BackendData": {"VNI": 1, "VtepMAC": n1.mac}}
