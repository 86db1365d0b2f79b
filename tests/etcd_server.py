"""A real etcd (Debian's etcd-server 3.4) inside a lab host's namespace, for flanneld tests.

    proc = start_etcd(lab, host)                        # http://<host.ip>:2379 and 127.0.0.1:2379 there
    proc = start_etcd(lab, host, tls=True)              # https, client certs required (proc.ca/.cert/.key)
    proc = start_etcd(lab, host, auth=("root", "pw"))   # username/password auth enabled
    proc.put("/k", "v"); proc.get("/k"); proc.put_ttl("/k", "v", 30); proc.ctl("lease", "list")
    proc.stop(); proc.start()                           # the same data dir: the "etcd down" fault

It is spawned with ``lab.spawn`` so the lab kills it even when a test fails; its data, certs and
log (``etcd.log``) live under ``host.dir``. The packaged service is never started.
"""
from __future__ import annotations

import base64
import json
import os
import signal
import ssl
import subprocess
import time
import urllib.request
from dataclasses import dataclass, field
from typing import Any

from flanneld_lab import Host, Lab

from cni_flannel.net.netns import entered

ETCD = "/usr/bin/etcd"
ETCDCTL = "/usr/bin/etcdctl"


def _openssl(*args: str, cwd: str) -> None:
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True, timeout=60)


def make_certs(host: Host) -> tuple[str, str, str, str, str]:
    """A CA, a server cert for host.ip and 127.0.0.1, and a client cert: (ca, srv, srv_key, cli, cli_key)."""
    d = os.path.join(host.dir, "pki")
    os.makedirs(d, exist_ok=True)
    ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]
    _openssl("req", "-x509", *ec, "-keyout", "ca.key", "-out", "ca.crt", "-subj", "/CN=lab-etcd-ca", "-days", "2",
             cwd=d)
    exts = {
        "server": f"subjectAltName=IP:{host.ip},IP:127.0.0.1\nextendedKeyUsage=serverAuth,clientAuth\n",
        "client": "extendedKeyUsage=clientAuth\n",
    }
    for name, ext in exts.items():
        with open(os.path.join(d, f"{name}.ext"), "w") as f:
            f.write(ext)
        _openssl("req", *ec, "-keyout", f"{name}.key", "-out", f"{name}.csr", "-subj", f"/CN={name}", cwd=d)
        _openssl("x509", "-req", "-in", f"{name}.csr", "-CA", "ca.crt", "-CAkey", "ca.key", "-CAcreateserial",
                 "-out", f"{name}.crt", "-days", "2", "-extfile", f"{name}.ext", cwd=d)
    p = lambda n: os.path.join(d, n)  # noqa: E731
    return p("ca.crt"), p("server.crt"), p("server.key"), p("client.crt"), p("client.key")


