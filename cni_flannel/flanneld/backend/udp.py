"""The udp backend (flanneld-reference §9; `pkg/backend/udp/*@H`): a TUN device and a
user-space forwarder. Slow by design ("use UDP only for debugging"), kept for clusters
that still run it.

Kernel objects, exactly as the reference sets them: the TUN ``flannel%d`` (-> ``flannel0``,
IFF_TUN|IFF_NO_PI, not persistent), address = own subnet's network IP/32, MTU = ext − 28,
up, and one route for the **whole Network** (``10.244.0.0/16 dev flannel0``, scope
universe, proto boot). Peers are not kernel objects: they are the forwarder's route
table (subnet -> PublicIP:Port), pushed over the control socket.

Better than the reference (⚠ §9): our lease says BackendType ``udp`` and peers of another
type are ignored (an empty type, what the Go backend writes, is taken as udp); reconcile
is level-triggered (device, address, MTU, link state and route are repaired, a dead
forwarder is restarted, the peers replayed); an IPv6 config and a bad Port are clear
errors; the forwarder runs in its own process so it never holds the daemon's GIL.
"""
from __future__ import annotations

import fcntl
import ipaddress
import logging
import os
import socket
import struct
import threading
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any

from ...net import sysctl
from ...net.netns import entered
from ..subnet.lease import Lease, LeaseAttrs
from .base import AcquireFn, Backend, BackendError, ExternalInterface, ReconcileReport
from .udpproxy import Addr, Forwarder, ForwarderError

log = logging.getLogger("flanneld.udp")

DEFAULT_PORT = 8285
ENCAP_OVERHEAD = 28          # 20 bytes IP header + 8 bytes UDP header (udp_network_amd64.go)
TUN_PATTERN = "flannel%d"
TUNSETIFF = 0x400454CA
IFF_TUN = 0x0001
IFF_NO_PI = 0x1000
IFF_UP = 0x1
RTPROT_BOOT = 3              # what the Go netlink library's RouteAdd sends by default
MAIN_TABLE = 254
SOCKET_BUFFER = 4 << 20      # room for bursts: the forwarder is slower than the kernel
SO_SNDBUFFORCE: int = getattr(socket, "SO_SNDBUFFORCE", 32)  # not exported by every Python build
SO_RCVBUFFORCE: int = getattr(socket, "SO_RCVBUFFORCE", 33)


def parse_config(backend_config: dict[str, Any]) -> int:
    """The Backend object: ``{"Type": "udp", "Port": 8285}``; keys match case-insensitively
    as Go's encoding/json does. Returns the port."""
    port: Any = DEFAULT_PORT
    for key, value in backend_config.items():
        if key.lower() == "port":
            port = value
    if isinstance(port, bool) or not isinstance(port, int):
        raise BackendError(f"error decoding UDP backend config: Port must be a number, got {port!r}")
    if not 0 < port < 65536:
        # ⚠ the reference accepts 0 and listens on a random port that no peer sends to
        raise BackendError(f"error decoding UDP backend config: Port {port} is not in 1-65535")
    return port


def ipv4_network(network_config: Any) -> ipaddress.IPv4Network:
    """The Network of the config; IPv6 is refused (the reference's udp is IPv4 only)."""
    def get(name: str, key: str) -> Any:
        if isinstance(network_config, dict):
            return network_config.get(key)
        return getattr(network_config, name, None)

    if get("enable_ipv6", "EnableIPv6") or get("ipv6_network", "IPv6Network"):
        raise BackendError("the udp backend supports IPv4 only: remove EnableIPv6/IPv6Network from net-conf.json "
                           "or choose the vxlan backend for dual-stack")
    if get("enable_ipv4", "EnableIPv4") is False:
        raise BackendError("the udp backend needs IPv4: EnableIPv4 is false in net-conf.json")
    net = get("network", "Network")
    if net is None:
        raise BackendError("the udp backend needs an IPv4 Network in net-conf.json")
    net = ipaddress.ip_network(net) if isinstance(net, str) else net
    if not isinstance(net, ipaddress.IPv4Network):
        raise BackendError(f"the udp backend supports IPv4 only, Network is {net}")
    return net


