"""The application service: one eventsourcing Application per study, commands in protocol terms.

It holds no SQL and no HTTP: persistence comes from the eventsourcing environment, and the
signing mapper is handed in by whoever composes the application.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from copy import deepcopy
from datetime import date, datetime
from typing import Any
from uuid import UUID

from eventsourcing.application import AggregateNotFoundError, ProcessingEvent
from eventsourcing.persistence import IntegrityError, Transcoder
from eventsourcing.utils import EnvType

from domain.clock import Clock, require_aware
from domain.envelope import Envelope
from domain.errors import (
    AlreadyExists,
    ConcurrentWrite,
    Conflict,
    InvalidInput,
    Locked,
    NotFound,
    StaleVersion,
)
from domain.group_commit import RECEIPTS, Abort, Expected, GroupCommitter
from domain.keyring import Keyring, keyring_uuid
from domain.signed_application import MapperFactory, SignedApplication
from domain.study import Study, StudyDefinition, study_uuid
from domain.subject import Subject, subject_uuid
from domain.transcodings import FastJSONTranscoder

# How many times a write is refused so before it gives up: each attempt after the first reads
# the latest state, and only writes by other processes (or a study-level write) can come in
# between (this process takes its writes of one subject in turns).
CONFLICT_ATTEMPTS = 4


class StudyApplication(SignedApplication):
    """All commands of one study. Each call is one transaction: it commits or stores nothing."""

    name = "TrialLedger"

    def __init__(
        self,
        study_id: str,
        env: EnvType | None = None,
        clock: Clock | None = None,
        mapper_factory: MapperFactory | None = None,
    ) -> None:
        self.study_id = study_id
        self._definition: StudyDefinition | None = None
        self._committer: GroupCommitter | None = None
        self._cache_lock = threading.Lock()
        self._subject_turns = _Turns()
        super().__init__(env, clock, mapper_factory)

    def construct_transcoder(self) -> Transcoder:
        """eventsourcing's JSON transcoding, decoded faster (replays decode every event)."""
        transcoder = FastJSONTranscoder()
        self.register_transcodings(transcoder)
        return transcoder

    # --- the study ---------------------------------------------------------------------

    def register_study(self, definition: dict[str, Any], envelope: Envelope) -> UUID:
        """Register this application's study; refuse if it is already registered."""
        if definition.get("study_id") != self.study_id:
            raise InvalidInput("study_id", f"this application holds study {self.study_id}")
        if self.is_registered():
            raise AlreadyExists(f"study {self.study_id} is already registered")
        study = Study.register(definition, envelope, self.clock.now())
        self._save(study)
        return study.id

    def is_registered(self) -> bool:
        """True once the study has been registered."""
        return self._exists(study_uuid(self.study_id))

    def definition(self) -> StudyDefinition:
        """The study's definition (fixed at registration: the cached study will do)."""
        if self._definition is None:
            study: Study = self.aggregate_to_read(study_uuid(self.study_id), False)
            self._definition = study.definition
        return self._definition

    def study(self, *, to_change: bool = False) -> Study:
        """The study aggregate as it stands now (definition, lock, audit review).

        Unless ``to_change``, the cached instance itself is returned: read it, never mutate
        it; and while another thread is bringing the cached study up to date, its state is
        taken as it is rather than queued behind that thread (every command reads the
        study's lock, so waiting there would put all of them in single file).
        """
        try:
            study: Study = self.repository.get(study_uuid(self.study_id),
                                               deepcopy_from_cache=to_change,
                                               fastforward_skipping=not to_change)
        except AggregateNotFoundError:
            raise NotFound(f"study {self.study_id} is not registered") from None
        return study

    def on_study(self, command: Callable[[Study, datetime], None]) -> int:
        """Load the study, run one command at the clock's time, save; return the new version."""
        study = self.study(to_change=True)
        command(study, self.clock.now())
        self._save(study)
        return study.version

    # --- subjects ----------------------------------------------------------------------

    def enroll_subject(
        self,
        subject_code: str,
        site: str,
        date_of_birth: date,
        sex: str,
        disease: str,
        consent_date: date,
        screening_answers: Mapping[str, Any],
        arm: str,
        enrolled_on: date,
        envelope: Envelope,
    ) -> UUID:
        """Consent, screen against every criterion, and enroll — all stored, or nothing.
        Refused while the study is locked, as every other casebook write is."""
        current = self.study()
        if current.locked:
            raise Locked(f"study {self.study_id} is locked")
        study = self.definition()
        if self._exists(subject_uuid(self.study_id, subject_code)):
            raise AlreadyExists(f"subject {subject_code} already exists")
        at = self.clock.now()
        subject = Subject.consent(study, subject_code, site, date_of_birth, sex, disease,
                                  consent_date, envelope, at)
        subject.screen(study.eligibility, screening_answers, envelope, at)
        subject.enroll(study, arm, enrolled_on, envelope, at)
        # The lock read above must still hold when the subject is stored.
        self._save(subject, relied_on=[(current.id, current.version)])
        return subject.id

    def is_subject(self, subject_code: str) -> bool:
        """True if subject ``subject_code`` exists in this study."""
        return self._exists(subject_uuid(self.study_id, subject_code))

    def save_imported(self, subjects: Sequence[Subject]) -> None:
        """Store the new events of many subjects in one transaction (a bulk load, e.g. an
        SDTM import): one commit for thousands of events instead of one per command. The
        subjects' commands have already run; all of it is stored, or nothing."""
        self._save(*subjects)

    def subject(self, subject_code: str, *, to_change: bool = False) -> Subject:
        """A subject's casebook as it stands now.

        Unless ``to_change``, the cached instance itself is returned: read it, never mutate it
        (copying a long casebook costs more than the rest of a request).
        """
        try:
            subject: Subject = self.repository.get(subject_uuid(self.study_id, subject_code),
                                                   deepcopy_from_cache=to_change)
        except AggregateNotFoundError:
            raise NotFound(f"no subject {subject_code} in study {self.study_id}") from None
        return subject

    def subject_as_of(self, subject_code: str, as_of: datetime) -> Subject:
        """The casebook as the system showed it at ``as_of`` (recorded time)."""
        as_of = require_aware("as_of", as_of)
        subject: Subject | None = None
        for event in self.events.get(subject_uuid(self.study_id, subject_code)):
            assert isinstance(event, Subject.Event)
            if event.timestamp > as_of:
                break
            subject = event.mutate(subject)
        if subject is None:
            raise NotFound(f"no subject {subject_code} in study {self.study_id} as of {as_of}")
        return subject

    def on_subject(
        self,
        subject_code: str,
        command: Callable[[Subject, datetime], None],
        *,
        expected_version: int | None = None,
        may_act: Callable[[Subject], object] | None = None,
    ) -> Subject:
        """Load the subject, run one command at the clock's time, save; return the subject.

        ``may_act`` (e.g. the caller's role at the subject's site) runs first and refuses by
        raising. ``expected_version`` (the version the client read) turns a stale write into
        a refusal. While the study is locked, every command on its subjects is refused.

        The command first runs on the cached subject and study as they are, without asking
        the store whether they moved on (another process may have written since). That is
        settled afterwards: the store refuses the new events if the subject's version is
        taken or the study's version changed, and a refusal of the command is only given if
        the store holds nothing newer. Either way the command runs once more on the latest
        state, which is then the answer.
        """
        write = SubjectWrite(self, subject_code, command, expected_version, may_act)
        while True:
            try:
                subject = write.attempt()
            except Exception:
                if write.refusal_stands():
                    raise
                continue
            try:
                self._save(subject, relied_on=write.relied_on)
            except Conflict:
                write.conflicted()
                continue
            return subject

    async def on_subject_async(
        self,
        subject_code: str,
        command: Callable[[Subject, datetime], None],
        *,
        expected_version: int | None = None,
        may_act: Callable[[Subject], object] | None = None,
    ) -> Subject:
        """:meth:`on_subject` for an event loop: the command runs on the loop when the
        subject and study are cached, and the loop serves other requests while the commit
        is under way; what has to read the store runs in a worker thread."""
        write = SubjectWrite(self, subject_code, command, expected_version, may_act)
        # One write of a subject at a time in this process: concurrent ones would each
        # compute the same next version, and all but one be refused by the store.
        async with self._subject_turns.turn(subject_code):
            while True:
                try:
                    subject = (write.attempt() if write.cached()
                               else await asyncio.to_thread(write.attempt))
                except Exception:
                    if await asyncio.to_thread(write.refusal_stands):
                        raise
                    continue
                try:
                    await self._save_async(subject, relied_on=write.relied_on)
                except Conflict:
                    write.conflicted()
                    continue
                return subject

    def aggregate_to_change(self, aggregate_id: UUID, latest: bool, missing: str) -> Any:
        """A copy of the aggregate for a command: the cached one as it is unless ``latest``
        (then brought up to date from the store first)."""
        if not latest and self.repository.cache is not None:
            try:
                return deepcopy(self.repository.cache.get(aggregate_id))
            except KeyError:
                pass
        try:
            return self.repository.get(aggregate_id)
        except AggregateNotFoundError:
            raise NotFound(missing) from None

    def aggregate_to_read(self, aggregate_id: UUID, latest: bool, missing: str = "") -> Any:
        """The cached aggregate itself (read it, never mutate it), brought up to date from
        the store only if ``latest`` or not cached yet."""
        if not latest and self.repository.cache is not None:
            try:
                return self.repository.cache.get(aggregate_id)
            except KeyError:
                pass
        try:
            return self.repository.get(aggregate_id, deepcopy_from_cache=False)
        except AggregateNotFoundError:
            raise NotFound(missing or f"study {self.study_id} is not registered") from None

    def is_cached(self, aggregate_id: UUID) -> bool:
        """True if the aggregate is in this process's cache (it can be had without the
        store, as it was last seen here)."""
        cache = self.repository.cache
        return cache is not None and aggregate_id in cache.cache

    # --- signing keys ------------------------------------------------------------------

    def keyring(self) -> Keyring | None:
        """The study's keyring, if any key has been registered."""
        try:
            keyring: Keyring = self.repository.get(keyring_uuid(self.study_id))
        except AggregateNotFoundError:
            return None
        return keyring

    def register_key(self, key_id: str, public_key: str, envelope: Envelope,
                     retire: str | None = None) -> None:
        """Register a signing key (and retire ``retire``), in one transaction.

        The events are signed by the key in use when this is called: the old key vouches
        for the new one.
        """
        at = self.clock.now()
        keyring = self.keyring() or Keyring.open(self.study_id, envelope, at)
        keyring.register(key_id, public_key, envelope, at)
        if retire is not None:
            keyring.retire(retire, envelope, at)
        self._save(keyring)

    def revoke_key(self, key_id: str, effective_at: datetime, reason: str,
                   envelope: Envelope) -> None:
        """Revoke a compromised key from ``effective_at``."""
        keyring = self.keyring()
        if keyring is None:
            raise NotFound(f"study {self.study_id} has no keyring")
        keyring.revoke(key_id, effective_at, reason, envelope, self.clock.now())
        self._save(keyring)

    # --- internals -------------------------------------------------------------------

    def _exists(self, aggregate_id: UUID) -> bool:
        return bool(self.recorder.select_events(aggregate_id, lte=1))

    def commit_in_groups(self, timeout: float | None = None, abort: Abort | None = None
                         ) -> None:
        """From now on, store concurrent commands' events in shared transactions (a server
        turns this on; see :mod:`domain.group_commit`); a transaction that takes longer than
        ``timeout`` seconds is ended with ``abort`` and its commands fail with
        :class:`~domain.group_commit.CommitTimedOut`."""
        if self._committer is None:
            self._committer = GroupCommitter(self._save_events, timeout=timeout, abort=abort)

    def _save_events(self, events: Sequence[Any], relied_on: Expected,
                     receipts: Sequence[object] = ()) -> None:
        """``self.save(*events, expected_versions=relied_on, receipts=receipts)`` (the
        receipts stored in the events' transaction), the same steps (eventsourcing
        9.5.6's ``Application.save``) without its check of each event against
        ``DomainEventProtocol``: a runtime-checkable typing Protocol, whose ``isinstance``
        walks the protocol's attributes every time (about a tenth of the committer thread's
        CPU). The events are the aggregates' own, collected by :meth:`_save`."""
        processing: ProcessingEvent[UUID] = ProcessingEvent()
        processing.events.extend(events)
        processing.saved_kwargs["expected_versions"] = relied_on
        processing.saved_kwargs["receipts"] = receipts
        recordings = self._record(processing)
        self._take_snapshots(processing)
        self._notify(recordings)
        self.notify(processing.events)  # deprecated in eventsourcing, called as save does

    def close(self) -> None:
        """Stop the group committer (after what is queued), then close the store."""
        if self._committer is not None:
            self._committer.close()
            self._committer = None
        super().close()

    def _save(self, *aggregates: Study | Subject | Keyring, relied_on: Expected = ()) -> None:
        """Store the aggregates' new events in one transaction, provided the aggregates in
        ``relied_on`` are still at the versions given."""
        try:
            if self._committer is not None:
                self._committer.commit([e for a in aggregates for e in a.collect_events()],
                                       relied_on)
            else:
                self.save(*aggregates, expected_versions=relied_on, receipts=RECEIPTS.get())
        except IntegrityError as e:
            raise ConcurrentWrite() from e
        for aggregate in aggregates:
            self._remember(aggregate)

    async def _save_async(self, aggregate: Subject, relied_on: Expected) -> None:
        """:meth:`_save` awaiting the group commit rather than blocking on it."""
        if self._committer is None:
            await asyncio.to_thread(self._save, aggregate, relied_on=relied_on)
            return
        try:
            await self._committer.submit_awaited(list(aggregate.collect_events()), relied_on)
        except IntegrityError as e:
            raise ConcurrentWrite() from e
        self._remember(aggregate)

    def _remember(self, aggregate: Study | Subject | Keyring) -> None:
        """Cache what was just committed, the aggregate at its latest version, so the next
        command does not read back and re-verify the events it wrote itself; unless a
        concurrent command of this process cached a later version already."""
        cache = self.repository.cache
        if cache is None:
            return
        with self._cache_lock:
            try:
                cached = cache.get(aggregate.id)
            except KeyError:
                cached = None
            if cached is None or cached.version < aggregate.version:
                cache.put(aggregate.id, aggregate)


