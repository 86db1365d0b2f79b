"""Masquerade for a bridge's pods, iptables or nftables (Go pkg/ip/ipmasq_*_linux.go).

Both backends find their rules by name (iptables chain ``CNI-<hash>``) or by
comment (nftables), never by reading the pod's addresses: that is what makes
DEL work when the netns is already gone (the reference leaks, plugins#810).
"""
from __future__ import annotations

import ipaddress

from . import iptables, nftables

TYPE_CHECKING = False
if TYPE_CHECKING:  # typing costs ~2 ms per frozen exec; at run time a backend is just a class
    from typing import Protocol
else:
    Protocol = object

MULTICAST = {4: "224.0.0.0/4", 6: "ff00::/8"}
NFT_TABLE = "cni_plugins_masquerade"
NFT_CHAIN = "masq_checks"
IfaceAddr = ipaddress.IPv4Interface | ipaddress.IPv6Interface


def iptables_comment(network: str, container_id: str) -> str:
    return f'name: "{network}" id: "{container_id}"'


def nft_instance_hash(network: str, ifname: str, container_id: str) -> str:
    return iptables.hash_name("", network, 16) + "-" + iptables.hash_name("", f"{ifname}:{container_id}", 16)


def nft_comment(network: str, ifname: str, container_id: str) -> str:
    c = (f"{nft_instance_hash(network, ifname, container_id)}, net: {network.replace(chr(34), '')}, "
         f"if: {ifname.replace(chr(34), '')}, id: {container_id.replace(chr(34), '')}")
    return c[:128]


def _entry_rule(a: IfaceAddr, comment: str, chain: str) -> list[str]:
    """POSTROUTING: the pod's address jumps to its chain."""
    return ["-s", f"{a.ip}/{a.max_prefixlen}", "-m", "comment", "--comment", comment, "-j", chain]


def _chain_rules(a: IfaceAddr, comment: str) -> list[list[str]]:
    """The pod's chain: its own subnet is left alone, non-multicast traffic is masqueraded."""
    return [["-d", str(a.network), "-m", "comment", "--comment", comment, "-j", "ACCEPT"],
            ["!", "-d", MULTICAST[a.version], "-m", "comment", "--comment", comment, "-j", "MASQUERADE"]]


class MasqBackend(Protocol):
    def setup(self, addrs: list[IfaceAddr], network: str, ifname: str, container_id: str) -> None: ...
    def teardown(self, network: str, ifname: str, container_id: str) -> None: ...
    def check(self, addrs: list[IfaceAddr], network: str, ifname: str, container_id: str) -> list[str]: ...
    def gc(self, network: str, valid: set[tuple[str, str]]) -> None: ...


class IptablesMasq:
    def setup(self, addrs: list[IfaceAddr], network: str, ifname: str, container_id: str) -> None:
        chain = iptables.chain_name(network, container_id)
        comment = iptables_comment(network, container_id)
        with iptables.locked():
            for fam in (4, 6):
                fam_addrs = [a for a in addrs if a.version == fam]
                if not fam_addrs:
                    continue
                state = iptables.save(fam)
                batch = iptables.Batch()
                rules = list(state.chain_rules(chain)) if state.has_chain(chain) else []
                batch.new_chain(chain)  # flushes an existing chain: refill it without duplicates
                for a in fam_addrs:
                    rules += [rule for rule in _chain_rules(a, comment) if rule not in rules]
                for rule in rules:
                    batch.append(chain, rule)
                for a in fam_addrs:
                    entry = _entry_rule(a, comment, chain)
                    if not state.find("POSTROUTING", entry):
                        batch.append("POSTROUTING", entry)
                batch.run(fam)

    def teardown(self, network: str, ifname: str, container_id: str) -> None:
        chain = iptables.chain_name(network, container_id)
        with iptables.locked():
            for fam in (4, 6):
                if not iptables.available(fam):
                    continue
                state = iptables.save(fam)
                batch = iptables.Batch()
                for rule in state.jumps_to("POSTROUTING", chain):
                    batch.delete("POSTROUTING", rule)
                if state.has_chain(chain):
                    batch.flush(chain)
                    batch.delete_chain(chain)
                batch.run(fam)

    def check(self, addrs: list[IfaceAddr], network: str, ifname: str, container_id: str) -> list[str]:
        chain = iptables.chain_name(network, container_id)
        comment = iptables_comment(network, container_id)
        missing = []
        for fam in (4, 6):
            fam_addrs = [a for a in addrs if a.version == fam]
            if not fam_addrs:
                continue
            state = iptables.save(fam)
            for a in fam_addrs:
                if not state.find("POSTROUTING", _entry_rule(a, comment, chain)):
                    missing.append(f"POSTROUTING -s {a.ip} -j {chain}")
                if not state.find(chain, _chain_rules(a, comment)[0]):
                    missing.append(f"{chain} -d {a.network} -j ACCEPT")
        return missing

    def gc(self, network: str, valid: set[tuple[str, str]]) -> None:
        """Remove chains of this network whose container id is not valid (found by comment)."""
        valid_ids = {cid for cid, _ in valid}
        prefix = f'name: "{network}" id: "'
        with iptables.locked():
            for fam in (4, 6):
                if not iptables.available(fam):
                    continue
                state = iptables.save(fam)
                batch = iptables.Batch()
                dead: set[str] = set()
                for rule in state.chain_rules("POSTROUTING"):
                    comment = _comment_of(rule)
                    if comment.startswith(prefix) and rule[-2] == "-j":
                        cid = comment[len(prefix):-1]
                        if cid not in valid_ids and rule[-1] == iptables.chain_name(network, cid):
                            batch.delete("POSTROUTING", rule)
                            dead.add(rule[-1])
                for chain in sorted(dead):
                    if state.has_chain(chain):
                        batch.flush(chain)
                        batch.delete_chain(chain)
                batch.run(fam)


