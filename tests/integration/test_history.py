"""The history tables answer as the fold of the events does, at any recorded time; the audit
trail has one row per field change with its envelope; projection resumes exactly once."""

from __future__ import annotations

import csv
import random
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta
from functools import partialmethod
from itertools import pairwise
from pathlib import Path
from typing import Any

import psycopg
import pytest

from application.demo import play, simulation_service
from application.runtime import Runtime
from domain.clock import SimulatedClock
from domain.envelope import Actor, Envelope
from domain.studies import nct04397107
from domain.studies.nct04397107_simulation import plan_study
from infra.postgres import schema_for_study
from projections.casebook import casebook
from projections.history_view import AUDIT, MARKS, OUTCOME_FACTS, VERSIONS
from projections.projector import HistoryProjector
from projections.queries import (
    AuditQuery,
    audit_page,
    casebook_as_of,
    outcome_summaries_as_of,
)
from tests.support import T0, enroll, envelope

pytestmark = pytest.mark.slow(seconds=10)  # the module fixture simulates the demo study

STUDY = nct04397107.STUDY_ID
SCHEMA = schema_for_study(STUDY)
ADMIN = Envelope(Actor("u-admin", "Admin", "admin", "JLU1"), "test", "system", "setup")


@pytest.fixture(scope="module")
def demo(server_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Runtime]:
    """The demo study (seed 11), simulated once for the module, projected."""
    from infra.postgres import temporary_database
    from infra.settings import Settings

    with temporary_database(server_url, "tl_test") as url:
        runtime = Runtime(Settings(database_url=url, home=tmp_path_factory.mktemp("h")), url)
        clock = SimulatedClock(nct04397107.REGISTERED_AT)
        app = runtime.study(STUDY, clock=clock)
        app.register_study(nct04397107.definition(), ADMIN)
        service, password = simulation_service(runtime, app)
        projected = 0
        for number, action in enumerate(plan_study(11, password)):
            clock.set(action.recorded_at)
            play(service, app, action)
            if number % 400 == 0:  # incrementally, as a server does while data come in
                projected += runtime.project(STUDY)
        app.close()
        projected += runtime.project(STUDY)
        assert projected > 2000
        yield runtime
        runtime.close()


def dump(url: str) -> list[Any]:
    with psycopg.connect(url) as conn:
        versions = conn.execute(
            f'SELECT subject_id, record_id, kind, data, version, position, recorded_from, '
            f'recorded_to FROM "{SCHEMA}".{VERSIONS} ORDER BY subject_id, record_id, position'
        ).fetchall()
        audit = conn.execute(
            f'SELECT position, field, old_value, new_value, user_id, reason_code '
            f'FROM "{SCHEMA}".{AUDIT} ORDER BY position, seq').fetchall()
        facts = conn.execute(
            f'SELECT subject_id, fact, kind, data, version, position, recorded_from, '
            f'recorded_to FROM "{SCHEMA}".{OUTCOME_FACTS} ORDER BY subject_id, fact, position'
        ).fetchall()
        marks = conn.execute(
            f'SELECT subject_id, kind, item, data, position FROM "{SCHEMA}".{MARKS} '
            f'ORDER BY subject_id, kind, item, position').fetchall()
    return [versions, audit, facts, marks]


@pytest.mark.requirement("R13")
def test_casebooks_from_sql_equal_the_fold_at_ten_random_times(demo: Runtime) -> None:
    rng = random.Random(4)
    app = demo.study(STUDY)
    start = nct04397107.REGISTERED_AT
    end = start + timedelta(days=700)
    with psycopg.connect(demo.url) as conn:
        for _ in range(10):
            when = start + (end - start) * rng.random()
            for code in rng.sample([f"{i:03d}" for i in range(1, 47)], 6):
                try:
                    expected = casebook(app.subject_as_of(code, when), as_of=when)
                except Exception:
                    with pytest.raises(Exception, match="no subject"):
                        casebook_as_of(conn, SCHEMA, STUDY, code, when)
                    continue
                assert casebook_as_of(conn, SCHEMA, STUDY, code, when) == expected
            assert casebook_as_of(conn, SCHEMA, STUDY, "001") == casebook(app.subject("001"))


