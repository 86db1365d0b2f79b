"""Config JSON decoded as Go's encoding/json decodes it (issue 20, part 1).

Go matches keys to struct fields ignoring case, lets the last spelling win and treats
``null`` as absent. The property test generates schema-valid configs for every plugin,
rewrites them as a Go runtime may send them (respelled keys, nulls, an earlier duplicate
spelling) and checks that the config a plugin sees is the canonical one. Before the fix
every respelled key was ignored and every null was a code-7 error.
"""
from __future__ import annotations

import importlib
import json
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from cni_flannel.__main__ import PLUGINS
from cni_flannel.cni.conf import parse_netconf
from cni_flannel.cni.env import CmdArgs
from cni_flannel.cni.errors import CNIError
from cni_flannel.cni.schemas import GO_MAP

SCHEMAS = {name: importlib.import_module(mod).PLUGIN.schema for name, mod in PLUGINS.items()}

SCALARS = st.one_of(st.booleans(), st.integers(0, 9), st.sampled_from(["a", "eth0", "10.1.0.0/24"]))


def _string(schema: dict) -> st.SearchStrategy:
    desc = schema.get("description", "")
    if "CIDR" in desc:
        return st.sampled_from(["10.1.0.0/24", "fd00::/64"])
    if "IP address" in desc:
        return st.sampled_from(["10.1.0.1", "fd00::1"])
    if schema.get("pattern") == "^/":
        return st.sampled_from(["/var/lib/x", "/run/flannel/subnet.env"])
    if "interface name" in desc:
        return st.sampled_from(["cni0", "br-x"])
    return st.text("abcXYZ-", min_size=max(1, schema.get("minLength", 0)), max_size=8)


def valid(schema: dict) -> st.SearchStrategy:
    """A value the schema accepts, reaching every listed key."""
    if "enum" in schema:
        return st.sampled_from(schema["enum"])
    t = schema.get("type")
    props = schema.get("properties")
    if props is not None and (t in (None, "object")):
        required = set(schema.get("required", ()))
        return st.fixed_dictionaries({k: valid(props[k]) for k in props if k in required},
                                     optional={k: valid(props[k]) for k in props if k not in required})
    if t == "object":
        return st.dictionaries(st.sampled_from(["Kx", "ky", "kZ"]), SCALARS, max_size=2)
    if t == "array" or "items" in schema:
        return st.lists(valid(schema.get("items", {})), min_size=schema.get("minItems", 0), max_size=2)
    if t == "string":
        return _string(schema)
    if t == "integer":
        return st.integers(schema.get("minimum", 0), schema.get("maximum", 100000))
    if t == "boolean":
        return st.booleans()
    return SCALARS


def is_struct(schema: dict) -> bool:
    return "properties" in schema and not schema.get(GO_MAP)


def respell(draw: Any, key: str) -> str:
    how = draw(st.sampled_from(["same", "lower", "upper", "swap", "title"]))
    return {"same": key, "lower": key.lower(), "upper": key.upper(), "swap": key.swapcase(),
            "title": key[:1].upper() + key[1:]}[how]


