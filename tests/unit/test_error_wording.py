"""Errors from the kernel and the OS read as words, not Python (issue 20 §4).

An AST walk of the package finds every ``except`` that catches an OS or netlink error
(OSError and its subclasses, ``netlink_errors()``, NetlinkError, Exception) and builds a
CNIError from it: the exception may reach the message only through ``errno_text`` /
``from_os_error``, never as ``{exc}``, ``str(exc)``, ``exc.strerror`` or ``exc.args``
(which print ``(101, 'Network is unreachable')`` or ``NetlinkError: (95, ...)``).
Every ``kernel_step``/``from_os_error`` says what was being done and how to fix it.
"""
from __future__ import annotations

import ast
import errno
import os

import pytest

from cni_flannel.cni.errors import CNIError, errno_text, from_os_error, kernel_step

ROOT = os.path.join(os.path.dirname(__file__), "..", "..", "cni_flannel")
OS_ERRORS = {"OSError", "IOError", "FileNotFoundError", "PermissionError", "FileExistsError", "NotADirectoryError",
             "IsADirectoryError", "InterruptedError", "BlockingIOError", "TimeoutError", "ConnectionError",
             "NetlinkError", "netlink_errors", "kernel_errors", "Exception", "BaseException"}
BUILDERS = {"CNIError", "_bad", "_io_error"}
WORDERS = {"errno_text", "errno_of", "from_os_error", "_io_error"}  # _io_error words it with errno_text
CNI_ERROR_FIELDS = ("msg", "code", "details")  # re-wrapping a CNIError is not showing a Python repr
# The one place a non-OS exception's text is shown: skel's "this is a bug" error, reached only
# when errno_of(exc) is None (an OSError or NetlinkError is worded by from_os_error there).
ALLOWED = {("cni/skel.py", "internal error")}


def _names(node: ast.AST | None) -> set[str]:
    if node is None:
        return {"BaseException"}
    out = set()
    for sub in ast.walk(node):
        if isinstance(sub, ast.Name):
            out.add(sub.id)
        elif isinstance(sub, ast.Attribute):
            out.add(sub.attr)
    return out


def _files():
    for dirpath, _dirs, files in os.walk(ROOT):
        if "flanneld" in dirpath:
            continue  # flanneld's errors are not CNI errors
        for name in files:
            if name.endswith(".py"):
                path = os.path.join(dirpath, name)
                yield os.path.relpath(path, ROOT), ast.parse(open(path).read())


def handlers():
    for where, tree in _files():
        for node in ast.walk(tree):
            if isinstance(node, ast.ExceptHandler) and _names(node.type) & OS_ERRORS:
                calls = [c for stmt in node.body for c in ast.walk(stmt)
                         if isinstance(c, ast.Call) and getattr(c.func, "id", None) in BUILDERS | {"from_os_error"}]
                if calls:
                    yield where, node, calls


HANDLERS = list(handlers())


def test_the_walk_finds_the_places() -> None:
    assert len(HANDLERS) >= 12


def _raw_uses(expr: ast.AST, exc_name: str) -> list[str]:
    """Uses of the caught exception in ``expr`` that are not inside errno_text(...)/from_os_error(...)."""
    bad: list[str] = []

    def visit(node: ast.AST, worded: bool) -> None:
        if isinstance(node, ast.Call) and getattr(node.func, "id", None) in WORDERS:
            worded = True
        if isinstance(node, ast.Attribute) and node.attr in ("strerror", "args") and not worded:
            bad.append(ast.unparse(node))
        if isinstance(node, ast.Attribute) and node.attr in CNI_ERROR_FIELDS:
            return
        if isinstance(node, ast.Name) and node.id == exc_name and not worded:
            bad.append(node.id)
        for child in ast.iter_child_nodes(node):
            visit(child, worded)

    visit(expr, False)
    return bad


