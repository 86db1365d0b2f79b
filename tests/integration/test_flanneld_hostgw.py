"""flanneld's host-gw backend on a real kernel, in lab namespaces, with static peers."""
from __future__ import annotations

import ipaddress

import pytest
from flanneld_lab import KernelWatch

from cni_flannel.flanneld.backend.base import BackendError, ExternalInterface
from cni_flannel.flanneld.backend.hostgw import NAT_MESSAGE, HostGWBackend
from cni_flannel.flanneld.config import NetworkConfig
from cni_flannel.flanneld.iface import select_interface
from cni_flannel.flanneld.subnet.lease import Lease, LeaseAttrs
from cni_flannel.net.netns import entered

NETWORK = "10.42.0.0/16"


def lease(n: int, public: str, btype: str = "host-gw") -> Lease:
    return Lease(subnet=ipaddress.ip_network(f"10.42.{n}.0/24"), ipv6_subnet=None,
                 attrs=LeaseAttrs(public_ip=ipaddress.ip_address(public), backend_type=btype))


class Node:
    def __init__(self, host, n: int) -> None:
        self.host, self.n = host, n
        with entered(host.netns_path):
            ext = select_interface(ifaces=[], iface_regex=[], iface_can_reach="", public_ip="", public_ipv6="",
                                   enable_ipv4=True, enable_ipv6=False)
            self.backend = HostGWBackend(ext, NetworkConfig(network=ipaddress.ip_network(NETWORK)),
                                         {"Type": "host-gw"}, host.dir)
        self.published: LeaseAttrs | None = None

        def acquire(attrs: LeaseAttrs) -> Lease:
            self.published = attrs
            return Lease(subnet=ipaddress.ip_network(f"10.42.{n}.0/24"), ipv6_subnet=None, attrs=attrs)

        self.lease = self.backend.register_network(acquire)

    def peer(self) -> Lease:
        return lease(self.n, self.host.ip)

    def net_routes(self) -> list[dict]:
        net = ipaddress.ip_network(NETWORK)
        out = []
        for r in self.host.ns.json("ip", "-j", "route", "show", "table", "main"):
            if r["dst"] != "default" and ipaddress.ip_network(r["dst"]).subnet_of(net) and r.get("dev") != "cni0":
                out.append({k: r[k] for k in ("dst", "gateway", "dev", "protocol") if k in r})
        return sorted(out, key=lambda r: r["dst"])


@pytest.fixture
def nodes(lab):
    made: list[Node] = []

    def make(n: int, host=None) -> Node:
        node = Node(host or lab.add_host(f"node{n}"), n)
        made.append(node)
        return node

    yield make
    for node in made:
        node.backend.close()


def test_route_per_peer_no_backend_data_and_traffic(nodes, make_netns):
    n1, n2, n3 = nodes(1), nodes(2), nodes(3)
    assert n1.published.backend_type == "host-gw" and n1.published.backend_data is None
    assert str(n1.published.public_ip) == n1.host.ip and n1.backend.mtu() == 1500
    for node in (n1, n2, n3):
        report = node.backend.reconcile([p.peer() for p in (n1, n2, n3) if p is not node])
        assert report.clean, report.errors
        assert report.programmed == {f"10.42.{p.n}.0-24" for p in (n1, n2, n3) if p is not node}
    assert n1.net_routes() == [{"dst": "10.42.2.0/24", "gateway": n2.host.ip, "dev": "eth0"},
                               {"dst": "10.42.3.0/24", "gateway": n3.host.ip, "dev": "eth0"}]  # proto boot: hidden
    again = n1.backend.reconcile([n2.peer(), n3.peer()])
    assert (again.added, again.changed, again.removed) == ([], [], [])
    pods = []
    for node in (n1, n2):
        pod = make_netns("flpod")
        base = f"10.42.{node.n}"
        ns = node.host.ns
        ns.run("ip", "link", "add", "cni0", "type", "bridge")
        ns.run("ip", "addr", "add", f"{base}.1/24", "dev", "cni0")
        ns.run("ip", "link", "set", "cni0", "up")
        ns.run("ip", "link", "add", "vethpod", "type", "veth", "peer", "name", "eth0", "netns", pod.name)
        ns.run("ip", "link", "set", "vethpod", "master", "cni0", "up")
        pod.run("ip", "addr", "add", f"{base}.2/24", "dev", "eth0")
        pod.run("ip", "link", "set", "eth0", "up")
        pod.run("ip", "route", "add", "default", "via", f"{base}.1")
        pods.append(pod)
    ping = ("ping", "-c", "2", "-W", "2", "-i", "0.3")
    assert pods[0].run(*ping, "10.42.2.2", check=False).returncode == 0
    assert pods[1].run(*ping, "10.42.1.2", check=False).returncode == 0


def test_nat_is_refused_with_the_reference_message(lab):
    host = lab.add_host("node1")
    with entered(host.netns_path):
        ext = select_interface(ifaces=["eth0"], iface_regex=[], iface_can_reach="", public_ip="203.0.113.5",
                               public_ipv6="", enable_ipv4=True, enable_ipv6=False)
        with pytest.raises(BackendError) as err:
            HostGWBackend(ext, NetworkConfig(network=ipaddress.ip_network(NETWORK)), {}, host.dir)
    assert str(err.value) == NAT_MESSAGE == (
        "your PublicIP differs from interface IP, meaning that probably you're on a NAT, which is not supported by "
        "host-gw backend")


