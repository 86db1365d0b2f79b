"""doctor: inspect a node's CNI setup and print what is wrong and how to fix it.

    cni-flannel doctor [--conf-dir /etc/cni/net.d] [--bin-dir /opt/cni/bin] [--cluster-cidr CIDR]
                       [--cache-dir /var/lib/cni] [--gc] [--json]

Every check prints PASS, WARN or FAIL with the fix; the exit code is 1 when anything FAILs.
Paths that the conflist sets (subnetFile, dataDir, ipam.dataDir) are taken from it.
"""
from __future__ import annotations

import argparse
import glob
import ipaddress
import json
import os
import shutil
import subprocess
import sys
import time
from typing import Any

from ..records import field, record

PASS, WARN, FAIL = "PASS", "WARN", "FAIL"
VXLAN_OVERHEAD = 50


@record
class Check:
    status: str
    name: str
    detail: str
    fix: str = ""


@record
class Report:
    checks: list[Check] = field(default_factory=list)

    def add(self, status: str, name: str, detail: str, fix: str = "") -> None:
        self.checks.append(Check(status, name, detail, fix))

    @property
    def failed(self) -> bool:
        return any(c.status == FAIL for c in self.checks)


# -- the CNI conf dir ---------------------------------------------------------------------------

def conf_files(conf_dir: str) -> list[str]:
    """What a runtime considers, in libcni's order: .conflist files (sorted), then .conf/.json."""
    names = os.listdir(conf_dir) if os.path.isdir(conf_dir) else []
    lists = sorted(n for n in names if n.endswith(".conflist"))
    singles = sorted(n for n in names if n.endswith((".conf", ".json")))
    return [os.path.join(conf_dir, n) for n in lists + singles]


def check_conf_dir(r: Report, conf_dir: str, bin_dir: str) -> dict[str, Any] | None:
    from ..cni import version
    from .install import InstallError, validate_conflist

    files = conf_files(conf_dir)
    if not files:
        r.add(FAIL, "conf dir", f"no network config in {conf_dir}",
              "install one with install-cni (the flannel DaemonSet does this)")
        return None
    picked = files[0]
    try:
        with open(picked) as f:
            text = f.read()
        raw = json.loads(text)
    except (OSError, ValueError) as exc:
        r.add(FAIL, "conf dir", f"the runtime picks {picked}, which does not parse: {exc}",
              "fix or remove that file")
        return None
    plugins = raw.get("plugins") if isinstance(raw.get("plugins"), list) else [raw]
    types = [p.get("type") for p in plugins if isinstance(p, dict)]
    ours = "flannel" in types
    r.add(PASS if ours else FAIL, "conf dir", f"the runtime picks {os.path.basename(picked)} "
          f"(network {raw.get('name')!r}, plugins {types})",
          "" if ours else f"a file sorting before ours shadows it: remove {picked} or rename ours to sort first")
    for other in files[1:]:
        try:
            with open(other) as f:
                oraw = json.loads(f.read())
        except (OSError, ValueError):
            r.add(WARN, "stale config", f"{other} does not parse", "remove it")
            continue
        same = oraw.get("name") == raw.get("name")
        r.add(WARN, "stale config", f"{other} {'defines the same network again' if same else 'is ignored'}",
              f"remove {other}: only {os.path.basename(picked)} is used, and a runtime that sorts all extensions "
              "together (containerd) may pick the wrong one")
    if picked.endswith(".conflist"):
        try:
            validate_conflist(text, picked)
            r.add(PASS, "conflist", f"{picked} validates")
        except InstallError as exc:
            r.add(FAIL, "conflist", str(exc), "fix the ConfigMap's cni-conf.json")
    v = str(raw.get("cniVersion", ""))
    if v not in version.SUPPORTED:
        r.add(FAIL, "cniVersion", f"{v!r} is not supported", f"use one of {', '.join(version.SUPPORTED)}")
    elif not version.at_least(v, "0.4.0"):
        r.add(WARN, "cniVersion", f"{v}: runtimes never send CHECK below 0.4.0, and DEL gets no prevResult",
              'set "cniVersion": "1.0.0" in the conflist to enable CHECK')
    else:
        r.add(PASS, "cniVersion", v)
    for t in dict.fromkeys(types):
        path = os.path.join(bin_dir, str(t))
        ok = os.path.isfile(path) and os.access(path, os.X_OK)
        r.add(PASS if ok else FAIL, "plugin binary", f"{path} {'is executable' if ok else 'is missing'}",
              "" if ok else "re-run install-cni, or check the cni-bin hostPath mount")
    return raw


