"""``trialledger demo``: register NCT04397107, simulate it, verify it, report; create a demo
person for every role, with their passwords in a private file, and say what to do next."""

from __future__ import annotations

import json
import os
import secrets
import shlex
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from application.people import People
from application.reauthentication import PeopleReauthenticator
from application.runtime import Runtime
from application.sign_in_limits import SignInLimits
from application.trial_service import TrialService
from domain.clock import SimulatedClock
from domain.directory import DirectoryApplication
from domain.envelope import Actor, Envelope
from domain.errors import AlreadyExists, NotFound
from domain.service import StudyApplication
from domain.studies import nct04397107
from domain.studies.nct04397107_simulation import SIGNER, SITE, STUDY_START, Action, plan_study
from domain.user import User
from infra import keys
from infra.passwords import hash_password
from infra.postgres import connect
from infra.verify import verify_study
from projections.enrollment import enrollment_counts
from projections.outcome_render import to_rich

SETUP_ACTOR = Actor("u-admin-01", "Study Administrator", "admin", "JLU1")
CREDENTIALS_FILE = "demo-credentials.json"
MONITOR = "demo-monitor"


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
        ok = _verify(runtime, study_id, console)
    finally:
        app.close()
    people = ensure_demo_people(runtime.directory(), runtime.settings.home / CREDENTIALS_FILE)
    runtime.seal_directory(force_checkpoint=True)  # the people's log too, before any serving
    print_people(people, console)
    return ok


@dataclass(frozen=True)
class DemoPerson:
    """A demo account: who, and the one role they hold."""

    username: str
    full_name: str
    role: str
    study: str
    site: str


def demo_people(definition: dict[str, Any]) -> list[DemoPerson]:
    """One person per role of the study: an investigator per site, a coordinator at the first
    site, and a monitor, a data manager, a regulator and an admin for every site."""
    study = str(definition["study_id"])
    sites = [str(site["code"]) for site in definition["sites"]]
    people = [DemoPerson(f"demo-investigator-{site.lower()}", f"Dr Demo Investigator ({site})",
                         "investigator", study, site) for site in sites]
    return [*people,
            DemoPerson("demo-coordinator", f"Demo Coordinator ({sites[0]})", "coordinator",
                       study, sites[0]),
            DemoPerson(MONITOR, "Demo Monitor", "monitor", study, "*"),
            DemoPerson("demo-data-manager", "Demo Data Manager", "data_manager", study, "*"),
            DemoPerson("demo-regulator", "Demo Regulator", "regulator", study, "*"),
            DemoPerson("demo-admin", "Demo Administrator", "admin", study, "*")]


class CredentialsUnreadable(RuntimeError):
    """The credentials file exists but is not one the demo wrote."""


@dataclass
class DemoPeople:
    """What :func:`ensure_demo_people` found and did."""

    path: Path
    registered: list[str] = field(default_factory=list)
    already: list[str] = field(default_factory=list)
    # In the database, but their passwords are not in this file (written under another home).
    unknown: list[str] = field(default_factory=list)


def ensure_demo_people(directory: DirectoryApplication, path: Path) -> DemoPeople:
    """Register the demo people missing from the directory, with the passwords in the
    credentials file at ``path`` (generated for whoever has none, and written there first).

    Idempotent: a password once written is never changed nor dropped, so a re-run (on this
    database or a fresh one with the same home) leaves the file valid; a crash between the
    file and the registrations is finished by the next run.
    """
    held = _read_credentials(path)
    report = DemoPeople(path)
    to_register: list[DemoPerson] = []
    for person in demo_people(nct04397107.definition()):
        try:
            directory.user(person.username)
        except NotFound:
            to_register.append(person)
            if person.username not in held:
                held[person.username] = {
                    "password": secrets.token_urlsafe(16), "full_name": person.full_name,
                    "role": person.role, "study": person.study, "site": person.site}
            continue
        (report.already if person.username in held else report.unknown).append(person.username)
    if to_register:
        _write_credentials(path, held)
    envelope = Envelope(SETUP_ACTOR, "trialledger-demo", "system", "demo-people")
    for person in to_register:
        directory.register_user(
            person.username, person.full_name,
            hash_password(str(held[person.username]["password"])), envelope,
            _granting(person, envelope))
        report.registered.append(person.username)
    return report


def _granting(person: DemoPerson, envelope: Envelope) -> Callable[[User, datetime], None]:
    """The first role of ``person``, granted in the registration's transaction."""
    def grant(user: User, at: datetime) -> None:
        user.grant(person.role, person.study, person.site, envelope, at)
    return grant


def _read_credentials(path: Path) -> dict[str, dict[str, Any]]:
    if not path.exists():
        return {}
    try:
        people = json.loads(path.read_text())["people"]
        if not isinstance(people, dict) or not all(
                isinstance(p, dict) and isinstance(p.get("password"), str)
                for p in people.values()):
            raise TypeError("people is not an object of people with passwords")
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise CredentialsUnreadable(f"{path} is not a demo credentials file ({e}); move it "
                                    "away to let the demo write a new one") from None
    return people


def _write_credentials(path: Path, people: dict[str, dict[str, Any]]) -> None:
    """Replace the file at once, readable by its owner only (0600) from its first byte."""
    path.parent.mkdir(parents=True, exist_ok=True)
    document = {
        "about": "Demo accounts of `trialledger demo` (no real people). Passwords are shown "
                 "nowhere else and stored in the database only as hashes.",
        "people": dict(sorted(people.items())),
    }
    partial = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as out:
        json.dump(document, out, indent=2)
        out.write("\n")
        out.flush()
        os.fsync(out.fileno())
    os.replace(partial, path)


