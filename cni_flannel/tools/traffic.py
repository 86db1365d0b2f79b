"""Real traffic between namespaces for the demo and the tests: tiny TCP/UDP servers and a client."""
from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager


def serve(port: int, reply_text: str, proto: str) -> None:
    """Answer every TCP connection or UDP datagram with "<reply> <peer address>", forever."""
    import socket

    reply = reply_text.encode()
    fam = socket.AF_INET6 if proto.endswith("6") else socket.AF_INET
    any_addr = "::" if fam == socket.AF_INET6 else "0.0.0.0"
    if proto.startswith("udp"):
        s = socket.socket(fam, socket.SOCK_DGRAM)
        s.bind((any_addr, port))
        print("ready", flush=True)
        while True:
            _data, peer = s.recvfrom(2048)
            s.sendto(reply + b" " + peer[0].encode(), peer)
    s = socket.socket(fam, socket.SOCK_STREAM)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind((any_addr, port))
    s.listen(16)
    print("ready", flush=True)
    while True:
        c, peer = s.accept()
        c.sendall(reply + b" " + peer[0].encode())
        c.close()


def fetch(host: str, port: int, proto: str) -> int:
    import socket

    fam = socket.AF_INET6 if ":" in host else socket.AF_INET
    try:
        if proto == "udp":
            s = socket.socket(fam, socket.SOCK_DGRAM)
            s.settimeout(2)
            s.sendto(b"hi", (host, port))
            print(s.recvfrom(2048)[0].decode())
        else:
            s = socket.create_connection((host, port), timeout=2)
            print(s.recv(2048).decode())
    except OSError as exc:
        print("ERR", exc)
        return 1
    return 0


def self_command() -> list[str]:
    """How to run this multi-call program again: the frozen executable, or python -m."""
    if getattr(sys, "frozen", False):
        return [sys.executable]
    return [sys.executable, "-m", "cni_flannel"]


def main(argv: list[str]) -> int:
    """cni-flannel traffic serve PORT REPLY PROTO | traffic fetch HOST PORT PROTO"""
    if len(argv) == 4 and argv[0] == "serve":
        serve(int(argv[1]), argv[2], argv[3])
        return 0
    if len(argv) == 4 and argv[0] == "fetch":
        return fetch(argv[1], int(argv[2]), argv[3])
    print(main.__doc__, file=sys.stderr)
    return 2


@contextmanager
def server(netns: str, port: int, reply: str, proto: str = "tcp") -> Iterator[None]:
    """A server in namespace ``netns`` answering "<reply> <peer address>"."""
    proc = subprocess.Popen(["ip", "netns", "exec", netns, *self_command(), "traffic", "serve", str(port), reply,
                             proto], stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None
        if proc.stdout.readline().strip() != "ready":
            raise RuntimeError(f"server in {netns} did not start")
        yield
    finally:
        proc.kill()
        proc.wait(timeout=5)


def request(netns: str, host: str, port: int, proto: str = "tcp", tries: int = 2) -> str | None:
    """The server's reply, or None when nothing answered (bounded: 2 s per try)."""
    for _ in range(tries):
        out = subprocess.run(["ip", "netns", "exec", netns, *self_command(), "traffic", "fetch", host, str(port),
                              proto], capture_output=True, text=True, timeout=15, check=False)
        if out.returncode == 0:
            return out.stdout.strip()
        time.sleep(0.2)
    return None


def ping(netns: str, target: str, count: int = 1) -> bool:
    return subprocess.run(["ip", "netns", "exec", netns, "ping", "-c", str(count), "-W", "2", target],
                          capture_output=True, check=False).returncode == 0
