"""doctor on a healthy node and on nodes broken in each way it checks (namespaces and temp dirs)."""
from __future__ import annotations

import json
import os
import shutil
import subprocess

import pytest
from harness import REPO, cnitool, our_program, plugin_dir
from kernel import veth_pair

from cni_flannel.tools import topology

SEED = {"name": "cbr0", "cniVersion": "1.0.0", "plugins": [
    {"type": "flannel", "delegate": {"forceAddress": False, "bridge": "mycni8", "isDefaultGateway": True}},
    {"type": "portmap", "capabilities": {"portMappings": True}}]}


@pytest.fixture
def lab(make_netns, tmp_path):
    node, outside = make_netns(), make_netns()
    veth_pair(node, "up0", "192.0.2.1/24", outside, "ext0", "192.0.2.2/24")
    node.run("ip", "route", "add", "default", "via", "192.0.2.2")
    env = tmp_path / "subnet.env"
    topology.write_subnet_env(str(env), "10.42.0.0/16", "10.42.1.0/24", 1450, True)
    conf = json.loads(json.dumps(SEED))
    conf["plugins"][0].update(subnetFile=str(env), dataDir=str(tmp_path / "flannel"),
                              ipam={"dataDir": str(tmp_path / "ipam")})
    net_d = tmp_path / "net.d"
    net_d.mkdir()
    (net_d / "10-flannel.conflist").write_text(json.dumps(conf))
    bins = plugin_dir(str(tmp_path))
    cache = str(tmp_path / "cache")

    def add_pod(cid_ns, port=None):
        caps = {"CAP_ARGS": json.dumps({"portMappings": [{"hostPort": port, "containerPort": 80,
                                                          "protocol": "tcp"}]} if port else {})}
        out = cnitool("add", "cbr0", cid_ns.path, conf_dir=str(net_d), bin_dir=bins, cache_dir=cache, node=node,
                      env=caps)
        assert out.returncode == 0, out.stderr

    def doctor(*extra: str) -> tuple[int, dict]:
        out = subprocess.run(["ip", "netns", "exec", node.name, *our_program(
            "doctor", "--json", "--conf-dir", str(net_d), "--bin-dir", bins, "--cache-dir", cache, *extra)],
            capture_output=True, text=True, env={**os.environ, "PYTHONPATH": REPO}, timeout=60)
        return out.returncode, json.loads(out.stdout)

    return {"node": node, "env": env, "net_d": net_d, "bins": bins, "add_pod": add_pod, "doctor": doctor,
            "make_netns": make_netns, "tmp": tmp_path}


def statuses(report: dict) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for c in report["checks"]:
        out.setdefault(c["name"], []).append(c["status"])
    return out


def find(report: dict, name: str) -> dict:
    return next(c for c in report["checks"] if c["name"] == name)


def test_healthy_node(lab) -> None:
    pod = lab["make_netns"]()
    lab["add_pod"](pod, 8080)
    rc, report = lab["doctor"]("--cluster-cidr", "10.42.0.0/16")
    assert rc == 0 and report["ok"], [c for c in report["checks"] if c["status"] == "FAIL"]
    s = statuses(report)
    for name in ("conf dir", "conflist", "subnet.env", "subnet in network", "MTU", "cluster-cidr",
                 "bridge address", "bridge MTU", "stale reservations", "pool use", "flannel dataDir",
                 "portmap rules"):
        assert s.get(name) == ["PASS"], (name, s.get(name))
    assert "1 of 253" in find(report, "pool use")["detail"]


def test_human_output_has_fixes(lab) -> None:
    os.unlink(lab["env"])
    out = subprocess.run(["ip", "netns", "exec", lab["node"].name, *our_program(
        "doctor", "--conf-dir", str(lab["net_d"]), "--bin-dir", lab["bins"])], capture_output=True, text=True,
        env={**os.environ, "PYTHONPATH": REPO})
    assert out.returncode == 1
    assert "FAIL  subnet.env" in out.stdout and "fix: flanneld on this node has not written it yet" in out.stdout


