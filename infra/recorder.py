"""The event recorders: eventsourcing's PostgreSQL recorders, made append-only by triggers.

The triggers belong to the table owner. The application connects as a role that owns none of
the tables (see ``infra/roles.py``), so it can neither disable them nor drop the tables.

The application recorder inserts a batch as one array per column (a large one with COPY), in
a transaction with its own lock and statement timeouts, and takes
``expected_versions``: aggregates a write relied on without writing to them (a subject's
command reads the study's lock). They are checked under the table lock every insert takes,
so no event of theirs can commit between the check and the write; if one has moved on, or
the batch itself writes to one, nothing is inserted and
:class:`~eventsourcing.persistence.IntegrityError` is raised, as for a version clash.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, NamedTuple, Protocol
from uuid import UUID

import psycopg
from eventsourcing.persistence import (
    ApplicationRecorder,
    IntegrityError,
    InterfaceError,
    OperationalError,
    StoredEvent,
)
from eventsourcing.postgres import (
    PostgresApplicationRecorder,
    PostgresDatastore,
    PostgresFactory,
    PostgresProcessRecorder,
)
from eventsourcing.utils import Environment, EnvType, retry
from psycopg import Cursor
from psycopg.errors import LockNotAvailable, QueryCanceled
from psycopg.rows import DictRow, dict_row, tuple_row
from psycopg.sql import SQL, Composed, Identifier, Literal

from infra.copy_rows import CopyRows
from infra.pools import shared_pool

REFUSE_FUNCTION = "trialledger_refuse_change"


def append_only_statements(schema: str, table: str) -> list[Composed]:
    """SQL that makes ``schema.table`` refuse UPDATE, DELETE and TRUNCATE, for everyone."""
    function = SQL(
        "CREATE OR REPLACE FUNCTION {schema}.{function}() RETURNS trigger "
        "LANGUAGE plpgsql AS $body$ BEGIN "
        "RAISE EXCEPTION 'TrialLedger is append-only: % on %.% is refused', "
        "TG_OP, TG_TABLE_SCHEMA, TG_TABLE_NAME USING ERRCODE = 'insufficient_privilege'; "
        "END $body$"
    ).format(schema=Identifier(schema), function=Identifier(REFUSE_FUNCTION))
    row_trigger = SQL(
        "CREATE OR REPLACE TRIGGER {name} BEFORE UPDATE OR DELETE ON {schema}.{table} "
        "FOR EACH ROW EXECUTE FUNCTION {schema}.{function}()"
    ).format(
        name=Identifier(f"{table}_no_update_delete"),
        schema=Identifier(schema),
        table=Identifier(table),
        function=Identifier(REFUSE_FUNCTION),
    )
    truncate_trigger = SQL(
        "CREATE OR REPLACE TRIGGER {name} BEFORE TRUNCATE ON {schema}.{table} "
        "FOR EACH STATEMENT EXECUTE FUNCTION {schema}.{function}()"
    ).format(
        name=Identifier(f"{table}_no_truncate"),
        schema=Identifier(schema),
        table=Identifier(table),
        function=Identifier(REFUSE_FUNCTION),
    )
    return [function, row_trigger, truncate_trigger]


# From this many events on, insert_events stores them with COPY (see copy_events).
COPY_FROM = 100

# How long a write transaction waits for the events table's lock, and how long one of its
# statements may run, before PostgreSQL gives up on it (seconds; 0: no limit). Set from the
# deployment's settings through the eventsourcing environment (see TrialLedgerFactory).
LOCK_TIMEOUT_ENV = "TRIALLEDGER_WRITE_LOCK_TIMEOUT"
# The database URL, whole, and the token of the runtime's shared pool (see infra.pools).
CONNINFO_ENV = "TRIALLEDGER_CONNINFO"
STORE_POOL_ENV = "TRIALLEDGER_STORE_POOL"
STATEMENT_TIMEOUT_ENV = "TRIALLEDGER_WRITE_STATEMENT_TIMEOUT"

# Attempts at a write that lost its connection (as eventsourcing's own insert_events).
_ATTEMPTS = 10
_RETRY_WAIT = 0.2
# Attempts at a read that failed on its connection. eventsourcing makes ten, each waiting
# for a connection as long as the pool's timeout: while the database is away, one read would
# hang ten times that. A pooled connection is checked before it is lent (pre-ping), so a
# second attempt is enough to get past one the database dropped.
READ_ATTEMPTS = 2


def _fewer_attempts(method: Any) -> Any:
    """One of eventsourcing's retried recorder methods, retried :data:`READ_ATTEMPTS` times."""
    return retry((InterfaceError, OperationalError), max_attempts=READ_ATTEMPTS,
                 wait=_RETRY_WAIT)(method.__wrapped__)


