"""Every operation of the API as a :class:`Call`: method, path, query, body, and how its
answer is read. No input or output happens here; :mod:`trialledger_client.client` runs calls
(adding the token, ``Idempotency-Key``, ``If-Match`` and retries), synchronously or not.

Paths and bodies follow the server's routes (``api/routes/*.py``) and request models
(``api/schemas.py``); an optional argument left as None is not sent.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import date, datetime
from typing import Any, Generic, Literal, TypeVar
from urllib.parse import quote

import httpx
from pydantic import BaseModel, TypeAdapter

from trialledger_client.models import (
    AuditPage,
    Casebook,
    ExportFormat,
    Json,
    Measurement,
    Reason,
    RecordKind,
    Study,
    SubjectSummary,
    Token,
    User,
    Written,
)

T = TypeVar("T")
Method = Literal["GET", "POST", "PATCH", "DELETE"]


@dataclass(frozen=True)
class Call(Generic[T]):
    """One request and how to read its successful answer.

    ``subject`` names the (study, subject) whose version the request is about: a write sends
    the version last seen as If-Match (``version`` overrides it), and an answer whose ETag is
    that subject's current version (``tracks``) becomes the version last seen.
    """

    method: Method
    path: str
    read: Callable[[httpx.Response], T]
    body: Json = None
    params: Mapping[str, str | int] | None = None
    subject: tuple[str, str] | None = None
    version: int | None = None
    tracks: bool = False

    @property
    def is_write(self) -> bool:
        """Whether the call changes data (and so carries an Idempotency-Key)."""
        return self.method != "GET"


def _segment(value: str) -> str:
    return quote(value, safe="")


def _subject_path(study: str, subject: str, *rest: str) -> str:
    return "/".join(("/v1/studies", _segment(study), "subjects", _segment(subject),
                     *(_segment(part) for part in rest)))


def _study_path(study: str, *rest: str) -> str:
    return "/".join(("/v1/studies", _segment(study), *(_segment(part) for part in rest)))


def _json(value: Any) -> Json:
    """``value`` as JSON: models dumped, times and dates in ISO 8601, None fields dropped
    from top-level bodies by :func:`_body`."""
    if isinstance(value, BaseModel):
        return value.model_dump(mode="json")
    if isinstance(value, datetime | date):
        return value.isoformat()
    if isinstance(value, Mapping):
        return {str(k): _json(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_json(v) for v in value]
    return value


def _body(**fields: Any) -> dict[str, Json]:
    return {name: _json(value) for name, value in fields.items() if value is not None}


def _params(**values: Any) -> dict[str, str | int]:
    return {name: _json(value) for name, value in values.items() if value is not None}


def _model(adapter: TypeAdapter[T]) -> Callable[[httpx.Response], T]:
    def read(response: httpx.Response) -> T:
        return adapter.validate_json(response.content)
    return read


def _written(response: httpx.Response) -> Written:
    return Written.model_validate({
        **response.json(), "replayed": response.headers.get("idempotent-replayed") == "true"})


def _json_object(response: httpx.Response) -> dict[str, Json]:
    value: dict[str, Json] = response.json()
    return value


_TOKEN = _model(TypeAdapter(Token))
_STUDY = _model(TypeAdapter(Study))
_USER = _model(TypeAdapter(User))
_CASEBOOK = _model(TypeAdapter(Casebook))
_AUDIT_PAGE = _model(TypeAdapter(AuditPage))
_SUBJECTS = _model(TypeAdapter(list[SubjectSummary]))
_OBJECTS = _model(TypeAdapter(list[dict[str, Json]]))


def _write(path: str, body: dict[str, Json], study: str, subject: str, version: int | None,
           method: Method = "POST") -> Call[Written]:
    return Call(method, path, _written, body, subject=(study, subject), version=version,
                tracks=True)


# --- sign-in, studies, people --------------------------------------------------------------

def sign_in(username: str, password: str, *, totp: str | None = None,
            client_id: str | None = None, client_secret: str | None = None) -> Call[Token]:
    """Sign in (``POST /v1/auth/token``); an API client adds its id and secret."""
    return Call("POST", "/v1/auth/token", _TOKEN, _body(
        username=username, password=password, totp=totp, client_id=client_id,
        client_secret=client_secret))


def register_study(definition: Mapping[str, Json]) -> Call[Study]:
    """Register a study from its definition (an admin of that study id)."""
    return Call("POST", "/v1/studies", _STUDY, _json(definition))


def get_study(study: str) -> Call[Study]:
    """A study's definition, lock and audit-review state."""
    return Call("GET", _study_path(study), _STUDY)


