"""Idempotency keys expire after 24 h, and a key left by a request that died mid-way is taken
over once its lease has run out, instead of answering 409 forever (issue 14, item 7); but
never that of a request whose events were stored (their receipt says so), whose retry would
write them twice."""

from __future__ import annotations

import asyncio
import re
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from eventsourcing.persistence import IntegrityError, StoredEvent
from fastapi.testclient import TestClient
from psycopg.sql import SQL, Identifier

from application.runtime import Runtime
from domain.subject import subject_uuid
from infra.catalog import CATALOG_SCHEMA
from infra.idempotency import (
    _RECORD_APPLIED,
    KEY_TTL,
    LEASE,
    PLANNED_EACH_TIME,
    Applied,
    Claimed,
    Replay,
    request_digest,
)
from infra.postgres import connect
from tests.support import T0, api_client, study_with_a_child

SUBJECT = "/v1/studies/NCT04397107/subjects/001"
LAB = {"observed_at": (T0 + timedelta(days=1)).isoformat(), "code": "C3", "value": 0.8,
       "unit": "g/L"}
USER = "coordinator-JLU1"


def _stored(runtime: Runtime) -> int:
    return int(runtime.study("NCT04397107").recorder.max_notification_id() or 0)


def _age(runtime: Runtime, key: str, column: str, by: timedelta) -> None:
    """Move a key's claim (``claimed_at``) or answer (``completed_at``) back in time, as if
    ``by`` had passed."""
    # A claim's answer and receipt name it by its time: they move with it.
    moved = ([("idempotency", "claimed_at"), ("idempotency_answers", "claimed_at"),
              ("idempotency_applied", "claimed_at"), ("idempotency_applied", "applied_at")]
             if column == "claimed_at" else [("idempotency_answers", column)])
    with connect(runtime.url) as conn:
        for table, name in moved:
            conn.execute(SQL("UPDATE {}.{} SET {} = {} - %s WHERE key = %s").format(
                Identifier(CATALOG_SCHEMA), Identifier(table), Identifier(name),
                Identifier(name)), (by, key))


def _receipts(runtime: Runtime, key: str) -> int:
    with connect(runtime.url) as conn:
        row = conn.execute(SQL("SELECT count(*) FROM {}.idempotency_applied WHERE key = %s")
                           .format(Identifier(CATALOG_SCHEMA)), (key,)).fetchone()
    return int(row[0]) if row else 0


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
        assert isinstance(runtime.idempotency().claim(
            conn, USER, "lab-2", request_digest("POST", path, body)), Claimed)
    headers = {"Idempotency-Key": "lab-2"}
    stored = _stored(runtime)
    in_flight = client.post(path, json=LAB, headers=headers)
    assert in_flight.status_code == 409
    assert in_flight.json()["key_state"] == "in_flight"
    assert _stored(runtime) == stored
    _age(runtime, "lab-2", "claimed_at", LEASE + timedelta(seconds=1))
    taken_over = client.post(path, json=LAB, headers=headers)
    assert taken_over.status_code == 201, taken_over.text
    assert _stored(runtime) > stored
    replayed = client.post(path, json=LAB, headers=headers)
    assert replayed.json() == taken_over.json()
    assert replayed.headers["idempotent-replayed"] == "true"


def test_a_write_whose_answer_was_lost_never_runs_again(runtime: Runtime) -> None:
    # A server killed between the events' commit and its answer's leaves the claim and the
    # receipt stored with the events, and no answer: a retry, even after the lease, is told
    # the write was applied, and stores nothing.
    client = _coordinator(runtime)
    path, headers = f"{SUBJECT}/labs", {"Idempotency-Key": "lab-lost"}
    assert client.post(path, json=LAB, headers=headers).status_code == 201
    assert _receipts(runtime, "lab-lost") == 1
    stored = _stored(runtime)
    with connect(runtime.url) as conn:
        conn.execute(SQL("DELETE FROM {}.idempotency_answers WHERE key = 'lab-lost'").format(
            Identifier(CATALOG_SCHEMA)))
    _age(runtime, "lab-lost", "claimed_at", LEASE + timedelta(seconds=1))
    retry = client.post(path, json=LAB, headers=headers)
    assert retry.status_code == 409, retry.text
    assert "was applied" in retry.json()["detail"]
    # Said so a client can tell it from a key in flight without reading the text.
    assert retry.json()["key_state"] == "applied"
    receipt_time = datetime.fromisoformat(retry.json()["applied_at"])
    assert timedelta(0) < datetime.now(UTC) - receipt_time < LEASE + timedelta(minutes=1)
    assert _stored(runtime) == stored
    # Nor does a failure of the retry's own free the key (it is not the retry's to free).
    with runtime.pool().connection() as conn:
        runtime.idempotency().release(conn, USER, "lab-lost")
        assert isinstance(runtime.idempotency().claim(
            conn, USER, "lab-lost", request_digest("POST", path, retry.request.content)),
            Replay)


