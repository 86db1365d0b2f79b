"""net-conf.json / the etcd config: flanneld-reference §3 (`pkg/subnet/config.go@H`, its config_test.go),
and the subnet walk of AcquireLease (§5.2 steps 2 and 4)."""
from __future__ import annotations

import json
from ipaddress import IPv4Address, IPv4Network, IPv6Network

import pytest

from cni_flannel.flanneld.config import NetworkConfig, candidate_subnets, ci_get, in_range, parse_network_config
from cni_flannel.flanneld.subnet.manager import ConfigError

P = "error parsing subnet config: "


def conf(obj: dict | str, check: bool = True) -> NetworkConfig:
    return parse_network_config(obj if isinstance(obj, str) else json.dumps(obj), check=check)


def error(obj: dict | str, check: bool = True) -> str:
    with pytest.raises(ConfigError) as info:
        conf(obj, check)
    return str(info.value)


# -- IPv4 defaults ----------------------------------------------------------------------------------

@pytest.mark.parametrize("doc", ['{"Network": "10.1.0.0/16"}', '{ "network": "10.1.0.0/16" }'])
def test_defaults_slash16(doc) -> None:
    """§3: SubnetLen 24 when Network ≤ /22; Min = Network + 1 subnet, Max = next network − 1 subnet."""
    cfg = conf(doc)
    assert cfg.network == IPv4Network("10.1.0.0/16")
    assert cfg.subnet_len == 24
    assert cfg.subnet_min == IPv4Network("10.1.1.0/24")
    assert cfg.subnet_max == IPv4Network("10.1.255.0/24")
    assert (cfg.enable_ipv4, cfg.enable_ipv6, cfg.enable_nftables) == (True, False, False)
    assert cfg.ipv6_network is None and cfg.ipv6_subnet_min is None and cfg.ipv6_subnet_len == 0


def test_reference_config_defaults() -> None:
    """config_test.go TestConfigDefaults: 10.3.0.0/16 -> 10.3.1.0 .. 10.3.255.0, /24."""
    cfg = conf('{ "network": "10.3.0.0/16" }')
    assert (str(cfg.subnet_min.network_address), str(cfg.subnet_max.network_address), cfg.subnet_len) == \
        ("10.3.1.0", "10.3.255.0", 24)


@pytest.mark.parametrize("network,length,lo,hi", [
    ("10.0.0.0/8", 24, "10.0.1.0", "10.255.255.0"),
    ("10.0.0.0/22", 24, "10.0.1.0", "10.0.3.0"),      # the last prefix that gets /24
    ("10.0.0.0/23", 25, "10.0.0.128", "10.0.1.128"),    # from here on prefix + 2
    ("10.0.0.0/24", 26, "10.0.0.64", "10.0.0.192"),
    ("10.0.0.0/28", 30, "10.0.0.4", "10.0.0.12"),      # the smallest useful network
])
def test_default_subnet_len_edges(network, length, lo, hi) -> None:
    cfg = conf({"Network": network})
    assert cfg.subnet_len == length
    assert cfg.subnet_min == IPv4Network(f"{lo}/{length}")
    assert cfg.subnet_max == IPv4Network(f"{hi}/{length}")


@pytest.mark.parametrize("network", ["10.0.0.0/29", "10.0.0.0/30", "10.0.0.1/32"])
def test_network_too_small(network) -> None:
    assert error({"Network": network}) == "network is too small. Minimum useful network prefix is /28"


def test_host_bits_are_masked() -> None:
    """§3: net.ParseCIDR masks: 10.244.1.1/16 -> 10.244.0.0/16."""
    cfg = conf({"Network": "10.244.1.1/16"})
    assert cfg.network == IPv4Network("10.244.0.0/16")
    assert cfg.subnet_min == IPv4Network("10.244.1.0/24")


def test_whole_address_space_wraps_like_go_uint32() -> None:
    """128.0.0.0/1: Next() wraps to 0.0.0.0 in Go's uint32 IP4, so Max is 255.255.255.0."""
    cfg = conf({"Network": "128.0.0.0/1"})
    assert cfg.subnet_max == IPv4Network("255.255.255.0/24")


# -- IPv4 explicit values -----------------------------------------------------------------------------

def test_reference_config_overrides() -> None:
    """config_test.go TestConfigOverrides."""
    cfg = conf({"Network": "10.3.0.0/16", "SubnetMin": "10.3.5.0", "SubnetMax": "10.3.8.0", "SubnetLen": 28})
    assert cfg.subnet_len == 28
    assert cfg.subnet_min == IPv4Network("10.3.5.0/28")
    assert cfg.subnet_max == IPv4Network("10.3.8.0/28")