def add_user(username: str, full_name: str, password: str, *,
             roles: Sequence[Mapping[str, str]] = (),
             identity_verified_by: str | None = None) -> Call[User]:
    """Register a person with roles (``{"role", "study", "site"}`` each); an admin's call."""
    return Call("POST", "/v1/users", _USER, _body(
        username=username, full_name=full_name, password=password, roles=list(roles),
        identity_verified_by=identity_verified_by))


# --- subjects and records ------------------------------------------------------------------

def list_subjects(study: str) -> Call[list[SubjectSummary]]:
    """The subjects at the sites you may read."""
    return Call("GET", _study_path(study, "subjects"), _SUBJECTS)


def enrol(study: str, subject: str, *, site: str, date_of_birth: date, sex: str, disease: str,
          consent_date: date, screening: Mapping[str, Json], arm: str,
          enrolled_on: date) -> Call[Written]:
    """Consent, screen (every criterion) and enrol a subject: all stored, or nothing."""
    return _write(_study_path(study, "subjects"), _body(
        subject=subject, site=site, date_of_birth=date_of_birth, sex=sex, disease=disease,
        consent_date=consent_date, screening=screening, arm=arm, enrolled_on=enrolled_on),
        study, subject, None)


def record_vitals(study: str, subject: str, *, observed_at: datetime,
                  measurements: Mapping[str, Measurement | tuple[float, str]],
                  visit: str | None = None, record_id: str | None = None,
                  version: int | None = None) -> Call[Written]:
    """Record vital signs (``{"HEIGHT": (142.0, "cm")}``); BSA is derived."""
    given = {code: m if isinstance(m, Measurement) else Measurement(value=m[0], unit=m[1])
             for code, m in measurements.items()}
    return _write(_subject_path(study, subject, "vitals"), _body(
        record_id=record_id, observed_at=observed_at, visit=visit, measurements=given),
        study, subject, version)


def record_dose(study: str, subject: str, *, observed_at: datetime, drug: str, dose: float,
                unit: str, route: str, frequency: str | None = None, visit: str | None = None,
                record_id: str | None = None, version: int | None = None) -> Call[Written]:
    """Record a dose of the investigational product."""
    return _write(_subject_path(study, subject, "doses"), _body(
        record_id=record_id, observed_at=observed_at, visit=visit, drug=drug, dose=dose,
        unit=unit, route=route, frequency=frequency), study, subject, version)


def start_therapy(study: str, subject: str, *, observed_at: datetime, drug: str,
                  category: str, route: str, dose_mg: float | None = None,
                  dose_mg_per_day: float | None = None, frequency: str | None = None,
                  record_id: str | None = None, version: int | None = None) -> Call[Written]:
    """Start a glucocorticoid or immunosuppressant course (``dose_mg`` with its
    ``frequency``, or a daily total ``dose_mg_per_day``)."""
    return _write(_subject_path(study, subject, "therapies"), _body(
        record_id=record_id, observed_at=observed_at, drug=drug, category=category,
        route=route, dose_mg=dose_mg, dose_mg_per_day=dose_mg_per_day, frequency=frequency),
        study, subject, version)


