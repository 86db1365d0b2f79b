"""net/rtnl.py against pyroute2 and the kernel.

The plugins' whole netlink repertoire (every call net/link.py and net/addr.py make, error
paths included) runs twice in fresh, identical namespace pairs: once through pyroute2's
IPRoute, once through our Rtnl. Every request must be the same bytes (sequence number and
port id aside), every step must end the same way (result or errno), and afterwards both
decoders must read the same links, addresses and routes from the kernel.
"""
from __future__ import annotations

import os
import socket
import struct
from typing import Any

import pytest

from cni_flannel.net import addr, link, netlink, rtnl
from cni_flannel.net.netns import entered

CONT_MAC = "0a:58:0a:2a:01:05"
BRIDGE_MAC = "0a:58:0a:2a:01:01"


class RecordingIPRoute:
    """pyroute2's IPRoute, with every request it sends kept in ``sent``."""

    def __init__(self) -> None:
        self.ipr = netlink.socket_here()
        self.sent: list[bytes] = []
        core = self.ipr.asyncore
        original = core.send

        def send(data: bytes, flags: int = 0) -> Any:
            self.sent.append(bytes(data))
            return original(data, flags)

        core.send = send

    def __getattr__(self, name: str) -> Any:
        return getattr(self.ipr, name)


def recording_rtnl() -> rtnl.Rtnl:
    sock = rtnl.Rtnl()
    sock.sent = []
    return sock


def _outcome(fn: Any) -> Any:
    try:
        return ("ok", fn())
    except netlink.kernel_errors() as exc:
        return ("errno", link.errno_of(exc))


def scenario(host: Any, cont: Any, host_fd: int) -> list[Any]:
    """The bridge and loopback plugins' calls, in their order, plus each error path."""
    steps: list[Any] = []

    def step(fn: Any) -> Any:
        result = _outcome(fn)
        steps.append(result)
        return result[1]

    br = step(lambda: link.ensure_bridge(host, "br0", 1450, True, False))
    step(lambda: link.ensure_bridge(host, "br0", 1450, True, False))  # EEXIST: reused
    step(lambda: link.ensure_bridge(host, "br1", 0, False, False))
    step(lambda: link.set_up(host, br.index))
    host_name, cont_link = step(lambda: link.create_veth(cont, "eth0", 1450, CONT_MAC, host_fd))
    hl = step(lambda: link.by_name(host, host_name))
    step(lambda: link.set_up(host, hl.index))
    step(lambda: link.set_bridge_port(host, hl.index, br.index, True, True))
    step(lambda: link.set_bridge_port(host, hl.index, br.index, False, False))
    step(lambda: link.bridge_vlan(host, hl.index, 1, False, False, add=False))
    step(lambda: link.bridge_vlan(host, hl.index, 10, True, True))
    step(lambda: addr.add_addr(cont, cont_link.index, "10.42.1.2/24"))
    step(lambda: addr.add_addr(cont, cont_link.index, "10.42.1.2/24"))  # EEXIST raised
    step(lambda: addr.add_addr(cont, cont_link.index, "192.168.9.9/31"))  # no broadcast
    step(lambda: addr.add_addr(cont, cont_link.index, "fd00:42::2/64"))
    step(lambda: link.set_up(cont, cont_link.index))
    step(lambda: addr.add_route(cont, cont_link.index, "10.42.0.0/16", "10.42.1.1"))
    step(lambda: addr.add_route(cont, cont_link.index, "0.0.0.0/0", "10.42.1.1"))
    step(lambda: addr.add_route(cont, cont_link.index, "0.0.0.0/0", "10.42.1.1"))  # EEXIST
    step(lambda: addr.add_route(cont, cont_link.index, "::/0", "fd00:42::1"))
    step(lambda: addr.add_route(cont, cont_link.index, "10.99.0.0/16", "10.42.1.1",
                                {"priority": 7, "table": 100, "mtu": 1400, "advmss": 1360}))
    step(lambda: addr.add_route(cont, cont_link.index, "10.98.0.0/16", None, {"scope": 253}))
    step(lambda: addr.add_route(cont, cont_link.index, "10.97.0.5/32", None))
    step(lambda: addr.add_route(cont, cont_link.index, "10.96.0.0/16", "172.31.0.1"))  # ENETUNREACH
    step(lambda: addr.add_addr(host, br.index, "10.42.1.1/24", ignore_exists=True))
    step(lambda: addr.add_addr(host, br.index, "10.42.1.1/24", ignore_exists=True))
    # the reply of a bare ipr.link() is not used by the plugins: compare only how it ends
    step(lambda: [host.link("set", index=br.index, address=BRIDGE_MAC)] and None)
    step(lambda: addr.list_addrs(host, br.index, socket.AF_INET))
    step(lambda: addr.list_addrs(cont, cont_link.index))
    step(lambda: addr.global_unicast(cont, cont_link.index))
    step(lambda: sorted(map(str, addr.list_routes(cont, socket.AF_INET))))
    step(lambda: sorted(map(str, addr.list_routes(cont, socket.AF_INET6))))
    step(lambda: addr.settle(cont, cont_link.index))
    step(lambda: link.wait_oper_up(host, hl.index) is not None)
    step(lambda: [(lk.name, lk.kind, lk.mtu, lk.master == br.index) for lk in link.all_links(host)])
    step(lambda: link.by_index(cont, cont_link.index).peer_index == hl.index)
    step(lambda: addr.del_addr(host, br.index, addr.list_addrs(host, br.index)[0]))
    step(lambda: addr.del_addr(host, br.index, __import__("ipaddress").ip_interface("10.42.1.1/24")))
    step(lambda: [host.link("add", ifname="br0.5", kind="veth", peer={"ifname": "br0.5.gw"})] and None)
    step(lambda: [cont.link("set", index=1, state="down")] and None)
    step(lambda: link.by_name(cont, "nosuch0"))
    step(lambda: link.delete(cont, cont_link.index))
    step(lambda: link.delete(cont, cont_link.index))  # ENODEV: nothing to do
    step(lambda: link.delete(host, 424242))
    return steps


