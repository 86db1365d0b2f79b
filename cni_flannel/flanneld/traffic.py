"""flanneld's traffic rules: IP masquerade and forward rules (iptables or nftables), the blackhole route.

Reference: flanneld-reference §11 (pkg/trafficmngr/{iptables,nftables}@H), §1.2 steps 10–12.

The rules are the reference's, text for text (the golden ``iptables -S`` and ``nft list chain``
texts of ``e2e/rules.go@H``). N is the flannel Network, P the node's own subnet (the lease's
subnet), both printed in CIDR form as Go's ``IP4Net.String()`` prints them (``10.42.3.0/24``).

Where we do better (⚠ of §11 and §14 complaint 6):
* iptables resync compares the WHOLE chain (order, duplicates, foreign rules) and the jump
  (exactly one) with one ``iptables-save`` per table, and only when something differs replaces
  our chain in one ``iptables-restore --noflush`` batch. It never rebuilds when nothing changed
  (#1913, #1906, #2145) and never touches a chain but FLANNEL-POSTRTG / FLANNEL-FWD and the one
  jump to each (#1337).
* nft mode removes flannel's iptables chains and their jumps in nat AND filter (the reference
  looks for FLANNEL-FWD in nat and leaves the filter copy).
* nftables rules have the iptables semantics: the mark is masked (``meta mark & 0x00004000 ==
  0x00004000``, like ``--mark 0x4000/0x4000``) and rule 4 is ``saddr != N daddr P`` (the
  reference's ``saddr != P daddr N`` lets host→remote-pod traffic out unmasqueraded and makes
  the last rule unreachable). nftables chains are resynced too (the reference has no resync).
* The IPv6 decision: v6 rules only when the daemon passes the v6 network, which it does only
  with EnableIPv6. ⚠ The reference looks at whether IPv6Network is set, not at EnableIPv6, and
  so installs v6 rules with pod CIDR ``::/0`` for ``IPv6Network`` set with ``EnableIPv6:false``
  (§3).
* Recycle also removes the rules flanneld v0.10 (the seed) put straight into POSTROUTING and
  FORWARD, built from the current and the previous network/subnet (§11.1 "At 10").
"""
from __future__ import annotations

import ipaddress
import logging
import re
import shlex
import shutil
import subprocess
from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from ..cni.errors import CNIError
from ..net import iptables as ipt
from ..net import netlink

IPNet = ipaddress.IPv4Network | ipaddress.IPv6Network

POSTRTG = "FLANNEL-POSTRTG"
FWD = "FLANNEL-FWD"
MASQ_COMMENT = "flanneld masq"
FWD_COMMENT = "flanneld forward"
KUBE_PROXY_MARK = "0x4000/0x4000"  # kube-proxy's masquerade mark: avoids double NAT (§11.1)
MULTICAST = {4: "224.0.0.0/4", 6: "ff00::/8"}

NFT_TABLES = {4: ("ip", "flannel-ipv4"), 6: ("ip6", "flannel-ipv6")}
NFT_POSTRTG = "postrtg"
NFT_FORWARD = "forward"
NFT_POSTRTG_COMMENT = "chain to manage traffic masquerading by flannel"
NFT_FORWARD_COMMENT = "chain to accept flannel traffic"

RT_TABLE_MAIN = 254
RTN_BLACKHOLE = 6

log_default = logging.getLogger("flanneld.traffic")


class TrafficError(Exception):
    """A rule set could not be written (the daemon exits 1 at start-up, logs on resync)."""


def _family(net: IPNet) -> int:
    return net.version


def _fam_name(family: int) -> str:
    return f"IPv{family}"


# ---------------------------------------------------------------------------------------------
# iptables: the rules (pure)

