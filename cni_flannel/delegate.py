"""Delegation: one function for in-process plugins and exec'd ones (libcni pkg/invoke).

Our own bridge and host-local run in this process; any other type is exec'd
from CNI_PATH with the same environment, CNI_COMMAND overridden, and the same
stdin bytes.
"""
from __future__ import annotations

import errno
import json
import os
import time
from typing import Any

from .cni.conf import decode_json, parse_netconf
from .cni.env import CmdArgs
from .cni.errors import INTERNAL, INVALID_CONFIG, CNIError
from .cni.result import Result
from .records import replace

IN_PROCESS = {
    "bridge": "cni_flannel.plugins.bridge",
    "host-local": "cni_flannel.plugins.host_local",
}
TEXT_BUSY_RETRIES = 6


def find_in_path(plugin_type: str, path: list[str]) -> str:
    if not plugin_type or "/" in plugin_type or plugin_type in (".", ".."):
        raise CNIError(INVALID_CONFIG, f"invalid plugin type {plugin_type!r}",
                       "type must be the name of a plugin binary in CNI_PATH")
    for d in path:
        candidate = os.path.join(d, plugin_type)
        if os.path.isfile(candidate) and os.access(candidate, os.X_OK):
            return candidate
    raise CNIError(INVALID_CONFIG, f'failed to find plugin "{plugin_type}" in path {path}',
                   f"install {plugin_type} into one of the CNI_PATH directories")


def run(verb: str, plugin_type: str, conf_bytes: bytes, args: CmdArgs) -> Result | None:
    """Run ``verb`` of ``plugin_type`` with ``conf_bytes`` as its stdin; returns its result on ADD."""
    module = IN_PROCESS.get(plugin_type)
    if module is not None:
        from importlib import import_module

        from .cni.version import gate_verb

        plugin = import_module(module).PLUGIN
        conf = parse_netconf(conf_bytes, plugin.schema)
        gate_verb(verb, conf.cni_version)
        sub = replace(args, command=verb, stdin=conf_bytes)
        return plugin.verb(verb)(sub, conf)  # type: ignore[no-any-return]
    return exec_plugin(verb, find_in_path(plugin_type, args.path), conf_bytes, args)


def exec_plugin(verb: str, binary: str, conf_bytes: bytes, args: CmdArgs,
                env: dict[str, str] | None = None) -> Result | None:
    child_env = dict(os.environ if env is None else env)
    child_env.update({"CNI_COMMAND": verb, "CNI_CONTAINERID": args.container_id, "CNI_NETNS": args.netns,
                      "CNI_IFNAME": args.ifname, "CNI_ARGS": args.args, "CNI_PATH": os.pathsep.join(args.path)})
    import subprocess  # only exec'd delegates need it

    for attempt in range(TEXT_BUSY_RETRIES):
        try:
            proc = subprocess.run([binary], input=conf_bytes, capture_output=True, env=child_env, check=False)
            break
        except OSError as exc:
            if exc.errno == errno.ETXTBSY and attempt < TEXT_BUSY_RETRIES - 1:
                time.sleep(1)  # libcni retries "text file busy" the same way
                continue
            raise CNIError(INTERNAL, f"failed to exec {binary}: {exc.strerror}",
                           "check that the plugin binary is intact and executable") from None
    name = os.path.basename(binary)
    if proc.returncode != 0:
        raise error_from_output(name, verb, proc.stdout, proc.stderr)
    if verb != "ADD":
        return None
    raw = decode_json(proc.stdout, f"result of plugin {name}")
    conf_version = json.loads(conf_bytes).get("cniVersion")
    return Result.from_dict(raw, conf_version)


def error_from_output(name: str, verb: str, stdout: bytes, stderr: bytes) -> CNIError:
    try:
        data: Any = json.loads(stdout) if stdout.strip() else None
    except ValueError:
        data = None
    if isinstance(data, dict) and "code" in data:
        return CNIError(int(data.get("code") or INTERNAL), f"plugin {name} failed ({verb.lower()}): "
                        f"{data.get('msg', '')}", str(data.get("details") or ""))
    text = (stderr or stdout).decode("utf-8", "replace").strip()[:400]
    return CNIError(INTERNAL, f"plugin {name} failed ({verb.lower()}): netplugin failed: {text!r}",
                    "see the plugin's stderr above")

