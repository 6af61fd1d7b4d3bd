"""The ``trialledger`` command line.

Exit codes: 0 success; 1 evidence does not verify (``verify``); 2 a usage or environment
error (a bad option, a missing file, an unreachable database, an export that failed), told in
one line on stderr (``--debug`` shows the traceback)."""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import signal
import sys
import tempfile
import threading
import traceback
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import datetime
from functools import partial
from pathlib import Path
from types import FrameType
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.console import Console
from rich.markup import escape

from api.witness_cli import witness_app
from domain.caller import OPERATOR_GRANT, Caller, Channel
from domain.envelope import Envelope
from domain.errors import NotFound
from infra import keys
from infra.ledger.logs import DIRECTORY_LOG
from infra.ledger.logs import title as log_title
from infra.ledger.sealer import CHECKPOINT_EVERY, CHECKPOINT_INTERVAL, SEAL_INTERVAL
from infra.logging import (
    LOG_FORMAT_ENV,
    LOG_LEVEL_ENV,
    LogSettingError,
    configure_logging,
    resolved_format,
    resolved_level,
)
from infra.postgres import EmbeddedPostgresMissing, connect
from infra.settings import Settings
from infra.signers import SigningKeyError
from infra.verify import StudyVerification

if TYPE_CHECKING:
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

    from application.runtime import Runtime



class _Run:
    """What the options before the command asked of this run."""

    debug = False


class _Cli(typer.Typer):
    """The command line: an error no command handled is one line on stderr and exit 2 (its
    traceback with ``--debug``), never a traceback a person has to read."""

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        try:
            return super().__call__(*args, **kwargs)
        except Exception as e:
            if _Run.debug:
                traceback.print_exc()
            else:
                err_console.print(f"[red]Error:[/red] {escape(_one_line(e))} (--debug shows "
                                  "the traceback)", soft_wrap=True, highlight=False)
            raise SystemExit(2) from None


def _one_line(error: Exception) -> str:
    """What went wrong, on one line (psycopg's messages span several)."""
    import psycopg

    text = " ".join(str(error).split()) or type(error).__name__
    if isinstance(error, psycopg.OperationalError):
        return f"the database is not reachable: {text}"
    if isinstance(error, OSError | EmbeddedPostgresMissing):
        return text
    return f"{type(error).__name__}: {text}"


app = _Cli(no_args_is_help=True, add_completion=False, help="TrialLedger: "
           "an event-sourced, tamper-evident audit trail for clinical-trial data. Exit codes: "
           "0 success, 1 evidence does not verify, 2 usage or environment error.")
keys_app = typer.Typer(no_args_is_help=True, help="Signing keys.")
app.add_typer(keys_app, name="keys")
db_app = typer.Typer(no_args_is_help=True, help="Database set-up, run as the table owner.")
app.add_typer(db_app, name="db")
users_app = typer.Typer(no_args_is_help=True, help="People and their roles.")
app.add_typer(users_app, name="users")
clients_app = typer.Typer(no_args_is_help=True, help="API clients (e.g. the data-entry app).")
app.add_typer(clients_app, name="clients")
app.add_typer(witness_app, name="witness")

console = Console()
err_console = Console(stderr=True)

DatabaseUrl = Annotated[
    str | None,
    typer.Option(
        "--database-url",
        envvar="DATABASE_URL",
        help="PostgreSQL URL; without one an embedded PostgreSQL is started (installed with "
             "trialledger[embedded]).",
        show_default=False,
    ),
]
CheckpointInterval = Annotated[
    float,
    typer.Option(
        "--checkpoint-interval",
        envvar="TRIALLEDGER_CHECKPOINT_INTERVAL",
        min=0.5,
        help=f"Longest wait in seconds from a write to a signed checkpoint covering it (new "
             f"events are sealed every {SEAL_INTERVAL:g} s; a checkpoint also comes every "
             f"{CHECKPOINT_EVERY} events).",
    ),
]


@contextmanager
def _runtime(settings: Settings) -> Iterator[Runtime]:
    """The deployment for one command; a key that may not sign ends it with a message."""
    from application.runtime import open_runtime

    try:
        with open_runtime(settings) as runtime:
            yield runtime
    except SigningKeyError as e:
        err_console.print(f"[red]{escape(str(e))}[/red]", soft_wrap=True)
        raise typer.Exit(2) from e


def _settings(database_url: str | None, *, serving: bool = False) -> Settings:
    # A one-shot command's answer is its output: it logs only warnings and errors (the
    # embedded database's start and stop are no news). A server logs its requests.
    configure_logging(logging.INFO if serving else logging.WARNING)
    try:
        return Settings.from_env(database_url)
    except ValueError as e:  # a malformed TRIALLEDGER_* variable
        err_console.print(f"[red]{escape(str(e))}[/red]")
        raise typer.Exit(2) from None


def _print_version(asked: bool) -> None:
    if asked:
        from importlib.metadata import version

        console.print(f"trialledger {version('trialledger')}", highlight=False)
        raise typer.Exit()


@app.callback()
def _options(
    log_format: Annotated[str, typer.Option(
        "--log-format", envvar=LOG_FORMAT_ENV,
        help="Log lines on stderr: json, console, or auto (console on a terminal, else "
             "JSON).")] = "auto",
    log_level: Annotated[str | None, typer.Option(
        "--log-level", envvar=LOG_LEVEL_ENV,
        help="Lowest level logged: DEBUG, INFO, WARNING, ERROR (default: INFO for serve and "
             "demo, else WARNING).", show_default=False)] = None,
    debug: Annotated[bool, typer.Option(
        "--debug", help="On an error, print its traceback, not only its line.")] = False,
    _version: Annotated[bool, typer.Option(
        "--version", is_eager=True, callback=_print_version,
        help="Print the version and exit.")] = False,
) -> None:
    """Options of every command (given before the command's name)."""
    _Run.debug = debug
    if log_level is not None:
        os.environ[LOG_LEVEL_ENV] = log_level  # read below; the children inherit it
    try:
        resolved_format(log_format)
        resolved_level()
    except LogSettingError as e:
        err_console.print(f"[red]{escape(str(e))}[/red]", soft_wrap=True)
        raise typer.Exit(2) from None
    if os.environ.get(LOG_FORMAT_ENV, "auto") != log_format:
        os.environ[LOG_FORMAT_ENV] = log_format  # the sealer and server workers inherit it


