"""Delegation: one function for in-process plugins and exec'd ones (libcni pkg/invoke).

The delegate is looked up in CNI_PATH exactly as an exec would look it up
(invoke.FindInPath: the first regular file of that name). It runs in this
process only when that file is our own program of this very build; anything
else — the Go reference, a wrapper script, another build of ours — is exec'd
with the same environment, CNI_COMMAND overridden, and the same stdin bytes.
"""
from __future__ import annotations

import errno
import os
import sys
import time

from .cni import jsonlite  # not json: ~4.5 ms per frozen exec (re, enum)
from .cni.conf import decode_json, parse_netconf
from .cni.env import CmdArgs
from .cni.errors import INTERNAL, INVALID_CONFIG, CNIError, errno_text
from .cni.gojson import get_folded
from .cni.result import Result
from .net import spawn
from .records import replace

TYPE_CHECKING = False
if TYPE_CHECKING:  # annotations only: typing costs ~2 ms per frozen exec
    from typing import Any

IN_PROCESS = {
    "bridge": "cni_flannel.plugins.bridge",
    "host-local": "cni_flannel.plugins.host_local",
}
TEXT_BUSY_RETRIES = 6


def find_in_path(plugin_type: str, path: list[str]) -> str:
    """invoke.FindInPath: the first ``<dir>/<type>`` that stat(2) calls a regular file."""
    if not plugin_type or "/" in plugin_type or plugin_type in (".", ".."):
        raise CNIError(INVALID_CONFIG, f"invalid plugin type {jsonlite.dumps(plugin_type)}",
                       "type must be the name of a plugin binary in CNI_PATH")
    import stat

    for d in path:
        candidate = os.path.join(d, plugin_type)
        try:
            if stat.S_ISREG(os.stat(candidate).st_mode):
                return candidate
        except OSError:
            continue
    raise CNIError(INVALID_CONFIG, f'failed to find plugin "{plugin_type}" in path [{" ".join(path)}]',
                   f"install {plugin_type} into one of the CNI_PATH directories")


def _own_program() -> str:
    """The file this process runs as: the frozen bundle's executable, or the launcher from source.

    From source, ``sys.argv[0]`` is the script the runtime exec'd (a launcher such as
    tests/harness.py writes); under ``python -m`` it is __main__.py, which no CNI_PATH
    entry resolves to, so every delegate is exec'd then.
    """
    if getattr(sys, "frozen", False):
        return os.path.realpath(sys.executable)
    return os.path.realpath(sys.argv[0]) if sys.argv and sys.argv[0] else ""


def _bundle_build(executable: str) -> str | None:
    """The BUILD_ID a frozen bundle carries next to its executable (build.spec), if any."""
    try:
        with open(os.path.join(os.path.dirname(executable), "_internal", "cni_flannel", "BUILD_ID")) as f:
            return f.read().strip()
    except OSError:
        return None


def is_ours(binary: str) -> bool:
    """Does ``binary`` resolve to our own program of this build? A realpath compare, no hashing.

    Another copy of the same frozen build (a worker started from the image, a second
    install dir) counts as ours: its BUILD_ID, read only when the paths differ, is ours.
    """
    real = os.path.realpath(binary)
    own = _own_program()
    if real == own:
        return True
    if getattr(sys, "frozen", False):
        from .runtime.worker_client import build_id

        theirs = _bundle_build(real)
        return theirs is not None and theirs == build_id()
    return False


def run(verb: str, plugin_type: str, conf_bytes: bytes, args: CmdArgs) -> Result | None:
    """Run ``verb`` of ``plugin_type`` with ``conf_bytes`` as its stdin; returns its result on ADD.

    With no CNI_PATH at all (optional for ADD/DEL/CHECK in the spec) there is nothing to
    look up, and our own bridge and host-local run in-process as before.
    """
    module = IN_PROCESS.get(plugin_type)
    binary = find_in_path(plugin_type, args.path) if args.path or module is None else ""
    if module is not None and (not binary or is_ours(binary)):
        from .cni.version import gate_verb

        __import__(module)  # not importlib: ~0.4 ms per frozen exec
        plugin = sys.modules[module].PLUGIN
        conf = parse_netconf(conf_bytes, plugin.schema)
        gate_verb(verb, conf.cni_version)
        sub = replace(args, command=verb, stdin=conf_bytes)
        return plugin.verb(verb)(sub, conf)  # type: ignore[no-any-return]
    return exec_plugin(verb, binary, conf_bytes, args)


def exec_plugin(verb: str, binary: str, conf_bytes: bytes, args: CmdArgs,
                env: dict[str, str] | None = None) -> Result | None:
    child_env = dict(os.environ if env is None else env)
    child_env.update({"CNI_COMMAND": verb, "CNI_CONTAINERID": args.container_id, "CNI_NETNS": args.netns,
                      "CNI_IFNAME": args.ifname, "CNI_ARGS": args.args, "CNI_PATH": os.pathsep.join(args.path)})
    for attempt in range(TEXT_BUSY_RETRIES):
        try:
            proc = spawn.run([binary], input=conf_bytes, env=child_env)
            break
        except OSError as exc:
            if exc.errno == errno.ETXTBSY and attempt < TEXT_BUSY_RETRIES - 1:
                time.sleep(1)  # libcni retries "text file busy" the same way
                continue
            raise CNIError(INTERNAL, f"failed to exec {binary}: {errno_text(exc)}",
                           "check that the plugin binary is intact and executable") from None
    name = os.path.basename(binary)
    if proc.returncode != 0:
        raise error_from_output(name, verb, proc.stdout, proc.stderr)
    if verb != "ADD":
        return None
    raw = decode_json(proc.stdout, f"result of plugin {name}")
    sent = decode_json(conf_bytes)
    conf_version = get_folded(sent, "cniVersion") if isinstance(sent, dict) else None
    return Result.from_dict(raw, conf_version)


def error_from_output(name: str, verb: str, stdout: bytes, stderr: bytes) -> CNIError:
    try:
        data: Any = jsonlite.loads(stdout) if stdout.strip() else None
    except ValueError:
        data = None
    if isinstance(data, dict) and "code" in data:
        return CNIError(int(data.get("code") or INTERNAL), f"plugin {name} failed ({verb.lower()}): "
                        f"{data.get('msg', '')}", str(data.get("details") or ""))
    text = (stderr or stdout).decode("utf-8", "replace").strip()[:400]
    return CNIError(INTERNAL, f"plugin {name} failed ({verb.lower()}): netplugin failed: {jsonlite.dumps(text)}",
                    "see the plugin's stderr above")

