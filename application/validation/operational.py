"""Operational qualification: the requirements that can be shown on the live system, each
exercised through the trial service (the front door of every write) or SQL, in the
validation study. They run in order: the entry, its signature, the correction that
invalidates it, the reconstruction before and after, then the store's guards and exports."""

from __future__ import annotations

import getpass
import secrets
import zipfile
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import psycopg
from lxml import etree

from application.exports import write_bundle_file, write_rendering
from application.validation.installation import record_tables
from application.validation.model import Check, CheckFailed, Context
from domain.caller import OPERATOR_GRANT, Caller
from domain.commands import (
    CorrectRecord,
    EnrolSubject,
    RecordLabResult,
    RegisterStudy,
    SignCasebook,
)
from domain.envelope import Reason
from domain.errors import InvalidInput, Unauthenticated
from domain.studies import nct04397107
from infra import keys
from infra.catalog import EVENTS_TABLE
from infra.ledger.bundle import canonical_info
from infra.passwords import hash_password
from infra.postgres import connect, schema_for_study
from projections.queries import casebook_as_of
from trialledger_verifier.bundle import BundleInvalid, verify_bundle

# The standards beside the project's checkout (../shared/standards), as the tests use them.
DEFAULT_ODM_XSD = (Path(__file__).resolve().parents[3] / "shared" / "standards" / "odm-1.3.2"
                   / "ODM1-3-2.xsd")
SITE = "JLU1"
SUBJECT = "001"
RECORD = "LB1"
ENTERED, CORRECTED = 0.8, 0.6
OBSERVED_AT = datetime(2021, 1, 11, 8, 0, tzinfo=UTC)
CLIENT = "trialledger-validate"
MEANING = "responsibility"
REASON = Reason("transcription_error", "validation: value checked against the source")


def _operator(ctx: Context) -> Caller:
    """The operating-system user running the validation, as the set-up commands name them."""
    operator = getpass.getuser()
    return Caller(f"os:{operator}", operator, operator, (OPERATOR_GRANT,), CLIENT,
                  f"{ctx.study}-set-up", "cli")


def _investigator(ctx: Context) -> Caller:
    if ctx.investigator is None:
        raise CheckFailed("the validation scenario did not start (see the first check)")
    return ctx.investigator


def _stored(ctx: Context) -> int:
    return int(ctx.runtime.study(ctx.study).recorder.max_notification_id() or 0)


def _last_event(ctx: Context) -> Any:
    app = ctx.runtime.study(ctx.study)
    *_, last = app.events.get(app.subject(SUBJECT).id)
    return last


def entry_audited(ctx: Context) -> str:
    """The validation study is registered and a child enrolled by a validation person; a lab
    result's first entry is an event naming who (id, printed name, role, site), through what,
    the edit point, the server's UTC time, and the clinical time apart from it."""
    runtime = ctx.runtime
    definition = {**nct04397107.definition(), "study_id": ctx.study,
                  "title": f"TrialLedger validation study {ctx.study} (disposable)"}
    runtime.service().handle(RegisterStudy(study=ctx.study, definition=definition),
                             _operator(ctx))
    username = f"validate-{ctx.study.lower()}"
    ctx.password = secrets.token_urlsafe(24)
    envelope = _operator(ctx).envelope(OPERATOR_GRANT)
    user = runtime.directory().register_user(
        username, "Validation Investigator", hash_password(ctx.password), envelope,
        lambda u, at: u.grant("investigator", ctx.study, SITE, envelope, at))
    ctx.investigator = Caller.of(user, CLIENT, f"{ctx.study}-oq", "cli")
    service = runtime.service()
    service.handle(EnrolSubject(
        study=ctx.study, subject=SUBJECT, site=SITE, date_of_birth=date(2010, 5, 1), sex="F",
        disease="SLE", consent_date=date(2021, 1, 10),
        screening_answers=nct04397107.ELIGIBLE_SCREENING_ANSWERS, arm="IL2",
        enrolled_on=date(2021, 1, 10)), ctx.investigator)
    before = datetime.now(UTC)
    service.handle(RecordLabResult(study=ctx.study, subject=SUBJECT, record_id=RECORD,
                                   observed_at=OBSERVED_AT, code="C3", value=ENTERED,
                                   unit="g/L"), ctx.investigator)
    after = datetime.now(UTC)
    event = _last_event(ctx)
    envelope = event.envelope
    actor = envelope.actor
    seen = {"user id": actor.user_id, "printed name": actor.printed_name, "role": actor.role,
            "site": actor.site, "client": envelope.client, "edit point": envelope.edit_point}
    wanted = {"user id": user.user_id, "printed name": "Validation Investigator",
              "role": "investigator", "site": SITE, "client": CLIENT, "edit point": "site"}
    if seen != wanted:
        raise CheckFailed(f"the entry's envelope is {seen}, expected {wanted}")
    recorded = event.timestamp
    if recorded.utcoffset() != timedelta(0) or not before <= recorded <= after:
        raise CheckFailed(f"recorded at {recorded.isoformat()}, not the server's UTC time "
                          f"between {before.isoformat()} and {after.isoformat()}")
    if getattr(event, "observed_at", None) != OBSERVED_AT:
        raise CheckFailed("the entry does not keep its clinical (observed) time")
    ctx.facts["entered_at"] = recorded
    return (f"{type(event).TOPIC} at position {_stored(ctx)}: {actor.printed_name} "
            f"({actor.user_id}, {actor.role} at {actor.site}) via {envelope.client}, edit point "
            f"{envelope.edit_point}, recorded {recorded.isoformat()}, observed "
            f"{OBSERVED_AT.isoformat()}")


