"""Online verification of a log (a study's, or the directory's): every signature and key,
every version chain, every leaf, every checkpoint's root and signature, the witnesses'
cosignatures, and consistency with the checkpoints the caller holds or remembers.

It reads the events exactly as stored and names the first thing that does not hold.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

import psycopg
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from psycopg.sql import SQL, Identifier

from infra.ledger import store
from infra.ledger.checker import EventChecker
from infra.ledger.cosignature import Cosigner, witnesses_of
from infra.ledger.logs import events_table, label, origin
from infra.ledger.merkle import Frontier, leaf_hash
from infra.ledger.note import Checkpoint, NoteError, open_note
from infra.ledger.sealer import SEAL_INTERVAL, load_checker
from infra.parallel_verify import Row, checked_in_parallel, raw_keys
from infra.signing import SignedState, leaf_data

# An event still unsealed this long after it was recorded is missing from the ledger: the
# server seals every SEAL_INTERVAL seconds (a leaf removed, or no sealer running).
UNSEALED_GRACE = timedelta(seconds=2 * SEAL_INTERVAL)


@dataclass(frozen=True)
class Witnessing:
    """Which witnesses a verification requires, and how many of them (the quorum)."""

    cosigners: list[Cosigner] = field(default_factory=list)
    quorum: int = 0


@dataclass(frozen=True)
class BadEvent:
    """The first event (or ledger entry) that failed verification, and why."""

    study: str  # the log: a study id, or the directory's (see infra.ledger.logs)
    position: int
    originator_id: str
    originator_version: int
    topic: str
    reason: str

    def describe(self) -> str:
        """One line for a person."""
        if not self.originator_id:
            return f"{label(self.study)}: {self.reason}"
        return (
            f"{label(self.study)}: event at position {self.position} "
            f"(aggregate {self.originator_id} v{self.originator_version}, {self.topic}): "
            f"{self.reason}"
        )


@dataclass(frozen=True)
class StudyVerification:
    """The outcome of verifying one log (a study's, or the directory's)."""

    study: str
    events_checked: int
    first_bad: BadEvent | None
    sealed: int = 0
    checkpoints: int = 0
    latest: Checkpoint | None = None
    witnessed: Checkpoint | None = None
    witnessed_by: tuple[str, ...] = ()

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
    *,
    remembered: Checkpoint | None = None,
    remembered_witnessed: Checkpoint | None = None,
    witnessing: Witnessing | None = None,
    now: datetime | None = None,
) -> StudyVerification:
    """Check one study's events and ledger in commit order; stop at the first failure.

    ``study`` names the log: a study id, or :data:`infra.ledger.logs.DIRECTORY_LOG` for the
    directory's (in the catalogue's schema).

    ``trusted`` is a checkpoint the caller holds, ``remembered`` (and
    ``remembered_witnessed``) the newest (witnessed) checkpoint this verifier verified before:
    the log must extend each, and its witnessed checkpoints must reach the remembered one.
    With ``witnessing``, every stored witnessed checkpoint must carry the quorum of valid
    cosignatures. With ``now``, an event recorded more than :data:`UNSEALED_GRACE` before it
    must be sealed. With ``workers`` > 1, signatures and leaf hashes are checked in that many
    processes.
    """
    checker = load_checker(conn, study, schema, public_keys)
    points = store.checkpoints(conn, schema)
    witnessed = store.cosigned(conn, schema)
    held = [c for c in (remembered, remembered_witnessed, trusted) if c is not None]
    wanted_roots = ({size for size, _, _ in points} | {size for size, _ in witnessed}
                    | {h.size for h in held})
    roots: dict[int, bytes] = {0: Frontier().root()} if 0 in wanted_roots else {}
    frontier = Frontier()
    checked = 0
    unsealed_from: int | None = None
    overdue = now - UNSEALED_GRACE if now else None
    query = SQL(
        "SELECT e.notification_id, e.originator_id, e.originator_version, e.topic, e.state, "
        "l.leaf_index, l.leaf_hash FROM {s}.{e} e LEFT JOIN {s}.{l} l "
        "ON l.notification_id = e.notification_id ORDER BY e.notification_id"
    ).format(s=Identifier(schema), e=Identifier(events_table(study)),
             l=Identifier(store.LEAVES))
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
            if reason is None and leaf_index is None and overdue is not None:
                reason = _unsealed_problem(state, overdue)
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
    keys = {**public_keys, **checker.registered}
    failure = _checkpoint_failure(conn, study, schema, points, roots, keys)
    latest = (Checkpoint(origin(study), points[-1][0], points[-1][1]) if points else None)
    witness = _witnessed(study, witnessed, roots, keys, witnessing or Witnessing())
    if failure is None and isinstance(witness, str):
        failure = _ledger_problem(study, witness)
    newest_witnessed, by = witness if isinstance(witness, tuple) else (None, ())
    if failure is None:
        problem = (_held_problem(study, latest, roots, held, trusted)
                   or _witness_rollback(newest_witnessed, remembered_witnessed))
        failure = _ledger_problem(study, problem) if problem else None
    return StudyVerification(study, checked, failure, frontier.size, len(points), latest,
                             newest_witnessed, by)


def _unsealed_problem(state: bytes, overdue: datetime) -> str | None:
    """Why an unsealed event should have been sealed by now, or None."""
    recorded_at = SignedState.unpack(state).recorded_at
    if datetime.fromisoformat(recorded_at) >= overdue:
        return None
    return (f"recorded at {recorded_at}, more than two sealing rounds "
            f"({UNSEALED_GRACE.total_seconds():g} s) ago, and not sealed: its leaf was "
            "removed, or no sealer ran (`trialledger seal`)")


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


def _checkpoint_failure(conn: psycopg.Connection[Any], study: str, schema: str,
                        points: list[tuple[int, bytes, str]], roots: dict[int, bytes],
                        keys: dict[str, Ed25519PublicKey]) -> BadEvent | None:
    """The first checkpoint that is cut off, unsigned or not the root of the events; a root
    that differs names the first event out of place when the stored tree shows it."""
    for size, root, note in points:
        if size not in roots:
            return _ledger_problem(study, f"checkpoint of size {size} covers more events than "
                                          "the log holds: the log's tail was cut off")
        try:
            signed = Checkpoint.parse(_open_with_any(note, keys))
        except NoteError as e:
            return _ledger_problem(study, f"checkpoint of size {size}: {e}")
        if signed != Checkpoint(origin(study), size, root) or root != roots[size]:
            return (_misplaced_event(conn, study, schema, size)
                    or _ledger_problem(study, f"checkpoint of size {size}: its root does not "
                                              "match the root recomputed from the events"))
    return None


def _misplaced_event(conn: psycopg.Connection[Any], study: str, schema: str,
                     size: int) -> BadEvent | None:
    """The event at the first leaf (below ``size``) whose hash differs from the leaf the
    tree's stored nodes were built from: events moved or replaced together with their
    leaves."""
    row = conn.execute(SQL(
        "SELECT l.leaf_index, e.notification_id, e.originator_id, e.originator_version, "
        "e.topic FROM {s}.{l} l JOIN {s}.{n} n ON n.level = 0 AND n.idx = l.leaf_index "
        "JOIN {s}.{e} e ON e.notification_id = l.notification_id "
        "WHERE l.leaf_index < %s AND n.hash <> l.leaf_hash ORDER BY l.leaf_index LIMIT 1"
    ).format(s=Identifier(schema), l=Identifier(store.LEAVES), n=Identifier(store.NODES),
             e=Identifier(events_table(study))), (size,)).fetchone()
    if row is None:
        return None
    index, position, oid, version, topic = row
    return BadEvent(study, int(position), str(oid), int(version), str(topic),
                    f"out of place: leaf {index} of the checkpoint of size {size} was sealed "
                    "from another event (events reordered or replaced with their leaves)")


def _witnessed(study: str, witnessed: list[tuple[int, str]], roots: dict[int, bytes],
               keys: dict[str, Ed25519PublicKey],
               witnessing: Witnessing) -> tuple[Checkpoint | None, tuple[str, ...]] | str:
    """The newest witnessed checkpoint and its witnesses, or what is wrong with one."""
    newest: tuple[Checkpoint | None, tuple[str, ...]] = (None, ())
    for size, note in witnessed:
        try:
            signed = Checkpoint.parse(_open_with_any(note, keys))
            by = tuple(witnesses_of(note, witnessing.cosigners))
        except NoteError as e:
            return f"witnessed checkpoint of size {size}: {e}"
        if signed != Checkpoint(origin(study), size, roots.get(size, b"")):
            return (f"witnessed checkpoint of size {size}: its root does not match the root "
                    "recomputed from the events")
        if len(by) < witnessing.quorum:
            return (f"witnessed checkpoint of size {size} carries {len(by)} valid "
                    f"cosignatures of the {witnessing.quorum} required")
        newest = (signed, by)
    return newest


def _held_problem(study: str, latest: Checkpoint | None, roots: dict[int, bytes],
                  held: list[Checkpoint], trusted: Checkpoint | None) -> str | None:
    """Why the log does not extend a checkpoint held or remembered, or None."""
    for checkpoint in held:
        what = ("the checkpoint you hold" if checkpoint is trusted
                else "the checkpoint this verifier verified before")
        if checkpoint.origin != origin(study):
            return f"{what} is for {checkpoint.origin}, not {origin(study)}"
        latest_size = latest.size if latest else 0
        if latest_size < checkpoint.size:
            return (f"rolled back: the latest checkpoint has size {latest_size}, older than "
                    f"{what} (size {checkpoint.size})")
        if roots.get(checkpoint.size) != checkpoint.root:
            return (f"forked: the log is not consistent with {what} (size {checkpoint.size}): "
                    f"its first {checkpoint.size} events were changed")
    return None


def _witness_rollback(witnessed: Checkpoint | None,
                      remembered: Checkpoint | None) -> str | None:
    """Why the witnessed checkpoints fall short of the one this verifier saw, or None."""
    size = witnessed.size if witnessed else 0
    if remembered is None or size >= remembered.size:
        return None
    return (f"rolled back: the newest witnessed checkpoint has size {size}, older than the "
            f"witnessed checkpoint this verifier verified before (size {remembered.size})")


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