@app.command()
def demo(
    database_url: DatabaseUrl = None,
    seed: Annotated[int, typer.Option(help="Seed of the deterministic simulation.")] = 1,
    no_serve: Annotated[bool, typer.Option("--no-serve", help="Exit after the run.")] = False,
    host: Annotated[str, typer.Option(
        help="Address to serve on (and the next steps' URLs name).")] = "127.0.0.1",
    port: Annotated[int, typer.Option(
        help="Port to serve on (and the next steps' URLs name).")] = 8000,
    checkpoint_interval: CheckpointInterval = CHECKPOINT_INTERVAL,
) -> None:
    """Simulate NCT04397107's 46 children, verify every signature, create a demo person for
    every role (passwords in $TRIALLEDGER_HOME/demo-credentials.json, mode 0600), print the
    next steps, then serve the API."""
    from application.demo import CREDENTIALS_FILE, CredentialsUnreadable, print_next_steps, run_demo

    settings = _settings(database_url, serving=not no_serve)
    with _runtime(settings) as runtime:
        try:
            ok = run_demo(runtime, seed, console)
        except CredentialsUnreadable as e:
            err_console.print(f"[red]{escape(str(e))}[/red]")
            raise typer.Exit(2) from None
        if not ok:
            raise typer.Exit(1)
        print_next_steps(console, _base_url(host, port), settings.home / CREDENTIALS_FILE,
                         serving=not no_serve)
        if not no_serve:
            _serve(runtime, host, port, checkpoint_interval=checkpoint_interval)


def _base_url(host: str, port: int) -> str:
    """Where a client on this machine reaches a server listening on ``host``."""
    if host in ("0.0.0.0", ""):
        host = "127.0.0.1"  # every interface: this one too
    elif ":" in host:
        host = "[::1]" if host == "::" else f"[{host}]"
    return f"http://{host}:{port}"


@app.command()
def serve(
    database_url: DatabaseUrl = None,
    host: Annotated[str, typer.Option(help="Address to serve on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port to serve on.")] = 8000,
    workers: Annotated[int, typer.Option(
        min=1, help="Server processes; more than one moves sealing and projecting out of the "
                    "processes that answer requests.")] = 1,
    checkpoint_interval: CheckpointInterval = CHECKPOINT_INTERVAL,
    tls_cert: Annotated[Path | None, typer.Option(
        "--tls-cert", help="Serve HTTPS with this certificate chain (PEM; with --tls-key).",
        show_default=False)] = None,
    tls_key: Annotated[Path | None, typer.Option(
        "--tls-key", help="The certificate's private key (PEM).", show_default=False)] = None,
) -> None:
    """Serve the HTTP API (HTTPS when given a certificate and key)."""
    tls = _tls(tls_cert, tls_key)
    with _runtime(_settings(database_url, serving=True)) as runtime:
        runtime.require_signing_key()  # a key that may not sign stops the server here
        _serve(runtime, host, port, workers, checkpoint_interval, tls)


def _tls(cert: Path | None, key: Path | None) -> tuple[Path, Path] | None:
    """The certificate and key to serve HTTPS with; both or neither, readable."""
    if cert is None and key is None:
        return None
    if cert is None or key is None:
        err_console.print("[red]--tls-cert and --tls-key go together.[/red]")
        raise typer.Exit(2)
    for path in (cert, key):
        if not path.is_file():
            err_console.print(f"[red]{escape(str(path))}: no such file.[/red]")
            raise typer.Exit(2)
    return cert, key


# Bounds of a stop (SIGTERM or Ctrl-C): requests in flight get STOP_GRACE seconds, the group
# commit up to twice CLOSE_WAIT (domain.group_commit), the sealer's last round (sealing what
# those requests wrote) SEALER_GRACE more, then the process
# ends within STOP_BOUND seconds of the signal whatever it is doing (an embedded PostgreSQL is
# then stopped by its guardian, see infra.postgres).
STOP_GRACE = 2
SEALER_GRACE = 4.0
STOP_BOUND = 8.0


def _serve(runtime: Runtime, host: str, port: int, workers: int = 1,
           checkpoint_interval: float = CHECKPOINT_INTERVAL,
           tls: tuple[Path, Path] | None = None) -> None:
    # Before anything makes a metric: every process of this server (the workers and the
    # sealer, which inherit the environment) writes its metrics where a scrape reads them all.
    from infra.process_metrics import start_multiprocess

    run_dir = Path(tempfile.mkdtemp(prefix="trialledger-serve-"))
    (run_dir / "metrics").mkdir()
    start_multiprocess(run_dir / "metrics")
    try:
        _serve_from(run_dir, runtime, host, port, workers, checkpoint_interval, tls)
    finally:
        shutil.rmtree(run_dir, ignore_errors=True)


def _serve_from(run_dir: Path, runtime: Runtime, host: str, port: int, workers: int,
                checkpoint_interval: float, tls: tuple[Path, Path] | None) -> None:
    import uvicorn

    from api.app import SERVE_PARENT, SERVE_STATUS, SERVE_URL, create_app
    from api.collector import CollectorPauses
    from application.ledger_watch import start_watch
    from application.sealing import BackgroundSealer
    from infra.sealer_status import STATUS_FILE

    class BoundedStopServer(uvicorn.Server):
        """uvicorn's server, whose stop signal also arms the bound on the stop."""

        def handle_exit(self, sig: int, frame: FrameType | None) -> None:
            _arm_stop_bound()
            super().handle_exit(sig, frame)

    status_path = run_dir / STATUS_FILE
    start_watch(status_path)
    sealer = BackgroundSealer(runtime, checkpoint_interval=checkpoint_interval,
                              status_path=status_path)
    sealer.start()
    scheme = "https" if tls else "http"
    console.print(f"Serving the API on {scheme}://{host}:{port} with {workers} process"
                  f"{'es' if workers > 1 else ''} (Ctrl-C to stop)")
    # uvicorn answers SIGTERM by re-raising it once it has shut down; with the default
    # handler that would end the process before the sealer, the database connections and an
    # embedded PostgreSQL are stopped below.
    signal.signal(signal.SIGTERM, _stop_on_sigterm)
    try:
        # The access log is the app's own (structlog); uvicorn's would repeat it.
        # No "server: uvicorn" banner: it tells an attacker which exploits to try.
        options: dict[str, Any] = {"host": host, "port": port, "log_level": "warning",
                                   "access_log": False, "http": "httptools",
                                   # uvloop when installed (trialledger[fast]), else asyncio's.
                                   "loop": "auto",
                                   "timeout_graceful_shutdown": STOP_GRACE,
                                   "server_header": False}
        if tls is not None:
            options.update(ssl_certfile=str(tls[0]), ssl_keyfile=str(tls[1]))
        if workers == 1:
            served = create_app(runtime, status_path=status_path)
            CollectorPauses().install()
            with contextlib.suppress(KeyboardInterrupt):  # Ctrl-C: stopped, as asked
                BoundedStopServer(uvicorn.Config(served, **options)).run()
        else:
            # Each worker opens its own runtime on the database this process resolved (the
            # embedded server included); this process keeps sealing and projecting.
            os.environ[SERVE_URL] = runtime.url
            os.environ[SERVE_PARENT] = str(os.getpid())
            os.environ[SERVE_STATUS] = str(status_path)
            uvicorn.run("api.app:create_worker_app", factory=True, workers=workers, **options)
    finally:
        # Every request answered: the group commit flushes what is queued (and ends a write
        # stuck holding the events table's lock, which the sealer would wait for), then the
        # sealer's last round seals it all.
        runtime.close()
        sealer.stop(wait=SEALER_GRACE)