@dataclass(frozen=True)
class ChainSpec:
    """One of our iptables chains, its rules in order, and the one jump to it from a built-in chain."""

    family: int
    table: str      # nat | filter
    chain: str      # FLANNEL-POSTRTG | FLANNEL-FWD
    hook: str       # POSTROUTING | FORWARD: the built-in chain holding the jump
    jump: tuple[str, ...]
    rules: tuple[tuple[str, ...], ...]

    def rule_lines(self) -> list[str]:
        """The rules as iptables-save (and ``iptables -S``) prints them."""
        return [f"-A {self.chain} {ipt.quote(list(r))}" for r in self.rules]

    def jump_line(self) -> str:
        return f"-A {self.hook} {ipt.quote(list(self.jump))}"

    def golden_s(self) -> list[str]:
        """What e2e/rules.go@H expects: the jump, ``-N`` and the chain's rules (``iptables -S``)."""
        return [self.jump_line(), f"-N {self.chain}", *self.rule_lines()]

    def label(self) -> str:
        return f"iptables {self.table} {self.chain} ({_fam_name(self.family)})"


def masq_rules(network: IPNet, subnet: IPNet, random_fully: bool) -> list[list[str]]:
    """FLANNEL-POSTRTG's rules in the order of masqRules@H (v6: the same with ff00::/8)."""
    n, p = str(network), str(subnet)
    c = ["-m", "comment", "--comment", MASQ_COMMENT]
    masq = ["-j", "MASQUERADE", "--random-fully"] if random_fully else ["-j", "MASQUERADE"]
    return [
        ["-m", "mark", "--mark", KUBE_PROXY_MARK, *c, "-j", "RETURN"],  # kube-proxy marked: no double NAT
        ["-s", p, "-d", n, *c, "-j", "RETURN"],         # no NAT inside the overlay
        ["-s", n, "-d", p, *c, "-j", "RETURN"],
        ["!", "-s", n, "-d", p, *c, "-j", "RETURN"],    # external traffic to our own pods
        ["-s", n, "!", "-d", MULTICAST[_family(network)], *c, *masq],  # pods to the outside, not multicast
        ["!", "-s", n, "-d", n, *c, *masq],             # the host to remote pods
    ]


def masq_spec(network: IPNet, subnet: IPNet, random_fully: bool) -> ChainSpec:
    return ChainSpec(_family(network), "nat", POSTRTG, "POSTROUTING",
                     ("-m", "comment", "--comment", MASQ_COMMENT, "-j", POSTRTG),
                     tuple(tuple(r) for r in masq_rules(network, subnet, random_fully)))


def forward_spec(network: IPNet) -> ChainSpec:
    n = str(network)
    c = ("-m", "comment", "--comment", FWD_COMMENT)
    return ChainSpec(_family(network), "filter", FWD, "FORWARD", (*c, "-j", FWD),
                     (("-s", n, *c, "-j", "ACCEPT"), ("-d", n, *c, "-j", "ACCEPT")))


def legacy_masq_rules(network: IPNet, subnet: IPNet) -> list[list[str]]:
    """The POSTROUTING rules of flanneld v0.10 (network/iptables.go@10), no chain, no comment."""
    n, p = str(network), str(subnet)
    return [["-s", n, "-d", n, "-j", "RETURN"], ["-s", n, "!", "-d", MULTICAST[_family(network)], "-j", "MASQUERADE"],
            ["!", "-s", n, "-d", p, "-j", "RETURN"], ["!", "-s", n, "-d", n, "-j", "MASQUERADE"]]


def legacy_forward_rules(network: IPNet) -> list[list[str]]:
    """The FORWARD rules flanneld v0.10 always installed."""
    return [["-s", str(network), "-j", "ACCEPT"], ["-d", str(network), "-j", "ACCEPT"]]


def _tokens(line: str) -> tuple[str, ...]:
    """A save line normalised to its arguments (quoting and spacing do not matter)."""
    try:
        return tuple(shlex.split(line))
    except ValueError:
        return (line,)


