"""What the ODM exports describe: one form per record kind (and one for the subject), their
items, code lists and units, and how a casebook's JSON values become ODM item values.

Items come from the domain's own catalogues (vital signs, lab tests, SLEDAI descriptors,
ESSDAI domains, AE vocabularies) and from the study's definition (visits, arms, diseases,
eligibility criteria), so a new catalogue entry or a second study needs no change here. A
study loaded from SDTM declares its domains' variables in its definition: each loaded domain
becomes a form with one item per variable (named as in SDTM), and the subject form carries
the DM row's variables as given.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from functools import cache
from typing import Any

from domain.records import INSTRUMENTS, KINDS, THERAPY_CATEGORIES
from domain.rules import bsa, ctcae, dosing, essdai, sledai, steroids
from domain.rules.essdai import ESSDAI_WEIGHTS
from domain.rules.sledai import SLEDAI_DESCRIPTORS
from domain.rules.units import LAB_TESTS, VITAL_SIGNS
from domain.sdtm import DOMAIN_NAMES, KEYS, VALID_TIME, is_sdtm_kind
from domain.study import StudyDefinition

SUBJECT = "subject"  # the form of a subject's own data (its casebook header)
COMMON_EVENT = "SE.COMMON"  # the study event of the subject form and of unscheduled records
# Keys of the subject header that ODM carries as keys (StudyOID, SubjectKey, SiteRef), not items.
HEADER_KEYS = frozenset({"study_id", "subject", "site"})
# The monitoring workflow in a header (signatures, queries, SDV marks, protocol deviations)
# a record's soft-check flags and redactions are no clinical items: the exports write them as ODM
# Signature elements and annotations.
WORKFLOW_FIELDS = frozenset({"signatures", "queries", "sdv", "signature", "query",
                             "deviations", "deviation", "flags", "soft_check", "redaction"})
# An imported subject's header field holding its DM row's variables as given.
DEMOGRAPHICS = "demographics"
# ODM data types of SDTM variable types (XPT knows numbers and characters).
SDTM_DATA_TYPES = {"num": "float", "char": "text"}


class UnmappedField(KeyError):
    """A change to a field the ODM metadata has no item for.

    Raised rather than skipped: an archive that silently drops a change is not an archive.
    """


@dataclass(frozen=True)
class Item:
    """One ItemDef: a field (or one entry of a field) of a form."""

    oid: str
    name: str
    data_type: str  # an ODM DataType: text, float, integer, boolean, date, datetime
    sdtm: str | None = None  # SDSVarName: the SDTM variable it feeds
    unit: str | None = None  # MeasurementUnit OID
    codelist: str | None = None  # CodeList OID
    method: str | None = None  # a derived value: the versioned method computing it
    question: str | None = None  # the question's text, when it says more than the name


@dataclass(frozen=True)
class Form:
    """One FormDef with its single ItemGroupDef (repeating: one group per record)."""

    key: str  # the record kind, or SUBJECT
    name: str
    domain: str  # SDTM domain the group maps to
    items: tuple[Item, ...]
    repeating: bool = True

    @property
    def oid(self) -> str:
        """FormDef OID."""
        return f"F.{_token(self.key)}"

    @property
    def group_oid(self) -> str:
        """ItemGroupDef OID."""
        return f"IG.{_token(self.key)}"


@dataclass(frozen=True)
class CodeList:
    """A CodeList: coded value -> decode."""

    oid: str
    name: str
    data_type: str
    items: tuple[tuple[str, str], ...]


@dataclass(frozen=True)
class StudyEvent:
    """A StudyEventDef: the common event, a protocol visit, or a visit outside the protocol."""

    oid: str
    name: str
    event_type: str  # Common, Scheduled or Unscheduled
    visit: str | None


@dataclass(frozen=True)
class Catalogue:
    """Everything the MetaDataVersion declares, and the value mapping of each form."""

    forms: dict[str, Form]
    codelists: tuple[CodeList, ...]
    units: dict[str, str]  # MeasurementUnit OID -> symbol
    events: tuple[StudyEvent, ...]  # the common event, then visits in protocol order
    items_by_form: dict[str, dict[str, Item]]  # form key -> item OID -> item


def _token(text: str) -> str:
    """An OID part: upper case, letters, digits and underscores."""
    return "".join(c if c.isalnum() else "_" for c in text.upper())


def unit_oid(symbol: str) -> str:
    """MeasurementUnit OID of a unit symbol."""
    return f"MU.{_token(symbol)}"


def event_oid(visit: str | None) -> str:
    """StudyEventDef OID of a visit (records with no visit belong to the common event)."""
    return COMMON_EVENT if visit is None else f"SE.{_token(visit)}"


@cache  # called for every value an export writes; the names are few
def item_oid(key: str, name: str) -> str:
    """ItemDef OID of item ``name`` of form ``key``."""
    return f"IT.{_token(key)}.{_token(name)}"


def _codelist(name: str, values: Mapping[str, str] | tuple[str, ...],
              data_type: str = "text") -> CodeList:
    pairs = values.items() if isinstance(values, Mapping) else ((v, v) for v in values)
    return CodeList(f"CL.{_token(name)}", name, data_type,
                    tuple((str(code), str(decode)) for code, decode in pairs))


def _observed(key: str, sdtm: str | None) -> Item:
    return Item(item_oid(key, "observed_at"), "Observed at (clinical time)", "datetime", sdtm)


def _record_forms() -> list[Form]:
    vitals = [Item(item_oid("vitals", code), sign.name, "float", "VSORRES",
                   unit=unit_oid(sign.unit)) for code, sign in VITAL_SIGNS.items()]
    sledai_items = [Item(item_oid("assessments", name), f"SLEDAI: {name}", "boolean",
                         "QSORRES") for name in SLEDAI_DESCRIPTORS]
    essdai_items = [Item(item_oid("assessments", name), f"ESSDAI: {name}", "integer",
                         "QSORRES", codelist="CL.ESSDAI_LEVEL") for name in ESSDAI_WEIGHTS]
    assert not set(SLEDAI_DESCRIPTORS) & set(ESSDAI_WEIGHTS), "assessment items share OIDs"
    criteria = [Item(item_oid("adverse-events", f"serious_{c}"), f"Serious: {c}", "boolean",
                     sdtm) for c, sdtm in zip(ctcae.SERIOUSNESS_CRITERIA, (
                         "AESDTH", "AESLIFE", "AESHOSP", "AESDISAB", "AESCONG", "AESMIE"),
                         strict=True)]
    return [
        Form("vitals", "Vital signs", "VS", (
            _observed("vitals", "VSDTC"), *vitals,
            Item(item_oid("vitals", "bsa"), "Body-surface area", "float",
                 unit=unit_oid("m2"), method=bsa.METHOD))),
        Form("doses", "Investigational product doses", "EX", (
            _observed("doses", "EXSTDTC"),
            Item(item_oid("doses", "drug"), "Product", "text", "EXTRT"),
            Item(item_oid("doses", "dose"), "Dose", "float", "EXDOSE"),
            Item(item_oid("doses", "unit"), "Dose unit", "text", "EXDOSU"),
            Item(item_oid("doses", "route"), "Route", "text", "EXROUTE"),
            Item(item_oid("doses", "frequency"), "Dose frequency", "text", "EXDOSFRQ",
                 codelist="CL.DOSE_FREQUENCY"),
            Item(item_oid("doses", "dose_per_m2"), "Dose per m2", "float",
                 method=dosing.METHOD))),
        Form("therapies", "Steroid and immunosuppressant therapy", "CM", (
            _observed("therapies", "CMSTDTC"),
            Item(item_oid("therapies", "drug"), "Drug", "text", "CMTRT"),
            Item(item_oid("therapies", "category"), "Category", "text", "CMCAT",
                 codelist="CL.THERAPY_CATEGORY"),
            Item(item_oid("therapies", "dose_mg"), "Dose per administration", "float",
                 "CMDOSE", unit=unit_oid("mg")),
            Item(item_oid("therapies", "dose_mg_per_day"), "Daily dose", "float", "CMDOSTOT",
                 unit=unit_oid("mg/day")),
            Item(item_oid("therapies", "frequency"), "Dose frequency", "text", "CMDOSFRQ",
                 codelist="CL.DOSE_FREQUENCY"),
            Item(item_oid("therapies", "route"), "Route", "text", "CMROUTE"),
            Item(item_oid("therapies", "stopped_at"), "Stopped at", "datetime", "CMENDTC"),
            Item(item_oid("therapies", "daily_dose"), "Average daily dose", "float",
                 unit=unit_oid("mg/day"), method=dosing.DAILY_METHOD),
            Item(item_oid("therapies", "prednisone_equivalent"), "Prednisone equivalent",
                 "float", unit=unit_oid("mg/day"), method=steroids.METHOD),
            Item(item_oid("therapies", "prednisone_equivalent_dose"),
                 "Prednisone equivalent of one dose", "float", unit=unit_oid("mg"),
                 method=steroids.DOSE_METHOD),
            Item(item_oid("therapies", "dose_per_m2"), "Dose per m2", "float",
                 method=dosing.METHOD))),
        Form("labs", "Laboratory results", "LB", (
            _observed("labs", "LBDTC"),
            Item(item_oid("labs", "code"), "Test", "text", "LBTESTCD", codelist="CL.LAB_TEST"),
            Item(item_oid("labs", "value"), "Result", "float", "LBORRES"),
            Item(item_oid("labs", "unit"), "Unit", "text", "LBORRESU"),
            Item(item_oid("labs", "reference_low"), "Reference range low", "float",
                 "LBORNRLO"),
            Item(item_oid("labs", "reference_high"), "Reference range high", "float",
                 "LBORNRHI"),
            Item(item_oid("labs", "flag"), "Reference range indicator", "text", "LBNRIND",
                 codelist="CL.LAB_FLAG", method="reference range comparison"))),
        Form("assessments", "Disease-activity assessments", "QS", (
            _observed("assessments", "QSDTC"),
            Item(item_oid("assessments", "instrument"), "Instrument", "text", "QSCAT",
                 codelist="CL.INSTRUMENT"),
            *sledai_items, *essdai_items,
            Item(item_oid("assessments", "total"), "Total score", "float",
                 method=f"{sledai.METHOD} | {essdai.METHOD}"),
            Item(item_oid("assessments", "activity"), "Activity level", "text",
                 method=f"{sledai.METHOD} | {essdai.METHOD}"))),
        Form("adverse-events", "Adverse events", "AE", (
            _observed("adverse-events", "AESTDTC"),
            Item(item_oid("adverse-events", "term"), "Verbatim term", "text", "AETERM"),
            Item(item_oid("adverse-events", "meddra_pt"), "MedDRA preferred term", "text",
                 "AEDECOD"),
            Item(item_oid("adverse-events", "meddra_llt"), "MedDRA lowest level term", "text",
                 "AELLT"),
            Item(item_oid("adverse-events", "category"), "Category", "text", "AECAT",
                 codelist="CL.AE_CATEGORY"),
            Item(item_oid("adverse-events", "grade"), "CTCAE v5 grade", "integer", "AETOXGR",
                 codelist="CL.CTCAE_GRADE"),
            Item(item_oid("adverse-events", "serious"), "Serious", "boolean", "AESER"),
            *criteria,
            Item(item_oid("adverse-events", "relationship"), "Relationship to IL-2", "text",
                 "AEREL", codelist="CL.AE_RELATIONSHIP"),
            Item(item_oid("adverse-events", "action_taken"), "Action taken", "text", "AEACN",
                 codelist="CL.AE_ACTION"),
            Item(item_oid("adverse-events", "outcome"), "Outcome", "text", "AEOUT",
                 codelist="CL.AE_OUTCOME"),
            Item(item_oid("adverse-events", "ended_at"), "Ended at", "datetime", "AEENDTC"),
            Item(item_oid("adverse-events", "grade_name"), "Grade name", "text",
                 method="CTCAE v5 grade names"))),
    ]


def _subject_form(definition: StudyDefinition) -> Form:
    eligibility = [Item(item_oid(SUBJECT, f"ie_{c.id}"), f"Eligibility {c.id} ({c.kind})",
                        "boolean", "IEORRES", question=c.text) for c in definition.eligibility]
    return Form(SUBJECT, "Subject", "DM", (
        Item(item_oid(SUBJECT, "status"), "Status", "text"),
        Item(item_oid(SUBJECT, "arm"), "Arm", "text", "ARMCD", codelist="CL.ARM"),
        Item(item_oid(SUBJECT, "disease"), "Disease", "text", codelist="CL.DISEASE"),
        Item(item_oid(SUBJECT, "sex"), "Sex", "text", "SEX", codelist="CL.SEX"),
        Item(item_oid(SUBJECT, "date_of_birth"), "Date of birth", "date", "BRTHDTC"),
        Item(item_oid(SUBJECT, "consent_date"), "Informed consent", "date", "RFICDTC"),
        Item(item_oid(SUBJECT, "enrolled_on"), "Enrolled on", "date", "RFSTDTC"),
        Item(item_oid(SUBJECT, "locked"), "Casebook locked", "boolean"),
        *eligibility,
        *_demographics(definition),
    ), repeating=False)


def _declared(definition: StudyDefinition) -> dict[str, dict[str, str]]:
    """The SDTM variables (name -> ``num`` or ``char``) the definition declares, by domain."""
    variables = definition.sdtm.get("variables") or {}
    return {domain: dict(names) for domain, names in variables.items()}


def _sdtm_item(key: str, name: str, variable: str, kind: str) -> Item:
    return Item(item_oid(key, name), variable, SDTM_DATA_TYPES.get(kind, "text"), variable)


def _sdtm_forms(definition: StudyDefinition) -> list[Form]:
    """One form per SDTM domain the study loads records of, one item per declared variable
    (the keys a record id and subject stand for are not repeated)."""
    return [Form(domain, DOMAIN_NAMES[domain], domain, (
        _observed(domain, VALID_TIME.get(domain)),
        *(_sdtm_item(domain, name, name, kind) for name, kind in variables.items()
          if name not in KEYS)))
        for domain, variables in _declared(definition).items() if is_sdtm_kind(domain)]


def _demographics(definition: StudyDefinition) -> list[Item]:
    """The subject form's items of an imported subject: actual arm and the DM variables."""
    dm = _declared(definition).get("DM")
    if dm is None:
        return []
    return [Item(item_oid(SUBJECT, "actual_arm"), "Actual arm", "text", "ACTARMCD",
                 codelist="CL.ARM"),
            *(_sdtm_item(SUBJECT, _dm_item(name), name, kind) for name, kind in dm.items()
              if name not in KEYS)]