class Receipt(Protocol):
    """Something stored in the transaction of the events it vouches for (an item of
    :data:`domain.group_commit.RECEIPTS`; e.g. :class:`infra.idempotency.Applied`)."""

    @classmethod
    def record_all(cls, curs: Cursor[Any], receipts: Sequence[Any]) -> None:
        """Store ``receipts`` (all of this class) with ``curs``."""
        ...

    @classmethod
    def confirm_all(cls, curs: Cursor[Any], receipts: Sequence[Any]) -> None:
        """Raise :class:`IntegrityError` if ``record_all`` (on ``curs``, whose results are in)
        could not store them all: the events' transaction is then rolled back."""
        ...


class _Receipts:
    """The receipts of one write, each kind stored in one statement on a cursor of its own
    (in a pipeline, the events' insert follows on another), confirmed once the insert's
    results are in."""

    def __init__(self, conn: psycopg.Connection[Any], receipts: Sequence[object]) -> None:
        self._kinds: list[tuple[Any, list[object], Cursor[Any]]] = []
        grouped: dict[type, list[object]] = {}
        for receipt in receipts:
            grouped.setdefault(type(receipt), []).append(receipt)
        for kind, same in grouped.items():
            if not hasattr(kind, "record_all"):
                raise TypeError(f"{kind.__name__} is not a receipt the recorder can store")
            curs = conn.cursor(row_factory=tuple_row)
            kind.record_all(curs, same)
            self._kinds.append((kind, same, curs))

    def confirm(self) -> None:
        """Raise if a receipt could not be stored (see :meth:`Receipt.confirm_all`)."""
        for kind, same, curs in self._kinds:
            with curs:
                kind.confirm_all(curs, same)


class _Prelude(NamedTuple):
    """A write transaction's first statements: its timeouts, then its lock and notification
    (as one statement too, ``joined``, sent in one round trip outside a pipeline)."""

    timeouts: tuple[bytes, ...]
    lock: tuple[bytes, ...]
    joined: bytes


class WriteAborted(OperationalError):
    """A write transaction was ended from outside (see
    :meth:`AppendOnlyApplicationRecorder.abort_write`); nothing of it was stored."""


@dataclass
class _Write:
    """One thread's write in flight: the backend its transaction runs in, once known."""

    pid: int | None = None
    aborted: bool = False


