"""The kube subnet manager's pure logic: annotation keys, the patch bodies, podCIDR families,
nodeToLease, the stored MAC, the client's error texts and configuration sources (§6)."""
from __future__ import annotations

import ipaddress
import json
import os
from pathlib import Path
from typing import Any

import pytest

from cni_flannel.flanneld.subnet import kube, kubeclient
from cni_flannel.flanneld.subnet.lease import Lease, LeaseAttrs
from cni_flannel.flanneld.subnet.manager import ConfigError, LeaseError

P = "flannel.alpha.coreos.com/"
KEYS = kube.annotation_keys("flannel.alpha.coreos.com")
MAC = "12:c6:65:89:b4:e3"
MAC6 = "9a:1b:2c:3d:4e:5f"


def vxlan_attrs(ip: str = "192.168.1.10", ip6: str | None = None, mac6: str | None = None) -> LeaseAttrs:
    return LeaseAttrs(public_ip=ipaddress.IPv4Address(ip),
                      public_ipv6=ipaddress.IPv6Address(ip6) if ip6 else None, backend_type="vxlan",
                      backend_data={"VNI": 1, "VtepMAC": MAC},
                      backend_v6_data={"VNI": 1, "VtepMAC": mac6} if mac6 else None)


def node(name: str = "n1", annotations: Any = None, pod_cidr: str | None = None,
         pod_cidrs: list[str] | None = None) -> dict[str, Any]:
    spec: dict[str, Any] = {}
    if pod_cidr is not None:
        spec["podCIDR"] = pod_cidr
    if pod_cidrs is not None:
        spec["podCIDRs"] = pod_cidrs
    return {"metadata": {"name": name, "annotations": annotations, "resourceVersion": "7"}, "spec": spec}


# ------------------------------------------------------------------ annotation prefix (§6.3)

@pytest.mark.parametrize(("prefix", "base"), [
    ("flannel.alpha.coreos.com", "flannel.alpha.coreos.com/"),
    ("flannel.alpha.coreos.com/", "flannel.alpha.coreos.com/"),
    ("example.com/net", "example.com/net-"),
    ("example.com/net-", "example.com/net-"),
    ("a_b.c-d/x_y", "a_b.c-d/x_y-"),
])
def test_prefix_forms(prefix: str, base: str) -> None:
    keys = kube.annotation_keys(prefix)
    assert keys.kube_subnet_manager == base + "kube-subnet-manager"
    assert keys.backend_data == base + "backend-data"
    assert keys.backend_v6_data == base + "backend-v6-data"
    assert keys.backend_type == base + "backend-type"
    assert keys.public_ip == base + "public-ip"
    assert keys.public_ipv6 == base + "public-ipv6"
    assert keys.node_public_ip == base + "node-public-ip"
    assert keys.node_public_ipv6 == base + "node-public-ipv6"
    assert keys.public_ip_overwrite == base + "public-ip-overwrite"
    assert keys.public_ipv6_overwrite == base + "public-ipv6-overwrite"


def test_prefix_with_two_slashes() -> None:
    with pytest.raises(ConfigError) as exc:
        kube.annotation_keys("example.com/a/b")
    assert str(exc.value) == "subnet/kube: prefix can contain at most single slash"


@pytest.mark.parametrize("prefix", ["nodots", "Example.com", "example.com/UP", "example .com", "example.com/a.b"])
def test_prefix_not_fqdn(prefix: str) -> None:
    # "Example.com" passes the reference's unanchored regexp, then the API refuses every key (422)
    with pytest.raises(ConfigError) as exc:
        kube.annotation_keys(prefix)
    assert str(exc.value) == "subnet/kube: prefix must be in a format: fqdn/[0-9a-z-_]*"


# ------------------------------------------------------------------ the bytes the Go flanneld writes

def test_backend_data_bytes_as_go() -> None:
    assert kube.go_json({"VNI": 1, "VtepMAC": MAC}) == '{"VNI":1,"VtepMAC":"12:c6:65:89:b4:e3"}'
    assert kube.go_json(None) == "null"
    assert kube.go_json({"PublicKey": "a<b>&c"}) == '{"PublicKey":"a\\u003cb\\u003e\\u0026c"}'


