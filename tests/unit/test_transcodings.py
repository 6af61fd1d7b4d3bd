"""The transcoder writes the bytes eventsourcing's own writes, and decodes stored events to exactly
what it would."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta, timezone
from decimal import Decimal
from typing import Any
from uuid import uuid4

import pytest
from eventsourcing import persistence
from eventsourcing.application import Application
from eventsourcing.persistence import JSONTranscoder
from hypothesis import given
from hypothesis import strategies as st

from domain.envelope import Actor, Envelope, Reason
from domain.transcodings import TRANSCODINGS, FastJSONTranscoder

ENVELOPE = Envelope(Actor("u-1", "Li Wei", "coordinator", "JLU1"), "web", "api", "r-1",
                    "site", Reason("transcription_error", "checked\tagainst\\source"))


def _transcoder(cls: type[JSONTranscoder]) -> JSONTranscoder:
    transcoder = cls()
    Application.register_transcodings(Application(), transcoder)
    for transcoding in TRANSCODINGS:
        transcoder.register(transcoding)
    return transcoder


STANDARD = _transcoder(JSONTranscoder)
FAST = _transcoder(FastJSONTranscoder)


def _same(value: Any) -> None:
    data = STANDARD.encode(value)
    expected, decoded = STANDARD.decode(data), FAST.decode(data)
    assert decoded == expected
    assert repr(decoded) == repr(expected)  # same types too (1 is not 1.0, a date no string)


def test_transcoded_values_nested_in_objects_and_lists_decode_alike() -> None:
    _same({"timestamp": datetime(2021, 3, 15, 8, tzinfo=UTC), "envelope": ENVELOPE,
           "id": uuid4(), "amount": Decimal("1.10"), "born": date(2010, 5, 1),
           "fields": {"value": 1.0, "n": 1, "items": [{"at": date(2021, 1, 1)}, [ENVELOPE]],
                      "_type_": "not a transcoding: three keys", "_data_": 1},
           "signer": Actor("u-2", "Ana", "investigator", "JLU1")})


@pytest.mark.parametrize("value", [2**70, float("nan"), {"x": [float("inf")]}])
def test_what_orjson_refuses_decodes_as_before(value: Any) -> None:
    data = STANDARD.encode(value)
    assert repr(FAST.decode(data)) == repr(STANDARD.decode(data))


@given(st.recursive(
    st.none() | st.booleans() | st.integers(-2**63, 2**63 - 1) | st.text()
    | st.floats(allow_nan=False, allow_infinity=False) | st.dates(),
    lambda children: st.lists(children, max_size=4)
    | st.dictionaries(st.text(max_size=8), children, max_size=4),
    max_leaves=20))
def test_any_json_value_decodes_alike(value: Any) -> None:
    _same(value)


def test_equal_envelopes_decode_to_one_object_and_unequal_ones_do_not() -> None:
    first = FAST.decode(FAST.encode(ENVELOPE))
    assert first == ENVELOPE
    assert FAST.decode(FAST.encode(ENVELOPE)) is first
    other = Envelope(ENVELOPE.actor, "web", "api", "r-2", "site", ENVELOPE.reason)
    assert FAST.decode(FAST.encode(other)) == other


def _encodes_alike(value: Any) -> None:
    try:
        expected = STANDARD.encode(value)
    except (TypeError, ValueError) as e:
        with pytest.raises(type(e)):
            FAST.encode(value)
        return
    assert FAST.encode(value) == expected


SCALARS = (st.none() | st.booleans() | st.integers() | st.text() | st.floats()
           | st.floats(min_value=-1e-3, max_value=1e-3) | st.sampled_from([1e16, 1e-4, 9.5e15])
           | st.dates() | st.datetimes(timezones=st.just(UTC)) | st.uuids()
           | st.decimals(allow_nan=False) | st.just(ENVELOPE))


@given(st.recursive(
    SCALARS,
    lambda children: st.lists(children, max_size=4) | st.tuples(children, children)
    | st.dictionaries(st.text(max_size=8), children, max_size=4)
    | st.dictionaries(st.integers() | st.none() | st.booleans(), children, max_size=2)
    | st.builds(lambda v: Envelope(ENVELOPE.actor, "import-cli", "import", "r-1",
                                   provenance={"file": "lb.xpt", "row": 1, "values": v}),
                st.dictionaries(st.text(max_size=8), children, max_size=3)),
    max_leaves=20))
def test_any_value_encodes_to_the_same_bytes_as_the_standard_encoder(value: Any) -> None:
    _encodes_alike(value)


@pytest.mark.parametrize("value", [
    {"small": 1.5e-05}, {"x": [float("nan"), float("-inf")]}, uuid4(), {"n": 2**64},
    {1: "int key"}, Envelope(ENVELOPE.actor, "c", "import", "r", provenance={"v": 1e-9}),
    {"s": "\u2028\x00\x1f\x7f\"\\é😀"}, {"big": 1e16, "edge": 1e-4, "zero": -0.0}])
def test_values_orjson_would_write_otherwise_are_written_by_the_standard_encoder(
        value: Any) -> None:
    _encodes_alike(value)


def test_a_datetime_is_written_as_eventsourcings_own_transcoding_writes_it() -> None:
    """The last datetime written is remembered by identity, never by equality: the same
    instant at another offset, or another instant, is written afresh."""
    own = persistence.DatetimeAsISO()
    ours = next(t for t in TRANSCODINGS if t.name == "datetime_iso")
    at = datetime(2026, 12, 7, 1, 2, 3, 456789, tzinfo=UTC)
    same_instant = at.astimezone(timezone(timedelta(hours=2)))
    for value in (at, at, same_instant, at, at.replace(microsecond=0), same_instant):
        assert ours.encode(value) == own.encode(value)