def to_text(value: Any) -> str:
    """JSON text of a value whose objects may be lists of pairs (to allow repeated keys)."""
    if isinstance(value, Pairs):
        return "{" + ",".join(f"{json.dumps(k)}:{to_text(v)}" for k, v in value) + "}"
    if isinstance(value, list):
        return "[" + ",".join(to_text(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{" + ",".join(f"{json.dumps(k)}:{to_text(v)}" for k, v in value.items()) + "}"
    return json.dumps(value)


class Pairs(list):  # type: ignore[type-arg]
    pass


def as_go_sends(draw: Any, value: Any, schema: dict, top: bool = False) -> Any:
    """``value`` rewritten with Go-equivalent spellings: respelled keys, nulls, earlier duplicates."""
    if isinstance(value, list):
        items = schema.get("items", {})
        return [as_go_sends(draw, v, items) for v in value]
    if not isinstance(value, dict) or not is_struct(schema):
        return value  # a Go map, or a scalar: sent exactly as it is
    props = schema["properties"]
    out = Pairs()
    for key in props:
        if key not in value and draw(st.booleans()):
            out.append((respell(draw, key), None))  # null: a Go zero value, as if absent
    for key, v in value.items():
        if draw(st.integers(0, 3)) == 0:
            out.append((respell(draw, key), None if draw(st.booleans()) else "earlier"))  # the last one wins
        spelled = "name" if top and key == "name" and draw(st.booleans()) else respell(draw, key)
        out.append((spelled, as_go_sends(draw, v, props[key])))
    if top:
        out.append(("Unknown-Key", None))  # unknown keys pass through with their spelling and value
    perm = draw(st.permutations(range(len(out))))
    # keep every key's own occurrences in order (so "last wins" stays last) but mix the keys
    order = sorted(range(len(out)), key=lambda i: (out[i][0].lower(), i))
    groups: dict[str, list[tuple[str, Any]]] = {}
    for i in order:
        groups.setdefault(out[i][0].lower(), []).append(out[i])
    names = list(groups)
    mixed = Pairs()
    for idx in perm:
        if idx < len(names):
            mixed.extend(groups[names[idx]])
    return mixed


@pytest.mark.parametrize("plugin", sorted(SCHEMAS))
@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_respelled_and_null_keys_give_the_canonical_config(plugin: str, data) -> None:
    """Catches: keys matched case-sensitively, null rejected, first spelling winning (issue 20 §1)."""
    schema = SCHEMAS[plugin]
    canonical = data.draw(valid(schema))
    canonical["name"] = "net"
    canonical["cniVersion"] = data.draw(st.sampled_from(["0.3.1", "1.0.0", "1.1.0"]))
    sent = as_go_sends(data.draw, canonical, schema, top=True)
    want = parse_netconf(json.dumps(dict(canonical, **{"Unknown-Key": None})).encode(), schema).raw
    got = parse_netconf(to_text(sent).encode(), schema).raw
    assert got == want, to_text(sent)


def test_the_issue_examples() -> None:
    """Catches: CHECK with "ipam": {"routes": null} failing with code 7 (what Go's json.Marshal sends)."""
    conf = {"cniVersion": "1.0.0", "name": "n", "type": "host-local",
            "ipam": {"type": "host-local", "routes": None, "ranges": [[{"subnet": "10.1.0.0/24", "gateway": None}]]}}
    raw = parse_netconf(json.dumps(conf).encode(), SCHEMAS["host-local"]).raw
    assert raw["ipam"] == {"type": "host-local", "ranges": [[{"subnet": "10.1.0.0/24"}]]}


def test_runtime_config_mac_in_any_case_sets_the_container_mac() -> None:
    """Catches: "RuntimeConfig": {"MAC": ...} ignored, so the pod got another MAC than with Go."""
    from cni_flannel.plugins import bridge

    text = b'{"cniVersion":"1.0.0","name":"n","RuntimeConfig":{"MAC":"0A:58:0A:2A:01:05"},"IsDefaultGateway":true}'
    conf = parse_netconf(text, bridge.SCHEMA)
    n = bridge.load_conf(conf, CmdArgs(command="ADD", container_id="c", netns="/x", ifname="eth0", args="",
                                       path=[]))
    assert n.mac == "0a:58:0a:2a:01:05" and n.is_default_gw and n.is_gw


@pytest.mark.parametrize("text,mtu", [
    ('{"name":"n","mtu":1000,"MTU":1400}', 1400),
    ('{"name":"n","MTU":1400,"mtu":1000}', 1000),
    ('{"name":"n","mtu":1400,"Mtu":null}', 1400),   # Go: null has no effect on a number
    ('{"name":"n","mtu":1400,"mtu":null}', 1400),
    ('{"name":"n","mtu":null}', None),
])
def test_last_spelling_wins_and_null_is_a_zero_value(text: str, mtu: int | None) -> None:
    """Catches: the first spelling (or Python's dict order) deciding instead of Go's "last wins"."""
    raw = parse_netconf(text.encode(), SCHEMAS["bridge"]).raw
    assert raw.get("mtu") == mtu


def test_null_clears_an_earlier_list_as_go_sets_a_slice_to_nil() -> None:
    raw = parse_netconf(b'{"name":"n","vlanTrunk":[{"id":3}],"VlanTrunk":null}', SCHEMAS["bridge"]).raw
    assert "vlanTrunk" not in raw


def test_go_maps_keep_their_keys_exactly() -> None:
    """flannel's delegate and ipam are Go maps: Go flannel adds isGateway next to a user IsGateway."""
    from cni_flannel.plugins import flannel

    text = b'{"name":"n","Delegate":{"IsGateway":false,"mtu":null},"IPAM":{"Routes":null}}'
    conf = parse_netconf(text, flannel.SCHEMA)
    assert conf.raw["delegate"] == {"IsGateway": False, "mtu": None}
    assert conf.raw["ipam"] == {"Routes": None}
    env = flannel.SubnetEnv(subnet=__import__("ipaddress").ip_network("10.1.17.0/24"), mtu=1450, ipmasq=False,
                            networks=[__import__("ipaddress").ip_network("10.1.0.0/16")])
    d = flannel.build_delegate(flannel.load_conf(conf), env)
    assert d["IsGateway"] is False and d["isGateway"] is True and d["mtu"] is None  # as Go's hasKey does
    assert flannel.go_json(d).startswith(b'{"IsGateway":false,')


def test_null_name_is_a_missing_name() -> None:
    with pytest.raises(CNIError) as err:
        parse_netconf(b'{"name":null,"cniVersion":"1.0.0"}', SCHEMAS["loopback"])
    assert err.value.code == 7 and "missing network name" in err.value.msg


def test_cni_version_in_any_case_and_null() -> None:
    assert parse_netconf(b'{"Name":"n","CNIVersion":"0.4.0"}', SCHEMAS["loopback"]).cni_version == "0.4.0"
    assert parse_netconf(b'{"name":"n","cniVersion":null}', SCHEMAS["loopback"]).cni_version == "0.1.0"


def test_validation_errors_speak_json_not_python() -> None:
    """Catches: "None is not of type 'array'" (a Python repr in a runtime-facing message)."""
    with pytest.raises(CNIError) as err:
        parse_netconf(b'{"name":"n","ipam":{"routes":true}}', SCHEMAS["host-local"])
    assert err.value.msg == 'invalid network config: field ipam.routes: true is not of type "array"'
    assert "True" not in str(err.value) and "None" not in str(err.value)
