"""The Kubernetes subnet manager (`--kube-subnet-mgr`; flanneld-reference §6).

The own lease is the own Node's podCIDR(s); flannel publishes its attributes as Node
annotations (§6.3) with a strategic-merge PATCH on ``nodes/<n>/status`` (the only write the
ClusterRole allows), and the peers are every Node annotated ``kube-subnet-manager: "true"``.
Where the reference is weak we do better (⚠ in the reference):

* a Node without a podCIDR is waited for, with a hint, instead of exiting (#728, §14.2);
* containment is checked before anything is published;
* a nil annotations map is an empty one (#818);
* peers: a paginated list, then a watch from its resourceVersion with bookmarks; a 410 or a
  broken stream resumes or re-lists; every change of a peer's podCIDR, MAC, public IP or
  backend type in either family is seen (the reference loses v4-only changes in dual stack
  and ignores podCIDR changes), and a full re-list every 5 minutes replaces the table;
* our annotations are re-applied if someone removes or changes them;
* NetworkUnavailable=False is retried until it is set;
* ``KUBECONFIG`` is honoured; refusals name the verb and resource to add to the ClusterRole.
"""
from __future__ import annotations

import ipaddress
import json
import logging
import os
import re
import threading
import time
from collections.abc import Callable, Mapping
from typing import Any

from ...records import record
from .kubeclient import SERVICE_ACCOUNT_DIR, ApiError, ConfigSourceError, Gone, KubeClient, load_config
from .lease import IPv4Net, IPv6Net, Lease, LeaseAttrs, LeaseFormatError
from .manager import Backoff, ConfigError, LeaseError, PeerTable, SubnetManager, TransientError

log = logging.getLogger("flanneld.kube")

LEASE_TTL_S = 24 * 3600  # "expires" in now+24 h (unused, §6.2)
RELIST_PERIOD_S = 300.0  # the informer's resync period, made a real re-list (level-triggered)
PODCIDR_HINT_EVERY_S = 30.0
LIST_PAGE = 500
_PREFIX_RE = re.compile(r"(?:[a-z0-9_-]+\.)+[a-z0-9_-]+/(?:[a-z0-9_-]+-)?$")
_DUAL_STACK_TYPES = ("vxlan", "host-gw", "wireguard")


class NodeLeaseError(ValueError):
    """A Node that does not make a lease (logged as "Error turning node %q to lease: %v")."""


def q(text: str) -> str:
    """Go's %q for the plain strings we quote (names, CIDRs)."""
    return json.dumps(text, ensure_ascii=False)


# ---------------------------------------------------------------- annotations (§6.3)

@record
class AnnotationKeys:
    kube_subnet_manager: str
    backend_data: str
    backend_v6_data: str
    backend_type: str
    public_ip: str
    public_ipv6: str
    node_public_ip: str
    node_public_ipv6: str
    public_ip_overwrite: str
    public_ipv6_overwrite: str


def annotation_keys(prefix: str) -> AnnotationKeys:
    """newAnnotations: the reference's prefix rules and messages (ConfigError)."""
    slashes = prefix.count("/")
    if slashes > 1:
        raise ConfigError("subnet/kube: prefix can contain at most single slash")
    if slashes == 0:
        prefix += "/"
    if not prefix.endswith(("/", "-")):
        prefix += "-"
    # ⚠ Go's MatchString is unanchored at the start, so "Example.com" passes there and every
    # patch is then refused by the API (keys must be lowercase DNS names): we anchor it
    if not _PREFIX_RE.fullmatch(prefix):
        raise ConfigError("subnet/kube: prefix must be in a format: fqdn/[0-9a-z-_]*")
    return AnnotationKeys(
        kube_subnet_manager=prefix + "kube-subnet-manager",
        backend_data=prefix + "backend-data",
        backend_v6_data=prefix + "backend-v6-data",
        backend_type=prefix + "backend-type",
        public_ip=prefix + "public-ip",
        public_ipv6=prefix + "public-ipv6",
        node_public_ip=prefix + "node-public-ip",
        node_public_ipv6=prefix + "node-public-ipv6",
        public_ip_overwrite=prefix + "public-ip-overwrite",
        public_ipv6_overwrite=prefix + "public-ipv6-overwrite",
    )


