"""The few Kubernetes API calls the kube subnet manager makes, behind a small API.

Client library: lightkube (``lightkube>=1.0,<2``), for the client configuration only
(kubeconfig parsing, the in-cluster service account, TLS contexts with CA and client
certificates, token/basic auth) and its HTTP client, httpx2. The calls themselves are
plain JSON on that client: five requests whose bodies flannel needs byte-exact anyway.

Measured on this machine (Python 3.11.7, each installed alone with its dependencies;
import = the median of 5 fresh ``python3 -c`` runs; RSS = VmRSS after import, config
load and one list of 200 Nodes, median of 3; a bare interpreter is 13.2 MB):

=====================  =========  =======  ===============================================
library                import     RSS      fit
=====================  =========  =======  ===============================================
lightkube 1.0.1        133 ms     40.1 MB  sync Client; kubeconfig (token, tokenFile, client
                                           cert, CA, exec) and in-cluster; pagination
                                           (chunk_size); strategic PATCH on Node.Status; but
                                           its watch has no allowWatchBookmarks and on a 410
                                           it silently restarts from "now" (deletions in the
                                           gap are lost) and the SA token is re-read only
                                           after a 401
kubernetes 37.0.2      342 ms     69.3 MB  sync; everything we need (bookmarks, 410 raised,
                                           SA token re-read every minute) but 163 MB on disk
                                           (pydantic, aiohttp, requests, websocket-client)
kubernetes_asyncio     565 ms     75.7 MB  asyncio only: does not fit the threaded daemon
36.1.0
stdlib http.client     29 ms      20.3 MB  (not a client library: for scale)
=====================  =========  =======  ===============================================

Ours, measured the same way: importing cni_flannel.flanneld.subnet.kube costs 97 ms and
25.3 MB (lightkube is imported only for a kubeconfig); after config + one list of 200 Nodes,
40.3 MB with a kubeconfig, 34.2 MB in-cluster (httpx2 without lightkube).

So lightkube: the lightest of the three, sync, and well kept; we use its configuration
and transport and do the list/watch loop ourselves, which we need to own anyway (the
resume resourceVersion, bookmarks, the 410 re-list: §14 complaint 10 and the level-
triggered re-list). The service-account token is re-read whenever the file changes (a
stat per request) and after a 401, so a kubelet-rotated token is used at once.
"""
from __future__ import annotations

import json
import logging
import os
import socket
import ssl
import threading
from collections.abc import Generator, Iterator, Mapping
from typing import Any

import httpx2 as httpx

from .manager import TransientError

log = logging.getLogger("flanneld.kube")
# httpx2 logs every request at INFO: a watch reconnect or a re-list is ours to log, once
for _name in ("httpx2", "httpcore2"):
    logging.getLogger(_name).setLevel(logging.WARNING)

SERVICE_ACCOUNT_DIR = "/var/run/secrets/kubernetes.io/serviceaccount"
STRATEGIC = "application/strategic-merge-patch+json"


class ApiError(TransientError):
    """The API server answered with an error Status."""

    def __init__(self, code: int, reason: str, message: str, verb: str = "", resource: str = "") -> None:
        self.code, self.reason, self.message = code, reason, message
        self.verb, self.resource = verb, resource
        super().__init__(self.describe())

    def describe(self) -> str:
        if self.code == 403:
            return (f"RBAC: cannot {self.verb} resource {self.resource}: add `{self.verb}` on "
                    f"`{self.resource}` to the ClusterRole ({self.message})")
        if self.code == 401:
            return (f"unauthorized (401) to {self.verb} {self.resource}: the API server does not accept "
                    f"the token or client certificate ({self.message})")
        return f"{self.verb} {self.resource}: {self.code} {self.reason}: {self.message}"


class Gone(ApiError):
    """410: the resourceVersion (or continue token) is too old; list again."""


class Unreachable(TransientError):
    """No answer from the API server (connect, TLS, timeout, a cut stream)."""


def _status_error(code: int, body: bytes | Any, verb: str, resource: str) -> ApiError:
    reason, message = "", ""
    status = body
    if isinstance(body, bytes | str):
        try:
            status = json.loads(body)
        except ValueError:
            status = None
            message = (body.decode(errors="replace") if isinstance(body, bytes) else body).strip()[:200]
    if isinstance(status, dict):
        reason = str(status.get("reason") or "")
        message = str(status.get("message") or message)
        code = int(status.get("code") or code)
    cls = Gone if code == 410 else ApiError
    return cls(code, reason, message, verb, resource)


# ---------------------------------------------------------------- authentication

