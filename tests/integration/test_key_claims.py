"""Idempotency keys' claims and answers, each stored from a thread of its own
(:class:`infra.key_claims.KeyClaims`), on real PostgreSQL."""

from __future__ import annotations

import asyncio
from datetime import timedelta
from typing import Any

import psycopg
import pytest

from api.middleware import Idempotency
from application.runtime import Runtime
from infra import key_claims
from infra.catalog import CATALOG_SCHEMA
from infra.idempotency import LEASE, Claimed, Replay
from tests.support import api_client, study_with_a_child


def test_a_claim_does_not_wait_behind_an_answer_still_being_stored(runtime: Runtime) -> None:
    # A request waits for its claim before it runs; answers are stored after their requests
    # were answered. Here an answer is held up (its table locked by another transaction): a
    # new request's claim is stored meanwhile, and the answer once the lock goes.
    claims = runtime.key_claims()

    async def scenario(blocker: psycopg.Connection[object]) -> None:
        first = await claims.claim("u1", "first", "d1")
        assert isinstance(first, Claimed)
        blocker.execute(f"LOCK TABLE {CATALOG_SCHEMA}.idempotency_answers IN SHARE MODE")
        answered = claims.answer("u1", "first", first, 201, {"content": {"id": 1},
                                                      "content_type": "application/json",
                                                      "headers": []})
        await _waiting_on_a_lock(runtime.url)  # the answer's statement is under way
        assert isinstance(await asyncio.wait_for(claims.claim("u1", "second", "d2"), 10),
                          Claimed)
        assert not answered.done()
        blocker.rollback()
        await asyncio.wait_for(answered, 10)

    with psycopg.connect(runtime.url) as blocker:
        asyncio.run(scenario(blocker))
        rows = blocker.execute(
            f"SELECT k.key, a.status FROM {CATALOG_SCHEMA}.idempotency AS k LEFT JOIN"
            f" {CATALOG_SCHEMA}.idempotency_answers AS a USING (username, key, claimed_at)"
            " WHERE username = 'u1' ORDER BY key").fetchall()
    assert rows == [("first", 201), ("second", None)]


async def _waiting_on_a_lock(url: str) -> None:
    with psycopg.connect(url, autocommit=True) as conn:
        for _ in range(200):
            row = conn.execute("SELECT count(*) FROM pg_stat_activity WHERE wait_event_type ="
                               " 'Lock' AND datname = current_database()").fetchone()
            if row and row[0]:
                return
            await asyncio.sleep(0.05)
    raise AssertionError("the answer never waited on the locked row")


def test_answers_wait_for_the_requests_still_running_then_are_stored_together(
        runtime: Runtime, monkeypatch: pytest.MonkeyPatch) -> None:
    # A gather long enough that only the last running request's answer can end the wait.
    monkeypatch.setattr(key_claims, "ANSWER_GATHER", 30.0)
    claims = runtime.key_claims()

    async def scenario() -> None:
        a = await claims.claim("u2", "a", "da")
        b = await claims.claim("u2", "b", "db")
        assert isinstance(a, Claimed) and isinstance(b, Claimed)
        first = claims.answer("u2", "a", a, 201, _body(1))
        await asyncio.sleep(0.5)
        assert not first.done()  # "b" is still running: its answer is waited for
        assert claims.answering("u2", "a") is first
        second = claims.answer("u2", "b", b, 201, _body(2))
        await asyncio.wait_for(asyncio.gather(first, second), 10)
        assert claims.answering("u2", "a") is None
        # Alone (nothing else running), an answer is stored at once.
        c = await claims.claim("u2", "c", "dc")
        assert isinstance(c, Claimed)
        await asyncio.wait_for(claims.answer("u2", "c", c, 201, _body(3)), 10)

    asyncio.run(scenario())
    with runtime.pool().connection() as conn:
        replays = runtime.idempotency().claim_many(
            conn, [("u2", "a", "da"), ("u2", "b", "db"), ("u2", "c", "dc")])
    assert [r.body["content"] if isinstance(r, Replay) else None
            for r in replays] == [{"n": 1}, {"n": 2}, {"n": 3}]