def test_patch_for_a_fresh_vxlan_node_is_exact() -> None:
    patch = kube.annotation_patch(KEYS, vxlan_attrs(), {})
    assert json.dumps(patch, separators=(",", ":")) == (
        '{"metadata":{"annotations":{'
        f'"{P}backend-data":"{{\\"VNI\\":1,\\"VtepMAC\\":\\"{MAC}\\"}}",'
        f'"{P}backend-type":"vxlan",'
        f'"{P}kube-subnet-manager":"true",'
        f'"{P}public-ip":"192.168.1.10"'
        "}}}")


def test_patch_holds_only_what_differs_and_nothing_when_equal() -> None:
    current = kube.desired_annotations(KEYS, vxlan_attrs(), {})
    current["other.io/keep"] = "x"
    assert kube.annotation_patch(KEYS, vxlan_attrs(), current) is None
    moved = kube.annotation_patch(KEYS, vxlan_attrs(ip="192.168.1.11"), current)
    assert moved == {"metadata": {"annotations": {P + "public-ip": "192.168.1.11"}}}
    del current[P + "kube-subnet-manager"]
    assert kube.annotation_patch(KEYS, vxlan_attrs(), current) == \
        {"metadata": {"annotations": {P + "kube-subnet-manager": "true"}}}


def test_public_ip_overwrite_is_published_instead_of_the_local_address() -> None:
    current = {P + "public-ip-overwrite": "203.0.113.7", P + "public-ipv6-overwrite": "2001:db8::7"}
    want = kube.desired_annotations(KEYS, vxlan_attrs(ip6="fd00::10", mac6=MAC6), current)
    assert want[P + "public-ip"] == "203.0.113.7"
    assert want[P + "public-ipv6"] == "2001:db8::7"
    done = {**current, **want}
    assert kube.annotation_patch(KEYS, vxlan_attrs(ip6="fd00::10", mac6=MAC6), done) is None


def test_dual_stack_vxlan_writes_both_families() -> None:
    want = kube.desired_annotations(KEYS, vxlan_attrs(ip6="fd00::10", mac6=MAC6), {})
    assert want == {
        P + "backend-type": "vxlan",
        P + "backend-data": f'{{"VNI":1,"VtepMAC":"{MAC}"}}',
        P + "public-ip": "192.168.1.10",
        P + "backend-v6-data": f'{{"VNI":1,"VtepMAC":"{MAC6}"}}',
        P + "public-ipv6": "fd00::10",
        P + "kube-subnet-manager": "true",
    }


def test_v6_only_vxlan_has_no_v4_annotations() -> None:
    attrs = LeaseAttrs(public_ipv6=ipaddress.IPv6Address("fd00::10"), backend_type="vxlan",
                       backend_v6_data={"VNI": 1, "VtepMAC": MAC6})
    want = kube.desired_annotations(KEYS, attrs, {})
    assert P + "backend-data" not in want and P + "public-ip" not in want
    assert want[P + "public-ipv6"] == "fd00::10"


@pytest.mark.parametrize("btype", ["host-gw", "udp"])
def test_null_backend_data_types(btype: str) -> None:
    attrs = LeaseAttrs(public_ip=ipaddress.IPv4Address("10.0.0.1"), backend_type=btype)
    want = kube.desired_annotations(KEYS, attrs, {})
    assert want[P + "backend-data"] == "null"
    assert want[P + "backend-type"] == btype
    assert P + "backend-v6-data" not in want


def test_host_gw_with_a_v6_address_writes_null_v6_data() -> None:
    attrs = LeaseAttrs(public_ip=ipaddress.IPv4Address("10.0.0.1"), public_ipv6=ipaddress.IPv6Address("fd00::1"),
                       backend_type="host-gw")
    want = kube.desired_annotations(KEYS, attrs, {})
    assert want[P + "backend-v6-data"] == "null" and want[P + "public-ipv6"] == "fd00::1"


def test_nil_annotations_map_does_not_crash() -> None:
    n = node(annotations=None, pod_cidr="10.244.1.0/24")
    assert kube.node_annotations(n) == {}
    assert kube.annotation_patch(KEYS, vxlan_attrs(), kube.node_annotations(n)) is not None
    assert kube.node_annotations({"metadata": None}) == {}
    assert kube.node_annotations({}) == {}