@pytest.mark.requirement("R2")
def test_the_audit_trail_names_who_what_old_new_and_why(demo: Runtime) -> None:
    with psycopg.connect(demo.url) as conn:
        page = audit_page(conn, SCHEMA, AuditQuery({"event_type": "RecordCorrected"}),
                          limit=20)
    assert len(page["entries"]) == 20
    fields = {entry["field"] for entry in page["entries"]}
    # A lab value corrected across its reference limit moves its derived flag with it, and a
    # SLEDAI item its total.
    assert "value" in fields
    assert {f for f in fields if not f.startswith("derived.")} <= {"value",
                                                                 "items.low_complement"}
    for entry in page["entries"]:
        assert entry["old_value"] != entry["new_value"]
        assert entry["edit_point"] == "site"
        if entry["record_kind"] == "labs":
            # A lab value corrected by the site in answer to a query.
            assert entry["reason_code"] == "transcription_error"
            assert entry["printed_name"] == "Li Wei" and entry["role"] == "coordinator"
        else:
            # A SLEDAI score corrected in answer to the soft check's query.
            assert entry["reason_code"] == "query_response"
            assert entry["role"] == "investigator"
    assert page["next_cursor"]


def test_status_changes_reach_the_audit_trail_with_old_and_new(demo: Runtime) -> None:
    with psycopg.connect(demo.url) as conn:
        enrolled = audit_page(conn, SCHEMA, AuditQuery({"event_type": "Enrolled"}), limit=500)
        withdrawn = audit_page(conn, SCHEMA, AuditQuery({"event_type": "Withdrawn"}), limit=500)
    status = [e for e in enrolled["entries"] if e["field"] == "status"]
    arms = [e for e in enrolled["entries"] if e["field"] == "arm"]
    assert status and len(status) == len(arms)
    assert all(e["old_value"] == "screened" and e["new_value"] == "enrolled" for e in status)
    assert all(e["new_value"] in ("IL2", "STD") for e in arms)
    assert withdrawn["entries"]
    assert all(e["new_value"] == "withdrawn" for e in withdrawn["entries"]
               if e["field"] == "status")


@pytest.mark.requirement("R16")
def test_audit_pages_cover_everything_once(demo: Runtime) -> None:
    seen: list[int] = []
    cursor = None
    with psycopg.connect(demo.url) as conn:
        while True:
            page = audit_page(conn, SCHEMA, AuditQuery({"subject_code": "007"}), cursor, 50)
            seen.extend(e["position"] for e in page["entries"])
            assert all(e["subject_code"] == "007" for e in page["entries"])
            cursor = page["next_cursor"]
            if cursor is None:
                break
        total = conn.execute(f"SELECT count(*) FROM \"{SCHEMA}\".{AUDIT} "
                             "WHERE subject_code = '007'").fetchone()
    assert total is not None and len(seen) == total[0]
    assert seen == sorted(seen)


def test_a_projection_killed_mid_stream_resumes_exactly_once(demo: Runtime) -> None:
    full = dump(demo.url)
    view = demo.history_view(STUDY)
    view.drop()
    view.datastore.close()
    app = demo.study(STUDY)

    # Die on the fourth batch, after its rows were sent but before it committed.
    view = demo.history_view(STUDY)
    original = view._insert_tracking
    calls = {"n": 0}

    def dying(curs: Any, tracking: Any) -> None:
        calls["n"] += 1
        if calls["n"] == 4:
            raise RuntimeError("killed")
        original(curs, tracking)

    view._insert_tracking = dying  # type: ignore[method-assign]
    with pytest.raises(RuntimeError, match="killed"):
        HistoryProjector(app, view).catch_up(batch_size=300)
    view.datastore.close()
    assert 0 < len(dump(demo.url)[0]) < len(full[0])

    # A new runner resumes from the committed position: same tables as one clean run.
    assert demo.project(STUDY) > 0
    assert dump(demo.url) == full


def test_projectors_of_two_processes_take_turns(demo: Runtime) -> None:
    # Server workers and a CLI rebuild each have a runtime of their own; projecting at once,
    # neither may fail on the other's tracking positions nor write a row twice.
    full = dump(demo.url)
    view = demo.history_view(STUDY)
    view.drop()
    view.datastore.close()
    others = [Runtime(demo.settings, demo.url) for _ in range(2)]
    try:
        with ThreadPoolExecutor(2) as pool:
            projected = list(pool.map(lambda r: r.project(STUDY), others))
    finally:
        for runtime in others:
            runtime.close()
    assert sorted(projected)[0] == 0 < sorted(projected)[1]
    assert dump(demo.url) == full


