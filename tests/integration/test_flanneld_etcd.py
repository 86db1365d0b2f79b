"""The etcd v3 subnet manager against a real etcd 3.4 in a lab namespace.

etcd runs in its own host namespace; the manager runs in this process, every call inside a node
namespace (``entered``), so its sockets live there and its traffic crosses the lab underlay.
Keys and values are read back with etcdctl, the reference's own tool.
"""
from __future__ import annotations

import ipaddress
import json
import logging
import threading
import time
from collections.abc import Callable
from typing import Any

import pytest
from etcd_server import EtcdProc, start_etcd
from flanneld_lab import Host, Lab

from cni_flannel.flanneld.config import candidate_subnets, parse_network_config
from cni_flannel.flanneld.subnet.etcd import CONFIG_MISSING, EtcdSubnetManager
from cni_flannel.flanneld.subnet.etcdv3 import EtcdClient
from cni_flannel.flanneld.subnet.lease import Lease, LeaseAttrs, attrs_to_json
from cni_flannel.flanneld.subnet.manager import ConfigError, LeaseError, PeerTable, TransientError
from cni_flannel.net.netns import entered

PREFIX = "/coreos.com/network"
SUBNETS = PREFIX + "/subnets/"
CONFIG = '{"Network":"10.5.0.0/16","Backend":{"Type":"vxlan"}}'
GO_VALUE = ('{"PublicIP":"192.168.77.9","PublicIPv6":null,"BackendType":"vxlan",'
            '"BackendData":{"VNI":1,"VtepMAC":"c6:d2:32:6f:8f:44"}}')


def wait_for(pred: Callable[[], Any], timeout: float = 30, what: str = "") -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        got = pred()
        if got:
            return got
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what or pred}")


def attrs_of(host: Host) -> LeaseAttrs:
    return LeaseAttrs(public_ip=ipaddress.IPv4Address(host.ip), backend_type="vxlan",
                      backend_data={"VNI": 1, "VtepMAC": host.mac})


class Node:
    """A manager whose every etcd call runs inside ``host``'s namespace."""

    def __init__(self, host: Host, etcd: EtcdProc, **kw: Any) -> None:
        self.host = host
        client_kw = kw.pop("client", {})
        if not client_kw and etcd.tls:
            client_kw = {"cafile": etcd.ca, "certfile": etcd.cert, "keyfile": etcd.key}
        self.client = EtcdClient([etcd.endpoint], timeout=2.0, **client_kw)
        kw.setdefault("prev_subnet", None)
        kw.setdefault("prev_ipv6_subnet", None)
        self.mgr = EtcdSubnetManager(self.client, PREFIX, **kw)
        self.threads: list[tuple[threading.Thread, threading.Event, list[BaseException]]] = []

    def call(self, fn: Callable[..., Any], *args: Any) -> Any:
        with entered(self.host.netns_path):
            return fn(*args)

    def acquire(self) -> Lease:
        return self.call(self.mgr.acquire_lease, attrs_of(self.host))

    def background(self, fn: Callable[..., None], *args: Any) -> threading.Event:
        stop = threading.Event()
        errors: list[BaseException] = []

        def run() -> None:
            try:
                with entered(self.host.netns_path):
                    fn(*args, stop)
            except BaseException as exc:  # reported by close()
                errors.append(exc)

        t = threading.Thread(target=run, daemon=True)
        t.start()
        self.threads.append((t, stop, errors))
        return stop

    def close(self) -> None:
        for t, stop, errors in self.threads:
            stop.set()
            t.join(15)
            assert not t.is_alive(), "a manager loop did not return after stop"
            if errors:
                raise errors[0]
        self.threads.clear()


@pytest.fixture
def env(lab: Lab):
    """(lab, etcd on its own host, make_node(**manager kwargs)); managers are stopped at the end."""
    etcd_host = lab.add_host("etcd")
    etcd = start_etcd(lab, etcd_host)
    nodes: list[Node] = []

    def make_node(name: str | None = None, *, host: Host | None = None, etcd_proc: EtcdProc | None = None,
                  **kw: Any) -> Node:
        h = host or lab.add_host(name or f"node{len(nodes) + 1}")
        n = Node(h, etcd_proc or etcd, **kw)
        nodes.append(n)
        return n

    yield lab, etcd, make_node
    for n in nodes:
        n.close()


