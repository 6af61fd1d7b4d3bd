"""Idempotency keys' claims and answers, each stored from a thread of its own
(:class:`infra.key_claims.KeyClaims`), on real PostgreSQL."""

from __future__ import annotations

import asyncio
from typing import Any

import psycopg
import pytest

from api.middleware import Idempotency
from application.runtime import Runtime
from infra import key_claims
from infra.catalog import CATALOG_SCHEMA
from tests.support import api_client, study_with_a_child


def test_a_claim_does_not_wait_behind_an_answer_still_being_stored(runtime: Runtime) -> None:
    # A request waits for its claim before it runs; answers are stored after their requests
    # were answered. Here an answer is held up (its table locked by another transaction): a
    # new request's claim is stored meanwhile, and the answer once the lock goes.
    claims = runtime.key_claims()

    async def scenario(blocker: psycopg.Connection[object]) -> None:
        assert await claims.claim("u1", "first", "d1") is None
        blocker.execute(f"LOCK TABLE {CATALOG_SCHEMA}.idempotency_answers IN SHARE MODE")
        answered = claims.answer("u1", "first", 201, {"content": {"id": 1},
                                                      "content_type": "application/json",
                                                      "headers": []})
        await _waiting_on_a_lock(runtime.url)  # the answer's statement is under way
        assert await asyncio.wait_for(claims.claim("u1", "second", "d2"), 10) is None
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
        assert await claims.claim("u2", "a", "da") is None
        assert await claims.claim("u2", "b", "db") is None
        first = claims.answer("u2", "a", 201, _body(1))
        await asyncio.sleep(0.5)
        assert not first.done()  # "b" is still running: its answer is waited for
        assert claims.answering("u2", "a") is first
        second = claims.answer("u2", "b", 201, _body(2))
        await asyncio.wait_for(asyncio.gather(first, second), 10)
        assert claims.answering("u2", "a") is None
        # Alone (nothing else running), an answer is stored at once.
        assert await claims.claim("u2", "c", "dc") is None
        await asyncio.wait_for(claims.answer("u2", "c", 201, _body(3)), 10)

    asyncio.run(scenario())
    with runtime.pool().connection() as conn:
        replays = runtime.idempotency().claim_many(
            conn, [("u2", "a", "da"), ("u2", "b", "db"), ("u2", "c", "dc")])
    assert [r.body["content"] if r else None for r in replays] == [{"n": 1}, {"n": 2},
                                                                  {"n": 3}]


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
        assert await claims.claim("other", "running", "d") is None
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
