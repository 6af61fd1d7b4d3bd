"""Idempotency keys: a retried POST gets the first result instead of a second write.

A request claims its (person, key) before it runs and records its response after. A key
lives :data:`KEY_TTL` after its answer; then it is free again. A request's events are stored
with an :class:`Applied` receipt of its claim, in their own transaction: a claim whose
request wrote is never run again, even if its answer was lost (a server killed between the
events' commit and the answer's), until the key expires. A claim left without a response or
a receipt answers 409 to retries while it may still be running; once it is older than
:data:`LEASE` (longer than any write may take), the process that made it is taken to have
died before writing, and the next request with the key takes it over and runs.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson
import psycopg
from eventsourcing.persistence import IntegrityError
from psycopg.sql import SQL, Composed, Identifier

from infra.catalog import CATALOG_SCHEMA

MAX_KEY_LENGTH = 200
KEY_TTL = timedelta(hours=24)
"""How long a key's answer is replayed."""
PURGE_BATCH = 10_000
"""Expired keys deleted at most in one go (see :meth:`IdempotencyStore.purge_expired`)."""
LEASE = timedelta(minutes=2)
"""How long a claim without an answer holds: beyond every bound on a write (lock wait,
statement, group commit: 10 + 15 + 30 s by default) and a server's stop."""


# The answer ``a`` of the claim ``k`` (in the statements below), and its receipt ``p``.
_ANSWERS_CLAIM = SQL("a.username = k.username AND a.key = k.key AND a.claimed_at = k.claimed_at")
_APPLIED_CLAIM = SQL("p.username = k.username AND p.key = k.key AND p.claimed_at = k.claimed_at")
_CLAIMS = SQL("{}.idempotency").format(Identifier(CATALOG_SCHEMA))
_APPLIED = SQL("{}.idempotency_applied").format(Identifier(CATALOG_SCHEMA))
# When the claim ``k``'s request stored its events (None: it did not, or not yet).
_APPLIED_AT = SQL("(SELECT p.applied_at FROM {} AS p WHERE {})").format(_APPLIED, _APPLIED_CLAIM)


def _still_claimed(row: str) -> Composed:
    """Whether the claim of ``row``'s (``u``, ``k``) is still the one made at its ``c``: one
    taken over after its lease (its request outlived it) has a retry running in its place.
    A lookup of the claims' primary key for each row, planned at each run (see
    PLANNED_EACH_TIME)."""
    return SQL("(SELECT k.claimed_at FROM {t} AS k WHERE k.username = {r}.u"
               " AND k.key = {r}.k) = {r}.c").format(t=_CLAIMS, r=Identifier(row))


PLANNED_EACH_TIME = False
"""The ``prepare`` of the statements that look claims up (the receipts, the answers, the
replays): never kept prepared, so each run is planned for the claims table as it is then.
A connection keeps a statement's plan from its sixth run; one made while the claims were few
(a hash join, or a lookup by sequential scan once the few were analyzed) stayed as the table
grew by thousands a minute, and read every claim for each write (4 ms a write at 30,000
claims) until the next ANALYZE. Planning costs a fraction of a millisecond a batch."""
_RECORD_APPLIED = SQL(
    "WITH live AS (SELECT r.u, r.k, r.c"
    "  FROM unnest(%b::text[], %b::text[], %b::timestamptz[]) AS r(u, k, c)"
    "  WHERE {still_claimed}),"
    " stored AS (INSERT INTO {p} (username, key, claimed_at, applied_at)"
    # A request that writes twice (two commands) keeps its first receipt.
    "  SELECT u, k, c, now() FROM live ON CONFLICT DO NOTHING)"
    " SELECT count(*) FROM live").format(p=_APPLIED, still_claimed=_still_claimed("r")
                                         ).as_bytes()


@dataclass(frozen=True)
class Replay:
    """What an earlier request with the same key got (status None: still in flight, or its
    answer lost; ``applied_at``: when it stored its events, if it did)."""

    request_sha256: str
    status: int | None
    body: Any
    applied_at: datetime | None = None


