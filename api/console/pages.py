"""The console's screens under ``/ui/``: sign-in, studies, the casebook with its time
slider, queries and e-signatures, and the audit trail.

Every read and write calls the HTTP API's own route functions (:mod:`api.routes`), so the
console sees and changes exactly what the API would for the same person: the same trial
service, permissions and projections, and no rule of its own. Pages render with Jinja2 and
work without JavaScript; htmx (vendored) only swaps the casebook in place as the slider moves.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import urlencode

import orjson
import psycopg
from fastapi import APIRouter, Form, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from fastapi.templating import Jinja2Templates
from pydantic import ValidationError
from starlette.concurrency import run_in_threadpool

from api.auth import DIRECT, Principal, request_id
from api.blinded import mask_of, shown
from api.console import casebook_view as view
from api.console.ledger_status import ledger_status
from api.console.session import (
    COOKIE,
    SIGN_IN_COOKIE,
    CsrfRefused,
    check_csrf,
    drop_session,
    keep_session,
    keep_sign_in_csrf,
    sign_in_csrf,
    signed_in,
)
from api.problems import status_of
from api.routes import ledger, monitoring, people, records, studies
from api.routes.people import address_of
from api.schemas import (
    CorrectionIn,
    PasswordChangeIn,
    QueryIn,
    ReasonIn,
    SignatureIn,
    TextIn,
)
from api.writes import runtime_of, study_app
from application.people import SignIn
from application.runtime import Runtime
from application.sign_in_limits import TooManyAttempts
from domain.envelope import REASON_CODES
from domain.errors import DomainError, NotFound, Unauthenticated
from domain.permissions import Action, readable_sites
from domain.review import REVIEW_FILTERS
from infra.postgres import schema_for_study
from projections.dashboard import Overview, overview
from projections.deviations import deviation_list
from projections.subject_changes import (
    Instants,
    change_instants,
    field_changes,
    removed_records,
)

router = APIRouter(prefix="/ui", include_in_schema=False)
templates = Jinja2Templates(directory=Path(__file__).parent / "templates")
templates.env.filters["utc"] = view.utc_text
templates.env.filters["shown"] = view.shown
templates.env.filters["age"] = view.age
templates.env.filters["figure"] = view.figure
templates.env.filters["site_clock"] = view.site_clock

templates.env.globals["idle_seconds"] = lambda request: int(
    runtime_of(request).sessions().idle_timeout.total_seconds())

AUDIT_PAGE = 25  # rows per page of the audit trail
OLDEST_QUERIES = 50  # open queries the dashboard lists (all are counted)
T = TypeVar("T")


def page(request: Request, name: str, status: int = 200, **context: Any) -> HTMLResponse:
    """Render the console template ``name`` with ``context``."""
    return templates.TemplateResponse(request, name, context, status_code=status)


async def call(fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
    """Run one of the API's (synchronous) route functions in a worker thread."""
    return await run_in_threadpool(fn, *args, **kwargs)


def refusal(exc: Exception) -> tuple[int, str]:
    """The status and one line for a refused read or write (the API's own mapping)."""
    if isinstance(exc, ValidationError):
        fields = ", ".join(".".join(str(p) for p in e["loc"]) or "input" for e in exc.errors())
        return 422, f"Invalid input: {fields}: " + "; ".join(e["msg"] for e in exc.errors())
    if isinstance(exc, DomainError):
        status, title = status_of(exc)
        return status, f"{title}: {exc}"
    raise exc


@router.get("/")
async def home() -> RedirectResponse:
    """The console's front door: the studies you hold a role in."""
    return RedirectResponse("/ui/studies", status_code=303)


@router.get("/sign-in")
async def sign_in_page(request: Request, why: str = "") -> HTMLResponse:
    """The sign-in form (and why you are here: signed out, session ended)."""
    notices = {"ended": "Your session ended (idle too long, expired or signed out). "
                        "Please sign in again.",
               "signed-out": "You are signed out.",
               "password-changed": "Your password is changed and every session of yours "
                                   "ended. Please sign in with the new password."}
    return _sign_in_form(request, 200, notice=notices.get(why, ""))


def _sign_in_form(request: Request, status: int, *, notice: str = "", error: str = "",
                  username: str = "") -> HTMLResponse:
    csrf = sign_in_csrf(request)
    response = page(request, "sign_in.html", status, csrf=csrf, notice=notice, error=error,
                     username=username)
    keep_sign_in_csrf(request, response, csrf)
    return response


