"""flanneld's traffic rules on a real kernel (flanneld-reference §11), each test in fresh namespaces.

The managers run in-process inside ``netns.entered(node)``: their iptables/nft subprocesses
and the pyroute2 socket inherit the node namespace. The state is read back with
``ip netns exec`` (iptables -S, nft list, ip -j route), and real UDP traffic shows who
masquerades what.
"""
from __future__ import annotations

import ipaddress
import subprocess
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import pytest

from cni_flannel.flanneld import traffic as t
from cni_flannel.net.netns import entered

N = ipaddress.ip_network("10.42.0.0/16")
P = ipaddress.ip_network("10.42.3.0/24")
N6 = ipaddress.ip_network("fd42::/48")
P6 = ipaddress.ip_network("fd42:0:0:3::/64")
KUBE_NAT = '-A POSTROUTING -m comment --comment "kubernetes postrouting rules" -j KUBE-POSTROUTING'
KUBE_FWD = '-A FORWARD -m comment --comment "kubernetes forwarding rules" -j KUBE-FORWARD'
JUMP_NAT = '-A POSTROUTING -m comment --comment "flanneld masq" -j FLANNEL-POSTRTG'


@pytest.fixture
def node(make_netns):
    ns = make_netns("fltr")
    ns.run("sysctl", "-qw", "net.ipv4.ip_forward=1")
    return ns


@contextmanager
def inside(ns) -> Iterator[None]:
    with entered(ns.path):
        yield


def s(ns, table: str, chain: str | None = None, family: int = 4) -> list[str]:
    """``iptables -t <table> -S [chain]`` in the namespace."""
    tool = "iptables" if family == 4 else "ip6tables"
    return ns.run(tool, "-t", table, "-S", *([chain] if chain else [])).stdout.splitlines()


def add_kube_rules(ns, family: int = 4) -> None:
    """kube-proxy-like rules that must survive everything flanneld does."""
    tool = "iptables" if family == 4 else "ip6tables"
    ns.run(tool, "-t", "nat", "-N", "KUBE-POSTROUTING")
    ns.run(tool, "-t", "nat", "-A", "POSTROUTING", "-m", "comment", "--comment", "kubernetes postrouting rules",
           "-j", "KUBE-POSTROUTING")
    ns.run(tool, "-t", "filter", "-N", "KUBE-FORWARD")
    ns.run(tool, "-t", "filter", "-A", "FORWARD", "-m", "comment", "--comment", "kubernetes forwarding rules",
           "-j", "KUBE-FORWARD")


def golden_nat(n=N, p=P) -> list[str]:
    return t.masq_spec(n, p, t.has_random_fully(n.version)).golden_s()


def setup_iptables(node, v6: bool = False) -> t.IPTablesTrafficManager:
    m = t.IPTablesTrafficManager()
    with inside(node):
        m.init()
        m.set_masq(network=N, subnet=P, ipv6_network=N6 if v6 else None, ipv6_subnet=P6 if v6 else None)
        m.set_forward(network=N, ipv6_network=N6 if v6 else None)
    return m


def flannel_nat(node, family: int = 4) -> list[str]:
    """e2e/rules.go's iptablesNatFlannel: POSTROUTING lines naming FLANNEL, then -S FLANNEL-POSTRTG."""
    return [x for x in s(node, "nat", "POSTROUTING", family) if "FLANNEL" in x] + s(node, "nat", t.POSTRTG, family)