def _stop_on_sigterm(signum: int, _: FrameType | None) -> None:
    _arm_stop_bound()
    raise SystemExit(128 + signum)


_stop_armed = threading.Event()


def _arm_stop_bound() -> None:
    """End the process STOP_BOUND seconds from now, should the orderly stop not have."""
    if not _stop_armed.is_set():
        _stop_armed.set()
        timer = threading.Timer(STOP_BOUND, os._exit, args=(1,))
        timer.daemon = True
        timer.start()


@app.command()
def verify(
    database_url: DatabaseUrl = None,
    study: Annotated[str | None, typer.Option(help="Only this study.")] = None,
    checkpoint: Annotated[
        Path | None,
        typer.Option(help="A checkpoint (signed note) you hold: the log must extend it."),
    ] = None,
    bundle: Annotated[
        Path | None, typer.Option(help="Verify this exported bundle offline, without a database.")
    ] = None,
    public_key: Annotated[
        Path | None, typer.Option(help="The trusted public key(s) (PEM) for --bundle.")
    ] = None,
    workers: Annotated[
        int, typer.Option(help="Processes checking signatures (default: every core).")
    ] = 0,
) -> None:
    """Check signatures, keys, version chains, leaves, roots and checkpoints; exit 0 only when
    everything holds, otherwise name the first bad event."""
    held = checkpoint.read_text() if checkpoint else None
    if bundle is not None:
        _verify_bundle(bundle, public_key, held)
        return
    from application.verification import verify_directory, verify_remembering
    from infra.catalog import list_studies
    from infra.ledger.note import Checkpoint, NoteError
    from infra.postgres import database

    trusted = None
    if held is not None:
        try:
            trusted = Checkpoint.parse(held.partition("\n\n")[0] + "\n")
        except NoteError as e:
            err_console.print(f"[red]{escape(str(checkpoint))}: {escape(str(e))}[/red]")
            raise typer.Exit(2) from None
    settings = _settings(database_url)
    public_keys = keys.load_public_keys(settings)
    with database(settings.database_url, settings.pgdata) as url, connect(url) as conn:
        studies = list_studies(conn)
        if study is not None:
            _require_study(studies, study)
            studies = [(s, schema) for s, schema in studies if s == study]
        workers = workers or os.cpu_count() or 1
        results = [verify_remembering(conn, settings, s, schema, public_keys, trusted, workers)
                   for s, schema in studies]
        directory = None if study else verify_directory(conn, settings, public_keys, trusted,
                                                        workers)
        results += [directory] if directory else []
    if not print_verification(results, settings.quorum):
        raise typer.Exit(1)


def _require_study(studies: list[tuple[str, str]], study: str) -> None:
    """Exit 2 with a clear message unless ``study`` is one of ``studies``."""
    if study not in {s for s, _ in studies}:
        err_console.print(f"[red]No study {study} in this database.[/red]")
        raise typer.Exit(2)


def _verify_bundle(bundle: Path, public_key: Path | None, held: str | None) -> None:
    from application.verification import verify_bundle_remembering
    from trialledger_verifier.bundle import BundleInvalid

    if public_key is None:
        err_console.print("[red]--bundle needs --public-key (the key you trust).[/red]")
        raise typer.Exit(2)
    trusted = _trusted_keys(bundle, public_key)
    settings = _settings(None)
    try:
        report = verify_bundle_remembering(settings, bundle, trusted, held)
    except (BundleInvalid, OSError, ValueError) as e:
        # One line whatever the terminal's width, for people and scripts alike.
        console.print(f"[red]✗ BUNDLE INVALID[/red] {escape(str(bundle))}: {escape(str(e))}",
                      soft_wrap=True)
        raise typer.Exit(1) from None
    console.print(f"[green]✓[/green] {bundle}: study {report.study}, {report.events} events, "
                  f"{report.checkpoints} checkpoints (latest size {report.latest_size}): "
                  "every signature, key, leaf and root verifies; "
                  f"{report.files} files match the signed manifest (as of {report.as_of}, "
                  f"made {report.created_at} by {report.software_version}); "
                  + (f"latest checkpoint witnessed by {', '.join(report.witnessed_by)} (quorum "
                     f"{settings.quorum})" if settings.quorum else
                     "the checkpoints are unwitnessed: no witnesses are configured "
                     "(TRIALLEDGER_WITNESSES)"), soft_wrap=True)


def _trusted_keys(bundle: Path, public_key: Path) -> dict[str, Ed25519PublicKey]:
    """The keys in ``public_key`` (exit 2 if they cannot be read, or ``bundle`` is no file)."""
    from trialledger_verifier.bundle import load_public_keys

    if not bundle.is_file():
        err_console.print(f"[red]--bundle {escape(str(bundle))}: no such file.[/red]",
                          soft_wrap=True)
        raise typer.Exit(2)
    try:
        return load_public_keys(public_key.read_text())
    except (OSError, ValueError, UnicodeDecodeError) as e:
        # The key the caller trusts cannot be read: a usage error, not bad evidence.
        err_console.print(f"[red]--public-key {escape(str(public_key))}: "
                          f"{escape(_one_line(e))}[/red]", soft_wrap=True)
        raise typer.Exit(2) from None


def print_verification(results: list[StudyVerification], quorum: int = 0) -> bool:
    """Print one line per study (and the first bad event); True when everything holds."""
    ok = True
    for result in results:
        if result.ok:
            console.print(
                f"[green]✓[/green] {log_title(result.study)}: {result.events_checked} events, "
                "every signature valid, every version chain intact; "
                f"{result.sealed} sealed, {result.checkpoints} checkpoints verified; "
                f"{witnessed_line(result, quorum)}"
            )
        else:
            ok = False
            assert result.first_bad is not None
            console.print(f"[red]✗ FIRST BAD EVENT[/red] {result.first_bad.describe()}")
    if not results:
        console.print("No studies to verify.")
    return ok


def witnessed_line(result: StudyVerification, quorum: int) -> str:
    """What the witnesses vouch for, said plainly when nothing."""
    latest = result.latest.size if result.latest else 0
    if not quorum:
        return (f"the checkpoint (size {latest}) is unwitnessed: no witnesses are configured "
                "(TRIALLEDGER_WITNESSES)" if latest else "no checkpoint yet")
    if result.witnessed is None:
        return f"no checkpoint is witnessed yet (quorum {quorum})"
    pending = (f"; checkpoints after it await cosignatures (latest size {latest})"
               if latest > result.witnessed.size else "")
    return (f"checkpoint of size {result.witnessed.size} witnessed by "
            f"{', '.join(result.witnessed_by)} (quorum {quorum}){pending}")