@router.post("/sign-in")
async def sign_in(request: Request, username: str = Form(""), password: str = Form(""),
                  totp: str = Form(""), csrf: str = Form("")) -> Response:
    """Sign in through the directory service, as ``POST /v1/auth/token`` does; the session
    token goes into the cookie. Five failures in a row lock the account, and the form says
    so."""
    expected = request.cookies.get(SIGN_IN_COOKIE, "")
    if not expected or csrf != expected:
        return _sign_in_form(request, 403, error="The form expired; please sign in again.",
                             username=username)
    runtime = runtime_of(request)
    attempt = SignIn(username, password, DIRECT, request_id(request), "session",
                     totp or None, address_of(request))
    try:
        user = await call(runtime.people().sign_in, attempt)
    except TooManyAttempts as e:
        return _sign_in_form(request, 429, error=str(e), username=username)
    except Unauthenticated as e:
        return _sign_in_form(request, 401, username=username,
                             error=await call(_why_refused, request, username, e))
    token = await call(_issue, request, user.username)
    response = RedirectResponse("/ui/studies", status_code=303)
    keep_session(request, response, token)
    return response


def _issue(request: Request, username: str) -> str:
    runtime = runtime_of(request)
    with runtime.pool().connection() as conn:
        token, _ = runtime.sessions().issue(conn, username, DIRECT)
    return token


def _end(request: Request, token: str) -> None:
    runtime = runtime_of(request)
    with runtime.pool().connection() as conn:
        runtime.sessions().end(conn, token)


def _why_refused(request: Request, username: str, refused: Unauthenticated) -> str:
    try:
        user = runtime_of(request).directory().user(username)
    except NotFound:
        user = None
    if user is not None and user.locked_out:
        return ("This account is locked after repeated failed sign-ins. "
                "Ask an administrator to unlock it.")
    return f"Sign-in refused: {refused}."


@router.post("/sign-out")
async def sign_out(request: Request, csrf: str = Form("")) -> Response:
    """End the session (its token is ended in the session store, as the API's sign-out)."""
    _, expected = await signed_in(request)
    check_csrf(request, expected, csrf)
    await call(_end, request, request.cookies[COOKIE])
    response = RedirectResponse("/ui/sign-in?why=signed-out", status_code=303)
    drop_session(response)
    return response


@router.get("/timed-out")
async def timed_out(request: Request) -> Response:
    """Where an idle page goes (``static/idle.js``): the session ends as an idle time-out
    would end it, and the sign-in page says why. A GET, as a page's timer can only navigate;
    the SameSite=Strict cookie keeps other sites from ending sessions through it."""
    token = request.cookies.get(COOKIE)
    if token:
        await call(_end, request, token)
    response = RedirectResponse("/ui/sign-in?why=ended", status_code=303)
    drop_session(response)
    return response


@router.get("/password")
async def password_page(request: Request) -> HTMLResponse:
    """The form to change your own password."""
    principal, csrf = await signed_in(request)
    return page(request, "password.html", principal=principal, csrf=csrf, error="")


@router.post("/password")
async def change_password(request: Request, current_password: str = Form(""),
                          new_password: str = Form(""), totp: str = Form(""),
                          csrf: str = Form("")) -> Response:
    """Change your own password as ``POST /v1/auth/password`` does (the current one checked,
    the new one held to the password rules); every session of yours ends, this one too."""
    principal, expected = await signed_in(request)
    check_csrf(request, expected, csrf)
    try:
        await call(people.change_own_password, request, principal, PasswordChangeIn(
            current_password=current_password, new_password=new_password, totp=totp or None))
    except (DomainError, ValidationError, TooManyAttempts) as e:
        status, message = (429, str(e)) if isinstance(e, TooManyAttempts) else refusal(e)
        return page(request, "password.html", status, principal=principal, csrf=expected,
                     error=message)
    response = RedirectResponse("/ui/sign-in?why=password-changed", status_code=303)
    drop_session(response)
    return response


@router.get("/studies")
async def study_list(request: Request) -> HTMLResponse:
    """The studies of this deployment you hold a role in."""
    principal, csrf = await signed_in(request)
    held = {g.study for g in principal.user.grants}
    known = [s for s, _ in await call(runtime_of(request).studies)]
    mine = [s for s in sorted(known) if "*" in held or s in held]
    return page(request, "studies.html", principal=principal, csrf=csrf, studies=mine)


