"""The console's sessions, CSRF tokens and refusals, in process (the browser tests in
tests/e2e/test_console.py play the screens through)."""

from __future__ import annotations

import csv
import io
import re
import time
from datetime import timedelta
from typing import Any, get_args
from zoneinfo import ZoneInfo

import pytest
from fastapi.testclient import TestClient

from api.app import create_app
from api.console import audit_csv, regulator
from api.routes import exports
from application.runtime import Runtime
from application.verification import verify_remembering
from infra.keys import load_public_keys
from infra.postgres import connect, schema_for_study
from projections.queries import AuditQuery, audit_page
from tests.support import (
    T0,
    add_person,
    api_client,
    correction,
    envelope,
    simulated_clock,
    study_with_a_child,
    study_with_a_corrected_lab,
    three_children_sealed,
)

STUDY = "NCT04397107"
CASEBOOK = f"/ui/studies/{STUDY}/subjects/001"


def _csrf(page: str) -> str:
    match = re.search(r'name="csrf" value="([^"]+)"', page)
    assert match is not None, page
    return match.group(1)


def _signed_in(runtime: Runtime, role: str = "monitor", site: str = "JLU1",
               base_url: str = "http://testserver") -> TestClient:
    username = f"{role}-{site}".lower()
    password = add_person(runtime, username, role, site=site)
    client = TestClient(create_app(runtime), base_url=base_url, follow_redirects=False)
    form = client.get("/ui/sign-in")
    answer = client.post("/ui/sign-in", data={"username": username, "password": password,
                                              "csrf": _csrf(form.text)})
    assert answer.status_code == 303, answer.text
    assert answer.headers["location"] == "/ui/studies"
    return client


def test_pages_need_a_session(runtime: Runtime) -> None:
    client = TestClient(create_app(runtime), follow_redirects=False)
    for path in ("/ui/studies", CASEBOOK, f"/ui/studies/{STUDY}/audit"):
        answer = client.get(path)
        assert answer.status_code == 303
        assert answer.headers["location"] == "/ui/sign-in"


def test_the_session_cookie_is_http_only_strict_and_secure_over_https(runtime: Runtime) -> None:
    study_with_a_child(runtime)
    client = _signed_in(runtime, base_url="https://testserver")
    page = client.get("/ui/studies")
    assert page.status_code == 200
    cookie = next(c for c in client.cookies.jar if c.name == "tl_session")
    assert cookie.secure and cookie.path == "/ui"
    assert cookie.has_nonstandard_attr("HttpOnly")
    assert cookie.get_nonstandard_attr("SameSite") in ("Strict", "strict")
    # Pages may run this server's scripts only; the API's answers keep the strict policy.
    policy = page.headers["content-security-policy"]
    assert "script-src 'self'" in policy and "unsafe" not in policy
    assert "form-action 'self'" in policy
    api = client.get("/healthz").headers["content-security-policy"]
    assert api.startswith("default-src 'none';") and "script-src" not in api


def test_sign_in_form_without_its_csrf_token_is_refused(runtime: Runtime) -> None:
    password = add_person(runtime, "mon", "monitor", site="JLU1")
    client = TestClient(create_app(runtime), follow_redirects=False)
    client.get("/ui/sign-in")
    answer = client.post("/ui/sign-in", data={"username": "mon", "password": password,
                                              "csrf": "guessed"})
    assert answer.status_code == 403
    assert "tl_session" not in answer.headers.get("set-cookie", "")


def test_a_write_without_the_session_csrf_token_stores_nothing(runtime: Runtime) -> None:
    study_with_a_child(runtime, lab=True)
    client = _signed_in(runtime)
    before = client.get(CASEBOOK)
    refused = client.post(f"{CASEBOOK}/queries", data={
        "record_id": "LB1", "field": "value", "text": "check", "csrf": "forged"})
    assert refused.status_code == 403
    assert "CSRF" in refused.text
    assert "No queries." in client.get(CASEBOOK).text
    assert "No queries." in before.text


def test_refusals_name_the_field_and_store_nothing(runtime: Runtime) -> None:
    study_with_a_child(runtime, lab=True)
    client = _signed_in(runtime)
    page = client.get(CASEBOOK)
    empty = client.post(f"{CASEBOOK}/queries", data={
        "record_id": "LB1", "field": "value", "text": "", "csrf": _csrf(page.text)})
    assert empty.status_code == 422
    error = re.search(r'id="error">([^<]*)<', empty.text)
    assert error is not None and "text" in error.group(1)
    assert "No queries." in empty.text
    bad_time = client.get(CASEBOOK, params={"as_of": "yesterday"})
    assert bad_time.status_code == 422
    assert "as_of: is not a date and time" in bad_time.text
    unknown = client.get(f"/ui/studies/{STUDY}/subjects/999")
    assert unknown.status_code == 404


