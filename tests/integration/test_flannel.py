"""The seed deployment: flannel → bridge + host-local in one process, in real namespaces."""
from __future__ import annotations

import json
import os

import pytest
from harness import ALL_VERSIONS, go
from kernel import addrs, iptables_nat, link, normalise, ping, routes, sysctl, veths_on
from kernel_state import differences, full_state
from our_plugins import ours

from cni_flannel.tools import topology

DELEGATE = {"forceAddress": True, "bridge": "mycni8", "isDefaultGateway": True}


def seed_conf(tmp_path, subnet_env, version="0.3.1", **over) -> dict:
    c = {"cniVersion": version, "name": "cbr0", "type": "flannel", "delegate": dict(DELEGATE),
         "subnetFile": str(subnet_env), "dataDir": str(tmp_path / "flannel"),
         "ipam": {"dataDir": str(tmp_path / "ipam")}}
    c.update(over)
    return c


@pytest.fixture
def subnet_env(tmp_path):
    p = tmp_path / "subnet.env"
    topology.write_subnet_env(str(p), "10.42.0.0/16", "10.42.1.0/24", 1450, True)
    return p


def flannel_add(node, cont, conf, cid, **kw):
    out = ours("flannel", "ADD", conf, container_id=cid, netns=cont.path, node=node, **kw)
    assert out.ok, out
    return out.data


def test_seed_two_pods_on_one_node(make_netns, tmp_path, subnet_env) -> None:
    node, p1, p2 = make_netns(), make_netns(), make_netns()
    c = seed_conf(tmp_path, subnet_env)
    r1, r2 = flannel_add(node, p1, c, "pod1"), flannel_add(node, p2, c, "pod2")
    assert r1["cniVersion"] == "0.3.1"
    assert r1["ips"] == [{"version": "4", "interface": 2, "address": "10.42.1.2/24", "gateway": "10.42.1.1"}]
    assert r2["ips"][0]["address"] == "10.42.1.3/24"
    assert r1["routes"] == [{"dst": "10.42.0.0/16"}, {"dst": "0.0.0.0/0", "gw": "10.42.1.1"}]
    br = link(node, "mycni8")
    assert br["mtu"] == 1450 and addrs(node, "mycni8") == ["10.42.1.1/24"]
    assert link(p1, "eth0")["mtu"] == 1450
    assert routes(p1) == sorted(["default via 10.42.1.1 dev eth0", "10.42.0.0/16 via 10.42.1.1 dev eth0",
                                 "10.42.1.0/24 dev eth0 proto kernel scope link src 10.42.1.2"])
    assert not any("CNI-" in r for r in iptables_nat(node))  # FLANNEL_IPMASQ=true: flanneld masquerades
    assert ping(p1, "10.42.1.1") and ping(p1, "10.42.1.3") and ping(p2, "10.42.1.2")
    saved = json.loads((tmp_path / "flannel" / "pod1").read_text())
    assert saved["bridge"] == "mycni8" and saved["ipMasq"] is False and saved["mtu"] == 1450
    assert oct(os.stat(tmp_path / "flannel" / "pod1").st_mode & 0o777) == "0o600"
    assert oct(os.stat(tmp_path / "flannel").st_mode & 0o777) == "0o700"
    for cid, ns in (("pod1", p1), ("pod2", p2)):
        assert ours("flannel", "DEL", c, container_id=cid, netns=ns.path, node=node).ok
    assert os.listdir(tmp_path / "flannel") == []
    assert sorted(os.listdir(tmp_path / "ipam" / "cbr0")) == ["last_reserved_ip.0", "lock"]
    assert veths_on(node, "mycni8") == []


def test_pods_on_two_nodes_reach_each_other_over_vxlan(tmp_path) -> None:
    lab = topology.build(str(tmp_path / "lab"), count=2)
    try:
        results = []
        for node in lab.nodes:
            pod = lab.new_netns(f"{node.name}-pod")
            c = seed_conf(tmp_path / node.name, node.subnet_env)
            out = ours("flannel", "ADD", c, container_id=f"{node.name}-pod", netns=f"/run/netns/{pod}",
                       node=_Ns(node.netns))
            assert out.ok, out
            results.append((pod, out.data["ips"][0]["address"].split("/")[0]))
        (pod_a, ip_a), (pod_b, ip_b) = results
        assert ip_a.startswith("10.42.1.") and ip_b.startswith("10.42.2.")
        assert _Ns(pod_a).run("ping", "-c", "2", "-W", "2", ip_b, check=False).returncode == 0
        assert _Ns(pod_b).run("ping", "-c", "1", "-W", "2", ip_a, check=False).returncode == 0
    finally:
        lab.destroy()


