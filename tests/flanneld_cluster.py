"""A flannel cluster in namespaces for end-to-end tests: etcd or the tests' API server, our
flanneld on every node, and pods made with our CNI plugins through cnitool and the seed conflist.

    cl = Cluster(lab, tmp)                 # tests/flanneld_lab.Lab
    cl.start_etcd(); cl.put_config({...})  # etcd on its own host on the underlay
    n1 = cl.add_node("node1"); cl.start_flanneld(n1, "--ip-masq")
    cl.wait_ready(n1)                      # /readyz 200 (subnet.env written and every peer programmed)
    pod = cl.add_pod(n1, "a")              # cnitool ADD with the seed conflist; pod.ip, pod.ns
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from dataclasses import dataclass, field
from typing import Any

from flanneld_lab import Host, Lab
from harness import REPO, Netns, cnitool, delete_netns, new_netns, our_program, plugin_dir

HEALTHZ_PORT = 8471
SEED_CONFLIST = {"name": "cbr0", "cniVersion": "1.0.0", "plugins": [
    {"type": "flannel", "delegate": {"forceAddress": True, "bridge": "mycni8", "isDefaultGateway": True,
                                     "hairpinMode": True}},
    {"type": "portmap", "capabilities": {"portMappings": True}}]}
SEED_NET_CONF = {"Network": "10.42.0.0/16", "Backend": {"Type": "vxlan", "DirectRouting": True}}


@dataclass
class Pod:
    name: str
    node: Node
    ns: Netns
    ip: str


@dataclass
class Node:
    host: Host
    proc: subprocess.Popen | None = None
    args: list[str] = field(default_factory=list)
    pods: list[Pod] = field(default_factory=list)

    @property
    def name(self) -> str:
        return self.host.name

    @property
    def ns(self) -> Netns:
        return self.host.ns

    @property
    def subnet_file(self) -> str:
        return os.path.join(self.host.dir, "run", "flannel", "subnet.env")

    @property
    def log_path(self) -> str:
        return os.path.join(self.host.dir, "flanneld.log")

    def log(self) -> str:
        try:
            with open(self.log_path, errors="replace") as f:
                return f.read()
        except FileNotFoundError:
            return ""

    def subnet_env(self) -> dict[str, str]:
        with open(self.subnet_file) as f:
            return dict(line.split("=", 1) for line in f.read().splitlines() if "=" in line)


class Cluster:
    def __init__(self, lab: Lab, tmp: str) -> None:
        self.lab, self.tmp = lab, tmp
        self.etcd: Any = None
        self.kubeapi: Any = None
        self.nodes: list[Node] = []
        self.bin_dir = plugin_dir(tmp)
        self._pod_ns: list[Netns] = []

    # -- etcd
    def start_etcd(self, **kw: Any) -> Any:
        from etcd_server import start_etcd

        host = self.lab.add_host("etcd")
        self.etcd = start_etcd(self.lab, host, **kw)
        return self.etcd

    # -- the tests' Kubernetes API server (tests/kubeapi), listening in its own host namespace
    def start_kubeapi(self, **kw: Any) -> Any:
        from kubeapi import KubeAPIServer

        host = self.lab.add_host("api")
        work = os.path.join(host.dir, "kubeapi")
        os.makedirs(work, exist_ok=True)
        self.kubeapi = KubeAPIServer(host=host.ip, port=6443, netns_path=host.netns_path, workdir=work, **kw)
        self.kubeapi.start()
        return self.kubeapi

    def kube_args(self, node: Node, net_conf: dict[str, Any], token: str = "flannel-token") -> list[str]:
        """Flags for kube mode on ``node``: its kubeconfig and net-conf.json files."""
        kubeconfig = os.path.join(node.host.dir, "kubeconfig")
        self.kubeapi.write_kubeconfig(kubeconfig, token=token)
        conf_path = os.path.join(node.host.dir, "net-conf.json")
        with open(conf_path, "w") as f:
            json.dump(net_conf, f)
        return ["--kube-subnet-mgr", f"--kubeconfig-file={kubeconfig}", f"--net-config-path={conf_path}"]

    def put_config(self, conf: dict[str, Any] | str, prefix: str = "/coreos.com/network") -> None:
        self.etcd.put(f"{prefix}/config", conf if isinstance(conf, str) else json.dumps(conf))

    # -- nodes and flanneld
    def add_node(self, name: str) -> Node:
        node = Node(self.lab.add_host(name))
        self.nodes.append(node)
        return node

    def flanneld_argv(self, node: Node, *extra: str) -> list[str]:
        base = [f"--subnet-file={node.subnet_file}", f"--state-dir={node.host.dir}/state",
                "--healthz-ip=127.0.0.1", f"--healthz-port={HEALTHZ_PORT}", "--iptables-resync=1",
                "--reconcile-period=1"]
        if self.etcd is not None and not any(a.startswith("--kube-subnet-mgr") for a in extra):
            base.append(f"--etcd-endpoints={self.etcd.endpoint}")
        return our_program("flanneld", *base, *extra)

    def start_flanneld(self, node: Node, *extra: str, env: dict[str, str] | None = None) -> subprocess.Popen:
        node.args = list(extra)
        node.proc = self.lab.spawn(node.host, self.flanneld_argv(node, *extra), "flanneld.log",
                                   env={"PYTHONPATH": REPO, **(env or {})})
        return node.proc

    def stop_flanneld(self, node: Node, sig: int = 15) -> int:
        assert node.proc is not None
        rc = self.lab.stop(node.proc, sig)
        node.proc = None
        return rc

    def health(self, node: Node, path: str = "/readyz") -> tuple[int, str]:
        code = (
            "import sys,urllib.request,urllib.error\n"
            f"try:\n r=urllib.request.urlopen('http://127.0.0.1:{HEALTHZ_PORT}{path}',timeout=3);"
            "print(r.status);print(r.read().decode())\n"
            "except urllib.error.HTTPError as e:\n print(e.code);print(e.read().decode())\n"
            "except OSError as e:\n print(0);print(e)\n")
        out = node.ns.run(sys.executable, "-c", code, check=False).stdout
        status, _, body = out.partition("\n")
        return int(status or 0), body.strip()

    def wait_ready(self, node: Node, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        last = (0, "")
        while time.monotonic() < deadline:
            if node.proc is not None and node.proc.poll() is not None:
                raise AssertionError(f"flanneld on {node.name} exited {node.proc.returncode}:\n{node.log()[-3000:]}")
            last = self.health(node)
            if last[0] == 200:
                return
            time.sleep(0.3)
        raise AssertionError(f"flanneld on {node.name} not ready after {timeout}s: {last}\n{node.log()[-3000:]}")

    def wait_all_ready(self, timeout: float = 60) -> None:
        for node in self.nodes:
            if node.proc is not None:
                self.wait_ready(node, timeout)

    # -- pods through our CNI plugins (cnitool, seed conflist)
    def conf_dir(self, node: Node) -> str:
        d = os.path.join(node.host.dir, "net.d")
        os.makedirs(d, exist_ok=True)
        conf = json.loads(json.dumps(SEED_CONFLIST))
        conf["plugins"][0].update(subnetFile=node.subnet_file, dataDir=f"{node.host.dir}/cni/flannel",
                                  ipam={"dataDir": f"{node.host.dir}/cni/networks"})
        with open(os.path.join(d, "10-flannel.conflist"), "w") as f:
            json.dump(conf, f)
        return d

    def add_pod(self, node: Node, name: str) -> Pod:
        ns = new_netns(f"{self.lab.prefix}-{node.name}-{name}")
        self._pod_ns.append(ns)
        out = cnitool("add", "cbr0", ns.path, conf_dir=self.conf_dir(node), bin_dir=self.bin_dir,
                      cache_dir=f"{node.host.dir}/cni/cache", node=node.ns)
        assert out.returncode == 0, f"ADD on {node.name}: {out.stdout}{out.stderr}"
        ip = json.loads(out.stdout)["ips"][0]["address"].split("/")[0]
        pod = Pod(name, node, ns, ip)
        node.pods.append(pod)
        return pod

    def del_pod(self, pod: Pod) -> None:
        out = cnitool("del", "cbr0", pod.ns.path, conf_dir=self.conf_dir(pod.node), bin_dir=self.bin_dir,
                      cache_dir=f"{pod.node.host.dir}/cni/cache", node=pod.node.ns)
        assert out.returncode == 0, f"DEL: {out.stdout}{out.stderr}"
        pod.node.pods.remove(pod)

    def destroy(self) -> None:
        if self.kubeapi is not None:
            self.kubeapi.stop()
        for ns in self._pod_ns:
            delete_netns(ns)
        self._pod_ns.clear()


def ping(src: Pod | Node, dst_ip: str, count: int = 2) -> bool:
    ns = src.ns
    return ns.run("ping", "-c", str(count), "-i", "0.2", "-W", "2", dst_ip, check=False).returncode == 0


def exchange(client: Pod, server: Pod, port: int = 5201, proto: str = "tcp") -> str | None:
    """A request/reply between two pods over TCP or UDP (the demo's traffic helper)."""
    from cni_flannel.tools import traffic

    with traffic.server(server.ns.name, port, f"hello-from-{server.name}", proto):
        return traffic.request(client.ns.name, server.ip, port, proto)


def json_of(ns: Netns, *cmd: str) -> Any:
    return json.loads(ns.run(*cmd).stdout or "null")
