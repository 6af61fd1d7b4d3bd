"""A rebuild's replay split across processes, each folding the subjects of one part of the log.

Folding events is Python, bound to one core per process: with a part per core, the replay of
1M events on 2 cores went from 59 s to 38 s (``bench/read_bench.py``). The parts write into
the rebuild's staging tables; the parent process then indexes and swaps them in as usual.
"""

from __future__ import annotations

import dataclasses
import multiprocessing
import os
import queue
from collections.abc import Callable
from multiprocessing.process import BaseProcess
from multiprocessing.queues import Queue
from typing import Any

from psycopg.conninfo import make_conninfo

from infra.logging import configure_logging, get_logger
from infra.settings import Settings

log = get_logger(__name__)

# Starting a part costs about a second (a new interpreter and its connections); a log this
# short replays in a few seconds in one process.
PARTS_FROM = 50_000
MAX_PARTS = 8
# Connections a part holds: one for its reader thread, one for its writer thread (its store
# pool), the one that opened the study (its API pool), and one for the data keys of sealed
# values, which its folding thread reads.
POOLED_PER_PART = 2
CONNECTIONS_PER_PART = POOLED_PER_PART + 2
# What the parts of one rebuild hold together at most, however many parts are asked for: a
# server shared with a deployment's other processes has few to spare (PostgreSQL's default
# max_connections is 100).
REBUILD_CONNECTIONS = 24
# How the parts' connections are named in pg_stat_activity.
PART_APPLICATION_NAME = "trialledger-rebuild-part"


class RebuildFailed(RuntimeError):
    """A part of a rebuild's replay failed (the old read tables stay in place)."""


def parts_for(events: int) -> int:
    """How many processes to replay a log of ``events`` in: one per core, for a long log.

    One in a daemonic process (a server's sealer, which rebuilds after an upgrade changed the
    projection version): it may not start processes of its own.
    """
    if events < PARTS_FROM or multiprocessing.current_process().daemon:
        return 1
    return max(1, min(os.cpu_count() or 1, MAX_PARTS))


class PartsReplay:
    """Replays a study's log in ``parts`` child processes (a ``replay`` for
    :meth:`projections.projector.HistoryProjector.rebuild`), holding at most ``connections``
    database connections together: fewer parts than asked for when that many would need
    more."""

    def __init__(self, settings: Settings, url: str, study_id: str, parts: int, *,
                 signed: bool = True, batch_size: int = 5000,
                 on_batch: Callable[[int], object] | None = None,
                 connections: int = REBUILD_CONNECTIONS) -> None:
        # Each part's pools hold what its two threads and its set-up use, and no more.
        self.settings = dataclasses.replace(settings, store_pool_size=POOLED_PER_PART,
                                            api_pool_size=1)
        self.url = make_conninfo(url, application_name=PART_APPLICATION_NAME)
        self.study_id = study_id
        self.parts = max(1, min(parts, connections // CONNECTIONS_PER_PART))
        self.signed = signed
        self.batch_size = batch_size
        self.on_batch = on_batch
        self.processes: list[BaseProcess] = []

    def __call__(self, through: int) -> int:
        """Stage the events up to position ``through``; return how many there were."""
        context = multiprocessing.get_context("spawn")
        messages: Queue[tuple[str, Any]] = context.Queue()
        self.processes = [context.Process(
            target=_replay_part, name=f"trialledger-rebuild-{part}", daemon=True,
            args=(self.settings, self.url, self.signed, self.study_id, part, self.parts,
                  through, self.batch_size, messages)) for part in range(self.parts)]
        for process in self.processes:
            process.start()
        try:
            return self._follow(messages)
        finally:
            for process in self.processes:
                if process.is_alive():
                    process.terminate()
                process.join()

    def _follow(self, messages: Queue[tuple[str, Any]]) -> int:
        """Pass on the parts' progress until each has finished; raise if one fails."""
        done = finished = 0
        while finished < self.parts:
            try:
                kind, value = messages.get(timeout=0.5)
            except queue.Empty:
                kind, value = "", None
            if kind == "batch":
                done += value
                if self.on_batch is not None:
                    self.on_batch(value)
            elif kind == "done":
                finished += 1
            elif kind == "failed":
                raise RebuildFailed(f"rebuild of {self.study_id}: {value}")
            for process in self.processes:
                # A part that died without a word (killed, out of memory) sent no "failed".
                if process.exitcode not in (None, 0):
                    raise RebuildFailed(f"rebuild of {self.study_id}: {process.name} ended "
                                        f"with exit code {process.exitcode}")
        return done


def _replay_part(settings: Settings, url: str, signed: bool, study_id: str, part: int,
                 parts: int, through: int, batch_size: int,
                 messages: Queue[tuple[str, Any]]) -> None:
    """A child process's part: fold it into the staging tables, reporting each batch."""
    # Imported here, in the child: the runtime is what starts these processes.
    from application.runtime import Runtime
    from projections.projector import HistoryProjector

    configure_logging()
    parent = multiprocessing.parent_process()

    def report(size: int) -> None:
        if parent is not None and not parent.is_alive():
            raise SystemExit("the rebuild's parent process is gone")
        messages.put(("batch", size))

    runtime = Runtime(settings, url, signed=signed)
    try:
        projector = HistoryProjector(runtime.study(study_id), runtime.history_view(study_id))
        projector.replay_part(part, parts, through, batch_size, on_batch=report)
        messages.put(("done", part))
    except Exception as e:
        log.exception("rebuild.part_failed", study=study_id, part=part)
        messages.put(("failed", f"part {part} of {parts}: {type(e).__name__}: {e}"))
    finally:
        runtime.close()
