"""CPU per signed write of the serving app, in one process: no sockets, no uvicorn, no sealer.

    python bench/http_inprocess.py [--clients 32] [--writes 60] [--turns 3]
                                   [--tree DIR ...] [--async-commit] [--profile FILE]

A measurement helper for the HTTP write path (see bench/README.md, "HTTP writes"), not a
``BENCH`` figure. The parent starts one PostgreSQL (embedded unless ``--database-url``) and
sets the study up once; then, for each turn and each source tree given with ``--tree``
(default: this one) in alternation, it enrolls fresh subjects (one a client) and starts a
child process on that tree, which serves :func:`api.app.create_app` in-process as ``serve``
does (multiprocess metrics, the collector pauses, uvloop), signs in, and drives it through
ASGI with ``--clients`` concurrent closed-loop clients, each entering labs on its own subject
with an Idempotency-Key and If-Match, as the Python client sends them. Every client first
enters a few labs unmeasured (caches, statements, pools), then ``--writes`` measured; the
child reports the process CPU (every thread) per measured write. Fresh subjects each turn
give every tree the same work (casebooks of the same size). ``--async-commit`` turns off
synchronous commit on the database so that the CPU, not the disk's flush, bounds a turn.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import MutableMapping
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
WARM_WRITES = 5


def _child(args: argparse.Namespace) -> None:
    """Serve the app of this process's tree in-process and drive it; print one JSON line."""
    import gc

    import orjson

    from infra.process_metrics import start_multiprocess

    start_multiprocess(Path(tempfile.mkdtemp(prefix="inproc-metrics-")))
    from api.app import create_app
    from api.collector import CollectorPauses
    from application.runtime import Runtime
    from infra.settings import Settings

    if args.profile:
        _profile_threads(args.profile)
    settings = Settings(database_url=args.database_url, home=Path(args.home))
    runtime = Runtime(settings, args.database_url)
    app = create_app(runtime)
    if args.touch_every:  # e.g. under valgrind, where 1 s is a handful of writes
        runtime.sessions().touch_every = timedelta(seconds=args.touch_every)
    CollectorPauses().install()
    study = "NCT04397107"

    async def call(method: str, path: str, headers: list[tuple[bytes, bytes]],
                   body: bytes) -> tuple[int, dict[bytes, bytes], bytes]:
        scope = {"type": "http", "asgi": {"version": "3.0", "spec_version": "2.3"},
                 "http_version": "1.1", "method": method, "scheme": "http", "path": path,
                 "raw_path": path.encode(), "query_string": b"", "root_path": "",
                 "headers": [(b"host", b"testserver"),
                             (b"content-length", str(len(body)).encode()), *headers],
                 "client": ("127.0.0.1", 50000), "server": ("127.0.0.1", 8000)}
        sent = False
        answer: dict[str, Any] = {"body": bytearray()}

        async def receive() -> dict[str, Any]:
            nonlocal sent
            if not sent:
                sent = True
                return {"type": "http.request", "body": body, "more_body": False}
            await asyncio.Event().wait()
            raise AssertionError

        async def send(message: MutableMapping[str, Any]) -> None:
            if message["type"] == "http.response.start":
                answer["status"] = message["status"]
                answer["headers"] = dict(message.get("headers", []))
            else:
                answer["body"].extend(message.get("body", b""))

        await app(scope, receive, send)
        return answer["status"], answer["headers"], bytes(answer["body"])

    async def client(token: bytes, subject: str, n: int, statuses: dict[int, int]) -> None:
        path = f"/v1/studies/{study}/subjects/{subject}/labs"
        version: bytes | None = None
        for i in range(n):
            body = orjson.dumps({
                "record_id": f"{subject}-{uuid.uuid4().hex[:8]}",
                "observed_at": (datetime(2021, 1, 11, tzinfo=UTC)
                                + timedelta(seconds=i)).isoformat(),
                "code": "C3", "value": 0.8, "unit": "g/L"})
            headers = [(b"content-type", b"application/json"),
                       (b"authorization", b"Bearer " + token),
                       (b"idempotency-key", str(uuid.uuid4()).encode())]
            if version is not None:
                headers.append((b"if-match", version))
            status, answer, _ = await call("POST", path, headers, body)
            statuses[status] = statuses.get(status, 0) + 1
            version = answer.get(b"etag", version)

    async def main() -> dict[str, Any]:
        status, _, body = await call(
            "POST", "/v1/auth/token", [(b"content-type", b"application/json")],
            orjson.dumps({"username": "coordinator", "password": args.password}))
        assert status == 200, body
        token = orjson.loads(body)["access_token"].encode()
        subjects = args.subjects.split(",")
        warm: dict[int, int] = {}
        await asyncio.gather(*(client(token, s, WARM_WRITES, warm) for s in subjects))
        gc.collect()
        statuses: dict[int, int] = {}
        profiler = None
        if args.profile:
            import cProfile
            profiler = cProfile.Profile(time.thread_time)  # the event loop's CPU
            profiler.enable()
        spy = None
        if os.environ.get("INPROC_PYSPY"):  # e.g. py-spy record -r 200 -f raw -o FILE
            spy = subprocess.Popen([*os.environ["INPROC_PYSPY"].split(), "--pid",
                                    str(os.getpid())])
            await asyncio.sleep(1.0)
        grind = os.environ.get("INPROC_CALLGRIND")
        if grind:  # under valgrind --tool=callgrind --instr-atstart=no: count this part
            subprocess.run(["callgrind_control", "-i", "on", str(os.getpid())], check=True,
                           capture_output=True)
        committer = getattr(runtime.opened_study(study), "_committer", None)
        calls = getattr(committer, "_calls", 0)
        threads = _thread_cpu()
        cpu, wall = time.process_time(), time.perf_counter()
        await asyncio.gather(*(client(token, s, args.writes, statuses) for s in subjects))
        cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
        if grind:
            subprocess.run(["callgrind_control", "-i", "off", str(os.getpid())], check=True,
                           capture_output=True)
        if spy is not None:
            import signal
            spy.send_signal(signal.SIGINT)
            spy.wait()
        if profiler is not None:
            profiler.disable()
            profiler.dump_stats(args.profile)
        writes = sum(statuses.values())
        after = _thread_cpu()
        return {"writes": writes, "statuses": statuses, "cpu_ms": cpu / writes * 1000,
                "wall_s": wall, "warm": warm,
                "commits": getattr(committer, "_calls", 0) - calls,
                "threads_ms": {name: round((after[name] - threads.get(name, 0)) / writes * 1000,
                                           3) for name in after
                               if after[name] - threads.get(name, 0) > 0}}

    try:
        import uvloop
        result = uvloop.run(main())
    except ImportError:
        result = asyncio.run(main())
    finally:
        runtime.close()
    print(json.dumps(result), flush=True)


