"""The test API server's three patch types over the documented examples (pure logic, no server).

RFC 7386 Appendix A, RFC 6902 Appendix A, and the strategic merge patch rules of
apimachinery's strategicpatch (community/contributors/devel/sig-api-machinery/strategic-merge-patch.md)
applied with the core/v1 Node's patch metadata.
"""
from __future__ import annotations

import copy
import json
from typing import Any

import pytest
from kubeapi.patch import (
    NODE,
    Field,
    PatchConflict,
    PatchError,
    json_equal,
    json_patch,
    merge_patch,
    strategic_merge_patch,
)

# -- RFC 7386 Appendix A: (original, patch, result) ------------------------------------------

RFC7386 = [
    ({"a": "b"}, {"a": "c"}, {"a": "c"}),
    ({"a": "b"}, {"b": "c"}, {"a": "b", "b": "c"}),
    ({"a": "b"}, {"a": None}, {}),
    ({"a": "b", "b": "c"}, {"a": None}, {"b": "c"}),
    ({"a": ["b"]}, {"a": "c"}, {"a": "c"}),
    ({"a": "c"}, {"a": ["b"]}, {"a": ["b"]}),
    ({"a": {"b": "c"}}, {"a": {"b": "d", "c": None}}, {"a": {"b": "d"}}),
    ({"a": [{"b": "c"}]}, {"a": [1]}, {"a": [1]}),
    (["a", "b"], ["c", "d"], ["c", "d"]),
    ({"a": "b"}, ["c"], ["c"]),
    ({"a": "foo"}, None, None),
    ({"a": "foo"}, "bar", "bar"),
    ({"e": None}, {"a": 1}, {"e": None, "a": 1}),
    ([1, 2], {"a": "b", "c": None}, {"a": "b"}),
    ({}, {"a": {"bb": {"ccc": None}}}, {"a": {"bb": {}}}),
]


@pytest.mark.parametrize(("original", "patch", "result"), RFC7386)
def test_merge_patch_rfc7386_appendix_a(original: Any, patch: Any, result: Any) -> None:
    before = copy.deepcopy(original)
    assert merge_patch(original, patch) == result
    assert original == before  # the input is not modified


def test_merge_patch_rfc7386_section3_example() -> None:
    target = {"title": "Goodbye!", "author": {"givenName": "John", "familyName": "Doe"},
              "tags": ["example", "sample"], "content": "This will be unchanged"}
    patch = {"title": "Hello!", "phoneNumber": "+01-123-456-7890", "author": {"familyName": None}, "tags": ["example"]}
    assert merge_patch(target, patch) == {
        "title": "Hello!", "author": {"givenName": "John"}, "tags": ["example"],
        "content": "This will be unchanged", "phoneNumber": "+01-123-456-7890"}


# -- RFC 6902 Appendix A ------------------------------------------------------------------------

RFC6902_OK = [
    # A.1 .. A.10, A.14, A.16
    ({"foo": "bar"}, [{"op": "add", "path": "/baz", "value": "qux"}], {"baz": "qux", "foo": "bar"}),
    ({"foo": ["bar", "baz"]}, [{"op": "add", "path": "/foo/1", "value": "qux"}], {"foo": ["bar", "qux", "baz"]}),
    ({"baz": "qux", "foo": "bar"}, [{"op": "remove", "path": "/baz"}], {"foo": "bar"}),
    ({"foo": ["bar", "qux", "baz"]}, [{"op": "remove", "path": "/foo/1"}], {"foo": ["bar", "baz"]}),
    ({"baz": "qux", "foo": "bar"}, [{"op": "replace", "path": "/baz", "value": "boo"}], {"baz": "boo", "foo": "bar"}),
    ({"foo": {"bar": "baz", "waldo": "fred"}, "qux": {"corge": "grault"}},
     [{"op": "move", "from": "/foo/waldo", "path": "/qux/thud"}],
     {"foo": {"bar": "baz"}, "qux": {"corge": "grault", "thud": "fred"}}),
    ({"foo": ["all", "grass", "cows", "eat"]}, [{"op": "move", "from": "/foo/1", "path": "/foo/3"}],
     {"foo": ["all", "cows", "eat", "grass"]}),
    ({"baz": "qux", "foo": ["a", 2, "c"]},
     [{"op": "test", "path": "/baz", "value": "qux"}, {"op": "test", "path": "/foo/1", "value": 2}],
     {"baz": "qux", "foo": ["a", 2, "c"]}),
    ({"foo": "bar"}, [{"op": "add", "path": "/child", "value": {"grandchild": {}}}],
     {"foo": "bar", "child": {"grandchild": {}}}),
    ({"foo": "bar"}, [{"op": "add", "path": "/baz", "value": "qux", "xyz": 123}], {"foo": "bar", "baz": "qux"}),
    ({"/": 9, "~1": 10}, [{"op": "test", "path": "/~01", "value": 10}], {"/": 9, "~1": 10}),
    ({"foo": ["bar"]}, [{"op": "add", "path": "/foo/-", "value": ["abc", "def"]}], {"foo": ["bar", ["abc", "def"]]}),
    # copy (section 4.5) and whole-document replace
    ({"a": {"b": 1}}, [{"op": "copy", "from": "/a", "path": "/c"}], {"a": {"b": 1}, "c": {"b": 1}}),
    ({"a": 1}, [{"op": "replace", "path": "", "value": {"b": 2}}], {"b": 2}),
]


