"""The web console (`/ui/`) in a real browser: Debian's chromium driven by Selenium through
chromium-driver, against `trialledger serve` on a real PostgreSQL.

Every test fails on any error in the browser's console and on any request to a host other
than the server (nothing from a CDN), and saves a screenshot of each screen it passes under
its temporary directory.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from selenium import webdriver
from selenium.common.exceptions import StaleElementReferenceException, WebDriverException
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.common.keys import Keys
from selenium.webdriver.remote.webelement import WebElement
from selenium.webdriver.support.ui import WebDriverWait

from domain.studies import nct04397107
from infra.ledger.cosignature import Cosigner, add_cosignatures, cosign, split_note
from infra.postgres import temporary_database
from tests.support import free_port, wait_until_ready

STUDY = nct04397107.STUDY_ID
CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"
FLAGS = ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--disable-dev-shm-usage", "--window-size=1400,1000")

NETWORK_SCHEMES = ("http", "https", "ws", "wss", "ftp")

# Skipped on a developer's machine without the browser; never in CI, which installs it.
pytestmark = pytest.mark.skipif(
    not (shutil.which(CHROMIUM) and shutil.which(CHROMEDRIVER)) and not os.environ.get("CI"),
    reason="needs Debian's chromium and chromium-driver (.ci/run installs them)")

PEOPLE = {
    "lwei": ("Li Wei", "coordinator", "JLU1"),
    "wfang": ("Dr Wang Fang", "investigator", "JLU1"),
    "mchen": ("Chen Mei", "monitor", "JLU1"),
    "zhao": ("Zhao Lei", "coordinator", "JLU2"),
    "locky": ("Lok Kee", "monitor", "JLU1"),
    "rgale": ("Ruth Gale", "regulator", "*"),
}
LAB_VALUES = (0.8, 0.9, 1.0, 1.2, 0.7, 1.1, 0.95)  # entered by lwei on subject 003


def password_of(username: str) -> str:
    """Each person's password (one the password rules accept)."""
    return f"{username} amber canyon whistle"


@dataclass
class Server:
    """A served deployment with the demo people and three children."""

    base: str

    def headers(self, username: str) -> dict[str, str]:
        response = httpx.post(f"{self.base}/v1/auth/token", json={
            "username": username, "password": password_of(username)})
        assert response.status_code == 200, response.text
        return {"Authorization": f"Bearer {response.json()['access_token']}"}


def _ok(response: httpx.Response, status: int = 200) -> Any:
    assert response.status_code == status, response.text
    return response.json()


def _seed(server: Server) -> None:
    base = server.base
    admin = server.headers("ada")
    _ok(httpx.post(f"{base}/v1/studies", json=nct04397107.definition(), headers=admin), 201)
    for username, (name, role, site) in PEOPLE.items():
        _ok(httpx.post(f"{base}/v1/users", headers=admin, json={
            "username": username, "full_name": name, "password": password_of(username),
            "roles": [{"role": role, "study": STUDY, "site": site}],
            "identity_verified_by": "hospital badge checked in person"}), 201)
    coordinator = server.headers("lwei")
    for code in ("001", "002", "003"):
        _ok(httpx.post(f"{base}/v1/studies/{STUDY}/subjects", headers=coordinator, json={
            "subject": code, "site": "JLU1", "date_of_birth": "2010-05-01", "sex": "F",
            "disease": "SLE", "consent_date": "2021-01-10", "arm": "IL2",
            "enrolled_on": "2021-01-10",
            "screening": nct04397107.ELIGIBLE_SCREENING_ANSWERS}), 201)
        _ok(httpx.post(f"{base}/v1/studies/{STUDY}/subjects/{code}/labs", headers=coordinator,
                       json={"record_id": f"LB-{code}", "observed_at": "2021-01-11T08:00:00Z",
                             "visit": "BASELINE", "code": "C3", "value": 0.8,
                             "unit": "g/L"}), 201)
    # Subject 001's C3 is corrected, with a reason: the change the slider crosses.
    _ok(httpx.patch(f"{base}/v1/studies/{STUDY}/subjects/001/labs/LB-001",
                    headers=coordinator, json={
                        "field": "value", "value": 0.6,
                        "reason": {"code": "transcription_error",
                                   "text": "lab report says 0.6"}}))
    for i, value in enumerate(LAB_VALUES):
        _ok(httpx.post(f"{base}/v1/studies/{STUDY}/subjects/003/labs", headers=coordinator,
                       json={"record_id": f"LB-003-{i}", "observed_at": "2021-02-11T08:00:00Z",
                             "code": "C4", "value": value, "unit": "g/L"}), 201)