def test_iptables_rules_are_the_golden_text_and_foreign_rules_stay(node) -> None:
    add_kube_rules(node, 4)
    add_kube_rules(node, 6)
    setup_iptables(node, v6=True)
    assert t.has_random_fully(4) and t.has_random_fully(6)  # iptables 1.8 here: the e2e golden has the flag
    assert flannel_nat(node) == golden_nat()
    assert s(node, "nat", "POSTROUTING") == ["-P POSTROUTING ACCEPT", KUBE_NAT, JUMP_NAT]  # appended after kube's
    assert s(node, "filter", "FORWARD") == ["-P FORWARD ACCEPT", KUBE_FWD, *t.forward_spec(N).golden_s()[:1]]
    assert s(node, "filter", t.FWD) == t.forward_spec(N).golden_s()[1:]
    assert flannel_nat(node, 6) == golden_nat(N6, P6)
    assert "ff00::/8" in "\n".join(flannel_nat(node, 6))
    assert s(node, "filter", t.FWD, 6) == t.forward_spec(N6).golden_s()[1:]
    assert s(node, "nat", "POSTROUTING", 6) == ["-P POSTROUTING ACCEPT", KUBE_NAT, JUMP_NAT]


def test_setup_twice_keeps_one_jump_and_one_chain(node) -> None:
    add_kube_rules(node)
    setup_iptables(node)
    before = node.run("iptables-save", "-t", "nat").stdout
    m = setup_iptables(node)
    assert flannel_nat(node) == golden_nat()
    assert s(node, "nat", "POSTROUTING") == ["-P POSTROUTING ACCEPT", KUBE_NAT, JUMP_NAT]
    assert m.restores == 2  # one batch per table and family: nat, filter
    assert strip_comments(node.run("iptables-save", "-t", "nat").stdout) == strip_comments(before)


def strip_comments(save: str) -> str:
    return "\n".join(x for x in save.splitlines() if not x.startswith("#"))


def test_no_v6_rules_without_the_v6_network(node) -> None:
    setup_iptables(node, v6=False)
    assert "FLANNEL" not in node.run("ip6tables-save").stdout
    assert "FLANNEL-POSTRTG" in node.run("iptables-save").stdout


def handles(node) -> str:
    """iptables-nft keeps rules in nft tables: their handles change whenever a chain is rewritten."""
    return node.run("nft", "-a", "list", "ruleset").stdout


def test_resync_with_nothing_changed_runs_no_restore(node) -> None:
    add_kube_rules(node)
    m = setup_iptables(node)
    before, restores = handles(node), m.restores
    with inside(node):
        assert m.resync() == []
        assert m.resync() == []
    assert m.restores == restores
    assert handles(node) == before


def damage_delete_rule(node) -> None:
    node.run("iptables", "-t", "nat", "-D", t.POSTRTG, "3")


def damage_add_rule(node) -> None:
    node.run("iptables", "-t", "nat", "-I", t.POSTRTG, "2", "-s", "10.99.0.0/16", "-j", "ACCEPT")


def damage_duplicate_jump(node) -> None:
    node.run("iptables", "-t", "nat", "-I", "POSTROUTING", "1", "-m", "comment", "--comment", "flanneld masq",
             "-j", t.POSTRTG)


def damage_delete_jump(node) -> None:
    node.run("iptables", "-t", "nat", "-D", "POSTROUTING", "-m", "comment", "--comment", "flanneld masq",
             "-j", t.POSTRTG)


def damage_delete_fwd_rule(node) -> None:
    node.run("iptables", "-t", "filter", "-D", t.FWD, "2")


@pytest.mark.parametrize("damage, words", [
    (damage_delete_rule, "restored the missing rule"),
    (damage_add_rule, "removed the unexpected rule '-A FLANNEL-POSTRTG -s 10.99.0.0/16 -j ACCEPT'"),
    (damage_duplicate_jump, "removed 1 duplicate jump(s) from POSTROUTING"),
    (damage_delete_jump, "the jump from POSTROUTING was missing; appended it"),
    (damage_delete_fwd_rule, "iptables filter FLANNEL-FWD (IPv4): restored the missing rule"),
])
def test_resync_repairs_one_damage_and_leaves_others_rules(node, damage: Callable, words: str) -> None:
    add_kube_rules(node)
    m = setup_iptables(node)
    filter_before = s(node, "filter")
    damage(node)
    restores = m.restores
    with inside(node):
        notes = m.resync()
    assert len(notes) == 1 and words in notes[0], notes
    assert m.restores == restores + 1  # one restore batch, for the one table that differed
    assert flannel_nat(node) == golden_nat()
    assert s(node, "nat", "POSTROUTING")[1] == KUBE_NAT
    assert s(node, "nat", "POSTROUTING").count(JUMP_NAT) == 1
    assert "-N KUBE-POSTROUTING" in s(node, "nat")
    assert s(node, "filter") == filter_before
    with inside(node):
        assert m.resync() == []
    assert m.restores == restores + 1


