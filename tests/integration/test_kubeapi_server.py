"""The tests' Kubernetes API server itself, over real HTTPS with the CA and bearer tokens it makes.

Each test talks HTTP/1.1 over TLS (http.client with the server's CA, hostname checked against the
certificate's SAN) and asserts on what a client sees on the wire: Status objects, resourceVersions,
watch event lines, chunked stream ends. The last tests run the server inside a lab namespace and
reach it from another lab host (curl and python inside ``ip netns exec``).
"""
from __future__ import annotations

import http.client
import json
import os
import ssl
import subprocess
import sys
import time
from collections.abc import Iterator
from typing import Any

import pytest
from kubeapi import FLANNEL_USER, SEED_RULES, KubeAPIServer

SMP = "application/strategic-merge-patch+json"
MERGE = "application/merge-patch+json"
JSONPATCH = "application/json-patch+json"
FORBIDDEN_PATCH = ('nodes "n1" is forbidden: User "system:serviceaccount:kube-flannel:flannel" cannot patch '
                   'resource "nodes" in API group "" at the cluster scope')


class Client:
    def __init__(self, srv: KubeAPIServer, token: str | None = "flannel-token", timeout: float = 20) -> None:
        self.srv, self.token, self.timeout = srv, token, timeout
        self.ctx = ssl.create_default_context(cafile=srv.ca_file)

    def connect(self) -> http.client.HTTPSConnection:
        return http.client.HTTPSConnection(self.srv.host, self.srv.port, context=self.ctx, timeout=self.timeout)

    def headers(self, ctype: str | None = None) -> dict[str, str]:
        h = {"Accept": "application/json"}
        if self.token is not None:
            h["Authorization"] = f"Bearer {self.token}"
        if ctype:
            h["Content-Type"] = ctype
        return h

    def call(self, method: str, path: str, body: Any = None, ctype: str | None = None) -> tuple[int, Any]:
        conn = self.connect()
        try:
            data = None if body is None else body if isinstance(body, bytes) else json.dumps(body).encode()
            conn.request(method, path, body=data, headers=self.headers(ctype))
            resp = conn.getresponse()
            raw = resp.read()
            assert resp.getheader("Content-Type") == "application/json", raw
            return resp.status, json.loads(raw)
        finally:
            conn.close()

    def get(self, path: str) -> Any:
        code, obj = self.call("GET", path)
        assert code == 200, obj
        return obj

    def watch(self, path: str) -> Iterator[dict[str, Any]]:
        """Yield the watch's events; ends when the server ends the stream (raises if it is cut off)."""
        conn = self.connect()
        conn.request("GET", path, headers=self.headers())
        resp = conn.getresponse()
        assert resp.status == 200, resp.read()
        assert resp.getheader("Transfer-Encoding") == "chunked"
        try:
            while True:
                line = resp.readline()
                if not line:
                    return
                yield json.loads(line)
        finally:
            conn.close()


@pytest.fixture
def srv(tmp_path) -> Iterator[KubeAPIServer]:
    server = KubeAPIServer(workdir=str(tmp_path / "api"), bookmark_interval=0.3).start()
    yield server
    server.stop()


@pytest.fixture
def flannel(srv: KubeAPIServer) -> Client:
    return Client(srv)


@pytest.fixture
def admin(srv: KubeAPIServer) -> Client:
    return Client(srv, "admin-token")


def status_of(obj: dict[str, Any], code: int, reason: str) -> dict[str, Any]:
    assert obj["kind"] == "Status" and obj["apiVersion"] == "v1" and obj["status"] == "Failure", obj
    assert obj["code"] == code and obj["reason"] == reason, obj
    assert isinstance(obj["metadata"], dict) and isinstance(obj["message"], str)
    return obj


# -- reads ------------------------------------------------------------------------------------