def _jumps(state: ipt.TableState, spec: ChainSpec) -> tuple[int, list[list[str]]]:
    """How many exact jumps to our chain the hook holds, and the other rules jumping to it."""
    exact, other = 0, []
    for rule in state.jumps_to(spec.hook, spec.chain):
        if tuple(rule) == spec.jump:
            exact += 1
        else:
            other.append(rule)
    return exact, other


def _jump_fix(batch: ipt.Batch, state: ipt.TableState, spec: ChainSpec) -> list[str]:
    """Batch lines so that exactly one jump (ours, appended when missing) remains; one note per fix."""
    exact, other = _jumps(state, spec)
    notes = []
    for rule in other:
        batch.delete(spec.hook, rule)
        notes.append(f"{spec.label()}: removed a foreign jump '-A {spec.hook} {ipt.quote(rule)}'")
    if exact == 0:
        batch.append(spec.hook, list(spec.jump))
        notes.append(f"{spec.label()}: the jump from {spec.hook} was missing; appended it")
    for _ in range(exact - 1):
        batch.delete(spec.hook, list(spec.jump))
    if exact > 1:
        notes.append(f"{spec.label()}: removed {exact - 1} duplicate jump(s) from {spec.hook}")
    return notes


def _chain_notes(spec: ChainSpec, state: ipt.TableState) -> list[str]:
    """What differs between our chain in the kernel and the desired rules; [] when equal."""
    if not state.has_chain(spec.chain):
        return [f"{spec.label()}: the chain was missing; recreated it"]
    want = [_tokens(x) for x in spec.rule_lines()]
    have = [_tokens(x) for x in state.raw.get(spec.chain, [])]
    if have == want:
        return []
    notes = []
    for line, toks in zip(spec.rule_lines(), want, strict=True):
        if toks not in have:
            notes.append(f"{spec.label()}: restored the missing rule '{line}'")
    for line, toks in zip(state.raw.get(spec.chain, []), have, strict=True):
        if toks not in want:
            notes.append(f"{spec.label()}: removed the unexpected rule '{line}'")
    seen: set[tuple[str, ...]] = set()
    for line, toks in zip(state.raw.get(spec.chain, []), have, strict=True):
        if toks in want and toks in seen:
            notes.append(f"{spec.label()}: removed the duplicate rule '{line}'")
        seen.add(toks)
    if not notes:
        notes.append(f"{spec.label()}: the rules were out of order; rewrote the chain")
    return notes


def _refill(batch: ipt.Batch, spec: ChainSpec) -> None:
    batch.new_chain(spec.chain)  # with --noflush: create or flush, then refill
    for rule in spec.rules:
        batch.append(spec.chain, list(rule))


def plan_setup(spec: ChainSpec, state: ipt.TableState,
               legacy: Sequence[Sequence[str]] = ()) -> ipt.Batch:
    """The set-up batch: legacy rules out, our chain created-or-flushed and refilled, one jump."""
    batch = ipt.Batch(table=spec.table)
    _refill(batch, spec)
    for rule in legacy:
        if state.find(spec.hook, list(rule)):
            batch.delete(spec.hook, list(rule))
    _jump_fix(batch, state, spec)
    return batch


def plan_resync(spec: ChainSpec, state: ipt.TableState) -> tuple[ipt.Batch, list[str]]:
    """The repair batch and one note per repair; an empty batch when the kernel matches."""
    batch = ipt.Batch(table=spec.table)
    notes = _chain_notes(spec, state)
    if notes:
        _refill(batch, spec)
    if state.has_chain(spec.chain):
        notes += _jump_fix(batch, state, spec)
    elif notes:
        batch.append(spec.hook, list(spec.jump))  # a missing chain cannot have had a jump
    return batch, notes


def plan_remove(family: int, table: str, chain: str, hook: str, state: ipt.TableState) -> ipt.Batch:
    """Every jump from ``hook`` to ``chain``, then the chain itself (nft mode cleans iptables)."""
    batch = ipt.Batch(table=table)
    for rule in state.jumps_to(hook, chain):
        batch.delete(hook, rule)
    if state.has_chain(chain):
        batch.flush(chain)
        batch.delete_chain(chain)
    return batch


