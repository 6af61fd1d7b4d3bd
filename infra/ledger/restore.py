"""Loading a study's ledger from a bundle into an empty schema, byte for byte: the events
with their notification ids (positions) and stored state (payload, signature, key id,
``recorded_at``), the leaves, the complete-subtree nodes (recomputed from the leaves), the
signed checkpoints and, for a witnessed bundle, the cosigned ones.

Nothing is re-signed or re-encoded: what the offline verifier checked is what is stored. The
caller verifies the bundle first (:mod:`trialledger_verifier.bundle`); this module only copies it.
"""

from __future__ import annotations

import base64
import io
import json
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import psycopg
from psycopg.sql import SQL, Identifier, Literal

from infra.catalog import EVENTS_TABLE
from infra.ledger import store
from infra.ledger.cosignature import split_note
from infra.ledger.merkle import Frontier
from infra.ledger.note import SIGNATURE_PREFIX, Checkpoint

# A C2SP Ed25519 note signature decodes to a 4-byte key hash and a 64-byte signature; a
# witness's cosignature/v1 line carries an 8-byte timestamp more.
_NOTE_SIGNATURE_BYTES = 4 + 64


class TargetNotEmpty(Exception):
    """The study already holds events (or ledger entries) in this database."""


@dataclass(frozen=True)
class LoadedLedger:
    """What was copied into the database."""

    events: int
    leaves: int
    checkpoints: int
    cosigned: int


def _lines(bundle: zipfile.ZipFile, name: str) -> Iterator[dict[str, Any]]:
    with bundle.open(name) as member:
        for line in io.TextIOWrapper(member, encoding="utf-8"):
            yield json.loads(line)


def holds_events(conn: psycopg.Connection[Any], schema: str) -> bool:
    """True if ``schema`` has an events table with any event in it."""
    table = conn.execute("SELECT to_regclass(%s)", (f'"{schema}"."{EVENTS_TABLE}"',)).fetchone()
    if table is None or table[0] is None:
        return False
    return conn.execute(SQL("SELECT 1 FROM {}.{} LIMIT 1").format(
        Identifier(schema), Identifier(EVENTS_TABLE))).fetchone() is not None


def load_ledger(conn: psycopg.Connection[Any], schema: str, bundle: zipfile.ZipFile
                ) -> LoadedLedger:
    """Copy the bundle's ledger into ``schema`` (its events and ledger tables exist) in one
    transaction; raise :class:`TargetNotEmpty`, storing nothing, if the study holds any
    event or leaf already."""
    s = Identifier(schema)
    events = SQL("{}.{}").format(s, Identifier(EVENTS_TABLE))
    with conn.transaction():
        # The writers' own lock: no event can be appended while the copy runs.
        conn.execute(SQL("LOCK TABLE {} IN EXCLUSIVE MODE").format(events))
        for table in (events, SQL("{}.{}").format(s, Identifier(store.LEAVES))):
            if conn.execute(SQL("SELECT 1 FROM {} LIMIT 1").format(table)).fetchone():
                raise TargetNotEmpty(f"schema {schema} already holds events or leaves")
        count = _copy_events(conn, events, bundle)
        if count:
            # New events carry on after the restored positions, as they did at the source.
            conn.execute(SQL("SELECT setval(pg_get_serial_sequence({}, 'notification_id'), "
                             "(SELECT max(notification_id) FROM {}))").format(
                Literal(f'"{schema}"."{EVENTS_TABLE}"'), events))
        leaves = _copy_leaves(conn, schema, bundle)
        checkpoints, cosigned = _insert_checkpoints(conn, schema, bundle)
    return LoadedLedger(count, leaves, checkpoints, cosigned)


def _copy_events(conn: psycopg.Connection[Any], events: Any, bundle: zipfile.ZipFile) -> int:
    count = 0
    with conn.cursor() as cur, cur.copy(SQL(
            "COPY {} (notification_id, originator_id, originator_version, topic, state) "
            "FROM STDIN").format(events)) as copy:
        for event in _lines(bundle, "events.jsonl"):
            copy.write_row((event["position"], event["originator_id"], event["version"],
                            event["topic"], base64.b64decode(event["state"])))
            count += 1
    return count


def _copy_leaves(conn: psycopg.Connection[Any], schema: str, bundle: zipfile.ZipFile) -> int:
    """The leaves as stored, then the tree's complete-subtree nodes rebuilt from them (the
    sealer's own appending, so proofs and later seals find what they expect). Two passes
    over the member, so memory stays flat whatever the size of the log."""
    s = Identifier(schema)
    with conn.cursor() as cur:
        with cur.copy(SQL("COPY {}.{} (leaf_index, notification_id, leaf_hash) FROM STDIN")
                      .format(s, Identifier(store.LEAVES))) as copy:
            for leaf in _lines(bundle, "leaves.jsonl"):
                copy.write_row((leaf["leaf_index"], leaf["position"],
                                bytes.fromhex(leaf["leaf_hash"])))
        frontier = Frontier()
        with cur.copy(SQL("COPY {}.{} (level, idx, hash) FROM STDIN")
                      .format(s, Identifier(store.NODES))) as copy:
            for leaf in _lines(bundle, "leaves.jsonl"):
                for row in frontier.append(bytes.fromhex(leaf["leaf_hash"])):
                    copy.write_row(row)
    return frontier.size


def log_signed(note: str) -> tuple[str, str]:
    """(the checkpoint as the log signed it, the id of the key that signed it) from a
    checkpoint ``note`` that may carry witnesses' cosignature lines after the log's."""
    body, lines = split_note(note)
    kept: list[str] = []
    key_id = ""
    for line in lines:
        name, _, blob = line.removeprefix(SIGNATURE_PREFIX).partition(" ")
        raw = base64.b64decode(blob)
        if len(raw) == _NOTE_SIGNATURE_BYTES:
            kept.append(line)
            key_id = key_id or f"{name}+{raw[:4].hex()}"
    return body + "\n" + "".join(f"{line}\n" for line in kept), key_id


def _insert_checkpoints(conn: psycopg.Connection[Any], schema: str,
                        bundle: zipfile.ZipFile) -> tuple[int, int]:
    s = Identifier(schema)
    signed = SQL("INSERT INTO {}.{} (tree_size, root, note, key_id) VALUES (%s, %s, %s, %s)"
                 ).format(s, Identifier(store.CHECKPOINTS))
    checkpoints = cosigned = 0
    for point in _lines(bundle, "checkpoints.jsonl"):
        note = str(point["note"])
        own, key_id = log_signed(note)
        checkpoint = Checkpoint.parse(split_note(note)[0])
        conn.execute(signed, (checkpoint.size, checkpoint.root, own, key_id))
        checkpoints += 1
        if own != note:
            # A witnessed bundle: the note with its cosignatures is what the server serves.
            store.add_cosigned(conn, schema, checkpoint.size, note)
            cosigned += 1
    return checkpoints, cosigned
