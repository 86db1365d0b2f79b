"""flanneld's masquerade and forward rules as text (flanneld-reference §11), no kernel.

The golden texts are e2e/rules.go@H's (flannelNet 10.42.0.0/16 and a node's podCIDR), typed
out here; the nftables differences from the reference are spelled out line by line.
"""
from __future__ import annotations

import ipaddress
import subprocess

import pytest

from cni_flannel.flanneld import traffic as t
from cni_flannel.net import iptables as ipt

N = ipaddress.ip_network("10.42.0.0/16")       # e2e flannelNet
P = ipaddress.ip_network("10.42.1.0/24")       # the kind worker's podCIDR
N6 = ipaddress.ip_network("fc00::/48")         # the reference's iptables_test.go v6 prefix
P6 = ipaddress.ip_network("fc00:0:0:1::/64")

# e2e/rules.go@H expectedIptablesPostrouting / expectedIptablesForward (FLANNEL lines only)
GOLDEN_NAT = """\
-A POSTROUTING -m comment --comment "flanneld masq" -j FLANNEL-POSTRTG
-N FLANNEL-POSTRTG
-A FLANNEL-POSTRTG -m mark --mark 0x4000/0x4000 -m comment --comment "flanneld masq" -j RETURN
-A FLANNEL-POSTRTG -s 10.42.1.0/24 -d 10.42.0.0/16 -m comment --comment "flanneld masq" -j RETURN
-A FLANNEL-POSTRTG -s 10.42.0.0/16 -d 10.42.1.0/24 -m comment --comment "flanneld masq" -j RETURN
-A FLANNEL-POSTRTG ! -s 10.42.0.0/16 -d 10.42.1.0/24 -m comment --comment "flanneld masq" -j RETURN
-A FLANNEL-POSTRTG -s 10.42.0.0/16 ! -d 224.0.0.0/4 -m comment --comment "flanneld masq" -j MASQUERADE --random-fully
-A FLANNEL-POSTRTG ! -s 10.42.0.0/16 -d 10.42.0.0/16 -m comment --comment "flanneld masq" -j MASQUERADE --random-fully"""  # noqa: E501

GOLDEN_FWD = """\
-A FORWARD -m comment --comment "flanneld forward" -j FLANNEL-FWD
-N FLANNEL-FWD
-A FLANNEL-FWD -s 10.42.0.0/16 -m comment --comment "flanneld forward" -j ACCEPT
-A FLANNEL-FWD -d 10.42.0.0/16 -m comment --comment "flanneld forward" -j ACCEPT"""

# e2e/rules.go@H expectedNftPostrouting / expectedNftForward, as the reference writes them
REFERENCE_NFT_POSTRTG = """\
table ip flannel-ipv4 {
\tchain postrtg {
\t\tcomment "chain to manage traffic masquerading by flannel"
\t\ttype nat hook postrouting priority srcnat; policy accept;
\t\tmeta mark 0x00004000 return
\t\tip saddr 10.42.1.0/24 ip daddr 10.42.0.0/16 return
\t\tip saddr 10.42.0.0/16 ip daddr 10.42.1.0/24 return
\t\tip saddr != 10.42.1.0/24 ip daddr 10.42.0.0/16 return
\t\tip saddr 10.42.0.0/16 ip daddr != 224.0.0.0/4 masquerade fully-random
\t\tip saddr != 10.42.0.0/16 ip daddr 10.42.0.0/16 masquerade fully-random
\t}
}"""

GOLDEN_NFT_FORWARD = """\
table ip flannel-ipv4 {
\tchain forward {
\t\tcomment "chain to accept flannel traffic"
\t\ttype filter hook forward priority filter; policy accept;
\t\tip saddr 10.42.0.0/16 accept
\t\tip daddr 10.42.0.0/16 accept
\t}
}"""


def test_iptables_masq_matches_the_e2e_golden_text() -> None:
    assert "\n".join(t.masq_spec(N, P, random_fully=True).golden_s()) == GOLDEN_NAT


def test_iptables_forward_matches_the_e2e_golden_text() -> None:
    assert "\n".join(t.forward_spec(N).golden_s()) == GOLDEN_FWD


def test_iptables_masq_without_random_fully_drops_only_the_flag() -> None:
    want = GOLDEN_NAT.replace(" --random-fully", "")
    assert "\n".join(t.masq_spec(N, P, random_fully=False).golden_s()) == want
    assert "--random-fully" not in want


