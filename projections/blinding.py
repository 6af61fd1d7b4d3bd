"""Masking of blinded items in any read-side output, for a blind person (domain.blinding).

Every JSON answer of the read side (casebooks now and as of a time, subject lists, audit
rows, diffs, the study definition, queries, signatures) is the same few shapes nested: a
subject header, records grouped by kind, a change naming its ``field`` and values. One walk
masks all of them: a blinded key wherever it stands, the values of a change to a blinded
field, and nothing of a subject the person unblinded.
"""

from __future__ import annotations

from typing import Any

from domain.blinding import MASK, Mask

# The keys of a change (audit row, correction) holding the field's values.
CHANGE_VALUES = frozenset({"old_value", "new_value", "old", "new", "value", "before", "after"})
# The keys that group a casebook's records by kind.
RECORD_KINDS = frozenset({"vitals", "doses", "therapies", "labs", "assessments",
                          "adverse-events"})


def masked(value: Any, mask: Mask | None, kind: str | None = None,
           subject: str | None = None) -> Any:
    """``value`` (JSON-native) with what ``mask`` hides replaced by :data:`MASK`.

    ``kind``: the kind of record being walked (None: not known, which masks ``kind.field``
    items too); ``subject``: the subject being walked.
    """
    if mask is None:
        return value
    if isinstance(value, list):
        return [masked(item, mask, kind, subject) for item in value]
    if not isinstance(value, dict):
        return value
    named = value.get("subject", value.get("subject_code"))
    subject = named if isinstance(named, str) else subject
    if subject is not None and subject in mask.visible_subjects:
        return value
    record_kind = value.get("record_kind")
    kind = record_kind if isinstance(record_kind, str) and record_kind else kind
    field = value.get("field")
    changed = (isinstance(field, str)
               and mask.hides(field.rpartition(".")[2] or field, kind))
    # (No value stays None: that there was none discloses nothing.)
    return {key: MASK if item is not None and (mask.hides(key, kind)
                                               or (changed and key in CHANGE_VALUES))
            else masked(item, mask, key if key in RECORD_KINDS else kind, subject)
            for key, item in value.items()}
