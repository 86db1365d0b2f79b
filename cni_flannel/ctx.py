"""``contextmanager`` for the plugins' hot path, without importing contextlib (~0.5 ms per frozen exec).

mypy checks callers against contextlib's own signature; at run time a generator function becomes
a context manager with contextlib's semantics for what our generators do: yield once, run their
``finally`` on the way out, and let an exception raised in the body through, swallow it, or raise
another in its place.
"""
from __future__ import annotations

TYPE_CHECKING = False
if TYPE_CHECKING:
    from contextlib import contextmanager as contextmanager
else:
    class _GeneratorContext:
        __slots__ = ("_gen",)

        def __init__(self, gen):
            self._gen = gen

        def __enter__(self):
            try:
                return next(self._gen)
            except StopIteration:
                raise RuntimeError("generator didn't yield") from None

        def __exit__(self, typ, value, tb):
            if typ is None:
                try:
                    next(self._gen)
                except StopIteration:
                    return False
                raise RuntimeError("generator didn't stop")
            if value is None:
                value = typ()
            try:
                self._gen.throw(value)
            except StopIteration as exc:
                return exc is not value  # the generator swallowed the exception
            except BaseException as exc:
                if exc is value:
                    exc.__traceback__ = tb
                    return False
                raise
            raise RuntimeError("generator didn't stop after throw()")

    def contextmanager(func):
        def helper(*args, **kwargs):
            return _GeneratorContext(func(*args, **kwargs))

        helper.__name__ = func.__name__
        helper.__qualname__ = func.__qualname__
        helper.__doc__ = func.__doc__
        helper.__wrapped__ = func
        return helper