def lease_of(etcd: EtcdProc, key: str) -> int:
    kv = etcd.get_kv(key)
    assert kv is not None, f"{key} is not in etcd"
    return kv["lease"]


# --- config -------------------------------------------------------------------------------------
def test_config_missing_then_invalid_then_valid(env):
    _, etcd, make_node = env
    n = make_node()
    with pytest.raises(TransientError, match="Did you create your config using etcdv3 API"):
        n.call(n.mgr.get_network_config)
    assert str(TransientError(CONFIG_MISSING)) == \
        "flannel config not found in etcd store. Did you create your config using etcdv3 API?"
    etcd.put(PREFIX + "/config", '{"Network":"10.5.0.0/16","SubnetLen":31}')
    with pytest.raises(ConfigError, match="SubnetLen must be less than /31"):
        n.call(n.mgr.get_network_config)
    etcd.put(PREFIX + "/config", CONFIG)
    cfg = n.call(n.mgr.get_network_config)
    assert cfg.network == ipaddress.IPv4Network("10.5.0.0/16") and cfg.subnet_len == 24
    assert cfg.backend_type == "vxlan"


# --- acquire ------------------------------------------------------------------------------------
def test_three_nodes_get_distinct_subnets_in_the_reference_format(env):
    _, etcd, make_node = env
    etcd.put(PREFIX + "/config", CONFIG)
    nodes = [make_node() for _ in range(3)]
    leases = [n.acquire() for n in nodes]
    subnets = {lease.subnet for lease in leases}
    assert len(subnets) == 3
    for lease, n in zip(leases, nodes, strict=True):
        assert lease.subnet is not None and lease.subnet.subnet_of(ipaddress.IPv4Network("10.5.0.0/16"))
        assert lease.subnet.prefixlen == 24 and lease.ipv6_subnet is None
        assert lease.subnet not in (ipaddress.IPv4Network("10.5.0.0/24"), ipaddress.IPv4Network("10.5.255.0/24"))
        key = f"{SUBNETS}{lease.subnet.network_address}-24"
        kv = etcd.get_kv(key)
        assert kv is not None
        assert kv["value"] == (f'{{"PublicIP":"{n.host.ip}","PublicIPv6":null,"BackendType":"vxlan",'
                               f'"BackendData":{{"VNI":1,"VtepMAC":"{n.host.mac}"}}}}').encode()
        assert kv["lease"] == lease.lease_id != 0
        ttl, granted = etcd.lease_ttl(kv["lease"])
        assert granted == 86400 and 0 < ttl <= 86400
    assert sorted(etcd.keys(SUBNETS)) == sorted(f"{SUBNETS}{lease.key}" for lease in leases)


def test_reuse_by_public_ip_revokes_the_old_lease(env):
    _, etcd, make_node = env
    etcd.put(PREFIX + "/config", CONFIG)
    first = make_node()
    a = first.acquire()
    # the same node restarted (a new manager, no subnet.env): it finds its lease by PublicIP
    again = make_node(host=first.host)
    b = again.acquire()
    assert b.subnet == a.subnet and b.lease_id != a.lease_id
    assert lease_of(etcd, SUBNETS + b.key) == b.lease_id
    assert a.lease_id not in etcd.leases(), "the replaced etcd lease must be revoked"


def test_previous_subnet_reused_when_free(env):
    _, etcd, make_node = env
    etcd.put(PREFIX + "/config", CONFIG)
    prev = ipaddress.IPv4Network("10.5.77.0/24")
    n = make_node(prev_subnet=prev)
    assert n.acquire().subnet == prev
    # taken by someone else: another subnet is picked
    other = make_node(prev_subnet=prev)
    got = other.acquire().subnet
    assert got != prev and got is not None and got.prefixlen == 24


