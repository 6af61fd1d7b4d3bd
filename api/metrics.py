"""The server's Prometheus metrics: requests, sign-in failures and lock-outs, and at each
scrape the ledger's lags, the checkpoints' age and cosignatures, pools and processes.

Under ``trialledger serve`` every process (workers and sealer) writes to one multiprocess
directory (:mod:`infra.process_metrics`), so a scrape of any worker answers for all of them.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from application.ledger_watch import ledger_lags
from application.runtime import Runtime
from infra.logging import get_logger
from infra.process_metrics import (
    PROCESS_REGISTRY,
    ProcessFigures,
    multiprocess,
    multiprocess_registry,
)
from infra.unavailable import unavailable_reason

_log = get_logger(__name__)
MAX_CACHED_CHILDREN = 1024


class Metrics:
    """Prometheus metrics of one app (its own registry, so two apps in a process don't mix;
    in multiprocess mode the values live in the shared directory). ``status_path``: the
    sealer's status file (see :mod:`application.ledger_watch`), when a sealer runs."""

    def __init__(self, runtime: Runtime, status_path: Path | None = None) -> None:
        self.runtime = runtime
        self.registry = CollectorRegistry()
        self.requests = Counter("trialledger_http_requests_total", "HTTP requests answered",
                                ["method", "route", "status"], registry=self.registry)
        self.latency = Histogram("trialledger_http_request_seconds", "HTTP request latency",
                                 ["method", "route"], registry=self.registry,
                                 buckets=(.002, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 10))
        # An alarm: a person or client refused because their directory record was altered.
        self.directory_verification_failures = Counter(
            "trialledger_directory_verification_failures",
            "Directory records refused because they fail verification (tampering)",
            registry=self.registry)
        self.sign_in_failures = Counter(
            "trialledger_sign_in_failures", "Sign-ins and re-authentications refused (wrong "
            "name, password or code, or an account that may not sign in)",
            registry=self.registry)
        self.lockouts = Counter("trialledger_lockouts",
                                "Accounts locked out by repeated failed sign-ins",
                                registry=self.registry)
        # Each (method, route, status)'s children of the two request metrics: ``labels()``
        # checks, converts and locks at every call, and every request asks for them.
        self._answered: dict[tuple[str, str, int], tuple[Any, Any]] = {}
        self.figures = ProcessFigures("api")
        self.ledger = None if status_path is None else LedgerCollector(runtime, status_path)

    def answered(self, method: str, route: str, status: int, seconds: float) -> None:
        """Count a request answered with ``status`` and observe its latency: the same as
        ``requests.labels(method, route, str(status)).inc()`` and
        ``latency.labels(method, route).observe(seconds)``, the children looked up once."""
        key = (method, route, status)
        children = self._answered.get(key)
        if children is None:
            children = (self.requests.labels(method, route, str(status)),
                        self.latency.labels(method, route))
            if len(self._answered) < MAX_CACHED_CHILDREN:  # methods are the client's to name
                self._answered[key] = children
        children[0].inc()
        children[1].observe(seconds)

    def sign_in_refused(self, locked_out: bool) -> None:
        """Count a refused sign-in (and the lock-out it caused, if it did)."""
        self.sign_in_failures.inc()
        if locked_out:
            self.lockouts.inc()

    def exposition(self) -> bytes:
        """Every metric in the text format: all processes' in multiprocess mode, plus the
        ledger's as read now."""
        self.figures.refresh(self.runtime.pools, now=True)
        parts = []
        if multiprocess():
            parts.append(generate_latest(multiprocess_registry()))
        else:
            parts += [generate_latest(self.registry), generate_latest(PROCESS_REGISTRY)]
        if self.ledger is not None:
            ledger = CollectorRegistry()
            ledger.register(self.ledger)
            parts.append(generate_latest(ledger))
        return b"".join(parts)


class LedgerCollector(Collector):
    """The ledger's gauges, computed at each scrape from the database (one query per log)
    and the sealer's status file."""

    def __init__(self, runtime: Runtime, status_path: Path) -> None:
        self.runtime = runtime
        self.status_path = status_path

    def collect(self) -> Iterator[GaugeMetricFamily]:
        """The gauges (none of the ledger's when the database does not answer)."""
        try:
            beat_age, lags = ledger_lags(self.runtime, self.status_path,
                                         self.runtime.settings.stall_after)
        except Exception as e:  # a scrape must answer, with what it has
            # The database being away is the sealer's to log (once, then at a back-off).
            if unavailable_reason(e) is None:
                _log.exception("metrics.ledger_failed")
            return
        heartbeat = GaugeMetricFamily("trialledger_sealer_heartbeat_age_seconds",
                                      "Seconds since the sealer's last heartbeat")
        if beat_age is not None:
            heartbeat.add_metric([], beat_age)
        yield heartbeat
        families = {
            "unsealed": GaugeMetricFamily(
                "trialledger_sealing_lag_events", "Events not yet sealed into the ledger",
                labels=["study"]),
            "sealing_seconds": GaugeMetricFamily(
                "trialledger_sealing_lag_seconds", "Seconds since the sealer last had "
                "nothing to seal (0 while nothing waits): the oldest unsealed event waits at "
                "most this long", labels=["study"]),
            "unprojected": GaugeMetricFamily(
                "trialledger_projection_lag_events", "Events not yet in the read tables",
                labels=["study"]),
            "projection_seconds": GaugeMetricFamily(
                "trialledger_projection_lag_seconds", "Seconds since the read tables were "
                "last caught up (0 while nothing waits)", labels=["study"]),
            "checkpoint_age": GaugeMetricFamily(
                "trialledger_checkpoint_age_seconds", "Seconds since the newest signed "
                "checkpoint", labels=["study"]),
            "cosignatures": GaugeMetricFamily(
                "trialledger_checkpoint_cosignatures", "Witness cosignatures on the newest "
                "witnessed checkpoint", labels=["study"]),
        }
        for lag in lags:
            for field, family in families.items():
                value = getattr(lag, field)
                if value is not None:
                    family.add_metric([lag.log], float(value))
        stalled = GaugeMetricFamily("trialledger_stalled", "1 while the sealer (stage "
                                    "sealing) or the projector (stage projection) has stalled "
                                    "on a log", labels=["study", "stage"])
        for lag in lags:
            stalled.add_metric([lag.log, "sealing"], float(lag.sealing_stalled))
            if lag.unprojected is not None:
                stalled.add_metric([lag.log, "projection"], float(lag.projection_stalled))
        yield from families.values()
        yield stalled
