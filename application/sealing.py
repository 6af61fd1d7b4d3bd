"""The background work a server runs every few seconds for every study, and for the
directory: seal new events, sign a checkpoint covering them within the checkpoint interval of
their commit (and every 1,000 events), then project a study's into its read tables; and every
ten minutes, delete the idempotency keys whose answers expired.

It runs in a process of its own: hashing, verifying and projecting thousands of events would
otherwise hold the interpreter that answers requests (on the write path's p99, ~100 ms
more in ``bench/http_bench.py``), and a failure there cannot take the API down.
"""

from __future__ import annotations

import dataclasses
import multiprocessing
import os
import signal
import time
from collections.abc import Callable
from datetime import UTC, datetime
from multiprocessing.synchronize import Event
from pathlib import Path

from application.ledger_watch import SealerWatch
from application.outage import Outage
from application.runtime import Runtime
from infra.ledger.logs import DIRECTORY_LOG
from infra.ledger.sealer import CHECKPOINT_INTERVAL, SEAL_INTERVAL, SealingRefused, SealResult
from infra.logging import configure_logging, get_logger
from infra.process_metrics import ProcessFigures, process_ended
from infra.settings import Settings

log = get_logger(__name__)

SEALER_STORE_POOL_SIZE = 1
"""Event-store connections the sealer's process holds at most (its projector's reader,
writer and fold then take turns: they hold one each, never two)."""
SEALER_NICENESS = 10
"""How much lower the sealer's process is scheduled than the server's (``nice``): its rounds
are bursts of a core or more every few seconds (fold, seal, hash), and on a busy machine a
burst took the cores from the processes answering requests, every client's answer waiting
behind it (a third of a keyed ``bench/http_bench.py`` run's slow answers). At a lower
priority it uses what the requests leave: a round under load takes longer, none waits."""
SEALER_API_POOL_SIZE = 1
"""Connections for the sealer's own statements (sealing, the projection's lock, the ledger's
state): one at a time, in one thread."""


PURGE_KEYS_EVERY = 600.0
"""Seconds between two purges of expired idempotency keys by the sealer's rounds."""


class SealingRounds:
    """Seals and projects every study, one round at a time (every ``round_interval``
    seconds); signs a checkpoint over new leaves so that none waits longer than
    ``checkpoint_interval`` for one, but signs no more often than that needs."""

    def __init__(self, runtime: Runtime, checkpoint_interval: float = CHECKPOINT_INTERVAL,
                 round_interval: float = SEAL_INTERVAL, watch: SealerWatch | None = None
                 ) -> None:
        self.runtime = runtime
        self.watch = watch
        # An event committed just after a checkpoint is sealed by the next round; the
        # checkpoint covering it comes with the last round that still fits in the interval.
        self._checkpoint_after = max(0.0, checkpoint_interval - round_interval)
        self._last_checkpoint: dict[str, float] = {}
        self._keys_purged_at: float | None = None
        self.outage = Outage()

    def seal_all(self) -> None:
        """One round over the directory and every study. The database being away ends the
        round (logged by :attr:`outage`, once, then at a back-off); the next round tries
        again."""
        try:
            self._round()
        finally:
            if self.watch is not None:
                self.watch.beat()

    def final_round(self) -> None:
        """The round of a sealer that is stopping: seals what is pending and signs a
        checkpoint over it, whatever the checkpoint interval."""
        self._last_checkpoint.clear()
        self.seal_all()

    def _round(self) -> None:
        try:
            if self.outage.away:
                # A connection of its own answers at once; the pools would wait out their
                # timeout each round, trying the database less often than every round.
                self.runtime.probe()
            studies = self.runtime.studies()
        except Exception as e:
            if not self.outage.failed(e):
                raise
            return
        try:
            self._seal_directory()
        except SealingRefused as e:
            log.error("ledger.sealing_refused", study=DIRECTORY_LOG, reason=str(e))
        except Exception as e:
            if self.outage.failed(e):
                return
            log.exception("ledger.round_failed", study=DIRECTORY_LOG)
        try:
            self._purge_keys()
        except Exception as e:
            if self.outage.failed(e):
                return
            log.exception("idempotency.purge_failed")
        for study_id, _ in studies:
            try:
                self._seal_and_project(study_id)
            except SealingRefused as e:
                # Never seal past a bad event; say so loudly, keep serving reads.
                log.error("ledger.sealing_refused", study=study_id, reason=str(e))
            except Exception as e:
                if self.outage.failed(e):
                    return
                # One study's failure (read tables the role may not rebuild) must not end
                # the rounds: the next round tries again.
                log.exception("ledger.round_failed", study=study_id)
        self.outage.succeeded()

    def _purge_keys(self) -> None:
        """Every :data:`PURGE_KEYS_EVERY` seconds, delete idempotency keys whose answers
        expired (a batch at a time: what is left goes the next time)."""
        now = time.monotonic()
        if self._keys_purged_at is not None and now - self._keys_purged_at < PURGE_KEYS_EVERY:
            return
        self._keys_purged_at = now
        with self.runtime.pool().connection() as conn:
            purged = self.runtime.idempotency().purge_expired(conn, datetime.now(UTC))
        if purged:
            log.info("idempotency.purged", rows=purged)

    def _due(self, name: str) -> bool:
        """True if the log ``name`` (a study id, or the directory's) is due a checkpoint."""
        last = self._last_checkpoint.get(name)
        # Still due when nothing was new: the next event is then signed the round it is sealed.
        return last is None or time.monotonic() - last >= self._checkpoint_after

    def _sealed(self, name: str, result: SealResult, started: float) -> None:
        if result.checkpoint_size is not None:
            self._last_checkpoint[name] = started
        if result.sealed:
            log.info("ledger.sealed", study=name, sealed=result.sealed,
                     tree_size=result.tree_size, checkpoint=result.checkpoint_size)

    def _seal_directory(self) -> None:
        started = time.monotonic()
        result = self.runtime.seal_directory(force_checkpoint=self._due(DIRECTORY_LOG))
        if result is not None:
            self._sealed(DIRECTORY_LOG, result, started)
            self._visited(DIRECTORY_LOG)

    def _visited(self, log: str) -> None:
        if self.watch is not None:
            self.watch.visited(log)

    def _seal_and_project(self, study_id: str) -> None:
        started = time.monotonic()
        result = self.runtime.seal(study_id, force_checkpoint=self._due(study_id))
        self._sealed(study_id, result, started)
        projected = self.runtime.project(study_id)
        if projected:
            log.info("projection.caught_up", study=study_id, events=projected)
        self._visited(study_id)