@pytest.mark.parametrize("length", [31, 32, 64])
def test_subnet_len_too_long(length) -> None:
    assert error({"Network": "10.0.0.0/16", "SubnetLen": length}) == "SubnetLen must be less than /31"


@pytest.mark.parametrize("network,length", [("10.0.0.0/16", 17), ("10.0.0.0/16", 8), ("10.0.0.0/28", 29),
                                            ("10.0.0.0/29", 30)])
def test_subnet_len_four_subnets(network, length) -> None:
    assert error({"Network": network, "SubnetLen": length}) == \
        "network must be able to accommodate at least four subnets"


def test_subnet_len_edges_accepted() -> None:
    assert conf({"Network": "10.0.0.0/16", "SubnetLen": 18}).subnet_min == IPv4Network("10.0.64.0/18")
    assert conf({"Network": "10.0.0.0/28", "SubnetLen": 30}).subnet_max == IPv4Network("10.0.0.12/30")
    assert conf({"Network": "10.0.0.0/16", "SubnetLen": 0}).subnet_len == 24  # 0 is "absent"


@pytest.mark.parametrize("key,value,msg", [
    ("SubnetMin", "10.4.0.0", "SubnetMin is not in the range of the Network"),
    ("SubnetMax", "10.4.0.0", "SubnetMax is not in the range of the Network"),
    ("SubnetMin", "10.3.5.1", "SubnetMin is not on a SubnetLen boundary: 10.3.5.1"),
    ("SubnetMax", "10.3.8.128", "SubnetMax is not on a SubnetLen boundary: 10.3.8.128"),
])
def test_subnet_min_max_validation(key, value, msg) -> None:
    assert error({"Network": "10.3.0.0/16", key: value}) == msg


def test_zero_min_max_mean_default() -> None:
    """ip.IP4(0) is "unset" in the reference."""
    cfg = conf({"Network": "10.3.0.0/16", "SubnetMin": "0.0.0.0", "SubnetMax": "0.0.0.0"})
    assert cfg.subnet_min == IPv4Network("10.3.1.0/24")
    assert cfg.subnet_max == IPv4Network("10.3.255.0/24")


def test_min_above_max_is_refused() -> None:
    """⚠ not checked upstream (the allocator then finds nothing): a clear message instead."""
    assert error({"Network": "10.3.0.0/16", "SubnetMin": "10.3.9.0", "SubnetMax": "10.3.8.0"}) == \
        "SubnetMin 10.3.9.0 is above SubnetMax 10.3.8.0: no subnet can be allocated"
    assert conf({"Network": "10.3.0.0/16", "SubnetMin": "10.3.8.0", "SubnetMax": "10.3.8.0"}).subnet_min == \
        IPv4Network("10.3.8.0/24")


@pytest.mark.parametrize("value,msg", [("10.3.1", "invalid IP address format"),
                                       ("fc00::1", "invalid IPv4 address format"),
                                       (5, "invalid IP address format")])
def test_bad_subnet_min_text(value, msg) -> None:
    assert error({"Network": "10.3.0.0/16", "SubnetMin": value}) == P + msg


def test_v4_mapped_min_accepted_like_to4() -> None:
    assert conf({"Network": "10.3.0.0/16", "SubnetMin": "::ffff:10.3.2.0"}).subnet_min == IPv4Network("10.3.2.0/24")


# -- Network ---------------------------------------------------------------------------------------------

def test_network_missing() -> None:
    assert error({}) == "please define a correct Network parameter in the flannel config"
    assert error({"Network": "0.0.0.0/0"}) == "please define a correct Network parameter in the flannel config"
    assert error("null") == "please define a correct Network parameter in the flannel config"


@pytest.mark.parametrize("value,msg", [
    ("fc00::/48", "invalid IPv4 CIDR format"),
    ("", "invalid CIDR address: "),
    ("10.0.0.0", "invalid CIDR address: 10.0.0.0"),
    ("10.0.0.0/33", "invalid CIDR address: 10.0.0.0/33"),
    ("10.0.0.0/255.255.0.0", "invalid CIDR address: 10.0.0.0/255.255.0.0"),
    ("10.0.0.0/+8", "invalid CIDR address: 10.0.0.0/+8"),
    ("010.0.0.0/8", "invalid CIDR address: 010.0.0.0/8"),
    (10, "invalid CIDR address: 10"),
    (True, "invalid CIDR address: true"),
])
def test_bad_network(value, msg) -> None:
    assert error({"Network": value}) == P + msg