# -- subnet.env ---------------------------------------------------------------------------------

def default_route_iface() -> str:
    try:
        with open("/proc/net/route") as f:
            for line in f.readlines()[1:]:
                parts = line.split()
                if len(parts) > 2 and parts[1] == "00000000":
                    return parts[0]
    except OSError:
        pass
    return ""


def check_subnet_env(r: Report, path: str, cluster_cidr: str | None) -> Any:
    from ..cni.errors import CNIError
    from ..plugins.flannel import load_subnet_env

    try:
        env = load_subnet_env(path)
    except CNIError as err:
        r.add(FAIL, "subnet.env", err.msg, err.details)
        return None
    age = time.time() - os.path.getmtime(path)
    uptime = float(open("/proc/uptime").read().split()[0])
    if age > uptime:
        r.add(WARN, "subnet.env", f"{path} predates this boot ({age / 3600:.1f} h old)",
              "flanneld rewrites it at start: check that flanneld runs on this node")
    else:
        r.add(PASS, "subnet.env", f"{path} present, written {age:.0f} s ago")
    for subnet in (env.subnet, env.ipv6_subnet):
        if subnet is None:
            continue
        nets = env.networks if subnet.version == 4 else env.ipv6_networks
        inside = any(subnet.subnet_of(n) for n in nets if n.version == subnet.version)  # type: ignore[arg-type]
        r.add(PASS if inside else FAIL, "subnet in network", f"FLANNEL_SUBNET {subnet} "
              f"{'lies inside' if inside else 'is outside'} FLANNEL_NETWORK {', '.join(map(str, nets))}",
              "" if inside else "the node lease does not match net-conf.json: restart flanneld")
    uplink = default_route_iface()
    if uplink and env.mtu:
        try:
            up_mtu = int(open(f"/sys/class/net/{uplink}/mtu").read())
        except OSError:
            up_mtu = 0
        if up_mtu:
            fits = env.mtu <= up_mtu - VXLAN_OVERHEAD
            r.add(PASS if fits else FAIL, "MTU", f"FLANNEL_MTU {env.mtu}, uplink {uplink} MTU {up_mtu} "
                  f"(vxlan needs {VXLAN_OVERHEAD} bytes)",
                  "" if fits else f"set Backend.MTU ≤ {up_mtu - VXLAN_OVERHEAD} in net-conf.json, "
                  f"or raise {uplink}'s MTU")
    if cluster_cidr:
        try:
            want = ipaddress.ip_network(cluster_cidr, strict=False)
            ok = want in env.networks + env.ipv6_networks
        except ValueError:
            ok = False
        r.add(PASS if ok else FAIL, "cluster-cidr", f"--cluster-cidr {cluster_cidr} vs FLANNEL_NETWORK "
              f"{', '.join(map(str, env.networks))}",
              "" if ok else "net-conf.json's Network must equal the controller manager's --cluster-cidr")
    return env


# -- the bridge and the kernel ------------------------------------------------------------------

def check_bridge(r: Report, bridge: str, env: Any, force_address: bool, mtu: int | None) -> None:
    from ..net import addr, link, netlink

    ipr = netlink.socket_here()
    try:
        br = link.by_name(ipr, bridge)
        if br is None:
            r.add(WARN, "bridge", f"{bridge} does not exist yet", "it is created by the first pod's ADD")
            return
        if br.kind != "bridge":
            r.add(FAIL, "bridge", f"{bridge} exists but is not a bridge", f"delete the link {bridge}")
            return
        have = [a for a in addr.list_addrs(ipr, br.index) if a.version == 4]
    finally:
        ipr.close()
    if env is not None and env.subnet is not None:
        gw = ipaddress.ip_interface(f"{env.subnet.network_address + 1}/{env.subnet.prefixlen}")
        if gw in have:
            r.add(PASS, "bridge address", f"{bridge} has the gateway {gw}")
        elif have:
            r.add(WARN if force_address else FAIL, "bridge address",
                  f'"{bridge}" already has an IP address different from {gw}: {", ".join(map(str, have))}',
                  "forceAddress is set: the next ADD replaces it" if force_address else
                  'set "forceAddress": true in the delegate, or remove the old address')
        else:
            r.add(WARN, "bridge address", f"{bridge} has no IPv4 address yet", "the next ADD adds it")
    if mtu and br.mtu != mtu:
        r.add(WARN, "bridge MTU", f"{bridge} MTU {br.mtu}, FLANNEL_MTU {mtu}",
              "the MTU is set when the bridge is created: delete the bridge on a drained node to reset it")
    elif mtu:
        r.add(PASS, "bridge MTU", f"{bridge} MTU {br.mtu}")


