"""A child process that must not outlive its parent: a server's worker processes, which
would otherwise keep the port and the database after their parent was killed (SIGKILL leaves
it no chance to stop them)."""

from __future__ import annotations

import ctypes
import os
import signal
import sys
import threading
import time

PR_SET_PDEATHSIG = 1  # <linux/prctl.h>
# Where prctl is missing (not Linux), how often a watcher thread looks at the parent.
POLL_SECONDS = 1.0


def die_with_parent(parent_pid: int, sig: int = signal.SIGTERM) -> None:
    """Have this process sent ``sig`` as soon as ``parent_pid``, its parent, ends.

    On Linux the kernel does it (``prctl(PR_SET_PDEATHSIG)``); elsewhere a daemon thread
    watches ``getppid()``. A parent that ended before this call is found at once.
    """
    if sys.platform.startswith("linux"):
        libc = ctypes.CDLL(None, use_errno=True)
        if libc.prctl(PR_SET_PDEATHSIG, int(sig), 0, 0, 0) != 0:
            raise OSError(ctypes.get_errno(), "prctl(PR_SET_PDEATHSIG) failed")
    else:
        threading.Thread(target=_watch, args=(parent_pid, sig), daemon=True,
                         name="parent-watch").start()
    if os.getppid() != parent_pid:  # it ended before the kernel was told to tell us
        os.kill(os.getpid(), sig)


def _watch(parent_pid: int, sig: int) -> None:
    while os.getppid() == parent_pid:
        time.sleep(POLL_SECONDS)
    os.kill(os.getpid(), sig)