@app.command()
def seal(
    database_url: DatabaseUrl = None,
    study: Annotated[str | None, typer.Option(help="Only this study.")] = None,
    checkpoint: Annotated[bool, typer.Option(help="Write a checkpoint now.")] = True,
) -> None:
    """Seal new events into each study's Merkle ledger (and, without --study, the
    directory's) and write signed checkpoints."""
    from infra.ledger.sealer import SealingRefused

    with _runtime(_settings(database_url)) as runtime:
        failed = False
        try:
            sealed = None if study else runtime.seal_directory(force_checkpoint=checkpoint)
        except SealingRefused as e:
            console.print(f"[red]✗ {escape(str(e))}[/red]")
            sealed, failed = None, True
        if sealed is not None:
            console.print(f"{log_title(DIRECTORY_LOG)}: sealed {sealed.sealed} new events; "
                          f"tree size {sealed.tree_size}; "
                          f"checkpoint {sealed.checkpoint_size or '-'}")
        for study_id, _ in runtime.studies():
            if study is not None and study_id != study:
                continue
            try:
                result = runtime.seal(study_id, force_checkpoint=checkpoint)
            except SealingRefused as e:
                console.print(f"[red]✗ {escape(str(e))}[/red]")
                failed = True
                continue
            console.print(f"{study_id}: sealed {result.sealed} new events; tree size "
                          f"{result.tree_size}; checkpoint {result.checkpoint_size or '-'}")
    if failed:
        raise typer.Exit(1)


@app.command()
def rebuild(
    database_url: DatabaseUrl = None,
    study: Annotated[str | None, typer.Option(help="Only this study.")] = None,
) -> None:
    """Drop each study's read tables and replay them from the events, with a progress bar."""
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeRemainingColumn,
    )


    with _runtime(_settings(database_url)) as runtime:
        for study_id, _ in runtime.studies():
            if study is not None and study_id != study:
                continue
            total = runtime.study(study_id).recorder.max_notification_id() or 0
            with Progress(TextColumn(f"Rebuilding {study_id}"), BarColumn(),
                          MofNCompleteColumn(), TimeRemainingColumn(), console=console) as bar:
                task = bar.add_task(study_id, total=total)
                count = runtime.project(study_id, rebuild=True,
                                        on_batch=partial(bar.advance, task))
            console.print(f"{study_id}: replayed {count} events into the read tables")


@app.command()
def restore(
    bundle: Annotated[Path, typer.Option(help="The bundle (export --format bundle).")],
    public_key: Annotated[Path, typer.Option(
        help="The trusted public key(s) (PEM) the bundle must verify against.")],
    database_url: DatabaseUrl = None,
) -> None:
    """Rebuild a study in a database that does not hold it yet, from a bundle that verifies
    offline: the same events (positions, bytes, signatures), leaves and checkpoints, then the
    read tables. A bundle that does not verify is refused (exit 1), as is a study that holds
    events already (exit 2). People, roles and API clients are not in a bundle: add them
    with `users` and `clients`."""
    from application.restore import restore_bundle
    from infra.ledger.restore import TargetNotEmpty
    from trialledger_verifier.bundle import BundleInvalid

    trusted = _trusted_keys(bundle, public_key)
    with _runtime(_settings(database_url)) as runtime:
        try:
            restored = restore_bundle(runtime, bundle, trusted)
        except BundleInvalid as e:
            console.print(f"[red]✗ BUNDLE INVALID[/red] {escape(str(bundle))}: "
                          f"{escape(str(e))}; nothing restored",
                          soft_wrap=True)
            raise typer.Exit(1) from None
        except TargetNotEmpty as e:
            err_console.print(f"[red]{escape(str(e))}: restore needs a database without it; "
                              "nothing restored.[/red]", soft_wrap=True)
            raise typer.Exit(2) from None
    report, loaded = restored.report, restored.loaded
    console.print(f"[green]✓[/green] restored study {report.study} from {bundle}: "
                  f"{loaded.events} events, {loaded.leaves} leaves, {loaded.checkpoints} "
                  f"checkpoints (latest size {report.latest_size}"
                  f"{f', {loaded.cosigned} witnessed' if loaded.cosigned else ''}) as "
                  f"exported; read tables rebuilt from "
                  f"{restored.projected} events; tree size now {restored.tree_size}. "
                  "People, roles and API clients are not in a bundle: add them with "
                  "`trialledger users` and `clients`.", soft_wrap=True, highlight=False)


def _require_listing_format(output_format: str) -> None:
    """Exit 2 with one line unless ``--format`` is one a listing prints."""
    if output_format not in ("table", "csv", "json"):
        err_console.print("[red]--format must be table, csv or json.[/red]")
        raise typer.Exit(2)


@app.command()
def outcomes(
    study: Annotated[str, typer.Option(help="The study.")],
    as_of: Annotated[
        str | None, typer.Option("--as-of", help="Recorded time, ISO 8601 with offset.")
    ] = None,
    output_format: Annotated[str, typer.Option("--format", help="table, csv or json")] = "table",
    cell: Annotated[
        str | None, typer.Option("--cell", help="A cell id: list the subjects and records "
                                                "behind it, with their log positions (JSON).")
    ] = None,
    valid_at: Annotated[
        str | None, typer.Option("--valid-at", help="Clinical time, ISO 8601 with offset: "
                                                    "the tables of what held then.")
    ] = None,
    database_url: DatabaseUrl = None,
) -> None:
    """The study's declared endpoints as tables by arm, as the database stood at --as-of
    (default now), of what the records said held at --valid-at (default: all of it); with
    --cell, what one figure was computed from."""
    from projections.outcome_render import to_csv, to_rich
    from projections.outcomes.engine import to_json

    _require_listing_format(output_format)
    when = _parse_time("--as-of", as_of) if as_of else None
    valid = _parse_time("--valid-at", valid_at) if valid_at else None
    with _runtime(_settings(database_url)) as runtime:
        _require_study(runtime.studies(), study)
        if cell is not None:
            try:
                sources = runtime.outcome_cell(study, cell, when, valid)
            except NotFound as e:
                err_console.print(f"[red]--cell: {escape(str(e))}[/red]")
                raise typer.Exit(2) from None
            sys.stdout.write(to_json(sources))
            return
        tables = runtime.outcomes(study, when, valid)
    if output_format == "json":
        sys.stdout.write(to_json(tables))
    elif output_format == "csv":
        sys.stdout.write(to_csv(tables))
    else:
        for table in to_rich(tables):
            console.print(table)


