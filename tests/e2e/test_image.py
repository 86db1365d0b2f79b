"""The cni-flannel image (install-cni/Dockerfile), built for real with podman and run.

scripts/build-image.sh makes it: the frozen bundle when dist/cni-flannel is missing (never rebuilt
when present), the base from debootstrap (cached under /var/cache/cni-flannel, imported once), then
`podman build --network=none`. The first build takes a minute or more (debootstrap); later ones reuse
the cache. The cached base and the image are left for later runs; containers are run with --rm and
--network=none (no interface is made in the machine's root namespace).
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from harness import REPO

from cni_flannel.flanneld.daemon import VERSION
from cni_flannel.tools.install import PLUGINS, build_id

pytestmark = pytest.mark.skipif(
    shutil.which("podman") is None or shutil.which("debootstrap") is None or os.geteuid() != 0,
    reason="the image build needs root, podman and debootstrap (scripts/setup.sh installs them)")

IMAGE = "cni-flannel:dev"
DIST = os.path.join(REPO, "dist", "cni-flannel")
# The seed's conflist, as install-cni/kube-flannel.yml's ConfigMap has it (text, written verbatim).
SEED_TEXT = json.dumps({"name": "cbr0", "cniVersion": "0.3.1", "plugins": [
    {"type": "flannel", "delegate": {"forceAddress": True, "bridge": "mycni8", "isDefaultGateway": True}},
    {"type": "portmap", "capabilities": {"portMappings": True}}]}, indent=2) + "\n"
# podman's default RLIMIT_NOFILE/NPROC exceed what some sandboxes allow (runc: "error setting rlimit")
ULIMITS = ("--ulimit", "nofile=4096:4096", "--ulimit", "nproc=4096:4096")


@pytest.fixture(scope="module")
def image() -> str:
    out = subprocess.run([os.path.join(REPO, "scripts", "build-image.sh")], cwd=REPO, capture_output=True,
                         text=True, timeout=1800)
    assert out.returncode == 0, out.stderr[-3000:]
    return IMAGE


def podman_run(image: str, *args: str, volumes: dict[str, str] | None = None,
               env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    cmd = ["podman", "run", "--rm", "--network=none", *ULIMITS]
    for host, inside in (volumes or {}).items():
        cmd += ["-v", f"{host}:{inside}"]
    for k, v in (env or {}).items():
        cmd += ["-e", f"{k}={v}"]
    return subprocess.run([*cmd, image, *args], capture_output=True, text=True, timeout=300)


@pytest.fixture
def host_dirs(tmp_path: Path) -> Iterator[Path]:
    """A node's /opt/cni/bin and /etc/cni/net.d; removed after the test (the bundle copy is large)."""
    (tmp_path / "bin").mkdir()
    (tmp_path / "net.d").mkdir()
    yield tmp_path
    shutil.rmtree(tmp_path / "bin", ignore_errors=True)
    shutil.rmtree(tmp_path / "net.d", ignore_errors=True)


def test_flanneld_version_runs_in_the_image(image: str) -> None:
    out = podman_run(image, "/opt/bin/flanneld", "--version")
    assert out.returncode == 0, out.stderr
    assert out.stderr.strip() == VERSION  # on stderr, as the reference's flanneld prints it
    link = podman_run(image, "readlink", "/opt/bin/flanneld")
    assert link.stdout.strip() == "/opt/cni-flannel/cni-flannel"  # the bundle's one executable


def test_install_cni_entry_point_installs_into_host_directories(image: str, host_dirs: Path) -> None:
    bin_dir, net_d = host_dirs / "bin", host_dirs / "net.d"
    (net_d / "10-flannel.conf").write_text("{}")  # the seed's old name is removed
    out = podman_run(image, "--mode", "init",
                     volumes={str(bin_dir): "/host/opt/cni/bin", str(net_d): "/host/etc/cni/net.d"},
                     env={"CNI_NETWORK_CONFIG": SEED_TEXT})
    assert out.returncode == 0, out.stderr
    assert "wrote /host/etc/cni/net.d/10-flannel.conflist" in out.stderr
    # the image's bundle is dist/cni-flannel, installed under its build id
    bundle = f".cni-flannel-{build_id(DIST)}"
    assert sorted(os.listdir(bin_dir)) == sorted([bundle, *PLUGINS, "cnitool"])
    for name in PLUGINS:
        assert os.readlink(bin_dir / name) == f"{bundle}/cni-flannel"  # relative: resolves on the host
    conflist = net_d / "10-flannel.conflist"
    assert conflist.read_text() == SEED_TEXT
    assert oct(conflist.stat().st_mode & 0o777) == "0o644"
    assert os.listdir(net_d) == ["10-flannel.conflist"]
    # the installed plugins run on the host, outside the container
    env = {k: v for k, v in os.environ.items() if not k.startswith("CNI_")}
    for name in PLUGINS:
        v = subprocess.run([str(bin_dir / name)], input=b'{"cniVersion":"0.3.1"}', capture_output=True,
                           env={**env, "CNI_COMMAND": "VERSION"}, timeout=60)
        assert v.returncode == 0, (name, v.stderr)
        assert json.loads(v.stdout)["cniVersion"] == "0.3.1", name
        assert "0.3.1" in json.loads(v.stdout)["supportedVersions"], name


def test_install_cni_refuses_a_bad_conflist_and_touches_nothing(image: str, host_dirs: Path) -> None:
    bin_dir, net_d = host_dirs / "bin", host_dirs / "net.d"
    out = podman_run(image, volumes={str(bin_dir): "/host/opt/cni/bin", str(net_d): "/host/etc/cni/net.d"},
                     env={"CNI_NETWORK_CONFIG": "{not json"})
    assert out.returncode == 1 and "not valid JSON" in out.stderr
    assert os.listdir(bin_dir) == [] and os.listdir(net_d) == []


def test_operator_tools_run_in_the_image(image: str) -> None:
    ipt = podman_run(image, "iptables", "--version")
    assert ipt.returncode == 0 and ipt.stdout.startswith("iptables v1.8"), ipt.stderr
    for cmd in (["iptables-restore", "--version"], ["ip6tables", "--version"], ["nft", "--version"],
                ["ip", "-V"]):
        out = podman_run(image, *cmd)
        assert out.returncode == 0, (cmd, out.stderr)
    assert podman_run(image, "nft", "--version").stdout.startswith("nftables v1.0")
