"""A light stand-in for ``dataclasses`` on the hot path.

``@dataclass`` compiles ``__init__``, ``__repr__`` and ``__eq__`` with exec() at
import time (about a millisecond per class, several more when frozen), and
``import dataclasses`` pulls in ``inspect``. Every plugin exec paid ~20 ms for
the 20-odd record classes. ``record`` builds the same three methods from
closures instead, with no code generation; ``dataclass_transform`` keeps mypy's
checking of constructor calls.
"""
from __future__ import annotations

TYPE_CHECKING = False
if TYPE_CHECKING:  # typing costs ~2 ms per frozen exec; mypy alone needs these
    from typing import Any, TypeVar, dataclass_transform

    _T = TypeVar("_T")
else:
    def dataclass_transform(**_kwargs: object) -> object:
        return lambda f: f
_MISSING: Any = object()


class _Field:
    __slots__ = ("default", "default_factory")

    def __init__(self, default: Any, default_factory: Any) -> None:
        self.default = default
        self.default_factory = default_factory


def field(*, default: Any = _MISSING, default_factory: Any = _MISSING) -> Any:
    return _Field(default, default_factory)


@dataclass_transform(field_specifiers=(field,))
def record(cls: type[_T]) -> type[_T]:
    names: list[str] = []
    defaults: dict[str, Any] = {}
    factories: dict[str, Any] = {}
    for name, annotation in cls.__dict__.get("__annotations__", {}).items():  # noqa: RUF063 - no inspect
        if "ClassVar" in str(annotation):
            continue
        names.append(name)
        if name in cls.__dict__:
            value = cls.__dict__[name]
            if isinstance(value, _Field):
                if value.default_factory is not _MISSING:
                    factories[name] = value.default_factory
                elif value.default is not _MISSING:
                    defaults[name] = value.default
                delattr(cls, name)
            else:
                defaults[name] = value
    fields = tuple(names)

    def __init__(self: Any, *args: Any, **kwargs: Any) -> None:  # noqa: N807
        if len(args) > len(fields):
            raise TypeError(f"{cls.__name__}() takes {len(fields)} arguments, got {len(args)}")
        for name, value in zip(fields, args, strict=False):
            setattr(self, name, value)
        for name in fields[len(args):]:
            if name in kwargs:
                setattr(self, name, kwargs.pop(name))
            elif name in factories:
                setattr(self, name, factories[name]())
            elif name in defaults:
                setattr(self, name, defaults[name])
            else:
                raise TypeError(f"{cls.__name__}() missing argument {name!r}")
        if kwargs:
            raise TypeError(f"{cls.__name__}() got unexpected arguments {sorted(kwargs)}")
        post = getattr(self, "__post_init__", None)
        if post is not None:
            post()

    def __repr__(self: Any) -> str:  # noqa: N807
        return f"{cls.__name__}({', '.join(f'{n}={getattr(self, n)!r}' for n in fields)})"

    def __eq__(self: Any, other: Any) -> bool:  # noqa: N807
        if other.__class__ is not self.__class__:
            return NotImplemented
        return all(getattr(self, n) == getattr(other, n) for n in fields)

    cls.__init__ = __init__  # type: ignore[misc,method-assign]
    cls.__repr__ = __repr__  # type: ignore[assignment,method-assign]
    cls.__eq__ = __eq__  # type: ignore[assignment,method-assign]
    cls.__hash__ = None  # type: ignore[assignment]
    cls.__record_fields__ = fields  # type: ignore[attr-defined]
    return cls


def replace(obj: _T, **changes: Any) -> _T:
    values = {n: getattr(obj, n) for n in obj.__record_fields__}  # type: ignore[attr-defined]
    values.update(changes)
    return type(obj)(**values)
