"""The shared lease formats (cni_flannel/flanneld/subnet/lease.py): flanneld-reference §5.1
(`pkg/subnet/subnet.go@H` ParseSubnetKey/MakeSubnetKey and its subnet_test.go, `pkg/lease/lease.go@H`,
`Documentation/reservations.md@H`)."""
from __future__ import annotations

import json
from ipaddress import IPv4Address, IPv4Network, IPv6Address, IPv6Network

import pytest

from cni_flannel.flanneld.subnet.lease import (
    Lease,
    LeaseAttrs,
    LeaseFormatError,
    attrs_from_json,
    attrs_to_json,
    parse_subnet_key,
    subnet_env_address,
    subnet_key,
)

# Documentation/reservations.md@H, byte for byte
DOC_VALUE = '{"PublicIP":"192.168.64.3","PublicIPv6":null,"BackendType":"vxlan","BackendData":{"VNI":1,"VtepMAC":"c6:d2:32:6f:8f:44"}}'  # noqa: E501


# -- keys --------------------------------------------------------------------------------------------

def test_key_v4() -> None:
    """§5.1: `<prefix>/subnets/10.5.52.0-24`."""
    assert subnet_key(IPv4Network("10.5.52.0/24")) == "10.5.52.0-24"
    assert Lease(subnet=IPv4Network("10.5.52.0/24"), ipv6_subnet=None).key == "10.5.52.0-24"


def test_key_dual_stack() -> None:
    """§5.1: `10.5.52.0-24&fc00:0:0:1::-64`, the v6 part in Go's compressed form."""
    assert subnet_key(IPv4Network("10.5.52.0/24"), IPv6Network("fc00:0:0:1::/64")) == "10.5.52.0-24&fc00:0:0:1::-64"
    assert Lease(subnet=IPv4Network("10.12.13.0/24"), ipv6_subnet=IPv6Network("fd00:12:13::/56")).key == \
        "10.12.13.0-24&fd00:12:13::-56"


def test_key_of_a_v6_only_lease() -> None:
    """Go's MakeSubnetKey with a zero IPv4 subnet (kube mode, IPv6-only nodes); no subnet at all is refused."""
    assert subnet_key(None, IPv6Network("fc00::/64")) == "0.0.0.0-0&fc00::-64"
    with pytest.raises(LeaseFormatError):
        subnet_key(None, None)


def test_parse_key_reference_v4() -> None:
    """subnet_test.go TestSubnetNodev4, including the round trip through MakeSubnetKey."""
    v4, v6 = parse_subnet_key("10.12.13.0-24")
    assert v4 == IPv4Network("10.12.13.0/24") and v6 is None
    assert subnet_key(v4, v6) == "10.12.13.0-24"


def test_parse_key_reference_v6() -> None:
    """subnet_test.go TestSubnetNodev6."""
    v4, v6 = parse_subnet_key("10.12.13.0-24&fd00:12:13::-56")
    assert v4 == IPv4Network("10.12.13.0/24") and v6 == IPv6Network("fd00:12:13::/56")
    assert subnet_key(v4, v6) == "10.12.13.0-24&fd00:12:13::-56"


def test_parse_key_takes_the_full_etcd_path() -> None:
    """The regexp is anchored only at the end: the watch hands whole keys."""
    assert parse_subnet_key("/coreos.com/network/subnets/10.5.52.0-24") == (IPv4Network("10.5.52.0/24"), None)
    assert parse_subnet_key("/x/subnets/10.5.52.0-24&fc00:0:0:1::-64")[1] == IPv6Network("fc00:0:0:1::/64")


@pytest.mark.parametrize("key", [
    # subnet_test.go TestSubnetNodeInvalid
    "10", "10.12.13.0", "10.12.13-24", "10.12.13.300-24", "10.12.13.0-24hi", "&2001::-56",
    "10.12.13.0-24&:12:13:-56", "10.12.13.0-24&20011::-56", "10.12.13.0-24&2001-56", "10.12.13.0-24&2001::",
    "10.12.13.0-24&2001::-56hi",
    # and a few more
    "", "10.12.13.0-33", "10.12.13.0-24&FD00::-56", "010.12.13.0-24", "10.12.13.0-24&fd00::-129",
])
def test_parse_key_invalid(key) -> None:
    with pytest.raises(LeaseFormatError):
        parse_subnet_key(key)


# -- the lease value ---------------------------------------------------------------------------------

DOC_ATTRS = LeaseAttrs(public_ip=IPv4Address("192.168.64.3"), backend_type="vxlan",
                       backend_data={"VNI": 1, "VtepMAC": "c6:d2:32:6f:8f:44"})


def test_value_is_byte_exact_as_go_writes_it() -> None:
    """§5.1: json.Marshal of LeaseAttrs: field order, no spaces, PublicIPv6 null."""
    assert attrs_to_json(DOC_ATTRS) == DOC_VALUE


def test_parse_reference_example() -> None:
    assert attrs_from_json(DOC_VALUE) == DOC_ATTRS
    assert attrs_from_json(DOC_VALUE.encode()) == DOC_ATTRS


