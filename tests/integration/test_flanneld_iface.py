"""Interface selection (flanneld-reference §2) against real links in a lab node namespace.

The node has eth0 (192.168.77.N/24, default route) and we add eth1 (a veth to the switch
side is not needed: a veth pair whose peer stays in the node) with its own addresses."""
from __future__ import annotations

import logging

import pytest

from cni_flannel.flanneld.iface import IfaceError, select_interface
from cni_flannel.net.netns import entered


def sel(host, **kw):
    args = {"ifaces": [], "iface_regex": [], "iface_can_reach": "", "public_ip": "", "public_ipv6": "",
            "enable_ipv4": True, "enable_ipv6": False}
    args.update(kw)
    with entered(host.netns_path):
        return select_interface(**args)


@pytest.fixture
def host(lab):
    h = lab.add_host("node1")
    ns = h.ns
    ns.run("ip", "link", "add", "eth1", "mtu", "1400", "type", "veth", "peer", "name", "eth1p", "mtu", "1400")
    ns.run("ip", "addr", "add", "10.20.0.5/24", "dev", "eth1")
    ns.run("ip", "addr", "add", "10.20.0.9/24", "dev", "eth1", "valid_lft", "3600", "preferred_lft", "3600")
    ns.run("ip", "link", "set", "eth1", "up")
    ns.run("ip", "link", "set", "eth1p", "up")
    return h


def test_default_route_interface(host, caplog):
    caplog.set_level(logging.INFO)
    ext = sel(host)
    assert (ext.name, str(ext.iface_addr), str(ext.ext_addr), ext.mtu) == ("eth0", host.ip, host.ip, 1500)
    assert ext.index == host.ns.json("ip", "-j", "link", "show", "eth0")[0]["ifindex"]
    assert ext.iface_addr6 is None and ext.ext_addr6 is None
    assert "Determining IP address of default interface" in caplog.text
    assert f"Using interface with name eth0 and address {host.ip}" in caplog.text
    assert f"Defaulting external address to interface address ({host.ip})" in caplog.text


def test_iface_by_name_and_by_ip(host, caplog):
    ext = sel(host, ifaces=["eth1"])
    assert (ext.name, str(ext.iface_addr), ext.mtu) == ("eth1", "10.20.0.5", 1400)  # permanent before dynamic
    ext = sel(host, ifaces=["10.20.0.9"])
    assert (ext.name, str(ext.iface_addr)) == ("eth1", "10.20.0.9")  # the given address is the one used
    caplog.set_level(logging.INFO)
    ext = sel(host, ifaces=["nosuch0", "10.1.2.3", "eth1"])
    assert ext.name == "eth1"
    assert ("Could not find valid interface matching nosuch0: error looking up interface nosuch0: "
            "route ip+net: no such network interface") in caplog.text
    assert ("Could not find valid interface matching 10.1.2.3: error looking up interface 10.1.2.3: "
            "no interface with given IP found") in caplog.text


def test_regex_matches_ips_first_then_names(host):
    ext = sel(host, iface_regex=[r"^10\.20\.0\.9$"])
    assert (ext.name, str(ext.iface_addr)) == ("eth1", "10.20.0.9")
    ext = sel(host, iface_regex=["th1$"])  # no IP matches: the name does
    assert (ext.name, str(ext.iface_addr)) == ("eth1", "10.20.0.5")
    ext = sel(host, iface_regex=["^192\\.168\\.77\\."])
    assert ext.name == "eth0"
    ext = sel(host, ifaces=["nosuch0"], iface_regex=["eth1$"])  # --iface first, then the regexes
    assert ext.name == "eth1"


def test_regex_no_match_and_bad_regex_messages(host, caplog):
    caplog.set_level(logging.INFO)
    with pytest.raises(IfaceError) as err:
        sel(host, iface_regex=["^wlan", "(["])
    assert str(err.value) == "Failed to find interface to use that matches the interfaces and/or regexes provided"
    ips = {"lo": "[]", "eth0": f"[{host.ip}]", "eth1": "[10.20.0.5 10.20.0.9]", "eth1p": "[]"}
    order = [link["ifname"] for link in host.ns.json("ip", "-j", "link", "show")]  # net.Interfaces(): by index
    faces = ", ".join(f"{name}:{ips[name]}" for name in order)
    assert ("Could not find valid interface matching ^wlan: could not match pattern ^wlan to any of the available "
            f"network interfaces ({faces})") in caplog.text
    assert "Could not find valid interface matching ([: could not compile the IP address regex '([':" in caplog.text


