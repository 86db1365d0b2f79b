"""The kube subnet manager against the tests' API server (tests/kubeapi: TLS, bearer tokens, RBAC,
real list/watch/patch semantics), in process, listening on 127.0.0.1 (§6)."""
from __future__ import annotations

import ipaddress
import logging
import os
import re
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from kubeapi import FLANNEL_RULES, FLANNEL_USER, SEED_RULES, KubeAPIServer

from cni_flannel.flanneld.cli import Options
from cni_flannel.flanneld.subnet.kube import KubeSubnetManager
from cni_flannel.flanneld.subnet.kubeclient import KubeClient, load_config
from cni_flannel.flanneld.subnet.lease import Lease, LeaseAttrs
from cni_flannel.flanneld.subnet.manager import LeaseError, PeerTable, TransientError

P = "flannel.alpha.coreos.com/"
MAC = "12:c6:65:89:b4:e3"
MAC6 = "9a:1b:2c:3d:4e:5f"
STRATEGIC = "application/strategic-merge-patch+json"
V4_CONF = '{"Network":"10.244.0.0/16","Backend":{"Type":"vxlan"}}'
DUAL_CONF = '{"Network":"10.244.0.0/16","EnableIPv6":true,"IPv6Network":"fd00:244::/56","Backend":{"Type":"vxlan"}}'


def wait_for(what: str, fn: Callable[[], Any], timeout: float = 30.0) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = fn()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.05)


def vxlan_attrs(ip: str = "192.168.1.10", mac: str = MAC, ip6: str | None = None,
                mac6: str | None = None) -> LeaseAttrs:
    return LeaseAttrs(public_ip=ipaddress.IPv4Address(ip),
                      public_ipv6=ipaddress.IPv6Address(ip6) if ip6 else None, backend_type="vxlan",
                      backend_data={"VNI": 1, "VtepMAC": mac},
                      backend_v6_data={"VNI": 1, "VtepMAC": mac6} if mac6 else None)


def go_annotations(ip: str, mac: str, ip6: str | None = None, mac6: str | None = None) -> dict[str, str]:
    """What a Go flanneld (H) writes on its Node."""
    ann = {P + "kube-subnet-manager": "true", P + "backend-type": "vxlan",
           P + "backend-data": f'{{"VNI":1,"VtepMAC":"{mac}"}}', P + "public-ip": ip}
    if ip6 and mac6:
        ann[P + "backend-v6-data"] = f'{{"VNI":1,"VtepMAC":"{mac6}"}}'
        ann[P + "public-ipv6"] = ip6
    return ann


@pytest.fixture
def srv(tmp_path: Path) -> Iterator[KubeAPIServer]:
    server = KubeAPIServer(host="127.0.0.1", workdir=str(tmp_path / "api"), bookmark_interval=0.5).start()
    yield server
    server.stop()


class Env:
    def __init__(self, srv: KubeAPIServer, tmp_path: Path) -> None:
        self.srv, self.tmp = srv, tmp_path
        self.kubeconfig = srv.write_kubeconfig(str(tmp_path / "kubeconfig"), token="flannel-token")
        self.made: list[KubeSubnetManager] = []
        self.stop = threading.Event()
        self.threads: list[threading.Thread] = []

    def manager(self, conf: str = V4_CONF, node_name: str = "n1", **kw: Any) -> KubeSubnetManager:
        path = self.tmp / f"net-conf-{len(self.made)}.json"
        path.write_text(conf)
        client = KubeClient(load_config(self.kubeconfig, "", {}, str(self.tmp / "no-sa")))
        kw.setdefault("poll_s", 0.1)
        m = KubeSubnetManager(client, node_name=node_name, net_config_path=str(path), **kw)
        self.made.append(m)
        return m

    def spawn(self, fn: Callable[..., Any], *args: Any) -> threading.Thread:
        t = threading.Thread(target=fn, args=args, daemon=True)
        t.start()
        self.threads.append(t)
        return t

    def watch(self, m: KubeSubnetManager, own_key: str = "") -> PeerTable:
        peers = PeerTable(own_key)
        self.spawn(m.watch_leases, peers, self.stop)
        wait_for("the first node list", lambda: peers.synced)
        return peers

    def close(self) -> None:
        self.stop.set()
        for t in self.threads:
            t.join(10)
        alive = [t for t in self.threads if t.is_alive()]
        for m in self.made:
            m.close()
        assert not alive, "a manager loop did not return on stop"