@dataclass
class EtcdProc:
    lab: Lab
    host: Host
    tls: bool = False
    auth: tuple[str, str] | None = None
    client_cert_auth: bool = True
    ca: str = ""
    cert: str = ""
    key: str = ""
    server_cert: str = ""
    server_key: str = ""
    proc: subprocess.Popen | None = None
    data_dir: str = field(init=False)

    def __post_init__(self) -> None:
        self.data_dir = os.path.join(self.host.dir, "etcd-data")

    @property
    def scheme(self) -> str:
        return "https" if self.tls else "http"

    @property
    def endpoint(self) -> str:
        return f"{self.scheme}://{self.host.ip}:2379"

    @property
    def local_endpoint(self) -> str:
        return f"{self.scheme}://127.0.0.1:2379"

    # --- process -------------------------------------------------------------------------------
    def argv(self) -> list[str]:
        argv = [ETCD, "--name", self.host.name, "--data-dir", self.data_dir, "--logger", "zap",
                "--listen-client-urls", f"{self.endpoint},{self.local_endpoint}",
                "--advertise-client-urls", self.endpoint,
                "--listen-peer-urls", "http://127.0.0.1:2380",
                "--initial-advertise-peer-urls", "http://127.0.0.1:2380",
                "--initial-cluster", f"{self.host.name}=http://127.0.0.1:2380"]
        if self.tls:
            argv += ["--cert-file", self.server_cert, "--key-file", self.server_key]
            if self.client_cert_auth:  # (a --trusted-ca-file alone already makes etcd 3.4 ask for client certs)
                argv += ["--trusted-ca-file", self.ca, "--client-cert-auth"]
        return argv

    def start(self, timeout: float = 30) -> EtcdProc:
        assert self.proc is None or self.proc.poll() is not None, "etcd is already running"
        self.proc = self.lab.spawn(self.host, self.argv(), "etcd.log")
        self.wait_ready(timeout)
        return self

    def stop(self) -> None:
        if self.proc is not None:
            self.lab.stop(self.proc, signal.SIGTERM)
            self.lab.procs.remove(self.proc)
            self.proc = None

    def log(self) -> str:
        with open(os.path.join(self.host.dir, "etcd.log"), errors="replace") as f:
            return f.read()

    def ssl_context(self) -> ssl.SSLContext | None:
        if not self.tls:
            return None
        ctx = ssl.create_default_context(cafile=self.ca)
        ctx.load_cert_chain(self.cert, self.key)
        return ctx

    def wait_ready(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        last = ""
        while time.monotonic() < deadline:
            assert self.proc is not None
            if self.proc.poll() is not None:
                raise RuntimeError(f"etcd exited with {self.proc.returncode}:\n{self.log()[-3000:]}")
            try:
                with entered(self.host.netns_path):
                    with urllib.request.urlopen(f"{self.endpoint}/health", timeout=2,
                                                context=self.ssl_context()) as r:
                        if json.loads(r.read()).get("health") == "true":
                            return
            except OSError as exc:
                last = str(exc)
            time.sleep(0.1)
        raise RuntimeError(f"etcd not healthy after {timeout}s ({last}):\n{self.log()[-3000:]}")

    # --- etcdctl -------------------------------------------------------------------------------
    def ctl(self, *args: str, check: bool = True, user: bool = True) -> subprocess.CompletedProcess[str]:
        flags = [f"--endpoints={self.endpoint}"]
        if self.tls:
            flags += [f"--cacert={self.ca}", f"--cert={self.cert}", f"--key={self.key}"]
        if self.auth and user:
            flags.append(f"--user={self.auth[0]}:{self.auth[1]}")
        proc = subprocess.run(["ip", "netns", "exec", self.host.ns.name, "env", "ETCDCTL_API=3", ETCDCTL, *flags,
                               *args], capture_output=True, text=True, timeout=30)
        if check and proc.returncode != 0:
            raise RuntimeError(f"etcdctl {' '.join(args)}: rc={proc.returncode} {proc.stderr.strip()}")
        return proc

    def ctl_json(self, *args: str) -> Any:
        return json.loads(self.ctl("-w", "json", *args).stdout)

    def put(self, key: str, value: str | bytes, lease: int = 0) -> int:
        """Put a key (value through stdin, so any bytes go); returns the new revision."""
        data = value.encode() if isinstance(value, str) else value
        args = ["put", key] + ([f"--lease={lease:x}"] if lease else [])
        flags = [f"--endpoints={self.endpoint}"]
        if self.tls:
            flags += [f"--cacert={self.ca}", f"--cert={self.cert}", f"--key={self.key}"]
        if self.auth:
            flags.append(f"--user={self.auth[0]}:{self.auth[1]}")
        # etcdctl put reads the value from stdin when it is not given as an argument
        proc = subprocess.run(["ip", "netns", "exec", self.host.ns.name, "env", "ETCDCTL_API=3", ETCDCTL, *flags,
                               "-w", "json", *args], input=data, capture_output=True, timeout=30)
        if proc.returncode != 0:
            raise RuntimeError(f"etcdctl put {key}: {proc.stderr.decode(errors='replace').strip()}")
        return int(json.loads(proc.stdout)["header"]["revision"])

    def grant(self, ttl: int) -> int:
        return int(self.ctl_json("lease", "grant", str(ttl))["ID"])

    def put_ttl(self, key: str, value: str | bytes, ttl: int) -> int:
        """Put a key attached to a fresh etcd lease of ``ttl`` seconds; returns the lease id."""
        lease = self.grant(ttl)
        self.put(key, value, lease)
        return lease

    def get_kv(self, key: str) -> dict[str, Any] | None:
        kvs = self.ctl_json("get", key).get("kvs") or []
        if not kvs:
            return None
        kv = kvs[0]
        return {"key": base64.b64decode(kv["key"]), "value": base64.b64decode(kv.get("value", "")),
                "lease": int(kv.get("lease", 0)), "mod_revision": int(kv["mod_revision"])}

    def get(self, key: str) -> bytes | None:
        kv = self.get_kv(key)
        return None if kv is None else kv["value"]

    def keys(self, prefix: str) -> list[str]:
        out = self.ctl("get", "--prefix", "--keys-only", prefix).stdout
        return [line for line in out.splitlines() if line]

    def delete(self, key: str) -> int:
        return int(self.ctl_json("del", key).get("deleted", 0))

    def revision(self) -> int:
        return int(self.ctl_json("get", "/", "--prefix", "--limit=1")["header"]["revision"])

    def compact(self, rev: int) -> None:
        self.ctl("compact", str(rev), "--physical")

    def leases(self) -> list[int]:
        return [int(x["id"]) for x in self.ctl_json("lease", "list").get("leases") or []]

    def lease_ttl(self, lease: int) -> tuple[int, int]:
        """(remaining TTL, granted TTL); TTL -1 when the lease is gone."""
        out = self.ctl_json("lease", "timetolive", f"{lease:x}")
        return int(out.get("ttl", -1)), int(out.get("granted-ttl", 0))

    def enable_auth(self, user: str, password: str) -> None:
        self.ctl("user", "add", f"root:{password}", user=False)
        self.ctl("user", "grant-role", "root", "root", user=False)
        if user != "root":
            self.ctl("user", "add", f"{user}:{password}", user=False)
            self.ctl("role", "add", "flannel", user=False)
            self.ctl("role", "grant-permission", "flannel", "--prefix=true", "readwrite", "/", user=False)
            self.ctl("user", "grant-role", user, "flannel", user=False)
        self.ctl("auth", "enable", user=False)


def start_etcd(lab: Lab, host: Host, *, tls: bool = False, auth: tuple[str, str] | None = None,
               client_cert_auth: bool = True) -> EtcdProc:
    """etcd on ``host`` (data under host.dir); with ``tls`` it requires client certs unless client_cert_auth=False.

    ⚠ etcd 3.4's gateway refuses password auth together with a client cert that has a CommonName
    ("CommonName of client sending a request against gateway will be ignored"), so tests use one or the other."""
    proc = EtcdProc(lab, host, tls=tls, client_cert_auth=client_cert_auth)
    if tls:
        proc.ca, proc.server_cert, proc.server_key, proc.cert, proc.key = make_certs(host)
    proc.start()
    if auth:
        proc.enable_auth(*auth)
        proc.auth = auth
    return proc
