"""Events are append-only: refused by triggers for everyone, and the app owns no table."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from dataclasses import replace

import psycopg
import pytest
from psycopg.conninfo import conninfo_to_dict, make_conninfo

from application.runtime import Runtime
from infra.catalog import EVENTS_TABLE
from infra.postgres import schema_for_study
from infra.roles import create_login_role, grant_app_role, grant_directory
from infra.settings import Settings
from tests.support import api_client, enroll, register, simulated_clock

STUDY = "NCT04397107"
TABLE = f'"{schema_for_study(STUDY)}"."{EVENTS_TABLE}"'


@pytest.fixture
def stored(runtime: Runtime) -> Iterator[Runtime]:
    app = runtime.study(STUDY, clock=simulated_clock())
    register(app)
    enroll(app)
    app.close()
    yield runtime


@pytest.mark.parametrize(
    "statement",
    [
        f"UPDATE {TABLE} SET topic = 'x'",
        f"DELETE FROM {TABLE}",
        f"TRUNCATE {TABLE}",
    ],
)
@pytest.mark.requirement("R1", "R6")
def test_even_the_owner_cannot_change_events(stored: Runtime, db_url: str, statement: str) -> None:
    with psycopg.connect(db_url, autocommit=True) as conn:
        before = conn.execute(f"SELECT count(*), max(md5(state)) FROM {TABLE}").fetchone()
        with pytest.raises(psycopg.errors.InsufficientPrivilege, match="append-only"):
            conn.execute(statement)
        assert conn.execute(f"SELECT count(*), max(md5(state)) FROM {TABLE}").fetchone() == before


def _as_role(db_url: str, role: str) -> str:
    params = conninfo_to_dict(db_url)
    params["user"] = role
    params.pop("password", None)
    return make_conninfo("", **{k: v for k, v in params.items() if v is not None})


@pytest.mark.requirement("R6")
def test_the_application_role_owns_nothing_and_can_only_read_and_append(
    stored: Runtime, db_url: str, settings: Settings
) -> None:
    role = f"tl_app_{uuid.uuid4().hex[:8]}"
    stored.history_view(STUDY).datastore.close()  # the owner creates the read tables too
    with psycopg.connect(db_url, autocommit=True) as conn:
        create_login_role(conn, role, None)
        grant_app_role(conn, role, schema_for_study(STUDY))
    app_url = _as_role(db_url, role)
    try:
        # The application, running as that role, writes events normally...
        app_runtime = Runtime(replace(settings, provisioned=True), app_url)
        app = app_runtime.study(STUDY, clock=simulated_clock())
        enroll(app, "002")
        app.close()
        # ...seals them and keeps the read tables current...
        assert app_runtime.seal(STUDY, force_checkpoint=True).tree_size == 9
        assert app_runtime.project(STUDY) == 9
        app_runtime.close()
        with psycopg.connect(app_url, autocommit=True) as conn:
            assert conn.execute(f"SELECT count(*) FROM {TABLE}").fetchone()[0] > 3
            owner = conn.execute(
                "SELECT tableowner FROM pg_tables WHERE schemaname = %s AND tablename = %s",
                (schema_for_study(STUDY), EVENTS_TABLE),
            ).fetchone()[0]
            assert owner != role
            # ...but can change nothing, nor switch the guard off, nor drop the table.
            for statement, error in [
                (f"UPDATE {TABLE} SET topic = 'x'", psycopg.errors.InsufficientPrivilege),
                (f"DELETE FROM {TABLE}", psycopg.errors.InsufficientPrivilege),
                (f"TRUNCATE {TABLE}", psycopg.errors.InsufficientPrivilege),
                (f"ALTER TABLE {TABLE} DISABLE TRIGGER ALL", psycopg.errors.InsufficientPrivilege),
                (f"DROP TABLE {TABLE}", psycopg.errors.InsufficientPrivilege),
            ]:
                with pytest.raises(error):
                    conn.execute(statement)
    finally:
        with psycopg.connect(db_url, autocommit=True) as conn:
            conn.execute(f'DROP OWNED BY "{role}"')
            conn.execute(f'DROP ROLE "{role}"')


def test_the_application_role_serves_the_api_with_people_sessions_and_retries(
    stored: Runtime, db_url: str, settings: Settings
) -> None:
    role = f"tl_app_{uuid.uuid4().hex[:8]}"
    stored.history_view(STUDY).datastore.close()
    stored.directory()
    stored.pool()  # the owner creates the people, sessions and idempotency tables
    with psycopg.connect(db_url, autocommit=True) as conn:
        create_login_role(conn, role, None)
        grant_directory(conn, role)
        grant_app_role(conn, role, schema_for_study(STUDY))
    app_runtime = Runtime(replace(settings, provisioned=True), _as_role(db_url, role))
    try:
        client = api_client(app_runtime, "coordinator", site="JLU1")
        lab = {"observed_at": "2021-01-11T08:00:00+00:00", "code": "C3", "value": 0.8,
               "unit": "g/L"}
        first = client.post(f"/v1/studies/{STUDY}/subjects/001/labs", json=lab,
                            headers={"Idempotency-Key": "k1"})
        again = client.post(f"/v1/studies/{STUDY}/subjects/001/labs", json=lab,
                            headers={"Idempotency-Key": "k1"})
        assert first.status_code == 201, first.text
        assert again.json() == first.json()
        assert client.delete("/v1/auth/token").status_code == 204
        # The server's sealing rounds, as that role, seal the people's log into its ledger.
        sealed = app_runtime.seal_directory(force_checkpoint=True)
        assert sealed is not None and sealed.checkpoint_size == sealed.tree_size > 0
    finally:
        app_runtime.close()
        with psycopg.connect(db_url, autocommit=True) as conn:
            conn.execute(f'DROP OWNED BY "{role}"')
            conn.execute(f'DROP ROLE "{role}"')


def test_the_application_role_keeps_its_rights_on_read_tables_the_owner_rebuilt(
    stored: Runtime, db_url: str, settings: Settings
) -> None:
    role = f"tl_app_{uuid.uuid4().hex[:8]}"
    stored.project(STUDY)  # the owner creates the read tables
    schema = schema_for_study(STUDY)
    with psycopg.connect(db_url, autocommit=True) as conn:
        create_login_role(conn, role, None)
        grant_app_role(conn, role, schema)
    app_url = _as_role(db_url, role)
    try:
        stored.project(STUDY, rebuild=True)  # e.g. after an upgrade: new tables, the owner's
        app_runtime = Runtime(replace(settings, provisioned=True), app_url)
        app = app_runtime.study(STUDY, clock=simulated_clock())
        enroll(app, "002")
        app.close()
        assert app_runtime.project(STUDY) > 0  # versions closed, rows added, position moved
        app_runtime.close()
        with psycopg.connect(app_url, autocommit=True) as conn:
            for relation in ("casebook_versions", "outcome_facts", "subject_summaries",
                             "audit_trail"):
                count = conn.execute(f'SELECT count(*) FROM "{schema}"."{relation}"').fetchone()
                assert count is not None and count[0] > 0, relation
            # Rights carried over, not widened: the rebuilt tables are still not the role's.
            with pytest.raises(psycopg.errors.InsufficientPrivilege):
                conn.execute(f'DROP TABLE "{schema}"."casebook_versions" CASCADE')
    finally:
        with psycopg.connect(db_url, autocommit=True) as conn:
            conn.execute(f'DROP OWNED BY "{role}"')
            conn.execute(f'DROP ROLE "{role}"')