@pytest.fixture
def env(srv: KubeAPIServer, tmp_path: Path) -> Iterator[Env]:
    e = Env(srv, tmp_path)
    yield e
    e.close()


def ours(node: dict[str, Any]) -> dict[str, str]:
    return {k: v for k, v in (node["metadata"].get("annotations") or {}).items() if k.startswith(P)}


def leases_by_key(peers: PeerTable) -> dict[str, Lease]:
    return {lease.key: lease for lease in peers.snapshot()[1]}


# ------------------------------------------------------------------ AcquireLease

def test_acquire_writes_the_annotations_as_the_go_flanneld(env: Env, srv: KubeAPIServer) -> None:
    srv.create_node("n1", pod_cidr="10.244.1.0/24")
    m = env.manager()
    lease = m.acquire_lease(vxlan_attrs())
    assert lease.subnet == ipaddress.IPv4Network("10.244.1.0/24") and lease.ipv6_subnet is None
    assert lease.key == "10.244.1.0-24" and lease.expiration > time.time() + 23 * 3600
    node = srv.get_node("n1")
    assert node is not None
    assert ours(node) == {
        P + "kube-subnet-manager": "true",
        P + "backend-type": "vxlan",
        P + "backend-data": '{"VNI":1,"VtepMAC":"12:c6:65:89:b4:e3"}',
        P + "public-ip": "192.168.1.10",
    }
    assert node["metadata"]["annotations"]["node.alpha.kubernetes.io/ttl"] == "0"  # others kept
    patches = [r for r in srv.requests if r[0] == "PATCH"]
    assert patches == [("PATCH", "/api/v1/nodes/n1/status", STRATEGIC, FLANNEL_USER)]
    # nothing differs the second time: no PATCH at all
    m.acquire_lease(vxlan_attrs())
    assert [r for r in srv.requests if r[0] == "PATCH"] == patches


def test_acquire_on_a_node_without_annotations(env: Env, srv: KubeAPIServer) -> None:
    srv.create_node("n1", pod_cidr="10.244.1.0/24", annotations={})  # nil map: the reference panics (#818)
    assert "annotations" not in (srv.get_node("n1") or {})["metadata"]
    env.manager().acquire_lease(vxlan_attrs())
    assert ours(srv.get_node("n1") or {})[P + "kube-subnet-manager"] == "true"


def test_acquire_dual_stack_and_overwrite(env: Env, srv: KubeAPIServer) -> None:
    srv.create_node("n1", pod_cidrs=["10.244.1.0/24", "fd00:244:0:1::/64"],
                    annotations={P + "public-ip-overwrite": "203.0.113.9"})
    lease = env.manager(DUAL_CONF).acquire_lease(vxlan_attrs(ip6="fd00::10", mac6=MAC6))
    assert lease.key == "10.244.1.0-24&fd00:244:0:1::-64"
    assert lease.attrs.public_ip == ipaddress.IPv4Address("192.168.1.10")  # the local address stays local
    assert ours(srv.get_node("n1") or {}) == {
        P + "public-ip-overwrite": "203.0.113.9",
        P + "kube-subnet-manager": "true",
        P + "backend-type": "vxlan",
        P + "backend-data": f'{{"VNI":1,"VtepMAC":"{MAC}"}}',
        P + "public-ip": "203.0.113.9",
        P + "backend-v6-data": f'{{"VNI":1,"VtepMAC":"{MAC6}"}}',
        P + "public-ipv6": "fd00::10",
    }


