"""The vxlan backend (flanneld-reference §7), level-triggered.

Per family (v4 ``flannel.<VNI>``, v6 ``flannel-v6.<VNI>``): one vxlan device, and for each
peer either the three §7.3 objects (ARP, FDB, onlink route, in that order) or, with
DirectRouting and the peer on our L2 segment, one route via its PublicIP.

Ownership (what ``reconcile`` may change or delete; nothing else is touched):
* neighbours on our vxlan device in state PERMANENT;
* FDB entries on our vxlan device with NTF_SELF, PERMANENT and a remote (dst);
* main-table unicast routes with ``proto boot`` (what the Go flanneld uses) whose dst lies
  strictly inside Network (longer prefix than Network), does not overlap the own subnet,
  and that either go out of our vxlan device or are gateway routes on the external
  interface (DirectRouting routes).
So the own subnet's route (the cni bridge's), routes of other protocols (routing daemons),
anything outside Network and the whole-Network route are never touched.

Where we do better than the reference (⚠): the vtep source is the *local* address
(``iface_addr``), not a possibly non-local ``--public-ip``; the MAC survives restarts (a
file in the state dir); an adopted device gets its MTU and MAC fixed; a missing device is
recreated *and* all peers replayed; stale objects (old FDB entries after a MAC change,
ARP/FDB of a peer that turned direct, peers gone while we were down) are removed; the
v6 device's MTU is MTU−70 (the v6 header is 20 bytes longer).
"""
from __future__ import annotations

import ipaddress
import logging
import os
import socket
import tempfile
import threading
from collections.abc import Callable, Sequence
from typing import Any

from ...net import sysctl
from ...records import field, record
from ..subnet.lease import Lease, LeaseAttrs
from .base import AcquireFn, Backend, BackendError, ReconcileReport
from .kernel import (
    GROUP_IPV4_ROUTE,
    GROUP_IPV6_ROUTE,
    GROUP_LINK,
    GROUP_NEIGH,
    NTF_SELF,
    NUD_PERMANENT,
    RT_TABLE_MAIN,
    RTPROT_BOOT,
    Event,
    Fdb,
    Index,
    IPAddr,
    IPNet,
    Kernel,
    KernelError,
    Link,
    Neigh,
    Route,
    by_dst,
    ci_get,
    ensure_route,
    monitor,
    setting,
)

log = logging.getLogger("flanneld.vxlan")

DEFAULT_PORT = 8472  # the kernel's default when IFLA_VXLAN_PORT is not sent
OVERHEAD = {4: 50, 6: 70}


# -- options ---------------------------------------------------------------------------------
@record
class VXLANConfig:
    vni: int = 1
    port: int = 0
    mtu: int = 0
    gbp: bool = False
    learning: bool = False
    direct_routing: bool = False


def _go_bool(v: bool) -> str:
    return "true" if v else "false"


def _json_type(v: Any) -> str:
    if isinstance(v, bool):
        return "bool"
    if isinstance(v, (int, float)):
        return f"number {v}" if isinstance(v, float) else "number"
    if isinstance(v, str):
        return "string"
    return "array" if isinstance(v, list) else "object"


