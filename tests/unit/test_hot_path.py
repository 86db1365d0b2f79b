"""The plugins' hot path checks values without `re` and imports only what a verb needs.

Each hand-written check is compared with the regular expression it replaces: Go's semantics
(the whole string, no trailing-newline quirk) where Go is the reference (libcni's ID pattern,
cniVersion, the bridge MAC), Python's re.search where jsonschema words the same schema.
"""
from __future__ import annotations

import re
import subprocess
import sys

import pytest
from harness import REPO
from hypothesis import given
from hypothesis import strategies as st

from cni_flannel.cni import schemas, version
from cni_flannel.cni.env import is_valid_id
from cni_flannel.cni.errors import CNIError
from cni_flannel.plugins.bridge import is_mac

# mostly the characters the patterns care about, plus any text
near = st.text(alphabet=st.sampled_from("aZ09_.-:/ \t\n\u00a0\u0663\u00b2x-"), max_size=20) | st.text(max_size=20)


@given(near)
def test_id_check_is_libcni_pattern_over_the_whole_string(value: str) -> None:
    assert is_valid_id(value) == bool(re.fullmatch(r"[a-zA-Z0-9][a-zA-Z0-9_.\-]*", value, re.ASCII))


def test_id_check_refuses_a_trailing_newline() -> None:  # Python's `$` would accept it; Go's does not
    assert is_valid_id("abc") and not is_valid_id("abc\n")


@given(st.text(alphabet=st.sampled_from("0123456789.\u0663\u00b2a\n"), max_size=9))
def test_version_parse_is_three_ascii_numbers(value: str) -> None:
    m = re.fullmatch(r"(\d+)\.(\d+)\.(\d+)", value, re.ASCII)
    if m:
        assert version.parse(value) == tuple(int(g) for g in m.groups())
    else:
        with pytest.raises(CNIError):
            version.parse(value)


@given(st.text(alphabet=st.sampled_from("0aAfFgG:-\n"), min_size=15, max_size=18) | st.text(max_size=18))
def test_mac_check_is_the_bridge_pattern_over_the_whole_string(value: str) -> None:
    assert is_mac(value) == bool(re.fullmatch(r"([0-9a-fA-F]{2}[:-]){5}[0-9a-fA-F]{2}", value))


@pytest.mark.parametrize("pattern", sorted(schemas._KNOWN_PATTERNS))
@given(value=near)
def test_schema_patterns_match_as_re_search_does(pattern: str, value: str) -> None:
    assert schemas._pattern_matches(pattern, value) == (re.search(pattern, value) is not None)


def test_an_unknown_pattern_still_works() -> None:
    assert schemas._pattern_matches("^a+b$", "aab") and not schemas._pattern_matches("^a+b$", "ab!")


HEAVY = ("typing", "socket", "re", "enum", "importlib.util", "dataclasses", "contextlib")


@pytest.mark.parametrize("module", ["cni_flannel.plugins.flannel", "cni_flannel.plugins.bridge",
                                    "cni_flannel.plugins.host_local", "cni_flannel.plugins.portmap",
                                    "cni_flannel.plugins.loopback", "cni_flannel.net.link",
                                    "cni_flannel.net.addr", "cni_flannel.net.rtnl", "cni_flannel.ipam.store"])
def test_plugin_modules_import_no_heavy_stdlib(module: str) -> None:
    """What a frozen plugin exec imports before doing any work (-S: no site, as when frozen)."""
    code = (f"import sys; sys.path.insert(0, {REPO!r}); import {module}; "
            f"print(' '.join(m for m in {HEAVY!r} if m in sys.modules))")
    out = subprocess.run([sys.executable, "-I", "-S", "-c", code], cwd=REPO, capture_output=True, text=True,
                         check=True)
    assert out.stdout.split() == []


@given(st.text(alphabet=st.sampled_from(" a\"'\\\t\nb$`\r-"), max_size=16) | st.text(max_size=16))
def test_rule_split_is_shlex_split(line: str) -> None:
    import shlex

    from cni_flannel.net.iptables import split_rule

    try:
        want: object = shlex.split(line)
    except ValueError as exc:
        want = ("error", str(exc))
    try:
        got: object = split_rule(line)
    except ValueError as exc:
        got = ("error", str(exc))
    assert got == want


@given(st.lists(st.text(max_size=12), max_size=6))
def test_rule_split_reads_back_what_quote_writes(args: list[str]) -> None:
    from cni_flannel.net.iptables import quote, split_rule

    assert split_rule("-A CHAIN " + quote(args))[2:] == [a for a in args]


def test_chain_hash_is_sha512_prefix() -> None:
    import hashlib

    from cni_flannel.net.iptables import chain_name

    want = ("CNI-" + hashlib.sha512(b"cbr0abc").hexdigest())[:28]
    assert chain_name("cbr0", "abc") == want


def _plugin(stdout: int | None, stdin: bytes) -> subprocess.CompletedProcess[bytes]:
    env = {"PATH": "/usr/bin:/bin", "PYTHONPATH": REPO, "CNI_COMMAND": "VERSION"}
    return subprocess.run([sys.executable, "-m", "cni_flannel", "loopback"], input=stdin, env=env,
                          stdout=stdout if stdout is not None else subprocess.PIPE, stderr=subprocess.PIPE,
                          check=False)


def test_a_plugin_exec_skips_teardown_but_flushes_its_answer() -> None:
    big = b'{"cniVersion":"1.0.0","pad":"' + b"x" * 200_000 + b'"}'  # not the fast path: a real decode
    out = _plugin(None, big)
    assert out.returncode == 0 and out.stderr == b""
    assert out.stdout.startswith(b'{"cniVersion":"1.0.0","supportedVersions":[') and out.stdout.endswith(b"]}")


def test_a_plugin_whose_stdout_is_gone_exits_120_without_a_traceback() -> None:
    import os

    r, w = os.pipe()
    os.close(r)  # the runtime stopped reading
    try:
        out = _plugin(w, b'{"cniVersion":"1.0.0"}')
    finally:
        os.close(w)
    assert out.returncode == 120 and b"Traceback" not in out.stderr