# ---------------------------------------------------------------------------------------------
# iptables: the binaries

_version_cache: dict[int, tuple[int, ...] | None] = {}


def iptables_version(family: int) -> tuple[int, ...] | None:
    """The installed iptables/ip6tables version, probed once per family (None: not installed)."""
    if family not in _version_cache:
        tool = "iptables" if family == 4 else "ip6tables"
        version: tuple[int, ...] | None = None
        if shutil.which(tool):
            proc = subprocess.run([tool, "--version"], capture_output=True, text=True, check=False)
            m = re.search(r"v(\d+)\.(\d+)\.(\d+)", proc.stdout)
            if m:
                version = tuple(int(x) for x in m.groups())
        _version_cache[family] = version
    return _version_cache[family]


def has_random_fully(family: int) -> bool:
    """go-iptables' HasRandomFully: iptables ≥ 1.6.2."""
    v = iptables_version(family)
    return v is not None and v >= (1, 6, 2)


# ---------------------------------------------------------------------------------------------
# nftables: the rules (pure)

@dataclass(frozen=True)
class NftChainSpec:
    family: int
    name: str           # postrtg | forward
    comment: str
    base: str           # "type nat hook postrouting priority srcnat"
    rules: tuple[str, ...]

    @property
    def nft_family(self) -> str:
        return NFT_TABLES[self.family][0]

    @property
    def table(self) -> str:
        return NFT_TABLES[self.family][1]

    def label(self) -> str:
        return f"nftables {self.nft_family} {self.table} {self.name}"

    def script(self) -> str:
        """One transaction: the table, the chain, flush, the rules (§11.2)."""
        where = f"{self.nft_family} {self.table}"
        lines = [_nft_table_add(self.family),
                 f'add chain {where} {self.name} {{ {self.base} ; comment "{self.comment}" ; }}',
                 f"flush chain {where} {self.name}",
                 *(f"add rule {where} {self.name} {r}" for r in self.rules)]
        return "\n".join(lines) + "\n"

    def listing(self) -> str:
        """``nft list chain`` as nft prints it (the e2e/rules.go@H golden form)."""
        return "\n".join([f"table {self.nft_family} {self.table} {{", f"\tchain {self.name} {{",
                          f'\t\tcomment "{self.comment}"', f"\t\t{self.base}; policy accept;",
                          *(f"\t\t{r}" for r in self.rules), "\t}", "}"])


def _nft_table_add(family: int) -> str:
    fam, table = NFT_TABLES[family]
    return f'add table {fam} {table} {{ comment "rules for {table}" ; }}'


def nft_masq_rules(network: IPNet, subnet: IPNet, fully_random: bool) -> list[str]:
    """postrtg's rules with the iptables semantics (the mask; rule 4 as ``! -s N -d P``)."""
    f = "ip" if _family(network) == 4 else "ip6"
    n, p = str(network), str(subnet)
    masq = "masquerade fully-random" if fully_random else "masquerade"
    return [
        "meta mark & 0x00004000 == 0x00004000 return",
        f"{f} saddr {p} {f} daddr {n} return",
        f"{f} saddr {n} {f} daddr {p} return",
        f"{f} saddr != {n} {f} daddr {p} return",
        f"{f} saddr {n} {f} daddr != {MULTICAST[_family(network)]} {masq}",
        f"{f} saddr != {n} {f} daddr {n} {masq}",
    ]


def nft_masq_spec(network: IPNet, subnet: IPNet, fully_random: bool) -> NftChainSpec:
    return NftChainSpec(_family(network), NFT_POSTRTG, NFT_POSTRTG_COMMENT,
                        "type nat hook postrouting priority srcnat",
                        tuple(nft_masq_rules(network, subnet, fully_random)))