def test_podcidr_outside_network_is_refused_before_publishing(env: Env, srv: KubeAPIServer) -> None:
    srv.create_node("n1", pod_cidr="10.99.1.0/24")
    with pytest.raises(LeaseError, match=re.escape('doesn\'t contain "10.99.1.0/24" PodCIDR of the "n1" node')):
        env.manager().acquire_lease(vxlan_attrs())
    assert ours(srv.get_node("n1") or {}) == {}


def test_late_podcidr_is_waited_for(env: Env, srv: KubeAPIServer, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, "flanneld.kube")
    srv.create_node("n1")
    m = env.manager(podcidr_wait_s=0.3)
    with pytest.raises(TransientError, match='node "n1" pod cidr not assigned'):
        m.acquire_lease(vxlan_attrs())
    assert 'node "n1" pod cidr not assigned; waiting: the controller-manager assigns it with ' \
           "--allocate-node-cidrs=true" in caplog.text
    m.podcidr_wait_s = 60.0
    got: list[Lease] = []
    t = env.spawn(lambda: got.append(m.acquire_lease(vxlan_attrs())))
    wait_for("a few polls of the own node", lambda: sum(r[1] == "/api/v1/nodes/n1" for r in srv.requests) >= 4)
    srv.update_node("n1", lambda n: n["spec"].update(podCIDR="10.244.7.0/24", podCIDRs=["10.244.7.0/24"]))
    t.join(30)
    assert got and got[0].key == "10.244.7.0-24"
    assert ours(srv.get_node("n1") or {})[P + "public-ip"] == "192.168.1.10"


def test_transient_faults_surface_as_transient(env: Env, srv: KubeAPIServer) -> None:
    srv.create_node("n1", pod_cidr="10.244.1.0/24")
    m = env.manager()
    srv.fail_next(1, 503)
    with pytest.raises(TransientError, match="503"):
        m.acquire_lease(vxlan_attrs())
    assert m.acquire_lease(vxlan_attrs()).key == "10.244.1.0-24"


# ------------------------------------------------------------------ stored values, seed RBAC

def test_stored_backend_data_and_node_public_ip(env: Env, srv: KubeAPIServer) -> None:
    ann = go_annotations("192.168.1.10", MAC, "fd00::10", MAC6)
    ann[P + "node-public-ip"] = "192.168.1.77"
    ann[P + "node-public-ipv6"] = "fd00::77"
    srv.create_node("n1", pod_cidr="10.244.1.0/24", annotations=ann)
    m = env.manager()
    assert m.stored_backend_data() == ({"VNI": 1, "VtepMAC": MAC}, {"VNI": 1, "VtepMAC": MAC6})
    assert m.node_public_ip() == ("192.168.1.77", "fd00::77")
    assert ("GET", "/api/v1/nodes/n1", None, FLANNEL_USER) in srv.requests


def test_seed_rbac_without_nodes_get(env: Env, srv: KubeAPIServer, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, "flanneld.kube")
    srv.rbac[FLANNEL_USER] = SEED_RULES
    srv.create_node("n1", pod_cidr="10.244.1.0/24", annotations=go_annotations("192.168.1.10", MAC))
    m = env.manager()
    assert m.stored_backend_data() == ({"VNI": 1, "VtepMAC": MAC}, None)
    assert "RBAC: cannot get resource nodes: add `get` on `nodes` to the ClusterRole" in caplog.text
    assert m.node_public_ip() == ("", "")
    assert m.acquire_lease(vxlan_attrs(ip="192.168.1.11")).key == "10.244.1.0-24"
    gets = [r for r in srv.requests if r[0] == "GET" and r[1].startswith("/api/v1/nodes/n1")]
    assert len(gets) == 1  # refused once, then listed by name
    assert any(r[1].startswith("/api/v1/nodes?") and "fieldSelector=metadata.name%3Dn1" in r[1]
               for r in srv.requests)
    assert ours(srv.get_node("n1") or {})[P + "public-ip"] == "192.168.1.11"


# ------------------------------------------------------------------ CompleteLease