@pytest.mark.parametrize("breakage,check,words", [
    ("no-subnet-env", "subnet.env", "no such file"),
    ("subnet-outside", "subnet in network", "is outside"),
    ("mtu", "MTU", "vxlan needs 50"),
    ("cluster-cidr", "cluster-cidr", "10.99.0.0/16"),
    ("bridge-address", "bridge address", "already has an IP address different from 10.42.1.1/24"),
    ("missing-binary", "plugin binary", "is missing"),
    ("shadowed", "conf dir", "00-other.conflist"),
])
def test_each_breakage_is_a_fail_with_a_fix(lab, breakage, check, words) -> None:
    extra: list[str] = []
    if breakage == "no-subnet-env":
        os.unlink(lab["env"])
    elif breakage == "subnet-outside":
        topology.write_subnet_env(str(lab["env"]), "10.42.0.0/16", "10.43.1.0/24")
    elif breakage == "mtu":
        lab["node"].run("ip", "link", "set", "up0", "mtu", "1400")
    elif breakage == "cluster-cidr":
        extra = ["--cluster-cidr", "10.99.0.0/16"]
    elif breakage == "bridge-address":
        lab["node"].run("ip", "link", "add", "mycni8", "type", "bridge")
        lab["node"].run("ip", "addr", "add", "10.9.9.1/24", "dev", "mycni8")
    elif breakage == "missing-binary":
        bins = lab["tmp"] / "emptybin"
        bins.mkdir()
        lab["bins"] = str(bins)
        extra = ["--bin-dir", str(bins)]
    elif breakage == "shadowed":
        (lab["net_d"] / "00-other.conflist").write_text(json.dumps({"name": "x", "cniVersion": "1.0.0",
                                                                    "plugins": [{"type": "bridge"}]}))
    rc, report = lab["doctor"](*extra)
    assert rc == 1 and not report["ok"]
    fails = [c for c in report["checks"] if c["status"] == "FAIL" and c["name"] == check]
    assert fails and words in fails[0]["detail"] + fails[0]["fix"], report
    assert all(c["fix"] for c in report["checks"] if c["status"] == "FAIL")


def test_stale_state_is_found_and_gc_releases_it(lab) -> None:
    pod, gone = lab["make_netns"](), lab["make_netns"]()
    lab["add_pod"](pod)
    lab["add_pod"](gone, 9090)
    (lab["net_d"] / "10-flannel.conf").write_text("{}")  # stale single config
    (lab["tmp"] / "flannel" / "orphan-id").write_text("{}")  # saved config without a reservation
    subprocess.run(["ip", "netns", "delete", gone.name], check=True)  # the pod died without a DEL
    _rc, report = lab["doctor"]()
    s = statuses(report)
    assert "WARN" in s["stale config"] and s["stale reservations"] == ["WARN"]
    assert s["flannel dataDir"] == ["WARN"] and "orphan-id" in find(report, "flannel dataDir")["detail"]
    assert s["portmap rules"] == ["WARN"]
    ipam = lab["tmp"] / "ipam" / "cbr0"
    assert sorted(n for n in os.listdir(ipam) if n[0].isdigit()) == ["10.42.1.2", "10.42.1.3"]
    _rc, report = lab["doctor"]("--gc")
    assert "released 1" in find(report, "stale reservations")["detail"]
    assert sorted(n for n in os.listdir(ipam) if n[0].isdigit()) == ["10.42.1.2"]  # the live pod keeps its IP


def test_install_cni_doctor_mode(lab) -> None:
    out = subprocess.run(["ip", "netns", "exec", lab["node"].name, *our_program(
        "install-cni", "--mode", "doctor", "--conf-dir", str(lab["net_d"]), "--bin-dir", lab["bins"], "--json")],
        capture_output=True, text=True, env={**os.environ, "PYTHONPATH": REPO})
    report = json.loads(out.stdout)
    assert out.returncode == 0 and report["ok"] and find(report, "conflist")["status"] == "PASS"


@pytest.mark.parametrize("breakage,check", [
    ("ip-forward-off", "ip_forward"), ("stale-subnet-env", "subnet.env"), ("pool-nearly-full", "pool use"),
    ("both-iptables-backends", "iptables backends"),
])
def test_warnings_with_fixes(lab, breakage, check) -> None:
    if breakage == "ip-forward-off":
        lab["node"].run("sysctl", "-qw", "net.ipv4.ip_forward=0")
    elif breakage == "stale-subnet-env":
        os.utime(lab["env"], (1, 1))  # written long before this boot
    elif breakage == "pool-nearly-full":
        ipam = lab["tmp"] / "ipam" / "cbr0"
        ipam.mkdir(parents=True)
        for i in range(2, 250):
            (ipam / f"10.42.1.{i}").write_text(f"gone-{i}\r\neth0")
        (lab["tmp"] / "flannel").mkdir(exist_ok=True)
        for i in range(2, 250):
            (lab["tmp"] / "flannel" / f"gone-{i}").write_text("{}")
    elif breakage == "both-iptables-backends":
        if not shutil.which("iptables-legacy-save"):
            pytest.skip("iptables-legacy is not installed")
        lab["node"].run("iptables-legacy", "-t", "nat", "-A", "POSTROUTING", "-j", "RETURN")
        lab["node"].run("iptables-nft", "-t", "nat", "-A", "POSTROUTING", "-j", "RETURN")
    _rc, report = lab["doctor"]()
    found = [c for c in report["checks"] if c["name"] == check and c["status"] in ("WARN", "FAIL")]
    assert found and found[0]["fix"], report
