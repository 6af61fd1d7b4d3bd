"""The bundle's renderings process by process: a failure is raised, and no process is left."""

from __future__ import annotations

import socket
import time
from datetime import UTC, datetime
from pathlib import Path

import psutil
import pytest

from application.bundle_tables import RenderingFailed, Tables, rendering
from domain.studies import nct04397107
from domain.study import StudyDefinition


def _tables(url: str) -> Tables:
    now = datetime.now(UTC)
    return Tables(url, nct04397107.STUDY_ID,
                  StudyDefinition.from_dict(nct04397107.definition()), None, now, now, "test")


def _children() -> list[psutil.Process]:
    return [p for p in psutil.Process().children(recursive=True)
            if any("application.bundle_tables" in part for part in p.cmdline())]


def test_a_failing_rendering_is_raised_and_ends_the_others(tmp_path: Path) -> None:
    # No server listens there: the first part's process fails to connect.
    url = f"host={tmp_path} port=1 dbname=none user=none connect_timeout=2"
    with pytest.raises(RenderingFailed, match="OperationalError"), \
            rendering(_tables(url), tmp_path / "tables") as renderings:
        renderings.wait()
    assert not renderings.running
    assert not _children()
    assert not (tmp_path / "tables").exists()  # no later part started


def test_leaving_early_stops_the_running_rendering(tmp_path: Path) -> None:
    # A server that takes the connection and never answers: the part's process waits on it.
    with socket.create_server(("127.0.0.1", 0)) as silent:
        port = silent.getsockname()[1]
        url = f"host=127.0.0.1 port={port} dbname=none user=none connect_timeout=120"
        with rendering(_tables(url), tmp_path / "tables"):
            deadline = time.monotonic() + 60
            while not _children() and time.monotonic() < deadline:
                time.sleep(0.1)
            assert _children()
        assert not _children()
