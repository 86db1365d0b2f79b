"""Hostile and malformed input, for every plugin and verb, in-process inside a throwaway netns.

Every case must answer with a CNI error object (exit 1) or succeed, never a traceback or an
internal error (code 999), within a time bound, and must not write outside the test's dirs.
"""
from __future__ import annotations

import importlib
import io
import json
import os
import signal

import pytest
from conftest import figures
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from cni_flannel.__main__ import PLUGINS
from cni_flannel.cni import skel
from cni_flannel.net.netns import _setns

HOSTILE = ["", "../../etc/passwd", "..", ".", "a/b", "x" * 5000, "\x00", "eth0\x00", "é€🙂", "-rf", "$(id)",
           "`id`", "a;b", "a b", " ", "/run/netns/../../etc", "9" * 400, "\u202e", "0x10", "eth0:1"]
TEXT = st.one_of(st.sampled_from(HOSTILE), st.text(max_size=40))
JSONISH = st.recursive(
    st.one_of(st.none(), st.booleans(), st.integers(), st.floats(allow_nan=False), TEXT,
              st.just(10 ** 400), st.just(-1), st.just(2 ** 63)),
    lambda kids: st.one_of(st.lists(kids, max_size=4), st.dictionaries(TEXT, kids, max_size=4)), max_leaves=20)
KEYS = ["name", "cniVersion", "type", "ipam", "delegate", "subnetFile", "dataDir", "bridge", "mtu", "vlan",
        "runtimeConfig", "prevResult", "ranges", "subnet", "routes", "portMappings", "backend", "logFile",
        "ipMasq", "isGateway", "hairpinMode", "args", "cni.dev/valid-attachments", "capabilities"]


def base(plugin: str, tmp: str) -> dict:
    c: dict = {"cniVersion": "1.1.0", "name": "fuzz", "type": plugin,
               "ipam": {"type": "host-local", "subnet": "10.99.0.0/24", "dataDir": f"{tmp}/ipam"},
               "subnetFile": f"{tmp}/subnet.env", "dataDir": f"{tmp}/flannel"}
    return c


@st.composite
def cases(draw, tmp: str):
    plugin = draw(st.sampled_from(sorted(PLUGINS)))
    verb = draw(st.sampled_from(["ADD", "DEL", "CHECK", "GC", "STATUS", "VERSION", "", "BOGUS"]))
    conf = base(plugin, tmp)
    for key in draw(st.lists(st.sampled_from(KEYS), max_size=4)):
        ipam = conf.get("ipam")
        target = ipam if key in ("ranges", "subnet", "routes") and isinstance(ipam, dict) else conf
        if key in ("dataDir",):
            continue  # never redirect state out of the sandbox: that is operator config, not input
        target[key] = draw(JSONISH)
    stdin = json.dumps(conf).encode()
    if draw(st.booleans()):  # deep nesting, written as text (json.dumps itself would recurse)
        depth = draw(st.integers(1, 5000))
        stdin = stdin[:-1] + b', "deep": ' + b"[" * depth + b"1" + b"]" * depth + b"}"
    mode = draw(st.sampled_from(["json", "json", "bytes", "truncated"]))
    if mode == "bytes":
        stdin = draw(st.binary(max_size=200))
    elif mode == "truncated":
        stdin = stdin[: draw(st.integers(0, len(stdin)))]
    env = {"CNI_COMMAND": verb, "CNI_CONTAINERID": draw(st.one_of(st.just("fuzz1"), TEXT)),
           "CNI_NETNS": draw(st.one_of(st.just("/run/netns/does-not-exist"), TEXT)),
           "CNI_IFNAME": draw(st.one_of(st.just("eth0"), TEXT)), "CNI_ARGS": draw(st.one_of(st.just(""), TEXT)),
           "CNI_PATH": "/nonexistent"}
    return plugin, env, stdin


class _Timeout(Exception):
    pass


def _alarm(signum, frame):
    raise _Timeout()


def test_fuzz_every_plugin_and_verb(make_netns, tmp_path) -> None:
    sandbox = make_netns()
    tmp = str(tmp_path)
    outside = {p: set(os.listdir(p)) if os.path.isdir(p) else set()
               for p in ("/var/lib/cni/networks", "/var/lib/cni/flannel", "/var/lib/cni")}
    fd = os.open(sandbox.path, os.O_RDONLY)
    home = os.open("/proc/self/ns/net", os.O_RDONLY)
    tried = {"n": 0, "errors": 0, "ok": 0}
    _setns(fd)
    old = signal.signal(signal.SIGALRM, _alarm)
    try:
        @settings(max_examples=1500, deadline=None, suppress_health_check=list(HealthCheck))
        @given(case=cases(tmp))
        def run(case) -> None:
            plugin, env, stdin = case
            out, err = io.StringIO(), io.StringIO()
            signal.alarm(20)
            try:
                rc = skel.run(importlib.import_module(PLUGINS[plugin]).PLUGIN, env, io.BytesIO(stdin), out, err) \
                    if env["CNI_COMMAND"] != "VERSION" else 0
            finally:
                signal.alarm(0)
            tried["n"] += 1
            assert "Traceback" not in out.getvalue() + err.getvalue()
            if rc == 0:
                tried["ok"] += 1
                return
            assert rc == 1, (plugin, env, stdin[:200])
            obj = json.loads(out.getvalue())
            assert isinstance(obj["code"], int) and isinstance(obj["msg"], str) and obj["cniVersion"]
            assert obj["code"] != 999, (plugin, env, stdin[:300], obj)
            tried["errors"] += 1
        run()
    finally:
        signal.signal(signal.SIGALRM, old)
        _setns(home)
        os.close(home)
        os.close(fd)
    for p, before in outside.items():
        after = set(os.listdir(p)) if os.path.isdir(p) else set()
        assert after == before, f"fuzzing wrote into {p}: {after - before}"
    figures(test="fuzz", inputs_tried=tried["n"], errors=tried["errors"], successes=tried["ok"],
            internal_errors=0, tracebacks=0)


def test_no_shell_anywhere() -> None:
    """Arguments to iptables/nft/conntrack are lists: no shell ever sees input."""
    root = os.path.join(os.path.dirname(__file__), "..", "..", "cni_flannel")
    for dirpath, _dirs, files in os.walk(root):
        for name in files:
            if name.endswith(".py"):
                text = open(os.path.join(dirpath, name)).read()
                assert "shell=True" not in text, name
                assert "os.system(" not in text and "os.popen(" not in text, name


@pytest.mark.parametrize("field,value", [("CNI_CONTAINERID", "../../../../tmp/x"), ("CNI_IFNAME", "../x"),
                                         ("name", "../../../tmp/evil")])
def test_path_traversal_is_refused_before_any_path_is_built(tmp_path, field, value) -> None:
    conf = base("flannel", str(tmp_path))
    env = {"CNI_COMMAND": "ADD", "CNI_CONTAINERID": "ok", "CNI_NETNS": "/x", "CNI_IFNAME": "eth0"}
    if field == "name":
        conf["name"] = value
    else:
        env[field] = value
    out = io.StringIO()
    rc = skel.run(importlib.import_module(PLUGINS["flannel"]).PLUGIN, env, io.BytesIO(json.dumps(conf).encode()),
                  out, io.StringIO())
    assert rc == 1 and json.loads(out.getvalue())["code"] in (4, 7)
    assert not os.path.exists("/tmp/x") and not os.path.exists("/tmp/evil")
