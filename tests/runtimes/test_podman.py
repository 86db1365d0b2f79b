"""podman 4.3 (CNI backend) driving our plugins: the seed conflist and bridge + host-local + portmap.

podman runs inside a node network namespace made here (nsenter --net, so that the cgroup
mounts stay visible), with its own storage, run root and config under a temp dir, and a
busybox image built from Debian's busybox-static (no registry).
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess

import pytest
from harness import plugin_dir
from images import CMD, IMAGE, busybox_rootfs_tar, http_get
from kernel import veth_pair

from cni_flannel.tools import topology

pytestmark = pytest.mark.skipif(shutil.which("podman") is None or not os.path.exists("/bin/busybox"),
                                reason="podman and busybox-static are not installed (scripts/setup.sh installs them)")

SEED = {"name": "cbr0", "cniVersion": "0.3.1", "plugins": [
    {"type": "flannel", "delegate": {"forceAddress": True, "bridge": "mycni8", "isDefaultGateway": True,
                                     "hairpinMode": True}},
    {"type": "portmap", "capabilities": {"portMappings": True}}]}


class Podman:
    def __init__(self, root: str, bin_dir: str, node: str) -> None:
        self.root, self.node = root, node
        os.makedirs(f"{root}/net.d", exist_ok=True)
        with open(f"{root}/containers.conf", "w") as f:
            f.write(f'[containers]\ndefault_ulimits = ["nofile=4096:4096", "nproc=4096:4096"]\n'
                    f'[network]\nnetwork_backend = "cni"\ncni_plugin_dirs = ["{bin_dir}"]\n'
                    f'network_config_dir = "{root}/net.d"\n'
                    f'[engine]\ncgroup_manager = "cgroupfs"\nevents_logger = "file"\nruntime = "runc"\n'
                    f'tmp_dir = "{root}/tmp"\n')
        with open(f"{root}/storage.conf", "w") as f:
            f.write(f'[storage]\ndriver = "vfs"\ngraphroot = "{root}/graph"\nrunroot = "{root}/run"\n')
        self.env = {**os.environ, "CONTAINERS_CONF": f"{root}/containers.conf",
                    "CONTAINERS_STORAGE_CONF": f"{root}/storage.conf"}

    def __call__(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        out = subprocess.run(["nsenter", f"--net=/run/netns/{self.node}", "podman", *args], capture_output=True,
                             text=True, env=self.env, timeout=120)
        if check and out.returncode != 0:
            raise AssertionError(f"podman {' '.join(args)}: {out.stderr[-800:]}")
        return out

    def net(self, name: str, field: str = "IPAddress") -> str:
        data = json.loads(self("inspect", name, "--format", "{{json .NetworkSettings.Networks}}").stdout)
        return next(iter(data.values()))[field]


@pytest.fixture
def podman(tmp_path, make_netns):
    node, outside = make_netns(), make_netns()
    veth_pair(node, "up0", "192.0.2.1/24", outside, "ext0", "192.0.2.2/24")
    env = tmp_path / "subnet.env"
    topology.write_subnet_env(str(env), "10.42.0.0/16", "10.42.1.0/24")
    pm = Podman(str(tmp_path / "podman"), plugin_dir(str(tmp_path)), node.name)
    pm("import", "--change", CMD, busybox_rootfs_tar(tmp_path), IMAGE)
    pm.node_ns, pm.outside, pm.subnet_env, pm.tmp = node, outside, env, tmp_path
    yield pm
    pm("rm", "-a", "-f", "-t", "0", check=False)


def seed(pm, conf=SEED) -> None:
    c = json.loads(json.dumps(conf))
    if c["plugins"][0]["type"] == "flannel":
        c["plugins"][0].update(subnetFile=str(pm.subnet_env), dataDir=str(pm.tmp / "flannel"),
                               ipam={"dataDir": str(pm.tmp / "ipam")})
    with open(f"{pm.root}/net.d/{c['name']}.conflist", "w") as f:
        json.dump(c, f)


def residue(pm, ipam_dir) -> list[str]:
    left = []
    links = json.loads(pm.node_ns.run("ip", "-j", "link").stdout)
    left += [lk["ifname"] for lk in links if lk["ifname"].startswith("veth")]
    if os.path.isdir(ipam_dir):
        left += [n for n in os.listdir(ipam_dir) if n[0].isdigit()]
    fl = pm.tmp / "flannel"
    if fl.is_dir():
        left += os.listdir(fl)
    left += [x for x in pm.node_ns.run("iptables-save", "-t", "nat").stdout.splitlines() if "CNI-DN-" in x]
    return left


def test_podman_with_the_seed_conflist(podman) -> None:
    pm = podman
    seed(pm)
    pm("run", "-d", "--name", "web", "--network", "cbr0", "-p", "18080:80", IMAGE)
    pm("run", "-d", "--name", "other", "--network", "cbr0", IMAGE)
    ip, other = pm.net("web"), pm.net("other")
    assert ip.startswith("10.42.1.") and other.startswith("10.42.1.") and ip != other
    assert pm("exec", "web", "ping", "-c1", "-W2", "10.42.1.1", check=False).returncode == 0
    assert pm("exec", "web", "ping", "-c1", "-W2", other, check=False).returncode == 0
    assert http_get(pm.node_ns, "127.0.0.1", 18080)
    assert http_get(pm.outside, "192.0.2.1", 18080)
    hairpin = pm("exec", "web", "sh", "-c", "printf 'GET /index.html HTTP/1.0\\r\\n\\r\\n' | nc 192.0.2.1 18080",
                 check=False)
    assert "hello-from-pod" in hairpin.stdout
    mac = pm.net("web", "MacAddress")
    pm("stop", "-t", "0", "web")
    pm("start", "web")
    assert pm.net("web").startswith("10.42.1.") and http_get(pm.node_ns, "127.0.0.1", 18080)
    ip, mac = pm.net("web"), pm.net("web", "MacAddress")
    pm("network", "reload", "web")
    assert pm.net("web") == ip and pm.net("web", "MacAddress") == mac  # IP= and MAC= honoured
    pm("run", "-d", "--name", "fixed", "--network", "cbr0", "--ip", "10.42.1.77", "--mac-address",
       "0a:58:0a:2a:01:4d", IMAGE)
    assert pm.net("fixed") == "10.42.1.77" and pm.net("fixed", "MacAddress") == "0a:58:0a:2a:01:4d"
    pm("rm", "-f", "-t", "0", "web", "other", "fixed")
    assert residue(pm, pm.tmp / "ipam" / "cbr0") == []


def test_podman_with_bridge_host_local_portmap(podman) -> None:
    pm = podman
    conf = {"name": "plain", "cniVersion": "1.0.0", "plugins": [
        {"type": "bridge", "bridge": "plainbr0", "isGateway": True, "ipMasq": True, "hairpinMode": True,
         "ipam": {"type": "host-local", "ranges": [[{"subnet": "10.88.0.0/24"}]],
                  "routes": [{"dst": "0.0.0.0/0"}], "dataDir": str(pm.tmp / "ipam2")}},
        {"type": "portmap", "capabilities": {"portMappings": True}}]}
    seed(pm, conf)
    pm("run", "-d", "--name", "p1", "--network", "plain", "-p", "18081:80", IMAGE)
    assert pm.net("p1").startswith("10.88.0.")
    assert http_get(pm.node_ns, "127.0.0.1", 18081) and http_get(pm.outside, "192.0.2.1", 18081)
    pm("rm", "-f", "-t", "0", "p1")
    assert residue(pm, pm.tmp / "ipam2" / "plain") == []
    assert not any("CNI-" in x and "HOSTPORT" not in x for x in
                   pm.node_ns.run("iptables-save", "-t", "nat").stdout.splitlines() if x.startswith("-A"))
