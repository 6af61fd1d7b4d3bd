"""Redaction of identifying values entered by mistake (crypto-shredding): which items a study
declares possibly identifying, what a redaction request covers, and the marker shown in place
of a value once the key that covered it is destroyed.

The domain decides and records; sealing values and destroying keys is infra's
(:mod:`infra.field_keys`): events are never changed, so a redacted value is made unreadable,
not removed.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import date
from typing import Any

from domain.errors import InvalidInput


def marker(on: date, reason: str) -> str:
    """What every output shows in place of a value redacted on ``on`` for ``reason``."""
    return f"[redacted on {on.isoformat()}: {reason}]"


# Shown for a sealed value whose key is neither present nor recorded as destroyed (a study
# restored into another database without its key table).
KEY_UNAVAILABLE = "[sealed: key unavailable]"


def parse_identifying(data: Any) -> dict[str, tuple[str, ...]]:
    """A definition's ``identifying_items`` (record kind -> field names), checked."""
    if data is None:
        return {}
    if not isinstance(data, Mapping) or not all(
            isinstance(k, str) and isinstance(v, list | tuple)
            and all(isinstance(f, str) and f for f in v) for k, v in data.items()):
        raise InvalidInput("identifying_items", "must be an object of record kind -> "
                                                "list of field names")
    return {kind: tuple(fields) for kind, fields in data.items() if fields}


def covered_items(records: Mapping[str, Any], identifying: Mapping[str, tuple[str, ...]],
                  record_id: str | None, field: str | None) -> list[dict[str, str]]:
    """The (record, field) pairs a request covers: one declared field of one record, or
    (neither given) every declared field of every record of the subject that holds one.

    ``records`` are the subject's records (each with ``kind`` and ``fields``).
    """
    if (record_id is None) != (field is None):
        raise InvalidInput("field" if field is None else "record_id",
                           "record and field are given together, or neither (the subject)")
    if record_id is not None and field is not None:
        record = records.get(record_id)
        if record is None:
            raise InvalidInput("record_id", f"no record {record_id!r}")
        if field not in identifying.get(record.kind, ()):
            declared = ", ".join(identifying.get(record.kind, ())) or "none"
            raise InvalidInput("field", f"{field!r} is not declared identifying for "
                                        f"{record.kind} records (declared: {declared})")
        return [{"record_id": record_id, "field": field}]
    items = [{"record_id": rid, "field": name}
             for rid, record in records.items()
             for name in identifying.get(record.kind, ())
             if record.fields.get(name) is not None]
    if not items:
        raise InvalidInput("subject", "the subject holds no value of an identifying item")
    return items