def test_list_and_get_look_like_the_real_api(srv: KubeAPIServer, flannel: Client) -> None:
    for i in (3, 1, 2):
        srv.create_node(f"n{i}", pod_cidr=f"10.244.{i}.0/24", addresses=[f"192.168.77.{i}"])
    listed = flannel.get("/api/v1/nodes")
    assert listed["kind"] == "NodeList" and listed["apiVersion"] == "v1"
    assert listed["metadata"] == {"resourceVersion": str(srv.resource_version)}
    assert [n["metadata"]["name"] for n in listed["items"]] == ["n1", "n2", "n3"]
    assert all("kind" not in n and "apiVersion" not in n for n in listed["items"])
    node = flannel.get("/api/v1/nodes/n2")
    assert node["kind"] == "Node" and node["apiVersion"] == "v1"
    meta = node["metadata"]
    assert meta["name"] == "n2" and meta["uid"] and meta["creationTimestamp"].endswith("Z")
    assert int(meta["resourceVersion"]) == srv.resource_version  # n2 was created last
    assert int(flannel.get("/api/v1/nodes/n3")["metadata"]["resourceVersion"]) == srv.resource_version - 2
    assert meta["labels"]["kubernetes.io/hostname"] == "n2"
    assert node["spec"] == {"podCIDR": "10.244.2.0/24", "podCIDRs": ["10.244.2.0/24"]}
    assert {"type": "InternalIP", "address": "192.168.77.2"} in node["status"]["addresses"]
    assert {c["type"] for c in node["status"]["conditions"]} >= {"Ready", "MemoryPressure"}
    code, missing = flannel.call("GET", "/api/v1/nodes/nope")
    assert code == 404
    assert status_of(missing, 404, "NotFound")["message"] == 'nodes "nope" not found'
    assert missing["details"] == {"name": "nope", "kind": "nodes"}
    code, unknown = flannel.call("GET", "/api/v1/services")
    assert code == 404 and status_of(unknown, 404, "NotFound")


def test_pods_get_gives_the_node_name(srv: KubeAPIServer, flannel: Client) -> None:
    srv.create_pod("kube-flannel", "kube-flannel-ds-abcde", "n7")
    pod = flannel.get("/api/v1/namespaces/kube-flannel/pods/kube-flannel-ds-abcde")
    assert pod["kind"] == "Pod" and pod["spec"]["nodeName"] == "n7"
    assert pod["metadata"]["namespace"] == "kube-flannel"
    code, obj = flannel.call("GET", "/api/v1/namespaces/kube-flannel/pods/other")
    assert code == 404 and obj["message"] == 'pods "other" not found'


def test_no_or_unknown_token_is_401(srv: KubeAPIServer) -> None:
    srv.create_node("n1")
    for token in (None, "wrong"):
        code, obj = Client(srv, token).call("GET", "/api/v1/nodes")
        assert code == 401
        assert status_of(obj, 401, "Unauthorized")["message"] == "Unauthorized"
    assert srv.requests[-1] == ("GET", "/api/v1/nodes", None, None)


def test_rbac_is_the_manifests_cluster_role(srv: KubeAPIServer, flannel: Client, admin: Client) -> None:
    srv.create_node("n1")
    code, obj = flannel.call("PATCH", "/api/v1/nodes/n1", {"metadata": {"labels": {"x": "y"}}}, SMP)
    assert code == 403
    assert status_of(obj, 403, "Forbidden")["message"] == FORBIDDEN_PATCH
    assert obj["details"] == {"name": "n1", "kind": "nodes"}
    code, obj = flannel.call("GET", "/api/v1/namespaces/kube-flannel/pods")
    assert code == 403 and obj["message"] == (
        'pods is forbidden: User "system:serviceaccount:kube-flannel:flannel" cannot list resource "pods" in '
        'API group "" in the namespace "kube-flannel"')
    code, obj = flannel.call("DELETE", "/api/v1/nodes/n1")
    assert code == 403 and 'cannot delete resource "nodes"' in obj["message"]
    assert flannel.call("PATCH", "/api/v1/nodes/n1/status", {"metadata": {"labels": {"x": "y"}}}, SMP)[0] == 200
    # the seed's ClusterRole has no `nodes get`; list still works
    srv.rbac[FLANNEL_USER] = SEED_RULES
    code, obj = flannel.call("GET", "/api/v1/nodes/n1")
    assert code == 403 and obj["message"] == (
        'nodes "n1" is forbidden: User "system:serviceaccount:kube-flannel:flannel" cannot get resource "nodes" in '
        'API group "" at the cluster scope')
    assert flannel.get("/api/v1/nodes")["items"][0]["metadata"]["name"] == "n1"
    srv.rbac[FLANNEL_USER] = frozenset()
    code, obj = flannel.call("PATCH", "/api/v1/nodes/n1/status", {"metadata": {}}, SMP)
    assert code == 403 and 'cannot patch resource "nodes/status"' in obj["message"]
    code, obj = admin.call("DELETE", "/api/v1/nodes/n1")
    assert code == 200 and srv.get_node("n1") is None


