"""Redaction by crypto-shredding: an identifying value entered by mistake is sealed in its
event; once a data manager's request is approved by an admin (another person), its key is
destroyed and the value is gone from every output and from the database, while every event
signature, ledger proof and the offline bundle still verify."""

from __future__ import annotations

import base64
import hashlib
import io
import json
import zipfile
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pypdf
import pytest
from fastapi.testclient import TestClient
from psycopg.sql import SQL, Identifier
from typer.testing import CliRunner

from api.cli import app as cli
from application.runtime import Runtime
from infra import keys
from infra.catalog import EVENTS_TABLE
from infra.postgres import schema_for_study
from infra.sealed_fields import SEALED
from infra.settings import Settings
from infra.signing import SignedState, check_signature, leaf_data
from tests.support import api_client, study_with_a_child
from trialledger_verifier.bundle import verify_bundle

STUDY = "NCT04397107"
SUBJECT = f"/v1/studies/{STUDY}/subjects/001"
NAME = "Xanthippe Doelington"  # typed into the term by mistake
AE = {"record_id": "AE-1", "observed_at": "2021-01-12T20:00:00+08:00",
      "term": f"Rash reported by mother {NAME}", "category": "other", "grade": 1,
      "serious": False, "seriousness_criteria": [], "relationship": "unlikely",
      "action_taken": "none", "outcome": "recovering"}
REASON = {"code": "entered_in_error", "text": "a person's name typed into the term"}
EXPORTS = ("odm-snapshot", "odm-archive", "csv", "dataset-json", "casebook", "bundle")


def _texts(payload: bytes) -> Iterator[str]:
    """Every text a reader of ``payload`` can get: itself, each zip member's (nested zips
    included), each PDF's extracted text, a bundle's stored events (base64 in events.jsonl)."""
    if payload[:4] == b"PK\x03\x04":
        with zipfile.ZipFile(io.BytesIO(payload)) as z:
            for name in z.namelist():
                yield from _texts(z.read(name))
                if name.endswith("events.jsonl"):
                    for line in z.read(name).splitlines():
                        state = base64.b64decode(json.loads(line)["state"])
                        yield state.decode("utf-8", errors="replace")
    elif payload[:5] == b"%PDF-":
        reader = pypdf.PdfReader(io.BytesIO(payload))
        yield " ".join(" ".join(p.extract_text() for p in reader.pages).split())
        yield payload.decode("latin-1")
    else:
        yield payload.decode("utf-8", errors="replace")


def _mentions(payload: bytes, text: str) -> bool:
    return any(text in t for t in _texts(payload))


def _database_bytes(db_url: str) -> bytes:
    """Every row of every table of the database, as COPY copies it (what pg_dump dumps; the
    embedded server is newer than the Debian pg_dump, so the rows are copied directly)."""
    out = bytearray()
    with psycopg.connect(db_url, autocommit=True) as conn:
        tables = conn.execute(
            "SELECT table_schema, table_name FROM information_schema.tables WHERE table_type ="
            " 'BASE TABLE' AND table_schema NOT IN ('pg_catalog', 'information_schema')"
        ).fetchall()
        assert len(tables) > 10
        for schema, table in tables:
            # Binary: bytea (the stored events) as its bytes, not hex.
            with conn.cursor().copy(SQL("COPY {}.{} TO STDOUT (FORMAT binary)").format(
                    Identifier(schema), Identifier(table))) as copy:
                for chunk in copy:
                    out += chunk
    return bytes(out)


def _person_with_two_roles(runtime: Runtime, username: str) -> TestClient:
    """One person who is both a data manager and an admin, signed in."""
    from api.app import create_app
    from infra.passwords import hash_password
    from tests.support import envelope

    def grants(user: object, at: object) -> None:
        user.grant("data_manager", STUDY, "*", envelope(), at)  # type: ignore[attr-defined]
        user.grant("admin", STUDY, "*", envelope(), at)  # type: ignore[attr-defined]

    runtime.directory().register_user(username, "Solo Person", hash_password("pw-solo-1234"),
                                      envelope(), grants)
    client = TestClient(create_app(runtime))
    token = client.post("/v1/auth/token", json={"username": username,
                                                "password": "pw-solo-1234"})
    assert token.status_code == 200, token.text
    client.headers["Authorization"] = f"Bearer {token.json()['access_token']}"
    return client


