"""The CPU a local PostgreSQL server spent, from its processes (psutil): what a bench's
database side cost, beside its own processes'."""

from __future__ import annotations

import contextlib
from pathlib import Path

import psutil


def server_cpu_seconds(pgdata: Path) -> float | None:
    """CPU seconds of the local server of ``pgdata`` so far: its postmaster with the children
    it has reaped, and its live children (None: no server of this machine's there)."""
    try:
        postmaster = psutil.Process(int((pgdata / "postmaster.pid").read_text().split()[0]))
        times = postmaster.cpu_times()
        seconds = times.user + times.system + times.children_user + times.children_system
        children = postmaster.children()
    except (OSError, ValueError, IndexError, psutil.Error):
        return None
    for child in children:
        with contextlib.suppress(psutil.Error):  # ended meanwhile: counted when reaped
            times = child.cpu_times()
            seconds += times.user + times.system
    return seconds
