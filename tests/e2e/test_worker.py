"""The warm worker: same results as in-process, every fallback, and no leak when it dies mid-call."""
from __future__ import annotations

import fcntl
import json
import os
import re
import signal
import socket
import subprocess
import threading
import time

import pytest
from harness import REPO, our_program
from kernel import link
from our_plugins import ours

from cni_flannel.tools import topology


@pytest.fixture
def worker_env(tmp_path):
    """Start a worker on a private socket; yields (env for plugins, the worker process)."""
    sock = str(tmp_path / "w" / "worker.sock")
    procs: list[subprocess.Popen] = []

    def start(**env_extra: str) -> tuple[dict[str, str], subprocess.Popen]:
        env = {**os.environ, "PYTHONPATH": REPO, **env_extra}
        p = subprocess.Popen([*our_program("worker", "--socket", sock)], env=env, stderr=subprocess.PIPE, text=True)
        procs.append(p)
        assert p.stderr is not None
        line = p.stderr.readline()
        assert "listening" in line, line
        return {"CNI_FLANNEL_WORKER_SOCKET": sock}, p

    yield start
    for p in procs:
        p.kill()
        p.wait()


def conf(tmp_path, version="1.0.0") -> dict:
    env = tmp_path / "subnet.env"
    topology.write_subnet_env(str(env), "10.42.0.0/16", "10.42.1.0/24")
    return {"cniVersion": version, "name": "cbr0", "type": "flannel",
            "delegate": {"forceAddress": True, "bridge": "mycni8", "isDefaultGateway": True},
            "subnetFile": str(env), "dataDir": str(tmp_path / "fl"), "ipam": {"dataDir": str(tmp_path / "ipam")}}


def served(log) -> list[str]:
    return [json.loads(x).get("servedBy", "in-process") for x in log.read_text().splitlines()] if log.exists() else []


def norm(text: str) -> str:
    return re.sub(r"([0-9a-f]{2}:){5}[0-9a-f]{2}|veth[0-9a-f]{8}|/run/netns/[\w-]+", "X", text)


def test_worker_result_is_identical_to_in_process(make_netns, tmp_path, worker_env) -> None:
    env, _ = worker_env()
    log = tmp_path / "calls.log"
    outs = {}
    for mode, extra in (("worker", env), ("in-process", {"CNI_FLANNEL_WORKER": "off"})):
        node, pod = make_netns(), make_netns()
        c = conf(tmp_path / mode)
        out = ours("flannel", "ADD", c, container_id="same", netns=pod.path, node=node,
                   extra_env={**extra, "CNI_FLANNEL_LOG": str(log)})
        assert out.ok, out
        outs[mode] = norm(out.stdout)
        assert link(pod, "eth0") is not None
        assert ours("flannel", "DEL", c, container_id="same", netns=pod.path, node=node, extra_env=extra).ok
        assert link(pod, "eth0") is None
    assert outs["worker"] == outs["in-process"]
    assert served(log) == ["worker", "in-process"]


def test_stale_build_is_never_used(make_netns, tmp_path, worker_env) -> None:
    env, _ = worker_env(CNI_FLANNEL_BUILD_ID="some-other-build")
    node, pod = make_netns(), make_netns()
    log = tmp_path / "calls.log"
    out = ours("flannel", "ADD", conf(tmp_path), netns=pod.path, node=node,
               extra_env={**env, "CNI_FLANNEL_LOG": str(log)})
    assert out.ok and served(log) == ["in-process"]


def test_killed_worker_falls_back(make_netns, tmp_path, worker_env) -> None:
    env, p = worker_env()
    p.kill()
    p.wait()
    assert os.path.exists(env["CNI_FLANNEL_WORKER_SOCKET"])  # a stale socket file is left behind
    node, pod = make_netns(), make_netns()
    log = tmp_path / "calls.log"
    out = ours("flannel", "ADD", conf(tmp_path), netns=pod.path, node=node,
               extra_env={**env, "CNI_FLANNEL_LOG": str(log)})
    assert out.ok and served(log) == ["in-process"]


def test_hung_worker_times_out_and_falls_back(make_netns, tmp_path) -> None:
    path = str(tmp_path / "hung.sock")
    srv = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    srv.bind(path)
    srv.listen(8)
    accepted: list[socket.socket] = []
    t = threading.Thread(target=lambda: accepted.append(srv.accept()[0]), daemon=True)
    t.start()
    try:
        node, pod = make_netns(), make_netns()
        log = tmp_path / "calls.log"
        start = time.monotonic()
        out = ours("flannel", "ADD", conf(tmp_path), netns=pod.path, node=node,
                   extra_env={"CNI_FLANNEL_WORKER_SOCKET": path, "CNI_FLANNEL_LOG": str(log)})
        assert out.ok and served(log) == ["in-process"]
        assert time.monotonic() - start < 10
    finally:
        srv.close()


def test_socket_of_another_user_is_not_trusted(make_netns, tmp_path, worker_env) -> None:
    env, _ = worker_env()
    os.chown(env["CNI_FLANNEL_WORKER_SOCKET"], 65534, 65534)
    node, pod = make_netns(), make_netns()
    log = tmp_path / "calls.log"
    out = ours("flannel", "ADD", conf(tmp_path), netns=pod.path, node=node,
               extra_env={**env, "CNI_FLANNEL_LOG": str(log)})
    assert out.ok and served(log) == ["in-process"]