class _Ns:
    def __init__(self, name: str) -> None:
        from harness import Netns

        self._ns = Netns(name)
        self.name = name
        self.path = f"/run/netns/{name}"

    def run(self, *cmd, check=True):
        return self._ns.run(*cmd, check=check)


def test_kernel_state_equals_go_bridge_fed_our_saved_config(make_netns, tmp_path, subnet_env, requires_go) -> None:
    ours_node, ours_pod, go_node, go_pod = make_netns(), make_netns(), make_netns(), make_netns()
    c = seed_conf(tmp_path, subnet_env, version="1.0.0")
    r_ours = flannel_add(ours_node, ours_pod, c, "same")
    saved = (tmp_path / "flannel" / "same").read_bytes()
    conf = json.loads(saved)
    conf["ipam"]["dataDir"] = str(tmp_path / "go-ipam")
    r_go = go("bridge", "ADD", conf, container_id="same", netns=go_pod.path, node=go_node)
    assert r_go.ok, r_go

    def state(node, pod, res):
        return {"result": normalise(json.dumps(res)).replace(pod.path, "NS"),
                "br": (link(node, "mycni8")["mtu"], addrs(node, "mycni8")),
                "pod": (link(pod, "eth0")["mtu"], addrs(pod, "eth0"), routes(pod)),
                "sysctl": sysctl(pod, "net/ipv4/conf/eth0/arp_notify"),
                "nat": iptables_nat(node),
                # all link and address attributes (issue 20 §3: brd, txqlen; ignored fields in kernel_state)
                "kernel": (full_state(node, {res["interfaces"][1]["name"]: "host-veth"}), full_state(pod, {}))}
    want, got = state(go_node, go_pod, r_go.data), state(ours_node, ours_pod, r_ours)
    assert got == want, differences(want, got)


def test_missing_subnet_env_is_code_11_and_nothing_saved(make_netns, tmp_path) -> None:
    node, pod = make_netns(), make_netns()
    out = ours("flannel", "ADD", seed_conf(tmp_path, tmp_path / "absent.env"), netns=pod.path, node=node)
    assert out.rc == 1 and out.data["code"] == 11 and "flanneld" in out.data["details"]
    assert not (tmp_path / "flannel").exists() or os.listdir(tmp_path / "flannel") == []


def test_malformed_subnet_env(make_netns, tmp_path) -> None:
    node, pod = make_netns(), make_netns()
    env = tmp_path / "subnet.env"
    env.write_text("FLANNEL_NETWORK=10.42.0.0/16\nFLANNEL_SUBNET\nFLANNEL_MTU=1450\nFLANNEL_IPMASQ=true\n")
    out = ours("flannel", "ADD", seed_conf(tmp_path, env), netns=pod.path, node=node)
    assert out.rc == 1 and f"{env} line 2: FLANNEL_SUBNET" in out.data["msg"]


@pytest.mark.parametrize("key", ["name", "ipam"])
def test_delegate_with_name_or_ipam_is_refused(tmp_path, subnet_env, key) -> None:
    c = seed_conf(tmp_path, subnet_env)
    c["delegate"][key] = {"type": "x"} if key == "ipam" else "x"
    out = ours("flannel", "ADD", c, netns="/x")
    assert out.rc == 1 and f"must not have '{key}' field" in out.data["msg"]


def test_failing_delegate_removes_saved_file(make_netns, tmp_path, subnet_env) -> None:
    node, pod = make_netns(), make_netns()
    c = seed_conf(tmp_path, subnet_env)
    c["delegate"]["type"] = "no-such-plugin"
    out = ours("flannel", "ADD", c, container_id="failing", netns=pod.path, node=node, cni_path=str(tmp_path))
    assert out.rc == 1 and "failed to delegate add" in out.data["msg"]
    assert os.listdir(tmp_path / "flannel") == []  # the reference leaks it (plugins#426)


