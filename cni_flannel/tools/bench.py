"""Benchmark: our frozen plugins against the Go reference plugins, side by side, in one run.

    cni-flannel bench [--bundle dist/cni-flannel] [--runs 30] [--concurrency 20] [--json out.json]

The chain is the seed conflist with two port mappings (tcp and udp). Ours:
flannel -> bridge + host-local in-process, then portmap. Go: Debian's
/usr/lib/cni bridge (which execs host-local) fed the delegate config flannel
would write, then portmap; Debian ships no Go flannel, so the Go side is spared
one exec. Each side runs in its own node namespace made here; everything is
removed at the end.
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from ..net.netns import _setns
from ..records import field, record
from . import topology

GO_DIR = "/usr/lib/cni"
MAPPINGS = [{"hostPort": 18080, "containerPort": 80, "protocol": "tcp"},
            {"hostPort": 18081, "containerPort": 81, "protocol": "udp"}]
DELEGATE = {"forceAddress": True, "bridge": "mycni8", "isDefaultGateway": True}


@record
class Call:
    wall_ms: float
    cpu_ms: float
    maxrss_kb: int
    stdout: bytes
    rc: int


@record
class Side:
    name: str
    bin_dir: str
    node: str
    work: str
    chain: list[tuple[str, dict[str, Any]]]  # (plugin type, request config without prevResult)
    samples: dict[str, list[float]] = field(default_factory=dict)
    cpu: dict[str, list[float]] = field(default_factory=dict)
    rss: dict[str, int] = field(default_factory=dict)
    ips: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    check_failures: list[str] = field(default_factory=list)
    env: dict[str, str] = field(default_factory=dict)

    def record(self, key: str, ms: float) -> None:
        self.samples.setdefault(key, []).append(ms)


def plugin_env(binary: str, verb: str, cid: str, netns: str, env_extra: dict[str, str]) -> dict[str, str]:
    """Our environment without CNI_*, plus the CNI_* of one call of ``binary``."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("CNI_")}
    env.update({"CNI_COMMAND": verb, "CNI_CONTAINERID": cid, "CNI_NETNS": netns, "CNI_IFNAME": "eth0",
                "CNI_PATH": os.path.dirname(binary), "CNI_ARGS": "IgnoreUnknown=1;K8S_POD_NAME=bench"})
    env.update(env_extra)
    return env


def run_plugin(binary: str, verb: str, conf: dict[str, Any], cid: str, netns: str, env_extra: dict[str, str]
               ) -> Call:
    env = plugin_env(binary, verb, cid, netns, env_extra)
    data = json.dumps(conf).encode()
    start = time.perf_counter()
    proc = subprocess.Popen([binary], stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                            env=env)
    assert proc.stdin is not None and proc.stdout is not None
    proc.stdin.write(data)
    proc.stdin.close()
    out = proc.stdout.read()
    proc.stdout.close()
    _, status, usage = os.wait4(proc.pid, 0)  # this child's own rusage: CPU and peak RSS
    proc.returncode = os.waitstatus_to_exitcode(status)
    wall = (time.perf_counter() - start) * 1000
    return Call(wall, (usage.ru_utime + usage.ru_stime) * 1000, usage.ru_maxrss, out, proc.returncode)


class Runner:
    """Runs whole chains; CPU is measured per chain from RUSAGE_CHILDREN (grandchildren included)."""

    def __init__(self, side: Side, log: str) -> None:
        self.side = side
        self.log = log

    def chain(self, verb: str, cid: str, netns: str, version: str) -> tuple[float, list[Call]]:
        calls: list[Call] = []
        prev: dict[str, Any] | None = None
        order = self.side.chain if verb != "DEL" else list(reversed(self.side.chain))
        start = time.perf_counter()
        for ptype, conf in order:
            c = dict(conf, cniVersion=version)
            if verb == "ADD" and prev is not None:
                c["prevResult"] = prev
            if verb == "CHECK" and prev is not None:
                c["prevResult"] = prev
            call = run_plugin(os.path.join(self.side.bin_dir, ptype), verb, c, cid, netns,
                              {"CNI_FLANNEL_LOG": self.log, **self.side.env})
            calls.append(call)
            self.side.rss[ptype] = max(self.side.rss.get(ptype, 0), call.maxrss_kb)
            if call.rc != 0:
                self.side.errors.append(f"{verb} {ptype} {cid}: {call.stdout.decode()[:300]}")
                break
            if verb == "ADD" and call.stdout:
                prev = json.loads(call.stdout)
        return (time.perf_counter() - start) * 1000, calls


