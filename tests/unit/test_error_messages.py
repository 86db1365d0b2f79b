"""Every error a plugin can return says what is wrong and what to do (issue: messages that fix problems).

An AST scan of the package: each ``CNIError(code, msg, details)`` passes a code, a message and
non-empty details (the fix). The texts themselves are asserted in the tests of each plugin.
"""
from __future__ import annotations

import ast
import os

import pytest

ROOT = os.path.join(os.path.dirname(__file__), "..", "..", "cni_flannel")


def cni_error_calls():
    for dirpath, _dirs, files in os.walk(ROOT):
        for name in files:
            if not name.endswith(".py"):
                continue
            path = os.path.join(dirpath, name)
            tree = ast.parse(open(path).read())
            for node in ast.walk(tree):
                if isinstance(node, ast.Call) and getattr(node.func, "id", None) in ("CNIError", "_bad", "_io_error"):
                    yield os.path.relpath(path, ROOT), node


CALLS = list(cni_error_calls())


def test_there_are_many_errors_to_check() -> None:
    assert len(CALLS) > 80


@pytest.mark.parametrize("where,call", CALLS, ids=[f"{w}:{c.lineno}" for w, c in CALLS])
def test_error_has_a_message_and_a_fix(where, call) -> None:
    fn = call.func.id
    if fn == "_io_error":  # (path, exc, doing): the fix is chosen from the errno
        assert len(call.args) == 3
        return
    args = call.args
    if fn == "_bad":  # _bad([where,] msg, fix)
        assert len(args) in (2, 3), f"{where}:{call.lineno}: _bad(msg, fix)"
        msg, fix = args[-2:]
    else:
        assert len(args) == 3, f"{where}:{call.lineno}: CNIError(code, msg, details) needs the fix as details"
        _code, msg, fix = args
    for part, label in ((msg, "message"), (fix, "fix")):
        if isinstance(part, ast.Constant):
            assert isinstance(part.value, str) and len(part.value) > 8, f"{where}:{call.lineno}: empty {label}"