def test_resync_recreates_a_deleted_chain(node) -> None:
    m = setup_iptables(node)
    damage_delete_jump(node)
    node.run("iptables", "-t", "nat", "-F", t.POSTRTG)
    node.run("iptables", "-t", "nat", "-X", t.POSTRTG)
    with inside(node):
        notes = m.resync()
    assert notes == ["iptables nat FLANNEL-POSTRTG (IPv4): the chain was missing; recreated it"]
    assert flannel_nat(node) == golden_nat()


def test_recycle_replaces_the_old_network_and_subnet_rules(node) -> None:
    old_n, old_p = ipaddress.ip_network("10.1.0.0/16"), ipaddress.ip_network("10.1.7.0/24")
    add_kube_rules(node)
    with inside(node):
        t.IPTablesTrafficManager().set_masq(network=old_n, subnet=old_p)
    # and what flanneld v0.10 (the seed) left in POSTROUTING for the old values
    node.run("iptables", "-t", "nat", "-A", "POSTROUTING", "-s", "10.1.0.0/16", "-d", "10.1.0.0/16", "-j", "RETURN")
    node.run("iptables", "-t", "nat", "-A", "POSTROUTING", "!", "-s", "10.1.0.0/16", "-d", "10.1.0.0/16",
             "-j", "MASQUERADE")
    assert "10.1.7.0/24" in "\n".join(s(node, "nat"))
    with inside(node):
        t.IPTablesTrafficManager().set_masq(network=N, subnet=P, prev_network=old_n, prev_subnet=old_p)
    assert flannel_nat(node) == golden_nat()
    assert "10.1." not in node.run("iptables-save", "-t", "nat").stdout
    assert s(node, "nat", "POSTROUTING") == ["-P POSTROUTING ACCEPT", KUBE_NAT, JUMP_NAT]


def test_nft_mode_cleans_flannels_iptables_chains_in_nat_and_filter(node) -> None:
    add_kube_rules(node, 4)
    add_kube_rules(node, 6)
    setup_iptables(node, v6=True)
    with inside(node):
        t.NFTablesTrafficManager().cleanup_other()
    for family in (4, 6):
        tool = "iptables-save" if family == 4 else "ip6tables-save"
        save = node.run(tool).stdout
        assert "FLANNEL" not in save and "flanneld" not in save  # incl. the filter FLANNEL-FWD
        assert s(node, "nat", "POSTROUTING", family) == ["-P POSTROUTING ACCEPT", KUBE_NAT]
        assert s(node, "filter", "FORWARD", family) == ["-P FORWARD ACCEPT", KUBE_FWD]


def test_iptables_mode_deletes_flannels_nft_tables_only(node) -> None:
    node.run("nft", "add", "table", "inet", "someone-else")
    with inside(node):
        nm = t.NFTablesTrafficManager()
        nm.init()
        nm.set_masq(network=N, subnet=P)
    tables = node.run("nft", "list", "tables").stdout
    assert "table ip flannel-ipv4" in tables and "table ip6 flannel-ipv6" in tables
    with inside(node):
        t.IPTablesTrafficManager().cleanup_other()
    assert node.run("nft", "list", "tables").stdout.split("\n")[:1] == ["table inet someone-else"]
    assert "flannel" not in node.run("nft", "list", "ruleset").stdout


