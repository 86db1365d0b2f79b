"""The optional warm worker: plugin code already imported, one forked child per call.

    cni-flannel worker [--socket /run/cni-flannel/worker.sock]

A plugin binary first tries the socket (``try_worker``, standard library only).
It sends its argv, env, cwd, stdin and build id, plus over SCM_RIGHTS its stdout,
stderr and handles to its network and mount namespaces. The worker forks; the
child enters those namespaces and cwd and runs exactly the in-process code path,
writing to the caller's stdout/stderr, and returns the exit code.

Protocol on one SOCK_STREAM connection (every message a 4-byte length + payload):
  client -> request (marshal)           worker child -> "READY" (or "MISMATCH")
  client -> "GO" + 4 fds                worker child -> exit code (decimal)
Nothing runs before the client's GO, so a client that gave up (timeout) and
runs the plugin itself can never see it run twice. The fds travel only with GO:
a hung worker must not hold the runtime's stdout pipe open. Correctness never
depends on the worker: any failure before GO means the client runs in-process.
"""
from __future__ import annotations

import marshal
import os
import socket
import struct
import sys
from typing import Any

from .worker_client import _replay_stdin, build_id, recv_exact, socket_path
from .worker_client import recv as _recv
from .worker_client import send as _send

CLONE_NEWNET, CLONE_NEWNS = 0x40000000, 0x00020000


def _recv_with_fds(sock: socket.socket, max_fds: int = 4) -> tuple[bytes, list[int]]:
    msg, fds, _flags, _addr = socket.recv_fds(sock, 4, max_fds)
    if len(msg) < 4:
        msg += recv_exact(sock, 4 - len(msg))  # type: ignore[arg-type]
    (n,) = struct.unpack("!I", msg[:4])
    if n > 16 << 20:
        raise ValueError("message too large")
    return recv_exact(sock, n), list(fds)  # type: ignore[arg-type]


# -- worker -------------------------------------------------------------------------------------

def _peer_uid(conn: socket.socket) -> int:
    creds = conn.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
    _pid, uid, _gid = struct.unpack("3i", creds)
    return int(uid)


def preload() -> None:
    """Import everything a call may need, once."""
    from importlib import import_module

    from ..__main__ import COMMANDS, PLUGINS

    for module in (*PLUGINS.values(), COMMANDS["cnitool"]):
        import_module(module)
    import ctypes  # noqa: F401 - the child's setns of the mount namespace uses it

    for module in ("cni_flannel.net.link", "cni_flannel.net.addr", "cni_flannel.net.ipmasq",
                   "cni_flannel.net.hostport", "cni_flannel.net.spoofcheck", "cni_flannel.net.sysctl"):
        import_module(module)
    import_module("cni_flannel.net.rtnl")  # the plugins' netlink socket (pyroute2 is flanneld's)
    import_module("jsonschema")  # only used to word config errors, but cheap here


def serve(path: str) -> int:
    import signal

    preload()
    my_build = build_id()
    os.makedirs(os.path.dirname(path), mode=0o700, exist_ok=True)
    os.chmod(os.path.dirname(path), 0o700)
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass
    srv = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    old_umask = os.umask(0o177)
    try:
        srv.bind(path)
    finally:
        os.umask(old_umask)
    srv.listen(128)
    signal.signal(signal.SIGCHLD, signal.SIG_IGN)  # children are reaped by the kernel
    stop = {"flag": False}

    def on_term(signum: int, frame: Any) -> None:
        stop["flag"] = True
        srv.close()

    signal.signal(signal.SIGTERM, on_term)
    signal.signal(signal.SIGINT, on_term)
    sys.stderr.write(f"cni-flannel worker: build {my_build}, listening on {path}\n")
    sys.stderr.flush()
    while not stop["flag"]:
        try:
            conn, _ = srv.accept()
        except OSError:
            if stop["flag"]:
                break
            continue
        try:
            if _peer_uid(conn) != 0:
                conn.close()
                continue
            pid = os.fork()
        except OSError:
            conn.close()
            continue
        if pid == 0:
            srv.close()
            code = 1
            try:
                code = _child(conn, my_build)
            finally:
                os._exit(code)
        conn.close()
    try:
        os.unlink(path)
    except OSError:
        pass
    return 0


def _child(conn: socket.socket, my_build: str) -> int:
    """One call: check, wait for GO, enter the caller's world, run, report the exit code."""
    import signal

    signal.signal(signal.SIGCHLD, signal.SIG_DFL)  # subprocess.run must be able to wait
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    signal.signal(signal.SIGINT, signal.SIG_DFL)
    conn.settimeout(30)
    request = marshal.loads(_recv(conn))  # the peer is root (SO_PEERCRED), on our root-only socket
    if request.get("build") != my_build:
        _send(conn, b"MISMATCH")
        return 0
    _send(conn, b"READY")
    go, fds = _recv_with_fds(conn)
    if go != b"GO" or len(fds) != 4:
        return 0
    conn.settimeout(None)
    from ..cni import trace

    trace._spans.clear()  # the preload's import time is not this call's
    out_fd, err_fd, net_fd, mnt_fd = fds
    from ..net.netns import _setns

    _setns(net_fd)
    _setns_type(mnt_fd, CLONE_NEWNS)
    os.chdir(request["cwd"])
    sys.stdout.flush()
    sys.stderr.flush()
    os.dup2(out_fd, 1)
    os.dup2(err_fd, 2)
    for fd in fds:
        os.close(fd)
    os.environ.clear()
    os.environ.update(request["env"])
    os.environ["CNI_FLANNEL_SERVED_BY"] = "worker"
    sys.argv = list(request["argv"])
    sys.stdin = _replay_stdin(request["stdin"])
    from ..__main__ import dispatch

    try:
        code = dispatch(sys.argv)
    except SystemExit as exc:
        code = int(exc.code or 0) if isinstance(exc.code, int | type(None)) else 1
    sys.stdout.flush()
    sys.stderr.flush()
    _send(conn, str(code).encode())
    return 0


def _setns_type(fd: int, nstype: int) -> None:
    import ctypes

    libc = ctypes.CDLL(None, use_errno=True)
    if libc.setns(fd, nstype) != 0:
        err = ctypes.get_errno()
        # Same mount namespace as ours already (the usual case): nothing to do.
        if os.stat(f"/proc/self/fd/{fd}").st_ino != os.stat("/proc/self/ns/mnt").st_ino:
            raise OSError(err, os.strerror(err))


def main(argv: list[str]) -> int:
    import argparse

    p = argparse.ArgumentParser(prog="worker", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--socket", default=socket_path())
    a = p.parse_args(argv)
    if os.geteuid() != 0:
        print("the worker must run as root", file=sys.stderr)
        return 1
    return serve(a.socket)
