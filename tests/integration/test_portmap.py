"""portmap (+ bridge for the pod side) in real namespaces, and loopback (cni-reference §5)."""
from __future__ import annotations

import copy
import json

import pytest
from harness import ALL_VERSIONS, go
from kernel import iptables_nat, link, nft, sysctl, veth_pair
from our_plugins import ours
from traffic import request, server

BRIDGE = {"cniVersion": "1.0.0", "name": "pmnet", "type": "bridge", "bridge": "pmbr0", "isGateway": True,
          "isDefaultGateway": True, "hairpinMode": True, "ipMasq": False,
          "ipam": {"type": "host-local", "ranges": [[{"subnet": "10.88.0.0/24"}]]}}
MAPS = [{"hostPort": 8080, "containerPort": 80, "protocol": "tcp"},
        {"hostPort": 8081, "containerPort": 81, "protocol": "udp"},
        {"hostPort": 8082, "containerPort": 80, "protocol": "tcp", "hostIP": "127.0.0.1"}]


def portmap_conf(prev: dict | None, maps=MAPS, version="1.0.0", **extra) -> dict:
    c = {"cniVersion": version, "name": "pmnet", "type": "portmap", "capabilities": {"portMappings": True},
         "runtimeConfig": {"portMappings": copy.deepcopy(maps)}}
    if prev is not None:
        c["prevResult"] = prev
    c.update(extra)
    return c


@pytest.fixture
def lab(make_netns, tmp_path):
    """A node with an uplink to an 'outside' namespace, and a pod on the bridge."""
    node, outside = make_netns(), make_netns()
    veth_pair(node, "up0", "192.0.2.1/24", outside, "ext0", "192.0.2.2/24")

    def pod(cid: str, version: str = "1.0.0"):
        ns = make_netns()
        c = copy.deepcopy(BRIDGE)
        c["cniVersion"] = version
        c["ipam"]["dataDir"] = str(tmp_path / "ipam")
        out = ours("bridge", "ADD", c, container_id=cid, netns=ns.path, node=node)
        assert out.ok, out
        return ns, out.data

    return node, outside, pod


@pytest.mark.parametrize("backend", ["iptables", "nftables"])
def test_hostport_serves_from_outside_localhost_and_hairpin(lab, backend) -> None:
    node, outside, pod = lab
    ns, res = pod("web1")
    extra = {"backend": backend}
    out = ours("portmap", "ADD", portmap_conf(res, **extra), container_id="web1", netns=ns.path, node=node)
    assert out.ok, out
    assert out.data == res  # prevResult passes through unchanged
    with server(ns, 80, "web1"), server(ns, 81, "web1-udp", "udp"):
        assert request(outside, "192.0.2.1", 8080).startswith("web1 ")
        assert request(outside, "192.0.2.1", 8081, "udp").startswith("web1-udp ")
        assert request(node, "127.0.0.1", 8080) == "web1 10.88.0.1"  # SNAT'ed localhost
        assert request(node, "127.0.0.1", 8082).startswith("web1 ")  # hostIP 127.0.0.1 mapping
        assert request(outside, "192.0.2.1", 8082) is None  # ... only on that address
        assert request(ns, "192.0.2.1", 8080) == "web1 10.88.0.1"  # hairpin, masqueraded
    assert sysctl(node, "net/ipv4/conf/pmbr0/route_localnet") == "1"
    assert ours("portmap", "DEL", portmap_conf(None, **extra), container_id="web1", netns="", node=node).ok
    if backend == "iptables":
        assert not any("CNI-DN-" in r for r in iptables_nat(node))
    else:
        assert "dnat to" not in nft(node) and "masquerade comment" not in nft(node)


def test_two_pods_on_different_host_ports(lab) -> None:
    node, outside, pod = lab
    (a, ra), (b, rb) = pod("a"), pod("b")
    assert ours("portmap", "ADD", portmap_conf(ra, [MAPS[0]]), container_id="a", netns=a.path, node=node).ok
    assert ours("portmap", "ADD", portmap_conf(rb, [dict(MAPS[0], hostPort=9090)]), container_id="b",
                netns=b.path, node=node).ok
    with server(a, 80, "pod-a"), server(b, 80, "pod-b"):
        assert request(outside, "192.0.2.1", 8080).startswith("pod-a")
        assert request(outside, "192.0.2.1", 9090).startswith("pod-b")


def test_capitalised_keys_from_containerd(lab) -> None:
    node, outside, pod = lab
    ns, res = pod("ctrd")
    maps = [{"HostPort": 18083, "ContainerPort": 80, "Protocol": "tcp", "HostIP": ""}]
    assert ours("portmap", "ADD", portmap_conf(res, maps, "0.3.1"), container_id="ctrd", netns=ns.path,
                node=node).ok
    with server(ns, 80, "ctrd"):
        assert request(outside, "192.0.2.1", 18083).startswith("ctrd")


