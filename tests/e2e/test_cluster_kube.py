"""flanneld --kube-subnet-mgr end to end against the tests' API server (tests/kubeapi), three node
namespaces, pods made with our CNI plugins (flanneld-reference §6, §7, §8).

The API server listens in its own namespace on the underlay, over TLS with a bearer token and
the manifest's RBAC; flanneld on each node reaches it through a kubeconfig, as a real node would.
"""
from __future__ import annotations

import ipaddress
import json
import time

import pytest
from flanneld_cluster import SEED_NET_CONF, Cluster, exchange, json_of, ping

pytestmark = pytest.mark.kernel
P = "flannel.alpha.coreos.com"


@pytest.fixture
def cluster(lab, tmp_path):
    cl = Cluster(lab, str(tmp_path))
    yield cl
    cl.destroy()


def wait_for(pred, timeout: float = 30, step: float = 0.3, what: str = "condition"):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = pred()
        if value:
            return value
        time.sleep(step)
    raise AssertionError(f"timed out waiting for {what}")


def route_to(node, subnet: str) -> dict | None:
    return next((r for r in json_of(node.ns, "ip", "-j", "route", "show") if r.get("dst") == subnet), None)


def boot(cluster: Cluster, conf: dict, count: int = 3, cidrs: dict[str, str | None] | None = None) -> list:
    srv = cluster.kubeapi or cluster.start_kubeapi()
    nodes = []
    for i in range(1, count + 1):
        node = cluster.add_node(f"node{i}")
        cidr = (cidrs or {}).get(node.name, f"10.42.{i}.0/24")
        srv.create_node(node.name, pod_cidr=cidr, pod_cidrs=[cidr] if cidr else None,
                        addresses=[{"type": "InternalIP", "address": node.host.ip}])
        nodes.append(node)
    for node in nodes:
        cluster.start_flanneld(node, "--ip-masq", *cluster.kube_args(node, conf), env={"NODE_NAME": node.name})
    return nodes


@pytest.mark.parametrize("backend", ["vxlan-directrouting", "vxlan", "host-gw"])
def test_three_nodes_annotations_condition_and_pods(cluster, backend):
    conf = SEED_NET_CONF if backend == "vxlan-directrouting" else {
        "Network": "10.42.0.0/16", "Backend": {"Type": "host-gw" if backend == "host-gw" else "vxlan"}}
    nodes = boot(cluster, conf)
    cluster.wait_all_ready(90)
    srv = cluster.kubeapi
    for i, node in enumerate(nodes, 1):
        obj = srv.get_node(node.name)
        ann = obj["metadata"]["annotations"]
        assert ann[f"{P}/kube-subnet-manager"] == "true"
        assert ann[f"{P}/public-ip"] == node.host.ip
        if backend == "host-gw":
            assert ann[f"{P}/backend-type"] == "host-gw" and ann[f"{P}/backend-data"] == "null"
        else:
            mac = json_of(node.ns, "ip", "-j", "link", "show", "flannel.1")[0]["address"]
            assert ann[f"{P}/backend-type"] == "vxlan"
            assert ann[f"{P}/backend-data"] == json.dumps({"VNI": 1, "VtepMAC": mac}, separators=(",", ":"))
        cond = next(c for c in obj["status"]["conditions"] if c["type"] == "NetworkUnavailable")
        assert (cond["status"], cond["reason"], cond["message"]) == ("False", "FlannelIsUp",
                                                                     "Flannel is running on this node")
        with open(node.subnet_file) as f:
            mtu = 1500 if backend == "host-gw" else 1450
            assert f.read() == (f"FLANNEL_NETWORK=10.42.0.0/16\nFLANNEL_SUBNET=10.42.{i}.1/24\n"
                                f"FLANNEL_MTU={mtu}\nFLANNEL_IPMASQ=true\n")
    # §6.4: the annotations were patched on nodes/<n>/status with a strategic merge patch
    patches = [r for r in srv.requests if r[0] == "PATCH"]
    assert patches and all(r[1].split("?")[0].endswith("/status") for r in patches)
    assert all(r[2] == "application/strategic-merge-patch+json" for r in patches)
    for node in nodes:
        cluster.add_pod(node, "a")
    pods = [n.pods[0] for n in nodes]
    for a in pods:
        for b in pods:
            if a is not b:
                assert ping(a, b.ip), f"{a.node.name} -> {b.node.name}"
    assert exchange(pods[0], pods[2], 7001) == f"hello-from-{pods[2].name} {pods[0].ip}"


