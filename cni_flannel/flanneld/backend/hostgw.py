"""The host-gw backend (flanneld-reference §8), level-triggered.

One route per peer, ``<subnet> via <PublicIP> dev <ext>`` (main table, proto boot), v4 and,
when EnableIPv6, v6. No device, no backend data, MTU = the external MTU.

Ownership: main-table unicast gateway routes with ``proto boot`` on the external
interface whose dst lies strictly inside Network and does not overlap the own subnet.
Those not wanted are removed (⚠ the reference never cleans routes of peers that went away
while it was down, #2554). A wanted route the kernel refuses (a peer off our L2 segment:
ENETUNREACH) stays wanted and is retried on every reconcile, as the reference's 10 s
route check does; any route deleted by hand comes back at the next reconcile.
"""
from __future__ import annotations

import ipaddress
import logging
import socket
import threading
from collections.abc import Callable, Sequence
from typing import Any

from ..subnet.lease import Lease, LeaseAttrs
from .base import AcquireFn, Backend, BackendError, ReconcileReport
from .kernel import (
    GROUP_IPV4_ROUTE,
    GROUP_IPV6_ROUTE,
    GROUP_LINK,
    RT_TABLE_MAIN,
    RTPROT_BOOT,
    Event,
    IPNet,
    Kernel,
    KernelError,
    Route,
    by_dst,
    ensure_route,
    monitor,
    setting,
)

log = logging.getLogger("flanneld.hostgw")

NAT_MESSAGE = ("your PublicIP differs from interface IP, meaning that probably you're on a NAT, which is not "
               "supported by host-gw backend")


def owned_route(r: Route, *, network: IPNet, own_subnet: IPNet | None, ext_index: int) -> bool:
    if r.protocol != RTPROT_BOOT or r.gateway is None or r.oif != ext_index or r.dst.version != network.version:
        return False
    if not r.dst.subnet_of(network) or r.dst.prefixlen <= network.prefixlen:  # type: ignore[arg-type]
        return False
    return not (own_subnet is not None and r.dst.overlaps(own_subnet))  # type: ignore[arg-type]


def wanted_routes(peers: Sequence[Lease], *, version: int, network: IPNet, own_subnet: IPNet | None,
                  ext_index: int, ext_name: str) -> tuple[dict[str, Route], list[str]]:
    """GetRoute/GetV6Route@H for each host-gw peer of this family, by lease key; and errors."""
    out: dict[str, Route] = {}
    errors: list[str] = []
    for lease in peers:
        subnet = lease.subnet if version == 4 else lease.ipv6_subnet
        public = lease.attrs.public_ip if version == 4 else lease.attrs.public_ipv6
        if subnet is None or (own_subnet is not None and subnet == own_subnet):
            continue
        if not subnet.subnet_of(network) or subnet.prefixlen <= network.prefixlen:  # type: ignore[arg-type]
            errors.append(f"peer {lease.key}: subnet {subnet} is not inside Network {network}; ignored")
            continue
        if public is None:
            errors.append(f"peer {lease.key}: the lease has no Public{'IP' if version == 4 else 'IPv6'}")
            continue
        out[lease.key] = Route(dst=subnet, gateway=public, oif=ext_index, dev=ext_name)
    return out, errors


