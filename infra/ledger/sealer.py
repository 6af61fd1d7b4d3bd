"""The sealer: follows a log's events (a study's, or the directory's) in commit order and
appends each as a Merkle leaf.

It checks every event's signature and key before sealing it, and never seals past a bad one.
The leaves table is its own tracking record: the next event to seal is the one after the
highest sealed position, and leaves, nodes and checkpoints commit in one transaction, so a
sealer stopped at any point resumes exactly where it left off.
"""

from __future__ import annotations

import base64
import json
from dataclasses import dataclass
from typing import Any

import psycopg
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from psycopg.sql import SQL, Identifier

from infra.ledger import store
from infra.ledger.checker import KEY_REGISTERED, KEY_RETIRED, KEY_REVOKED, EventChecker
from infra.ledger.checker import revocation_from_payload as _revocation
from infra.ledger.logs import events_table, label, origin
from infra.ledger.merkle import Frontier, consistency_proof, leaf_hash, verify_consistency
from infra.ledger.note import Checkpoint, sign_note
from infra.signers import Signer
from infra.signing import SignedState, key_id_for, leaf_data

# The server's cadence (application/sealing.py), here so that the command line can show it
# without importing the server: seconds between sealing rounds, and the default longest wait, in
# seconds, from an event's commit to a signed checkpoint covering it (plus the time a round
# takes). Checkpoints also come every CHECKPOINT_EVERY events.
SEAL_INTERVAL = 2.0
CHECKPOINT_INTERVAL = 5.0
CHECKPOINT_EVERY = 1000


class SealingRefused(RuntimeError):
    """An event failed its checks; nothing from it on was sealed."""


@dataclass(frozen=True)
class SealResult:
    """What one sealing run did."""

    sealed: int
    tree_size: int
    checkpoint_size: int | None


def load_checker(conn: psycopg.Connection[Any], log: str, schema: str,
                 anchors: dict[str, Ed25519PublicKey], upto: int | None = None) -> EventChecker:
    """A checker that knows every key event of the log (up to position ``upto`` for replay)."""
    checker = EventChecker(log, anchors)
    rows = conn.execute(
        SQL("SELECT topic, state FROM {}.{} WHERE topic = ANY(%s) ORDER BY notification_id")
        .format(Identifier(schema), Identifier(events_table(log))),
        ([*KEY_REGISTERED, *KEY_RETIRED, *KEY_REVOKED],),
    ).fetchall()
    for topic, state in rows:
        try:
            _remember_key_event(checker, topic, SignedState.unpack(bytes(state)).payload)
        except (ValueError, KeyError):
            continue  # a malformed key event is reported by the main pass
    return checker


def _remember_key_event(checker: EventChecker, topic: str, payload: bytes) -> None:
    """What a key event tells the checks of every event, sealed or not: a revocation's
    effective time, a registered key's bytes. Raises ValueError/KeyError when malformed."""
    if topic in KEY_REVOKED:
        key_id, effective = _revocation(payload)
        checker.revocations[key_id] = effective
    elif topic in KEY_REGISTERED:
        data = json.loads(payload)
        checker.mentioned[str(data["key_id"])] = base64.b64decode(data["public_key"])


class SealerMemory:
    """What a sealer learnt of each log it follows (its checker, and how far it has read the
    log's key events), kept between batches and rounds so that sealing N new events costs
    O(N) however long the log (rebuilding it reads the whole log).

    Another sealer may seal between two of ours (the advisory lock is per transaction): a
    checker is handed back only for the tree it was left at (its size and last sealed
    position), else it is rebuilt. It is taken out for a transaction and put back only once
    that transaction committed, so a rolled-back one never leaves it ahead of the database.
    Safe across threads: a checker is in one transaction's hands at a time (dict pop and set
    are atomic).
    """

    def __init__(self) -> None:
        self._kept: dict[str, tuple[tuple[int, int], _Follower]] = {}

    def take(self, log: str, extent: tuple[int, int]) -> _Follower | None:
        """The log's follower if it was left at ``extent`` (tree size, last sealed position);
        then it is no longer kept."""
        kept = self._kept.pop(log, None)
        return kept[1] if kept is not None and kept[0] == extent else None

    def keep(self, log: str, extent: tuple[int, int], follower: _Follower) -> None:
        """Remember ``follower``, valid while the log's tree is at ``extent``."""
        self._kept[log] = (extent, follower)