@pytest.fixture(scope="module")
def server(server_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """One `trialledger serve` for the module, on a fresh database, seeded over HTTP."""
    tmp = tmp_path_factory.mktemp("console-server")
    home = tmp / "home"
    env = {**os.environ, "TRIALLEDGER_HOME": str(home)}
    with temporary_database(server_url, "tl_console") as db_url:
        added = subprocess.run(
            [sys.executable, "-m", "api.cli", "users", "add", "--username", "ada",
             "--full-name", "Ada Admin", "--role", "admin", "--study", "*", "--password-stdin",
             "--database-url", db_url], input=f"{password_of('ada')}\n", env=env,
            capture_output=True, text=True, timeout=120)
        assert added.returncode == 0, added.stderr
        port = free_port()
        log = tmp / "server.log"
        with log.open("w") as out:
            process = subprocess.Popen(
                [sys.executable, "-m", "api.cli", "serve", "--database-url", db_url,
                 "--port", str(port)], env=env, stdout=out, stderr=subprocess.STDOUT)
        base = f"http://127.0.0.1:{port}"
        try:
            wait_until_ready(base, log, process)
            served = Server(base)
            _seed(served)
            yield served
        finally:
            process.terminate()
            process.wait(timeout=20)


def _gone(element: WebElement) -> bool:
    """True once ``element``'s page has been replaced. Asked while the new page loads,
    chromedriver may answer that the node "does not belong to the document" rather than
    that it is stale: the same answer, in other words."""
    try:
        element.is_enabled()
    except StaleElementReferenceException:
        return True
    except WebDriverException as e:
        if "does not belong to the document" in str(e):
            return True
        raise
    return False


class Browser:
    """A headless chromium on a fresh profile, watched for console errors and for requests
    leaving the server."""

    def __init__(self, base: str, shots: Path) -> None:
        self.base = base
        self.shots = shots
        options = webdriver.ChromeOptions()
        options.binary_location = CHROMIUM
        for flag in FLAGS:
            options.add_argument(flag)
        options.add_argument(f"--user-data-dir={shots / 'profile'}")
        options.set_capability("goog:loggingPrefs", {"browser": "ALL", "performance": "ALL"})
        self.driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
        self.driver.implicitly_wait(0)
        self.requested: list[str] = []

    def open(self, path: str) -> None:
        self.driver.get(self.base + path)

    def find(self, css: str) -> WebElement:
        return self.driver.find_element(By.CSS_SELECTOR, css)

    def finds(self, css: str) -> list[WebElement]:
        return self.driver.find_elements(By.CSS_SELECTOR, css)

    def click(self, css: str) -> None:
        """Click what loads a new page (a link, a form's button) and wait for that page."""
        self.press(self.find(css))

    def press(self, element: WebElement) -> None:
        """Click ``element`` and wait for the page it loads."""
        page = self.find("html")
        element.click()
        WebDriverWait(self.driver, 20).until(lambda _: _gone(page))

    def wait(self, condition: Any, timeout: float = 20) -> Any:
        # An element read while htmx swaps the page part holding it is stale: read again.
        return WebDriverWait(self.driver, timeout, ignored_exceptions=(
            StaleElementReferenceException,)).until(lambda _: condition())

    def shot(self, name: str) -> None:
        self.driver.save_screenshot(str(self.shots / f"{name}.png"))

    def sign_in(self, username: str, password: str | None = None) -> None:
        self.open("/ui/sign-in")
        self.find("#username").send_keys(username)
        self.find("#password").send_keys(password or password_of(username))
        self.click("#sign-in")

    def console_errors(self) -> list[str]:
        """The browser console's errors since the last call."""
        return [e["message"] for e in self.driver.get_log("browser") if e["level"] == "SEVERE"]

    def expect_refusals(self, *statuses: int) -> None:
        """Only the refusals a step asked for were logged (a 4xx page is logged as a failed
        load); anything else is an error."""
        allowed = tuple(f"the server responded with a status of {s}" for s in statuses)
        unexpected = [m for m in self.console_errors() if not any(a in m for a in allowed)]
        assert unexpected == [], unexpected

    def check_requests(self) -> None:
        """Every request the pages made over the network went to the server (the
        browser's own pages, chrome://, are not fetched from anywhere)."""
        for entry in self.driver.get_log("performance"):
            message = json.loads(entry["message"])["message"]
            if message["method"] == "Network.requestWillBeSent":
                self.requested.append(message["params"]["request"]["url"])
        server = urlsplit(self.base).netloc
        outside = [u for u in self.requested if urlsplit(u).scheme in NETWORK_SCHEMES
                   and urlsplit(u).netloc != server]
        assert outside == [], outside

    def close(self) -> None:
        self.driver.quit()


@pytest.fixture
def browser(server: Server, tmp_path: Path) -> Iterator[Browser]:
    """A browser for one test; at its end, no console error and no outside request."""
    shots = tmp_path / "screens"
    shots.mkdir()
    opened = Browser(server.base, shots)
    try:
        yield opened
        opened.expect_refusals()
        opened.check_requests()
    finally:
        (shots / "last-page.html").write_text(opened.driver.page_source)
        opened.close()


def _value_cell(browser: Browser, record: str, field: str) -> WebElement:
    return browser.find(f'tr[data-record="{record}"][data-field="{field}"] td.v')


@pytest.mark.slow(seconds=25)
def test_sign_in_sign_out_and_lockout_after_five_failures(browser: Browser) -> None:
    browser.open("/ui/")
    assert browser.driver.current_url.endswith("/ui/sign-in")
    browser.shot("sign-in")
    browser.sign_in("mchen")
    assert browser.find("#signed-in-as").text == "Chen Mei (mchen)"
    assert STUDY in browser.find("#studies").text
    browser.shot("studies")
    browser.click("#sign-out")
    assert "You are signed out" in browser.find("#notice").text
    # The ended session opens nothing.
    browser.open(f"/ui/studies/{STUDY}")
    assert "/ui/sign-in" in browser.driver.current_url

    for _ in range(4):
        browser.sign_in("locky", "not the password at all")
        assert "Sign-in refused" in browser.find("#error").text
    browser.sign_in("locky", "not the password at all")
    assert "This account is locked" in browser.find("#error").text
    # ... and the right password is refused as well, with the same words.
    browser.sign_in("locky")
    assert "This account is locked" in browser.find("#error").text
    browser.shot("locked")
    browser.expect_refusals(401)

    # A form posted without the session's CSRF token does nothing.
    browser.sign_in("mchen")
    browser.driver.execute_script(
        "document.querySelector('input[name=csrf]').value = 'forged';")
    browser.click("#sign-out")
    assert "CSRF" in browser.find("#error").text
    browser.expect_refusals(403)
    browser.open("/ui/studies")
    assert browser.find("#signed-in-as").text == "Chen Mei (mchen)"


@pytest.mark.slow(seconds=20)
def test_the_time_slider_crosses_a_correction(browser: Browser) -> None:
    browser.sign_in("mchen")
    browser.click(f'a[href="/ui/studies/{STUDY}"]')
    browser.click(f'a[href="/ui/studies/{STUDY}/subjects/001"]')
    value = _value_cell(browser, "LB-001", "value")
    assert value.find_element(By.CSS_SELECTOR, ".value").text == "0.6"
    assert "transcription_error — lab report says 0.6" in value.text
    browser.shot("casebook-now")

    # One step back on the slider (keyboard): the casebook as it stood before the correction.
    shown = browser.find("#shown-time").text
    browser.find("#step").send_keys(Keys.ARROW_LEFT)
    browser.wait(lambda: browser.find("#shown-time").text != shown)
    assert browser.find("#shown-time").text.startswith("as recorded at ")
    assert "+00:00" in browser.find("#as-of").text
    value = _value_cell(browser, "LB-001", "value")
    assert value.find_element(By.CSS_SELECTOR, ".value").text == "0.8"
    assert "lab report says" not in value.text
    assert "step=" in browser.driver.current_url  # the moment is in the address, to share
    browser.shot("casebook-before-correction")

    # Forward again: the new value with its reason, and its history opens old → new.
    browser.find("#step").send_keys(Keys.ARROW_RIGHT)
    browser.wait(lambda: browser.find("#shown-time").text == "now (latest)")
    row = 'tr[data-record="LB-001"][data-field="value"]'
    browser.find(f"{row} details summary").click()  # htmx fetches the history in place
    browser.wait(lambda: browser.finds(f"{row} details table"))
    history = browser.find(f"{row} details table").text
    assert "0.8 → 0.6" in history
    assert "Li Wei coordinator JLU1 transcription_error: lab report says 0.6" in history
    browser.shot("casebook-history")


@pytest.mark.requirement("R16")
@pytest.mark.slow(seconds=20)
def test_the_audit_trail_filtered_to_one_user_and_field_pages_each_row_once(
        server: Server, browser: Browser) -> None:
    expected = _ok(httpx.get(f"{server.base}/v1/studies/{STUDY}/audit", headers=server.headers(
        "mchen"), params={"site": "JLU1", "field": "value", "limit": 1000}))["entries"]
    expected = [e for e in expected if e["printed_name"] == "Li Wei"]
    assert len(expected) == 3 + 1 + len(LAB_VALUES)  # three first C3s, a correction, C4s

    browser.sign_in("mchen")
    browser.open(f"/ui/studies/{STUDY}/audit")
    browser.shot("audit")
    browser.click("#audit a.user")  # the first row's person: Li Wei
    field = browser.find("#f-field")
    field.clear()
    field.send_keys("value")
    limit = browser.find("#f-limit")
    limit.clear()
    limit.send_keys("3")
    browser.click("#apply-filters")
    seen: list[str] = []
    pages = 0
    while True:
        pages += 1
        rows = browser.finds("#audit tr.entry")
        assert all(r.find_element(By.CSS_SELECTOR, "a.user").text == "Li Wei" for r in rows)
        assert all(r.find_element(By.CSS_SELECTOR, "a.field").text == "value" for r in rows)
        seen.extend(r.get_attribute("data-key") or "" for r in rows)
        if pages == 2:
            browser.shot("audit-filtered-page-2")
        following = browser.finds("#next-page")
        if not following:
            break
        browser.press(following[0])
    assert pages == 4
    assert seen == [f"{e['position']}/{e['record_id']}/{e['field']}" for e in expected]
    assert len(set(seen)) == len(seen)


@pytest.mark.requirement("R12")
@pytest.mark.slow(seconds=25)
def test_query_raised_answered_by_correction_and_closed_across_roles(browser: Browser) -> None:
    casebook = f"/ui/studies/{STUDY}/subjects/002"
    browser.sign_in("mchen")
    browser.open(casebook)
    browser.find("#q-field").send_keys("value")
    browser.find("#q-text").send_keys("0.8 does not match the lab report")
    browser.click("#raise-query button")
    assert "query raised" in browser.find("#notice").text
    query = browser.find("#queries li[data-status=open]")
    query_id = query.get_attribute("id")
    assert "0.8 does not match the lab report" in query.text
    browser.shot("query-raised")
    # The study's dashboard lists it among the open queries, with its age.
    browser.click(f'nav a[href="/ui/studies/{STUDY}"]')
    rows = [r.text for r in browser.finds("#open-queries tbody tr")]
    mine = [r for r in rows if r.startswith("002 ")]
    assert len(mine) == 1
    assert mine[0].startswith("002 0.8 does not match the lab report LB-002.value open")
    assert mine[0].endswith("under a minute")
    assert browser.find("#enrolment tfoot").text == "All 3"
    browser.shot("dashboard")
    browser.click("#sign-out")

    browser.sign_in("wfang")
    browser.open(casebook)
    item = f"#{query_id}"
    browser.find(f"{item} input[name=value]").send_keys("1.1")
    browser.find(f"{item} input[name=reason_text]").send_keys("lab report says 1.1")
    browser.click(f"{item} form button")
    assert "query answered by correction" in browser.find("#notice").text
    assert browser.find(item).get_attribute("data-status") == "answered"
    value = _value_cell(browser, "LB-002", "value")
    assert value.find_element(By.CSS_SELECTOR, ".value").text == "1.1"
    browser.shot("query-answered")
    browser.click("#sign-out")

    browser.sign_in("mchen")
    browser.open(casebook)
    browser.find(f"{item} input[name=text]").send_keys("matches the source now")
    browser.click(f"{item} form button")
    assert browser.find(item).get_attribute("data-status") == "closed"
    browser.shot("query-closed")


@pytest.mark.requirement("R9", "R10")
@pytest.mark.slow(seconds=20)
def test_signature_refused_with_a_wrong_password_then_shown_and_invalidated(
        server: Server, browser: Browser) -> None:
    casebook = f"/ui/studies/{STUDY}/subjects/003"
    browser.sign_in("wfang")
    browser.open(casebook)
    browser.find("#sign-password").send_keys("not my password at all")
    browser.click("#sign-form button")
    assert "Unauthorized" in browser.find("#error").text
    assert browser.finds("#signatures li.manifestation") == []
    browser.expect_refusals(401)
    browser.find("#sign-password").send_keys(password_of("wfang"))
    browser.click("#sign-form button")
    manifestation = browser.find("#signatures li.manifestation")
    assert "Signed by Dr Wang Fang at" in manifestation.text
    assert "+00:00" in manifestation.text
    assert manifestation.get_attribute("data-status") == "valid"
    browser.shot("signed")

    _ok(httpx.patch(f"{server.base}/v1/studies/{STUDY}/subjects/003/labs/LB-003-0",
                    headers=server.headers("lwei"), json={
                        "field": "value", "value": 0.85,
                        "reason": {"code": "transcription_error", "text": "re-read"}}))
    browser.open(casebook)
    assert browser.find("#signatures li.manifestation").get_attribute(
        "data-status") == "invalidated"
    browser.shot("signature-invalidated")


@pytest.mark.requirement("R20")
@pytest.mark.slow(seconds=15)
def test_a_coordinator_of_another_site_sees_none_of_its_subjects(browser: Browser) -> None:
    browser.sign_in("zhao")
    browser.open(f"/ui/studies/{STUDY}")
    assert browser.find("#no-subjects").text == "No subjects at your sites."
    assert browser.finds(f'a[href^="/ui/studies/{STUDY}/subjects/"]') == []
    browser.shot("other-site")
    browser.open(f"/ui/studies/{STUDY}/subjects/001")
    assert "Forbidden" in browser.find("#error").text
    assert browser.finds("tr[data-record]") == []
    browser.open(f"/ui/studies/{STUDY}/audit?site=JLU1")
    assert "Forbidden" in browser.find("#error").text
    browser.expect_refusals(403)
    browser.open(f"/ui/studies/{STUDY}/audit")
    assert browser.finds("#audit tr.entry") == []


@pytest.mark.slow(seconds=10)
def test_docs_served_from_the_server_alone(browser: Browser) -> None:
    browser.open("/docs")
    browser.wait(lambda: browser.finds(".opblock-tag"))
    assert "TrialLedger" in browser.find(".info .title").text
    browser.shot("docs")


def _sealed_correction(server: Server) -> int:
    """The log position of subject 001's correction, once a signed checkpoint covers it."""
    headers = server.headers("rgale")
    entries = _ok(httpx.get(f"{server.base}/v1/studies/{STUDY}/audit", headers=headers, params={
        "subject": "001", "record_id": "LB-001", "field": "value"}))["entries"]
    position = int(entries[-1]["position"])
    deadline = time.monotonic() + 60
    while httpx.get(f"{server.base}/v1/studies/{STUDY}/ledger/proofs/inclusion",
                    params={"event": position}, headers=headers).status_code != 200:
        assert time.monotonic() < deadline, f"no checkpoint covers event {position}"
        time.sleep(0.2)
    return position


def _verdict(browser: Browser) -> str:
    browser.wait(lambda: browser.find("#verdict").get_attribute("data-verdict") != "pending")
    return browser.find("#verdict").get_attribute("data-verdict") or ""


@pytest.mark.slow(seconds=30)
def test_the_regulator_page_checks_an_inclusion_proof_itself_and_sees_tampering(
        server: Server, browser: Browser) -> None:
    position = _sealed_correction(server)
    browser.sign_in("rgale")
    browser.open(f"/ui/studies/{STUDY}/regulator")
    formats = {a.get_attribute("data-format") for a in browser.finds("#downloads a")}
    assert {"bundle", "odm-snapshot", "csv", "casebook"} <= formats
    # A download streams through the console's session: the ODM snapshot, as XML.
    head = browser.driver.execute_async_script(
        "const done = arguments[0];"
        f"fetch('/ui/studies/{STUDY}/exports/odm-snapshot')"
        ".then(r => r.text().then(t => done([r.status, t.slice(0, 5)])));")
    assert head == [200, "<?xml"]

    browser.find("#event").send_keys(str(position))
    browser.click("#show-proof")
    assert _verdict(browser) == "verified", browser.find("#verdict").text
    text = browser.find("#verdict").text
    tree_size = browser.find("#p-size").get_attribute("value")
    assert text.startswith(f"Event {position} verified against checkpoint {tree_size} ")
    assert "cosigned by no witness (none configured)" in text
    browser.shot("regulator-verified")

    # One hash of the audit path changed: the page's own check fails.
    browser.driver.execute_script(
        "const path = document.getElementById('p-path');"
        "const hashes = path.value.split('\\n');"
        "hashes[0] = btoa(String.fromCharCode(...new Uint8Array(32).fill(7)));"
        "path.value = hashes.join('\\n');"
        "document.getElementById('verdict').dataset.verdict = 'pending';")
    browser.find("#check-again").click()
    assert _verdict(browser) == "failed"
    assert "does not lead to the root of checkpoint" in browser.find("#verdict").text
    browser.shot("regulator-tampered-path")

    # The path restored but one byte of the checkpoint's signature flipped: refused too.
    browser.open(f"/ui/studies/{STUDY}/regulator?event={position}")
    assert _verdict(browser) == "verified"
    browser.driver.execute_script(
        "const note = document.getElementById('p-note');"
        "const [body, sigs] = note.value.split('\\n\\n');"
        "const [name, blob] = sigs.slice(2).trim().split(' ');"
        "const raw = Uint8Array.from(atob(blob), c => c.charCodeAt(0)); raw[20] ^= 1;"
        "note.value = body + '\\n\\n\\u2014 ' + name + ' ' +"
        " btoa(String.fromCharCode(...raw)) + '\\n';"
        "document.getElementById('verdict').dataset.verdict = 'pending';")
    browser.find("#check-again").click()
    assert _verdict(browser) == "failed"
    assert "no valid signature by a key of this study" in browser.find("#verdict").text



@pytest.mark.slow(seconds=25)
def test_the_sdv_worklist_marks_a_record_verified_until_it_changes(
        server: Server, browser: Browser) -> None:
    browser.sign_in("mchen")
    browser.open(f"/ui/studies/{STUDY}/sdv")
    row = 'tr.awaiting[data-subject="003"][data-record="LB-003-1"]'
    assert "never verified" in browser.find(row).text
    awaiting = len(browser.finds("tr.awaiting"))
    browser.shot("sdv-worklist")
    browser.click(f"{row} button")
    assert "003 LB-003-1 marked verified" in browser.find("#notice").text
    assert browser.finds(row) == []
    assert len(browser.finds("tr.awaiting")) == awaiting - 1

    # A correction after the verification puts the record back on the list, saying so.
    _ok(httpx.patch(f"{server.base}/v1/studies/{STUDY}/subjects/003/labs/LB-003-1",
                    headers=server.headers("lwei"), json={
                        "field": "value", "value": 0.91,
                        "reason": {"code": "transcription_error", "text": "re-read"}}))
    browser.open(f"/ui/studies/{STUDY}/sdv")
    assert "changed since verified at revision" in browser.find(row).text
    assert "by Chen Mei" in browser.find(row).text
    browser.shot("sdv-changed-since")
    browser.click("#sign-out")

    # A coordinator of another site has nothing of this site's to verify (nor may verify).
    browser.sign_in("zhao")
    browser.open(f"/ui/studies/{STUDY}/sdv")
    assert browser.find("#sdv-none").text == "Nothing awaits verification at your sites."


# Accessibility checks run in the page: every form control labelled, every button named,
# lang and title set, no interactive element kept from the keyboard, and text contrast at
# least WCAG AA (4.5:1) against the nearest opaque background.
A11Y_PROBLEMS = """
const problems = [];
if (!document.documentElement.lang) problems.push("html has no lang");
if (!document.title.trim()) problems.push("page has no title");
const named = (el) => (el.labels && el.labels.length) || el.getAttribute("aria-label")
  || el.getAttribute("aria-labelledby");
for (const el of document.querySelectorAll("input, select, textarea")) {
  if (el.type === "hidden") continue;
  if (!named(el)) problems.push(`unlabelled ${el.tagName} ${el.id || el.name}`);
}
for (const el of document.querySelectorAll("button, a[href], summary")) {
  if (!(el.textContent.trim() || el.getAttribute("aria-label")))
    problems.push(`unnamed ${el.outerHTML.slice(0, 120)}`);
}
for (const el of document.querySelectorAll("a[href], button, input, select, textarea, summary"))
  if (el.tabIndex < 0) problems.push(`kept from the keyboard: ${el.outerHTML.slice(0, 60)}`);
const rgb = (text) => text.match(/[0-9.]+/g).map(Number);
const lum = ([r, g, b]) => [r, g, b].map((c) => {
  c /= 255; return c <= 0.03928 ? c / 12.92 : ((c + 0.055) / 1.055) ** 2.4;
}).reduce((sum, c, i) => sum + c * [0.2126, 0.7152, 0.0722][i], 0);
const backdrop = (el) => {
  for (let e = el; e; e = e.parentElement) {
    const c = rgb(getComputedStyle(e).backgroundColor);
    if (c.length < 4 || c[3] === 1) return c.slice(0, 3);
  }
  return [255, 255, 255];
};
const walker = document.createTreeWalker(document.body, NodeFilter.SHOW_TEXT);
const seen = new Set();
while (walker.nextNode()) {
  const el = walker.currentNode.parentElement;
  if (!walker.currentNode.textContent.trim() || seen.has(el) || !el.getClientRects().length)
    continue;
  seen.add(el);
  const fg = lum(rgb(getComputedStyle(el).color).slice(0, 3)), bg = lum(backdrop(el));
  const ratio = (Math.max(fg, bg) + 0.05) / (Math.min(fg, bg) + 0.05);
  if (ratio < 4.5)
    problems.push(`contrast ${ratio.toFixed(2)}: ${el.textContent.trim().slice(0, 30)}`);
}
return problems;
"""


def _accessible(browser: Browser, path: str) -> None:
    browser.open(path)
    problems = browser.driver.execute_script(A11Y_PROBLEMS)
    assert problems == [], (path, problems)
    # Tab reaches the first link, and the focus is drawn (an outline, not nothing).
    browser.find("body").send_keys(Keys.TAB)
    focused = browser.driver.execute_script(
        "const s = getComputedStyle(document.activeElement);"
        "return [document.activeElement.tagName, s.outlineStyle, s.outlineWidth];")
    assert focused[0] == "A" and focused[1] != "none" and focused[2] != "0px", (path, focused)


@pytest.mark.slow(seconds=60)
def test_every_screen_labels_its_controls_and_keeps_contrast(
        server: Server, browser: Browser) -> None:
    _accessible(browser, "/ui/sign-in")
    browser.sign_in("mchen")
    study = f"/ui/studies/{STUDY}"
    for path in ("/ui/studies", study, f"{study}/subjects/001",
                 f"{study}/subjects/001/history?record=LB-001&field=value",
                 f"{study}/audit", f"{study}/diff", f"{study}/sdv", "/ui/password"):
        _accessible(browser, path)
    browser.click("#sign-out")
    browser.sign_in("rgale")
    position = _sealed_correction(server)
    for path in (f"{study}/regulator", f"{study}/outcomes",
                 f"{study}/outcomes/cell?id=adverse-drug-reactions%2Fall%3Aany%2FY1%2FIL2"):
        _accessible(browser, path)
    _accessible(browser, f"{study}/regulator?event={position}")
    assert _verdict(browser) == "verified"


@pytest.mark.slow(seconds=25)
def test_the_regulator_page_checks_a_witness_cosignature_itself(
        server: Server, browser: Browser) -> None:
    position = _sealed_correction(server)
    browser.sign_in("rgale")
    browser.open(f"/ui/studies/{STUDY}/regulator?event={position}")
    assert _verdict(browser) == "verified"
    # A witness cosigns the served checkpoint (made here: this deployment names none); the
    # page is told the witness's verifier key, as a deployment naming it would tell it.
    private = Ed25519PrivateKey.generate()
    witness = Cosigner("witness.example", private.public_key())
    note = browser.find("#p-note").get_attribute("value") or ""
    body, _ = split_note(note)
    line = cosign(body, witness.name, private, int(time.time()))
    forged = line[:-10] + ("A" if line[-10] != "A" else "B") + line[-9:]
    for cosigned, expected in ((add_cosignatures(note, [line]), "cosigned by witness.example."),
                               (add_cosignatures(note, [forged]), "cosigned by no witness.")):
        browser.driver.execute_script(
            "document.getElementById('p-note').value = arguments[0];"
            "document.getElementById('proof-form').dataset.witnesses = arguments[1];"
            "document.getElementById('verdict').dataset.verdict = 'pending';",
            cosigned, json.dumps([witness.vkey]))
        browser.find("#check-again").click()
        assert _verdict(browser) == "verified", browser.find("#verdict").text
        assert browser.find("#verdict").text.endswith(expected), browser.find("#verdict").text
    browser.shot("regulator-cosigned")


@pytest.mark.slow(seconds=20)
def test_an_idle_page_signs_itself_off(browser: Browser) -> None:
    browser.sign_in("mchen")
    browser.open(f"/ui/studies/{STUDY}/subjects/001")
    assert browser.find("body").get_attribute("data-idle-seconds") == "900"  # the store's
    # The time-out shortened in the page, then a request through htmx re-arms its clock.
    browser.driver.execute_script("document.body.dataset.idleSeconds = '1';")
    page = browser.find("html")
    browser.find("#step").send_keys(Keys.ARROW_LEFT)
    browser.wait(lambda: _gone(page) and "/ui/sign-in" in browser.driver.current_url)
    assert "Your session ended" in browser.find("#notice").text
    browser.shot("idle-signed-off")
    browser.open("/ui/studies")  # the session itself ended, not only the page
    assert "/ui/sign-in" in browser.driver.current_url


@pytest.mark.slow(seconds=30)
def test_an_outcome_figure_opens_its_records_and_their_signed_events(
        server: Server, browser: Browser) -> None:
    _sealed_correction(server)
    browser.sign_in("rgale")
    browser.open(f"/ui/studies/{STUDY}/outcomes")
    # The C3 at baseline of the IL2 arm: the three children's first labs.
    row = browser.find('table[data-endpoint="complement-dsdna"] tr[data-cell*="C3"]'
                       '[data-cell*="BASELINE"]')
    figure = row.find_element(By.CSS_SELECTOR, "a.figure")
    assert figure.text == "3"
    browser.shot("outcomes")
    browser.press(figure)
    records = browser.finds("#cell-sources tr.record")
    assert sorted(r.get_attribute("data-subject") or "" for r in records) == [
        "001", "002", "003"]
    browser.shot("outcome-cell")
    # The corrected record's events: its entry and its correction, each with its proof.
    corrected = browser.find('#cell-sources tr.record[data-record="LB-001"]')
    events = corrected.find_elements(By.CSS_SELECTOR, "a")
    assert len(events) == 2
    browser.press(events[0])
    assert _verdict(browser) == "verified", browser.find("#verdict").text