NFT_POSTRTG = """\
table ip flannel-ipv4 {
\tchain postrtg {
\t\tcomment "chain to manage traffic masquerading by flannel"
\t\ttype nat hook postrouting priority srcnat; policy accept;
\t\tmeta mark & 0x00004000 == 0x00004000 return
\t\tip saddr 10.42.3.0/24 ip daddr 10.42.0.0/16 return
\t\tip saddr 10.42.0.0/16 ip daddr 10.42.3.0/24 return
\t\tip saddr != 10.42.0.0/16 ip daddr 10.42.3.0/24 return
\t\tip saddr 10.42.0.0/16 ip daddr != 224.0.0.0/4 masquerade fully-random
\t\tip saddr != 10.42.0.0/16 ip daddr 10.42.0.0/16 masquerade fully-random
\t}
}
"""

NFT_FORWARD = """\
table ip flannel-ipv4 {
\tchain forward {
\t\tcomment "chain to accept flannel traffic"
\t\ttype filter hook forward priority filter; policy accept;
\t\tip saddr 10.42.0.0/16 accept
\t\tip daddr 10.42.0.0/16 accept
\t}
}
"""


def setup_nft(node, v6: bool = False) -> t.NFTablesTrafficManager:
    m = t.NFTablesTrafficManager()
    with inside(node):
        m.cleanup_other()
        m.init()
        m.set_masq(network=N, subnet=P, ipv6_network=N6 if v6 else None, ipv6_subnet=P6 if v6 else None)
        m.set_forward(network=N, ipv6_network=N6 if v6 else None)
    return m


def test_nft_ruleset_after_init_masq_forward(node) -> None:
    m = setup_nft(node, v6=True)
    assert m.fully_random()  # this kernel and nft accept it; the golden text below says so
    assert node.run("nft", "list", "chain", "ip", "flannel-ipv4", "postrtg").stdout == NFT_POSTRTG
    assert node.run("nft", "list", "chain", "ip", "flannel-ipv4", "forward").stdout == NFT_FORWARD
    v6 = node.run("nft", "list", "table", "ip6", "flannel-ipv6").stdout
    assert 'comment "rules for flannel-ipv6"' in v6
    assert "ip6 saddr != fd42::/48 ip6 daddr fd42:0:0:3::/64 return" in v6
    assert "ip6 saddr fd42::/48 ip6 daddr != ff00::/8 masquerade fully-random" in v6
    assert 'comment "rules for flannel-ipv4"' in node.run("nft", "list", "table", "ip", "flannel-ipv4").stdout


def test_nft_init_creates_both_tables_even_for_v4_only(node) -> None:
    setup_nft(node, v6=False)
    v6 = node.run("nft", "list", "table", "ip6", "flannel-ipv6").stdout
    assert "chain" not in v6


def test_nft_resync_repairs_a_deleted_rule_and_is_quiet_otherwise(node) -> None:
    m = setup_nft(node)
    writes = m.writes
    with inside(node):
        assert m.resync() == []
    assert m.writes == writes
    listing = node.run("nft", "-a", "list", "chain", "ip", "flannel-ipv4", "postrtg").stdout
    handle = next(x.rsplit("# handle ", 1)[1] for x in listing.splitlines() if "!= 224.0.0.0/4" in x)
    node.run("nft", "delete", "rule", "ip", "flannel-ipv4", "postrtg", "handle", handle)
    assert node.run("nft", "list", "chain", "ip", "flannel-ipv4", "postrtg").stdout != NFT_POSTRTG
    with inside(node):
        notes = m.resync()
    assert notes == ["nftables ip flannel-ipv4 postrtg: the chain differed from the desired rules; rewrote it"]
    assert node.run("nft", "list", "chain", "ip", "flannel-ipv4", "postrtg").stdout == NFT_POSTRTG
    assert m.writes == writes + 1
    node.run("nft", "delete", "table", "ip", "flannel-ipv4")
    with inside(node):
        notes = m.resync()
    assert len(notes) == 2 and all("missing" in x for x in notes)
    assert node.run("nft", "list", "chain", "ip", "flannel-ipv4", "forward").stdout == NFT_FORWARD


