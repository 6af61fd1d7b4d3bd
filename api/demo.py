"""``trialledger demo``: register NCT04397107, simulate it, verify it, report."""

from __future__ import annotations

from collections import Counter

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from api.runtime import Runtime
from api.simulation import STUDY_START, plan_study
from domain.clock import SimulatedClock
from domain.envelope import Actor, Envelope
from domain.service import StudyApplication
from domain.studies import nct04397107
from infra import keys
from infra.postgres import connect
from infra.verify import verify_study
from projections.enrollment import enrollment_counts
from projections.outcome_render import to_rich

SETUP_ACTOR = Actor("u-admin-01", "Study Administrator", "admin", "JLU1")


def run_demo(runtime: Runtime, seed: int, console: Console) -> bool:
    """Run the demo on ``runtime``; return True when every signature verifies."""
    study_id = nct04397107.STUDY_ID
    registered_at = SimulatedClock(nct04397107.REGISTERED_AT)
    app = runtime.study(study_id, clock=registered_at)
    try:
        if app.is_registered():
            console.print(
                f"Study {study_id} already exists in this database: nothing changed."
            )
        else:
            _simulate(runtime, app, registered_at, seed, console)
            result = runtime.seal(study_id, force_checkpoint=True)
            console.print(f"Ledger sealed: {result.tree_size} leaves, "
                          f"latest checkpoint at size {result.checkpoint_size}")
            console.print(f"Read tables built: {runtime.project(study_id)} events projected")
        _report(app, console)
        for table in to_rich(runtime.outcomes(study_id)):
            console.print(table)
        return _verify(runtime, study_id, console)
    finally:
        app.close()


SEAL_EVERY = 500  # actions between sealing runs, as a server's background sealer would


def _simulate(runtime: Runtime, app: StudyApplication, clock: SimulatedClock, seed: int,
              console: Console) -> None:
    envelope = Envelope(SETUP_ACTOR, "trialledger-demo-simulator", "system", "sim-setup")
    app.register_study(nct04397107.definition(), envelope)
    actions = plan_study(seed)
    kinds: Counter[str] = Counter()
    with Progress(
        TextColumn("Simulating {task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=console,
        transient=True,
    ) as progress:
        task = progress.add_task(f"{app.study_id} from {STUDY_START}", total=len(actions))
        for number, action in enumerate(actions, 1):
            clock.set(action.recorded_at)
            action.run(app)
            kinds[action.kind] += 1
            progress.advance(task)
            if number % SEAL_EVERY == 0:
                runtime.seal(app.study_id)
    console.print(f"Simulated {len(actions)} actions (seed {seed}): "
                  + ", ".join(f"{k} {n}" for k, n in sorted(kinds.items())))


def _report(app: StudyApplication, console: Console) -> None:
    counts = enrollment_counts(app)
    diseases = sorted({d for _, d in counts})
    arms = sorted({a for a, _ in counts})
    table = Table(title=f"{app.study_id}: subjects by arm and disease")
    table.add_column("arm")
    for disease in diseases:
        table.add_column(disease, justify="right")
    table.add_column("total", justify="right")
    for arm in arms:
        row = [counts[(arm, d)] for d in diseases]
        table.add_row(arm, *map(str, row), str(sum(row)))
    totals = [sum(counts[(a, d)] for a in arms) for d in diseases]
    table.add_row("all", *map(str, totals), str(sum(totals)))
    console.print(table)
    events = app.recorder.max_notification_id() or 0
    console.print(f"Events written: {events}")


def _verify(runtime: Runtime, study_id: str, console: Console) -> bool:
    from infra.catalog import list_studies

    public_keys = keys.load_public_keys(runtime.settings)
    with connect(runtime.url) as conn:
        schema = dict(list_studies(conn))[study_id]
        result = verify_study(conn, study_id, schema, public_keys)
    if result.ok:
        console.print(f"[green]Signature check: all {result.events_checked} events carry a "
                      "valid Ed25519 signature; every version chain is intact; "
                      f"{result.sealed} leaves and {result.checkpoints} checkpoints "
                      "verify.[/green]")
    else:
        assert result.first_bad is not None
        console.print(f"[red]Signature check FAILED: {result.first_bad.describe()}[/red]")
    return result.ok