def test_can_reach(host, caplog):
    caplog.set_level(logging.INFO)
    ext = sel(host, iface_can_reach="10.20.0.77")
    assert (ext.name, str(ext.iface_addr)) == ("eth1", "10.20.0.5")  # the route's src
    assert "Determining interface to use based on given ifcanreach: 10.20.0.77" in caplog.text
    ext = sel(host, iface_can_reach="8.8.8.8")
    assert (ext.name, str(ext.iface_addr)) == ("eth0", host.ip)


def test_public_ip_non_local_kept_apart(host, caplog):
    caplog.set_level(logging.INFO)
    ext = sel(host, public_ip="203.0.113.7")  # ⚠ the reference exits here (#1978)
    assert (ext.name, str(ext.iface_addr), str(ext.ext_addr)) == ("eth0", host.ip, "203.0.113.7")
    assert "Using 203.0.113.7 as external address" in caplog.text
    ext = sel(host, ifaces=["eth1"], public_ip="203.0.113.7")
    assert (ext.name, str(ext.iface_addr), str(ext.ext_addr)) == ("eth1", "10.20.0.5", "203.0.113.7")
    ext = sel(host, public_ip="10.20.0.9")  # a local public IP picks its interface, as the reference
    assert (ext.name, str(ext.iface_addr), str(ext.ext_addr)) == ("eth1", "10.20.0.9", "10.20.0.9")


def test_public_ip_family_and_syntax_errors(host):
    with pytest.raises(IfaceError, match=r"^invalid public IP address: nope$"):
        sel(host, public_ip="nope")
    with pytest.raises(IfaceError, match=r"^invalid public IP address: 2001:db8::1 \(not an IPv4 address\)$"):
        sel(host, public_ip="2001:db8::1")
    with pytest.raises(IfaceError, match=r"^invalid public IPv6 address: 10.0.0.1 \(not an IPv6 address\)$"):
        sel(host, public_ipv6="10.0.0.1", enable_ipv6=True)


def test_no_default_route(host):
    host.ns.run("ip", "route", "del", "default")
    with pytest.raises(IfaceError) as err:
        sel(host)
    assert str(err.value) == ("Failed to find any valid interface to use: failed to get default interface: "
                              "unable to find default route")


def test_interface_without_ipv4(host):
    host.ns.run("ip", "link", "add", "eth2", "type", "veth", "peer", "name", "eth2p")
    host.ns.run("ip", "link", "set", "eth2", "up")
    host.ns.run("ip", "link", "set", "eth2p", "up")
    with pytest.raises(IfaceError) as err:
        sel(host, ifaces=["eth2"])
    assert str(err.value) == "Failed to find interface to use that matches the interfaces and/or regexes provided"
    with pytest.raises(IfaceError) as err:
        host.ns.run("ip", "route", "replace", "default", "dev", "eth2")
        sel(host)
    assert str(err.value) == "Failed to find any valid interface to use: failed to find IPv4 address for interface eth2"


def test_none_stack(host):
    with pytest.raises(IfaceError, match=r"^none defined stack$"):
        sel(host, enable_ipv4=False)


def test_dual_stack_default_and_mismatch(host):
    ns = host.ns
    ns.run("sysctl", "-qw", "net.ipv6.conf.all.disable_ipv6=0")
    ns.run("ip", "-6", "addr", "add", "fd00:77::5/64", "dev", "eth0", "nodad")
    ns.run("ip", "-6", "addr", "add", "fd00:20::5/64", "dev", "eth1", "nodad")
    ns.run("ip", "-6", "route", "add", "default", "via", "fd00:20::1", "dev", "eth1")
    with pytest.raises(IfaceError) as err:
        sel(host, enable_ipv6=True)
    assert str(err.value) == ("Failed to find any valid interface to use: v6 default route interface eth1 must be "
                              "the same with v4 default route interface eth0")
    ns.run("ip", "-6", "route", "replace", "default", "via", "fd00:77::1", "dev", "eth0")
    ext = sel(host, enable_ipv6=True)
    assert (ext.name, str(ext.iface_addr), str(ext.iface_addr6), str(ext.ext_addr6)) == \
        ("eth0", host.ip, "fd00:77::5", "fd00:77::5")