class TokenFileAuth(httpx.Auth):
    """A bearer token read from a file, again whenever the file changes and after a 401
    (client-go re-reads every minute; the kubelet rotates projected SA tokens)."""

    def __init__(self, path: str) -> None:
        self.path = path
        self._lock = threading.Lock()
        self._stamp: tuple[int, int, int] | None = None
        self._token = ""

    def token(self, force: bool = False) -> str:
        with self._lock:
            try:
                st = os.stat(self.path)
            except OSError as exc:
                if self._token:
                    return self._token  # the kubelet swaps the symlink: keep the last one meanwhile
                raise Unreachable(f"cannot read the token file {self.path}: {exc.strerror}") from None
            stamp = (st.st_ino, st.st_mtime_ns, st.st_size)
            if force or stamp != self._stamp:
                try:
                    with open(self.path, encoding="utf-8") as f:
                        self._token = f.read().strip()
                except OSError as exc:
                    if not self._token:
                        raise Unreachable(f"cannot read the token file {self.path}: {exc.strerror}") from None
                self._stamp = stamp
            return self._token

    def auth_flow(self, request: httpx.Request) -> Generator[httpx.Request, httpx.Response, None]:
        request.headers["Authorization"] = f"Bearer {self.token()}"
        response = yield request
        if response.status_code == 401:
            request.headers["Authorization"] = f"Bearer {self.token(force=True)}"
            yield request


class StaticTokenAuth(httpx.Auth):
    def __init__(self, token: str) -> None:
        self._header = f"Bearer {token}"

    def auth_flow(self, request: httpx.Request) -> Generator[httpx.Request, httpx.Response, None]:
        request.headers["Authorization"] = self._header
        yield request


# ---------------------------------------------------------------- configuration

class ConfigSourceError(ValueError):
    """No usable client configuration (the daemon: "Failed to create SubnetManager")."""


class ClientConfig:
    """Where the API server is and how to authenticate: built from a kubeconfig or in-cluster."""

    def __init__(self, server: str, verify: ssl.SSLContext | bool, auth: httpx.Auth | None, source: str) -> None:
        self.server, self.verify, self.auth, self.source = server.rstrip("/"), verify, auth, source


def load_config(kubeconfig_file: str = "", api_url: str = "", env: Mapping[str, str] | None = None,
                sa_dir: str = SERVICE_ACCOUNT_DIR) -> ClientConfig:
    """The reference's BuildConfigFromFlags, with two fixes (§1.1 ⚠):

    * ``KUBECONFIG`` is read when ``--kubeconfig-file`` is not given (the first existing file
      of the list);
    * ``--kube-api-url`` alone keeps the in-cluster credentials (the reference then sends
      no credentials at all); with a kubeconfig it overrides the server, as the reference.
    """
    env = os.environ if env is None else env
    path = kubeconfig_file or _first_existing(env.get("KUBECONFIG", ""))
    if not kubeconfig_file and env.get("KUBECONFIG") and not path:
        log.warning("KUBECONFIG=%s: no such file; trying the in-cluster config", env["KUBECONFIG"])
    if kubeconfig_file and not os.path.exists(kubeconfig_file):
        raise ConfigSourceError(f"fail to create kubernetes config: stat {kubeconfig_file}: no such file or directory")
    if path:
        return _from_kubeconfig(path, api_url)
    if not api_url:
        log.info("Neither --kubeconfig-file nor --kube-api-url nor KUBECONFIG was given: using the in-cluster "
                 "config (%s)", sa_dir)
    return in_cluster_config(sa_dir, env, api_url)


def _first_existing(value: str) -> str:
    for part in value.split(os.pathsep):
        if part and os.path.exists(part):
            return part
    return ""


def _from_kubeconfig(path: str, api_url: str) -> ClientConfig:
    from lightkube.config import client_adapter
    from lightkube.config.kubeconfig import KubeConfig
    from lightkube.config.models import User
    from lightkube.core.exceptions import ConfigError as LkConfigError

    try:
        single = KubeConfig.from_file(path).get()
    except (LkConfigError, OSError, ValueError, KeyError) as exc:
        raise ConfigSourceError(f"fail to create kubernetes config: {path}: {exc}") from None
    if single is None:
        raise ConfigSourceError(f"fail to create kubernetes config: {path} has no current context")
    user = single.user or User()
    try:
        verify = client_adapter.verify_cluster(single.cluster, user, single.abs_file)
    except (OSError, ssl.SSLError) as exc:
        raise ConfigSourceError(f"fail to create kubernetes config: {path}: TLS files: {exc}") from None
    auth: httpx.Auth | None
    if user.token_file:
        auth = TokenFileAuth(str(single.abs_file(user.token_file)))
    elif user.token:
        auth = StaticTokenAuth(user.token)
    else:
        try:
            auth = client_adapter.user_auth(user)
        except LkConfigError as exc:
            raise ConfigSourceError(f"fail to create kubernetes config: {path}: {exc}") from None
    server = api_url or single.cluster.server
    if not server:
        raise ConfigSourceError(f"fail to create kubernetes config: {path}: no server")
    return ClientConfig(server, verify, auth, f"kubeconfig {path}")


