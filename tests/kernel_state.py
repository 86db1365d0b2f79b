"""Every link and address attribute the kernel reports, for side-by-side comparison with Go (issue 20 §3).

``ip -j -d addr show`` gives each link with all its attributes (txqlen, flags, linkinfo,
bridge and bridge-port data, queues, GSO/GRO limits) and each address with all of its
own (broadcast, scope, label, lifetimes, flags). Everything is compared except the
fields below, which differ between any two runs of the same plugin:
"""
from __future__ import annotations

import re
from typing import Any

from harness import Netns

IGNORED_LINK_FIELDS = {
    "ifindex": "kernel numbering: depends on what else was created in the namespace before",
    "link_index": "the peer's ifindex (same reason)",
    "address": "random MACs (veth, and the bridge's MAC taken from its first port)",
    "perm_address": "random MACs",
    "ifname": "host veth names are veth<8 random hex>; the names we choose are compared via the result",
    "link": "the peer's name (a random veth name)",
}
IGNORED_BRIDGE_FIELDS = {
    "bridge_id": "priority + the bridge MAC (random)",
    "root_id": "priority + the bridge MAC (random)",
    "designated_root": "priority + the bridge MAC (random)",
    "designated_bridge": "priority + the bridge MAC (random)",
    "gc_timer": "a running timer: its value is the time since it fired",
    "hello_timer": "a running timer",
    "tcn_timer": "a running timer",
    "topology_change_timer": "a running timer",
    "forward_delay_timer": "a running timer",
    "hold_timer": "a running timer",
    "message_age_timer": "a running timer",
}
IGNORED_ADDR_FIELDS = {
    "local of fe80::/64": "the IPv6 link-local address is derived from the random MAC",
    "tentative": "IPv6 DAD in progress: a matter of how many ms after ADD the state is read",
}
MAC = re.compile(r"([0-9a-f]{1,2}:){5}[0-9a-f]{1,2}")


def _link(entry: dict[str, Any]) -> dict[str, Any]:
    out = {k: v for k, v in entry.items() if k not in IGNORED_LINK_FIELDS and k != "addr_info"}
    info = dict(out.get("linkinfo") or {})
    for part in ("info_data", "info_slave_data"):
        if isinstance(info.get(part), dict):
            info[part] = {k: v for k, v in info[part].items() if k not in IGNORED_BRIDGE_FIELDS}
    if info:
        out["linkinfo"] = info
    addrs = []
    for a in entry.get("addr_info", []):
        a = {k: v for k, v in a.items() if k != "tentative"}
        if str(a.get("local", "")).startswith("fe80:"):
            a["local"] = "fe80::(from MAC)"
        addrs.append(a)
    out["addr_info"] = sorted(addrs, key=lambda a: (a.get("family", ""), str(a.get("local"))))
    return out


def full_state(ns: Netns, names: dict[str, str]) -> dict[str, Any]:
    """Every link of ``ns`` (keyed by a role name: ``names`` maps real name -> role) with its addresses."""
    data = ns.json("ip", "-j", "-d", "addr", "show")
    out = {}
    for entry in data:
        role = names.get(entry["ifname"], entry["ifname"])
        out[role] = _link(entry)
        if "master" in out[role]:
            out[role]["master"] = names.get(out[role]["master"], out[role]["master"])
    return out


def differences(a: Any, b: Any, path: str = "") -> list[str]:
    """Readable differences between two states (for the assertion message)."""
    if isinstance(a, dict) and isinstance(b, dict):
        out = []
        for k in sorted(set(a) | set(b)):
            out += differences(a.get(k, "<absent>"), b.get(k, "<absent>"), f"{path}.{k}")
        return out
    if isinstance(a, list | tuple) and isinstance(b, list | tuple) and len(a) == len(b):
        return [d for i, (x, y) in enumerate(zip(a, b, strict=True)) for d in differences(x, y, f"{path}[{i}]")]
    return [] if a == b else [f"{path}: go={a!r} ours={b!r}"]