def test_naive_as_of_is_refused(demo: Runtime) -> None:
    from datetime import datetime

    from domain.errors import InvalidInput

    with psycopg.connect(demo.url) as conn, pytest.raises(InvalidInput, match="naive"):
        casebook_as_of(conn, SCHEMA, STUDY, "001", datetime(2021, 3, 1))


def test_rebuild_from_scratch_gives_the_same_tables(demo: Runtime) -> None:
    from typer.testing import CliRunner

    from api.cli import app as cli

    before = dump(demo.url)
    result = CliRunner().invoke(cli, ["rebuild", "--database-url", demo.url],
                                env={"TRIALLEDGER_HOME": str(demo.settings.home)})
    assert result.exit_code == 0, result.output
    assert "replayed" in result.output
    assert dump(demo.url) == before
    # The rebuilt tables were left alone by autovacuum while being filled; in place, not.
    from projections.history_view import TABLES

    with psycopg.connect(demo.url) as conn:
        options = conn.execute(
            "SELECT c.relname, c.reloptions FROM pg_class c JOIN pg_namespace n"
            " ON n.oid = c.relnamespace WHERE n.nspname = %s AND c.relname = ANY(%s)",
            (SCHEMA, [t.name for t in TABLES])).fetchall()
    assert len(options) == len(TABLES)
    assert [name for name, reloptions in options if reloptions] == []


def test_outcome_tables_from_sql_equal_the_oracles_at_ten_random_times(demo: Runtime) -> None:
    from projections.oracle import oracle_casebooks
    from projections.outcomes.engine import outcome_tables
    from projections.outcomes.facts import outcome_facts
    from projections.queries import casebooks_as_of, outcome_facts_as_of

    rng = random.Random(9)
    app = demo.study(STUDY)
    start = nct04397107.REGISTERED_AT
    times = [start + timedelta(days=700) * rng.random() for _ in range(10)]
    endpoints = nct04397107.ENDPOINTS
    with psycopg.connect(demo.url) as conn:
        for when in [*times, None]:
            oracle = oracle_casebooks(app, when)
            assert casebooks_as_of(conn, SCHEMA, when) == oracle
            facts = outcome_facts_as_of(conn, SCHEMA, when)
            assert facts == [outcome_facts(book) for book in oracle]
            assert (outcome_tables(facts, STUDY, endpoints, when)
                    == outcome_tables(oracle, STUDY, endpoints, when))


def test_the_listing_read_book_by_book_names_every_record_behind_every_cell(
        demo: Runtime, tmp_path: Path) -> None:
    """ADLIST, written from books read one at a time, holds one row per record behind each
    cell (exactly the engine's contributions) with the record's kind, visit and clinical time
    as the books hold them; ADSL one row per subject, by subject code."""
    from projections.outcomes import engine
    from projections.outcomes.datasets import write_analysis
    from projections.queries import each_outcome_book, outcome_facts_as_of

    endpoints = nct04397107.ENDPOINTS
    visits = [code for code, *_ in nct04397107.VISITS]
    with psycopg.connect(demo.url) as conn:
        books = outcome_facts_as_of(conn, SCHEMA, None)
        counts = write_analysis(tmp_path, each_outcome_book(conn, SCHEMA, None), STUDY, "P-",
                                endpoints, visits)
    with (tmp_path / "ADLIST.csv").open(newline="") as f:
        listed = list(csv.DictReader(f))
    with (tmp_path / "ADSL.csv").open(newline="") as f:
        subjects = [row["SUBJID"] for row in csv.DictReader(f)]
    assert counts == {"ADSL.csv": len(books), "ADLIST.csv": len(listed)}
    assert subjects == [book["subject"] for book in books]
    expected = {(cell, subject, record_id)
                for cell, contributions in engine.all_contributions(books, endpoints).items()
                for subject, records in contributions.items() for record_id in records}
    assert {(r["CELL"], r["SUBJID"], r["RECORDID"]) for r in listed} == expected
    assert len(listed) == len(expected)
    records = {(book["subject"], record["record_id"]): (kind, record)
               for book in books for kind, rs in book["records"].items() for record in rs}
    for row in listed:
        kind, record = records[(row["SUBJID"], row["RECORDID"])]
        assert (row["KIND"], row["VISIT"], row["OBSDTC"], row["USUBJID"]) == (
            kind, record.get("visit") or "", record.get("observed_at") or "",
            "P-" + row["SUBJID"])