@dataclass
class _Follower:
    """A checker up to the end of the sealed log, and the position up to which the log's key
    events (revocations and registrations, sealed or not) have been read into it."""

    checker: EventChecker
    keys_read_to: int


def seal(
    conn: psycopg.Connection[Any],
    log: str,
    schema: str,
    anchors: dict[str, Ed25519PublicKey],
    private_key: Signer,
    key_name: str,
    *,
    checkpoint_every: int = CHECKPOINT_EVERY,
    force_checkpoint: bool = False,
    batch_size: int = 5000,
    memory: SealerMemory | None = None,
) -> SealResult:
    """Seal every event of ``log`` (a study id, or the directory's log) not yet sealed; write a
    checkpoint when due (or when forced). ``memory`` carries the checker from one call to the
    next (a sealer's rounds); without it, it lasts this call's batches."""
    memory = memory if memory is not None else SealerMemory()
    sealed = 0
    checkpoint_size: int | None = None
    while True:
        with conn.transaction():
            # One sealer per log at a time; a second waits, then sees the first's leaves.
            conn.execute("SELECT pg_advisory_xact_lock(hashtext(%s))", (schema,))
            size, last_position = store.sealed_extent(conn, schema)
            nodes = store.node_source(conn, schema)
            frontier = Frontier.load(nodes, size)
            follower = memory.take(log, (size, last_position))
            if follower is None:
                follower = _Follower(EventChecker(log, anchors), 0)
            follower.checker.anchors = anchors
            _read_key_events(conn, log, schema, follower, last_position)
            checker = follower.checker
            rows = conn.execute(
                SQL("SELECT notification_id, originator_id, originator_version, topic, state "
                    "FROM {}.{} WHERE notification_id > %s ORDER BY notification_id LIMIT %s")
                .format(Identifier(schema), Identifier(events_table(log))),
                (last_position, batch_size),
            ).fetchall()
            _read_last_versions(conn, log, schema, checker, {row[1] for row in rows},
                                last_position)
            leaves: list[tuple[int, int, bytes]] = []
            node_rows: list[tuple[int, int, bytes]] = []
            failure: str | None = None
            for position, oid, version, topic, state in rows:
                state = bytes(state)
                reason = checker.check(str(oid), version, topic, state)
                if reason is not None:
                    failure = f"event at position {position}: {reason}"
                    break
                h = leaf_hash(leaf_data(log, str(oid), version, topic, state))
                leaves.append((frontier.size, position, h))
                node_rows.extend(frontier.append(h))
            _insert(conn, schema, leaves, node_rows)
            sealed += len(leaves)
            # Only the newest: with a checkpoint every few seconds, reading them all each
            # round would grow with the log's age.
            last = store.latest_checkpoint(conn, schema)
            last_size = last[0] if last else 0
            due = frontier.size - last_size >= checkpoint_every
            done = failure is not None or len(rows) < batch_size
            if frontier.size > last_size and (due or (force_checkpoint and done)):
                _checkpoint(conn, log, schema, frontier, last, private_key, key_name)
                checkpoint_size = frontier.size
        # Committed: the checker now matches the sealed log (a refused event taught it nothing).
        memory.keep(log, (frontier.size, leaves[-1][1] if leaves else last_position), follower)
        if failure is not None:
            raise SealingRefused(f"{label(log)}: {failure}; sealed up to the event before it")
        if done:
            return SealResult(sealed, frontier.size, checkpoint_size)