@pytest.mark.requirement("R20")
def test_a_coordinator_reads_only_their_own_sites(runtime: Runtime) -> None:
    study_with_a_child(runtime)
    client = _signed_in(runtime, "coordinator", "JLU2")
    assert "No subjects at your sites." in client.get(f"/ui/studies/{STUDY}").text
    assert client.get(CASEBOOK).status_code == 403


def test_an_ended_session_sends_the_person_to_sign_in_saying_why(runtime: Runtime) -> None:
    study_with_a_child(runtime)
    client = _signed_in(runtime)
    page = client.get("/ui/studies")
    token = client.cookies["tl_session"]
    with runtime.pool().connection() as conn:
        runtime.sessions().end(conn, token)  # as an idle time-out or a sign-out elsewhere
    ended = client.get("/ui/studies")
    assert ended.status_code == 303
    assert ended.headers["location"] == "/ui/sign-in?why=ended"
    assert "Your session ended" in client.get("/ui/sign-in?why=ended").text
    # Signing out ends the session in the store too.
    client = _signed_in(runtime, "regulator", "*")
    page = client.get("/ui/studies")
    token = client.cookies["tl_session"]
    out = client.post("/ui/sign-out", data={"csrf": _csrf(page.text)})
    assert out.headers["location"] == "/ui/sign-in?why=signed-out"
    with runtime.pool().connection() as conn:
        assert runtime.sessions().resolve(conn, token) is None


def test_the_dashboard_counts_at_the_readers_sites(runtime: Runtime) -> None:
    study_with_a_child(runtime, lab=True)
    monitor = _signed_in(runtime)
    page = monitor.get(CASEBOOK)
    raised = monitor.post(f"{CASEBOOK}/queries", data={
        "record_id": "LB1", "field": "value", "text": "check the report",
        "csrf": _csrf(page.text)})
    assert raised.status_code == 303
    board = monitor.get(f"/ui/studies/{STUDY}").text
    assert re.search(r"<td>JLU1</td><td>IL2</td><td>1</td>", board)
    assert "check the report" in board and "LB1.value" in board
    assert "0 of 1 records marked verified" in board
    assert "Awaiting signature: 1 (001)" in board
    other = _signed_in(runtime, "coordinator", "JLU2").get(f"/ui/studies/{STUDY}").text
    assert "check the report" not in other and "No open queries." in other
    assert "Awaiting signature: 0" in other


def test_changing_your_password_ends_your_sessions(runtime: Runtime) -> None:
    study_with_a_child(runtime)
    client = _signed_in(runtime)
    form = client.get("/ui/password")
    weak = client.post("/ui/password", data={
        "current_password": "monitor-jlu1-password", "new_password": "password1234",
        "csrf": _csrf(form.text)})
    assert weak.status_code == 422
    assert "new_password" in weak.text
    wrong = client.post("/ui/password", data={
        "current_password": "not it", "new_password": "violet harbour lantern quietly",
        "csrf": _csrf(form.text)})
    assert wrong.status_code == 401
    changed = client.post("/ui/password", data={
        "current_password": "monitor-jlu1-password",
        "new_password": "violet harbour lantern quietly", "csrf": _csrf(form.text)})
    assert changed.status_code == 303
    assert changed.headers["location"] == "/ui/sign-in?why=password-changed"
    assert client.get("/ui/studies").headers["location"].startswith("/ui/sign-in")
    sign_in = client.get("/ui/sign-in")
    again = client.post("/ui/sign-in", data={
        "username": "monitor-jlu1", "password": "violet harbour lantern quietly",
        "csrf": _csrf(sign_in.text)})
    assert again.headers["location"] == "/ui/studies"


