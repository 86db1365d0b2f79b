"""cni_flannel.cni.jsonlite against json itself: the same text, values, hook calls and exceptions."""
from __future__ import annotations

import ast
import enum
import itertools
import json
import pathlib
import subprocess
import sys
from collections.abc import Callable
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from cni_flannel.cni import jsonlite

REPO = str(pathlib.Path(__file__).resolve().parents[2])

# Control characters, quotes, backslashes, BMP and astral text; no lone surrogates (codec="utf-8").
TEXT = st.text(st.sampled_from('\x00\x01\x1f\x7f"\\/\b\f\n\r\t \u2028\ufeffé€😀𝄞a') | st.characters(codec="utf-8"))
SCALARS = (st.none() | st.booleans() | st.integers() | st.integers(min_value=-2**200, max_value=2**200)
           | st.floats() | st.sampled_from([float("nan"), float("inf"), float("-inf"), -0.0, 0.0, 1e300, 5e-324])
           | TEXT)
VALUES = st.recursive(SCALARS, lambda inner: st.lists(inner, max_size=5) | st.lists(inner, max_size=3).map(tuple)
                      | st.dictionaries(TEXT, inner, max_size=5), max_leaves=25)

DUMPS_KW = [dict(indent=i, sort_keys=s, separators=p, ensure_ascii=a)
            for i, s, p, a in itertools.product([None, 0, 2, 4], [False, True], [None, (",", ":")], [True, False])]
WS = st.text(st.sampled_from(" \t\n\r"), max_size=3)

CNI_RESULT = {"cniVersion": "1.0.0",
              "interfaces": [{"name": "cni0", "mac": "aa:bb:cc:dd:ee:ff"},
                             {"name": "eth0", "mac": "0a:58:0a:f4:01:05", "sandbox": "/var/run/netns/cni-0f1e"}],
              "ips": [{"address": "10.244.1.5/24", "gateway": "10.244.1.1", "interface": 1}],
              "routes": [{"dst": "0.0.0.0/0", "gw": "10.244.1.1"}], "dns": {}, "mtu": 1450, "ratio": 0.5,
              "ok": True, "none": None, "name": "flännel\u2028"}


def outcome(call: Callable[[], Any]) -> tuple[Any, ...]:
    """A result as json text (NaN-aware, int vs float, -0.0), or an exception's type and message."""
    try:
        value = call()
    except Exception as exc:
        return ("error", type(exc), str(exc))
    return ("value", json.dumps(value))


def same_loads(data: Any, hook: Callable[[list[tuple[str, Any]]], Any] | None = None) -> None:
    want = outcome(lambda: json.loads(data, object_pairs_hook=hook))
    assert outcome(lambda: jsonlite.loads(data, object_pairs_hook=hook)) == want


@given(VALUES, st.sampled_from(DUMPS_KW))
def test_dumps_is_json_dumps(value: Any, kw: dict[str, Any]) -> None:
    assert jsonlite.dumps(value, **kw) == json.dumps(value, **kw)


@pytest.mark.parametrize("kw", DUMPS_KW, ids=str)
def test_dumps_every_option_combination(kw: dict[str, Any]) -> None:
    nested = {"b": [CNI_RESULT, [], {}, ()], "a": (1, [2, [3, {"z": {}, "y": [[]]}]])}
    assert jsonlite.dumps(nested, **kw) == json.dumps(nested, **kw)
    assert jsonlite.dumps("é\n", **kw) == json.dumps("é\n", **kw)


class Color(enum.IntEnum):
    RED = 1


class Ratio(float):
    def __repr__(self) -> str:
        return "ratio"


cyclic_list: list[Any] = [1]
cyclic_list.append(cyclic_list)
cyclic_dict: dict[str, Any] = {}
cyclic_dict["self"] = [cyclic_dict]


@pytest.mark.parametrize("value, kw", [
    ({1: "a", 2.5: "b", False: "c", None: "d"}, {}), ({1: "a", 2.5: "b", False: "c", None: "d"}, {"indent": 2}),
    ({"a": 1, 2: "b"}, {"sort_keys": True}), ({"a": 1, 2: "b"}, {"sort_keys": True, "indent": 2}),
    ([Color.RED, {"c": Color.RED}], {}), ([Color.RED], {"indent": 2}), ({Color.RED: 1}, {"indent": 1}),
    ([Ratio(0.5)], {}), ([Ratio(0.5)], {"indent": 4}), (Ratio(2.0), {"indent": 4}),
    ([object()], {}), ({"x": {1, 2}}, {"indent": 2}), (b"bytes", {}), ({"a": [1]}, {"indent": "\t"}),
    ({"a": [1]}, {"indent": True}), ({"a": [1, 2]}, {"separators": [";", "="]}),
    ({"a": [1, 2]}, {"separators": (1, 2)}), ({"when": object()}, {"default": lambda o: "an object"}),
    ({"when": object()}, {"default": repr, "indent": 2}), (cyclic_list, {}), (cyclic_list, {"indent": 2}),
    (cyclic_dict, {}), (cyclic_dict, {"indent": 2}), ([10**5000], {}), ([10**5000], {"indent": 2}),
    ([[[[]]]] * 3, {"indent": -2}),
])
def test_dumps_left_to_json_gives_json_result_or_error(value: Any, kw: dict[str, Any]) -> None:
    want = outcome(lambda: json.dumps(value, **kw))
    assert outcome(lambda: jsonlite.dumps(value, **kw)) == want