def nft_forward_spec(network: IPNet) -> NftChainSpec:
    f = "ip" if _family(network) == 4 else "ip6"
    return NftChainSpec(_family(network), NFT_FORWARD, NFT_FORWARD_COMMENT,
                        "type filter hook forward priority filter",
                        (f"{f} saddr {network} accept", f"{f} daddr {network} accept"))


def _norm_listing(text: str) -> list[str]:
    return [" ".join(line.split()) for line in text.splitlines() if line.strip()]


# ---------------------------------------------------------------------------------------------
# nftables: the binary

def _nft(args: list[str], script: str | None = None) -> subprocess.CompletedProcess[str]:
    try:
        return subprocess.run(["nft", *args], input=script, capture_output=True, text=True, check=False)
    except FileNotFoundError as exc:
        return subprocess.CompletedProcess(["nft", *args], 127, "", str(exc))


def _nft_run(script: str, what: str) -> None:
    proc = _nft(["-f", "-"], script)
    if proc.returncode != 0:
        raise TrafficError(f"nftables: couldn't {what}: {proc.stderr.strip()[:400]}")


def nft_tables() -> set[tuple[str, str]]:
    """The (family, name) of every nftables table in this namespace; empty without nft."""
    proc = _nft(["list", "tables"])
    out = set()
    for line in proc.stdout.splitlines() if proc.returncode == 0 else []:
        parts = line.split()
        if len(parts) == 3 and parts[0] == "table":
            out.add((parts[1], parts[2]))
    return out


def delete_nft_tables(log: logging.Logger) -> bool:
    """Delete flannel-ipv4 and flannel-ipv6 when they exist; True when one was deleted."""
    present = nft_tables()
    script = "".join(f"delete table {fam} {name}\n" for fam, name in NFT_TABLES.values() if (fam, name) in present)
    if not script:
        return False
    log.info("Cleaning-up flannel tables...")
    _nft_run(script, "delete the flannel tables")
    return True


# ---------------------------------------------------------------------------------------------
# the managers

class TrafficManager(ABC):
    """Masquerade and forward rules of one flanneld (§11). The daemon calls, in this order:
    ``cleanup_other()``, ``init()``, ``set_masq(...)`` (with --ip-masq), ``set_forward(...)``
    (with --iptables-forward-rules), then ``resync()`` every --iptables-resync seconds."""

    def __init__(self, *, random_fully: bool = True, log: logging.Logger | None = None) -> None:
        self.random_fully = random_fully  # False with --ip-masq-fully-random-disable
        self.log = log or log_default

    @abstractmethod
    def init(self) -> None: ...

    @abstractmethod
    def cleanup_other(self) -> None: ...

    @abstractmethod
    def set_masq(self, *, network: ipaddress.IPv4Network | None, subnet: ipaddress.IPv4Network | None,
                 ipv6_network: ipaddress.IPv6Network | None = None, ipv6_subnet: ipaddress.IPv6Network | None = None,
                 prev_network: ipaddress.IPv4Network | None = None, prev_subnet: ipaddress.IPv4Network | None = None,
                 prev_ipv6_network: ipaddress.IPv6Network | None = None,
                 prev_ipv6_subnet: ipaddress.IPv6Network | None = None) -> None: ...

    @abstractmethod
    def set_forward(self, *, network: ipaddress.IPv4Network | None,
                    ipv6_network: ipaddress.IPv6Network | None = None) -> None: ...

    @abstractmethod
    def resync(self) -> list[str]: ...


def _pairs(network: IPNet | None, subnet: IPNet | None, ipv6_network: IPNet | None,
           ipv6_subnet: IPNet | None) -> list[tuple[IPNet, IPNet]]:
    """The (N, P) of each family the daemon enabled (v6 only when it passed the v6 network)."""
    out: list[tuple[IPNet, IPNet]] = []
    for n, p in ((network, subnet), (ipv6_network, ipv6_subnet)):
        if n is not None:
            if p is None:
                raise TrafficError(f"no subnet leased for network {n}: cannot build the masquerade rules")
            out.append((n, p))
    return out