@app.command()
def deviations(
    study: Annotated[str, typer.Option(help="The study.")],
    site: Annotated[str | None, typer.Option(help="Only this site.")] = None,
    subject: Annotated[str | None, typer.Option(help="Only this subject.")] = None,
    output_format: Annotated[str, typer.Option("--format", help="table, csv or json")] = "table",
    database_url: DatabaseUrl = None,
) -> None:
    """The study's protocol deviations (found by the soft checks or reported by people)."""
    from rich.table import Table

    from infra.postgres import schema_for_study
    from projections.deviations import COLUMNS, deviation_list, to_csv, to_json

    _require_listing_format(output_format)
    with _runtime(_settings(database_url)) as runtime:
        _require_study(runtime.studies(), study)
        runtime.project(study)
        with connect(runtime.url) as conn:
            rows = deviation_list(conn, schema_for_study(study), None, site, subject)
    if output_format == "json":
        sys.stdout.write(to_json(rows) + "\n")
    elif output_format == "csv":
        sys.stdout.write(to_csv(rows))
    else:
        shown = ("subject", "deviation_id", "category", "severity", "occurred_on",
                 "detected_by", "description")
        table = Table(*shown, title=f"{study}: {len(rows)} protocol deviations")
        for row in rows:
            table.add_row(*(str(row[c]) for c in shown if c in COLUMNS))
        console.print(table)


def _parse_time(option: str, text: str) -> datetime:
    from domain.clock import require_aware
    from domain.errors import DomainError

    try:
        return require_aware(option, datetime.fromisoformat(text))
    except (ValueError, DomainError) as e:
        err_console.print(
            f"[red]{escape(str(e) if isinstance(e, DomainError) else f'{option}: {e}')}[/red]")
        raise typer.Exit(2) from None


@app.command()
def export(
    study: Annotated[str, typer.Option(help="The study to export.")],
    export_format: Annotated[
        str, typer.Option("--format",
                          help="odm-snapshot, odm-archive, csv, dataset-json, "
                               "dataset-ndjson, xpt, casebook or bundle")],
    output: Annotated[
        Path, typer.Option("-o", "--output",
                           help="File to write (a directory for csv, dataset-json, "
                                "dataset-ndjson and xpt; a zip for casebook and bundle).")],
    as_of: Annotated[
        str | None, typer.Option("--as-of", help="Recorded time, ISO 8601 with offset "
                                 "(default now; for the bundle, the time of its renderings: "
                                 "its ledger always holds the whole log).")
    ] = None,
    force: Annotated[bool, typer.Option(
        "--force", help="Replace the file or directory at --output.")] = False,
    database_url: DatabaseUrl = None,
) -> None:
    """Export a study: ODM 1.3.2 Snapshot as of --as-of, the ODM Transactional archive of
    every change, SDTM-named CSV files with the audit trail, the SDTM domains as CDISC
    Dataset-JSON 1.1 (JSON or NDJSON) or SAS XPORT v5 files, each subject's casebook (HTML and
    PDF, in a zip), or the regulator's bundle (all of these plus the ledger, with a signed
    manifest) that a regulator verifies offline. Nothing at --output is replaced without
    --force (an empty directory aside); the output appears once complete, and only then is
    the export recorded (a failure is recorded as a failed export)."""
    from application.exports import (
        DOMAIN_FORMATS,
        FORMATS,
        DestinationRefused,
        check_destination,
        export_to_path,
        write_bundle_file,
        write_casebook_zip,
        write_csv_dir,
        write_domain_dir,
        write_rendering,
    )

    if export_format not in FORMATS:
        err_console.print(f"[red]--format must be one of {', '.join(FORMATS)}.[/red]")
        raise typer.Exit(2)
    when = _parse_time("--as-of", as_of) if as_of else None
    try:
        check_destination(output, force)  # before any work, and again when it is done
    except DestinationRefused as e:
        err_console.print(f"[red]--output: {escape(str(e))}"
                          f"{'' if 'not a directory' in str(e) else '; --force replaces it'}"
                          ".[/red]", soft_wrap=True)
        raise typer.Exit(2) from None

    def write(path: Path) -> str:
        if export_format == "bundle":
            with _progress_bar("Bundle: casebooks") as tell:
                manifest = write_bundle_file(runtime, study, path, when, tell)
            return f"{len(manifest['files'])} files as of {manifest['as_of']}, signed manifest"
        if export_format == "casebook":
            with _progress_bar("Casebooks") as tell:
                count = write_casebook_zip(runtime, study, path, when, tell)
            return f"casebooks of {count} subjects (HTML and PDF)"
        if export_format == "csv" or export_format in DOMAIN_FORMATS:
            counts = (write_csv_dir(runtime, study, path, when) if export_format == "csv"
                      else write_domain_dir(runtime, study, export_format, path, when))
            return f"{len(counts)} files: " + ", ".join(
                f"{name} {rows} rows" for name, rows in counts.items())
        with path.open("wb") as out:
            count = write_rendering(runtime, study, export_format, out, when)
        what = "subjects" if export_format == "odm-snapshot" else "events"
        return f"ODM 1.3.2 {export_format}, {count} {what}"

    with _runtime(_settings(database_url)) as runtime:
        _require_study(runtime.studies(), study)
        summary = export_to_path(runtime, study, export_format, output, when, _cli_envelope(),
                                 write, replace=force)
    console.print(f"Wrote {output}: {summary}")


@app.command()
def validate(
    database_url: DatabaseUrl = None,
    out: Annotated[Path, typer.Option(
        "--out", "-o", help="Directory for the report (created if missing).")] = Path("."),
    odm_xsd: Annotated[Path | None, typer.Option(
        "--odm-xsd", envvar="TRIALLEDGER_ODM_XSD",
        help="The ODM 1.3.2 XSD the exports are validated against (default: "
             "../shared/standards/odm-1.3.2/ODM1-3-2.xsd beside the project).",
        show_default=False)] = None,
) -> None:
    """Installation and operational qualification of this deployment, in a validation study
    of its own; writes <study>.html, <study>.pdf and the signed <study>.zip (which `verify
    --bundle` accepts) into --out. Exit 0 only when every check passes; 1 naming the
    requirements a failed check covers. Run it as the database owner (as `db grant`)."""
    from application.validation.operational import DEFAULT_ODM_XSD
    from application.validation.run import CannotValidate, run_validation

    if out.exists() and not out.is_dir():
        err_console.print(f"[red]--out {escape(str(out))}: not a directory.[/red]",
                          soft_wrap=True)
        raise typer.Exit(2)
    xsd = odm_xsd or DEFAULT_ODM_XSD
    if not xsd.is_file():
        err_console.print(f"[red]--odm-xsd {escape(str(xsd))}: no such file.[/red]",
                          soft_wrap=True)
        raise typer.Exit(2)
    with _runtime(_settings(database_url)) as runtime:
        try:
            validation = run_validation(runtime, out, xsd)
        except CannotValidate as e:
            err_console.print(f"[red]{escape(str(e))}.[/red]", soft_wrap=True)
            raise typer.Exit(2) from None
    for result in validation.results:
        mark = "[green]✓[/green]" if result.passed else "[red]✗[/red]"
        console.print(f"{mark} {result.check.name} ({', '.join(result.check.requirements)}): "
                      f"{escape(result.evidence)}", soft_wrap=True, highlight=False)
    console.print(f"Report: {validation.report} (signed; check it with trialledger verify "
                  f"--bundle), {validation.html}, {validation.pdf}", soft_wrap=True,
                  highlight=False)
    failed = validation.failed_requirements
    if failed:
        console.print(f"[red]✗ VALIDATION FAILED[/red] in {validation.study}: requirement(s) "
                      f"{', '.join(failed)} not met", soft_wrap=True, highlight=False)
        raise typer.Exit(1)
    console.print(f"[green]✓ VALIDATED[/green] in {validation.study}: every check passed",
                  soft_wrap=True, highlight=False)


