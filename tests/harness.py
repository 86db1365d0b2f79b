"""The test harness: network namespaces that always go away, and plugin runners.

A plugin runs as a real subprocess with CNI env and stdin, ours or the Go
reference from /usr/lib/cni, optionally inside a node namespace the test made.
Set CNI_FLANNEL_BIN to a directory of frozen binaries to test those instead.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

GO_CNI_DIR = "/usr/lib/cni"
REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ALL_VERSIONS = ("0.1.0", "0.2.0", "0.3.0", "0.3.1", "0.4.0", "1.0.0", "1.1.0")


def our_bin_dir() -> str | None:
    return os.environ.get("CNI_FLANNEL_BIN") or None


def our_command(plugin: str) -> list[str]:
    bin_dir = our_bin_dir()
    if bin_dir:
        return [os.path.join(bin_dir, plugin)]
    return [sys.executable, "-m", "cni_flannel", plugin]


@dataclass
class Outcome:
    rc: int
    stdout: str
    stderr: str
    data: Any = None

    @property
    def ok(self) -> bool:
        return self.rc == 0

    @property
    def error_code(self) -> int | None:
        return self.data.get("code") if isinstance(self.data, dict) and self.rc != 0 else None


@dataclass
class Netns:
    name: str
    path: str = field(init=False)

    def __post_init__(self) -> None:
        self.path = f"/run/netns/{self.name}"

    def run(self, *cmd: str, check: bool = True, timeout: float = 30) -> subprocess.CompletedProcess[str]:
        return subprocess.run(["ip", "netns", "exec", self.name, *cmd], capture_output=True, text=True,
                              check=check, timeout=timeout)

    def json(self, *cmd: str) -> Any:
        return json.loads(self.run(*cmd).stdout or "null")


def new_netns(prefix: str = "cnif") -> Netns:
    name = f"{prefix}-{uuid.uuid4().hex[:10]}"
    subprocess.run(["ip", "netns", "add", name], check=True)
    ns = Netns(name)
    ns.run("ip", "link", "set", "lo", "up")
    return ns


def delete_netns(ns: Netns) -> None:
    subprocess.run(["ip", "netns", "delete", ns.name], capture_output=True)


@contextmanager
def netns_scope(count: int = 1, prefix: str = "cnif") -> Iterator[list[Netns]]:
    made: list[Netns] = []
    try:
        for _ in range(count):
            made.append(new_netns(prefix))
        yield made
    finally:
        for ns in made:
            delete_netns(ns)


def run_plugin(command: list[str], verb: str, conf: dict[str, Any] | bytes | str, *,
               container_id: str = "c1", netns: str = "", ifname: str = "eth0", cni_args: str = "",
               cni_path: str | None = None, node: Netns | None = None,
               extra_env: dict[str, str] | None = None, timeout: float = 60) -> Outcome:
    env = {k: v for k, v in os.environ.items() if not k.startswith("CNI_") or k.startswith("CNI_FLANNEL_")}
    env.update({"CNI_COMMAND": verb, "CNI_CONTAINERID": container_id, "CNI_NETNS": netns,
                "CNI_IFNAME": ifname, "CNI_ARGS": cni_args,
                "CNI_PATH": cni_path if cni_path is not None else (our_bin_dir() or GO_CNI_DIR),
                "PYTHONPATH": REPO})
    env.update(extra_env or {})
    if isinstance(conf, dict):
        stdin = json.dumps(conf).encode()
    elif isinstance(conf, str):
        stdin = conf.encode()
    else:
        stdin = conf
    argv = (["ip", "netns", "exec", node.name] if node else []) + command
    proc = subprocess.run(argv, input=stdin, capture_output=True, env=env, timeout=timeout)
    out = proc.stdout.decode("utf-8", "replace")
    data = None
    if out.strip():
        try:
            data = json.loads(out)
        except ValueError:
            data = None
    return Outcome(proc.returncode, out, proc.stderr.decode("utf-8", "replace"), data)


def ours(plugin: str, verb: str, conf: Any, **kw: Any) -> Outcome:
    return run_plugin(our_command(plugin), verb, conf, **kw)


def go(plugin: str, verb: str, conf: Any, **kw: Any) -> Outcome:
    kw.setdefault("cni_path", GO_CNI_DIR)
    return run_plugin([os.path.join(GO_CNI_DIR, plugin)], verb, conf, **kw)


def have_go_plugins() -> bool:
    return os.path.exists(os.path.join(GO_CNI_DIR, "bridge"))


def is_root() -> bool:
    return os.geteuid() == 0


PLUGIN_NAMES = ("flannel", "bridge", "host-local", "portmap", "loopback")


def plugin_dir(tmp: str) -> str:
    """A CNI bin dir of our plugins: the frozen set when CNI_FLANNEL_BIN is set, else launchers."""
    if our_bin_dir():
        return our_bin_dir()  # type: ignore[return-value]
    d = os.path.join(tmp, "cni-bin")
    os.makedirs(d, exist_ok=True)
    launcher = os.path.join(d, "cni-flannel")
    with open(launcher, "w") as f:
        f.write(f"#!{sys.executable}\nimport sys\nsys.path.insert(0, {REPO!r})\n"
                "from cni_flannel.__main__ import main\nmain()\n")
    os.chmod(launcher, 0o755)
    for name in (*PLUGIN_NAMES, "cnitool"):
        link = os.path.join(d, name)
        if not os.path.exists(link):
            os.symlink("cni-flannel", link)
    return d


def cnitool(verb: str, net: str, netns: str, *, conf_dir: str, bin_dir: str, cache_dir: str,
            node: Netns | None = None, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    e = {k: v for k, v in os.environ.items() if not k.startswith("CNI_") or k.startswith("CNI_FLANNEL_")}
    e.update({"NETCONFPATH": conf_dir, "CNI_PATH": bin_dir, "CNI_CACHE_DIR": cache_dir, "PYTHONPATH": REPO})
    e.update(env or {})
    cmd = [os.path.join(bin_dir, "cnitool"), verb, net] + ([netns] if netns else [])
    if node is not None:
        cmd = ["ip", "netns", "exec", node.name, *cmd]
    return subprocess.run(cmd, capture_output=True, text=True, env=e, timeout=120)


def our_program(*args: str) -> list[str]:
    """The multi-call program itself (not a plugin name), with a command and its arguments."""
    bin_dir = our_bin_dir()
    if bin_dir:
        return [os.path.realpath(os.path.join(bin_dir, "flannel")), *args]
    return [sys.executable, "-m", "cni_flannel", *args]