def test_keep_lease_sets_the_condition_and_restores_annotations(env: Env, srv: KubeAPIServer) -> None:
    srv.create_node("n1", pod_cidr="10.244.1.0/24")
    m = env.manager()
    lease = m.acquire_lease(vxlan_attrs())
    env.watch(m, lease.key)
    srv.fail_next(2, 503)  # the condition is retried until it is set (the reference gives up at once)
    env.spawn(m.keep_lease, lease, lambda _l: None, env.stop)

    def condition() -> dict[str, Any] | None:
        for c in ((srv.get_node("n1") or {}).get("status") or {}).get("conditions") or []:
            if c["type"] == "NetworkUnavailable":
                return c  # type: ignore[no-any-return]
        return None

    cond = wait_for("NetworkUnavailable", condition)
    assert {k: cond[k] for k in ("type", "status", "reason", "message")} == {
        "type": "NetworkUnavailable", "status": "False", "reason": "FlannelIsUp",
        "message": "Flannel is running on this node"}
    assert cond["lastHeartbeatTime"] == cond["lastTransitionTime"]
    assert time.strptime(cond["lastHeartbeatTime"], "%Y-%m-%dT%H:%M:%SZ")
    assert all(r[1] == "/api/v1/nodes/n1/status" and r[2] == STRATEGIC for r in srv.requests if r[0] == "PATCH")
    # someone removes one annotation and changes another: both come back
    srv.update_node("n1", lambda n: (n["metadata"]["annotations"].pop(P + "backend-data"),
                                     n["metadata"]["annotations"].__setitem__(P + "public-ip", "10.0.0.1")))
    wait_for("the annotations back", lambda: ours(srv.get_node("n1") or {}) == {
        P + "kube-subnet-manager": "true", P + "backend-type": "vxlan",
        P + "backend-data": f'{{"VNI":1,"VtepMAC":"{MAC}"}}', P + "public-ip": "192.168.1.10"})


# ------------------------------------------------------------------ peers

def test_peers_from_nodes_annotated_by_the_go_flanneld(env: Env, srv: KubeAPIServer,
                                                       caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, "flanneld.kube")
    srv.create_node("n1", pod_cidr="10.244.1.0/24")
    srv.create_node("n2", pod_cidr="10.244.2.0/24", annotations=go_annotations("192.168.1.20", MAC))
    srv.create_node("n3", pod_cidr="10.244.3.0/24")  # no flannel on it
    srv.create_node("n4", annotations=go_annotations("192.168.1.40", MAC))  # no podCIDR
    m = env.manager()
    lease = m.acquire_lease(vxlan_attrs())
    peers = env.watch(m, lease.key)
    assert leases_by_key(peers) == {"10.244.2.0-24": Lease(
        ipaddress.IPv4Network("10.244.2.0/24"), None,
        LeaseAttrs(public_ip=ipaddress.IPv4Address("192.168.1.20"), backend_type="vxlan",
                   backend_data={"VNI": 1, "VtepMAC": MAC}))}
    assert 'Error turning node "n4" to lease: no IPv4 podCIDR' in caplog.text
    # a new node, a deleted node, a podCIDR change
    srv.create_node("n5", pod_cidr="10.244.5.0/24", annotations=go_annotations("192.168.1.50", MAC))
    wait_for("n5", lambda: "10.244.5.0-24" in leases_by_key(peers))
    srv.delete_node("n2")
    wait_for("n2 gone", lambda: "10.244.2.0-24" not in leases_by_key(peers))
    srv.update_node("n5", lambda n: n["spec"].update(podCIDR="10.244.55.0/24", podCIDRs=["10.244.55.0/24"]))
    wait_for("n5's new podCIDR", lambda: set(leases_by_key(peers)) == {"10.244.55.0-24"})
    # n4 gets its podCIDR late: it becomes a peer
    srv.update_node("n4", lambda n: n["spec"].update(podCIDR="10.244.4.0/24", podCIDRs=["10.244.4.0/24"]))
    wait_for("n4", lambda: set(leases_by_key(peers)) == {"10.244.55.0-24", "10.244.4.0-24"})
    # a MAC change is seen; the flannel annotation removed takes the node out
    srv.update_node("n4", lambda n: n["metadata"]["annotations"].__setitem__(
        P + "backend-data", '{"VNI":1,"VtepMAC":"aa:bb:cc:dd:ee:ff"}'))
    wait_for("n4's new MAC", lambda: leases_by_key(peers)["10.244.4.0-24"].attrs.backend_data["VtepMAC"]
             == "aa:bb:cc:dd:ee:ff")
    srv.update_node("n4", lambda n: n["metadata"]["annotations"].pop(P + "kube-subnet-manager"))
    wait_for("n4 out", lambda: set(leases_by_key(peers)) == {"10.244.55.0-24"})
    assert "10.244.1.0-24" not in leases_by_key(peers)  # the own lease is never a peer
    watches = [r for r in srv.requests if r[1].startswith("/api/v1/nodes?") and "watch=true" in r[1]]
    assert watches and all("allowWatchBookmarks=true" in r[1] and "resourceVersion=" in r[1] for r in watches)


