"""flanneld end to end with a real etcd: three node namespaces, our flanneld on each, pods made
with our CNI plugins through cnitool and the seed conflist (flanneld-reference §4, §5, §7, §8, §11).

Each test builds its own lab (underlay switch, an etcd host, node hosts) and removes it, pass or fail.
"""
from __future__ import annotations

import ipaddress
import re
import signal
import subprocess
import time

import pytest
from flanneld_cluster import SEED_NET_CONF, Cluster, exchange, json_of, ping

pytestmark = pytest.mark.kernel
PREFIX = "/coreos.com/network"
VALUE_RE = re.compile(r'^\{"PublicIP":"(192\.168\.77\.\d+)","PublicIPv6":null,"BackendType":"([a-z-]+)"'
                      r'(,"BackendData":\{"VNI":1,"VtepMAC":"([0-9a-f:]{17})"\})?\}$')


@pytest.fixture
def cluster(lab, tmp_path):
    cl = Cluster(lab, str(tmp_path))
    yield cl
    cl.destroy()


def boot(cluster: Cluster, conf: dict, count: int = 3, *flags: str) -> list:
    cluster.start_etcd()
    cluster.put_config(conf)
    nodes = [cluster.add_node(f"node{i}") for i in range(1, count + 1)]
    for node in nodes:
        cluster.start_flanneld(node, "--ip-masq", *flags)
    cluster.wait_all_ready(90)
    return nodes


def leases(cluster: Cluster) -> dict[str, bytes]:
    keys = cluster.etcd.keys(f"{PREFIX}/subnets/")
    return {k.rsplit("/", 1)[1]: cluster.etcd.get(k) for k in keys}


def wait_for(pred, timeout: float = 20, step: float = 0.3, what: str = "condition"):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = pred()
        if value:
            return value
        time.sleep(step)
    raise AssertionError(f"timed out waiting for {what}")


def routes(node) -> list[dict]:
    return json_of(node.ns, "ip", "-j", "-d", "route", "show", "table", "main")


def route_to(node, subnet: str) -> dict | None:
    return next((r for r in routes(node) if r.get("dst") == subnet), None)


def all_pairs_talk(nodes) -> None:
    pods = [p for n in nodes for p in n.pods]
    for a in pods:
        for b in pods:
            if a.node is not b.node:
                assert ping(a, b.ip), f"{a.name}@{a.node.name} -> {b.name}@{b.node.name} ({b.ip})"
    a, b = nodes[0].pods[0], nodes[-1].pods[0]
    # TCP, and no masquerade between pods inside Network: the server sees the client pod's own address
    assert exchange(a, b, 7001, "tcp") == f"hello-from-{b.name} {a.ip}"
    assert exchange(b, a, 7002, "udp") == f"hello-from-{a.name} {b.ip}"


@pytest.mark.parametrize("backend", ["vxlan", "vxlan-directrouting", "host-gw", "udp"])
def test_three_nodes_pods_reach_each_other(cluster, backend):
    kind = backend.split("-directrouting")[0]
    conf = {"Network": "10.42.0.0/16", "Backend": {"Type": kind}}
    if backend == "vxlan-directrouting":
        conf = SEED_NET_CONF
    nodes = boot(cluster, conf)
    # §5.1: one lease per node, distinct subnets, the reference's key and value shapes, TTL 86400
    got = leases(cluster)
    assert len(got) == 3
    subnets = {}
    for key, value in got.items():
        m = re.fullmatch(r"10\.42\.(\d+)\.0-24", key)
        assert m, key
        v = VALUE_RE.fullmatch(value.decode())
        assert v, value
        assert v.group(2) == kind
        assert (v.group(3) is None) == (kind in ("host-gw", "udp"))
        subnets[v.group(1)] = ipaddress.ip_network(key.replace("-", "/"))
        kv = cluster.etcd.get_kv(f"{PREFIX}/subnets/{key}")
        ttl = cluster.etcd.ctl_json("lease", "timetolive", format(int(kv["lease"]), "x"))
        assert 86000 < int(ttl["granted-ttl"]) <= 86400
    for node in nodes:
        sub = subnets[node.host.ip]
        mtu = {"vxlan": 1450, "host-gw": 1500, "udp": 1472}[kind]
        with open(node.subnet_file) as f:  # §4, byte for byte
            assert f.read() == (f"FLANNEL_NETWORK=10.42.0.0/16\nFLANNEL_SUBNET={sub.network_address + 1}/24\n"
                                f"FLANNEL_MTU={mtu}\nFLANNEL_IPMASQ=true\n")
    for node in nodes:
        cluster.add_pod(node, "a")
    all_pairs_talk(nodes)
    # the kernel objects, field by field
    for node in nodes:
        own = subnets[node.host.ip]
        if kind == "udp":  # §9: flannel0 (tun, no PI), own subnet IP/32, MTU ext-28, one route for Network
            dev = json_of(node.ns, "ip", "-j", "-d", "addr", "show", "flannel0")[0]
            assert dev["mtu"] == 1472 and dev["linkinfo"]["info_kind"] == "tun"
            assert dev["linkinfo"]["info_data"]["pi"] is False
            assert [f"{a['local']}/{a['prefixlen']}" for a in dev["addr_info"] if a["family"] == "inet"] == [
                f"{own.network_address}/32"]
            r = route_to(node, "10.42.0.0/16")
            assert r is not None and r["dev"] == "flannel0"
        for peer in nodes:
            if peer is node or kind == "udp":
                continue
            psub = subnets[peer.host.ip]
            r = route_to(node, str(psub))
            assert r is not None, f"{node.name}: no route to {psub}: {routes(node)}"
            if backend == "vxlan":
                assert r["gateway"] == str(psub.network_address) and r["dev"] == "flannel.1"
                assert "onlink" in r.get("flags", [])
            else:  # direct routing on one L2 segment, and host-gw: via the peer's underlay address
                assert r["gateway"] == peer.host.ip and r["dev"] == "eth0"
        if backend.startswith("vxlan"):
            dev = json_of(node.ns, "ip", "-j", "-d", "link", "show", "flannel.1")[0]
            info = dev["linkinfo"]["info_data"]
            assert dev["mtu"] == 1450 and info["id"] == 1 and info["port"] == 8472
            assert info["local"] == node.host.ip and info.get("learning") is False
            addrs = [f"{a['local']}/{a['prefixlen']}" for a in dev.get("addr_info", [])] or [
                f"{a['local']}/{a['prefixlen']}" for d in json_of(node.ns, "ip", "-j", "addr", "show", "flannel.1")
                for a in d["addr_info"] if a["family"] == "inet"]
            assert f"{own.network_address}/32" in addrs
        nat = node.ns.run("iptables", "-t", "nat", "-S", "FLANNEL-POSTRTG").stdout
        assert f"-A FLANNEL-POSTRTG -s {own} -d 10.42.0.0/16 -m comment --comment \"flanneld masq\" -j RETURN" in nat


