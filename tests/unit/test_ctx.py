"""cni_flannel.ctx.contextmanager behaves as contextlib.contextmanager for the generator shapes we use."""
from __future__ import annotations

import contextlib
import sys

import pytest

from cni_flannel import ctx


def shapes(cm):  # type: ignore[no-untyped-def]
    log: list[str] = []

    @cm
    def plain():  # type: ignore[no-untyped-def]
        log.append("enter")
        try:
            yield 42
        finally:
            log.append("finally")

    @cm
    def swallow():  # type: ignore[no-untyped-def]
        try:
            yield "s"
        except KeyError:
            log.append("swallowed")

    @cm
    def transform():  # type: ignore[no-untyped-def]
        try:
            yield "t"
        except OSError as exc:
            raise ValueError("worded") from exc

    return log, plain, swallow, transform


def run(cm) -> list[object]:  # type: ignore[no-untyped-def]
    log, plain, swallow, transform = shapes(cm)
    out: list[object] = []
    with plain() as v:
        out.append(v)
    try:
        with plain():
            raise KeyError("k")
    except KeyError as exc:
        out.append(("propagated", repr(exc), exc.__traceback__ is not None))
    with swallow() as v:
        out.append(v)
        raise KeyError("gone")
    try:
        with swallow():
            raise IndexError("i")
    except IndexError as exc:
        out.append(("not swallowed", repr(exc)))
    try:
        with transform():
            raise OSError(2, "no such file")
    except ValueError as exc:
        out.append(("transformed", repr(exc), repr(exc.__cause__)))
    out.append(plain.__name__)
    return [*out, *log]


def test_same_outcomes_as_contextlib() -> None:
    assert run(ctx.contextmanager) == run(contextlib.contextmanager)


def test_a_generator_that_never_yields_is_an_error() -> None:
    @ctx.contextmanager
    def empty():  # type: ignore[no-untyped-def]
        if False:
            yield

    with pytest.raises(RuntimeError), empty():
        pass


def test_import_does_not_load_contextlib() -> None:
    import subprocess

    from harness import REPO

    code = f"import sys; sys.path.insert(0, {REPO!r}); import cni_flannel.ctx; print('contextlib' in sys.modules)"
    out = subprocess.run([sys.executable, "-I", "-S", "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
