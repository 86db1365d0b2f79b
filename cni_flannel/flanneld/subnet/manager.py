"""The subnet-manager interface (flannel's `pkg/subnet` Manager), in our terms.

A manager knows nothing of the kernel. It hands the daemon the network config, the
own lease, and the peers' leases; the peers go into a PeerTable, the desired state
that the backend's reconcile compares with the kernel. A manager's blocking loops
(`keep_lease`, `watch_leases`) retry transient faults themselves with backoff and
return only when `stop` is set.
"""
from __future__ import annotations

import threading
import time
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable
from typing import Any

from .lease import Lease, LeaseAttrs


class ConfigError(Exception):
    """The network config is invalid: fatal, with the reference's message."""


class LeaseError(Exception):
    """AcquireLease cannot succeed (out of subnets, podCIDR outside Network): fatal."""


class TransientError(Exception):
    """etcd or the API server is unreachable or refused a request: retry with backoff."""


class PeerTable:
    """The peers' leases by key, the own lease left out. Thread-safe; every change bumps
    ``generation`` and wakes whoever waits for changes (the reconcile loop)."""

    def __init__(self, own_key: str = "") -> None:
        self._lock = threading.Condition()
        self._leases: dict[str, Lease] = {}
        self.own_key = own_key
        self.generation = 0
        self.synced = False  # a full listing has been received at least once

    def _bump(self) -> None:
        self.generation += 1
        self._lock.notify_all()

    def replace_all(self, leases: Iterable[Lease]) -> tuple[list[Lease], list[Lease]]:
        """A fresh listing: returns (added or changed, removed)."""
        new = {lease.key: lease for lease in leases if lease.key != self.own_key}
        with self._lock:
            added = [v for k, v in new.items() if self._leases.get(k) != v]
            removed = [v for k, v in self._leases.items() if k not in new]
            self._leases = new
            self.synced = True
            self._bump()
        return added, removed

    def upsert(self, lease: Lease) -> bool:
        if lease.key == self.own_key:
            return False
        with self._lock:
            if self._leases.get(lease.key) == lease:
                return False
            self._leases[lease.key] = lease
            self._bump()
        return True

    def remove(self, key: str) -> Lease | None:
        with self._lock:
            gone = self._leases.pop(key, None)
            if gone is not None:
                self._bump()
        return gone

    def snapshot(self) -> tuple[int, list[Lease]]:
        with self._lock:
            return self.generation, sorted(self._leases.values(), key=lambda lease: lease.key)

    def wait_change(self, generation: int, timeout: float) -> int:
        """Block until the generation differs from ``generation`` or ``timeout`` passes."""
        with self._lock:
            self._lock.wait_for(lambda: self.generation != generation, timeout=timeout)
            return self.generation

    def poke(self) -> None:
        """Wake the reconcile loop without a change of peers (a kernel event, a timer)."""
        with self._lock:
            self._bump()


class SubnetManager(ABC):
    """What flanneld needs from etcd or the Kubernetes API."""

    name: str = ""

    @abstractmethod
    def get_network_config(self) -> Any:
        """The NetworkConfig (flanneld.config). Raises ConfigError (invalid) or TransientError
        (not reachable / not there yet; the daemon retries every second, as the reference)."""

    @abstractmethod
    def acquire_lease(self, attrs: LeaseAttrs) -> Lease:
        """Reference AcquireLease. Raises LeaseError (fatal) or TransientError (retry)."""

    @abstractmethod
    def keep_lease(self, lease: Lease, on_change: Callable[[Lease], None], stop: threading.Event) -> None:
        """Reference CompleteLease, made safe: etcd renews before expiry (revoking the replaced
        etcd lease) and re-acquires a lease deleted by someone else; kube sets NetworkUnavailable.
        ``on_change`` gets the own lease whenever it is renewed or re-acquired. Returns on stop."""

    @abstractmethod
    def watch_leases(self, peers: PeerTable, stop: threading.Event) -> None:
        """List, then watch, every lease into ``peers`` (replace_all on every (re)list, upsert and
        remove on events); resume or re-list after a broken watch. Returns on stop."""

    def health(self) -> str:
        """'' when the last call to the store worked, else the fault (for /readyz and the log)."""
        return ""

    def close(self) -> None:
        """Release connections."""
        return None


class Backoff:
    """Exponential backoff with a cap: 100 ms -> 5 s by default, as the reference's watch loops."""

    def __init__(self, first: float = 0.1, cap: float = 5.0) -> None:
        self.first, self.cap, self.current = first, cap, first

    def reset(self) -> None:
        self.current = self.first

    def wait(self, stop: threading.Event) -> bool:
        """Sleep the current delay (False if stopped meanwhile), then double it."""
        delay = self.current
        self.current = min(self.cap, self.current * 2)
        return not stop.wait(delay)


def now() -> float:
    return time.time()
