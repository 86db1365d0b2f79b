"""host-local as a library: allocate / release / check / gc / status.

Both the standalone ``host-local`` plugin and the in-process bridge call these.
Semantics follow Go host-local (cni-reference §4.1, §4.3); the differences are
GC and STATUS (the reference has neither) and torn-write tolerance.
"""
from __future__ import annotations

import ipaddress
import os

from ..cni import version as cniversion
from ..cni.errors import INVALID_CONFIG, PLUGIN_NOT_AVAILABLE, TRY_AGAIN_LATER, CNIError, errno_text
from ..cni.result import DNS, IPConfig, Result, Route
from ..records import field, record
from .ranges import IPAddress, RangeSet, iterate, parse_range_sets
from .store import Store

TYPE_CHECKING = False
if TYPE_CHECKING:  # annotations only: typing costs ~2 ms per frozen exec
    from typing import Any

DEFAULT_DATA_DIR = "/var/lib/cni/networks"
ARGS_KNOWN = ("IgnoreUnknown", "IP", "K8S_POD_NAMESPACE", "K8S_POD_NAME",
              "K8S_POD_INFRA_CONTAINER_ID", "K8S_POD_UID")


@record
class IPAMConfig:
    name: str
    cni_version: str
    range_sets: list[RangeSet]
    routes: list[Route] = field(default_factory=list)
    data_dir: str = DEFAULT_DATA_DIR
    resolv_conf: str = ""
    requested: list[IPAddress] = field(default_factory=list)


def _bad(msg: str, fix: str) -> CNIError:
    return CNIError(INVALID_CONFIG, f"invalid IPAM config: {msg}", fix)


def _requested_ips(conf: dict[str, Any], cni_args: dict[str, str]) -> list[IPAddress]:
    """CNI_ARGS IP=, args.cni.ips and runtimeConfig.ips, all accumulated (host-local config.go)."""
    sources: list[tuple[str, str]] = []
    if cni_args.get("IP"):
        sources += [("CNI_ARGS IP", v) for v in cni_args["IP"].split(",") if v]
    args = conf.get("args")
    if isinstance(args, dict) and isinstance(args.get("cni"), dict):
        sources += [("args.cni.ips", v) for v in args["cni"].get("ips") or []]
    rc = conf.get("runtimeConfig")
    if isinstance(rc, dict):
        sources += [("runtimeConfig.ips", v) for v in rc.get("ips") or []]
    out: list[IPAddress] = []
    for where, value in sources:
        try:
            ip = ipaddress.ip_interface(str(value)).ip
        except ValueError:
            raise _bad(f"{where}: {str(value)[:60]!r} is not an IP address",
                       "request an address as 10.1.0.5 or 10.1.0.5/24") from None
        if ip not in out:
            out.append(ip)
    return out


def load_config(conf: dict[str, Any], cni_args: dict[str, str]) -> IPAMConfig:
    ipam = conf.get("ipam")
    if not isinstance(ipam, dict):
        raise _bad("missing 'ipam' section", 'add "ipam": {"type": "host-local", "ranges": [...]}')
    raw_sets: list[tuple[str, Any]] = []
    rc = conf.get("runtimeConfig")
    if isinstance(rc, dict) and rc.get("ipRanges"):
        raw_sets += [(f"runtimeConfig.ipRanges[{i}]", s) for i, s in enumerate(rc["ipRanges"])]
    if ipam.get("subnet"):
        legacy = {k: ipam[k] for k in ("subnet", "rangeStart", "rangeEnd", "gateway") if k in ipam}
        raw_sets.append(("ipam", [legacy]))
    if isinstance(ipam.get("ranges"), list):
        raw_sets += [(f"ipam.ranges[{i}]", s) for i, s in enumerate(ipam["ranges"])]
    if not raw_sets:
        raise _bad("no IP ranges specified", 'set "ipam.ranges" to [[{"subnet": "10.1.0.0/24"}]]')
    sets = parse_range_sets(raw_sets)
    version = conf.get("cniVersion") or "0.1.0"
    if not cniversion.at_least(version, "0.3.0"):
        for fam in (4, 6):
            if sum(1 for s in sets if s.family == fam) > 1:
                raise CNIError(INVALID_CONFIG,
                               f"CNI version {version} does not support more than 1 address per family",
                               "use cniVersion 0.3.0 or later, or a single range set per family")
    routes: list[Route] = []
    for i, r in enumerate(ipam.get("routes") or []):
        try:
            ipaddress.ip_network(r["dst"], strict=False)
            if r.get("gw"):
                ipaddress.ip_address(r["gw"])
        except (KeyError, TypeError, ValueError):
            raise _bad(f"ipam.routes[{i}]: {str(r)[:80]} is not a route",
                       'a route is {"dst": "<cidr>", "gw": "<ip>"}') from None
        routes.append(Route.from_dict(r))
    data_dir = ipam.get("dataDir") or DEFAULT_DATA_DIR
    if not isinstance(data_dir, str) or not os.path.isabs(data_dir):
        raise _bad(f"ipam.dataDir {str(data_dir)[:80]!r} is not an absolute path", "use a path such as "
                   "/var/lib/cni/networks")
    return IPAMConfig(name=conf["name"], cni_version=version, range_sets=sets, routes=routes,
                      data_dir=data_dir, resolv_conf=ipam.get("resolvConf") or "",
                      requested=_requested_ips(conf, cni_args))


