"""A delegate runs in-process only when CNI_PATH's file is our own program (issue 20 §2).

flannel's bridge and bridge's host-local are looked up in CNI_PATH as an exec would look
them up; the Go reference, a wrapper script or another build of ours found there is exec'd.
Before the fix ours always ran in-process, so an operator's replacement was silently ignored.
"""
from __future__ import annotations

import json
import os
import shutil

import pytest
from harness import GO_CNI_DIR, our_bin_dir
from kernel import iptables_nat, link, ping
from our_plugins import our_path, ours


def seed(tmp_path, **over) -> dict:
    env = tmp_path / "subnet.env"
    env.write_text("FLANNEL_NETWORK=10.91.0.0/16\nFLANNEL_SUBNET=10.91.3.1/24\nFLANNEL_MTU=1450\nFLANNEL_IPMASQ=false\n")
    c = {"cniVersion": "1.0.0", "name": "dlg", "type": "flannel", "subnetFile": str(env),
         "dataDir": str(tmp_path / "flannel"), "delegate": {"bridge": "dlgbr0"},
         "ipam": {"dataDir": str(tmp_path / "ipam")}}
    c.update(over)
    return c


def wrapper(directory, name: str, log, target: str) -> None:
    """A logging wrapper, as an operator would install one."""
    os.makedirs(directory, exist_ok=True)
    path = os.path.join(directory, name)
    with open(path, "w") as f:
        f.write(f"#!/bin/sh\necho \"{name} $CNI_COMMAND $CNI_CONTAINERID\" >> {log}\nexec {target} \"$@\"\n")
    os.chmod(path, 0o755)


def log_lines(path) -> list[dict]:
    return [json.loads(line) for line in open(path)] if os.path.exists(path) else []


def test_a_wrapper_named_bridge_is_execd(make_netns, tmp_path) -> None:
    """Catches: flannel running our bridge in-process although CNI_PATH's bridge is a wrapper."""
    node, pod = make_netns(), make_netns()
    wrap_dir, log = tmp_path / "wrap", tmp_path / "calls.log"
    wrapper(wrap_dir, "bridge", log, os.path.join(our_path(), "bridge"))
    path = f"{wrap_dir}:{our_path()}"
    out = ours("flannel", "ADD", seed(tmp_path), container_id="w1", netns=pod.path, node=node, cni_path=path)
    assert out.ok, out
    assert log.read_text().splitlines() == ["bridge ADD w1"]
    assert ping(pod, "10.91.3.1")
    assert ours("flannel", "DEL", seed(tmp_path), container_id="w1", netns=pod.path, node=node, cni_path=path).ok
    assert log.read_text().splitlines() == ["bridge ADD w1", "bridge DEL w1"]
    assert link(pod, "eth0") is None


def test_a_wrapper_named_host_local_is_execd_by_our_bridge(make_netns, tmp_path) -> None:
    """Catches: bridge running host-local in-process although CNI_PATH's host-local is a wrapper."""
    node, pod = make_netns(), make_netns()
    wrap_dir, log = tmp_path / "wrap", tmp_path / "calls.log"
    wrapper(wrap_dir, "host-local", log, os.path.join(our_path(), "host-local"))
    path = f"{wrap_dir}:{our_path()}"
    out = ours("flannel", "ADD", seed(tmp_path), container_id="w2", netns=pod.path, node=node, cni_path=path)
    assert out.ok, out
    assert log.read_text().splitlines() == ["host-local ADD w2"]
    assert out.data["ips"][0]["address"] == "10.91.3.2/24"


@pytest.mark.usefixtures("requires_go")
def test_the_go_bridge_in_cni_path_is_execd_and_the_pod_works(make_netns, tmp_path) -> None:
    """Catches: the Go bridge in CNI_PATH ignored. Go is told apart by plugins#810: its DEL with an
    empty CNI_NETNS leaves the masquerade chain, which our bridge removes."""
    node, pod = make_netns(), make_netns()
    go_dir = tmp_path / "go"
    go_dir.mkdir()
    for name in ("bridge", "host-local"):
        os.symlink(os.path.join(GO_CNI_DIR, name), go_dir / name)
    path = f"{go_dir}:{our_path()}"
    c = seed(tmp_path)
    out = ours("flannel", "ADD", c, container_id="g1", netns=pod.path, node=node, cni_path=path)
    assert out.ok, out
    assert ping(pod, "10.91.3.1") and out.data["ips"][0]["address"] == "10.91.3.2/24"
    assert any("CNI-" in r for r in iptables_nat(node))
    assert ours("flannel", "DEL", c, container_id="g1", netns="", node=node, cni_path=path).ok
    assert any("CNI-" in r for r in iptables_nat(node)), "the Go bridge leaves these (plugins#810): not exec'd?"


def test_our_own_links_run_in_process(make_netns, tmp_path) -> None:
    """Our links in CNI_PATH: one process per chain step (the log has flannel's line only)."""
    node, pod = make_netns(), make_netns()
    log = tmp_path / "plugin.log"
    out = ours("flannel", "ADD", seed(tmp_path), container_id="o1", netns=pod.path, node=node,
               extra_env={"CNI_FLANNEL_LOG": str(log)})
    assert out.ok, out
    assert [e["plugin"] for e in log_lines(log) if "plugin" in e] == ["flannel"]


def test_another_build_of_ours_is_execd(make_netns, tmp_path) -> None:
    """Catches: a different copy of our program (another build) run in-process as if it were this one."""
    if our_bin_dir():
        other = tmp_path / "other"
        shutil.copytree(os.path.dirname(os.path.realpath(os.path.join(our_bin_dir(), "flannel"))), other,
                        symlinks=True)
        with open(other / "_internal" / "cni_flannel" / "BUILD_ID", "w") as f:
            f.write("frozen-another-build")
        bridge = other / "bridge"
        os.symlink(os.path.basename(os.path.realpath(os.path.join(our_bin_dir(), "flannel"))), bridge)
    else:
        other = tmp_path / "other"
        other.mkdir()
        shutil.copy(os.path.join(our_path(), "cni-flannel"), other / "cni-flannel")
        os.symlink("cni-flannel", other / "bridge")
    node, pod = make_netns(), make_netns()
    log = tmp_path / "plugin.log"
    out = ours("flannel", "ADD", seed(tmp_path), container_id="o2", netns=pod.path, node=node,
               cni_path=f"{other}:{our_path()}", extra_env={"CNI_FLANNEL_LOG": str(log)})
    assert out.ok, out
    # the other build's bridge, in turn, finds our host-local, which is not its own build either
    assert sorted(e["plugin"] for e in log_lines(log) if "plugin" in e) == ["bridge", "flannel", "host-local"]


def test_a_delegate_missing_from_cni_path_is_the_reference_error(make_netns, tmp_path) -> None:
    """Catches: our bridge run in-process although CNI_PATH has no bridge at all."""
    node, pod = make_netns(), make_netns()
    empty = tmp_path / "empty"
    empty.mkdir()
    out = ours("flannel", "ADD", seed(tmp_path), container_id="m1", netns=pod.path, node=node,
               cni_path=f"{empty}:/nonexistent")
    assert out.rc == 1, out
    assert out.data["msg"] == f'failed to delegate add: failed to find plugin "bridge" in path [{empty} /nonexistent]'
    assert not os.path.exists(tmp_path / "flannel" / "m1")