def test_condition_patch_exact() -> None:
    body = kube.condition_patch(now=1_700_000_000)
    assert json.dumps(body, separators=(",", ":")) == (
        '{"status":{"conditions":[{"type":"NetworkUnavailable","status":"False",'
        '"lastHeartbeatTime":"2023-11-14T22:13:20Z","lastTransitionTime":"2023-11-14T22:13:20Z",'
        '"reason":"FlannelIsUp","message":"Flannel is running on this node"}]}}')


# ------------------------------------------------------------------ podCIDR families

def test_pod_cidr_single_v4_and_v6() -> None:
    assert kube.pod_cidrs(node(pod_cidr="10.244.1.0/24")) == (ipaddress.IPv4Network("10.244.1.0/24"), None)
    assert kube.pod_cidrs(node(pod_cidr="fd00:1::/64")) == (None, ipaddress.IPv6Network("fd00:1::/64"))


def test_pod_cidrs_dual_stack_either_order_and_host_bits_masked() -> None:
    v4, v6 = kube.pod_cidrs(node(pod_cidr="10.244.1.0/24", pod_cidrs=["fd00:1::5/64", "10.244.1.9/24"]))
    assert (v4, v6) == (ipaddress.IPv4Network("10.244.1.0/24"), ipaddress.IPv6Network("fd00:1::/64"))


def test_pod_cidrs_three_entries() -> None:
    with pytest.raises(kube.NodeLeaseError) as exc:
        kube.pod_cidrs(node(pod_cidrs=["10.244.1.0/24", "fd00::/64", "10.245.0.0/24"]))
    assert str(exc.value) == 'node "n1" pod cidrs should be IPv4/IPv6 only or dualstack'


def test_pod_cidr_missing_and_invalid() -> None:
    assert kube.pod_cidrs(node()) == (None, None)
    assert not kube.pod_cidrs_present(node())
    with pytest.raises(kube.NodeLeaseError, match=r"invalid CIDR address: 10\.244\.1/33"):
        kube.pod_cidrs(node(pod_cidr="10.244.1/33"))


# ------------------------------------------------------------------ nodeToLease

def go_node(name: str = "n2", pod_cidr: str = "10.244.2.0/24", **extra: str) -> dict[str, Any]:
    """A Node as a Go flanneld annotates it."""
    ann = {P + "kube-subnet-manager": "true", P + "backend-type": "vxlan",
           P + "backend-data": f'{{"VNI":1,"VtepMAC":"{MAC}"}}', P + "public-ip": "192.168.1.20"}
    ann.update({P + k: v for k, v in extra.items()})
    return node(name, ann, pod_cidr=pod_cidr, pod_cidrs=[pod_cidr])


def test_node_to_lease_of_a_go_flanneld_node() -> None:
    lease = kube.node_to_lease(KEYS, go_node(), True, False)
    assert lease == Lease(ipaddress.IPv4Network("10.244.2.0/24"), None,
                          LeaseAttrs(public_ip=ipaddress.IPv4Address("192.168.1.20"), backend_type="vxlan",
                                     backend_data={"VNI": 1, "VtepMAC": MAC}))
    assert lease.key == "10.244.2.0-24"


def test_node_to_lease_dual_stack() -> None:
    n = go_node(**{"backend-v6-data": f'{{"VNI":1,"VtepMAC":"{MAC6}"}}', "public-ipv6": "fd00::20"})
    n["spec"]["podCIDRs"] = ["10.244.2.0/24", "fd00:2::/64"]
    lease = kube.node_to_lease(KEYS, n, True, True)
    assert lease.key == "10.244.2.0-24&fd00:2::-64"
    assert lease.attrs.backend_v6_data == {"VNI": 1, "VtepMAC": MAC6}
    assert lease.attrs.public_ipv6 == ipaddress.IPv6Address("fd00::20")


@pytest.mark.parametrize(("mutate", "text"), [
    (lambda n: n["metadata"]["annotations"].pop(P + "public-ip"), 'invalid IP address ""'),
    (lambda n: n["metadata"]["annotations"].pop(P + "backend-data"), "backend-data is missing"),
    (lambda n: n["metadata"]["annotations"].__setitem__(P + "backend-data", "{"), "is not JSON"),
    (lambda n: n.__setitem__("spec", {}), "no IPv4 podCIDR"),
])
def test_node_to_lease_refuses(mutate: Any, text: str) -> None:
    n = go_node()
    mutate(n)
    with pytest.raises(kube.NodeLeaseError, match=text.replace("(", r"\(")):
        kube.node_to_lease(KEYS, n, True, False)