def _comment_of(rule: list[str]) -> str:
    try:
        return rule[rule.index("--comment") + 1]
    except (ValueError, IndexError):
        return ""


class NftablesMasq:
    def setup(self, addrs: list[IfaceAddr], network: str, ifname: str, container_id: str) -> None:
        stale = self._find(nft_instance_hash(network, ifname, container_id))
        comment = nftables.quote_comment(nft_comment(network, ifname, container_id))
        lines = [
            f'add table inet {NFT_TABLE} {{ comment "Masquerading for plugins from '
            f'github.com/containernetworking/plugins" ; }}',
            f'add chain inet {NFT_TABLE} {NFT_CHAIN} {{ comment "Masquerade traffic from certain IPs to any '
            f'(non-multicast) IP outside their subnet" ; }}',
            f"add chain inet {NFT_TABLE} postrouting {{ type nat hook postrouting priority srcnat ; }}",
            f"flush chain inet {NFT_TABLE} postrouting",
            f"add rule inet {NFT_TABLE} postrouting ip daddr == 224.0.0.0/4 return",
            f"add rule inet {NFT_TABLE} postrouting ip6 daddr == ff00::/8 return",
            f"add rule inet {NFT_TABLE} postrouting goto {NFT_CHAIN}",
        ]
        lines += [f"delete rule inet {NFT_TABLE} {NFT_CHAIN} handle {r.handle}" for r in stale]
        for a in addrs:
            ip = "ip" if a.version == 4 else "ip6"
            lines.append(f"add rule inet {NFT_TABLE} {NFT_CHAIN} {ip} saddr == {a.ip} {ip} daddr != "
                         f"{a.network} masquerade comment {comment}")
        nftables.run_script("\n".join(lines) + "\n")

    @staticmethod
    def _find(prefix: str) -> list[nftables.NftRule]:
        return [r for r in nftables.list_rules("inet", NFT_TABLE, NFT_CHAIN) if r.comment.startswith(prefix)]

    def teardown(self, network: str, ifname: str, container_id: str) -> None:
        if not nftables.available():
            return
        rules = self._find(nft_instance_hash(network, ifname, container_id))
        if rules:
            nftables.run_script("".join(f"delete rule inet {NFT_TABLE} {NFT_CHAIN} handle {r.handle}\n"
                                        for r in rules))

    def check(self, addrs: list[IfaceAddr], network: str, ifname: str, container_id: str) -> list[str]:
        rules = self._find(nft_instance_hash(network, ifname, container_id))
        return [] if len(rules) >= len(addrs) else [f"nft {NFT_TABLE} {NFT_CHAIN} rules for {container_id}"]

    def gc(self, network: str, valid: set[tuple[str, str]]) -> None:
        if not nftables.available():
            return
        keep = {nft_comment(network, ifname, cid) for cid, ifname in valid}
        rules = [r for r in self._find(iptables.hash_name("", network, 16)) if r.comment not in keep]
        if rules:
            nftables.run_script("".join(f"delete rule inet {NFT_TABLE} {NFT_CHAIN} handle {r.handle}\n"
                                        for r in rules))


def choose(name: str | None) -> MasqBackend:
    """ipMasqBackend: explicit, or iptables unless only nftables is usable (the reference's choice)."""
    if name == "nftables" or (name is None and not iptables.available() and nftables.available()):
        return NftablesMasq()
    return IptablesMasq()


def teardown_all(network: str, ifname: str, container_id: str) -> None:
    """DEL tries both backends, as the reference does."""
    if iptables.available():
        IptablesMasq().teardown(network, ifname, container_id)
    NftablesMasq().teardown(network, ifname, container_id)
