"""The protocol layer, section by section of SPEC.md 1.1.0 (cni-reference §1), over every version.

These run our plugin binaries as subprocesses: what a runtime sees is what we assert.
"""
from __future__ import annotations

import json
import os
import stat

import pytest
from harness import ALL_VERSIONS, ours

PLUGINS = ("flannel", "bridge", "host-local", "portmap", "loopback")


def hl_conf(version: str | None, tmp_path: object, **extra: object) -> dict:
    conf: dict = {"name": "net1", "type": "host-local",
                  "ipam": {"type": "host-local", "subnet": "10.5.0.0/24", "dataDir": str(tmp_path)}}
    if version is not None:
        conf["cniVersion"] = version
    conf.update(extra)
    return conf


def assert_error(out, code: int, version: str = "1.1.0") -> dict:
    assert out.rc == 1, out
    assert out.data is not None, f"stdout is not JSON: {out.stdout!r}"
    assert set(out.data) >= {"cniVersion", "code", "msg"}
    assert out.data["code"] == code, out.data
    assert out.data["cniVersion"] == version
    assert "Traceback" not in out.stdout + out.stderr
    return out.data


# -- SPEC "Section 2: Execution Protocol" / Parameters -----------------------------------------

@pytest.mark.parametrize("plugin", PLUGINS)
@pytest.mark.parametrize("version", ALL_VERSIONS)
def test_version_verb_echoes_requested_version(plugin: str, version: str) -> None:
    out = ours(plugin, "VERSION", {"cniVersion": version})
    assert out.ok
    assert out.data == {"cniVersion": version, "supportedVersions": list(ALL_VERSIONS)}


def test_version_verb_without_input_answers_current() -> None:
    out = ours("bridge", "VERSION", b"")
    assert out.data["cniVersion"] == "1.1.0"


def test_empty_command_prints_about_on_stderr() -> None:
    out = ours("host-local", "", b"{}")
    assert out.rc == 0 and out.stdout == ""
    assert "CNI protocol versions supported: 0.1.0" in out.stderr


def test_unknown_command_is_code_4(tmp_path) -> None:
    out = ours("host-local", "FROB", hl_conf("1.0.0", tmp_path))
    data = assert_error(out, 4, "1.0.0")
    assert "FROB" in data["msg"]


@pytest.mark.parametrize("verb", ["ADD", "CHECK"])
def test_missing_env_vars_are_named_together(verb: str, tmp_path) -> None:
    out = ours("host-local", verb, hl_conf("1.0.0", tmp_path), netns="", ifname="")
    data = assert_error(out, 4, "1.0.0")
    assert "CNI_NETNS" in data["msg"] and "CNI_IFNAME" in data["msg"]


def test_cni_path_is_optional_for_add(tmp_path) -> None:
    out = ours("host-local", "ADD", hl_conf("1.0.0", tmp_path), netns="/x", cni_path="")
    assert out.ok, out


def test_cni_path_is_required_for_status(tmp_path) -> None:
    out = ours("host-local", "STATUS", hl_conf("1.1.0", tmp_path), cni_path="")
    assert "CNI_PATH" in assert_error(out, 4)["msg"]


def test_netns_is_optional_for_del(tmp_path) -> None:
    assert ours("host-local", "DEL", hl_conf("1.0.0", tmp_path), netns="").ok


def test_empty_container_id_is_code_3(tmp_path) -> None:
    assert_error(ours("host-local", "ADD", hl_conf("1.0.0", tmp_path), container_id="", netns="/x"), 3, "1.0.0")


@pytest.mark.parametrize("cid", ["../etc", "a/b", "-x", "a b", "é"])
def test_bad_container_id_is_code_4(cid: str, tmp_path) -> None:
    assert_error(ours("host-local", "ADD", hl_conf("1.0.0", tmp_path), container_id=cid, netns="/x"), 4, "1.0.0")


@pytest.mark.parametrize("ifname", ["a" * 16, ".", "..", "e/0", "e:0", "e 0"])
def test_bad_ifname_is_code_4(ifname: str, tmp_path) -> None:
    assert_error(ours("host-local", "ADD", hl_conf("1.0.0", tmp_path), ifname=ifname, netns="/x"), 4, "1.0.0")


def test_own_netns_is_code_8(tmp_path) -> None:
    out = ours("host-local", "ADD", hl_conf("1.0.0", tmp_path), netns="/proc/self/ns/net")
    assert_error(out, 8, "1.0.0")


def test_cni_args_unknown_key_needs_ignore_unknown(tmp_path) -> None:
    conf = hl_conf("1.0.0", tmp_path)
    assert_error(ours("host-local", "ADD", conf, netns="/x", cni_args="FOO=1"), 4, "1.0.0")
    assert ours("host-local", "ADD", conf, netns="/x", cni_args="IgnoreUnknown=1;FOO=1").ok


