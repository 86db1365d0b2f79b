"""host-local side by side with /usr/lib/cni/host-local (cni-reference §4)."""
from __future__ import annotations

import json
import os
import stat
from concurrent.futures import ThreadPoolExecutor

import pytest
from harness import ALL_VERSIONS, go, ours

CASES = {
    "ipv4": {"ranges": [[{"subnet": "10.9.0.0/24"}]]},
    "ipv6": {"ranges": [[{"subnet": "fd00:9::/64"}]]},
    "dual": {"ranges": [[{"subnet": "10.9.0.0/24"}], [{"subnet": "fd00:9::/120"}]],
             "routes": [{"dst": "0.0.0.0/0"}, {"dst": "::/0", "gw": "fd00:9::9"}]},
    "pools": {"ranges": [[{"subnet": "10.9.0.0/30"}, {"subnet": "10.9.1.0/24", "rangeStart": "10.9.1.100"}]]},
    "start_end": {"ranges": [[{"subnet": "10.9.0.0/24", "rangeStart": "10.9.0.50", "rangeEnd": "10.9.0.52",
                               "gateway": "10.9.0.51"}]]},
    "legacy_subnet": {"subnet": "10.9.0.0/24", "gateway": "10.9.0.254"},
    "routes": {"ranges": [[{"subnet": "10.9.0.0/24"}]], "routes": [{"dst": "10.0.0.0/8", "gw": "10.9.0.1"}]},
}


def conf(case: dict, data_dir: str, version: str = "1.0.0", name: str = "hlnet") -> dict:
    return {"cniVersion": version, "name": name, "type": "host-local",
            "ipam": {"type": "host-local", "dataDir": data_dir, **case}}


def snapshot(directory: str) -> dict[str, tuple[bytes, int]]:
    out = {}
    for name in sorted(os.listdir(directory)):
        p = os.path.join(directory, name)
        with open(p, "rb") as f:
            out[name] = (f.read(), stat.S_IMODE(os.stat(p).st_mode))
    return out


@pytest.mark.usefixtures("requires_go")
@pytest.mark.parametrize("case", sorted(CASES))
# Debian ships Go plugins 1.1.1, which stop at spec 1.0.0
@pytest.mark.parametrize("version", ["0.2.0", "0.3.1", "0.4.0", "1.0.0"])
def test_same_result_and_files_as_go(case: str, version: str, tmp_path) -> None:
    results = {}
    for who, run in (("go", go), ("ours", ours)):
        d = str(tmp_path / who)
        outs = [run("host-local", "ADD", conf(CASES[case], d, version), container_id=f"ctr{i}", netns="/x")
                for i in range(3)]
        # errors: the same msg (ours adds cniVersion, a better code and details)
        results[who] = ([o.stdout if o.ok else o.data["msg"] for o in outs], [o.rc for o in outs],
                        snapshot(os.path.join(d, "hlnet")))
    assert results["ours"][1] == results["go"][1]
    assert results["ours"][0] == results["go"][0]
    go_files, our_files = results["go"][2], results["ours"][2]
    assert sorted(our_files) == sorted(go_files)
    for name, (content, _mode) in go_files.items():
        if name != "lock":
            assert our_files[name][0] == content, name
        # Debian's Go 1.1.1 writes 0644; the reference since v1.4.0 writes 0600, as we do
        assert our_files[name][1] == 0o600


@pytest.mark.usefixtures("requires_go")
def test_exhaustion_of_a_slash_30(tmp_path) -> None:
    c = conf({"ranges": [[{"subnet": "10.9.0.0/30"}]]}, str(tmp_path))
    assert ours("host-local", "ADD", c, container_id="a", netns="/x").ok  # .2 (.1 is the gateway)
    out = ours("host-local", "ADD", c, container_id="b", netns="/x")
    assert out.rc == 1 and out.data["code"] == 11
    assert "10.9.0.1-10.9.0.2" in out.data["msg"] and str(tmp_path / "hlnet") in out.data["details"]
    g = go("host-local", "ADD", c, container_id="b", netns="/x")
    assert g.rc == 1 and "no IP addresses available" in g.data["msg"]


def test_requested_ips_from_every_source(tmp_path) -> None:
    c = conf(CASES["dual"], str(tmp_path))
    out = ours("host-local", "ADD", c, container_id="a", netns="/x", cni_args="IgnoreUnknown=1;IP=10.9.0.77")
    assert out.data["ips"][0]["address"] == "10.9.0.77/24"
    c2 = dict(c, args={"cni": {"ips": ["10.9.0.78"]}})
    assert ours("host-local", "ADD", c2, container_id="b", netns="/x").data["ips"][0]["address"] == "10.9.0.78/24"
    c3 = dict(c, runtimeConfig={"ips": ["fd00:9::42/120"]})
    assert ours("host-local", "ADD", c3, container_id="c", netns="/x").data["ips"][1]["address"] == "fd00:9::42/120"