def test_ip6tables_rules_are_the_v4_ones_with_ff00() -> None:
    spec = t.masq_spec(N6, P6, random_fully=True)
    want = (GOLDEN_NAT.replace("10.42.0.0/16", "fc00::/48").replace("10.42.1.0/24", "fc00:0:0:1::/64")
            .replace("224.0.0.0/4", "ff00::/8"))
    assert "\n".join(spec.golden_s()) == want
    assert (spec.family, spec.table) == (6, "nat")
    fwd = t.forward_spec(N6)
    assert "\n".join(fwd.golden_s()) == GOLDEN_FWD.replace("10.42.0.0/16", "fc00::/48")


def test_p_is_the_lease_subnet_in_cidr_form() -> None:
    spec = t.masq_spec(N, ipaddress.ip_network("10.42.3.0/24"), True)
    assert spec.rules[1][:4] == ("-s", "10.42.3.0/24", "-d", "10.42.0.0/16")


def test_nft_forward_matches_the_e2e_golden_text() -> None:
    assert t.nft_forward_spec(N).listing() == GOLDEN_NFT_FORWARD


def test_nft_postrtg_differs_from_the_reference_exactly_in_the_two_fixes() -> None:
    ours = t.nft_masq_spec(N, P, fully_random=True).listing().splitlines()
    ref = REFERENCE_NFT_POSTRTG.splitlines()
    diff = [(r.strip(), o.strip()) for r, o in zip(ref, ours, strict=True) if r != o]
    assert diff == [
        # the mark masked, as iptables' --mark 0x4000/0x4000 (the reference compares it exactly)
        ("meta mark 0x00004000 return", "meta mark & 0x00004000 == 0x00004000 return"),
        # rule 4 is iptables' `! -s N -d P -j RETURN` (the reference: saddr != P, daddr N)
        ("ip saddr != 10.42.1.0/24 ip daddr 10.42.0.0/16 return",
         "ip saddr != 10.42.0.0/16 ip daddr 10.42.1.0/24 return"),
    ]


def test_nft_rules_follow_the_iptables_rules_one_for_one() -> None:
    # same order and meaning as the iptables chain: mark, P->N, N->P, !N->P, N->!multicast, !N->N
    nft = t.nft_masq_rules(N, P, True)
    assert nft[3] == "ip saddr != 10.42.0.0/16 ip daddr 10.42.1.0/24 return"
    assert t.masq_rules(N, P, True)[3][:5] == ["!", "-s", "10.42.0.0/16", "-d", "10.42.1.0/24"]
    assert [r.split()[-1] for r in nft] == ["return"] * 4 + ["fully-random"] * 2


def test_nft_v6_and_no_fully_random() -> None:
    rules = t.nft_masq_rules(N6, P6, fully_random=False)
    assert rules == [
        "meta mark & 0x00004000 == 0x00004000 return",
        "ip6 saddr fc00:0:0:1::/64 ip6 daddr fc00::/48 return",
        "ip6 saddr fc00::/48 ip6 daddr fc00:0:0:1::/64 return",
        "ip6 saddr != fc00::/48 ip6 daddr fc00:0:0:1::/64 return",
        "ip6 saddr fc00::/48 ip6 daddr != ff00::/8 masquerade",
        "ip6 saddr != fc00::/48 ip6 daddr fc00::/48 masquerade",
    ]
    spec = t.nft_masq_spec(N6, P6, False)
    assert spec.listing().splitlines()[0] == "table ip6 flannel-ipv6 {"
    assert t.nft_forward_spec(N6).rules == ("ip6 saddr fc00::/48 accept", "ip6 daddr fc00::/48 accept")


def test_nft_chain_script_is_one_transaction_add_flush_rules() -> None:
    lines = t.nft_masq_spec(N, P, True).script().splitlines()
    assert lines[0] == 'add table ip flannel-ipv4 { comment "rules for flannel-ipv4" ; }'
    assert lines[1] == ('add chain ip flannel-ipv4 postrtg { type nat hook postrouting priority srcnat ; '
                        'comment "chain to manage traffic masquerading by flannel" ; }')
    assert lines[2] == "flush chain ip flannel-ipv4 postrtg"
    assert lines[3:] == [f"add rule ip flannel-ipv4 postrtg {r}" for r in t.nft_masq_rules(N, P, True)]


# --- the iptables diff, on iptables-save text parsed by the plugins' own reader -----------------

@pytest.fixture
def parse(monkeypatch: pytest.MonkeyPatch):
    def parse(text: str) -> ipt.TableState:
        def fake_run(argv, **kw):  # iptables-save's stdout, nothing else
            return ipt.spawn.Completed(argv, 0, text, "")
        monkeypatch.setattr(ipt.spawn, "run", fake_run)
        return ipt.save(4, "nat")
    return parse


