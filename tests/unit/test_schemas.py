"""The fast subset validator agrees with jsonschema on every plugin schema (valid or not, and where)."""
from __future__ import annotations

import importlib

import jsonschema
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from cni_flannel.__main__ import PLUGINS
from cni_flannel.cni.schemas import first_error

SCHEMAS = {name: importlib.import_module(mod).PLUGIN.schema for name, mod in PLUGINS.items()}

scalars = st.one_of(st.none(), st.booleans(), st.integers(-70000, 70000), st.floats(allow_nan=False),
                    st.sampled_from([1500.0, 13.0, 4095.0]),
                    st.text(max_size=20), st.sampled_from(["10.1.0.0/24", "iptables", "nftables", "bridge", "/abs",
                                                          "rel", "eth0", "a" * 16]))
json_values = st.recursive(scalars, lambda kids: st.one_of(st.lists(kids, max_size=3),
                                                           st.dictionaries(st.text(max_size=8), kids, max_size=3)),
                           max_leaves=12)


def mutated(schema: dict) -> st.SearchStrategy:
    """Objects using the schema's own keys, with random values, nested one level."""
    keys = sorted(k for k in schema.get("properties", {}) if k != "name")
    nested = st.fixed_dictionaries({}, optional={k: json_values for k in ["type", "ranges", "subnet", "dataDir",
                                                                          "routes", "id", "minID"]})
    return st.fixed_dictionaries({"name": st.just("net")},
                                 optional={k: st.one_of(json_values, nested) for k in keys})


@pytest.mark.parametrize("plugin", sorted(SCHEMAS))
@settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_fast_validator_agrees_with_jsonschema(plugin: str, data) -> None:
    schema = SCHEMAS[plugin]
    value = data.draw(mutated(schema))
    ref = list(jsonschema.Draft202012Validator(schema).iter_errors(value))
    fast = first_error(value, schema)
    assert (fast is None) == (not ref), (value, [e.message for e in ref])
    if fast is not None:
        assert list(fast) in [list(e.absolute_path) for e in ref]


def test_schemas_are_valid_json_schemas() -> None:
    for schema in SCHEMAS.values():
        jsonschema.Draft202012Validator.check_schema(schema)
