"""How far sealing and projecting are behind, and whether they have stalled: the sealer
records its progress (:class:`SealerWatch`), a server's workers judge it
(:func:`ledger_lags`, :func:`stalls`) at a scrape of ``/metrics`` or a ``/readyz``."""

from __future__ import annotations

import time
from dataclasses import dataclass, replace
from pathlib import Path

from application.runtime import Runtime
from infra.ledger.logs import DIRECTORY_LOG
from infra.sealer_status import (
    LedgerState,
    LogProgress,
    SealerStatus,
    read_status,
    write_status,
)


class SealerWatch:
    """The sealer's account of its rounds, written to ``path`` after each log it visits (and
    at each round's end: the heartbeat)."""

    def __init__(self, runtime: Runtime, path: Path) -> None:
        self.runtime = runtime
        self.path = path
        self._logs: dict[str, LogProgress] = {}

    def visited(self, log: str) -> None:
        """Record what the sealer left of ``log`` just now (after sealing and projecting)."""
        now = time.time()
        state = self.runtime.ledger_state(log)
        before = self._logs.get(log)
        sealed_moved = before is None or state.sealed != before.sealed or state.unsealed == 0
        projected_moved = (before is None or state.projected != before.projected
                           or state.unprojected == 0)
        self._logs[log] = LogProgress(
            sealed=state.sealed,
            caught_up_at=now if state.unsealed == 0 or before is None else before.caught_up_at,
            advanced_at=now if sealed_moved or before is None else before.advanced_at,
            checkpoint_at=state.checkpoint_at, cosignatures=state.cosignatures,
            projected=state.projected,
            projected_caught_up_at=(now if state.unprojected == 0 or before is None
                                    else before.projected_caught_up_at),
            projected_advanced_at=(now if projected_moved or before is None
                                   else before.projected_advanced_at))
        self.beat()

    def beat(self) -> None:
        """Write the heartbeat with what is known of every log."""
        write_status(self.path, SealerStatus(time.time(), dict(self._logs)))


def start_watch(path: Path) -> None:
    """The status a server starts with, before its sealer's first round: a heartbeat now."""
    write_status(path, SealerStatus(time.time()))


@dataclass(frozen=True)
class LedgerLag:
    """One log's lag as a scrape reports it: events not yet sealed and the seconds since the
    sealer last had none (0 when none wait), the same of the read tables (None: a log
    without any), the newest checkpoint's age and its cosignatures."""

    log: str
    unsealed: int
    sealing_seconds: float
    unprojected: int | None
    projection_seconds: float | None
    checkpoint_age: float | None
    cosignatures: int
    sealing_stalled: bool
    projection_stalled: bool


def ledger_lags(runtime: Runtime, status_path: Path, stall_after: float,
                now: float | None = None) -> tuple[float | None, list[LedgerLag]]:
    """The heartbeat's age (None: no status) and every log's lag, from the database's
    positions now and the sealer's status: a log is stalled when events wait and the sealer
    has made no progress on it for ``stall_after`` seconds."""
    now = time.time() if now is None else now
    status = read_status(status_path)
    beat = 0.0 if status is None else status.beat
    lags = []
    for log in runtime.sealed_logs():
        state = runtime.ledger_state(log)
        progress = None if status is None else status.logs.get(log)
        lags.append(_lag(log, state, progress, beat, now, stall_after))
    return (None if status is None else max(0.0, now - status.beat)), lags


def _lag(log: str, state: LedgerState, progress: LogProgress | None, beat: float, now: float,
         stall_after: float) -> LedgerLag:
    # A log the sealer has not reported yet is judged from its heartbeat.
    if progress is None:
        progress = LogProgress(state.sealed, beat, beat, projected=state.projected,
                               projected_caught_up_at=beat, projected_advanced_at=beat)
    elif progress.projected_caught_up_at is None and state.projected is not None:
        progress = replace(progress, projected_caught_up_at=beat, projected_advanced_at=beat)
    projecting = state.projected is not None
    return LedgerLag(
        log=log, unsealed=state.unsealed,
        sealing_seconds=max(0.0, now - progress.caught_up_at) if state.unsealed else 0.0,
        unprojected=state.unprojected if projecting else None,
        projection_seconds=(max(0.0, now - (progress.projected_caught_up_at or beat))
                            if projecting and state.unprojected else 0.0 if projecting
                            else None),
        checkpoint_age=None if state.checkpoint_at is None else max(0.0,
                                                                    now - state.checkpoint_at),
        cosignatures=state.cosignatures,
        sealing_stalled=state.unsealed > 0 and now - progress.advanced_at > stall_after,
        projection_stalled=(projecting and state.unprojected > 0
                            and now - (progress.projected_advanced_at or beat) > stall_after))


def stalls(lags: list[LedgerLag]) -> list[str]:
    """What has stalled, one phrase each (empty: nothing)."""
    found = []
    for lag in lags:
        name = "the directory" if lag.log == DIRECTORY_LOG else f"study {lag.log}"
        if lag.sealing_stalled:
            found.append(f"sealer: {lag.unsealed} events of {name} wait to be sealed, "
                         f"the oldest for up to {lag.sealing_seconds:.0f} s")
        if lag.projection_stalled:
            found.append(f"projector: {lag.unprojected} events of {name} wait to be "
                         f"projected, the oldest for up to {lag.projection_seconds or 0:.0f} s")
    return found
