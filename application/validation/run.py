"""One validation run: the checks in a study of its own, then the signed report."""

from __future__ import annotations

import secrets
import tempfile
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from application.runtime import Runtime
from application.validation.checks import CHECKS
from application.validation.model import Check, CheckFailed, Context, Result
from application.validation.operational import UNGUARDED_AT_START, unguarded_tables
from application.validation.report import write_report
from infra.logging import get_logger
from infra.postgres import connect

_log = get_logger("trialledger.validate")


class CannotValidate(Exception):
    """The deployment cannot be validated as asked (the message says why)."""


@dataclass(frozen=True)
class Validation:
    """What a run found and where its report is."""

    study: str
    results: tuple[Result, ...]
    report: Path
    html: Path
    pdf: Path

    @property
    def failed_requirements(self) -> list[str]:
        """The requirements a failed check names, in order (R1 before R10)."""
        failed = {r for result in self.results if not result.passed
                  for r in result.check.requirements}
        return sorted(failed, key=lambda rid: int(rid[1:]))


def validation_study_id(now: datetime) -> str:
    """A study id no other run takes: the time, and a random suffix."""
    return f"VALIDATION-{now.astimezone(UTC):%Y%m%dT%H%M%SZ}-{secrets.token_hex(2)}"


def _run(check: Check, ctx: Context) -> Result:
    start = time.perf_counter()
    try:
        evidence, passed = check.run(ctx), True
    except CheckFailed as e:
        evidence, passed = str(e), False
    except Exception as e:
        # An unforeseen refusal or error is a deviation too, told as what it was.
        _log.warning("validation check raised", check=check.name, error=repr(e))
        evidence, passed = f"{type(e).__name__}: {' '.join(str(e).split())}", False
    return Result(check, passed, evidence, time.perf_counter() - start)


def run_validation(runtime: Runtime, out: Path, odm_xsd: Path) -> Validation:
    """Run every check in a new validation study and write its report into ``out``: the
    HTML and the PDF, and the signed report (a bundle of the validation study's ledger with
    both, which `trialledger verify --bundle` accepts)."""
    if runtime.settings.provisioned:
        raise CannotValidate("validate creates a study of its own, with its tables: run it as "
                             "the database owner, without TRIALLEDGER_PROVISIONED")
    started = datetime.now(UTC)
    study = validation_study_id(started)
    # Seen before anything opens a study: opening one re-creates the triggers it lacks,
    # which would hide that someone had dropped them.
    with connect(runtime.url) as conn:
        unguarded = unguarded_tables(conn)
    runtime.study(study)  # its schema and ledger, so a report can be signed whatever fails
    with tempfile.TemporaryDirectory(prefix="trialledger-validate-") as tmp:
        ctx = Context(runtime, study, Path(tmp), odm_xsd)
        ctx.facts[UNGUARDED_AT_START] = unguarded
        results = tuple(_run(check, ctx) for check in CHECKS)
        out.mkdir(parents=True, exist_ok=True)
        paths = write_report(ctx, results, started, out)
    return Validation(study, results, *paths)