class AppendOnlyApplicationRecorder(PostgresApplicationRecorder):
    """eventsourcing's application recorder whose events table refuses change.

    Events are written in a plain transaction, not in eventsourcing's pipeline mode: a large
    pipelined payload stalls psycopg's pipeline sync (psycopg #685, reproduced with a 1 MB
    event on the embedded PostgreSQL's Unix socket) while the transaction holds the table's
    lock, and with it every write of the study. The transaction sets its own lock and
    statement timeouts, and another thread may end it (:meth:`abort_write`).

    A large batch is stored with COPY rather than an INSERT: the same rows under the same
    table lock, several times faster, and with no bound on the batch.
    """

    select_events = _fewer_attempts(PostgresApplicationRecorder.select_events)
    select_notifications = _fewer_attempts(PostgresApplicationRecorder.select_notifications)
    max_notification_id = _fewer_attempts(PostgresApplicationRecorder.max_notification_id)

    def __init__(self, datastore: PostgresDatastore, **kwargs: Any) -> None:
        super().__init__(datastore, **kwargs)
        self.sql_create_statements.extend(
            append_only_statements(datastore.schema, self.events_table_name)
        )
        self.lock_timeout = float(datastore.lock_timeout)
        self.statement_timeout = 0.0
        self._prelude_cache: tuple[tuple[float, float], _Prelude] | None = None
        self._writes: dict[int, _Write] = {}
        self._writes_lock = threading.Lock()
        table = SQL("{}.{}").format(Identifier(datastore.schema),
                                    Identifier(self.events_table_name))
        self._table = table
        self._copy_statement = SQL(
            "COPY {} (originator_id, originator_version, topic, state) FROM STDIN "
            "(FORMAT BINARY)").format(table)
        self._last_id_statement = SQL(
            "SELECT currval(pg_get_serial_sequence({}, 'notification_id')) AS last_id"
        ).format(Literal(f'"{datastore.schema}"."{self.events_table_name}"'))
        names = {"schema": Identifier(datastore.schema),
                 "table": Identifier(self.events_table_name),
                 "id_type": Identifier(datastore.originator_id_type)}
        # The arrays go in binary (%b): as text, psycopg renders each state as hex and then
        # escapes it with a regular expression (a sixth of the group commit's thread).
        insert = (
            "INSERT INTO {schema}.{table} (originator_id, originator_version, topic, state)"
            " SELECT * FROM unnest(%b::{id_type}[], %b::bigint[], %b::text[], %b::bytea[])"
        )
        # Both as bytes, composed once: psycopg renders a composed statement again at every
        # execution (as it did the prelude, see _prelude).
        self._insert_columns_statement = SQL(insert + " RETURNING notification_id").format(
            **names).as_bytes()
        # Inserts nothing if an aggregate relied on is no longer at the version given.
        self._insert_if_unmoved_statement = SQL(
            insert + " WHERE NOT EXISTS (SELECT FROM unnest(%b::{id_type}[], %b::bigint[])"
            " AS relied(id, version) WHERE relied.version <> coalesce((SELECT"
            " max(originator_version) FROM {schema}.{table} WHERE originator_id = relied.id),"
            " 0)) RETURNING notification_id").format(**names).as_bytes()
        self._stored_statement = SQL(
            "SELECT notification_id FROM {schema}.{table} WHERE originator_id = %s"
            " AND originator_version = %s AND state = %s").format(**names)

    def _prelude(self) -> _Prelude:
        """What a write transaction does first: its timeouts, the table lock (notification
        ids in commit order), and the notification of new events. Composed once for the
        timeouts in force (as bytes: a composed statement is rendered again at every
        execution)."""
        timeouts = (self.lock_timeout, self.statement_timeout)
        cached = self._prelude_cache
        if cached is None or cached[0] != timeouts:
            statements = [statement.as_bytes() for statement in self._compose_prelude()]
            cached = self._prelude_cache = (timeouts, _Prelude(
                tuple(statements[:2]), tuple(statements[2:]), b"; ".join(statements)))
        return cached[1]

    def _compose_prelude(self) -> list[Composed]:
        return [
            SQL("SET LOCAL lock_timeout = {}").format(
                Literal(f"{round(self.lock_timeout * 1000)}ms")),
            SQL("SET LOCAL statement_timeout = {}").format(
                Literal(f"{round(self.statement_timeout * 1000)}ms")),
            SQL("LOCK TABLE {} IN EXCLUSIVE MODE").format(self._table),
            SQL("NOTIFY {}").format(Identifier(self.channel_name)),
        ]

    def insert_events(self, stored_events: Sequence[StoredEvent], **kwargs: Any
                      ) -> Sequence[int] | None:
        """Store the events in one transaction (a large batch with COPY), with the
        ``receipts`` given (each a :class:`Receipt`); return their notification ids.

        A write whose connection fails is retried, unless it was aborted or ran out of time;
        one whose outcome is unknown (the connection lost at commit) is looked up first, so a
        batch that did commit is reported stored, never written twice or refused.
        """
        if not stored_events:
            return []
        expected: Sequence[tuple[UUID, int]] = kwargs.get("expected_versions") or ()
        receipts: Sequence[object] = kwargs.get("receipts") or ()
        return self._retried(lambda write: self._write(stored_events, expected, receipts, write),
                             stored_events[0], len(stored_events))

    def insert_copy_rows(self, rows: CopyRows) -> Sequence[int]:
        """Store events encoded elsewhere as COPY rows (:mod:`infra.copy_rows`), as
        :meth:`insert_events` stores a large batch: one transaction, the same retries."""
        if self.datastore.originator_id_type != "uuid":
            raise TypeError("COPY rows carry a uuid originator_id")
        return self._retried(lambda write: self._write_copy_rows(rows, write), rows.first,
                             rows.count)

    def _retried(self, attempt_write: Callable[[_Write], Sequence[int]], first: StoredEvent,
                 count: int) -> Sequence[int]:
        write = _Write()
        thread = threading.get_ident()
        with self._writes_lock:
            self._writes[thread] = write
        unknown = False  # an attempt ended without saying whether it committed
        try:
            for attempt in range(1, _ATTEMPTS + 1):
                if write.aborted:
                    raise WriteAborted("the write was aborted; nothing was stored")
                try:
                    return attempt_write(write)
                except IntegrityError:
                    # What this attempt clashes with may be the earlier one, committed after
                    # all when it could not be looked up: stored, not refused (else the
                    # command would run again on top of its own events).
                    ids = self._stored_ids(first, count) if unknown else None
                    if ids is not None:
                        return ids
                    raise
                except (InterfaceError, OperationalError) as e:
                    ids = self._stored_ids(first, count)
                    if ids is not None:
                        return ids
                    unknown = True
                    if write.aborted:
                        raise WriteAborted("the write was aborted; nothing was stored") from e
                    if attempt == _ATTEMPTS or _timed_out(e):
                        raise
                    time.sleep(_RETRY_WAIT)
            raise AssertionError("unreachable")  # the loop returns or raises
        finally:
            with self._writes_lock:
                del self._writes[thread]

    def abort_write(self, thread: int) -> bool:
        """End the write that ``thread`` has in flight, if any: its transaction is rolled
        back (its backend is terminated, which releases the table lock even when client and
        server are stuck) and it is not retried. True once its backend is known gone."""
        with self._writes_lock:
            write = self._writes.get(thread)
            if write is None:
                return False
            write.aborted = True
            pid = write.pid
        if pid is None:
            return True
        # A connection of its own: the pool's may all be waiting for the lock.
        conninfo = self.datastore.pool.conninfo
        assert isinstance(conninfo, str)  # as TrialLedgerFactory gives it
        with psycopg.connect(conninfo, autocommit=True, connect_timeout=5) as conn:
            # Waits (up to 5 s) until the backend has exited: its transaction is then over.
            row = conn.execute("SELECT pg_terminate_backend(%s, 5000)", (pid,)).fetchone()
        return bool(row and row[0])

    def _write(self, stored_events: Sequence[StoredEvent], expected: Sequence[tuple[UUID, int]],
               receipts: Sequence[object], write: _Write) -> Sequence[int]:
        if expected:
            written = {e.originator_id for e in stored_events}
            clash = sorted(str(i) for i, _ in expected if i in written)
            if clash:
                raise IntegrityError(
                    f"the batch writes to {', '.join(clash)}, which it relies on")
        with self.datastore.get_connection() as conn:
            write.pid = conn.info.backend_pid
            try:
                if len(stored_events) >= COPY_FROM and not expected:
                    with conn.transaction(), conn.cursor() as curs:
                        curs.execute(self._prelude().joined)
                        stored = _Receipts(conn, receipts)
                        ids = self._copy(curs, stored_events)
                        stored.confirm()
                        return ids
                # The prelude's statements, the receipts (before the table lock) and the
                # insert go in one flush (a psycopg pipeline; BEGIN and COMMIT each still
                # take a round trip of their own): the receipts add none.
                with conn.pipeline(), conn.transaction(), conn.cursor() as curs:
                    prelude = self._prelude()
                    for statement in prelude.timeouts:
                        curs.execute(statement)
                    stored = _Receipts(conn, receipts)  # bounded by them, before the lock
                    for statement in prelude.lock:
                        curs.execute(statement)
                    ids = self._insert(curs, stored_events, expected)
                    stored.confirm()
                    return ids
            finally:
                write.pid = None

    def _write_copy_rows(self, rows: CopyRows, write: _Write) -> Sequence[int]:
        with self.datastore.get_connection() as conn:
            write.pid = conn.info.backend_pid
            try:
                with conn.transaction(), conn.cursor() as curs:
                    curs.execute(self._prelude().joined)
                    with curs.copy(self._copy_statement) as copy:
                        copy.write(rows.data)
                    return self._last_ids(curs, rows.count)
            finally:
                write.pid = None

    def _insert(self, curs: Cursor[DictRow], stored_events: Sequence[StoredEvent],
                expected: Sequence[tuple[UUID, int]]) -> Sequence[int]:
        # One array per column, sent in binary (the statements' %b; ``binary=True`` only asks
        # for binary results): eventsourcing's array of composite values is rendered as text
        # by Python code, escaping every byte of every event, which cost more than the
        # signing. RETURNING gives the notification ids in insertion order.
        columns = (
            [e.originator_id for e in stored_events],
            [e.originator_version for e in stored_events],
            [e.topic for e in stored_events],
            [e.state for e in stored_events],
        )
        if expected:
            # Checked by the insert itself, under the table lock taken first: nothing can
            # commit to these aggregates before this batch does.
            curs.execute(self._insert_if_unmoved_statement, (
                *columns, [i for i, _ in expected], [v for _, v in expected],
            ), binary=True, prepare=True)
        else:
            curs.execute(self._insert_columns_statement, columns, binary=True, prepare=True)
        ids = [int(row["notification_id"]) for row in curs.fetchall()]
        if len(ids) != len(stored_events):
            # The insert found a relied-on aggregate moved on and stored nothing; the commit
            # that follows is an empty one.
            moved = ", ".join(str(i) for i, _ in expected)
            raise IntegrityError(f"{moved}: moved on since it was read")
        return ids

    def _copy(self, curs: Cursor[DictRow], stored_events: Sequence[StoredEvent]
              ) -> Sequence[int]:
        """Store the events with COPY, under the table lock the prelude took, so that
        notification ids are issued in commit order and those of one batch are consecutive.
        A duplicate (aggregate id, version) fails the whole batch."""
        with curs.copy(self._copy_statement) as copy:
            copy.set_types([self.datastore.originator_id_type, "int8", "text", "bytea"])
            for event in stored_events:
                copy.write_row((event.originator_id, event.originator_version,
                                event.topic, event.state))
        return self._last_ids(curs, len(stored_events))

    def _last_ids(self, curs: Cursor[DictRow], count: int) -> Sequence[int]:
        """The notification ids of the ``count`` events just copied."""
        row = curs.execute(self._last_id_statement).fetchone()
        assert row is not None
        # Under the lock nothing else draws from the table's sequence: the batch's ids are
        # the last ``count`` ones drawn.
        last = int(row["last_id"])
        return list(range(last - count + 1, last + 1))

    def _stored_ids(self, first: StoredEvent, count: int) -> Sequence[int] | None:
        """The notification ids of the batch of ``count`` events starting with ``first`` if
        it was committed after all, else None (also when the database cannot be asked). A
        batch is stored whole or not at all, its first event's state is unique (signed and
        timed), and under the table lock its ids were drawn consecutively."""
        try:
            with self.datastore.get_connection() as conn, conn.cursor() as curs:
                row = curs.execute(self._stored_statement, (
                    first.originator_id, first.originator_version, first.state),
                    binary=True).fetchone()
        except (InterfaceError, OperationalError):
            return None
        if row is None:
            return None
        start = int(row["notification_id"])
        return list(range(start, start + count))