class HostGWBackend(Backend):
    type_name = "host-gw"

    def __init__(self, ext: Any, network_config: Any, backend_config: dict[str, Any], state_dir: str) -> None:
        if ext.ext_addr != ext.iface_addr or ext.ext_addr6 != ext.iface_addr6:
            raise BackendError(NAT_MESSAGE)
        super().__init__(ext, network_config, backend_config, state_dir)
        self.versions: dict[int, IPNet] = {}
        if setting(network_config, "enable_ipv4", True):
            self.versions[4] = self._network("network")
        if setting(network_config, "enable_ipv6", False):
            self.versions[6] = self._network("ipv6_network")
        self.kernel = Kernel()
        self._lock = threading.Lock()
        self._ignored: set[tuple[str, str]] = set()
        self._in_place: set[tuple[int, str]] = set()  # (version, key) seen programmed: for "Route recovered"

    def _network(self, name: str) -> IPNet:
        value = setting(self.network_config, name)
        if value is None:
            raise BackendError(f"the host-gw backend needs {name} in the network config")
        return ipaddress.ip_network(str(value), strict=False)

    def mtu(self) -> int:
        return self.ext.mtu

    def register_network(self, acquire: AcquireFn) -> Lease:
        attrs = LeaseAttrs(backend_type="host-gw")  # no BackendData (kube writes null)
        if 4 in self.versions:
            attrs.public_ip = self.ext.ext_addr
        if 6 in self.versions:
            attrs.public_ipv6 = self.ext.ext_addr6
        lease = acquire(attrs)
        with self._lock:
            self.lease = lease
        return lease

    def update_own_lease(self, lease: Lease) -> None:
        with self._lock:
            self.lease = lease

    def _accept_logged(self, lease: Lease) -> bool:
        if self.accepts(lease):
            return True
        mark = (lease.key, lease.attrs.backend_type)
        if mark not in self._ignored:
            self._ignored.add(mark)
            log.warning("Ignoring non-host-gw subnet: type=%s", lease.attrs.backend_type)
        return False

    def reconcile(self, peers: Sequence[Lease]) -> ReconcileReport:
        report = ReconcileReport()
        with self._lock:
            accepted = [p for p in peers if self._accept_logged(p)]
            done: set[str] | None = None
            for version, network in sorted(self.versions.items()):
                # a peer with no lease of this family needs no route of it: done for this family
                keys = self._reconcile_family(version, network, accepted, report) | {
                    p.key for p in accepted if (p.subnet if version == 4 else p.ipv6_subnet) is None}
                done = keys if done is None else done & keys
            report.programmed = done or set()
        return report

    def _reconcile_family(self, version: int, network: IPNet, peers: Sequence[Lease],
                          report: ReconcileReport) -> set[str]:
        own = None
        if self.lease is not None:
            own = self.lease.subnet if version == 4 else self.lease.ipv6_subnet
        want, errors = wanted_routes(peers, version=version, network=network, own_subnet=own,
                                     ext_index=self.ext.index, ext_name=self.ext.name)
        report.errors.extend(errors)
        try:
            have = by_dst(self.kernel.routes(socket.AF_INET if version == 4 else socket.AF_INET6))
        except KernelError as exc:
            report.errors.append(str(exc))
            return set()
        done: set[str] = set()
        recovered: list[Route] = []
        with self.kernel.batch() as batch:  # every write of this pass in a few sendmsg calls
            for key, route in want.items():
                batch.tag = key
                before = len(report.added)
                ensure_route(self.kernel, route, have, report)
                if len(report.added) > before and (version, key) in self._in_place:
                    recovered.append(route)
                done.add(key)
            batch.tag = None
            wanted = by_dst(want.values())
            for r in list(have):
                if owned_route(r, network=network, own_subnet=own, ext_index=self.ext.index) and \
                        not any(w.same_as(r) for w in wanted.lookup(r.dst)):
                    self.kernel.route_del(r)
                    report.removed.append(f"route {r.describe()}")
        failed = set()
        for tag, failure in batch.failures:
            if tag is None:
                if failure.code not in (2, 3):  # already gone
                    report.errors.append(str(failure))
                continue
            failed.add(tag)
            log.error("Error adding route to %s: %s", want[tag].describe(), failure)
            report.errors.append(f"peer {tag}: {failure}")
        done -= failed
        for route in recovered:
            if not any(want[k] is route for k in failed):
                log.info("Route recovered %s : %s", route.dst, route.gateway)
        self._in_place |= {(version, k) for k in done}
        self._in_place = {m for m in self._in_place if m[0] != version or m[1] in want}
        return done

    def watch_kernel(self, trigger: Callable[[str], None], stop: threading.Event) -> None:
        monitor(GROUP_LINK | GROUP_IPV4_ROUTE | GROUP_IPV6_ROUTE, self._event_reason, trigger, stop,
                netns_path=self.kernel.netns_path)

    def _event_reason(self, ev: Event) -> str | None:
        if ev.kind == "link":
            if ev.ifindex == self.ext.index or ev.name == self.ext.name:
                return f"external interface {self.ext.name} {'deleted' if ev.action == 'del' else 'changed'}"
            return None
        if ev.kind != "route" or ev.action != "del" or ev.route is None or ev.table != RT_TABLE_MAIN:
            return None
        network = self.versions.get(ev.route.dst.version)
        if network is None:
            return None
        own = None
        if self.lease is not None:
            own = self.lease.subnet if ev.route.dst.version == 4 else self.lease.ipv6_subnet
        if owned_route(ev.route, network=network, own_subnet=own, ext_index=self.ext.index):
            ev.route.dev = self.ext.name
            return f"route {ev.route.describe()} deleted"
        return None

    def close(self) -> None:
        self.kernel.close()