@dataclass(frozen=True)
class Applied:
    """The receipt of the claim of ``key`` made at ``claimed_at``: its request's events are
    stored. The event recorder writes it in their transaction (an item of
    :data:`domain.group_commit.RECEIPTS`, an :class:`infra.recorder.Receipt`)."""

    username: str
    key: str
    claimed_at: datetime

    @classmethod
    def record_all(cls, curs: psycopg.Cursor[Any], receipts: Sequence[Applied]) -> None:
        """Store ``receipts``, in the transaction of the events they vouch for."""
        unique = list(dict.fromkeys(receipts))  # one statement may not name a row twice
        curs.execute(_RECORD_APPLIED, ([a.username for a in unique], [a.key for a in unique],
                                       [a.claimed_at for a in unique]),
                     prepare=PLANNED_EACH_TIME)

    @classmethod
    def confirm_all(cls, curs: psycopg.Cursor[Any], receipts: Sequence[Applied]) -> None:
        """Refuse the write (:class:`IntegrityError`: nothing is stored) if a claim it
        vouches for was taken over meanwhile."""
        row = curs.fetchone()
        if row is None or row[0] != len(set(receipts)):
            raise IntegrityError("an Idempotency-Key of this write was taken over by a retry "
                                 "after its lease ran out")


@dataclass(frozen=True)
class Claimed:
    """The key is this request's now, claimed at ``at`` (its answer names the claim so)."""

    at: datetime


def request_digest(method: str, path: str, body: bytes) -> str:
    """SHA-256 of what a request asked for; a key reused for another request is refused."""
    return hashlib.sha256(method.encode() + b" " + path.encode() + b"\n" + body).hexdigest()