def test_the_records_behind_every_cell_are_listed_without_computing_a_figure(
        demo: Runtime, monkeypatch: pytest.MonkeyPatch) -> None:
    """The analysis datasets' listing (ADLIST) and the drill-down name the records behind
    every cell, the comparisons' too, as the tables find them, without computing a figure:
    the comparisons' statistics import scipy and statsmodels into a process that writes the
    listing only (a bundle's)."""
    from projections.outcomes import engine
    from projections.queries import outcome_facts_as_of

    endpoints = nct04397107.ENDPOINTS
    with psycopg.connect(demo.url) as conn:
        books = outcome_facts_as_of(conn, SCHEMA, None)
    tables = engine.outcome_tables(books, STUDY, endpoints, None)
    comparisons = {c["cell"] for e in tables["endpoints"].values() for c in e["comparisons"]}
    figured = engine._compute(books, endpoints).cells

    def refused(*args: Any) -> Any:
        raise AssertionError("a figure computed for a listing")

    for statistic in ("summary", "hodges_lehmann", "newcombe"):
        monkeypatch.setattr(engine, statistic, refused)
    listed = engine.all_contributions(books, endpoints)
    assert listed == figured
    assert comparisons and comparisons <= listed.keys()
    for cell in sorted(comparisons)[:3]:
        assert engine.cell_contributions(books, endpoints, cell) == figured[cell]
        assert figured[cell]


# Events after which a subject's outcome summary may change back or lose a contribution.
CHANGING = ("RecordCorrected", "RecordRemoved", "DerivedValueRecomputed", "TherapyChanged",
            "TherapyStopped", "AdverseEventUpdated", "Withdrawn")


def _summaries_equal_the_facts_engine(conn: psycopg.Connection[Any],
                                      times: list[Any]) -> None:
    from projections.outcomes.engine import outcome_tables, tables_of_summaries
    from projections.queries import outcome_facts_as_of, outcome_summaries_as_of

    endpoints = nct04397107.ENDPOINTS
    for when in times:
        summaries = outcome_summaries_as_of(conn, SCHEMA, endpoints, when)
        assert summaries is not None, when
        assert (tables_of_summaries(summaries, STUDY, endpoints, when)
                == outcome_tables(outcome_facts_as_of(conn, SCHEMA, when), STUDY, endpoints,
                                  when)), when


def test_outcome_summaries_combine_into_the_tables_of_the_facts_at_any_time(
        demo: Runtime) -> None:
    """The summaries the projector keeps give the tables the engine computes from the facts:
    the instant before, at and after corrections, removals, recomputations, tapers, stops and
    withdrawals, at random times between, now; as projected while the data came in, and
    after a rebuild in two parts."""
    rng = random.Random(19)
    with psycopg.connect(demo.url) as conn:
        changed = [row[0] for row in conn.execute(
            f'SELECT DISTINCT recorded_at FROM "{SCHEMA}".audit_events'
            " WHERE event_type = ANY(%s) ORDER BY 1", (list(CHANGING),))]
        assert len(changed) > 20
        picked = sorted(rng.sample(changed, 12))
        tick = timedelta(microseconds=1)
        times = [when + offset for when in picked for offset in (-tick, timedelta(0), tick)]
        times += [a + (b - a) * rng.random() for a, b in pairwise(picked)]
        times.append(None)
        _summaries_equal_the_facts_engine(conn, times)
        # Summaries of other endpoints (or another engine's) are not combined.
        assert outcome_summaries_as_of(conn, SCHEMA, nct04397107.ENDPOINTS[:2]) is None
    demo.project(STUDY, rebuild=True, parts=2)
    with psycopg.connect(demo.url) as conn:
        _summaries_equal_the_facts_engine(conn, times)


def _row(tables: dict[str, Any], cell: str) -> dict[str, Any]:
    endpoint = tables["endpoints"][cell.split("/")[0]]
    found = [r for r in [*endpoint["rows"], *endpoint["comparisons"]] if r["cell"] == cell]
    assert len(found) == 1, cell
    return found[0]