def test_cni_args_malformed_pair(tmp_path) -> None:
    out = ours("host-local", "ADD", hl_conf("1.0.0", tmp_path), netns="/x", cni_args="IgnoreUnknown=1;junk")
    assert "junk" in assert_error(out, 4, "1.0.0")["msg"]


# -- SPEC "Section 1: Network configuration format" --------------------------------------------

def test_undecodable_json_is_code_6_with_position() -> None:
    out = ours("host-local", "ADD", b'{"name": "x",\n "cniVersion": }', netns="/x")
    data = assert_error(out, 6, "1.1.0")
    assert "line 2 column" in data["msg"]


def test_non_object_json_is_code_6() -> None:
    assert_error(ours("host-local", "ADD", b"[1,2]", netns="/x"), 6)


@pytest.mark.parametrize("version", ALL_VERSIONS)
def test_missing_name_is_code_7(version: str, tmp_path) -> None:
    conf = hl_conf(version, tmp_path)
    del conf["name"]
    assert_error(ours("host-local", "ADD", conf, netns="/x"), 7, version)


@pytest.mark.parametrize("name", ["../x", "a/b", ""])
def test_invalid_name_is_code_7(name: str, tmp_path) -> None:
    assert_error(ours("host-local", "ADD", hl_conf("1.0.0", tmp_path, name=name), netns="/x"), 7, "1.0.0")


def test_missing_cni_version_is_0_1_0(tmp_path) -> None:
    out = ours("host-local", "ADD", hl_conf(None, tmp_path), netns="/x")
    assert out.ok and out.data["cniVersion"] == "0.1.0" and "ip4" in out.data


def test_unsupported_version_is_code_1_and_lists_supported(tmp_path) -> None:
    data = assert_error(ours("host-local", "ADD", hl_conf("9.9.9", tmp_path), netns="/x"), 1)
    assert "0.3.1" in data["msg"] + data.get("details", "")


def test_schema_error_names_the_json_path(tmp_path) -> None:
    conf = hl_conf("1.0.0", tmp_path)
    conf["ipam"]["ranges"] = [[{"subnet": 42}]]
    data = assert_error(ours("host-local", "ADD", conf, netns="/x"), 7, "1.0.0")
    assert "ipam.ranges[0][0].subnet" in data["msg"]
    assert "42" in data["details"]


def test_unknown_keys_are_accepted(tmp_path) -> None:
    out = ours("host-local", "ADD", hl_conf("1.0.0", tmp_path, somethingNew={"x": 1}), netns="/x")
    assert out.ok


# -- verb gating (skel) ------------------------------------------------------------------------

@pytest.mark.parametrize("version", ALL_VERSIONS)
def test_check_gc_status_gating(version: str, tmp_path) -> None:
    conf = hl_conf(version, tmp_path)
    check = ours("host-local", "CHECK", conf, netns="/x")
    if version in ("0.1.0", "0.2.0", "0.3.0", "0.3.1"):
        assert_error(check, 1, version)
    else:
        assert check.error_code != 1
    for verb in ("GC", "STATUS"):
        out = ours("host-local", verb, conf)
        if version == "1.1.0":
            assert out.ok, out
        else:
            assert_error(out, 1, version)


# -- logging -----------------------------------------------------------------------------------

def test_log_file_gets_one_json_line_mode_0600(tmp_path) -> None:
    log = tmp_path / "cni.log"
    conf = hl_conf("1.0.0", tmp_path / "data")
    assert ours("host-local", "ADD", conf, netns="/x", extra_env={"CNI_FLANNEL_LOG": str(log)}).ok
    ours("host-local", "ADD", conf, netns="/x", extra_env={"CNI_FLANNEL_LOG": str(log)})
    lines = [json.loads(x) for x in log.read_text().splitlines()]
    assert [x["outcome"] for x in lines] == ["ok", "error"]
    assert lines[0]["plugin"] == "host-local" and lines[0]["verb"] == "ADD"
    assert lines[1]["code"] != 0 and lines[0]["durationMs"] >= 0
    assert stat.S_IMODE(os.stat(log).st_mode) == 0o600


def test_no_traceback_on_internal_error(tmp_path) -> None:
    # dataDir pointing at a file makes the store fail: an error object, never a traceback
    f = tmp_path / "file"
    f.write_text("x")
    conf = hl_conf("1.0.0", tmp_path)
    conf["ipam"]["dataDir"] = str(f)
    out = ours("host-local", "ADD", conf, netns="/x")
    assert out.rc == 1 and out.data["code"] in (5, 999)
    assert "Traceback" not in out.stderr + out.stdout