def _dm_item(variable: str) -> str:
    return f"DM.{variable}"


def catalogue(definition: StudyDefinition, visits_in_use: Iterable[str] = ()) -> Catalogue:
    """The metadata of ``definition``'s ODM exports.

    ``visits_in_use`` are the visit codes records carry: one the protocol does not schedule
    becomes an unscheduled study event, so no record loses its visit.
    """
    forms = {form.key: form for form in (_subject_form(definition), *_record_forms(),
                                         *_sdtm_forms(definition))}
    assert set(forms) >= {SUBJECT, *KINDS}, "every record kind needs a form"
    codelists: tuple[CodeList, ...] = (
        _codelist("Arm", definition.arms),
        _codelist("Disease", {c: d.get("name", c) for c, d in definition.diseases.items()}),
        _codelist("Sex", {"F": "Female", "M": "Male", "U": "Unknown"}),
        _codelist("Therapy category", THERAPY_CATEGORIES),
        _codelist("Dose frequency", dosing.FREQUENCY_CODES),
        _codelist("Lab test", {code: test.name for code, test in LAB_TESTS.items()}),
        _codelist("Lab flag", {"L": "Low", "N": "Normal", "H": "High"}),
        _codelist("Instrument", INSTRUMENTS),
        _codelist("ESSDAI level", ("0", "1", "2", "3"), "integer"),
        _codelist("AE category", ctcae.AE_CATEGORIES),
        _codelist("CTCAE grade", {str(g): n for g, n in ctcae.GRADE_NAMES.items()}, "integer"),
        _codelist("AE relationship", ctcae.RELATIONSHIPS),
        _codelist("AE action", ctcae.ACTIONS_TAKEN),
        _codelist("AE outcome", ctcae.OUTCOMES),
    )
    # ODM has no empty code list (a study of no named disease, e.g. one loaded from SDTM).
    codelists = tuple(c for c in codelists if c.items)
    units = {unit_oid(s): s for s in sorted(
        {sign.unit for sign in VITAL_SIGNS.values()} | {"m2", "mg", "mg/day"})}
    scheduled = [StudyEvent(event_oid(v.code), v.name, "Scheduled", v.code)
                 for v in definition.visits]
    known = {v.code for v in definition.visits}
    unscheduled = [StudyEvent(event_oid(code), code, "Unscheduled", code)
                   for code in sorted(set(visits_in_use) - known)]
    events = (StudyEvent(COMMON_EVENT, "Subject and unscheduled records", "Common", None),
              *scheduled, *unscheduled)
    by_field = {key: {item.oid: item for item in form.items} for key, form in forms.items()}
    return Catalogue(forms, codelists, units, events, by_field)