def test_off_segment_peer_error_text_and_retry(nodes, caplog):
    n1, n2 = nodes(1), nodes(2)
    off = lease(9, "10.77.0.9")  # behind the router: not a gateway the kernel accepts on eth0
    caplog.set_level("ERROR")
    report = n1.backend.reconcile([off, n2.peer()])
    assert report.programmed == {"10.42.2.0-24"}
    assert report.errors == ["peer 10.42.9.0-24: failed to add route 10.42.9.0/24 via 10.77.0.9 dev eth0: "
                             "network is unreachable (ENETUNREACH)"]
    assert ("Error adding route to 10.42.9.0/24 via 10.77.0.9 dev eth0: failed to add route 10.42.9.0/24 via "
            "10.77.0.9 dev eth0: network is unreachable (ENETUNREACH)") in caplog.text
    # kept wanted: once the peer's network is on-link, the next reconcile programs it
    n1.host.ns.run("ip", "addr", "add", "10.77.0.1/24", "dev", "eth0")
    report = n1.backend.reconcile([off, n2.peer()])
    assert report.clean and report.programmed == {"10.42.2.0-24", "10.42.9.0-24"}
    assert {"dst": "10.42.9.0/24", "gateway": "10.77.0.9", "dev": "eth0"} in n1.net_routes()


def test_differing_route_is_replaced(nodes, caplog):
    n1, n2 = nodes(1), nodes(2)
    n1.host.ns.run("ip", "route", "add", "10.42.2.0/24", "via", "192.168.77.254", "proto", "static")
    caplog.set_level("WARNING")
    report = n1.backend.reconcile([n2.peer()])
    assert report.clean and report.changed == [f"route 10.42.2.0/24 via {n2.host.ip} dev eth0"]
    assert "Replacing existing route to 10.42.2.0/24 via 192.168.77.254 dev eth0 with 10.42.2.0/24 via " \
           f"{n2.host.ip} dev eth0" in caplog.text
    assert n1.net_routes() == [{"dst": "10.42.2.0/24", "gateway": n2.host.ip, "dev": "eth0"}]


def test_stale_and_removed_peers_only_ours_go(nodes, lab):
    host = lab.add_host("node1")
    first = nodes(1, host=host)
    n2, n3 = nodes(2), nodes(3)
    first.backend.reconcile([n2.peer(), n3.peer(), lease(8, "192.168.77.88")])
    first.backend.close()
    ns = host.ns
    ns.run("ip", "route", "add", "10.99.0.0/24", "via", "192.168.77.254")  # outside Network
    ns.run("ip", "route", "add", "10.42.200.0/24", "via", "192.168.77.254", "proto", "static")  # not proto boot
    ns.run("ip", "link", "add", "cni0", "type", "bridge")
    ns.run("ip", "addr", "add", "10.42.1.1/24", "dev", "cni0")  # the own subnet's route
    ns.run("ip", "link", "set", "cni0", "up")
    again = nodes(1, host=host)  # restarted; peer 8 left while it was down (⚠ #2554)
    report = again.backend.reconcile([n2.peer(), n3.peer()])
    assert report.removed == ["route 10.42.8.0/24 via 192.168.77.88 dev eth0"]
    report = again.backend.reconcile([n2.peer()])
    assert report.removed == [f"route 10.42.3.0/24 via {n3.host.ip} dev eth0"]
    routes = {r["dst"]: r for r in ns.json("ip", "-j", "route", "show", "table", "main")}
    assert {"10.99.0.0/24", "10.42.200.0/24", "10.42.1.0/24", "10.42.2.0/24"} <= set(routes)
    assert "10.42.3.0/24" not in routes and "10.42.8.0/24" not in routes


def test_hand_deleted_route_recovered_and_watch_triggers(nodes, caplog):
    n1, n2 = nodes(1), nodes(2)
    n1.backend.reconcile([n2.peer()])
    with KernelWatch(n1.backend) as w:
        n1.host.ns.run("ip", "route", "del", "10.42.2.0/24")
        assert w.fired.wait(10)
        assert w.reasons[0] == f"route 10.42.2.0/24 via {n2.host.ip} dev eth0 deleted"
    caplog.set_level("INFO")
    report = n1.backend.reconcile([n2.peer()])
    assert report.added == [f"route 10.42.2.0/24 via {n2.host.ip} dev eth0"]
    assert f"Route recovered 10.42.2.0/24 : {n2.host.ip}" in caplog.text


def test_non_host_gw_peers_ignored_once(nodes, caplog):
    n1 = nodes(1)
    caplog.set_level("WARNING")
    vx = lease(5, "192.168.77.5", btype="vxlan")
    n1.backend.reconcile([vx])
    n1.backend.reconcile([vx])
    assert caplog.text.count("Ignoring non-host-gw subnet: type=vxlan") == 1
    assert n1.net_routes() == []


def test_dual_stack_refuses_v6_nat_too(lab):
    host = lab.add_host("node1")
    ext = ExternalInterface(name="eth0", index=2, mtu=1500, iface_addr=ipaddress.ip_address(host.ip),
                            ext_addr=ipaddress.ip_address(host.ip), iface_addr6=ipaddress.ip_address("fd00::1"),
                            ext_addr6=ipaddress.ip_address("2001:db8::1"))
    with entered(host.netns_path), pytest.raises(BackendError, match="NAT"):
        HostGWBackend(ext, NetworkConfig(network=ipaddress.ip_network(NETWORK)), {}, host.dir)