def test_mac_from_backend_data() -> None:
    ann = kube.node_annotations(go_node(**{"backend-v6-data": f'{{"VNI":1,"VtepMAC":"{MAC6}"}}'}))
    assert kube.parse_json_or_none(ann[P + "backend-data"])["VtepMAC"] == MAC
    assert kube.parse_json_or_none(ann[P + "backend-v6-data"])["VtepMAC"] == MAC6
    assert kube.parse_json_or_none("null") is None
    assert kube.parse_json_or_none("") is None
    assert kube.parse_json_or_none("not json") is None


# ------------------------------------------------------------------ containment (AcquireLease)

class NoClient:
    """The manager's constructor makes no request; _lease_of needs none."""


def manager(tmp_path: Path, conf: str) -> kube.KubeSubnetManager:
    path = tmp_path / "net-conf.json"
    path.write_text(conf)
    return kube.KubeSubnetManager(NoClient(), node_name="n1", net_config_path=str(path))  # type: ignore[arg-type]


def test_lease_of_contained_podcidr(tmp_path: Path) -> None:
    m = manager(tmp_path, '{"Network":"10.244.0.0/16","Backend":{"Type":"vxlan"}}')
    lease = m._lease_of(node(pod_cidr="10.244.1.0/24"), vxlan_attrs())
    assert lease.subnet == ipaddress.IPv4Network("10.244.1.0/24") and lease.ipv6_subnet is None
    assert lease.expiration > 0


def test_lease_of_outside_network(tmp_path: Path) -> None:
    m = manager(tmp_path, '{"Network":"10.244.0.0/16","Backend":{"Type":"vxlan"}}')
    with pytest.raises(LeaseError) as exc:
        m._lease_of(node(pod_cidr="10.99.1.0/24"), vxlan_attrs())
    assert str(exc.value) == ('subnet "10.244.0.0/16" specified in the flannel net config doesn\'t contain '
                              '"10.99.1.0/24" PodCIDR of the "n1" node')


def test_lease_of_v6_outside_network(tmp_path: Path) -> None:
    m = manager(tmp_path, '{"Network":"10.244.0.0/16","EnableIPv6":true,"IPv6Network":"fd00::/48",'
                          '"Backend":{"Type":"vxlan"}}')
    with pytest.raises(LeaseError) as exc:
        m._lease_of(node(pod_cidrs=["10.244.1.0/24", "fd99:1::/64"]), vxlan_attrs(ip6="fd00::1", mac6=MAC6))
    assert str(exc.value) == ('subnet "fd00::/48" specified in the flannel net config doesn\'t contain '
                              '"fd99:1::/64" IPv6 PodCIDR of the "n1" node')


def test_lease_of_dual_stack_and_v4_only_backends(tmp_path: Path) -> None:
    m = manager(tmp_path, '{"Network":"10.244.0.0/16","EnableIPv6":true,"IPv6Network":"fd00::/48",'
                          '"Backend":{"Type":"vxlan"}}')
    n = node(pod_cidrs=["10.244.1.0/24", "fd00:0:0:1::/64"])
    lease = m._lease_of(n, vxlan_attrs(ip6="fd00::1", mac6=MAC6))
    assert lease.key == "10.244.1.0-24&fd00:0:0:1::-64"
    udp = m._lease_of(n, LeaseAttrs(public_ip=ipaddress.IPv4Address("10.0.0.1"), backend_type="udp"))
    assert udp.ipv6_subnet is None  # §6.2: other backends get v4 only