def pct(values: list[float], p: float) -> float:
    if not values:
        return float("nan")
    s = sorted(values)
    k = max(0, min(len(s) - 1, round(p / 100 * (len(s) - 1))))
    return s[k]


def make_sides(bundle_bin: str, work: str, lab_nodes: list[str]) -> list[Side]:
    env_path = os.path.join(work, "subnet.env")
    topology.write_subnet_env(env_path, "10.42.0.0/16", "10.42.1.0/24", 1450, True)
    portmap = {"name": "cbr0", "type": "portmap", "capabilities": {"portMappings": True},
               "runtimeConfig": {"portMappings": MAPPINGS}}
    ours_flannel = {"name": "cbr0", "type": "flannel", "delegate": DELEGATE, "subnetFile": env_path,
                    "dataDir": os.path.join(work, "ours", "flannel"),
                    "ipam": {"dataDir": os.path.join(work, "ours", "networks")}}
    # The delegate config our flannel writes for the same inputs (the reference's exact JSON).
    from ..plugins.flannel import FlannelConf, build_delegate, load_subnet_env

    fc = FlannelConf(name="cbr0", cni_version="1.0.0", subnet_file=env_path, data_dir="", delegate=dict(DELEGATE),
                     ipam={"dataDir": os.path.join(work, "go", "networks")}, runtime_config=None)
    go_bridge = build_delegate(fc, load_subnet_env(env_path))
    worker_flannel = dict(ours_flannel, dataDir=os.path.join(work, "worker", "flannel"),
                          ipam={"dataDir": os.path.join(work, "worker", "networks")})
    return [Side("ours", bundle_bin, lab_nodes[0], work, [("flannel", ours_flannel), ("portmap", portmap)],
                 env={"CNI_FLANNEL_WORKER": "off"}),
            Side("worker", bundle_bin, lab_nodes[2], work, [("flannel", worker_flannel), ("portmap", portmap)],
                 env={"CNI_FLANNEL_WORKER_SOCKET": os.path.join(work, "run", "worker.sock")}),
            Side("go", GO_DIR, lab_nodes[1], work, [("bridge", go_bridge), ("portmap", portmap)])]


