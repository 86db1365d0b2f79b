"""The live demo: two flannel nodes joined by vxlan, two pods on each, the seed conflist.

    cni-flannel demo [--bundle dist/cni-flannel] [--sandbox ./sandbox]

1. install-cni (from the frozen bundle) into a sandbox root per node;
2. nodes as network namespaces joined by vxlan, set up as flanneld would;
3. cnitool ADD of two pods per node (one with a hostPort);
4. connectivity within and across nodes, the hostPort, CHECK at cniVersion 1.0.0;
5. DEL of everything, then a check that nothing is left behind; a report.
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
from typing import Any

from . import topology, traffic

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
    try:
        lab = topology.build(sandbox, count=2, prefix="cnifdemo")
        return demo(os.path.abspath(a.bundle), sandbox, lab)
    except (DemoFailed, RuntimeError, OSError, subprocess.SubprocessError) as exc:
        print(f"{RED}demo failed:{END} {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("interrupted: cleaning up", file=sys.stderr)
        return 130
    finally:
        if lab is not None:
            lab.destroy()
        say(f"removed the demo namespaces; the sandbox stays in {sandbox} for inspection")


def demo(bundle: str, sandbox: str, lab: topology.Lab) -> int:
    log = os.path.join(sandbox, "plugin-calls.log")
    exe = os.path.join(bundle, "cni-flannel")
    say("1. install-cni into a sandbox root per node")
    for node in lab.nodes:
        root = os.path.join(sandbox, node.name)
        env = {**os.environ, "CNI_NETWORK_CONFIG": json.dumps(node_conflist(root, node.subnet_env), indent=2)}
        out = run([exe, "install-cni", "--source", bundle, "--bin-dir", f"{root}/opt/cni/bin",
                   "--conf-dir", f"{root}/etc/cni/net.d"], env)
        ok(f"{node.name}: {out.stderr.strip().splitlines()[-1] if out.stderr else out.returncode}",
           out.returncode == 0)
    say(f"2. nodes {', '.join(n.name for n in lab.nodes)} joined by vxlan flannel.1 (VNI 1, UDP 8472)")
    for node in lab.nodes:
        print(f"    {node.name}: underlay {node.underlay_ip}, FLANNEL_SUBNET {node.subnet}, {node.subnet_env}")

    def cnitool(verb: str, node: topology.Node, pod: str, caps: dict[str, Any] | None = None
                ) -> subprocess.CompletedProcess[str]:
        root = os.path.join(sandbox, node.name)
        env = {k: v for k, v in os.environ.items() if not k.startswith("CNI_")}
        env.update({"NETCONFPATH": f"{root}/etc/cni/net.d", "CNI_PATH": f"{root}/opt/cni/bin",
                    "CNI_CACHE_DIR": f"{root}/var/lib/cni", "CNI_FLANNEL_LOG": log,
                    "CAP_ARGS": json.dumps(caps or {})})
        return run([f"{root}/opt/cni/bin/cnitool", verb, "cbr0", f"/run/netns/{pod}"], env, node.netns)

    say("3. ADD two pods per node through cnitool (flannel -> bridge + host-local in-process -> portmap)")
    pods: dict[str, tuple[topology.Node, str]] = {}
    caps_web = {"portMappings": [{"hostPort": 8080, "containerPort": 80, "protocol": "tcp"}]}
    for node in lab.nodes:
        for i in (1, 2):
            pod = lab.new_netns(f"{node.name}-pod{i}")
            caps = caps_web if (node is lab.nodes[0] and i == 1) else None
            out = cnitool("add", node, pod, caps)
            ok(f"{pod}: ADD failed: {out.stderr.strip()}" if out.returncode else
               f"{pod}: {json.loads(out.stdout)['ips'][0]['address']}"
               + (" hostPort 8080->80" if caps else ""), out.returncode == 0)
            pods[pod] = (node, json.loads(out.stdout)["ips"][0]["address"].split("/")[0])

    say("4. connectivity, hostPort and CHECK")
    names = list(pods)
    (a1, (n1, ip_a1)), (a2, (_, ip_a2)), (b1, (n2, ip_b1)), (b2, (_, _ip_b2)) = (
        (n, pods[n]) for n in names)
    gw1 = ip_a1.rsplit(".", 1)[0] + ".1"
    ok(f"{a1} -> gateway {gw1}", traffic.ping(a1, gw1))
    ok(f"{a1} -> {a2} ({ip_a2}) same node", traffic.ping(a1, ip_a2))
    ok(f"{a1} -> {b1} ({ip_b1}) across nodes over vxlan", traffic.ping(a1, ip_b1, 2))
    ok(f"{b2} -> {a2} ({ip_a2}) across nodes over vxlan", traffic.ping(b2, ip_a2, 2))
    with traffic.server(a1, 80, "hello-from-" + a1):
        reply = traffic.request(n2.netns, n1.underlay_ip, 8080)
        ok(f"{n2.name} -> {n1.underlay_ip}:8080 (hostPort) answered: {reply}", bool(reply))
        reply = traffic.request(n1.netns, "127.0.0.1", 8080)
        ok(f"{n1.name} -> 127.0.0.1:8080 (hostPort via localhost) answered: {reply}", bool(reply))
        reply = traffic.request(b1, n1.underlay_ip, 8080)
        ok(f"{b1} -> {n1.underlay_ip}:8080 (pod on another node) answered: {reply}", bool(reply))
    for pod, (node, _) in pods.items():
        caps = caps_web if pod == a1 else None
        out = cnitool("check", node, pod, caps)
        ok(f"CHECK {pod} (cniVersion 1.0.0)" + (f": {out.stderr.strip()}" if out.returncode else ""),
           out.returncode == 0)

    say("5. DEL everything and look for leftovers")
    for pod, (node, _) in pods.items():
        out = cnitool("del", node, pod, caps_web if pod == a1 else None)
        ok(f"DEL {pod}" + (f": {out.stderr.strip()}" if out.returncode else ""), out.returncode == 0)
    leftovers = residue(sandbox, lab)
    ok("nothing left behind (veths, reservations, dataDir files, CNI-DN chains, cached results)"
       if not leftovers else f"left behind: {leftovers}", not leftovers)
    report(log, lab, pods)
    return 0


def residue(sandbox: str, lab: topology.Lab) -> list[str]:
    found = []
    for node in lab.nodes:
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


def report(log: str, lab: topology.Lab, pods: dict[str, Any]) -> None:
    say("report")
    calls: dict[tuple[str, str], list[float]] = {}
    with open(log) as f:
        for line in f:
            e = json.loads(line)
            if "plugin" in e:
                calls.setdefault((e["plugin"], e["verb"]), []).append(e["durationMs"])
    print(f"    created: {len(lab.nodes)} nodes, {len(pods)} pods, 1 hostPort; all removed again")
    print(f"    {'plugin':<10} {'verb':<6} {'calls':>5} {'median ms':>10} {'max ms':>8}")
    for (plugin, verb), ms in sorted(calls.items()):
        print(f"    {plugin:<10} {verb:<6} {len(ms):>5} {statistics.median(ms):>10.1f} {max(ms):>8.1f}")
    print("    (in-plugin time from CNI_FLANNEL_LOG; process start-up comes on top, see the benchmark)")
    print(f"    final state: bridge mycni8 kept on each node with no ports; log in {log}")