def test_a_receipt_is_stored_only_with_its_events_and_its_claim(runtime: Runtime) -> None:
    _coordinator(runtime)
    app = runtime.study("NCT04397107")
    subject = subject_uuid("NCT04397107", "001")
    with app.recorder.datastore.transaction(commit=False) as curs:
        curs.execute(SQL("SELECT max(originator_version) AS v FROM {}.{} WHERE"
                         " originator_id = %s").format(
            Identifier(app.recorder.datastore.schema),
            Identifier(app.recorder.events_table_name)), (subject,))
        row = curs.fetchone()
    version = int(row["v"]) if row else 0
    store = runtime.idempotency()
    with runtime.pool().connection() as conn:
        claims = {key: store.claim(conn, USER, key, "d") for key in ("refused", "stored", "late")}
    receipt = {key: Applied(USER, key, claim.at) for key, claim in claims.items()
               if isinstance(claim, Claimed)}

    def event(n: int) -> StoredEvent:
        return StoredEvent(subject, n, "tests:Nothing", b"{}")

    with pytest.raises(IntegrityError):  # relies on a version that moved: nothing stored
        app.recorder.insert_events([event(version + 1)], expected_versions=[
            (subject_uuid("NCT04397107", "002"), 1)], receipts=[receipt["refused"]])
    assert _receipts(runtime, "refused") == 0
    app.recorder.insert_events([event(version + 1)], receipts=[receipt["stored"]])
    assert _receipts(runtime, "stored") == 1
    # A request that outlived its lease, its key taken over by a retry: its write is refused.
    _age(runtime, "late", "claimed_at", LEASE + timedelta(seconds=1))
    with runtime.pool().connection() as conn:
        assert isinstance(store.claim(conn, USER, "late", "d"), Claimed)
    with pytest.raises(IntegrityError, match="taken over"):
        app.recorder.insert_events([event(version + 2)], receipts=[receipt["late"]])
    assert _receipts(runtime, "late") == 0
    assert _stored(runtime) == app.recorder.max_notification_id()
    assert [e.originator_version for e in app.recorder.select_events(subject)][-1] == version + 1


def test_claims_stored_together_each_get_their_own_outcome(runtime: Runtime) -> None:
    # What the key claims' thread does with the claims of concurrent requests: one key new,
    # one named twice (the second finds the first's claim in flight), one already answered.
    _coordinator(runtime)
    store = runtime.idempotency()
    with runtime.pool().connection() as conn:
        claimed = store.claim(conn, USER, "done", "d0")
        assert isinstance(claimed, Claimed)
        store.complete(conn, USER, "done", claimed, 201, {"content": {"version": 3}})
        outcomes = store.claim_many(conn, [(USER, "new", "d1"), (USER, "twice", "d2"),
                                           (USER, "twice", "d3"), (USER, "done", "d0")])
    assert isinstance(outcomes[0], Claimed)
    assert isinstance(outcomes[1], Claimed)
    assert isinstance(outcomes[2], Replay)
    assert (outcomes[2].request_sha256, outcomes[2].status) == ("d2", None)
    assert isinstance(outcomes[3], Replay)
    assert (outcomes[3].status, outcomes[3].body) == (201, {"content": {"version": 3}})


def test_a_burst_of_keyed_writes_each_claims_and_answers_its_own_key(
        runtime: Runtime) -> None:
    client = _coordinator(runtime)

    async def burst() -> tuple[list[Any], list[Any]]:
        claims = runtime.key_claims()
        claimed = await asyncio.wait_for(asyncio.gather(
            *(claims.claim(USER, f"burst-{n}", f"d{n}") for n in range(20))), 30)
        assert all(isinstance(c, Claimed) for c in claimed)
        answered = await asyncio.wait_for(asyncio.gather(
            *(claims.answer(USER, f"burst-{n}", claimed[n], 201 if n % 2 else 503,
                            {"content": {"n": n}, "content_type": "application/json",
                             "headers": []}) for n in range(20))), 30)
        return claimed, answered

    assert asyncio.run(burst())[1] == [None] * 20
    with connect(runtime.url) as conn:
        rows = dict(conn.execute(SQL(
            "SELECT k.key, a.status FROM {s}.idempotency AS k JOIN {s}.idempotency_answers AS a"
            " USING (username, key, claimed_at) WHERE k.key LIKE 'burst-%%'").format(
            s=Identifier(CATALOG_SCHEMA))).fetchall())
    # Answered keys hold their answer; a server error freed its key (a retry runs again).
    assert rows == {f"burst-{n}": 201 for n in range(1, 20, 2)}
    assert client.post(f"{SUBJECT}/labs", json=LAB,
                       headers={"Idempotency-Key": "after-burst"}).status_code == 201