@router.get("/studies/{study}")
async def study_page(request: Request, study: str) -> HTMLResponse:
    """A study's dashboard and its subjects, at the sites you may read: enrolment by site and
    arm, open queries with their age, SDV progress, casebooks awaiting signature or whose
    signature was invalidated, protocol deviations, and the ledger: its newest checkpoint,
    that checkpoint's age and cosigners, and the last verification."""
    principal, csrf = await signed_in(request)
    try:
        # The API's subject list checks the grant and brings the read tables up to date.
        subjects = await call(studies.list_subjects, request, principal, study)
        glance, deviations = await call(_overview, request, principal, study)
    except DomainError as e:
        return error_page(request, principal, csrf, e)
    try:
        checkpoint: dict[str, Any] | str = await call(ledger.get_checkpoint, request,
                                                       principal, study)
    except DomainError as e:
        checkpoint = str(e)
    runtime = runtime_of(request)
    status = None if isinstance(checkpoint, str) else await call(
        ledger_status, runtime, study, checkpoint)
    return page(request, "study.html", principal=principal, csrf=csrf, study=study,
                subjects=subjects, glance=glance, checkpoint=checkpoint, ledger=status,
                deviations=deviations, now=datetime.now(UTC), oldest=OLDEST_QUERIES)


def _overview(request: Request, principal: Principal, study: str
              ) -> tuple[Overview, list[dict[str, Any]]]:
    """The study at a glance and its protocol deviations (as ``GET …/deviations`` lists
    them), at the sites the person may read, from one connection."""
    sites = readable_sites(principal.user.grants, study)
    with runtime_of(request).primary_read() as conn:
        schema = schema_for_study(study)
        return (overview(conn, schema, sites, OLDEST_QUERIES, mask_of(request, principal, study)),
                shown(request, principal, study,
                      deviation_list(conn, schema, sites, None, None)))


def error_page(request: Request, principal: Principal, csrf: str,
               exc: Exception) -> HTMLResponse:
    """The error page for a refused read or write."""
    status, message = refusal(exc)
    return page(request, "error.html", status, principal=principal, csrf=csrf,
                 message=message)


def study_zones(request: Request, principal: Principal, study: str) -> dict[str, str]:
    """The study's sites' time zones (from its definition, as the API serves it)."""
    return view.site_zones(studies.get_study(request, principal, study)["definition"])


def _caught_up(request: Request, study: str) -> Runtime:
    """The runtime, once the study's read tables are up to date."""
    study_app(request, study)
    runtime = runtime_of(request)
    runtime.project(study)
    return runtime


def _readable_instants(conn: psycopg.Connection[Any], principal: Principal, study: str,
                       subject: str) -> Instants:
    """The subject's change instants, once the person may read its site (the same grant
    check as the API's casebook route)."""
    instants = change_instants(conn, schema_for_study(study), subject)
    principal.grant_for(Action.READ, study, instants.site)
    return instants


def _instants(request: Request, principal: Principal, study: str,
              subject: str) -> Instants:
    with _caught_up(request, study).primary_read() as conn:
        return _readable_instants(conn, principal, study, subject)


def _moment(request: Request, principal: Principal, study: str, subject: str,
            step: int | None, as_of: str | None, valid_at: str | None,
            ) -> tuple[view.Moment, datetime | None, datetime | None,
                       dict[tuple[str, str], dict[str, Any]], list[dict[str, Any]]]:
    """Where the slider stands, the recorded and clinical times typed, each field's changes
    by then and the records removed by then: read on one connection, once the person may
    read the subject's site."""
    with _caught_up(request, study).primary_read() as conn:
        instants = _readable_instants(conn, principal, study, subject)
        typed = view.typed_time(as_of, "as_of")
        valid = view.typed_time(valid_at, "valid_at")
        when = view.moment(instants.times, step, typed)
        schema = schema_for_study(study)
        return (when, typed, valid, field_changes(conn, schema, subject, when.as_of),
                removed_records(conn, schema, subject, when.as_of))


async def _casebook(request: Request, principal: Principal, csrf: str, study: str,
                    subject: str, *, step: int | None = None, as_of: str | None = None,
                    valid_at: str | None = None, status: int = 200, error: str = "",
                    notice: str = "") -> HTMLResponse:
    when, typed, valid, changes, removed = await call(_moment, request, principal, study,
                                                      subject, step, as_of, valid_at)
    answer = await call(studies.get_casebook, request, principal, study, subject, None,
                         when.as_of, valid)
    book = orjson.loads(answer.body)
    definition = (await call(studies.get_study, request, principal, study))["definition"]
    zone = view.site_zones(definition).get(str(book["site"]))
    rows = view.record_rows(book, changes, f"/ui/studies/{study}/subjects/{book['subject']}"
                            "/history", when.as_of, zone)
    return page(request, "casebook.html", status, principal=principal, csrf=csrf,
                 study=study, book=book, when=when, typed=view.input_text(typed),
                 valid_at=view.input_text(valid), now=datetime.now(UTC), rows=rows,
                 removed=view.removed_rows(removed, zone), zone=zone,
                 meanings=definition.get("signature_meanings", []), reason_codes=REASON_CODES,
                 error=error, notice=notice, past=when.as_of is not None)