@contextmanager
def _progress_bar(what: str) -> Iterator[Callable[[int, int], None]]:
    """A progress bar on stderr, moved by the ``(done, total)`` calls of the yielded function
    (hidden when stderr is not a terminal)."""
    from rich.progress import MofNCompleteColumn, Progress

    with Progress(*Progress.get_default_columns(), MofNCompleteColumn(), console=err_console,
                  transient=True) as bar:
        task = bar.add_task(what, total=None)

        def tell(done: int, total: int) -> None:
            bar.update(task, completed=done, total=total)

        yield tell


@app.command()
def redact(
    study: Annotated[str, typer.Option(help="The study.")],
    subject: Annotated[str, typer.Option(help="The subject code.")],
    username: Annotated[str, typer.Option(
        help="Who acts: a data manager requests, an admin (another person) approves.")],
    record: Annotated[str | None, typer.Option(
        help="One record (with --field); neither: every identifying value of the subject.")
    ] = None,
    field: Annotated[str | None, typer.Option(help="A declared identifying field.")] = None,
    reason: Annotated[str | None, typer.Option(
        help="Why (shown in place of the value: [redacted on <date>: <reason>]).")] = None,
    request_id: Annotated[str | None, typer.Option(
        help="The new request's id (default: generated).")] = None,
    approve: Annotated[str | None, typer.Option(
        help="Approve this request id instead of requesting: destroys the values' keys.")
    ] = None,
    password_stdin: Annotated[bool, typer.Option(
        "--password-stdin", help="Read USERNAME's password from stdin (else prompted).")
    ] = False,
    database_url: DatabaseUrl = None,
) -> None:
    """Redact identifying values entered by mistake (crypto-shredding, two-person): a data
    manager requests it with a reason, an admin approves it with --approve. Exit 2 when
    refused."""
    import uuid

    from application.people import SignIn
    from application.sign_in_limits import TooManyAttempts
    from domain.commands import ApproveRedaction, RequestRedaction
    from domain.directory import SignInRefused
    from domain.envelope import Reason
    from domain.errors import DomainError

    if approve is None and not reason:
        err_console.print("[red]--reason is required to request a redaction.[/red]")
        raise typer.Exit(2)
    password = (sys.stdin.readline().rstrip("\n") if password_stdin
                else typer.prompt(f"Password for {username}", hide_input=True))
    request = f"cli-{uuid.uuid4()}"
    with _runtime(_settings(database_url)) as runtime:
        try:
            user = runtime.people().sign_in(SignIn(username, password, "trialledger-cli",
                                                   request, "redaction"))
            caller = Caller.of(user, "trialledger-cli", request, "cli")
            if approve is not None:
                runtime.service().handle(ApproveRedaction(
                    study=study, subject=subject, request_id=approve), caller)
                console.print(f"Approved redaction {approve} of {study}/{subject}: its keys "
                              "are destroyed.")
                if runtime.settings.provisioned:
                    console.print(f"The read tables still hold the values: run `trialledger "
                                  f"rebuild --study {study}` as the owner.")
                return
            rid = request_id or f"RD-{uuid.uuid4().hex[:12]}"
            runtime.service().handle(RequestRedaction(
                study=study, subject=subject, request_id=rid, record_id=record, field=field,
                reason=Reason("entered_in_error", reason or "")), caller)
        except (DomainError, SignInRefused, TooManyAttempts) as e:
            err_console.print(f"[red]{escape(str(e) or type(e).__name__)}[/red]",
                              soft_wrap=True)
            raise typer.Exit(2) from None
    console.print(f"Requested redaction {rid} of {study}/{subject}; an admin approves it "
                  f"with: trialledger redact --study {study} --subject {subject} "
                  f"--approve {rid} --username ADMIN")


@app.command("import-sdtm")
def import_sdtm(
    study: Annotated[str, typer.Option(help="The study to load into (registered from the "
                                            "data set's TS/TA/TV/TI if new).")],
    directory: Annotated[Path, typer.Argument(help="Directory of SDTM .xpt files, or of the "
                                                   "CSV files `export --format csv` writes.")],
    database_url: DatabaseUrl = None,
    workers: Annotated[int, typer.Option(
        min=1, help="Processes that build and sign new subjects' events (1: this process, "
                    "with a signing process beside it).")] = 2,
) -> None:
    """Load an SDTM data set (DM, DS, SV, SE, EX, CM, LB, VS, AE, SUPPxx) as events with
    source=import and each row's provenance. Idempotent: a re-run adds only what is missing.

    Exit codes: 0 loaded; 2 refused with nothing stored (a bad row, no grant) or a usage or
    environment error; 1 stopped part way (a worker process died, or the database refused a
    batch): the transactions committed are kept whole, and running it again adds the rest."""
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeRemainingColumn,
    )

    from application.sdtm_import import (
        DataSet,
        Importer,
        ImportInterrupted,
        ImportRefused,
        count_rows,
    )

    try:
        data = DataSet(directory)
    except ImportRefused as e:
        err_console.print(f"[red]Import refused, nothing stored: {escape(str(e))}[/red]",
                          soft_wrap=True)
        raise typer.Exit(2) from None
    with _runtime(_settings(database_url)) as runtime:
        app = runtime.study(study)
        with Progress(TextColumn(f"Importing {directory.name} into {study}"), BarColumn(),
                      MofNCompleteColumn(), TimeRemainingColumn(), console=console) as bar:
            task = bar.add_task(study, total=count_rows(data))
            importer = Importer(runtime.service(), app, data, _operator("import"),
                                on_progress=partial(bar.advance, task), workers=workers)
            try:
                result = importer.run()
            except ImportRefused as e:
                err_console.print(f"[red]Import refused, nothing stored: {escape(str(e))}"
                                  "[/red]", soft_wrap=True)
                raise typer.Exit(2) from None
            except ImportInterrupted as e:
                err_console.print(f"[red]Import stopped: {escape(str(e))}[/red]",
                                  soft_wrap=True)
                raise typer.Exit(1) from None
    added = ", ".join(f"{k} {n}" for k, n in sorted(result.by_domain.items())) or "none"
    console.print(f"{study}: {'registered the study; ' if result.registered else ''}"
                  f"{result.subjects_added} subjects and {result.records_added} records added "
                  f"({result.events_added} events; records by domain: {added}); "
                  f"{result.already_present} records were already there")
    if result.skipped_tables:
        console.print("Not loaded (no mapping): " + ", ".join(result.skipped_tables))


