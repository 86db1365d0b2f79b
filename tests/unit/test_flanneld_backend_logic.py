"""Pure parts of the flanneld backends: Backend options, MACs, address ranking, the desired
state per peer, route ownership, errno translation. No kernel."""
from __future__ import annotations

import errno
import ipaddress

import pytest

from cni_flannel.flanneld.backend.base import BackendError
from cni_flannel.flanneld.backend.hostgw import owned_route as hostgw_owned
from cni_flannel.flanneld.backend.hostgw import wanted_routes
from cni_flannel.flanneld.backend.kernel import (
    IFA_F_DEPRECATED,
    IFA_F_PERMANENT,
    IFA_F_TEMPORARY,
    RTPROT_BOOT,
    Addr,
    Route,
    errno_text,
    translate,
)
from cni_flannel.flanneld.backend.vxlan import (
    Family,
    VXLANConfig,
    config_log_line,
    normalize_mac,
    owned_route,
    parse_vxlan_config,
    plan_peers,
    random_mac,
)
from cni_flannel.flanneld.iface import usable_addrs
from cni_flannel.flanneld.subnet.lease import Lease, LeaseAttrs

N = ipaddress.ip_network


def test_vxlan_defaults_and_case_insensitive_keys_null_absent():
    assert parse_vxlan_config({"Type": "vxlan"}, 1500) == VXLANConfig(vni=1, port=0, mtu=1500)
    cfg = parse_vxlan_config({"vni": 4, "PORT": 4789, "Gbp": True, "learning": True, "directrouting": True,
                              "Mtu": 9000}, 1500)
    assert cfg == VXLANConfig(vni=4, port=4789, mtu=9000, gbp=True, learning=True, direct_routing=True)
    assert config_log_line(cfg) == "VXLAN config: VNI=4 Port=4789 GBP=true Learning=true DirectRouting=true"
    assert parse_vxlan_config(None, 1400).mtu == 1400
    assert parse_vxlan_config({"VNI": None, "Port": None}, 1500) == VXLANConfig(vni=1, port=0, mtu=1500)


@pytest.mark.parametrize(("raw", "message"), [
    ({"VNI": "1"}, "json: cannot unmarshal string into Go struct field VXLANConfig.vni of type int"),
    ({"Port": 1.5}, "json: cannot unmarshal number 1.5 into Go struct field VXLANConfig.port of type int"),
    ({"DirectRouting": 1}, "json: cannot unmarshal number into Go struct field VXLANConfig.directRouting of type bool"),
    ({"VNI": True}, "json: cannot unmarshal bool into Go struct field VXLANConfig.vni of type int"),
    ({"VNI": 1 << 24}, "VNI 16777216 is out of range (0-16777215)"),
    ({"MTU": 100}, "MTU 100 leaves less than 68 bytes for the vxlan device"),
])
def test_vxlan_bad_options(raw, message):
    with pytest.raises(BackendError) as err:
        parse_vxlan_config(raw, 1500)
    assert str(err.value) == "error decoding VXLAN backend config: " + message


def test_macs():
    assert normalize_mac("0A-58-0A-2A-01-00") == "0a:58:0a:2a:01:00"
    assert normalize_mac("0a58.0a2a.0100") == "0a:58:0a:2a:01:00"
    assert normalize_mac("0a:58:0a:2a:01") is None and normalize_mac("zz:58:0a:2a:01:00") is None
    assert normalize_mac(None) is None
    for _ in range(50):
        first = int(random_mac().split(":")[0], 16)
        assert first & 0x02 and not first & 0x01  # locally administered unicast


def test_address_choice_global_permanent_nontemporary_not_deprecated():
    a = ipaddress.ip_address
    addrs = [Addr(a("169.254.0.5"), 16, IFA_F_PERMANENT), Addr(a("10.0.0.9"), 24, 0),
             Addr(a("10.0.0.7"), 24, IFA_F_PERMANENT | IFA_F_DEPRECATED), Addr(a("10.0.0.8"), 24, IFA_F_PERMANENT),
             Addr(a("127.0.0.1"), 8, IFA_F_PERMANENT)]
    assert [str(x) for x in usable_addrs(addrs, 4)] == ["10.0.0.8", "10.0.0.9", "169.254.0.5"]
    v6 = [Addr(a("fd00::2"), 64, IFA_F_TEMPORARY), Addr(a("fe80::1"), 64, IFA_F_PERMANENT), Addr(a("fd00::1"), 64, 0)]
    assert [str(x) for x in usable_addrs(v6, 6)] == ["fd00::1", "fd00::2", "fe80::1"]


def lease(n: int, public: str | None, mac: str | None = "0a:00:00:00:00:02", btype: str = "vxlan") -> Lease:
    return Lease(subnet=N(f"10.42.{n}.0/24"), ipv6_subnet=None,
                 attrs=LeaseAttrs(public_ip=ipaddress.ip_address(public) if public else None, backend_type=btype,
                                  backend_data={"VNI": 1, "VtepMAC": mac} if mac else None))


FAM = Family(version=4, dev_name="flannel.1", network=N("10.42.0.0/16"), own_subnet=N("10.42.1.0/24"),
             dev_index=7, ext_index=2, ext_name="eth0")