def go_json(value: Any) -> str:
    """Go's json.Marshal of decoded JSON: compact, keys in the order given (our backends build
    ``{"VNI":1,"VtepMAC":…}`` in the struct's order), <>& escaped, None = null."""
    text = json.dumps(value, separators=(",", ":"), ensure_ascii=False)
    return (text.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")
            .replace("\u2028", "\\u2028").replace("\u2029", "\\u2029"))


def node_annotations(node: Mapping[str, Any]) -> dict[str, str]:
    """The annotations map; a node without one (nil in Go, #818) has none."""
    meta = node.get("metadata") or {}
    ann = meta.get("annotations") or {}
    return {str(k): str(v) for k, v in ann.items()} if isinstance(ann, dict) else {}


def node_name_of(node: Mapping[str, Any]) -> str:
    return str((node.get("metadata") or {}).get("name") or "")


def desired_annotations(keys: AnnotationKeys, attrs: LeaseAttrs, current: Mapping[str, str]) -> dict[str, str]:
    """What AcquireLease writes (kube.go@H), given the node's current annotations (for the
    user's public-ip[v6]-overwrite, which is published instead of the local address)."""
    bt = attrs.backend_type
    bd, v6bd = go_json(attrs.backend_data), go_json(attrs.backend_v6_data)
    out = {keys.backend_type: bt}
    # vxlan with null v4 data is v6-only: no v4 annotations; every other type writes them
    if bt != "vxlan" or bd != "null":
        out[keys.backend_data] = bd
        overwrite = current.get(keys.public_ip_overwrite, "")
        out[keys.public_ip] = overwrite or (str(attrs.public_ip) if attrs.public_ip is not None else "0.0.0.0")
    has6 = attrs.public_ipv6 is not None
    if (bt == "vxlan" and v6bd != "null") or (bt == "wireguard" and v6bd != "null" and has6) or \
            (bt == "host-gw" and has6):
        out[keys.backend_v6_data] = v6bd
        overwrite6 = current.get(keys.public_ipv6_overwrite, "")
        if overwrite6 or has6:
            out[keys.public_ipv6] = overwrite6 or str(attrs.public_ipv6)
    out[keys.kube_subnet_manager] = "true"
    return out


def annotation_patch(keys: AnnotationKeys, attrs: LeaseAttrs, current: Mapping[str, str]) -> dict[str, Any] | None:
    """The two-way strategic-merge patch of the reference: only the annotations that differ,
    keys sorted as Go's json.Marshal of a map; None when nothing differs."""
    want = desired_annotations(keys, attrs, current)
    changed = {k: want[k] for k in sorted(want) if current.get(k) != want[k]}
    return {"metadata": {"annotations": changed}} if changed else None


def condition_patch(now: float | None = None) -> dict[str, Any]:
    """§6.5: NetworkUnavailable=False, in NodeCondition's field order, RFC 3339 seconds."""
    stamp = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(time.time() if now is None else now))
    return {"status": {"conditions": [{
        "type": "NetworkUnavailable", "status": "False", "lastHeartbeatTime": stamp, "lastTransitionTime": stamp,
        "reason": "FlannelIsUp", "message": "Flannel is running on this node"}]}}


# ---------------------------------------------------------------- podCIDRs and leases (§6.2, §6.4)

def pod_cidrs(node: Mapping[str, Any]) -> tuple[IPv4Net | None, IPv6Net | None]:
    """The first IPv4 and IPv6 CIDR of spec.podCIDRs (1-2 entries), else spec.podCIDR."""
    name = node_name_of(node)
    spec = node.get("spec") or {}
    cidrs = list(spec.get("podCIDRs") or [])
    if len(cidrs) >= 3:
        raise NodeLeaseError(f"node {q(name)} pod cidrs should be IPv4/IPv6 only or dualstack")
    if not cidrs and spec.get("podCIDR"):
        cidrs = [spec["podCIDR"]]
    v4: IPv4Net | None = None
    v6: IPv6Net | None = None
    for text in cidrs:
        try:
            net = ipaddress.ip_network(str(text), strict=False)  # Go's ParseCIDR masks the host bits
        except ValueError:
            raise NodeLeaseError(f"invalid CIDR address: {text}") from None
        if isinstance(net, ipaddress.IPv4Network):
            v4 = v4 or net
        else:
            v6 = v6 or net
    return v4, v6