class IPTablesTrafficManager(TrafficManager):
    """iptables mode: FLANNEL-POSTRTG (nat) and FLANNEL-FWD (filter), per family."""

    def __init__(self, *, random_fully: bool = True, log: logging.Logger | None = None) -> None:
        super().__init__(random_fully=random_fully, log=log)
        self.specs: dict[tuple[int, str], ChainSpec] = {}  # (family, table) -> desired chain
        self.restores = 0  # iptables-restore runs (a no-op resync runs none)

    def init(self) -> None:
        self.log.info("Starting flannel in iptables mode...")

    def cleanup_other(self) -> None:
        """iptables mode: delete flannel's nftables tables (§1.2 step 10)."""
        try:
            delete_nft_tables(self.log)
        except TrafficError as exc:
            self.log.warning("could not clean-up the flannel nftables tables: %s", exc)

    def _random_fully(self, family: int) -> bool:
        return self.random_fully and has_random_fully(family)

    def set_masq(self, *, network: ipaddress.IPv4Network | None, subnet: ipaddress.IPv4Network | None,
                 ipv6_network: ipaddress.IPv6Network | None = None, ipv6_subnet: ipaddress.IPv6Network | None = None,
                 prev_network: ipaddress.IPv4Network | None = None, prev_subnet: ipaddress.IPv4Network | None = None,
                 prev_ipv6_network: ipaddress.IPv6Network | None = None,
                 prev_ipv6_subnet: ipaddress.IPv6Network | None = None) -> None:
        prevs: dict[int, tuple[IPNet | None, IPNet | None]] = {
            4: (prev_network, prev_subnet), 6: (prev_ipv6_network, prev_ipv6_subnet)}
        for n, p in _pairs(network, subnet, ipv6_network, ipv6_subnet):
            fam = _family(n)
            legacy = legacy_masq_rules(n, p) if fam == 4 else []
            pn, pp = prevs[fam]
            if pn is not None and pp is not None and (pn != n or pp != p):
                self.log.info("Current network or subnet (%s, %s) is not equal to previous one (%s, %s), "
                              "trying to recycle old iptables rules", n, p, pn, pp)
                # the old FLANNEL-POSTRTG rules go with the flush; v0.10's lived in POSTROUTING
                legacy += legacy_masq_rules(pn, pp) if fam == 4 else []
            self.log.info("Setting up masking rules%s", "" if fam == 4 else " for IPv6")
            self._setup(masq_spec(n, p, self._random_fully(fam)), legacy)

    def set_forward(self, *, network: ipaddress.IPv4Network | None,
                    ipv6_network: ipaddress.IPv6Network | None = None) -> None:
        for n in (network, ipv6_network):
            if n is not None:
                self.log.info("Setting up the %s forward rules for %s", _fam_name(n.version), n)
                self._setup(forward_spec(n), legacy_forward_rules(n) if n.version == 4 else [])

    def _save(self, family: int, table: str) -> ipt.TableState:
        try:
            return ipt.save(family, table)
        except (CNIError, OSError) as exc:
            raise TrafficError(f"failed to read the iptables {table} table ({_fam_name(family)}): {exc}") from exc

    def _restore(self, family: int, batch: ipt.Batch) -> None:
        self.restores += 1
        try:
            batch.run(family)
        except (CNIError, OSError) as exc:
            raise TrafficError(f"failed to apply iptables-restore ({_fam_name(family)} {batch.table}): {exc}") from exc

    def _setup(self, spec: ChainSpec, legacy: Sequence[Sequence[str]]) -> None:
        with ipt.locked():
            batch = plan_setup(spec, self._save(spec.family, spec.table), legacy)
            self._restore(spec.family, batch)
        self.specs[(spec.family, spec.table)] = spec
        self.log.info("bootstrap done")

    def resync(self) -> list[str]:
        """One iptables-save per table and family; a restore only where our chain or jump differs."""
        notes: list[str] = []
        for spec in list(self.specs.values()):
            with ipt.locked():
                batch, found = plan_resync(spec, self._save(spec.family, spec.table))
                if batch.lines:
                    self._restore(spec.family, batch)
            notes += found  # the caller logs them ("rules repaired: …")
        return notes