def signature_reauthenticates(ctx: Context) -> str:
    """A signature with a wrong password is refused and stores nothing; with the signer's
    own it carries printed name, UTC time, meaning and the hash of what was signed."""
    who = _investigator(ctx)
    before = _stored(ctx)

    def sign(password: str) -> Any:
        return ctx.runtime.service().handle(SignCasebook(
            study=ctx.study, subject=SUBJECT, signature_id="SIG1", meaning=MEANING,
            username=who.username, password=password), who)

    try:
        sign(ctx.password + "-wrong")
    except Unauthenticated:
        pass
    else:
        raise CheckFailed("a signature with a wrong password was accepted")
    if _stored(ctx) != before:
        raise CheckFailed("the refused signature stored an event")
    signature = sign(ctx.password).signatures["SIG1"]
    missing = [k for k in ("printed_name", "signed_at", "meaning", "content_sha256")
               if not signature.get(k)]
    if missing or signature["status"] != "valid":
        raise CheckFailed(f"the signature lacks {missing} or is not valid: {signature}")
    return (f"a wrong password refused, nothing stored; signed by {signature['printed_name']} "
            f"at {signature['signed_at']}, meaning {signature['meaning']}, content SHA-256 "
            f"{signature['content_sha256'][:16]}…")


def reason_enforced(ctx: Context) -> str:
    """A correction without a reason is refused naming `reason` and stores nothing; with one
    it is a new event with the old and the new value."""
    who = _investigator(ctx)
    before = _stored(ctx)

    def correct(reason: Reason | None) -> Any:
        return ctx.runtime.service().handle(CorrectRecord(
            study=ctx.study, subject=SUBJECT, kind="labs", record_id=RECORD, field="value",
            value=CORRECTED, reason=reason), who)

    try:
        correct(None)
    except InvalidInput as refused:
        fields = [p.field for p in refused.problems]
        if fields != ["reason"]:
            raise CheckFailed(f"refused naming {fields}, not reason") from None
    else:
        raise CheckFailed("a correction without a reason was accepted")
    if _stored(ctx) != before:
        raise CheckFailed("the refused correction stored an event")
    correct(REASON)
    event = _last_event(ctx)
    change = getattr(event, "changes", {}).get("value", {})
    old, new = change.get("old"), change.get("new")
    if (old, new) != (ENTERED, CORRECTED) or event.envelope.reason != REASON:
        raise CheckFailed(f"the correction event holds {old!r} -> {new!r}, reason "
                          f"{event.envelope.reason}")
    ctx.facts["corrected_at"] = event.timestamp
    return (f"refused without a reason (422 naming reason), nothing stored; then "
            f"{type(event).TOPIC}: {old} -> {new}, reason {REASON.code}")


def signature_invalidated(ctx: Context) -> str:
    """The correction of signed data invalidated the signature; history keeps both."""
    _investigator(ctx)
    signature = ctx.runtime.study(ctx.study).subject(SUBJECT).signatures.get("SIG1")
    if signature is None or signature["status"] != "invalidated":
        raise CheckFailed(f"after a change of signed data the signature is {signature}")
    return (f"SIG1 invalidated at {signature['invalidated_at']} by version "
            f"{signature['invalidated_by_version']}")