def parse_vxlan_config(raw: Any, default_mtu: int) -> VXLANConfig:
    """parseVXLANConfig@H: VNI 1, Port 0, MTU = the external MTU, the rest false.
    Raises BackendError("error decoding VXLAN backend config: ...") with Go's wording."""
    cfg = VXLANConfig(mtu=default_mtu)
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise BackendError("error decoding VXLAN backend config: json: cannot unmarshal "
                           f"{_json_type(raw)} into Go value of type vxlan.VXLANConfig")
    for attr, key, kind in (("vni", "vni", int), ("port", "port", int), ("mtu", "mtu", int),
                            ("gbp", "gbp", bool), ("learning", "learning", bool),
                            ("direct_routing", "directRouting", bool)):  # Go's json tags
        value = ci_get(raw, key)
        if value is None:
            continue
        ok = isinstance(value, bool) if kind is bool else (isinstance(value, int) and not isinstance(value, bool))
        if not ok:
            raise BackendError(f"error decoding VXLAN backend config: json: cannot unmarshal {_json_type(value)} "
                               f"into Go struct field VXLANConfig.{key} of type {kind.__name__}")
        setattr(cfg, attr, value)
    if not 0 <= cfg.vni <= 0xFFFFFF:
        raise BackendError(f"error decoding VXLAN backend config: VNI {cfg.vni} is out of range (0-16777215)")
    if not 0 <= cfg.port <= 65535:
        raise BackendError(f"error decoding VXLAN backend config: Port {cfg.port} is out of range (0-65535)")
    if cfg.mtu - OVERHEAD[4] < 68:
        raise BackendError(f"error decoding VXLAN backend config: MTU {cfg.mtu} leaves less than 68 bytes "
                           "for the vxlan device")
    return cfg


def config_log_line(cfg: VXLANConfig) -> str:
    return (f"VXLAN config: VNI={cfg.vni} Port={cfg.port} GBP={_go_bool(cfg.gbp)} "
            f"Learning={_go_bool(cfg.learning)} DirectRouting={_go_bool(cfg.direct_routing)}")


# -- MACs ------------------------------------------------------------------------------------
def normalize_mac(value: Any) -> str | None:
    """net.ParseMAC for 48-bit forms (aa:bb:.., aa-bb-.., aabb.ccdd.eeff) -> lowercase colons."""
    if not isinstance(value, str):
        return None
    s = value.strip().lower()
    if "." in s:
        parts = s.split(".")
        hexs = "".join(parts) if len(parts) == 3 and all(len(p) == 4 for p in parts) else ""
    else:
        parts = s.replace("-", ":").split(":")
        hexs = "".join(parts) if len(parts) == 6 and all(len(p) == 2 for p in parts) else ""
    if len(hexs) != 12:
        return None
    try:
        int(hexs, 16)
    except ValueError:
        return None
    return ":".join(hexs[i:i + 2] for i in range(0, 12, 2))


def random_mac() -> str:
    """mac.NewHardwareAddr: random, locally administered unicast (b0 = (b0 & 0xfe) | 2)."""
    b = bytearray(os.urandom(6))
    b[0] = (b[0] & 0xFE) | 0x02
    return ":".join(f"{x:02x}" for x in b)


def read_mac_file(path: str) -> str | None:
    try:
        with open(path) as f:
            text = f.read()
    except OSError:
        return None
    mac = normalize_mac(text)
    if mac is None:
        log.warning("ignoring %s: %r is not a MAC address", path, text.strip()[:40])
    return mac


def write_mac_file(path: str, mac: str) -> None:
    """Atomic (temp file + rename), mode 0644: the MAC is public (it is in every peer's lease),
    and 0644 lets the doctor and an operator read it without root."""
    d = os.path.dirname(path) or "."
    os.makedirs(d, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=".mac.", dir=d)
    try:
        with os.fdopen(fd, "w") as f:
            f.write(mac + "\n")
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise


# -- the desired state (pure) ----------------------------------------------------------------
@record
class PeerPlan:
    key: str
    route: Route
    neigh: Neigh | None = None
    fdb: Fdb | None = None

    @property
    def direct(self) -> bool:
        return self.neigh is None


@record
class Family:
    """One family's device and what it is compared against."""

    version: int
    dev_name: str
    network: IPNet
    own_subnet: IPNet | None = None
    dev_index: int = 0
    ext_index: int = 0
    ext_name: str = ""