def remove_iptables_chains(log: logging.Logger) -> bool:
    """nft mode: flannel's iptables chains and the jumps to them, nat and filter, both families."""
    removed = False
    for family in (4, 6):
        if not ipt.available(family):
            log.info("no %s: nothing to clean up", ipt.binary(family, "restore"))
            continue
        for table, chain, hook in (("nat", POSTRTG, "POSTROUTING"), ("filter", FWD, "FORWARD")):
            with ipt.locked():
                try:
                    batch = plan_remove(family, table, chain, hook, ipt.save(family, table))
                    if batch.lines:
                        batch.run(family)
                        removed = True
                        log.info("removed the iptables chain %s (%s %s) and its jumps", chain, table,
                                 _fam_name(family))
                except (CNIError, OSError) as exc:
                    log.warning("could not clean-up %s (%s): %s", chain, _fam_name(family), exc)
    return removed


class NFTablesTrafficManager(TrafficManager):
    """nftables mode: tables ``ip flannel-ipv4`` and ``ip6 flannel-ipv6``, chains postrtg and forward."""

    def __init__(self, *, random_fully: bool = True, log: logging.Logger | None = None) -> None:
        super().__init__(random_fully=random_fully, log=log)
        self.specs: dict[tuple[int, str], NftChainSpec] = {}
        self.accepted: dict[tuple[int, str], list[str]] = {}  # listings accepted as ours (see resync)
        self.writes = 0  # nft transactions that wrote a chain
        self._fully_random: bool | None = None

    def init(self) -> None:
        """Create both tables (§11.2); "no nftables support: …" when nft does not work here."""
        if shutil.which("nft") is None:
            raise TrafficError("no nftables support: the nft binary was not found")
        probe = _nft(["--check", "-f", "-"], _nft_table_add(4) + "\n")
        if probe.returncode != 0:
            raise TrafficError(f"no nftables support: {probe.stderr.strip()[:400]}")
        for family in (4, 6):
            _nft_run(_nft_table_add(family) + "\n", f"initialise table {NFT_TABLES[family][1]}")

    def cleanup_other(self) -> None:
        """nft mode: flannel's iptables chains and jumps (the reference leaves FLANNEL-FWD in filter)."""
        self.log.info("Cleaning-up iptables rules...")
        remove_iptables_chains(self.log)

    def fully_random(self) -> bool:
        """``masquerade fully-random`` accepted? An ``nft --check`` on a throw-away chain, once."""
        if self._fully_random is None:
            script = (_nft_table_add(4) + "\nadd chain ip flannel-ipv4 masqueradeTest { type nat hook postrouting "
                      'priority srcnat ; comment "chain to test if masquerade random fully is supported" ; }\n'
                      "add rule ip flannel-ipv4 masqueradeTest ip saddr != 127.0.0.1 masquerade fully-random\n")
            self._fully_random = _nft(["--check", "-f", "-"], script).returncode == 0
            if not self._fully_random:
                self.log.warning("nftables: random fully unsupported")
        return self._fully_random

    def set_masq(self, *, network: ipaddress.IPv4Network | None, subnet: ipaddress.IPv4Network | None,
                 ipv6_network: ipaddress.IPv6Network | None = None, ipv6_subnet: ipaddress.IPv6Network | None = None,
                 prev_network: ipaddress.IPv4Network | None = None, prev_subnet: ipaddress.IPv4Network | None = None,
                 prev_ipv6_network: ipaddress.IPv6Network | None = None,
                 prev_ipv6_subnet: ipaddress.IPv6Network | None = None) -> None:
        # no recycle: the flush in the same transaction drops whatever the chain held (§11.2)
        for n, p in _pairs(network, subnet, ipv6_network, ipv6_subnet):
            self.log.info("nftables: setting up masking rules (%s)", "ipv4" if n.version == 4 else "ipv6")
            self._write(nft_masq_spec(n, p, self.random_fully and self.fully_random()))

    def set_forward(self, *, network: ipaddress.IPv4Network | None,
                    ipv6_network: ipaddress.IPv6Network | None = None) -> None:
        for n in (network, ipv6_network):
            if n is not None:
                self.log.info("nftables: setting up the forward rules (%s)", "ipv4" if n.version == 4 else "ipv6")
                self._write(nft_forward_spec(n))

    def _write(self, spec: NftChainSpec) -> None:
        self.writes += 1
        _nft_run(spec.script(), f"setup the {spec.name} rules ({_fam_name(spec.family)})")
        self.specs[(spec.family, spec.name)] = spec

    def _listing(self, spec: NftChainSpec) -> list[str] | None:
        proc = _nft(["list", "chain", spec.nft_family, spec.table, spec.name])
        return _norm_listing(proc.stdout) if proc.returncode == 0 else None

    def resync(self) -> list[str]:
        """Rewrite a chain only when ``nft list chain`` differs from the desired listing.

        If nft prints our own rules differently (another nft version), the listing read right
        after our own write is accepted, so that a resync never rewrites in a loop."""
        notes: list[str] = []
        for key, spec in list(self.specs.items()):
            have = self._listing(spec)
            if have is not None and have in (_norm_listing(spec.listing()), self.accepted.get(key)):
                continue
            note = (f"{spec.label()}: the chain was missing; recreated it" if have is None
                    else f"{spec.label()}: the chain differed from the desired rules; rewrote it")
            notes.append(note)
            self._write(spec)
            after = self._listing(spec)
            if after is not None and after != _norm_listing(spec.listing()):
                self.log.warning("%s: nft prints the rules differently; accepting its listing", spec.label())
                self.accepted[key] = after
        return notes


