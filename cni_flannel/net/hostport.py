"""hostPort forwarding backends for portmap: iptables and nftables (cni-reference §5.2, §5.3).

Both find a container's rules by its id (iptables: the ``CNI-DN-<hash>`` chain
and its comment; nftables: the rule comment), so DEL needs neither prevResult
nor the netns. All rules of one verb go in as one batch.
"""
from __future__ import annotations

import ipaddress

from ..records import field, record
from . import iptables, nftables

TYPE_CHECKING = False
if TYPE_CHECKING:  # typing costs ~2 ms per frozen exec; at run time a backend is just a class
    from typing import Protocol
else:
    Protocol = object

TOP_DNAT = "CNI-HOSTPORT-DNAT"
SETMARK = "CNI-HOSTPORT-SETMARK"
MASQ = "CNI-HOSTPORT-MASQ"
OLD_TOP_SNAT = "CNI-HOSTPORT-SNAT"
NFT_TABLE = "cni_hostport"


@record
class Mapping:
    host_port: int
    container_port: int
    protocol: str
    host_ip: str = ""


@record
class PortMapSpec:
    network: str
    container_id: str
    mappings: list[Mapping]
    snat: bool = True
    masq_all: bool = False
    mark_bit: int = 13
    external_setmark: str | None = None
    conditions_v4: list[str] = field(default_factory=list)
    conditions_v6: list[str] = field(default_factory=list)

    def conditions(self, fam: int) -> list[str]:
        return self.conditions_v4 if fam == 4 else self.conditions_v6

    def mappings_for(self, fam: int) -> list[tuple[Mapping, str | None]]:
        """(mapping, destination host IP or None); other-family hostIPs are skipped, as in Go."""
        out = []
        for m in self.mappings:
            dst = None
            if m.host_ip:
                hip = ipaddress.ip_address(m.host_ip)
                if hip.version != fam:
                    continue
                if not hip.is_unspecified:
                    dst = m.host_ip
            out.append((m, dst))
        return out


def _ip_port(ip: str, port: int) -> str:
    return f"[{ip}]:{port}" if ":" in ip else f"{ip}:{port}"


class HostPortBackend(Protocol):
    def forward(self, spec: PortMapSpec, container: ipaddress.IPv4Interface | ipaddress.IPv6Interface) -> None: ...
    def unforward(self, network: str, container_id: str) -> None: ...
    def check(self, spec: PortMapSpec, container: ipaddress.IPv4Interface | ipaddress.IPv6Interface) -> list[str]: ...
    def gc(self, network: str, valid_ids: set[str]) -> None: ...


# -- iptables -----------------------------------------------------------------------------------

def dn_chain(network: str, container_id: str) -> str:
    return iptables.chain_name(network, container_id, "CNI-DN-")


def _mark(bit: int) -> str:
    v = 1 << bit
    return f"{v:#x}/{v:#x}"


def _dn_comment(spec: PortMapSpec) -> str:
    return f'dnat name: "{spec.network}" id: "{spec.container_id}"'[:256]


def _split_ports(ports: list[int]) -> list[str]:
    """multiport takes at most 15 ports per rule."""
    return [",".join(str(p) for p in ports[i:i + 15]) for i in range(0, len(ports), 15)]


def iptables_rules(spec: PortMapSpec, container: ipaddress.IPv4Interface | ipaddress.IPv6Interface
                   ) -> tuple[list[list[str]], list[list[str]]]:
    """fillDnatRules: (entry rules for CNI-HOSTPORT-DNAT without -j, rules of CNI-DN-<hash>)."""
    fam = container.version
    comment = _dn_comment(spec)
    setmark = spec.external_setmark or SETMARK
    by_proto: dict[str, list[int]] = {}
    for m in spec.mappings:
        by_proto.setdefault(m.protocol, []).append(m.host_port)
    entries = []
    for proto in sorted(by_proto):
        for ports in _split_ports(by_proto[proto]):
            entries.append(["-m", "comment", "--comment", comment, "-m", "multiport", "-p", proto,
                            "--destination-ports", ports, *spec.conditions(fam)])
    rules: list[list[str]] = []
    for m, dst in spec.mappings_for(fam):
        base = ["-p", m.protocol, "--dport", str(m.host_port)] + (["-d", dst] if dst else [])
        if spec.snat:
            masq_cidr = ("0.0.0.0/0" if fam == 4 else "::/0") if spec.masq_all else str(container)
            rules.append([*base, "-s", masq_cidr, "-j", setmark])
            if fam == 4 and not spec.masq_all:
                rules.append([*base, "-s", "127.0.0.1", "-j", setmark])
        rules.append([*base, "-j", "DNAT", "--to-destination", _ip_port(str(container.ip), m.container_port)])
    return entries, rules


