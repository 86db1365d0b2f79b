"""Reading kernel state inside test namespaces, normalised for side-by-side comparison."""
from __future__ import annotations

import re
import subprocess
from typing import Any

from harness import Netns


def links(ns: Netns) -> list[dict[str, Any]]:
    return ns.json("ip", "-j", "-d", "link", "show")


def link(ns: Netns, name: str) -> dict[str, Any] | None:
    return next((lk for lk in links(ns) if lk["ifname"] == name), None)


def addrs(ns: Netns, name: str) -> list[str]:
    data = ns.json("ip", "-j", "addr", "show", "dev", name)
    return sorted(f"{a['local']}/{a['prefixlen']}" for d in data for a in d.get("addr_info", [])
                  if a.get("scope") != "link")


def routes(ns: Netns, family: str = "-4") -> list[str]:
    out = ns.run("ip", family, "route", "show").stdout
    return sorted(line.strip() for line in out.splitlines())


def sysctl(ns: Netns, key: str) -> str:
    return ns.run("cat", "/proc/sys/" + key.replace(".", "/"), check=False).stdout.strip()


def iptables_nat(ns: Netns, family: int = 4) -> list[str]:
    tool = "iptables-save" if family == 4 else "ip6tables-save"
    out = ns.run(tool, "-t", "nat").stdout
    return [line for line in out.splitlines() if line and not line.startswith("#")]


def nft(ns: Netns) -> str:
    return ns.run("nft", "list", "ruleset").stdout


def veths_on(ns: Netns, bridge: str) -> list[str]:
    return [lk["ifname"] for lk in links(ns) if lk.get("master") == bridge]


def normalise(text: str) -> str:
    text = re.sub(r"veth[0-9a-f]{8}", "vethXXXXXXXX", text)
    return re.sub(r"([0-9a-f]{2}:){5}[0-9a-f]{2}", "MAC", text)


def ping(ns: Netns, target: str, count: int = 1) -> bool:
    return ns.run("ping", "-c", str(count), "-W", "2", target, check=False).returncode == 0


def veth_pair(a: Netns, a_if: str, a_addr: str, b: Netns, b_if: str, b_addr: str) -> None:
    """Join two namespaces with a veth, addresses given as CIDRs."""
    subprocess.run(["ip", "-n", a.name, "link", "add", a_if, "type", "veth", "peer", "name", b_if,
                    "netns", b.name], check=True)
    for ns, ifname, addr in ((a, a_if, a_addr), (b, b_if, b_addr)):
        ns.run("ip", "addr", "add", addr, "dev", ifname)
        ns.run("ip", "link", "set", ifname, "up")