# -- patches ----------------------------------------------------------------------------------


def test_status_patch_keeps_annotations_and_old_spec(srv: KubeAPIServer, flannel: Client) -> None:
    """reference §6.2: flannel writes its annotations through nodes/<n>/status; they persist."""
    srv.create_node("n1", pod_cidr="10.244.1.0/24")
    before = srv.resource_version
    ann = {"flannel.alpha.coreos.com/backend-type": "vxlan", "flannel.alpha.coreos.com/public-ip": "192.168.77.1",
           "flannel.alpha.coreos.com/kube-subnet-manager": "true",
           "flannel.alpha.coreos.com/backend-data": '{"VNI":1,"VtepMAC":"12:c6:65:89:b4:e3"}'}
    code, out = flannel.call("PATCH", "/api/v1/nodes/n1/status",
                             {"metadata": {"annotations": ann}, "spec": {"podCIDR": "10.9.9.0/24"}}, SMP)
    assert code == 200, out
    assert out["metadata"]["resourceVersion"] == str(before + 1) == str(srv.resource_version)
    stored = srv.get_node("n1")
    assert stored is not None and stored == out
    assert ann.items() <= stored["metadata"]["annotations"].items()
    assert "node.alpha.kubernetes.io/ttl" in stored["metadata"]["annotations"]
    assert stored["spec"]["podCIDR"] == "10.244.1.0/24"  # the status strategy resets spec
    # the same patch again changes nothing: no new resourceVersion
    code, again = flannel.call("PATCH", "/api/v1/nodes/n1/status", {"metadata": {"annotations": ann}}, SMP)
    assert code == 200 and again["metadata"]["resourceVersion"] == str(before + 1) == str(srv.resource_version)


def test_network_unavailable_condition_merges_by_type(srv: KubeAPIServer, flannel: Client) -> None:
    """reference §6.5: the strategic patch of the NetworkUnavailable condition."""
    srv.create_node("n1")
    cond = {"type": "NetworkUnavailable", "status": "False", "lastHeartbeatTime": "2024-05-01T10:00:00Z",
            "lastTransitionTime": "2024-05-01T10:00:00Z", "reason": "FlannelIsUp",
            "message": "Flannel is running on this node"}
    code, out = flannel.call("PATCH", "/api/v1/nodes/n1/status", {"status": {"conditions": [cond]}}, SMP)
    assert code == 200, out
    types = [c["type"] for c in out["status"]["conditions"]]
    assert types == ["NetworkUnavailable", "MemoryPressure", "DiskPressure", "PIDPressure", "Ready"]
    assert out["status"]["conditions"][0] == cond
    assert out["status"]["conditions"][-1]["reason"] == "KubeletReady"


def test_main_resource_patch_keeps_old_status(srv: KubeAPIServer, admin: Client) -> None:
    srv.create_node("n1")
    code, out = admin.call("PATCH", "/api/v1/nodes/n1", {"metadata": {"labels": {"role": "x"}},
                                                         "status": {"conditions": None}}, MERGE)
    assert code == 200, out
    assert out["metadata"]["labels"]["role"] == "x"
    assert len(out["status"]["conditions"]) == 4


def test_patch_types_and_their_errors(srv: KubeAPIServer, admin: Client) -> None:
    srv.create_node("n1", pod_cidr="10.244.1.0/24")
    path = "/api/v1/nodes/n1"
    code, obj = admin.call("PATCH", path, {"metadata": {"labels": {"a": "b"}}}, "application/json")
    assert code == 415 and status_of(obj, 415, "UnsupportedMediaType")["message"].startswith(
        "the body of the request was in an unknown format - accepted media types include: ")
    ops = [{"op": "test", "path": "/metadata/name", "value": "n1"},
           {"op": "add", "path": "/metadata/labels/x", "value": "1"},
           {"op": "move", "from": "/metadata/labels/x", "path": "/metadata/labels/y"}]
    code, obj = admin.call("PATCH", path, ops, JSONPATCH)
    assert code == 200 and obj["metadata"]["labels"]["y"] == "1" and "x" not in obj["metadata"]["labels"]
    rv = srv.resource_version
    code, obj = admin.call("PATCH", path, [{"op": "test", "path": "/metadata/name", "value": "n2"}], JSONPATCH)
    assert code == 422
    assert status_of(obj, 422, "Invalid")["message"] == "the server rejected our request due to an error in our request"
    code, obj = admin.call("PATCH", path, b"{not json", JSONPATCH)
    assert code == 400 and status_of(obj, 400, "BadRequest")
    code, obj = admin.call("PATCH", path, {"metadata": {"resourceVersion": "5", "labels": {"z": "1"}}}, MERGE)
    assert code == 409 and status_of(obj, 409, "Conflict")["message"].startswith(
        'Operation cannot be fulfilled on nodes "n1": the object has been modified')
    code, obj = admin.call("PATCH", path, {"metadata": {"annotations": {"n": 1}}}, MERGE)
    assert code == 400 and "cannot unmarshal number" in obj["message"]
    code, obj = admin.call("PATCH", path, {"spec": {"podCIDR": "10.244.7.0/24", "podCIDRs": ["10.244.7.0/24"]}},
                           MERGE)
    assert code == 422 and status_of(obj, 422, "Invalid")["message"] == (
        'Node "n1" is invalid: spec.podCIDRs: Forbidden: node updates may not change podCIDR except from "" to valid')
    assert srv.resource_version == rv  # nothing failed half-way
    code, obj = admin.call("PATCH", "/api/v1/nodes/ghost", {"metadata": {}}, SMP)
    assert code == 404 and obj["message"] == 'nodes "ghost" not found'