def test_requested_ip_taken_or_gateway_is_named(tmp_path) -> None:
    c = conf(CASES["ipv4"], str(tmp_path))
    assert ours("host-local", "ADD", c, container_id="a", netns="/x", cni_args="IP=10.9.0.7").ok
    taken = ours("host-local", "ADD", c, container_id="b", netns="/x", cni_args="IP=10.9.0.7")
    assert taken.rc == 1 and "10.9.0.7" in taken.data["msg"]
    gw = ours("host-local", "ADD", c, container_id="b", netns="/x", cni_args="IP=10.9.0.1")
    assert "gateway" in gw.data["msg"]
    assert not os.path.exists(tmp_path / "hlnet" / "10.9.0.1")


def test_all_or_nothing_across_range_sets(tmp_path) -> None:
    c = conf({"ranges": [[{"subnet": "10.9.0.0/24"}], [{"subnet": "fd00:9::/120"}]]}, str(tmp_path))
    out = ours("host-local", "ADD", c, container_id="a", netns="/x", cni_args="IP=10.9.0.5,fd00:9::1")
    assert out.rc == 1  # fd00:9::1 is the gateway of set 1: set 0's address must be released
    assert [n for n in os.listdir(tmp_path / "hlnet") if n[0].isdigit() or ":" in n] == []


def test_duplicate_add_is_refused_like_go(tmp_path) -> None:
    c = conf(CASES["ipv4"], str(tmp_path))
    assert ours("host-local", "ADD", c, container_id="a", netns="/x").ok
    out = ours("host-local", "ADD", c, container_id="a", netns="/x")
    assert out.rc == 1 and "duplicate allocation is not allowed" in out.data["msg"]


@pytest.mark.parametrize("bad,field", [
    ({"ranges": [[{"subnet": "10.9.0.1/24"}]]}, "host bits"),
    ({"ranges": [[{"subnet": "10.9.0.0/31"}]]}, "too small"),
    ({"ranges": [[{"subnet": "10.9.0.0/24"}, {"subnet": "fd00::/64"}]]}, "mixed address families"),
    ({"ranges": [[{"subnet": "10.9.0.0/24"}, {"subnet": "10.9.0.0/25"}]]}, "overlap"),
    ({"ranges": [[{"subnet": "10.9.0.0/24"}], [{"subnet": "10.9.0.0/24"}]]}, "range set 1 overlaps with 0"),
    ({"ranges": [[{"subnet": "10.9.0.0/24", "rangeStart": "10.8.0.1"}]]}, "rangeStart"),
    ({"ranges": [[{"subnet": "10.9.0.0/24", "rangeEnd": "10.8.0.1"}]]}, "rangeEnd"),
    ({}, "no IP ranges specified"),
])
def test_validation_errors_name_range_and_field(bad: dict, field: str, tmp_path) -> None:
    out = ours("host-local", "ADD", conf(bad, str(tmp_path)), netns="/x")
    assert out.rc == 1 and out.data["code"] == 7
    assert field in out.data["msg"]


def test_two_addresses_per_family_need_0_3_0(tmp_path) -> None:
    c = conf({"ranges": [[{"subnet": "10.9.0.0/24"}], [{"subnet": "10.8.0.0/24"}]]}, str(tmp_path), "0.2.0")
    out = ours("host-local", "ADD", c, netns="/x")
    assert out.rc == 1 and "does not support more than 1 address per family" in out.data["msg"]


@pytest.mark.usefixtures("requires_go")
def test_go_allocates_ours_releases_and_back(tmp_path) -> None:
    d = str(tmp_path)
    c = conf(CASES["ipv4"], d)
    assert go("host-local", "ADD", c, container_id="g1", netns="/x").data["ips"][0]["address"] == "10.9.0.2/24"
    assert ours("host-local", "ADD", c, container_id="o1", netns="/x").data["ips"][0]["address"] == "10.9.0.3/24"
    assert go("host-local", "ADD", c, container_id="g2", netns="/x").data["ips"][0]["address"] == "10.9.0.4/24"
    assert ours("host-local", "DEL", c, container_id="g1").ok
    assert go("host-local", "DEL", c, container_id="o1").ok
    left = {n for n in os.listdir(tmp_path / "hlnet") if n.startswith("10.")}
    assert left == {"10.9.0.4"}
    assert ours("host-local", "CHECK", c, container_id="g2", netns="/x").ok


def test_legacy_id_only_files_are_released_and_checked(tmp_path) -> None:
    c = conf(CASES["ipv4"], str(tmp_path))
    os.makedirs(tmp_path / "hlnet")
    (tmp_path / "hlnet" / "10.9.0.9").write_text("oldctr")
    assert ours("host-local", "CHECK", c, container_id="oldctr", netns="/x").ok
    assert ours("host-local", "DEL", c, container_id="oldctr").ok
    assert not (tmp_path / "hlnet" / "10.9.0.9").exists()