def test_dumps_deep_nesting_gives_json_recursion_error() -> None:
    deep: list[Any] = []
    for _ in range(100_000):
        deep = [deep]
    options: list[dict[str, Any]] = [{}, {"indent": 2}]
    for kw in options:
        want = outcome(lambda: json.dumps(deep, **kw))  # noqa: B023  # called at once
        assert want[:2] == ("error", RecursionError)
        assert outcome(lambda: jsonlite.dumps(deep, **kw)) == want  # noqa: B023


@settings(max_examples=200)
@given(VALUES, st.sampled_from(DUMPS_KW), WS, WS, WS, WS, WS, WS)
def test_loads_is_json_loads(value: Any, kw: dict[str, Any], lead: str, trail: str,
                             a: str, b: str, c: str, d: str) -> None:
    item, key = kw["separators"] or ((",", ": ") if kw["indent"] is not None else (", ", ": "))
    doc = lead + json.dumps(value, **{**kw, "separators": (a + item + b, c + key + d)}) + trail
    same_loads(doc)
    same_loads(doc.encode())
    same_loads(bytearray(doc.encode()))
    assert json.dumps(jsonlite.loads(doc), sort_keys=True) == json.dumps(value, sort_keys=True)  # it came back


def recorder() -> tuple[list[Any], Callable[[list[tuple[str, Any]]], Any]]:
    calls: list[Any] = []

    def hook(pairs: list[tuple[str, Any]]) -> Any:
        calls.append(list(pairs))
        return {"#": len(calls), "pairs": pairs}

    return calls, hook


def same_hook_calls(doc: Any) -> None:
    got_calls, got_hook = recorder()
    want_calls, want_hook = recorder()
    want = outcome(lambda: json.loads(doc, object_pairs_hook=want_hook))
    assert outcome(lambda: jsonlite.loads(doc, object_pairs_hook=got_hook)) == want
    assert json.dumps(got_calls) == json.dumps(want_calls)


@given(VALUES, st.sampled_from(["", "x", " ]", "{}", " 1", "\n\t", "\x00"]), st.booleans())
def test_object_pairs_hook_gets_json_calls(value: Any, tail: str, as_bytes: bool) -> None:
    doc = json.dumps({"v": value, "dup": 1, "v ": [{"dup": 2, "dup ": 3}]}) + tail
    same_hook_calls(doc.encode() if as_bytes else doc)


def test_object_pairs_hook_sees_repeated_keys_in_order() -> None:
    same_hook_calls('{"a": 1, "b": {"c": [], "c": {}}, "a": 2}')
    calls, hook = recorder()
    jsonlite.loads('{"a": 1, "a": 2}', object_pairs_hook=hook)
    assert calls == [[("a", 1), ("a", 2)]]


def test_a_failing_hook_raises_once_as_under_json() -> None:
    seen: list[Any] = []

    def hook(pairs: list[tuple[str, Any]]) -> Any:
        seen.append(pairs)
        raise LookupError(f"refused {pairs!r}")

    with pytest.raises(LookupError, match="refused") as info:
        jsonlite.loads('[{"k": 1}]', object_pairs_hook=hook)
    assert str(info.value) == "refused [('k', 1)]" and len(seen) == 1


@given(TEXT | st.text(st.characters(), max_size=8) | st.text(st.sampled_from('[]{}",:0-1.eE nulrtaNIfy\\'), max_size=8))
def test_random_text_fails_or_succeeds_as_json(text: str) -> None:
    same_loads(text)
    same_loads(text.encode("utf-8", "surrogatepass"))


@given(st.binary(max_size=12))
def test_random_bytes_fails_or_succeeds_as_json(data: bytes) -> None:
    same_loads(data)


@given(VALUES, st.data())
def test_truncated_and_trailing_garbage_fail_as_json(value: Any, data: st.DataObject) -> None:
    doc = json.dumps(value, ensure_ascii=False)
    cut = doc[:data.draw(st.integers(0, max(0, len(doc) - 1)))]
    for broken in (cut, doc + data.draw(st.text(min_size=1, max_size=4)), doc + " " + doc):
        same_loads(broken)
        same_loads(broken.encode())
        same_hook_calls(broken)