@pytest.mark.requirement("R13")
def test_outcomes_as_of_march_2021_differ_from_today_and_match_what_was_known(
    demo: Runtime,
) -> None:
    from datetime import UTC, datetime

    from projections.oracle import oracle_casebooks
    from projections.outcomes.engine import outcome_tables

    march = datetime(2021, 3, 1, tzinfo=UTC)
    then = demo.outcomes(STUDY, march)
    now = demo.outcomes(STUDY)
    assert then != now
    assert (sum(then["endpoints"]["dose"]["arms"].values())
            < sum(now["endpoints"]["dose"]["arms"].values()) == 46)
    assert then == outcome_tables(oracle_casebooks(demo.study(STUDY), march), STUDY,
                                  nct04397107.ENDPOINTS, march)
    # The primary endpoint per m², at baseline and one year, with the change compared.
    il2 = _row(now, "dose/glucocorticoid/M12-BASELINE/IL2")
    std = _row(now, "dose/glucocorticoid/M12-BASELINE/STD")
    assert il2["unit"] == "prednisone-eq mg/m2/day" and il2["n"] > 0
    # The simulated taper is steeper with IL-2, as the study hoped.
    assert il2["mean"] < std["mean"] < 0
    shift = _row(now, "dose/glucocorticoid/M12-BASELINE/IL2-STD")
    assert shift["method"].startswith("Hodges-Lehmann")
    assert shift["ci_low"] <= shift["estimate"] <= shift["ci_high"]
    # Each immunosuppressant on its own, methotrexate per week.
    assert _row(now, "dose/methotrexate/M12/IL2")["unit"] == "mg/m2/week"
    assert _row(now, "dose/hydroxychloroquine/BASELINE/STD")["unit"] == "mg/m2/day"
    # Every secondary at every visit the registry names.
    for visit in nct04397107.FOLLOW_UP:
        assert _row(now, f"complement-dsdna/C3/{visit}-BASELINE/IL2")["n"] > 0
        assert "n" in _row(now, f"sledai/SLEDAI total/{visit}-BASELINE/STD")
        assert "subjects" in _row(now, f"essdai/ESSDAI high/{visit}/STD")
    # Reactions are related AEs: never more than all AEs.
    reactions = _row(now, "adverse-drug-reactions/reactions:any/Y1/IL2")
    every = _row(now, "adverse-drug-reactions/all:any/Y1/IL2")
    assert 0 < reactions["events"] <= every["events"]
    # Injection-site reactions are IL-2's own; infections on standard therapy are AEs, mostly
    # not reactions.
    assert _row(now, "adverse-drug-reactions/all:injection_site_reaction/Y1/STD")["events"] == 0
    assert (_row(now, "adverse-drug-reactions/reactions:infection/Y1/STD")["events"]
            < _row(now, "adverse-drug-reactions/all:infection/Y1/STD")["events"])
    # Treg absolute counts (% of CD4+ x CD4+ cells/uL) at every visit.
    for visit in ("BASELINE", *nct04397107.FOLLOW_UP):
        assert _row(now, f"immune-response/TREG/{visit}/IL2")["n"] > 0