def _console(runtime: Runtime) -> TestClient:
    """A regulator signed in to the web console."""
    import re

    from api.app import create_app
    from tests.support import add_person

    password = add_person(runtime, "console-insp", "regulator")
    client = TestClient(create_app(runtime), follow_redirects=False)
    form = client.get("/ui/sign-in").text
    csrf = re.search(r'name="csrf" value="([^"]+)"', form)
    assert csrf is not None
    answer = client.post("/ui/sign-in", data={"username": "console-insp", "password": password,
                                              "csrf": csrf.group(1)})
    assert answer.status_code == 303, answer.text
    return client


def _stored_ae(db_url: str, settings: Settings | None = None) -> tuple[bytes, bytes]:
    """The stored state (signed envelope) of the AE's first entry, and its ledger leaf;
    with ``settings``, its signature checked against the deployment's public key."""
    schema = schema_for_study(STUDY)
    with psycopg.connect(db_url, autocommit=True) as conn:
        row = conn.execute(SQL(
            "SELECT e.originator_id, e.originator_version, e.topic, e.state, l.leaf_hash"
            " FROM {}.{} e JOIN {}.ledger_leaves l ON l.notification_id = e.notification_id"
            " WHERE e.topic = 'Subject.AdverseEventReported.v1' ORDER BY e.notification_id"
            " LIMIT 1").format(
                Identifier(schema), Identifier(EVENTS_TABLE), Identifier(schema))).fetchone()
    assert row is not None
    oid, version, topic, state, leaf_hash = row
    computed = hashlib.sha256(b"\x00" + leaf_data(STUDY, str(oid), version, topic,
                                                  bytes(state))).digest()
    assert computed == bytes(leaf_hash)  # the leaf covers the stored bytes...
    if settings is not None:  # ...and so does the signature
        envelope = SignedState.unpack(bytes(state))
        key = keys.load_public_keys(settings)[envelope.key_id]
        assert check_signature(STUDY, str(oid), version, topic, envelope, key)
    return bytes(state), bytes(leaf_hash)


@pytest.mark.requirement("R6")
def test_the_leaf_and_signature_cover_the_ciphertext(runtime: Runtime, settings: Settings,
                                                     db_url: str) -> None:
    study_with_a_child(runtime)
    coordinator = api_client(runtime, "coordinator", site="JLU1")
    assert coordinator.post(f"{SUBJECT}/adverse-events", json=AE).status_code == 201
    runtime.seal(STUDY, force_checkpoint=True)
    state, _ = _stored_ae(db_url, settings)
    payload = SignedState.unpack(state).payload
    # ...and what is stored holds the sealed term, not the name; the other fields are plain.
    assert NAME.encode() not in state and SEALED.encode() in payload
    assert b'"grade":1' in payload.replace(b" ", b"")
    # Read back through the application, it is the value entered.
    book = coordinator.get(SUBJECT).json()
    assert book["records"]["adverse-events"][0]["fields"]["term"] == AE["term"]