def test_vxlan_peer_objects_and_node_leaving(cluster):
    """§7.3 ARP, FDB, route per peer; a lease deleted removes exactly that peer's objects."""
    nodes = boot(cluster, {"Network": "10.42.0.0/16", "Backend": {"Type": "vxlan"}})
    n1, n2, n3 = nodes
    env3 = n3.subnet_env()
    sub3 = ipaddress.ip_network(env3["FLANNEL_SUBNET"], strict=False)
    mac3 = json_of(n3.ns, "ip", "-j", "link", "show", "flannel.1")[0]["address"]
    neigh = json_of(n1.ns, "ip", "-j", "neigh", "show", "dev", "flannel.1")
    assert {"dst": str(sub3.network_address), "lladdr": mac3} in [
        {"dst": e["dst"], "lladdr": e.get("lladdr")} for e in neigh]
    fdb = json_of(n1.ns, "bridge", "-j", "fdb", "show", "dev", "flannel.1")
    assert any(e["mac"] == mac3 and e.get("dst") == n3.host.ip for e in fdb)
    # an unrelated route and neighbour survive everything flanneld does
    n1.ns.run("ip", "route", "add", "10.99.0.0/24", "via", "192.168.77.254")
    # node3 leaves: its flanneld is gone and its lease is deleted (a running flanneld would re-acquire it)
    assert cluster.stop_flanneld(n3) == 0
    cluster.etcd.delete(f"{PREFIX}/subnets/{sub3.network_address}-24")
    wait_for(lambda: route_to(n1, str(sub3)) is None, what="n3's route removed on n1")
    wait_for(lambda: not any(e["mac"] == mac3 for e in json_of(n1.ns, "bridge", "-j", "fdb", "show", "dev",
                                                                   "flannel.1")), what="n3's fdb entry removed")
    assert not any(e["dst"] == str(sub3.network_address)
                   for e in json_of(n1.ns, "ip", "-j", "neigh", "show", "dev", "flannel.1"))
    assert route_to(n1, "10.99.0.0/24") is not None
    sub2 = ipaddress.ip_network(n2.subnet_env()["FLANNEL_SUBNET"], strict=False)
    assert route_to(n1, str(sub2)) is not None


def test_restart_keeps_subnet_and_mac_and_traffic(cluster):
    nodes = boot(cluster, {"Network": "10.42.0.0/16", "Backend": {"Type": "vxlan"}}, 2)
    n1, n2 = nodes
    a, b = cluster.add_pod(n1, "a"), cluster.add_pod(n2, "b")
    before_env = n1.subnet_env()
    before_mac = json_of(n1.ns, "ip", "-j", "link", "show", "flannel.1")[0]["address"]
    pinger = subprocess.Popen(["ip", "netns", "exec", b.ns.name, "ping", "-i", "0.1", "-W", "1", a.ip],
                              stdout=subprocess.PIPE, text=True)
    try:
        time.sleep(1)
        assert cluster.stop_flanneld(n1) == 0
        assert "Exiting cleanly" in n1.log()
        cluster.start_flanneld(n1, *n1.args)
        cluster.wait_ready(n1)
        time.sleep(1)
    finally:
        pinger.send_signal(signal.SIGINT)
        out = pinger.communicate(timeout=10)[0]
    m = re.search(r"(\d+) packets transmitted, (\d+) received", out)
    assert m, out
    sent, recv = int(m.group(1)), int(m.group(2))
    assert sent - recv <= 3, out
    assert n1.subnet_env() == before_env
    assert json_of(n1.ns, "ip", "-j", "link", "show", "flannel.1")[0]["address"] == before_mac


