"""A lab for flanneld tests: node namespaces on one underlay switch, plus service namespaces.

    lab = Lab(tmp_path)                 # the switch namespace with bridge sw0 (192.168.77.254/24)
    etcd_ns = lab.add_host("etcd")      # a namespace on the underlay for etcd or the API server
    n1 = lab.add_host("node1")          # eth0 192.168.77.N/24, default route via .254, ip_forward=1
    n1.ns.run("ip", "-j", "route")      # harness.Netns
    lab.destroy()                       # every namespace goes (the fixture does this even on failure)

Everything lives in namespaces the lab creates; nothing touches the root namespace. A host's
``dir`` is a private state directory (subnet.env, flanneld state, logs).
"""
from __future__ import annotations

import os
import signal
import subprocess
import uuid
from dataclasses import dataclass, field

from harness import Netns, delete_netns, new_netns

UNDERLAY = "192.168.77"
GATEWAY = f"{UNDERLAY}.254"


@dataclass
class Host:
    name: str
    ns: Netns
    ip: str
    dir: str
    mac: str = ""

    @property
    def netns_path(self) -> str:
        return self.ns.path


@dataclass
class Lab:
    tmp: str
    prefix: str = field(default_factory=lambda: f"fl{uuid.uuid4().hex[:6]}")
    hosts: list[Host] = field(default_factory=list)
    procs: list[subprocess.Popen] = field(default_factory=list)
    _extra: list[Netns] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.switch = new_netns(f"{self.prefix}-sw")
        self.switch.run("ip", "link", "add", "sw0", "type", "bridge")
        self.switch.run("ip", "addr", "add", f"{GATEWAY}/24", "dev", "sw0")
        self.switch.run("ip", "link", "set", "sw0", "up")
        self._next = 1

    def add_host(self, name: str, ip: str | None = None) -> Host:
        """A namespace with ``eth0`` on the underlay and a default route via the switch."""
        if ip is None:
            ip = f"{UNDERLAY}.{self._next}"
        self._next += 1
        ns = new_netns(f"{self.prefix}-{name}")
        port = f"p{uuid.uuid4().hex[:8]}"
        subprocess.run(["ip", "link", "add", "eth0", "netns", ns.name, "type", "veth", "peer", "name", port,
                        "netns", self.switch.name], check=True)
        self.switch.run("ip", "link", "set", port, "master", "sw0", "up")
        ns.run("ip", "addr", "add", f"{ip}/24", "dev", "eth0")
        ns.run("ip", "link", "set", "eth0", "up")
        ns.run("ip", "route", "add", "default", "via", GATEWAY, "dev", "eth0")
        ns.run("sysctl", "-qw", "net.ipv4.ip_forward=1")
        d = os.path.join(self.tmp, name)
        os.makedirs(d, exist_ok=True)
        mac = ns.json("ip", "-j", "link", "show", "eth0")[0]["address"]
        host = Host(name=name, ns=ns, ip=ip, dir=d, mac=mac)
        self.hosts.append(host)
        return host

    def spawn(self, host: Host, argv: list[str], log_name: str, env: dict[str, str] | None = None
              ) -> subprocess.Popen:
        """Run ``argv`` inside ``host``'s namespace, output to ``<host.dir>/<log_name>``; stopped by destroy()."""
        log = open(os.path.join(host.dir, log_name), "ab")
        proc = subprocess.Popen(["ip", "netns", "exec", host.ns.name, *argv], stdout=log, stderr=subprocess.STDOUT,
                                env={**os.environ, **(env or {})}, start_new_session=True)
        log.close()
        self.procs.append(proc)
        return proc

    def stop(self, proc: subprocess.Popen, sig: int = signal.SIGTERM, timeout: float = 15) -> int:
        if proc.poll() is None:
            try:
                os.killpg(proc.pid, sig)
            except ProcessLookupError:
                pass
            try:
                proc.wait(timeout)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(5)
        return proc.returncode

    def destroy(self) -> None:
        for proc in reversed(self.procs):
            self.stop(proc, signal.SIGKILL, timeout=5)
        self.procs.clear()
        for host in reversed(self.hosts):
            delete_netns(host.ns)
        self.hosts.clear()
        for ns in self._extra:
            delete_netns(ns)
        delete_netns(self.switch)


class KernelWatch:
    """A backend's ``watch_kernel`` on its own thread, for a ``with`` block.

    ``reasons`` collects every trigger and ``fired`` is set on each; leaving the block stops the
    watch and checks that the thread ended."""

    def __init__(self, backend: object) -> None:
        import threading

        self.reasons: list[str] = []
        self.fired = threading.Event()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=backend.watch_kernel,  # type: ignore[attr-defined]
                                        args=(self._trigger, self._stop), daemon=True)

    def _trigger(self, reason: str) -> None:
        self.reasons.append(reason)
        self.fired.set()

    def __enter__(self) -> KernelWatch:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(5)
        assert not self._thread.is_alive(), "watch_kernel did not stop"