def test_keys_and_answers_keep_every_character_through_the_binary_arrays(
        runtime: Runtime) -> None:
    # Claims and answers go to the database as binary arrays (no escaping of their own):
    # quotes, backslashes, braces, commas and non-ASCII text come back as they went in.
    _coordinator(runtime)
    store = runtime.idempotency()
    odd = ['a "quoted" key', "back\\slash", "{brace,comma}", "NULL", "é€\u2028", " "]
    body = {"content": {"text": 'a "quoted" \\ value, {x}, é€ \u2028 \\u0041', "n": [1, None]},
            "content_type": "application/json", "headers": [["ETag", '"3"']]}
    with runtime.pool().connection() as conn:
        claimed = store.claim_many(conn, [(USER, key, f"d-{key}") for key in odd])
        assert all(isinstance(c, Claimed) for c in claimed)
        store.complete_many(conn, [(USER, key, c, 201, body)
                                   for key, c in zip(odd, claimed, strict=True)])
        replays = store.claim_many(conn, [(USER, key, f"d-{key}") for key in odd])
    for key, replay in zip(odd, replays, strict=True):
        assert isinstance(replay, Replay)
        assert (replay.request_sha256, replay.status, replay.body) == (f"d-{key}", 201, body)


def test_an_answer_stored_in_its_claims_row_by_an_earlier_version_is_still_replayed(
        runtime: Runtime) -> None:
    # Earlier versions wrote the answer over the claim's row; a retry within the day after
    # the upgrade still gets it, and a key answered so long ago is free again.
    _coordinator(runtime)
    store = runtime.idempotency()
    with connect(runtime.url) as conn:
        conn.execute(SQL(
            "INSERT INTO {}.idempotency VALUES (%s, 'old', 'd-old', 201, %s, now(), now()),"
            " (%s, 'expired', 'd-exp', 201, %s, now() - %s, now() - %s)").format(
            Identifier(CATALOG_SCHEMA)),
            (USER, '{"content": {"version": 4}}', USER, '{"content": {}}',
             KEY_TTL + timedelta(hours=1), KEY_TTL + timedelta(hours=1)))
    with runtime.pool().connection() as conn:
        old, expired = store.claim_many(conn, [(USER, "old", "d-old"), (USER, "expired", "d")])
    assert isinstance(old, Replay)
    assert (old.request_sha256, old.status, old.body) == ("d-old", 201,
                                                          {"content": {"version": 4}})
    assert isinstance(expired, Claimed)  # claimed anew


def test_a_redaction_forgets_the_answers_that_mention_its_records(runtime: Runtime) -> None:
    client = _coordinator(runtime)
    headers = {"Idempotency-Key": "lab-r"}
    first = client.post(f"{SUBJECT}/labs", json={**LAB, "record_id": "lab-redact"},
                        headers=headers)
    assert first.status_code == 201, first.text
    assert client.post(f"{SUBJECT}/labs", json={**LAB, "record_id": "lab-other"},
                       headers={"Idempotency-Key": "lab-o"}).status_code == 201
    with runtime.pool().connection() as conn:
        assert runtime.idempotency().forget_mentions(conn, ["lab-redact"]) == 1
    # The key is free: the same request runs again (and is refused as a duplicate record),
    # instead of replaying an answer that named the redacted record.
    again = client.post(f"{SUBJECT}/labs", json={**LAB, "record_id": "lab-redact"},
                        headers=headers)
    assert "idempotent-replayed" not in again.headers
    assert again.status_code == 422, again.text
    kept = client.post(f"{SUBJECT}/labs", json={**LAB, "record_id": "lab-other"},
                       headers={"Idempotency-Key": "lab-o"})
    assert kept.headers.get("idempotent-replayed") == "true"