@pytest.mark.parametrize("where,handler,calls", HANDLERS, ids=[f"{w}:{h.lineno}" for w, h, _ in HANDLERS])
def test_os_errors_become_words(where, handler, calls) -> None:
    """Catches: "(101, 'Network is unreachable')" and "NetlinkError: (95, ...)" in runtime-facing messages."""
    for call in calls:
        text = ast.unparse(call)
        if any(where == w and marker in text for w, marker in ALLOWED):
            continue
        if call.func.id in WORDERS:
            continue  # words the errno itself
        bad = [u for arg in call.args for u in _raw_uses(arg, handler.name or "")]
        assert not bad, f"{where}:{call.lineno}: {text} shows {bad} raw; use errno_text(exc) or from_os_error"


def step_calls():
    for where, tree in _files():
        for node in ast.walk(tree):
            if isinstance(node, ast.Call) and getattr(node.func, "id", None) in ("kernel_step", "from_os_error"):
                yield where, node


STEPS = list(step_calls())


@pytest.mark.parametrize("where,call", STEPS, ids=[f"{w}:{c.lineno}" for w, c in STEPS])
def test_every_kernel_step_says_what_and_how_to_fix(where, call) -> None:
    if where == "cni/errors.py":
        return  # the definitions
    doing = call.args[0]
    fix = call.args[2] if call.func.id == "from_os_error" else call.args[1]
    for part in (doing, fix):
        assert not (isinstance(part, ast.Constant) and len(str(part.value)) < 8), f"{where}:{call.lineno}"


def test_there_are_kernel_steps() -> None:
    assert len([1 for w, _ in STEPS if w.startswith("plugins/bridge")]) >= 10


@pytest.mark.parametrize("code,text", [
    (errno.ENETUNREACH, "network is unreachable (ENETUNREACH)"),
    (errno.EOPNOTSUPP, "operation not supported (EOPNOTSUPP)"),
    (errno.ENOENT, "no such file or directory (ENOENT)"),
    (errno.ENOSPC, "no space left on device (ENOSPC)"),
])
def test_errno_text(code: int, text: str) -> None:
    assert errno_text(code) == text
    assert errno_text(OSError(code, os.strerror(code))) == text


def test_route_error_has_the_reference_message_and_the_errno() -> None:
    err = from_os_error("add route '192.168.244.0/24 via 10.1.17.20 dev eth0'", OSError(errno.ENETUNREACH, "x"),
                        "check ipam.routes")
    assert err.msg == "failed to add route '192.168.244.0/24 via 10.1.17.20 dev eth0': network is unreachable " \
                      "(ENETUNREACH)"
    assert err.details == "check ipam.routes"


@pytest.mark.parametrize("code", [errno.EOPNOTSUPP, errno.EAFNOSUPPORT, errno.EPROTONOSUPPORT])
def test_missing_kernel_feature_names_feature_option_and_fix(code: int) -> None:
    """Catches: a kernel without a feature reported as "a bug in cni-flannel" (code 999)."""
    with pytest.raises(CNIError) as err:
        with kernel_step("create bridge 'cni0'", "check the bridge", feature="bridge VLAN filtering", option="vlan"):
            raise OSError(code, os.strerror(code))
    e = err.value
    assert e.code == 2 and "bug" not in str(e)
    assert e.msg.startswith("failed to create bridge 'cni0': this kernel lacks bridge VLAN filtering: ")
    assert "vlan asks for bridge VLAN filtering" in e.details and "remove vlan" in e.details


class FakeNetlinkError(Exception):
    def __init__(self, code: int) -> None:
        super().__init__(code, os.strerror(code))
        self.code = code


FakeNetlinkError.__name__ = "NetlinkError"


def test_netlink_errors_are_worded_too() -> None:
    with pytest.raises(CNIError) as err:
        with kernel_step("set 'eth0' up", "check the container"):
            raise FakeNetlinkError(errno.ENODEV)
    assert err.value.msg == "failed to set 'eth0' up: no such device (ENODEV)"
    assert "NetlinkError" not in str(err.value) and "(19," not in str(err.value)