def _profile_threads(prefix: str) -> None:
    """cProfile (thread CPU) the group commit's and the key claims' threads, whole runs."""
    import cProfile

    from domain.group_commit import GroupCommitter
    from infra.key_claims import KeyClaims

    for cls in (GroupCommitter, KeyClaims):
        def run(self: Any, _run: Any = cls._run, name: str = cls.__name__) -> None:
            profiler = cProfile.Profile(time.thread_time)
            try:
                profiler.runcall(_run, self)
            finally:
                profiler.dump_stats(f"{prefix}.{name}")
        cls._run = run  # type: ignore[method-assign]


def _thread_cpu() -> dict[str, float]:
    """CPU seconds of each live thread of this process, by thread name (kinds summed)."""
    import re
    import threading

    tick = os.sysconf("SC_CLK_TCK")
    names = {t.native_id: re.sub(r"[-_ ]?\\d+.*$", "", t.name) for t in threading.enumerate()}
    cpu: dict[str, float] = {}
    for task in Path("/proc/self/task").iterdir():
        try:
            fields = (task / "stat").read_text().rpartition(")")[2].split()
        except OSError:
            continue
        name = names.get(int(task.name), "other")
        cpu[name] = cpu.get(name, 0.0) + (int(fields[11]) + int(fields[12])) / tick
    return cpu


def _enrol(runtime: Any, codes: list[str]) -> None:
    from domain.envelope import Actor, Envelope
    from domain.studies import nct04397107

    setup = Envelope(Actor("bench", "Bench Setup", "coordinator", "JLU1"), "bench", "system",
                     "b")
    app = runtime.study(nct04397107.STUDY_ID)
    consent = date(2021, 1, 10)
    for code in codes:
        app.enroll_subject(code, "JLU1", date(2010, 5, 1), "F", "SLE", consent,
                           nct04397107.ELIGIBLE_SCREENING_ANSWERS, "IL2", consent, setup)
        app.on_subject(code, lambda s, t: s.record_vital_signs(
            "VS1", datetime(2021, 1, 10, 9, tzinfo=UTC),
            {"HEIGHT": (142.0, "cm"), "WEIGHT": (36.0, "kg")}, setup, t))