def _normal(requests: list[bytes]) -> list[str]:
    """The requests with sequence number and port id zeroed (they differ by socket)."""
    return [(r[:8] + b"\0" * 8 + r[16:]).hex() for r in requests]


def _strip_macs(steps: list[Any]) -> list[Any]:
    """Random MACs (bridge, host veth) differ between the two runs; everything else must not."""
    out = []
    for kind, value in steps:
        if isinstance(value, link.LinkInfo):
            value = (value.index, value.name, value.kind, value.mtu, value.master, value.flags, value.peer_index)
        elif isinstance(value, tuple) and len(value) == 2 and isinstance(value[1], link.LinkInfo):
            value = value[0]
        out.append((kind, value))
    return out


def run_side(make: Any, host_ns: Any, cont_ns: Any, monkeypatch: Any
             ) -> tuple[list[Any], tuple[list[bytes], list[bytes]]]:
    """The scenario on one side; the veth names are made deterministic so both sides send the same."""
    names = iter(f"veth{i:08x}" for i in range(100))
    monkeypatch.setattr(link, "random_veth_name", lambda: next(names))
    # no DAD: settle() then polls once on both sides, instead of as often as the timing allows
    cont_ns.run("sysctl", "-qw", "net.ipv6.conf.default.accept_dad=0")
    with entered(host_ns.path):
        host = make()
    with entered(cont_ns.path):
        cont = make()
    try:
        steps = scenario(host, cont, host_fd_for(host_ns))
    finally:
        host.close()
        cont.close()
        os.close(_FDS.pop())
    return steps, (host.sent, cont.sent)


def host_fd_for(ns: Any) -> int:
    """The namespace's fd at a fixed number: IFLA_NET_NS_FD carries it, so both sides send the same."""
    fd = os.open(ns.path, os.O_RDONLY | os.O_CLOEXEC)
    fixed = os.dup2(fd, 250 + len(_FDS))
    os.close(fd)
    _FDS.append(fixed)
    return fixed


_FDS: list[int] = []


@pytest.fixture(autouse=True)
def _close_fds():
    yield
    while _FDS:
        os.close(_FDS.pop())