@pytest.mark.requirement("R18")
def test_a_cell_opens_onto_its_records_whose_events_the_ledger_proves(demo: Runtime) -> None:
    import base64
    import json

    from typer.testing import CliRunner

    from api.cli import app as cli
    from infra.ledger import proofs
    from infra.ledger.merkle import verify_inclusion

    cell = "dose/glucocorticoid/M12-BASELINE/IL2"
    result = CliRunner().invoke(cli, ["outcomes", "--study", STUDY, "--cell", cell,
                                      "--database-url", demo.url],
                                env={"TRIALLEDGER_HOME": str(demo.settings.home)})
    assert result.exit_code == 0, result.output
    sources = json.loads(result.output)
    assert sources == demo.outcome_cell(STUDY, cell)
    row = _row(demo.outcomes(STUDY), cell)
    assert len(sources["subjects"]) == row["n"]
    kinds = {r["kind"] for s in sources["subjects"] for r in s["records"]}
    assert kinds == {"therapies", "vitals"}  # the courses, and the BSA they were divided by
    demo.seal(STUDY, force_checkpoint=True)
    positions = sorted({p for s in sources["subjects"] for r in s["records"]
                        for p in r["positions"]})
    with psycopg.connect(demo.url) as conn:
        root = proofs.latest_checkpoint(conn, SCHEMA)["root"]  # type: ignore[index]
        for position in positions[:: max(1, len(positions) // 25)]:
            proof = proofs.inclusion(conn, SCHEMA, position, None)
            assert proof["root"] == root
            assert verify_inclusion(base64.b64decode(proof["leaf_hash"]), proof["leaf_index"],
                                    proof["tree_size"],
                                    [base64.b64decode(h) for h in proof["proof"]],
                                    base64.b64decode(root))
    unknown = CliRunner().invoke(cli, ["outcomes", "--study", STUDY, "--cell", "no/such",
                                       "--database-url", demo.url],
                                 env={"TRIALLEDGER_HOME": str(demo.settings.home)})
    assert unknown.exit_code == 2
    assert "no cell 'no/such'" in unknown.output


def test_outcomes_json_is_byte_identical_before_and_after_a_rebuild(demo: Runtime) -> None:
    from typer.testing import CliRunner

    from api.cli import app as cli

    def run(*args: str) -> str:
        result = CliRunner().invoke(cli, [*args, "--database-url", demo.url],
                                    env={"TRIALLEDGER_HOME": str(demo.settings.home)})
        assert result.exit_code == 0, result.output
        return result.output

    before = run("outcomes", "--study", STUDY, "--format", "json",
                 "--as-of", "2021-12-01T00:00:00+00:00")
    run("rebuild", "--study", STUDY)
    after = run("outcomes", "--study", STUDY, "--format", "json",
                "--as-of", "2021-12-01T00:00:00+00:00")
    assert before == after
    assert '"as_of": "2021-12-01T00:00:00+00:00"' in before
    assert "complement-dsdna/C3/M1/IL2" in run("outcomes", "--study", STUDY, "--format", "csv")
    assert "adverse drug reactions" in run("outcomes", "--study", STUDY)


def test_a_new_projection_version_rebuilds_by_itself(demo: Runtime,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    import application.runtime

    before = dump(demo.url)
    monkeypatch.setattr(application.runtime, "PROJECTION_VERSION", 999)
    assert demo.project(STUDY) > 2000  # replayed everything
    assert dump(demo.url) == before
    assert demo.project(STUDY) == 0  # and stamped: no second rebuild


def test_an_earlier_version_going_back_can_replace_the_read_tables(demo: Runtime) -> None:
    # Its swap drops the tables it knows without CASCADE (the audit trail's view first): no
    # view of this version may depend on them.
    with psycopg.connect(demo.url) as conn:
        assert conn.execute(f'SELECT count(*) FROM "{SCHEMA}".{MARKS}').fetchone() != (0,)
        for table in (VERSIONS, OUTCOME_FACTS):
            conn.execute(f'DROP TABLE "{SCHEMA}".{table}')
        conn.rollback()


def test_an_interrupted_rebuild_leaves_the_tables_as_they_were(demo: Runtime) -> None:
    from projections.history_view import PROJECTION_VERSION

    demo.project(STUDY)  # at this version (a test above stamped another)
    before = dump(demo.url)
    view = demo.history_view(STUDY)
    original = view.stage_batch
    calls = {"n": 0}

    def dying(rows: Any) -> None:
        calls["n"] += 1
        if calls["n"] == 3:
            raise RuntimeError("killed")
        original(rows)

    view.stage_batch = dying  # type: ignore[method-assign]
    with pytest.raises(RuntimeError, match="killed"):
        HistoryProjector(demo.study(STUDY), view).rebuild(PROJECTION_VERSION, batch_size=300)
    view.datastore.close()
    # Readers keep the old tables, at their tracking position.
    assert dump(demo.url) == before
    assert demo.project(STUDY) == 0
    # The next rebuild starts afresh.
    assert demo.project(STUDY, rebuild=True) > 2000
    assert dump(demo.url) == before


@pytest.mark.parametrize("parts", [1, 2])
def test_events_written_during_a_rebuild_are_projected_once(demo: Runtime, parts: int) -> None:
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    from application.runtime import system_envelope
    from infra.signing import key_id_for, public_key_b64

    app = demo.study(STUDY)
    written: list[int] = []

    def write_during(_: int) -> None:
        if not written:  # once, when the rebuild has read the log but not yet swapped
            key = Ed25519PrivateKey.generate().public_key()
            app.register_key(key_id_for("extra", key), public_key_b64(key), system_envelope())
            written.append(app.recorder.max_notification_id() or 0)

    demo.project(STUDY, rebuild=True, on_batch=write_during, parts=parts)
    with psycopg.connect(demo.url) as conn:
        rows = conn.execute(f'SELECT count(*) FROM "{SCHEMA}".{AUDIT} WHERE position = %s',
                            written).fetchone()
    assert rows == (1,)
    after = dump(demo.url)
    demo.project(STUDY, rebuild=True)
    assert dump(demo.url) == after


def test_a_rebuild_in_parts_gives_the_same_tables(demo: Runtime) -> None:
    # Each part is a process of its own folding some of the subjects; together, exactly the
    # tables one process builds.
    demo.project(STUDY)
    before = dump(demo.url)
    batches: list[int] = []
    total = demo.study(STUDY).recorder.max_notification_id()
    assert demo.project(STUDY, rebuild=True, parts=3, on_batch=batches.append) == total
    assert sum(batches) == total and len(batches) >= 3  # each part reported
    assert dump(demo.url) == before


def test_the_parts_of_a_rebuild_hold_no_more_connections_than_their_bound(
    demo: Runtime,
) -> None:
    # However many parts are asked for, their connections together (as the server counts
    # them) stay within the bound: fewer parts run when more would need more.
    import threading
    import time

    from application.rebuild_parts import (
        CONNECTIONS_PER_PART,
        PART_APPLICATION_NAME,
        PartsReplay,
    )
    from projections.history_view import PROJECTION_VERSION

    demo.project(STUDY)
    before = dump(demo.url)
    bound = 2 * CONNECTIONS_PER_PART
    seen: list[int] = []
    stop = threading.Event()

    def count_connections() -> None:
        with psycopg.connect(demo.url, autocommit=True) as conn:
            while not stop.is_set():
                row = conn.execute("SELECT count(*) FROM pg_stat_activity "
                                   "WHERE application_name = %s",
                                   (PART_APPLICATION_NAME,)).fetchone()
                seen.append(row[0] if row else 0)
                time.sleep(0.005)

    projector = HistoryProjector(demo.study(STUDY), demo.history_view(STUDY))
    replay = PartsReplay(demo.settings, demo.url, STUDY, 6, batch_size=50, connections=bound)
    counter = threading.Thread(target=count_connections)
    counter.start()
    try:
        projector.rebuild(PROJECTION_VERSION, replay=replay)
    finally:
        stop.set()
        counter.join()
        projector.view.datastore.close()
    assert len(replay.processes) == 2
    assert 0 < max(seen) <= bound
    assert dump(demo.url) == before


def test_the_parts_of_the_log_hold_each_event_once_and_each_subject_whole(
    demo: Runtime,
) -> None:
    from projections.event_log import part_batches

    recorder = demo.study(STUDY).recorder
    through = recorder.max_notification_id() or 0
    everything = list(recorder.select_notifications(1, through + 1))
    for parts in (2, 5):
        seen: list[int] = []
        owner: dict[Any, int] = {}
        for part in range(parts):
            ids = [n.id for batch in part_batches(recorder, part, parts, through, 97)
                   for n in batch]
            assert ids == sorted(ids) and ids  # in log order, and none empty
            seen += ids
            for n in everything:
                if n.id in set(ids):
                    assert owner.setdefault(n.originator_id, part) == part
        assert sorted(seen) == [n.id for n in everything]


def test_a_part_that_fails_fails_the_rebuild_and_leaves_the_tables(demo: Runtime) -> None:
    import os
    import signal

    from application.rebuild_parts import PartsReplay, RebuildFailed
    from projections.history_view import PROJECTION_VERSION

    demo.project(STUDY)
    before = dump(demo.url)
    projector = HistoryProjector(demo.study(STUDY), demo.history_view(STUDY))
    try:
        # A part that cannot read the signed events says why.
        unsigned = PartsReplay(demo.settings, demo.url, STUDY, 2, signed=False)
        with pytest.raises(RebuildFailed, match=r"part [01] of 2"):
            projector.rebuild(PROJECTION_VERSION, replay=unsigned)
        assert dump(demo.url) == before

        # A part killed outright says nothing: its exit code is enough.
        def kill_the_parts(_: int) -> None:
            for process in killing.processes:
                if process.pid is not None and process.is_alive():
                    os.kill(process.pid, signal.SIGKILL)

        killing = PartsReplay(demo.settings, demo.url, STUDY, 2, batch_size=20,
                              on_batch=kill_the_parts)
        with pytest.raises(RebuildFailed, match="exit code -9"):
            projector.rebuild(PROJECTION_VERSION, replay=killing)
        assert all(not p.is_alive() for p in killing.processes)
        assert dump(demo.url) == before
        assert demo.project(STUDY) == 0
    finally:
        projector.view.datastore.close()


def _parts_in_a_daemon(answers: Any) -> None:
    from application.rebuild_parts import PARTS_FROM, parts_for

    answers.put(parts_for(10 * PARTS_FROM))


def test_only_a_long_log_is_replayed_in_parts_and_not_by_a_daemon() -> None:
    import multiprocessing
    import os

    from application.rebuild_parts import MAX_PARTS, PARTS_FROM, parts_for

    assert parts_for(PARTS_FROM - 1) == 1
    assert parts_for(10 * PARTS_FROM) == min(os.cpu_count() or 1, MAX_PARTS)
    # A server's sealer is daemonic: children of its own would fail its rebuild.
    context = multiprocessing.get_context("spawn")
    answers = context.Queue()
    daemon = context.Process(target=_parts_in_a_daemon, args=(answers,), daemon=True)
    daemon.start()
    assert answers.get(timeout=60) == 1
    daemon.join()


def test_outcomes_at_a_valid_time_are_those_of_what_held_then(demo: Runtime) -> None:
    import json
    from datetime import UTC, datetime

    from typer.testing import CliRunner

    from api.cli import app as cli
    from projections.oracle import oracle_casebooks
    from projections.outcomes.engine import outcome_tables
    from projections.outcomes.facts import outcome_facts_at_valid_time

    valid = datetime(2021, 9, 1, tzinfo=UTC)
    then = demo.outcomes(STUDY, None, valid)
    now = demo.outcomes(STUDY)
    assert then["valid_at"] == valid.isoformat() and now["valid_at"] is None
    # By September 2021 few children had reached month 12, and later AEs had not begun.
    cell = "dose/glucocorticoid/M12/IL2"
    assert _row(then, cell)["n"] < _row(now, cell)["n"]
    every = "adverse-drug-reactions/all:any/Y1/IL2"
    assert _row(then, every)["events"] <= _row(now, every)["events"]
    oracle = [outcome_facts_at_valid_time(book, valid)
              for book in oracle_casebooks(demo.study(STUDY), None)]
    assert then == outcome_tables(oracle, STUDY, nct04397107.ENDPOINTS, None, valid)
    env = {"TRIALLEDGER_HOME": str(demo.settings.home)}
    result = CliRunner().invoke(cli, ["outcomes", "--study", STUDY, "--format", "json",
                                      "--valid-at", valid.isoformat(),
                                      "--database-url", demo.url], env=env)
    assert result.exit_code == 0, result.output
    assert json.loads(result.output) == then
    naive = CliRunner().invoke(cli, ["outcomes", "--study", STUDY, "--valid-at", "2021-09-01",
                                     "--database-url", demo.url], env=env)
    assert naive.exit_code == 2 and "--valid-at" in naive.output


def test_a_catch_up_ends_at_the_log_s_end_as_it_was_called(
        runtime: Runtime, monkeypatch: pytest.MonkeyPatch) -> None:
    # Under a steady stream of writes, catching up "to the end" chased the end: a read that
    # catches up first waited for the stream to stop. Events committed meanwhile are the
    # next call's.
    app = runtime.study(nct04397107.STUDY_ID, clock=SimulatedClock(T0))
    app.register_study(nct04397107.definition(), envelope())
    for code in ("001", "002", "003"):
        enroll(app, code)
    stored = app.recorder.max_notification_id() or 0
    written: list[int] = []

    def a_write_meanwhile(_: int) -> None:
        # Each committed batch of the catch-up sees new events written behind it.
        assert len(written) < 20, "the catch-up chased the writes"
        enroll(app, f"1{len(written):02d}")
        written.append(app.recorder.max_notification_id() or 0)

    monkeypatch.setattr(HistoryProjector, "catch_up", partialmethod(
        HistoryProjector.catch_up, batch_size=2))
    assert runtime.project(nct04397107.STUDY_ID, on_batch=a_write_meanwhile) == stored
    assert written  # written while it caught up, and left for the next call
    assert runtime.project(nct04397107.STUDY_ID) == written[-1] - stored