def _canon(rule: list[str]) -> list[str]:
    """What iptables-save prints for a rule we wrote: addresses get prefixes, -p goes first,
    --dport gains its implicit -m <proto>, multiport's option is spelled --dports."""
    out: list[str] = []
    head: list[str] = []
    i = 0
    proto = None
    while i < len(rule):
        a = rule[i]
        if a in ("-s", "-d") and i + 1 < len(rule):
            v = rule[i + 1]
            if "/" not in v:
                v = f"{v}/{ipaddress.ip_address(v).max_prefixlen}"
            else:
                v = str(ipaddress.ip_network(v, strict=False))
            head += [a, v]
            i += 2
            continue
        if a == "-p":
            proto = rule[i + 1]
            i += 2
            continue
        if a == "--dport" and proto:
            out += ["-m", proto, "--dport", rule[i + 1]]
            i += 2
            continue
        if a == "--destination-ports":
            out += ["--dports", rule[i + 1]]
            i += 2
            continue
        out.append(a)
        i += 1
    # iptables-save order: -s, -d, -p, then the matches in the order given
    src = head[head.index("-s"):head.index("-s") + 2] if "-s" in head else []
    dst = head[head.index("-d"):head.index("-d") + 2] if "-d" in head else []
    return src + dst + (["-p", proto] if proto else []) + out


class IptablesHostPort:
    def forward(self, spec: PortMapSpec, container: ipaddress.IPv4Interface | ipaddress.IPv6Interface) -> None:
        fam = container.version
        entries, rules = iptables_rules(spec, container)
        chain = dn_chain(spec.network, spec.container_id)
        mark = _mark(spec.mark_bit)
        with iptables.locked():
            state = iptables.save(fam)
            b = iptables.Batch()
            if spec.snat and not spec.external_setmark:
                if not state.has_chain(SETMARK):
                    b.new_chain(SETMARK)
                setmark_rule = ["-m", "comment", "--comment", "CNI portfwd masquerade mark", "-j", "MARK",
                                "--set-xmark", mark]
                if not state.find(SETMARK, setmark_rule):
                    b.append(SETMARK, setmark_rule)
                if not state.has_chain(MASQ):
                    b.new_chain(MASQ)
                masq_rule = ["-m", "mark", "--mark", mark, "-j", "MASQUERADE"]
                if not state.find(MASQ, masq_rule):
                    b.append(MASQ, masq_rule)
                entry = ["-m", "comment", "--comment", "CNI portfwd requiring masquerade", "-j", MASQ]
                if not state.find("POSTROUTING", entry):
                    b.insert("POSTROUTING", entry)
            if not state.has_chain(TOP_DNAT):
                b.new_chain(TOP_DNAT)
            for entry_chain in ("PREROUTING", "OUTPUT"):
                top = ["-m", "addrtype", "--dst-type", "LOCAL", "-j", TOP_DNAT]
                if not state.find(entry_chain, top):
                    b.append(entry_chain, top)
            # The container chain is rewritten whole, so a repeated ADD converges.
            for old in state.jumps_to(TOP_DNAT, chain):
                b.delete(TOP_DNAT, old)
            b.new_chain(chain)
            for rule in rules:
                b.append(chain, rule)
            for entry in reversed(entries):  # prepended: the newest container using a port wins
                b.insert(TOP_DNAT, [*entry, "-j", chain])
            b.run(fam)

    def unforward(self, network: str, container_id: str) -> None:
        chain = dn_chain(network, container_id)
        old_snat = iptables.chain_name(network, container_id, "CNI-SN-")
        with iptables.locked():
            for fam in (4, 6):
                if not iptables.available(fam):
                    continue
                state = iptables.save(fam)
                b = iptables.Batch()
                for name, entry_chains in ((chain, (TOP_DNAT, "PREROUTING", "OUTPUT")),
                                           (old_snat, (OLD_TOP_SNAT, "POSTROUTING"))):
                    for ec in entry_chains:
                        for rule in state.jumps_to(ec, name):
                            b.delete(ec, rule)
                    if state.has_chain(name):
                        b.flush(name)
                        b.delete_chain(name)
                b.run(fam)

    def check(self, spec: PortMapSpec, container: ipaddress.IPv4Interface | ipaddress.IPv6Interface) -> list[str]:
        fam = container.version
        entries, rules = iptables_rules(spec, container)
        chain = dn_chain(spec.network, spec.container_id)
        state = iptables.save(fam)
        missing = []
        if not state.has_chain(chain):
            return [f"chain {chain} (IPv{fam})"]
        have = state.chain_rules(chain)
        missing += [f"{chain}: {' '.join(r)}" for r in rules if _canon(r) not in have]
        top = state.chain_rules(TOP_DNAT)
        missing += [f"{TOP_DNAT}: -j {chain}" for e in entries if _canon([*e, "-j", chain]) not in top]
        return missing

    def gc(self, network: str, valid_ids: set[str]) -> None:
        prefix = f'dnat name: "{network}" id: "'
        for fam in (4, 6):
            if not iptables.available(fam):
                continue
            dead = set()
            for rule in iptables.save(fam).chain_rules(TOP_DNAT):
                try:
                    comment = rule[rule.index("--comment") + 1]
                except (ValueError, IndexError):
                    continue
                if comment.startswith(prefix):
                    cid = comment[len(prefix):-1]
                    if cid not in valid_ids:
                        dead.add(cid)
            for cid in dead:
                self.unforward(network, cid)