def test_reservation_is_honoured_and_reused_by_its_owner(env):
    _, etcd, make_node = env
    cfg_text = '{"Network":"10.5.0.0/22","SubnetLen":24,"Backend":{"Type":"vxlan"}}'
    etcd.put(PREFIX + "/config", cfg_text)
    # /22 by /24: SubnetMin 10.5.1.0 .. SubnetMax 10.5.3.0
    assert [str(c) for c in candidate_subnets(parse_network_config(cfg_text))] == \
        ["10.5.1.0/24", "10.5.2.0/24", "10.5.3.0/24"]
    n1, owner, n3 = make_node(), make_node(), make_node()
    etcd.put(SUBNETS + "10.5.1.0-24", f'{{"PublicIP":"{owner.host.ip}","PublicIPv6":null}}')  # no etcd lease
    etcd.put_ttl(SUBNETS + "10.5.3.0-24", GO_VALUE, 600)  # somebody else's ordinary lease
    assert str(n1.acquire().subnet) == "10.5.2.0/24", "the reserved subnet must not be handed out"
    lease = owner.acquire()
    assert str(lease.subnet) == "10.5.1.0/24" and lease.lease_id == 0 and lease.expiration == 0
    kv = etcd.get_kv(SUBNETS + "10.5.1.0-24")
    assert kv is not None and kv["lease"] == 0, "a reservation stays without an etcd lease"
    assert kv["value"] == attrs_to_json(attrs_of(owner.host)).encode()
    with pytest.raises(LeaseError, match="out of subnets"):
        n3.acquire()


def test_out_of_subnets_in_a_28(env):
    _, etcd, make_node = env
    cfg_text = '{"Network":"10.9.0.0/28","SubnetLen":30,"Backend":{"Type":"vxlan"}}'
    etcd.put(PREFIX + "/config", cfg_text)
    # /28 by /30: four subnets, SubnetMin skips the first -> .4, .8, .12
    want = {str(c) for c in candidate_subnets(parse_network_config(cfg_text))}
    assert want == {"10.9.0.4/30", "10.9.0.8/30", "10.9.0.12/30"}
    got = {str(make_node().acquire().subnet) for _ in range(len(want))}
    assert got == want
    with pytest.raises(LeaseError, match="out of subnets"):
        make_node().acquire()