@router.get("/studies/{study}/subjects/{subject}/history")
async def value_history(request: Request, study: str, subject: str, record: str = "",
                        field: str = "", as_of: str = "") -> HTMLResponse:
    """One value's history (old → new, who, role, site, time, reason) up to ``as_of``, from
    the API's audit trail: the fragment a casebook's change marker opens in place, or a
    page of its own without JavaScript."""
    principal, csrf = await signed_in(request)
    try:
        until = view.typed_time(as_of, "as_of")
        instants = await call(_instants, request, principal, study, subject)
        trail = await call(
            studies.get_audit_trail, request, principal, study, instants.site, subject,
            record or None, field or None, None, None, None,
            until + timedelta(microseconds=1) if until else None, None, 1000)
        zones = await call(study_zones, request, principal, study)
    except DomainError as e:
        return error_page(request, principal, csrf, e)
    # htmx asks for the rows alone, to put them in the marker it opened.
    name = "history_rows.html" if request.headers.get("hx-request") == "true" else "history.html"
    return page(request, name, principal=principal, csrf=csrf, study=study,
                 subject=subject, record=record, field=field, entries=trail["entries"],
                 more=trail["next_cursor"] is not None, zones=zones)


@router.get("/studies/{study}/subjects/{subject}")
async def casebook_page(request: Request, study: str, subject: str, step: int | None = None,
                        as_of: str | None = None, valid_at: str | None = None) -> HTMLResponse:
    """A subject's casebook as it stood at any recorded time: a slider over the subject's
    change instants or a typed date-time (UTC); each value opens its history."""
    principal, csrf = await signed_in(request)
    try:
        return await _casebook(request, principal, csrf, study, subject, step=step,
                               as_of=as_of, valid_at=valid_at)
    except DomainError as e:
        return error_page(request, principal, csrf, e)


async def _write(request: Request, study: str, subject: str, csrf: str,
                 write: Callable[[Principal], Any], done: str) -> Response:
    """Run one write through the API's route function, then show the casebook again: after
    a redirect when it was stored, with the refusal in place when it was not."""
    principal, expected = await signed_in(request)
    check_csrf(request, expected, csrf)
    try:
        await call(write, principal)
    except (DomainError, ValidationError) as e:
        status, message = refusal(e)
        try:
            return await _casebook(request, principal, expected, study, subject,
                                   status=status, error=message)
        except DomainError as e2:
            return error_page(request, principal, expected, e2)
    query = urlencode({"done": done})
    return RedirectResponse(f"/ui/studies/{study}/subjects/{subject}?{query}#top",
                            status_code=303)


@router.post("/studies/{study}/subjects/{subject}/queries")
async def raise_query(request: Request, study: str, subject: str, record_id: str = Form(""),
                      field: str = Form(""), text: str = Form(""),
                      csrf: str = Form("")) -> Response:
    """Raise a query on one field of one record (``POST …/queries``)."""
    return await _write(request, study, subject, csrf, lambda p: monitoring.open_query(
        request, p, study, subject, None, QueryIn(record_id=record_id, field=field, text=text)),
        "query raised")


def _typed_value(text: str) -> Any:
    # A value typed in a form is JSON when it reads as JSON (0.6, true, null), else text.
    try:
        return orjson.loads(text)
    except orjson.JSONDecodeError:
        return text


@router.post("/studies/{study}/subjects/{subject}/queries/{query}/answer")
async def answer_query(request: Request, study: str, subject: str, query: str,
                       record_id: str = Form(""), field: str = Form(""),
                       value: str = Form(""), reason_code: str = Form(""),
                       reason_text: str = Form(""), csrf: str = Form("")) -> Response:
    """Answer a query by correcting its value, with a reason (``PATCH`` the record with
    ``query_id``)."""
    def correct(principal: Principal) -> Any:
        book = orjson.loads(studies.get_casebook(request, principal, study, subject).body)
        kind = view.kind_of(book, record_id)
        if kind is None:
            raise NotFound(f"no record {record_id} in the casebook of {subject}")
        body = CorrectionIn(field=field, value=_typed_value(value), query_id=query,
                            reason=ReasonIn(code=reason_code, text=reason_text))
        return records.correct_record(request, principal, study, subject,
                                      kind, record_id, None, body)  # type: ignore[arg-type]
    return await _write(request, study, subject, csrf, correct, "query answered by correction")