def record_lab(study: str, subject: str, *, observed_at: datetime, code: str, value: float,
               unit: str, reference_low: float | None = None,
               reference_high: float | None = None, visit: str | None = None,
               record_id: str | None = None, version: int | None = None) -> Call[Written]:
    """Record a lab result (``observed_at``: when the sample was drawn)."""
    return _write(_subject_path(study, subject, "labs"), _body(
        record_id=record_id, observed_at=observed_at, visit=visit, code=code, value=value,
        unit=unit, reference_low=reference_low, reference_high=reference_high),
        study, subject, version)


def record_assessment(study: str, subject: str, *, observed_at: datetime, instrument: str,
                      items: Mapping[str, bool | int], visit: str | None = None,
                      record_id: str | None = None,
                      version: int | None = None) -> Call[Written]:
    """Record a SELENA-SLEDAI (descriptor: present) or ESSDAI (domain: level) assessment."""
    return _write(_subject_path(study, subject, "assessments"), _body(
        record_id=record_id, observed_at=observed_at, visit=visit, instrument=instrument,
        items=items), study, subject, version)


def report_adverse_event(study: str, subject: str, *, observed_at: datetime, term: str,
                         category: str, grade: int, serious: bool, relationship: str,
                         action_taken: str, outcome: str,
                         seriousness_criteria: Sequence[str] = (),
                         meddra_pt: str | None = None, meddra_llt: str | None = None,
                         record_id: str | None = None,
                         version: int | None = None) -> Call[Written]:
    """Report an adverse event (``observed_at``: onset)."""
    return _write(_subject_path(study, subject, "adverse-events"), _body(
        record_id=record_id, observed_at=observed_at, term=term, category=category,
        grade=grade, serious=serious, seriousness_criteria=list(seriousness_criteria),
        relationship=relationship, action_taken=action_taken, outcome=outcome,
        meddra_pt=meddra_pt, meddra_llt=meddra_llt), study, subject, version)


def change_therapy(study: str, subject: str, record_id: str, *, observed_at: datetime,
                   dose_mg: float | None = None, dose_mg_per_day: float | None = None,
                   version: int | None = None) -> Call[Written]:
    """A course's new dose from ``observed_at`` on (a taper step)."""
    return _write(_subject_path(study, subject, "therapies", record_id, "changes"), _body(
        observed_at=observed_at, dose_mg=dose_mg, dose_mg_per_day=dose_mg_per_day),
        study, subject, version)


def stop_therapy(study: str, subject: str, record_id: str, *, observed_at: datetime,
                 version: int | None = None) -> Call[Written]:
    """The course stopped at ``observed_at``."""
    return _write(_subject_path(study, subject, "therapies", record_id, "stop"),
                  _body(observed_at=observed_at), study, subject, version)


def update_adverse_event(study: str, subject: str, record_id: str, *, observed_at: datetime,
                         changes: Mapping[str, Json], reason: Reason | None = None,
                         version: int | None = None) -> Call[Written]:
    """How an adverse event evolved as of ``observed_at`` (only the fields in ``changes``;
    a None there clears the field). A change of what the event is needs a ``reason``."""
    return _write(_subject_path(study, subject, "adverse-events", record_id, "updates"),
                  {**_body(observed_at=observed_at, reason=reason), "changes": _json(changes)},
                  study, subject, version)


def resolve_adverse_event(study: str, subject: str, record_id: str, *, observed_at: datetime,
                          outcome: str, version: int | None = None) -> Call[Written]:
    """The adverse event ended at ``observed_at`` with its outcome."""
    return _write(_subject_path(study, subject, "adverse-events", record_id, "resolution"),
                  _body(observed_at=observed_at, outcome=outcome), study, subject, version)


def correct(study: str, subject: str, kind: RecordKind, record_id: str, *, field: str,
            value: Json, reason: Reason, query_id: str | None = None,
            version: int | None = None) -> Call[Written]:
    """Correct one field of a record (``PATCH``), with a reason; with ``query_id`` the
    correction answers that query."""
    return _write(_subject_path(study, subject, kind, record_id),
                  {**_body(field=field, reason=reason, query_id=query_id), "value": _json(value)},
                  study, subject, version, "PATCH")