def test_the_diff_between_two_times_names_each_changed_field(runtime: Runtime) -> None:
    study_with_a_corrected_lab(runtime)
    regulator = _signed_in(runtime, "regulator", "*")
    page = regulator.get(f"/ui/studies/{STUDY}/diff", params={
        "recorded_from": (T0 + timedelta(days=2)).isoformat(),
        "recorded_to": (T0 + timedelta(days=10)).isoformat()})
    assert page.status_code == 200
    assert re.search(r"<td>LB1</td><td>fields.value</td>\s*<td>0.8</td><td>0.6</td>", page.text)
    before = regulator.get(f"/ui/studies/{STUDY}/diff", params={
        "recorded_from": "2021-01-12T00:00:00", "recorded_to": "2021-01-13T00:00:00"})
    assert "Nothing changed between these times." in before.text
    reversed_times = regulator.get(f"/ui/studies/{STUDY}/diff", params={
        "recorded_from": "2021-01-13T00:00:00", "recorded_to": "2021-01-12T00:00:00"})
    assert reversed_times.status_code == 422
    # The diff spans every site: a reader of one site is refused, as by the API.
    monitor = _signed_in(runtime)
    assert monitor.get(f"/ui/studies/{STUDY}/diff", params={
        "recorded_from": "2021-01-12T00:00:00",
        "recorded_to": "2021-01-13T00:00:00"}).status_code == 403


def test_a_value_history_as_a_page_and_as_the_fragment_its_marker_opens(
        runtime: Runtime) -> None:
    study_with_a_corrected_lab(runtime)
    monitor = _signed_in(runtime)
    book = monitor.get(CASEBOOK).text
    assert "changed (2), last by" in book and "transcription_error" in book
    assert f'href="{CASEBOOK}/history?record=LB1&amp;field=value"' in book
    url = f"{CASEBOOK}/history"
    page = monitor.get(url, params={"record": "LB1", "field": "value"})
    assert page.status_code == 200 and "<html" in page.text
    assert "0.8 → 0.6" in page.text and "transcription error found at monitoring" in page.text
    fragment = monitor.get(url, params={"record": "LB1", "field": "value"},
                           headers={"HX-Request": "true"})
    assert "<html" not in fragment.text and "0.8 → 0.6" in fragment.text
    before = monitor.get(url, params={"record": "LB1", "field": "value",
                                      "as_of": (T0 + timedelta(days=2)).isoformat()})
    assert "— → 0.8" in before.text and "0.8 → 0.6" not in before.text
    other_site = _signed_in(runtime, "coordinator", "JLU2")
    assert other_site.get(url, params={"record": "LB1", "field": "value"}).status_code == 403



def test_outcome_tables_link_each_figure_to_the_records_behind_it(runtime: Runtime) -> None:
    study_with_a_corrected_lab(runtime)
    app = runtime.study(STUDY)
    app.on_subject("001", lambda s, t: s.record_lab_result(
        "LB2", T0, "C3", 0.7, "g/L", envelope(), t, visit="BASELINE"))
    app.close()
    cell = next(row["cell"] for row in runtime.outcomes(STUDY)["endpoints"]["complement-dsdna"]
                ["rows"] if row.get("n"))
    client = _signed_in(runtime, "regulator", "*")
    tables = client.get(f"/ui/studies/{STUDY}/outcomes")
    assert tables.status_code == 200
    row = re.search(rf'<tr data-cell="{re.escape(cell)}">(.*?)</tr>', tables.text, re.S)
    assert row is not None
    link = re.search(r'<a class="figure" href="([^"]+)">1</a>', row.group(1))
    assert link is not None, row.group(1)  # n = 1: the one C3 at baseline
    behind = client.get(link.group(1).replace("&amp;", "&"))
    assert behind.status_code == 200
    record = re.search(r'<tr class="record" data-subject="001" data-record="LB2">(.*?)</tr>',
                       behind.text, re.S)
    assert record is not None, behind.text
    positions = [int(p) for p in re.findall(r"regulator\?event=(\d+)", record.group(1))]
    expected = runtime.outcome_cell(STUDY, cell)["subjects"][0]["records"]
    assert positions == next(r["positions"] for r in expected if r["record_id"] == "LB2")
    # A cell the tables do not have is refused by name, nothing else shown.
    unknown = client.get(f"/ui/studies/{STUDY}/outcomes/cell", params={"id": "no/such/cell"})
    assert unknown.status_code == 404
    assert "no cell" in unknown.text
    # As of a time before any data the page says so and still answers.
    earlier = client.get(f"/ui/studies/{STUDY}/outcomes",
                         params={"as_of": (T0 - timedelta(days=1)).isoformat()})
    assert earlier.status_code == 200
    assert "As the system recorded the data at" in earlier.text
    typo = client.get(f"/ui/studies/{STUDY}/outcomes", params={"as_of": "yesterday"})
    assert typo.status_code == 422 and "as_of" in typo.text


