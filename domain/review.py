"""Audit-trail review as ICH E6(R3) asks: named filters for the changes that matter.

Each filter is a rule described here as data (its name and thresholds); the read side
(``projections/review_sql.py``) turns it into SQL over the audit tables. Which fields are
critical, how late is late and who is sponsor staff come from the study definition
(``audit_review`` in its JSON form); a caller may tighten or loosen the thresholds per query.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from domain.errors import InvalidInput

# The filters, by name: what each selects from the audit trail.
REVIEW_FILTERS: Mapping[str, str] = {
    "after-signature": "changes to a casebook made after it was first e-signed",
    "after-lock": "changes made after the casebook had been locked (post-lock edits)",
    "sponsor-staff": "changes made by sponsor staff (the study's sponsor roles)",
    "late-entry": "first entries recorded more than late_days days after the observation",
    "frequent-critical": "changes of a critical field of one subject that was changed "
                         "min_changes times or more",
}
# What a definition that declares nothing gets.
DEFAULT_LATE_DAYS = 30
DEFAULT_MIN_CHANGES = 3
DEFAULT_SPONSOR_ROLES = ("monitor", "data_manager")


@dataclass(frozen=True)
class CriticalField:
    """A field of one kind of record whose changes a reviewer must see (``code``: only the
    records of that test code, e.g. the C3 lab value)."""

    kind: str
    field: str
    code: str | None = None


@dataclass(frozen=True)
class ReviewRules:
    """A study's audit-review rules: its critical fields and the filters' default thresholds."""

    late_days: int = DEFAULT_LATE_DAYS
    min_changes: int = DEFAULT_MIN_CHANGES
    sponsor_roles: tuple[str, ...] = DEFAULT_SPONSOR_ROLES
    critical_fields: tuple[CriticalField, ...] = ()

    @classmethod
    def from_dict(cls, data: Any) -> ReviewRules:
        """The rules of a definition's ``audit_review`` object (None: the defaults)."""
        if data is None:
            return cls()
        if not isinstance(data, dict):
            raise InvalidInput("audit_review", "must be an object")
        fields = data.get("critical_fields", [])
        if not isinstance(fields, list) or not all(
                isinstance(f, dict) and isinstance(f.get("kind"), str)
                and isinstance(f.get("field"), str) for f in fields):
            raise InvalidInput("audit_review.critical_fields",
                               "must be a list of {kind, field, code?}")
        roles = data.get("sponsor_roles", list(DEFAULT_SPONSOR_ROLES))
        if not isinstance(roles, list) or not all(isinstance(r, str) for r in roles):
            raise InvalidInput("audit_review.sponsor_roles", "must be a list of role names")
        return cls(
            late_days=_positive("audit_review.late_days",
                                data.get("late_days", DEFAULT_LATE_DAYS)),
            min_changes=_positive("audit_review.min_changes",
                                  data.get("min_changes", DEFAULT_MIN_CHANGES)),
            sponsor_roles=tuple(roles),
            critical_fields=tuple(CriticalField(f["kind"], f["field"], f.get("code"))
                                  for f in fields))


@dataclass(frozen=True)
class ReviewFilter:
    """One named filter with its thresholds resolved (the query's, else the study's)."""

    name: str
    late_days: int
    min_changes: int
    sponsor_roles: tuple[str, ...]
    critical_fields: tuple[CriticalField, ...]

    def parameters(self) -> dict[str, Any]:
        """The thresholds this filter reads, as a sign-off records them."""
        if self.name == "late-entry":
            return {"late_days": self.late_days}
        if self.name == "frequent-critical":
            return {"min_changes": self.min_changes,
                    "critical_fields": [{"kind": f.kind, "field": f.field, "code": f.code}
                                        for f in self.critical_fields]}
        if self.name == "sponsor-staff":
            return {"sponsor_roles": list(self.sponsor_roles)}
        return {}


def review_filter(name: str, rules: ReviewRules, late_days: int | None = None,
                  min_changes: int | None = None) -> ReviewFilter:
    """The filter ``name`` under the study's ``rules``, with any threshold the caller gave."""
    if name not in REVIEW_FILTERS:
        raise InvalidInput("review", f"must be one of {', '.join(REVIEW_FILTERS)}")
    if late_days is not None and name != "late-entry":
        raise InvalidInput("late_days", "applies only to review=late-entry")
    if min_changes is not None and name != "frequent-critical":
        raise InvalidInput("min_changes", "applies only to review=frequent-critical")
    return ReviewFilter(
        name,
        rules.late_days if late_days is None else _positive("late_days", late_days),
        rules.min_changes if min_changes is None else _positive("min_changes", min_changes),
        rules.sponsor_roles, rules.critical_fields)


def _positive(name: str, value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= 100_000:
        raise InvalidInput(name, "must be a whole number from 1 to 100000")
    return value