def bench_side(side: Side, runs: int, concurrency: int, log: str) -> None:
    node_fd = os.open(f"/run/netns/{side.node}", os.O_RDONLY)
    home = os.open("/proc/self/ns/net", os.O_RDONLY)
    _setns(node_fd)  # threads made from here on start in the node namespace
    try:
        runner = Runner(side, log)
        for i in range(runs):
            pod = f"{side.node}-p{i}"
            subprocess.run(["ip", "netns", "add", pod], check=True)
            path = f"/run/netns/{pod}"
            cid = f"bench-{side.name}-{i}"
            r0 = resource.getrusage(resource.RUSAGE_CHILDREN)
            ms, calls = runner.chain("ADD", cid, path, "1.0.0")
            r1 = resource.getrusage(resource.RUSAGE_CHILDREN)
            side.cpu.setdefault("ADD", []).append((r1.ru_utime + r1.ru_stime - r0.ru_utime - r0.ru_stime) * 1000)
            side.record("ADD", ms)
            res = json.loads(calls[-1].stdout) if calls and calls[-1].stdout else {}
            side.ips += [ip["address"] for ip in res.get("ips", [])]
            ms, _ = _check(runner, cid, path, res)
            side.record("CHECK", ms)
            r0 = resource.getrusage(resource.RUSAGE_CHILDREN)
            ms, _ = runner.chain("DEL", cid, path, "1.0.0")
            r1 = resource.getrusage(resource.RUSAGE_CHILDREN)
            side.cpu.setdefault("DEL", []).append((r1.ru_utime + r1.ru_stime - r0.ru_utime - r0.ru_stime) * 1000)
            side.record("DEL", ms)
            subprocess.run(["ip", "netns", "delete", pod], check=True)
            v = run_plugin(os.path.join(side.bin_dir, side.chain[0][0]), "VERSION", {"cniVersion": "1.0.0"}, "",
                           "", side.env)
            side.record("VERSION", v.wall_ms)
        # concurrency: N pods at once, then N DELs at once
        pods = [f"{side.node}-c{i}" for i in range(concurrency)]
        for pod in pods:
            subprocess.run(["ip", "netns", "add", pod], check=True)
        with ThreadPoolExecutor(max_workers=concurrency) as pool:
            t0 = time.perf_counter()
            adds = list(pool.map(lambda p: runner.chain("ADD", f"c-{p}", f"/run/netns/{p}", "1.0.0"), pods))
            side.record(f"ADD x{concurrency} wall", (time.perf_counter() - t0) * 1000)
            conc_ips = []
            for _ms, calls in adds:
                side.record("ADD concurrent", _ms)
                if calls and calls[-1].rc == 0 and calls[-1].stdout:
                    conc_ips += [ip["address"] for ip in json.loads(calls[-1].stdout).get("ips", [])]
            if len(set(conc_ips)) != concurrency:
                side.errors.append(f"concurrent ADD: {len(set(conc_ips))} unique IPs for {concurrency} pods")
            t0 = time.perf_counter()
            dels = list(pool.map(lambda p: runner.chain("DEL", f"c-{p}", f"/run/netns/{p}", "1.0.0"), pods))
            side.record(f"DEL x{concurrency} wall", (time.perf_counter() - t0) * 1000)
            for _ms, _ in dels:
                side.record("DEL concurrent", _ms)
        for pod in pods:
            subprocess.run(["ip", "netns", "delete", pod], check=False)
        side.errors += residue(side)
    finally:
        _setns(home)
        os.close(home)
        os.close(node_fd)


def _check(runner: Runner, cid: str, path: str, res: dict[str, Any]) -> tuple[float, list[Call]]:
    start = time.perf_counter()
    calls = []
    for ptype, conf in runner.side.chain:
        c = dict(conf, cniVersion="1.0.0", prevResult=res)
        call = run_plugin(os.path.join(runner.side.bin_dir, ptype), "CHECK", c, cid, path, runner.side.env)
        calls.append(call)
        if call.rc != 0:
            msg = json.loads(call.stdout or b"{}").get("msg", call.stdout.decode()[:200])
            runner.side.check_failures.append(f"{ptype}: {msg}")
    return (time.perf_counter() - start) * 1000, calls


def add_worker_cpu(side: Side, log: str) -> None:
    """The worker's forked children are not our children: add their CPU (logged per call) per pod."""
    per: dict[tuple[str, str], float] = {}
    try:
        with open(log) as f:
            for line in f:
                e = json.loads(line)
                if e.get("servedBy") == "worker":
                    key = (e["verb"], e["containerID"])
                    per[key] = per.get(key, 0.0) + e.get("cpuMs", 0.0)
    except OSError:
        return
    for verb in ("ADD", "DEL"):
        cids = [f"bench-{side.name}-{i}" for i in range(len(side.cpu.get(verb, [])))]
        side.cpu[verb] = [c + per.get((verb, cid), 0.0) for c, cid in zip(side.cpu.get(verb, []), cids, strict=True)]


def residue(side: Side) -> list[str]:
    """Leftovers after DEL, in the current (node) namespace and the side's state dirs."""
    found = []
    links = json.loads(subprocess.run(["ip", "-j", "link", "show"], capture_output=True, text=True).stdout)
    found += [f"veth {lk['ifname']}" for lk in links if lk.get("master") == "mycni8"]
    nets = os.path.join(side.work, side.name, "networks", "cbr0")
    if os.path.isdir(nets):
        found += [f"reservation {n}" for n in os.listdir(nets) if n[0].isdigit()]
    fl = os.path.join(side.work, side.name, "flannel")
    if os.path.isdir(fl):
        found += [f"dataDir file {n}" for n in os.listdir(fl)]
    nat = subprocess.run(["iptables-save", "-t", "nat"], capture_output=True, text=True).stdout
    found += [f"rule {line}" for line in nat.splitlines() if "CNI-DN-" in line]
    return found