# -- nftables -----------------------------------------------------------------------------------

class NftablesHostPort:
    """Tables ``ip cni_hostport`` and ``ip6 cni_hostport``, as in the reference's fixed version:
    no input hook, and only locally-addressed traffic is intercepted (fib daddr type local)."""

    def forward(self, spec: PortMapSpec, container: ipaddress.IPv4Interface | ipaddress.IPv6Interface) -> None:
        fam = container.version
        ipx, family = ("ip", "ip") if fam == 4 else ("ip6", "ip6")
        t = f"{family} {NFT_TABLE}"
        cond = " ".join(spec.conditions(fam))
        cond = cond + " " if cond else ""
        comment = nftables.quote_comment(spec.container_id)
        cip = str(container.ip)
        lines = [
            f'add table {t} {{ comment "CNI portmap plugin" ; }}',
            f"add chain {t} hostports",
            f"add chain {t} hostip_hostports",
            f"add chain {t} hostports_all",
            f"flush chain {t} hostports_all",
            f"add rule {t} hostports_all jump hostip_hostports",
            f"add rule {t} hostports_all jump hostports",
            f"add chain {t} prerouting {{ type nat hook prerouting priority dstnat ; }}",
            f"flush chain {t} prerouting",
            f"add rule {t} prerouting {cond}fib daddr type local jump hostports_all",
            f"add chain {t} output {{ type nat hook output priority -100 ; }}",
            f"flush chain {t} output",
            f"add rule {t} output {cond}fib daddr type local jump hostports_all",
        ]
        if spec.snat:
            lines.append(f"add chain {t} masquerading {{ type nat hook postrouting priority srcnat ; }}")
        for r in _nft_container_rules(f"{family} {NFT_TABLE}", spec.container_id):
            lines.append(f"delete rule {t} {r.chain} handle {r.handle}")
        for m, dst in spec.mappings_for(fam):
            match = f"{ipx} daddr {dst} " if dst else ""
            lines.append(f"add rule {t} hostports {match}{m.protocol} dport {m.host_port} dnat to "
                         f"{_ip_port(cip, m.container_port)} comment {comment}")
        if spec.snat:
            src = "" if spec.masq_all else f"{ipx} saddr {cip} "
            lines.append(f"add rule {t} masquerading {src}{ipx} daddr {cip} masquerade comment {comment}")
            if fam == 4 and not spec.masq_all:
                lines.append(f"add rule {t} masquerading ip saddr 127.0.0.1 ip daddr {cip} masquerade "
                             f"comment {comment}")
        nftables.run_script("\n".join(lines) + "\n")

    def unforward(self, network: str, container_id: str) -> None:
        if not nftables.available():
            return
        lines = []
        for family in ("ip", "ip6"):
            for r in _nft_container_rules(f"{family} {NFT_TABLE}", container_id):
                lines.append(f"delete rule {family} {NFT_TABLE} {r.chain} handle {r.handle}")
        if lines:
            nftables.run_script("\n".join(lines) + "\n")

    def check(self, spec: PortMapSpec, container: ipaddress.IPv4Interface | ipaddress.IPv6Interface) -> list[str]:
        family = "ip" if container.version == 4 else "ip6"
        rules = _nft_container_rules(f"{family} {NFT_TABLE}", spec.container_id)
        want_dnat = len(spec.mappings_for(container.version))
        got_dnat = sum(1 for r in rules if r.chain in ("hostports", "hostip_hostports"))
        missing = []
        if got_dnat < want_dnat:
            missing.append(f"{family} {NFT_TABLE} hostports: {want_dnat - got_dnat} dnat rule(s)")
        if spec.snat and not any(r.chain == "masquerading" for r in rules):
            missing.append(f"{family} {NFT_TABLE} masquerading")
        return missing

    def gc(self, network: str, valid_ids: set[str]) -> None:
        if not nftables.available():
            return
        lines = []
        for family in ("ip", "ip6"):
            for r in nftables.list_rules(family, NFT_TABLE):
                if r.chain in ("hostports", "hostip_hostports", "masquerading") and r.comment \
                        and r.comment not in valid_ids:
                    lines.append(f"delete rule {family} {NFT_TABLE} {r.chain} handle {r.handle}")
        if lines:
            nftables.run_script("\n".join(lines) + "\n")


def _nft_container_rules(table: str, container_id: str) -> list[nftables.NftRule]:
    family, name = table.split()
    return [r for r in nftables.list_rules(family, name)
            if r.comment == container_id and r.chain in ("hostports", "hostip_hostports", "masquerading")]