class IdempotencyStore:
    """``trialledger.idempotency``: one claim per (person, key);
    ``trialledger.idempotency_answers``: the answer each claim got, in a row of its own.

    An answer is inserted, never written over its claim: updating the claim's row (as
    earlier versions did; the answers they stored so stay readable, in the claim's
    ``status``, ``body`` and ``completed_at``) made PostgreSQL write a new version of the
    row beside the claims being inserted, and cost the keyed write path a tenth of its rate
    (``bench/http_bench.py --idempotency-keys``: 0.66 -> 0.74 x the bare endpoint).
    """

    def __init__(self) -> None:
        self._table = _CLAIMS
        self._answers = SQL("{}.idempotency_answers").format(Identifier(CATALOG_SCHEMA))
        # When the claim ``k`` was answered (None: not yet): by a row of its own, or in the
        # claim's row by an earlier version.
        answered_at = SQL(
            "COALESCE(k.completed_at, (SELECT a.completed_at FROM {a} AS a WHERE {j}))"
        ).format(a=self._answers, j=_ANSWERS_CLAIM)
        # Composed once: each keyed request runs a claim and a completion, and the claims
        # (answers) of concurrent requests share one statement (see infra.key_claims). Their
        # arrays are sent in binary (%b): as text, psycopg escapes each element with a
        # regular expression, which cost a third of the key claims' thread.
        # A claim's commit does not wait for its WAL flush (synchronous_commit off for its
        # own transaction, one statement): nothing is acknowledged on the strength of a claim
        # alone. Its request's events commit after it and wait for their flush, which
        # covers the claim's earlier WAL; a claim lost in a crash before that lost nothing
        # but itself, and the retry claims the key again.
        self._claim = SQL(
            "INSERT INTO {t} AS k (username, key, request_sha256, claimed_at)"
            " SELECT c.u, c.k, c.d, %(now)s"
            " FROM unnest(%(u)b::text[], %(k)b::text[], %(d)b::text[]) AS c(u, k, d),"
            "  (SELECT set_config('synchronous_commit', 'off', true)) AS async_commit"
            " ON CONFLICT (username, key) DO UPDATE SET request_sha256 = EXCLUDED.request_sha256,"
            "  status = NULL, body = NULL, claimed_at = EXCLUDED.claimed_at, completed_at = NULL"
            # An answer that has expired, a write (unanswered) as long ago, or (neither) a
            # claim whose request died before writing.
            " WHERE COALESCE({answered_at} < %(expired)s, {applied_at} < %(expired)s,"
            "  k.claimed_at < %(abandoned)s)"
            " RETURNING k.username, k.key").format(t=self._table, answered_at=answered_at,
                                                   applied_at=_APPLIED_AT).as_bytes()
        # Each key's claim looked up by the primary key (the LIMIT keeps the planner from
        # making it a join; see PLANNED_EACH_TIME).
        self._claimed = SQL(
            "SELECT k.username, k.key, k.request_sha256, COALESCE(a.status, k.status),"
            " COALESCE(a.body, k.body::text), {applied_at}"
            " FROM unnest(%s::text[], %s::text[]) AS r(u, k) CROSS JOIN LATERAL"
            " (SELECT * FROM {t} AS c WHERE c.username = r.u AND c.key = r.k LIMIT 1) AS k"
            " LEFT JOIN {a} AS a ON {j}"
        ).format(t=self._table, a=self._answers, j=_ANSWERS_CLAIM, applied_at=_APPLIED_AT
                 ).as_bytes()
        # The answer names the claim it answers by the claim's time (a key taken over after
        # its answer expired, or its request's lease, is claimed anew, at a later time).
        self._complete = SQL(
            "INSERT INTO {a} (username, key, claimed_at, status, body, completed_at)"
            " SELECT n.u, n.k, n.c, n.s, n.b, %s"
            " FROM unnest(%b::text[], %b::text[], %b::timestamptz[], %b::int[], %b::text[])"
            "  AS n(u, k, c, s, b)"
            # Only the claim it answers: a claim taken over meanwhile keeps its own answer.
            " WHERE {still_claimed} ON CONFLICT DO NOTHING").format(
            a=self._answers, still_claimed=_still_claimed("n")).as_bytes()
        # A request that failed after its events were stored keeps its claim: run again, it
        # would write them twice.
        self._release = SQL(
            "DELETE FROM {t} AS k WHERE username = %(u)s AND key = %(k)s AND status IS NULL"
            " AND (%(c)s::timestamptz IS NULL OR claimed_at = %(c)s)"
            " AND NOT EXISTS (SELECT FROM {a} AS a WHERE {j})"
            " AND NOT EXISTS (SELECT FROM {p} AS p WHERE {jp})"
        ).format(t=self._table, a=self._answers, j=_ANSWERS_CLAIM, p=_APPLIED,
                 jp=_APPLIED_CLAIM).as_bytes()

    def create_table(self, conn: psycopg.Connection[Any]) -> None:
        """Create the tables if missing."""
        conn.execute(SQL("CREATE SCHEMA IF NOT EXISTS {}").format(Identifier(CATALOG_SCHEMA)))
        conn.execute(SQL(
            "CREATE TABLE IF NOT EXISTS {} (username text NOT NULL, key text NOT NULL,"
            " request_sha256 text NOT NULL, status integer, body jsonb,"
            " claimed_at timestamptz NOT NULL, completed_at timestamptz,"
            " PRIMARY KEY (username, key))").format(self._table))
        # The body as the JSON text it was stored as (read back only by a replay).
        conn.execute(SQL(
            "CREATE TABLE IF NOT EXISTS {} (username text NOT NULL, key text NOT NULL,"
            " claimed_at timestamptz NOT NULL, status integer NOT NULL, body text NOT NULL,"
            " completed_at timestamptz NOT NULL, PRIMARY KEY (username, key, claimed_at))"
        ).format(self._answers))
        conn.execute(SQL(
            "CREATE TABLE IF NOT EXISTS {} (username text NOT NULL, key text NOT NULL,"
            " claimed_at timestamptz NOT NULL, applied_at timestamptz NOT NULL,"
            " PRIMARY KEY (username, key, claimed_at))").format(_APPLIED))

    def forget_mentions(self, conn: psycopg.Connection[Any], needles: list[str]) -> int:
        """Delete the stored answers mentioning any of ``needles`` (the records of a
        redaction: a replayed answer must not show a redacted value), with their claims
        (their keys are free again); return how many."""
        if not needles:
            return 0
        mentions = SQL("EXISTS (SELECT 1 FROM unnest(%(n)s::text[]) AS n"
                       " WHERE strpos({}, n) > 0)")
        with conn.transaction():
            answered = conn.execute(SQL(
                "DELETE FROM {a} AS a WHERE {m} RETURNING username, key, claimed_at").format(
                a=self._answers, m=mentions.format(SQL("a.body"))), {"n": needles}).fetchall()
            if answered:
                for table in (self._table, _APPLIED):
                    conn.execute(SQL(
                        "DELETE FROM {t} WHERE (username, key, claimed_at) IN"
                        " (SELECT * FROM unnest(%s::text[], %s::text[], %s::timestamptz[]))"
                    ).format(t=table), ([r[0] for r in answered], [r[1] for r in answered],
                                        [r[2] for r in answered]))
            earlier = conn.execute(SQL(
                "DELETE FROM {t} WHERE body IS NOT NULL AND {m}").format(
                t=self._table, m=mentions.format(SQL("body::text"))), {"n": needles}).rowcount
        return len(answered) + earlier

    def purge_expired(self, conn: psycopg.Connection[Any], now: datetime,
                      limit: int = PURGE_BATCH) -> int:
        """Delete up to ``limit`` keys whose answer expired (or whose claim was left
        unanswered for as long), with their answers and receipts, and answers and receipts
        whose claim was taken over long ago; return how many rows went. Nothing expired is
        replayed anyway: this only keeps the tables from growing with every keyed write, for
        ever."""
        expired = now - KEY_TTL
        with conn.transaction():
            answers = conn.execute(SQL(
                "DELETE FROM {a} WHERE ctid IN (SELECT ctid FROM {a} WHERE completed_at < %s"
                " LIMIT %s)").format(a=self._answers), (expired, limit)).rowcount
            receipts = conn.execute(SQL(
                "DELETE FROM {p} WHERE ctid IN (SELECT ctid FROM {p} WHERE applied_at < %s"
                " LIMIT %s)").format(p=_APPLIED), (expired, limit)).rowcount
            # A claim goes once its answer (of either kind) expired, or, unanswered, once it
            # is as old: an answer within the day names a claim of the day.
            claims = conn.execute(SQL(
                "DELETE FROM {t} WHERE ctid IN (SELECT k.ctid FROM {t} AS k"
                " WHERE COALESCE(k.completed_at, k.claimed_at) < %(expired)s"
                " AND NOT EXISTS (SELECT FROM {a} AS a WHERE {j}"
                "  AND a.completed_at >= %(expired)s)"
                " AND NOT EXISTS (SELECT FROM {p} AS p WHERE {jp}"
                "  AND p.applied_at >= %(expired)s) LIMIT %(limit)s)").format(
                t=self._table, a=self._answers, j=_ANSWERS_CLAIM, p=_APPLIED, jp=_APPLIED_CLAIM),
                {"expired": expired, "limit": limit}).rowcount
        return answers + receipts + claims

    def claim(self, conn: psycopg.Connection[Any], username: str, key: str,
              request_sha256: str) -> Replay | Claimed:
        """Claim the key for this request: :class:`Claimed` if claimed now, else the earlier
        request."""
        return self.claim_many(conn, [(username, key, request_sha256)])[0]

    def claim_many(self, conn: psycopg.Connection[Any], claims: Sequence[tuple[str, str, str]]
                   ) -> list[Replay | Claimed]:
        """:meth:`claim` for each (person, key, request digest), in few statements; a key
        given twice is claimed by the first and replayed (in flight) to the second."""
        outcome: dict[int, Replay | Claimed] = {}
        pending = list(range(len(claims)))
        while pending:
            # One statement may not claim a key twice: a repeat waits for the next round.
            first: dict[tuple[str, str], int] = {}
            for n in pending:
                first.setdefault(claims[n][:2], n)
            now_claiming = list(first.values())
            claiming = set(now_claiming)
            pending = [n for n in pending if n not in claiming]
            now = datetime.now(UTC)
            # A new key, an expired answer, or a claim whose request died: this request's now.
            claimed = {(row[0], row[1]) for row in conn.execute(self._claim, {
                "u": [claims[n][0] for n in now_claiming],
                "k": [claims[n][1] for n in now_claiming],
                "d": [claims[n][2] for n in now_claiming], "now": now,
                "expired": now - KEY_TTL, "abandoned": now - LEASE}).fetchall()}
            taken = [n for n in now_claiming if claims[n][:2] not in claimed]
            for n in now_claiming:
                if claims[n][:2] in claimed:
                    outcome[n] = Claimed(now)
            if taken:
                rows = {(row[0], row[1]): Replay(
                            row[2], row[3], None if row[4] is None else orjson.loads(row[4]),
                            row[5])
                        for row in conn.execute(self._claimed, (
                            [claims[n][0] for n in taken], [claims[n][1] for n in taken]),
                            prepare=PLANNED_EACH_TIME)}
                for n in taken:
                    replay = rows.get(claims[n][:2])
                    if replay is None:  # released by its failed request just now: again
                        pending.append(n)
                    else:
                        outcome[n] = replay
        return [outcome[n] for n in range(len(claims))]

    def complete(self, conn: psycopg.Connection[Any], username: str, key: str,
                 claimed: Claimed, status: int, body: Any) -> None:
        """Record the response the request that ``claimed`` the key got."""
        self.complete_many(conn, [(username, key, claimed, status, body)])

    def complete_many(self, conn: psycopg.Connection[Any],
                      answers: Sequence[tuple[str, str, Claimed, int, Any]]) -> None:
        """:meth:`complete` for each (person, key, claim, status, body), in one statement."""
        conn.execute(self._complete, (
            datetime.now(UTC), [a[0] for a in answers], [a[1] for a in answers],
            [a[2].at for a in answers], [a[3] for a in answers],
            [orjson.dumps(a[4]).decode() for a in answers]), prepare=PLANNED_EACH_TIME)

    def release(self, conn: psycopg.Connection[Any], username: str, key: str,
                claimed: Claimed | None = None) -> None:
        """Free a claim whose request failed on the server's side, so a retry runs: the one
        ``claimed`` (if given; a claim taken over since is left alone), or whichever is
        unanswered."""
        conn.execute(self._release, {"u": username, "k": key,
                                     "c": None if claimed is None else claimed.at})
