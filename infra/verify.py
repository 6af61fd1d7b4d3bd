"""Online verification of a study: every signature and key, every version chain, every leaf,
every checkpoint's root and signature, and consistency with a checkpoint the caller trusts.

It reads the events exactly as stored and names the first thing that does not hold.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import psycopg
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from psycopg.sql import SQL, Identifier

from infra.catalog import EVENTS_TABLE
from infra.ledger import store
from infra.ledger.checker import EventChecker
from infra.ledger.merkle import Frontier, leaf_hash
from infra.ledger.note import Checkpoint, NoteError, open_note
from infra.ledger.sealer import load_checker, origin
from infra.parallel_verify import Row, checked_in_parallel, raw_keys
from infra.signing import leaf_data


@dataclass(frozen=True)
class BadEvent:
    """The first event (or ledger entry) that failed verification, and why."""

    study: str
    position: int
    originator_id: str
    originator_version: int
    topic: str
    reason: str

    def describe(self) -> str:
        """One line for a person."""
        if not self.originator_id:
            return f"study {self.study}: {self.reason}"
        return (
            f"study {self.study}: event at position {self.position} "
            f"(aggregate {self.originator_id} v{self.originator_version}, {self.topic}): "
            f"{self.reason}"
        )


@dataclass(frozen=True)
class StudyVerification:
    """The outcome of verifying one study."""

    study: str
    events_checked: int
    first_bad: BadEvent | None
    sealed: int = 0
    checkpoints: int = 0

    @property
    def ok(self) -> bool:
        """True when everything holds."""
        return self.first_bad is None


def _ledger_problem(study: str, reason: str) -> BadEvent:
    return BadEvent(study, 0, "", 0, "", reason)


def verify_study(
    conn: psycopg.Connection[Any],
    study: str,
    schema: str,
    public_keys: dict[str, Ed25519PublicKey],
    trusted: Checkpoint | None = None,
    batch_size: int = 2000,
    workers: int = 1,
) -> StudyVerification:
    """Check one study's events and ledger in commit order; stop at the first failure.

    With ``workers`` > 1, signatures and leaf hashes are checked in that many processes.
    """
    checker = load_checker(conn, study, schema, public_keys)
    points = store.checkpoints(conn, schema)
    wanted_roots = {size for size, _, _ in points} | ({trusted.size} if trusted else set())
    roots: dict[int, bytes] = {0: Frontier().root()} if 0 in wanted_roots else {}
    frontier = Frontier()
    checked = 0
    unsealed_from: int | None = None
    query = SQL(
        "SELECT e.notification_id, e.originator_id, e.originator_version, e.topic, e.state, "
        "l.leaf_index, l.leaf_hash FROM {s}.{e} e LEFT JOIN {s}.{l} l "
        "ON l.notification_id = e.notification_id ORDER BY e.notification_id"
    ).format(s=Identifier(schema), e=Identifier(EVENTS_TABLE), l=Identifier(store.LEAVES))
    with conn.transaction(), conn.cursor(name="verify_events") as cursor:
        cursor.itersize = batch_size
        cursor.execute(query)
        for row, signature_ok, computed in _checked(study, cursor, checker, batch_size,
                                                    workers):
            position, oid, version, topic, state, leaf_index, stored_leaf = row
            reason = checker.check(oid, version, topic, state, signature_ok)
            if reason is None:
                reason = _leaf_problem(frontier.size, leaf_index, stored_leaf, unsealed_from,
                                       computed)
            if reason is not None:
                bad = BadEvent(study, position, oid, version, topic, reason)
                return StudyVerification(study, checked, bad, frontier.size, len(points))
            if leaf_index is None:
                unsealed_from = unsealed_from or position
            else:
                frontier.append(bytes(stored_leaf))
                if frontier.size in wanted_roots:
                    roots[frontier.size] = frontier.root()
            checked += 1
    stored_size = store.tree_size(conn, schema)
    if stored_size != frontier.size:
        return StudyVerification(study, checked, _ledger_problem(
            study, f"the ledger has {stored_size} leaves but only {frontier.size} match "
                   "stored events: events were deleted from the end of the log"),
            frontier.size, len(points))
    problem = _checkpoint_problem(study, points, roots, public_keys, checker.registered,
                                  trusted)
    failure = _ledger_problem(study, problem) if problem else None
    return StudyVerification(study, checked, failure, frontier.size, len(points))


def _rows(cursor: Any, batch_size: int) -> Iterator[list[Row]]:
    while batch := cursor.fetchmany(batch_size):
        yield [(p, str(o), v, t, bytes(s), i, h) for p, o, v, t, s, i, h in batch]


def _checked(study: str, cursor: Any, checker: EventChecker, batch_size: int,
             workers: int) -> Iterator[tuple[Row, bool | None, bytes]]:
    """Rows with their signature check (None: let the checker do it) and leaf hash."""
    if workers > 1:
        keys = raw_keys({**checker.anchors, **checker.registered}, checker.mentioned)
        yield from checked_in_parallel(study, keys, _rows(cursor, batch_size), workers)
        return
    for batch in _rows(cursor, batch_size):
        for row in batch:
            _, oid, version, topic, state, _, _ = row
            yield row, None, leaf_hash(leaf_data(study, oid, version, topic, state))


def _leaf_problem(expected_index: int, leaf_index: int | None, stored_leaf: bytes | None,
                  unsealed_from: int | None, computed: bytes) -> str | None:
    if leaf_index is None:
        return None
    if unsealed_from is not None:
        return (f"sealed, but the event at position {unsealed_from} before it is not: "
                "an event was inserted into the sealed log")
    if leaf_index != expected_index:
        return (f"is leaf {leaf_index} but should be leaf {expected_index}: "
                "events before it were deleted or reordered")
    if bytes(stored_leaf or b"") != computed:
        return "does not match its sealed leaf hash (altered after sealing)"
    return None


def _checkpoint_problem(
    study: str,
    points: list[tuple[int, bytes, str]],
    roots: dict[int, bytes],
    anchors: dict[str, Ed25519PublicKey],
    registered: dict[str, Ed25519PublicKey],
    trusted: Checkpoint | None,
) -> str | None:
    keys = {**anchors, **registered}
    for size, root, note in points:
        if size not in roots:
            return (f"checkpoint of size {size} covers more events than the log holds: "
                    "the log's tail was cut off")
        try:
            body = _open_with_any(note, keys)
            signed = Checkpoint.parse(body)
        except NoteError as e:
            return f"checkpoint of size {size}: {e}"
        if signed != Checkpoint(origin(study), size, root) or root != roots[size]:
            return (f"checkpoint of size {size}: its root does not match the root recomputed "
                    "from the events")
    if trusted is not None:
        latest = points[-1][0] if points else 0
        if trusted.origin != origin(study):
            return f"the trusted checkpoint is for {trusted.origin}, not {origin(study)}"
        if latest < trusted.size:
            return (f"rolled back: the latest checkpoint has size {latest}, older than the "
                    f"trusted checkpoint of size {trusted.size}")
        if roots.get(trusted.size) != trusted.root:
            return (f"the log is not consistent with the trusted checkpoint of size "
                    f"{trusted.size}: its first {trusted.size} events were changed")
    return None


def _open_with_any(note: str, keys: dict[str, Ed25519PublicKey]) -> str:
    errors = []
    for key_id, key in keys.items():
        name = key_id.rpartition("+")[0]
        try:
            return open_note(note, name, key)
        except NoteError as e:
            errors.append(str(e))
    forged = [e for e in errors if "does not verify" in e]
    raise NoteError(forged[0] if forged else "no trusted key signed it")
