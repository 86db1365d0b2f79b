"""The hand-encoded rtnetlink requests of kernel.Batch, byte for byte against pyroute2's encoder
for the same messages (the kernel side is covered by the vxlan/host-gw integration tests)."""
from __future__ import annotations

import ipaddress
import socket

import pytest

from cni_flannel.flanneld.backend import kernel as k
from cni_flannel.net.netlink import netlink_errors

netlink_errors()  # the bare pyroute2 package, as the daemon imports it
from pyroute2.netlink.rtnl.ndmsg import ndmsg  # noqa: E402
from pyroute2.netlink.rtnl.rtmsg import rtmsg  # noqa: E402


def pyroute2_bytes(msg, kind: int, flags: int) -> bytes:
    msg["header"]["type"] = kind
    msg["header"]["flags"] = flags
    msg["header"]["sequence_number"] = 1
    msg.encode()
    return bytes(msg.data[16:])  # the body, after the nlmsghdr


@pytest.mark.parametrize("onlink,priority,v6", [(True, 0, False), (False, 0, False), (False, 100, False),
                                                (False, 0, True)])
def test_route_replace_and_delete(onlink, priority, v6) -> None:
    if v6:
        r = k.Route(dst=ipaddress.ip_network("fd00:1::/64"), gateway=ipaddress.ip_address("fd00::2"), oif=7,
                    priority=priority)
    else:
        r = k.Route(dst=ipaddress.ip_network("10.42.2.0/24"), gateway=ipaddress.ip_address("10.42.2.0"), oif=7,
                    onlink=onlink, priority=priority)
    fam = socket.AF_INET6 if v6 else socket.AF_INET
    for delete in (False, True):
        kind, flags, body = k.encode_route(r, delete=delete)
        m = rtmsg()
        m["family"], m["dst_len"], m["table"], m["proto"] = fam, r.dst.prefixlen, 254, 3
        m["scope"], m["type"] = (255, 0) if delete else (0, 1)
        m["flags"] = 4 if onlink and not delete else 0
        attrs = [["RTA_TABLE", 254], ["RTA_DST", str(r.dst.network_address)], ["RTA_GATEWAY", str(r.gateway)],
                 ["RTA_OIF", 7]]
        if priority:
            attrs.append(["RTA_PRIORITY", priority])
        m["attrs"] = attrs
        assert body == pyroute2_bytes(m, kind, flags)
        assert kind == (25 if delete else 24)
        assert flags == (0x5 if delete else 0x505)  # REQUEST|ACK (+CREATE|REPLACE)


def test_neigh_and_fdb() -> None:
    n = k.Neigh(ip=ipaddress.ip_address("10.42.3.0"), lladdr="c6:d2:32:6f:8f:44", ifindex=9)
    kind, flags, body = k.encode_neigh(n)
    m = ndmsg()
    m["family"], m["ifindex"], m["state"] = socket.AF_INET, 9, 0x80
    m["attrs"] = [["NDA_DST", "10.42.3.0"], ["NDA_LLADDR", "c6:d2:32:6f:8f:44"]]
    assert body == pyroute2_bytes(m, kind, flags) and (kind, flags) == (28, 0x505)
    f = k.Fdb(lladdr="c6:d2:32:6f:8f:44", dst=ipaddress.ip_address("192.168.77.3"), ifindex=9)
    kind, flags, body = k.encode_fdb(f)
    m = ndmsg()
    m["family"], m["ifindex"], m["state"], m["flags"] = socket.AF_BRIDGE, 9, 0x80, 0x02
    m["attrs"] = [["NDA_LLADDR", "c6:d2:32:6f:8f:44"], ["NDA_DST", "192.168.77.3"]]
    assert body == pyroute2_bytes(m, kind, flags) and (kind, flags) == (28, 0x505)
    kind, flags, body = k.encode_fdb(f, delete=True)
    m = ndmsg()
    m["family"], m["ifindex"], m["state"], m["flags"] = socket.AF_BRIDGE, 9, 0, 0x02
    m["attrs"] = [["NDA_LLADDR", "c6:d2:32:6f:8f:44"], ["NDA_DST", "192.168.77.3"]]
    assert body == pyroute2_bytes(m, kind, flags) and (kind, flags) == (29, 0x5)
