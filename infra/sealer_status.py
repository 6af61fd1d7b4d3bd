"""What the sealer process tells a server's workers about its rounds, and how far each log's
events are ahead of it.

The sealer (its own process, see :mod:`application.sealing`) writes a small JSON file after
each log it visits; the workers read it at a scrape of ``/metrics`` or a ``/readyz``, and
count the events past the positions it names with one indexed query per log. Nothing of this
runs per request.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import psycopg
from psycopg.sql import SQL, Identifier

from infra.ledger import store
from infra.ledger.cosignature import split_note
from infra.ledger.logs import events_table

STATUS_FILE = "sealer-status.json"


@dataclass(frozen=True)
class LogProgress:
    """One log as the sealer last saw it. Times are Unix seconds; positions notification ids.

    ``caught_up_at`` / ``advanced_at``: when the sealer last found nothing left to seal / last
    sealed something or found nothing left; ``projected_*`` the same of the read tables (None
    for a log without any, the directory's).
    """

    sealed: int
    caught_up_at: float
    advanced_at: float
    checkpoint_at: float | None = None
    cosignatures: int = 0
    projected: int | None = None
    projected_caught_up_at: float | None = None
    projected_advanced_at: float | None = None


@dataclass(frozen=True)
class SealerStatus:
    """The sealer's last heartbeat (Unix seconds) and what it saw of each log."""

    beat: float
    logs: dict[str, LogProgress] = field(default_factory=dict)


def write_status(path: Path, status: SealerStatus) -> None:
    """Replace the status file (readers see the old one or the new, never a mix). Not
    flushed to disk: it describes a running server, and is written after every log visited."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_bytes(json.dumps(asdict(status)).encode())
    os.replace(tmp, path)


def read_status(path: Path) -> SealerStatus | None:
    """The status the sealer last wrote (None: none yet, or unreadable)."""
    try:
        data: dict[str, Any] = json.loads(path.read_bytes())
        return SealerStatus(float(data["beat"]), {name: LogProgress(**fields)
                                                  for name, fields in data["logs"].items()})
    except (OSError, ValueError, KeyError, TypeError):
        return None


@dataclass(frozen=True)
class LedgerState:
    """A log as stored: its newest sealed and projected positions (projected: None without
    read tables), the events past each, when its newest checkpoint was signed, and how many
    witnesses cosigned the newest witnessed one."""

    sealed: int
    unsealed: int
    projected: int | None
    unprojected: int
    checkpoint_at: float | None
    cosignatures: int


def ledger_state(conn: psycopg.Connection[Any], log: str, schema: str,
                 projection: tuple[str, str] | None) -> LedgerState:
    """The stored state of ``log`` in ``schema`` (``projection``: the tracking table of its
    read tables and the name they track it under, None for none); one round trip of index
    lookups, and index scans over the events not yet sealed or projected."""
    s = Identifier(schema)
    events, tracked = _exist(conn, schema, events_table(log),
                             None if projection is None else projection[0])
    if not events:  # a study being set up: listed, its events table not yet made
        return LedgerState(0, 0, None if projection is None else 0, 0, None, 0)
    projected = (SQL("(SELECT coalesce(max(notification_id), 0) FROM {}.{}"
                     " WHERE application_name = %s)").format(s, Identifier(projection[0]))
                 if projection is not None and tracked
                 else SQL("0::bigint") if projection is not None else SQL("NULL::bigint"))
    row = conn.execute(SQL(
        "WITH p AS (SELECT (SELECT coalesce(max(notification_id), 0) FROM {s}.{leaves})"
        " AS sealed, {projected} AS projected)"
        " SELECT p.sealed, (SELECT count(*) FROM {s}.{events} WHERE notification_id > p.sealed),"
        " p.projected, (SELECT count(*) FROM {s}.{events}"
        "  WHERE p.projected IS NOT NULL AND notification_id > p.projected),"
        " (SELECT extract(epoch FROM max(created_at)) FROM {s}.{checkpoints}),"
        " (SELECT note FROM {s}.{cosigned} ORDER BY tree_size DESC LIMIT 1) FROM p").format(
        s=s, events=Identifier(events_table(log)), leaves=Identifier(store.LEAVES),
        projected=projected, checkpoints=Identifier(store.CHECKPOINTS),
        cosigned=Identifier(store.COSIGNED)),
        (projection[1],) if projection is not None and tracked else ()).fetchone()
    assert row is not None
    sealed, unsealed, projected_at, unprojected, checkpoint_at, note = row
    return LedgerState(
        int(sealed), int(unsealed), None if projected_at is None else int(projected_at),
        int(unprojected), None if checkpoint_at is None else float(checkpoint_at),
        # The log's own signature line, then one per witness.
        0 if note is None else max(0, len(split_note(str(note))[1]) - 1))


def _exist(conn: psycopg.Connection[Any], schema: str, events: str,
           tracking: str | None) -> tuple[bool, bool]:
    """Whether the ``events`` table and the ``tracking`` table exist in ``schema``."""
    row = conn.execute("SELECT to_regclass(%s), to_regclass(%s)",
                       (f'"{schema}"."{events}"',
                        None if tracking is None else f'"{schema}"."{tracking}"')).fetchone()
    return row is not None and row[0] is not None, row is not None and row[1] is not None
