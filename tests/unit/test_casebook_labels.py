"""How the casebook prints values and names fields (projections.casebook_doc.model)."""

from __future__ import annotations

import pytest

from domain.rules.units import VITAL_SIGNS
from projections.casebook_doc.model import ABSENT, field_label, shown, text


@pytest.mark.parametrize(("value", "printed"), [
    (750000.0, "750000"), (0.8, "0.8"), (15, "15"), (True, "yes"), ("QW", "QW"),
    (None, ""), ({"b": 1, "a": 2.0}, '{"a": 2.0, "b": 1}')])
def test_values_print_as_people_write_them(value: object, printed: str) -> None:
    assert text(value) == printed


def test_an_absent_value_prints_as_absent() -> None:
    assert (shown(None), shown(""), shown(0.0)) == (ABSENT, ABSENT, "0")


def test_fields_are_labelled_from_the_catalogues_not_by_their_ids() -> None:
    height = VITAL_SIGNS["HEIGHT"]
    assert field_label("vitals", "HEIGHT") == f"{height.name} ({height.unit})"
    assert field_label("labs", "value") == "Result"
    assert field_label("therapies", "dose_mg_per_day") == "Daily dose (mg)"
    # An imported study's records keep their SDTM variable names.
    assert field_label("LB", "LBORRES") == "LBORRES"
    assert field_label("labs", None) == ""
