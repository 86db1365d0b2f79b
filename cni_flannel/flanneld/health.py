"""/healthz and /readyz (flanneld-reference §1.4), on --healthz-ip:--healthz-port.

The bodies are the reference's. Better than the reference: /readyz is 200 only once
subnet.env is written **and** every known peer is programmed, and while it is not ready
the reasons follow the reference's first line, one per line.
"""
from __future__ import annotations

import threading
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

HEALTHY = "flanneld is running"
READY = "flanneld is ready"
NOT_READY = "flanneld is not ready yet"


class _Handler(BaseHTTPRequestHandler):
    server: _Server

    def _reply(self, code: int, body: str) -> None:
        data = body.encode()
        self.send_response(code)
        self.send_header("Content-Type", "text/plain; charset=utf-8")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(data)

    def _route(self) -> None:
        path = self.path.split("?", 1)[0]
        if path == "/healthz":
            self._reply(200, HEALTHY)
        elif path == "/readyz":
            problems = self.server.readiness()
            if problems:
                self._reply(503, "\n".join([NOT_READY, *problems]))
            else:
                self._reply(200, READY)
        else:
            self._reply(404, "404 page not found\n")

    # Go's default mux answers any method
    do_GET = do_POST = do_HEAD = do_PUT = do_DELETE = _route  # noqa: N815

    def log_message(self, format: str, *args: object) -> None:
        return None  # no access log on stderr: probes come every few seconds


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    readiness: Callable[[], list[str]]

    def server_bind(self) -> None:
        # HTTPServer.server_bind resolves the host name (socket.getfqdn): in a node namespace
        # without DNS that stalls start-up for seconds. The name is only used in CGI variables.
        import socketserver

        socketserver.TCPServer.server_bind(self)
        host, port = self.server_address[:2]
        self.server_name, self.server_port = str(host), int(port)


def serve(host: str, port: int, readiness: Callable[[], list[str]]) -> _Server:
    """Bind now (a bind error raises OSError for a clear fatal message), serve in a thread."""
    server = _Server((host, port), _Handler)
    server.readiness = readiness
    threading.Thread(target=server.serve_forever, name="healthz", daemon=True).start()
    return server