def remove(study: str, subject: str, kind: RecordKind, record_id: str, *, reason: Reason,
           version: int | None = None) -> Call[Written]:
    """Remove a record (``DELETE``), with a reason; its values stay in the history."""
    return _write(_subject_path(study, subject, kind, record_id), _body(reason=reason),
                  study, subject, version, "DELETE")


def withdraw(study: str, subject: str, *, observed_at: datetime, reason: str,
             version: int | None = None) -> Call[Written]:
    """The subject left the study early at ``observed_at``."""
    return _write(_subject_path(study, subject, "withdrawal"),
                  _body(observed_at=observed_at, reason=reason), study, subject, version)


def complete(study: str, subject: str, *, observed_at: datetime,
             version: int | None = None) -> Call[Written]:
    """The subject completed the study at ``observed_at``."""
    return _write(_subject_path(study, subject, "completion"), _body(observed_at=observed_at),
                  study, subject, version)


def lock_subject(study: str, subject: str, *, reason: Reason,
                 version: int | None = None) -> Call[Written]:
    """Lock a casebook: every later write to it is refused (423) until it is unlocked."""
    return _write(_subject_path(study, subject, "lock"), _body(reason=reason), study, subject,
                  version)


def unlock_subject(study: str, subject: str, *, reason: Reason,
                   version: int | None = None) -> Call[Written]:
    """Unlock a casebook; later edits are recorded as post-lock edits."""
    return _write(_subject_path(study, subject, "unlock"), _body(reason=reason), study,
                  subject, version)


# --- monitoring ----------------------------------------------------------------------------

def open_query(study: str, subject: str, *, record_id: str, field: str, text: str,
               query_id: str | None = None, version: int | None = None) -> Call[Written]:
    """Open a query on one field of one record (``record_id`` of the answer: the query's)."""
    return _write(_subject_path(study, subject, "queries"), _body(
        record_id=record_id, field=field, text=text, query_id=query_id), study, subject,
        version)


def answer_query(study: str, subject: str, query_id: str, *, text: str,
                 version: int | None = None) -> Call[Written]:
    """Answer a query (to correct the value too, :func:`correct` with ``query_id``)."""
    return _write(_subject_path(study, subject, "queries", query_id, "answer"),
                  _body(text=text), study, subject, version)


def close_query(study: str, subject: str, query_id: str, *, text: str,
                version: int | None = None) -> Call[Written]:
    """Close a query."""
    return _write(_subject_path(study, subject, "queries", query_id, "close"),
                  _body(text=text), study, subject, version)


def verify_source(study: str, subject: str, *, record_id: str,
                  version: int | None = None) -> Call[Written]:
    """Mark a record, as it stands, verified against source documents (SDV)."""
    return _write(_subject_path(study, subject, "sdv"), _body(record_id=record_id), study,
                  subject, version)


def sign(study: str, subject: str, *, meaning: str, username: str, password: str,
         totp: str | None = None, signature_id: str | None = None,
         version: int | None = None) -> Call[Written]:
    """E-sign the casebook: the meaning and the signer's own username and password (and
    TOTP code when asked for), checked again whatever the token."""
    return _write(_subject_path(study, subject, "signatures"), _body(
        meaning=meaning, username=username, password=password, totp=totp,
        signature_id=signature_id), study, subject, version)


def record_deviation(study: str, subject: str, *, category: str, severity: str,
                     occurred_on: date, description: str, record_id: str | None = None,
                     deviation_id: str | None = None,
                     version: int | None = None) -> Call[Written]:
    """Record a protocol deviation found on the subject."""
    return _write(_subject_path(study, subject, "deviations"), _body(
        category=category, severity=severity, occurred_on=occurred_on, description=description,
        record_id=record_id, deviation_id=deviation_id), study, subject, version)


# --- reads ---------------------------------------------------------------------------------

