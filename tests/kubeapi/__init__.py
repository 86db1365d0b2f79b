"""The tests' Kubernetes API server: what flanneld's kube subnet manager talks to when no real one can run.

Deviations from the brief (the real API decides): ``spec.podCIDRs`` is ``patchStrategy: merge`` in
k8s.io/api core/v1 (a set of strings: a strategic patch adds to it; ``$patch: replace`` or a merge
patch replaces it), not a replaced list. ``$patch: delete`` on a map leaves an empty map (dropped by
omitempty), as apimachinery does. JSON patch failures are 422 with the apiserver's generic message
"the server rejected our request due to an error in our request"; malformed patches are 400.
``resourceVersion=0`` lists ignore ``limit`` (served from the watch cache); ``resourceVersion=N`` with
a ``limit`` and no ``resourceVersionMatch`` is Exact (legacy). The 415 message lists only the three
patch types served (no apply-patch+yaml).

What it is: a small HTTP server (standard library only: http.server + ssl + json + threading) that
speaks the real Kubernetes HTTP API for the calls flanneld makes (reference §6), over TLS with a
bearer token, faithfully: core/v1 Nodes with list (resourceVersion / resourceVersionMatch semantics,
limit/continue pagination, label and field selectors), watch (chunked JSON event lines ADDED /
MODIFIED / DELETED / BOOKMARK / ERROR, timeoutSeconds, allowWatchBookmarks, sendInitialEvents, a
too-old resourceVersion answered by an in-stream ERROR with a 410 Expired Status), GET, and PATCH on
nodes and nodes/status with the three patch types (JSON merge patch RFC 7386, JSON patch RFC 6902,
strategic merge patch with the Node's patch metadata and directives); the node status strategy (a
/status patch keeps the old spec but keeps metadata changes, so annotations stick; the main resource
keeps the old status); no-op writes do not bump the resourceVersion; one global resourceVersion
counter with a bounded history and compact(); Pods get; bearer tokens (401) and an RBAC rule set per
user with the apiserver's Forbidden message (403); every error is a v1 Status object.

What it is not: an apiserver. No admission, no validation beyond the fields flannel touches (label
and annotation types, condition fields, podCIDR(s)), no managedFields or server-side apply, no
protobuf, no HTTP/2, no discovery beyond /api and /api/v1, no other resource types than Nodes and
Pods (pods are read-only over HTTP), no namespaces objects, no etcd: the objects live in memory in
the test process (they survive restart(), not the process).

Usage (tests/ is on sys.path via conftest)::

    from kubeapi import KubeAPIServer
    srv = KubeAPIServer(host=api.ip, netns_path=api.netns_path, workdir=str(tmp_path)).start()
    srv.create_node("node1", pod_cidr="10.244.1.0/24")
    srv.write_kubeconfig(path, token="flannel-token")
    ... srv.requests, srv.fail_next(2, 503), srv.compact(), srv.restart(), srv.stop()

Extras beyond the contract (kubeapi-contract.md): ``restart(compact=True)`` (the fresh watch
cache of a restarted apiserver: old resourceVersions then get 410), ``incluster_env()``,
``write_kubeconfig(embed_ca=True)``, ``resource_version``, ``requests_matching(method, prefix)``,
``errors`` (server-side exceptions), ``bookmark_interval`` / ``watch_timeout`` / ``too_large_wait``
constructor knobs, ``running(**kw)`` (a context manager), POST/PUT/DELETE on nodes for tests that
drive the API as an admin, /healthz, /version. ``rbac`` maps user -> a set of (verb, resource) pairs,
resource ``nodes``, ``nodes/status`` or ``pods``, ``"*"`` a wildcard; ``FLANNEL_RULES`` (the
manifest's ClusterRole) and ``SEED_RULES`` (the 2019 seed's, without ``nodes get``) are exported;
``srv.rbac`` may be changed while running.
"""
from __future__ import annotations

from .auth import ADMIN_USER, FLANNEL_RULES, FLANNEL_USER, SEED_RULES
from .server import APIError, KubeAPIServer, running

__all__ = ["ADMIN_USER", "FLANNEL_RULES", "FLANNEL_USER", "SEED_RULES", "APIError", "KubeAPIServer", "running"]
