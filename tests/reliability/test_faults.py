"""Faults: SIGKILL during ADD and DEL, full and read-only dataDir."""
from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import time

import pytest
from conftest import figures
from harness import REPO, delete_netns, new_netns, our_command


def _popen(node, plugin: str, verb: str, conf: dict, cid: str, netns: str) -> subprocess.Popen[bytes]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("CNI_") or k.startswith("CNI_FLANNEL_")}
    env.update({"CNI_COMMAND": verb, "CNI_CONTAINERID": cid, "CNI_NETNS": netns, "CNI_IFNAME": "eth0",
                "CNI_PATH": node.bin_dir, "PYTHONPATH": REPO})
    # exec the plugin inside the node namespace without an intermediate process, so SIGKILL hits it
    p = subprocess.Popen(["nsenter", f"--net=/run/netns/{node.ns.name}", *our_command(plugin)],
                         stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env)
    assert p.stdin is not None
    p.stdin.write(json.dumps(conf).encode())
    p.stdin.close()
    return p


def _full_add_time(node, cid: str, netns: str) -> float:
    start = time.monotonic()
    node.add_pod(cid, netns, 31000)
    took = time.monotonic() - start
    node.del_pod(cid, netns, 31000)
    return took


@pytest.mark.parametrize("verb", ["ADD", "DEL"])
def test_sigkill_at_random_points(flannel_node, verb) -> None:
    node = flannel_node
    trials = 50
    pod = new_netns("cnifk")
    rng = random.Random(11 if verb == "ADD" else 12)
    killed = 0
    try:
        # the whole chain (flannel, then portmap) takes about this long: kill points are spread over it
        span = _full_add_time(node, "calibrate", pod.path)
        for i in range(trials):
            cid = f"kill{i}"
            if verb == "DEL":
                node.add_pod(cid, pod.path, 31000)
            point = rng.uniform(0, span)
            if verb == "DEL":  # the runtime's DEL order: portmap, then flannel, which we kill
                maps = {"portMappings": [{"hostPort": 31000, "containerPort": 80, "protocol": "tcp"}]}
                assert node.run("portmap", "DEL", node.conf("portmap", runtimeConfig=maps), cid,
                                pod.path).returncode == 0
            p = _popen(node, "flannel", verb, node.conf("flannel"), cid, pod.path)
            time.sleep(point)
            if p.poll() is None:
                p.send_signal(signal.SIGKILL)
                killed += 1
            p.wait()
            # the runtime follows a failed or interrupted verb with DEL: it must succeed, and clean up
            node.del_pod(cid, pod.path, 31000)
            node.del_pod(cid, pod.path, 31000)
            assert node.residue() == [], (i, point)
            # ... and the same pod can be added again
            node.add_pod(cid, pod.path, 31000)
            node.del_pod(cid, pod.path, 31000)
            assert node.residue() == []
        figures(test=f"sigkill_{verb.lower()}", trials=trials, killed_midway=killed, residue=0,
                span_ms=round(span * 1000))
        assert killed >= trials // 3  # the kill points really fell inside the verb
    finally:
        delete_netns(pod)


@pytest.fixture
def small_fs(tmp_path):
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=256k", "tmpfs", str(mnt)], check=True)
    try:
        yield mnt
    finally:
        subprocess.run(["umount", "-l", str(mnt)], check=False)


def test_full_filesystem_gives_a_clear_error_and_recovers(flannel_node, small_fs) -> None:
    node = flannel_node
    node.root = str(small_fs)
    pod = new_netns("cnifd")
    try:
        filler = small_fs / "filler"
        fd = os.open(filler, os.O_WRONLY | os.O_CREAT)
        try:
            while True:
                os.write(fd, b"x" * 4096)
        except OSError:
            pass
        finally:
            os.close(fd)
        out = node.run("flannel", "ADD", node.conf("flannel"), "full1", pod.path)
        err = json.loads(out.stdout)
        assert out.returncode == 1 and err["code"] == 5, err
        assert str(small_fs) in err["msg"] and "space" in (err["msg"] + err.get("details", "")).lower()
        assert node.residue() == [] and json.loads(pod.run("ip", "-j", "link").stdout)[-1]["ifname"] != "eth0"
        filler.unlink()
        node.add_pod("full1", pod.path)
        node.del_pod("full1", pod.path)
        assert node.residue() == []
        figures(test="full_fs", recovered=True, residue=0)
    finally:
        delete_netns(pod)


def test_read_only_filesystem_gives_a_clear_error(flannel_node, small_fs) -> None:
    node = flannel_node
    node.root = str(small_fs)
    pod = new_netns("cnifr")
    try:
        subprocess.run(["mount", "-o", "remount,ro", str(small_fs)], check=True)
        out = node.run("flannel", "ADD", node.conf("flannel"), "ro1", pod.path)
        err = json.loads(out.stdout)
        assert out.returncode == 1 and err["code"] == 5 and str(small_fs) in err["msg"], err
        # the errno in words (issue 20 §4), not Python's "Read-only file system"
        assert "read-only file system (EROFS)" in err["msg"], err
        subprocess.run(["mount", "-o", "remount,rw", str(small_fs)], check=True)
        node.add_pod("ro1", pod.path)
        node.del_pod("ro1", pod.path)
        assert node.residue() == []
    finally:
        delete_netns(pod)