def test_round_trip_of_the_reference_example() -> None:
    assert attrs_to_json(attrs_from_json(DOC_VALUE)) == DOC_VALUE


def test_value_omitempty_fields() -> None:
    """PublicIP is always there ("0.0.0.0" unset), BackendType/BackendData/BackendV6Data are omitted when empty
    (⚠ udp and alloc write no BackendType)."""
    assert attrs_to_json(LeaseAttrs()) == '{"PublicIP":"0.0.0.0","PublicIPv6":null}'
    assert attrs_to_json(LeaseAttrs(public_ip=IPv4Address("10.0.0.1"), backend_data={})) == \
        '{"PublicIP":"10.0.0.1","PublicIPv6":null,"BackendData":{}}'


def test_value_dual_stack() -> None:
    attrs = LeaseAttrs(public_ip=IPv4Address("192.168.64.3"), public_ipv6=IPv6Address("fd00::3"),
                       backend_type="vxlan", backend_data={"VNI": 1, "VtepMAC": "c6:d2:32:6f:8f:44"},
                       backend_v6_data={"VNI": 1, "VtepMAC": "aa:bb:cc:dd:ee:ff"})
    text = attrs_to_json(attrs)
    assert text == ('{"PublicIP":"192.168.64.3","PublicIPv6":"fd00::3","BackendType":"vxlan",'
                    '"BackendData":{"VNI":1,"VtepMAC":"c6:d2:32:6f:8f:44"},'
                    '"BackendV6Data":{"VNI":1,"VtepMAC":"aa:bb:cc:dd:ee:ff"}}')
    assert attrs_from_json(text) == attrs


def test_parse_keys_case_insensitively() -> None:
    """Go's encoding/json: keys match case-insensitively, the last one wins."""
    attrs = attrs_from_json('{"publicip":"10.0.0.1","PUBLICIPV6":"fd00::1","backendtype":"host-gw",'
                            '"backenddata":null,"PublicIP":"10.0.0.2"}')
    assert attrs.public_ip == IPv4Address("10.0.0.2")
    assert attrs.public_ipv6 == IPv6Address("fd00::1")
    assert attrs.backend_type == "host-gw"
    assert attrs.backend_data is None


def test_parse_udp_lease_without_backend_type() -> None:
    """⚠ udp and alloc write no BackendType."""
    attrs = attrs_from_json('{"PublicIP":"10.0.0.1","PublicIPv6":null}')
    assert attrs == LeaseAttrs(public_ip=IPv4Address("10.0.0.1"))


def test_parse_v010_lease() -> None:
    """At v0.10 (etcd v2) there was no PublicIPv6 key; unknown keys are ignored."""
    attrs = attrs_from_json('{"PublicIP":"10.0.0.1","BackendType":"vxlan",'
                            '"BackendData":{"VtepMAC":"aa:bb:cc:dd:ee:ff"},"Extra":1}')
    assert attrs.public_ip == IPv4Address("10.0.0.1") and attrs.public_ipv6 is None
    assert attrs.backend_data == {"VtepMAC": "aa:bb:cc:dd:ee:ff"}


def test_unset_public_ip_reads_back_as_none() -> None:
    assert attrs_from_json('{"PublicIP":"0.0.0.0","PublicIPv6":null}').public_ip is None


@pytest.mark.parametrize("raw", [
    "", "{", "[]", '"x"', '{"PublicIP":"fd00::1"}', '{"PublicIP":"10.0.0.300"}', '{"PublicIPv6":"junk"}',
    '{"PublicIP":"10.0.0.1","BackendType":5}',
])
def test_parse_bad_values(raw) -> None:
    with pytest.raises(LeaseFormatError):
        attrs_from_json(raw)


def test_value_escapes_like_go() -> None:
    attrs = LeaseAttrs(public_ip=IPv4Address("10.0.0.1"), backend_type="extension",
                       backend_data={"Cmd": "a<b>&c é"})
    assert attrs_to_json(attrs) == \
        '{"PublicIP":"10.0.0.1","PublicIPv6":null,"BackendType":"extension","BackendData":' \
        '{"Cmd":"a\\u003cb\\u003e\\u0026c é"}}'


def test_value_is_valid_json_for_any_backend_data() -> None:
    attrs = LeaseAttrs(public_ip=IPv4Address("10.0.0.1"), backend_data={"a": [1, 2.5, None, True], "b": {"c": ""}})
    assert json.loads(attrs_to_json(attrs))["BackendData"] == {"a": [1, 2.5, None, True], "b": {"c": ""}}


# -- FLANNEL_SUBNET ------------------------------------------------------------------------------------

def test_subnet_env_address() -> None:
    """§4: the lease network address + 1 with the lease prefix."""
    assert subnet_env_address(IPv4Network("10.244.3.0/24")) == "10.244.3.1/24"
    assert subnet_env_address(IPv6Network("2001:cafe:42:3::/64")) == "2001:cafe:42:3::1/64"