def test_network_not_needed_without_ipv4() -> None:
    cfg = conf({"EnableIPv4": False, "EnableIPv6": True, "IPv6Network": "fc00::/48"})
    assert cfg.network is None and cfg.subnet_min is None and cfg.subnet_len == 0


# -- IPv6 ----------------------------------------------------------------------------------------------

def test_reference_ipv6_defaults() -> None:
    """config_test.go TestIPv6ConfigDefaults: fc00::/48 -> /64, fc00:0:0:1:: .. fc00:0:0:ffff::."""
    cfg = conf('{ "enableIPv6": true, "ipv6Network": "fc00::/48", "enableIPv4": false }')
    assert cfg.ipv6_network == IPv6Network("fc00::/48")
    assert cfg.ipv6_subnet_len == 64
    assert cfg.ipv6_subnet_min == IPv6Network("fc00:0:0:1::/64")
    assert cfg.ipv6_subnet_max == IPv6Network("fc00:0:0:ffff::/64")
    assert cfg.network is None


def test_reference_ipv6_overrides() -> None:
    """config_test.go TestIPv6ConfigOverrides."""
    cfg = conf({"EnableIPv6": True, "IPv6Network": "fc00::/48", "IPv6SubnetMin": "fc00:0:0:1::",
                "IPv6SubnetMax": "fc00:0:0:f::", "IPv6SubnetLen": 124, "enableIPv4": False})
    assert cfg.ipv6_subnet_len == 124
    assert cfg.ipv6_subnet_min == IPv6Network("fc00:0:0:1::/124")
    assert cfg.ipv6_subnet_max == IPv6Network("fc00:0:0:f::/124")


@pytest.mark.parametrize("network,length,lo,hi", [
    ("fc00::/62", 64, "fc00:0:0:1::", "fc00:0:0:3::"),
    ("fc00::/63", 65, "fc00::8000:0:0:0", "fc00:0:0:1:8000::"),
    ("fc00::/124", 126, "fc00::4", "fc00::c"),
])
def test_ipv6_default_len_edges(network, length, lo, hi) -> None:
    cfg = conf({"EnableIPv4": False, "EnableIPv6": True, "IPv6Network": network})
    assert cfg.ipv6_subnet_len == length
    assert cfg.ipv6_subnet_min == IPv6Network(f"{lo}/{length}")
    assert cfg.ipv6_subnet_max == IPv6Network(f"{hi}/{length}")


V6 = {"EnableIPv4": False, "EnableIPv6": True, "IPv6Network": "fc00::/48"}


@pytest.mark.parametrize("extra,msg", [
    ({"IPv6Network": "fc00::/125"}, "IPv6Network is too small. Minimum useful network prefix is /124"),
    ({"IPv6SubnetLen": 127}, "SubnetLen must be less than /127"),
    ({"IPv6SubnetLen": 49}, "network must be able to accommodate at least four subnets"),
    ({"IPv6SubnetMin": "fc01::"}, "IPv6SubnetMin is not in the range of the IPv6Network"),
    ({"IPv6SubnetMax": "fc01::"}, "IPv6SubnetMax is not in the range of the IPv6Network"),
    ({"IPv6SubnetMin": "fc00:0:0:1::1"}, "IPv6SubnetMin is not on a SubnetLen boundary: fc00:0:0:1::1"),
    ({"IPv6SubnetMax": "fc00:0:0:2:8000::"}, "IPv6SubnetMax is not on a SubnetLen boundary: fc00:0:0:2:8000::"),
    ({"IPv6Network": None}, "please define a correct IPv6Network parameter in the flannel config"),
    ({"IPv6Network": "::/0"}, "please define a correct IPv6Network parameter in the flannel config"),
    ({"IPv6SubnetMin": "fc00:0:0:9::", "IPv6SubnetMax": "fc00:0:0:8::"},
     "IPv6SubnetMin fc00:0:0:9:: is above IPv6SubnetMax fc00:0:0:8::: no subnet can be allocated"),
])
def test_ipv6_validation(extra, msg) -> None:
    assert error({**V6, **extra}) == msg


