"""Shared fixtures: a real PostgreSQL — the one in DATABASE_URL, else an embedded one.

Each test that needs a whole database gets a fresh one on that server, so tests that tamper
with a store never affect another test.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from infra.postgres import temporary_database
from infra.settings import Settings

if TYPE_CHECKING:
    from application.runtime import Runtime


@pytest.fixture(scope="session")
def server_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """URL of the PostgreSQL server under test (DATABASE_URL, or embedded)."""
    url = os.environ.get("DATABASE_URL")
    if url:
        yield url
        return
    from infra.postgres import embedded_postgres

    with embedded_postgres(tmp_path_factory.mktemp("embedded") / "pgdata") as embedded_url:
        yield embedded_url


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
