"""The API as its OpenAPI describes it: typed answers, the concurrency and idempotency
headers, short operation ids; the lists a monitor works from; 304 and one ETag per view."""

from __future__ import annotations

import re
from datetime import timedelta
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from fastapi.testclient import TestClient

from api.app import create_app
from application.runtime import Runtime, system_envelope
from domain.studies import nct04397107
from infra.ledger.cosignature import LogKey, parse_vkey
from infra.signing import key_id_for, public_key_b64
from tests.support import T0, api_client, envelope, register, simulated_clock

STUDY = nct04397107.STUDY_ID
S = f"/v1/studies/{STUDY}"
SUBJECT_WRITE = re.compile(r"^/v1/studies/\{study\}/subjects/\{subject\}/")
METHODS = ("get", "post", "put", "patch", "delete")


def _operations(runtime: Runtime) -> list[tuple[str, str, dict[str, Any]]]:
    spec = TestClient(create_app(runtime)).get("/openapi.json").json()
    return [(method, path, op) for path, item in spec["paths"].items()
            for method, op in item.items() if method in METHODS]


def _headers(op: dict[str, Any]) -> set[str]:
    return {p["name"] for p in op.get("parameters", []) if p["in"] == "header"}


def _typed(content: dict[str, Any]) -> bool:
    """A named model, a list of one, or (for files and metrics) a typed string."""
    for schema in (c.get("schema", {}) for c in content.values()):
        item = schema.get("items", {}) if schema.get("type") == "array" else schema
        if "$ref" in item or item.get("type") == "string":
            return True
    return False


def test_every_operation_is_typed_named_and_documents_its_headers(runtime: Runtime) -> None:
    operations = _operations(runtime)
    ids = [op["operationId"] for _, _, op in operations]
    assert len(ids) == len(set(ids)), "operation ids repeat"
    for method, path, op in operations:
        where = f"{method.upper()} {path}"
        assert re.fullmatch(r"[a-z][a-zA-Z0-9]{2,29}", op["operationId"]), where
        success = {code: r for code, r in op["responses"].items() if code.startswith("2")}
        assert success, f"{where}: no 2xx answer"
        for code, response in success.items():
            assert code == "204" or _typed(response.get("content", {})), \
                f"{where}: {code} has no typed schema"
        if not path.startswith("/v1"):
            continue
        problems = {code: r for code, r in op["responses"].items() if code[0] in "45"}
        assert {"401", "422", "503"} <= set(problems) or path.startswith("/v1/auth"), where
        for code, response in problems.items():
            body = response["content"]["application/problem+json"]
            assert body["schema"] == {"$ref": "#/components/schemas/Problem"}, (where, code)
            assert body["example"]["status"] == int(code), (where, code)
            if code in ("429", "503"):
                assert "Retry-After" in response["headers"], (where, code)
        headers = _headers(op)
        if method == "post" and op.get("security"):
            assert "Idempotency-Key" in headers, where
        if method != "get" and SUBJECT_WRITE.match(path):
            assert "If-Match" in headers, where
            assert all("ETag" in r["headers"] for r in success.values()), where
    by_id = {op["operationId"]: op for _, _, op in operations}
    for name in ("getCasebook", "getSubjectHistory"):
        assert "If-None-Match" in _headers(by_id[name])
        assert "ETag" in by_id[name]["responses"]["200"]["headers"]
        assert "304" in by_id[name]["responses"]
    for name in ("getAuditTrail", "getSubjectHistory"):
        cursor = next(p for p in by_id[name]["parameters"] if p["name"] == "cursor")
        assert cursor["in"] == "query" and cursor["description"]
    assert {"enrollSubject", "getAuditTrail", "listStudies", "listQueries", "listSignatures",
            "listDeviations", "listLedgerKeys"} <= set(by_id)


def _two_sites(runtime: Runtime) -> None:
    """001 at JLU1 and 002 at JLU2, each with a lab; a query on 001 (day 1, answered) and
    on 002 (day 20, open)."""
    clock = simulated_clock()
    app = runtime.study(STUDY, clock=clock)
    definition = nct04397107.definition()
    definition["sites"].append({"code": "JLU2", "name": "A second site"})
    app.register_study(definition, envelope())
    for code, site in (("001", "JLU1"), ("002", "JLU2")):
        app.enroll_subject(code, site, T0.date().replace(year=2010), "F", "SLE", T0.date(),
                           nct04397107.ELIGIBLE_SCREENING_ANSWERS, "IL2", T0.date(),
                           envelope())
        app.on_subject(code, lambda s, t: s.record_lab_result(
            "LB1", T0, "C3", 0.8, "g/L", envelope(), t))
    clock.set(T0 + timedelta(days=1))
    app.on_subject("001", lambda s, t: s.open_query("Q1", "LB1", "value", "please confirm",
                                                    envelope(), t))
    app.on_subject("001", lambda s, t: s.answer_query("Q1", "confirmed", envelope(), t))
    clock.set(T0 + timedelta(days=20))
    app.on_subject("002", lambda s, t: s.open_query("Q2", "LB1", "value", "unit?",
                                                    envelope(), t))
    app.close()


