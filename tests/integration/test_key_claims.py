"""Idempotency keys' claims and answers, each stored from a thread of its own
(:class:`infra.key_claims.KeyClaims`), on real PostgreSQL."""

from __future__ import annotations

import asyncio

import psycopg

from application.runtime import Runtime
from infra.catalog import CATALOG_SCHEMA


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