@pytest.mark.parametrize("options", [
    {}, {"masqAll": True}, {"snat": False}, {"markMasqBit": 5}, {"externalSetMarkChain": "KUBE-MARK-MASQ"},
    {"conditionsV4": ["!", "-s", "10.9.9.0/24"]},
], ids=["default", "masqAll", "no-snat", "markMasqBit", "externalSetMarkChain", "conditionsV4"])
def test_iptables_rules_identical_to_go(make_netns, requires_go, options) -> None:
    prev = {"cniVersion": "0.3.1", "interfaces": [{"name": "pmbr0"}, {"name": "veth1"},
                                                  {"name": "eth0", "sandbox": "/run/netns/x"}],
            "ips": [{"version": "4", "interface": 2, "address": "10.88.0.5/24", "gateway": "10.88.0.1"}]}
    state = {}
    for who, runner in (("go", go), ("ours", ours)):
        node = make_netns()
        node.run("ip", "link", "add", "pmbr0", "type", "bridge")
        node.run("ip", "addr", "add", "10.88.0.1/24", "dev", "pmbr0")
        node.run("ip", "link", "set", "pmbr0", "up")
        if "externalSetMarkChain" in options:
            node.run("iptables", "-t", "nat", "-N", "KUBE-MARK-MASQ")
        maps = [*MAPS, {"hostPort": 8083, "containerPort": 83, "protocol": "sctp"}]
        out = runner("portmap", "ADD", portmap_conf(prev, maps, version="0.3.1", **options), container_id="same",
                     netns="/x", node=node)
        assert out.ok, out
        state[who] = (iptables_nat(node), iptables_nat(node, 6), json.loads(out.stdout),
                      sysctl(node, "net/ipv4/conf/pmbr0/route_localnet"))
    if options.get("masqAll"):
        # Debian's Go portmap (1.1.1) predates masqAll: check the reference's HEAD rules instead
        ours_rules = state["ours"][0]
        assert any(r.endswith("-p tcp -m tcp --dport 8080 -j CNI-HOSTPORT-SETMARK") and " -s " not in r
                   for r in ours_rules)  # -s 0.0.0.0/0: any source
        assert not any("-s 127.0.0.1/32" in r for r in ours_rules)
        return
    assert state["ours"] == state["go"]


@pytest.mark.parametrize("direction", ["go-adds-ours-deletes", "ours-adds-go-deletes"])
def test_rules_removed_across_implementations(make_netns, requires_go, direction) -> None:
    node = make_netns()
    prev = {"cniVersion": "0.3.1", "ips": [{"version": "4", "address": "10.88.0.5/24"}]}
    first, second = (go, ours) if direction.startswith("go") else (ours, go)
    assert first("portmap", "ADD", portmap_conf(prev, version="0.3.1"), container_id="x", netns="/x",
                 node=node).ok
    assert any("CNI-DN-" in r for r in iptables_nat(node))
    assert second("portmap", "DEL", portmap_conf(None, version="0.3.1"), container_id="x", netns="/x",
                  node=node).ok
    left = iptables_nat(node)
    assert not any("CNI-DN-" in r for r in left)
    assert any(r.startswith(":CNI-HOSTPORT-DNAT") for r in left)  # shared top-level chains stay, as in Go


def test_check_ipv4_only_pod_needs_no_ipv6_rules(lab) -> None:
    node, _outside, pod = lab
    ns, res = pod("chk")
    c = portmap_conf(res)
    assert ours("portmap", "ADD", c, container_id="chk", netns=ns.path, node=node).ok
    assert ours("portmap", "CHECK", c, container_id="chk", netns=ns.path, node=node).ok
    node.run("iptables", "-t", "nat", "-F", "CNI-HOSTPORT-DNAT")
    bad = ours("portmap", "CHECK", c, container_id="chk", netns=ns.path, node=node)
    assert bad.rc == 1 and "CNI-HOSTPORT-DNAT" in bad.data["msg"]