def test_same_bytes_and_outcomes_as_pyroute2(make_netns, monkeypatch) -> None:
    """Catches: any request encoded differently from pyroute2 (attribute order, flags, padding,
    header fields), and any reply decoded or any kernel error handled differently."""
    theirs_host, theirs_cont, ours_host, ours_cont = (make_netns() for _ in range(4))
    their_steps, (their_host_req, their_cont_req) = run_side(RecordingIPRoute, theirs_host, theirs_cont, monkeypatch)
    our_steps, (our_host_req, our_cont_req) = run_side(recording_rtnl, ours_host, ours_cont, monkeypatch)
    assert _strip_macs(our_steps) == _strip_macs(their_steps)
    assert _normal(our_host_req) == _normal(their_host_req)
    assert _normal(our_cont_req) == _normal(their_cont_req)
    # the error paths really ran: EEXIST and ENETUNREACH came back as errnos on both sides
    assert ("errno", 17) in our_steps and ("errno", 101) in our_steps
    # both decoders read the same kernel state, in the namespaces pyroute2 filled
    for ns in (theirs_host, theirs_cont):
        with entered(ns.path):
            ours, theirs = rtnl.Rtnl(), netlink.socket_here()
        try:
            assert link.all_links(ours) == link.all_links(theirs)
            for lk in link.all_links(theirs):
                assert addr.list_addrs(ours, lk.index) == addr.list_addrs(theirs, lk.index)
                assert link.by_index(ours, lk.index) == link.by_index(theirs, lk.index)
                assert link.by_name(ours, lk.name) == link.by_name(theirs, lk.name)
            for fam in (socket.AF_INET, socket.AF_INET6):
                assert addr.list_routes(ours, fam) == addr.list_routes(theirs, fam)
                assert [m["index"] for m in ours.get_addr(family=fam)] == \
                    [m["index"] for m in theirs.get_addr(family=fam)]
        finally:
            ours.close()
            theirs.close()


def test_kernel_state_after_our_calls(make_netns) -> None:
    """Catches: a message the kernel accepts but applies differently (checked with ip -j, not our decoder)."""
    host_ns, cont_ns = make_netns(), make_netns()
    with entered(host_ns.path):
        host = rtnl.Rtnl()
    with entered(cont_ns.path):
        cont = rtnl.Rtnl()
    fd = host_fd_for(host_ns)
    try:
        br = link.ensure_bridge(host, "cni0", 1450, False, False)
        link.set_up(host, br.index)
        host_name, c = link.create_veth(cont, "eth0", 1450, CONT_MAC, fd)
        hl = link.by_name(host, host_name)
        assert hl is not None
        link.set_up(host, hl.index)
        link.set_bridge_port(host, hl.index, br.index, True, False)
        addr.add_addr(cont, c.index, "10.42.1.2/24")
        link.set_up(cont, c.index)
        addr.add_route(cont, c.index, "0.0.0.0/0", "10.42.1.1")
        addr.add_route(cont, c.index, "10.99.0.0/16", "10.42.1.1", {"mtu": 1400, "table": 100})
    finally:
        host.close()
        cont.close()
    eth0 = cont_ns.json("ip", "-j", "-d", "addr", "show", "eth0")[0]
    # ip shows no qlen for txqlen 0 (a veth created without IFLA_TXQLEN would show 1000)
    assert (eth0["address"], eth0["mtu"], eth0.get("txqlen"), eth0["linkinfo"]["info_kind"]) == \
        (CONT_MAC, 1450, None, "veth")
    assert [(a["local"], a["prefixlen"], a.get("broadcast")) for a in eth0["addr_info"] if a["family"] == "inet"] \
        == [("10.42.1.2", 24, "10.42.1.255")]
    port = host_ns.json("ip", "-j", "-d", "link", "show", host_name)[0]
    assert (port["master"], port["mtu"], port.get("txqlen"), port["linkinfo"]["info_slave_data"]["hairpin"]) == \
        ("cni0", 1450, None, True)
    routes = cont_ns.json("ip", "-j", "-d", "route", "show", "default")
    assert [(r["gateway"], r["protocol"]) for r in routes] == [("10.42.1.1", "boot")]
    t100 = cont_ns.json("ip", "-j", "-d", "route", "show", "table", "100")
    assert [(r["dst"], r["gateway"], r["metrics"][0]["mtu"]) for r in t100] == [("10.99.0.0/16", "10.42.1.1", 1400)]


def test_error_is_pyroute2_shaped() -> None:
    """Catches: an error that cni.errors.errno_of cannot read, or that prints differently from pyroute2's."""
    from pyroute2.netlink.exceptions import NetlinkError

    from cni_flannel.cni.errors import errno_of

    ours, theirs = rtnl.NetlinkError(17), NetlinkError(17)
    assert (str(ours), errno_of(ours)) == (str(theirs), errno_of(theirs)) == ("(17, 'File exists')", 17)
    assert struct.calcsize("=BxHiII") == 16  # ifinfomsg