def open_tun(pattern: str = TUN_PATTERN) -> tuple[int, str]:
    """`ip.OpenTun`: /dev/net/tun + TUNSETIFF(IFF_TUN|IFF_NO_PI); the kernel fills in %d."""
    fd = os.open("/dev/net/tun", os.O_RDWR | os.O_CLOEXEC)
    try:
        res = fcntl.ioctl(fd, TUNSETIFF, struct.pack("16sH22x", pattern.encode(), IFF_TUN | IFF_NO_PI))
    except OSError as exc:
        os.close(fd)
        raise BackendError(f"failed to open TUN device: {exc.strerror}") from None
    return fd, res[:16].rstrip(b"\0").decode()


class UDPBackend(Backend):
    type_name = "udp"

    def __init__(self, ext: ExternalInterface, network_config: Any, backend_config: dict[str, Any],
                 state_dir: str, forwarder_mode: str = "process") -> None:
        super().__init__(ext, network_config, backend_config, state_dir)
        self.port = parse_config(backend_config)
        self.network = ipv4_network(network_config)
        self.forwarder_mode = forwarder_mode
        self.tun_fd = -1
        self.tun_name = ""
        self.tun_index = 0
        self.sock: socket.socket | None = None
        self.forwarder: Forwarder | None = None
        self._netns_fd = -1
        self._ipr: Any = None
        self._lock = threading.RLock()
        self._ignored: set[tuple[str, str]] = set()

    # --- registration -------------------------------------------------------------
    def register_network(self, acquire: AcquireFn) -> Lease:
        if self.ext.iface_addr is None:
            raise BackendError(f"the udp backend needs an IPv4 address on {self.ext.name}")
        # the namespace we run in: later repairs (a TUN recreated from another thread) go here too
        self._netns_fd = os.open("/proc/thread-self/ns/net", os.O_RDONLY | os.O_CLOEXEC)
        from ...net.netlink import socket_here  # pyroute2 without its package __init__ (as frozen)

        self._ipr = socket_here()
        public = self.ext.ext_addr or self.ext.iface_addr
        lease = acquire(LeaseAttrs(public_ip=public, backend_type=self.type_name))
        if lease.subnet is None:
            raise BackendError("failed to configure interface flannel0: IPv4 is enabled but the lease has no IPv4")
        self.lease = lease
        self.sock = self._listen()
        with self._lock:
            self._create_device()
            self._configure_device(ReconcileReport())
            self._start_forwarder()
        log.info("udp backend: %s %s/32 mtu %d, listening on %s:%d", self.tun_name, self.tun_ip,
                 self.mtu(), self.ext.iface_addr, self.port)
        return lease

    def _listen(self) -> socket.socket:
        """`net.ListenUDP("udp4", IfaceAddr:Port)`, with large buffers for the bursts."""
        sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        for opt, fallback in ((SO_RCVBUFFORCE, socket.SO_RCVBUF), (SO_SNDBUFFORCE, socket.SO_SNDBUF)):
            try:
                sock.setsockopt(socket.SOL_SOCKET, opt, SOCKET_BUFFER)
            except OSError:
                sock.setsockopt(socket.SOL_SOCKET, fallback, SOCKET_BUFFER)
        try:
            sock.bind((str(self.ext.iface_addr), self.port))
        except OSError as exc:
            sock.close()
            raise BackendError(f"failed to start listening on UDP socket: {exc.strerror}") from None
        return sock

    def mtu(self) -> int:
        return self.ext.mtu - ENCAP_OVERHEAD

    @property
    def tun_ip(self) -> ipaddress.IPv4Address:
        """The own subnet's network address: the TUN's /32 and the ICMP source."""
        assert self.lease is not None and self.lease.subnet is not None
        return self.lease.subnet.network_address

    # --- kernel objects -----------------------------------------------------------
    @contextmanager
    def _home(self) -> Iterator[None]:
        with entered(f"/proc/self/fd/{self._netns_fd}"):
            yield

    def _create_device(self) -> None:
        with self._home():
            self.tun_fd, self.tun_name = open_tun()
        self.tun_index = self._ipr.link("get", ifname=self.tun_name)[0]["index"]

    def _close_device(self) -> None:
        if self.tun_fd >= 0:
            os.close(self.tun_fd)  # not persistent: the device goes with its last fd
            self.tun_fd = -1

    def _link(self) -> Any | None:
        from ...net.netlink import netlink_errors

        NetlinkError = netlink_errors()[0]  # noqa: N806 - the class, imported as frozen bundles can

        try:
            return self._ipr.link("get", index=self.tun_index)[0]
        except NetlinkError:
            return None

    def _configure_device(self, report: ReconcileReport) -> None:
        """Address, MTU, up and the Network route (`configureIface`), each only if it differs."""
        idx, name = self.tun_index, self.tun_name
        want = str(self.tun_ip)
        addrs = self._ipr.get_addr(index=idx, family=socket.AF_INET)
        have = {(a.get_attr("IFA_ADDRESS"), a["prefixlen"]) for a in addrs}
        for addr, plen in sorted(have):
            # an address of an earlier lease on our own device (EnsureV4AddressOnLink does the same for vxlan)
            if (addr, plen) != (want, 32) and ipaddress.IPv4Address(addr) in self.network:
                self._ipr.addr("del", index=idx, address=addr, prefixlen=plen)
                report.removed.append(f"address {addr}/{plen} dev {name}")
        if (want, 32) not in have:
            self._ipr.addr("add", index=idx, address=want, prefixlen=32)
            report.added.append(f"address {want}/32 dev {name}")
        link = self._link()
        if link is not None and link.get_attr("IFLA_MTU") != self.mtu():
            self._ipr.link("set", index=idx, mtu=self.mtu())
            report.changed.append(f"mtu {self.mtu()} dev {name}")
        if link is not None and not link["flags"] & IFF_UP:
            self._ipr.link("set", index=idx, state="up")
            report.changed.append(f"link {name} up")
        self._ensure_route(report)
        self._ensure_accept_local(report)

    def _ensure_accept_local(self, report: ReconcileReport) -> None:
        """accept_local=1 on the TUN, so that the net-unreachable the forwarder writes back (source:
        the TUN's own address, as the reference builds it) is not dropped as a martian. ⚠ Without it,
        as in the reference, the ICMP never reaches the sender (checked with a raw socket in a pod)."""
        key = f"net/ipv4/conf/{self.tun_name}/accept_local"
        with self._home():
            if sysctl.read(key) != "1" and sysctl.write(key, "1"):
                report.changed.append(f"accept_local 1 dev {self.tun_name}")

    def _ensure_route(self, report: ReconcileReport) -> None:
        net = self.network
        mine = False
        for r in self._ipr.get_routes(family=socket.AF_INET, table=MAIN_TABLE):
            if r["dst_len"] == net.prefixlen and r.get_attr("RTA_DST") == str(net.network_address) \
                    and r.get_attr("RTA_PRIORITY") in (None, 0):
                mine = r.get_attr("RTA_OIF") == self.tun_index and r.get_attr("RTA_GATEWAY") is None
                if not mine:
                    log.warning("replacing route %s (it pointed elsewhere) with one via %s", net, self.tun_name)
        if not mine:
            self._ipr.route("replace", dst=str(net), oif=self.tun_index, scope=0, proto=RTPROT_BOOT,
                            table=MAIN_TABLE)
            report.added.append(f"route {net} dev {self.tun_name}")

    # --- the forwarder ------------------------------------------------------------
    def _start_forwarder(self) -> None:
        assert self.sock is not None
        self.forwarder = Forwarder(self.tun_fd, self.sock, str(self.tun_ip), mode=self.forwarder_mode)
        self.forwarder.start()

    def _stop_forwarder(self) -> None:
        if self.forwarder is not None:
            self.forwarder.stop()
            self.forwarder = None

    # --- peers --------------------------------------------------------------------
    def accepts(self, lease: Lease) -> bool:
        btype = lease.attrs.backend_type
        if btype.lower() in ("udp", ""):  # "" is what the Go udp backend writes (§9 ⚠)
            return True
        if (lease.key, btype) not in self._ignored:
            self._ignored.add((lease.key, btype))
            log.info("ignoring non-udp subnet %s: type=%s", lease.key, btype)
        return False

    def desired_routes(self, peers: Sequence[Lease], report: ReconcileReport
                       ) -> tuple[dict[ipaddress.IPv4Network, Addr], dict[ipaddress.IPv4Network, str]]:
        routes: dict[ipaddress.IPv4Network, Addr] = {}
        keys: dict[ipaddress.IPv4Network, str] = {}
        for peer in peers:
            if not self.accepts(peer):
                continue
            if peer.subnet is None or peer.attrs.public_ip is None:
                report.errors.append(f"peer {peer.key}: no IPv4 subnet or PublicIP")
                continue
            if self.lease is not None and peer.subnet == self.lease.subnet:
                continue
            routes[peer.subnet] = (str(peer.attrs.public_ip), self.port)  # the peer listens on our Port too
            keys[peer.subnet] = peer.key
        return routes, keys

    # --- reconcile ----------------------------------------------------------------
    def reconcile(self, peers: Sequence[Lease]) -> ReconcileReport:
        report = ReconcileReport()
        with self._lock:
            if self.lease is None or self.sock is None:
                report.errors.append("udp backend: reconcile before register_network")
                return report
            try:
                self._reconcile_device(report)
            except Exception as exc:  # netlink or TUN failure: retried on the next pass
                report.errors.append(f"device {self.tun_name or TUN_PATTERN}: {exc}")
                return report
            routes, keys = self.desired_routes(peers, report)
            self._push_routes(routes, keys, report)
        return report

    def _reconcile_device(self, report: ReconcileReport) -> None:
        link = self._link() if self.tun_fd >= 0 else None
        if link is None or link.get_attr("IFLA_IFNAME") != self.tun_name:
            log.warning("udp backend: %s is gone: recreating it and the forwarder", self.tun_name)
            self._stop_forwarder()
            self._close_device()
            self._create_device()
            report.device_recreated = True
            report.added.append(f"device {self.tun_name}")
        self._configure_device(report)
        fwd = self.forwarder
        if fwd is None or not fwd.alive() or fwd.tun_ip != str(self.tun_ip):
            if fwd is not None:  # dead (exit code logged), or a new lease changed the ICMP source
                log.warning("udp backend: restarting the forwarder (exit code %s)", fwd.exit_code)
            self._stop_forwarder()
            self._start_forwarder()  # its table starts empty, so _push_routes replays every peer

    def _push_routes(self, routes: dict[ipaddress.IPv4Network, Addr], keys: dict[ipaddress.IPv4Network, str],
                     report: ReconcileReport) -> None:
        assert self.forwarder is not None
        old = self.forwarder.routes
        if routes != old:
            try:
                self.forwarder.set_routes(routes)  # one atomic swap: unchanged peers never miss a packet
            except ForwarderError as exc:
                report.errors.append(f"forwarder: {exc}")
                return
            for net in sorted(set(routes) - set(old)):
                report.added.append(f"udp route {net} -> {routes[net][0]}:{routes[net][1]}")
            for net in sorted(set(old) - set(routes)):
                report.removed.append(f"udp route {net} -> {old[net][0]}:{old[net][1]}")
            for net in sorted(set(routes) & set(old)):
                if routes[net] != old[net]:
                    report.changed.append(f"udp route {net} -> {routes[net][0]}:{routes[net][1]}")
        report.programmed.update(keys.values())

    # --- kernel events ------------------------------------------------------------
    def watch_kernel(self, trigger: Callable[[str], None], stop: threading.Event) -> None:
        """Netlink link/address/route events on our device, and the forwarder's death."""
        import select

        from ...net.netlink import socket_here

        with self._home():
            mon = socket_here()
        try:
            mon.bind()  # RTMGRP_LINK | IPV4_IFADDR | IPV4_ROUTE and more
            while not stop.is_set():
                ready, _, _ = select.select([mon.fileno()], [], [], 1.0)
                fwd = self.forwarder
                if fwd is not None and not fwd.alive():
                    trigger("udp forwarder exited")
                if not ready:
                    continue
                for msg in mon.get():
                    if self._touches_us(msg):
                        trigger(f"netlink {msg.get('event', '?')} on {self.tun_name}")
                        break
        finally:
            mon.close()

    def _touches_us(self, msg: Any) -> bool:
        event = msg.get("event", "")
        if event in ("RTM_NEWLINK", "RTM_DELLINK", "RTM_DELADDR"):
            return bool(msg.get("index") == self.tun_index)
        if event == "RTM_DELROUTE":
            return bool(msg.get_attr("RTA_OIF") == self.tun_index)
        return False

    def update_own_lease(self, lease: Lease) -> None:
        with self._lock:
            self.lease = lease  # the next reconcile moves the address and restarts the forwarder

    def close(self) -> None:
        with self._lock:
            self._stop_forwarder()
            self._close_device()
            if self.sock is not None:
                self.sock.close()
                self.sock = None
            if self._ipr is not None:
                self._ipr.close()
                self._ipr = None
            if self._netns_fd >= 0:
                os.close(self._netns_fd)
                self._netns_fd = -1