KUBE = '-A POSTROUTING -m comment --comment "kubernetes postrouting rules" -j KUBE-POSTROUTING'


def save_text(spec: t.ChainSpec, rules: list[str] | None = None, jumps: int = 1, chain: bool = True) -> str:
    lines = ["*nat", ":POSTROUTING ACCEPT [0:0]", ":KUBE-POSTROUTING - [0:0]"]
    if chain:
        lines.append(f":{spec.chain} - [0:0]")
    lines.append(KUBE)
    lines += [spec.jump_line()] * jumps
    lines += spec.rule_lines() if rules is None else rules
    return "\n".join([*lines, "COMMIT", ""])


SPEC = t.masq_spec(N, P, True)


def test_resync_of_a_matching_kernel_plans_nothing(parse) -> None:
    batch, notes = t.plan_resync(SPEC, parse(save_text(SPEC)))
    assert batch.lines == [] and notes == []


def test_resync_of_a_deleted_rule_rewrites_only_our_chain(parse) -> None:
    rules = SPEC.rule_lines()
    gone = rules.pop(2)
    batch, notes = t.plan_resync(SPEC, parse(save_text(SPEC, rules)))
    assert notes == [f"iptables nat FLANNEL-POSTRTG (IPv4): restored the missing rule '{gone}'"]
    assert batch.lines == [":FLANNEL-POSTRTG - [0:0]", *SPEC.rule_lines()]


def test_resync_of_a_foreign_rule_in_our_chain(parse) -> None:
    extra = '-A FLANNEL-POSTRTG -s 10.9.0.0/16 -j ACCEPT'
    batch, notes = t.plan_resync(SPEC, parse(save_text(SPEC, [*SPEC.rule_lines(), extra])))
    assert notes == [f"iptables nat FLANNEL-POSTRTG (IPv4): removed the unexpected rule '{extra}'"]
    assert batch.lines == [":FLANNEL-POSTRTG - [0:0]", *SPEC.rule_lines()]


def test_resync_of_order_and_duplicates(parse) -> None:
    rules = SPEC.rule_lines()
    _, notes = t.plan_resync(SPEC, parse(save_text(SPEC, [rules[1], rules[0], *rules[2:]])))
    assert notes == ["iptables nat FLANNEL-POSTRTG (IPv4): the rules were out of order; rewrote the chain"]
    _, notes = t.plan_resync(SPEC, parse(save_text(SPEC, [*rules, rules[4]])))
    assert notes == [f"iptables nat FLANNEL-POSTRTG (IPv4): removed the duplicate rule '{rules[4]}'"]


def test_resync_of_jumps_never_rewrites_the_chain_or_touches_others(parse) -> None:
    batch, notes = t.plan_resync(SPEC, parse(save_text(SPEC, jumps=3)))
    assert batch.lines == [f"-D POSTROUTING {ipt.quote(list(SPEC.jump))}"] * 2
    assert notes == ["iptables nat FLANNEL-POSTRTG (IPv4): removed 2 duplicate jump(s) from POSTROUTING"]
    batch, notes = t.plan_resync(SPEC, parse(save_text(SPEC, jumps=0)))
    assert batch.lines == [SPEC.jump_line()]
    assert notes == ["iptables nat FLANNEL-POSTRTG (IPv4): the jump from POSTROUTING was missing; appended it"]
    assert all("KUBE" not in line for line in batch.lines)


def test_resync_removes_a_jump_to_our_chain_that_is_not_ours(parse) -> None:
    text = save_text(SPEC).replace(KUBE, KUBE + "\n-A POSTROUTING -s 10.1.0.0/16 -j FLANNEL-POSTRTG")
    batch, notes = t.plan_resync(SPEC, parse(text))
    assert batch.lines == ["-D POSTROUTING -s 10.1.0.0/16 -j FLANNEL-POSTRTG"]
    assert len(notes) == 1 and "foreign jump" in notes[0]


def test_resync_of_a_missing_chain_recreates_chain_and_jump(parse) -> None:
    batch, notes = t.plan_resync(SPEC, parse(save_text(SPEC, rules=[], jumps=0, chain=False)))
    assert batch.lines == [":FLANNEL-POSTRTG - [0:0]", *SPEC.rule_lines(), SPEC.jump_line()]
    assert notes == ["iptables nat FLANNEL-POSTRTG (IPv4): the chain was missing; recreated it"]


