"""Throughput of the data planes: udp (our user-space forwarder) beside vxlan and host-gw.

    cni-flannel bench flanneld --throughput        (or: python -m cni_flannel.tools.bench_flanneld_udp)

For each backend, two node namespaces on one underlay, a veth "pod" behind each, the
backend itself (ours, in this process, inside each node's namespace, with a fixed lease
and the other node as its only peer), then iperf3 between the pods: a TCP stream and a
UDP stream. For udp also the forwarders' CPU (both nodes, % of one core) and how late a
10 ms ticker thread in this process ran meanwhile (the daemon's control loops share the
process: a forwarder thread that holds the GIL shows up here). Everything lives in
namespaces made here and is removed at the end.
"""
from __future__ import annotations

import argparse
import ipaddress
import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

from ..net.netns import entered
from ..records import field, record
from . import topology

NETWORK = "10.244.0.0/16"
TARGET_TCP_MBPS = 300.0


@record
class Row:
    backend: str
    mode: str = ""              # udp: "process" or "thread" forwarder
    tcp_mbps: float = 0.0
    udp_mbps: float = 0.0       # received
    udp_loss_pct: float = 0.0
    fwd_cpu_pct: float = 0.0    # both nodes' forwarders, % of one core, during the TCP stream
    stall_ms: float = 0.0       # the worst lateness of a 10 ms ticker in this process during the TCP stream
    error: str = ""
    extra: dict[str, Any] = field(default_factory=dict)


def _ns_path(ns: str) -> str:
    return f"/run/netns/{ns}"


def _pod(lab: topology.Lab, host: topology.Host, i: int) -> tuple[str, str]:
    """A veth pod: eth0 10.244.i.2/24 in the pod, the node side 10.244.i.1/24 as its gateway."""
    pod = lab.new_netns(f"pod{i}")
    topology.sh("ip", "link", "add", "vpod", "netns", host.netns, "type", "veth", "peer", "name", "eth0",
                "netns", pod)
    topology.in_ns(host.netns, "ip", "addr", "add", f"10.244.{i}.1/24", "dev", "vpod")
    topology.in_ns(host.netns, "ip", "link", "set", "vpod", "up")
    topology.in_ns(pod, "ip", "addr", "add", f"10.244.{i}.2/24", "dev", "eth0")
    topology.in_ns(pod, "ip", "link", "set", "eth0", "up")
    topology.in_ns(pod, "ip", "route", "add", "default", "via", f"10.244.{i}.1")
    return pod, f"10.244.{i}.2"


def _backend(kind: str, host: topology.Host, i: int, state: str, mode: str) -> tuple[Any, Any]:
    from ..flanneld.backend.base import ExternalInterface, backend_class
    from ..flanneld.config import NetworkConfig
    from ..flanneld.subnet.lease import Lease, LeaseAttrs

    link = json.loads(topology.in_ns(host.netns, "ip", "-j", "link", "show", "eth0").stdout)[0]
    addr = ipaddress.IPv4Address(host.ip)
    ext = ExternalInterface(name="eth0", index=link["ifindex"], mtu=link["mtu"], iface_addr=addr, ext_addr=addr)
    cfg = NetworkConfig(network=ipaddress.IPv4Network(NETWORK), subnet_len=24, backend_type=kind,
                        backend={"Type": kind})
    os.makedirs(state, exist_ok=True)

    def acquire(attrs: LeaseAttrs) -> Lease:
        return Lease(subnet=ipaddress.IPv4Network(f"10.244.{i}.0/24"), ipv6_subnet=None, attrs=attrs)

    # constructed inside the node's namespace: a backend may bind its netlink sockets at construction
    with entered(_ns_path(host.netns)):
        if kind == "udp":
            from ..flanneld.backend.udp import UDPBackend

            be: Any = UDPBackend(ext, cfg, {"Type": kind}, state, forwarder_mode=mode)
        else:
            be = backend_class(kind)(ext, cfg, {"Type": kind}, state)
        lease = be.register_network(acquire)
    return be, lease


