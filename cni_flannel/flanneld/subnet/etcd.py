"""The etcd v3 subnet manager (flanneld-reference §5; `pkg/subnet/etcd/{local_manager,registry}.go@H`).

Keys and values are the reference's, so a Go flanneld and ours share one etcd. Where the reference
is wrong we do better (§14 complaint 9):
* keys without an etcd lease are reservations (⚠ #1329): they count as taken, and the node whose
  PublicIP they carry reuses them, leaving them without a lease;
* a renewal grants a new lease, moves the key onto it (a Txn that checks the key still has our old
  lease) and revokes the old one (⚠ the reference leaks one lease per renewal);
* our key deleted or expired: re-acquire (the same subnet if it is still free) and carry on
  (⚠ the reference exits 0);
* the peers' watch skips a malformed key or value with one log line and keeps every other peer
  (⚠ #2539), resumes from the last revision after a break, and re-lists after a compaction;
* we list ``<prefix>/subnets/`` with the trailing ``/`` (⚠ the reference lists ``<prefix>/subnets``,
  which also takes in a sibling such as ``<prefix>/subnets-old/10.5.1.0-24`` and, since the key
  regex is not anchored at the start, reads it as a lease). Every key flannel writes is a child of
  ``subnets/``, so nothing written by any flanneld is missed.
"""
from __future__ import annotations

import ipaddress
import logging
import random
import threading
import time
from collections.abc import Callable, Iterable
from typing import Any

from ...records import replace
from ..config import NetworkConfig, candidate_subnets, in_range, parse_network_config
from .etcdv3 import Compacted, EtcdClient
from .lease import Lease, LeaseAttrs, LeaseFormatError, attrs_from_json, attrs_to_json, parse_subnet_key, subnet_key
from .manager import Backoff, LeaseError, PeerTable, SubnetManager, TransientError, now

IPv4Net = ipaddress.IPv4Network
IPv6Net = ipaddress.IPv6Network
Net = IPv4Net | IPv6Net

CONFIG_MISSING = "flannel config not found in etcd store. Did you create your config using etcdv3 API?"
MAX_ROUNDS = 10  # §5.2
PICK_FROM = 100  # §5.2: a random one among the first 100 free subnets


class _Lost(Exception):
    """Our key is gone or belongs to someone else: re-acquire."""