@pytest.mark.parametrize(("doc", "ops", "result"), RFC6902_OK)
def test_json_patch_rfc6902_appendix_a(doc: Any, ops: list[Any], result: Any) -> None:
    before = copy.deepcopy(doc)
    assert json_patch(doc, ops) == result
    assert doc == before


RFC6902_FAIL = [
    ({"foo": "bar"}, [{"op": "add", "path": "/baz/bat", "value": "qux"}]),  # A.12: no parent
    ({"/": 9, "~1": 10}, [{"op": "test", "path": "/~01", "value": "10"}]),  # A.15: string vs number
    ({"baz": "qux"}, [{"op": "test", "path": "/baz", "value": "bar"}]),  # A.9
    ({"a": 1}, [{"op": "remove", "path": "/b"}]),
    ({"a": 1}, [{"op": "replace", "path": "/b", "value": 2}]),  # replace needs an existing target
    ({"a": [1]}, [{"op": "add", "path": "/a/2", "value": 2}]),  # index past the end
    ({"a": [1]}, [{"op": "add", "path": "/a/01", "value": 2}]),  # leading zero
    ({"a": {"b": 1}}, [{"op": "move", "from": "/a", "path": "/a/b/c"}]),  # into its own child
    ({"a": 1}, [{"op": "frobnicate", "path": "/a"}]),
    ({"a": 1}, [{"op": "add", "path": "/b"}]),  # add without value
    ({"a": True}, [{"op": "test", "path": "/a", "value": 1}]),  # JSON true is not 1
]


@pytest.mark.parametrize(("doc", "ops"), RFC6902_FAIL)
def test_json_patch_errors_are_conflicts_and_atomic(doc: Any, ops: list[Any]) -> None:
    before = copy.deepcopy(doc)
    with pytest.raises(PatchConflict):
        json_patch(doc, [{"op": "add", "path": "/marker", "value": 1}, *ops])
    assert doc == before


def test_json_patch_that_is_not_an_array_is_malformed() -> None:
    with pytest.raises(PatchError):
        json_patch({}, {"op": "add", "path": "/a", "value": 1})
    with pytest.raises(PatchError):
        json_patch({}, ["add"])


def test_json_equal_follows_json_not_python() -> None:
    assert json_equal(1, 1.0)
    assert not json_equal(True, 1)
    assert not json_equal({"a": [False]}, {"a": [0]})
    assert json_equal({"a": [1, {"b": None}]}, {"a": [1.0, {"b": None}]})


# -- strategic merge patch, Node metadata -------------------------------------------------------


