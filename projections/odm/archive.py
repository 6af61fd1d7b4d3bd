"""ODM Transactional archive: every change to every subject's data, in commit order.

Each event of a subject becomes one ``SubjectData`` transaction holding the item group it
touched: a record's entry inserts it, a change updates the items it changed, a removal
removes the group. Every item carries an ``AuditRecord``: who (``UserRef``), from where
(``LocationRef``, the actor's site), when (``DateTimeStamp``, the recorded time in UTC),
why (``ReasonForChange``), and which event (``SourceID``, its position in the study's log,
which the ledger's inclusion proofs are indexed by). AdminData lists the users and
locations the envelopes name.

Clinical changes with a valid time of their own (a taper step, an AE that worsened or
ended) say from when they hold in an ``Annotation``, since ODM's audit record has no field
for clinical time. Derived values (BSA, dose per m², scores) are not transactions: they
follow from the items, and the Snapshot carries them (re-derived when an input changed; the
audit trail keeps each old -> new as ``derived.<name>`` rows).
"""

from __future__ import annotations

import inspect
from collections.abc import Iterator
from copy import copy
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import IO, Any

import psycopg
from eventsourcing.domain import Aggregate
from lxml import etree
from psycopg.sql import SQL, Composed, Identifier

from domain.clock import in_offset
from domain.study import StudyDefinition
from domain.subject import Subject
from projections.history_view import AUDIT, VERSIONS
from projections.odm.document import (
    MDV_OID,
    User,
    admin_data,
    element,
    odm_document,
    signature_oid,
    study,
    write_block,
)
from projections.odm.metadata import (
    COMMON_EVENT,
    SUBJECT,
    Catalogue,
    Item,
    catalogue,
    event_oid,
    flatten,
    item_oid,
    text,
)
from projections.odm.snapshot import visits_in_use
from projections.streaming import aware, consistent_read, stream, utc_text


def _event_names(base: type) -> frozenset[str]:
    return frozenset(name for name, cls in vars(Subject).items()
                     if isinstance(cls, type) and issubclass(cls, base))


# Told apart by the domain's own event classes, so a new kind of entry or change needs no
# change here.
ENTRIES = _event_names(Subject.RecordEntered)
REMOVALS = _event_names(Subject.RecordRemoved)
CREATIONS = _event_names(Aggregate.Created)  # the subject exists from these on
DATED_CHANGES = frozenset(
    name for name in _event_names(Subject.RecordChanged)
    if "observed_at" in inspect.get_annotations(getattr(Subject, name)))
# Audit rows of the monitoring workflow rather than of clinical items.
WORKFLOW_ROWS = frozenset({"signature", "query", "sdv", "soft_check", "deviation",
                           "redaction"})
DERIVED = "derived."  # audit rows of derived values: the Snapshot's, not transactions
# ODM's edit points; a change at the site is the original entry point, which ODM leaves unnamed.
EDIT_POINTS = {"monitoring": "Monitoring", "data_management": "DataManagement",
               "post_lock": "DBAudit"}

_COLUMNS = ("position", "recorded_at", "event_type", "subject_code", "site", "record_id",
            "record_kind", "field", "old_value", "new_value", "observed_at", "user_id",
            "actor_site", "edit_point", "reason_code", "reason_text")


@dataclass(frozen=True)
class Change:
    """One audit-trail row: one field changed by one event."""

    position: int
    recorded_at: datetime
    event_type: str
    subject_code: str
    site: str
    record_id: str | None
    record_kind: str | None
    field: str
    old_value: Any
    new_value: Any
    observed_at: datetime | None
    user_id: str
    actor_site: str
    edit_point: str
    reason_code: str | None
    reason_text: str | None
    visit: str | None
    # The offset the record's entry was made with (on the version the entry wrote).
    observed_offset: str | None = None


def change_rows(schema: str, as_of: datetime | None) -> Composed:
    """The archive's query: every audit row of subject data recorded by ``as_of`` (the
    statement's parameter ``t``), in commit order, with the visit of its record."""
    # A record's visit is on its versions, not on the audit rows: the version the same event
    # wrote has it; a removal wrote none, so its visit comes from the record's first version.
    until = SQL("") if as_of is None else SQL(" AND a.recorded_at <= %(t)s")
    return SQL(
        "SELECT {cols}, CASE WHEN a.record_id IS NULL THEN NULL "
        " WHEN v.data IS NOT NULL THEN v.data->>'visit' "
        " ELSE (SELECT f.data->>'visit' FROM {s}.{v} f WHERE f.subject_id = a.subject_id "
        "  AND f.record_id = a.record_id AND f.data IS NOT NULL ORDER BY f.position LIMIT 1) "
        " END, v.data->>'observed_offset' "
        "FROM {s}.{a} a LEFT JOIN {s}.{v} v ON v.subject_id = a.subject_id "
        " AND v.record_id = a.record_id AND v.position = a.position "
        "WHERE a.subject_id IS NOT NULL{until} ORDER BY a.position, a.seq").format(
            cols=SQL(", ").join(SQL("a.{}").format(Identifier(c)) for c in _COLUMNS),
            s=Identifier(schema), a=Identifier(AUDIT), v=Identifier(VERSIONS), until=until)


