"""ODM Snapshot: every subject's casebook as the system showed it at a recorded time.

The rows come from the history table (the versions in force at ``as_of``), sorted so that
each subject's header comes first, then its records by study event and form; the document
is written as they stream by.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import IO, TYPE_CHECKING, Any

import psycopg
from lxml import etree
from psycopg.sql import SQL, Identifier

from domain.study import StudyDefinition
from projections.history_view import VERSIONS
from projections.odm.document import (
    MDV_OID,
    Nesting,
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
    catalogue,
    event_oid,
    record_values,
)
from projections.streaming import (
    TIME_FIELDS,
    aware,
    consistent_read,
    in_force,
    localised,
    stream,
    utc_text,
)

if TYPE_CHECKING:
    from lxml.etree._serializer import _IncrementalFileWriter as Writer

# Subjects by code; in each, the header ('' sorts first), then records by visit in protocol
# order (records with no visit, rank 0, share the common event with the header), form, time.
_ROWS = SQL(
    "WITH heads AS (SELECT subject_id, data->>'subject' AS code FROM {s}.{v} h "
    " WHERE h.record_id = '' AND {h_in_force}) "
    "SELECT heads.code, r.record_id, r.kind, r.data->>'visit', r.data->>'observed_at', "
    " CASE WHEN r.record_id = '' THEN r.data ELSE r.data->'fields' END, r.data->'derived', "
    " r.data->>'observed_offset' "
    "FROM heads JOIN {s}.{v} r ON r.subject_id = heads.subject_id "
    "WHERE r.data IS NOT NULL AND {r_in_force} "
    "ORDER BY heads.code, r.record_id <> '', "
    " COALESCE(array_position(%(visits)s::text[], r.data->>'visit'), 0), "
    " array_position(%(kinds)s::text[], r.kind), r.data->>'observed_at', r.record_id")


def visits_in_use(conn: psycopg.Connection[Any], schema: str) -> list[str]:
    """Visit codes records were entered with (the protocol's, and any other a client used)."""
    rows = conn.execute(SQL("SELECT DISTINCT data->>'visit' FROM {}.{} WHERE record_id <> '' "
                            "AND data->>'visit' IS NOT NULL").format(
                                Identifier(schema), Identifier(VERSIONS))).fetchall()
    return sorted(str(row[0]) for row in rows)


def write_snapshot(conn: psycopg.Connection[Any], schema: str, definition: StudyDefinition,
                   out: IO[bytes], as_of: datetime | None = None,
                   created_at: datetime | None = None) -> int:
    """Write the ODM Snapshot of the study as of ``as_of`` (now when None) to ``out``.

    ``conn`` must not be inside a transaction: the export reads one consistent snapshot.
    Returns the number of subjects written.
    """
    when = aware("as_of", as_of)
    created = aware("created_at", created_at) or datetime.now(UTC)
    with consistent_read(conn):
        cat = catalogue(definition, visits_in_use(conn, schema))
        shown = when or created
        with odm_document(out, file_type="Snapshot", created_at=created, as_of=shown,
                          file_oid=f"{definition.study_id}.snapshot.{shown.timestamp():.6f}",
                          description=f"{definition.study_id} casebooks as of "
                                      f"{shown.isoformat()}") as xf:
            write_block(xf, study(definition, cat))
            write_block(xf, admin_data(definition, users=(), sites=()))
            with xf.element("ClinicalData", {"StudyOID": definition.study_id,
                                             "MetaDataVersionOID": MDV_OID}):
                xf.write("\n")
                return _clinical_data(conn, schema, cat, when, xf)


def _clinical_data(conn: psycopg.Connection[Any], schema: str, cat: Catalogue,
                   when: datetime | None, xf: Writer) -> int:
    nesting = Nesting(xf)
    subjects = 0
    query = _ROWS.format(s=Identifier(schema), v=Identifier(VERSIONS),
                         h_in_force=in_force(when, "h"), r_in_force=in_force(when, "r"))
    params = {"t": when, "visits": [e.visit for e in cat.events if e.visit],
              "kinds": list(cat.forms)}
    for code, record_id, kind, visit, observed, values, derived, offset in stream(
            conn, query, params, "odm_snapshot"):
        if record_id == "":
            subjects += 1
            nesting.enter(0, code, "SubjectData", {"SubjectKey": code})
            signature = _latest_valid_signature(values)
            if signature is not None:
                write_block(xf, signature)
            write_block(xf, element("SiteRef", {"LocationOID": values["site"]}))
            key, repeat, values = SUBJECT, None, dict(values)
        else:
            key, repeat = kind, record_id
            # Clinical times with the offset they were entered with (ODM keeps offsets).
            values = {"observed_at": localised(observed, offset),
                      **{k: localised(v, offset) if k in TIME_FIELDS else v
                         for k, v in values.items()}, **(derived or {})}
        event = COMMON_EVENT if key == SUBJECT else event_oid(visit)
        form = cat.forms[key]
        nesting.enter(1, event, "StudyEventData", {"StudyEventOID": event})
        nesting.enter(2, form.oid, "FormData", {"FormOID": form.oid})
        group = {"ItemGroupOID": form.group_oid}
        if repeat is not None:
            group["ItemGroupRepeatKey"] = repeat
        write_block(xf, element("ItemGroupData", group, children=[
            element("ItemData", {"ItemOID": item.oid, "Value": value})
            for item, value in record_values(cat, key, values)]))
    nesting.close()
    return subjects


def _latest_valid_signature(header: dict[str, Any]) -> etree._Element | None:
    """The casebook's latest signature still valid as of the snapshot (ODM allows one)."""
    valid = [s for s in (header.get("signatures") or {}).values() if s["status"] == "valid"]
    if not valid:
        return None
    latest = max(valid, key=lambda s: s["signed_at"])
    return element("Signature", children=[
        element("UserRef", {"UserOID": latest["user_id"]}),
        element("LocationRef", {"LocationOID": header["site"]}),
        element("SignatureRef", {"SignatureOID": signature_oid(latest["meaning"])}),
        element("DateTimeStamp", text=utc_text(datetime.fromisoformat(latest["signed_at"])))])