@pytest.mark.parametrize("extra,msg", [
    ({"IPv6Network": "10.0.0.0/8"}, "invalid IPv6 CIDR format"),  # ⚠ the reference maps it into ::ffff:0:0/96
    ({"IPv6SubnetMin": "10.0.0.1"}, "invalid IPv6 address format"),
    ({"IPv6SubnetMin": "zz"}, "invalid IP address format"),
    ({"IPv6Network": "fc00::"}, "invalid CIDR address: fc00::"),
])
def test_ipv6_parse_errors(extra, msg) -> None:
    assert error({**V6, **extra}) == P + msg


def test_dual_stack() -> None:
    cfg = conf({"Network": "10.244.0.0/16", "EnableIPv6": True, "IPv6Network": "2001:cafe:42::/56"})
    assert cfg.subnet_min == IPv4Network("10.244.1.0/24")
    assert cfg.ipv6_subnet_min == IPv6Network("2001:cafe:42:1::/64")
    assert cfg.ipv6_subnet_max == IPv6Network("2001:cafe:42:ff::/64")


def test_ipv6_network_without_enable_is_parsed_not_checked() -> None:
    """The §11 code looks at IPv6Network, so it is kept even with EnableIPv6 false."""
    cfg = conf({"Network": "10.0.0.0/16", "IPv6Network": "fc00::/48", "IPv6SubnetLen": 200})
    assert cfg.ipv6_network == IPv6Network("fc00::/48")
    assert cfg.ipv6_subnet_min is None


# -- Go encoding/json semantics ------------------------------------------------------------------------

def test_keys_are_case_insensitive_everywhere() -> None:
    cfg = conf({"nEtWoRk": "10.5.0.0/16", "SUBNETLEN": 26, "enableipv6": True, "ipv6network": "fc00::/48",
                "enablenftables": True, "backend": {"type": "Host-GW", "directrouting": True}})
    assert cfg.network == IPv4Network("10.5.0.0/16")
    assert cfg.subnet_len == 26
    assert cfg.enable_ipv6 and cfg.enable_nftables
    assert cfg.backend_type == "host-gw"
    assert cfg.backend == {"type": "Host-GW", "directrouting": True}


def test_last_duplicate_wins_across_cases() -> None:
    assert conf('{"Network":"10.1.0.0/16","network":"10.2.0.0/16"}').network == IPv4Network("10.2.0.0/16")
    # an exact repeat moves to the end: Go applies keys in document order
    assert conf('{"Network":"10.1.0.0/16","network":"10.2.0.0/16","Network":"10.3.0.0/16"}').network == \
        IPv4Network("10.3.0.0/16")


def test_unknown_keys_are_ignored() -> None:
    cfg = conf({"Network": "10.1.0.0/16", "Networks": ["10.9.0.0/16"], "Comment": {"x": [1]}})
    assert cfg.network == IPv4Network("10.1.0.0/16")
    assert cfg.raw["Networks"] == ["10.9.0.0/16"]


def test_null_is_absent() -> None:
    cfg = conf({"Network": "10.1.0.0/16", "SubnetLen": None, "SubnetMin": None, "EnableIPv4": None,
                "EnableIPv6": None, "Backend": None})
    assert cfg.subnet_len == 24 and cfg.subnet_min == IPv4Network("10.1.1.0/24")
    assert cfg.enable_ipv4 is True and cfg.enable_ipv6 is False
    assert cfg.backend_type == "vxlan" and cfg.backend_defaulted


@pytest.mark.parametrize("key,value,go_type,kind", [
    ("EnableIPv6", "true", "bool", "string"),
    ("EnableIPv4", 1, "bool", "number"),
    ("EnableNFTables", [], "bool", "array"),
    ("SubnetLen", "24", "uint", "string"),
    ("SubnetLen", True, "uint", "bool"),
    ("SubnetLen", -1, "uint", "number -1"),
])
def test_type_errors_are_gos(key, value, go_type, kind) -> None:
    assert error({"Network": "10.1.0.0/16", key: value}) == \
        f"{P}json: cannot unmarshal {kind} into Go struct field Config.{key} of type {go_type}"


def test_fractional_subnet_len_keeps_its_text() -> None:
    assert error('{"Network": "10.1.0.0/16", "SubnetLen": 24.0}') == \
        P + "json: cannot unmarshal number 24.0 into Go struct field Config.SubnetLen of type uint"


