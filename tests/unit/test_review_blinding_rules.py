"""The pure rules of audit review and blinding: filter definitions, blinding declarations,
the masking walk, and the study's sign-off and unblinding events (old ones still load)."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from domain.blinding import MASK, Blinding, Mask
from domain.envelope import Actor, Envelope, Reason
from domain.errors import InvalidInput, InvalidState
from domain.review import ReviewRules, review_filter
from domain.studies import nct04397107
from domain.study import Study
from projections.blinding import masked

NOW = datetime(2021, 3, 1, tzinfo=UTC)
MONITOR = Envelope(Actor("u-mon", "Chen Jie", "monitor", "JLU1"), "test", "api", "r1")
INVESTIGATOR = Envelope(Actor("u-inv", "Wang Fang", "investigator", "JLU1"), "test", "api",
                        "r2", reason=Reason("other", "emergency"))


def test_filters_take_the_study_thresholds_unless_the_reviewer_gives_one() -> None:
    rules = ReviewRules.from_dict(nct04397107.AUDIT_REVIEW)
    assert review_filter("late-entry", rules).parameters() == {"late_days": 30}
    assert review_filter("late-entry", rules, late_days=7).parameters() == {"late_days": 7}
    frequent = review_filter("frequent-critical", rules, min_changes=2).parameters()
    assert frequent["min_changes"] == 2
    assert {"kind": "labs", "field": "value", "code": "C3"} in frequent["critical_fields"]
    assert review_filter("after-lock", rules).parameters() == {}


@pytest.mark.parametrize(("name", "kwargs", "field"), [
    ("everything", {}, "review"),
    ("after-lock", {"late_days": 3}, "late_days"),
    ("late-entry", {"min_changes": 3}, "min_changes"),
    ("late-entry", {"late_days": 0}, "late_days"),
])
def test_a_bad_filter_names_its_field(name: str, kwargs: dict[str, int], field: str) -> None:
    with pytest.raises(InvalidInput) as refused:
        review_filter(name, ReviewRules(), **kwargs)
    assert refused.value.problems[0].field == field


@pytest.mark.parametrize(("data", "field"), [
    ({"late_days": "30"}, "audit_review.late_days"),
    ({"critical_fields": [{"kind": "doses"}]}, "audit_review.critical_fields"),
    ({"sponsor_roles": "monitor"}, "audit_review.sponsor_roles"),
])
def test_bad_review_rules_are_refused(data: dict[str, object], field: str) -> None:
    with pytest.raises(InvalidInput) as refused:
        ReviewRules.from_dict(data)
    assert refused.value.problems[0].field == field


@pytest.mark.parametrize(("data", "field"), [
    ({"items": [], "roles": ["monitor"]}, "blinding.items"),
    ({"items": ["arm"], "roles": ["sponsor"]}, "blinding.roles"),
    ({"items": ["arm"], "roles": ["monitor"], "unblinding_roles": "investigator"},
     "blinding.unblinding_roles"),
])
def test_bad_blinding_declarations_are_refused(data: dict[str, object], field: str) -> None:
    with pytest.raises(InvalidInput) as refused:
        Blinding.from_dict(data)
    assert refused.value.problems[0].field == field


def test_a_person_with_any_blinded_role_is_blind() -> None:
    blinding = Blinding.from_dict({"items": ["arm"], "roles": ["monitor"]})
    assert blinding is not None
    assert blinding.blinds({"monitor", "regulator"})
    assert not blinding.blinds({"regulator"})
    assert Blinding.from_dict(None) is None


def test_the_walk_masks_items_by_kind_and_spares_unblinded_subjects() -> None:
    mask = Mask(("arm", "doses.drug"), frozenset({"002"}))
    book = {"subject": "001", "arm": "IL2", "records": {
        "doses": [{"fields": {"drug": "IL2", "dose": 5.0}}],
        "therapies": [{"fields": {"drug": "prednisone"}}]}}
    assert masked(book, mask) == {"subject": "001", "arm": MASK, "records": {
        "doses": [{"fields": {"drug": MASK, "dose": 5.0}}],
        "therapies": [{"fields": {"drug": "prednisone"}}]}}
    rows = [{"subject_code": "001", "record_kind": None, "field": "arm", "old_value": None,
             "new_value": "IL2"},
            {"subject_code": "001", "record_kind": "doses", "field": "drug",
             "old_value": "A", "new_value": "B"},
            {"subject_code": "001", "record_kind": "therapies", "field": "drug",
             "old_value": None, "new_value": "prednisone"},
            {"subject_code": "002", "record_kind": None, "field": "arm", "old_value": None,
             "new_value": "STD"}]
    assert [(r["old_value"], r["new_value"]) for r in masked(rows, mask)] == [
        (None, MASK), (MASK, MASK), (None, "prednisone"), (None, "STD")]
    # A record of unknown kind (a diff's) is masked as if it were a dose.
    assert masked({"subject": "001", "after": {"fields": {"drug": "X"}}}, mask) == {
        "subject": "001", "after": {"fields": {"drug": MASK}}}
    assert masked({"definition": {"arms": [{"code": "IL2"}], "products": []}}, mask) == {
        "definition": {"arms": MASK, "products": MASK}}
    assert masked(book, None) is book


def _study(**extra: object) -> Study:
    return Study.register({**nct04397107.definition(), **extra}, MONITOR, NOW)


def test_sign_offs_stay_within_the_log_and_old_ones_still_load() -> None:
    study = _study()
    with pytest.raises(InvalidInput, match="beyond the log's last position"):
        study.review_audit_trail(11, "", MONITOR, NOW, last_position=10)
    with pytest.raises(InvalidInput):
        study.review_audit_trail(0, "", MONITOR, NOW, last_position=10)
    # A sign-off stored as version 1 (no filter) still folds into the whole trail's.
    study.trigger_event(Study.AuditTrailReviewed, timestamp=NOW, envelope=MONITOR,
                        through_position=4, comment="old")
    rules = study.definition.review
    study.review_audit_trail(6, "", MONITOR, NOW, last_position=10,
                             review=review_filter("after-lock", rules))
    with pytest.raises(InvalidInput, match="already reviewed through 4"):
        study.review_audit_trail(3, "", MONITOR, NOW, last_position=10)
    study.review_audit_trail(5, "", MONITOR, NOW, last_position=10)
    events = study.collect_events()
    folded = None
    for event in events:
        folded = event.mutate(folded)
    assert isinstance(folded, Study)
    assert folded.reviewed_through == 5
    assert folded.reviews == {"after-lock": 6, "all": 5}
    assert [type(e).__name__ for e in events[1:]] == [
        "AuditTrailReviewed", "FilteredAuditTrailReviewed", "FilteredAuditTrailReviewed"]
    assert events[2].review_filter == "after-lock"  # type: ignore[attr-defined]


def test_unblinding_needs_a_reason_and_a_blinded_study() -> None:
    with pytest.raises(InvalidState, match="not blinded"):
        _study().unblind_subject("001", INVESTIGATOR, NOW)
    study = _study(blinding={"items": ["arm"], "roles": ["investigator"],
                             "unblinding_roles": ["investigator"]})
    with pytest.raises(InvalidInput):
        study.unblind_subject("001", MONITOR, NOW)  # no reason
    study.unblind_subject("001", INVESTIGATOR, NOW)
    assert study.unblinded == {"001": {"u-inv"}}
    with pytest.raises(InvalidState, match="already unblinded"):
        study.unblind_subject("001", INVESTIGATOR, NOW)