def test_dual_stack_v4_only_mac_change_is_seen(env: Env, srv: KubeAPIServer) -> None:
    srv.create_node("n1", pod_cidrs=["10.244.1.0/24", "fd00:244:0:1::/64"])
    srv.create_node("n2", pod_cidrs=["10.244.2.0/24", "fd00:244:0:2::/64"],
                    annotations=go_annotations("192.168.1.20", MAC, "fd00::20", MAC6))
    m = env.manager(DUAL_CONF)
    lease = m.acquire_lease(vxlan_attrs(ip6="fd00::10", mac6=MAC6))
    peers = env.watch(m, lease.key)
    key = "10.244.2.0-24&fd00:244:0:2::-64"
    assert leases_by_key(peers)[key].attrs.backend_v6_data == {"VNI": 1, "VtepMAC": MAC6}
    srv.update_node("n2", lambda n: n["metadata"]["annotations"].__setitem__(
        P + "backend-data", '{"VNI":1,"VtepMAC":"aa:bb:cc:dd:ee:01"}'))  # ⚠ lost by the reference
    wait_for("the v4 MAC", lambda: leases_by_key(peers)[key].attrs.backend_data["VtepMAC"] == "aa:bb:cc:dd:ee:01")
    assert leases_by_key(peers)[key].attrs.backend_v6_data == {"VNI": 1, "VtepMAC": MAC6}


def test_pagination(env: Env, srv: KubeAPIServer) -> None:
    for i in range(1, 1201):
        srv.create_node(f"p{i:04d}", pod_cidr=f"10.{240 + i // 256}.{i % 256}.0/24",
                        annotations=go_annotations(f"192.168.{i // 256}.{i % 256}", MAC))
    m = env.manager(node_name="p0001")
    m.config.network = ipaddress.IPv4Network("10.240.0.0/12")
    peers = env.watch(m, "10.240.1.0-24")
    assert len(peers.snapshot()[1]) == 1199
    lists = [r[1] for r in srv.requests if r[1].startswith("/api/v1/nodes?") and "watch" not in r[1]]
    assert len(lists) == 3 and all("limit=500" in q for q in lists)
    assert "continue=" not in lists[0] and all("continue=" in q for q in lists[1:])


