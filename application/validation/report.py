"""The validation report: HTML (Jinja2) and PDF (fpdf2) with the environment, each
requirement's checks and results, and the deviations; signed as a bundle of the validation
study (its whole ledger, the report files, a manifest signed as a C2SP note), so
`trialledger verify --bundle` checks it offline like any bundle."""

from __future__ import annotations

import getpass
import json
import platform
from datetime import UTC, datetime
from importlib.metadata import version
from pathlib import Path
from typing import Any

from fpdf import FPDF
from jinja2 import Environment, PackageLoader, select_autoescape

from application.validation.model import Context, Result
from infra import keys
from infra.ledger.bundle import write_bundle
from infra.postgres import connect, schema_for_study
from projections.casebook_doc.pdf import FONTS

# The report's files inside the signed bundle, in the sorted order bundles keep.
MEMBERS = ("report/validation.html", "report/validation.json", "report/validation.pdf")


def _requirement_order(rid: str) -> int:
    return int(rid[1:])


def _content(ctx: Context, results: tuple[Result, ...], started: datetime) -> dict[str, Any]:
    """What both renderings show."""
    by_requirement: dict[str, list[Result]] = {}
    for result in results:
        for rid in result.check.requirements:
            by_requirement.setdefault(rid, []).append(result)
    failed = sorted({rid for r in results if not r.passed for rid in r.check.requirements},
                    key=_requirement_order)
    environment = [(f"PostgreSQL {name}", value)
                   for name, value in ctx.facts.get("postgresql", {}).items()]
    environment += [(f"roles: {name}", ", ".join(value) or "none")
                    for name, value in ctx.facts.get("roles", {}).items()]
    environment += [("signing key", ctx.facts.get("signing key", "not determined"))]
    environment += list(ctx.facts.get("clock", {}).items())
    environment += [("ODM XSD", str(ctx.odm_xsd)), ("Python", platform.python_version())]
    return {
        "study": ctx.study, "started": started.isoformat(),
        "finished": datetime.now(UTC).isoformat(),
        "software": f"trialledger {version('trialledger')}",
        "host": f"{platform.node()} ({platform.platform()})", "operator": getpass.getuser(),
        "passed": not failed, "failed": failed, "environment": environment,
        "packages": ctx.facts.get("packages", []),
        "by_requirement": sorted(by_requirement.items(), key=lambda kv: _requirement_order(kv[0])),
        "results": results, "deviations": [r for r in results if not r.passed],
    }


def render_html(content: dict[str, Any]) -> str:
    """The report as one self-contained HTML page."""
    env = Environment(loader=PackageLoader("application.validation", "templates"),
                      autoescape=select_autoescape(["html"]))
    return env.get_template("report.html").render(**content)


def render_pdf(content: dict[str, Any], path: Path) -> None:
    """The report as a PDF (A4, DejaVu Sans, the same content as the HTML)."""
    pdf = FPDF(format="A4")
    pdf.set_auto_page_break(True, margin=15)
    pdf.add_font("DejaVu", "", str(FONTS / "DejaVuSans.ttf"))
    pdf.add_font("DejaVu", "B", str(FONTS / "DejaVuSans-Bold.ttf"))
    pdf.add_page()

    def heading(text: str, size: int = 13) -> None:
        pdf.set_font("DejaVu", "B", size)
        pdf.multi_cell(0, 8, text, new_x="LMARGIN", new_y="NEXT")
        pdf.set_font("DejaVu", "", 9)

    def line(text: str) -> None:
        pdf.multi_cell(0, 5, text, new_x="LMARGIN", new_y="NEXT")

    heading("TrialLedger validation report", 16)
    outcome = ("PASS: every check passed" if content["passed"] else
               f"FAIL: requirement(s) {', '.join(content['failed'])} not met")
    for name in ("study", "started", "finished", "software", "host", "operator"):
        line(f"{name}: {content[name]}")
    line(f"outcome: {outcome}")
    heading("Environment")
    for name, value in content["environment"]:
        line(f"{name}: {value}")
    line("packages: " + ", ".join(f"{p['name']} {p['version']}" for p in content["packages"]))
    heading("Requirements, checks and results")
    for rid, rows in content["by_requirement"]:
        line(f"{rid}: " + "; ".join(f"{r.check.name} {'PASS' if r.passed else 'FAIL'}"
                                    for r in rows))
    heading("Checks")
    for r in content["results"]:
        pdf.set_font("DejaVu", "B", 9)
        line(f"{r.check.name} ({', '.join(r.check.requirements)}) — "
             f"{'PASS' if r.passed else 'FAIL'} — {r.check.title}")
        pdf.set_font("DejaVu", "", 9)
        line(r.evidence)
    heading("Deviations")
    for r in content["deviations"] or []:
        line(f"{r.check.name} ({', '.join(r.check.requirements)}): {r.evidence}")
    if not content["deviations"]:
        line("None.")
    pdf.output(str(path))


def _summary(content: dict[str, Any]) -> str:
    """The results as JSON, for a machine to read beside the two renderings."""
    return json.dumps({
        "study": content["study"], "started": content["started"],
        "finished": content["finished"], "software": content["software"],
        "passed": content["passed"], "failed_requirements": content["failed"],
        "checks": [{"name": r.check.name, "group": r.check.group,
                    "requirements": list(r.check.requirements), "passed": r.passed,
                    "evidence": r.evidence} for r in content["results"]],
    }, indent=1, sort_keys=True) + "\n"


def write_report(ctx: Context, results: tuple[Result, ...], started: datetime,
                 out: Path) -> tuple[Path, Path, Path]:
    """Write ``<study>.html``, ``<study>.pdf`` and the signed ``<study>.zip`` into ``out``;
    return (zip, html, pdf)."""
    content = _content(ctx, results, started)
    html, pdf, signed = (out / f"{ctx.study}{suffix}" for suffix in (".html", ".pdf", ".zip"))
    html.write_text(render_html(content), encoding="utf-8")
    render_pdf(content, pdf)
    summary = ctx.work / "validation.json"
    summary.write_text(_summary(content), encoding="utf-8")
    runtime = ctx.runtime
    runtime.seal(ctx.study, force_checkpoint=True)
    with connect(runtime.url) as conn:
        write_bundle(conn, ctx.study, schema_for_study(ctx.study), signed,
                     keys.load_public_keys(runtime.settings), runtime.signing_key(),
                     runtime.settings.key_name, files=list(zip(MEMBERS, (html, summary, pdf),
                                                               strict=True)),
                     as_of=datetime.now(UTC), software_version=content["software"],
                     witnessed=bool(runtime.settings.witnesses))
    return signed, html, pdf