def _parent(args: argparse.Namespace) -> None:
    sys.path.insert(0, str(HERE))
    from http_bench import PASSWORD, set_up

    from application.runtime import Runtime
    from infra.postgres import connect, database, temporary_database
    from infra.settings import Settings

    trees = [str(Path(t).resolve()) for t in args.tree] or [str(HERE.parent)]
    results: dict[str, list[float]] = {t: [] for t in trees}
    with tempfile.TemporaryDirectory() as pgdata, tempfile.TemporaryDirectory() as home, \
            database(args.database_url, Path(pgdata) / "pgdata") as server_url, \
            temporary_database(server_url, "tl_inproc") as url:
        if args.async_commit:
            with connect(url) as conn:
                conn.execute("SELECT current_database()")
                name = conn.execute("SELECT current_database()").fetchone()
                assert name is not None
                conn.execute(f'ALTER DATABASE "{name[0]}" SET synchronous_commit = off')
        runtime = Runtime(Settings(database_url=url, home=Path(home)), url)
        try:
            set_up(runtime, 0)
            for turn in range(args.turns):
                for n, tree in enumerate(trees):
                    codes = [f"T{turn}{n}{c:03d}" for c in range(args.clients)]
                    _enrol(runtime, codes)
                    command = [sys.executable, str(Path(tree) / "bench" / Path(__file__).name)
                               if (Path(tree) / "bench" / Path(__file__).name).exists()
                               else str(Path(__file__).resolve()),
                               "--child", "--database-url", url, "--home", home,
                               "--password", PASSWORD, "--subjects", ",".join(codes),
                               "--writes", str(args.writes)]
                    if args.touch_every:
                        command += ["--touch-every", str(args.touch_every)]
                    if args.profile:
                        command += ["--profile", f"{args.profile}.{turn}.{n}"]
                    if os.environ.get("INPROC_CALLGRIND"):
                        command = ["valgrind", "--tool=callgrind", "--instr-atstart=no",
                                   f"--callgrind-out-file={os.environ['INPROC_CALLGRIND']}"
                                   f".{turn}.{n}", *command]
                    # The child's log (an access-log line a request) goes to a file, as
                    # http_bench.py's server's does: a pipe costs the writer more per line.
                    log = Path(home) / f"child-{turn}-{n}.log"
                    with log.open("w") as err:
                        out = subprocess.run(command, env={**os.environ, "PYTHONPATH": tree},
                                             stdout=subprocess.PIPE, stderr=err, text=True,
                                             cwd=tree)
                    if out.returncode != 0:
                        print(log.read_text()[-3000:], file=sys.stderr)
                        raise SystemExit(1)
                    result = json.loads(out.stdout.strip().splitlines()[-1])
                    results[tree].append(result["cpu_ms"])
                    print(f"turn {turn} {tree}: {result['cpu_ms']:.3f} ms CPU/write, "
                          f"{result['writes']} writes {result['statuses']} in "
                          f"{result['wall_s']:.1f} s, {result['commits']} group commits; "
                          f"load {os.getloadavg()[0]:.1f}; "
                          f"threads {result['threads_ms']}",
                          flush=True)
        finally:
            runtime.close()
    for tree, figures in results.items():
        print(f"{tree}: median {statistics.median(figures):.3f} ms CPU/write "
              f"({', '.join(f'{f:.3f}' for f in figures)})")


def main() -> None:
    """Entry point."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clients", type=int, default=32)
    parser.add_argument("--writes", type=int, default=60, help="measured writes per client")
    parser.add_argument("--turns", type=int, default=3)
    parser.add_argument("--tree", action="append", default=[],
                        help="a source tree to measure (repeat to alternate several)")
    parser.add_argument("--async-commit", action="store_true")
    parser.add_argument("--touch-every", type=float,
                        help="seconds a checked token is trusted (the sessions' touch_every, "
                             "1 s by default): longer under valgrind")
    parser.add_argument("--profile", help="cProfile each child's measured part to FILE.turn.n")
    parser.add_argument("--database-url", default=os.environ.get("DATABASE_URL"))
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--home", help=argparse.SUPPRESS)
    parser.add_argument("--password", help=argparse.SUPPRESS)
    parser.add_argument("--subjects", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        _child(args)
    else:
        _parent(args)


if __name__ == "__main__":
    main()
