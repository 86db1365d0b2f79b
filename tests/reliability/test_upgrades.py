"""Upgrades and rollbacks on one node: pods of the Go plugins deleted by ours, and the other way round.

Debian ships no Go flannel, so its part (save the delegate config, exec the delegate)
is played exactly as flannel_linux.go does it, with the byte-identical saved JSON.
"""
from __future__ import annotations

import json
import os
import subprocess

import pytest
from conftest import figures
from harness import GO_CNI_DIR, delete_netns, new_netns

from cni_flannel.plugins.flannel import FlannelConf, build_delegate, go_json, load_subnet_env
from cni_flannel.tools import topology

MAPS = {"portMappings": [{"hostPort": 32080, "containerPort": 80, "protocol": "tcp"}]}


def go_run(node, plugin: str, verb: str, conf: bytes, cid: str, netns: str) -> subprocess.CompletedProcess[bytes]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("CNI_")}
    env.update({"CNI_COMMAND": verb, "CNI_CONTAINERID": cid, "CNI_NETNS": netns, "CNI_IFNAME": "eth0",
                "CNI_PATH": GO_CNI_DIR})
    return subprocess.run(["ip", "netns", "exec", node.ns.name, os.path.join(GO_CNI_DIR, plugin)], input=conf,
                          capture_output=True, env=env, timeout=60)


def go_flannel_add(node, cid: str, netns: str) -> dict:
    """What Go flannel does: build, save dataDir/<cid>, exec the bridge; then Go portmap."""
    fc = FlannelConf(name="cbr0", cni_version="0.3.1", subnet_file=node.subnet_env, data_dir=node.flannel_dir,
                     delegate={"forceAddress": True, "bridge": "mycni8", "isDefaultGateway": True},
                     ipam={"dataDir": os.path.join(node.root, "ipam")}, runtime_config=None)
    data = go_json(build_delegate(fc, load_subnet_env(node.subnet_env)))
    os.makedirs(node.flannel_dir, mode=0o700, exist_ok=True)
    with open(os.path.join(node.flannel_dir, cid), "wb") as f:
        f.write(data)
    out = go_run(node, "bridge", "ADD", data, cid, netns)
    assert out.returncode == 0, out.stdout
    res = json.loads(out.stdout)
    pm = dict(node.conf("portmap"), prevResult=res, runtimeConfig=MAPS)
    assert go_run(node, "portmap", "ADD", json.dumps(pm).encode(), cid, netns).returncode == 0
    return res


def go_flannel_del(node, cid: str, netns: str) -> None:
    pm = dict(node.conf("portmap"), runtimeConfig=MAPS)
    assert go_run(node, "portmap", "DEL", json.dumps(pm).encode(), cid, netns).returncode == 0
    path = os.path.join(node.flannel_dir, cid)
    with open(path, "rb") as f:
        saved = f.read()
    out = go_run(node, "bridge", "DEL", saved, cid, netns)
    assert out.returncode == 0, out.stdout
    os.unlink(path)


@pytest.mark.usefixtures("requires_go")
def test_go_and_ours_delete_each_others_pods_and_never_collide(flannel_node) -> None:
    node = flannel_node
    topology.write_subnet_env(node.subnet_env, "10.42.0.0/16", "10.42.1.0/24", 1450, ipmasq=False)  # masq rules
    pods = {n: new_netns("cnifu") for n in ("go1", "ours1", "go2", "ours2")}
    try:
        ips = {"go1": go_flannel_add(node, "go1", pods["go1"].path)["ips"][0]["address"]}
        ips["ours1"] = node.add_pod("ours1", pods["ours1"].path, 32081)["ips"][0]["address"]
        nat = node.ns.run("iptables-save", "-t", "nat").stdout
        assert nat.count("-j MASQUERADE") >= 3 and nat.count("CNI-DN-") >= 4
        # ours deletes the Go pod; Go deletes ours
        maps = [{"hostPort": 32080, "containerPort": 80, "protocol": "tcp"}]
        for plugin, conf in (("portmap", node.conf("portmap", runtimeConfig={"portMappings": maps})),
                             ("flannel", node.conf("flannel"))):
            assert node.run(plugin, "DEL", conf, "go1", pods["go1"].path).returncode == 0
        go_flannel_del(node, "ours1", pods["ours1"].path)
        assert node.residue() == []
        nat = node.ns.run("iptables-save", "-t", "nat").stdout
        assert "224.0.0.0/4" not in nat  # no per-pod masquerade chain is left
        # new pods from either side never collide
        ips["go2"] = go_flannel_add(node, "go2", pods["go2"].path)["ips"][0]["address"]
        ips["ours2"] = node.add_pod("ours2", pods["ours2"].path)["ips"][0]["address"]
        assert ips["go2"] != ips["ours2"]
        go_flannel_del(node, "go2", pods["go2"].path)
        node.del_pod("ours2", pods["ours2"].path)
        assert node.residue() == []
        figures(test="upgrade_rollback", pods=4, collisions=0, residue=0)
    finally:
        for ns in pods.values():
            delete_netns(ns)