@router.post("/studies/{study}/subjects/{subject}/queries/{query}/close")
async def close_query(request: Request, study: str, subject: str, query: str,
                      text: str = Form(""), csrf: str = Form("")) -> Response:
    """Close a query (``POST …/queries/{q}/close``)."""
    return await _write(request, study, subject, csrf, lambda p: monitoring.close_query(
        request, p, study, subject, query, None, TextIn(text=text)), "query closed")


@router.post("/studies/{study}/subjects/{subject}/signatures")
async def sign(request: Request, study: str, subject: str, meaning: str = Form(""),
               password: str = Form(""), totp: str = Form(""),
               csrf: str = Form("")) -> Response:
    """Sign the casebook: the meaning, and the signer's password entered again
    (``POST …/signatures``, the same re-authentication)."""
    def signature(principal: Principal) -> Any:
        return monitoring.sign_casebook(request, principal, study, subject, None, SignatureIn(
            meaning=meaning, username=principal.user.username, password=password,
            totp=totp or None))
    return await _write(request, study, subject, csrf, signature, "casebook signed")


@router.get("/studies/{study}/audit")
async def audit_trail(request: Request, study: str, site: str = "", subject: str = "",
                      user_id: str = "", field: str = "", event_type: str = "",
                      recorded_from: str = "", recorded_to: str = "", cursor: str = "",
                      limit: int = AUDIT_PAGE, review: str = "") -> HTMLResponse:
    """The study's audit trail, filtered (site, subject, user, field, event type, recorded
    time range, review filter), ``limit`` rows a page, forward by cursor. Whoever reads one
    site only sees it chosen for them (the API asks them to name it)."""
    principal, csrf = await signed_in(request)
    sites = readable_sites(principal.user.grants, study)
    if not site and sites is not None and len(sites) == 1:
        site = next(iter(sites))
    filters = {"site": site, "subject": subject, "user_id": user_id, "field": field,
               "event_type": event_type, "recorded_from": recorded_from,
               "recorded_to": recorded_to, "limit": str(limit), "review": review}
    try:
        trail = await call(
            studies.get_audit_trail, request, principal, study, site or None, subject or None,
            None, field or None, user_id or None, event_type or None,
            view.typed_time(recorded_from, "recorded_from"),
            view.typed_time(recorded_to, "recorded_to"), cursor or None, limit,
            review=review or None)
        zones = await call(study_zones, request, principal, study)
    except DomainError as e:
        return error_page(request, principal, csrf, e)
    kept = {k: v for k, v in filters.items() if v and (k != "limit" or limit != AUDIT_PAGE)}
    return page(request, "audit.html", principal=principal, csrf=csrf, study=study,
                 filters=filters, entries=trail["entries"], zones=zones, reviews=REVIEW_FILTERS,
                 next_url=(f"?{urlencode({**kept, 'cursor': trail['next_cursor']})}"
                           if trail["next_cursor"] else None),
                 first_url=f"?{urlencode(kept)}" if cursor else None,
                 csv_url=f"/ui/studies/{study}/audit.csv?"
                         + urlencode({k: v for k, v in kept.items() if k != "limit"}),
                 filter_url=lambda **more: f"?{urlencode({**kept, **more})}")


@router.get("/studies/{study}/diff")
async def diff_page(request: Request, study: str, recorded_from: str = "",
                    recorded_to: str = "") -> HTMLResponse:
    """What changed between two recorded times (``GET …/diff``, for readers of every site):
    each subject header or record whose rendering changed, field by field."""
    principal, csrf = await signed_in(request)
    since = view.typed_time(recorded_from, "recorded_from") if recorded_from else None
    until = view.typed_time(recorded_to, "recorded_to") if recorded_to else None
    changes: list[dict[str, Any]] = []
    try:
        if since is not None and until is not None:
            changes = await call(studies.get_changes, request, principal, study, since,
                                  until)
    except DomainError as e:
        return error_page(request, principal, csrf, e)
    return page(request, "diff.html", principal=principal, csrf=csrf, study=study,
                 recorded_from=recorded_from, recorded_to=recorded_to, asked=since and until,
                 changes=[{**c, "fields": view.changed_fields(c["before"], c["after"])}
                          for c in changes])


def refused_csrf(request: Request, _: CsrfRefused) -> HTMLResponse:
    """A form post without the session's CSRF token: refused, nothing done."""
    return page(request, "error.html", 403, principal=None, csrf="",
                 message="Forbidden: the form was not sent from this console "
                         "(missing or wrong CSRF token); nothing was done.")
