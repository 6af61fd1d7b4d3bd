"""``trialledger witness``: make a witness's key, serve it, and name the keys it trusts."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

witness_app = typer.Typer(no_args_is_help=True, help="A checkpoint witness (C2SP "
                          "tlog-witness) with its own key and state directory.")
console = Console()
err_console = Console(stderr=True)

StateDir = Annotated[Path, typer.Option("--state-dir", help="The witness's own directory "
                                        "(its key, and the latest checkpoint cosigned per "
                                        "log); never the study database.")]


@witness_app.command("init")
def witness_init(
    state_dir: StateDir,
    name: Annotated[str, typer.Option(help="The witness's name (a schema-less URL, e.g. "
                                           "witness.example.org/w1).")],
) -> None:
    """Create the witness's key in --state-dir and print its verifier key (vkey)."""
    from infra.ledger.cosignature import Cosigner
    from infra.witness.state import StateError, WitnessState

    try:
        key = WitnessState(state_dir).init(name)
    except (StateError, OSError) as e:
        err_console.print(f"[red]{e}[/red]", soft_wrap=True)
        raise typer.Exit(2) from None
    # Only the vkey on stdout: a deployment's TRIALLEDGER_WITNESSES names it.
    print(Cosigner(name, key.public_key()).vkey)


@witness_app.command("serve")
def witness_serve(
    state_dir: StateDir,
    log_key: Annotated[list[str], typer.Option(
        "--log-key", help="Verifier key of a log key the witness trusts (repeatable; "
                          "`trialledger witness log-keys` prints a deployment's).")],
    host: Annotated[str, typer.Option(help="Address to serve on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port to serve on.")] = 8100,
    origin_prefix: Annotated[str, typer.Option(
        help="Witness the logs whose origin starts with this.")] = "trialledger/",
) -> None:
    """Serve POST /add-checkpoint: cosign a checkpoint signed by a trusted log key only
    when it extends the last one this witness cosigned for its log."""
    import uvicorn

    from api.witness_app import create_witness_app
    from infra.ledger.cosignature import LogKey, parse_vkey
    from infra.ledger.note import NoteError
    from infra.witness.state import StateError, WitnessState
    from infra.witness.witness import Witness

    keys: list[LogKey] = []
    for text in log_key:
        try:
            parsed = parse_vkey(text)
        except NoteError as e:
            err_console.print(f"[red]--log-key: {e}[/red]", soft_wrap=True)
            raise typer.Exit(2) from None
        if not isinstance(parsed, LogKey):
            err_console.print(f"[red]--log-key: {parsed.name} is a witness key, not a log's"
                              "[/red]", soft_wrap=True)
            raise typer.Exit(2)
        keys.append(parsed)
    state = WitnessState(state_dir)
    try:
        state.lock()
        witness = Witness(state, keys, origin_prefix)
    except StateError as e:
        err_console.print(f"[red]{e}[/red]", soft_wrap=True)
        raise typer.Exit(2) from None
    console.print(f"Witness {witness.cosigner.vkey} on http://{host}:{port} for "
                  f"{origin_prefix}* signed by {', '.join(k.name for k in keys)}",
                  soft_wrap=True)
    uvicorn.run(create_witness_app(witness), host=host, port=port, log_level="warning",
                server_header=False)


@witness_app.command("log-keys")
def witness_log_keys() -> None:
    """Print the verifier key of every key this deployment signs checkpoints with (what a
    witness's --log-key names)."""
    from infra import keys
    from infra.ledger.note import verifier_key
    from infra.settings import Settings

    public_keys = keys.load_public_keys(Settings.from_env())
    if not public_keys:
        err_console.print("[red]No signing keys yet.[/red]")
        raise typer.Exit(2)
    for key_id, key in sorted(public_keys.items()):
        print(verifier_key(key_id.rpartition("+")[0], key))