def owned_route(r: Route, fam: Family) -> bool:
    """The ownership rule of the module docstring."""
    if r.protocol != RTPROT_BOOT or r.dst.version != fam.version:
        return False
    if not r.dst.subnet_of(fam.network) or r.dst.prefixlen <= fam.network.prefixlen:  # type: ignore[arg-type]
        return False
    if fam.own_subnet is not None and r.dst.overlaps(fam.own_subnet):  # type: ignore[arg-type]
        return False
    return bool(r.oif == fam.dev_index or (r.oif == fam.ext_index and r.gateway is not None))


def _peer_subnet(lease: Lease, version: int) -> IPNet | None:
    return lease.subnet if version == 4 else lease.ipv6_subnet


def _peer_public(lease: Lease, version: int) -> IPAddr | None:
    return lease.attrs.public_ip if version == 4 else lease.attrs.public_ipv6


def _peer_data(lease: Lease, version: int) -> Any:
    return lease.attrs.backend_data if version == 4 else lease.attrs.backend_v6_data


def plan_peers(peers: Sequence[Lease], fam: Family, *, direct_routing: bool,
               is_direct: Callable[[IPAddr], bool]) -> tuple[list[PeerPlan], list[str]]:
    """Desired objects per vxlan peer (§7.3/§7.4), and per-peer errors. Non-vxlan peers must
    be filtered out by the caller."""
    plans: list[PeerPlan] = []
    errors: list[str] = []
    for lease in peers:
        subnet = _peer_subnet(lease, fam.version)
        if subnet is None:
            continue  # the peer has no lease of this family
        public = _peer_public(lease, fam.version)
        v6 = "v6 " if fam.version == 6 else ""
        if fam.own_subnet is not None and subnet == fam.own_subnet:
            continue
        if not subnet.subnet_of(fam.network) or subnet.prefixlen <= fam.network.prefixlen:  # type: ignore[arg-type]
            errors.append(f"peer {lease.key}: {v6}subnet {subnet} is not inside Network {fam.network}; ignored")
            continue
        if public is None:
            errors.append(f"peer {lease.key}: the lease has no Public{'IPv6' if fam.version == 6 else 'IP'}")
            continue
        if direct_routing and is_direct(public):
            plans.append(PeerPlan(lease.key, Route(dst=subnet, gateway=public, oif=fam.ext_index, dev=fam.ext_name)))
            continue
        data = _peer_data(lease, fam.version)
        mac = normalize_mac(ci_get(data, "VtepMAC")) if isinstance(data, dict) else None
        if mac is None:
            errors.append(f"peer {lease.key}: error decoding {v6}subnet lease JSON: no valid VtepMAC in "
                          f"{data!r}")
            continue
        gw = subnet.network_address
        plans.append(PeerPlan(
            lease.key,
            route=Route(dst=subnet, gateway=gw, oif=fam.dev_index, onlink=True, dev=fam.dev_name),
            neigh=Neigh(ip=gw, lladdr=mac, ifindex=fam.dev_index, dev=fam.dev_name),
            fdb=Fdb(lladdr=mac, dst=public, ifindex=fam.dev_index, dev=fam.dev_name)))
    return plans, errors


# -- the backend -----------------------------------------------------------------------------
@record
class _Device:
    version: int
    name: str
    mac: str = ""
    mac_file: str = ""
    index: int = 0
    created: bool = False  # we have had it at least once (so a missing one is "recreated")
    extra: dict[str, Any] = field(default_factory=dict)


