"""The flanneld manifests validate against the Kubernetes 1.33 schemas and run our flanneld."""
from __future__ import annotations

import json
import os
import shlex

import pytest
from harness import REPO, our_program

from cni_flannel.flanneld import cli


def load(name: str) -> list[dict]:
    yaml = pytest.importorskip("yaml")
    with open(os.path.join(REPO, "install-cni", name)) as f:
        return list(yaml.safe_load_all(f))


def test_etcd_manifest_validates_and_its_flags_parse() -> None:
    kv = pytest.importorskip("kubernetes_validate")
    docs = load("kube-flannel-etcd.yml")
    assert [d["kind"] for d in docs] == ["Namespace", "ServiceAccount", "ConfigMap", "DaemonSet"]
    for d in docs:
        kv.validate(d, "1.33", strict=True)
    assert docs[1]["automountServiceAccountToken"] is False  # etcd mode needs no API access: no RBAC
    pod = docs[3]["spec"]["template"]["spec"]
    flanneld = next(c for c in pod["containers"] if c["name"] == "kube-flannel")
    assert flanneld["command"] == ["/opt/bin/flanneld"]
    opts = cli.parse_args(flanneld["args"], {})  # every flag in the manifest is one flanneld accepts
    assert opts.ip_masq and not opts.kube_subnet_mgr and len(opts.etcd_endpoints) == 3
    assert opts.etcd_cafile and opts.etcd_certfile and opts.etcd_keyfile
    assert flanneld["securityContext"]["capabilities"]["add"] == ["NET_ADMIN", "NET_RAW"]
    assert {m["mountPath"] for m in flanneld["volumeMounts"]} == {"/run/flannel", "/etc/flannel-etcd",
                                                                  "/run/xtables.lock"}
    assert flanneld["readinessProbe"]["httpGet"]["path"] == "/readyz"
    cni = json.loads(docs[2]["data"]["cni-conf.json"])
    assert cni["plugins"][0]["type"] == "flannel"


def test_flanneld_binary_reports_its_version() -> None:
    import subprocess

    out = subprocess.run(our_program("flanneld", "--version"), capture_output=True, text=True, timeout=60,
                         env={**os.environ, "PYTHONPATH": REPO})
    assert out.returncode == 0, shlex.join(our_program("flanneld")) + out.stderr
    assert out.stderr.strip().startswith("v")