def _read(path: str) -> str | None:
    try:
        with open(path) as f:
            return f.read().strip()
    except OSError:
        return None


def check_kernel(r: Report) -> None:
    fwd = _read("/proc/sys/net/ipv4/ip_forward")
    r.add(PASS if fwd == "1" else WARN, "ip_forward", f"net.ipv4.ip_forward = {fwd}",
          "" if fwd == "1" else "the bridge plugin enables it on ADD; set it in sysctl.d to be sure")
    nf = _read("/proc/sys/net/bridge/bridge-nf-call-iptables")
    if nf is None:
        r.add(WARN, "br_netfilter", "br_netfilter is not loaded", "modprobe br_netfilter (kube-proxy needs it)")
    else:
        r.add(PASS if nf == "1" else WARN, "br_netfilter", f"bridge-nf-call-iptables = {nf}",
              "" if nf == "1" else "sysctl -w net.bridge.bridge-nf-call-iptables=1 (kube-proxy needs it)")
    tool = shutil.which("iptables")
    if tool:
        ver = subprocess.run([tool, "--version"], capture_output=True, text=True, check=False).stdout.strip()
        r.add(PASS, "iptables", ver or "present")
        counts = {}
        for backend in ("iptables-legacy-save", "iptables-nft-save"):
            exe = shutil.which(backend)
            if exe:
                out = subprocess.run([exe], capture_output=True, text=True, check=False).stdout
                counts[backend] = sum(1 for line in out.splitlines() if line.startswith("-A"))
        if len([c for c in counts.values() if c]) > 1:
            r.add(WARN, "iptables backends", f"both backends hold rules: {counts}",
                  "use one backend on the node (update-alternatives --config iptables)")
    else:
        r.add(WARN, "iptables", "iptables is not installed", "portmap and ipMasq need iptables or nftables")
    lock = "/run/xtables.lock"
    r.add(PASS if os.path.exists(lock) else WARN, "xtables lock", f"{lock} "
          f"{'exists' if os.path.exists(lock) else 'is missing'}",
          "" if os.path.exists(lock) else "mount /run/xtables.lock into containers that run iptables")


# -- state: host-local, flannel dataDir, portmap ------------------------------------------------

def _cache_netns(cache_dir: str) -> dict[str, str]:
    out = {}
    for path in glob.glob(os.path.join(cache_dir, "results", "*")):
        try:
            with open(path) as f:
                data = json.load(f)
            out[data["containerId"]] = data.get("netns", "")
        except (OSError, ValueError, KeyError, TypeError):
            continue
    return out


def check_state(r: Report, net: str, ipam_dir: str, flannel_dir: str, env: Any, cache_dir: str,
                gc: bool) -> None:
    from ..ipam.store import Store

    store = Store(ipam_dir, net)
    entries = list(store.entries())
    owners = {}
    for name, ip, content in entries:
        cid = content.partition("\r\n")[0]
        owners[name] = (cid, ip)
    saved = set(os.listdir(flannel_dir)) if os.path.isdir(flannel_dir) else set()
    saved = {n for n in saved if not n.startswith(".")}
    netns = _cache_netns(cache_dir)
    stale = []
    for name, (cid, _ip) in owners.items():
        ns = netns.get(cid)
        gone = (ns is not None and ns != "" and not os.path.exists(ns)) or (ns is None and cid not in saved)
        if gone:
            stale.append((name, cid))
    if stale:
        if gc:
            from ..ipam import host_local

            stale_names = {n for n, _ in stale}
            # the same GC code path as a runtime's CNI GC: everything else is a valid attachment
            valid = {(content.partition("\r\n")[0], content.partition("\r\n")[2])
                     for n, _ip, content in entries if n not in stale_names}
            removed = host_local.gc(ipam_dir, net, valid)
            r.add(PASS, "stale reservations", f"released {len(removed)} reservation(s) of gone containers: "
                  f"{', '.join(removed)}")
        else:
            r.add(WARN, "stale reservations", f"{len(stale)} reservation(s) in {store.dir} belong to containers "
                  f"that are gone: {', '.join(n for n, _ in stale)}", "run doctor --gc to release them safely")
    else:
        r.add(PASS, "stale reservations", f"none in {store.dir}")
    if env is not None and env.subnet is not None:
        size = env.subnet.num_addresses - 3  # network, gateway, broadcast
        used = sum(1 for _n, (_c, ip) in owners.items() if ip is not None and ip in env.subnet)
        status = FAIL if used >= size else WARN if used > 0.9 * size else PASS
        r.add(status, "pool use", f"{used} of {size} addresses of {env.subnet} used",
              "" if status == PASS else "release leaked reservations (doctor --gc) or use a larger node subnet")
    reserved_ids = {c for c, _ in owners.values()}
    orphans = sorted(saved - reserved_ids)
    r.add(WARN if orphans else PASS, "flannel dataDir", f"{len(orphans)} saved config(s) without a reservation"
          + (f": {', '.join(orphans)}" if orphans else ""),
          "DEL those containers (or remove the files once they are gone)" if orphans else "")
    unsaved = sorted(reserved_ids - saved)
    if unsaved and os.path.isdir(flannel_dir):
        r.add(WARN, "reservations", f"{len(unsaved)} reservation(s) without a flannel saved config: "
              f"{', '.join(unsaved)}", "they were not made through flannel, or flannel's file was lost")
    check_portmap(r, net, reserved_ids - {cid for _n, cid in stale})


