"""The composition root: puts the domain's applications on infra's storage and signing key."""

from __future__ import annotations

import threading
import uuid
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any
from uuid import UUID

import psycopg
from eventsourcing.persistence import Mapper, Transcoder
from eventsourcing.utils import Environment
from psycopg_pool import ConnectionPool

from application.database_away import DatabaseAway
from application.people import People
from application.reauthentication import PeopleReauthenticator
from application.rebuild_parts import PartsReplay, parts_for
from application.sign_in_limits import SignInLimits
from application.trial_service import TrialService
from application.witnessing import witness_latest
from domain.clock import Clock
from domain.directory import DirectoryApplication
from domain.envelope import Actor, Envelope
from domain.errors import Conflict, InvalidState, NotFound
from domain.group_commit import without_receipts
from domain.service import StudyApplication
from domain.signed_application import MapperFactory
from domain.studies.protocols import study_endpoints
from domain.subject import Subject
from infra import catalog, keys
from infra.field_keys import FieldKeys, create_key_tables, load_kek
from infra.idempotency import IdempotencyStore
from infra.key_claims import KeyClaims
from infra.ledger import store
from infra.ledger.logs import DIRECTORY_LOG
from infra.ledger.sealer import SealerMemory, SealResult, seal
from infra.logging import get_logger
from infra.mapper import SigningMapper, VerifyingMapper
from infra.pools import CheckWhenIdle, SharedPool, open_shared_pool
from infra.postgres import (
    connect,
    database,
    eventsourcing_env,
    reachable,
    schema_for_study,
)
from infra.recorder import AppendOnlyApplicationRecorder, TrialLedgerFactory
from infra.replica import Reads, ReadSource
from infra.sealed_fields import FieldSealer
from infra.sealer_status import LedgerState, ledger_state
from infra.sessions import SessionStore
from infra.settings import Settings
from infra.signers import Signer, SigningKeyError, close_signer
from infra.signing import EventSigner, key_id_for, public_key_b64
from infra.witness.client import endpoints
from projections.history_view import PROJECTION_VERSION, HistoryView, read_tables_ready
from projections.outcomes.engine import (
    cell_contributions,
    outcome_tables,
    tables_of_summaries,
)
from projections.projector import HistoryProjector
from projections.queries import cell_sources, outcome_books, outcome_summaries_as_of

# The name of the read tables' eventsourcing environment, which names their tracking table.
HISTORY_ENV = "History"

# A catch-up of this many events refreshes the read tables' planner statistics.
ANALYZE_AFTER = 10_000


def system_envelope() -> Envelope:
    """The envelope of what TrialLedger itself records (keys, seals), not a person."""
    return Envelope(Actor("system", "TrialLedger", "system", "ALL"), "trialledger", "system",
                    f"system-{uuid.uuid4()}")


