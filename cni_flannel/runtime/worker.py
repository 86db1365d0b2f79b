"""The optional warm worker: plugin code already imported, one forked child per call.

    cni-flannel worker [--socket /run/cni-flannel/worker.sock] [--idle 4]

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

The children are forked ahead of the calls (``--idle`` of them wait in accept()),
so a call never waits for a fork: the parent only tops the pool up. An idle child
dies with its parent (PR_SET_PDEATHSIG), so a killed worker leaves no listener.
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

CLONE_NEWNS = 0x00020000


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
    from ..net import netns

    netns.libc()  # loaded once here, so no child pays the dlopen for its setns and prctl calls
    for module in ("cni_flannel.net.link", "cni_flannel.net.addr", "cni_flannel.net.ipmasq",
                   "cni_flannel.net.hostport", "cni_flannel.net.spoofcheck", "cni_flannel.net.sysctl"):
        import_module(module)
    import_module("cni_flannel.net.rtnl")  # the plugins' netlink socket (pyroute2 is flanneld's)
    import_module("jsonschema")  # only used to word config errors, but cheap here


PR_SET_PDEATHSIG = 1
_PID = struct.Struct("i")


def serve(path: str, idle: int = 4) -> int:
    import gc
    import select
    import signal

    preload()
    gc.freeze()  # the children's collections then never walk (and copy-on-write) the preloaded heap
    my_build = build_id()
    srv = _listen(path)
    ready_r, ready_w = os.pipe()  # child -> parent: "I took a connection" (its pid); 0: stop
    waiting: set[int] = set()
    stop = {"flag": False}

    def on_term(signum: int, frame: Any) -> None:
        stop["flag"] = True
        os.write(ready_w, _PID.pack(0))  # wakes the select below

    signal.signal(signal.SIGTERM, on_term)
    signal.signal(signal.SIGINT, on_term)
    sys.stderr.write(f"cni-flannel worker: build {my_build}, listening on {path}\n")
    sys.stderr.flush()
    while not stop["flag"]:
        while len(waiting) < idle and not stop["flag"]:
            try:
                waiting.add(_fork_child(srv, ready_r, ready_w, my_build))
            except OSError:
                break  # out of processes: serve with what waits, retry after the next event
        readable, _, _ = select.select([ready_r], [], [], 1.0)
        if readable:
            data = os.read(ready_r, 4096)
            for (pid,) in _PID.iter_unpack(data[: len(data) // _PID.size * _PID.size]):
                waiting.discard(pid)
        _reap(waiting)  # an idle child that died (killed) is replaced on the next round
    for pid in waiting:  # calls in flight finish on their own; idle children go now
        try:
            os.kill(pid, signal.SIGTERM)
        except OSError:
            pass
    srv.close()
    try:
        os.unlink(path)
    except OSError:
        pass
    return 0


def _listen(path: str) -> socket.socket:
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
    return srv


def _reap(waiting: set[int]) -> None:
    while True:
        try:
            pid, _status = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return
        if pid == 0:
            return
        waiting.discard(pid)


def _fork_child(srv: socket.socket, ready_r: int, ready_w: int, my_build: str) -> int:
    parent = os.getpid()
    pid = os.fork()
    if pid:
        return pid
    code = 1
    try:
        import signal

        from ..net import netns

        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, signal.SIG_DFL)
        netns.libc().prctl(PR_SET_PDEATHSIG, int(signal.SIGKILL), 0, 0, 0)
        if os.getppid() != parent:  # the worker died before prctl took effect
            os._exit(0)
        os.close(ready_r)
        conn, _ = srv.accept()
        os.write(ready_w, _PID.pack(os.getpid()))
        os.close(ready_w)
        srv.close()
        if _peer_uid(conn) != 0:
            conn.close()
            os._exit(0)
        netns.libc().prctl(PR_SET_PDEATHSIG, 0, 0, 0, 0)  # a call in flight outlives a worker restart
        code = _child(conn, my_build)
    finally:
        os._exit(code)


def _child(conn: socket.socket, my_build: str) -> int:
    """One call: check, wait for GO, enter the caller's world, run, report the exit code."""
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
    _enter_mount_ns(mnt_fd)
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


def _enter_mount_ns(fd: int) -> None:
    from ..net.netns import _setns

    try:
        _setns(fd, CLONE_NEWNS)
    except OSError:
        # Same mount namespace as ours already (the usual case): nothing to do.
        if os.stat(f"/proc/self/fd/{fd}").st_ino != os.stat("/proc/self/ns/mnt").st_ino:
            raise


def main(argv: list[str]) -> int:
    import argparse

    p = argparse.ArgumentParser(prog="worker", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--socket", default=socket_path())
    p.add_argument("--idle", type=int, default=4, help="children forked ahead, waiting for calls (default 4)")
    a = p.parse_args(argv)
    if os.geteuid() != 0:
        print("the worker must run as root", file=sys.stderr)
        return 1
    return serve(a.socket, max(1, a.idle))