def breakdown(log: str) -> dict[str, float]:
    """Median in-plugin spans of the sequential pods' calls (from CNI_FLANNEL_LOG).

    Only the sequential pods (container ids ``bench-*``) count: the concurrent ones wait on each other.
    """
    per: dict[str, list[float]] = {}
    with open(log) as f:
        for line in f:
            e = json.loads(line)
            sequential = e.get("containerID", "").startswith("bench-")
            if e.get("verb") not in ("ADD", "DEL") or "durationMs" not in e or not sequential:
                continue
            key = f"{e['verb']} {e['plugin']}"
            per.setdefault(f"{key}: in-plugin total", []).append(e["durationMs"])
            for span, ms in (e.get("spans") or {}).items():
                per.setdefault(f"{key}: {span}", []).append(ms)
    return {k: statistics.median(v) for k, v in sorted(per.items())}


def _exec_ms(argv: list[str], env: dict[str, str], runs: int = 30) -> float:
    """Median wall time of exec-to-exit of a command that reads a VERSION request on stdin."""
    samples = []
    for _ in range(runs + 3):
        start = time.perf_counter()
        subprocess.run(argv, input=b'{"cniVersion":"1.0.0"}', stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                       env=env, check=False)
        samples.append((time.perf_counter() - start) * 1000)
    return statistics.median(samples[3:])


def startup_floor(bin_dir: str) -> dict[str, float]:
    """What one exec costs before any plugin work: our frozen VERSION, a bare interpreter, Go's VERSION."""
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "CNI_COMMAND": "VERSION"}
    return {
        "ours: frozen flannel VERSION": _exec_ms([os.path.join(bin_dir, "flannel")], env),
        "python3 -I -S -c pass (no bundle, no imports)": _exec_ms([sys.executable, "-I", "-S", "-c", "pass"], env),
        "go: bridge VERSION": _exec_ms([os.path.join(GO_DIR, "bridge")], env),
    }


def importtime_report(ours: Side, work: str, node: str) -> None:
    """Build the -X importtime bundle and print, per plugin exec of one seed-chain ADD and DEL, the total
    import time and the costliest top-level imports (their cumulative time)."""
    src = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    if not os.path.exists(os.path.join(src, "build.spec")):
        print("\n--importtime needs the source tree (build.spec); skipped", file=sys.stderr)
        return
    dist, build = os.path.join(work, "it-dist"), os.path.join(work, "it-build")
    built = subprocess.run([sys.executable, "-m", "PyInstaller", "-y", "--log-level", "ERROR", "--distpath", dist,
                            "--workpath", build, "build.spec"], cwd=src, capture_output=True, text=True,
                           env={**os.environ, "CNI_FLANNEL_IMPORTTIME": "1"}, check=False)
    if built.returncode != 0:
        print(f"\n--importtime: the diagnostic build failed:\n{built.stderr[-2000:]}", file=sys.stderr)
        return
    from .install import install_binaries

    bin_dir = os.path.join(work, "it-bin")
    install_binaries(os.path.join(dist, "cni-flannel"), bin_dir)
    pod = f"{node}-it"
    subprocess.run(["ip", "netns", "add", pod], check=True)
    print("\n-X importtime of the frozen build, one pod (ms: all imports, then the costliest top-level ones):")
    try:
        prev: dict[str, Any] | None = None
        for verb, chain in (("ADD", ours.chain), ("DEL", list(reversed(ours.chain)))):
            for ptype, conf in chain:
                c = dict(conf, cniVersion="1.0.0", **({"prevResult": prev} if prev and verb == "ADD" else {}))
                binary = os.path.join(bin_dir, ptype)
                env = plugin_env(binary, verb, "bench-importtime", f"/run/netns/{pod}", {"CNI_FLANNEL_WORKER": "off"})
                out = subprocess.run(["ip", "netns", "exec", node, binary],
                                     input=json.dumps(c).encode(), capture_output=True, env=env, check=False)
                if verb == "ADD" and out.returncode == 0 and ptype == chain[0][0]:
                    prev = json.loads(out.stdout)
                total, top = parse_importtime(out.stderr.decode())
                print(f"  {ptype} {verb}: {total:.1f}  " + ", ".join(f"{m} {ms:.1f}" for m, ms in top[:6]))
    finally:
        subprocess.run(["ip", "netns", "delete", pod], check=False)


