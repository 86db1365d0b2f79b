"""install-cni: put the plugin set and the conflist on a node, atomically.

    cni-flannel install-cni [--mode init|sidecar] [--bin-dir D] [--conf-dir D]
                            [--source BUNDLE_DIR] [--config-file F]

Environment (the seed's install-cni contract): CNI_NETWORK_CONFIG (the conflist
text; wins over --config-file), CNI_CONF_NAME (10-flannel.conflist), CNI_OLD_NAME
(10-flannel.conf), CNI_BIN_DIR (/host/opt/cni/bin), CNI_CONF_DIR (/host/etc/cni/net.d).

Binaries: the bundle is copied to ``<bin>/.cni-flannel-<build id>`` (temp dir,
then rename), and each plugin name is a relative symlink into it, swapped in by
rename(2). A kubelet exec during an install sees the old set or the new one,
never a half-written file, and never "text file busy".
"""
from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import signal
import sys
import time
from typing import Any

PLUGINS = ("flannel", "bridge", "host-local", "portmap", "loopback")
EXTRA_COMMANDS = ("cnitool",)
EXE = "cni-flannel"


class InstallError(Exception):
    pass


def log(msg: str) -> None:
    sys.stderr.write(f"install-cni: {msg}\n")
    sys.stderr.flush()


# -- validation ---------------------------------------------------------------------------------

def validate_conflist(text: str, source: str) -> dict[str, Any]:
    """Parse and check the conflist with the plugins' own schemas; raises InstallError."""
    from ..cni.conf import parse_netconf
    from ..cni.errors import CNIError

    try:
        conf = json.loads(text)
    except ValueError as exc:
        raise InstallError(f"{source}: not valid JSON: {exc}") from None
    if not isinstance(conf, dict) or not isinstance(conf.get("plugins"), list) or not conf["plugins"]:
        raise InstallError(f"{source}: a .conflist needs \"name\", \"cniVersion\" and a non-empty \"plugins\" list")
    name, version = conf.get("name"), conf.get("cniVersion", "")
    for i, plugin in enumerate(conf["plugins"]):
        ptype = plugin.get("type") if isinstance(plugin, dict) else None
        if ptype not in PLUGINS:
            raise InstallError(f"{source}: plugins[{i}].type {ptype!r} is not shipped by cni-flannel "
                               f"(it ships {', '.join(PLUGINS)})")
        if ptype == "flannel":
            subnet_file = plugin.get("subnetFile", "/run/flannel/subnet.env")
            if not isinstance(subnet_file, str) or not subnet_file.startswith("/") or subnet_file.endswith("/"):
                raise InstallError(f"{source}: plugins[{i}].subnetFile {subnet_file!r} is not a usable file path; "
                                   "use an absolute path such as /run/flannel/subnet.env")
        request = dict(plugin, name=name, cniVersion=version)
        from importlib import import_module

        from ..__main__ import PLUGINS as MODULES

        try:
            parse_netconf(json.dumps(request).encode(), import_module(MODULES[ptype]).PLUGIN.schema)
        except CNIError as err:
            raise InstallError(f"{source}: plugins[{i}] ({ptype}): {err}") from None
    return conf


# -- atomic file operations ---------------------------------------------------------------------

