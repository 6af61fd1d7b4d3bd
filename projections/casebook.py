"""A subject's casebook as JSON: every current record with its values and derivations."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from domain.subject import Subject


def casebook(subject: Subject, as_of: datetime | None = None) -> dict[str, Any]:
    """The casebook of ``subject`` (already folded to the wanted time) as a JSON-native dict."""
    records: dict[str, list[dict[str, Any]]] = {}
    for record in sorted(subject.records.values(), key=lambda r: (r.observed_at, r.record_id)):
        if record.removed:
            continue
        records.setdefault(record.kind, []).append(
            {
                "record_id": record.record_id,
                "observed_at": record.observed_at.isoformat(),
                "visit": record.visit,
                "fields": record.fields,
                "derived": record.derived,
                "entered_at": record.entered_at.isoformat(),
                "changes": len(record.history),
            }
        )
    return {
        "study_id": subject.study_id,
        "subject": subject.subject_code,
        "site": subject.site,
        "status": subject.status,
        "arm": subject.arm,
        "disease": subject.disease,
        "sex": subject.sex,
        "date_of_birth": subject.date_of_birth.isoformat(),
        "consent_date": subject.consent_date.isoformat(),
        "enrolled_on": subject.enrolled_on.isoformat() if subject.enrolled_on else None,
        "locked": subject.locked,
        "version": subject.version,
        "as_of": as_of.isoformat() if as_of else None,
        "records": records,
    }