@pytest.mark.parametrize("doc,msg", [
    ("", "unexpected end of JSON input"),
    ("   ", "unexpected end of JSON input"),
    ('{"Network": "10.1.0.0/16"', "unexpected end of JSON input"),
    ('{"Network": "10.1.0', "unexpected end of JSON input"),
    ("[]", "json: cannot unmarshal array into Go value of type subnet.Config"),
    ('"x"', "json: cannot unmarshal string into Go value of type subnet.Config"),
    ("x", "invalid character 'x' looking for beginning of value (line 1, column 1)"),
    ('{"a": 1,}', "invalid character '}' looking for beginning of object key string (line 1, column 9)"),
    ('{"a" 1}', "invalid character '1' after object key (line 1, column 6)"),
    ("{} {}", "invalid character '{' after top-level value (line 1, column 4)"),
    ('{"a": NaN}', "invalid character 'N' looking for beginning of value"),
    ("{'a': 1}", "invalid character '\\'' looking for beginning of object key string (line 1, column 2)"),
])
def test_json_syntax_errors(doc, msg) -> None:
    assert error(doc) == P + msg


def test_bytes_and_bom() -> None:
    assert parse_network_config(b'\xef\xbb\xbf{"Network": "10.1.0.0/16"}').network == IPv4Network("10.1.0.0/16")


# -- Backend ---------------------------------------------------------------------------------------------

def test_no_backend_defaults_to_vxlan() -> None:
    """⚠ the reference picks udp (its docs say vxlan): ours is vxlan, flagged for the daemon's log."""
    cfg = conf({"Network": "10.1.0.0/16"})
    assert (cfg.backend_type, cfg.backend, cfg.backend_defaulted) == ("vxlan", {}, True)


def test_backend_raw_object_and_lowercased_type() -> None:
    cfg = conf({"Network": "10.1.0.0/16", "Backend": {"Type": "VXLAN", "VNI": 4096, "Port": 4789}})
    assert cfg.backend_type == "vxlan"
    assert cfg.backend == {"Type": "VXLAN", "VNI": 4096, "Port": 4789}
    assert cfg.backend_defaulted is False


@pytest.mark.parametrize("backend", [{}, {"Type": ""}, {"Type": None}, {"VNI": 1}])
def test_backend_without_type(backend) -> None:
    assert error({"Network": "10.1.0.0/16", "Backend": backend}) == "unknown backend type: "


def test_backend_not_an_object() -> None:
    assert error({"Network": "10.1.0.0/16", "Backend": "vxlan"}) == \
        P + "error decoding Backend property of config: json: cannot unmarshal string into Go value of type " \
            "struct { Type string }"
    assert error({"Network": "10.1.0.0/16", "Backend": {"Type": 3}}) == \
        P + "error decoding Backend property of config: json: cannot unmarshal number into Go struct field " \
            ".Type of type string"


def test_raw_is_the_decoded_document() -> None:
    doc = {"Network": "10.1.0.0/16", "Backend": {"Type": "udp", "Port": 8285}, "x": 1}
    assert conf(doc).raw == doc


# -- kube mode (check=False) -------------------------------------------------------------------------------

def test_kube_mode_ignores_subnet_len_min_max() -> None:
    """§3: CheckNetworkConfig runs only in etcd mode; kube mode ignores SubnetLen/Min/Max and v6 alike."""
    cfg = conf({"Network": "10.244.0.0/16", "SubnetLen": 99, "SubnetMin": "junk", "IPv6SubnetLen": "x",
                "Backend": {"Type": "vxlan"}}, check=False)
    assert cfg.network == IPv4Network("10.244.0.0/16")
    assert (cfg.subnet_len, cfg.subnet_min, cfg.subnet_max) == (0, None, None)


def test_kube_mode_does_not_require_network() -> None:
    cfg = conf({"Backend": {"Type": "host-gw"}}, check=False)
    assert cfg.network is None and cfg.backend_type == "host-gw"
    assert conf({"Network": "10.0.0.0/30"}, check=False).network == IPv4Network("10.0.0.0/30")


def test_kube_mode_still_parses_networks_enables_and_backend() -> None:
    assert error({"Network": "fc00::/48"}, check=False) == P + "invalid IPv4 CIDR format"
    assert error({"EnableIPv6": "yes"}, check=False).startswith(P + "json: cannot unmarshal string")
    assert error({"Backend": {}}, check=False) == "unknown backend type: "
    cfg = conf({"Network": "10.244.0.0/16", "EnableIPv6": True, "IPv6Network": "fd00:10:244::/56",
                "EnableNFTables": True}, check=False)
    assert cfg.ipv6_network == IPv6Network("fd00:10:244::/56") and cfg.enable_nftables
    assert cfg.ipv6_subnet_len == 0 and cfg.ipv6_subnet_min is None


