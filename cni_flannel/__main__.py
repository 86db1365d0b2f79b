"""Multi-call entry point: the basename of argv[0] picks the plugin, busybox style.

``python -m cni_flannel <plugin>`` does the same. Standard library only: VERSION
is answered before any plugin module is imported.
"""
from __future__ import annotations

import os
import sys

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

# plugin name -> module holding ``PLUGIN`` (imported only when that plugin runs)
PLUGINS = {
    "flannel": "cni_flannel.plugins.flannel",
    "bridge": "cni_flannel.plugins.bridge",
    "host-local": "cni_flannel.plugins.host_local",
    "portmap": "cni_flannel.plugins.portmap",
    "loopback": "cni_flannel.plugins.loopback",
}
# commands that are not CNI plugins: name -> module with ``main(argv) -> int``
COMMANDS = {
    "cnitool": "cni_flannel.runtime.cnitool",
    "install-cni": "cni_flannel.tools.install",
    "demo": "cni_flannel.tools.demo",
    "traffic": "cni_flannel.tools.traffic",
    "bench": "cni_flannel.tools.bench",
    "worker": "cni_flannel.runtime.worker",
    "doctor": "cni_flannel.tools.doctor",
    "flanneld": "cni_flannel.flanneld.daemon",
    "udpproxy": "cni_flannel.flanneld.backend.udpproxy",  # flanneld's udp forwarder process
}

USAGE = f"""usage: <plugin> (with CNI_* env and the config on stdin)
       python -m cni_flannel <plugin|command> [args...]
plugins:  {', '.join(PLUGINS)}
commands: {', '.join(COMMANDS)}
"""


def _worker_socket_exists() -> bool:
    """Checked before importing the worker's client (~1 ms per frozen exec), which checks it again."""
    from cni_flannel import worker_socket_path

    return os.path.exists(worker_socket_path())


def run_plugin(name: str, argv: list[str]) -> int:
    if os.environ.get("CNI_COMMAND") in ("ADD", "DEL", "CHECK", "GC", "STATUS") and \
            os.environ.get("CNI_FLANNEL_SERVED_BY") != "worker" and _worker_socket_exists():
        from cni_flannel.runtime.worker_client import try_worker

        code = try_worker(argv)
        if code is not None:
            return code
    if os.environ.get("CNI_COMMAND") == "VERSION":
        from cni_flannel.cni.version_reply import response

        sys.stdout.write(response(sys.stdin.buffer.read()))
        return 0
    from cni_flannel.cni.skel import plugin_main

    return plugin_main(_load(PLUGINS[name]).PLUGIN)


def _load(module: str) -> Any:
    """The module by dotted name; __import__ rather than importlib (~0.4 ms per frozen exec)."""
    __import__(module)
    return sys.modules[module]


def resolve(argv: list[str]) -> tuple[str, list[str]]:
    """(program name, its arguments): argv[0]'s basename, or the first argument under python/-m."""
    name = os.path.basename(argv[0]) if argv else ""
    rest = argv[1:]
    if name in ("__main__.py", "cni_flannel", "cni-flannel", "python", "python3") or name.startswith("python"):
        if not rest:
            return "", rest
        name, rest = rest[0], rest[1:]
    return name, rest


def dispatch(argv: list[str]) -> int:
    name, rest = resolve(argv)
    if not name:
        sys.stderr.write(USAGE)
        return 2
    if name in PLUGINS:
        return run_plugin(name, argv)
    if name in COMMANDS:
        return int(_load(COMMANDS[name]).main(rest))
    sys.stderr.write(f"cni-flannel: unknown program name {name!r}\n{USAGE}")
    return 2


def main() -> None:
    code = dispatch(sys.argv)
    if resolve(sys.argv)[0] in PLUGINS:
        exit_now(code)
    sys.exit(code)


def exit_now(code: int) -> None:
    """A plugin exec ends here without the interpreter's teardown (~2.5 ms with the plugin code loaded).

    Nothing of ours needs it: files are written with os.write or closed by ``with``, no atexit hook,
    no thread. stdout and stderr are flushed first; a failed flush exits 120, as Python's own exit does.
    """
    try:
        sys.stdout.flush()
        sys.stderr.flush()
    except (OSError, ValueError):
        code = code or 120
    os._exit(code)


if __name__ == "__main__":
    main()