def test_a_retry_while_its_answer_is_being_stored_gets_that_answer(
        runtime: Runtime, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(key_claims, "ANSWER_GATHER", 30.0)
    study_with_a_child(runtime)
    token = api_client(runtime, "coordinator", site="JLU1").headers["Authorization"]
    claims = runtime.key_claims()
    ran: list[int] = []

    async def entered(scope: Any, receive: Any, send: Any) -> None:
        ran.append(1)
        await send({"type": "http.response.start", "status": 201,
                    "headers": [(b"content-type", b"application/json")]})
        await send({"type": "http.response.body", "body": b'{"version": 7}'})

    idempotency = Idempotency(entered, runtime)

    async def post() -> tuple[list[dict[str, Any]], asyncio.Task[None]]:
        sent: list[dict[str, Any]] = []
        answered = asyncio.Event()

        async def send(message: dict[str, Any]) -> None:
            sent.append(message)
            if message["type"] == "http.response.body":
                answered.set()

        async def receive() -> dict[str, Any]:
            return {"type": "http.request", "body": b"{}", "more_body": False}

        scope = {"type": "http", "method": "POST", "path": "/v1/labs",
                 "headers": [(b"authorization", token.encode()),
                             (b"idempotency-key", b"retried")],
                 "state": {"body": b"{}"}}
        task = asyncio.create_task(idempotency(scope, receive, send))
        await asyncio.wait_for(answered.wait(), 10)
        return sent, task

    async def scenario() -> None:
        # Another request is running, so the first answer waits to be stored with its.
        assert isinstance(await claims.claim("other", "running", "d"), Claimed)
        _, first = await post()
        assert claims.answering("coordinator-JLU1", "retried") is not None
        retry = asyncio.create_task(post())
        await asyncio.sleep(0.5)
        assert not retry.done()  # waiting for the answer, not told 409
        claims.forgo()  # the other request ends: the answers are stored
        sent, second = await asyncio.wait_for(retry, 10)
        await asyncio.wait_for(asyncio.gather(first, second), 10)
        start = sent[0]
        assert (start["status"], sent[1]["body"]) == (201, b'{"version":7}')
        assert (b"idempotent-replayed", b"true") in start["headers"]

    asyncio.run(scenario())
    assert ran == [1]  # the retry did not run again


def _body(n: int) -> dict[str, Any]:
    return {"content": {"n": n}, "content_type": "application/json", "headers": []}


def test_a_request_that_fails_with_an_error_frees_its_key(runtime: Runtime) -> None:
    study_with_a_child(runtime)
    token = api_client(runtime, "coordinator", site="JLU1").headers["Authorization"]
    ran: list[int] = []

    async def failing(scope: Any, receive: Any, send: Any) -> None:
        ran.append(1)
        raise RuntimeError("a bug")

    idempotency = Idempotency(failing, runtime)
    scope = {"type": "http", "method": "POST", "path": "/v1/labs",
             "headers": [(b"authorization", token.encode()), (b"idempotency-key", b"failed")],
             "state": {"body": b"{}"}}

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b"{}", "more_body": False}

    async def send(message: Any) -> None:
        raise AssertionError("nothing is sent by a request that failed")

    async def twice() -> None:
        for _ in range(2):
            with pytest.raises(RuntimeError):
                await asyncio.wait_for(idempotency(scope, receive, send), 10)

    asyncio.run(twice())
    # The retry ran again (its key freed), instead of hearing 409 until the lease ran out.
    assert ran == [1, 1]


def test_a_request_cut_off_just_as_its_claim_is_granted_leaves_nothing_running(
        runtime: Runtime, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(key_claims, "ANSWER_GATHER", 30.0)
    claims = runtime.key_claims()
    queued = claims._claiming

    async def scenario() -> None:
        cut: list[asyncio.Task[Any]] = []

        def claiming(*args: Any) -> asyncio.Future[Any]:
            future = queued(*args)
            # Cancelled once the claim is settled, before the request resumes with it.
            future.add_done_callback(lambda _: cut[0].cancel())
            return future

        monkeypatch.setattr(claims, "_claiming", claiming)
        cut.append(asyncio.create_task(claims.claim("u3", "cut", "d")))
        with pytest.raises(asyncio.CancelledError):
            await cut[0]
        monkeypatch.setattr(claims, "_claiming", queued)
        # Nothing counts as running: a lone answer is stored at once, not after the gather.
        alone = await claims.claim("u3", "alone", "d")
        assert isinstance(alone, Claimed)
        await asyncio.wait_for(claims.answer("u3", "alone", alone, 201, _body(4)), 10)

    asyncio.run(scenario())


def test_a_late_answer_is_not_filed_under_the_claim_that_took_its_key_over(
        runtime: Runtime) -> None:
    store = runtime.idempotency()
    with runtime.pool().connection() as conn:
        first = store.claim(conn, "u4", "k", "d-first")
        assert isinstance(first, Claimed)
        # Its request outlived the lease (a stalled process): the key is taken over.
        conn.execute(f"UPDATE {CATALOG_SCHEMA}.idempotency SET claimed_at = claimed_at - %s"
                     " WHERE username = 'u4'", (LEASE + timedelta(seconds=1),))
        second = store.claim(conn, "u4", "k", "d-second")
        assert isinstance(second, Claimed)
        store.complete(conn, "u4", "k", first, 201, _body(1))  # the stalled one, late
        store.release(conn, "u4", "k", first)  # nor may it free the key it lost
        store.complete(conn, "u4", "k", second, 201, _body(2))
        replay = store.claim(conn, "u4", "k", "d-second")
    assert isinstance(replay, Replay)
    assert (replay.request_sha256, replay.body["content"]) == ("d-second", {"n": 2})