def make_traffic_manager(enable_nftables: bool, **kw: Any) -> TrafficManager:
    """EnableNFTables picks the nftables manager (§3), else iptables."""
    return NFTablesTrafficManager(**kw) if enable_nftables else IPTablesTrafficManager(**kw)


# ---------------------------------------------------------------------------------------------
# blackhole (§11.3)

def _has_blackhole(ipr: Any, net: IPNet) -> bool:
    fam = 2 if net.version == 4 else 10
    for r in ipr.route("dump", family=fam, table=RT_TABLE_MAIN):
        if (r["type"] == RTN_BLACKHOLE and r["dst_len"] == net.prefixlen
                and r.get_attr("RTA_DST") == str(net.network_address)):
            return True
    return False


def ensure_blackhole(subnet: ipaddress.IPv4Network | None,
                     ipv6_subnet: ipaddress.IPv6Network | None = None) -> bool:
    """A ``blackhole <subnet>`` route (main table) for the own subnet(s) in the current namespace,
    added when none exists for that dst (RouteListFiltered(dst, type) in the reference).
    True when one was added."""
    added = False
    with netlink.socket_here() as ipr:
        for net in (subnet, ipv6_subnet):
            if net is None or _has_blackhole(ipr, net):
                continue
            try:
                ipr.route("add", dst=str(net), type=RTN_BLACKHOLE, family=2 if net.version == 4 else 10)
            except netlink.netlink_errors() as exc:
                raise TrafficError(f"failed to add the blackhole route for {net}: {exc}") from exc
            log_default.debug("added the blackhole route for %s", net)
            added = True
    return added