@pytest.mark.parametrize("data", [
    "", " ", "\n\t\r ", "\ufeff{}", "\ufeff", '{"a": 1} x', "[1, 2", "[1,]", '{"a" 1}', "nul", "NaNx", "01",
    '"\x01"', '"\\ud800"', "-Infinity", "[Infinity, NaN, -0, 1E400, -1e-400]", "1" * 5000, "\x0c1",
    b"", b"\xef\xbb\xbf{}", b"\xef\xbb\xbf", b"\xff\xfe", b'"\xed\xa0\x80"', b'"\xff"', b"\x80", b"1\x00",
    b"\x001", b"1\x00\x00", "[1]".encode("utf-16"), "[1]".encode("utf-16-le"), "[1]".encode("utf-16-be"),
    "[1]".encode("utf-32"), "[1]".encode("utf-32-le"), "[1]".encode("utf-32-be"), "[".encode("utf-16"),
    '"a"'.encode("utf-16-le"), '"a"'.encode("utf-16-be"), '"a"'.encode("utf-32-le"), '"a"'.encode("utf-32-be"),
    "\ufeff" + '"a"', "\ufeff" + "[1]" + "\ufeff", "[1]\ufeff", "\ufeff".encode() + b"[1]",
    '{"é": "€"}'.encode("utf-8-sig"), bytearray(b"[1, 2]"), bytearray("[1]".encode("utf-16")),
    None, 1, memoryview(b"[]"), ["[]"], "[" * 100_000, b"{" * 100_000,
])
def test_edge_inputs_give_json_result_or_error(data: Any) -> None:
    same_loads(data)
    same_hook_calls(data)


def test_subclasses_are_json_business() -> None:
    class Text(str):
        def lstrip(self, chars: str | None = None) -> str:
            raise AssertionError("jsonlite must not call this")

    same_loads(Text(' {"a": [1]} '))
    same_loads(type("Raw", (bytes,), {})(b"[1]"))


def test_import_hygiene_and_results_in_a_fresh_interpreter() -> None:
    """-I -S: no site, as in a frozen exec. json, re and enum stay out; then json shows the check works."""
    heavy = ("json", "re", "enum")
    code = (f"import sys; sys.path.insert(0, {REPO!r}); from cni_flannel.cni import jsonlite as j; "
            f"r = {CNI_RESULT!r}; "
            "out = [j.dumps(r, indent=4), j.dumps(r), j.dumps(j.loads(j.dumps(r).encode())), "
            "j.dumps(j.loads(' ' + j.dumps(r) + '\\n', object_pairs_hook=dict), sort_keys=True)]; "
            f"print(repr(out)); print(' '.join(m for m in {heavy!r} if m in sys.modules)); "
            "import json; "
            f"print(' '.join(m for m in {heavy!r} if m in sys.modules))")
    run = subprocess.run([sys.executable, "-I", "-S", "-c", code], cwd=REPO, capture_output=True, text=True,
                         check=True)
    texts, before, after = run.stdout.split("\n")[:3]
    assert before.split() == []
    assert set(after.split()) == set(heavy)  # the probe does see json when it is imported
    assert ast.literal_eval(texts) == [json.dumps(CNI_RESULT, indent=4), json.dumps(CNI_RESULT), json.dumps(CNI_RESULT),
                           json.dumps(CNI_RESULT, sort_keys=True)]


MALFORMED = ['{"type":"bri', "[1,2", '{"a":1,}', '"\\x"', '{"a" 1}', "[tru]", '{"cniVersion":"1.0.0",', "nul"]


def test_malformed_documents_in_a_process_that_never_imported_json() -> None:
    """The C scanner finds JSONDecodeError only in sys.modules: a plugin exec has no json loaded yet."""
    code = (f"import sys; sys.path.insert(0, {REPO!r}); from cni_flannel.cni import jsonlite as j\n"
            f"for d in {MALFORMED!r}:\n"
            "    try:\n        j.loads(d)\n    except Exception as e:\n        print(type(e).__name__, e)\n"
            "    try:\n        j.loads(d.encode(), object_pairs_hook=dict)\n"
            "    except Exception as e:\n        print(type(e).__name__, e)\n")
    got = subprocess.run([sys.executable, "-I", "-S", "-c", code], capture_output=True, text=True, check=True)
    want = []
    for d in MALFORMED:
        for args in ((d,), (d.encode(),)):
            try:
                json.loads(*args)
            except json.JSONDecodeError as e:
                want.append(f"JSONDecodeError {e}")
    assert got.stdout.splitlines() == want