@pytest.mark.requirement("R6")
def test_a_redacted_value_is_gone_and_everything_still_verifies(
        runtime: Runtime, settings: Settings, db_url: str, tmp_path: Path) -> None:
    study_with_a_child(runtime)
    coordinator = api_client(runtime, "coordinator", site="JLU1")
    data_manager = api_client(runtime, "data_manager", username="dm")
    admin = api_client(runtime, "admin", username="adm")
    regulator = api_client(runtime, "regulator", username="insp")
    assert coordinator.post(f"{SUBJECT}/adverse-events", json=AE).status_code == 201
    # A correction that still holds the name: its old and new values are sealed too.
    fixed = coordinator.patch(f"{SUBJECT}/adverse-events/AE-1", json={
        "field": "term", "value": f"Rash ({NAME})",
        "reason": {"code": "transcription_error", "text": "wording"}})
    assert fixed.status_code == 200, fixed.text
    other = {**AE, "record_id": "AE-2", "term": "Fever"}
    assert coordinator.post(f"{SUBJECT}/adverse-events", json=other).status_code == 201
    assert _mentions(regulator.get(SUBJECT).content, NAME)  # readable before
    runtime.seal(STUDY, force_checkpoint=True)
    state_before, leaf_before = _stored_ae(db_url)

    # Refused: a request by someone who is not a data manager, on an undeclared field, and
    # an approval by the requester (one person holding both roles).
    body = {"request_id": "RD-1", "record_id": "AE-1", "field": "term", "reason": REASON}
    assert coordinator.post(f"{SUBJECT}/redactions", json=body).status_code == 403
    undeclared = data_manager.post(f"{SUBJECT}/redactions", json={**body, "field": "grade"})
    assert undeclared.status_code == 422 and "field" in undeclared.text
    solo = _person_with_two_roles(runtime, "solo")
    assert solo.post(f"{SUBJECT}/redactions", json={**body, "request_id": "RD-0"}
                     ).status_code == 201
    alone = solo.post(f"{SUBJECT}/redactions/RD-0/approve")
    assert alone.status_code == 403 and "another person" in alone.text
    assert data_manager.post(f"{SUBJECT}/redactions/RD-0/approve").status_code == 403
    assert _mentions(regulator.get(SUBJECT).content, NAME)  # nothing destroyed yet

    assert data_manager.post(f"{SUBJECT}/redactions", json=body).status_code == 201
    approved = admin.post(f"{SUBJECT}/redactions/RD-1/approve")
    assert approved.status_code == 200, approved.text

    # The value is gone from every read and export; the marker stands in its place.
    book = regulator.get(SUBJECT).json()
    terms = {r["record_id"]: r["fields"]["term"] for r in book["records"]["adverse-events"]}
    assert terms["AE-2"] == "Fever"
    assert terms["AE-1"].startswith("[redacted on ") and REASON["text"] in terms["AE-1"]
    reads = [regulator.get(SUBJECT), regulator.get(f"{SUBJECT}/history"),
             regulator.get(f"/v1/studies/{STUDY}/audit", params={"limit": 1000}),
             regulator.get(SUBJECT, params={"as_of": "2100-01-01T00:00:00+00:00"})]
    reads += [regulator.get(f"/v1/studies/{STUDY}/exports/{f}") for f in EXPORTS]
    console = _console(runtime)
    pages = [console.get(f"/ui/studies/{STUDY}/subjects/001"),
             console.get(f"/ui/studies/{STUDY}/audit")]
    for response in reads + pages:
        assert response.status_code == 200, (response.url, response.text[:300])
        assert not _mentions(response.content, "Doelington"), response.url
    assert "[redacted on " in pages[0].text
    assert _mentions(reads[-1].content, "[redacted on ")  # the bundle's casebooks...
    assert _mentions(reads[-1].content, "RD-1 approved: AE-1 term")  # ...and their changes
    # ... and a rebuild of the read tables from the events shows the marker too.
    runtime.project(STUDY, rebuild=True)
    assert regulator.get(SUBJECT).json()["records"]["adverse-events"][0]["fields"][
        "term"] == terms["AE-1"]

    # The request and its approval are in the audit trail, each by its person.
    audit = regulator.get(f"/v1/studies/{STUDY}/audit", params={"limit": 1000}).json()
    rows = [(e["event_type"], e["printed_name"], e["role"], e["new_value"]["request_id"],
             e["reason_text"]) for e in audit["entries"]
            if e["event_type"].startswith("Redaction")]
    assert ("RedactionRequested", "Dm", "data_manager", "RD-1", REASON["text"]) in rows
    assert ("RedactionApproved", "Adm", "admin", "RD-1", None) in rows
    assert ("RedactionApproved", "Solo Person", "admin", "RD-0", None) not in rows

    # Nowhere in the database's rows; the events themselves are untouched.
    dump = _database_bytes(db_url)
    assert b"Doelington" not in dump and SEALED.encode() in dump
    assert _stored_ae(db_url) == (state_before, leaf_before)

    # Every signature and proof verifies, online and from the bundle offline.
    runtime.seal(STUDY, force_checkpoint=True)
    result = CliRunner().invoke(cli, ["verify", "--database-url", db_url, "--study", STUDY],
                                env={"TRIALLEDGER_HOME": str(settings.home)})
    assert result.exit_code == 0, result.output
    bundle = tmp_path / "bundle.zip"
    bundle.write_bytes(regulator.get(f"/v1/studies/{STUDY}/exports/bundle").content)
    report = verify_bundle(bundle, keys.load_public_keys(settings))
    assert report.study == STUDY and report.events > 0
    assert not _mentions(bundle.read_bytes(), "Doelington")

    # The field can be entered again: the new value is sealed under a key of its own.
    again = coordinator.patch(f"{SUBJECT}/adverse-events/AE-1", json={
        "field": "term", "value": "Rash, left forearm",
        "reason": {"code": "new_information", "text": "term entered again"}})
    assert again.status_code == 200, again.text
    record = regulator.get(SUBJECT).json()["records"]["adverse-events"][0]
    assert record["fields"]["term"] == "Rash, left forearm"
    with psycopg.connect(db_url, autocommit=True) as conn:
        last = conn.execute(SQL("SELECT state FROM {}.{} ORDER BY notification_id DESC LIMIT 1"
                                ).format(Identifier(schema_for_study(STUDY)),
                                         Identifier(EVENTS_TABLE))).fetchone()
    assert last is not None and b"forearm" not in bytes(last[0])
    assert SEALED.encode() in bytes(last[0])
    assert "[redacted on " in regulator.get(f"{SUBJECT}/history").text