def _seal_until_stopped(settings: Settings, url: str, stopping: Event, interval: float,
                        checkpoint_interval: float, status_path: Path | None) -> None:
    configure_logging()
    # Its server stops it (the event) once the requests in flight are answered; a SIGTERM or
    # Ctrl-C sent to the whole process group must not end it before that last round.
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    os.nice(SEALER_NICENESS)
    # One study at a time: sealing, then projecting. The server's own pools (store 4, API 2,
    # reads 2) keep the rest of a default server's ten connections.
    runtime = Runtime(dataclasses.replace(
        settings, store_pool_size=min(settings.store_pool_size, SEALER_STORE_POOL_SIZE),
        api_pool_size=min(settings.api_pool_size, SEALER_API_POOL_SIZE)), url)
    figures = ProcessFigures("sealer")
    try:
        rounds = SealingRounds(runtime, checkpoint_interval, interval,
                               None if status_path is None else SealerWatch(runtime, status_path))
        server = multiprocessing.parent_process()
        # Ends with the server, even one killed before it could say stop.
        while not stopping.wait(interval) and (server is None or server.is_alive()):
            _guarded(rounds.seal_all)
            figures.refresh(runtime.pools)
        if stopping.is_set():
            _guarded(rounds.final_round)
            log.info("ledger.sealer_stopped")
    finally:
        runtime.close()
        process_ended()


def _guarded(run: Callable[[], None]) -> None:
    try:
        run()
    except Exception:  # e.g. the list of studies unreadable: the next round tries again
        log.exception("ledger.round_failed")


class BackgroundSealer:
    """Seals every ``interval`` seconds (or every ``checkpoint_interval``, if shorter), in a
    child process, on the runtime's database; see :class:`SealingRounds`."""

    def __init__(self, runtime: Runtime, interval: float = SEAL_INTERVAL,
                 checkpoint_interval: float = CHECKPOINT_INTERVAL,
                 status_path: Path | None = None) -> None:
        context = multiprocessing.get_context("spawn")
        self._stopping = context.Event()
        self._process = context.Process(
            target=_seal_until_stopped, name="trialledger-sealer", daemon=True,
            args=(runtime.settings, runtime.url, self._stopping,
                  min(interval, checkpoint_interval), checkpoint_interval, status_path))

    def start(self) -> None:
        """Start the child process."""
        self._process.start()

    @property
    def pid(self) -> int | None:
        """The child's process id (None until started)."""
        return self._process.pid

    def stop(self, wait: float = 30.0) -> None:
        """Stop after the current round and a last one that seals what is pending (or, past
        ``wait`` seconds, at once: what a round writes, it writes in transactions, and the
        next start resumes where it stopped)."""
        self._stopping.set()
        self._process.join(timeout=wait)
        if self._process.is_alive():
            self._process.terminate()
            self._process.join()