def test_pod_cidr_may_be_set_once_from_empty(srv: KubeAPIServer, admin: Client) -> None:
    srv.create_node("n1")
    code, obj = admin.call("PATCH", "/api/v1/nodes/n1", {"spec": {"podCIDR": "10.244.3.0/24",
                                                                  "podCIDRs": ["10.244.3.0/24", "fd00:3::/64"]}}, SMP)
    assert code == 200, obj
    assert obj["spec"]["podCIDRs"] == ["10.244.3.0/24", "fd00:3::/64"]


# -- watch ------------------------------------------------------------------------------------


def test_watch_from_a_resource_version_sees_every_change_in_order(srv: KubeAPIServer, flannel: Client) -> None:
    srv.create_node("n1")
    rv = flannel.get("/api/v1/nodes")["metadata"]["resourceVersion"]
    srv.create_node("n2")
    srv.update_node("n1", lambda n: n["spec"].update(podCIDR="10.244.1.0/24", podCIDRs=["10.244.1.0/24"]))
    srv.update_node("n1", lambda n: None)  # no change: no event
    srv.delete_node("n2")
    events = list(flannel.watch(f"/api/v1/nodes?watch=1&resourceVersion={rv}&timeoutSeconds=1"))
    assert [(e["type"], e["object"]["metadata"]["name"]) for e in events] == [
        ("ADDED", "n2"), ("MODIFIED", "n1"), ("DELETED", "n2")]
    rvs = [int(e["object"]["metadata"]["resourceVersion"]) for e in events]
    assert rvs == sorted(rvs) and rvs[-1] == srv.resource_version and rvs[0] > int(rv)
    assert all(e["object"]["kind"] == "Node" for e in events)
    assert events[1]["object"]["spec"]["podCIDR"] == "10.244.1.0/24"


def test_watch_without_resource_version_starts_with_synthetic_added(srv: KubeAPIServer, flannel: Client) -> None:
    srv.create_node("n1")
    srv.create_node("n2")
    stream = flannel.watch("/api/v1/nodes?watch=true&timeoutSeconds=5")
    first = [next(stream), next(stream)]
    assert [(e["type"], e["object"]["metadata"]["name"]) for e in first] == [("ADDED", "n1"), ("ADDED", "n2")]
    srv.update_node("n2", lambda n: n["metadata"]["labels"].update(x="y"))
    live = next(stream)
    assert live["type"] == "MODIFIED" and live["object"]["metadata"]["labels"]["x"] == "y"
    stream.close()


def test_watch_from_a_compacted_resource_version_gets_410_in_the_stream(srv: KubeAPIServer, flannel: Client) -> None:
    srv.create_node("n1")
    old = srv.resource_version
    srv.update_node("n1", lambda n: n["metadata"]["labels"].update(x="1"))
    srv.compact()
    events = list(flannel.watch(f"/api/v1/nodes?watch=1&resourceVersion={old}"))
    assert len(events) == 1 and events[0]["type"] == "ERROR"
    err = status_of(events[0]["object"], 410, "Expired")
    assert err["message"] == f"too old resource version: {old} ({srv.resource_version})"
    # list at an exact old version: 410 too
    code, obj = flannel.call("GET", f"/api/v1/nodes?resourceVersion={old}&resourceVersionMatch=Exact")
    assert code == 410 and status_of(obj, 410, "Expired")
    # from the current one it works
    rv = srv.resource_version
    srv.create_node("n2")
    got = list(flannel.watch(f"/api/v1/nodes?watch=1&resourceVersion={rv}&timeoutSeconds=1"))
    assert [e["type"] for e in got] == ["ADDED"]