def test_etcd_outage_keeps_traffic_and_resumes(cluster):
    nodes = boot(cluster, {"Network": "10.42.0.0/16", "Backend": {"Type": "vxlan"}}, 2)
    n1, n2 = nodes
    a, b = cluster.add_pod(n1, "a"), cluster.add_pod(n2, "b")
    cluster.etcd.stop()
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        assert ping(a, b.ip, 1), "pod traffic stopped while etcd was down"
        time.sleep(2)
    assert n1.proc.poll() is None and n2.proc.poll() is None
    code, body = cluster.health(n1)
    assert code == 503, body  # the fault is reported on /readyz, with the data plane kept
    assert "2379" in body or "etcd" in body.lower(), body
    cluster.etcd.start()
    # the watch resumed: a node joining now is programmed on the old ones
    n3 = cluster.add_node("node3")
    cluster.start_flanneld(n3, "--ip-masq")
    cluster.wait_ready(n3)
    c = cluster.add_pod(n3, "c")
    wait_for(lambda: ping(a, c.ip, 1), 30, what="n1's pod reaches the new node's pod")
    cluster.wait_ready(n1)
    assert ping(b, c.ip)


def test_repairs_route_neighbour_and_device(cluster):
    nodes = boot(cluster, {"Network": "10.42.0.0/16", "Backend": {"Type": "vxlan"}}, 2)
    n1, n2 = nodes
    a, b = cluster.add_pod(n1, "a"), cluster.add_pod(n2, "b")
    sub2 = str(ipaddress.ip_network(n2.subnet_env()["FLANNEL_SUBNET"], strict=False))
    gw2 = sub2.split("/")[0]
    n1.ns.run("ip", "route", "del", sub2)
    wait_for(lambda: route_to(n1, sub2), what="the route repaired")
    n1.ns.run("ip", "neigh", "del", gw2, "dev", "flannel.1")
    wait_for(lambda: any(e["dst"] == gw2 for e in json_of(n1.ns, "ip", "-j", "neigh", "show", "dev", "flannel.1")),
             what="the neighbour repaired")
    mac = json_of(n1.ns, "ip", "-j", "link", "show", "flannel.1")[0]["address"]
    n1.ns.run("ip", "link", "del", "flannel.1")
    wait_for(lambda: route_to(n1, sub2), what="the device and its peers recreated")
    assert json_of(n1.ns, "ip", "-j", "link", "show", "flannel.1")[0]["address"] == mac
    assert wait_for(lambda: ping(a, b.ip, 1), what="traffic after the repair")
    assert "recreated" in n1.log()


def test_malformed_key_is_skipped(cluster):
    nodes = boot(cluster, {"Network": "10.42.0.0/16", "Backend": {"Type": "vxlan"}}, 2)
    n1, n2 = nodes
    sub2 = str(ipaddress.ip_network(n2.subnet_env()["FLANNEL_SUBNET"], strict=False))
    cluster.etcd.put(f"{PREFIX}/subnets/not-a-subnet", "{}")
    cluster.etcd.put(f"{PREFIX}/subnets/10.42.200.0-24", "{not json")
    time.sleep(3)
    assert route_to(n1, sub2) is not None
    assert route_to(n1, "10.42.200.0/24") is None
    assert "not-a-subnet" in n1.log() and "10.42.200.0-24" in n1.log()
    cluster.wait_ready(n1)


def test_invalid_config_exits_1(cluster):
    cluster.start_etcd()
    cluster.put_config({"Network": "10.42.0.0/16", "SubnetLen": 31, "Backend": {"Type": "vxlan"}})
    node = cluster.add_node("node1")
    proc = cluster.start_flanneld(node)
    assert proc.wait(60) == 1
    assert "SubnetLen must be less than /31" in node.log()
    assert "Traceback" not in node.log()


def test_out_of_subnets_exits_1(cluster):
    cluster.start_etcd()
    # SubnetMin..SubnetMax holds two /30 subnets: 10.42.0.4 and 10.42.0.8
    cluster.put_config({"Network": "10.42.0.0/28", "SubnetLen": 30, "SubnetMin": "10.42.0.4",
                        "SubnetMax": "10.42.0.8", "Backend": {"Type": "vxlan"}})
    n1, n2, n3 = (cluster.add_node(f"node{i}") for i in (1, 2, 3))
    for n in (n1, n2):
        cluster.start_flanneld(n)
    cluster.wait_ready(n1)
    cluster.wait_ready(n2)
    proc = cluster.start_flanneld(n3)
    assert proc.wait(60) == 1
    assert "out of subnets" in n3.log()
    assert "Traceback" not in n3.log()
    assert len(leases(cluster)) == 2