def casebook(study: str, subject: str, *, as_of: datetime | None = None,
             valid_at: datetime | None = None) -> Call[Casebook]:
    """A subject's casebook now, as the system showed it at ``as_of`` (recorded time), and/or
    what it said held at clinical time ``valid_at``. Only a read of now sets the version
    later writes send as If-Match."""
    return Call("GET", _subject_path(study, subject), _CASEBOOK,
                params=_params(as_of=as_of, valid_at=valid_at), subject=(study, subject),
                tracks=as_of is None and valid_at is None)


def history_page(study: str, subject: str, *, cursor: str | None = None,
                 limit: int = 100) -> Call[AuditPage]:
    """One page of a subject's audit trail."""
    return Call("GET", _subject_path(study, subject, "history"), _AUDIT_PAGE,
                params=_params(cursor=cursor, limit=limit))


def audit_page(study: str, *, site: str | None = None, subject: str | None = None,
               record_id: str | None = None, field: str | None = None,
               user_id: str | None = None, event_type: str | None = None,
               recorded_from: datetime | None = None, recorded_to: datetime | None = None,
               cursor: str | None = None, limit: int = 100, review: str | None = None,
               late_days: int | None = None,
               min_changes: int | None = None) -> Call[AuditPage]:
    """One page of the study's audit trail in commit order, filtered (whoever reads only
    some sites names one in ``site``); ``review`` names a review filter (after-signature,
    after-lock, sponsor-staff, late-entry, frequent-critical) with its thresholds."""
    return Call("GET", _study_path(study, "audit"), _AUDIT_PAGE, params=_params(
        site=site, subject=subject, record_id=record_id, field=field, user_id=user_id,
        event_type=event_type, cursor=cursor, limit=limit, review=review,
        late_days=late_days, min_changes=min_changes, **{"from": recorded_from,
                                                         "to": recorded_to}))


def outcomes(study: str, *, as_of: datetime | None = None) -> Call[dict[str, Json]]:
    """The study's outcome tables as of ``as_of`` (default now)."""
    return Call("GET", _study_path(study, "outcomes"), _json_object,
                params=_params(as_of=as_of))


def outcome_cell(study: str, cell: str, *, as_of: datetime | None = None
                 ) -> Call[dict[str, Json]]:
    """The subjects and records behind one cell of the outcome tables."""
    return Call("GET", _study_path(study, "outcomes", "cell"), _json_object,
                params=_params(id=cell, as_of=as_of))


def list_deviations(study: str, *, site: str | None = None,
                    subject: str | None = None) -> Call[list[dict[str, Json]]]:
    """The study's protocol deviations at the sites you may read."""
    return Call("GET", _study_path(study, "deviations"), _OBJECTS,
                params=_params(site=site, subject=subject))


def export_request(study: str, export_format: ExportFormat, *,
                   as_of: datetime | None = None) -> tuple[str, dict[str, str | int]]:
    """The path and query of an export (streamed by the clients, not read whole)."""
    return _study_path(study, "exports", export_format), _params(as_of=as_of)


# --- the ledger ----------------------------------------------------------------------------

def checkpoint(study: str) -> Call[dict[str, Json]]:
    """The latest signed checkpoint of the study's ledger (404 before the first)."""
    return Call("GET", _study_path(study, "ledger", "checkpoint"), _json_object)


def inclusion_proof(study: str, event: int, *,
                    tree_size: int | None = None) -> Call[dict[str, Json]]:
    """RFC 9162 inclusion proof of the event at log position ``event``."""
    return Call("GET", _study_path(study, "ledger", "proofs", "inclusion"), _json_object,
                params=_params(event=event, tree_size=tree_size))


def consistency_proof(study: str, from_size: int, *,
                      to_size: int | None = None) -> Call[dict[str, Json]]:
    """RFC 9162 consistency proof between two tree sizes."""
    return Call("GET", _study_path(study, "ledger", "proofs", "consistency"), _json_object,
                params=_params(**{"from": from_size, "to": to_size}))