def test_bookmarks_only_when_allowed(srv: KubeAPIServer, flannel: Client) -> None:
    srv.create_node("n1")
    rv = srv.resource_version
    events = list(flannel.watch(f"/api/v1/nodes?watch=1&resourceVersion={rv}&allowWatchBookmarks=true"
                                "&timeoutSeconds=2"))
    marks = [e for e in events if e["type"] == "BOOKMARK"]
    assert marks and len(marks) == len(events)
    assert marks[-1]["object"]["kind"] == "Node"
    assert marks[-1]["object"]["metadata"]["resourceVersion"] == str(rv)
    assert list(flannel.watch(f"/api/v1/nodes?watch=1&resourceVersion={rv}&timeoutSeconds=1")) == []


def test_bookmark_resource_version_follows_changes(srv: KubeAPIServer, flannel: Client) -> None:
    srv.create_node("n1")
    rv = srv.resource_version
    stream = flannel.watch(f"/api/v1/nodes?watch=1&resourceVersion={rv}&allowWatchBookmarks=1&timeoutSeconds=10")
    assert next(stream)["type"] == "BOOKMARK"
    srv.create_pod("kube-flannel", "p", "n1")  # another resource bumps the global counter
    while True:
        ev = next(stream)
        if ev["type"] == "BOOKMARK" and int(ev["object"]["metadata"]["resourceVersion"]) == srv.resource_version:
            break
        assert ev["type"] == "BOOKMARK"
    stream.close()


def test_watch_initial_events_end_bookmark(srv: KubeAPIServer, flannel: Client) -> None:
    srv.create_node("n1")
    stream = flannel.watch("/api/v1/nodes?watch=1&sendInitialEvents=true&resourceVersionMatch=NotOlderThan"
                           "&allowWatchBookmarks=true&timeoutSeconds=3")
    added, mark = next(stream), next(stream)
    assert added["type"] == "ADDED" and mark["type"] == "BOOKMARK"
    assert mark["object"]["metadata"]["annotations"] == {"k8s.io/initial-events-end": "true"}
    stream.close()


def test_watch_with_label_selector_turns_transitions_into_added_and_deleted(srv: KubeAPIServer,
                                                                          flannel: Client) -> None:
    srv.create_node("n1", labels={"pool": "a"})
    rv = srv.resource_version
    srv.update_node("n1", lambda n: n["metadata"]["labels"].update(pool="b"))
    srv.update_node("n1", lambda n: n["metadata"]["labels"].update(pool="a"))
    events = list(flannel.watch(f"/api/v1/nodes?watch=1&resourceVersion={rv}&labelSelector=pool%3Da"
                                "&timeoutSeconds=1"))
    assert [e["type"] for e in events] == ["DELETED", "ADDED"]


def test_future_resource_version_is_a_504_after_waiting(tmp_path) -> None:
    with KubeAPIServer(workdir=str(tmp_path), too_large_wait=0.5) as server:
        code, obj = Client(server).call("GET", f"/api/v1/nodes?watch=1&resourceVersion={server.resource_version + 5}")
        assert code == 504 and status_of(obj, 504, "Timeout")["message"].startswith("Too large resource version")
        assert obj["details"]["causes"][0]["reason"] == "ResourceVersionTooLarge"


def test_concurrent_watchers_each_see_every_patch_in_order(srv: KubeAPIServer, flannel: Client) -> None:
    import threading

    srv.create_node("n1")
    rv = srv.resource_version
    seen: list[list[int]] = [[] for _ in range(4)]

    def watch(out: list[int]) -> None:
        for ev in Client(srv).watch(f"/api/v1/nodes?watch=1&resourceVersion={rv}&allowWatchBookmarks=true"):
            if ev["type"] == "MODIFIED":
                out.append(int(ev["object"]["metadata"]["annotations"]["i"]))
            if len(out) == 30:
                return

    threads = [threading.Thread(target=watch, args=(out,), daemon=True) for out in seen]
    for t in threads:
        t.start()
    for i in range(30):
        code, obj = flannel.call("PATCH", "/api/v1/nodes/n1/status", {"metadata": {"annotations": {"i": str(i)}}},
                                 SMP)
        assert code == 200, obj
    for t in threads:
        t.join(30)
    assert seen == [list(range(30))] * 4
    assert srv.resource_version == rv + 30
    assert srv.errors == []
    code, obj = flannel.call("GET", "/api/v1/nodes?limit=x")
    assert code == 400 and status_of(obj, 400, "BadRequest")


