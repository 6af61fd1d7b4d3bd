"""Admins act only within the studies and sites they hold (issue 14, A-4), over HTTP."""

from __future__ import annotations

from fastapi.testclient import TestClient

from api.app import create_app
from application.runtime import Runtime
from tests.support import add_person


def _signed_in(runtime: Runtime, username: str, password: str) -> TestClient:
    client = TestClient(create_app(runtime))
    token = client.post("/v1/auth/token", json={"username": username, "password": password})
    client.headers["Authorization"] = f"Bearer {token.json()['access_token']}"
    return client


def test_an_admin_of_one_study_and_site_acts_only_there(runtime: Runtime) -> None:
    admin = _signed_in(runtime, "admin-a1", add_person(runtime, "admin-a1", "admin",
                                                       study="A", site="S1"))
    add_person(runtime, "coord-a1", "coordinator", study="A", site="S1")
    add_person(runtime, "coord-a2", "coordinator", study="A", site="S2")
    add_person(runtime, "monitor-b", "monitor", study="B")
    add_person(runtime, "root", "admin", study="*")

    listed = admin.get("/v1/users")
    assert listed.status_code == 200
    assert [u["username"] for u in listed.json()] == ["admin-a1", "coord-a1"]

    for path in ("/v1/users/monitor-b/deactivate", "/v1/users/monitor-b/unlock",
                 "/v1/users/coord-a2/deactivate"):
        refused = admin.post(path)
        assert refused.status_code == 403, path
        assert refused.headers["content-type"] == "application/problem+json"
    # A role at the admin's own site, but for a person of another study: refused too.
    assert admin.post("/v1/users/monitor-b/roles", json={
        "role": "monitor", "study": "A", "site": "S1"}).status_code == 403
    assert admin.post("/v1/users/coord-a1/roles", json={
        "role": "monitor", "study": "A", "site": "S1"}).status_code == 200
    assert admin.post("/v1/users/coord-a1/roles", json={
        "role": "monitor", "study": "A", "site": "*"}).status_code == 403
    clients = admin.post("/v1/clients", json={"client_id": "edc", "name": "An app"})
    assert clients.status_code == 403 and "every study and site" in clients.json()["detail"]
    assert runtime.directory().user("monitor-b").active

    root = _signed_in(runtime, "root", "root-password")
    assert len(root.get("/v1/users").json()) == 5
    assert root.post("/v1/clients", json={"client_id": "edc", "name": "An app"}
                     ).status_code == 201
    assert root.post("/v1/users/monitor-b/deactivate").status_code == 200