def test_net_conf_errors(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as exc:
        kube.KubeSubnetManager(NoClient(), node_name="n1",  # type: ignore[arg-type]
                               net_config_path=str(tmp_path / "missing.json"))
    assert str(exc.value) == f"failed to read net conf: open {tmp_path}/missing.json: no such file or directory"
    with pytest.raises(ConfigError, match=r"^error parsing subnet config: "):
        manager(tmp_path, "{not json")


# ------------------------------------------------------------------ the client's texts and configuration

def test_refusal_texts_name_verb_and_resource() -> None:
    status = {"kind": "Status", "code": 403, "reason": "Forbidden",
              "message": 'nodes is forbidden: User "system:serviceaccount:kube-flannel:flannel" cannot watch '
                         'resource "nodes" in API group "" at the cluster scope'}
    err = kubeclient._status_error(403, json.dumps(status).encode(), "watch", "nodes")
    assert str(err).startswith("RBAC: cannot watch resource nodes: add `watch` on `nodes` to the ClusterRole (")
    assert err.code == 403
    gone = kubeclient._status_error(500, {"kind": "Status", "code": 410, "reason": "Expired", "message": "too old"},
                                    "watch", "nodes")
    assert isinstance(gone, kubeclient.Gone) and gone.code == 410
    plain = kubeclient._status_error(502, b"bad gateway", "list", "nodes")
    assert str(plain) == "list nodes: 502 : bad gateway"


def write_kubeconfig(path: Path, server: str, token: str) -> None:
    path.write_text(json.dumps({
        "apiVersion": "v1", "kind": "Config", "current-context": "c",
        "clusters": [{"name": "k", "cluster": {"server": server}}],
        "users": [{"name": "u", "user": {"token": token}}],
        "contexts": [{"name": "c", "context": {"cluster": "k", "user": "u"}}]}))


def test_kubeconfig_env_is_read_when_no_flag(tmp_path: Path) -> None:
    write_kubeconfig(tmp_path / "kc", "http://127.0.0.1:1", "t1")
    cfg = kubeclient.load_config("", "", {"KUBECONFIG": f"{tmp_path}/absent:{tmp_path}/kc"}, str(tmp_path / "sa"))
    assert cfg.server == "http://127.0.0.1:1" and cfg.source == f"kubeconfig {tmp_path}/kc"
    flagged = kubeclient.load_config(str(tmp_path / "kc"), "http://127.0.0.2:2", {}, str(tmp_path / "sa"))
    assert flagged.server == "http://127.0.0.2:2"  # --kube-api-url overrides the kubeconfig's server
    with pytest.raises(kubeclient.ConfigSourceError, match="no such file"):
        kubeclient.load_config(str(tmp_path / "nope"), "", {}, str(tmp_path / "sa"))


def test_in_cluster_needs_service_env_and_token(tmp_path: Path) -> None:
    with pytest.raises(kubeclient.ConfigSourceError, match="KUBERNETES_SERVICE_HOST and KUBERNETES_SERVICE_PORT"):
        kubeclient.load_config("", "", {}, str(tmp_path))
    env = {"KUBERNETES_SERVICE_HOST": "fd00::1", "KUBERNETES_SERVICE_PORT": "443"}
    with pytest.raises(kubeclient.ConfigSourceError, match="token: no such file"):
        kubeclient.load_config("", "", env, str(tmp_path))
    (tmp_path / "token").write_text("abc\n")
    cfg = kubeclient.load_config("", "", env, str(tmp_path))
    assert cfg.server == "https://[fd00::1]:443"
    assert isinstance(cfg.auth, kubeclient.TokenFileAuth)
    # --kube-api-url alone keeps the service account's credentials (⚠ the reference sends none)
    by_url = kubeclient.load_config("", "https://10.0.0.1:6443", {}, str(tmp_path))
    assert by_url.server == "https://10.0.0.1:6443" and isinstance(by_url.auth, kubeclient.TokenFileAuth)


def test_token_file_is_read_again_when_it_changes(tmp_path: Path) -> None:
    token = tmp_path / "token"
    token.write_text("first\n")
    auth = kubeclient.TokenFileAuth(str(token))
    assert auth.token() == "first"
    # the kubelet's atomic writer: a new file renamed over the old one
    (tmp_path / "token.new").write_text("second\n")
    os.replace(tmp_path / "token.new", token)
    assert auth.token() == "second"
    token.unlink()
    assert auth.token() == "second"  # gone for a moment during a swap: keep the last one


def test_resolve_node_name_from_env() -> None:
    assert kube.resolve_node_name(NoClient(), {"NODE_NAME": "n7"}) == "n7"  # type: ignore[arg-type]
    with pytest.raises(ConfigError) as exc:
        kube.resolve_node_name(NoClient(), {"POD_NAME": "p"})  # type: ignore[arg-type]
    assert str(exc.value) == "env variables POD_NAME and POD_NAMESPACE must be set"