@keys_app.command("rotate")
def keys_rotate(
    database_url: DatabaseUrl = None,
    from_key_file: Annotated[Path | None, typer.Option(
        "--from-key-file", help="The key being replaced, a PEM file (mode 0600): the "
        "configured key (file or PKCS#11) is the new one.", show_default=False)] = None,
    from_pkcs11_key_label: Annotated[str | None, typer.Option(
        "--from-pkcs11-key-label", help="The key being replaced, by its label on the "
        "configured PKCS#11 token.", show_default=False)] = None,
) -> None:
    """Move to a new signing key, registered in every study by an event the old key signs.

    Without --from-*: create the next key in the data directory (the embedded default).
    With one: the configured key (a key file, or a PKCS#11 key) is the new key and the named
    one, still active, vouches for it."""
    settings = _settings(database_url)
    if from_key_file is None and from_pkcs11_key_label is None:
        _rotate_embedded(settings)
        return
    try:
        old = keys.previous_key(settings, from_key_file, from_pkcs11_key_label)
        new = keys.load_signing_key(settings)
    except SigningKeyError as e:
        err_console.print(f"[red]{escape(str(e))}[/red]", soft_wrap=True)
        raise typer.Exit(2) from None
    from infra.signers import close_signer
    from infra.signing import key_id_for, public_key_b64

    new_id = key_id_for(settings.key_name, new.public_key())
    new_public = public_key_b64(new.public_key())
    close_signer(new)  # its public key is all a rotation needs (and is remembered now)
    with _runtime(settings) as runtime:
        runtime.use_signer(old)  # the old key signs the events that vouch for the new one
        old_id = _current_key_id(runtime)
        if old_id == new_id:
            err_console.print(f"[red]{old_id} is already the configured key: configure the new "
                              "key, then name the old one.[/red]")
            raise typer.Exit(2)
        studies = [s for s, _ in runtime.studies()]
        _register_in(runtime, studies, old_id, new_id, new_public)
    console.print(f"Rotated to {new_id} in {len(studies)} studies; {old_id} is retired.")


def _rotate_embedded(settings: Settings) -> None:
    with _runtime(settings) as runtime:
        studies = [s for s, _ in runtime.studies()]
        old_id = _current_key_id(runtime)
        new_id = keys.rotate(settings, partial(_register_in, runtime, studies, old_id))
    console.print(f"Rotated to {new_id} in {len(studies)} studies; the old key is retired.")


def _register_in(runtime: Runtime, studies: list[str], old_id: str, new_id: str,
                 new_public: str) -> None:
    """Register ``new_id`` in every study not holding it yet (resumable), retiring
    ``old_id``, by events the runtime's key (the old one) signs."""
    for study_id in studies:
        app = runtime.study(study_id)
        keyring = app.keyring()
        if keyring is None or new_id not in keyring.keys:
            app.register_key(new_id, new_public, _system(), retire=old_id)


@keys_app.command("hsm-generate")
def keys_hsm_generate() -> None:
    """Generate the configured PKCS#11 key (TRIALLEDGER_PKCS11_KEY_LABEL) on the token: an
    Ed25519 pair whose private half is sensitive and never extractable."""
    from infra.pkcs11_signer import generate_key
    from infra.signing import key_id_for

    settings = _settings(None)
    try:
        public = generate_key(keys.token_key(settings))
    except SigningKeyError as e:
        err_console.print(f"[red]{escape(str(e))}[/red]", soft_wrap=True)
        raise typer.Exit(2) from None
    console.print(f"Generated {key_id_for(settings.key_name, public)} as "
                  f"{settings.pkcs11_key_label!r} on token {settings.pkcs11_token_label!r}.")


@keys_app.command("revoke")
def keys_revoke(
    key_id: Annotated[str, typer.Option(help="The key to revoke.")],
    effective_at: Annotated[str, typer.Option(help="From when (ISO 8601 with offset).")],
    reason: Annotated[str, typer.Option(help="Why (e.g. suspected compromise).")],
    database_url: DatabaseUrl = None,
) -> None:
    """Revoke a key: nothing it signed at or after --effective-at is valid any more."""
    from domain.errors import DomainError

    when = _parse_time("--effective-at", effective_at)
    with _runtime(_settings(database_url)) as runtime:
        for study_id, _ in runtime.studies():
            try:
                runtime.study(study_id).revoke_key(key_id, when, reason, _system())
            except DomainError as e:
                err_console.print(f"[red]{study_id}: {e}[/red]")
                raise typer.Exit(2) from None
    console.print(f"Revoked {key_id} from {when.isoformat()}.")


def _system() -> Envelope:
    from application.runtime import system_envelope

    return system_envelope()


def _current_key_id(runtime: Runtime) -> str:
    from infra.signing import key_id_for

    return key_id_for(runtime.settings.key_name, runtime.signing_key().public_key())


@keys_app.command("export-public")
def export_public(
    output: Annotated[Path, typer.Option("-o", "--output", help="File to write (PEM).")],
) -> None:
    """Write every public key this deployment has signed with (PEM, with key ids)."""
    settings = _settings(None)
    public_keys = keys.load_public_keys(settings)
    if not public_keys:
        err_console.print("[red]No signing keys yet.[/red]")
        raise typer.Exit(2)
    with output.open("wb") as f:
        for key_id, key in sorted(public_keys.items()):
            f.write(f"# key id: {key_id}\n".encode())
            f.write(keys.public_pem(key))
    console.print(f"Wrote {len(public_keys)} public key(s) to {output}")


@db_app.command("grant")
def db_grant(
    role: Annotated[str, typer.Option(help="The application's login role.")],
    study: Annotated[list[str], typer.Option(help="Study to create and grant (repeatable).")],
    database_url: DatabaseUrl = None,
    password_stdin: Annotated[
        bool, typer.Option("--password-stdin", help="Read the new role's password from stdin.")
    ] = False,
) -> None:
    """As the owner: create studies' schemas and tables, and grant ROLE least privilege."""
    from application.runtime import Runtime
    from infra.postgres import database, schema_for_study
    from infra.roles import create_login_role, grant_app_role, grant_directory

    settings = _settings(database_url)
    password = sys.stdin.readline().rstrip("\n") if password_stdin else None
    with database(settings.database_url, settings.pgdata) as url:
        # Unsigned: this only creates tables; it never writes an event.
        runtime = Runtime(settings, url, signed=False)
        try:
            for study_id in study:
                runtime.study(study_id)
                runtime.history_view(study_id).datastore.close()  # creates the read tables
            runtime.directory()  # people, and (below) sessions and idempotency keys
            runtime.pool()
        finally:
            runtime.close()
        with connect(url) as conn:
            create_login_role(conn, role, password)
            grant_directory(conn, role)
            for study_id in study:
                grant_app_role(conn, role, schema_for_study(study_id))
    console.print(f"Role {role} may now read and append to: {', '.join(study)}")


