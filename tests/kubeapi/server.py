"""KubeAPIServer: the core/v1 Nodes (and Pods get) HTTP API over TLS, for flanneld's kube subnet manager.

See tests/kubeapi/__init__.py for what it is and is not. Threads: one accept loop, one thread per
connection (ThreadingHTTPServer); a watch is a long chunked response fed from the store's event log.
"""
from __future__ import annotations

import base64
import binascii
import copy
import ipaddress
import json
import os
import socket
import socketserver
import ssl
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager, nullcontext
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

from . import auth, patch
from .store import (
    AlreadyExists,
    Conflict,
    Event,
    Expired,
    Key,
    NotFound,
    Obj,
    SelectorError,
    Store,
    new_node,
    new_pod,
    parse_field_selector,
    parse_label_selector,
    rv_of,
)

PATCH_TYPES = ("application/json-patch+json", "application/merge-patch+json", "application/strategic-merge-patch+json")
TRUE = {"1", "t", "T", "true", "TRUE", "True"}  # strconv.ParseBool
REASONS = {400: "BadRequest", 401: "Unauthorized", 403: "Forbidden", 404: "NotFound", 405: "MethodNotAllowed",
           409: "Conflict", 410: "Expired", 415: "UnsupportedMediaType", 422: "Invalid", 429: "TooManyRequests",
           500: "InternalError", 503: "ServiceUnavailable", 504: "Timeout"}
GENERIC = {429: "the server has received too many requests and has asked us to try again later",
           500: "an error on the server (\"\") has prevented the request from succeeding",
           503: "the server is currently unable to handle the request",
           504: "the server was unable to return a response in the time allotted, but may still be processing "
                "the request"}
CONTINUE_TOO_OLD = (
    "The provided continue parameter is too old to display a consistent list result. You can start a new list "
    "without the continue parameter, or use the continue token in this response to retrieve the remainder of the "
    "results. Continuing with the provided token results in an inconsistent list - objects that were created, "
    "modified, or deleted between the time the first chunk was returned and now may show up in the list.")


class APIError(Exception):
    """An error answer: rendered as a v1 Status object with this code."""

    def __init__(self, code: int, message: str, reason: str | None = None, details: dict[str, Any] | None = None,
                 list_meta: dict[str, Any] | None = None) -> None:
        super().__init__(message)
        self.code, self.message = code, message
        self.reason = reason or REASONS.get(code, "")
        self.details, self.list_meta = details, list_meta

    def status(self) -> Obj:
        out: Obj = {"kind": "Status", "apiVersion": "v1", "metadata": self.list_meta or {}, "status": "Failure",
                    "message": self.message, "reason": self.reason}
        if self.details is not None:
            out["details"] = self.details
        out["code"] = self.code
        return out


def _resource(name: str, kind: str, verbs: list[str], namespaced: bool) -> Obj:
    return {"name": name, "singularName": "", "namespaced": namespaced, "kind": kind, "verbs": verbs}


RESOURCES: Obj = {"kind": "APIResourceList", "groupVersion": "v1", "resources": [
    _resource("nodes", "Node", ["create", "delete", "get", "list", "patch", "update", "watch"], False),
    _resource("nodes/status", "Node", ["get", "patch", "update"], False),
    _resource("pods", "Pod", ["get", "list", "watch"], True),
]}


def _not_found(resource: str, name: str) -> APIError:
    return APIError(404, f'{resource} "{name}" not found', details={"name": name, "kind": resource})


def _invalid(name: str, field: str, value: Any, detail: str) -> APIError:
    msg = f'Node "{name}" is invalid: {field}: Invalid value: {json.dumps(value)}: {detail}'
    return APIError(422, msg, details={"name": name, "kind": "Node", "causes": [
        {"reason": "FieldValueInvalid", "message": f"Invalid value: {json.dumps(value)}: {detail}", "field": field}]})


