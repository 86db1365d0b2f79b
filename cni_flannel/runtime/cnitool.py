"""cnitool: run a network configuration against a network namespace (reference cnitool CLI).

    cnitool add|check|del <net> <netns-path>
    cnitool gc|status <net>

Environment: NETCONFPATH (default /etc/cni/net.d), CNI_PATH, CNI_IFNAME (eth0),
CNI_ARGS, CAP_ARGS (JSON capability args). Ours also reads CNI_CACHE_DIR
(default /var/lib/cni) and, for gc, CNI_VALID_ATTACHMENTS (JSON list).
"""
from __future__ import annotations

import hashlib
import json
import os
import sys

from .libcni import CNI, DEFAULT_CACHE_DIR, LibcniError, RuntimeConf, load_network

USAGE = """cnitool: Add, check, remove, gc or status network interfaces from a network namespace
  cnitool add   <net> <netns>
  cnitool check <net> <netns>
  cnitool del   <net> <netns>
  cnitool gc    <net> [<netns>]
  cnitool status <net> [<netns>]
"""


def container_id_for(netns: str) -> str:
    """cnitool- plus the first 20 hex characters of sha512 of the absolute netns path."""
    return "cnitool-" + hashlib.sha512(os.path.abspath(netns).encode()).hexdigest()[:20]


def parse_args(raw: str) -> list[tuple[str, str]]:
    pairs = []
    for item in raw.split(";"):
        if not item:
            continue
        k, sep, v = item.partition("=")
        if not sep:
            raise LibcniError(f"invalid CNI_ARGS pair {item!r}")
        pairs.append((k, v))
    return pairs


def main(argv: list[str]) -> int:
    if len(argv) < 2 or argv[0] not in ("add", "check", "del", "gc", "status"):
        sys.stderr.write(USAGE)
        return 1
    verb, net_name = argv[0], argv[1]
    if verb in ("add", "check", "del") and len(argv) < 3:
        sys.stderr.write(USAGE)
        return 1
    netns = os.path.abspath(argv[2]) if len(argv) > 2 else ""
    try:
        net = load_network(os.environ.get("NETCONFPATH", "/etc/cni/net.d"), net_name)
        cap_args = json.loads(os.environ["CAP_ARGS"]) if os.environ.get("CAP_ARGS") else {}
        rt = RuntimeConf(container_id=container_id_for(netns) if netns else "", netns=netns,
                         ifname=os.environ.get("CNI_IFNAME") or "eth0",
                         args=parse_args(os.environ.get("CNI_ARGS", "")), capability_args=cap_args)
        cni = CNI([p for p in os.environ.get("CNI_PATH", "").split(os.pathsep) if p],
                  os.environ.get("CNI_CACHE_DIR") or DEFAULT_CACHE_DIR)
        if verb == "add":
            result = cni.add(net, rt)
            if result is not None:
                sys.stdout.write(result.to_json(net.cni_version))
        elif verb == "check":
            cni.check(net, rt)
        elif verb == "del":
            cni.delete(net, rt)
        elif verb == "gc":
            cni.gc(net, json.loads(os.environ.get("CNI_VALID_ATTACHMENTS") or "[]"))
        else:
            cni.status(net)
    except LibcniError as exc:
        sys.stderr.write(f"{exc}\n")
        return 1
    except (ValueError, OSError) as exc:
        sys.stderr.write(f"cnitool: {exc}\n")
        return 1
    return 0