def test_node_deleted_late_podcidr_and_relist(cluster):
    conf = {"Network": "10.42.0.0/16", "Backend": {"Type": "vxlan"}}
    nodes = boot(cluster, conf, 3, cidrs={"node3": None})
    n1, n2, n3 = nodes
    cluster.wait_ready(n1)
    cluster.wait_ready(n2)
    # node3 has no podCIDR: flanneld waits and says why (⚠ #728: the reference exits 1)
    time.sleep(3)
    assert n3.proc.poll() is None
    assert "allocate-node-cidrs" in n3.log()
    cluster.kubeapi.update_node("node3", lambda n: n["spec"].update(podCIDR="10.42.3.0/24",
                                                                      podCIDRs=["10.42.3.0/24"]))
    cluster.wait_ready(n3)
    wait_for(lambda: route_to(n1, "10.42.3.0/24"), what="node3 programmed on node1")
    # the API server restarts and forgets its history (410 Gone): a re-list, nothing lost
    cluster.kubeapi.restart()
    cluster.kubeapi.compact()
    n4 = cluster.add_node("node4")
    cluster.kubeapi.create_node("node4", pod_cidr="10.42.4.0/24", pod_cidrs=["10.42.4.0/24"])
    cluster.start_flanneld(n4, *cluster.kube_args(n4, conf), env={"NODE_NAME": "node4"})
    cluster.wait_ready(n4)
    wait_for(lambda: route_to(n1, "10.42.4.0/24"), what="node4 programmed on node1 after the restart")
    assert route_to(n1, "10.42.2.0/24") and route_to(n1, "10.42.3.0/24")
    # a Node deleted from the API: its peer entries go everywhere
    cluster.kubeapi.delete_node("node2")
    for n in (n1, n3, n4):
        wait_for(lambda n=n: route_to(n, "10.42.2.0/24") is None, what=f"node2's route gone on {n.name}")


def test_restart_keeps_mac_and_peer_entries(cluster):
    conf = {"Network": "10.42.0.0/16", "Backend": {"Type": "vxlan"}}
    n1, n2 = boot(cluster, conf, 2)
    cluster.wait_all_ready(90)
    mac = json_of(n1.ns, "ip", "-j", "link", "show", "flannel.1")[0]["address"]
    fdb_before = json_of(n2.ns, "bridge", "-j", "fdb", "show", "dev", "flannel.1")
    cluster.stop_flanneld(n1)
    n1.ns.run("ip", "link", "del", "flannel.1")  # even a lost device comes back with the MAC of the annotation
    cluster.start_flanneld(n1, "--ip-masq", *cluster.kube_args(n1, conf), env={"NODE_NAME": "node1"})
    cluster.wait_ready(n1)
    assert json_of(n1.ns, "ip", "-j", "link", "show", "flannel.1")[0]["address"] == mac
    time.sleep(2)
    assert json_of(n2.ns, "bridge", "-j", "fdb", "show", "dev", "flannel.1") == fdb_before


def test_mixed_cluster_with_a_go_annotated_node(cluster):
    """A node whose annotations are written exactly as the Go flanneld writes them, and whose
    kernel objects are what the Go flanneld programs from ours (§6.3, §7.3): both directions work."""
    conf = {"Network": "10.42.0.0/16", "Backend": {"Type": "vxlan"}}
    (n1,) = boot(cluster, conf, 1)
    go = cluster.add_node("gonode")
    go_mac = "12:c6:65:89:b4:e3"
    go.ns.run("ip", "link", "add", "flannel.1", "address", go_mac, "type", "vxlan", "id", "1", "local",
              go.host.ip, "dev", "eth0", "nolearning", "dstport", "8472")
    go.ns.run("ip", "link", "set", "flannel.1", "mtu", "1450", "up")
    go.ns.run("ip", "addr", "add", "10.42.9.0/32", "dev", "flannel.1")
    go.ns.run("ip", "addr", "add", "10.42.9.1/24", "dev", "lo")  # a "pod" address on the Go node
    cluster.kubeapi.create_node("gonode", pod_cidr="10.42.9.0/24", pod_cidrs=["10.42.9.0/24"], annotations={
        f"{P}/backend-data": f'{{"VNI":1,"VtepMAC":"{go_mac}"}}', f"{P}/backend-type": "vxlan",
        f"{P}/kube-subnet-manager": "true", f"{P}/public-ip": go.host.ip})
    cluster.wait_ready(n1)
    wait_for(lambda: route_to(n1, "10.42.9.0/24"), what="the Go node programmed on ours")
    ann = cluster.kubeapi.get_node("node1")["metadata"]["annotations"]
    our_mac = json.loads(ann[f"{P}/backend-data"])["VtepMAC"]
    # what the Go flanneld programs for our node (§7.3), from our annotations alone
    go.ns.run("ip", "neigh", "replace", "10.42.1.0", "lladdr", our_mac, "dev", "flannel.1", "nud", "permanent")
    go.ns.run("bridge", "fdb", "replace", our_mac, "dev", "flannel.1", "dst", ann[f"{P}/public-ip"], "self",
              "permanent")
    go.ns.run("ip", "route", "replace", "10.42.1.0/24", "via", "10.42.1.0", "dev", "flannel.1", "onlink")
    pod = cluster.add_pod(n1, "a")
    assert ping(pod, "10.42.9.1"), "our pod -> the Go node"
    assert go.ns.run("ping", "-c", "2", "-W", "2", "-I", "10.42.9.1", pod.ip, check=False).returncode == 0
    assert ipaddress.ip_address(pod.ip) in ipaddress.ip_network("10.42.1.0/24")