def _json_annotation(ann: Mapping[str, str], key: str) -> Any:
    if key not in ann:
        raise NodeLeaseError(f"annotation {key} is missing")
    try:
        return json.loads(ann[key])
    except ValueError as exc:
        raise NodeLeaseError(f"annotation {key} is not JSON: {exc}") from None


def _ip_annotation(ann: Mapping[str, str], key: str, v6: bool) -> Any:
    text = ann.get(key, "")
    try:
        return ipaddress.IPv6Address(text) if v6 else ipaddress.IPv4Address(text)
    except ValueError:
        raise NodeLeaseError(f"invalid IP address {q(text)} in annotation {key}") from None


def node_to_lease(keys: AnnotationKeys, node: Mapping[str, Any], enable_ipv4: bool, enable_ipv6: bool) -> Lease:
    """nodeToLease: the peer's lease from its annotations and podCIDR(s), per enabled family."""
    ann = node_annotations(node)
    v4, v6 = pod_cidrs(node)
    public_ip = public_ipv6 = bd = v6bd = None
    if enable_ipv4:
        if v4 is None:
            raise NodeLeaseError("no IPv4 podCIDR")
        public_ip = _ip_annotation(ann, keys.public_ip, False)
        bd = _json_annotation(ann, keys.backend_data)
    if enable_ipv6:
        if v6 is None:
            raise NodeLeaseError("no IPv6 podCIDR")
        public_ipv6 = _ip_annotation(ann, keys.public_ipv6, True)
        v6bd = _json_annotation(ann, keys.backend_v6_data)
    attrs = LeaseAttrs(public_ip=public_ip, public_ipv6=public_ipv6, backend_type=ann.get(keys.backend_type, ""),
                       backend_data=bd, backend_v6_data=v6bd)
    return Lease(v4 if enable_ipv4 else None, v6 if enable_ipv6 else None, attrs)


def parse_json_or_none(text: str | None) -> Any:
    if not text:
        return None
    try:
        return json.loads(text)
    except ValueError:
        return None


# ---------------------------------------------------------------- the manager