def test_setup_declares_refills_and_appends_the_jump_once(parse) -> None:
    fresh = parse("*nat\n:POSTROUTING ACCEPT [0:0]\n" + KUBE + "\nCOMMIT\n")
    batch = t.plan_setup(SPEC, fresh)
    assert batch.text() == "\n".join(["*nat", ":FLANNEL-POSTRTG - [0:0]", *SPEC.rule_lines(), SPEC.jump_line(),
                                      "COMMIT", ""])
    again = t.plan_setup(SPEC, parse(save_text(SPEC)))
    assert again.lines == [":FLANNEL-POSTRTG - [0:0]", *SPEC.rule_lines()]  # the jump stays where it is


def test_setup_deletes_v010_rules_only_when_present(parse) -> None:
    old = ipaddress.ip_network("10.1.0.0/16"), ipaddress.ip_network("10.1.7.0/24")
    legacy = t.legacy_masq_rules(*old)
    assert legacy == [["-s", "10.1.0.0/16", "-d", "10.1.0.0/16", "-j", "RETURN"],
                      ["-s", "10.1.0.0/16", "!", "-d", "224.0.0.0/4", "-j", "MASQUERADE"],
                      ["!", "-s", "10.1.0.0/16", "-d", "10.1.7.0/24", "-j", "RETURN"],
                      ["!", "-s", "10.1.0.0/16", "-d", "10.1.0.0/16", "-j", "MASQUERADE"]]
    text = save_text(SPEC).replace(KUBE, KUBE + "\n-A POSTROUTING -s 10.1.0.0/16 -d 10.1.0.0/16 -j RETURN")
    batch = t.plan_setup(SPEC, parse(text), legacy)
    assert [x for x in batch.lines if x.startswith("-D")] == ["-D POSTROUTING -s 10.1.0.0/16 -d 10.1.0.0/16 -j RETURN"]


def test_remove_takes_every_jump_and_the_chain(parse) -> None:
    batch = t.plan_remove(4, "nat", t.POSTRTG, "POSTROUTING", parse(save_text(SPEC, jumps=2)))
    assert batch.lines == [f"-D POSTROUTING {ipt.quote(list(SPEC.jump))}"] * 2 + ["-F FLANNEL-POSTRTG",
                                                                                   "-X FLANNEL-POSTRTG"]
    assert t.plan_remove(4, "nat", t.POSTRTG, "POSTROUTING", parse("*nat\n" + KUBE + "\nCOMMIT\n")).lines == []


def test_v6_rules_only_when_the_v6_network_is_given() -> None:
    assert t._pairs(N, P, None, P6) == [(N, P)]
    assert t._pairs(N, P, N6, P6) == [(N, P), (N6, P6)]
    assert t._pairs(None, None, N6, P6) == [(N6, P6)]
    with pytest.raises(t.TrafficError, match="no subnet leased"):
        t._pairs(N, None, None, None)


def test_random_fully_needs_iptables_1_6_2(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(t, "_version_cache", {4: (1, 6, 1), 6: (1, 8, 9)})
    assert not t.has_random_fully(4)
    assert t.has_random_fully(6)
    monkeypatch.setattr(t, "_version_cache", {4: None})
    assert not t.has_random_fully(4)


def test_make_traffic_manager_picks_the_backend() -> None:
    assert isinstance(t.make_traffic_manager(True, random_fully=False), t.NFTablesTrafficManager)
    m = t.make_traffic_manager(False)
    assert isinstance(m, t.IPTablesTrafficManager) and m.random_fully


def test_nft_resync_accepts_a_listing_nft_prints_its_own_way(monkeypatch: pytest.MonkeyPatch) -> None:
    """Another nft version may print our rules differently: one rewrite, then no rewrite loop."""
    calls: list[list[str]] = []
    other_print = t.nft_forward_spec(N).listing().replace("ip saddr", "ip  saddr  ").replace("accept", "accept ;")

    def fake_nft(args: list[str], script: str | None = None) -> subprocess.CompletedProcess[str]:
        calls.append(args)
        return subprocess.CompletedProcess(args, 0, other_print if args[0] == "list" else "", "")

    monkeypatch.setattr(t, "_nft", fake_nft)
    m = t.NFTablesTrafficManager()
    m.set_forward(network=N)
    assert m.writes == 1
    notes = m.resync()
    assert notes == ["nftables ip flannel-ipv4 forward: the chain differed from the desired rules; rewrote it"]
    assert m.writes == 2
    assert m.resync() == [] and m.resync() == []
    assert m.writes == 2
    assert sum(1 for c in calls if c[0] == "-f") == 2
