"""MAC spoof check in nftables (Go pkg/link/spoofcheck.go): table ``bridge nat``.

Per attachment, chains ``cni-br-iface-<id>`` and ``cni-br-iface-<id>-mac``: frames
entering from the host veth pass only with the container's MAC.
"""
from __future__ import annotations

from . import nftables, spawn

TABLE = "nat"
BASE = "PREROUTING"


def _names(ref_id: str) -> tuple[str, str, str]:
    iface_chain = f"cni-br-iface-{ref_id}"
    return iface_chain, f"{iface_chain}-mac", f"macspoofchk-{ref_id}"


def setup(host_iface: str, mac: str, ref_id: str) -> None:
    iface_chain, mac_chain, comment = _names(ref_id)
    c = nftables.quote_comment(comment)
    nftables.run_script("\n".join([
        f"add table bridge {TABLE}",
        f"add chain bridge {TABLE} {BASE} {{ type filter hook prerouting priority -300 ; policy accept ; }}",
        f"add chain bridge {TABLE} {iface_chain}",
        f"add chain bridge {TABLE} {mac_chain}",
    ]) + "\n")
    nftables.run_script("\n".join([
        f"flush chain bridge {TABLE} {iface_chain}",
        f"flush chain bridge {TABLE} {mac_chain}",
        f'add rule bridge {TABLE} {BASE} iifname "{host_iface}" jump {iface_chain} comment {c}',
        f"add rule bridge {TABLE} {iface_chain} jump {mac_chain} comment {c}",
        f"add rule bridge {TABLE} {mac_chain} ether saddr {mac} return comment {c}",
        f"add rule bridge {TABLE} {mac_chain} drop comment {c}",
    ]) + "\n")


def teardown(ref_id: str) -> None:
    if not nftables.available():
        return
    iface_chain, mac_chain, _comment = _names(ref_id)
    lines = [f"delete rule bridge {TABLE} {BASE} handle {r.handle}"
             for r in nftables.list_rules("bridge", TABLE, BASE)
             if any(isinstance(e, dict) and e.get("jump", {}).get("target") == iface_chain for e in r.expr)]
    existing = {r.chain for r in nftables.list_rules("bridge", TABLE)}
    chains = {c for c in (iface_chain, mac_chain)}
    present = [c for c in chains if c in existing or _chain_exists(c)]
    lines += [f"delete chain bridge {TABLE} {c}" for c in sorted(present, key=len, reverse=False)
              if c == iface_chain] + [f"delete chain bridge {TABLE} {c}" for c in present if c == mac_chain]
    if lines:
        nftables.run_script("\n".join(lines) + "\n")


def _chain_exists(chain: str) -> bool:

    return spawn.run(["nft", "list", "chain", "bridge", TABLE, chain]).returncode == 0
