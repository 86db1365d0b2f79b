"""flanneld: the one place with threads, signals and shutdown (flanneld-reference §1.2, §1.3).

Start-up follows the reference's order: flags, the subnet manager, signals and healthz,
the network config, the family, br_netfilter, the interface, the backend with the lease,
the traffic rules, subnet.env. Then one thread per concern:

    leases     manager.watch_leases -> PeerTable (the desired state)
    lease      manager.keep_lease (renewal, re-acquire, NetworkUnavailable)
    reconcile  PeerTable change, kernel event or timer -> backend.reconcile -> readiness, subnet.env
    kernel     backend.watch_kernel: netlink events on our objects poke the reconcile
    rules      every --iptables-resync seconds: masquerade/forward resync, blackhole route

A transient fault never ends a thread: each loop logs it, backs off and goes on, and the
data plane stays as it is programmed. Kernel objects, rules, the lease and subnet.env are
kept on exit, as the reference does since v0.27.
"""
from __future__ import annotations

import logging
import os
import signal
import socket
import sys
import threading
import time
from collections.abc import Callable
from typing import Any

from .subnet.manager import Backoff, ConfigError, LeaseError, PeerTable, TransientError

VERSION = "v0.28.9-cni-flannel"
log = logging.getLogger("flanneld")


class Fatal(Exception):
    """A start-up error: logged with its cause and fix, exit 1."""


# ---------------------------------------------------------------- logging (klog-like lines on stderr)

class _KlogFormatter(logging.Formatter):
    LEVELS = {"DEBUG": "I", "INFO": "I", "WARNING": "W", "ERROR": "E", "CRITICAL": "F"}

    def format(self, record: logging.LogRecord) -> str:
        t = time.localtime(record.created)
        stamp = time.strftime("%m%d %H:%M:%S", t) + f".{int(record.msecs * 1000):06d}"
        return f"{self.LEVELS.get(record.levelname, 'I')}{stamp} {os.getpid():7d} {record.name}] " \
               f"{record.getMessage()}"


def setup_logging(verbosity: int) -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(_KlogFormatter())
    # libraries (pyroute2, urllib3, httpx) speak only at WARNING: pyroute2 sets its own child levels
    handler.addFilter(lambda r: r.name.startswith("flanneld") or r.levelno >= logging.WARNING)
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(logging.DEBUG if verbosity > 0 else logging.INFO)
    for noisy in ("urllib3", "pyroute2", "httpx", "httpcore", "requests"):
        logging.getLogger(noisy).setLevel(logging.WARNING)


class RateLimited:
    """Log a repeating fault once per state change, then at most every ``every`` seconds."""

    def __init__(self, every: float = 5.0) -> None:
        self.every, self.last_text, self.last_at = every, "", 0.0

    def fault(self, text: str) -> None:
        now = time.monotonic()
        if text != self.last_text or now - self.last_at >= self.every:
            log.warning(text)
            self.last_text, self.last_at = text, now

    def ok(self, text: str = "") -> None:
        if self.last_text and text:
            log.info(text)
        self.last_text = ""


# ---------------------------------------------------------------- the daemon