def test_the_audit_view_downloads_as_csv_every_row_and_no_formula(
        runtime: Runtime, monkeypatch: pytest.MonkeyPatch) -> None:
    study_with_a_corrected_lab(runtime)
    app = runtime.study(STUDY)
    for i, value in enumerate((0.5, 0.4, 0.3)):
        app.on_subject("001", lambda s, t, v=value, n=i: s.correct(
            "LB1", "value", v, correction(f"=HYPERLINK(\"http://evil/{n}\")"), t))
    app.close()
    monkeypatch.setattr(audit_csv, "BATCH", 2)  # several pages make one file
    client = _signed_in(runtime)
    page = client.get(f"/ui/studies/{STUDY}/audit", params={"field": "value"})
    link = re.search(r'<a href="([^"]+)" id="audit-csv"', page.text)
    assert link is not None
    answer = client.get(link.group(1).replace("&amp;", "&"))
    assert answer.status_code == 200
    assert answer.headers["content-type"].startswith("text/csv")
    assert "attachment" in answer.headers["content-disposition"]
    rows = list(csv.DictReader(io.StringIO(answer.text)))
    api = runtime_trail(runtime, field="value")
    assert [(int(r["position"]), r["new_value"]) for r in rows] == [
        (e["position"], str(e["new_value"])) for e in api]
    assert len(rows) == 5  # the first entry, then four corrections
    injected = [r["reason_text"] for r in rows if "HYPERLINK" in r["reason_text"]]
    assert len(injected) == 3 and all(t.startswith("'=HYPERLINK") for t in injected)
    # A bad filter is a page naming it, not a broken file.
    refused = client.get(f"/ui/studies/{STUDY}/audit.csv", params={"recorded_from": "soon"})
    assert refused.status_code == 422 and "recorded_from" in refused.text


def runtime_trail(runtime: Runtime, **filters: str) -> list[dict[str, Any]]:
    """Every audit entry the filters select, from the read tables."""
    runtime.project(STUDY)
    with connect(runtime.url) as conn:
        return audit_page(conn, schema_for_study(STUDY), AuditQuery(filters), None,
                          1000)["entries"]


def test_a_removed_record_is_shown_as_removed_from_its_removal_on(runtime: Runtime) -> None:
    study_with_a_corrected_lab(runtime)
    clock = simulated_clock(T0 + timedelta(days=20))
    app = runtime.study(STUDY, clock=clock)
    app.on_subject("001", lambda s, t: s.remove("LB1", correction("entered twice"), t))
    app.close()
    client = _signed_in(runtime)
    now = client.get(CASEBOOK).text
    removed = re.search(r'<tr class="removed" data-record="LB1">(.*?)</tr>', now, re.S)
    assert removed is not None, now
    assert "<del>" in removed.group(1) and "value 0.6" in removed.group(1)
    assert "transcription_error: entered twice" in removed.group(1)
    assert 'data-record="LB1" data-field=' not in now  # no longer among the live records
    # Before its removal it is a live record again, and nothing says removed.
    before = client.get(CASEBOOK, params={"as_of": (T0 + timedelta(days=10)).isoformat()}).text
    assert 'data-record="LB1" data-field="value"' in before
    assert 'class="removed"' not in before


def test_times_show_utc_and_the_sites_clock(runtime: Runtime) -> None:
    study_with_a_corrected_lab(runtime)  # LB1 collected at T0: 09:00 UTC, 17:00 in Changchun
    client = _signed_in(runtime)
    casebook = client.get(CASEBOOK).text
    assert ('<time datetime="2021-01-10T09:00:00+00:00">2021-01-10 09:00:00+00:00</time> '
            '<span class="local">(site 2021-01-10 17:00:00+08:00 Asia/Shanghai)</span>'
            in casebook)
    corrected = (T0 + timedelta(days=9)).astimezone(ZoneInfo("Asia/Shanghai"))
    local = f"(site {corrected.isoformat(sep=' ')} Asia/Shanghai)"
    assert local in casebook  # the change marker's time
    assert local in client.get(f"/ui/studies/{STUDY}/audit").text
    assert local in client.get(f"{CASEBOOK}/history", params={"record": "LB1",
                                                               "field": "value"}).text


