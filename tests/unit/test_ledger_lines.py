"""The bundle's events.jsonl and leaves.jsonl lines are made from their parts, in the bytes
``json.dumps(sort_keys=True, separators=(",", ":"))`` gives the object the verifier reads."""

from __future__ import annotations

import base64
import json
import uuid

from hypothesis import given
from hypothesis import strategies as st

from infra.ledger.bundle import event_line, leaf_line

positions = st.integers(min_value=1, max_value=2**63 - 1)


def dumped(row: dict[str, object]) -> bytes:
    return json.dumps(row, sort_keys=True, separators=(",", ":")).encode() + b"\n"


@given(positions, st.uuids(), st.integers(min_value=1, max_value=2**31 - 1), st.text(),
       st.binary(max_size=600))
def test_an_event_line_is_the_events_sorted_compact_json(
        position: int, oid: uuid.UUID, version: int, topic: str, state: bytes) -> None:
    assert event_line(position, oid, version, topic, state) == dumped({
        "position": position, "originator_id": str(oid), "version": version, "topic": topic,
        "state": base64.b64encode(state).decode()})


@given(st.integers(min_value=0, max_value=2**63 - 1), positions, st.binary(min_size=32,
                                                                            max_size=32))
def test_a_leaf_line_is_the_leafs_sorted_compact_json(index: int, position: int,
                                                      leaf_hash: bytes) -> None:
    assert leaf_line(index, position, leaf_hash) == dumped(
        {"leaf_index": index, "position": position, "leaf_hash": leaf_hash.hex()})
