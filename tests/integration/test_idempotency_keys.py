"""Idempotency keys expire after 24 h, and a key left by a request that died mid-way is taken
over once its lease has run out, instead of answering 409 forever (issue 14, item 7)."""

from __future__ import annotations

from datetime import timedelta

from fastapi.testclient import TestClient
from psycopg.sql import SQL, Identifier

from application.runtime import Runtime
from infra.catalog import CATALOG_SCHEMA
from infra.idempotency import KEY_TTL, LEASE, request_digest
from infra.postgres import connect
from tests.support import T0, api_client, study_with_a_child

SUBJECT = "/v1/studies/NCT04397107/subjects/001"
LAB = {"observed_at": (T0 + timedelta(days=1)).isoformat(), "code": "C3", "value": 0.8,
       "unit": "g/L"}
USER = "coordinator-JLU1"


def _stored(runtime: Runtime) -> int:
    return int(runtime.study("NCT04397107").recorder.max_notification_id() or 0)


def _age(runtime: Runtime, key: str, column: str, by: timedelta) -> None:
    """Move a key's claim or answer back in time, as if ``by`` had passed."""
    with connect(runtime.url) as conn:
        conn.execute(SQL("UPDATE {}.idempotency SET {} = {} - %s WHERE key = %s").format(
            Identifier(CATALOG_SCHEMA), Identifier(column), Identifier(column)), (by, key))


def _coordinator(runtime: Runtime) -> TestClient:
    study_with_a_child(runtime)
    return api_client(runtime, "coordinator", site="JLU1")


def test_a_key_expires_after_24_hours(runtime: Runtime) -> None:
    client = _coordinator(runtime)
    headers = {"Idempotency-Key": "lab-1"}
    assert client.post(f"{SUBJECT}/labs", json=LAB, headers=headers).status_code == 201
    stored = _stored(runtime)
    _age(runtime, "lab-1", "completed_at", KEY_TTL - timedelta(minutes=1))
    replayed = client.post(f"{SUBJECT}/labs", json=LAB, headers=headers)
    assert replayed.headers.get("idempotent-replayed") == "true"
    assert _stored(runtime) == stored
    _age(runtime, "lab-1", "completed_at", timedelta(minutes=2))
    again = client.post(f"{SUBJECT}/labs", json={**LAB, "value": 0.9}, headers=headers)
    assert again.status_code == 201, again.text
    assert "idempotent-replayed" not in again.headers
    assert _stored(runtime) > stored


def test_a_key_left_by_a_crashed_request_is_taken_over_after_its_lease(
        runtime: Runtime) -> None:
    client = _coordinator(runtime)
    path = f"{SUBJECT}/labs"
    # The claim a request made before its process died: no answer was ever recorded.
    with runtime.pool().connection() as conn:
        body = client.build_request("POST", path, json=LAB).content
        assert runtime.idempotency().claim(conn, USER, "lab-2",
                                           request_digest("POST", path, body)) is None
    headers = {"Idempotency-Key": "lab-2"}
    stored = _stored(runtime)
    in_flight = client.post(path, json=LAB, headers=headers)
    assert in_flight.status_code == 409
    assert _stored(runtime) == stored
    _age(runtime, "lab-2", "claimed_at", LEASE + timedelta(seconds=1))
    taken_over = client.post(path, json=LAB, headers=headers)
    assert taken_over.status_code == 201, taken_over.text
    assert _stored(runtime) > stored
    replayed = client.post(path, json=LAB, headers=headers)
    assert replayed.json() == taken_over.json()
    assert replayed.headers["idempotent-replayed"] == "true"
