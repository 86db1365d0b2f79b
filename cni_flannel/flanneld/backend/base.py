"""The backend interface (flannel's `pkg/backend`): small, so udp, ipip or wireguard slot in.

A backend knows nothing of etcd or Kubernetes. The daemon gives it the external
interface and the config, it registers the network (creates its device, publishes its
lease data through ``acquire``, configures the device with the lease), and from then on
``reconcile(peers)`` makes the kernel match the desired state: the own device plus every
peer. ``reconcile`` is level-triggered and idempotent: it reads the objects the backend
owns from the kernel, adds what is missing, fixes what differs, removes what is stale,
and never touches anything it does not own.
"""
from __future__ import annotations

import ipaddress
import threading
from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from typing import Any

from ...records import field, record
from ..subnet.lease import Lease, LeaseAttrs


@record
class ExternalInterface:
    """The interface flanneld runs over (flanneld-reference §2).

    ``iface_addr`` is the local address (the vxlan/udp source, the host-gw nexthop side);
    ``ext_addr`` is the advertised one (``--public-ip`` or a public-ip-overwrite), which
    need not be local (§14 complaint 7). Both v4 and v6.
    """

    name: str
    index: int
    mtu: int
    iface_addr: ipaddress.IPv4Address | None = None
    iface_addr6: ipaddress.IPv6Address | None = None
    ext_addr: ipaddress.IPv4Address | None = None
    ext_addr6: ipaddress.IPv6Address | None = None


@record
class ReconcileReport:
    """What one reconcile did; the daemon logs the changes and derives readiness from it."""

    added: list[str] = field(default_factory=list)     # "route 10.42.2.0/24 via 10.42.2.0 dev flannel.1 onlink"
    changed: list[str] = field(default_factory=list)
    removed: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)    # per peer or per object; retried on the next pass
    programmed: set[str] = field(default_factory=set)  # lease keys whose objects are all in place
    device_recreated: bool = False

    @property
    def clean(self) -> bool:
        return not self.errors


AcquireFn = Callable[[LeaseAttrs], Lease]


class Backend(ABC):
    """One backend instance per flanneld run."""

    type_name: str = ""  # the BackendType it publishes and accepts ("vxlan", "host-gw", "udp")

    def __init__(self, ext: ExternalInterface, network_config: Any, backend_config: dict[str, Any],
                 state_dir: str) -> None:
        self.ext = ext
        self.network_config = network_config  # flanneld.config.NetworkConfig
        self.backend_config = backend_config  # the raw Backend object of net-conf.json (keys as given)
        self.state_dir = state_dir            # where the backend keeps what must survive a restart
        self.lease: Lease | None = None

    @abstractmethod
    def register_network(self, acquire: AcquireFn) -> Lease:
        """Create/adopt the device, call ``acquire`` with this node's LeaseAttrs (backend data
        included), configure the device for the lease, and return the lease. Raises
        BackendError for a fatal misconfiguration (the daemon exits 1 with its message)."""

    @abstractmethod
    def mtu(self) -> int:
        """FLANNEL_MTU (flanneld-reference §4)."""

    @abstractmethod
    def reconcile(self, peers: Sequence[Lease]) -> ReconcileReport:
        """Make the kernel match: own device (recreated if gone) + one set of objects per peer."""

    def accepts(self, lease: Lease) -> bool:
        """Whether a peer lease is for this backend (others are ignored with a log line)."""
        return lease.attrs.backend_type == self.type_name

    def watch_kernel(self, trigger: Callable[[str], None], stop: threading.Event) -> None:
        """Block until ``stop``, calling ``trigger(reason)`` on every netlink event that touches
        an object this backend owns (a route deleted by hand, a link flap, the device gone).
        The default does nothing: the daemon's periodic reconcile still covers it."""
        stop.wait()

    def update_own_lease(self, lease: Lease) -> None:
        """The manager renewed or re-acquired the own lease (the subnet may have changed)."""
        self.lease = lease

    def close(self) -> None:
        """Release sockets and threads. Kernel objects are kept (the reference keeps them on exit)."""
        return None


class BackendError(Exception):
    """A fatal backend error (e.g. host-gw on NAT): flanneld exits 1 with this message."""


REGISTRY: dict[str, str] = {
    # lowercase type -> "module:Class" (imported only when chosen)
    "vxlan": "cni_flannel.flanneld.backend.vxlan:VXLANBackend",
    "host-gw": "cni_flannel.flanneld.backend.hostgw:HostGWBackend",
    "udp": "cni_flannel.flanneld.backend.udp:UDPBackend",
}


def backend_class(type_name: str) -> type[Backend]:
    """`GetBackend(lowercase type)`; an unknown one is "unknown backend type: x"."""
    from importlib import import_module

    target = REGISTRY.get(type_name.lower())
    if target is None:
        raise BackendError(f"unknown backend type: {type_name}")
    module, cls = target.split(":")
    return getattr(import_module(module), cls)  # type: ignore[no-any-return]