@pytest.mark.requirement("R20")
def test_the_lists_show_only_what_the_caller_may_read(runtime: Runtime) -> None:
    _two_sites(runtime)
    monitor = api_client(runtime, "monitor")
    coordinator = api_client(runtime, "coordinator", site="JLU1")
    investigator = api_client(runtime, "investigator", site="JLU2", username="inv2")

    studies = coordinator.get("/v1/studies")
    assert studies.status_code == 200
    assert studies.json() == [{"study_id": STUDY, "roles": ["coordinator"]}]
    assert api_client(runtime, "admin", username="other").get("/v1/studies").json() == [
        {"study_id": STUDY, "roles": ["admin"]}]

    every = monitor.get(f"{S}/queries").json()
    assert [(q["query_id"], q["subject"], q["site"], q["status"]) for q in every] == [
        ("Q1", "001", "JLU1", "answered"), ("Q2", "002", "JLU2", "open")]
    assert [q["query_id"] for q in monitor.get(f"{S}/queries",
                                               params={"status": "open"}).json()] == ["Q2"]
    assert [q["query_id"] for q in monitor.get(f"{S}/queries",
                                               params={"site": "JLU1"}).json()] == ["Q1"]
    oldest = max(q["age_days"] for q in every)
    assert every[0]["age_days"] - every[1]["age_days"] == 19
    assert [q["query_id"] for q in monitor.get(f"{S}/queries", params={
        "older_than_days": oldest}).json()] == ["Q1"]
    # A coordinator of one site sees that site's queries, whatever they ask for.
    assert [q["query_id"] for q in coordinator.get(f"{S}/queries").json()] == ["Q1"]
    assert coordinator.get(f"{S}/queries", params={"site": "JLU2"}).json() == []
    bad = monitor.get(f"{S}/queries", params={"status": "pending"})
    assert bad.status_code == 422 and bad.json()["errors"][0]["field"] == "status"

    signed = investigator.post(f"{S}/subjects/002/signatures", json={
        "meaning": "approval", "username": "inv2", "password": "inv2-password"})
    assert signed.status_code == 201, signed.text
    signatures = monitor.get(f"{S}/signatures").json()
    assert [(s["subject"], s["meaning"], s["status"]) for s in signatures] == [
        ("002", "approval", "valid")]
    assert coordinator.get(f"{S}/signatures").json() == []


def test_the_ledger_keys_with_their_validity(runtime: Runtime) -> None:
    clock = simulated_clock()
    app = runtime.study(STUDY, clock=clock)
    register(app)
    monitor = api_client(runtime, "monitor")
    [key] = monitor.get(f"{S}/ledger/keys").json()
    public = runtime.signing_key().public_key()
    assert key["key_id"] == key_id_for(runtime.settings.key_name, public)
    assert key["status"] == "active" and key["valid_until"] is None
    parsed = parse_vkey(key["vkey"])
    assert isinstance(parsed, LogKey) and parsed.public_key == public
    assert key["vkey"].startswith(key["key_id"] + "+")

    successor = Ed25519PrivateKey.generate().public_key()
    clock.set(T0 + timedelta(days=3))
    app.register_key(key_id_for("next", successor), public_key_b64(successor),
                     system_envelope(), retire=key["key_id"])
    old, new = monitor.get(f"{S}/ledger/keys").json()
    assert (old["status"], old["valid_until"]) == ("retired", new["valid_from"])
    assert new["status"] == "active" and new["public_key"] == public_key_b64(successor)
    assert api_client(runtime, "admin", username="keys-admin").get(
        f"{S}/ledger/keys").status_code == 403


def test_casebook_and_history_answer_304_and_one_etag_per_view(runtime: Runtime) -> None:
    _two_sites(runtime)
    client = api_client(runtime, "coordinator", site="JLU1")
    book = f"{S}/subjects/001"
    now = client.get(book)
    tag = now.headers["ETag"]
    assert tag == f'"{now.json()["version"]}"'
    assert client.get(book, headers={"If-None-Match": tag}).status_code == 304
    assert client.get(book, headers={"If-None-Match": f'"0", W/{tag}'}).status_code == 304
    assert client.get(book, headers={"If-None-Match": '"0"'}).status_code == 200

    later = (T0 + timedelta(days=30)).isoformat()
    views = [client.get(book, params=params) for params in (
        {"as_of": later}, {"valid_at": later}, {"as_of": later, "valid_at": later},
        {"as_of": (T0 + timedelta(days=1, hours=1)).isoformat()})]
    tags = [v.headers["ETag"] for v in views]
    assert len({tag, *tags}) == 5, tags
    again = client.get(book, params={"as_of": later}, headers={"If-None-Match": tags[0]})
    assert again.status_code == 304 and again.headers["ETag"] == tags[0]

    history = client.get(f"{book}/history")
    assert client.get(f"{book}/history",
                      headers={"If-None-Match": history.headers["ETag"]}).status_code == 304
    page = client.get(f"{book}/history", params={"limit": 1})
    assert page.headers["ETag"] != history.headers["ETag"]

    written = client.post(f"{book}/labs", headers={"If-Match": tag}, json={
        "observed_at": T0.isoformat(), "code": "C4", "value": 0.2, "unit": "g/L"})
    assert written.status_code == 201, written.text
    assert client.get(book, headers={"If-None-Match": tag}).status_code == 200
    assert client.get(f"{book}/history", headers={
        "If-None-Match": history.headers["ETag"]}).status_code == 200
    stale = client.post(f"{book}/labs", headers={"If-Match": tag}, json={
        "observed_at": T0.isoformat(), "code": "C4", "value": 0.3, "unit": "g/L"})
    assert stale.status_code == 412
    # A view's ETag names the version it shows: current, it may be written on.
    view = client.get(book, params={"valid_at": later}).headers["ETag"]
    assert client.post(f"{book}/labs", headers={"If-Match": view}, json={
        "observed_at": T0.isoformat(), "code": "C4", "value": 0.3, "unit": "g/L"}
    ).status_code == 201
    assert client.post(f"{book}/labs", headers={"If-Match": tags[0]}, json={
        "observed_at": T0.isoformat(), "code": "C4", "value": 0.4, "unit": "g/L"}
    ).status_code == 412