def check_portmap(r: Report, net: str, live_ids: set[str]) -> None:
    """hostPort chains whose pod has no reservation left, or whose netns is gone."""
    if not shutil.which("iptables-save"):
        return
    out = subprocess.run(["iptables-save", "-t", "nat"], capture_output=True, text=True, check=False).stdout
    prefix = f'dnat name: \\"{net}\\" id: \\"'
    dead = set()
    for line in out.splitlines():
        if line.startswith("-A CNI-HOSTPORT-DNAT") and prefix in line:
            cid = line.split(prefix, 1)[1].split('\\"', 1)[0]
            if cid not in live_ids:
                dead.add(cid)
    r.add(WARN if dead else PASS, "portmap rules", f"{len(dead)} hostPort chain(s) point at pods that are gone"
          + (f": {', '.join(sorted(dead))}" if dead else ""),
          "send a CNI GC, or DEL those containers" if dead else "")


# -- the command --------------------------------------------------------------------------------

def run_checks(a: argparse.Namespace) -> Report:
    r = Report()
    raw = check_conf_dir(r, a.conf_dir, a.bin_dir)
    flannel: dict[str, Any] = {}
    if raw:
        flannel = next((p for p in raw.get("plugins", [raw]) if isinstance(p, dict)
                        and p.get("type") == "flannel"), {})
    subnet_file = a.subnet_file or flannel.get("subnetFile") or "/run/flannel/subnet.env"
    env = check_subnet_env(r, subnet_file, a.cluster_cidr)
    delegate = flannel.get("delegate") or {}
    check_bridge(r, delegate.get("bridge") or "cni0", env, bool(delegate.get("forceAddress")),
                 delegate.get("mtu") or (env.mtu if env is not None else None))
    check_kernel(r)
    net = (raw or {}).get("name") or "cbr0"
    ipam_dir = (flannel.get("ipam") or {}).get("dataDir") or "/var/lib/cni/networks"
    flannel_dir = flannel.get("dataDir") or "/var/lib/cni/flannel"
    check_state(r, net, ipam_dir, flannel_dir, env, a.cache_dir, a.gc)
    return r


def main(argv: list[str]) -> int:
    p = argparse.ArgumentParser(prog="doctor", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--conf-dir", default="/etc/cni/net.d")
    p.add_argument("--bin-dir", default="/opt/cni/bin")
    p.add_argument("--subnet-file", help="default: the conflist's subnetFile, else /run/flannel/subnet.env")
    p.add_argument("--cluster-cidr", help="the controller manager's --cluster-cidr")
    p.add_argument("--cache-dir", default="/var/lib/cni", help="the runtime's CNI cache (results/)")
    p.add_argument("--gc", action="store_true", help="release reservations of containers that are gone")
    p.add_argument("--json", action="store_true")
    a = p.parse_args(argv)
    r = run_checks(a)
    if a.json:
        print(json.dumps({"ok": not r.failed, "checks": [c.__dict__ for c in r.checks]}, indent=2))
    else:
        colors = {PASS: "\033[32m", WARN: "\033[33m", FAIL: "\033[31m"} if sys.stdout.isatty() else {}
        for c in r.checks:
            print(f"{colors.get(c.status, '')}{c.status}{'' if not colors else chr(27) + '[0m'}  {c.name}: {c.detail}")
            if c.fix:
                print(f"      fix: {c.fix}")
    return 1 if r.failed else 0
