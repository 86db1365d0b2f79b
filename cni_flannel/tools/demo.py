"""The live demo: a real etcd, our flanneld on three nodes, pods through the seed conflist.

    cni-flannel demo [--bundle dist/cni-flannel] [--sandbox ./sandbox]

1. install-cni (from the frozen bundle) into a sandbox root per node;
2. an etcd (Debian's etcd-server) in its own namespace with the seed's net-conf.json
   (10.42.0.0/16, vxlan, DirectRouting), and our flanneld (``--ip-masq``) on each node:
   node1 and node2 share an L2 segment (direct routes), node3 sits behind a router (vxlan);
3. what flanneld did: the leases in etcd, subnet.env, the peer routes, ARP and FDB entries;
4. cnitool ADD of pods (one with a hostPort), connectivity within and across nodes,
   the hostPort, CHECK at cniVersion 1.0.0;
5. DEL of everything, a check that nothing is left behind, flanneld and etcd stopped; a report.
Only namespaces it creates are touched, and they are removed even on Ctrl-C.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import time
from typing import Any

from . import topology, traffic
from .etcdlab import EtcdLab

NET_CONF = {"Network": "10.42.0.0/16", "Backend": {"Type": "vxlan", "DirectRouting": True}}
PREFIX = "/coreos.com/network"
HEALTHZ = 8471
SEED = {"name": "cbr0", "cniVersion": "0.3.1", "plugins": [
    {"type": "flannel", "delegate": {"forceAddress": True, "bridge": "mycni8", "isDefaultGateway": True}},
    {"type": "portmap", "capabilities": {"portMappings": True}}]}
GREEN, RED, BOLD, END = "\033[32m", "\033[31m", "\033[1m", "\033[0m"


class DemoFailed(Exception):
    pass


def say(msg: str) -> None:
    print(f"{BOLD}==>{END} {msg}", flush=True)


def ok(msg: str, good: bool = True) -> None:
    print(f"    {GREEN + 'ok  ' if good else RED + 'FAIL'}{END} {msg}", flush=True)
    if not good:
        raise DemoFailed(msg)


def node_conflist(root: str, subnet_env: str) -> dict[str, Any]:
    """The seed conflist with this node's paths; cniVersion 1.0.0 so that CHECK runs (0.3.1 has none)."""
    c = json.loads(json.dumps(SEED))
    c["cniVersion"] = "1.0.0"
    c["plugins"][0].update(subnetFile=subnet_env, dataDir=f"{root}/var/lib/cni/flannel",
                           ipam={"dataDir": f"{root}/var/lib/cni/networks"})
    return c


def run(cmd: list[str], env: dict[str, str] | None = None,
        netns: str | None = None) -> subprocess.CompletedProcess[str]:
    full = (["ip", "netns", "exec", netns] if netns else []) + cmd
    return subprocess.run(full, capture_output=True, text=True, env=env, timeout=120, check=False)


