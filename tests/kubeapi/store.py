"""The object store: etcd's part of the API server.

One global revision counter (``resourceVersion``, a string in JSON) bumped by every write; an event
log (ADDED / MODIFIED / DELETED with the object after the change and before it) that watches read and
that lets a list be served at an older revision (continue tokens); ``compact()`` (or the history
limit) forgets it. A write that changes nothing bumps nothing and emits no event, as the apiserver's
GuaranteedUpdate does. Everything is guarded by one Condition that watchers wait on.
"""
from __future__ import annotations

import bisect
import copy
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

Key = tuple[str, str, str]  # (resource, namespace, name); namespace "" for cluster-scoped
Obj = dict[str, Any]


class Expired(Exception):
    """The revision asked for is older than the history kept (410 Gone, reason Expired)."""

    def __init__(self, rv: int, floor: int) -> None:
        super().__init__(f"too old resource version: {rv} ({floor})")
        self.rv, self.floor = rv, floor


class NotFound(KeyError):
    pass


class AlreadyExists(KeyError):
    pass


class Conflict(Exception):
    pass


@dataclass
class Event:
    rv: int
    type: str  # ADDED | MODIFIED | DELETED
    key: Key
    obj: Obj  # the object after the change (for DELETED: its last state, with the deletion's rv)
    prev: Obj | None


def now_rfc3339() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())


def rv_of(obj: Obj) -> int:
    return int(obj["metadata"]["resourceVersion"])


class Store:
    def __init__(self, history_limit: int = 100_000, first_rv: int = 1000) -> None:
        self.cond = threading.Condition(threading.RLock())
        self.rv = first_rv
        self.floor = first_rv  # a watch or snapshot may start at any rv >= floor
        self.objects: dict[Key, Obj] = {}
        self.events: list[Event] = []
        self._event_rvs: list[int] = []
        self.history_limit = history_limit

    # -- writes ------------------------------------------------------------------------------

    def _commit(self, etype: str, key: Key, obj: Obj, prev: Obj | None) -> Obj:
        self.rv += 1
        obj["metadata"]["resourceVersion"] = str(self.rv)
        if etype == "DELETED":
            self.objects.pop(key, None)
        else:
            self.objects[key] = obj
        self.events.append(Event(self.rv, etype, key, obj, prev))
        self._event_rvs.append(self.rv)
        if len(self.events) > self.history_limit:
            drop = len(self.events) - self.history_limit
            self.floor = self.events[drop - 1].rv
            del self.events[:drop], self._event_rvs[:drop]
        self.cond.notify_all()
        return copy.deepcopy(obj)

    def create(self, key: Key, obj: Obj) -> Obj:
        with self.cond:
            if key in self.objects:
                raise AlreadyExists(key)
            obj = copy.deepcopy(obj)
            meta = obj.setdefault("metadata", {})
            meta["name"] = key[2]
            if key[1]:
                meta["namespace"] = key[1]
            meta.setdefault("uid", str(uuid.uuid4()))
            meta.setdefault("creationTimestamp", now_rfc3339())
            return self._commit("ADDED", key, obj, None)

    def replace(self, key: Key, new: Obj, expect_rv: int | None = None) -> tuple[Obj, bool]:
        """Store ``new`` as the object at ``key``; returns (stored copy, changed). No change: no rv bump."""
        with self.cond:
            old = self.objects.get(key)
            if old is None:
                raise NotFound(key)
            if expect_rv is not None and expect_rv != rv_of(old):
                raise Conflict(key)
            new = copy.deepcopy(new)
            new.setdefault("metadata", {})["resourceVersion"] = old["metadata"]["resourceVersion"]
            if new == old:
                return copy.deepcopy(old), False
            return self._commit("MODIFIED", key, new, copy.deepcopy(old)), True

    def update(self, key: Key, fn: Callable[[Obj], Any]) -> tuple[Obj, bool]:
        with self.cond:
            old = self.objects.get(key)
            if old is None:
                raise NotFound(key)
            new = copy.deepcopy(old)
            fn(new)
            return self.replace(key, new)

    def delete(self, key: Key) -> Obj:
        with self.cond:
            old = self.objects.get(key)
            if old is None:
                raise NotFound(key)
            return self._commit("DELETED", key, copy.deepcopy(old), copy.deepcopy(old))

    def compact(self) -> None:
        """Forget the history: any rv older than now is Expired."""
        with self.cond:
            self.floor = self.rv
            self.events.clear()
            self._event_rvs.clear()
            self.cond.notify_all()

    # -- reads -------------------------------------------------------------------------------

    def get(self, key: Key) -> Obj | None:
        with self.cond:
            obj = self.objects.get(key)
            return copy.deepcopy(obj) if obj is not None else None

    def snapshot(self, resource: str, at: int | None = None) -> tuple[list[tuple[Key, Obj]], int]:
        """All objects of ``resource`` as of revision ``at`` (None: now), sorted by key; raises Expired."""
        with self.cond:
            at = self.rv if at is None else at
            if at < self.floor:
                raise Expired(at, self.floor)
            state = {k: v for k, v in self.objects.items() if k[0] == resource}
            for ev in reversed(self.events):  # undo what happened after `at`
                if ev.rv <= at:
                    break
                if ev.key[0] != resource:
                    continue
                if ev.type == "ADDED":
                    state.pop(ev.key, None)
                elif ev.prev is not None:
                    state[ev.key] = ev.prev
            return [(k, copy.deepcopy(state[k])) for k in sorted(state)], at

    def events_after(self, rv: int) -> list[Event]:
        """Events with revision > rv (caller holds ``cond``); raises Expired when some were forgotten."""
        if rv < self.floor:
            raise Expired(rv, self.floor)
        return self.events[bisect.bisect_right(self._event_rvs, rv):]

    def wait_for_rv(self, rv: int, timeout: float) -> bool:
        """Block until the store has reached ``rv`` (a "too large resource version" is waited on)."""
        deadline = time.monotonic() + timeout
        with self.cond:
            while self.rv < rv:
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self.cond.wait(left)
            return True


