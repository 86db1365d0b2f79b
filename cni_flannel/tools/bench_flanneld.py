"""Benchmark of flanneld against a real etcd, in namespaces made here (``cni-flannel bench flanneld``).

    cni-flannel bench flanneld [--bundle dist/cni-flannel] [--idle-seconds 60] [--json out.json]

Figures: start to subnet.env and to /readyz; a new node's peer entries on the other node;
10, 100 and 1,000 simulated remote leases written to etcd at once (8 transactions of <=128
puts, nodes that need not exist) until their routes exist, and until they are gone again after
their etcd lease is revoked; the cost of a reconcile that changes nothing (flanneld -v=2 logs
each pass); CPU and peak RSS idle and under churn. Targets (issue 16): 1,000 leases programmed in
< 2 s, idle CPU < 0.5 % of a core, RSS < 60 MB.
"""
from __future__ import annotations

import argparse
import json
import os
import random
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from typing import Any

from . import topology
from .etcdlab import EtcdLab

PREFIX = "/coreos.com/network"
NET_CONF = {"Network": "10.64.0.0/10", "SubnetLen": 24, "Backend": {"Type": "vxlan"}}
HEALTHZ = 8471
TICK = os.sysconf("SC_CLK_TCK")


def flanneld_argv(bundle: str | None) -> list[str]:
    if bundle:
        return [os.path.join(os.path.abspath(bundle), "cni-flannel"), "flanneld"]
    return [sys.executable, "-m", "cni_flannel", "flanneld"]


def cpu_seconds(pid: int) -> float:
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICK


def rss_mb(pid: int, key: str = "VmHWM") -> float:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith(key + ":"):
                return int(line.split()[1]) / 1024
    return 0.0


def count_routes(netns: str, dev: str = "flannel.1") -> int:
    out = subprocess.run(["ip", "-n", netns, "-4", "route", "show", "dev", dev], capture_output=True, text=True,
                         check=False).stdout
    return sum(1 for line in out.splitlines() if line.startswith("10."))


def wait(pred: Any, timeout: float, step: float = 0.01) -> float | None:
    """Seconds until ``pred()`` holds, or None."""
    t0 = time.monotonic()
    while time.monotonic() - t0 < timeout:
        if pred():
            return time.monotonic() - t0
        time.sleep(step)
    return None


def ready(netns: str) -> bool:
    import urllib.error
    import urllib.request

    from ..net.netns import entered

    with entered(f"/run/netns/{netns}"):
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{HEALTHZ}/readyz", timeout=1) as r:
                return bool(r.status == 200)
        except (urllib.error.URLError, OSError):
            return False


