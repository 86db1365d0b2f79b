"""The reliability suite: storms, SIGKILL trials, full and read-only disks, fuzzing, upgrades.

Each test prints its figures (trials, concurrency, inputs tried, residue found) in a
line starting with ``FIGURES``; run with ``-s`` to see them (scripts/test.sh does).
"""
from __future__ import annotations

import json
import os
import subprocess
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import pytest
from harness import REPO, Netns, our_command, plugin_dir

from cni_flannel.tools import topology

SEED_DELEGATE = {"forceAddress": True, "bridge": "mycni8", "isDefaultGateway": True}


def figures(**kw: object) -> None:
    print("FIGURES " + json.dumps(kw, sort_keys=True), flush=True)


@dataclass
class Node:
    ns: Netns
    root: str
    bin_dir: str
    subnet_env: str

    @property
    def flannel_dir(self) -> str:
        return os.path.join(self.root, "flannel")

    @property
    def ipam_dir(self) -> str:
        return os.path.join(self.root, "ipam", "cbr0")

    def conf(self, plugin: str, version: str = "0.3.1", **extra: object) -> dict:
        if plugin == "flannel":
            c = {"cniVersion": version, "name": "cbr0", "type": "flannel", "delegate": dict(SEED_DELEGATE),
                 "subnetFile": self.subnet_env, "dataDir": self.flannel_dir,
                 "ipam": {"dataDir": os.path.join(self.root, "ipam")}}
        else:
            c = {"cniVersion": version, "name": "cbr0", "type": "portmap", "capabilities": {"portMappings": True}}
        c.update(extra)
        return c

    def run(self, plugin: str, verb: str, conf: dict, cid: str, netns: str) -> subprocess.CompletedProcess[bytes]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("CNI_") or k.startswith("CNI_FLANNEL_")}
        env.update({"CNI_COMMAND": verb, "CNI_CONTAINERID": cid, "CNI_NETNS": netns, "CNI_IFNAME": "eth0",
                    "CNI_PATH": self.bin_dir, "PYTHONPATH": REPO, "CNI_ARGS": "IgnoreUnknown=1"})
        return subprocess.run(["ip", "netns", "exec", self.ns.name, *our_command(plugin)],
                              input=json.dumps(conf).encode(), capture_output=True, env=env, timeout=120)

    def add_pod(self, cid: str, netns: str, port: int | None = None) -> dict:
        out = self.run("flannel", "ADD", self.conf("flannel"), cid, netns)
        assert out.returncode == 0, out.stdout
        res = json.loads(out.stdout)
        maps = [{"hostPort": port, "containerPort": 80, "protocol": "tcp"}] if port else []
        pm = self.conf("portmap", prevResult=res, runtimeConfig={"portMappings": maps})
        out = self.run("portmap", "ADD", pm, cid, netns)
        assert out.returncode == 0, out.stdout
        return res

    def del_pod(self, cid: str, netns: str, port: int | None = None) -> None:
        maps = [{"hostPort": port, "containerPort": 80, "protocol": "tcp"}] if port else []
        for plugin, conf in (("portmap", self.conf("portmap", runtimeConfig={"portMappings": maps})),
                             ("flannel", self.conf("flannel"))):
            out = self.run(plugin, "DEL", conf, cid, netns)
            assert out.returncode == 0, (plugin, out.stdout, out.stderr)

    def residue(self) -> list[str]:
        found: list[str] = []
        links = json.loads(self.ns.run("ip", "-j", "link", "show").stdout)
        found += [f"veth {lk['ifname']}" for lk in links if lk.get("master") == "mycni8"]
        if os.path.isdir(self.ipam_dir):
            found += [f"ipam {n}" for n in os.listdir(self.ipam_dir)
                      if n not in ("lock",) and not n.startswith("last_reserved_ip.")]
        if os.path.isdir(self.flannel_dir):
            found += [f"flannel {n}" for n in os.listdir(self.flannel_dir)]
        nat = self.ns.run("iptables-save", "-t", "nat").stdout
        found += [f"rule {line}" for line in nat.splitlines() if "CNI-DN-" in line or (line.startswith(":CNI-")
                  and not line.startswith((":CNI-HOSTPORT-",)))]
        return found


@pytest.fixture
def flannel_node(make_netns: Callable[[], Netns], tmp_path) -> Iterator[Node]:
    ns = make_netns()
    env = tmp_path / "subnet.env"
    topology.write_subnet_env(str(env), "10.42.0.0/16", "10.42.1.0/24", 1450, True)
    yield Node(ns=ns, root=str(tmp_path / "state"), bin_dir=plugin_dir(str(tmp_path)), subnet_env=str(env))
