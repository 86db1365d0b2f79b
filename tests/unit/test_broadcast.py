"""IPv4 addresses carry the broadcast address Go's netlink.AddrAdd computes (issue 20 §3)."""
from __future__ import annotations

import ipaddress

import pytest

from cni_flannel.net.addr import broadcast_of


@pytest.mark.parametrize("cidr,brd", [
    ("10.42.1.2/24", "10.42.1.255"), ("10.42.1.1/16", "10.42.255.255"), ("192.0.2.1/30", "192.0.2.3"),
    ("192.0.2.1/31", None), ("192.0.2.1/32", None), ("fd00::2/64", None),
])
def test_broadcast_for_prefixes_shorter_than_31(cidr: str, brd: str | None) -> None:
    """Catches: addresses added without "brd" (Go sets it for every IPv4 prefix below /31)."""
    assert broadcast_of(ipaddress.ip_interface(cidr)) == brd