class EtcdSubnetManager(SubnetManager):
    name = "etcd"

    def __init__(self, client: EtcdClient, prefix: str, *, prev_subnet: IPv4Net | None,
                 prev_ipv6_subnet: IPv6Net | None, renew_margin_s: float = 3600, lease_ttl_s: int = 86400,
                 log: logging.Logger | None = None) -> None:
        self.client = client
        self.prefix = prefix.rstrip("/")
        self.subnets_dir = self.prefix + "/subnets/"
        self.prev_subnet, self.prev_ipv6_subnet = prev_subnet, prev_ipv6_subnet
        self.renew_margin_s, self.lease_ttl_s = renew_margin_s, lease_ttl_s
        self.log = log or logging.getLogger("flanneld.etcd")
        self.own: Lease | None = None
        self._peers: PeerTable | None = None
        self._faults: dict[str, str] = {}
        self._fault_logged: dict[str, tuple[str, float]] = {}
        self._orphans: list[int] = []  # replaced etcd leases whose revoke failed: retried later
        self._lock = threading.Lock()

    # --- health --------------------------------------------------------------------------------
    def health(self) -> str:
        return "; ".join(v for v in self._faults.values() if v)

    def _failed(self, where: str, exc: BaseException) -> None:
        text = str(exc)
        self._faults[where] = text
        last, at = self._fault_logged.get(where, ("", 0.0))
        if text != last or time.monotonic() - at >= 5.0:  # at most once every ~5 s while it lasts
            self.log.warning("etcd %s: %s", where, text)
            self._fault_logged[where] = (text, time.monotonic())

    def _ok(self, where: str) -> None:
        if self._faults.get(where):
            self.log.info("etcd %s: etcd is reachable again", where)
        self._faults[where] = ""
        self._fault_logged.pop(where, None)

    # --- config --------------------------------------------------------------------------------
    def get_network_config(self) -> NetworkConfig:
        kv = self.client.get(self.prefix + "/config")
        if kv is None:
            raise TransientError(CONFIG_MISSING)
        return parse_network_config(kv.value, check=True)  # ConfigError: fatal for the daemon

    # --- listing -------------------------------------------------------------------------------
    def _lease_from_kv(self, key: str, value: bytes, lease_id: int, mod_revision: int,
                       lookup_ttl: bool = True) -> Lease | None:
        """A Lease from one etcd key, or None (logged) when the key or value is malformed or expiring.

        A watch event skips the TimeToLive lookup (``lookup_ttl=False``): a peer's expiration
        drives nothing (etcd deletes an expired key, and the DELETE follows), and one HTTP call
        per event made 1,000 leases written at once take seconds. Such a lease keeps its
        ``lease_id`` (non-zero: not a reservation) with ``expiration`` 0."""
        name = key[len(self.subnets_dir):] if key.startswith(self.subnets_dir) else key
        try:
            sn, sn6 = parse_subnet_key(name)
            attrs = attrs_from_json(value)
        except LeaseFormatError as exc:
            self.log.warning("Ignoring bad subnet node %s: %s", key, exc)
            return None
        expiration = 0.0  # no etcd lease: a reservation, never expires
        if lease_id and lookup_ttl:
            ttl, _ = self.client.lease_ttl(lease_id)
            if ttl <= 0:  # its lease just ran out: the DELETE event follows
                self.log.info("Could not read ttl of %s (etcd lease %x is gone)", key, lease_id)
                return None
            expiration = now() + ttl
        return Lease(subnet=sn, ipv6_subnet=sn6, attrs=attrs, expiration=expiration, lease_id=lease_id,
                     revision=mod_revision)

    def list_leases(self) -> tuple[list[Lease], int]:
        """getSubnets: every lease under ``<prefix>/subnets/`` and the revision of the listing."""
        res = self.client.get_prefix(self.subnets_dir)
        leases = [lease for kv in res.kvs
                  if (lease := self._lease_from_kv(kv.key, kv.value, kv.lease, kv.mod_revision)) is not None]
        return leases, res.revision

    # --- acquire -------------------------------------------------------------------------------
    def _compatible(self, cfg: NetworkConfig, sn: IPv4Net | None, sn6: IPv6Net | None) -> bool:
        """isSubnetConfigCompat && isIPv6SubnetConfigCompat."""
        if sn is None or not in_range(cfg, sn):
            return False
        if cfg.enable_ipv6 and cfg.ipv6_network is not None:
            return sn6 is not None and in_range(cfg, sn6)
        return sn6 is None

    def acquire_lease(self, attrs: LeaseAttrs) -> Lease:
        cfg = self.get_network_config()
        for _ in range(MAX_ROUNDS):
            leases, _rev = self.list_leases()
            lease = self._try_acquire(cfg, attrs, leases)
            if lease is not None:
                self._set_own(lease)
                return lease
        raise TransientError("max retries reached trying to acquire a subnet")

    def _set_own(self, lease: Lease) -> None:
        self.own = lease
        self.prev_subnet, self.prev_ipv6_subnet = lease.subnet, lease.ipv6_subnet
        peers = self._peers
        if peers is not None and peers.own_key != lease.key:
            peers.own_key = lease.key
            peers.remove(lease.key)

    def _try_acquire(self, cfg: NetworkConfig, attrs: LeaseAttrs, leases: list[Lease]) -> Lease | None:
        ext = attrs.public_ip
        mine = next((lease for lease in leases if ext is not None and lease.attrs.public_ip == ext), None)
        if mine is not None:
            if self._compatible(cfg, mine.subnet, mine.ipv6_subnet):
                self.log.info("Found lease (ip: %s ipv6: %s) for current IP (%s), reusing",
                              mine.subnet, mine.ipv6_subnet, ext)
                return self._reuse(mine, attrs)
            if mine.lease_id == 0:
                # ⚠ #1329: a reservation is an operator's decision; it stays taken
                self.log.warning("Found reservation (%s) for current IP (%s) but not compatible with current "
                                 "config, leaving it in place", mine.subnet, ext)
            else:
                self.log.info("Found lease (%s) for current IP (%s) but not compatible with current config, "
                              "deleting", mine.subnet, ext)
                self.client.delete(self.subnets_dir + mine.key)
                self._revoke(mine.lease_id)
                leases = [lease for lease in leases if lease is not mine]
        sn = self._previous(cfg, self.prev_subnet, [lease.subnet for lease in leases])
        sn6: IPv6Net | None = None
        if cfg.enable_ipv6 and cfg.ipv6_network is not None:
            sn6 = self._previous(cfg, self.prev_ipv6_subnet, [lease.ipv6_subnet for lease in leases])
        if sn is None:
            sn = self._pick(cfg, [lease.subnet for lease in leases], v6=False)
        if cfg.enable_ipv6 and cfg.ipv6_network is not None and sn6 is None:
            sn6 = self._pick(cfg, [lease.ipv6_subnet for lease in leases], v6=True)
        return self._create(sn, sn6, attrs)

    def _previous(self, cfg: NetworkConfig, prev: Any, used: Iterable[Net | None]) -> Any:
        if prev is None or not in_range(cfg, prev) or any(u is not None and u.overlaps(prev) for u in used):
            return None
        self.log.info("Found previously leased subnet (%s), reusing", prev)
        return prev

    def _pick(self, cfg: NetworkConfig, used: Iterable[Net | None], *, v6: bool) -> Any:
        taken = [u for u in used if u is not None]
        same = {u for u in taken if u.prefixlen == (cfg.ipv6_subnet_len if v6 else cfg.subnet_len)}
        odd = [u for u in taken if u not in same]  # other lengths (a reservation by hand): overlap test
        free: list[Net] = []
        for cand in candidate_subnets(cfg, v6=v6):
            if cand in same or any(cand.overlaps(u) for u in odd):
                continue
            free.append(cand)
            if len(free) == PICK_FROM:
                break
        if not free:
            if not v6 and not cfg.enable_ipv4:
                raise LeaseError("out of subnets (the etcd key needs an IPv4 subnet even with EnableIPv4 false: "
                                 "set Network)")
            raise LeaseError("out of subnets")
        self.log.info("Picking subnet in range %s ... %s", free[0], free[-1])
        return random.choice(free)

    def _create(self, sn: IPv4Net, sn6: IPv6Net | None, attrs: LeaseAttrs) -> Lease | None:
        key = subnet_key(sn, sn6)
        lease_id, ttl = self.client.lease_grant(self.lease_ttl_s)
        try:
            rev = self.client.txn_put(self.subnets_dir + key, attrs_to_json(attrs), lease_id, if_version=0)
        except TransientError:
            self._revoke(lease_id)
            raise
        if not rev:  # someone took it between our listing and the Txn: next round
            self.log.info("Subnet %s was taken meanwhile, trying again", key)
            self._revoke(lease_id)
            return None
        self.log.info("Allocated lease (ip: %s ipv6: %s) to current node (%s)", sn, sn6, attrs.public_ip)
        return Lease(subnet=sn, ipv6_subnet=sn6, attrs=attrs, expiration=now() + ttl, lease_id=lease_id,
                     revision=rev)

    def _reuse(self, mine: Lease, attrs: LeaseAttrs) -> Lease | None:
        key = self.subnets_dir + mine.key
        value = attrs_to_json(attrs)
        if mine.lease_id == 0:  # a reservation: refresh the value, keep it without a lease
            rev = self.client.txn_put(key, value, 0, if_lease=0)
            return replace(mine, attrs=attrs, revision=rev) if rev else None
        lease_id, ttl = self.client.lease_grant(self.lease_ttl_s)
        rev = self.client.txn_put(key, value, lease_id, if_lease=mine.lease_id)
        if not rev:
            self._revoke(lease_id)
            return None
        self._revoke(mine.lease_id)
        return Lease(subnet=mine.subnet, ipv6_subnet=mine.ipv6_subnet, attrs=attrs, expiration=now() + ttl,
                     lease_id=lease_id, revision=rev)

    def _revoke(self, lease_id: int) -> None:
        """Best effort: a failed revoke is retried by keep_lease (the lease would expire anyway)."""
        if not lease_id:
            return
        try:
            self.client.lease_revoke(lease_id)
        except TransientError as exc:
            self.log.info("Could not revoke etcd lease %x (will retry): %s", lease_id, exc)
            with self._lock:
                self._orphans.append(lease_id)

    def _revoke_orphans(self) -> None:
        with self._lock:
            pending, self._orphans = self._orphans, []
        for lease_id in pending:
            self._revoke(lease_id)

    # --- keep the own lease ---------------------------------------------------------------------
    def _renew_at(self, lease: Lease) -> float:
        if not lease.expiration:
            return float("inf")  # a reservation never expires
        return lease.expiration - min(self.renew_margin_s, self.lease_ttl_s / 2)

    def _renew(self, cur: Lease) -> Lease:
        """Grant, move our key onto the new lease if it still has the old one, revoke the old one."""
        lease_id, ttl = self.client.lease_grant(self.lease_ttl_s)
        try:
            rev = self.client.txn_put(self.subnets_dir + cur.key, attrs_to_json(cur.attrs), lease_id,
                                      if_lease=cur.lease_id)
        except TransientError:
            self._revoke(lease_id)
            raise
        if not rev:
            self._revoke(lease_id)
            raise _Lost(f"lease {cur.key} is no longer ours")
        self._revoke(cur.lease_id)
        new = replace(cur, lease_id=lease_id, expiration=now() + ttl, revision=rev)
        self.log.info("Renewed lease %s (etcd lease %x, ttl %ds)", cur.key, lease_id, ttl)
        self.own = new
        return new

    def _check_own(self, cur: Lease) -> tuple[Lease, int]:
        """Is our key still there and ours? Returns the lease (adopted if rewritten by us) and the revision."""
        res = self.client.range(self.subnets_dir + cur.key)
        kv = res.kvs[0] if res.kvs else None
        if kv is None:
            raise _Lost(f"lease {cur.key} has been deleted or has expired")
        if kv.lease != cur.lease_id:
            try:
                theirs = attrs_from_json(kv.value).public_ip
            except LeaseFormatError:
                theirs = None
            if theirs != cur.attrs.public_ip:
                raise _Lost(f"lease {cur.key} now belongs to {theirs}")
            cur = replace(cur, lease_id=kv.lease,
                          expiration=now() + self.client.lease_ttl(kv.lease)[0] if kv.lease else 0.0)
        return cur, res.revision

    def _reacquire(self, cur: Lease, why: str, on_change: Callable[[Lease], None]) -> Lease:
        self.log.warning("%s: re-acquiring (the same subnet if it is still free)", why)
        self._revoke(cur.lease_id)
        self.prev_subnet, self.prev_ipv6_subnet = cur.subnet, cur.ipv6_subnet
        new = self.acquire_lease(cur.attrs)
        self.log.info("Re-acquired lease %s (was %s)", new.key, cur.key)
        on_change(new)
        return new

    def keep_lease(self, lease: Lease, on_change: Callable[[Lease], None], stop: threading.Event) -> None:
        cur = lease
        backoff = Backoff(1.0, 30.0)
        lost = ""
        while not stop.is_set():
            try:
                if lost:
                    cur = self._reacquire(cur, lost, on_change)
                    lost = ""
                cur, rev = self._check_own(cur)
                self._ok("lease")
                backoff.reset()
                for ev in self.client.watch(self.subnets_dir + cur.key, "", rev + 1, stop, heartbeat=1.0):
                    self._revoke_orphans()
                    if ev is not None and ev.type == "DELETE":
                        raise _Lost(f"lease {cur.key} has been deleted or has expired")
                    if now() >= self._renew_at(cur):
                        cur = self._renew(cur)
                        on_change(cur)
            except _Lost as exc:
                lost = str(exc)
            except Compacted:
                continue  # _check_own re-reads the key at a fresh revision
            except LeaseError as exc:  # out of subnets while re-acquiring: keep trying, never exit
                self._failed("lease", exc)
                backoff.wait(stop)
            except TransientError as exc:
                self._failed("lease", exc if not lost else TransientError(f"{lost}; re-acquiring: {exc}"))
                backoff.wait(stop)

    # --- watch every lease ----------------------------------------------------------------------
    def _apply(self, peers: PeerTable, ev: Any) -> None:
        if ev.type == "DELETE":
            name = ev.key[len(self.subnets_dir):]
            try:
                sn, sn6 = parse_subnet_key(name)
            except LeaseFormatError:
                return  # we never added it
            if peers.remove(subnet_key(sn, sn6)) is not None:
                self.log.info("Peer lease removed: %s", name)
            return
        lease = self._lease_from_kv(ev.key, ev.value, ev.lease, ev.mod_revision, lookup_ttl=False)
        if lease is not None and peers.upsert(lease):
            self.log.info("Peer lease added or changed: %s (%s)", lease.key, lease.attrs.public_ip)

    def watch_leases(self, peers: PeerTable, stop: threading.Event) -> None:
        self._peers = peers
        if self.own is not None:
            peers.own_key = self.own.key
        backoff = Backoff(0.1, 5.0)
        rev = 0  # 0: (re)list first
        while not stop.is_set():
            try:
                if rev == 0:
                    leases, rev = self.list_leases()
                    added, removed = peers.replace_all(leases)
                    self.log.info("Listed %d leases at revision %d (%d added or changed, %d removed)",
                                  len(leases), rev, len(added), len(removed))
                for ev in self.client.watch_prefix(self.subnets_dir, rev + 1, stop, heartbeat=5.0):
                    self._ok("watch")
                    backoff.reset()
                    if ev is not None:
                        self._apply(peers, ev)
                        rev = ev.mod_revision
            except Compacted as exc:
                self.log.warning("Watch revision %d is compacted (compact revision %d): re-listing",
                                 rev + 1, exc.compact_revision)
                rev = 0
            except TransientError as exc:
                self._failed("watch", exc)
                backoff.wait(stop)

    def close(self) -> None:
        self.client.close()
