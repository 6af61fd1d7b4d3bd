"""Write unavailability through a failover: `trialledger serve` on a pg_auto_failover formation.

    PYTHONPATH=. python bench/failover_bench.py [--clients 16] [--steady 10]

Brings up a formation of this run alone (a monitor, a primary and a synchronous secondary:
``pg_autoctl`` nodes on loopback ports in a temporary directory; Debian's
``postgresql-15-auto-failover`` and ``pg-auto-failover-cli``), serves the API on its multi-host
URL (``target_session_attrs=read-write``) and runs the failover drill of the test
(``tests/failover_drill.py``): ``--clients`` clients writing lab results over HTTP, each to its
own subject; ``--steady`` seconds of calm, ``pg_autoctl perform failover``, ``--steady`` seconds
once settled, SIGKILL of the new primary's postmaster, ``--steady`` seconds once settled.

The unavailability window of a disruption is the longest time in which no write was
acknowledged, from the disruption until the next one (or the end); the baseline, in the same
run, is that longest pause during the calm before. Also printed: writes acknowledged, lost
(acknowledged but not in the store) and duplicated (stored twice), both expected 0.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

from bench_lines import bench_line  # bench/ is the script's directory, hence on sys.path

from tests.auto_failover import AutoFailoverFormation, pg_autoctl_missing
from tests.failover_drill import WRITER, drill, served, set_up, stored_lab_records
from trialledger_client import Client


def run(clients: int, steady: float) -> None:
    """Bring the formation up, drill, print the figures."""
    missing = pg_autoctl_missing()
    if missing is not None:
        raise SystemExit(missing)
    formation = AutoFailoverFormation()
    with tempfile.TemporaryDirectory() as scratch:
        try:
            formation.start()
            url = formation.uri()
            home = Path(scratch) / "home"
            password = set_up(url, home, clients)
            with served(url, home, Path(scratch) / "server.log") as base:
                with Client(base) as client:
                    token = client.sign_in(WRITER, password)
                result = drill(formation, base, token, clients, steady)
            stored = stored_lab_records(url, home, clients)
        finally:
            formation.remove()
    acknowledged = result.writes.acknowledged
    lost = sum(1 for record in acknowledged if stored[record] == 0)
    duplicated = sum(1 for count in stored.values() if count > 1)
    windows = result.windows()
    print(f"{clients} clients; acknowledged {len(acknowledged)}, lost {lost}, duplicated "
          f"{duplicated}; refusals on the way: {dict(result.writes.refusals)}")
    print(f"longest pause in acknowledgements: calm {windows['calm']:.2f} s, failover "
          f"{windows['failover']:.2f} s, SIGKILL of the primary {windows['sigkill']:.2f} s")
    print(bench_line("failover.unavailability", windows["failover"], "s", windows["calm"]))
    print(bench_line("sigkill.unavailability", windows["sigkill"], "s", windows["calm"]))
    print(bench_line("failover.acknowledged", len(acknowledged), "writes", lost=lost,
                     duplicated=duplicated))
    if lost or duplicated:
        sys.exit(1)


def main() -> None:
    """Parse the options and run."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clients", type=int, default=16)
    parser.add_argument("--steady", type=float, default=10.0,
                        help="seconds of writing before, between and after the disruptions")
    options = parser.parse_args()
    run(options.clients, options.steady)


if __name__ == "__main__":
    main()