def _timed_out(error: Exception) -> bool:
    """True for a lock or statement timeout: retrying would only wait as long again."""
    return isinstance(error.__cause__, (LockNotAvailable, QueryCanceled))


class TrialLedgerFactory(PostgresFactory):
    """eventsourcing's PostgreSQL factory, on the whole URL: its datastore lends from the
    runtime's shared pool (``STORE_POOL_ENV``), or else connects with the URL of
    ``CONNINFO_ENV``, every parameter included; and it hands the deployment's write timeouts
    to the application recorder."""

    def __init__(self, env: Environment | EnvType | None) -> None:
        super().__init__(env)
        shared = shared_pool(self.env.get(STORE_POOL_ENV) or "")
        if shared is not None:
            self.datastore.pool = shared
            return
        conninfo = self.env.get(CONNINFO_ENV)
        if conninfo:
            # The pool is not open yet: its connections will all be made with the URL
            # (keyword arguments would override the URL's host list, so only rows remain).
            pool = self.datastore.pool
            pool.conninfo = conninfo
            pool.kwargs = {"row_factory": dict_row}

    def application_recorder(self) -> ApplicationRecorder:
        """The application recorder named in the environment, with its write timeouts."""
        recorder = super().application_recorder()
        if isinstance(recorder, AppendOnlyApplicationRecorder):
            recorder.lock_timeout = float(self.env.get(LOCK_TIMEOUT_ENV) or
                                          recorder.lock_timeout)
            recorder.statement_timeout = float(self.env.get(STATEMENT_TIMEOUT_ENV) or 0)
        return recorder


class AppendOnlyProcessRecorder(PostgresProcessRecorder):
    """eventsourcing's process recorder (events + tracking) whose events table refuses change.

    Tracking rows are positions, not events: they are updated as a projection advances.
    """

    select_events = _fewer_attempts(PostgresProcessRecorder.select_events)
    select_notifications = _fewer_attempts(PostgresProcessRecorder.select_notifications)
    max_notification_id = _fewer_attempts(PostgresProcessRecorder.max_notification_id)
    max_tracking_id = _fewer_attempts(PostgresProcessRecorder.max_tracking_id)
    has_tracking_id = _fewer_attempts(PostgresProcessRecorder.has_tracking_id)

    def __init__(self, datastore: PostgresDatastore, **kwargs: Any) -> None:
        super().__init__(datastore, **kwargs)
        self.sql_create_statements.extend(
            append_only_statements(datastore.schema, self.events_table_name)
        )