# -- lists ------------------------------------------------------------------------------------


def test_pagination_is_a_consistent_snapshot(srv: KubeAPIServer, flannel: Client) -> None:
    for i in range(5):
        srv.create_node(f"n{i}")
    page = flannel.get("/api/v1/nodes?limit=2")
    snapshot_rv = page["metadata"]["resourceVersion"]
    names = [n["metadata"]["name"] for n in page["items"]]
    assert names == ["n0", "n1"] and page["metadata"]["remainingItemCount"] == 3
    srv.create_node("n11")  # after the first page: not part of this list
    srv.delete_node("n3")
    while page["metadata"].get("continue"):
        page = flannel.get(f"/api/v1/nodes?limit=2&continue={page['metadata']['continue']}")
        assert page["metadata"]["resourceVersion"] == snapshot_rv
        names += [n["metadata"]["name"] for n in page["items"]]
    assert names == ["n0", "n1", "n2", "n3", "n4"]
    # rv=0 is served from the "watch cache": limit ignored
    assert len(flannel.get("/api/v1/nodes?limit=2&resourceVersion=0")["items"]) == 5
    # a continue token from before a compaction: 410 with a fresh continue token in the Status
    first = flannel.get("/api/v1/nodes?limit=2")
    srv.create_node("n9")
    srv.compact()
    code, obj = flannel.call("GET", f"/api/v1/nodes?limit=2&continue={first['metadata']['continue']}")
    assert code == 410 and status_of(obj, 410, "Expired")["message"].startswith(
        "The provided continue parameter is too old to display a consistent list result.")
    assert obj["metadata"]["continue"]
    rest = flannel.get(f"/api/v1/nodes?limit=10&continue={obj['metadata']['continue']}")
    assert [n["metadata"]["name"] for n in rest["items"]] == ["n11", "n2", "n4", "n9"]  # keys sort as strings
    code, obj = flannel.call("GET", f"/api/v1/nodes?limit=2&continue={first['metadata']['continue']}"
                             "&resourceVersion=5")
    assert code == 400
    code, obj = flannel.call("GET", "/api/v1/nodes?limit=2&continue=garbage")
    assert code == 400 and status_of(obj, 400, "BadRequest")


def test_selectors(srv: KubeAPIServer, flannel: Client) -> None:
    srv.create_node("n1", labels={"zone": "a"})
    srv.create_node("n2", labels={"zone": "b"})
    srv.create_node("n3", labels={})

    def names(query: str) -> list[str]:
        return [n["metadata"]["name"] for n in flannel.get(f"/api/v1/nodes?{query}")["items"]]

    assert names("fieldSelector=metadata.name%3Dn2") == ["n2"]
    assert names("fieldSelector=metadata.name!%3Dn2") == ["n1", "n3"]
    assert names("labelSelector=zone%3Da") == ["n1"]
    assert names("labelSelector=zone+in+(a,b)") == ["n1", "n2"]
    assert names("labelSelector=!zone") == ["n3"]
    code, obj = flannel.call("GET", "/api/v1/nodes?fieldSelector=spec.podCIDR%3Dx")
    assert code == 400 and obj["message"] == "field label not supported: spec.podCIDR"
    page = flannel.get("/api/v1/nodes?labelSelector=zone&limit=1")
    assert "remainingItemCount" not in page["metadata"] and page["metadata"]["continue"]


# -- lifecycle and faults ---------------------------------------------------------------------