def test_the_dashboard_shows_deviations_and_the_ledgers_state(runtime: Runtime) -> None:
    three_children_sealed(runtime)
    investigator = api_client(runtime, "investigator", site="JLU1")
    assert investigator.post(f"/v1/studies/{STUDY}/subjects/002/deviations", json={
        "category": "missed_visit", "severity": "major", "occurred_on": "2021-02-09",
        "description": "Month 1 visit missed: family travelling"}).status_code == 201
    client = _signed_in(runtime)
    dashboard = client.get(f"/ui/studies/{STUDY}").text
    deviations = re.search(r'<table id="deviations">(.*?)</table>', dashboard, re.S)
    assert deviations is not None
    assert "Month 1 visit missed: family travelling" in deviations.group(1)
    assert "Protocol deviations (1)" in dashboard
    assert "Newest checkpoint: 15 events sealed" in dashboard
    assert re.search(r'<p id="checkpoint-age">Signed at <time>[^<]+\+00:00</time>, '
                     r"under a minute ago</p>", dashboard)
    assert "No witnesses configured: signed by the log's key alone" in dashboard
    assert "Not yet verified here" in dashboard

    with connect(runtime.url) as conn:
        assert verify_remembering(conn, runtime.settings, STUDY, schema_for_study(STUDY),
                                  load_public_keys(runtime.settings)).ok
    verified = client.get(f"/ui/studies/{STUDY}").text
    assert re.search(r"Last verified here at <time>[^<]+\+00:00</time> "
                     r"\(through checkpoint 15\)", verified)


def test_an_idle_session_ends_and_the_console_says_so(runtime: Runtime) -> None:
    study_with_a_child(runtime)
    client = _signed_in(runtime)
    assert client.get("/ui/studies").status_code == 200
    runtime.sessions().idle_timeout = timedelta(seconds=1)  # the deployment's, shortened
    time.sleep(1.5)
    idle = client.get("/ui/studies")
    assert idle.status_code == 303
    assert idle.headers["location"] == "/ui/sign-in?why=ended"
    assert "idle too long" in client.get(idle.headers["location"]).text


def test_sdv_marks_only_with_the_monitors_permission(runtime: Runtime) -> None:
    study_with_a_corrected_lab(runtime)
    sdv = f"/ui/studies/{STUDY}/sdv"
    coordinator = _signed_in(runtime, "coordinator", "JLU1")
    listed = coordinator.get(sdv).text
    assert 'data-record="LB1"' in listed and "not yours to verify" in listed
    assert "Mark verified" not in listed
    refused = coordinator.post(sdv, data={"subject": "001", "record_id": "LB1",
                                          "csrf": _csrf(listed)})
    assert refused.status_code == 403 and "Forbidden" in refused.text
    monitor = _signed_in(runtime)
    page = monitor.get(sdv).text
    done = monitor.post(sdv, data={"subject": "001", "record_id": "LB1", "csrf": _csrf(page)})
    assert done.status_code == 303
    assert 'data-record="LB1"' not in monitor.get(sdv).text
    assert runtime_trail(runtime, event_type="SourceVerified")[0]["record_id"] == "LB1"
    unknown = monitor.post(sdv, data={"subject": "001", "record_id": "LB9",
                                      "csrf": _csrf(page)})
    assert unknown.status_code == 404 and "LB9" in unknown.text


def test_a_timed_out_page_ends_its_session(runtime: Runtime) -> None:
    study_with_a_child(runtime)
    client = _signed_in(runtime)
    page = client.get("/ui/studies").text
    assert 'data-idle-seconds="900"' in page and "/ui/static/idle.js" in page
    token = client.cookies["tl_session"]
    out = client.get("/ui/timed-out")
    assert out.status_code == 303 and out.headers["location"] == "/ui/sign-in?why=ended"
    assert client.get("/ui/studies").headers["location"] == "/ui/sign-in"  # cookie gone
    # ... and the session with it, wherever its token would be shown.
    assert client.get("/v1/studies", headers={"Authorization": f"Bearer {token}"}
                      ).status_code == 401
    assert "idle.js" not in client.get("/ui/sign-in").text


def test_the_regulator_view_offers_every_export_and_names_a_bad_event(
        runtime: Runtime) -> None:
    assert set(regulator.EXPORTS) == set(get_args(exports.Format))
    study_with_a_child(runtime)
    client = _signed_in(runtime, "regulator", "*")
    page = client.get(f"/ui/studies/{STUDY}/regulator").text
    assert all(f'/exports/{name}"' in page for name in regulator.EXPORTS)
    for wrong in ("zero", "0", "-3"):
        refused = client.get(f"/ui/studies/{STUDY}/regulator", params={"event": wrong})
        assert refused.status_code == 422 and "event" in refused.text
    unknown = client.get(f"/ui/studies/{STUDY}/exports/pdf")
    assert unknown.status_code == 422 and "export_format" in unknown.text
    # A coordinator may not export: refused by the export route's own permission.
    coordinator = _signed_in(runtime, "coordinator", "JLU1")
    assert coordinator.get(f"/ui/studies/{STUDY}/exports/csv").status_code == 403