def text(item: Item, value: Any) -> str:
    """An item's value as ODM writes it for the item's data type."""
    if item.data_type == "boolean":
        return "true" if value else "false"
    if item.data_type == "float":
        number = float(value)
        # A whole number reads as one ("63", not "63.0"), as long as it is exact as a float.
        return str(int(number)) if number.is_integer() and abs(number) < 2**53 \
            else repr(number)
    if item.data_type == "integer":
        return str(int(value))
    return str(value)


def _scalar(value: Any) -> Any:
    """A derived value is stored with its method and inputs; the item holds the value."""
    return value["value"] if isinstance(value, Mapping) and "value" in value else value


def flatten(cat: Catalogue, key: str, name: str, value: Any) -> Iterator[tuple[Item, Any]]:
    """The items field ``name`` of form ``key`` fills with ``value`` (None: no value).

    Most fields are one item. An assessment's ``items`` fill one item per descriptor (and
    ``items.<name>`` one of them), an AE's seriousness criteria one flag per criterion, and
    the screening's eligibility one item per criterion.
    """
    items = cat.items_by_form[key]
    head, _, rest = name.partition(".")
    if (key == SUBJECT and name in HEADER_KEYS) or name in WORKFLOW_FIELDS:
        return
    if head == "items" and key == "assessments":
        values = value if not rest else {rest: value}
        for entry, level in (values or {}).items():
            yield _item(items, key, entry, name), level
    elif name == "seriousness_criteria":
        for criterion in ctcae.SERIOUSNESS_CRITERIA:
            yield (_item(items, key, f"serious_{criterion}", name),
                   None if value is None else criterion in value)
    elif name == "eligibility" and key == SUBJECT:
        for criterion in value or []:
            yield _item(items, key, f"ie_{criterion['id']}", name), criterion["met"]
    elif name == DEMOGRAPHICS and key == SUBJECT:
        for variable, given in (value or {}).items():
            yield _item(items, key, _dm_item(variable), name), _sdtm_value(given)
    elif is_sdtm_kind(key):
        yield _item(items, key, name, name), _sdtm_value(value)
    else:
        yield _item(items, key, name, name), _scalar(value)


def _sdtm_value(value: Any) -> Any:
    """An SDTM value: an empty text is SDTM's missing value, as a number's NaN would be."""
    return None if value == "" else value


def _item(items: Mapping[str, Item], key: str, name: str, field_name: str) -> Item:
    item = items.get(item_oid(key, name))
    if item is None:
        raise UnmappedField(f"no ODM item for field {field_name!r} of {key}")
    return item


def record_values(cat: Catalogue, key: str, values: Mapping[str, Any]
                  ) -> Iterator[tuple[Item, str]]:
    """Every (item, text) of a record's (or header's) current values, skipping empty ones
    (no value, or an empty text), in the form's order of items."""
    order = cat.items_by_form[key]
    found = {item.oid: (item, text(item, scalar)) for name, value in values.items()
             for item, scalar in flatten(cat, key, name, value)
             if scalar is not None and scalar != ""}
    return (found[oid] for oid in order if oid in found)