def test_restart_cuts_watches_and_keeps_objects_and_port(srv: KubeAPIServer, flannel: Client) -> None:
    srv.create_node("n1")
    port, rv = srv.port, srv.resource_version
    stream = flannel.watch(f"/api/v1/nodes?watch=1&resourceVersion={rv}")
    srv.update_node("n1", lambda n: n["metadata"]["labels"].update(x="1"))
    assert next(stream)["type"] == "MODIFIED"
    seen = srv.resource_version
    srv.restart()
    with pytest.raises((http.client.IncompleteRead, ConnectionError, ssl.SSLError, StopIteration)):
        while True:
            next(stream)  # the stream is cut: no clean end (no terminating chunk)
    assert srv.port == port
    assert flannel.get("/api/v1/nodes/n1")["metadata"]["labels"]["x"] == "1"
    srv.update_node("n1", lambda n: n["metadata"]["labels"].update(x="2"))
    again = list(flannel.watch(f"/api/v1/nodes?watch=1&resourceVersion={seen}&timeoutSeconds=1"))
    assert [e["object"]["metadata"]["labels"]["x"] for e in again] == ["2"]
    # a restart with a fresh watch cache: the old resourceVersion is now too old
    srv.restart(compact=True)
    events = list(flannel.watch(f"/api/v1/nodes?watch=1&resourceVersion={seen}"))
    assert events[0]["type"] == "ERROR" and events[0]["object"]["code"] == 410


def test_plain_http_without_tls(tmp_path) -> None:
    with KubeAPIServer(workdir=str(tmp_path), tls=False) as server:
        assert server.url.startswith("http://")
        conn = http.client.HTTPConnection(server.host, server.port, timeout=10)
        conn.request("GET", "/api/v1/nodes", headers={"Authorization": "Bearer admin-token"})
        assert json.loads(conn.getresponse().read())["kind"] == "NodeList"
        conn.close()
        server.write_serviceaccount(str(tmp_path / "sa"))
        assert not os.path.exists(tmp_path / "sa" / "ca.crt")


def test_stopped_server_refuses_connections(srv: KubeAPIServer, flannel: Client) -> None:
    srv.stop()
    with pytest.raises(ConnectionRefusedError):
        flannel.call("GET", "/api/v1/nodes")
    srv.start()
    assert flannel.get("/api/v1/nodes")["kind"] == "NodeList"


def test_fail_next_and_the_request_log(srv: KubeAPIServer, flannel: Client) -> None:
    srv.create_node("n1")
    srv.fail_next(2, status=503)
    for _ in range(2):
        code, obj = flannel.call("GET", "/api/v1/nodes/n1")
        assert code == 503 and status_of(obj, 503, "ServiceUnavailable")
    assert flannel.call("GET", "/api/v1/nodes/n1")[0] == 200
    srv.fail_next(1, status=429)
    code, obj = flannel.call("PATCH", "/api/v1/nodes/n1/status", {"metadata": {}}, SMP)
    assert code == 429 and obj["details"]["retryAfterSeconds"] == 1
    assert srv.requests[-4:] == [("GET", "/api/v1/nodes/n1", None, FLANNEL_USER)] * 3 + [
        ("PATCH", "/api/v1/nodes/n1/status", SMP, FLANNEL_USER)]
    assert srv.get_node("n1") is not None and srv.requests_matching("PATCH", "/api/v1/nodes/") == srv.requests[-1:]
    # an unauthenticated request does not use up an injected failure
    srv.fail_next(1, status=500)
    assert Client(srv, None).call("GET", "/api/v1/nodes")[0] == 401
    code, obj = flannel.call("GET", "/api/v1/nodes")
    assert code == 500 and status_of(obj, 500, "InternalError")


def test_tls_is_verified_against_the_ca_and_the_san(srv: KubeAPIServer, tmp_path) -> None:
    strict = ssl.create_default_context()  # the system roots do not know our CA
    conn = http.client.HTTPSConnection("127.0.0.1", srv.port, context=strict, timeout=10)
    with pytest.raises(ssl.SSLCertVerificationError):
        conn.request("GET", "/version")
    conn.close()
    ours = ssl.create_default_context(cafile=srv.ca_file)
    conn = http.client.HTTPSConnection("localhost", srv.port, context=ours, timeout=10)
    conn.request("GET", "/healthz")
    assert conn.getresponse().read() == b"ok"
    conn.close()
    san = subprocess.run(["openssl", "x509", "-noout", "-ext", "subjectAltName", "-in",
                          os.path.join(srv.workdir, "apiserver.crt")], capture_output=True, text=True, check=True)
    assert "IP Address:127.0.0.1" in san.stdout and "DNS:localhost" in san.stdout


