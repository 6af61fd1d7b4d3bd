"""What a command writes where: its answer on stdout; log lines on stderr, only warnings for
a one-shot command, as JSON unless stderr is a terminal (or as asked)."""

from __future__ import annotations

import json
import os
import pty
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def _users_add(home: Path, username: str, *options: str, env: dict[str, str] | None = None,
               stderr: int | None = subprocess.PIPE) -> subprocess.CompletedProcess[str]:
    """`users add` on the embedded PostgreSQL of ``home`` (no DATABASE_URL)."""
    environment = {k: v for k, v in os.environ.items()
                   if k not in ("DATABASE_URL", "TRIALLEDGER_LOG_FORMAT",
                                "TRIALLEDGER_LOG_LEVEL")}
    environment.update({"TRIALLEDGER_HOME": str(home), **(env or {})})
    return subprocess.run(
        [sys.executable, "-m", "api.cli", *options, "users", "add", "--username", username,
         "--full-name", username.title(), "--role", "admin", "--study", "*",
         "--password-stdin"], input="amber canyon whistle\n", env=environment, cwd=ROOT,
        stdout=subprocess.PIPE, stderr=stderr, text=True, timeout=180)


def test_a_one_shot_command_prints_its_answer_and_no_log_lines(tmp_path: Path) -> None:
    home = tmp_path / "home"
    quiet = _users_add(home, "ada")
    assert quiet.returncode == 0, quiet.stderr
    assert quiet.stdout == "Registered ada (Ada) as admin at */*.\n"
    # The embedded database's start and stop are no news. (Only the lines the program logs:
    # a library's error, say a stop that failed, is news and still shows.)
    assert "embedded_postgres.started" not in quiet.stderr
    assert "embedded_postgres.stopped" not in quiet.stderr

    # Asked for: JSON lines, every one of them, naming the embedded database's start and stop.
    logged = _users_add(home, "bob", "--log-format", "json",
                        env={"TRIALLEDGER_LOG_LEVEL": "INFO"})
    assert logged.returncode == 0, logged.stderr
    events = [json.loads(line)["event"] for line in logged.stderr.splitlines()]
    assert "embedded_postgres.started" in events and "embedded_postgres.stopped" in events

    # On a terminal, the same lines are for a person to read, not JSON.
    controller, terminal = pty.openpty()
    try:
        shown = _users_add(home, "cyd", env={"TRIALLEDGER_LOG_LEVEL": "INFO"}, stderr=terminal)
        os.close(terminal)
        chunks = []
        while True:
            try:
                chunk = os.read(controller, 4096)
            except OSError:  # the terminal's other end is closed and drained
                break
            if not chunk:
                break
            chunks.append(chunk)
    finally:
        os.close(controller)
    assert shown.returncode == 0
    lines = b"".join(chunks).decode().splitlines()
    assert any("embedded_postgres.started" in line for line in lines), lines
    assert not any(line.lstrip().startswith("{") for line in lines), lines


def test_an_unknown_log_format_is_refused_in_one_line(tmp_path: Path) -> None:
    refused = _users_add(tmp_path / "home", "ada", "--log-format", "xml")
    assert refused.returncode == 2
    assert refused.stderr.strip().splitlines() == [
        "log format (--log-format, TRIALLEDGER_LOG_FORMAT) must be one of auto, json, "
        "console, not 'xml'"]
    assert not (tmp_path / "home").exists()
