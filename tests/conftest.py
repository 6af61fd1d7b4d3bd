"""Shared fixtures: a real PostgreSQL — the one in DATABASE_URL, else an embedded one.

Each test that needs a whole database gets a fresh one on that server, so tests that tamper
with a store never affect another test.

Runs are parallel (pytest-xdist, one file per worker) and may run beside other runs on the same
machine: each process's embedded PostgreSQL lives in a private directory of its own, made with
``tempfile.mkdtemp`` and removed at the end, never in pytest's shared temporary area (which
keeps only the newest runs and deleted a running server's data under a neighbouring run). The
server listens on a Unix socket in that directory only, so servers never share a port.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest
from psycopg.sql import SQL, Identifier

from infra.postgres import connect, temporary_database
from infra.settings import Settings

if TYPE_CHECKING:
    from application.runtime import Runtime

PRIVATE_PREFIX = "trialledger-tests-"


def pytest_configure(config: pytest.Config) -> None:
    """Point ``TRIALLEDGER_HOME`` at a private directory of this process, so a command a test
    runs without a home of its own can never reach ``~/.trialledger`` (its embedded database
    and keys are shared by every run of the user)."""
    home = Path(tempfile.mkdtemp(prefix=f"{PRIVATE_PREFIX}home-"))
    os.environ["TRIALLEDGER_HOME"] = str(home)
    config.add_cleanup(lambda: shutil.rmtree(home, ignore_errors=True))
    _terminal_as_the_controller_has_it(config)


# Terminal size as the person running the suite has it: an xdist worker starts with
# COLUMNS=80 and LINES=24 of its own, which fixes the width of the CLI's rich consoles at
# import and wraps their output where a run in one process does not.
TERMINAL_VARIABLES = ("COLUMNS", "LINES")


@pytest.hookimpl(optionalhook=True)
def pytest_configure_node(node: Any) -> None:
    """(xdist, in the controller) Hand each worker the controller's terminal size."""
    node.workerinput["terminal"] = {name: os.environ.get(name) for name in TERMINAL_VARIABLES}


def _terminal_as_the_controller_has_it(config: pytest.Config) -> None:
    terminal: dict[str, str | None] = getattr(config, "workerinput", {}).get("terminal", {})
    for name, value in terminal.items():
        if value is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = value


# What a test marked plain ``slow`` is taken to cost, in seconds on one core.
SLOW_DEFAULT_SECONDS = 30


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Hand out the costliest files first (a file's cost: the sum of its tests'
    ``slow(seconds=N)`` estimates), the others after them in their usual order. A worker
    takes a whole file at a time, so a long file handed out last would make the run wait for
    it alone."""
    cost: dict[Path, float] = {}
    for item in items:
        mark = item.get_closest_marker("slow")
        if mark is not None:
            seconds = mark.kwargs.get("seconds", SLOW_DEFAULT_SECONDS)
            cost[item.path] = cost.get(item.path, 0) + seconds
    items.sort(key=lambda item: -cost.get(item.path, 0))


@pytest.fixture(scope="session")
def server_url() -> Iterator[str]:
    """URL of the PostgreSQL server under test (DATABASE_URL, or embedded in a private
    directory of this process)."""
    url = os.environ.get("DATABASE_URL")
    if url:
        yield url
        return
    from infra.postgres import embedded_postgres

    private = Path(tempfile.mkdtemp(prefix=f"{PRIVATE_PREFIX}pg-"))
    try:
        with embedded_postgres(private / "pgdata") as embedded_url:
            _without_crash_safety(embedded_url)
            yield embedded_url
    finally:
        shutil.rmtree(private, ignore_errors=True)


def _without_crash_safety(url: str) -> None:
    """Make a throw-away test cluster skip the disk flushes that only protect data against a
    crash of the machine: commits then cost no WAL flush (most of a write-heavy test's wait).
    Every query answers exactly as before."""
    with connect(url) as conn:
        for setting in ("fsync", "synchronous_commit", "full_page_writes"):
            conn.execute(SQL("ALTER SYSTEM SET {} = off").format(Identifier(setting)))
        conn.execute("SELECT pg_reload_conf()")


@pytest.fixture
def db_url(server_url: str) -> Iterator[str]:
    """A fresh, empty database on the server under test, dropped afterwards."""
    with temporary_database(server_url, "tl_test") as url:
        yield url


@pytest.fixture
def settings(db_url: str, tmp_path: Path) -> Settings:
    """Settings for a deployment on a fresh database, with its keys in a temporary home."""
    return Settings(database_url=db_url, home=tmp_path / "home")


@pytest.fixture
def runtime(settings: Settings, db_url: str) -> Iterator[Runtime]:
    """A signed deployment on a fresh database."""
    from application.runtime import Runtime

    rt = Runtime(settings, db_url)
    try:
        yield rt
    finally:
        rt.close()


@pytest.fixture
def other_runtime(settings: Settings, db_url: str) -> Iterator[Runtime]:
    """A second deployment process on the same database as ``runtime`` (a cache of its own:
    what one writes, the other learns only from the store)."""
    from application.runtime import Runtime

    rt = Runtime(settings, db_url)
    try:
        yield rt
    finally:
        rt.close()


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    """Print the figures tests recorded (``record_property("figures", ...)``, e.g. the
    failover drill's), which reach the controller from xdist workers with the reports."""
    for report in terminalreporter.getreports("passed"):
        if report.when != "call":
            continue
        for name, value in report.user_properties:
            if name == "figures":
                terminalreporter.write_line(f"FIGURES {report.nodeid}: {value}")