class KubeAPIServer:
    """See the contract in tests/kubeapi/__init__.py."""

    def __init__(self, host: str = "127.0.0.1", port: int = 0, netns_path: str | None = None, tls: bool = True,
                 tokens: dict[str, str] | None = None, rbac: dict[str, Any] | None = None,
                 workdir: str | None = None, bookmark_interval: float = 1.0, watch_timeout: float = 1800.0,
                 too_large_wait: float = 3.0, history_limit: int = 100_000) -> None:
        import tempfile

        self.host, self.port, self.netns_path, self.tls = host, port, netns_path, tls
        self.tokens = dict(tokens) if tokens is not None else dict(auth.DEFAULT_TOKENS)
        self.rbac: dict[str, Any] = dict(rbac) if rbac is not None else auth.default_rbac()
        self.workdir = workdir or tempfile.mkdtemp(prefix="kubeapi-")
        os.makedirs(self.workdir, exist_ok=True)
        self.bookmark_interval, self.watch_timeout = bookmark_interval, watch_timeout
        self.too_large_wait = too_large_wait
        self.store = Store(history_limit=history_limit)
        self.requests: list[tuple[str, str, str | None, str | None]] = []
        self.errors: list[str] = []  # connection-level errors (TLS handshakes etc.), for debugging
        self._lock = threading.Lock()
        self._fail: list[int] = []
        self._httpd: _Server | None = None
        self._thread: threading.Thread | None = None
        self._generation = 0
        self.ca_file = os.path.join(self.workdir, "ca.crt")
        self._cert = os.path.join(self.workdir, "apiserver.crt")
        self._key = os.path.join(self.workdir, "apiserver.key")

    # -- lifecycle ---------------------------------------------------------------------------

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{'https' if self.tls else 'http'}://{host}:{self.port}"

    @property
    def running(self) -> bool:
        return self._httpd is not None

    def start(self) -> KubeAPIServer:
        if self._httpd is not None:
            return self
        ctx = None
        if self.tls:
            self._make_certs()
            ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            ctx.load_cert_chain(self._cert, self._key)
        scope = self._netns() if self.netns_path else nullcontext()
        with scope:  # the listening socket lives in the namespace it was created in
            httpd = _Server((self.host, self.port), _Handler, self, ctx)
        self.port = httpd.server_address[1]
        self._httpd = httpd
        self._thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.1},
                                        name=f"kubeapi:{self.port}", daemon=True)
        self._thread.start()
        return self

    def _netns(self) -> Any:
        from cni_flannel.net.netns import entered

        return entered(self.netns_path or "")

    def stop(self) -> None:
        """Close the listener and every open connection (watches end; clients must re-list/re-watch)."""
        httpd, self._httpd = self._httpd, None
        if httpd is None:
            return
        with self.store.cond:
            self._generation += 1
            self.store.cond.notify_all()
        httpd.shutdown()
        httpd.server_close()
        httpd.close_connections()
        if self._thread is not None:
            self._thread.join(5)

    def restart(self, compact: bool = False) -> None:
        """stop() then start() on the same port, objects kept. ``compact=True`` also forgets the history,
        as a real apiserver's fresh watch cache does (old watch resourceVersions then get 410)."""
        self.stop()
        if compact:
            self.compact()
        self.start()

    def __enter__(self) -> KubeAPIServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def _make_certs(self) -> None:
        if all(os.path.exists(p) for p in (self.ca_file, self._cert, self._key)):
            return
        ca_key = os.path.join(self.workdir, "ca.key")
        csr = os.path.join(self.workdir, "apiserver.csr")
        ext = os.path.join(self.workdir, "apiserver.ext")
        sans = ["DNS:localhost", "DNS:kubernetes", "DNS:kubernetes.default", "IP:127.0.0.1"]
        try:
            sans.append(f"IP:{ipaddress.ip_address(self.host)}")
        except ValueError:
            sans.append(f"DNS:{self.host}")
        with open(ext, "w") as f:
            f.write(f"subjectAltName={','.join(dict.fromkeys(sans))}\nbasicConstraints=CA:FALSE\n"
                    "keyUsage=critical,digitalSignature,keyEncipherment\nextendedKeyUsage=serverAuth\n")
        ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]
        _openssl("req", "-x509", *ec, "-keyout", ca_key, "-out", self.ca_file, "-days", "3",
                 "-subj", "/CN=kubeapi-test-ca", "-addext", "basicConstraints=critical,CA:TRUE",
                 "-addext", "keyUsage=critical,keyCertSign,cRLSign")
        _openssl("req", *ec, "-keyout", self._key, "-out", csr, "-subj", "/CN=kube-apiserver")
        _openssl("x509", "-req", "-in", csr, "-CA", self.ca_file, "-CAkey", ca_key, "-CAcreateserial",
                 "-out", self._cert, "-days", "3", "-extfile", ext)
        os.chmod(self._key, 0o600)

    # -- client files ------------------------------------------------------------------------

    def write_kubeconfig(self, path: str, token: str = "flannel-token", embed_ca: bool = False) -> str:
        if embed_ca:
            with open(self.ca_file, "rb") as f:
                ca_line = f"certificate-authority-data: {base64.b64encode(f.read()).decode()}"
        else:
            ca_line = f"certificate-authority: {json.dumps(self.ca_file)}"
        cluster = f"    server: {json.dumps(self.url)}\n" + (f"    {ca_line}\n" if self.tls else "")
        text = ("apiVersion: v1\nkind: Config\nclusters:\n- name: kubeapi-test\n  cluster:\n" + cluster +
                f"users:\n- name: test-user\n  user:\n    token: {json.dumps(token)}\n"
                "contexts:\n- name: kubeapi-test\n  context:\n    cluster: kubeapi-test\n    user: test-user\n"
                "current-context: kubeapi-test\npreferences: {}\n")
        with open(path, "w") as f:
            f.write(text)
        return path

    def write_serviceaccount(self, directory: str, token: str = "flannel-token",
                             namespace: str = "kube-flannel") -> str:
        """The in-cluster layout (/var/run/secrets/kubernetes.io/serviceaccount); see incluster_env()."""
        os.makedirs(directory, exist_ok=True)
        for name, content in (("token", token), ("namespace", namespace)):
            with open(os.path.join(directory, name), "w") as f:
                f.write(content)
        if self.tls:
            with open(self.ca_file, "rb") as src, open(os.path.join(directory, "ca.crt"), "wb") as dst:
                dst.write(src.read())
        return directory

    def incluster_env(self) -> dict[str, str]:
        return {"KUBERNETES_SERVICE_HOST": self.host, "KUBERNETES_SERVICE_PORT": str(self.port)}

    # -- the store, for tests ----------------------------------------------------------------

    def create_node(self, name: str, pod_cidr: str | None = None, pod_cidrs: list[str] | None = None,
                    annotations: dict[str, str] | None = None, labels: dict[str, str] | None = None,
                    addresses: list[Any] | None = None) -> Obj:
        return self.store.create(("nodes", "", name), new_node(name, pod_cidr, pod_cidrs, annotations, labels,
                                                               addresses))

    def get_node(self, name: str) -> Obj | None:
        return self.store.get(("nodes", "", name))

    def update_node(self, name: str, fn: Callable[[Obj], Any]) -> Obj:
        return self.store.update(("nodes", "", name), fn)[0]

    def delete_node(self, name: str) -> Obj:
        return self.store.delete(("nodes", "", name))

    def create_pod(self, namespace: str, name: str, node_name: str) -> Obj:
        return self.store.create(("pods", namespace, name), new_pod(namespace, name, node_name))

    def compact(self) -> None:
        self.store.compact()

    @property
    def resource_version(self) -> int:
        return self.store.rv

    def fail_next(self, n: int, status: int = 503) -> None:
        with self._lock:
            self._fail.extend([status] * n)

    def _record(self, entry: tuple[str, str, str | None, str | None], index: int | None = None) -> int:
        with self._lock:
            if index is None:
                self.requests.append(entry)
                return len(self.requests) - 1
            self.requests[index] = entry
            return index

    def _take_failure(self) -> int | None:
        with self._lock:
            return self._fail.pop(0) if self._fail else None

    def requests_matching(self, method: str, path_prefix: str) -> list[tuple[str, str, str | None, str | None]]:
        return [r for r in list(self.requests) if r[0] == method and r[1].startswith(path_prefix)]