# -- objects that look like real ones ---------------------------------------------------------

KUBELET_ANNOTATIONS = {
    "node.alpha.kubernetes.io/ttl": "0",
    "volumes.kubernetes.io/controller-managed-attach-detach": "true",
}


def new_node(name: str, pod_cidr: str | None = None, pod_cidrs: list[str] | None = None,
             annotations: dict[str, str] | None = None, labels: dict[str, str] | None = None,
             addresses: list[Any] | None = None) -> Obj:
    """A Node as kubelet registers it and the node IPAM controller fills it.

    ``annotations=None`` gives kubelet's usual two; ``{}`` gives none at all (the key is absent, as with
    omitempty: flannel's nil-map case, #818). ``labels=None`` gives kubelet's hostname/os/arch labels.
    ``addresses``: IP strings (InternalIP) or ready NodeAddress dicts; a Hostname address is added.
    """
    meta: Obj = {"name": name}
    meta["labels"] = dict(labels) if labels is not None else {
        "kubernetes.io/hostname": name, "kubernetes.io/os": "linux", "kubernetes.io/arch": "amd64",
        "beta.kubernetes.io/os": "linux", "beta.kubernetes.io/arch": "amd64",
    }
    meta["annotations"] = dict(annotations) if annotations is not None else dict(KUBELET_ANNOTATIONS)
    for k in ("labels", "annotations"):
        if not meta[k]:
            del meta[k]
    spec: Obj = {}
    if pod_cidrs and not pod_cidr:
        pod_cidr = pod_cidrs[0]
    if pod_cidr:
        spec["podCIDR"] = pod_cidr
        spec["podCIDRs"] = list(pod_cidrs) if pod_cidrs else [pod_cidr]
    addrs = [a if isinstance(a, dict) else {"type": "InternalIP", "address": a} for a in addresses or []]
    if not any(a.get("type") == "Hostname" for a in addrs):
        addrs.append({"type": "Hostname", "address": name})
    stamp = now_rfc3339()
    status: Obj = {
        "addresses": addrs,
        "conditions": [
            {"type": t, "status": "False", "lastHeartbeatTime": stamp, "lastTransitionTime": stamp,
             "reason": f"KubeletHasSufficient{t.removesuffix('Pressure')}" if t != "PIDPressure"
             else "KubeletHasSufficientPID", "message": f"kubelet has no {t}"}
            for t in ("MemoryPressure", "DiskPressure", "PIDPressure")
        ] + [{"type": "Ready", "status": "True", "lastHeartbeatTime": stamp, "lastTransitionTime": stamp,
              "reason": "KubeletReady", "message": "kubelet is posting ready status"}],
        "daemonEndpoints": {"kubeletEndpoint": {"Port": 10250}},
        "nodeInfo": {"architecture": "amd64", "operatingSystem": "linux", "kubeletVersion": "v1.28.0",
                     "kubeProxyVersion": "v1.28.0", "containerRuntimeVersion": "containerd://1.6.20",
                     "kernelVersion": "", "osImage": "Debian GNU/Linux 12 (bookworm)", "machineID": "",
                     "systemUUID": "", "bootID": ""},
    }
    return {"apiVersion": "v1", "kind": "Node", "metadata": meta, "spec": spec, "status": status}