@users_app.command("add")
def users_add(
    username: Annotated[str, typer.Option(help="Sign-in name (never reused).")],
    role: Annotated[str, typer.Option(help="investigator, coordinator, monitor, data_manager, "
                                           "regulator or admin.")],
    study: Annotated[str, typer.Option(help="Study id, or * for every study.")],
    full_name: Annotated[str | None, typer.Option(
        help="Printed name (shown on signatures); required for a new user.")] = None,
    site: Annotated[str, typer.Option(help="Site code, or * for every site.")] = "*",
    password_stdin: Annotated[bool, typer.Option(
        "--password-stdin", help="Read a new user's password from stdin.")] = False,
    database_url: DatabaseUrl = None,
) -> None:
    """Register a person (the first admin included) with a role, or grant an existing one
    another role. Recorded as events by the system, on behalf of whoever runs the command.
    A new person's password must meet the password rules (README: Sign-in and passwords)."""
    from application.people import Admin, GrantRole, RegisterUser
    from domain.errors import DomainError
    from domain.user import Grant

    operator = Admin.operator(_cli_envelope())
    grant = Grant(role, study, site)
    with _runtime(_settings(database_url)) as runtime:
        people = runtime.people()
        try:
            try:
                people.directory.user(username)
            except NotFound:
                if not full_name:
                    err_console.print("[red]--full-name is required for a new user.[/red]")
                    raise typer.Exit(2) from None
                if not password_stdin:
                    err_console.print("[red]--password-stdin is required for a new user."
                                      "[/red]")
                    raise typer.Exit(2) from None
                password = sys.stdin.readline().rstrip("\n")
                people.register_user(operator, RegisterUser(username, full_name, password,
                                                            (grant,)))
                console.print(f"Registered {username} ({full_name}) as {role} at "
                              f"{study}/{site}.")
                return
            people.grant_role(operator, GrantRole(username, grant))
        except DomainError as e:
            err_console.print(f"[red]{e}[/red]")
            raise typer.Exit(2) from None
    console.print(f"Granted {username} {role} at {study}/{site}.")


@clients_app.command("add")
def clients_add(
    client_id: Annotated[str, typer.Option("--client-id", help="The client's id.")],
    name: Annotated[str, typer.Option(help="What the client is.")] = "",
    database_url: DatabaseUrl = None,
) -> None:
    """Register an API client and print its secret (shown once, stored only as a hash)."""
    from application.people import Admin, RegisterClient
    from domain.errors import DomainError

    with _runtime(_settings(database_url)) as runtime:
        try:
            _, secret = runtime.people().register_client(Admin.operator(_cli_envelope()),
                                                         RegisterClient(client_id, name))
        except DomainError as e:
            err_console.print(f"[red]{e}[/red]")
            raise typer.Exit(2) from None
    console.print(f"Registered client {client_id}. Its secret (shown once): {secret}")


@users_app.command("list")
def users_list(database_url: DatabaseUrl = None) -> None:
    """Every person, active or not, with their roles (study/site) and account state."""
    from rich.table import Table

    from application.people import Admin

    with _runtime(_settings(database_url)) as runtime:
        people = runtime.people().users(Admin.operator(_cli_envelope()))
    table = Table("username", "full name", "roles", "state", title=f"{len(people)} people")
    for user in people:
        state = ", ".join(word for word, holds in (
            ("active" if user.active else "deactivated", True),
            ("locked out", user.locked_out), ("TOTP", user.totp_secret is not None),
            ("identity verified", user.identity_verified)) if holds)
        roles = ", ".join(f"{g.role}@{g.study}/{g.site}" for g in sorted(
            user.grants, key=lambda g: (g.study, g.site, g.role)))
        table.add_row(user.username, user.full_name, roles or "-", state)
    console.print(table)


@clients_app.command("list")
def clients_list(database_url: DatabaseUrl = None) -> None:
    """Every API client, revoked or not."""
    from rich.table import Table

    from application.people import Admin

    with _runtime(_settings(database_url)) as runtime:
        clients = runtime.people().clients(Admin.operator(_cli_envelope()))
    table = Table("client id", "name", "state", "registered", title=f"{len(clients)} clients")
    for client in clients:
        table.add_row(client.client_id, client.name,
                      "active" if client.active else "revoked", client.created_on.isoformat())
    console.print(table)


@clients_app.command("revoke")
def clients_revoke(
    client_id: Annotated[str, typer.Option("--client-id", help="The client to revoke.")],
    database_url: DatabaseUrl = None,
) -> None:
    """Revoke an API client: its secret signs in no more (recorded as an event)."""
    from application.people import Admin, RevokeClient
    from domain.errors import DomainError

    with _runtime(_settings(database_url)) as runtime:
        try:
            runtime.people().revoke_client(Admin.operator(_cli_envelope()),
                                           RevokeClient(client_id))
        except DomainError as e:
            err_console.print(f"[red]{escape(str(e))}[/red]", soft_wrap=True)
            raise typer.Exit(2) from None
    console.print(f"Revoked client {client_id}: its secret signs in no more.")


@keys_app.command("list")
def keys_list(database_url: DatabaseUrl = None) -> None:
    """Every key each study's log is signed with: key id, status, validity, verifier key."""
    from rich.table import Table

    rows = []
    with _runtime(_settings(database_url)) as runtime:
        for study_id, _ in runtime.studies():
            keyring = runtime.study(study_id).keyring()
            if keyring is None:
                continue
            for key_id, status in keyring.keys.items():
                until = keyring.valid_until.get(key_id)
                rows.append((study_id, key_id, status, keyring.valid_from[key_id].isoformat(),
                             until.isoformat() if until else "-",
                             keys.verifier_key_of(key_id, keyring.public_keys[key_id])))
    table = Table("study", "key id", "status", "valid from", "valid until", "verifier key",
                  title=f"{len(rows)} study keys")
    for row in rows:
        table.add_row(*row)
    console.print(table)


def _operator(channel: Channel = "cli") -> Caller:
    """The operating-system user running a set-up command or an import, as a caller."""
    import getpass

    operator = getpass.getuser()
    return Caller(f"os:{operator}", operator, operator, (OPERATOR_GRANT,), "trialledger-cli",
                  f"cli-{os.getpid()}", channel)


def _cli_envelope() -> Envelope:
    """The envelope of a set-up command: the system, on behalf of the operating-system user."""
    return _operator().envelope(OPERATOR_GRANT)


def main() -> None:
    """Entry point. A database that cannot be reached (down, or refusing more clients) ends
    any command with one line and exit code 2, not a traceback."""
    from infra.unavailable import unavailable_reason

    try:
        app(prog_name="trialledger")
    except Exception as e:
        reason = unavailable_reason(e)
        if reason is None:
            raise
        err_console.print(f"[red]{reason}[/red]", soft_wrap=True, highlight=False)
        sys.exit(2)


if __name__ == "__main__":
    main()
