"""copy_json: a deep copy of JSON-native values, containers new and scalars shared."""

from __future__ import annotations

from collections import OrderedDict
from typing import Any

from domain.records import copy_json


def _containers(value: Any) -> list[Any]:
    if isinstance(value, dict):
        return [value, *(c for v in value.values() for c in _containers(v))]
    if isinstance(value, list):
        return [value, *(c for v in value for c in _containers(v))]
    return []


def test_every_container_is_new_and_every_value_equal() -> None:
    value = {"a": 1, "b": 2.5, "c": "x", "d": True, "e": None, "f": [], "g": {},
             "h": [1, {"i": [2, {"j": "k"}], "l": {}}, [[]]], "m": {"n": {"o": [None]}}}
    copied = copy_json(value)
    assert copied == value
    originals = {id(c) for c in _containers(value)}
    assert not originals & {id(c) for c in _containers(copied)}
    copied["h"][1]["i"][1]["j"] = "changed"
    copied["g"]["new"] = 1
    assert value["h"][1]["i"][1]["j"] == "k" and value["g"] == {}


def test_an_empty_map_is_a_new_one_and_scalars_are_themselves() -> None:
    empty: dict[str, Any] = {}
    assert copy_json(empty) == {} and copy_json(empty) is not empty
    for scalar in ("s", 1, 1.5, False, None):
        assert copy_json(scalar) is scalar
    assert copy_json([]) == [] and copy_json({"a": []})["a"] == []


def test_a_mapping_subclass_is_copied_as_a_plain_dict_within() -> None:
    nested = {"a": OrderedDict(b=[1])}
    copied = copy_json(nested)
    assert type(copied["a"]) is dict and copied == nested
    assert copied["a"]["b"] is not nested["a"]["b"]