def actors(conn: psycopg.Connection[Any], schema: str, as_of: datetime | None) -> list[User]:
    """Everyone who changed subject data by ``as_of``, with their latest printed name and
    role, and every site they acted from."""
    until = SQL("") if as_of is None else SQL(" AND recorded_at <= %(t)s")
    s, a = Identifier(schema), Identifier(AUDIT)
    latest = conn.execute(SQL(
        "SELECT DISTINCT ON (user_id) user_id, printed_name, role FROM {}.{} "
        "WHERE subject_id IS NOT NULL{} ORDER BY user_id, position DESC, seq DESC").format(
            s, a, until),
        {"t": as_of}).fetchall()
    sites: dict[str, list[str]] = {}
    for user_id, site in conn.execute(SQL(
            "SELECT DISTINCT user_id, actor_site FROM {}.{} WHERE subject_id IS NOT NULL{} "
            "ORDER BY 1, 2").format(s, a, until), {"t": as_of}):
        sites.setdefault(user_id, []).append(site)
    return [User(user_id, name, role, tuple(sites[user_id])) for user_id, name, role in latest]


def write_archive(conn: psycopg.Connection[Any], schema: str, definition: StudyDefinition,
                  out: IO[bytes], as_of: datetime | None = None,
                  created_at: datetime | None = None) -> int:
    """Write the ODM Transactional archive (``Archival="Yes"``) of every change recorded by
    ``as_of`` (everything when None) to ``out``; return the number of events written.

    ``conn`` must not be inside a transaction: the export reads one consistent snapshot.
    """
    when = aware("as_of", as_of)
    created = aware("created_at", created_at) or datetime.now(UTC)
    with consistent_read(conn):
        cat = catalogue(definition, visits_in_use(conn, schema))
        users = actors(conn, schema, when)
        sites = {site for user in users for site in user.sites}
        with odm_document(out, file_type="Transactional", created_at=created, as_of=when,
                          file_oid=f"{definition.study_id}.archive.{created.timestamp():.6f}",
                          description=f"{definition.study_id} audit trail archive") as xf:
            write_block(xf, study(definition, cat))
            write_block(xf, admin_data(definition, users, sites))
            with xf.element("ClinicalData", {"StudyOID": definition.study_id,
                                             "MetaDataVersionOID": MDV_OID}):
                xf.write("\n")
                events = 0
                for changes in _events(stream(conn, change_rows(schema, when), {"t": when},
                                              "odm_archive")):
                    clinical = [c for c in changes if c.field not in WORKFLOW_ROWS
                                and not c.field.startswith(DERIVED)]
                    if clinical:
                        write_block(xf, _transaction(cat, clinical))
                    for change in changes:
                        if change.field in WORKFLOW_ROWS:
                            write_block(xf, _workflow(change))
                    events += 1
                return events


def _events(rows: Iterator[tuple[Any, ...]]) -> Iterator[list[Change]]:
    """Rows grouped by event (the projector writes one event's rows together)."""
    group: list[Change] = []
    for row in rows:
        change = Change(*row)
        if group and change.position != group[0].position:
            yield group
            group = []
        group.append(change)
    if group:
        yield group


def _transaction(cat: Catalogue, changes: list[Change]) -> etree._Element:
    """One event as a SubjectData transaction."""
    first = changes[0]
    key = first.record_kind or SUBJECT
    form = cat.forms[key]
    entry = first.event_type in ENTRIES or first.event_type in CREATIONS
    group_attrib = {"ItemGroupOID": form.group_oid}
    if first.record_id is not None:
        group_attrib["ItemGroupRepeatKey"] = first.record_id
    if first.event_type in REMOVALS:
        group_attrib["TransactionType"] = "Remove"
        group = element("ItemGroupData", group_attrib, children=[_audit_record(first)])
    else:
        group_attrib["TransactionType"] = "Insert" if entry else "Context"
        group = element("ItemGroupData", group_attrib, children=[
            *_valid_time(first), *_items(cat, key, changes, entry)])
    event = COMMON_EVENT if key == SUBJECT else event_oid(first.visit)
    # A container a change lands in may or may not exist yet at the receiver: Upsert for an
    # entry, Context (only locating the change) otherwise.
    container = "Upsert" if entry else "Context"
    return element("SubjectData", {
        "SubjectKey": first.subject_code,
        "TransactionType": "Insert" if first.event_type in CREATIONS else "Context"},
        children=[
            element("SiteRef", {"LocationOID": first.site}),
            element("StudyEventData", {"StudyEventOID": event, "TransactionType": container},
                    children=[element("FormData", {"FormOID": form.oid,
                                                   "TransactionType": container},
                                      children=[group])])])