def _cli(settings: Settings, db_url: str, *args: str, password: str) -> tuple[int, str]:
    result = CliRunner().invoke(
        cli, ["redact", "--database-url", db_url, "--study", STUDY, "--subject", "001",
              "--password-stdin", *args],
        input=password + "\n", env={"TRIALLEDGER_HOME": str(settings.home)})
    return result.exit_code, " ".join(result.output.split())


@pytest.mark.requirement("R6")
def test_redact_on_the_command_line_takes_two_people(
        runtime: Runtime, settings: Settings, db_url: str) -> None:
    from tests.support import add_person

    study_with_a_child(runtime)
    coordinator = api_client(runtime, "coordinator", site="JLU1")
    assert coordinator.post(f"{SUBJECT}/adverse-events", json=AE).status_code == 201
    dm_password = add_person(runtime, "dm", "data_manager")
    admin_password = add_person(runtime, "adm", "admin")

    code, out = _cli(settings, db_url, "--username", "dm", "--request-id", "RD-9",
                     "--reason", REASON["text"], password=dm_password)
    assert code == 0 and "Requested redaction RD-9" in out, out
    code, out = _cli(settings, db_url, "--username", "dm", "--approve", "RD-9",
                     password=dm_password)
    assert code == 2 and "may not approve_redaction" in out, out
    code, out = _cli(settings, db_url, "--username", "adm", "--approve", "RD-9",
                     password="wrong-password")
    assert code == 2, out
    code, out = _cli(settings, db_url, "--username", "dm", "--record", "AE-1",
                     password=dm_password)
    assert code == 2 and "--reason" in out, out
    assert _mentions(coordinator.get(SUBJECT).content, NAME)  # nothing destroyed yet

    code, out = _cli(settings, db_url, "--username", "adm", "--approve", "RD-9",
                     password=admin_password)
    assert code == 0 and "keys are destroyed" in out, out
    # Approving again carries it out again (the keys could outlive a recorded approval).
    code, out = _cli(settings, db_url, "--username", "adm", "--approve", "RD-9",
                     password=admin_password)
    assert code == 0, out
    term = coordinator.get(SUBJECT).json()["records"]["adverse-events"][0]["fields"]["term"]
    assert term.startswith("[redacted on ") and term.endswith(f": {REASON['text']}]")
    assert b"Doelington" not in _database_bytes(db_url)