def print_people(people: DemoPeople, console: Console) -> None:
    """Say which demo people exist and where their passwords are (never the passwords)."""
    roles = ", ".join(p.role for p in demo_people(nct04397107.definition()))
    if people.registered:
        console.print(f"Demo people registered ({roles}).")
    # Unwrapped, so the path can be copied (the terminal folds the line, not the program).
    console.print(f"Demo people's usernames and passwords: {people.path} (mode 0600; they "
                  "are demo accounts, keep the file private all the same).", soft_wrap=True)
    if people.unknown:
        console.print(f"[yellow]{', '.join(people.unknown)} exist in this database, but "
                      f"their passwords are not in {people.path}: they were written under "
                      "the TRIALLEDGER_HOME of the first demo run on this database.[/yellow]",
                      soft_wrap=True)


def print_next_steps(console: Console, base_url: str, credentials: Path, *,
                     serving: bool) -> None:
    """How to reach the API, a copy-paste shell snippet (curl) that signs in as the monitor
    and reads the audit trail, and last the web console's address. Printed without
    wrapping, so it can be pasted."""
    study = nct04397107.STUDY_ID
    lines = ["", "Next steps:"]
    if not serving:
        lines.append("  Serve the API: trialledger serve (with the same --database-url and "
                     "TRIALLEDGER_HOME; --host and --port choose where)")
    lines += [f"  The API: {base_url}/v1 (OpenAPI at {base_url}/openapi.json, "
              f"browsable at {base_url}/docs)",
              "  Sign in as the monitor and read the audit trail:"]
    password = (f'import json,sys; print(json.load(open(sys.argv[1]))["people"]'
                f'["{MONITOR}"]["password"])')
    token = 'import json,sys; print(json.load(sys.stdin)["access_token"])'
    body = f'{{"username": "{MONITOR}", "password": "\'"$PASSWORD"\'"}}'
    snippet = [
        f"PASSWORD=$(python3 -c {shlex.quote(password)} {shlex.quote(str(credentials))})",
        f"TOKEN=$(curl -sf -X POST {base_url}/v1/auth/token -H 'Content-Type: "
        f"application/json' -d '{body}' | python3 -c {shlex.quote(token)})",
        f"curl -sf -H \"Authorization: Bearer $TOKEN\" "
        f"'{base_url}/v1/studies/{study}/audit?limit=5'",
    ]
    # The console's address last: the line a person reads before opening a browser.
    console_line = (f"Open the web console: {base_url}/ui/ (sign in as any person of the demo: "
                    f"usernames and passwords in {credentials})")
    for line in [*lines, *(f"    {line}" for line in snippet), "", console_line]:
        console.print(line, markup=False, highlight=False, soft_wrap=True)


SEAL_EVERY = 500  # actions between sealing runs, as a server's background sealer would


class OneStudy:
    """The studies the trial service sees while the simulation plays: the one simulated,
    opened on the simulation's clock."""

    def __init__(self, app: StudyApplication) -> None:
        self.app = app

    def has_study(self, study_id: str) -> bool:
        """True for the simulated study."""
        return study_id == self.app.study_id

    def study(self, study_id: str) -> StudyApplication:
        """The simulated study's application."""
        if study_id != self.app.study_id:
            raise NotFound(f"no study {study_id}")
        return self.app

    def opened_study(self, study_id: str) -> StudyApplication | None:
        """The simulated study's application (always open)."""
        return self.app if study_id == self.app.study_id else None


def simulation_service(runtime: Runtime, app: StudyApplication) -> tuple[TrialService, str]:
    """The trial service that plays the simulation on ``app``, and the password the
    simulation's investigator signs with: registered in the directory now (a new one each
    run, never shown: no one signs in as them afterwards)."""
    password = secrets.token_urlsafe(16)
    hashed = hash_password(password)
    directory = runtime.directory()
    envelope = Envelope(SETUP_ACTOR, "trialledger-demo-simulator", "system", "sim-signer")
    try:
        directory.register_user(
            SIGNER.username, SIGNER.full_name, hashed, envelope,
            lambda user, at: user.grant(SIGNER.role, nct04397107.STUDY_ID, SITE, envelope, at))
    except AlreadyExists:  # left by a simulation that stopped before registering the study
        directory.record(SIGNER.username, lambda user: user.change_password(
            hashed, envelope, directory.clock.now()))
    # The simulation replays months of signatures in seconds, as one process: the limits on
    # sign-in attempts per minute, there for callers over the network, do not apply to it.
    people = People(directory, limits=SignInLimits(per_account=0, per_address=0))
    return TrialService(OneStudy(app), PeopleReauthenticator(lambda: people)), password


def play(service: TrialService, app: StudyApplication, action: Action) -> None:
    """Run one action of the simulation through the trial service."""
    for command in action.commands(app.subject):
        service.handle(command, action.caller)


def _simulate(runtime: Runtime, app: StudyApplication, clock: SimulatedClock, seed: int,
              console: Console) -> None:
    envelope = Envelope(SETUP_ACTOR, "trialledger-demo-simulator", "system", "sim-setup")
    service, password = simulation_service(runtime, app)
    app.register_study(nct04397107.definition(), envelope)
    actions = plan_study(seed, password)
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
            play(service, app, action)
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
