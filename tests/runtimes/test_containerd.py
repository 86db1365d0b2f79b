"""containerd 1.6 with its CRI plugin (the kubelet's runtime) driving our plugins.

containerd runs inside a node network namespace made here, with its own root, state and
socket under a temp dir; a small CRI client of ours plays the kubelet: RunPodSandbox with a
port mapping, PodSandboxStatus, StopPodSandbox, RemovePodSandbox.
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import time

import pytest
from harness import plugin_dir
from images import CMD, IMAGE, busybox_rootfs_tar, http_get
from kernel import veth_pair

from cni_flannel.tools import topology

pytestmark = pytest.mark.skipif(
    not all(shutil.which(t) for t in ("containerd", "ctr", "podman", "runc")) or not os.path.exists("/bin/busybox"),
    reason="containerd, podman (to build the image), runc and busybox-static are needed (scripts/setup.sh)")

SEED = {"name": "cbr0", "cniVersion": "0.3.1", "plugins": [
    {"type": "flannel", "delegate": {"forceAddress": True, "bridge": "mycni8", "isDefaultGateway": True,
                                     "hairpinMode": True}},
    {"type": "portmap", "capabilities": {"portMappings": True}}]}


def build_image(tmp) -> str:
    """A busybox image as a docker archive (built with podman from busybox-static; no registry)."""
    env = {**os.environ, "CONTAINERS_STORAGE_CONF": str(tmp / "storage.conf")}
    (tmp / "storage.conf").write_text(f'[storage]\ndriver = "vfs"\ngraphroot = "{tmp}/graph"\nrunroot = "{tmp}/prun"\n')
    subprocess.run(["podman", "import", "--change", CMD, busybox_rootfs_tar(tmp), IMAGE], check=True,
                   capture_output=True, env=env)
    archive = str(tmp / "image.tar")
    subprocess.run(["podman", "save", "--format", "docker-archive", "-o", archive, IMAGE], check=True,
                   capture_output=True, env=env)
    return archive


@pytest.fixture
def containerd(tmp_path, make_netns):
    from cri import CRI

    node, outside = make_netns(), make_netns()
    veth_pair(node, "up0", "192.0.2.1/24", outside, "ext0", "192.0.2.2/24")
    env = tmp_path / "subnet.env"
    topology.write_subnet_env(str(env), "10.42.0.0/16", "10.42.1.0/24")
    conf = json.loads(json.dumps(SEED))
    conf["plugins"][0].update(subnetFile=str(env), dataDir=str(tmp_path / "flannel"),
                              ipam={"dataDir": str(tmp_path / "ipam")})
    net_d = tmp_path / "net.d"
    net_d.mkdir()
    (net_d / "10-flannel.conflist").write_text(json.dumps(conf))
    bins = plugin_dir(str(tmp_path))
    sock = str(tmp_path / "containerd.sock")
    cfg = tmp_path / "containerd.toml"
    cfg.write_text(f'''version = 2
root = "{tmp_path}/root"
state = "{tmp_path}/state"
disabled_plugins = ["io.containerd.snapshotter.v1.btrfs", "io.containerd.snapshotter.v1.zfs",
                    "io.containerd.snapshotter.v1.devmapper", "io.containerd.snapshotter.v1.aufs"]
[grpc]
  address = "{sock}"
[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = "{IMAGE}"
  restrict_oom_score_adj = true
  [plugins."io.containerd.grpc.v1.cri".containerd]
    snapshotter = "native"
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = "{bins}"
    conf_dir = "{net_d}"
    max_conf_num = 1
''')
    log = tmp_path / "calls.log"
    proc = subprocess.Popen(["nsenter", f"--net={node.path}", "containerd", "--config", str(cfg)],
                            stdout=subprocess.DEVNULL, stderr=open(tmp_path / "containerd.log", "w"),
                            env={**os.environ, "CNI_FLANNEL_LOG": str(log), "CNI_FLANNEL_WORKER": "off"})
    cri = None
    try:
        for _ in range(100):
            if os.path.exists(sock):
                break
            time.sleep(0.1)
        subprocess.run(["ctr", "-a", sock, "-n", "k8s.io", "images", "import", build_image(tmp_path)], check=True,
                       capture_output=True)
        cri = CRI(sock)
        for _ in range(50):
            try:
                cri.version()
                break
            except Exception:
                time.sleep(0.2)
        yield {"cri": cri, "node": node, "outside": outside, "log": log, "tmp": tmp_path}
    finally:
        if cri is not None:
            for sid in cri.created:  # a failed test must not leave pods, netns or mounts behind
                for step in (cri.stop_pod_sandbox, cri.remove_pod_sandbox):
                    try:
                        step(sid)
                    except Exception:
                        pass
            cri.close()
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
        subprocess.run(["pkill", "-f", f"containerd-shim-runc-v2 .*{tmp_path}"], check=False)
        subprocess.run(["umount", "-R", str(tmp_path / "state")], capture_output=True, check=False)
        subprocess.run(["umount", "-R", str(tmp_path / "root")], capture_output=True, check=False)


def test_containerd_cri_pod_lifecycle(containerd) -> None:
    cri, node = containerd["cri"], containerd["node"]
    netns_before = set(os.listdir("/var/run/netns"))
    sid = cri.run_pod_sandbox("web", "uid-web-1", [{"protocol": "tcp", "container_port": 80, "host_port": 18083}])
    ip = cri.pod_ip(sid)
    assert ip.startswith("10.42.1."), ip
    if not (http_get(node, "127.0.0.1", 18083) and http_get(containerd["outside"], "192.0.2.1", 18083)):
        diag = [node.run(*c, check=False).stdout for c in (("iptables-save", "-c", "-t", "nat"), ("conntrack", "-L"))]
        raise AssertionError("the hostPort did not serve:\n" + "\n".join(diag))
    calls = [json.loads(x) for x in containerd["log"].read_text().splitlines()]
    assert any(c["plugin"] == "loopback" and c["ifname"] == "lo" and c["outcome"] == "ok" for c in calls)
    assert any(c["plugin"] == "portmap" and c["verb"] == "ADD" and c["outcome"] == "ok" for c in calls)
    cri.stop_pod_sandbox(sid)
    cri.remove_pod_sandbox(sid)  # the second DEL, with an empty netns and no prevResult
    calls = [json.loads(x) for x in containerd["log"].read_text().splitlines()]
    dels = [c for c in calls if c["verb"] == "DEL"]
    assert dels and all(c["outcome"] == "ok" for c in dels), dels
    assert sum(1 for c in dels if c["plugin"] == "flannel") >= 2
    tmp = containerd["tmp"]
    assert [n for n in os.listdir(tmp / "ipam" / "cbr0") if n[0].isdigit()] == []
    assert os.listdir(tmp / "flannel") == []
    assert "CNI-DN-" not in node.run("iptables-save", "-t", "nat").stdout
    assert not [lk for lk in json.loads(node.run("ip", "-j", "link").stdout) if lk["ifname"].startswith("veth")]
    assert set(os.listdir("/var/run/netns")) - netns_before == set()  # no netns leaked