def as_of_reconstruction(ctx: Context) -> str:
    """The casebook as of a time before the correction shows the first value, now the
    corrected one: from the event log and from the read tables the API serves."""
    if "corrected_at" not in ctx.facts:
        raise CheckFailed("the correction did not run (see the checks before)")
    just_before = ctx.facts["corrected_at"] - timedelta(microseconds=1)
    app = ctx.runtime.study(ctx.study)
    folded = (app.subject_as_of(SUBJECT, just_before).records[RECORD].fields["value"],
              app.subject(SUBJECT).records[RECORD].fields["value"])
    ctx.runtime.project(ctx.study)
    schema = schema_for_study(ctx.study)
    with connect(ctx.runtime.url) as conn:
        served = tuple(
            next(r for r in casebook_as_of(conn, schema, ctx.study, SUBJECT, when)["records"]
                 ["labs"] if r["record_id"] == RECORD)["fields"]["value"]
            for when in (just_before, None))
    if folded != (ENTERED, CORRECTED) or served != (ENTERED, CORRECTED):
        raise CheckFailed(f"before/now: the log gives {folded}, the read tables {served}; "
                          f"expected {(ENTERED, CORRECTED)}")
    return (f"as of {just_before.isoformat()}: {ENTERED}; now: {CORRECTED} (event log and "
            "read tables agree)")


def _refused(conn: psycopg.Connection[Any], statement: str) -> str | None:
    """Run ``statement`` in a transaction that is always rolled back; the refusal's message,
    or None when the database accepted it (nothing is kept either way)."""
    try:
        with conn.transaction(force_rollback=True):
            conn.execute(statement)
    except psycopg.Error as e:
        return " ".join(str(e).split())
    return None


# What the run saw of the triggers before it opened any study (see run_validation).
UNGUARDED_AT_START = "unguarded_at_start"


def unguarded_tables(conn: psycopg.Connection[Any]) -> list[str]:
    """The append-only tables (every study's, the directory's) whose triggers are missing or
    disabled."""
    problems = []
    for schema, table in record_tables(conn):
        exists = conn.execute("SELECT 1 FROM pg_tables WHERE schemaname = %s AND tablename = %s",
                              (schema, table)).fetchone()
        if exists is None:
            continue
        triggers = dict(conn.execute(
            "SELECT t.tgname, t.tgenabled FROM pg_trigger t JOIN pg_class c ON c.oid = t.tgrelid "
            "JOIN pg_namespace n ON n.oid = c.relnamespace WHERE n.nspname = %s "
            "AND c.relname = %s AND NOT t.tgisinternal", (schema, table)).fetchall())
        for name in (f"{table}_no_update_delete", f"{table}_no_truncate"):
            if name not in triggers:
                problems.append(f"trigger {name} on {schema}.{table} is absent")
            elif triggers[name] == "D":
                problems.append(f"trigger {name} on {schema}.{table} is disabled")
    return problems


def append_only(ctx: Context) -> str:
    """Every append-only table has its triggers in force, and UPDATE, DELETE and TRUNCATE of
    the validation study's events are refused by them (tried in transactions rolled back
    whatever happens, so nothing is changed even where they are not refused)."""
    if not _stored(ctx):
        raise CheckFailed("the validation study holds no event to try")
    table = f'"{schema_for_study(ctx.study)}"."{EVENTS_TABLE}"'
    first = f"(SELECT min(notification_id) FROM {table})"
    said = []
    with connect(ctx.runtime.url) as conn:
        now = unguarded_tables(conn)
        problems = [*(f"{problem} (when validation started)"
                      for problem in ctx.facts.get(UNGUARDED_AT_START, []) if problem not in now),
                    *now]
        guarded = len(record_tables(conn))
        for statement in (f"UPDATE {table} SET topic = topic WHERE notification_id = {first}",
                          f"DELETE FROM {table} WHERE notification_id = {first}",
                          f"TRUNCATE {table}"):
            verb = statement.split()[0]
            refusal = _refused(conn, statement)
            if refusal is None:
                problems.append(f"{verb} of the validation study's events was accepted")
            elif "append-only" not in refusal:
                problems.append(f"{verb} was refused, but not by the append-only trigger: "
                                f"{refusal}")
            else:
                said.append(verb)
    if problems:
        raise CheckFailed("; ".join(problems))
    return (f"the triggers of {guarded} append-only tables are in force; {', '.join(said)} of "
            "the validation study's events refused: TrialLedger is append-only")


