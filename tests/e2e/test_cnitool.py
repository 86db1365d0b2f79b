"""cnitool: the seed conflist end to end, the cache, and the exact request configs (libcni semantics)."""
from __future__ import annotations

import base64
import hashlib
import json
import os
import stat

from harness import cnitool, plugin_dir
from kernel import iptables_nat, link, ping

from cni_flannel.tools import topology

SEED = {"name": "cbr0", "cniVersion": "1.0.0", "plugins": [
    {"type": "flannel", "delegate": {"forceAddress": True, "bridge": "mycni8", "isDefaultGateway": True}},
    {"type": "portmap", "capabilities": {"portMappings": True}}]}


def setup(tmp_path, conf: dict) -> tuple[str, str, str]:
    conf_dir = tmp_path / "net.d"
    conf_dir.mkdir()
    (conf_dir / "10-flannel.conflist").write_text(json.dumps(conf))
    return str(conf_dir), plugin_dir(str(tmp_path)), str(tmp_path / "cache")


def seed(tmp_path) -> dict:
    c = json.loads(json.dumps(SEED))
    env = tmp_path / "subnet.env"
    topology.write_subnet_env(str(env), "10.42.0.0/16", "10.42.1.0/24")
    c["plugins"][0].update(subnetFile=str(env), dataDir=str(tmp_path / "flannel"),
                           ipam={"dataDir": str(tmp_path / "ipam")})
    return c


def test_seed_conflist_add_check_del(make_netns, tmp_path) -> None:
    node, pod = make_netns(), make_netns()
    conf_dir, bin_dir, cache = setup(tmp_path, seed(tmp_path))
    caps = {"CAP_ARGS": json.dumps({"portMappings": [{"hostPort": 8080, "containerPort": 80, "protocol": "tcp"}]})}
    kw = dict(conf_dir=conf_dir, bin_dir=bin_dir, cache_dir=cache, node=node, env=caps)
    add = cnitool("add", "cbr0", pod.path, **kw)
    assert add.returncode == 0, add.stderr
    res = json.loads(add.stdout)
    assert res["ips"][0]["address"] == "10.42.1.2/24" and ping(pod, "10.42.1.1")
    assert any("CNI-DN-" in r for r in iptables_nat(node))
    cid = "cnitool-" + hashlib.sha512(pod.path.encode()).hexdigest()[:20]
    cache_file = os.path.join(cache, "results", f"cbr0-{cid}-eth0")
    entry = json.loads(open(cache_file).read())
    assert entry["kind"] == "cniCacheV1" and entry["containerId"] == cid and entry["networkName"] == "cbr0"
    assert json.loads(base64.b64decode(entry["config"]))["name"] == "cbr0"
    assert entry["result"] == res and entry["capabilityArgs"]["portMappings"][0]["hostPort"] == 8080
    assert stat.S_IMODE(os.stat(cache_file).st_mode) == 0o600
    check = cnitool("check", "cbr0", pod.path, **kw)
    assert check.returncode == 0, check.stderr
    for _ in range(2):
        d = cnitool("del", "cbr0", pod.path, **kw)
        assert d.returncode == 0, d.stderr
    assert not os.path.exists(cache_file) and link(pod, "eth0") is None
    assert not any("CNI-DN-" in r for r in iptables_nat(node))
    assert os.listdir(tmp_path / "flannel") == []


def test_check_refused_below_0_4_0(tmp_path) -> None:
    c = seed(tmp_path)
    c["cniVersion"] = "0.3.1"
    conf_dir, bin_dir, cache = setup(tmp_path, c)
    out = cnitool("check", "cbr0", "/run/netns/none", conf_dir=conf_dir, bin_dir=bin_dir, cache_dir=cache)
    assert out.returncode == 1 and "does not support the CHECK command" in out.stderr


RECORDER = """#!/bin/sh
n=$(ls "$REC_DIR" | wc -l)
cat > "$REC_DIR/$n-$CNI_COMMAND-$(basename $0).json"
env | grep '^CNI_' | sort > "$REC_DIR/$n-$CNI_COMMAND-$(basename $0).env"
if [ "$CNI_COMMAND" = ADD ]; then
  printf '{"cniVersion":"1.1.0","ips":[{"address":"10.9.0.%s/24"}]}' "$(basename $0 | tr -dc 0-9)"
fi
"""


def test_request_configs_match_libcni(tmp_path) -> None:
    rec = tmp_path / "rec"
    rec.mkdir()
    bin_dir = tmp_path / "stubs"
    bin_dir.mkdir()
    for name in ("stub1", "stub2"):
        (bin_dir / name).write_text(RECORDER)
        (bin_dir / name).chmod(0o755)
    own = plugin_dir(str(tmp_path))
    os.symlink(os.path.join(own, "cnitool"), bin_dir / "cnitool")
    os.symlink(os.path.join(own, "cni-flannel"), bin_dir / "cni-flannel")
    conf = {"name": "rec", "cniVersion": "1.1.0", "cniVersions": ["0.4.0", "9.0.0"], "plugins": [
        {"type": "stub1", "capabilities": {"portMappings": True}, "extra": 1},
        {"type": "stub2", "capabilities": {"mac": True, "bandwidth": False}}]}
    conf_dir = tmp_path / "net.d"
    conf_dir.mkdir()
    (conf_dir / "a.conflist").write_text(json.dumps(conf))
    env = {"REC_DIR": str(rec), "CAP_ARGS": json.dumps({"portMappings": [1], "mac": "aa", "bandwidth": {}}),
           "CNI_ARGS": "K8S_POD_NAME=x"}
    kw = dict(conf_dir=str(conf_dir), bin_dir=str(bin_dir), cache_dir=str(tmp_path / "cache"), env=env)
    assert cnitool("add", "rec", "/run/netns/fake", **kw).returncode == 0
    assert cnitool("del", "rec", "/run/netns/fake", **kw).returncode == 0
    files = sorted(os.listdir(rec), key=lambda n: int(n.split("-")[0]))
    configs = [(f.split("-", 1)[1], json.loads((rec / f).read_text())) for f in files if f.endswith(".json")]
    names = [n for n, _ in configs]
    assert names == ["ADD-stub1.json", "ADD-stub2.json", "DEL-stub2.json", "DEL-stub1.json"]
    add1, add2, del2, del1 = (c for _, c in configs)
    assert add1 == {"type": "stub1", "capabilities": {"portMappings": True}, "extra": 1, "name": "rec",
                    "cniVersion": "1.1.0", "runtimeConfig": {"portMappings": [1]}}
    prev1 = {"cniVersion": "1.1.0", "ips": [{"address": "10.9.0.1/24"}], "dns": {}}
    assert add2 == {"type": "stub2", "capabilities": {"mac": True, "bandwidth": False}, "name": "rec",
                    "cniVersion": "1.1.0", "runtimeConfig": {"mac": "aa"}, "prevResult": prev1}
    final = {"cniVersion": "1.1.0", "ips": [{"address": "10.9.0.2/24"}], "dns": {}}
    assert del2["prevResult"] == final and del1["prevResult"] == final
    env_add = (rec / files[1]).read_text()
    assert "CNI_ARGS=K8S_POD_NAME=x" in env_add and "CNI_IFNAME=eth0" in env_add
    assert "CNI_CONTAINERID=cnitool-" in env_add and "CNI_NETNS=/run/netns/fake" in env_add
