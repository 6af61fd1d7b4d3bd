"""Prometheus across a server's processes (its workers and its sealer): multiprocess mode,
and each process's own figures (memory, CPU, open files, connection pools).

prometheus_client's multiprocess mode keeps every process's values in files of one directory
(``PROMETHEUS_MULTIPROC_DIR``) and sums or lists them at a scrape. Its process collector
reads only the scraping process, so each process here copies its own figures into gauges
labelled with its pid (``liveall``: a process that has ended drops out), every
:data:`REFRESH` seconds at most.
"""

from __future__ import annotations

import functools
import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from prometheus_client import CollectorRegistry, Gauge, ProcessCollector, values
from prometheus_client import multiprocess as prometheus_multiprocess
from psycopg_pool import ConnectionPool

MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"
# Seconds between two copies of a process's figures: cheap, but not on every request.
REFRESH = 5.0

# Outside multiprocess mode (one process: tests, a server embedded in another program) the
# gauges below are served from this registry.
PROCESS_REGISTRY = CollectorRegistry()


@dataclass(frozen=True)
class _Gauges:
    """The per-process gauges, made on first use: a metric made before
    :func:`start_multiprocess` would keep its value in this process only."""

    process: dict[str, Gauge]
    pool_size: Gauge
    pool_available: Gauge
    pool_waiting: Gauge


@functools.cache
def _gauges() -> _Gauges:
    def gauge(name: str, documentation: str, *labels: str) -> Gauge:
        return Gauge(name, documentation, ["role", *labels], registry=PROCESS_REGISTRY,
                     multiprocess_mode="liveall")

    return _Gauges(
        process={
            "process_resident_memory_bytes": gauge(
                "trialledger_process_resident_memory_bytes",
                "Resident memory of each process (bytes)"),
            "process_cpu_seconds": gauge(
                "trialledger_process_cpu_seconds", "CPU time each process has used (seconds)"),
            "process_open_fds": gauge(
                "trialledger_process_open_fds", "Open file descriptors of each process"),
            "process_start_time_seconds": gauge(
                "trialledger_process_start_time_seconds", "When each process started (Unix s)"),
        },
        pool_size=gauge("trialledger_pool_connections",
                        "Connections a pool holds (in use or idle)", "pool"),
        pool_available=gauge("trialledger_pool_available", "Idle connections a pool holds",
                             "pool"),
        pool_waiting=gauge("trialledger_pool_waiting",
                           "Callers waiting for a connection of a pool", "pool"))


def start_multiprocess(directory: Path) -> None:
    """Collect every process's metrics in ``directory`` from now on (this process's and
    those it starts after this); a process that has imported prometheus_client already
    switches too, for the metrics it creates after this."""
    os.environ[MULTIPROC_ENV] = str(directory)
    values.ValueClass = values.get_value_class()  # type: ignore[no-untyped-call]


def multiprocess() -> bool:
    """True when metrics are collected across processes (see :func:`start_multiprocess`)."""
    return MULTIPROC_ENV in os.environ


def multiprocess_registry() -> CollectorRegistry:
    """A registry of every process's metrics, read from the directory at each collect."""
    registry = CollectorRegistry()
    prometheus_multiprocess.MultiProcessCollector(registry)  # type: ignore[no-untyped-call]
    return registry


def process_ended() -> None:
    """Drop this process's live gauges (its pid's files) from the collection."""
    if multiprocess():
        prometheus_multiprocess.mark_process_dead(os.getpid())  # type: ignore[no-untyped-call]


class ProcessFigures:
    """Copies this process's figures and its pools' statistics into the gauges, at most every
    :data:`REFRESH` seconds (a call in between costs one clock read)."""

    def __init__(self, role: str) -> None:
        self.role = role
        self._collector = ProcessCollector(registry=None)
        self._next = 0.0
        self._lock = threading.Lock()

    def refresh(self, pools: Callable[[], dict[str, ConnectionPool[Any]]], *,
                now: bool = False) -> None:
        """Copy the figures and those of the ``pools`` (asked for only then) if due (or
        ``now``)."""
        moment = time.monotonic()
        if not now and moment < self._next:
            return
        if not self._lock.acquire(blocking=False):
            return  # another thread is copying them
        try:
            self._next = moment + REFRESH
            gauges = _gauges()
            for family in self._collector.collect():
                for sample in family.samples:
                    gauge = gauges.process.get(sample.name.removesuffix("_total"))
                    if gauge is not None:
                        gauge.labels(self.role).set(sample.value)
            for name, pool in pools().items():
                stats = pool.get_stats()
                gauges.pool_size.labels(self.role, name).set(stats.get("pool_size", 0))
                gauges.pool_available.labels(self.role, name).set(
                    stats.get("pool_available", 0))
                gauges.pool_waiting.labels(self.role, name).set(
                    stats.get("requests_waiting", 0))
        finally:
            self._lock.release()
