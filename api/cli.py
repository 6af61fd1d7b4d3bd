"""The ``trialledger`` command line."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

from infra import keys
from infra.logging import configure_logging
from infra.postgres import connect
from infra.settings import Settings
from infra.verify import StudyVerification, verify_study

app = typer.Typer(no_args_is_help=True, add_completion=False, help="TrialLedger: "
                  "an event-sourced, tamper-evident audit trail for clinical-trial data.")
keys_app = typer.Typer(no_args_is_help=True, help="Signing keys.")
app.add_typer(keys_app, name="keys")
db_app = typer.Typer(no_args_is_help=True, help="Database set-up, run as the table owner.")
app.add_typer(db_app, name="db")

console = Console()
err_console = Console(stderr=True)

DatabaseUrl = Annotated[
    str | None,
    typer.Option(
        "--database-url",
        envvar="DATABASE_URL",
        help="PostgreSQL URL; without one an embedded PostgreSQL is started.",
        show_default=False,
    ),
]


def _settings(database_url: str | None) -> Settings:
    configure_logging()
    return Settings.from_env(database_url)


@app.command()
def demo(
    database_url: DatabaseUrl = None,
    seed: Annotated[int, typer.Option(help="Seed of the deterministic simulation.")] = 1,
    no_serve: Annotated[bool, typer.Option("--no-serve", help="Exit after the run.")] = False,
    host: Annotated[str, typer.Option(help="Address to serve on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port to serve on.")] = 8000,
) -> None:
    """Simulate NCT04397107's 46 children, verify every signature, then serve the API."""
    from api.demo import run_demo
    from api.runtime import open_runtime

    settings = _settings(database_url)
    with open_runtime(settings) as runtime:
        ok = run_demo(runtime, seed, console)
        if not ok:
            raise typer.Exit(1)
        if not no_serve:
            _serve(runtime, host, port)


@app.command()
def serve(
    database_url: DatabaseUrl = None,
    host: Annotated[str, typer.Option(help="Address to serve on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port to serve on.")] = 8000,
) -> None:
    """Serve the HTTP API."""
    from api.runtime import open_runtime

    with open_runtime(_settings(database_url)) as runtime:
        _serve(runtime, host, port)


def _serve(runtime: object, host: str, port: int) -> None:
    import uvicorn

    from api.app import create_app
    from api.runtime import Runtime

    assert isinstance(runtime, Runtime)
    console.print(f"Serving the API on http://{host}:{port} (Ctrl-C to stop)")
    uvicorn.run(create_app(runtime), host=host, port=port, log_level="warning")


@app.command()
def verify(
    database_url: DatabaseUrl = None,
    study: Annotated[str | None, typer.Option(help="Only this study.")] = None,
) -> None:
    """Check every stored event's signature and version chain; exit 0 only when all hold."""
    from infra.catalog import list_studies
    from infra.postgres import database

    settings = _settings(database_url)
    public_keys = keys.load_public_keys(settings)
    with database(settings.database_url, settings.pgdata) as url, connect(url) as conn:
        studies = list_studies(conn)
        if study is not None:
            studies = [(s, schema) for s, schema in studies if s == study]
            if not studies:
                err_console.print(f"[red]No study {study} in this database.[/red]")
                raise typer.Exit(2)
        results = [verify_study(conn, s, schema, public_keys) for s, schema in studies]
    if not print_verification(results):
        raise typer.Exit(1)


def print_verification(results: list[StudyVerification]) -> bool:
    """Print one line per study (and the first bad event); True when everything holds."""
    ok = True
    for result in results:
        if result.ok:
            console.print(
                f"[green]✓[/green] {result.study}: {result.events_checked} events, "
                "every signature valid, every version chain intact"
            )
        else:
            ok = False
            assert result.first_bad is not None
            console.print(f"[red]✗ FIRST BAD EVENT[/red] {result.first_bad.describe()}")
    if not results:
        console.print("No studies to verify.")
    return ok


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
    from api.runtime import Runtime
    from infra.postgres import database, schema_for_study
    from infra.roles import create_login_role, grant_app_role

    settings = _settings(database_url)
    password = sys.stdin.readline().rstrip("\n") if password_stdin else None
    with database(settings.database_url, settings.pgdata) as url:
        # Unsigned: this only creates tables; it never writes an event.
        runtime = Runtime(settings, url, signed=False)
        try:
            for study_id in study:
                runtime.study(study_id)
        finally:
            runtime.close()
        with connect(url) as conn:
            create_login_role(conn, role, password)
            for study_id in study:
                grant_app_role(conn, role, schema_for_study(study_id))
    console.print(f"Role {role} may now read and append to: {', '.join(study)}")


def main() -> None:
    """Entry point."""
    app(prog_name="trialledger")


if __name__ == "__main__":
    main()