def parse_resolv_conf(path: str) -> DNS:
    dns = DNS()
    try:
        with open(path, encoding="utf-8", errors="replace") as f:
            lines = f.readlines()
    except OSError as exc:
        raise _bad(f"ipam.resolvConf {path}: {errno_text(exc)}", "point resolvConf at a readable file") from None
    for line in lines:
        fields = line.split()
        if not fields or fields[0].startswith(("#", ";")):
            continue
        key, vals = fields[0], fields[1:]
        if key == "nameserver" and vals:
            dns.nameservers.append(vals[0])
        elif key == "domain" and vals:
            dns.domain = vals[0]
        elif key == "search":
            dns.search = vals
        elif key == "options":
            dns.options += vals
    return dns


def allocate(cfg: IPAMConfig, container_id: str, ifname: str) -> Result:
    """One address per range set, all or nothing (host-local cmdAdd)."""
    store = Store(cfg.data_dir, cfg.name)
    result = Result(cni_version=cfg.cni_version, routes=list(cfg.routes))
    with store.locked():
        requested = list(cfg.requested)
        try:
            for idx, rs in enumerate(cfg.range_sets):
                want = next((ip for ip in requested if rs.contains(ip)), None)
                if want is not None:
                    requested.remove(want)
                result.ips.append(_get(store, rs, idx, container_id, ifname, want))
            if requested:
                raise CNIError(INVALID_CONFIG, "failed to allocate all requested IPs: "
                               + " ".join(str(ip) for ip in requested),
                               "each requested address must lie inside one of the range sets")
        except BaseException:
            if result.ips:
                store.release_by_id(container_id, ifname)
            raise
    if cfg.resolv_conf:
        result.dns = parse_resolv_conf(cfg.resolv_conf)
    return result


def _get(store: Store, rs: RangeSet, idx: int, container_id: str, ifname: str,
         want: IPAddress | None) -> IPConfig:
    where = f"failed to allocate for range {idx}"
    if want is not None:
        r = rs.range_for(want)
        assert r is not None
        if want == r.gateway:
            raise CNIError(INVALID_CONFIG, f"{where}: requested ip {want} is subnet's gateway",
                           "request an address other than the gateway")
        if not store.reserve(container_id, ifname, want, idx):
            raise CNIError(INVALID_CONFIG,
                           f"{where}: requested IP address {want} is not available in range set {rs}",
                           f"it is reserved in {store.dir}/{want}; release it or request another address")
        return IPConfig(address=f"{want}/{r.subnet.prefixlen}", gateway=str(r.gateway or ""))
    for ip in store.get_by_id(container_id, ifname):
        if rs.contains(ip):
            raise CNIError(INVALID_CONFIG,
                           f"{where}: {ip} has been allocated to {container_id}, duplicate allocation is "
                           "not allowed", f"DEL the attachment ({container_id}, {ifname}) before adding it again")
    for ip, r in iterate(rs, store.last_reserved(idx)):
        if store.reserve(container_id, ifname, ip, idx):
            return IPConfig(address=f"{ip}/{r.subnet.prefixlen}", gateway=str(r.gateway or ""))
    raise CNIError(TRY_AGAIN_LATER, f"{where}: no IP addresses available in range set: {rs}",
                   f"every address is reserved; leaked reservations live in {store.dir} "
                   "(release them with a CNI GC or DEL of the dead containers)")


def release(data_dir: str, network: str, container_id: str, ifname: str) -> None:
    """DEL: idempotent; a missing directory is success."""
    store = Store(data_dir, network)
    if not os.path.isdir(store.dir):
        return
    with store.locked(create=False):
        store.release_by_id(container_id, ifname)


def check(data_dir: str, network: str, container_id: str, ifname: str) -> None:
    store = Store(data_dir, network)
    with store.locked():
        if not store.get_by_id(container_id, ifname) and not store.has_legacy(container_id):
            raise CNIError(INVALID_CONFIG,
                           f"host-local: Failed to find address added by container {container_id}",
                           f"no reservation for ({container_id}, {ifname}) in {store.dir}")


def gc(data_dir: str, network: str, valid: set[tuple[str, str]]) -> list[str]:
    """Release every reservation not owned by a valid attachment; returns the names removed.

    Files that name no owner (torn writes) are released too; lock and last_reserved_ip are kept.
    """
    store = Store(data_dir, network)
    if not os.path.isdir(store.dir):
        return []
    valid_ids = {cid for cid, _ in valid}
    removed: list[str] = []
    errors: list[str] = []
    with store.locked(create=False):
        for name, _ip, content in list(store.entries()):
            cid, sep, ifname = content.partition("\r\n")
            keep = (cid, ifname) in valid if sep else (bool(cid) and cid in valid_ids)
            if keep:
                continue
            try:
                store.remove(name)
                removed.append(name)
            except CNIError as err:
                errors.append(err.msg)
        store.remove_stale_temps()  # temp files of a killed ADD
    if errors:
        raise CNIError(5, f"host-local GC: {len(errors)} reservation(s) could not be released",
                       "; ".join(errors))
    return removed


def status(data_dir: str, network: str) -> None:
    store = Store(data_dir, network)
    path = store.dir if os.path.isdir(store.dir) else data_dir
    probe = path
    while not os.path.exists(probe):
        probe = os.path.dirname(probe)
    if not os.path.isdir(probe):
        raise CNIError(PLUGIN_NOT_AVAILABLE, f"host-local store {path} is unusable: {probe} is not a directory",
                       "point ipam.dataDir at a directory")
    if not os.access(probe, os.W_OK | os.X_OK):
        raise CNIError(PLUGIN_NOT_AVAILABLE, f"host-local store {path} is unusable: {probe} is not writable",
                       "make it writable by root or mount it read-write")
    st = os.statvfs(probe)
    if (st.f_bavail == 0 and os.geteuid() != 0) or st.f_bfree == 0:
        raise CNIError(PLUGIN_NOT_AVAILABLE, f"host-local store {path} is unusable: no space left",
                       "free space on that filesystem")