def in_cluster_config(sa_dir: str, env: Mapping[str, str], api_url: str = "") -> ClientConfig:
    """rest.InClusterConfig: KUBERNETES_SERVICE_HOST/PORT, ``sa_dir``/token (re-read as it rotates)
    and ``sa_dir``/ca.crt. With ``api_url`` (--kube-api-url) that server replaces the service's."""
    token_file = os.path.join(sa_dir, "token")
    ca_file = os.path.join(sa_dir, "ca.crt")
    explicit = bool(api_url)
    if not explicit:
        host, port = env.get("KUBERNETES_SERVICE_HOST", ""), env.get("KUBERNETES_SERVICE_PORT", "")
        if not host or not port:
            raise ConfigSourceError("fail to create kubernetes config: unable to load in-cluster configuration, "
                                    "KUBERNETES_SERVICE_HOST and KUBERNETES_SERVICE_PORT must be defined")
        api_url = f"https://[{host}]:{port}" if ":" in host else f"https://{host}:{port}"
    verify: ssl.SSLContext | bool = True
    if os.path.exists(ca_file):
        try:
            verify = ssl.create_default_context(cafile=ca_file)
        except (OSError, ssl.SSLError) as exc:
            raise ConfigSourceError(f"fail to create kubernetes config: {ca_file}: {exc}") from None
    if os.path.exists(token_file):
        return ClientConfig(api_url, verify, TokenFileAuth(token_file), f"in-cluster {sa_dir}")
    if explicit:
        log.warning("--kube-api-url %s without a kubeconfig and no service account token in %s: the requests "
                    "carry no credentials", api_url, sa_dir)
        return ClientConfig(api_url, verify, None, f"url {api_url}")
    raise ConfigSourceError(f"fail to create kubernetes config: open {token_file}: no such file or directory")


# ---------------------------------------------------------------- the client