def _openssl(*args: str) -> None:
    proc = subprocess.run(["openssl", *args], capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        raise RuntimeError(f"openssl {args[0]} failed: {proc.stderr.strip()}")


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, address: tuple[str, int], handler: type[BaseHTTPRequestHandler], api: KubeAPIServer,
                 ctx: ssl.SSLContext | None) -> None:
        self.address_family = socket.AF_INET6 if ":" in address[0] else socket.AF_INET
        self.api, self.ctx = api, ctx
        self.conns: set[socket.socket] = set()
        self.conns_lock = threading.Lock()
        super().__init__(address, handler)

    def server_bind(self) -> None:
        # HTTPServer.server_bind does socket.getfqdn(host): a reverse DNS lookup that stalls ~10 s in a
        # namespace without DNS. The name is only used in logs.
        socketserver.TCPServer.server_bind(self)
        self.server_name, self.server_port = str(self.server_address[0]), int(self.server_address[1])

    def finish_request(self, request: Any, client_address: Any) -> None:
        # The TLS handshake runs here, in the connection's own thread, not in the accept loop.
        sock = request
        self._track(sock, True)
        try:
            if self.ctx is not None:
                sock.settimeout(10)
                sock = self.ctx.wrap_socket(sock, server_side=True)  # takes over (detaches) the raw socket
                self._track(request, False)
                self._track(sock, True)
                sock.settimeout(None)
            self.RequestHandlerClass(sock, client_address, self)  # type: ignore[arg-type]
        finally:
            self._track(sock, False)
            if sock is not request:
                sock.close()

    def _track(self, sock: socket.socket, add: bool) -> None:
        with self.conns_lock:
            if add:
                self.conns.add(sock)
            else:
                self.conns.discard(sock)

    def handle_error(self, request: Any, client_address: Any) -> None:
        import sys

        self.api.errors.append(f"{client_address}: {sys.exc_info()[1]!r}")

    def close_connections(self) -> None:
        with self.conns_lock:
            conns = list(self.conns)
        for sock in conns:
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "kubeapi-test"
    sys_version = ""
    timeout = 300
    server: _Server

    def log_message(self, format: str, *args: Any) -> None:
        pass

    @property
    def api(self) -> KubeAPIServer:
        return self.server.api

    def do_GET(self) -> None:
        self._serve("GET")

    def do_PATCH(self) -> None:
        self._serve("PATCH")

    def do_POST(self) -> None:
        self._serve("POST")

    def do_PUT(self) -> None:
        self._serve("PUT")

    def do_DELETE(self) -> None:
        self._serve("DELETE")

    # -- plumbing ----------------------------------------------------------------------------

    def _serve(self, method: str) -> None:
        ctype = self.headers.get("Content-Type")
        index = self.api._record((method, self.path, ctype, None))
        try:
            body = self._read_body()
            url = urlsplit(self.path)
            parts = [unquote(p) for p in url.path.split("/") if p]
            query = {k: v[-1] for k, v in parse_qs(url.query, keep_blank_values=True).items()}
            if self._public(method, parts):
                return
            user = auth.authenticate(self.headers.get("Authorization"), self.api.tokens)
            if user is None:
                raise APIError(401, "Unauthorized")
            self.api._record((method, self.path, ctype, user), index)
            failure = self.api._take_failure()  # after authentication, as the apiserver's APF filter
            if failure is not None:
                raise APIError(failure, GENERIC.get(failure, f"injected failure {failure}"),
                               details={"retryAfterSeconds": 1} if failure == 429 else {})
            self._route(method, parts, query, body, user, ctype)
        except APIError as err:
            self._send_json(err.code, err.status(), retry_after=err.code in (429, 503))
        except (BrokenPipeError, ConnectionError, ssl.SSLError, TimeoutError):
            self.close_connection = True
        except Exception as exc:  # a bug of ours: answer as the apiserver would, keep the trace for the test
            self.api.errors.append(f"{method} {self.path}: {exc!r}")
            self._send_json(500, APIError(500, f"Internal error occurred: {exc}").status())

    def _read_body(self) -> bytes:
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length else b""

    def _send_json(self, code: int, obj: Obj, retry_after: bool = False) -> None:
        data = json.dumps(obj, separators=(",", ":")).encode()
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Cache-Control", "no-cache, private")
        if retry_after:
            self.send_header("Retry-After", "1")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def _public(self, method: str, parts: list[str]) -> bool:
        """/healthz, /livez, /readyz, /version and /api need no token (system:public-info-viewer)."""
        if method != "GET" or len(parts) != 1:
            return False
        if parts[0] in ("healthz", "livez", "readyz"):
            data = b"ok"
            self.send_response(200)
            self.send_header("Content-Type", "text/plain; charset=utf-8")
            self.send_header("Content-Length", "2")
            self.end_headers()
            self.wfile.write(data)
            return True
        if parts[0] == "version":
            self._send_json(200, {"major": "1", "minor": "28", "gitVersion": "v1.28.0-kubeapi-test",
                                  "platform": "linux/amd64"})
            return True
        if parts[0] == "api":
            self._send_json(200, {"kind": "APIVersions", "versions": ["v1"], "serverAddressByClientCIDRs": [
                {"clientCIDR": "0.0.0.0/0", "serverAddress": f"{self.api.host}:{self.api.port}"}]})
            return True
        return False

    # -- routing -----------------------------------------------------------------------------

    def _route(self, method: str, parts: list[str], query: dict[str, str], body: bytes, user: str,
               ctype: str | None) -> None:
        if parts[:2] != ["api", "v1"]:
            raise APIError(404, "the server could not find the requested resource", details={})
        rest = parts[2:]
        if not rest and method == "GET":
            self._send_json(200, RESOURCES)
            return
        if rest[:1] == ["nodes"] and len(rest) <= 3:
            name = rest[1] if len(rest) > 1 else ""
            sub = rest[2] if len(rest) > 2 else ""
            if sub not in ("", "status"):
                raise APIError(404, "the server could not find the requested resource", details={})
            self._nodes(method, name, sub, query, body, user, ctype)
            return
        if len(rest) in (3, 4) and rest[0] == "namespaces" and rest[2] == "pods":
            ns, name = rest[1], rest[3] if len(rest) == 4 else ""
            self._pods(method, ns, name, query, user)
            return
        raise APIError(404, "the server could not find the requested resource", details={})

    def _authorize(self, user: str, verb: str, resource: str, sub: str = "", name: str = "", ns: str = "") -> None:
        full = f"{resource}/{sub}" if sub else resource
        if not auth.allowed(self.api.rbac.get(user, ()), verb, full):
            details = {"name": name, "kind": resource} if name else {"kind": resource}
            raise APIError(403, auth.forbidden_message(user, verb, resource, sub, name, ns), details=details)

    def _nodes(self, method: str, name: str, sub: str, query: dict[str, str], body: bytes, user: str,
               ctype: str | None) -> None:
        if not name:
            if method == "GET":
                verb = "watch" if query.get("watch", "") in TRUE else "list"
                self._authorize(user, verb, "nodes")
                if verb == "watch":
                    self._watch("nodes", query)
                else:
                    self._send_json(200, self._list("nodes", "NodeList", query))
                return
            if method == "POST":
                self._authorize(user, "create", "nodes")
                self._create_node(body)
                return
            raise APIError(405, "the server does not allow this method on the requested resource", details={})
        verb = {"GET": "get", "PATCH": "patch", "PUT": "update", "DELETE": "delete"}.get(method, "")
        if not verb or (sub and verb == "delete"):
            raise APIError(405, "the server does not allow this method on the requested resource", details={})
        self._authorize(user, verb, "nodes", sub, name)
        key: Key = ("nodes", "", name)
        if verb == "get":
            self._send_json(200, self._get(key, query))
        elif verb == "patch":
            self._send_json(200, self._patch(key, sub, body, ctype))
        elif verb == "update":
            self._send_json(200, self._put(key, sub, body))
        else:
            try:
                obj = self.api.store.delete(key)
            except NotFound:
                raise _not_found("nodes", name) from None
            self._send_json(200, obj)

    def _pods(self, method: str, ns: str, name: str, query: dict[str, str], user: str) -> None:
        if method != "GET":
            raise APIError(405, "the server does not allow this method on the requested resource", details={})
        if not name:
            verb = "watch" if query.get("watch", "") in TRUE else "list"
            self._authorize(user, verb, "pods", ns=ns)
            if verb == "watch":
                self._watch("pods", query, namespace=ns)
            else:
                self._send_json(200, self._list("pods", "PodList", query, namespace=ns))
            return
        self._authorize(user, "get", "pods", name=name, ns=ns)
        self._send_json(200, self._get(("pods", ns, name), query))

    # -- reads -------------------------------------------------------------------------------

    def _rv_param(self, query: dict[str, str], name: str = "resourceVersion") -> int | None:
        text = query.get(name, "")
        if text == "":
            return None
        try:
            value = int(text)
        except ValueError:
            raise APIError(400, f"invalid resource version {text!r}", details={}) from None
        if value < 0:
            raise APIError(400, f"invalid resource version {text!r}", details={})
        return value

    def _wait_fresh(self, rv: int) -> None:
        if not self.api.store.wait_for_rv(rv, self.api.too_large_wait):
            raise APIError(504, f"Too large resource version: {rv}, current: {self.api.store.rv}", details={
                "causes": [{"reason": "ResourceVersionTooLarge", "message": "Too large resource version"}],
                "retryAfterSeconds": 1})

    def _get(self, key: Key, query: dict[str, str]) -> Obj:
        rv = self._rv_param(query)
        if rv:
            self._wait_fresh(rv)
        obj = self.api.store.get(key)
        if obj is None:
            raise _not_found(key[0], key[2])
        return obj

    def _selector(self, resource: str, query: dict[str, str]) -> tuple[Callable[[Obj], bool], bool]:
        try:
            labels = parse_label_selector(query.get("labelSelector", ""))
            fields = parse_field_selector(query.get("fieldSelector", ""), resource)
        except SelectorError as exc:
            raise APIError(400, str(exc), details={}) from None
        selective = bool(query.get("labelSelector") or query.get("fieldSelector"))
        return (lambda obj: labels(obj) and fields(obj)), selective

    def _list(self, resource: str, kind: str, query: dict[str, str], namespace: str = "") -> Obj:
        """A list per the API concepts: resourceVersion/resourceVersionMatch semantics, limit/continue."""
        rv, match = self._rv_param(query), query.get("resourceVersionMatch", "")
        token, limit = query.get("continue", ""), _int_param(query, "limit")
        if match and rv is None:
            raise APIError(400, "resourceVersionMatch is forbidden unless resourceVersion is provided", details={})
        if match not in ("", "Exact", "NotOlderThan"):
            raise APIError(400, f"resourceVersionMatch: Unsupported value: {match!r}", details={})
        start = ""
        at: int | None = None
        if token:
            if rv is not None or match:
                raise APIError(400, "specifying resource version is not allowed when using continue", details={})
            at, start = _decode_continue(token)
        elif rv is not None and rv > 0:
            self._wait_fresh(rv)
            if match == "Exact" or (match == "" and limit > 0):  # a legacy rv=N with limit is Exact
                at = rv
        elif rv == 0:
            limit = 0  # resourceVersion=0 is served from the watch cache, which ignores limit
        try:
            items, at = self.api.store.snapshot(resource, at if at and at > 0 else None)
        except Expired as exc:
            if token:
                newest, _ = self.api.store.snapshot(resource)
                left = [k for k, _ in newest if _name_key(k) >= start]
                fresh = {"continue": _encode_continue(-1, start)} if left else {}
                raise APIError(410, CONTINUE_TOO_OLD, "Expired", details={}, list_meta=fresh) from None
            raise APIError(410, "The resourceVersion for the provided list is too old.", "Expired",
                           details={}) from exc
        matches, selective = self._selector(resource, query)
        items = [(k, o) for k, o in items if (not namespace or k[1] == namespace) and _name_key(k) >= start]
        page: list[Obj] = []
        rest = items
        for i, (_, obj) in enumerate(items):
            if limit and len(page) == limit:
                rest = items[i:]
                break
            if matches(obj):
                page.append(_strip_type(obj))
        else:
            rest = []
        meta: Obj = {"resourceVersion": str(at)}
        if rest:
            last_key = _name_key(items[len(items) - len(rest) - 1][0])
            meta["continue"] = _encode_continue(at, last_key + "\x00")
            if not selective:
                meta["remainingItemCount"] = len(rest)
        return {"kind": kind, "apiVersion": "v1", "metadata": meta, "items": page}

    # -- watch -------------------------------------------------------------------------------

    def _watch(self, resource: str, query: dict[str, str], namespace: str = "") -> None:
        api, store = self.api, self.api.store
        rv = self._rv_param(query)
        bookmarks = query.get("allowWatchBookmarks", "") in TRUE
        initial_flag = query.get("sendInitialEvents")
        timeout = float(_int_param(query, "timeoutSeconds")) or api.watch_timeout  # 0 or unset: the default
        matches, _ = self._selector(resource, query)
        if rv:
            self._wait_fresh(rv)
        with store.cond:
            generation = api._generation
            send_initial = initial_flag in TRUE if initial_flag is not None else not rv
            cursor = store.rv if (send_initial or rv is None) else rv
            initial = store.snapshot(resource)[0] if send_initial else []
            too_old = rv is not None and rv > 0 and rv < store.floor and not send_initial
            floor = store.floor
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Cache-Control", "no-cache, private")
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()
        self.close_connection = True
        kind = "Node" if resource == "nodes" else "Pod"
        if too_old:
            self._chunk({"type": "ERROR", "object": APIError(
                410, f"too old resource version: {rv} ({floor})", "Expired").status()})
            self._chunk_end()
            return
        for key, obj in initial:
            if (not namespace or key[1] == namespace) and matches(obj):
                self._chunk({"type": "ADDED", "object": obj})
        if send_initial and initial_flag in TRUE and bookmarks:
            self._chunk({"type": "BOOKMARK", "object": _bookmark(kind, cursor, initial_end=True)})
        deadline = time.monotonic() + timeout
        next_bookmark = time.monotonic() + api.bookmark_interval
        while True:
            expired: Expired | None = None
            with store.cond:
                while True:
                    if api._generation != generation:
                        return  # stop()/restart(): the connection is being closed under us
                    try:
                        pending = [e for e in store.events_after(cursor) if e.key[0] == resource]
                    except Expired as exc:
                        pending, expired = [], exc
                        break
                    now = time.monotonic()
                    if pending or now >= deadline or (bookmarks and now >= next_bookmark):
                        break
                    wake = min(deadline, next_bookmark) if bookmarks else deadline
                    store.cond.wait(max(0.0, wake - now))
                head = store.rv
            if expired is not None:
                self._chunk({"type": "ERROR", "object": APIError(410, str(expired), "Expired").status()})
                self._chunk_end()
                return
            for ev in pending:
                out = _watch_event(ev, matches, namespace)
                cursor = ev.rv
                if out is not None:
                    self._chunk(out)
            if not pending and time.monotonic() >= deadline:
                self._chunk_end()
                return
            if bookmarks and time.monotonic() >= next_bookmark:
                if not pending:
                    cursor = max(cursor, head)
                self._chunk({"type": "BOOKMARK", "object": _bookmark(kind, cursor)})
                next_bookmark = time.monotonic() + api.bookmark_interval

    def _chunk(self, event: Obj) -> None:
        data = json.dumps(event, separators=(",", ":")).encode() + b"\n"
        self.wfile.write(f"{len(data):x}\r\n".encode() + data + b"\r\n")

    def _chunk_end(self) -> None:
        self.wfile.write(b"0\r\n\r\n")

    # -- writes ------------------------------------------------------------------------------

    def _decode(self, body: bytes) -> Any:
        try:
            return json.loads(body or b"null")
        except (ValueError, UnicodeDecodeError) as exc:
            raise APIError(400, f"error decoding patch: {exc}", details={}) from None

    def _patch(self, key: Key, sub: str, body: bytes, ctype: str | None) -> Obj:
        media = (ctype or "").split(";")[0].strip().lower()
        if media not in PATCH_TYPES:
            raise APIError(415, "the body of the request was in an unknown format - accepted media types include: "
                           + ", ".join(PATCH_TYPES), details={})
        doc = self._decode(body)
        store = self.api.store
        with store.cond:  # read-patch-write under the store lock: GuaranteedUpdate without retries
            old = store.get(key)
            if old is None:
                raise _not_found("nodes", key[2])
            try:
                if media == "application/json-patch+json":
                    new = patch.json_patch(old, doc)
                elif media == "application/merge-patch+json":
                    new = patch.merge_patch(old, doc)
                else:
                    new = patch.strategic_merge_patch(old, doc, patch.NODE)
            except patch.PatchConflict:
                raise APIError(422, "the server rejected our request due to an error in our request",
                               details={}) from None
            except patch.PatchError as exc:
                raise APIError(400, str(exc), details={}) from None
            return self._commit_update(key, sub, old, new)

    def _put(self, key: Key, sub: str, body: bytes) -> Obj:
        new = self._decode(body)
        store = self.api.store
        with store.cond:
            old = store.get(key)
            if old is None:
                raise _not_found("nodes", key[2])
            if not isinstance(new, dict):
                raise APIError(400, "the body of the request must be a Node object", details={})
            if not (new.get("metadata") or {}).get("resourceVersion"):
                new.setdefault("metadata", {})["resourceVersion"] = old["metadata"]["resourceVersion"]
            return self._commit_update(key, sub, old, new)

    def _commit_update(self, key: Key, sub: str, old: Obj, new: Any) -> Obj:
        """The node strategies: /status keeps the old spec, the main resource keeps the old status;
        metadata changes persist either way (so flannel's annotations via nodes/status stick)."""
        if not isinstance(new, dict):
            raise APIError(400, "the patched object is not a JSON object", details={})
        name = key[2]
        new["apiVersion"], new["kind"] = "v1", "Node"
        meta = new.get("metadata")
        if not isinstance(meta, dict):
            meta = new["metadata"] = {}
        for field in ("name", "uid"):
            if field not in meta or meta[field] in ("", None):
                meta[field] = old["metadata"][field]
            elif meta[field] != old["metadata"][field]:
                raise _invalid(name, f"metadata.{field}", meta[field], "field is immutable")
        meta["creationTimestamp"] = old["metadata"]["creationTimestamp"]
        if sub == "status":
            new["spec"] = copy.deepcopy(old.get("spec", {}))
        else:
            new["status"] = copy.deepcopy(old.get("status", {}))
        _check_types(new)
        _validate_pod_cidrs(name, old, new)
        for field in ("labels", "annotations"):
            if field in meta and not meta[field]:
                del meta[field]  # an empty map is omitted (omitempty)
        want = meta.get("resourceVersion")
        if want is None:
            meta["resourceVersion"] = old["metadata"]["resourceVersion"]
        elif str(want) != old["metadata"]["resourceVersion"]:
            raise APIError(409, f'Operation cannot be fulfilled on nodes "{name}": the object has been modified; '
                           "please apply your changes to the latest version and try again",
                           details={"name": name, "kind": "nodes"})
        try:
            return self.api.store.replace(key, new, expect_rv=rv_of(old))[0]
        except Conflict:
            raise APIError(409, f'Operation cannot be fulfilled on nodes "{name}"', details={}) from None

    def _create_node(self, body: bytes) -> None:
        obj = self._decode(body)
        if not isinstance(obj, dict) or not (obj.get("metadata") or {}).get("name"):
            raise APIError(422, 'Node "" is invalid: metadata.name: Required value: name or generateName is required',
                           details={"kind": "Node"})
        name = obj["metadata"]["name"]
        obj["apiVersion"], obj["kind"] = "v1", "Node"
        obj["metadata"].pop("resourceVersion", None)
        _check_types(obj)
        try:
            created = self.api.store.create(("nodes", "", name), obj)
        except AlreadyExists:
            raise APIError(409, f'nodes "{name}" already exists', "AlreadyExists",
                           details={"name": name, "kind": "nodes"}) from None
        self._send_json(201, created)