def node() -> dict[str, Any]:
    return {
        "apiVersion": "v1", "kind": "Node",
        "metadata": {"name": "n1", "labels": {"a": "1"}, "annotations": {"keep": "x", "drop": "y"},
                     "finalizers": ["f1", "f2"]},
        "spec": {"podCIDR": "10.244.1.0/24", "podCIDRs": ["10.244.1.0/24"],
                 "taints": [{"key": "k1", "effect": "NoSchedule"}]},
        "status": {
            "addresses": [{"type": "InternalIP", "address": "192.168.77.1"}, {"type": "Hostname", "address": "n1"}],
            "conditions": [{"type": "MemoryPressure", "status": "False"}, {"type": "Ready", "status": "True",
                                                                          "reason": "KubeletReady"}],
        },
    }


def smp(patch: Any, original: dict[str, Any] | None = None) -> dict[str, Any]:
    original = node() if original is None else original
    before = copy.deepcopy(original)
    out = strategic_merge_patch(original, patch, NODE)
    assert original == before
    return out


def test_smp_flannel_annotations_merge_into_the_map() -> None:
    """reference §6.2: the two-way patch flannel sends to nodes/<n>/status."""
    out = smp({"metadata": {"annotations": {"flannel.alpha.coreos.com/backend-type": "vxlan",
                                            "flannel.alpha.coreos.com/public-ip": "192.168.77.1"}}})
    assert out["metadata"]["annotations"] == {"keep": "x", "drop": "y",
                                              "flannel.alpha.coreos.com/backend-type": "vxlan",
                                              "flannel.alpha.coreos.com/public-ip": "192.168.77.1"}
    assert out["status"] == node()["status"]


def test_smp_null_deletes_a_key_and_a_null_for_a_missing_key_is_dropped() -> None:
    out = smp({"metadata": {"annotations": {"drop": None, "never-there": None}}})
    assert out["metadata"]["annotations"] == {"keep": "x"}


def test_smp_network_unavailable_condition_merges_by_type() -> None:
    """reference §6.5: a new condition type joins the list; the live ones stay untouched."""
    cond = {"type": "NetworkUnavailable", "status": "False", "reason": "FlannelIsUp",
            "message": "Flannel is running on this node", "lastHeartbeatTime": "2024-01-01T00:00:00Z",
            "lastTransitionTime": "2024-01-01T00:00:00Z"}
    out = smp({"status": {"conditions": [cond]}})
    # mergeSlice + normalizeElementOrder: the new item has no live position, so it goes first.
    assert [c["type"] for c in out["status"]["conditions"]] == ["NetworkUnavailable", "MemoryPressure", "Ready"]
    assert out["status"]["conditions"][0] == cond
    assert out["status"]["conditions"][2] == {"type": "Ready", "status": "True", "reason": "KubeletReady"}
    # patching it again changes only that element's fields, in place
    again = smp({"status": {"conditions": [{"type": "NetworkUnavailable", "status": "True"}]}}, out)
    assert [c["type"] for c in again["status"]["conditions"]] == ["NetworkUnavailable", "MemoryPressure", "Ready"]
    assert again["status"]["conditions"][0] == {**cond, "status": "True"}


def test_smp_patch_order_wins_over_live_order_for_patched_items() -> None:
    out = smp({"status": {"conditions": [{"type": "Ready", "status": "False"},
                                         {"type": "MemoryPressure", "status": "True"}]}})
    assert [(c["type"], c["status"]) for c in out["status"]["conditions"]] == [("Ready", "False"),
                                                                               ("MemoryPressure", "True")]


def test_smp_delete_directive_in_a_merging_list() -> None:
    out = smp({"status": {"conditions": [{"type": "MemoryPressure", "$patch": "delete"}]}})
    assert [c["type"] for c in out["status"]["conditions"]] == ["Ready"]


def test_smp_replace_directive_in_a_merging_list() -> None:
    out = smp({"status": {"addresses": [{"type": "InternalIP", "address": "10.0.0.9"}, {"$patch": "replace"}]}})
    assert out["status"]["addresses"] == [{"type": "InternalIP", "address": "10.0.0.9"}]


def test_smp_replace_and_delete_directives_on_maps() -> None:
    out = smp({"metadata": {"labels": {"$patch": "replace", "b": "2"}}})
    assert out["metadata"]["labels"] == {"b": "2"}
    out = smp({"metadata": {"annotations": {"$patch": "delete"}}})
    assert out["metadata"]["annotations"] == {}  # apimachinery leaves an empty map
    with pytest.raises(PatchError):
        smp({"metadata": {"labels": {"$patch": "frob"}}})