class KubeClient:
    """Nodes: get, list (paginated), watch (bookmarks, resume), patch status; pods: get.

    Every method raises ApiError (a Status; Gone for 410) or Unreachable, both TransientError.
    """

    def __init__(self, config: ClientConfig, timeout: float = 10.0) -> None:
        self.config = config
        self.timeout = timeout
        self._http = httpx.Client(base_url=config.server, verify=config.verify, auth=config.auth,
                                  timeout=httpx.Timeout(timeout), trust_env=True)
        self._streams_lock = threading.Lock()
        self._streams: set[socket.socket] = set()

    @property
    def server(self) -> str:
        return self.config.server

    # -- plain requests
    def _request(self, method: str, path: str, verb: str, resource: str, *, params: dict[str, Any] | None = None,
                 body: Any = None, content_type: str = "") -> Any:
        headers = {"Accept": "application/json"}
        data = None
        if body is not None:
            data = json.dumps(body, separators=(",", ":")).encode()
            headers["Content-Type"] = content_type or "application/json"
        try:
            resp = self._http.request(method, path, params=params, content=data, headers=headers)
        except httpx.TransportError as exc:
            raise Unreachable(f"{verb} {resource}: {self.server}: {_transport_text(exc)}") from None
        if resp.status_code >= 400:
            raise _status_error(resp.status_code, resp.content, verb, resource)
        try:
            return resp.json()
        except ValueError:
            raise Unreachable(f"{verb} {resource}: the answer is not JSON") from None

    def get_node(self, name: str) -> dict[str, Any]:
        return self._request("GET", f"/api/v1/nodes/{name}", "get", "nodes")  # type: ignore[no-any-return]

    def get_pod(self, namespace: str, name: str) -> dict[str, Any]:
        return self._request("GET", f"/api/v1/namespaces/{namespace}/pods/{name}", "get", "pods")  # type: ignore[no-any-return]

    def patch_node_status(self, name: str, body: dict[str, Any]) -> dict[str, Any]:
        """A strategic-merge PATCH on the status subresource (the reference's only write: it needs
        just `nodes/status patch`, and annotations patched there persist)."""
        return self._request("PATCH", f"/api/v1/nodes/{name}/status", "patch", "nodes/status",  # type: ignore[no-any-return]
                             body=body, content_type=STRATEGIC)

    def list_nodes(self, limit: int = 500, field_selector: str = "",
                   resource_version: str = "") -> tuple[list[dict[str, Any]], str]:
        """All Nodes in pages of ``limit``; returns (items, the list's resourceVersion). A continue
        token that expired (410) restarts the listing: pages from two snapshots never mix.
        ``resource_version="0"`` is served from the API server's watch cache (no etcd read; the
        server then ignores ``limit``), as client-go's reflectors list."""
        for attempt in range(3):
            try:
                return self._list_pages(limit, field_selector, resource_version)
            except Gone:
                if attempt == 2:
                    raise
                log.info("node list: the continue token expired (410); listing again from the start")
        raise AssertionError("unreachable")

    def _list_pages(self, limit: int, field_selector: str, resource_version: str) -> tuple[list[dict[str, Any]], str]:
        items: list[dict[str, Any]] = []
        params: dict[str, Any] = {"limit": limit}
        if resource_version:
            params["resourceVersion"] = resource_version
        if field_selector:
            params["fieldSelector"] = field_selector
        while True:
            page = self._request("GET", "/api/v1/nodes", "list", "nodes", params=params)
            items.extend(page.get("items") or [])
            meta = page.get("metadata") or {}
            cont = meta.get("continue") or ""
            if not cont:
                return items, str(meta.get("resourceVersion") or "")
            params["continue"] = cont
            params.pop("resourceVersion", None)  # the token carries it

    # -- watch
    def watch_nodes(self, resource_version: str, timeout_s: int = 300,
                    bookmarks: bool = True) -> Iterator[tuple[str, dict[str, Any]]]:
        """Events (type, object) after ``resource_version`` until the server ends the stream
        (timeoutSeconds) or abort_watches(). An ERROR event raises ApiError (Gone for 410);
        a cut connection raises Unreachable; a clean end just returns."""
        params: dict[str, Any] = {"watch": "true", "resourceVersion": resource_version,
                                  "timeoutSeconds": timeout_s}
        if bookmarks:
            params["allowWatchBookmarks"] = "true"
        timeout = httpx.Timeout(self.timeout, read=timeout_s + 30.0)
        try:
            with self._http.stream("GET", "/api/v1/nodes", params=params, timeout=timeout,
                                   headers={"Accept": "application/json"}) as resp:
                if resp.status_code >= 400:
                    raise _status_error(resp.status_code, resp.read(), "watch", "nodes")
                sock = _socket_of(resp)
                self._track(sock, True)
                try:
                    yield from self._events(resp)
                finally:
                    self._track(sock, False)
        except httpx.TransportError as exc:
            raise Unreachable(f"watch nodes: {self.server}: {_transport_text(exc)}") from None
        except (OSError, ssl.SSLError) as exc:  # the socket shut by abort_watches
            raise Unreachable(f"watch nodes: stream closed: {exc}") from None

    def _events(self, resp: httpx.Response) -> Iterator[tuple[str, dict[str, Any]]]:
        for line in resp.iter_lines():
            if not line.strip():
                continue
            try:
                event = json.loads(line)
                etype, obj = str(event["type"]), event["object"]
            except (ValueError, KeyError, TypeError):
                log.warning("watch nodes: skipping a malformed event line: %.120s", line)
                continue
            if etype == "ERROR":
                raise _status_error(int(obj.get("code") or 500) if isinstance(obj, dict) else 500, obj,
                                    "watch", "nodes")
            if isinstance(obj, dict):
                yield etype, obj

    def _track(self, sock: socket.socket | None, add: bool) -> None:
        if sock is None:
            return
        with self._streams_lock:
            if add:
                self._streams.add(sock)
            else:
                self._streams.discard(sock)

    def abort_watches(self) -> None:
        """Cut every open watch stream (from another thread): the reader sees Unreachable."""
        with self._streams_lock:
            socks = list(self._streams)
        for sock in socks:
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass

    def close(self) -> None:
        self.abort_watches()
        self._http.close()


def _socket_of(resp: httpx.Response) -> socket.socket | None:
    stream = resp.extensions.get("network_stream")
    try:
        sock = stream.get_extra_info("socket") if stream is not None else None
    except Exception:  # a transport without one (tests' mock transports)
        return None
    return sock if isinstance(sock, socket.socket) else None


def _transport_text(exc: Exception) -> str:
    text = str(exc) or type(exc).__name__
    return f"{type(exc).__name__}: {text}" if type(exc).__name__ not in text else text