def atomic_write(path: str, data: bytes, mode: int = 0o644) -> None:
    d = os.path.dirname(path)
    tmp = os.path.join(d, f".{os.path.basename(path)}.tmp{os.getpid()}")
    with open(tmp, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    os.chmod(tmp, mode)
    os.rename(tmp, path)
    _fsync_dir(d)


def _fsync_dir(d: str) -> None:
    fd = os.open(d, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def build_id(source: str) -> str:
    h = hashlib.sha256()
    with open(os.path.join(source, EXE), "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    for root, _dirs, files in sorted(os.walk(source)):  # names and sizes of the rest of the bundle
        for name in sorted(files):
            path = os.path.join(root, name)
            h.update(f"{os.path.relpath(path, source)}:{os.path.getsize(path)}".encode())
    return h.hexdigest()[:12]


SUPERSEDED = ".superseded"


def install_binaries(source: str, bin_dir: str, names: tuple[str, ...] = PLUGINS + EXTRA_COMMANDS,
                     grace: float = 60.0) -> str:
    if not os.access(os.path.join(source, EXE), os.X_OK):
        raise InstallError(f"{source}/{EXE} is missing or not executable; build it with "
                           "`pyinstaller build.spec`")
    os.makedirs(bin_dir, exist_ok=True)
    bid = build_id(source)
    bundle = f".cni-flannel-{bid}"
    target = os.path.join(bin_dir, bundle)
    if not os.path.isdir(target):
        tmp = os.path.join(bin_dir, f"{bundle}.tmp{os.getpid()}")
        shutil.rmtree(tmp, ignore_errors=True)
        shutil.copytree(source, tmp, symlinks=True)
        os.rename(tmp, target)
    for name in names:
        link_tmp = os.path.join(bin_dir, f".{name}.tmp{os.getpid()}")
        if os.path.lexists(link_tmp):
            os.unlink(link_tmp)
        os.symlink(os.path.join(bundle, EXE), link_tmp)
        os.rename(link_tmp, os.path.join(bin_dir, name))
    _fsync_dir(bin_dir)
    collect_old_bundles(bin_dir, bundle, grace)
    return bid


def collect_old_bundles(bin_dir: str, current: str, grace: float) -> None:
    """Remove bundles no link points at, once they have been superseded for ``grace`` seconds.

    A plugin exec'd just before the links were swapped may still be loading its
    bundle, so an old bundle is first marked, and removed only on a later install.
    """
    now = time.time()
    for old in os.listdir(bin_dir):
        path = os.path.join(bin_dir, old)
        if not old.startswith(".cni-flannel-") or old == current or ".tmp" in old:
            continue
        marker = os.path.join(path, SUPERSEDED)
        try:
            since = os.path.getmtime(marker)
        except FileNotFoundError:
            with open(marker, "w"):
                pass
            since = now
        if now - since >= grace:
            shutil.rmtree(path, ignore_errors=True)


def install_conf(text: str, conf_dir: str, conf_name: str, old_name: str) -> str:
    os.makedirs(conf_dir, exist_ok=True)
    dest = os.path.join(conf_dir, conf_name)
    atomic_write(dest, text.encode(), 0o644)
    if old_name and old_name != conf_name:
        try:
            os.unlink(os.path.join(conf_dir, old_name))
        except FileNotFoundError:
            pass
    return dest


# -- the command --------------------------------------------------------------------------------

def _default_source() -> str:
    exe = os.path.realpath(sys.executable if getattr(sys, "frozen", False) else sys.argv[0])
    return os.path.dirname(exe)


def read_config(config_file: str | None) -> tuple[str, str] | None:
    env = os.environ.get("CNI_NETWORK_CONFIG")
    if env:
        return env, "CNI_NETWORK_CONFIG"
    if config_file:
        try:
            with open(config_file, encoding="utf-8") as f:
                return f.read(), config_file
        except OSError as exc:
            raise InstallError(f"cannot read {config_file}: {exc.strerror}") from None
    return None


def install_once(args: argparse.Namespace) -> None:
    cfg = read_config(args.config_file)
    conf_text = None
    if cfg is not None:
        validate_conflist(cfg[0], cfg[1])  # before anything on the host is touched
        conf_text = cfg[0]
    if not args.skip_binaries:
        bid = install_binaries(args.source, args.bin_dir, grace=args.grace)
        log(f"installed plugins {', '.join(PLUGINS)} (build {bid}) into {args.bin_dir}")
    if conf_text is not None:
        dest = install_conf(conf_text, args.conf_dir, args.conf_name, args.old_name)
        log(f"wrote {dest}")


def main(argv: list[str]) -> int:
    p = argparse.ArgumentParser(prog="install-cni", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--mode", choices=["init", "sidecar", "doctor"], default=os.environ.get("INSTALL_MODE", "init"),
                   help="doctor: check the host's CNI setup (the same as `cni-flannel doctor`) and exit")
    p.add_argument("--bin-dir", default=os.environ.get("CNI_BIN_DIR", "/host/opt/cni/bin"))
    p.add_argument("--conf-dir", default=os.environ.get("CNI_CONF_DIR", "/host/etc/cni/net.d"))
    p.add_argument("--source", default=os.environ.get("CNI_FLANNEL_BUNDLE") or _default_source())
    p.add_argument("--config-file", default=os.environ.get("CNI_NETWORK_CONFIG_FILE"))
    p.add_argument("--conf-name", default=os.environ.get("CNI_CONF_NAME", "10-flannel.conflist"))
    p.add_argument("--old-name", default=os.environ.get("CNI_OLD_NAME", "10-flannel.conf"))
    p.add_argument("--skip-binaries", action="store_true")
    p.add_argument("--grace", type=float, default=60.0,
                   help="seconds an old bundle is kept after it was replaced (running plugins may use it)")
    p.add_argument("--interval", type=float, default=2.0, help="sidecar: seconds between config checks")
    p.add_argument("--worker", action="store_true", default=os.environ.get("CNI_FLANNEL_WORKER_MODE") == "1",
                   help="sidecar: also run the warm worker (see README, 'Warm worker')")
    p.add_argument("--worker-socket", default=os.environ.get("CNI_FLANNEL_WORKER_SOCKET",
                                                             "/run/cni-flannel/worker.sock"))
    args, rest = p.parse_known_args(argv)
    if args.mode == "doctor":
        from .doctor import main as doctor_main

        return doctor_main(["--conf-dir", args.conf_dir, "--bin-dir", args.bin_dir, *rest])
    if rest:
        p.error(f"unrecognized arguments: {' '.join(rest)}")
    try:
        install_once(args)
    except InstallError as exc:
        log(f"error: {exc}")
        return 1
    except OSError as exc:
        log(f"error: {exc}")
        return 1
    if args.mode == "init":
        return 0
    return sidecar(args)


def sidecar(args: argparse.Namespace) -> int:
    """Stay, and re-install when the mounted config changes; exit 0 on SIGTERM."""
    stop = {"flag": False}

    def on_term(signum: int, frame: Any) -> None:
        stop["flag"] = True

    signal.signal(signal.SIGTERM, on_term)
    signal.signal(signal.SIGINT, on_term)
    last = read_config(args.config_file)
    worker = None
    if args.worker:
        import subprocess

        from .traffic import self_command

        worker = subprocess.Popen([*self_command(), "worker", "--socket", args.worker_socket])
        log(f"sidecar: started the warm worker on {args.worker_socket} (pid {worker.pid})")
    log("sidecar: watching for config changes")
    while not stop["flag"]:
        time.sleep(args.interval)
        try:
            current = read_config(args.config_file)
        except InstallError as exc:
            log(f"error: {exc}")
            continue
        if current is not None and (last is None or current[0] != last[0]):
            try:
                install_once(args)
                last = current
            except (InstallError, OSError) as exc:
                log(f"error: {exc}; keeping the installed config")
    if worker is not None:
        worker.terminate()
        worker.wait(timeout=10)
    log("sidecar: stopping")
    return 0