class VXLANBackend(Backend):
    type_name = "vxlan"

    def __init__(self, ext: Any, network_config: Any, backend_config: dict[str, Any], state_dir: str) -> None:
        super().__init__(ext, network_config, backend_config, state_dir)
        # the own node's previous backend data (kube annotation or our previous etcd lease),
        # set by the daemon before register_network: {"VNI": 1, "VtepMAC": "..."}
        self.previous_backend_data: Any = None
        self.previous_backend_v6_data: Any = None
        self.cfg = parse_vxlan_config(backend_config, ext.mtu)
        self.enable_ipv4 = bool(setting(network_config, "enable_ipv4", True))
        self.enable_ipv6 = bool(setting(network_config, "enable_ipv6", False))
        self.network = self._network("network") if self.enable_ipv4 else None
        self.network6 = self._network("ipv6_network") if self.enable_ipv6 else None
        self.kernel = Kernel()
        self._lock = threading.Lock()
        self._ignored: set[tuple[str, str]] = set()
        self.devices: dict[int, _Device] = {}
        if self.enable_ipv4:
            self.devices[4] = self._device(4, f"flannel.{self.cfg.vni}")
        if self.enable_ipv6:
            self.devices[6] = self._device(6, f"flannel-v6.{self.cfg.vni}")

    def _network(self, name: str) -> IPNet:
        value = setting(self.network_config, name)
        if value is None:
            raise BackendError(f"the vxlan backend needs {name} in the network config")
        return ipaddress.ip_network(str(value), strict=False)

    def _device(self, version: int, name: str) -> _Device:
        return _Device(version=version, name=name, mac_file=os.path.join(self.state_dir, f"{name}.mac"))

    # -- the interface ----------------------------------------------------------------------
    def mtu(self) -> int:
        """FLANNEL_MTU: MTU−50; with a v6 device MTU−70, so that pods fit both (⚠ §7.2)."""
        return self.cfg.mtu - (OVERHEAD[6] if self.enable_ipv6 else OVERHEAD[4])

    def register_network(self, acquire: AcquireFn) -> Lease:
        log.info("%s", config_log_line(self.cfg))
        with self._lock:
            for dev in self.devices.values():
                self._choose_mac(dev)
                self._ensure_link(dev, ReconcileReport())
            attrs = LeaseAttrs(backend_type="vxlan")
            if 4 in self.devices:
                attrs.public_ip = self.ext.ext_addr
                attrs.backend_data = {"VNI": self.cfg.vni, "VtepMAC": self.devices[4].mac}
            if 6 in self.devices:
                attrs.public_ipv6 = self.ext.ext_addr6
                attrs.backend_v6_data = {"VNI": self.cfg.vni, "VtepMAC": self.devices[6].mac}
            lease = acquire(attrs)
            self.lease = lease
            for dev in self.devices.values():
                self._configure(dev, ReconcileReport(), fatal=True)
        return lease

    def update_own_lease(self, lease: Lease) -> None:
        with self._lock:
            self.lease = lease

    def reconcile(self, peers: Sequence[Lease]) -> ReconcileReport:
        report = ReconcileReport()
        with self._lock:
            wanted = [p for p in peers if self._accept_logged(p)]
            ok_keys: set[str] | None = None
            for version, dev in sorted(self.devices.items()):
                # a peer with no lease of this family needs nothing here (a v4-only node in a
                # dual-stack network): done for this family, or readiness would wait forever
                keys = self._reconcile_family(dev, wanted, report) | {
                    p.key for p in wanted if _peer_subnet(p, version) is None}
                ok_keys = keys if ok_keys is None else ok_keys & keys
            report.programmed = ok_keys or set()
        return report  # the daemon logs the report

    def watch_kernel(self, trigger: Callable[[str], None], stop: threading.Event) -> None:
        groups = GROUP_LINK | GROUP_NEIGH | GROUP_IPV4_ROUTE | GROUP_IPV6_ROUTE
        monitor(groups, self._event_reason, trigger, stop, netns_path=self.kernel.netns_path)

    def close(self) -> None:
        self.kernel.close()

    # -- peers ------------------------------------------------------------------------------
    def _accept_logged(self, lease: Lease) -> bool:
        if self.accepts(lease):
            return True
        mark = (lease.key, lease.attrs.backend_type)
        if mark not in self._ignored:
            self._ignored.add(mark)
            log.warning("ignoring non-vxlan v4Subnet(%s) v6Subnet(%s): type=%s", lease.subnet,
                        lease.ipv6_subnet, lease.attrs.backend_type)
        return False

    def _family(self, dev: _Device) -> Family:
        network = self.network if dev.version == 4 else self.network6
        assert network is not None
        own = None
        if self.lease is not None:
            own = self.lease.subnet if dev.version == 4 else self.lease.ipv6_subnet
        return Family(version=dev.version, dev_name=dev.name, network=network, own_subnet=own,
                      dev_index=dev.index, ext_index=self.ext.index, ext_name=self.ext.name)

    def _is_direct(self, ip: IPAddr) -> bool:
        """DirectRouting@H: one route and no gateway; we also want it on the external
        interface (a route we can recognise as ours later)."""
        try:
            routes = self.kernel.route_get(ip)
        except KernelError as exc:
            log.error("couldn't lookup route to %s: %s", ip, str(exc).split(": ", 1)[-1])
            return False
        return len(routes) == 1 and routes[0].gateway is None and routes[0].oif == self.ext.index

    def _reconcile_family(self, dev: _Device, peers: Sequence[Lease], report: ReconcileReport) -> set[str]:
        try:
            self._ensure_link(dev, report)
            self._configure(dev, report, fatal=False)
        except (KernelError, BackendError) as exc:
            report.errors.append(f"{dev.name}: {exc}")
            return set()
        fam = self._family(dev)
        plans, errors = plan_peers(peers, fam, direct_routing=self.cfg.direct_routing, is_direct=self._is_direct)
        report.errors.extend(errors)
        family = socket.AF_INET if dev.version == 4 else socket.AF_INET6
        try:
            names = self.kernel.names()
            routes = by_dst(self.kernel.routes(family, names))
            neighs = Index((n for n in self.kernel.neighbours(dev.index, family, dev.name)
                            if n.state & NUD_PERMANENT), lambda n: n.ip)
            fdbs = Index((f for f in self.kernel.fdb_entries(dev.index, dev.name)
                          if f.state & NUD_PERMANENT and f.flags & NTF_SELF and f.dst is not None
                          and f.dst.version == dev.version), lambda f: f.lladdr)
        except KernelError as exc:
            report.errors.append(str(exc))
            return set()
        done: set[str] = set()
        with self.kernel.batch() as batch:  # every write of this pass in a few sendmsg calls
            for plan in plans:
                batch.tag = plan.key
                try:
                    if plan.neigh is not None:
                        _apply_neigh(self.kernel, plan.neigh, neighs, report)
                    if plan.fdb is not None:
                        _apply_fdb(self.kernel, plan.fdb, fdbs, report)
                    ensure_route(self.kernel, plan.route, routes, report)
                    done.add(plan.key)
                except KernelError as exc:
                    report.errors.append(f"peer {plan.key}: {exc}")
            batch.tag = None
            self._remove_stale(fam, plans, routes, neighs, fdbs, report)
        for tag, failure in batch.failures:
            if tag is not None:
                done.discard(tag)
                report.errors.append(f"peer {tag}: {failure}")
            elif failure.code not in (2, 3):  # a stale object already gone (ENOENT/ESRCH)
                report.errors.append(str(failure))
        return done

    def _remove_stale(self, fam: Family, plans: list[PeerPlan], routes: list[Route], neighs: list[Neigh],
                      fdbs: list[Fdb], report: ReconcileReport) -> None:
        want_routes = by_dst(p.route for p in plans)
        want_neigh = {p.neigh.ip for p in plans if p.neigh is not None}
        want_fdb = {p.fdb.lladdr for p in plans if p.fdb is not None}
        stale: list[tuple[str, Callable[[], None]]] = []
        for r in routes:
            if owned_route(r, fam) and not any(w.same_as(r) for w in want_routes.lookup(r.dst)):
                stale.append((f"route {r.describe()}", lambda r=r: self.kernel.route_del(r)))  # type: ignore[misc]
        for n in neighs:
            if n.ip not in want_neigh:
                stale.append((f"neighbour {n.describe()}", lambda n=n: self.kernel.neigh_del(n)))  # type: ignore[misc]
        for f in fdbs:
            if f.lladdr not in want_fdb:  # a MAC no peer has any more (#1036) or a peer gone direct
                stale.append((f"fdb {f.describe()}", lambda f=f: self.kernel.fdb_del(f)))  # type: ignore[misc]
        for what, delete in stale:
            try:
                delete()
                report.removed.append(what)
            except KernelError as exc:
                if exc.code not in (2, 3):  # ENOENT/ESRCH: already gone
                    report.errors.append(str(exc))

    # -- the device -------------------------------------------------------------------------
    def _choose_mac(self, dev: _Device) -> None:
        """The disk file, else the previous backend data, else the existing device's, else random;
        persisted either way (§14 complaint 3)."""
        mac = read_mac_file(dev.mac_file)
        source = dev.mac_file
        if mac is None:
            prev = self.previous_backend_data if dev.version == 4 else self.previous_backend_v6_data
            mac = normalize_mac(ci_get(prev, "VtepMAC")) if isinstance(prev, dict) else None
            source = "the previous lease"
        if mac is None:
            existing = self.kernel.link(name=dev.name)
            if existing is not None and existing.kind == "vxlan":
                mac, source = existing.mac, "the existing device"
        if mac is None:
            mac, source = random_mac(), "random"
        log.info("Interface %s mac address set to: %s (from %s)", dev.name, mac, source)
        dev.mac = mac
        write_mac_file(dev.mac_file, mac)

    def _local(self, dev: _Device) -> IPAddr | None:
        # the LOCAL vtep address is the interface address, never a non-local --public-ip (⚠ §7.2)
        return self.ext.iface_addr if dev.version == 4 else self.ext.iface_addr6

    def _link_kw(self, dev: _Device) -> dict[str, Any]:
        kw: dict[str, Any] = {
            "kind": "vxlan", "vxlan_id": self.cfg.vni, "vxlan_link": self.ext.index,
            "vxlan_ttl": 0, "vxlan_tos": 0, "vxlan_learning": int(self.cfg.learning), "vxlan_proxy": 0,
            "vxlan_rsc": 0, "vxlan_l2miss": 0, "vxlan_l3miss": 0,
            "address": dev.mac, "mtu": self.cfg.mtu - OVERHEAD[dev.version], "txqlen": 0,
        }
        local = self._local(dev)
        if local is not None:
            kw["vxlan_local6" if dev.version == 6 else "vxlan_local"] = str(local)
        if dev.version == 6:
            kw["vxlan_udp_zero_csum6_tx"] = 0
            kw["vxlan_udp_zero_csum6_rx"] = 0
        if self.cfg.port > 0:
            kw["vxlan_port"] = self.cfg.port
        if self.cfg.gbp:
            kw["vxlan_gbp"] = True
        return kw

    def incompatible(self, dev: _Device, link: Link) -> str:
        """vxlanLinksIncompat@H, plus learning (which the reference does not compare)."""
        if link.kind != "vxlan":
            return f"link type: vxlan vs {link.kind or 'device'}"
        info = link.info
        if info.get("IFLA_VXLAN_ID") != self.cfg.vni:
            return f"vni: {self.cfg.vni} vs {info.get('IFLA_VXLAN_ID')}"
        if info.get("IFLA_VXLAN_LINK") and info.get("IFLA_VXLAN_LINK") != self.ext.index:
            return f"vtep (external) interface: {self.ext.index} vs {info.get('IFLA_VXLAN_LINK')}"
        local = self._local(dev)
        have = info.get("IFLA_VXLAN_LOCAL6" if dev.version == 6 else "IFLA_VXLAN_LOCAL")
        if local is not None and have and ipaddress.ip_address(have) != local:
            return f"vtep (external) IP: {local} vs {have}"
        if info.get("IFLA_VXLAN_L2MISS"):
            return "l2miss: false vs true"
        want_port = self.cfg.port or DEFAULT_PORT
        if info.get("IFLA_VXLAN_PORT") and info.get("IFLA_VXLAN_PORT") != want_port:
            return f"port: {want_port} vs {info.get('IFLA_VXLAN_PORT')}"
        if bool(info.get("IFLA_VXLAN_GBP")) != self.cfg.gbp:
            return f"gbp: {_go_bool(self.cfg.gbp)} vs {_go_bool(not self.cfg.gbp)}"
        if bool(info.get("IFLA_VXLAN_LEARNING")) != self.cfg.learning:
            return f"learning: {_go_bool(self.cfg.learning)} vs {_go_bool(not self.cfg.learning)}"
        return ""

    def _ensure_link(self, dev: _Device, report: ReconcileReport) -> Link:
        """Create, adopt, or recreate the device; fix MTU and MAC of an adopted one."""
        link = self.kernel.link(name=dev.name)
        if link is not None:
            why = self.incompatible(dev, link)
            if why:
                log.warning("%r already exists with incompatible configuration: %s; recreating device", dev.name, why)
                self.kernel.link_del(link.index, dev.name)
                link = None
        if link is None:
            if dev.created:
                log.info("vxlan device %s missing, recreating it (with MAC %s) and replaying all peers",
                         dev.name, dev.mac)
                self._refresh_ext()
            self.kernel.link_add(dev.name, **self._link_kw(dev))
            report.device_recreated = report.device_recreated or dev.created
            link = self.kernel.link(name=dev.name)
            if link is None:
                raise KernelError(f"can't locate created vxlan device {dev.name}")
            report.changed.append(f"device {dev.name} created")
        else:
            self._fix_adopted(dev, link, report)
        dev.index, dev.created = link.index, True
        with self.kernel.inside():
            sysctl.ensure(f"net/ipv6/conf/{dev.name}/accept_ra", "0")  # best effort, as the reference
        return link

    def _fix_adopted(self, dev: _Device, link: Link, report: ReconcileReport) -> None:
        want_mtu = self.cfg.mtu - OVERHEAD[dev.version]
        if link.mtu != want_mtu:
            self.kernel.link_set(link.index, dev.name, "MTU", mtu=want_mtu)
            report.changed.append(f"device {dev.name} mtu {link.mtu} -> {want_mtu}")
        if link.mac != dev.mac:
            self.kernel.link_set(link.index, dev.name, "MAC address", address=dev.mac)
            report.changed.append(f"device {dev.name} address {link.mac} -> {dev.mac}")

    def _refresh_ext(self) -> None:
        """Before recreating: the external interface may have come back with a new index."""
        link = self.kernel.link(name=self.ext.name)
        if link is None:
            raise KernelError(f"external interface {self.ext.name} not found; will retry")
        if link.index != self.ext.index or link.mtu != self.ext.mtu:
            self.ext = type(self.ext)(name=self.ext.name, index=link.index, mtu=link.mtu,
                                      iface_addr=self.ext.iface_addr, iface_addr6=self.ext.iface_addr6,
                                      ext_addr=self.ext.ext_addr, ext_addr6=self.ext.ext_addr6)

    def _configure(self, dev: _Device, report: ReconcileReport, *, fatal: bool) -> None:
        """configureDeviceIPv4IPv6: the own address, up, MAC check."""
        if self.lease is None:
            return
        subnet = self.lease.subnet if dev.version == 4 else self.lease.ipv6_subnet
        family = "IPv4" if dev.version == 4 else "IPv6"
        if subnet is None:
            raise BackendError(f"failed to configure interface {dev.name}: {family} is enabled but the lease has "
                               f"no {family}")
        try:
            self._ensure_address(dev, subnet, report)
            link = self.kernel.link(index=dev.index)
            if link is not None and not link.up:
                self.kernel.link_set(dev.index, dev.name, "UP state", state="up")
                report.changed.append(f"device {dev.name} up")
            link = self.kernel.link(index=dev.index)
        except KernelError as exc:
            if fatal:
                raise BackendError(f"failed to configure interface {dev.name}: {exc}") from None
            raise
        if link is not None and link.mac != dev.mac:
            v6 = "v6 " if dev.version == 6 else ""
            raise BackendError(f"failed to configure interface {dev.name}: {dev.name}'s {v6}mac address wanted: "
                               f"{dev.mac}, but got: {link.mac}")

    def _ensure_address(self, dev: _Device, subnet: IPNet, report: ReconcileReport) -> None:
        """EnsureV{4,6}AddressOnLink: the own subnet's network address /32 (/128), other
        addresses inside Network (v6: any non-link-local) removed."""
        family = socket.AF_INET if dev.version == 4 else socket.AF_INET6
        want = subnet.network_address
        plen = 32 if dev.version == 4 else 128
        network = self.network if dev.version == 4 else self.network6
        have = False
        for a in self.kernel.addrs(dev.index, family):
            if a.ip == want and a.prefixlen == plen:
                have = True
                continue
            inside = a.ip in network if dev.version == 4 else not a.ip.is_link_local  # type: ignore[operator]
            if inside:
                self.kernel.addr_del(dev.index, dev.name, a.ip, a.prefixlen)
                log.info("removed IP address %s/%d from %s", a.ip, a.prefixlen, dev.name)
                report.removed.append(f"address {a.ip}/{a.prefixlen} dev {dev.name}")
        if not have:
            self.kernel.addr_add(dev.index, dev.name, want, plen)
            report.added.append(f"address {want}/{plen} dev {dev.name}")

    # -- netlink events ---------------------------------------------------------------------
    def _event_reason(self, ev: Event) -> str | None:
        names = {d.name: d for d in self.devices.values()}
        indexes = {d.index: d for d in self.devices.values() if d.index}
        if ev.kind == "link":
            if ev.name in names or ev.ifindex in indexes:
                return f"link {ev.name or ev.ifindex} {'deleted' if ev.action == 'del' else 'changed'}"
            if ev.ifindex == self.ext.index or ev.name == self.ext.name:
                return f"external interface {self.ext.name} {'deleted' if ev.action == 'del' else 'changed'}"
            return None
        if ev.action != "del":
            return None
        if ev.kind == "neigh":
            if ev.ifindex in indexes and ev.neigh_state & NUD_PERMANENT:
                return f"neighbour {ev.ip or ev.lladdr} on {indexes[ev.ifindex].name} deleted"
            return None
        if ev.route is None or ev.table != RT_TABLE_MAIN:
            return None
        for dev in self.devices.values():
            if dev.index and ev.route.dst.version == dev.version and owned_route(ev.route, self._family(dev)):
                ev.route.dev = dev.name if ev.route.oif == dev.index else self.ext.name
                return f"route {ev.route.describe()} deleted"
        return None


# -- per-object steps ------------------------------------------------------------------------
def _apply_neigh(k: Kernel, want: Neigh, have: list[Neigh], report: ReconcileReport) -> None:
    cur = next(iter(have.lookup(want.ip) if isinstance(have, Index) else (n for n in have if n.ip == want.ip)),
               None)
    if cur is not None and cur.lladdr == want.lladdr:
        return
    k.neigh_replace(want)
    (report.changed if cur is not None else report.added).append(f"neighbour {want.describe()}")


def _apply_fdb(k: Kernel, want: Fdb, have: list[Fdb], report: ReconcileReport) -> None:
    same_mac = list(have.lookup(want.lladdr)) if isinstance(have, Index) else [f for f in have
                                                                                if f.lladdr == want.lladdr]
    if any(f.dst == want.dst for f in same_mac):
        return
    k.fdb_replace(want)
    (report.changed if same_mac else report.added).append(f"fdb {want.describe()}")
    for f in same_mac:  # replace rewrote that entry's remote: not stale any more
        have.remove(f)
    have.append(want)