@dataclass
class Runtime:
    """One deployment: a database URL, a signing key, and the study applications opened on it."""

    settings: Settings
    url: str
    signed: bool = True
    _apps: dict[str, StudyApplication] = field(default_factory=dict)
    _key: Signer | None = None
    _projectors: dict[str, HistoryProjector] = field(default_factory=dict)
    _directory: DirectoryApplication | None = None
    _people: People | None = None
    _pool: ConnectionPool | None = None
    _store_pool: SharedPool | None = None
    _sessions: SessionStore | None = None
    _reads: Reads | None = None
    _idempotency: IdempotencyStore | None = None
    _key_claims: KeyClaims | None = None
    _project_lock: threading.Lock = field(default_factory=threading.Lock)
    _known_studies: set[str] = field(default_factory=set)
    # What sealing learnt of each log, so that a round costs what is new, not the log's size.
    _sealer_memory: SealerMemory = field(default_factory=SealerMemory)
    # Serves threads of the HTTP server: what is opened lazily is opened once (concurrent
    # CREATE ... IF NOT EXISTS statements collide in PostgreSQL's catalogue).
    _init_lock: threading.RLock = field(default_factory=threading.RLock)
    _group_commit: bool = False
    _service: TrialService | None = None
    _kek: bytes | None = None
    _field_keys: dict[str, FieldKeys] = field(default_factory=dict)
    # Set when a request finds the database unreachable; see application/database_away.py.
    database_away: DatabaseAway = field(init=False)
    # Told of each refused sign-in (True: it locked the account), e.g. by a server's metrics.
    on_sign_in_refused: Callable[[bool], None] = field(default=lambda _: None)

    def __post_init__(self) -> None:
        self.database_away = DatabaseAway(lambda: reachable(self.url))

    def study(self, study_id: str, clock: Clock | None = None) -> StudyApplication:
        """The application of one study, in its own schema (created on first use)."""
        if clock is None and study_id in self._apps:
            return self._apps[study_id]
        with self._init_lock:
            if clock is None and study_id in self._apps:
                return self._apps[study_id]
            return self._open_study(study_id, clock)

    def adopt_restored_study(self, study_id: str) -> StudyApplication:
        """Open a study just restored from a bundle signed by another deployment's keys: this
        deployment's key joins its keyring as the log's next event, signed by that key. The
        restore is the recorded operator action that vouches for it (a key that appears in a
        log any other way is refused: see :meth:`_register_signing_key`)."""
        with self._init_lock:
            if study_id in self._apps:
                raise RuntimeError(f"{study_id} is open already: adopt it before opening it")
            return self._open_study(study_id, None, adopting=True)

    def _open_study(self, study_id: str, clock: Clock | None, *,
                    adopting: bool = False) -> StudyApplication:
        schema = schema_for_study(study_id)
        with self._setting_up() as conn:
            if conn is not None:
                catalog.add_study(conn, study_id, schema)
            app = StudyApplication(
                study_id,
                env=self._eventsourcing_env(schema),
                clock=clock,
                mapper_factory=self._mapper_factory(study_id) if self.signed else None,
            )
            if conn is not None:
                create_key_tables(conn, schema)
            if self.signed:
                self._bind_sealer(app)
                with without_receipts():  # the system's write, not the request's
                    self._register_signing_key(app, adopting=adopting)
        if clock is None:
            if self._group_commit:
                self._commit_in_groups(app)
            self._apps[study_id] = app
        return app

    def create_study_storage(self, study_id: str) -> None:
        """The study's schema, catalogue entry, events and ledger tables, left empty for a
        restore to fill: unlike :meth:`study`, no signing key is registered (which would
        be an event before the restored ones)."""
        schema = schema_for_study(study_id)
        with self._setting_up() as conn:
            if conn is not None:
                catalog.add_study(conn, study_id, schema)
                create_key_tables(conn, schema)
            StudyApplication(study_id, env=self._eventsourcing_env(schema)).close()

    def _eventsourcing_env(self, schema: str) -> dict[str, str]:
        return eventsourcing_env(self.url, schema, create_table=not self.settings.provisioned,
                                 lock_timeout=self.settings.write_lock_timeout,
                                 statement_timeout=self.settings.write_statement_timeout,
                                 connection_wait=self.settings.database_wait,
                                 store_pool=self._store_pool_token())

    def _store_pool_token(self) -> str:
        """The token of the pool every event store and read table of this runtime lends
        from (opened on first use; see :mod:`infra.pools`)."""
        if self._store_pool is None:
            with self._init_lock:
                if self._store_pool is None:
                    self._store_pool = open_shared_pool(
                        self.url, self.settings.store_pool_size,
                        timeout=self.settings.database_wait)
        return self._store_pool.token

    def _commit_in_groups(self, app: StudyApplication) -> None:
        recorder = app.recorder
        abort = (recorder.abort_write if isinstance(recorder, AppendOnlyApplicationRecorder)
                 else None)
        app.commit_in_groups(self.settings.commit_timeout or None, abort)

    def opened_study(self, study_id: str) -> StudyApplication | None:
        """The application of ``study_id`` if this runtime has opened it already (getting it
        needs no database), else None."""
        return self._apps.get(study_id) if study_id in self._known_studies else None

    def commit_in_groups(self) -> None:
        """Serve concurrent requests: their events share transactions (group commit)."""
        with self._init_lock:
            self._group_commit = True
            for app in self._apps.values():
                self._commit_in_groups(app)

    def service(self) -> TrialService:
        """The front door of every write to this deployment's studies."""
        if self._service is None:
            self._service = TrialService(self, PeopleReauthenticator(self.people), self)
        return self._service

    def directory(self) -> DirectoryApplication:
        """The deployment's people and API clients (created on first use)."""
        if self._directory is None:
            with self._init_lock:
                if self._directory is None:
                    if self.signed:
                        # The directory has no keyring: its signer is checked against the
                        # studies' (before the set-up lock, which opening a study takes too).
                        self.require_signing_key()
                    with self._setting_up() as conn:
                        if conn is not None:
                            catalog.ensure_catalog(conn)
                            store.create_ledger_tables(conn, catalog.CATALOG_SCHEMA)
                        self._directory = DirectoryApplication(
                            env=self._eventsourcing_env(catalog.CATALOG_SCHEMA),
                            mapper_factory=(self._verifying_mapper_factory()
                                            if self.signed else None),
                        )
        return self._directory

    def people(self) -> People:
        """The directory service (sign-in, passwords, second factor, administration)."""
        if self._people is None:
            with self._init_lock:
                if self._people is None:
                    self._people = People(
                        self.directory(),
                        limits=SignInLimits(self.settings.sign_in_per_account,
                                            self.settings.sign_in_per_address),
                        totp_roles=self.settings.totp_roles, end_sessions=self._end_sessions,
                        on_refused=lambda locked_out: self.on_sign_in_refused(locked_out))
        return self._people

    def _end_sessions(self, username: str) -> None:
        with self.pool().connection() as conn:
            self.sessions().end_all(conn, username)

    @contextmanager
    def _setting_up(self) -> Iterator[psycopg.Connection[Any] | None]:
        """A connection holding the set-up lock while tables are created (None when the
        deployment is provisioned: its tables exist and the application role may not
        create any)."""
        if self.settings.provisioned:
            yield None
            return
        # Lent by the API's pool, whose first lending makes its own tables (not nested).
        pool = self.pool()
        with pool.connection() as conn, catalog.setting_up(conn):
            yield conn

    def pool(self) -> ConnectionPool:
        """A small pool of autocommit connections for the API's own tables."""
        if self._pool is None:
            with self._init_lock:
                if self._pool is None:
                    # Checked before a lending after a rest: a connection the database
                    # dropped (a restart) is replaced, not handed to a request.
                    pool = ConnectionPool(self.url, min_size=0,
                                          max_size=self.settings.api_pool_size,
                                          kwargs={"autocommit": True}, open=True,
                                          check=CheckWhenIdle().check,
                                          timeout=self.settings.database_wait)
                    if not self.settings.provisioned:
                        with pool.connection() as conn, catalog.setting_up(conn):
                            self.sessions().create_table(conn)
                            self.idempotency().create_table(conn)
                    self._pool = pool
        return self._pool

    def sessions(self) -> SessionStore:
        """Bearer tokens."""
        if self._sessions is None:
            self._sessions = SessionStore(self.url)
        return self._sessions

    def idempotency(self) -> IdempotencyStore:
        """Idempotency keys of retried POSTs."""
        if self._idempotency is None:
            self._idempotency = IdempotencyStore()
        return self._idempotency

    def key_claims(self) -> KeyClaims:
        """The claims and answers of a server's idempotency keys, each kind stored from a
        thread of its own (started on first use)."""
        if self._key_claims is None:
            pool = self.pool()
            with self._init_lock:
                if self._key_claims is None:
                    self._key_claims = KeyClaims(self.idempotency(), pool.connection)
        return self._key_claims

    def _register_signing_key(self, app: StudyApplication, *, adopting: bool = False) -> None:
        """Make sure the study's keyring knows the key about to sign its events: a new study
        registers it as its first key; a study whose keyring does not hold it refuses it (a
        key replaced by hand, not by a recorded rotation) unless ``adopting`` a restored log."""
        key = self.signing_key()
        key_id = key_id_for(self.settings.key_name, key.public_key())
        keyring = app.keyring()
        state = keyring.keys.get(key_id) if keyring else None
        if keyring is not None and state is None and not adopting:
            active = ", ".join(k for k, s in keyring.keys.items() if s == "active") or "none"
            raise SigningKeyError(
                f"the signing key {key_id} is not in the keyring of study {app.study_id} "
                f"(active: {active}): the key was replaced without a rotation; record it with "
                "`trialledger keys rotate --from-key-file OLD_KEY` (or --from-pkcs11-key-label)")
        if state is None:
            try:
                app.register_key(key_id, public_key_b64(key.public_key()), system_envelope())
            except (Conflict, InvalidState):
                # Another process starting at the same moment registered it first.
                keyring = app.keyring()
                if keyring is None or keyring.keys.get(key_id) != "active":
                    raise
        elif state != "active":
            raise SigningKeyError(f"the signing key {key_id} is {state} for study "
                                  f"{app.study_id}; it must not sign again")

    def signing_key(self) -> Signer:
        """The deployment's current signing key (a file key or a PKCS#11 token's)."""
        if self._key is None:
            with self._init_lock:
                if self._key is None:
                    self._key = keys.load_signing_key(self.settings)
        return self._key

    def use_signer(self, signer: Signer) -> None:
        """Sign with ``signer`` rather than the configured key: a rotation's old key, which
        vouches for the new one. Only before any study or the directory is opened."""
        if self._apps or self._directory is not None:
            raise RuntimeError("use_signer: the runtime has already opened applications")
        self._key = signer

    def require_signing_key(self) -> None:
        """Open every study, so that a key that may not sign any of them (replaced without a
        rotation, retired, revoked) stops a server before it serves
        (:class:`infra.signers.SigningKeyError`)."""
        for study_id, _ in self.studies():
            self.study(study_id)

    def seal(self, study_id: str, *, force_checkpoint: bool = False) -> SealResult:
        """Seal the study's new events into its ledger (and checkpoint if due or forced);
        with witnesses configured, have the newest checkpoint cosigned."""
        # Opened before the connection is taken (opening lends from the same pool): a
        # checkpoint is signed only by a key the study's keyring holds.
        self.study(study_id)
        with self.pool().connection() as conn:
            return self._seal(conn, study_id, schema_for_study(study_id), force_checkpoint)

    def seal_directory(self, *, force_checkpoint: bool = False) -> SealResult | None:
        """Seal the directory's new events (people, roles, clients, sign-ins) into its own
        ledger, as :meth:`seal` does a study's (None: the deployment has no directory yet)."""
        with self.pool().connection() as conn:
            if not store.has_ledger(conn, catalog.CATALOG_SCHEMA):
                return None
            return self._seal(conn, DIRECTORY_LOG, catalog.CATALOG_SCHEMA, force_checkpoint)

    def _seal(self, conn: psycopg.Connection[Any], log: str, schema: str,
              force_checkpoint: bool) -> SealResult:
        result = seal(conn, log, schema, keys.load_public_keys(self.settings),
                      self.signing_key(), self.settings.key_name,
                      force_checkpoint=force_checkpoint, memory=self._sealer_memory)
        if self.settings.witnesses:
            witness_latest(conn, log, schema, endpoints(self.settings.witnesses),
                           self.settings.quorum)
        return result

    def has_study(self, study_id: str) -> bool:
        """True if the deployment holds ``study_id`` (studies are never removed, so a yes is
        remembered; a no is asked again, another process may have added it)."""
        if study_id not in self._known_studies:
            self._known_studies.update(s for s, _ in self.studies())
        return study_id in self._known_studies

    def probe(self) -> None:
        """Open and close a connection of its own (raising what connecting raises): a try
        at a database that is away, without waiting out a pool's timeout."""
        with connect(self.url):
            pass

    def studies(self) -> list[tuple[str, str]]:
        """Every (study id, schema) of this deployment."""
        with self.pool().connection() as conn:
            return catalog.list_studies(conn)

    def sealed_logs(self) -> list[str]:
        """Every log the sealer follows: the directory's (once it has a ledger), then each
        study's."""
        with self.pool().connection() as conn:
            directory = store.has_ledger(conn, catalog.CATALOG_SCHEMA)
            studies = [s for s, _ in catalog.list_studies(conn)]
        return [DIRECTORY_LOG, *studies] if directory else studies

    def ledger_state(self, log: str) -> LedgerState:
        """How far ``log`` (a study id or :data:`DIRECTORY_LOG`) is sealed and projected,
        and its newest checkpoint, as stored now."""
        if log == DIRECTORY_LOG:
            schema, projection = catalog.CATALOG_SCHEMA, None
        else:
            schema = schema_for_study(log)
            projection = (f"{HISTORY_ENV.lower()}_tracking", StudyApplication.name)
        with self.pool().connection() as conn:
            return ledger_state(conn, log, schema, projection)

    def pools(self) -> dict[str, ConnectionPool[Any]]:
        """The connection pools this runtime has open, by use (for their statistics)."""
        opened: dict[str, ConnectionPool[Any]] = {}
        if self._pool is not None:
            opened["api"] = self._pool
        if self._store_pool is not None:
            opened["store"] = self._store_pool
        if self._reads is not None and self._reads.primary_pool is not None:
            opened["read"] = self._reads.primary_pool
        return opened

    def _mapper_factory(self, study_id: str) -> MapperFactory:
        signer = EventSigner(study_id, self.signing_key(), self.settings.key_name)
        sealer = FieldSealer(study_id, self.field_keys(study_id))

        def factory(transcoder: Transcoder) -> Mapper[UUID]:
            return SigningMapper(transcoder, signer, sealer)

        return factory

    @staticmethod
    def _bind_sealer(app: StudyApplication) -> None:
        """Tell the study's sealer what its definition declares identifying (asked when a
        record is written: the study is registered by then, and its definition cached)."""
        mapper = app.mapper
        if isinstance(mapper, SigningMapper) and mapper.sealer is not None:
            mapper.sealer.identifying = lambda: app.definition().identifying

    def field_keys(self, study_id: str) -> FieldKeys:
        """The data keys of the study's identifying values (see :mod:`infra.field_keys`)."""
        with self._init_lock:
            field_keys = self._field_keys.get(study_id)
            if field_keys is None:
                if self._kek is None:
                    self._kek = load_kek(self.settings)
                field_keys = FieldKeys(self.url, schema_for_study(study_id), self._kek)
                self._field_keys[study_id] = field_keys
            return field_keys

    def shred(self, study_id: str, subject: Subject, request_id: str) -> None:
        """Carry out an approved redaction: destroy the data keys of the values it covers,
        forget stored answers that held them, and rebuild the read tables (which then read
        the marker from the events; in a provisioned deployment the owner rebuilds them).
        Safe to run again for the same request."""
        request = subject.redactions[request_id]
        on = datetime.fromisoformat(request["approved_at"]).date()
        self.field_keys(study_id).shred(str(subject.id), request["items"], on,
                                        request["reason"], request_id)
        with self.pool().connection() as conn:
            self.idempotency().forget_mentions(
                conn, sorted({item["record_id"] for item in request["items"]}))
        if self.settings.provisioned:
            # The application's role may not create tables: the owner rebuilds them.
            get_logger(__name__).warning(
                "redaction.read_tables_stale", study=study_id, request_id=request_id,
                action=f"run `trialledger rebuild --study {study_id}` as the owner")
            return
        self.project(study_id, rebuild=True)

    def _verifying_mapper_factory(self) -> MapperFactory:
        """The directory's mapper: signs what it stores, and checks every event it loads
        against the deployment's public keys (re-read when an event names one not known)."""
        signer = EventSigner(DIRECTORY_LOG, self.signing_key(), self.settings.key_name)

        def factory(transcoder: Transcoder) -> Mapper[UUID]:
            return VerifyingMapper(transcoder, signer,
                                   lambda: keys.load_public_keys(self.settings))

        return factory

    def history_view(self, study_id: str) -> HistoryView:
        """The study's history and audit tables (created if missing)."""
        env = Environment(HISTORY_ENV, self._eventsourcing_env(schema_for_study(study_id)))
        view: HistoryView = TrialLedgerFactory(env).tracking_recorder(HistoryView)
        return view

    def project(self, study_id: str, *, rebuild: bool = False,
                on_batch: Callable[[int], object] | None = None,
                parts: int | None = None) -> int:
        """Bring the study's history and audit tables up to date with every event committed
        when it was called; return events projected.

        ``rebuild`` replays the whole log into new tables, which then replace the old ones; so
        does a change of the projection's version (the tables' shape is the code's, not a
        migration's). A rebuild replays in ``parts`` processes (default: one per core for a
        long log, see :func:`application.rebuild_parts.parts_for`).

        Events committed after the call are the next call's: under a steady stream of writes,
        catching up "to the end" chased the end, and a read that catches up first (to show
        its reader's own writes) waited out the whole stream (11-23 s under 900 writes/s).
        """
        # Opened before the lock's connection is taken: opening lends one of the same pool
        # (the sealer's holds one).
        through = self.study(study_id).recorder.max_notification_id() or 0
        # One projector per study at a time across processes too (server workers, a rebuild
        # from the CLI): two would insert the same tracking positions and one would fail.
        with self._project_lock, self.pool().connection() as conn:
            key = f"project:{schema_for_study(study_id)}"
            conn.execute("SELECT pg_advisory_lock(hashtext(%s))", (key,))
            try:
                return self._project(study_id, rebuild=rebuild, on_batch=on_batch, parts=parts,
                                     through=through)
            finally:
                conn.execute("SELECT pg_advisory_unlock(hashtext(%s))", (key,))

    def _project(self, study_id: str, *, rebuild: bool,
                 on_batch: Callable[[int], object] | None, parts: int | None,
                 through: int) -> int:
        projector = self._projector(study_id)
        if rebuild or projector.view.shape_version() not in (None, PROJECTION_VERSION):
            if parts is None:
                parts = parts_for(projector.app.recorder.max_notification_id() or 0)
            replay = None if parts == 1 else PartsReplay(
                self.settings, self.url, study_id, parts, signed=self.signed, on_batch=on_batch)
            replayed = projector.rebuild(PROJECTION_VERSION, on_batch=on_batch, replay=replay)
            # What was written during the rebuild, as it was when the rebuild ended.
            return replayed + projector.catch_up(
                on_batch=on_batch, through=projector.app.recorder.max_notification_id())
        if projector.view.shape_version() is None:
            projector.view.stamp_shape_version(PROJECTION_VERSION)
        caught_up = projector.catch_up(on_batch=on_batch, through=through)
        if caught_up >= ANALYZE_AFTER:
            # Statistics that never saw the newest positions made the planner think a page
            # near the trail's end empty and pick a nested loop scanning it per row (seconds
            # for a review filter); autovacuum would come later.
            projector.view.analyze()
        return caught_up

    def _projector(self, study_id: str) -> HistoryProjector:
        """The study's projector, kept between calls (its pool and its cache of subjects)."""
        projector = self._projectors.get(study_id)
        if projector is None:
            projector = HistoryProjector(self.study(study_id), self.history_view(study_id))
            self._projectors[study_id] = projector
        return projector

    def reads(self) -> Reads:
        """Connections for the reads a standby may answer (``DATABASE_READ_URL``)."""
        if self._reads is None:
            with self._init_lock:
                if self._reads is None:
                    self._reads = Reads(self.url, self.settings.database_read_url,
                                        self.settings.read_pool_size,
                                        self.settings.database_wait)
        return self._reads

    def primary_read(self) -> AbstractContextManager[psycopg.Connection[Any]]:
        """A connection to the primary for a read that must see what it holds now (a list
        of subjects, a checkpoint, a bundle's tables), lent from the same bounded pool as
        :meth:`reading`'s reads of the primary."""
        return self.reads().primary()

    @contextmanager
    def reading(self, study_id: str, later_than: datetime | None = None
                ) -> Iterator[tuple[psycopg.Connection[Any], ReadSource]]:
        """A connection to read the study's read tables from — exports, audit pages,
        outcome tables — and the server it is on: the standby when one is configured, holds
        the tables of this projection version and has replayed a commit at least as late as
        ``later_than``; the primary otherwise (see :mod:`infra.replica`)."""
        schema = schema_for_study(study_id)
        with self.reads().connection(
                later_than, holds=lambda conn: read_tables_ready(conn, schema)) as read:
            yield read

    def outcomes(self, study_id: str, as_of: datetime | None = None,
                 valid_at: datetime | None = None,
                 told: Callable[[ReadSource], object] | None = None) -> dict[str, Any]:
        """The study's outcome tables as of ``as_of``, from the (caught-up) read tables; with
        ``valid_at``, of what the records said held at that clinical time. ``told`` is told
        which server answered (a standby when configured: see :meth:`reads`)."""
        self.project(study_id)
        endpoints = study_endpoints(self.study(study_id).definition())
        schema = schema_for_study(study_id)
        with self.reading(study_id, as_of) as (conn, source):
            # As of a recorded time, each subject's summary kept then (one row a subject);
            # of a clinical time, or where a summary is wanting, the subjects' facts.
            summaries = (outcome_summaries_as_of(conn, schema, endpoints, as_of)
                         if valid_at is None else None)
            books = (outcome_books(conn, schema, as_of, valid_at) if summaries is None
                     else [])
        if told is not None:
            told(source)
        if summaries is not None:
            return tables_of_summaries(summaries, study_id, endpoints, as_of)
        return outcome_tables(books, study_id, endpoints, as_of, valid_at)

    def outcome_cell(self, study_id: str, cell: str, as_of: datetime | None = None,
                     valid_at: datetime | None = None,
                     told: Callable[[ReadSource], object] | None = None) -> dict[str, Any]:
        """The subjects and records behind one cell of the outcome tables as of ``as_of``
        (and ``valid_at``), each record with the log positions of the events that made it
        what it was then. ``told``: as for :meth:`outcomes`."""
        self.project(study_id)
        endpoints = study_endpoints(self.study(study_id).definition())
        schema = schema_for_study(study_id)
        with self.reading(study_id, as_of) as (conn, source):
            books = outcome_books(conn, schema, as_of, valid_at)
            contributions = cell_contributions(books, endpoints, cell)
            if contributions is None:
                raise NotFound(f"no cell {cell!r} in the outcome tables of {study_id}")
            subjects = cell_sources(conn, schema, study_id, contributions, as_of)
        if told is not None:
            told(source)
        return {"study_id": study_id, "cell": cell,
                "as_of": as_of.isoformat() if as_of else None,
                "valid_at": valid_at.isoformat() if valid_at else None, "subjects": subjects}

    def close(self) -> None:
        """Close every application's and projector's connection pool."""
        for field_keys in self._field_keys.values():
            field_keys.close()
        self._field_keys.clear()
        for projector in self._projectors.values():
            projector.view.datastore.close()
        self._projectors.clear()
        for app in self._apps.values():
            app.close()
        self._apps.clear()
        if self._directory is not None:
            self._directory.close()
            self._directory = None
            self._people = None
        if self._key_claims is not None:
            self._key_claims.close()
            self._key_claims = None
        if self._pool is not None:
            self._pool.close()
            self._pool = None
        if self._reads is not None:
            self._reads.close()
            self._reads = None
        if self._store_pool is not None:
            self._store_pool.shutdown()
            self._store_pool = None
        if self._key is not None:
            close_signer(self._key)
            self._key = None


@contextmanager
def open_runtime(settings: Settings, *, signed: bool = True) -> Iterator[Runtime]:
    """Open a deployment (starting the embedded PostgreSQL if no URL is set); close it after."""
    with database(settings.database_url, settings.pgdata) as url:
        runtime = Runtime(settings, url, signed=signed)
        try:
            yield runtime
        finally:
            runtime.close()
