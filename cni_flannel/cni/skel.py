"""plugin_main: the one place where verbs are dispatched and errors printed (libcni pkg/skel).

A plugin is a small record (``Plugin``) of a name, a schema and its verb functions.
Everything common lives here: env, stdin, version gating, logging and errors.
Only the standard library is imported, so VERSION and bad input stay cheap.
"""
from __future__ import annotations

import os
import sys
import time

from ..records import record
from . import env as cnienv
from . import jsonlite  # not json: ~4.5 ms per frozen exec (re, enum)
from .conf import NetConf, parse_netconf, version_of
from .errors import INTERNAL, IO_FAILURE, CNIError, errno_of, errno_text, from_os_error
from .result import Result
from .version import CURRENT, SUPPORTED, gate_verb

TYPE_CHECKING = False
if TYPE_CHECKING:  # annotations only: typing costs ~2 ms per frozen exec
    from collections.abc import Callable, Mapping
    from typing import IO, Any

    VerbFunc = Callable[[cnienv.CmdArgs, NetConf], Result | None]


@record
class Plugin:
    name: str
    about: str
    add: VerbFunc
    delete: VerbFunc
    check: VerbFunc
    gc: VerbFunc
    status: VerbFunc
    schema: dict[str, Any] | None = None

    def verb(self, command: str) -> VerbFunc:
        return {"ADD": self.add, "DEL": self.delete, "CHECK": self.check,
                "GC": self.gc, "STATUS": self.status}[command]


def version_response(stdin: bytes) -> str:
    """VERSION: echo the requested version when we support it (the spec; skel does not)."""
    from .version_reply import response

    return response(stdin)


def run(plugin: Plugin, environ: Mapping[str, str], stdin: IO[bytes], stdout: IO[str],
        stderr: IO[str]) -> int:
    """Run one invocation; returns the exit code. Never raises."""
    started = time.monotonic()
    command = environ.get("CNI_COMMAND", "")
    if command == "":
        stderr.write(f"{plugin.about}\nCNI protocol versions supported: {', '.join(SUPPORTED)}\n")
        return 0
    try:
        data = stdin.read()
    except OSError as exc:
        return _fail(plugin, environ, b"", CNIError(IO_FAILURE, f"error reading from stdin: {errno_text(exc)}",
                                                     "the runtime must pass the config on stdin"),
                     stdout, stderr, started)
    if command == "VERSION":
        stdout.write(version_response(data))
        return 0
    conf: NetConf | None = None
    try:
        args = cnienv.from_environ(environ, data)
        conf = parse_netconf(data, plugin.schema)
        gate_verb(command, conf.cni_version)
        result = plugin.verb(command)(args, conf)
        if result is not None and command == "ADD":
            stdout.write(result.to_json(conf.cni_version))
    except CNIError as err:
        return _fail(plugin, environ, data, err, stdout, stderr, started, conf)
    except Exception as exc:  # the runtime must get an error object, never a traceback
        if errno_of(exc) is not None:  # a kernel or OS refusal no step worded: still words, not a repr
            internal = from_os_error(f"{command} {plugin.name}", exc, "the traceback is in the plugin log")
        else:
            internal = CNIError(INTERNAL, f"{plugin.name} internal error: {type(exc).__name__}: {exc}"[:500],
                                "this is a bug in cni-flannel; the traceback is in the plugin log")
        _log_traceback(environ, conf, stderr)
        return _fail(plugin, environ, data, internal, stdout, stderr, started, conf)
    _log_call(plugin, environ, conf, started, "ok", 0)
    return 0


def _fail(plugin: Plugin, environ: Mapping[str, str], data: bytes, err: CNIError,
          stdout: IO[str], stderr: IO[str], started: float, conf: NetConf | None = None) -> int:
    try:
        raw = conf.raw if conf else jsonlite.loads(data)
    except (ValueError, RecursionError):
        raw = None
    # An undecodable config has no version: answer in the newest one.
    version = version_of(raw) if isinstance(raw, dict) else CURRENT
    stdout.write(err.to_json(version if version in SUPPORTED else CURRENT))
    _log_call(plugin, environ, conf, started, "error", err.code, err.msg)
    return 1


def _log_target(environ: Mapping[str, str], conf: NetConf | None) -> str:
    if conf is not None and isinstance(conf.raw.get("logFile"), str):
        return str(conf.raw["logFile"])
    return environ.get("CNI_FLANNEL_LOG", "")


def _append_line(path: str, line: str) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o600)
    try:
        os.write(fd, line.encode())
    finally:
        os.close(fd)


def _log_call(plugin: Plugin, environ: Mapping[str, str], conf: NetConf | None, started: float,
              outcome: str, code: int, msg: str = "") -> None:
    path = _log_target(environ, conf)
    if not path:
        return
    entry = {
        "time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "plugin": plugin.name, "verb": environ.get("CNI_COMMAND", ""),
        "containerID": environ.get("CNI_CONTAINERID", ""), "ifname": environ.get("CNI_IFNAME", ""),
        "durationMs": round((time.monotonic() - started) * 1000, 2), "outcome": outcome, "code": code,
    }
    if environ.get("CNI_FLANNEL_SERVED_BY") == "worker":
        entry["servedBy"] = "worker"
    import resource

    ru = resource.getrusage(resource.RUSAGE_SELF)  # in a worker child: since its fork
    entry["cpuMs"] = round((ru.ru_utime + ru.ru_stime) * 1000, 1)
    if msg:
        entry["msg"] = msg
    from .trace import snapshot

    spans = snapshot()
    if spans:
        entry["spans"] = spans
    try:
        _append_line(path, jsonlite.dumps(entry) + "\n")
    except OSError:
        pass  # logging must never turn a success into a failure


def _log_traceback(environ: Mapping[str, str], conf: NetConf | None, stderr: IO[str]) -> None:
    import traceback

    text = traceback.format_exc()
    path = _log_target(environ, conf)
    if path:
        try:
            _append_line(path, jsonlite.dumps({"traceback": text}) + "\n")
            return
        except OSError:
            pass
    stderr.write("cni-flannel: internal error (set CNI_FLANNEL_LOG=<file> for the traceback)\n")


def plugin_main(plugin: Plugin) -> int:
    return run(plugin, os.environ, sys.stdin.buffer, sys.stdout, sys.stderr)
