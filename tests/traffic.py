"""Real traffic between test namespaces: tiny TCP/UDP servers and clients, time-bounded."""
from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager

from harness import Netns

SERVER = r"""
import socket, sys, threading
port, reply, proto = int(sys.argv[1]), sys.argv[2].encode(), sys.argv[3]
fam = socket.AF_INET6 if proto.endswith("6") else socket.AF_INET
if proto.startswith("udp"):
    s = socket.socket(fam, socket.SOCK_DGRAM); s.bind(("::" if fam == socket.AF_INET6 else "0.0.0.0", port))
    print("ready", flush=True)
    while True:
        data, peer = s.recvfrom(2048); s.sendto(reply + b" " + peer[0].encode(), peer)
s = socket.socket(fam, socket.SOCK_STREAM); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("::" if fam == socket.AF_INET6 else "0.0.0.0", port)); s.listen(16)
print("ready", flush=True)
while True:
    c, peer = s.accept(); c.sendall(reply + b" " + peer[0].encode()); c.close()
"""

CLIENT = r"""
import socket, sys
host, port, proto = sys.argv[1], int(sys.argv[2]), sys.argv[3]
fam = socket.AF_INET6 if ":" in host else socket.AF_INET
try:
    if proto == "udp":
        s = socket.socket(fam, socket.SOCK_DGRAM); s.settimeout(2); s.sendto(b"hi", (host, port))
        print(s.recvfrom(2048)[0].decode())
    else:
        s = socket.create_connection((host, port), timeout=2); print(s.recv(2048).decode())
except OSError as e:
    print("ERR", e); sys.exit(1)
"""


@contextmanager
def server(ns: Netns, port: int, reply: str, proto: str = "tcp") -> Iterator[None]:
    proc = subprocess.Popen(["ip", "netns", "exec", ns.name, sys.executable, "-c", SERVER, str(port), reply, proto],
                            stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None
        assert proc.stdout.readline().strip() == "ready"
        yield
    finally:
        proc.kill()
        proc.wait(timeout=5)


def request(ns: Netns, host: str, port: int, proto: str = "tcp") -> str | None:
    """The server's reply ("<reply> <peer address>"), or None when nothing answered."""
    for _ in range(2):
        out = ns.run(sys.executable, "-c", CLIENT, host, str(port), proto, check=False, timeout=15)
        if out.returncode == 0:
            return out.stdout.strip()
        time.sleep(0.2)
    return None
