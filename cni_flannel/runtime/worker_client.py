"""The plugin side of the warm worker: standard library C modules only.

It runs before anything else on every plugin exec, so it avoids even ``socket``
and ``typing`` (~20 ms each when frozen): ``_socket``, ``_struct`` and ``marshal``
are built in. The protocol and the worker itself are in ``worker.py``.
"""
from __future__ import annotations

import _socket
import _struct
import marshal
import os
import sys

from .. import worker_socket_path as socket_path

CONNECT_TIMEOUT = 0.2  # seconds to wait for READY before running in-process
_LEN = _struct.Struct("!I")


def build_id() -> str:
    """Identifies the code: frozen builds carry one; from source, the package files' stats."""
    override = os.environ.get("CNI_FLANNEL_BUILD_ID")
    if override:
        return override
    here = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    try:
        with open(os.path.join(here, "BUILD_ID")) as f:
            return f.read().strip()
    except OSError:
        pass
    import hashlib

    h = hashlib.sha256()
    for root, _dirs, files in sorted(os.walk(here)):
        for name in sorted(files):
            if name.endswith(".py"):
                st = os.stat(os.path.join(root, name))
                h.update(f"{root}/{name}:{st.st_size}:{st.st_mtime_ns}".encode())
    return "src-" + h.hexdigest()[:16]


def send(sock: _socket.socket, payload: bytes, fds: list[int] | None = None) -> None:
    data = _LEN.pack(len(payload)) + payload
    if fds:
        anc = [(_socket.SOL_SOCKET, _socket.SCM_RIGHTS, _struct.pack(f"{len(fds)}i", *fds))]
        sent = sock.sendmsg([data], anc)
        data = data[sent:]
    while data:
        data = data[sock.send(data):]


def recv_exact(sock: _socket.socket, n: int) -> bytes:
    buf = b""
    while len(buf) < n:
        chunk = sock.recv(n - len(buf))
        if not chunk:
            raise EOFError("connection closed")
        buf += chunk
    return buf


def recv(sock: _socket.socket) -> bytes:
    (n,) = _LEN.unpack(recv_exact(sock, 4))
    if n > 16 << 20:
        raise ValueError("message too large")
    return recv_exact(sock, n)


def try_worker(argv: list[str]) -> int | None:
    """Run this call in the worker; None means "not served, run in-process"."""
    if os.environ.get("CNI_FLANNEL_WORKER", "").lower() in ("0", "off", "false", "no"):
        return None
    path = socket_path()
    try:
        st = os.stat(path)
    except OSError:
        return None
    if st.st_uid != 0 and st.st_uid != os.geteuid():
        return None  # a socket some other user made: never trust it
    stdin = sys.stdin.buffer.read()
    sys.stdin = _replay_stdin(stdin)  # an in-process fallback reads the same bytes
    sock = _socket.socket(_socket.AF_UNIX, _socket.SOCK_STREAM)
    sock.settimeout(CONNECT_TIMEOUT)
    fds: list[int] = []
    try:
        sock.connect(path)
        # marshal is built in: json alone would cost ~15 ms here
        request = {"argv": argv, "env": dict(os.environ), "cwd": os.getcwd(), "build": build_id(), "stdin": stdin}
        send(sock, marshal.dumps(request))
        if recv(sock) != b"READY":
            return None
        sock.settimeout(None)  # committed: from GO on, the worker runs the call
        fds = [os.open("/proc/self/ns/net", os.O_RDONLY), os.open("/proc/self/ns/mnt", os.O_RDONLY)]
        sys.stdout.flush()
        sys.stderr.flush()
        send(sock, b"GO", [1, 2, *fds])
    except (OSError, EOFError, ValueError):
        sock.close()
        return None
    finally:
        for fd in fds:
            os.close(fd)
    try:
        return int(recv(sock).decode())
    except (OSError, EOFError, ValueError):
        # The worker died while running the call: say so as a CNI error; the runtime retries or DELs.
        sys.stdout.write('{\n    "cniVersion": "1.1.0",\n    "code": 11,\n'
                         '    "msg": "cni-flannel worker died while running the call",\n'
                         '    "details": "retry; set CNI_FLANNEL_WORKER=off to run plugins in-process"\n}')
        return 1
    finally:
        sock.close()


def _replay_stdin(data: bytes) -> object:
    import io

    return io.TextIOWrapper(io.BytesIO(data))