@pytest.mark.parametrize("bad,text", [
    ([{"hostPort": 0, "containerPort": 80, "protocol": "tcp"}], "Invalid host port number: 0"),
    ([{"hostPort": 80, "containerPort": -1, "protocol": "tcp"}], "Invalid container port number"),
    ([{"hostPort": 80, "containerPort": 80, "protocol": "icmp"}], "invalid protocol"),
    ([{"hostPort": 80, "containerPort": 80, "protocol": "tcp", "hostIP": "nope"}], "invalid hostIP"),
])
def test_invalid_mappings_are_named(bad, text) -> None:
    prev = {"cniVersion": "1.0.0", "ips": [{"address": "10.88.0.5/24"}]}
    out = ours("portmap", "ADD", portmap_conf(prev, bad), netns="/x")
    assert out.rc == 1 and text in out.data["msg"] and "portMappings[0]" in out.data["msg"]


def test_chained_only_and_backend_option_conflicts() -> None:
    assert "chained" in ours("portmap", "ADD", portmap_conf(None), netns="/x").data["msg"]
    prev = {"cniVersion": "1.0.0", "ips": [{"address": "10.88.0.5/24"}]}
    out = ours("portmap", "ADD", portmap_conf(prev, backend="nftables", markMasqBit=5), netns="/x")
    assert "nftables backend was requested but configuration contains iptables-specific options" in out.data["msg"]
    out = ours("portmap", "ADD", portmap_conf(prev, markMasqBit=5, externalSetMarkChain="X"), netns="/x")
    assert "Cannot specify externalSetMarkChain and markMasqBit" in out.data["msg"]


def test_empty_mappings_pass_through(make_netns) -> None:
    node = make_netns()
    prev = {"cniVersion": "1.0.0", "ips": [{"address": "10.88.0.5/24"}], "dns": {}}
    out = ours("portmap", "ADD", portmap_conf(prev, []), netns="/x", node=node)
    assert out.ok and out.data == {"cniVersion": "1.0.0", "ips": [{"address": "10.88.0.5/24"}], "dns": {}}
    assert not any("CNI-" in r for r in iptables_nat(node))


@pytest.mark.parametrize("version", ALL_VERSIONS)
def test_every_verb_over_every_version(lab, version) -> None:
    node, _outside, pod = lab
    ns, res = pod("v", version)
    c = portmap_conf(res, [MAPS[0]], version)
    add = ours("portmap", "ADD", c, container_id="v", netns=ns.path, node=node)
    assert add.ok and add.data == res
    if version >= "0.4.0":
        assert ours("portmap", "CHECK", c, container_id="v", netns=ns.path, node=node).ok
    if version == "1.1.0":
        assert ours("portmap", "STATUS", c, node=node).ok
        assert ours("portmap", "GC", dict(c, **{"cni.dev/valid-attachments": [
            {"containerID": "v", "ifname": "eth0"}]}), node=node).ok
        assert any("CNI-DN-" in r for r in iptables_nat(node))
        assert ours("portmap", "GC", dict(c, **{"cni.dev/valid-attachments": []}), node=node).ok
        assert not any("CNI-DN-" in r for r in iptables_nat(node))
    assert ours("portmap", "DEL", c, container_id="v", netns=ns.path, node=node).ok
    assert ours("portmap", "DEL", c, container_id="v", netns="", node=node).ok
    assert not any("CNI-DN-" in r for r in iptables_nat(node))


# -- loopback -----------------------------------------------------------------------------------

@pytest.mark.parametrize("version", ALL_VERSIONS)
def test_loopback_up_down_and_result(make_netns, version, requires_go) -> None:
    ns = make_netns()
    ns.run("ip", "link", "set", "lo", "down")
    c = {"cniVersion": version, "name": "cni-loopback", "type": "loopback"}
    out = ours("loopback", "ADD", c, netns=ns.path, ifname="lo")
    assert out.ok, out
    assert "UP" in link(ns, "lo")["flags"]
    data = out.data
    assert data["cniVersion"] == version
    if version in ("0.1.0", "0.2.0"):
        assert data["ip4"]["ip"] == "127.0.0.1/8"
    else:
        assert data["interfaces"] == [{"name": "lo", "mac": "00:00:00:00:00:00", "sandbox": ns.path}]
        assert data["ips"][0]["address"] == "127.0.0.1/8"
    if version in ("1.0.0",):  # Debian's Go loopback (1.1.1) knows no 1.1.0
        g = go("loopback", "ADD", c, netns=ns.path, ifname="lo")
        assert g.stdout.replace(ns.path, "X") == out.stdout.replace(ns.path, "X")
    if version >= "0.4.0":
        assert ours("loopback", "CHECK", c, netns=ns.path, ifname="lo").ok
    assert ours("loopback", "DEL", c, netns=ns.path, ifname="lo").ok
    assert "UP" not in link(ns, "lo")["flags"]
    assert ours("loopback", "DEL", c, netns="/run/netns/gone-away", ifname="lo").ok
    assert ours("loopback", "DEL", c, netns="", ifname="lo").ok
