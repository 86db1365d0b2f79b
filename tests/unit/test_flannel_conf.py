"""flannel's subnet.env parser and delegate builder: the reference's expectations, byte for byte.

The expected JSON strings are the reference's flannel_linux_test.go MatchJSON cases,
compacted with sorted keys, which is what json.Marshal writes to dataDir.
"""
from __future__ import annotations

import json

import pytest

from cni_flannel.cni.errors import CNIError
from cni_flannel.plugins.flannel import FlannelConf, build_delegate, go_json, load_subnet_env

V4 = "FLANNEL_NETWORK=10.1.0.0/16\nFLANNEL_SUBNET=10.1.17.1/24\nFLANNEL_MTU=1472\nFLANNEL_IPMASQ=true\n"
V6 = "FLANNEL_IPV6_NETWORK=fc00::/48\nFLANNEL_IPV6_SUBNET=fc00::1/64\nFLANNEL_MTU=1472\nFLANNEL_IPMASQ=true\n"
DUAL = ("FLANNEL_NETWORK=10.1.0.0/16\nFLANNEL_SUBNET=10.1.17.1/24\nFLANNEL_IPV6_NETWORK=fc00::/48\n"
        "FLANNEL_IPV6_SUBNET=fc00::1/64\nFLANNEL_MTU=1472\nFLANNEL_IPMASQ=true\n")
TWO = "FLANNEL_NETWORK=10.1.0.0/16,192.168.0.0/16\nFLANNEL_SUBNET=10.1.17.1/24\nFLANNEL_MTU=1472\nFLANNEL_IPMASQ=true\n"


def fc(**kw) -> FlannelConf:
    base = dict(name="cni-flannel", cni_version="", subnet_file="", data_dir="", delegate={}, ipam=None,
                runtime_config=None)
    base.update(kw)
    return FlannelConf(**base)


def saved(env_text: str, tmp_path, **kw) -> str:
    p = tmp_path / "subnet.env"
    p.write_text(env_text)
    return go_json(build_delegate(fc(**kw), load_subnet_env(str(p)))).decode()


@pytest.mark.parametrize("env,expected", [
    (V4, '{"ipMasq":false,"ipam":{"ranges":[[{"subnet":"10.1.17.0/24"}]],"routes":[{"dst":"10.1.0.0/16"}],'
         '"type":"host-local"},"isGateway":true,"mtu":1472,"name":"cni-flannel","type":"bridge"}'),
    (TWO, '{"ipMasq":false,"ipam":{"ranges":[[{"subnet":"10.1.17.0/24"}]],"routes":[{"dst":"10.1.0.0/16"},'
          '{"dst":"192.168.0.0/16"}],"type":"host-local"},"isGateway":true,"mtu":1472,"name":"cni-flannel",'
          '"type":"bridge"}'),
    (V6, '{"ipMasq":false,"ipam":{"ranges":[[{"subnet":"fc00::/64"}]],"routes":[{"dst":"fc00::/48"}],'
         '"type":"host-local"},"isGateway":true,"mtu":1472,"name":"cni-flannel","type":"bridge"}'),
    (DUAL, '{"ipMasq":false,"ipam":{"ranges":[[{"subnet":"10.1.17.0/24"}],[{"subnet":"fc00::/64"}]],"routes":'
           '[{"dst":"10.1.0.0/16"},{"dst":"fc00::/48"}],"type":"host-local"},"isGateway":true,"mtu":1472,'
           '"name":"cni-flannel","type":"bridge"}'),
])
def test_delegate_matches_reference_bytes(env: str, expected: str, tmp_path) -> None:
    assert saved(env, tmp_path) == expected


def test_ipam_merging_keeps_unknown_keys_and_user_routes_first(tmp_path) -> None:
    ipam = {"type": "my-ipam", "unknown-param": "unknown-value",
            "routes": [{"dst": "10.96.0.0/12"}, {"dst": "192.168.244.0/24", "gw": "10.1.17.20"}]}
    out = json.loads(saved(V4, tmp_path, ipam=ipam))
    assert out["ipam"] == {"type": "my-ipam", "unknown-param": "unknown-value",
                           "ranges": [[{"subnet": "10.1.17.0/24"}]],
                           "routes": [{"dst": "10.96.0.0/12"}, {"dst": "192.168.244.0/24", "gw": "10.1.17.20"},
                                      {"dst": "10.1.0.0/16"}]}


def test_seed_delegate_keeps_its_keys_and_version(tmp_path) -> None:
    out = json.loads(saved(V4, tmp_path, cni_version="0.3.1",
                           delegate={"forceAddress": True, "bridge": "mycni8", "isDefaultGateway": True},
                           runtime_config={"portMappings": []}))
    assert out["forceAddress"] is True and out["bridge"] == "mycni8" and out["isDefaultGateway"] is True
    assert out["cniVersion"] == "0.3.1" and out["runtimeConfig"] == {"portMappings": []}


def test_delegate_settings_win_over_subnet_env(tmp_path) -> None:
    out = json.loads(saved(V4, tmp_path, delegate={"type": "macvlan", "ipMasq": True, "mtu": 9000}))
    assert out["ipMasq"] is True and out["mtu"] == 9000 and "isGateway" not in out


def test_ipmasq_only_true_when_exactly_true(tmp_path) -> None:
    for val, masq in (("true", False), ("True", True), ("1", True), ("false", True)):
        out = json.loads(saved(V4.replace("FLANNEL_IPMASQ=true", f"FLANNEL_IPMASQ={val}"), tmp_path))
        assert out["ipMasq"] is masq, val


def test_go_json_escapes_like_go() -> None:
    assert go_json({"b": "<&>", "a": "é", "n": 1.0}) == '{"a":"é","b":"\\u003c\\u0026\\u003e","n":1}'.encode()


def test_missing_keys_listed_together(tmp_path) -> None:
    p = tmp_path / "subnet.env"
    p.write_text("SOMETHING=else\n")
    with pytest.raises(CNIError) as exc:
        load_subnet_env(str(p))
    assert ("missing FLANNEL_NETWORK, FLANNEL_IPV6_NETWORK, FLANNEL_SUBNET, FLANNEL_IPV6_SUBNET, FLANNEL_MTU, "
            "FLANNEL_IPMASQ") in exc.value.msg
    assert str(p) in exc.value.msg


@pytest.mark.parametrize("line,key", [("FLANNEL_SUBNET", "FLANNEL_SUBNET"), ("FLANNEL_MTU=abc", "FLANNEL_MTU"),
                                      ("FLANNEL_NETWORK=10.1.0.0/16,bogus", "FLANNEL_NETWORK"),
                                      ("FLANNEL_SUBNET=fc00::1/64", "FLANNEL_SUBNET")])
def test_malformed_line_names_file_line_and_key(line: str, key: str, tmp_path) -> None:
    p = tmp_path / "subnet.env"
    p.write_text(V4 + line + "\n")
    with pytest.raises(CNIError) as exc:
        load_subnet_env(str(p))
    assert exc.value.code == 7 and f"{p} line 5: {key}" in exc.value.msg


def test_missing_file_is_try_again_later(tmp_path) -> None:
    with pytest.raises(CNIError) as exc:
        load_subnet_env(str(tmp_path / "nope"))
    assert exc.value.code == 11 and "flanneld on this node has not written it yet" in exc.value.details