class _Faults:
    """The current fault per concern; logged once per state change (and the recovery)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._faults: dict[str, str] = {}

    def set(self, concern: str, text: str, recovered: str = "") -> None:
        with self._lock:
            old = self._faults.get(concern, "")
            self._faults[concern] = text
        if text and text != old:
            log.warning("%s", text)
        elif not text and old and recovered:
            log.info("%s", recovered)

    def text(self) -> str:
        with self._lock:
            return "; ".join(v for _, v in sorted(self._faults.items()) if v)


class KubeSubnetManager(SubnetManager):
    name = "kube"

    def __init__(self, client: KubeClient, *, node_name: str, net_config_path: str,
                 annotation_prefix: str = "flannel.alpha.coreos.com", set_node_network_unavailable: bool = True,
                 log: logging.Logger | None = None, relist_period_s: float = RELIST_PERIOD_S,
                 podcidr_wait_s: float = 30.0, poll_s: float = 2.0) -> None:
        self.client = client
        self.node_name = node_name
        self.keys = annotation_keys(annotation_prefix)
        self.set_node_network_unavailable = set_node_network_unavailable
        self.log = log or logging.getLogger("flanneld.kube")
        self.relist_period_s, self.podcidr_wait_s, self.poll_s = relist_period_s, podcidr_wait_s, poll_s
        self.config = self._read_net_conf(net_config_path)
        self._closed = threading.Event()
        self._faults = _Faults()
        self._no_get = False  # the ClusterRole lacks `nodes get` (the seed's): list by name instead
        self._own_lock = threading.Lock()
        self._own_node: dict[str, Any] | None = None
        self._own_dirty = threading.Event()
        self._attrs: LeaseAttrs | None = None
        self._node_keys: dict[str, str] = {}  # node name -> its lease key in the PeerTable
        self._bad_nodes: dict[str, str] = {}  # node name -> the last "cannot make a lease" text logged
        self._hint_at = 0.0

    # -- construction
    @classmethod
    def from_options(cls, opts: Any, *, env: Mapping[str, str] | None = None, sa_dir: str = "",
                     pod_wait_s: float = 30.0) -> KubeSubnetManager:
        """The client from --kubeconfig-file, --kube-api-url, KUBECONFIG, else in-cluster
        (``sa_dir``, or $CNI_FLANNEL_SERVICE_ACCOUNT_DIR, else the standard path); the node name
        from NODE_NAME, else the own pod's spec.nodeName (§6.1)."""
        env = os.environ if env is None else env
        sa_dir = sa_dir or env.get("CNI_FLANNEL_SERVICE_ACCOUNT_DIR", "") or SERVICE_ACCOUNT_DIR
        try:
            client = KubeClient(load_config(opts.kubeconfig_file, opts.kube_api_url, env, sa_dir))
        except ConfigSourceError as exc:
            raise ConfigError(str(exc)) from None
        log.info("Kubernetes API %s (%s)", client.server, client.config.source)
        try:
            node_name = resolve_node_name(client, env, pod_wait_s)
            try:
                return cls(client, node_name=node_name, net_config_path=opts.net_config_path,
                           annotation_prefix=opts.kube_annotation_prefix,
                           set_node_network_unavailable=opts.set_node_network_unavailable)
            except ConfigError as exc:
                text = str(exc)
                if text.startswith("subnet/kube"):
                    text = f"error creating network manager: {text}"
                raise ConfigError(text) from None
        except BaseException:
            client.close()
            raise

    @staticmethod
    def _read_net_conf(path: str) -> Any:
        from ..config import parse_network_config

        try:
            with open(path, "rb") as f:
                data = f.read()
        except OSError as exc:
            reason = (exc.strerror or str(exc)).lower()
            raise ConfigError(f"failed to read net conf: open {path}: {reason}") from None
        return parse_network_config(data, check=False)  # ConfigError "error parsing subnet config: …"

    # -- SubnetManager
    def get_network_config(self) -> Any:
        return self.config

    def health(self) -> str:
        return self._faults.text()

    def close(self) -> None:
        self._closed.set()
        self.client.close()

    # -- the own node
    def _fetch_own_node(self) -> dict[str, Any]:
        """GET nodes/<n>; with the seed ClusterRole (no `nodes get`) a list by name instead."""
        if not self._no_get:
            try:
                node = self.client.get_node(self.node_name)
                self._note_own(node)
                return node
            except ApiError as exc:
                if exc.code != 403:
                    raise
                self._no_get = True
                self.log.warning("%s; reading node %s through `list` meanwhile", exc, q(self.node_name))
        items, _ = self.client.list_nodes(limit=LIST_PAGE, field_selector=f"metadata.name={self.node_name}")
        for node in items:
            if node_name_of(node) == self.node_name:
                self._note_own(node)
                return node
        raise ApiError(404, "NotFound", f'nodes "{self.node_name}" not found', "get", "nodes")

    def _note_own(self, node: dict[str, Any]) -> None:
        """Keep the newest copy of the own node (a watch event may trail a PATCH's answer)."""
        with self._own_lock:
            if _older(node, self._own_node):
                return
            self._own_node = node
        self._own_dirty.set()

    def stored_backend_data(self) -> tuple[Any, Any]:
        """The own node's backend-data / backend-v6-data, decoded (the VTEP MACs to reuse, §6.3)."""
        ann = node_annotations(self._fetch_own_node())
        return parse_json_or_none(ann.get(self.keys.backend_data)), \
            parse_json_or_none(ann.get(self.keys.backend_v6_data))

    def node_public_ip(self) -> tuple[str, str]:
        """node-public-ip / node-public-ipv6: they replace --public-ip[v6] (§1.2 step 7)."""
        ann = node_annotations(self._fetch_own_node())
        return ann.get(self.keys.node_public_ip, ""), ann.get(self.keys.node_public_ipv6, "")

    # -- AcquireLease
    def acquire_lease(self, attrs: LeaseAttrs) -> Lease:
        node = self._fetch_own_node()
        deadline = time.monotonic() + self.podcidr_wait_s
        while not pod_cidrs_present(node):
            self._podcidr_hint()
            if time.monotonic() >= deadline or self._closed.wait(self.poll_s):
                raise TransientError(f"node {q(self.node_name)} pod cidr not assigned; waiting for the "
                                     "controller-manager (--allocate-node-cidrs=true) to assign it")
            try:
                node = self._fetch_own_node()
            except TransientError as exc:
                self.log.debug("own node: %s", exc)
        lease = self._lease_of(node, attrs)
        patch = annotation_patch(self.keys, attrs, node_annotations(node))
        if patch is not None:
            self._patch_annotations(patch)
        self._attrs = attrs
        self._own_dirty.clear()
        return lease

    def _podcidr_hint(self) -> None:
        now = time.monotonic()
        if now - self._hint_at >= PODCIDR_HINT_EVERY_S:
            self._hint_at = now
            self.log.warning("node %s pod cidr not assigned; waiting: the controller-manager assigns it with "
                             "--allocate-node-cidrs=true", q(self.node_name))

    def _lease_of(self, node: Mapping[str, Any], attrs: LeaseAttrs) -> Lease:
        try:
            v4, v6 = pod_cidrs(node)
        except NodeLeaseError as exc:
            raise LeaseError(str(exc)) from None
        cfg, name = self.config, q(self.node_name)
        want6 = cfg.enable_ipv6 and attrs.backend_type in _DUAL_STACK_TYPES  # §6.2: others get v4 only
        subnet: IPv4Net | None = None
        subnet6: IPv6Net | None = None
        if cfg.enable_ipv4:
            if v4 is None:
                raise LeaseError(f"node {name} has no IPv4 podCIDR but the net-conf enables IPv4 "
                                 "(set EnableIPv4:false for an IPv6-only cluster)")
            if cfg.network is None or not v4.subnet_of(cfg.network):
                raise LeaseError(f"subnet {q(str(cfg.network or ''))} specified in the flannel net config doesn't "
                                 f"contain {q(str(v4))} PodCIDR of the {name} node")
            subnet = v4
        if want6:
            if v6 is None:
                raise LeaseError(f"node {name} has no IPv6 podCIDR but the net-conf enables IPv6")
            if cfg.ipv6_network is None or not v6.subnet_of(cfg.ipv6_network):
                raise LeaseError(f"subnet {q(str(cfg.ipv6_network or ''))} specified in the flannel net config "
                                 f"doesn't contain {q(str(v6))} IPv6 PodCIDR of the {name} node")
            subnet6 = v6
        return Lease(subnet, subnet6, attrs, expiration=time.time() + LEASE_TTL_S)

    def _patch_annotations(self, patch: dict[str, Any]) -> None:
        node = self.client.patch_node_status(self.node_name, patch)
        self._note_own(node)

    # -- CompleteLease, made level-triggered
    def keep_lease(self, lease: Lease, on_change: Callable[[Lease], None], stop: threading.Event) -> None:
        """Set NetworkUnavailable=False (retried until it works), then keep our annotations as
        we wrote them. ``on_change`` is never called: a Node's podCIDR does not change."""
        if self._attrs is None:
            self._attrs = lease.attrs
        backoff = Backoff(1.0, 30.0)
        if self.set_node_network_unavailable:
            while not stop.is_set():
                try:
                    self.client.patch_node_status(self.node_name, condition_patch())
                except TransientError as exc:
                    self._faults.set("lease", f"cannot set NetworkUnavailable=False on node {q(self.node_name)}: "
                                              f"{exc}")
                    if not backoff.wait(stop):
                        return
                    continue
                self._faults.set("lease", "", "NetworkUnavailable=False set")
                break
        backoff.reset()
        last_check = time.monotonic()
        while not stop.is_set():
            if not self._own_dirty.wait(1.0):
                # the peer watch feeds the own node; without news for two re-list periods, look ourselves
                if time.monotonic() - last_check < 2 * self.relist_period_s:
                    continue
                try:
                    self._fetch_own_node()
                except TransientError as exc:
                    self._faults.set("lease", f"cannot read node {q(self.node_name)}: {exc}")
                    last_check = time.monotonic() - 2 * self.relist_period_s + 5.0  # again in 5 s
                    continue
            last_check = time.monotonic()
            self._own_dirty.clear()
            if not self._reapply(stop, backoff):
                return

    def _reapply(self, stop: threading.Event, backoff: Backoff) -> bool:
        """Patch our annotations back if they differ from what we publish; False when stopped."""
        while not stop.is_set():
            with self._own_lock:
                node = self._own_node
            if node is None or self._attrs is None:
                return True
            patch = annotation_patch(self.keys, self._attrs, node_annotations(node))
            if patch is None:
                self._faults.set("lease", "", "node annotations restored")
                backoff.reset()
                return True
            self.log.info("node %s: annotations %s differ from what flannel publishes; patching them back",
                          q(self.node_name), ", ".join(sorted(patch["metadata"]["annotations"])))
            try:
                self._patch_annotations(patch)
            except TransientError as exc:
                self._faults.set("lease", f"cannot patch the annotations of node {q(self.node_name)}: {exc}")
                if not backoff.wait(stop):
                    return False
                try:
                    self._fetch_own_node()
                except TransientError:
                    pass
        return False

    # -- the peers
    def watch_leases(self, peers: PeerTable, stop: threading.Event) -> None:
        waker = threading.Thread(target=self._abort_on_stop, args=(stop,), name="kube-watch-stop", daemon=True)
        waker.start()
        backoff = Backoff(0.5, 10.0)
        rv, listed_at = "", 0.0
        while not stop.is_set() and not self._closed.is_set():
            try:
                if not rv or time.monotonic() - listed_at >= self.relist_period_s:
                    # the first list and one after a 410 are fresh reads; the periodic ones come from
                    # the API server's watch cache (resourceVersion=0): N nodes re-listing N nodes
                    # every 5 minutes must not all read etcd
                    rv = self._relist(peers, cached=bool(rv))
                    listed_at = time.monotonic()
                    backoff.reset()
                remaining = self.relist_period_s - (time.monotonic() - listed_at)
                rv = self._watch(peers, rv, max(1, int(remaining + 0.999)), stop, backoff)
            except Gone as exc:
                self.log.info("node watch: resourceVersion %s is too old (%s): listing again", rv, exc.message)
                rv = ""
            except TransientError as exc:
                if stop.is_set() or self._closed.is_set():
                    break
                self._faults.set("watch", f"node list/watch: {exc}; keeping the {len(peers.snapshot()[1])} "
                                          "known peers (the dataplane stays)")
                if not backoff.wait(stop):
                    break

    def _abort_on_stop(self, stop: threading.Event) -> None:
        while not stop.wait(1.0):
            if self._closed.is_set():
                return
        self.client.abort_watches()

    def _relist(self, peers: PeerTable, cached: bool = False) -> str:
        items, rv = self.client.list_nodes(limit=LIST_PAGE, resource_version="0" if cached else "")
        leases: list[Lease] = []
        keys: dict[str, str] = {}
        for node in items:
            lease = self._peer_lease(node)
            if lease is not None:
                leases.append(lease)
                keys[node_name_of(node)] = lease.key
            if node_name_of(node) == self.node_name:
                self._note_own(node)
        added, removed = peers.replace_all(leases)
        self._node_keys = keys
        self._faults.set("watch", "", f"node list: {len(items)} nodes, {len(peers.snapshot()[1])} peers")
        if added or removed:
            self.log.info("node list at resourceVersion %s: %d leases (%d added or changed, %d removed)",
                          rv, len(leases), len(added), len(removed))
        return rv

    def _watch(self, peers: PeerTable, rv: str, timeout_s: int, stop: threading.Event, backoff: Backoff) -> str:
        """One watch stream; returns the resourceVersion to resume from."""
        for etype, obj in self.client.watch_nodes(rv, timeout_s=timeout_s):
            new_rv = str((obj.get("metadata") or {}).get("resourceVersion") or "")
            if etype != "BOOKMARK":
                self._handle_event(peers, etype, obj)
            rv = new_rv or rv
            backoff.reset()
            self._faults.set("watch", "", "node watch: the API server answers again")
            if stop.is_set():
                break
        return rv

    def _handle_event(self, peers: PeerTable, etype: str, node: dict[str, Any]) -> None:
        name = node_name_of(node)
        if name == self.node_name and etype != "DELETED":
            self._note_own(node)
        lease = self._peer_lease(node) if etype in ("ADDED", "MODIFIED") else None
        old_key = self._node_keys.get(name)
        if lease is None:
            if old_key is not None:
                del self._node_keys[name]
                if peers.remove(old_key) is not None:
                    self.log.info("node %s: lease %s removed (%s)", q(name), old_key, etype.lower())
            return
        if old_key is not None and old_key != lease.key:
            peers.remove(old_key)
        self._node_keys[name] = lease.key
        if peers.upsert(lease):
            self.log.info("node %s: lease %s %s", q(name), lease.key, "added" if old_key is None else "updated")

    def _peer_lease(self, node: dict[str, Any]) -> Lease | None:
        """The node's lease, or None (not flannel-managed, or it does not make a lease: logged)."""
        name = node_name_of(node)
        if node_annotations(node).get(self.keys.kube_subnet_manager) != "true":
            self._bad_nodes.pop(name, None)
            return None
        try:
            lease = node_to_lease(self.keys, node, self.config.enable_ipv4, self.config.enable_ipv6)
            _ = lease.key
        except (NodeLeaseError, LeaseFormatError) as exc:
            text = str(exc)
            if self._bad_nodes.get(name) != text:  # once per node and reason, not per heartbeat
                self._bad_nodes[name] = text
                self.log.info("Error turning node %s to lease: %s", q(name), text)
            return None
        self._bad_nodes.pop(name, None)
        return lease