def test_concurrent_acquirers_never_share_a_subnet(env, monkeypatch, caplog):
    _, etcd, make_node = env
    etcd.put(PREFIX + "/config", CONFIG)
    # everybody picks the first free subnet: every round collides, only the Txn keeps them apart
    monkeypatch.setattr("cni_flannel.flanneld.subnet.etcd.random.choice", lambda seq: seq[0])
    nodes = [make_node() for _ in range(4)]
    barrier = threading.Barrier(len(nodes))
    results: list[Any] = [None] * len(nodes)

    def go(i: int) -> None:
        barrier.wait()
        try:
            results[i] = nodes[i].acquire()
        except Exception as exc:
            results[i] = exc

    caplog.set_level(logging.INFO, "flanneld.etcd")
    threads = [threading.Thread(target=go, args=(i,)) for i in range(len(nodes))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert all(isinstance(r, Lease) for r in results), results
    assert len({r.subnet for r in results}) == len(nodes)
    assert len(etcd.keys(SUBNETS)) == len(nodes)
    assert "was taken meanwhile" in caplog.text
    # the losers' etcd leases were revoked: only the four winners' remain
    assert sorted(etcd.leases()) == sorted(r.lease_id for r in results)


# --- keep the lease -----------------------------------------------------------------------------
def test_renewal_moves_the_key_to_a_new_lease_and_revokes_the_old(env):
    _, etcd, make_node = env
    etcd.put(PREFIX + "/config", CONFIG)
    n = make_node(lease_ttl_s=6, renew_margin_s=3)
    lease = n.acquire()
    changes: list[Lease] = []
    n.background(n.mgr.keep_lease, lease, changes.append)
    wait_for(lambda: len(changes) >= 2, 30, "two renewals")
    latest = changes[-1]
    assert latest.subnet == lease.subnet
    key = SUBNETS + lease.key
    wait_for(lambda: lease_of(etcd, key) in {c.lease_id for c in changes[-2:]}, 10, "the key on a renewed lease")
    live = set(etcd.leases())
    assert lease.lease_id not in live and changes[0].lease_id not in live, "replaced leases must be revoked"
    assert len(live) <= 2  # the current one (and at most one granted in the very moment of a renewal)
    assert etcd.get(key) == attrs_to_json(attrs_of(n.host)).encode()
    # past the first TTL the key is still there (renewed, never expired)
    assert time.time() > lease.expiration or wait_for(lambda: time.time() > lease.expiration, 10)
    assert etcd.get_kv(key) is not None


def test_own_key_deleted_is_re_acquired(env, caplog):
    _, etcd, make_node = env
    etcd.put(PREFIX + "/config", CONFIG)
    n = make_node()
    lease = n.acquire()
    changes: list[Lease] = []
    caplog.set_level(logging.INFO, "flanneld.etcd")
    n.background(n.mgr.keep_lease, lease, changes.append)
    time.sleep(1.5)  # let the watch start (it also re-reads the key first, so no event is lost)
    etcd.delete(SUBNETS + lease.key)
    new = wait_for(lambda: changes and changes[-1], 30, "a re-acquired lease")
    assert new.subnet == lease.subnet, "the same subnet is preferred when it is still free"
    assert lease_of(etcd, SUBNETS + new.key) == new.lease_id != lease.lease_id
    assert lease.lease_id not in etcd.leases()
    assert "re-acquiring" in caplog.text


# --- watch --------------------------------------------------------------------------------------
def watching(n: Node) -> PeerTable:
    peers = PeerTable()
    n.background(n.mgr.watch_leases, peers)
    wait_for(lambda: peers.synced, 20, "the first listing")
    return peers


def keys_of(peers: PeerTable) -> set[str]:
    return {lease.key for lease in peers.snapshot()[1]}


def test_watch_peers_added_changed_removed_expired_and_malformed(env):
    _, etcd, make_node = env
    etcd.put(PREFIX + "/config", CONFIG)
    n = make_node()
    own = n.acquire()
    etcd.put_ttl(SUBNETS + "10.5.100.0-24", GO_VALUE, 3600)  # present before the listing
    peers = watching(n)
    assert keys_of(peers) == {"10.5.100.0-24"}, "the own lease is left out"
    assert peers.own_key == own.key
    # added, as the Go flanneld writes it
    etcd.put_ttl(SUBNETS + "10.5.101.0-24", GO_VALUE.replace(".9", ".10"), 3600)
    wait_for(lambda: "10.5.101.0-24" in keys_of(peers), 20, "an added peer")
    # changed
    etcd.put_ttl(SUBNETS + "10.5.100.0-24", GO_VALUE.replace("c6:d2", "aa:bb"), 3600)
    wait_for(lambda: any(lease.attrs.backend_data["VtepMAC"].startswith("aa:bb") for lease in peers.snapshot()[1]),
             20, "a changed peer")
    # malformed key and bad JSON: skipped, nobody else dropped (⚠ #2539), later events still applied
    etcd.put(SUBNETS + "garbage", "{}")
    etcd.put_ttl(SUBNETS + "10.5.102.0-24", "{not json", 3600)
    etcd.put_ttl(SUBNETS + "10.5.103.0-24", GO_VALUE.replace(".9", ".13"), 2)  # will expire
    wait_for(lambda: "10.5.103.0-24" in keys_of(peers), 20, "a peer after the malformed ones")
    assert keys_of(peers) == {"10.5.100.0-24", "10.5.101.0-24", "10.5.103.0-24"}
    # expired: etcd deletes the key, the peer goes
    wait_for(lambda: "10.5.103.0-24" not in keys_of(peers), 30, "an expired peer removed")
    # removed
    etcd.delete(SUBNETS + "10.5.101.0-24")
    wait_for(lambda: keys_of(peers) == {"10.5.100.0-24"}, 20, "a deleted peer removed")
    assert n.mgr.health() == ""


def test_go_lease_value_interop(env):
    _, etcd, make_node = env
    etcd.put(PREFIX + "/config", CONFIG)
    n = make_node()
    n.acquire()
    etcd.put_ttl(SUBNETS + "10.5.9.0-24", GO_VALUE, 600)
    peers = watching(n)
    (lease,) = peers.snapshot()[1]
    assert lease.attrs.public_ip == ipaddress.IPv4Address("192.168.77.9") and lease.attrs.public_ipv6 is None
    assert lease.attrs.backend_type == "vxlan"
    assert lease.attrs.backend_data == {"VNI": 1, "VtepMAC": "c6:d2:32:6f:8f:44"}
    assert 0 < lease.expiration - time.time() <= 600 and lease.lease_id != 0
    ours = attrs_to_json(LeaseAttrs(public_ip=ipaddress.IPv4Address("192.168.77.9"), backend_type="vxlan",
                                    backend_data={"VNI": 1, "VtepMAC": "c6:d2:32:6f:8f:44"}))
    assert ours == GO_VALUE


def test_watch_relists_after_compaction_and_resumes_after_an_outage(env, caplog):
    _, etcd, make_node = env
    etcd.put(PREFIX + "/config", CONFIG)
    n = make_node()
    n.acquire()
    etcd.put_ttl(SUBNETS + "10.5.50.0-24", GO_VALUE, 3600)
    caplog.set_level(logging.INFO, "flanneld.etcd")
    peers = watching(n)
    assert keys_of(peers) == {"10.5.50.0-24"}
    # cut the node off etcd (new connections dropped), then restart etcd: the stream breaks
    n.host.ns.run("iptables", "-I", "OUTPUT", "-p", "tcp", "--dport", "2379", "-j", "DROP")
    etcd.stop()
    wait_for(lambda: n.mgr.health() != "", 20, "the fault reported")
    etcd.start()
    # while the watcher is away: one peer goes, one comes, and the history is compacted
    etcd.delete(SUBNETS + "10.5.50.0-24")
    etcd.put_ttl(SUBNETS + "10.5.51.0-24", GO_VALUE, 3600)
    etcd.compact(etcd.revision())
    assert keys_of(peers) == {"10.5.50.0-24"}, "the table stays as it was during the outage"
    n.host.ns.run("iptables", "-D", "OUTPUT", "-p", "tcp", "--dport", "2379", "-j", "DROP")
    wait_for(lambda: keys_of(peers) == {"10.5.51.0-24"}, 30, "the re-listed table")
    assert "is compacted" in caplog.text and "re-listing" in caplog.text
    wait_for(lambda: n.mgr.health() == "", 20, "health back")
    # and the watch goes on after the re-list
    etcd.put_ttl(SUBNETS + "10.5.52.0-24", GO_VALUE, 3600)
    wait_for(lambda: "10.5.52.0-24" in keys_of(peers), 20, "an event after the re-list")


def test_etcd_down_30s_renewal_and_watch_resume(env):
    _, etcd, make_node = env
    etcd.put(PREFIX + "/config", CONFIG)
    n = make_node(lease_ttl_s=20, renew_margin_s=10)
    lease = n.acquire()
    etcd.put_ttl(SUBNETS + "10.5.60.0-24", GO_VALUE, 3600)
    changes: list[Lease] = []
    n.background(n.mgr.keep_lease, lease, changes.append)
    peers = watching(n)
    etcd.stop()
    wait_for(lambda: n.mgr.health() != "", 20, "the fault reported")
    time.sleep(12)  # the renewal falls due (10 s after the acquire) while etcd is down
    assert "connection refused" in n.mgr.health().lower()
    assert keys_of(peers) == {"10.5.60.0-24"}, "the dataplane's table stays during the outage"
    renewed_before = len(changes)
    etcd.start()
    wait_for(lambda: len(changes) > renewed_before, 30, "the missed renewal done once etcd is back")
    assert lease_of(etcd, SUBNETS + lease.key) == changes[-1].lease_id
    assert lease.lease_id not in etcd.leases()
    etcd.put_ttl(SUBNETS + "10.5.61.0-24", GO_VALUE, 3600)
    wait_for(lambda: "10.5.61.0-24" in keys_of(peers), 30, "the watch resumed")
    wait_for(lambda: n.mgr.health() == "", 20, "health back")


# --- TLS and auth -------------------------------------------------------------------------------
def test_tls_with_client_certificate(lab: Lab):
    etcd = start_etcd(lab, lab.add_host("etcd"), tls=True)
    etcd.put(PREFIX + "/config", CONFIG)
    host = lab.add_host("node1")
    n = Node(host, etcd)
    try:
        assert etcd.endpoint.startswith("https://")
        lease = n.acquire()
        assert etcd.get(SUBNETS + lease.key) == attrs_to_json(attrs_of(host)).encode()
        # without the client cert the server refuses; the fault is transient and names the endpoint
        bare = Node(host, etcd, client={"cafile": etcd.ca})
        with pytest.raises(TransientError, match=etcd.endpoint):
            bare.call(bare.mgr.get_network_config)
    finally:
        n.close()


def test_tls_ca_alone_is_honoured(lab: Lab):
    """⚠ the reference ignores --etcd-cafile without a client cert; we verify the server with it."""
    etcd = start_etcd(lab, lab.add_host("etcd"), tls=True, client_cert_auth=False)
    etcd.put(PREFIX + "/config", CONFIG)
    host = lab.add_host("node1")
    with_ca = Node(host, etcd, client={"cafile": etcd.ca})
    assert with_ca.call(with_ca.mgr.get_network_config).network == ipaddress.IPv4Network("10.5.0.0/16")
    without = Node(host, etcd, client={"cafile": ""})
    with pytest.raises(TransientError, match=r"CERTIFICATE_VERIFY_FAILED|certificate verify failed"):
        without.call(without.mgr.get_network_config)


def test_username_password_auth(lab: Lab, caplog):
    etcd = start_etcd(lab, lab.add_host("etcd"), auth=("root", "s3cret-pw"))
    etcd.put(PREFIX + "/config", CONFIG)
    host = lab.add_host("node1")
    caplog.set_level(logging.DEBUG)
    n = Node(host, etcd, client={"username": "root", "password": "s3cret-pw"})
    try:
        lease = n.acquire()
        assert etcd.get_kv(SUBNETS + lease.key) is not None
        peers = PeerTable()
        n.background(n.mgr.watch_leases, peers)
        etcd.put_ttl(SUBNETS + "10.5.70.0-24", GO_VALUE, 600)
        wait_for(lambda: "10.5.70.0-24" in keys_of(peers), 20, "a watch event with auth")
        # no credentials: etcd refuses
        anon = Node(host, etcd)
        with pytest.raises(TransientError, match=r"user name is empty|permission denied|invalid auth token"):
            anon.call(anon.mgr.get_network_config)
        wrong = Node(host, etcd, client={"username": "root", "password": "nope"})
        with pytest.raises(TransientError, match="authentication failed") as err:
            wrong.call(wrong.mgr.get_network_config)
        assert "nope" not in str(err.value)
        token = n.client._token
        assert token and token not in caplog.text and "s3cret-pw" not in caplog.text
    finally:
        n.close()


def test_failover_to_the_next_endpoint(env):
    lab, etcd, _ = env
    etcd.put(PREFIX + "/config", CONFIG)
    host = lab.add_host("nodeF")
    n = Node(host, etcd)
    # a dead endpoint first (a closed port on the etcd host), the live one second
    n.client = EtcdClient([f"http://{etcd.host.ip}:2999", etcd.endpoint], timeout=2.0)
    n.mgr = EtcdSubnetManager(n.client, PREFIX, prev_subnet=None, prev_ipv6_subnet=None)
    assert n.acquire().subnet is not None
    etcd.stop()
    with pytest.raises(TransientError) as err:
        n.call(n.mgr.get_network_config)
    assert ":2999" in str(err.value) and etcd.endpoint in str(err.value)


def test_dual_stack_keys(env):
    _, etcd, make_node = env
    etcd.put(PREFIX + "/config", json.dumps({"Network": "10.5.0.0/16", "EnableIPv6": True,
                                             "IPv6Network": "fc00::/48", "Backend": {"Type": "vxlan"}}))
    n = make_node()
    lease = n.acquire()
    assert lease.ipv6_subnet is not None and lease.ipv6_subnet.prefixlen == 64
    assert lease.ipv6_subnet.subnet_of(ipaddress.IPv6Network("fc00::/48"))
    assert etcd.keys(SUBNETS) == [f"{SUBNETS}{lease.subnet.network_address}-24&{lease.ipv6_subnet.network_address}-64"]