class Bench:
    def __init__(self, bundle: str | None, work: str, idle: float) -> None:
        self.bundle, self.work, self.idle = bundle, work, idle
        self.rows: list[tuple[str, str, str]] = []
        self.procs: list[subprocess.Popen[bytes]] = []
        self.lab: topology.Lab | None = None

    def row(self, figure: str, value: str, target: str = "") -> None:
        self.rows.append((figure, value, target))
        print(f"  {figure:<58} {value:>14} {target}", flush=True)

    def start_flanneld(self, host: topology.Host, url: str, *extra: str) -> subprocess.Popen[bytes]:
        d = os.path.join(self.work, host.name)
        os.makedirs(d, exist_ok=True)
        argv = ["ip", "netns", "exec", host.netns, *flanneld_argv(self.bundle), f"--etcd-endpoints={url}",
                "--ip-masq", f"--subnet-file={d}/subnet.env", f"--state-dir={d}", "--healthz-ip=127.0.0.1",
                f"--healthz-port={HEALTHZ}", *extra]
        with open(os.path.join(d, "flanneld.log"), "ab") as log:
            proc = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        self.procs.append(proc)
        return proc

    def run(self) -> int:
        self.lab, hosts = topology.build_underlay([("etcd", 77), ("node1", 77), ("node2", 77)],
                                                  f"cnifbf{uuid.uuid4().hex[:3]}")
        etcd_host, n1, n2 = hosts
        etcd = EtcdLab(etcd_host.netns, etcd_host.ip, f"{self.work}/etcd", f"{self.work}/etcd.log").start()
        assert etcd.proc is not None
        self.procs.append(etcd.proc)
        etcd.ctl("put", f"{PREFIX}/config", json.dumps(NET_CONF))
        print("flanneld benchmark (etcd mode, vxlan):", flush=True)

        p1 = self.start_flanneld(n1, etcd.url, "-v=2", "--iptables-resync=5")
        env1 = os.path.join(self.work, "node1", "subnet.env")
        t_env = wait(lambda: os.path.exists(env1), 60)
        t_ready = wait(lambda: ready(n1.netns), 60)
        if t_env is None or t_ready is None:
            raise RuntimeError(f"flanneld on node1 did not start; see {self.work}/node1/flanneld.log")
        self.row("start -> subnet.env written (ms)", f"{(t_env) * 1000:.0f}")
        self.row("start -> /readyz 200 (ms)", f"{(t_env + t_ready) * 1000:.0f}")

        self.start_flanneld(n2, etcd.url)
        t_peer = wait(lambda: count_routes(n1.netns) >= 1, 60)
        self.row("node2 started -> its route on node1 (ms)", f"{(t_peer or 0) * 1000:.0f}")

        for n in (10, 100, 1000):
            added, removed = self.simulated_leases(etcd, n1.netns, n)
            target = "< 2000" if n == 1000 else ""
            self.row(f"{n} remote leases: last write -> all programmed (ms)", f"{added * 1000:.0f}", target)
            self.row(f"{n} remote leases: revoke -> all removed (ms)", f"{removed * 1000:.0f}")

        noop = self.noop_reconciles(n1)
        self.row("reconcile with nothing changed, 1 peer (ms, median)", f"{noop:.2f}")
        cpu0, t = cpu_seconds(p1.pid), time.monotonic()
        time.sleep(self.idle)
        idle_pct = (cpu_seconds(p1.pid) - cpu0) / (time.monotonic() - t) * 100
        self.row(f"idle CPU over {self.idle:.0f} s (% of a core)", f"{idle_pct:.2f}", "< 0.5")
        self.row("RSS idle (MB, current)", f"{rss_mb(p1.pid, 'VmRSS'):.1f}")
        churn_pct = self.churn(etcd, n1.netns, p1.pid)
        self.row("CPU under churn: 100 leases added and removed every 2 s (%)", f"{churn_pct:.1f}")
        self.row("peak RSS over the run (MB)", f"{rss_mb(p1.pid):.1f}", "< 60")
        return 0

    def simulated_leases(self, etcd: EtcdLab, netns: str, n: int) -> tuple[float, float]:
        """``n`` leases of nodes that need not exist, written at once; every etcd call is made from
        inside etcd's namespace (a socket stays in the namespace it was made in)."""
        from ..flanneld.subnet.etcdv3 import EtcdClient
        from ..net.netns import entered

        base = count_routes(netns)
        client = EtcdClient([etcd.url])
        try:
            with entered(f"/run/netns/{etcd.netns}"):
                lease_id, _ = client.lease_grant(600)
                puts = []
                for i in range(n):
                    key = f"{PREFIX}/subnets/10.{100 + i // 250}.{i % 250}.0-24"
                    mac = "02:" + ":".join(f"{random.randrange(256):02x}" for _ in range(5))
                    value = json.dumps({"PublicIP": f"192.168.77.{100 + i % 100}", "PublicIPv6": None,
                                        "BackendType": "vxlan", "BackendData": {"VNI": 1, "VtepMAC": mac}},
                                       separators=(",", ":"))
                    puts.append({"request_put": {"key": _b64(key), "value": _b64(value), "lease": str(lease_id)}})
                for i in range(0, n, 128):
                    client.call("/v3/kv/txn", {"success": puts[i:i + 128]})
            added = wait(lambda: count_routes(netns) >= base + n, 60, 0.005)
            with entered(f"/run/netns/{etcd.netns}"):
                client.lease_revoke(lease_id)
            removed = wait(lambda: count_routes(netns) <= base, 60, 0.005)
        finally:
            client.close()
        if added is None or removed is None:
            raise RuntimeError(f"{n} leases: not programmed or not removed within 60 s")
        return added, removed

    def noop_reconciles(self, node: topology.Host) -> float:
        time.sleep(12)  # two 5 s periods
        with open(os.path.join(self.work, node.name, "flanneld.log"), errors="replace") as f:
            ms = [float(m.group(1)) for m in re.finditer(r"no change, ([0-9.]+) ms", f.read())]
        return statistics.median(ms[-10:]) if ms else float("nan")

    def churn(self, etcd: EtcdLab, netns: str, pid: int, rounds: int = 5) -> float:
        cpu0, t = cpu_seconds(pid), time.monotonic()
        for _ in range(rounds):
            self.simulated_leases(etcd, netns, 100)
            time.sleep(1)
        return (cpu_seconds(pid) - cpu0) / (time.monotonic() - t) * 100

    def cleanup(self) -> None:
        for proc in self.procs:
            if proc.poll() is None:
                proc.terminate()
                try:
                    proc.wait(10)
                except subprocess.TimeoutExpired:
                    proc.kill()
        if self.lab is not None:
            self.lab.destroy()


def _b64(s: str) -> str:
    import base64

    return base64.b64encode(s.encode()).decode()


def main(argv: list[str]) -> int:
    p = argparse.ArgumentParser(prog="bench flanneld", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--bundle", default=None, help="the frozen bundle (default: this program)")
    p.add_argument("--idle-seconds", type=float, default=60)
    p.add_argument("--json", help="also write the figures here")
    p.add_argument("--throughput", action="store_true", help="also the udp/vxlan/host-gw iperf3 run")
    p.add_argument("--keep", action="store_true", help="keep the work dir (flanneld and etcd logs)")
    a = p.parse_args(argv)
    if os.geteuid() != 0 or not shutil.which("etcd"):
        print("needs root and etcd (apt-get install etcd-server)", file=sys.stderr)
        return 1
    bundle = a.bundle
    if bundle is None and getattr(sys, "frozen", False):
        bundle = os.path.dirname(sys.executable)
    work = tempfile.mkdtemp(prefix="cni-flannel-bench-flanneld.")
    bench = Bench(bundle, work, a.idle_seconds)
    try:
        rc = bench.run()
    finally:
        bench.cleanup()
    if a.throughput:
        from importlib import import_module

        import_module("cni_flannel.tools.bench_flanneld_udp").main([] if bundle is None else ["--bundle", bundle])
    if a.json:
        with open(a.json, "w") as f:
            json.dump([{"figure": r[0], "value": r[1], "target": r[2]} for r in bench.rows], f, indent=2)
    if a.keep:
        print(f"logs kept in {work}")
    else:
        shutil.rmtree(work, ignore_errors=True)
    return rc