def odm_valid(ctx: Context) -> str:
    """The ODM 1.3.2 snapshot and archive of the study validate against the XSD."""
    if not ctx.odm_xsd.is_file():
        raise CheckFailed(f"the ODM 1.3.2 XSD is not at {ctx.odm_xsd} (--odm-xsd)")
    schema = etree.XMLSchema(etree.parse(str(ctx.odm_xsd)))
    said = []
    for export_format in ("odm-snapshot", "odm-archive"):
        path = ctx.work / f"{export_format}.xml"
        with path.open("wb") as out:
            write_rendering(ctx.runtime, ctx.study, export_format, out, None)
        document = etree.parse(str(path))
        if not schema.validate(document):
            raise CheckFailed(f"{export_format}: {schema.error_log.last_error}")
        said.append(f"{export_format} ({path.stat().st_size} bytes)")
    return f"{' and '.join(said)} validate against {ctx.odm_xsd.name}"


def _with_an_event_changed(original: Path, tampered: Path) -> None:
    """Copy the bundle at ``original`` to ``tampered`` as a well-formed, canonical zip whose
    events.jsonl has one character of its first event's stored bytes changed: only the
    signed manifest and the events' signatures can tell."""
    with zipfile.ZipFile(original) as source, zipfile.ZipFile(tampered, "w") as copy:
        for info in source.infolist():
            data = source.read(info)
            if info.filename == "events.jsonl":
                at = data.index(b'"state":"') + len(b'"state":"') + 8
                data = data[:at] + (b"B" if data[at:at + 1] != b"B" else b"C") + data[at + 1:]
            # As the bundle writes its members (zip64 headers), so the copy stays canonical.
            with copy.open(canonical_info(info.filename), "w", force_zip64=True) as member:
                member.write(data)


def tamper_detected(ctx: Context) -> str:
    """A bundle of the study verifies offline with the deployment's public keys, and a copy
    with one byte of its events changed is refused (the store itself is not touched)."""
    public_keys = keys.load_public_keys(ctx.runtime.settings)
    original = ctx.work / "bundle.zip"
    write_bundle_file(ctx.runtime, ctx.study, original)
    try:
        report = verify_bundle(original, public_keys)
    except BundleInvalid as e:
        raise CheckFailed(f"the untouched bundle does not verify: {e}") from None
    tampered = ctx.work / "bundle-tampered.zip"
    _with_an_event_changed(original, tampered)
    try:
        verify_bundle(tampered, public_keys)
    except BundleInvalid as e:
        return (f"the bundle ({report.events} events, checkpoint size {report.latest_size}) "
                f"verifies; a copy with one character of an event changed is refused: {e}")
    raise CheckFailed("a bundle with a changed byte in its events verified")


def person_retired(ctx: Context) -> str:
    """The validation person is deactivated (their password leaves with the run): an event of
    the directory, after which their sign-in is refused."""
    who = _investigator(ctx)
    envelope = _operator(ctx).envelope(OPERATOR_GRANT)
    directory = ctx.runtime.directory()
    directory.record(who.username, lambda user: user.deactivate(envelope, datetime.now(UTC)))
    try:
        ctx.runtime.people().reauthenticate(who.username, ctx.password, None, CLIENT,
                                            f"{ctx.study}-retired")
    except Unauthenticated:
        pass
    else:
        raise CheckFailed("a deactivated person's password still signs")
    user = directory.user(who.username)
    if user.active:
        raise CheckFailed(f"{who.username} is still active")
    return f"{who.username} deactivated (a directory event); their password is refused"


CHECKS = (
    Check("OQ-1 entry", "operational", ("R2", "R4", "R7"),
          "A first entry is audited with who, role, site, UTC time and clinical time",
          entry_audited),
    Check("OQ-2 signature", "operational", ("R9",),
          "E-signature re-authenticates its signer and shows its manifestation",
          signature_reauthenticates),
    Check("OQ-3 reason", "operational", ("R3",),
          "A change needs a reason; the correction keeps old and new", reason_enforced),
    Check("OQ-4 invalidation", "operational", ("R10",),
          "A change of signed data invalidates the signature", signature_invalidated),
    Check("OQ-5 as-of", "operational", ("R13",),
          "The casebook as of a past time shows what was shown then", as_of_reconstruction),
    Check("OQ-6 append-only", "operational", ("R1", "R6"),
          "UPDATE, DELETE and TRUNCATE of events are refused by the triggers", append_only),
    Check("OQ-7 ODM", "operational", ("R14", "R22"),
          "ODM 1.3.2 snapshot and archive validate against the XSD", odm_valid),
    Check("OQ-8 tamper", "operational", ("R15", "R21"),
          "A bundle verifies offline and a changed byte is caught", tamper_detected),
    Check("OQ-9 person retired", "operational", ("R8",),
          "The validation person is deactivated and can no longer sign in", person_retired),
)