def test_torn_files_break_neither_add_nor_del(tmp_path) -> None:
    c = conf(CASES["ipv4"], str(tmp_path))
    os.makedirs(tmp_path / "hlnet")
    (tmp_path / "hlnet" / "10.9.0.2").write_bytes(b"")
    (tmp_path / "hlnet" / "10.9.0.3").write_bytes(b"\x00\xff garbage")
    (tmp_path / "hlnet" / "last_reserved_ip.0").write_bytes(b"10.9.")
    out = ours("host-local", "ADD", c, container_id="a", netns="/x")
    assert out.data["ips"][0]["address"] == "10.9.0.4/24"
    assert ours("host-local", "DEL", c, container_id="a").ok
    assert ours("host-local", "DEL", c, container_id="a").ok


def test_del_is_idempotent_and_tolerates_missing_dir(tmp_path) -> None:
    c = conf(CASES["ipv4"], str(tmp_path / "never"))
    assert ours("host-local", "DEL", c, container_id="a").ok
    assert not (tmp_path / "never").exists()


def test_check_fails_without_reservation(tmp_path) -> None:
    out = ours("host-local", "CHECK", conf(CASES["ipv4"], str(tmp_path)), container_id="zz", netns="/x")
    assert out.rc == 1 and "Failed to find address added by container zz" in out.data["msg"]


def test_gc_releases_only_invalid_attachments(tmp_path) -> None:
    c = conf(CASES["ipv4"], str(tmp_path), "1.1.0")
    for cid in ("keep", "drop"):
        assert ours("host-local", "ADD", c, container_id=cid, netns="/x").ok
    (tmp_path / "hlnet" / "10.9.0.200").write_bytes(b"")  # torn: owned by nobody
    gc = dict(c, **{"cni.dev/valid-attachments": [{"containerID": "keep", "ifname": "eth0"}]})
    assert ours("host-local", "GC", gc).ok
    names = set(os.listdir(tmp_path / "hlnet"))
    assert names == {"10.9.0.2", "lock", "last_reserved_ip.0"}
    legacy = dict(c, **{"cni.dev/attachments": []})
    assert ours("host-local", "GC", legacy).ok
    assert set(os.listdir(tmp_path / "hlnet")) == {"lock", "last_reserved_ip.0"}


def test_status_reports_unusable_store(tmp_path) -> None:
    f = tmp_path / "f"
    f.write_text("")
    out = ours("host-local", "STATUS", conf(CASES["ipv4"], str(f / "sub"), "1.1.0"))
    assert out.rc == 1 and out.data["code"] == 50 and str(f) in out.data["msg"]
    assert ours("host-local", "STATUS", conf(CASES["ipv4"], str(tmp_path), "1.1.0")).ok


def test_resolv_conf_becomes_dns(tmp_path) -> None:
    rc = tmp_path / "resolv.conf"
    rc.write_text("# c\nnameserver 10.0.0.53\nnameserver 10.0.0.54\ndomain x.local\nsearch a b\noptions ndots:5\n")
    c = conf(dict(CASES["ipv4"], resolvConf=str(rc)), str(tmp_path))
    assert ours("host-local", "ADD", c, netns="/x").data["dns"] == {
        "nameservers": ["10.0.0.53", "10.0.0.54"], "domain": "x.local", "search": ["a", "b"],
        "options": ["ndots:5"]}


@pytest.mark.parametrize("version", ALL_VERSIONS)
def test_every_verb_over_every_version(version: str, tmp_path) -> None:
    c = conf(CASES["ipv4"], str(tmp_path), version)
    add = ours("host-local", "ADD", c, netns="/x")
    assert add.ok and add.data["cniVersion"] == version
    if version >= "0.4.0":
        assert ours("host-local", "CHECK", c, netns="/x").ok
    if version == "1.1.0":
        assert ours("host-local", "STATUS", c).ok
        assert ours("host-local", "GC", dict(c, **{"cni.dev/valid-attachments": [
            {"containerID": "c1", "ifname": "eth0"}]})).ok
        assert (tmp_path / "hlnet" / "10.9.0.2").exists()
    assert ours("host-local", "DEL", c).ok
    assert not (tmp_path / "hlnet" / "10.9.0.2").exists()


def test_50_concurrent_adds_then_dels(tmp_path) -> None:
    c = conf(CASES["ipv4"], str(tmp_path))
    with ThreadPoolExecutor(max_workers=50) as pool:
        adds = list(pool.map(lambda i: ours("host-local", "ADD", c, container_id=f"p{i}", netns="/x"), range(50)))
    assert all(o.ok for o in adds), [o.stdout for o in adds if not o.ok][:2]
    ips = [o.data["ips"][0]["address"] for o in adds]
    assert len(set(ips)) == 50
    with ThreadPoolExecutor(max_workers=50) as pool:
        dels = list(pool.map(lambda i: ours("host-local", "DEL", c, container_id=f"p{i}"), range(50)))
    assert all(o.ok for o in dels)
    assert set(os.listdir(tmp_path / "hlnet")) == {"lock", "last_reserved_ip.0"}
    assert json.loads((tmp_path / "hlnet" / "last_reserved_ip.0").read_text().join('""'))