def test_failing_in_process_delegate_rolls_back(make_netns, tmp_path, subnet_env) -> None:
    node, pod = make_netns(), make_netns()
    node.run("ip", "link", "add", "mycni8", "type", "veth", "peer", "name", "mycni8p")
    out = ours("flannel", "ADD", seed_conf(tmp_path, subnet_env), container_id="f2", netns=pod.path, node=node)
    assert out.rc == 1 and "not a bridge" in out.data["msg"]
    assert os.listdir(tmp_path / "flannel") == []
    assert link(pod, "eth0") is None


@pytest.mark.parametrize("damage", [b"", b'{"type":"bri', None])
def test_corrupt_saved_file_never_fails_del(make_netns, tmp_path, subnet_env, damage) -> None:
    node, pod = make_netns(), make_netns()
    c = seed_conf(tmp_path, subnet_env)
    flannel_add(node, pod, c, "torn")
    saved = tmp_path / "flannel" / "torn"
    if damage is None:
        saved.chmod(0)
        saved.write_bytes(b"")  # root can still write: emulate a zero-length file after power cut
    else:
        saved.write_bytes(damage)
    out = ours("flannel", "DEL", c, container_id="torn", netns=pod.path, node=node)
    assert out.ok, out
    assert "rebuilding" in out.stderr
    assert not saved.exists() and link(pod, "eth0") is None
    assert [n for n in os.listdir(tmp_path / "ipam" / "cbr0") if n.startswith("10.")] == []


def test_containerd_second_del_with_empty_netns(make_netns, tmp_path, subnet_env) -> None:
    node, pod = make_netns(), make_netns()
    c = seed_conf(tmp_path, subnet_env)
    flannel_add(node, pod, c, "ctrd")
    assert ours("flannel", "DEL", c, container_id="ctrd", netns=pod.path, node=node).ok
    assert ours("flannel", "DEL", c, container_id="ctrd", netns="", node=node).ok


def test_new_subnet_moves_bridge_address_and_old_pods_still_release(make_netns, tmp_path, subnet_env) -> None:
    node, p1, p2 = make_netns(), make_netns(), make_netns()
    c = seed_conf(tmp_path, subnet_env)
    flannel_add(node, p1, c, "old")
    topology.write_subnet_env(str(subnet_env), "10.42.0.0/16", "10.42.9.0/24", 1450, True)
    r = flannel_add(node, p2, c, "new")
    assert r["ips"][0]["address"] == "10.42.9.2/24" and addrs(node, "mycni8") == ["10.42.9.1/24"]
    assert ours("flannel", "DEL", c, container_id="old", netns=p1.path, node=node).ok
    assert not (tmp_path / "ipam" / "cbr0" / "10.42.1.2").exists()


@pytest.mark.parametrize("version", ALL_VERSIONS)
def test_every_verb_over_every_version(make_netns, tmp_path, subnet_env, version) -> None:
    node, pod = make_netns(), make_netns()
    c = seed_conf(tmp_path, subnet_env, version=version)
    res = flannel_add(node, pod, c, "v")
    assert res["cniVersion"] == version
    if version >= "0.4.0":
        assert ours("flannel", "CHECK", dict(c, prevResult=res), container_id="v", netns=pod.path, node=node).ok
        pod.run("ip", "addr", "flush", "dev", "eth0")
        bad = ours("flannel", "CHECK", dict(c, prevResult=res), container_id="v", netns=pod.path, node=node)
        assert bad.rc == 1
    if version == "1.1.0":
        assert ours("flannel", "STATUS", c, node=node).ok
        gone = dict(c, subnetFile=str(tmp_path / "gone.env"))
        assert ours("flannel", "STATUS", gone, node=node).data["code"] == 50
        assert ours("flannel", "GC", dict(c, **{"cni.dev/valid-attachments": [
            {"containerID": "v", "ifname": "eth0"}]}), node=node).ok
        assert (tmp_path / "flannel" / "v").exists()
        assert ours("flannel", "GC", dict(c, **{"cni.dev/valid-attachments": []}), node=node).ok
        assert not (tmp_path / "flannel" / "v").exists()
        assert [n for n in os.listdir(tmp_path / "ipam" / "cbr0") if n.startswith("10.")] == []
    assert ours("flannel", "DEL", c, container_id="v", netns=pod.path, node=node).ok
    if version != "1.1.0":  # there GC already released the attachment, and DEL has nothing left to do
        assert link(pod, "eth0") is None
