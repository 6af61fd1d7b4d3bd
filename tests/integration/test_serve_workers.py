"""`trialledger serve --workers 2` as real processes: no server banner, and when the parent is
killed with SIGKILL its workers end too instead of holding the port (issue 14, items 5, 7)."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from tests.support import free_port, wait_until_ready

# How long orphaned workers may take to notice and stop (a graceful uvicorn shutdown).
ORPHAN_BOUND = 30.0


def _children(pid: int) -> set[int]:
    """Every process whose parent is ``pid``."""
    found = set()
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            # pid (comm) state ppid ...: comm may hold spaces, so split after its ")".
            if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
                found.add(int(entry.name))
    return found


def _alive(pid: int) -> bool:
    try:
        state = (Path("/proc") / str(pid) / "stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def _port_taken(port: int) -> bool:
    with socket.socket() as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return True
    return False


@pytest.mark.slow(seconds=20)
@pytest.mark.skipif(not Path("/proc").is_dir(), reason="reads the process table from /proc")
def test_workers_end_with_a_killed_parent_and_send_no_banner(db_url: str,
                                                             tmp_path: Path) -> None:
    port = free_port()
    log = tmp_path / "server.log"
    with log.open("w") as out:
        parent = subprocess.Popen(
            [sys.executable, "-m", "api.cli", "serve", "--port", str(port), "--workers", "2",
             "--database-url", db_url],
            env={**os.environ, "TRIALLEDGER_HOME": str(tmp_path / "home")}, stdout=out,
            stderr=subprocess.STDOUT)
    workers: set[int] = set()
    try:
        base = f"http://127.0.0.1:{port}"
        wait_until_ready(base, log, parent)
        answer = httpx.get(f"{base}/healthz")
        assert "server" not in answer.headers
        assert answer.headers["x-content-type-options"] == "nosniff"
        workers = _children(parent.pid)
        assert len(workers) >= 2, workers  # two workers (and the sealer)

        parent.send_signal(signal.SIGKILL)
        parent.wait()
        deadline = time.monotonic() + ORPHAN_BOUND
        while any(_alive(pid) for pid in workers) or _port_taken(port):
            assert time.monotonic() < deadline, (
                f"outlived their parent: {[p for p in workers if _alive(p)]}")
            time.sleep(0.2)
    finally:
        for pid in [parent.pid, *workers]:
            if _alive(pid):
                os.kill(pid, signal.SIGKILL)
        if parent.poll() is None:
            parent.wait()