@pytest.mark.requirement("R6")
def test_the_application_role_destroys_keys_and_the_owner_rebuilds(
        runtime: Runtime, settings: Settings, db_url: str) -> None:
    from dataclasses import replace

    from psycopg.conninfo import conninfo_to_dict, make_conninfo

    from infra.roles import create_login_role, grant_app_role, grant_directory

    study_with_a_child(runtime)
    runtime.project(STUDY)  # the owner makes the read tables
    runtime.people()
    runtime.pool()  # ...and the directory's, sessions and idempotency keys
    role = "tl_app_redaction"
    with psycopg.connect(db_url, autocommit=True) as conn:
        create_login_role(conn, role, None)
        grant_directory(conn, role)
        grant_app_role(conn, role, schema_for_study(STUDY))
    params = {k: v for k, v in conninfo_to_dict(db_url).items() if v is not None}
    app = Runtime(replace(settings, provisioned=True), make_conninfo("", **{**params,
                                                                        "user": role}))
    try:
        coordinator = api_client(app, "coordinator", site="JLU1")
        data_manager = api_client(app, "data_manager", username="dm")
        admin = api_client(app, "admin", username="adm")
        assert coordinator.post(f"{SUBJECT}/adverse-events", json=AE).status_code == 201
        body = {"request_id": "RD-1", "record_id": "AE-1", "field": "term", "reason": REASON}
        assert data_manager.post(f"{SUBJECT}/redactions", json=body).status_code == 201
        approved = admin.post(f"{SUBJECT}/redactions/RD-1/approve")
        assert approved.status_code == 200, approved.text
        schema = Identifier(schema_for_study(STUDY))
        with psycopg.connect(db_url, autocommit=True) as conn:
            assert conn.execute(SQL("SELECT count(*) FROM {}.field_keys").format(schema)
                                ).fetchone() == (0,)
            assert conn.execute(SQL("SELECT request_id FROM {}.shredded_keys").format(schema)
                                ).fetchall() == [("RD-1",)]
        runtime.project(STUDY, rebuild=True)  # as the owner
        term = coordinator.get(SUBJECT).json()["records"]["adverse-events"][0]["fields"]["term"]
        assert term.startswith("[redacted on ")
        assert b"Doelington" not in _database_bytes(db_url)
    finally:
        app.close()
        with psycopg.connect(db_url, autocommit=True) as conn:
            conn.execute(f'DROP OWNED BY "{role}"')
            conn.execute(f'DROP ROLE "{role}"')


@pytest.mark.requirement("R6")
def test_a_bundle_carries_no_key_so_a_restore_shows_sealed_values_as_unavailable(
        runtime: Runtime, settings: Settings, db_url: str, server_url: str,
        tmp_path: Path) -> None:
    from application.runtime import open_runtime
    from domain.redaction import KEY_UNAVAILABLE
    from infra.keys import public_pem
    from infra.postgres import temporary_database
    from infra.signing import key_id_for

    study_with_a_child(runtime)
    coordinator = api_client(runtime, "coordinator", site="JLU1")
    assert coordinator.post(f"{SUBJECT}/adverse-events", json=AE).status_code == 201
    regulator = api_client(runtime, "regulator", username="insp")
    bundle = tmp_path / "bundle.zip"
    bundle.write_bytes(regulator.get(f"/v1/studies/{STUDY}/exports/bundle").content)
    with zipfile.ZipFile(bundle) as z:  # its events hold the term sealed, and no key
        events = b"".join(base64.b64decode(json.loads(line)["state"])
                          for line in z.read("events.jsonl").splitlines())
    assert b"Doelington" not in events and SEALED.encode() in events
    key = runtime.signing_key().public_key()
    pem = tmp_path / "source.pem"
    pem.write_bytes(f"# key id: {key_id_for('trialledger', key)}\n".encode() + public_pem(key))
    home = tmp_path / "target-home"
    with temporary_database(server_url, "tl_restore") as target:
        done = CliRunner().invoke(cli, ["restore", "--bundle", str(bundle), "--public-key",
                                        str(pem), "--database-url", target],
                                  env={"TRIALLEDGER_HOME": str(home)})
        assert done.exit_code == 0, done.output
        with open_runtime(Settings(database_url=target, home=home)) as restored:
            term = restored.study(STUDY).subject("001").records["AE-1"].fields["term"]
    assert term == KEY_UNAVAILABLE