def new_pod(namespace: str, name: str, node_name: str) -> Obj:
    return {
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": name, "namespace": namespace, "labels": {"app": "flannel"}},
        "spec": {"nodeName": node_name, "serviceAccountName": "flannel",
                 "containers": [{"name": "kube-flannel", "image": "flannel:test"}]},
        "status": {"phase": "Running"},
    }


# -- selectors --------------------------------------------------------------------------------


class SelectorError(ValueError):
    pass


def _lookup(obj: Obj, dotted: str) -> str | None:
    node: Any = obj
    for part in dotted.split("."):
        if not isinstance(node, dict) or part not in node:
            return None
        node = node[part]
    return None if node is None else str(node).lower() if isinstance(node, bool) else str(node)


def parse_label_selector(text: str) -> Callable[[Obj], bool]:
    """Equality (=, ==, !=), set (in, notin) and existence (k, !k) requirements, comma-separated."""
    reqs: list[Callable[[dict[str, str]], bool]] = []
    for part in _split_requirements(text):
        reqs.append(_label_requirement(part.strip()))
    return lambda obj: all(r(obj.get("metadata", {}).get("labels") or {}) for r in reqs)


def _split_requirements(text: str) -> list[str]:
    parts, depth, cur = [], 0, ""
    for ch in text:
        depth += ch == "("
        depth -= ch == ")"
        if ch == "," and depth == 0:
            parts.append(cur)
            cur = ""
        else:
            cur += ch
    if cur.strip():
        parts.append(cur)
    return [p for p in parts if p.strip()]


def _label_requirement(part: str) -> Callable[[dict[str, str]], bool]:
    for op in (" notin ", " in "):
        if op in part:
            key, _, rest = part.partition(op)
            rest = rest.strip()
            if not (rest.startswith("(") and rest.endswith(")")):
                raise SelectorError(f"unable to parse requirement: {part!r}")
            values = {v.strip() for v in rest[1:-1].split(",")}
            k = key.strip()
            if op == " in ":
                return lambda labels: labels.get(k) in values
            return lambda labels: labels.get(k) not in values
    for op in ("!=", "==", "="):
        if op in part:
            key, _, value = part.partition(op)
            k, v = key.strip(), value.strip()
            if op == "!=":
                return lambda labels: labels.get(k) != v
            return lambda labels: labels.get(k) == v
    if part.startswith("!"):
        k = part[1:].strip()
        return lambda labels: k not in labels
    if not part or " " in part:
        raise SelectorError(f"unable to parse requirement: {part!r}")
    return lambda labels: part in labels


FIELD_LABELS = {
    "nodes": {"metadata.name", "spec.unschedulable"},
    "pods": {"metadata.name", "metadata.namespace", "spec.nodeName", "status.phase"},
}


def _field_requirement(field: str, want: str, negate: bool, default: str) -> Callable[[Obj], bool]:
    return lambda obj: ((_lookup(obj, field) or default) == want) != negate


def parse_field_selector(text: str, resource: str) -> Callable[[Obj], bool]:
    reqs: list[Callable[[Obj], bool]] = []
    for part in [p.strip() for p in text.split(",") if p.strip()]:
        op = "!=" if "!=" in part else "==" if "==" in part else "="
        field, _, value = part.partition(op)
        field = field.strip()
        if field not in FIELD_LABELS.get(resource, set()):
            raise SelectorError(f'field label not supported: {field}')
        want, neg = value.strip(), op == "!="
        default = "false" if field == "spec.unschedulable" else ""
        reqs.append(_field_requirement(field, want, neg, default))
    return lambda obj: all(r(obj) for r in reqs)