class Daemon:
    def __init__(self, opts: Any) -> None:
        self.opts = opts
        self.stop = threading.Event()
        self.peers = PeerTable()
        self.manager: Any = None
        self.backend: Any = None
        self.traffic: Any = None
        self.config: Any = None
        self.lease: Any = None
        self.ext: Any = None
        self.state_dir = opts.state_dir or os.path.dirname(os.path.abspath(opts.subnet_file))
        self.subnet_env_text = ""
        self.subnet_env_written = False
        self.last_report: Any = None
        self.last_report_generation = -1
        self.faults: dict[str, str] = {}  # concern -> current fault, for /readyz
        self._lock = threading.Lock()
        self.prev: tuple[Any, Any, Any, Any] = (None, None, None, None)

    # -- readiness: subnet.env written and every known peer programmed (⚠ §1.2: the reference is
    # ready before any peer route exists)
    def readiness(self) -> list[str]:
        problems: list[str] = []
        if not self.subnet_env_written:
            problems.append(f"subnet file {self.opts.subnet_file} not written yet")
        if self.backend is not None:
            if not self.peers.synced:
                problems.append("the peers' leases have not been listed yet")
            report = self.last_report
            if report is None:
                problems.append("the peers have not been programmed yet")
            else:
                _, leases = self.peers.snapshot()
                wanted = {lease.key for lease in leases if self.backend.accepts(lease)}
                missing = sorted(wanted - report.programmed)
                if missing:
                    problems.append(f"{len(missing)} peer(s) not programmed: {', '.join(missing[:5])}")
                problems.extend(report.errors[:5])
        with self._lock:
            problems.extend(f"{k}: {v}" for k, v in sorted(self.faults.items()) if v)
        store = self.manager.health() if self.manager is not None else ""
        if store:  # etcd or the API server down: the data plane is kept, but say so
            problems.append(f"{self.manager.name or 'subnet manager'}: {store}")
        return problems

    def set_fault(self, concern: str, text: str) -> None:
        with self._lock:
            self.faults[concern] = text

    # -- start-up (§1.2)
    def run(self) -> int:
        self._install_signals()
        try:
            self._build_manager()
            if self.opts.healthz_port:
                self._start_healthz()
            if not self._fetch_config():
                log.info("Exiting cleanly...")
                return 0
            self._check_family()
            self._check_br_netfilter()
            self._select_interface()
            self._register_network()
            if self.stop.is_set():
                return 0
            self._setup_traffic()
        except Fatal as exc:
            log.error("%s", exc)
            return 1
        self._write_subnet_env()
        log.info("Running backend.")
        threads = [
            self._spawn("leases", self._watch_leases),
            self._spawn("lease", self._keep_lease),
            self._spawn("reconcile", self._reconcile_loop),
            self._spawn("kernel", self._kernel_watch),
            self._spawn("rules", self._rules_loop),
        ]
        self._sd_notify("READY=1")
        self.stop.wait()
        log.info("Stopping: the lease, the devices, the routes and the rules are kept")
        for t in threads:
            t.join(timeout=5)
        for closer in (self.backend, self.manager):
            try:
                if closer is not None:
                    closer.close()
            except Exception as exc:
                log.warning("close: %s", exc)
        log.info("Exiting cleanly...")
        return 0

    def _install_signals(self) -> None:
        def on_stop(signum: int, _frame: Any) -> None:
            log.info("Received signal %s, shutting down", signal.Signals(signum).name)
            self.stop.set()
            # a second signal kills at once, as the reference (signal.Stop after the first)
            signal.signal(signum, signal.SIG_DFL)

        signal.signal(signal.SIGTERM, on_stop)
        signal.signal(signal.SIGINT, on_stop)
        # ⚠ the reference dies on SIGHUP (Go's default); a node agent must not
        signal.signal(signal.SIGHUP, lambda *_: log.info("SIGHUP ignored (flanneld keeps running)"))

    def _build_manager(self) -> None:
        from . import subnetenv

        self.prev = subnetenv.previous_subnets(self.opts.subnet_file)
        try:
            if self.opts.kube_subnet_mgr:
                from .subnet.kube import KubeSubnetManager

                self.manager = KubeSubnetManager.from_options(self.opts)
            else:
                from .subnet.etcd import EtcdSubnetManager
                from .subnet.etcdv3 import EtcdClient

                o = self.opts
                client = EtcdClient(o.etcd_endpoints, cafile=o.etcd_cafile, certfile=o.etcd_certfile,
                                    keyfile=o.etcd_keyfile, username=o.etcd_username, password=o.etcd_password)
                ttl = int(os.environ.get("CNI_FLANNEL_LEASE_TTL", "86400"))
                self.manager = EtcdSubnetManager(client, o.etcd_prefix, prev_subnet=self.prev[0],
                                                 prev_ipv6_subnet=self.prev[1],
                                                 renew_margin_s=o.subnet_lease_renew_margin * 60, lease_ttl_s=ttl)
        except (ConfigError, LeaseError, ValueError) as exc:
            raise Fatal(f"Failed to create SubnetManager: {exc}") from None

    def _start_healthz(self) -> None:
        from . import health

        try:
            health.serve(self.opts.healthz_ip, self.opts.healthz_port, self.readiness)
        except OSError as exc:
            raise Fatal(f"failed to listen for healthz on {self.opts.healthz_ip}:{self.opts.healthz_port}: "
                        f"{exc.strerror or exc}; free the port or pick another with --healthz-port") from None
        log.info("Start healthz server on %s:%d", self.opts.healthz_ip, self.opts.healthz_port)

    def _fetch_config(self) -> bool:
        """getConfig: every second until it works; an invalid config is fatal (⚠ the reference loops)."""
        limiter = RateLimited(5.0)
        while not self.stop.is_set():
            try:
                self.config = self.manager.get_network_config()
            except ConfigError as exc:
                raise Fatal(f"invalid network config: {exc}") from None
            except TransientError as exc:
                limiter.fault(f"Couldn't fetch network config: {exc}")
                self.set_fault("config", str(exc))
                self.stop.wait(1.0)
                continue
            self.set_fault("config", "")
            cfg = self.config
            if cfg.backend_defaulted:
                log.info("net-conf has no Backend: using vxlan (the reference would silently pick udp)")
            log.info("Network config: Network=%s IPv6Network=%s Backend=%s", cfg.network, cfg.ipv6_network,
                     cfg.backend_type)
            return True
        return False

    def _check_family(self) -> None:
        if not self.config.enable_ipv4 and not self.config.enable_ipv6:
            raise Fatal("none defined stack: enable EnableIPv4 or EnableIPv6 in the network config")

    def _check_br_netfilter(self) -> None:
        """§1.2 step 6, made friendlier (§14 complaint 8): try modprobe, else warn and go on."""
        if self.config.enable_nftables:
            return
        key = "/proc/sys/net/bridge/bridge-nf-call-iptables"
        if os.path.exists(key):
            return
        import shutil
        import subprocess

        modprobe = shutil.which("modprobe")
        if modprobe:
            subprocess.run([modprobe, "br_netfilter"], capture_output=True, check=False)
        if not os.path.exists(key):
            log.warning("br_netfilter is not loaded (%s missing): traffic between pods on one bridge bypasses "
                        "iptables; load it with `modprobe br_netfilter`", key)

    def _select_interface(self) -> None:
        from .iface import IfaceError, select_interface

        o = self.opts
        public_ip, public_ipv6 = o.public_ip, o.public_ipv6
        stored = getattr(self.manager, "node_public_ip", None)
        if stored is not None:  # kube: node-public-ip[v6] replace --public-ip[v6] (§1.2 step 7)
            try:
                ip4, ip6 = stored()
            except TransientError as exc:
                log.warning("could not read the node-public-ip annotations: %s", exc)
                ip4, ip6 = "", ""
            public_ip, public_ipv6 = ip4 or public_ip, ip6 or public_ipv6
        try:
            self.ext = select_interface(ifaces=o.iface, iface_regex=o.iface_regex, iface_can_reach=o.iface_can_reach,
                                        public_ip=public_ip, public_ipv6=public_ipv6,
                                        enable_ipv4=self.config.enable_ipv4, enable_ipv6=self.config.enable_ipv6)
        except IfaceError as exc:
            raise Fatal(f"Failed to find interface to use: {exc}") from None

    def _acquire(self, attrs: Any) -> Any:
        """The backend's AcquireLease: transient faults retried with backoff, the rest fatal."""
        backoff = Backoff(1.0, 10.0)
        limiter = RateLimited(5.0)
        while True:
            try:
                lease = self.manager.acquire_lease(attrs)
            except TransientError as exc:
                limiter.fault(f"failed to acquire lease (retrying): {exc}")
                self.set_fault("lease", str(exc))
                if not backoff.wait(self.stop):
                    raise Fatal("stopped while acquiring a lease") from None
                continue
            except (LeaseError, ConfigError) as exc:
                raise Fatal(f"Error registering network: failed to acquire lease: {exc}") from None
            self.set_fault("lease", "")
            return lease

    def _register_network(self) -> None:
        from .backend.base import BackendError, backend_class

        try:
            cls = backend_class(self.config.backend_type)
            self.backend = cls(self.ext, self.config, self.config.backend, self.state_dir)
        except BackendError as exc:
            raise Fatal(f"Error fetching backend: {exc}") from None
        stored = getattr(self.manager, "stored_backend_data", None)
        if stored is not None and hasattr(self.backend, "previous_backend_data"):
            try:
                v4, v6 = stored()
                self.backend.previous_backend_data = v4
                if hasattr(self.backend, "previous_backend_v6_data"):
                    self.backend.previous_backend_v6_data = v6
            except TransientError as exc:
                log.warning("could not read the stored backend data: %s", exc)
        try:
            self.lease = self.backend.register_network(self._acquire)
        except BackendError as exc:
            raise Fatal(f"Error registering network: {exc}") from None
        except Fatal:
            if self.stop.is_set():
                return
            raise
        self.peers.own_key = self.lease.key
        log.info("Lease acquired: %s (backend %s, MTU %d)", self.lease.key, self.backend.type_name,
                 self.backend.mtu())

    def _setup_traffic(self) -> None:
        from .traffic import TrafficError, make_traffic_manager

        o = self.opts
        try:
            self.traffic = make_traffic_manager(self.config.enable_nftables,
                                                random_fully=not o.ip_masq_fully_random_disable)
            self.traffic.init()
            self.traffic.cleanup_other()
            self._apply_rules()
        except TrafficError as exc:
            raise Fatal(f"Failed to set up the traffic rules: {exc}") from None

    def _families(self) -> tuple[Any, Any, Any, Any]:
        cfg, lease = self.config, self.lease
        net4 = cfg.network if cfg.enable_ipv4 else None
        net6 = cfg.ipv6_network if cfg.enable_ipv6 else None
        return net4, lease.subnet if net4 else None, net6, lease.ipv6_subnet if net6 else None

    def _apply_rules(self) -> None:
        net4, sub4, net6, sub6 = self._families()
        prev4, prev6, prevnet4, prevnet6 = self.prev
        if self.opts.ip_masq:
            self.traffic.set_masq(network=net4, subnet=sub4, ipv6_network=net6, ipv6_subnet=sub6,
                                  prev_network=prevnet4, prev_subnet=prev4, prev_ipv6_network=prevnet6,
                                  prev_ipv6_subnet=prev6)
        if self.opts.iptables_forward_rules:
            self.traffic.set_forward(network=net4, ipv6_network=net6)

    # -- subnet.env (§4): after the backend is ready; rewritten when missing or changed (⚠ #556)
    def _subnet_env(self) -> str:
        from . import subnetenv

        cfg, lease = self.config, self.lease
        return subnetenv.render(network=cfg.network, subnet=lease.subnet, ipv6_network=cfg.ipv6_network,
                                ipv6_subnet=lease.ipv6_subnet, mtu=self.backend.mtu(), ipmasq=self.opts.ip_masq,
                                enable_ipv4=cfg.enable_ipv4, enable_ipv6=cfg.enable_ipv6)

    def _write_subnet_env(self) -> None:
        from . import subnetenv

        text = self._subnet_env()
        if self.subnet_env_written and text == self.subnet_env_text and subnetenv.matches(self.opts.subnet_file, text):
            return
        try:
            subnetenv.write(self.opts.subnet_file, text)
        except OSError as exc:
            self.set_fault("subnet.env", f"failed to write {self.opts.subnet_file}: {exc.strerror or exc}")
            log.error("Failed to write subnet file %s: %s", self.opts.subnet_file, exc.strerror or exc)
            return
        if self.subnet_env_written:
            log.info("Rewrote %s (it was missing or changed)", self.opts.subnet_file)
        else:
            log.info("Wrote subnet file %s", self.opts.subnet_file)
        self.subnet_env_text, self.subnet_env_written = text, True
        self.set_fault("subnet.env", "")

    # -- the threads
    def _spawn(self, name: str, body: Callable[[], None]) -> threading.Thread:
        def guarded() -> None:
            backoff = Backoff(1.0, 30.0)
            while not self.stop.is_set():
                try:
                    body()
                    return
                except Exception as exc:
                    log.exception("%s loop failed, restarting it: %s", name, exc)
                    self.set_fault(name, f"internal error: {exc}")
                    if not backoff.wait(self.stop):
                        return

        t = threading.Thread(target=guarded, name=name, daemon=True)
        t.start()
        return t

    def _watch_leases(self) -> None:
        self.manager.watch_leases(self.peers, self.stop)

    def _keep_lease(self) -> None:
        self.manager.keep_lease(self.lease, self._on_own_lease, self.stop)

    def _on_own_lease(self, lease: Any) -> None:
        old = self.lease
        self.lease = lease
        self.peers.own_key = lease.key
        self.backend.update_own_lease(lease)
        if old is None or old.subnet != lease.subnet or old.ipv6_subnet != lease.ipv6_subnet:
            log.warning("Own lease changed from %s to %s: updating the device, rules and subnet.env",
                        old.key if old else None, lease.key)
            self.prev = (old.subnet, old.ipv6_subnet, self.config.network, self.config.ipv6_network) \
                if old is not None else self.prev
            try:
                self._apply_rules()
            except Exception as exc:
                log.warning("rules after a lease change: %s", exc)
            self.peers.poke()
        else:
            log.info("Lease renewed: %s", lease.key)

    def _reconcile_loop(self) -> None:
        period = max(1, int(self.opts.reconcile_period))
        generation = -1
        while not self.stop.is_set():
            generation = self.peers.wait_change(generation, timeout=period)
            if self.stop.is_set():
                return
            self.stop.wait(0.05)  # coalesce a burst of events into one pass
            generation, leases = self.peers.snapshot()
            self._reconcile_once(leases)
            self._write_subnet_env()

    def _reconcile_once(self, leases: list[Any]) -> None:
        started = time.monotonic()
        try:
            report = self.backend.reconcile(leases)
        except Exception as exc:
            log.warning("reconcile failed (retrying): %s", exc)
            self.set_fault("reconcile", str(exc))
            return
        self.set_fault("reconcile", "")
        self.last_report = report
        if report.device_recreated:
            log.warning("Backend device was missing: recreated it and replayed %d peer(s)", len(leases))
        for line in report.added:
            log.info("added %s", line)
        for line in report.changed:
            log.info("changed %s", line)
        for line in report.removed:
            log.info("removed %s", line)
        for line in report.errors:
            log.warning("%s (retrying on the next reconcile)", line)
        elapsed_ms = (time.monotonic() - started) * 1000
        if report.added or report.changed or report.removed:
            log.info("reconcile: %d peer(s), %d added, %d changed, %d removed in %.0f ms", len(leases),
                     len(report.added), len(report.changed), len(report.removed), elapsed_ms)
        elif self.opts.v >= 2:  # the benchmark reads these: the cost of a pass that changes nothing
            log.debug("reconcile: %d peer(s), no change, %.2f ms", len(leases), elapsed_ms)

    def _kernel_watch(self) -> None:
        self.backend.watch_kernel(lambda reason: self.peers.poke(), self.stop)

    def _rules_loop(self) -> None:
        period = max(1, int(self.opts.iptables_resync))
        while not self.stop.wait(period):
            try:
                for line in self.traffic.resync():
                    log.info("rules repaired: %s", line)
                self.set_fault("rules", "")
            except Exception as exc:
                self.set_fault("rules", str(exc))
                log.warning("rules resync failed (retrying): %s", exc)
            if self.opts.ip_blackhole_route:
                self._blackhole()
            self._write_subnet_env()

    def _blackhole(self) -> None:
        from .traffic import ensure_blackhole

        _, sub4, _, sub6 = self._families()
        try:
            if ensure_blackhole(sub4, sub6):
                log.info("blackhole route for %s added", self.lease.key)
        except Exception as exc:
            log.warning("blackhole route: %s", exc)

    def _sd_notify(self, state: str) -> None:
        path = os.environ.get("NOTIFY_SOCKET")
        if not path:
            return
        addr = "\0" + path[1:] if path.startswith("@") else path
        try:
            with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as s:
                s.sendto(state.encode(), addr)
        except OSError as exc:
            log.warning("sd_notify: %s", exc)


def main(argv: list[str]) -> int:
    from . import cli

    try:
        opts = cli.parse_args(argv, os.environ)
    except cli.UsageError as exc:
        sys.stderr.write(f"flanneld: {exc}\nRun 'flanneld --help' for the flags.\n")
        return 2
    if opts.help:
        sys.stderr.write(cli.usage("flanneld"))
        return 0
    if opts.version:
        sys.stderr.write(VERSION + "\n")
        return 0
    setup_logging(opts.v)
    log.info("%s", cli.format_options(opts))
    try:
        cli.validate(opts)
    except cli.FatalError as exc:
        log.error("%s", exc)
        return 1
    return Daemon(opts).run()