def test_smp_lists_without_a_strategy_are_replaced() -> None:
    out = smp({"spec": {"taints": [{"key": "k2", "effect": "NoExecute"}]}})
    assert out["spec"]["taints"] == [{"key": "k2", "effect": "NoExecute"}]


def test_smp_pod_cidrs_is_a_merging_set_of_strings() -> None:
    """k8s.io/api core/v1: NodeSpec.PodCIDRs carries patchStrategy:"merge"."""
    out = smp({"spec": {"podCIDRs": ["fd00:10:244:1::/64", "10.244.1.0/24"]}})
    assert out["spec"]["podCIDRs"] == ["fd00:10:244:1::/64", "10.244.1.0/24"]
    out = smp({"spec": {"podCIDRs": ["fd00:10:244:1::/64"]}})
    assert out["spec"]["podCIDRs"] == ["fd00:10:244:1::/64", "10.244.1.0/24"]  # new first, live kept
    # a JSON merge patch, by contrast, replaces the list
    assert merge_patch(node(), {"spec": {"podCIDRs": ["fd00::/64"]}})["spec"]["podCIDRs"] == ["fd00::/64"]


def test_smp_delete_from_primitive_list_and_set_element_order() -> None:
    out = smp({"metadata": {"$deleteFromPrimitiveList/finalizers": ["f1"]}})
    assert out["metadata"]["finalizers"] == ["f2"]
    out = smp({"metadata": {"$setElementOrder/finalizers": ["f2", "f3", "f1"], "finalizers": ["f3"]}})
    assert out["metadata"]["finalizers"] == ["f2", "f3", "f1"]
    out = smp({"status": {"$setElementOrder/conditions": [{"type": "Ready"}, {"type": "MemoryPressure"}]}})
    assert [c["type"] for c in out["status"]["conditions"]] == ["Ready", "MemoryPressure"]


def test_smp_retain_keys() -> None:
    schema = Field(fields={"strategy": Field()})
    out = strategic_merge_patch({"strategy": {"type": "A", "rollingUpdate": {"x": 1}}},
                                {"strategy": {"$retainKeys": ["type"], "type": "B"}}, schema)
    assert out == {"strategy": {"type": "B"}}
    with pytest.raises(PatchError):
        strategic_merge_patch({"s": {"a": 1}}, {"s": {"$retainKeys": ["a"], "b": 2}}, Field())


def test_smp_top_level_replace_and_type_change() -> None:
    assert smp({"$patch": "replace", "metadata": {"name": "n1"}}) == {"metadata": {"name": "n1"}}
    out = smp({"spec": {"taints": "weird"}})  # a value of another type replaces
    assert out["spec"]["taints"] == "weird"


def test_smp_malformed_patches() -> None:
    with pytest.raises(PatchError):  # a merging list of maps needs the merge key
        smp({"status": {"conditions": [{"status": "True"}]}})
    with pytest.raises(PatchError):
        smp({"status": {"conditions": [{"type": "X"}, "not-a-map"]}})
    with pytest.raises(PatchError):
        smp(["not", "an", "object"])


def test_smp_new_list_keeps_its_items_and_drops_directives() -> None:
    original = node()
    del original["status"]["conditions"]
    out = smp({"status": {"conditions": [{"type": "A", "status": "True"}, {"type": "B", "$patch": "delete"}]}},
              original)
    assert out["status"]["conditions"] == [{"type": "A", "status": "True"}]


def test_the_three_patch_types_agree_on_an_annotation_change() -> None:
    want = {**node()["metadata"]["annotations"], "k": "v"}
    assert smp({"metadata": {"annotations": {"k": "v"}}})["metadata"]["annotations"] == want
    assert merge_patch(node(), {"metadata": {"annotations": {"k": "v"}}})["metadata"]["annotations"] == want
    ops = json.loads('[{"op":"add","path":"/metadata/annotations/k","value":"v"}]')
    assert json_patch(node(), ops)["metadata"]["annotations"] == want