def _int_param(query: dict[str, str], name: str) -> int:
    text = query.get(name) or "0"
    try:
        value = int(text)
    except ValueError:
        raise APIError(400, f"{name}: Invalid value: {text!r}: must be an integer", details={}) from None
    if value < 0:
        raise APIError(400, f"{name}: Invalid value: {text!r}: must be greater than or equal to 0", details={})
    return value


def _name_key(key: Key) -> str:
    return f"{key[1]}/{key[2]}" if key[1] else key[2]


def _strip_type(obj: Obj) -> Obj:
    """List items carry no apiVersion/kind (only the list does), as the apiserver encodes them."""
    return {k: v for k, v in obj.items() if k not in ("apiVersion", "kind")}


def _encode_continue(rv: int, start: str) -> str:
    raw = json.dumps({"v": "meta.k8s.io/v1", "rv": rv, "start": start}, separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def _decode_continue(token: str) -> tuple[int, str]:
    try:
        data = json.loads(base64.urlsafe_b64decode(token + "=" * (-len(token) % 4)))
        if data.get("v") != "meta.k8s.io/v1":
            raise ValueError("unknown version")
        return int(data["rv"]), str(data["start"])
    except (ValueError, KeyError, TypeError, binascii.Error) as exc:
        raise APIError(400, f"continue key is not valid: {exc}", details={}) from None


def _bookmark(kind: str, rv: int, initial_end: bool = False) -> Obj:
    meta: Obj = {"resourceVersion": str(rv), "creationTimestamp": None}
    if initial_end:
        meta["annotations"] = {"k8s.io/initial-events-end": "true"}
    return {"kind": kind, "apiVersion": "v1", "metadata": meta, "spec": {}, "status": {}}


def _watch_event(ev: Event, matches: Callable[[Obj], bool], namespace: str) -> Obj | None:
    """cacheWatcher.convertToWatchEvent: selector transitions become ADDED / DELETED."""
    if namespace and ev.key[1] != namespace:
        return None
    now = matches(ev.obj)
    before = ev.prev is not None and matches(ev.prev)
    if ev.type == "ADDED":
        return {"type": "ADDED", "object": ev.obj} if now else None
    if ev.type == "DELETED":
        return {"type": "DELETED", "object": ev.obj} if before else None
    if now and before:
        return {"type": "MODIFIED", "object": ev.obj}
    if now:
        return {"type": "ADDED", "object": ev.obj}
    if before and ev.prev is not None:
        gone = copy.deepcopy(ev.prev)
        gone["metadata"]["resourceVersion"] = str(ev.rv)
        return {"type": "DELETED", "object": gone}
    return None


def _type_error(field: str, want: str, value: Any) -> APIError:
    got = {dict: "object", list: "array", str: "string", bool: "bool", int: "number", float: "number"}.get(
        type(value), "null")
    return APIError(400, f"json: cannot unmarshal {got} into Go struct field {field} of type {want}", details={})


def _check_types(node: Obj) -> None:
    """The typed decode of the fields flannel touches: what a Go struct would refuse."""
    meta = node.get("metadata") or {}
    for field in ("labels", "annotations"):
        value = meta.get(field)
        if value is None:
            continue
        if not isinstance(value, dict):
            raise _type_error(f"ObjectMeta.metadata.{field}", "map[string]string", value)
        for v in value.values():
            if not isinstance(v, str):
                raise _type_error(f"ObjectMeta.metadata.{field}", "string", v)
    spec = node.get("spec") or {}
    if "podCIDR" in spec and not isinstance(spec["podCIDR"], str):
        raise _type_error("NodeSpec.spec.podCIDR", "string", spec["podCIDR"])
    cidrs = spec.get("podCIDRs")
    if cidrs is not None and not (isinstance(cidrs, list) and all(isinstance(c, str) for c in cidrs)):
        raise _type_error("NodeSpec.spec.podCIDRs", "[]string", cidrs)
    conditions = (node.get("status") or {}).get("conditions")
    if conditions is None:
        return
    if not isinstance(conditions, list):
        raise _type_error("NodeStatus.status.conditions", "[]v1.NodeCondition", conditions)
    for cond in conditions:
        if not isinstance(cond, dict):
            raise _type_error("NodeStatus.status.conditions", "v1.NodeCondition", cond)
        for k, v in cond.items():
            if v is not None and not isinstance(v, str):
                raise _type_error(f"NodeCondition.status.conditions.{k}", "string", v)


def _validate_pod_cidrs(name: str, old: Obj, new: Obj) -> None:
    """ValidateNode / ValidateNodeUpdate for podCIDR(s): valid CIDRs, ≤ 2, one per family, podCIDR ==
    podCIDRs[0], and once set they may not change ("node updates may not change podCIDR except from
    \"\" to valid")."""
    spec, old_spec = new.get("spec") or {}, old.get("spec") or {}
    cidrs = spec.get("podCIDRs") or []
    families = []
    for i, text in enumerate(cidrs):
        try:
            families.append(ipaddress.ip_network(text, strict=True).version)
        except ValueError:
            raise _invalid(name, f"spec.podCIDRs[{i}]", text, "must be a valid CIDR") from None
    if len(cidrs) > 2 or (len(cidrs) == 2 and families[0] == families[1]):
        raise _invalid(name, "spec.podCIDRs", cidrs, "may specify no more than one CIDR for each IP family")
    if cidrs and spec.get("podCIDR", cidrs[0]) != cidrs[0]:
        raise _invalid(name, "spec.podCIDR", spec.get("podCIDR"), "must match the first entry of spec.podCIDRs")
    old_cidrs = old_spec.get("podCIDRs") or []
    if old_cidrs and cidrs != old_cidrs:
        raise APIError(422, f'Node "{name}" is invalid: spec.podCIDRs: Forbidden: node updates may not change '
                       'podCIDR except from "" to valid', details={"name": name, "kind": "Node"})


@contextmanager
def running(**kwargs: Any) -> Iterator[KubeAPIServer]:
    """``with running(workdir=d) as srv:`` — started, and stopped even on failure."""
    srv = KubeAPIServer(**kwargs).start()
    try:
        yield srv
    finally:
        srv.stop()