def _workflow(change: Change) -> etree._Element:
    """A signature, query or SDV mark as a SubjectData transaction: its audit record, the
    ODM Signature when a signature was applied, and an annotation saying what happened."""
    new = change.new_value or {}
    children = [_audit_record(change)]
    if change.field == "signature" and change.old_value is None:
        children.append(element("Signature", children=[
            element("UserRef", {"UserOID": new["user_id"]}),
            element("LocationRef", {"LocationOID": change.actor_site}),
            element("SignatureRef", {"SignatureOID": signature_oid(new["meaning"])}),
            element("DateTimeStamp", text=utc_text(change.recorded_at))]))
        note = (f"signature {new['signature_id']} by {new['printed_name']}: "
                f"{new['meaning_text']} (casebook version {new['signed_version']}, "
                f"SHA-256 {new['content_sha256']})")
    elif change.field == "signature":
        note = (f"signature {new['signature_id']} {new['status']} by the change at casebook "
                f"version {new['invalidated_by_version']}")
    elif change.field == "query":
        note = (f"query {new['query_id']} on {new['record_id']}.{new['field']} "
                f"{new['status']}: {new['text']}")
        if new.get("answers"):
            note += f" / answer: {new['answers'][-1]['text']}"
    elif change.field == "soft_check":
        findings = change.new_value or []
        note = (f"soft checks on {change.record_id}: "
                + ("; ".join(f"{f['field']}: {f['message']}" for f in findings) or "clean"))
    elif change.field == "deviation":
        note = (f"protocol deviation {new['deviation_id']} ({new['category']}, "
                f"{new['severity']}) on {new['occurred_on']}: {new['description']}")
    elif change.field == "redaction":
        covered = ", ".join(f"{i['record_id']}.{i['field']}" for i in new["items"])
        note = f"redaction {new['request_id']} {new['status']} ({covered}): {new['reason']}"
    else:
        note = f"source verified: {change.record_id} at revision {new['revision']}"
    children += [element("SiteRef", {"LocationOID": change.site}),
                 element("Annotation", {"SeqNum": "1"}, children=[
                     element("Comment", {"SponsorOrSite": "Sponsor"}, text=note)])]
    return element("SubjectData", {"SubjectKey": change.subject_code,
                                   "TransactionType": "Context"}, children=children)


def _valid_time(change: Change) -> list[etree._Element]:
    if change.event_type not in DATED_CHANGES or change.observed_at is None:
        return []
    return [element("Annotation", {"SeqNum": "1"}, children=[element(
        "Comment", {"SponsorOrSite": "Site"},
        text=f"{change.event_type}: in force from {utc_text(change.observed_at)}")])]


def _items(cat: Catalogue, key: str, changes: list[Change], entry: bool
           ) -> Iterator[etree._Element]:
    first = changes[0]
    # Every row of one event has the same envelope: one audit record, copied to each item
    # (copying it is several times cheaper than building it again).
    audit = _audit_record(first)
    if first.event_type in ENTRIES and first.observed_at is not None:
        observed = cat.items_by_form[key][item_oid(key, "observed_at")]
        # The clinical time with the offset it was entered with (UTC before offsets were kept).
        when = (in_offset(first.observed_at, first.observed_offset).isoformat()
                if first.observed_offset else utc_text(first.observed_at))
        yield _item_data(observed, "Insert", when, audit)
    for change in changes:
        before = {item.oid: old for item, old in flatten(cat, key, change.field,
                                                         change.old_value)}
        for item, value in flatten(cat, key, change.field, change.new_value):
            old = before.get(item.oid)
            if value == old or (entry and value is None):
                continue
            if value is None:
                yield _item_data(item, "Update", None, audit)
            else:
                action = "Insert" if entry else "Upsert" if old is None else "Update"
                yield _item_data(item, action, text(item, value), audit)


def _item_data(item: Item, action: str, value: str | None,
               audit: etree._Element) -> etree._Element:
    attrib = {"ItemOID": item.oid, "TransactionType": action}
    if value is None:
        attrib["IsNull"] = "Yes"
    else:
        attrib["Value"] = value
    node = element("ItemData", attrib)
    node.append(copy(audit))  # lxml's copy is deep, done in C: cheaper than deepcopy
    return node


def _audit_record(change: Change) -> etree._Element:
    attrib = {}
    if change.edit_point in EDIT_POINTS:
        attrib["EditPoint"] = EDIT_POINTS[change.edit_point]
    children = [element("UserRef", {"UserOID": change.user_id}),
                element("LocationRef", {"LocationOID": change.actor_site}),
                element("DateTimeStamp", text=utc_text(change.recorded_at))]
    if change.reason_code is not None:
        children.append(element("ReasonForChange",
                                text=f"{change.reason_code}: {change.reason_text}"))
    children.append(element("SourceID", text=str(change.position)))
    return element("AuditRecord", attrib, children=children)
