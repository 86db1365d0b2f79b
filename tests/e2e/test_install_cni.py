"""install-cni: atomic installs under concurrent execs, bad input, sidecar mode, and the manifest."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time

import pytest
from harness import REPO, our_bin_dir, plugin_dir

SEED = {"name": "cbr0", "cniVersion": "0.3.1", "plugins": [
    {"type": "flannel", "delegate": {"forceAddress": True, "bridge": "mycni8", "isDefaultGateway": True}},
    {"type": "portmap", "capabilities": {"portMappings": True}}]}


def bundle(tmp_path) -> str:
    """The frozen bundle when built (CNI_FLANNEL_BIN), else a launcher bundle of the source tree."""
    d = tmp_path / "bundle"
    if d.exists():
        return str(d)
    if our_bin_dir():  # a private copy: tests change it
        import shutil

        shutil.copytree(os.path.dirname(os.path.realpath(os.path.join(our_bin_dir(), "flannel"))), d, symlinks=True)
        return str(d)
    d.mkdir()
    src = plugin_dir(str(tmp_path))
    (d / "cni-flannel").write_text(open(os.path.join(src, "cni-flannel")).read())
    (d / "cni-flannel").chmod(0o755)
    return str(d)


def run_install(tmp_path, *args: str, env: dict | None = None, conf: object = SEED) -> subprocess.CompletedProcess:
    e = {k: v for k, v in os.environ.items() if not k.startswith("CNI_")}
    e["PYTHONPATH"] = REPO
    if conf is not None:
        e["CNI_NETWORK_CONFIG"] = conf if isinstance(conf, str) else json.dumps(conf)
    e.update(env or {})
    cmd = [sys.executable, "-m", "cni_flannel", "install-cni", "--source", bundle(tmp_path),
           "--bin-dir", str(tmp_path / "root/opt/cni/bin"), "--conf-dir", str(tmp_path / "root/etc/cni/net.d"), *args]
    return subprocess.run(cmd, capture_output=True, text=True, env=e, timeout=120)


def test_init_installs_plugins_and_conflist(tmp_path) -> None:
    net_d = tmp_path / "root/etc/cni/net.d"
    net_d.mkdir(parents=True)
    (net_d / "10-flannel.conf").write_text("{}")
    out = run_install(tmp_path)
    assert out.returncode == 0, out.stderr
    bin_dir = tmp_path / "root/opt/cni/bin"
    for name in ("flannel", "bridge", "host-local", "portmap", "loopback"):
        v = subprocess.run([str(bin_dir / name)], input=b'{"cniVersion":"0.3.1"}', capture_output=True,
                           env={**os.environ, "CNI_COMMAND": "VERSION", "PYTHONPATH": REPO})
        assert json.loads(v.stdout)["cniVersion"] == "0.3.1", (name, v.stderr)
    assert json.loads((net_d / "10-flannel.conflist").read_text()) == SEED
    assert not (net_d / "10-flannel.conf").exists()
    assert oct((net_d / "10-flannel.conflist").stat().st_mode & 0o777) == "0o644"


def test_copied_set_still_works_elsewhere(tmp_path) -> None:
    assert run_install(tmp_path).returncode == 0
    import shutil

    shutil.copytree(tmp_path / "root/opt/cni/bin", tmp_path / "elsewhere", symlinks=True)
    v = subprocess.run([str(tmp_path / "elsewhere" / "portmap")], input=b"{}", capture_output=True,
                       env={**os.environ, "CNI_COMMAND": "VERSION", "PYTHONPATH": REPO})
    assert v.returncode == 0 and b"supportedVersions" in v.stdout


def test_reinstall_while_exec_never_sees_a_broken_binary(tmp_path) -> None:
    assert run_install(tmp_path).returncode == 0
    flannel = str(tmp_path / "root/opt/cni/bin/flannel")
    failures: list[str] = []
    stop = threading.Event()

    def hammer() -> None:
        env = {**os.environ, "CNI_COMMAND": "VERSION", "PYTHONPATH": REPO}
        while not stop.is_set():
            try:
                p = subprocess.run([flannel], input=b"{}", capture_output=True, env=env, timeout=30)
            except OSError as exc:
                failures.append(repr(exc))
                continue
            if p.returncode != 0 or b"supportedVersions" not in p.stdout:
                failures.append(p.stderr.decode()[:200])

    threads = [threading.Thread(target=hammer) for _ in range(3)]
    for t in threads:
        t.start()
    try:
        for i in range(8):
            # a changing bundle each round forces a real swap of the links
            with open(os.path.join(bundle(tmp_path), f"round-{i}"), "w") as f:
                f.write("x" * i)
            assert run_install(tmp_path).returncode == 0
    finally:
        stop.set()
        for t in threads:
            t.join()
    assert failures == []
    bundles = [n for n in os.listdir(tmp_path / "root/opt/cni/bin") if n.startswith(".cni-flannel-")]
    assert len(bundles) == 9  # the first and 8 rounds: superseded bundles are kept for the grace period
    assert run_install(tmp_path, "--grace", "0").returncode == 0
    bundles = [n for n in os.listdir(tmp_path / "root/opt/cni/bin") if n.startswith(".cni-flannel-")]
    assert len(bundles) == 1  # ... and removed after it


@pytest.mark.parametrize("conf,text", [
    ("{not json", "not valid JSON"),
    (dict(SEED, plugins=[{"type": "macvlan"}]), "not shipped by cni-flannel"),
    (dict(SEED, plugins=[{"type": "flannel", "subnetFile": "relative/subnet.env"}]), "subnetFile"),
    (dict(SEED, plugins=[{"type": "portmap", "backend": "ebpf"}]), "backend"),
])
def test_bad_config_changes_nothing(tmp_path, conf, text) -> None:
    net_d = tmp_path / "root/etc/cni/net.d"
    net_d.mkdir(parents=True)
    (net_d / "10-flannel.conflist").write_text("previous")
    out = run_install(tmp_path, conf=conf)
    assert out.returncode == 1 and text in out.stderr
    assert (net_d / "10-flannel.conflist").read_text() == "previous"
    assert not (tmp_path / "root/opt/cni/bin").exists()


def test_sidecar_reinstalls_on_change_and_stops_on_sigterm(tmp_path) -> None:
    cfg = tmp_path / "cni-conf.json"
    cfg.write_text(json.dumps(SEED))
    e = {k: v for k, v in os.environ.items() if not k.startswith("CNI_")}
    e["PYTHONPATH"] = REPO
    proc = subprocess.Popen([sys.executable, "-m", "cni_flannel", "install-cni", "--mode", "sidecar",
                             "--interval", "0.2", "--config-file", str(cfg), "--source", bundle(tmp_path),
                             "--bin-dir", str(tmp_path / "bin"), "--conf-dir", str(tmp_path / "net.d")],
                            env=e, stderr=subprocess.PIPE, text=True)
    try:
        dest = tmp_path / "net.d" / "10-flannel.conflist"
        deadline = time.time() + 20
        while not dest.exists() and time.time() < deadline:
            time.sleep(0.1)
        changed = dict(SEED, cniVersion="1.0.0")
        cfg.write_text(json.dumps(changed))
        while json.loads(dest.read_text()).get("cniVersion") != "1.0.0" and time.time() < deadline:
            time.sleep(0.1)
        assert json.loads(dest.read_text())["cniVersion"] == "1.0.0"
        cfg.write_text("{broken")
        time.sleep(0.6)
        assert json.loads(dest.read_text())["cniVersion"] == "1.0.0"  # a bad update is refused
    finally:
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=20)
    assert proc.returncode == 0 and "stopping" in err


def test_manifest_validates_against_kubernetes_schemas() -> None:
    kv = pytest.importorskip("kubernetes_validate")
    yaml = pytest.importorskip("yaml")
    text = open(os.path.join(REPO, "install-cni", "kube-flannel.yml")).read()
    docs = list(yaml.safe_load_all(text))
    kinds = [d["kind"] for d in docs]
    assert kinds == ["Namespace", "ServiceAccount", "ClusterRole", "ClusterRoleBinding", "ConfigMap", "DaemonSet"]
    for d in docs:
        kv.validate(d, "1.33", strict=True)
    # RBAC: the seed's rules plus `nodes get` (reference §6.6), each rule justified by a comment
    rules = docs[2]["rules"]
    assert rules == [{"apiGroups": [""], "resources": ["pods"], "verbs": ["get"]},
                     {"apiGroups": [""], "resources": ["nodes"], "verbs": ["get"]},
                     {"apiGroups": [""], "resources": ["nodes"], "verbs": ["list", "watch"]},
                     {"apiGroups": [""], "resources": ["nodes/status"], "verbs": ["patch"]}]
    from kubeapi.auth import FLANNEL_RULES  # the tests' API server enforces the same ClusterRole

    assert {(v, r) for rule in rules for r in rule["resources"] for v in rule["verbs"]} == FLANNEL_RULES
    rbac_text = text[text.index("rules:"):text.index("kind: ClusterRoleBinding")]
    assert rbac_text.count("\n  # ") >= len(rules)
    assert docs[3]["roleRef"]["name"] == docs[2]["metadata"]["name"]
    assert docs[3]["subjects"] == [{"kind": "ServiceAccount", "name": "flannel", "namespace": "kube-flannel"}]
    cm = docs[4]["data"]
    cni = json.loads(cm["cni-conf.json"])
    assert cni["plugins"][0]["delegate"] == {"forceAddress": True, "bridge": "mycni8", "isDefaultGateway": True}
    assert cni["plugins"][1] == {"type": "portmap", "capabilities": {"portMappings": True}}
    net = json.loads(cm["net-conf.json"])
    assert net == {"Network": "10.42.0.0/16", "Backend": {"Type": "vxlan", "DirectRouting": True}}
    ds = docs[5]
    assert ds["apiVersion"] == "apps/v1" and ds["spec"]["selector"]["matchLabels"] == {"app": "flannel"}
    pod = ds["spec"]["template"]["spec"]
    assert pod["hostNetwork"] is True and pod["serviceAccountName"] == "flannel"
    containers = {c["name"]: c for c in pod["containers"]}
    assert list(containers) == ["kube-flannel", "install-cni"]
    volumes = {v["name"]: v for v in pod["volumes"]}
    # flanneld: our image, our flanneld in kube mode, probes, capabilities (not privileged), env, mounts
    kf = containers["kube-flannel"]
    assert kf["image"] == containers["install-cni"]["image"] == "cni-flannel:dev"  # one image for both
    assert kf["command"] == ["/opt/bin/flanneld"]
    assert kf["args"] == ["--ip-masq", "--kube-subnet-mgr", "--healthz-port=8081"]
    assert "# - --iface=ens3" in text  # the seed's interface pin, as a commented example
    assert kf["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": 8081}
    assert kf["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": 8081}
    assert kf["securityContext"] == {"privileged": False, "capabilities": {"add": ["NET_ADMIN", "NET_RAW"]}}
    assert kf["env"] == [
        {"name": "POD_NAME", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
        {"name": "POD_NAMESPACE", "valueFrom": {"fieldRef": {"fieldPath": "metadata.namespace"}}},
        {"name": "NODE_NAME", "valueFrom": {"fieldRef": {"fieldPath": "spec.nodeName"}}}]
    mounts = {m["mountPath"]: volumes[m["name"]] for m in kf["volumeMounts"]}
    assert mounts == {"/run/flannel": {"name": "run", "hostPath": {"path": "/run/flannel"}},
                      "/etc/kube-flannel/": {"name": "flannel-cfg", "configMap": {"name": "kube-flannel-cfg"}},
                      "/run/xtables.lock": {"name": "xtables-lock",
                                            "hostPath": {"path": "/run/xtables.lock", "type": "FileOrCreate"}}}
    # install-cni: the image's entry point, as a sidecar over the host's CNI directories
    ic = containers["install-cni"]
    assert ic["command"] == ["/install-cni.sh"]
    assert ic["args"][:4] == ["--mode", "sidecar", "--config-file", "/etc/kube-flannel/cni-conf.json"]
    ic_mounts = {m["mountPath"]: volumes[m["name"]] for m in ic["volumeMounts"]}
    assert ic_mounts["/host/opt/cni/bin"]["hostPath"]["path"] == "/opt/cni/bin"
    assert ic_mounts["/host/etc/cni/net.d"]["hostPath"]["path"] == "/etc/cni/net.d"


def test_sidecar_runs_the_worker_and_stops_it(tmp_path) -> None:
    cfg = tmp_path / "cni-conf.json"
    cfg.write_text(json.dumps(SEED))
    sock = tmp_path / "run" / "worker.sock"
    e = {k: v for k, v in os.environ.items() if not k.startswith("CNI_")}
    e["PYTHONPATH"] = REPO
    proc = subprocess.Popen([sys.executable, "-m", "cni_flannel", "install-cni", "--mode", "sidecar", "--worker",
                             "--worker-socket", str(sock), "--interval", "0.2", "--config-file", str(cfg),
                             "--source", bundle(tmp_path), "--bin-dir", str(tmp_path / "bin"),
                             "--conf-dir", str(tmp_path / "net.d")], env=e, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.time() + 30
        while not sock.exists() and time.time() < deadline:
            time.sleep(0.1)
        assert sock.exists()
    finally:
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=30)
    assert proc.returncode == 0 and "started the warm worker" in err
    assert not sock.exists()  # the worker removed its socket on SIGTERM