def test_plan_vxlan_and_direct_peers():
    plans, errors = plan_peers([lease(2, "192.168.1.2"), lease(3, "10.9.0.3", "0a:00:00:00:00:03")], FAM,
                               direct_routing=True, is_direct=lambda ip: str(ip) == "192.168.1.2")
    assert errors == []
    direct, vx = plans
    assert direct.direct and direct.route.describe() == "10.42.2.0/24 via 192.168.1.2 dev eth0"
    assert vx.neigh.describe() == "10.42.3.0 lladdr 0a:00:00:00:00:03 dev flannel.1 nud permanent"
    assert vx.fdb.describe() == "0a:00:00:00:00:03 dev flannel.1 dst 10.9.0.3 self permanent"
    assert vx.route.describe() == "10.42.3.0/24 via 10.42.3.0 dev flannel.1 onlink"
    plans, _ = plan_peers([lease(2, "192.168.1.2")], FAM, direct_routing=False, is_direct=lambda ip: True)
    assert not plans[0].direct  # DirectRouting off: never direct


def test_plan_errors_and_skips():
    own = lease(1, "192.168.1.1")
    plans, errors = plan_peers([own, lease(4, None), lease(5, "192.168.1.5", mac="junk"),
                                Lease(subnet=N("10.43.0.0/24"), ipv6_subnet=None,
                                      attrs=LeaseAttrs(public_ip=ipaddress.ip_address("1.2.3.4"),
                                                       backend_type="vxlan",
                                                       backend_data={"VtepMAC": "0a:00:00:00:00:01"}))],
                               FAM, direct_routing=False, is_direct=lambda ip: False)
    assert plans == []
    assert errors[0] == "peer 10.42.4.0-24: the lease has no PublicIP"
    assert errors[1].startswith("peer 10.42.5.0-24: error decoding subnet lease JSON: no valid VtepMAC")
    assert errors[2] == "peer 10.43.0.0-24: subnet 10.43.0.0/24 is not inside Network 10.42.0.0/16; ignored"


def r(dst: str, gw: str | None = None, oif: int | None = 7, proto: int = RTPROT_BOOT, onlink: bool = False) -> Route:
    return Route(dst=N(dst), gateway=ipaddress.ip_address(gw) if gw else None, oif=oif, protocol=proto,
                 onlink=onlink)


def test_vxlan_route_ownership():
    assert owned_route(r("10.42.2.0/24", "10.42.2.0", onlink=True), FAM)
    assert owned_route(r("10.42.2.0/24", "192.168.1.2", oif=2), FAM)  # a direct route on the ext iface
    assert not owned_route(r("10.42.2.0/24", None, oif=2), FAM)        # no gateway on ext: not ours
    assert not owned_route(r("10.42.1.0/24", None, oif=9), FAM)        # the own subnet (cni0)
    assert not owned_route(r("10.42.1.0/24", "10.42.1.0", onlink=True), FAM)  # own subnet even via us
    assert not owned_route(r("10.42.0.0/16", None), FAM)               # the whole Network
    assert not owned_route(r("10.99.0.0/24", "10.99.0.1"), FAM)        # outside Network
    assert not owned_route(r("10.42.2.0/24", "10.42.2.0", proto=4), FAM)  # proto static: someone else's
    assert not owned_route(r("10.42.2.0/24", "192.168.1.2", oif=3), FAM)  # another interface


def test_hostgw_wanted_and_owned():
    want, errors = wanted_routes([lease(2, "192.168.1.2", btype="host-gw"), lease(1, "192.168.1.1"),
                                  lease(6, None)], version=4, network=N("10.42.0.0/16"),
                                 own_subnet=N("10.42.1.0/24"), ext_index=2, ext_name="eth0")
    assert {k: v.describe() for k, v in want.items()} == {"10.42.2.0-24": "10.42.2.0/24 via 192.168.1.2 dev eth0"}
    assert errors == ["peer 10.42.6.0-24: the lease has no PublicIP"]
    kw = {"network": N("10.42.0.0/16"), "own_subnet": N("10.42.1.0/24"), "ext_index": 2}
    assert hostgw_owned(r("10.42.2.0/24", "192.168.1.2", oif=2), **kw)
    assert not hostgw_owned(r("10.42.2.0/24", "192.168.1.2", oif=2, proto=4), **kw)
    assert not hostgw_owned(r("10.42.2.0/24", "10.42.2.0", oif=7, onlink=True), **kw)
    assert not hostgw_owned(r("10.42.1.0/24", "192.168.1.9", oif=2), **kw)


def test_route_same_as_and_describe():
    assert r("10.42.2.0/24", "1.1.1.1", oif=None).same_as(r("10.42.2.0/24", "1.1.1.1", oif=2))
    assert not r("10.42.2.0/24", "1.1.1.1", oif=3).same_as(r("10.42.2.0/24", "1.1.1.1", oif=2))
    assert not r("10.42.2.0/24", "10.42.2.0", onlink=True).same_as(r("10.42.2.0/24", "10.42.2.0"))


def test_errno_translation_never_a_repr():
    assert errno_text(errno.ENETUNREACH) == "network is unreachable (ENETUNREACH)"

    class FakeNetlinkError(Exception):
        code = errno.EEXIST

    exc = translate(FakeNetlinkError("(17, 'File exists')"), "add route 10.42.2.0/24 via 192.168.77.2 dev eth0")
    assert str(exc) == "failed to add route 10.42.2.0/24 via 192.168.77.2 dev eth0: file exists (EEXIST)"
    assert exc.code == errno.EEXIST
