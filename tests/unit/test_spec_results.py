"""SPEC "Section 5: Result Types" and libcni's conversions (cni-reference §1.5-1.6)."""
from __future__ import annotations

import json

import pytest
from harness import ALL_VERSIONS

from cni_flannel.cni.conf import parse_prev_result
from cni_flannel.cni.errors import CNIError
from cni_flannel.cni.result import Result

FULL_100 = {
    "cniVersion": "1.1.0",
    "interfaces": [{"name": "br0", "mac": "aa:bb:cc:dd:ee:01", "mtu": 1450},
                   {"name": "veth1", "mac": "aa:bb:cc:dd:ee:02"},
                   {"name": "eth0", "mac": "aa:bb:cc:dd:ee:03", "sandbox": "/run/netns/x"}],
    "ips": [{"interface": 2, "address": "10.1.0.5/24", "gateway": "10.1.0.1"},
            {"interface": 2, "address": "fd00::5/64", "gateway": "fd00::1"}],
    "routes": [{"dst": "0.0.0.0/0", "gw": "10.1.0.1"}, {"dst": "::/0", "mtu": 1400}],
    "dns": {"nameservers": ["10.1.0.53"], "search": ["a.b"]},
}


def test_100_to_040_adds_version_and_drops_new_interface_fields() -> None:
    out = Result.from_dict(FULL_100).to_dict("0.4.0")
    assert out["ips"][0] == {"version": "4", "interface": 2, "address": "10.1.0.5/24", "gateway": "10.1.0.1"}
    assert out["ips"][1]["version"] == "6"
    assert out["interfaces"][0] == {"name": "br0", "mac": "aa:bb:cc:dd:ee:01"}
    assert out["routes"] == FULL_100["routes"]


def test_100_to_020_splits_by_family() -> None:
    out = Result.from_dict(FULL_100).to_dict("0.2.0")
    assert out["ip4"] == {"ip": "10.1.0.5/24", "gateway": "10.1.0.1",
                          "routes": [{"dst": "0.0.0.0/0", "gw": "10.1.0.1"}]}
    assert out["ip6"]["routes"] == [{"dst": "::/0", "mtu": 1400}]
    assert "interfaces" not in out and out["dns"] == FULL_100["dns"]


def test_020_to_100_hoists_ips_and_routes() -> None:
    raw = {"cniVersion": "0.2.0", "ip4": {"ip": "10.1.0.5/24", "gateway": "10.1.0.1",
                                           "routes": [{"dst": "0.0.0.0/0"}]}}
    out = Result.from_dict(raw).to_dict("1.0.0")
    assert out == {"cniVersion": "1.0.0", "ips": [{"address": "10.1.0.5/24", "gateway": "10.1.0.1"}],
                   "routes": [{"dst": "0.0.0.0/0"}], "dns": {}}


def test_no_ips_cannot_convert_to_020() -> None:
    with pytest.raises(CNIError) as exc:
        Result(cni_version="1.0.0").to_dict("0.2.0")
    assert "no valid IP addresses" in exc.value.msg


@pytest.mark.parametrize("version", ALL_VERSIONS)
def test_round_trip_through_every_version(version: str) -> None:
    res = Result.from_dict(FULL_100)
    back = Result.from_dict(json.loads(res.to_json(version)))
    assert [ip.address for ip in back.ips] == ["10.1.0.5/24", "fd00::5/64"]
    assert back.dns.nameservers == ["10.1.0.53"]


def test_empty_collections_omitted_but_dns_kept_as_go_does() -> None:
    assert json.loads(Result(cni_version="1.0.0").to_json()) == {"cniVersion": "1.0.0", "dns": {}}


def test_output_is_indented_four_spaces_without_trailing_newline() -> None:
    text = Result.from_dict(FULL_100).to_json("1.0.0")
    assert text.startswith('{\n    "cniVersion": "1.0.0",\n    "interfaces"') and not text.endswith("\n")


def test_prev_result_takes_config_version() -> None:
    prev = {k: v for k, v in FULL_100.items() if k != "cniVersion"}
    assert parse_prev_result(prev, "0.3.1").to_dict()["cniVersion"] == "0.3.1"
    assert parse_prev_result(prev, "0.3.1").to_dict()["ips"][0]["version"] == "4"


def test_malformed_result_is_decoding_error() -> None:
    with pytest.raises(CNIError) as exc:
        Result.from_dict({"cniVersion": "1.0.0", "ips": [{"address": "nonsense"}]})
    assert exc.value.code == 6


@pytest.mark.parametrize("stdin,expected", [
    (b'{"cniVersion":"1.0.0"}', "1.0.0"), (b'{ "cniVersion" : "0.3.1" }\n', "0.3.1"),
    (b'{"cniVersion":"9.9.9"}', "1.1.0"), (b"", "1.1.0"), (b"not json", "1.1.0"),
    (b'{"name":"x","cniVersion":"0.4.0","plugins":[{"cniVersion":"0.2.0"}]}', "0.4.0"),
    (b'{"cniVersion":"1.0.0","x":"\\""}', "1.0.0"), (b'{"a":{"cniVersion":"0.2.0"}}', "1.1.0"),
])
def test_version_reply_fast_and_slow_paths_agree_with_json(stdin: bytes, expected: str) -> None:
    from cni_flannel.cni import version
    from cni_flannel.cni.version_reply import SUPPORTED, response

    assert SUPPORTED == version.SUPPORTED
    assert json.loads(response(stdin)) == {"cniVersion": expected, "supportedVersions": list(SUPPORTED)}