def test_socket_and_dir_are_root_only(worker_env) -> None:
    env, _ = worker_env()
    path = env["CNI_FLANNEL_WORKER_SOCKET"]
    assert oct(os.stat(path).st_mode & 0o777) == "0o600"
    assert oct(os.stat(os.path.dirname(path)).st_mode & 0o777) == "0o700"


def test_worker_child_killed_mid_call_leaks_nothing(make_netns, tmp_path, worker_env) -> None:
    env, worker = worker_env()
    node, pod = make_netns(), make_netns()
    c = conf(tmp_path)
    assert ours("flannel", "ADD", c, container_id="mid", netns=pod.path, node=node, extra_env=env).ok
    prev = json.loads(ours("flannel", "ADD", c, container_id="probe", netns=make_netns().path, node=node,
                           extra_env={"CNI_FLANNEL_WORKER": "off"}).stdout)
    pm = {"cniVersion": "1.0.0", "name": "cbr0", "type": "portmap", "prevResult": prev,
          "runtimeConfig": {"portMappings": [{"hostPort": 33080, "containerPort": 80, "protocol": "tcp"}]}}
    lock = os.open("/run/cni-flannel.iptables.lock", os.O_RDWR | os.O_CREAT, 0o600)
    fcntl.flock(lock, fcntl.LOCK_EX)  # the worker's child will block on the iptables lock
    result: dict = {}
    t = threading.Thread(target=lambda: result.update(out=ours("portmap", "ADD", pm, container_id="mid",
                                                                netns=pod.path, node=node, extra_env=env)))
    t.start()
    try:
        time.sleep(0.5)  # the call's child is now blocked on the lock
        # the children forked ahead wait in accept(); killing them too is harmless (they are replaced)
        kids = subprocess.run(["pgrep", "-P", str(worker.pid)], capture_output=True, text=True).stdout.split()
        assert kids
        for kid in kids:
            os.kill(int(kid), signal.SIGKILL)
    finally:
        fcntl.flock(lock, fcntl.LOCK_UN)
        os.close(lock)
    t.join(30)
    out = result["out"]
    assert out.rc == 1 and out.data["code"] == 11 and "worker died" in out.data["msg"]
    # the runtime now DELs the chain: nothing is left
    assert ours("portmap", "DEL", pm, container_id="mid", netns=pod.path, node=node, extra_env=env).ok
    assert ours("flannel", "DEL", c, container_id="mid", netns=pod.path, node=node, extra_env=env).ok
    assert ours("flannel", "DEL", c, container_id="probe", netns="", node=node).ok
    nat = node.run("iptables-save", "-t", "nat").stdout
    assert "CNI-DN-" not in nat and link(pod, "eth0") is None
    assert [n for n in os.listdir(tmp_path / "ipam" / "cbr0") if n[0].isdigit()] == []


def children(pid: int) -> set[int]:
    out = subprocess.run(["pgrep", "-P", str(pid)], capture_output=True, text=True).stdout.split()
    return {int(k) for k in out}


def wait_for(cond, timeout: float = 5.0) -> bool:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if cond():
            return True
        time.sleep(0.05)
    return cond()


def test_children_are_forked_ahead_and_replaced(make_netns, tmp_path, worker_env) -> None:
    env, worker = worker_env()
    assert wait_for(lambda: len(children(worker.pid)) == 4)  # --idle default
    first = children(worker.pid)
    for kid in first:  # idle children killed from outside: the pool is topped up again
        os.kill(kid, signal.SIGKILL)
    assert wait_for(lambda: len(children(worker.pid)) == 4 and not children(worker.pid) & first)
    node, pod = make_netns(), make_netns()
    log = tmp_path / "calls.log"
    out = ours("flannel", "ADD", conf(tmp_path), netns=pod.path, node=node,
               extra_env={**env, "CNI_FLANNEL_LOG": str(log)})
    assert out.ok and served(log) == ["worker"]
    assert wait_for(lambda: len(children(worker.pid)) == 4)  # the one that served was replaced


def test_idle_children_die_with_a_killed_worker(worker_env) -> None:
    env, worker = worker_env()
    assert wait_for(lambda: len(children(worker.pid)) == 4)
    kids = children(worker.pid)
    worker.kill()
    worker.wait()
    assert wait_for(lambda: not any(os.path.exists(f"/proc/{k}") for k in kids))
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    with pytest.raises(ConnectionRefusedError):  # nobody listens any more: clients fall back at once
        s.connect(env["CNI_FLANNEL_WORKER_SOCKET"])
    s.close()


def test_sigterm_stops_idle_children_and_removes_the_socket(worker_env) -> None:
    env, worker = worker_env()
    assert wait_for(lambda: len(children(worker.pid)) == 4)
    kids = children(worker.pid)
    worker.terminate()
    assert worker.wait(10) == 0
    assert not os.path.exists(env["CNI_FLANNEL_WORKER_SOCKET"])
    assert wait_for(lambda: not any(os.path.exists(f"/proc/{k}") for k in kids))