# -- ci_get ------------------------------------------------------------------------------------------------

def test_ci_get() -> None:
    """What backends use for their options (VNI, Port, DirectRouting, ...)."""
    obj = {"vni": 1, "VNI": 2, "Port": None, "DirectRouting": False}
    assert ci_get(obj, "VNI") == 2
    assert ci_get({"VNI": 2, "vni": 1}, "VNI") == 1  # the last one, exact or not
    assert ci_get(obj, "port", 8472) == 8472  # null is the default
    assert ci_get(obj, "Missing", "d") == "d"
    assert ci_get(obj, "Missing") is None
    assert ci_get(obj, "directrouting", True) is False  # a false value is a value
    assert ci_get({"\u212aey": 1}, "key") == 1  # Go folds the Kelvin sign to k


# -- subnet arithmetic (§5.2) ----------------------------------------------------------------------------

def test_candidate_subnets_slash28() -> None:
    """Step 4: SubnetMin .. SubnetMax by SubnetLen. Only the first subnet is skipped: Max is the *start* of
    the last one (Next().IP - size) and the walk is `<= SubnetMax` (the sheet's "and last" is not the code)."""
    subs = list(candidate_subnets(conf({"Network": "10.1.0.0/28"})))
    assert subs == [IPv4Network("10.1.0.4/30"), IPv4Network("10.1.0.8/30"), IPv4Network("10.1.0.12/30")]


def test_candidate_subnets_slash16() -> None:
    subs = list(candidate_subnets(conf({"Network": "10.1.0.0/16"})))
    assert len(subs) == 255
    assert subs[0] == IPv4Network("10.1.1.0/24") and subs[-1] == IPv4Network("10.1.255.0/24")
    assert all(isinstance(s, IPv4Network) for s in subs)


def test_candidate_subnets_v6() -> None:
    cfg = conf({**V6, "IPv6SubnetMax": "fc00:0:0:3::"})
    assert list(candidate_subnets(cfg, v6=True)) == [IPv6Network(f"fc00:0:0:{i}::/64") for i in (1, 2, 3)]
    assert list(candidate_subnets(cfg)) == []  # no IPv4


def test_candidate_subnets_kube_mode_is_empty() -> None:
    assert list(candidate_subnets(conf({"Network": "10.1.0.0/16"}, check=False))) == []


def test_in_range() -> None:
    """Step 2: "compatible" = within SubnetMin..SubnetMax with the configured SubnetLen."""
    cfg = conf({"Network": "10.3.0.0/16", "SubnetMin": "10.3.5.0", "SubnetMax": "10.3.8.0", "EnableIPv6": True,
                "IPv6Network": "fc00::/48"})
    assert in_range(cfg, IPv4Network("10.3.5.0/24"))
    assert in_range(cfg, IPv4Network("10.3.8.0/24"))
    assert in_range(cfg, IPv4Network("10.3.6.0/24"))
    assert not in_range(cfg, IPv4Network("10.3.4.0/24"))
    assert not in_range(cfg, IPv4Network("10.3.9.0/24"))
    assert not in_range(cfg, IPv4Network("10.3.6.0/25"))  # another SubnetLen
    assert not in_range(cfg, IPv4Network("10.3.0.0/16"))
    assert in_range(cfg, IPv6Network("fc00:0:0:1::/64"))
    assert in_range(cfg, IPv6Network("fc00:0:0:ffff::/64"))
    assert not in_range(cfg, IPv6Network("fc00::/64"))  # the first v6 subnet is skipped
    assert not in_range(cfg, IPv6Network("fc00:0:0:1::/80"))
    assert not in_range(conf({"Network": "10.3.0.0/16"}), IPv6Network("fc00:0:0:1::/64"))  # v6 not configured


def test_in_range_kube_mode_is_false() -> None:
    assert not in_range(conf({"Network": "10.3.0.0/16"}, check=False), IPv4Network("10.3.5.0/24"))


def test_min_max_are_networks_of_subnet_len() -> None:
    cfg = conf({"Network": "10.3.0.0/16"})
    assert cfg.subnet_min is not None and cfg.subnet_min.network_address == IPv4Address("10.3.1.0")
    assert cfg.subnet_min.prefixlen == cfg.subnet_len