def main(argv: list[str]) -> int:
    p = argparse.ArgumentParser(prog="demo")
    p.add_argument("--bundle", default="dist/cni-flannel", help="the frozen bundle directory")
    p.add_argument("--sandbox", default="sandbox")
    a = p.parse_args(argv)
    if os.geteuid() != 0:
        print("the demo needs root (network namespaces)", file=sys.stderr)
        return 1
    signal.signal(signal.SIGTERM, lambda *_: (_ for _ in ()).throw(KeyboardInterrupt()))
    sandbox = os.path.abspath(a.sandbox)
    shutil.rmtree(sandbox, ignore_errors=True)
    os.makedirs(sandbox)
    lab: topology.Lab | None = None
    procs: list[subprocess.Popen[bytes]] = []
    try:
        lab, hosts = topology.build_underlay([("etcd", 77), ("node1", 77), ("node2", 77), ("node3", 78)],
                                             "cnifdemo")
        return demo(os.path.abspath(a.bundle), sandbox, lab, hosts, procs)
    except (DemoFailed, RuntimeError, OSError, subprocess.SubprocessError) as exc:
        print(f"{RED}demo failed:{END} {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("interrupted: cleaning up", file=sys.stderr)
        return 130
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
        if lab is not None:
            lab.destroy()
        say(f"removed the demo namespaces; the sandbox stays in {sandbox} for inspection")


def spawn(netns: str, argv: list[str], log_path: str) -> subprocess.Popen[bytes]:
    with open(log_path, "ab") as log:
        return subprocess.Popen(["ip", "netns", "exec", netns, *argv], stdout=log, stderr=subprocess.STDOUT,
                                start_new_session=True)


def readyz(netns: str) -> tuple[int, str]:
    """GET /readyz inside the node's namespace (a socket made there stays there)."""
    import urllib.error
    import urllib.request

    from ..net.netns import entered

    with entered(f"/run/netns/{netns}"):
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{HEALTHZ}/readyz", timeout=2) as r:
                return r.status, r.read().decode()
        except urllib.error.HTTPError as exc:
            return exc.code, exc.read().decode()
        except OSError as exc:
            return 0, str(exc)


def wait(pred: Any, timeout: float, what: str) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = pred()
        if value:
            return value
        time.sleep(0.3)
    raise DemoFailed(f"timed out after {timeout:.0f} s waiting for {what}")


def demo(bundle: str, sandbox: str, lab: topology.Lab, hosts: list[topology.Host],
         procs: list[subprocess.Popen[bytes]]) -> int:
    log = os.path.join(sandbox, "plugin-calls.log")
    exe = os.path.join(bundle, "cni-flannel")
    etcd_host, nodes = hosts[0], hosts[1:]
    subnet_env = {n.name: os.path.join(sandbox, n.name, "run", "flannel", "subnet.env") for n in nodes}
    say("1. install-cni into a sandbox root per node")
    for node in nodes:
        root = os.path.join(sandbox, node.name)
        env = {**os.environ, "CNI_NETWORK_CONFIG": json.dumps(node_conflist(root, subnet_env[node.name]), indent=2)}
        out = run([exe, "install-cni", "--source", bundle, "--bin-dir", f"{root}/opt/cni/bin",
                   "--conf-dir", f"{root}/etc/cni/net.d"], env)
        ok(f"{node.name}: {out.stderr.strip().splitlines()[-1] if out.stderr else out.returncode}",
           out.returncode == 0)

    say(f"2. etcd on {etcd_host.ip} with the seed's net-conf.json, then our flanneld on every node")
    etcd = EtcdLab(etcd_host.netns, etcd_host.ip, f"{sandbox}/etcd", f"{sandbox}/etcd.log").start()
    assert etcd.proc is not None
    procs.append(etcd.proc)
    url = etcd.url
    ok(f"etcd answers at {url}")
    out = etcd.ctl("put", f"{PREFIX}/config", json.dumps(NET_CONF))
    ok(f"{PREFIX}/config = {json.dumps(NET_CONF)}", out.returncode == 0)
    flanneld: dict[str, subprocess.Popen[bytes]] = {}
    for node in nodes:
        root = os.path.join(sandbox, node.name)
        argv = [exe, "flanneld", f"--etcd-endpoints={url}", "--ip-masq", f"--subnet-file={subnet_env[node.name]}",
                f"--state-dir={root}/run/flannel", "--healthz-ip=127.0.0.1", f"--healthz-port={HEALTHZ}"]
        flanneld[node.name] = spawn(node.netns, argv, f"{root}/flanneld.log")
        procs.append(flanneld[node.name])
    for node in nodes:
        wait(lambda n=node: readyz(n.netns)[0] == 200, 60, f"flanneld on {node.name} to be ready")
        ok(f"{node.name} ({node.ip}, segment 192.168.{node.segment}.0/24): /readyz says "
           f"{readyz(node.netns)[1]!r}")

    say("3. what flanneld did")
    leases = etcd.ctl("get", "--prefix", f"{PREFIX}/subnets/").stdout.splitlines()
    for key, value in zip(leases[::2], leases[1::2], strict=False):
        print(f"    etcd {key} = {value}")
    for node in nodes:
        with open(subnet_env[node.name]) as f:
            print(f"    {node.name} subnet.env: {' '.join(f.read().split())}")
    n1 = nodes[0]
    for title, cmd in (("routes", ["ip", "route", "show", "root", "10.42.0.0/16"]),
                       ("ARP on flannel.1", ["ip", "neigh", "show", "dev", "flannel.1"]),
                       ("FDB on flannel.1", ["bridge", "fdb", "show", "dev", "flannel.1"])):
        print(f"    {n1.name} {title}:")
        for line in run(cmd, netns=n1.netns).stdout.splitlines():
            print(f"      {line}")
    print("    (node2 shares node1's segment: a direct route; node3 is behind a router: vxlan)")

    def cnitool(verb: str, node: topology.Host, pod: str, caps: dict[str, Any] | None = None
                ) -> subprocess.CompletedProcess[str]:
        root = os.path.join(sandbox, node.name)
        env = {k: v for k, v in os.environ.items() if not k.startswith("CNI_")}
        env.update({"NETCONFPATH": f"{root}/etc/cni/net.d", "CNI_PATH": f"{root}/opt/cni/bin",
                    "CNI_CACHE_DIR": f"{root}/var/lib/cni", "CNI_FLANNEL_LOG": log,
                    "CAP_ARGS": json.dumps(caps or {})})
        return run([f"{root}/opt/cni/bin/cnitool", verb, "cbr0", f"/run/netns/{pod}"], env, node.netns)

    say("4. ADD pods through cnitool (flannel -> bridge + host-local in-process -> portmap)")
    pods: dict[str, tuple[topology.Host, str]] = {}
    caps_web = {"portMappings": [{"hostPort": 8080, "containerPort": 80, "protocol": "tcp"}]}
    for node, count in zip(nodes, (2, 1, 1), strict=True):
        for i in range(1, count + 1):
            pod = lab.new_netns(f"{node.name}-pod{i}")
            caps = caps_web if (node is nodes[0] and i == 1) else None
            out = cnitool("add", node, pod, caps)
            ok(f"{pod}: ADD failed: {out.stderr.strip()}" if out.returncode else
               f"{pod}: {json.loads(out.stdout)['ips'][0]['address']}"
               + (" hostPort 8080->80" if caps else ""), out.returncode == 0)
            pods[pod] = (node, json.loads(out.stdout)["ips"][0]["address"].split("/")[0])
    (a1, (_, ip_a1)), (a2, (_, ip_a2)), (b1, (n2, ip_b1)), (c1, (_, ip_c1)) = pods.items()
    gw1 = ip_a1.rsplit(".", 1)[0] + ".1"
    ok(f"{a1} -> gateway {gw1}", traffic.ping(a1, gw1))
    ok(f"{a1} -> {a2} ({ip_a2}) same node", traffic.ping(a1, ip_a2))
    ok(f"{a1} -> {b1} ({ip_b1}) node2, direct route", traffic.ping(a1, ip_b1, 2))
    ok(f"{a1} -> {c1} ({ip_c1}) node3, over vxlan", traffic.ping(a1, ip_c1, 2))
    ok(f"{c1} -> {b1} ({ip_b1}) node3 -> node2, over vxlan", traffic.ping(c1, ip_b1, 2))
    with traffic.server(a1, 80, "hello-from-" + a1):
        reply = traffic.request(n2.netns, n1.ip, 8080)
        ok(f"{n2.name} -> {n1.ip}:8080 (hostPort) answered: {reply}", bool(reply))
        reply = traffic.request(n1.netns, "127.0.0.1", 8080)
        ok(f"{n1.name} -> 127.0.0.1:8080 (hostPort via localhost) answered: {reply}", bool(reply))
        reply = traffic.request(c1, n1.ip, 8080)
        ok(f"{c1} -> {n1.ip}:8080 (pod on another node) answered: {reply}", bool(reply))
    for pod, (node, _) in pods.items():
        caps = caps_web if pod == a1 else None
        out = cnitool("check", node, pod, caps)
        ok(f"CHECK {pod} (cniVersion 1.0.0)" + (f": {out.stderr.strip()}" if out.returncode else ""),
           out.returncode == 0)

    say("5. DEL everything, look for leftovers, stop flanneld (it keeps its lease and routes) and etcd")
    for pod, (node, _) in pods.items():
        out = cnitool("del", node, pod, caps_web if pod == a1 else None)
        ok(f"DEL {pod}" + (f": {out.stderr.strip()}" if out.returncode else ""), out.returncode == 0)
    leftovers = residue(sandbox, nodes)
    ok("nothing left behind (veths, reservations, dataDir files, CNI-DN chains, cached results)"
       if not leftovers else f"left behind: {leftovers}", not leftovers)
    for name, proc in flanneld.items():
        proc.send_signal(signal.SIGTERM)
        rc = proc.wait(20)
        ok(f"flanneld on {name} stopped on SIGTERM, exit {rc}", rc == 0)
    report(log, nodes, pods)
    return 0


def residue(sandbox: str, nodes: list[topology.Host]) -> list[str]:
    found = []
    for node in nodes:
        root = os.path.join(sandbox, node.name)
        links = json.loads(run(["ip", "-j", "link", "show"], netns=node.netns).stdout)
        found += [f"{node.name}:{lk['ifname']}" for lk in links if lk.get("master") == "mycni8"]
        ipam = f"{root}/var/lib/cni/networks/cbr0"
        if os.path.isdir(ipam):
            found += [f"{node.name}:{ipam}/{n}" for n in os.listdir(ipam) if n[0].isdigit()]
        flannel = f"{root}/var/lib/cni/flannel"
        if os.path.isdir(flannel):
            found += [f"{node.name}:{flannel}/{n}" for n in os.listdir(flannel)]
        results = f"{root}/var/lib/cni/results"
        if os.path.isdir(results):
            found += [f"{node.name}:{results}/{n}" for n in os.listdir(results)]
        nat = run(["iptables-save", "-t", "nat"], netns=node.netns).stdout
        found += [f"{node.name}:{line}" for line in nat.splitlines() if "CNI-DN-" in line]
    return found


def report(log: str, nodes: list[topology.Host], pods: dict[str, Any]) -> None:
    say("report")
    calls: dict[tuple[str, str], list[float]] = {}
    with open(log) as f:
        for line in f:
            e = json.loads(line)
            if "plugin" in e:
                calls.setdefault((e["plugin"], e["verb"]), []).append(e["durationMs"])
    print(f"    created: {len(nodes)} nodes with flanneld, {len(pods)} pods, 1 hostPort; pods removed again")
    print(f"    {'plugin':<10} {'verb':<6} {'calls':>5} {'median ms':>10} {'max ms':>8}")
    for (plugin, verb), ms in sorted(calls.items()):
        print(f"    {plugin:<10} {verb:<6} {len(ms):>5} {statistics.median(ms):>10.1f} {max(ms):>8.1f}")
    print("    (in-plugin time from CNI_FLANNEL_LOG; process start-up comes on top, see the benchmark)")
    print(f"    final state: bridge mycni8 kept on each node with no ports; log in {log}")