def test_blackhole_route_added_once(node) -> None:
    with inside(node):
        assert t.ensure_blackhole(P, P6) is True
        assert t.ensure_blackhole(P, P6) is False
    routes = node.json("ip", "-j", "route", "show", "type", "blackhole")
    assert [(r["type"], r["dst"]) for r in routes] == [("blackhole", "10.42.3.0/24")]
    routes6 = node.json("ip", "-j", "-6", "route", "show", "type", "blackhole")
    assert [(r["type"], r["dst"]) for r in routes6] == [("blackhole", "fd42:0:0:3::/64")]
    node.run("ip", "route", "del", "blackhole", "10.42.3.0/24")
    with inside(node):
        assert t.ensure_blackhole(P) is True


# --- real traffic: pod -> outside is masqueraded, pod -> another node's pod is not -------------

ECHO = """
import socket, sys
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.bind(("0.0.0.0", 5555))
print("ready", flush=True)
while True:
    data, addr = s.recvfrom(100)
    s.sendto(addr[0].encode(), addr)
"""

ASK = """
import socket, sys
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.settimeout(2)
for _ in range(5):
    s.sendto(b"who am i", (sys.argv[1], 5555))
    try:
        print(s.recv(100).decode())
        break
    except socket.timeout:
        pass
"""


@pytest.fixture
def world(node, make_netns):
    """pod (10.42.3.2) -- node (10.42.3.1 | 192.168.50.1) -- outside (192.168.50.2, and 10.42.4.1: a pod
    of another node, routed via 192.168.50.2). A UDP echo in outside answers with the source it saw."""
    pod, out = make_netns("fltp"), make_netns("flto")
    subprocess.run(["ip", "link", "add", "eth0", "netns", pod.name, "type", "veth", "peer", "name", "vpod",
                    "netns", node.name], check=True)
    subprocess.run(["ip", "link", "add", "eth0", "netns", node.name, "type", "veth", "peer", "name", "eth0",
                    "netns", out.name], check=True)
    for ns, dev, addr in ((pod, "eth0", "10.42.3.2/24"), (node, "vpod", "10.42.3.1/24"),
                          (node, "eth0", "192.168.50.1/24"), (out, "eth0", "192.168.50.2/24")):
        ns.run("ip", "addr", "add", addr, "dev", dev)
        ns.run("ip", "link", "set", dev, "up")
    pod.run("ip", "route", "add", "default", "via", "10.42.3.1")
    node.run("ip", "route", "add", "10.42.4.0/24", "via", "192.168.50.2")
    out.run("ip", "addr", "add", "10.42.4.1/24", "dev", "lo")  # no dummy module on these machines
    out.run("ip", "route", "add", "10.42.3.0/24", "via", "192.168.50.1")  # the return path, unmasqueraded
    echo = subprocess.Popen(["ip", "netns", "exec", out.name, sys.executable, "-c", ECHO], stdout=subprocess.PIPE,
                            text=True)
    try:
        assert echo.stdout is not None and echo.stdout.readline().strip() == "ready"

        def seen_from(target: str) -> str:
            return pod.run(sys.executable, "-c", ASK, target).stdout.strip()
        yield seen_from
    finally:
        echo.kill()
        echo.wait()


def set_rules(node, nft: bool) -> None:
    m = t.make_traffic_manager(nft)
    with inside(node):
        m.cleanup_other()
        m.init()
        m.set_masq(network=N, subnet=P)
        m.set_forward(network=N)


@pytest.mark.parametrize("nft", [False, True], ids=["iptables", "nftables"])
def test_pod_traffic_is_masqueraded_to_the_outside_only(node, world, nft: bool) -> None:
    assert world("192.168.50.2") == "10.42.3.2"  # no rules yet: the outside sees the pod
    if not nft:
        node.run("iptables", "-P", "FORWARD", "DROP")  # FLANNEL-FWD must let the pod traffic through
        assert world("192.168.50.2") == ""
    set_rules(node, nft)
    assert world("192.168.50.2") == "192.168.50.1"  # masqueraded to the node's address
    assert world("10.42.4.1") == "10.42.3.2"       # inside Network: not masqueraded