def parse_importtime(text: str) -> tuple[float, list[tuple[str, float]]]:
    """-X importtime lines -> (sum of self times, top-level modules by cumulative time), in ms."""
    total, top = 0.0, []
    for line in text.splitlines():
        if not line.startswith("import time:") or "self [us]" in line:
            continue
        self_us, cumulative, name = line[len("import time:"):].split("|")
        total += int(self_us) / 1000
        if not name[1:].startswith(" "):  # nesting is shown by indentation
            top.append((name.strip(), int(cumulative) / 1000))
    return total, sorted(top, key=lambda t: -t[1])


def du(path: str) -> int:
    total = 0
    seen = set()
    for root, _dirs, files in os.walk(path):
        for name in files:
            p = os.path.join(root, name)
            st = os.lstat(p)
            if st.st_ino not in seen:
                seen.add(st.st_ino)
                total += st.st_size
    return total


def main(argv: list[str]) -> int:
    if argv[:1] == ["flanneld"]:
        from . import bench_flanneld

        return bench_flanneld.main(argv[1:])
    p = argparse.ArgumentParser(prog="bench", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--bundle", default="dist/cni-flannel")
    p.add_argument("--runs", type=int, default=30)
    p.add_argument("--concurrency", type=int, default=20)
    p.add_argument("--json", help="also write the figures here")
    p.add_argument("--importtime", action="store_true",
                   help="also build a diagnostic bundle (CNI_FLANNEL_IMPORTTIME=1; needs PyInstaller and the source "
                        "tree) and print what each plugin exec of the seed chain imports (-X importtime)")
    a = p.parse_args(argv)
    if not os.path.exists(os.path.join(GO_DIR, "bridge")):
        print("the Go reference plugins are missing: apt-get install containernetworking-plugins", file=sys.stderr)
        return 1
    work = tempfile.mkdtemp(prefix="cni-flannel-bench.")
    prefix = f"cnifb{uuid.uuid4().hex[:4]}"
    made: list[str] = []
    try:
        bin_dir = os.path.join(work, "bin")
        from .install import install_binaries

        install_binaries(os.path.abspath(a.bundle), bin_dir)
        for role in ("ours", "go", "worker"):
            ns = f"{prefix}-{role}"
            subprocess.run(["ip", "netns", "add", ns], check=True)
            made.append(ns)
            subprocess.run(["ip", "netns", "exec", ns, "ip", "link", "set", "lo", "up"], check=True)
        sides = make_sides(bin_dir, work, made)
        log = os.path.join(work, "calls.log")
        sock = sides[1].env["CNI_FLANNEL_WORKER_SOCKET"]
        worker = subprocess.Popen([os.path.realpath(os.path.join(bin_dir, "flannel")), "worker", "--socket", sock],
                                  stderr=subprocess.DEVNULL)
        for _ in range(100):
            if os.path.exists(sock):
                break
            time.sleep(0.1)
        try:
            for side in sides:
                print(f"== {side.name}: {a.runs} sequential pods, then {a.concurrency} concurrent", file=sys.stderr)
                bench_side(side, a.runs, a.concurrency, log if side.name == "ours" else
                           os.path.join(work, "worker-calls.log") if side.name == "worker" else os.devnull)
        finally:
            worker.terminate()
            worker.wait(timeout=10)
        add_worker_cpu(sides[1], os.path.join(work, "worker-calls.log"))
        sizes = {"ours": du(bin_dir), "go": sum(os.path.getsize(os.path.join(GO_DIR, n))
                                                for n in ("bridge", "host-local", "portmap", "loopback"))}
        spans = {"ours": breakdown(log), "worker": breakdown(os.path.join(work, "worker-calls.log"))}
        report(sides, sizes, spans, startup_floor(bin_dir), a)
        if a.importtime:
            importtime_report(sides[0], work, made[0])
        return 1 if any(s.errors for s in sides) else 0
    finally:
        for ns in made:
            for pod in os.listdir("/run/netns"):
                if pod.startswith(ns + "-"):
                    subprocess.run(["ip", "netns", "delete", pod], check=False)
            subprocess.run(["ip", "netns", "delete", ns], check=False)
        shutil.rmtree(work, ignore_errors=True)


def report(sides: list[Side], sizes: dict[str, int], spans: dict[str, dict[str, float]], floor: dict[str, float],
           a: argparse.Namespace) -> None:
    ours, wk, go = sides
    rows: list[tuple[str, float, float, float]] = []

    def triple(f: Any) -> tuple[float, float, float]:
        return f(ours), f(wk), f(go)

    for key in ("ADD", "CHECK", "DEL", "VERSION", "ADD concurrent", "DEL concurrent"):
        for p in (50, 95):
            rows.append((f"{key} p{p} (ms)", *triple(lambda s, k=key, q=p: pct(s.samples.get(k, []), q))))
    for key in (f"ADD x{a.concurrency} wall", f"DEL x{a.concurrency} wall"):
        rows.append((f"{key} (ms)", *triple(lambda s, k=key: s.samples.get(k, [float("nan")])[0])))
    for key in ("ADD", "DEL"):
        rows.append((f"CPU per pod {key} (ms)", *triple(lambda s, k=key: statistics.median(s.cpu.get(k, [0])))))
    for (po, _), (pg, _) in zip(ours.chain, go.chain, strict=True):
        rows.append((f"peak RSS {po} / {pg} (MB)", ours.rss.get(po, 0) / 1024, wk.rss.get(po, 0) / 1024,
                     go.rss.get(pg, 0) / 1024))
    rows.append(("installed size (MB)", sizes["ours"] / 1e6, sizes["ours"] / 1e6, sizes["go"] / 1e6))
    print(f"\n{'figure':<30} {'ours':>9} {'+worker':>9} {'go':>9} {'ours/go':>8} {'wkr/go':>7}")
    for name, o, w, g in rows:
        print(f"{name:<30} {o:>9.1f} {w:>9.1f} {g:>9.1f} {o / g if g else float('nan'):>8.2f} "
              f"{w / g if g else float('nan'):>7.2f}")
    print("\n+worker: the same frozen binaries with the warm worker on (cni-flannel worker); its CPU per pod is")
    print("the plugin processes' plus the worker children's (logged per call by each child).")
    print("\nGo chain: Debian /usr/lib/cni bridge (execs host-local) + portmap; there is no Go flannel in Debian,")
    print("so the Go side is spared one exec. Ours: flannel (bridge + host-local in-process) + portmap.")
    print(f"unique IPs: ours {len(set(ours.ips))}/{len(ours.ips)}, worker {len(set(wk.ips))}/{len(wk.ips)}, "
          f"go {len(set(go.ips))}/{len(go.ips)}")
    for s in sides:
        print(f"{s.name}: {'no residue, no errors' if not s.errors else 'PROBLEMS: ' + '; '.join(s.errors[:5])}")
        if s.check_failures:
            uniq = sorted(set(s.check_failures))
            print(f"{s.name}: CHECK failed {len(s.check_failures)} times: {'; '.join(uniq)[:400]}")
    print("\nwhere the time goes (median ms of the sequential pods; in-plugin is logged by each call, the rest")
    print("is exec, interpreter start, imports and, with the worker, the hand-over):")
    for side in (ours, wk):
        for verb in ("ADD", "DEL"):
            sp = {k[len(verb) + 1:]: v for k, v in spans[side.name].items() if k.startswith(verb + " ")}
            wall = pct(side.samples.get(verb, []), 50)
            in_plugin = sum(v for k, v in sp.items() if k.endswith("in-plugin total"))
            print(f"  {side.name} {verb}: chain wall {wall:.1f}")
            for k, v in sp.items():
                print(f"    {k:<44} {v:>8.1f}")
            print(f"    {'outside the plugin code (2 execs)':<44} {wall - in_plugin:>8.1f}")
    print("  start-up floors (median ms of one exec, no work):")
    for k, v in floor.items():
        print(f"    {k:<44} {v:>8.1f}")
    if a.json:
        with open(a.json, "w") as f:
            json.dump({"rows": rows, "spans": spans, "floor": floor}, f, indent=1)