def _iperf(client_ns: str, server_ns: str, server_ip: str, seconds: float, udp_len: int | None) -> dict[str, Any]:
    port = "5201"
    server = subprocess.Popen(["ip", "netns", "exec", server_ns, "iperf3", "-s", "-1", "-p", port],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        time.sleep(0.3)
        argv = ["ip", "netns", "exec", client_ns, "iperf3", "-c", server_ip, "-p", port, "-t", str(seconds), "-J"]
        if udp_len is not None:
            argv += ["-u", "-b", "0", "-l", str(udp_len)]
        out = subprocess.run(argv, capture_output=True, text=True, timeout=seconds + 30)
        data = json.loads(out.stdout or "{}")
        if "error" in data:
            raise RuntimeError(f"iperf3: {data['error']}")
        return data["end"]  # type: ignore[no-any-return]
    finally:
        server.kill()
        server.wait()


def _own_links() -> set[str]:
    return set(os.listdir("/sys/class/net"))


def _cpu_seconds(pid: int, tid: int | None = None) -> float:
    path = f"/proc/{pid}/task/{tid}/stat" if tid else f"/proc/{pid}/stat"
    try:
        with open(path) as f:
            fields = f.read().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


@contextmanager
def _ticker() -> Iterator[list[float]]:
    """A thread that sleeps 10 ms at a time and records how late it woke (the control loops' view)."""
    late: list[float] = []
    stop = threading.Event()

    def run() -> None:
        while not stop.is_set():
            t0 = time.monotonic()
            time.sleep(0.01)
            late.append(max(0.0, time.monotonic() - t0 - 0.01))

    t = threading.Thread(target=run, daemon=True)
    t.start()
    try:
        yield late
    finally:
        stop.set()
        t.join()


def _forwarders(backends: list[Any]) -> list[tuple[int, int | None]]:
    out = []
    for be in backends:
        fwd = getattr(be, "forwarder", None)
        if fwd is not None:
            out.append((fwd.pid, fwd.native_id))
    return out


def run_case(kind: str, mode: str, seconds: float, work: str) -> Row:
    row = Row(backend=kind, mode=mode if kind == "udp" else "")
    lab, hosts = topology.build_underlay([("n1", 77), ("n2", 77)], prefix=f"tp{uuid.uuid4().hex[:6]}")
    backends: list[Any] = []
    try:
        pods = [_pod(lab, h, i + 1) for i, h in enumerate(hosts)]
        leases = []
        for i, h in enumerate(hosts):
            be, lease = _backend(kind, h, i + 1, os.path.join(work, f"{kind}-{mode}-{h.name}"), mode)
            backends.append(be)
            leases.append(lease)
        for i, (be, h) in enumerate(zip(backends, hosts, strict=True)):
            with entered(_ns_path(h.netns)):
                report = be.reconcile([leases[1 - i]])
            if not report.clean:
                raise RuntimeError(f"reconcile on {h.name}: {report.errors}")
        ping = topology.in_ns(pods[0][0], "ping", "-c", "3", "-i", "0.2", "-W", "2", pods[1][1], check=False)
        if ping.returncode != 0:
            raise RuntimeError(f"{kind}: pods do not reach each other: {ping.stdout.strip()}")
        fwds = _forwarders(backends)
        cpu0 = sum(_cpu_seconds(p, t) for p, t in fwds)
        t0 = time.monotonic()
        with _ticker() as late:
            tcp = _iperf(pods[0][0], pods[1][0], pods[1][1], seconds, None)
        wall = time.monotonic() - t0
        row.fwd_cpu_pct = 100 * (sum(_cpu_seconds(p, t) for p, t in fwds) - cpu0) / wall if fwds else 0.0
        row.stall_ms = 1000 * max(late, default=0.0)
        row.tcp_mbps = tcp["sum_received"]["bits_per_second"] / 1e6
        row.extra["tcp_retransmits"] = tcp.get("sum_sent", {}).get("retransmits", 0)
        mtu = int(json.loads(topology.in_ns(pods[0][0], "ip", "-j", "link", "show", "eth0").stdout)[0]["mtu"])
        overlay_mtu = backends[0].mtu()
        udp = _iperf(pods[0][0], pods[1][0], pods[1][1], seconds, min(mtu, overlay_mtu) - 28)
        summary = udp.get("sum_received") or udp["sum"]
        row.udp_mbps = summary["bits_per_second"] / 1e6
        row.udp_loss_pct = float(udp["sum"].get("lost_percent", 0.0))
    except Exception as exc:
        row.error = str(exc)
    finally:
        for be in backends:
            try:
                be.close()
            except Exception as exc:  # a close failure must not hide the figures
                row.error = row.error or f"close: {exc}"
        lab.destroy()
    return row


def throughput(backends: tuple[str, ...] = ("udp", "vxlan", "host-gw"), udp_modes: tuple[str, ...] = ("process",
               "thread"), seconds: float = 5.0, out: Callable[[str], None] = print) -> list[Row]:
    """Run every case, print the table, return the rows (the lead's `bench flanneld` calls this)."""
    work = tempfile.mkdtemp(prefix="cni-flannel-bench-udp.")
    rows: list[Row] = []
    before = _own_links()
    try:
        for kind in backends:
            for mode in (udp_modes if kind == "udp" else ("",)):
                rows.append(run_case(kind, mode or "process", seconds, work))
    finally:
        shutil.rmtree(work, ignore_errors=True)
    if _own_links() != before:  # a guard: every object belongs in the lab's namespaces
        out(f"WARNING: this namespace's links changed during the run: {sorted(before)} -> {sorted(_own_links())}")
    out(table(rows))
    return rows


def table(rows: list[Row]) -> str:
    lines = [f"{'backend':<16} {'TCP Mbit/s':>11} {'UDP Mbit/s':>11} {'UDP loss':>9} {'fwd CPU':>8} "
             f"{'ctl stall':>10}"]
    for r in rows:
        name = f"{r.backend} ({r.mode})" if r.mode else r.backend
        if r.error:
            lines.append(f"{name:<16} error: {r.error}")
            continue
        cpu = f"{r.fwd_cpu_pct:.0f}%" if r.backend == "udp" else "kernel"
        lines.append(f"{name:<16} {r.tcp_mbps:>11.0f} {r.udp_mbps:>11.0f} {r.udp_loss_pct:>8.1f}% {cpu:>8} "
                     f"{r.stall_ms:>8.1f}ms")
    vx = next((r for r in rows if r.backend == "vxlan" and not r.error), None)
    for r in rows:
        if r.backend == "udp" and not r.error:
            verdict = [f"udp ({r.mode}) TCP {r.tcp_mbps:.0f} Mbit/s: target >= {TARGET_TCP_MBPS:.0f}"
                       f" {'met' if r.tcp_mbps >= TARGET_TCP_MBPS else 'MISSED'}"]
            if vx is not None and vx.tcp_mbps:
                ratio = r.tcp_mbps / vx.tcp_mbps
                verdict.append(f"{ratio:.2f} of vxlan's (target >= 0.25 {'met' if ratio >= 0.25 else 'MISSED'})")
            lines.append("  " + "; ".join(verdict))
    return "\n".join(lines)


def main(argv: list[str]) -> int:
    p = argparse.ArgumentParser(prog="bench flanneld --throughput", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--bundle", default=None, help="accepted for `bench flanneld`; the backends run in-process")
    p.add_argument("--seconds", type=float, default=5.0)
    p.add_argument("--backends", default="udp,vxlan,host-gw")
    p.add_argument("--udp-modes", default="process,thread")
    p.add_argument("--json", help="also write the rows here")
    a = p.parse_args(argv)
    if os.geteuid() != 0 or not shutil.which("iperf3"):
        print("needs root and iperf3 (apt-get install iperf3)", file=sys.stderr)
        return 1
    rows = throughput(tuple(a.backends.split(",")), tuple(a.udp_modes.split(",")), a.seconds)
    if a.json:
        with open(a.json, "w") as f:
            json.dump([r.__dict__ if hasattr(r, "__dict__") else {} for r in rows], f, indent=2, default=str)
    return 1 if any(r.error for r in rows) else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
