"""json.loads and json.dumps for the plugins' hot path, on the C accelerator ``_json`` alone.

``import json`` costs ~6.5 ms per frozen plugin exec: json.decoder and json.scanner
import ``re``, which pulls in enum, functools and collections. ``_json`` alone costs
~0.1 ms. ``loads`` and ``dumps`` return exactly what json's return; whatever they do
not handle themselves (unusual input, every error) goes to json, imported only then,
so results and exceptions stay json's.
"""
from __future__ import annotations

import _json
import sys

TYPE_CHECKING = False
if TYPE_CHECKING:  # annotations only: typing costs ~2 ms per frozen exec
    from collections.abc import Callable
    from typing import Any

_WS = " \t\n\r"  # json.decoder.WHITESPACE
# json.decoder._CONSTANTS: what the scanner's parse_constant gives for NaN, Infinity, -Infinity
_CONSTANTS = {"-Infinity": float("-inf"), "Infinity": float("inf"), "NaN": float("nan")}
# json.detect_encoding: input starting with one of these is not plain UTF-8
_BOMS = (b"\xef\xbb\xbf", b"\xfe\xff", b"\xff\xfe")
# json's floatstr (allow_nan=True): float.__repr__ except for these three
_FLOAT_WORDS = {"nan": "NaN", "inf": "Infinity", "-inf": "-Infinity"}


class _Context:
    """What _json.make_scanner reads from a JSONDecoder (it keeps its own key memo)."""

    __slots__ = ("object_pairs_hook",)
    strict = True
    object_hook = None
    parse_float = float  # float and int themselves select the scanner's C number parsing
    parse_int = int
    parse_constant = _CONSTANTS.__getitem__

    def __init__(self, object_pairs_hook: Callable[[list[tuple[str, Any]]], Any] | None) -> None:
        self.object_pairs_hook = object_pairs_hook


_SCAN = _json.make_scanner(_Context(None))  # type: ignore[arg-type]


def _json_loads(data: Any, hook: Callable[[list[tuple[str, Any]]], Any] | None) -> Any:
    import json  # fallback only: json's own result or exception

    return json.loads(data, object_pairs_hook=hook)


def loads(data: str | bytes | bytearray, *,
          object_pairs_hook: Callable[[list[tuple[str, Any]]], Any] | None = None) -> Any:
    """``json.loads(data, object_pairs_hook=...)``: the same value, or the same exception."""
    # Exact types: a subclass's own methods are json's business.
    if type(data) is str:  # a leading BOM stops the scanner at once: json's BOM error, below
        text = data
    elif (type(data) is bytes or type(data) is bytearray) and not data.startswith(_BOMS) and 0 not in data[:4]:
        try:  # what json.detect_encoding calls UTF-8 (no BOM, no UTF-16/32 NUL pattern)
            text = data.decode("utf-8", "surrogatepass")
        except UnicodeDecodeError:
            return _json_loads(data, object_pairs_hook)
    else:  # other encodings, other types, subclasses
        return _json_loads(data, object_pairs_hook)
    scan = _SCAN if object_pairs_hook is None else _json.make_scanner(_Context(object_pairs_hook))  # type: ignore[arg-type]
    try:
        # A malformed value raises JSONDecodeError from this same C scanner, after the same hook
        # calls, exactly as under json.loads: it propagates as it is, once json.decoder is loaded.
        obj, end = scan(text, len(text) - len(text.lstrip(_WS)))
        if end == len(text.rstrip(_WS)):
            return obj
    except StopIteration:  # no value where one must start
        pass
    except SystemError:
        # The scanner looks JSONDecodeError up in sys.modules["json.decoder"] without importing it
        # (CPython 3.11 raise_errmsg): before json is loaded, a malformed value surfaces as
        # SystemError. json itself then words it; a hook sees the document a second time.
        if "json.decoder" in sys.modules:
            raise
        return _json_loads(data, object_pairs_hook)
    # json's own error ("Expecting value", "Extra data", the BOM) from json itself; without the hook,
    # which has already seen the objects json would show it (it cannot move where parsing stops).
    return _json_loads(data, None)


class _Unsupported(Exception):
    """A value this module's encoders leave to json."""


def _refuse(obj: Any) -> Any:
    """The C encoder's ``default``: json.dumps, not us, reports an unserializable object."""
    raise _Unsupported(type(obj))


def dumps(obj: Any, *, indent: int | None = None, separators: tuple[str, str] | None = None,
          sort_keys: bool = False, ensure_ascii: bool = True, default: Callable[[Any], Any] | None = None) -> str:
    """``json.dumps`` with these arguments: the same text, or the same exception."""
    seps = separators if separators is not None else (", ", ": ") if indent is None else (",", ": ")
    if (default is None and (indent is None or type(indent) is int) and type(seps) is tuple and len(seps) == 2
            and type(seps[0]) is str and type(seps[1]) is str):
        esc = _json.encode_basestring_ascii if ensure_ascii else _json.encode_basestring
        try:
            if indent is None:  # json's own C encoder, as json.dumps uses it (it has no indent in 3.11)
                encoder = _json.make_encoder({}, _refuse, esc, None, seps[1], seps[0], bool(sort_keys), False, True)
                return "".join(encoder(obj, 0))
            return _encode(obj, seps[0], seps[1], " " * indent, bool(sort_keys), esc)
        except Exception:  # a type left to json, a cycle, an int too long for str(): json raises its own error
            pass
    import json  # fallback only

    return json.dumps(obj, indent=indent, separators=separators, sort_keys=sort_keys, ensure_ascii=ensure_ascii,
                      default=default)


def _encode(obj: Any, item_sep: str, key_sep: str, indent: str, sort_keys: bool, esc: Callable[[str], str]) -> str:
    """json's indented layout (its pure-Python path), for exact builtin types only: no user code
    runs, so falling back to json after a partial encoding has no side effect to repeat."""
    parts: list[str] = []
    put = parts.append

    def enc(o: Any, level: int) -> None:
        kind = type(o)
        if kind is str:
            put(esc(o))
        elif o is None:
            put("null")
        elif o is True:
            put("true")
        elif o is False:
            put("false")
        elif kind is int:
            put(int.__repr__(o))
        elif kind is float:
            text = float.__repr__(o)
            put(_FLOAT_WORDS.get(text, text))
        elif kind is dict or kind is list or kind is tuple:
            if not o:
                put("{}" if kind is dict else "[]")
                return
            # json: each member on its own line, one level deeper; the closer back at this level
            head = "\n" + indent * (level + 1)
            sep = item_sep + head
            if kind is dict:
                for key in o:
                    if type(key) is not str:
                        raise _Unsupported(key)
                put("{" + head)
                for i, (key, value) in enumerate(sorted(o.items()) if sort_keys else o.items()):
                    put((sep if i else "") + esc(key) + key_sep)
                    enc(value, level + 1)
                put("\n" + indent * level + "}")
            else:
                put("[" + head)
                for i, value in enumerate(o):
                    if i:
                        put(sep)
                    enc(value, level + 1)
                put("\n" + indent * level + "]")
        else:
            raise _Unsupported(kind)

    enc(obj, 0)
    return "".join(parts)