class SubjectWrite:
    """One command on a subject, tried on the cached state first (see
    :meth:`StudyApplication.on_subject`)."""

    def __init__(self, app: StudyApplication, subject_code: str,
                 command: Callable[[Subject, datetime], None], expected_version: int | None,
                 may_act: Callable[[Subject], object] | None) -> None:
        self.app = app
        self.subject_code = subject_code
        self.command = command
        self.expected_version = expected_version
        self.may_act = may_act
        self.subject_id = subject_uuid(app.study_id, subject_code)
        self.study_id = study_uuid(app.study_id)
        self.missing = f"no subject {subject_code} in study {app.study_id}"
        # Without a cache there is nothing to trust: every attempt reads the latest state.
        self.on_latest = app.repository.cache is None
        self.relied_on: Expected = ()
        self._read_as = (0, 0)
        self._conflicts = 0

    def conflicted(self) -> None:
        """The store refused the write (another wrote the subject or the study first): the
        next attempt reads the latest state; raise :class:`ConcurrentWrite` after
        :data:`CONFLICT_ATTEMPTS` refusals."""
        self._conflicts += 1
        if self._conflicts >= CONFLICT_ATTEMPTS:
            raise ConcurrentWrite()
        self.on_latest = True

    def cached(self) -> bool:
        """True if an attempt now needs nothing from the store."""
        return not self.on_latest and self.app.is_cached(self.subject_id) \
            and self.app.is_cached(self.study_id)

    def attempt(self) -> Subject:
        """Run the command on a copy of the subject (cached or latest); return the copy with
        its new events pending, or raise the command's refusal."""
        subject: Subject = self.app.aggregate_to_change(self.subject_id, self.on_latest,
                                                        self.missing)
        study: Study = self.app.aggregate_to_read(self.study_id, self.on_latest)
        self._read_as = subject.version, study.version
        self.relied_on = [(self.study_id, study.version)]
        if self.may_act is not None:
            self.may_act(subject)
        if study.locked:
            raise Locked(f"study {self.app.study_id} is locked")
        if self.expected_version is not None and subject.version != self.expected_version:
            raise StaleVersion(
                f"subject {self.subject_code} is at version {subject.version}, "
                f"not {self.expected_version}"
            )
        # The soft checks of the command's records are the protocol's.
        subject.use_protocol(study.definition)
        self.command(subject, self.app.clock.now())
        return subject

    def refusal_stands(self) -> bool:
        """After an attempt was refused: True if it ran on the latest state; otherwise bring
        the cache up to date and say whether the store held anything newer (if not, the
        refusal stands as well)."""
        if self.on_latest:
            return True
        self.on_latest = True
        latest = (self.app.aggregate_to_read(self.subject_id, True, self.missing).version,
                  self.app.aggregate_to_read(self.study_id, True).version)
        return latest == self._read_as


class _Turns:
    """Per-key turns for the coroutines of each event loop: one holder of a key at a time,
    the others waiting in order; a key nobody holds or waits for is forgotten. (Each loop
    has turns of its own: an asyncio lock serves one loop, and a server has one.)"""

    def __init__(self) -> None:
        self._locks: dict[tuple[asyncio.AbstractEventLoop, str], tuple[asyncio.Lock, int]] = {}

    @contextlib.asynccontextmanager
    async def turn(self, key: str) -> AsyncIterator[None]:
        """Wait for ``key``'s turn; hold it inside the block."""
        named = (asyncio.get_running_loop(), key)
        lock, users = self._locks.get(named) or (asyncio.Lock(), 0)
        self._locks[named] = (lock, users + 1)
        try:
            async with lock:
                yield
        finally:
            lock, users = self._locks[named]
            if users == 1:
                del self._locks[named]
            else:
                self._locks[named] = (lock, users - 1)