def test_api_restart_with_compaction_relists_and_loses_nothing(env: Env, srv: KubeAPIServer) -> None:
    srv.create_node("n1", pod_cidr="10.244.1.0/24")
    for i in (2, 3, 4):
        srv.create_node(f"n{i}", pod_cidr=f"10.244.{i}.0/24", annotations=go_annotations(f"192.168.1.{i}", MAC))
    m = env.manager()
    lease = m.acquire_lease(vxlan_attrs())
    peers = env.watch(m, lease.key)
    assert set(leases_by_key(peers)) == {"10.244.2.0-24", "10.244.3.0-24", "10.244.4.0-24"}
    srv.stop()
    wait_for("the fault seen", lambda: "node list/watch" in m.health())
    assert len(peers.snapshot()[1]) == 3  # the table (and so the dataplane) stays while the API is down
    # while the API is down: a node goes, one comes, one changes; then a fresh watch cache (410)
    srv.delete_node("n2")
    srv.create_node("n6", pod_cidr="10.244.6.0/24", annotations=go_annotations("192.168.1.6", MAC))
    srv.update_node("n3", lambda n: n["metadata"]["annotations"].__setitem__(P + "public-ip", "192.168.9.3"))
    srv.restart(compact=True)
    wait_for("the re-list", lambda: set(leases_by_key(peers)) == {"10.244.3.0-24", "10.244.4.0-24",
                                                                   "10.244.6.0-24"})
    assert leases_by_key(peers)["10.244.3.0-24"].attrs.public_ip == ipaddress.IPv4Address("192.168.9.3")
    wait_for("health clear", lambda: m.health() == "")
    srv.create_node("n7", pod_cidr="10.244.7.0/24", annotations=go_annotations("192.168.1.7", MAC))
    wait_for("the watch again", lambda: "10.244.7.0-24" in leases_by_key(peers))


def test_restart_without_compaction_resumes_the_watch(env: Env, srv: KubeAPIServer) -> None:
    srv.create_node("n1", pod_cidr="10.244.1.0/24")
    m = env.manager()
    peers = env.watch(m, m.acquire_lease(vxlan_attrs()).key)
    lists_before = sum(1 for r in srv.requests if r[1].startswith("/api/v1/nodes?limit="))
    srv.restart()
    srv.create_node("n2", pod_cidr="10.244.2.0/24", annotations=go_annotations("192.168.1.2", MAC))
    wait_for("n2", lambda: "10.244.2.0-24" in leases_by_key(peers))
    assert sum(1 for r in srv.requests if r[1].startswith("/api/v1/nodes?limit=")) == lists_before


def test_periodic_relist_replaces_the_table(env: Env, srv: KubeAPIServer) -> None:
    srv.create_node("n1", pod_cidr="10.244.1.0/24")
    m = env.manager(relist_period_s=1.0)
    peers = env.watch(m, m.acquire_lease(vxlan_attrs()).key)
    peers.upsert(Lease(ipaddress.IPv4Network("10.244.99.0/24"), None, LeaseAttrs()))  # a stale entry
    wait_for("a re-list", lambda: "10.244.99.0-24" not in leases_by_key(peers))
    lists = [r[1] for r in srv.requests if r[1].startswith("/api/v1/nodes?") and "watch" not in r[1]]
    assert "resourceVersion" not in lists[0]  # the first list is a fresh read
    assert "resourceVersion=0" in lists[1]  # the periodic ones come from the watch cache
    watches = [r[1] for r in srv.requests if "watch=true" in r[1]]
    assert all("timeoutSeconds=1&" in w for w in watches)  # each watch ends when the re-list is due


def test_watch_refused_by_rbac_is_named_and_retried(env: Env, srv: KubeAPIServer,
                                                    caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, "flanneld.kube")
    srv.create_node("n2", pod_cidr="10.244.2.0/24", annotations=go_annotations("192.168.1.2", MAC))
    srv.rbac[FLANNEL_USER] = FLANNEL_RULES - {("watch", "nodes")}
    m = env.manager()
    peers = PeerTable()
    env.spawn(m.watch_leases, peers, env.stop)
    wait_for("the refusal", lambda: "cannot watch resource nodes" in m.health())
    assert "RBAC: cannot watch resource nodes: add `watch` on `nodes` to the ClusterRole" in caplog.text
    assert set(leases_by_key(peers)) == {"10.244.2.0-24"}  # the list worked
    srv.rbac[FLANNEL_USER] = FLANNEL_RULES
    srv.create_node("n3", pod_cidr="10.244.3.0/24", annotations=go_annotations("192.168.1.3", MAC))
    wait_for("the watch once allowed", lambda: "10.244.3.0-24" in leases_by_key(peers))
    wait_for("health clear", lambda: m.health() == "")