def test_expired_keys_are_purged_and_the_day_s_kept(runtime: Runtime) -> None:
    _coordinator(runtime)
    store = runtime.idempotency()
    day = KEY_TTL + timedelta(hours=1)
    with runtime.pool().connection() as conn:
        claimed = {key: store.claim(conn, USER, key, "d") for key in
                   ("old", "fresh", "taken-over", "unanswered", "in-flight", "applied-old",
                    "applied-fresh")}
        for key in ("old", "fresh", "taken-over"):
            store.complete(conn, USER, key, claimed[key], 201, {"content": {"key": key}})
        # Writes stored, answers lost (see test_a_write_whose_answer_was_lost_never_runs_again)
        with conn.transaction(), conn.cursor() as curs:
            Applied.record_all(curs, [Applied(USER, key, claim.at) for key in
                                      ("applied-old", "applied-fresh")
                                      if isinstance(claim := claimed[key], Claimed)])
        # An earlier version's answer, a day old, in its claim's row.
        conn.execute(SQL(
            "INSERT INTO {}.idempotency VALUES (%s, 'legacy', 'd', 201, '{{}}', now() - %s,"
            " now() - %s)").format(Identifier(CATALOG_SCHEMA)), (USER, day, day))
    # A day passes for "old", "unanswered" and the first claim of "taken-over".
    for key in ("old", "unanswered", "taken-over", "applied-old"):
        _age(runtime, key, "claimed_at", day)
        _age(runtime, key, "completed_at", day)
    with runtime.pool().connection() as conn:
        assert isinstance(store.claim(conn, USER, "taken-over", "d2"), Claimed)  # anew
        purged = store.purge_expired(conn, datetime.now(UTC))
        left = {row[0] for row in conn.execute(SQL(
            "SELECT key FROM {}.idempotency WHERE username = %s").format(
            Identifier(CATALOG_SCHEMA)), (USER,))}
        answers = {row[0] for row in conn.execute(SQL(
            "SELECT key FROM {}.idempotency_answers WHERE username = %s").format(
            Identifier(CATALOG_SCHEMA)), (USER,))}
        receipts = {row[0] for row in conn.execute(SQL(
            "SELECT key FROM {}.idempotency_applied WHERE username = %s").format(
            Identifier(CATALOG_SCHEMA)), (USER,))}
        fresh = store.claim(conn, USER, "fresh", "d")
    # Gone: the expired answers (old, the taken-over key's first), their claim, the legacy
    # row, the claim left unanswered for a day, and the write applied a day ago with its
    # receipt; kept: the day's.
    assert purged == 2 + 1 + 4
    assert left == {"fresh", "taken-over", "in-flight", "applied-fresh"}
    assert answers == {"fresh"}
    assert receipts == {"applied-fresh"}
    assert isinstance(fresh, Replay) and fresh.body == {"content": {"key": "fresh"}}



def _claims_kept_prepared(conn: Any) -> list[str]:
    return [row[0] for row in conn.execute(
        "SELECT statement FROM pg_prepared_statements").fetchall()
        if "WITH live AS" in row[0] or "CROSS JOIN LATERAL" in row[0]
        or "INSERT INTO \"trialledger\".idempotency_answers" in row[0]]


def test_the_statements_that_look_claims_up_are_planned_at_each_run(runtime: Runtime) -> None:
    # A plan a connection keeps (from a statement's sixth run) is made for the claims table
    # as it was then: made while the claims were few, it read every claim for each write
    # once thousands had come (bench/http_bench.py: the database's CPU a keyed write 0.17 ->
    # 0.24-0.34 ms). The receipts, the answers and the replays are never kept prepared.
    _coordinator(runtime)
    store = runtime.idempotency()
    with connect(runtime.url) as conn:
        for n in range(8):
            claimed = store.claim(conn, USER, f"planned-{n}", "d")
            assert isinstance(claimed, Claimed)
            with conn.transaction(), conn.cursor() as curs:
                Applied.record_all(curs, [Applied(USER, f"planned-{n}", claimed.at)])
                Applied.confirm_all(curs, [Applied(USER, f"planned-{n}", claimed.at)])
            store.complete(conn, USER, f"planned-{n}", claimed, 201, {"content": {"n": n}})
            replay = store.claim(conn, USER, f"planned-{n}", "d")  # answered: replayed
            assert isinstance(replay, Replay) and replay.status == 201
        assert _claims_kept_prepared(conn) == []
        # Claims analyzed while they were three, then thousands more: each run's plan still
        # looks each key up by the primary key.
        with conn.transaction():
            conn.execute(SQL("ANALYZE {}.idempotency").format(Identifier(CATALOG_SCHEMA)))
            conn.execute(SQL(
                "INSERT INTO {}.idempotency (username, key, request_sha256, claimed_at)"
                " SELECT %s, 'grown-' || g, 'd', now() FROM generate_series(1, 5000) AS g"
            ).format(Identifier(CATALOG_SCHEMA)), (USER,))
        now = datetime.now(UTC)
        keys = ([USER, USER], ["grown-1", "grown-2"])
        for text, params in ((_RECORD_APPLIED, (*keys, [now, now])),
                             (store._complete, (now, *keys, [now, now], [201, 201],
                                                ["{}", "{}"])),
                             (store._claimed, keys)):
            with conn.transaction(force_rollback=True):
                plan = "\n".join(row[0] for row in conn.execute(
                    b"EXPLAIN " + text, params, prepare=PLANNED_EACH_TIME).fetchall())
            assert "idempotency_pkey" in plan, plan
            assert not re.search(r"Seq Scan on idempotency\b(?!_)", plan), plan
