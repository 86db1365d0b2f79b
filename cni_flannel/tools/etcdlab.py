"""A real etcd (Debian's etcd-server) for the demo and the benchmark, inside a namespace they made.

Never the packaged service: a private data dir, client URL on the namespace's underlay
address, peer URL on that namespace's loopback.
"""
from __future__ import annotations

import os
import subprocess
import time


class EtcdLab:
    def __init__(self, netns: str, ip: str, data_dir: str, log_path: str) -> None:
        self.netns, self.ip, self.data_dir, self.log_path = netns, ip, data_dir, log_path
        self.url = f"http://{ip}:2379"
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self, timeout: float = 30) -> EtcdLab:
        argv = ["ip", "netns", "exec", self.netns, "etcd", "--name", "lab", "--data-dir", self.data_dir,
                "--listen-client-urls", self.url, "--advertise-client-urls", self.url,
                "--listen-peer-urls", "http://127.0.0.1:2380", "--initial-advertise-peer-urls",
                "http://127.0.0.1:2380", "--initial-cluster", "lab=http://127.0.0.1:2380"]
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.ctl("endpoint", "health").returncode == 0:
                return self
            if self.proc.poll() is not None:
                break
            time.sleep(0.2)
        raise RuntimeError(f"etcd did not start; see {self.log_path}")

    def ctl(self, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(["ip", "netns", "exec", self.netns, "etcdctl", f"--endpoints={self.url}", *args],
                              capture_output=True, text=True, timeout=60, check=False,
                              env={**os.environ, "ETCDCTL_API": "3"})

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