def _read_key_events(conn: psycopg.Connection[Any], log: str, schema: str,
                     follower: _Follower, sealed_to: int) -> None:
    """Bring the follower's key knowledge up to the log's end: every revocation and every
    mentioned key (a revocation invalidates what the key signed after the compromise, even
    earlier in the log), and the registrations and retirements already sealed (those after
    ``sealed_to`` the checker learns as it checks them). Reads only the events after those
    read before: the whole log once, when the follower is new."""
    events = Identifier(events_table(log))
    end_row = conn.execute(SQL("SELECT coalesce(max(notification_id), 0) FROM {}.{}")
                           .format(Identifier(schema), events)).fetchone()
    end = int(end_row[0]) if end_row else 0
    if end <= follower.keys_read_to:
        return
    rows = conn.execute(
        SQL("SELECT notification_id, topic, state FROM {}.{} WHERE notification_id > %s "
            "AND notification_id <= %s AND topic = ANY(%s) ORDER BY notification_id")
        .format(Identifier(schema), events),
        (follower.keys_read_to, end, [*KEY_REGISTERED, *KEY_RETIRED, *KEY_REVOKED]),
    ).fetchall()
    checker = follower.checker
    for position, topic, state in rows:
        try:
            payload = SignedState.unpack(bytes(state)).payload
            if position <= sealed_to and topic not in KEY_REVOKED:
                checker.learn(topic, payload)  # sealed, so it passed its checks
            _remember_key_event(checker, topic, payload)
        except (ValueError, KeyError):
            continue  # a malformed key event is refused when it is checked
    follower.keys_read_to = end


def _read_last_versions(conn: psycopg.Connection[Any], log: str, schema: str,
                        checker: EventChecker, originators: set[Any], sealed_to: int) -> None:
    """Tell the checker the last sealed version of each of ``originators`` it does not know
    yet: one query on the (originator, version) key for the batch's new ones only."""
    unknown = [oid for oid in originators if str(oid) not in checker.last_version]
    if not unknown:
        return
    rows = conn.execute(
        SQL("SELECT originator_id, max(originator_version) FROM {}.{} "
            "WHERE originator_id = ANY(%s) AND notification_id <= %s GROUP BY originator_id")
        .format(Identifier(schema), Identifier(events_table(log))),
        (unknown, sealed_to),
    ).fetchall() if sealed_to else []
    found = {str(oid): int(version) for oid, version in rows}
    for oid in unknown:
        checker.last_version[str(oid)] = found.get(str(oid), 0)


def _insert(conn: psycopg.Connection[Any], schema: str, leaves: list[tuple[int, int, bytes]],
            nodes: list[tuple[int, int, bytes]]) -> None:
    with conn.cursor() as cur:
        with cur.copy(SQL("COPY {}.{} (leaf_index, notification_id, leaf_hash) FROM STDIN")
                      .format(Identifier(schema), Identifier(store.LEAVES))) as copy:
            for row in leaves:
                copy.write_row(row)
        with cur.copy(SQL("COPY {}.{} (level, idx, hash) FROM STDIN")
                      .format(Identifier(schema), Identifier(store.NODES))) as copy:
            for row in nodes:
                copy.write_row(row)


def _checkpoint(conn: psycopg.Connection[Any], log: str, schema: str, frontier: Frontier,
                previous: tuple[int, bytes, str] | None, private_key: Signer,
                key_name: str) -> None:
    root = frontier.root()
    if previous is not None:
        # Never sign a checkpoint inconsistent with the last one signed.
        old_size, old_root, _ = previous
        proof = consistency_proof(store.node_source(conn, schema), old_size, frontier.size)
        if not verify_consistency(old_size, frontier.size, old_root, root, proof):
            raise SealingRefused(f"{label(log)}: new tree of size {frontier.size} is not "
                                 f"consistent with the checkpoint of size {old_size}")
    body = Checkpoint(origin(log), frontier.size, root).body()
    note = sign_note(body, key_name, private_key)
    conn.execute(
        SQL("INSERT INTO {}.{} (tree_size, root, note, key_id) VALUES (%s, %s, %s, %s)")
        .format(Identifier(schema), Identifier(store.CHECKPOINTS)),
        (frontier.size, root, note, key_id_for(key_name, private_key.public_key())),
    )