def test_kubeconfig_and_serviceaccount_files_work_with_curl(srv: KubeAPIServer, tmp_path) -> None:
    srv.create_node("n1")
    kubeconfig = srv.write_kubeconfig(str(tmp_path / "kubeconfig"), token="flannel-token")
    text = open(kubeconfig).read()
    assert f'server: "{srv.url}"' in text and f'certificate-authority: "{srv.ca_file}"' in text
    assert 'token: "flannel-token"' in text and "current-context: kubeapi-test" in text
    sa = srv.write_serviceaccount(str(tmp_path / "sa"))
    token = open(os.path.join(sa, "token")).read()
    assert open(os.path.join(sa, "namespace")).read() == "kube-flannel"
    assert srv.incluster_env() == {"KUBERNETES_SERVICE_HOST": "127.0.0.1", "KUBERNETES_SERVICE_PORT": str(srv.port)}
    out = subprocess.run(["curl", "-sS", "--cacert", os.path.join(sa, "ca.crt"), "-H", f"Authorization: Bearer {token}",
                          f"{srv.url}/api/v1/nodes/n1"], capture_output=True, text=True, check=True, timeout=30)
    assert json.loads(out.stdout)["metadata"]["name"] == "n1"


# -- in a lab namespace -----------------------------------------------------------------------

WATCHER = r"""
import http.client, json, ssl, sys
host, port, ca, rv = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4]
conn = http.client.HTTPSConnection(host, port, context=ssl.create_default_context(cafile=ca), timeout=30)
conn.request("GET", f"/api/v1/nodes?watch=1&resourceVersion={rv}&timeoutSeconds=20",
             headers={"Authorization": "Bearer flannel-token"})
resp = conn.getresponse()
print("STATUS", resp.status, flush=True)
while True:
    line = resp.readline()
    if not line:
        break
    ev = json.loads(line)
    print(ev["type"], ev["object"]["metadata"]["name"], flush=True)
    if ev["object"]["metadata"]["name"] == "last":
        break
"""


def test_served_inside_a_lab_namespace_and_reached_from_a_node(lab, tmp_path) -> None:
    api_host = lab.add_host("api")
    node = lab.add_host("node1")
    server = KubeAPIServer(host=api_host.ip, netns_path=api_host.netns_path, workdir=str(tmp_path / "api"))
    server.start()
    try:
        listening = api_host.ns.run("ss", "-Htln", f"sport = :{server.port}").stdout
        assert f"{api_host.ip}:{server.port}" in listening  # the listener is in the api namespace
        server.create_node("node1", pod_cidr="10.244.1.0/24", addresses=[node.ip])
        out = node.ns.run("curl", "-sS", "--cacert", server.ca_file, "-H", "Authorization: Bearer flannel-token",
                          f"{server.url}/api/v1/nodes").stdout
        listed = json.loads(out)
        assert listed["kind"] == "NodeList" and listed["items"][0]["spec"]["podCIDR"] == "10.244.1.0/24"
        rv = listed["metadata"]["resourceVersion"]
        watcher = subprocess.Popen(["ip", "netns", "exec", node.ns.name, sys.executable, "-c", WATCHER,
                                    api_host.ip, str(server.port), server.ca_file, rv],
                                   stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        try:
            assert watcher.stdout is not None
            assert watcher.stdout.readline().strip() == "STATUS 200"
            patch = json.dumps({"metadata": {"annotations": {"flannel.alpha.coreos.com/public-ip": node.ip}}})
            node.ns.run("curl", "-sS", "-f", "--cacert", server.ca_file, "-X", "PATCH",
                        "-H", "Authorization: Bearer flannel-token",
                        "-H", f"Content-Type: {SMP}", "--data", patch, f"{server.url}/api/v1/nodes/node1/status")
            server.create_node("last")
            out, err = watcher.communicate(timeout=30)
        finally:
            if watcher.poll() is None:
                watcher.kill()
                watcher.wait()
        assert out.split("\n")[:2] == ["MODIFIED node1", "ADDED last"], err
        stored = server.get_node("node1")
        assert stored is not None
        assert stored["metadata"]["annotations"]["flannel.alpha.coreos.com/public-ip"] == node.ip
        users = {r[3] for r in server.requests}
        assert users == {FLANNEL_USER}
        # restart inside the namespace: the same address and port answer again
        server.restart()
        again = node.ns.run("curl", "-sS", "--cacert", server.ca_file, "-H", "Authorization: Bearer flannel-token",
                            f"{server.url}/api/v1/nodes/last").stdout
        assert json.loads(again)["metadata"]["name"] == "last"
    finally:
        server.stop()
    time.sleep(0)  # nothing left listening: the namespace goes with the lab
    assert f":{server.port}" not in api_host.ns.run("ss", "-Htln").stdout