# ------------------------------------------------------------------ configuration sources

def opts(**kw: Any) -> Options:
    return Options(kube_subnet_mgr=True, **kw)


def test_from_options_reads_kubeconfig_env_and_the_pod(env: Env, srv: KubeAPIServer, tmp_path: Path) -> None:
    srv.create_node("n1", pod_cidr="10.244.1.0/24")
    srv.create_pod("kube-flannel", "kube-flannel-ds-abcde", "n1")
    (tmp_path / "nc.json").write_text(V4_CONF)
    m = KubeSubnetManager.from_options(
        opts(net_config_path=str(tmp_path / "nc.json")),
        env={"KUBECONFIG": env.kubeconfig, "POD_NAME": "kube-flannel-ds-abcde", "POD_NAMESPACE": "kube-flannel"},
        sa_dir=str(tmp_path / "no-sa"))
    env.made.append(m)
    assert m.node_name == "n1"
    assert ("GET", "/api/v1/namespaces/kube-flannel/pods/kube-flannel-ds-abcde", None, FLANNEL_USER) in srv.requests
    assert m.acquire_lease(vxlan_attrs()).key == "10.244.1.0-24"


def test_from_options_pod_errors(env: Env, srv: KubeAPIServer, tmp_path: Path) -> None:
    (tmp_path / "nc.json").write_text(V4_CONF)
    o = opts(net_config_path=str(tmp_path / "nc.json"), kubeconfig_file=env.kubeconfig)
    base = {"POD_NAME": "p", "POD_NAMESPACE": "kube-flannel"}
    with pytest.raises(Exception, match=re.escape("error retrieving pod spec for 'kube-flannel/p': get pods: 404")):
        KubeSubnetManager.from_options(o, env=base, sa_dir=str(tmp_path / "no-sa"))
    srv.create_pod("kube-flannel", "p", "")
    with pytest.raises(Exception, match=re.escape("node name not present in pod spec 'kube-flannel/p'")):
        KubeSubnetManager.from_options(o, env=base, sa_dir=str(tmp_path / "no-sa"))


def test_in_cluster_token_rotation(env: Env, srv: KubeAPIServer, tmp_path: Path) -> None:
    srv.create_node("n1", pod_cidr="10.244.1.0/24", annotations={P + "node-public-ip": "192.168.1.5"})
    sa = srv.write_serviceaccount(str(tmp_path / "sa"), token="flannel-token")
    (tmp_path / "nc.json").write_text(V4_CONF)
    m = KubeSubnetManager.from_options(opts(net_config_path=str(tmp_path / "nc.json")),
                                       env={**srv.incluster_env(), "NODE_NAME": "n1"}, sa_dir=sa)
    env.made.append(m)
    assert m.client.server == srv.url
    assert m.node_public_ip() == ("192.168.1.5", "")
    assert srv.requests[-1][3] == FLANNEL_USER
    # the kubelet rotates the token (atomic rename); the old one stops working
    srv.tokens["rotated-token"] = "rotated-user"
    srv.rbac["rotated-user"] = FLANNEL_RULES
    del srv.tokens["flannel-token"]
    Path(sa, "token.tmp").write_text("rotated-token")
    os.replace(Path(sa, "token.tmp"), Path(sa, "token"))
    assert m.node_public_ip() == ("192.168.1.5", "")
    assert srv.requests[-1][3] == "rotated-user"
    assert all(r[3] is not None for r in srv.requests)  # no request went out with the stale token


def test_bad_annotation_prefix_is_fatal(env: Env, tmp_path: Path) -> None:
    (tmp_path / "nc.json").write_text(V4_CONF)
    with pytest.raises(Exception) as exc:
        KubeSubnetManager.from_options(opts(net_config_path=str(tmp_path / "nc.json"), kubeconfig_file=env.kubeconfig,
                                            kube_annotation_prefix="a/b/c"), env={"NODE_NAME": "n1"})
    assert str(exc.value) == "error creating network manager: subnet/kube: prefix can contain at most single slash"