def _older(node: Mapping[str, Any], than: Mapping[str, Any] | None) -> bool:
    """resourceVersions are opaque, but integers in every API server: compare them when they are."""
    if than is None:
        return False
    a = str((node.get("metadata") or {}).get("resourceVersion") or "")
    b = str((than.get("metadata") or {}).get("resourceVersion") or "")
    return a.isdigit() and b.isdigit() and int(a) < int(b)


def pod_cidrs_present(node: Mapping[str, Any]) -> bool:
    spec = node.get("spec") or {}
    return bool(spec.get("podCIDR") or spec.get("podCIDRs"))


def resolve_node_name(client: KubeClient, env: Mapping[str, str], wait_s: float = 30.0) -> str:
    """NODE_NAME, else the own pod's spec.nodeName (§6.1, the reference's messages; transient
    faults are retried for ``wait_s`` first: the API may still be coming up)."""
    name = env.get("NODE_NAME", "")
    if name:
        return name
    pod, ns = env.get("POD_NAME", ""), env.get("POD_NAMESPACE", "")
    if not pod or not ns:
        raise ConfigError("env variables POD_NAME and POD_NAMESPACE must be set")
    deadline = time.monotonic() + wait_s
    backoff = Backoff(0.5, 5.0)
    never = threading.Event()
    while True:
        try:
            spec = client.get_pod(ns, pod).get("spec") or {}
            break
        except TransientError as exc:
            permanent = isinstance(exc, ApiError) and exc.code in (401, 403, 404)
            if permanent or time.monotonic() >= deadline:
                raise ConfigError(f"error retrieving pod spec for '{ns}/{pod}': {exc}") from None
            backoff.wait(never)
    name = str(spec.get("nodeName") or "")
    if not name:
        raise ConfigError(f"node name not present in pod spec '{ns}/{pod}'")
    return name
