"""An admin's actions on people are events of the directory's log, each naming the admin
(id, printed name, role) and the server's time."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from fastapi.testclient import TestClient

from api.app import create_app
from application.runtime import Runtime
from domain.user import user_uuid
from tests.support import add_person


@pytest.mark.requirement("R6", "R8")
def test_grants_revocations_and_deactivations_by_an_admin_are_logged(runtime: Runtime) -> None:
    add_person(runtime, "admin-a1", "admin", study="A", site="S1", full_name="Ada Admin")
    add_person(runtime, "coord-a1", "coordinator", study="A", site="S1")
    admin = TestClient(create_app(runtime))
    token = admin.post("/v1/auth/token",
                       json={"username": "admin-a1", "password": "admin-a1-password"})
    admin.headers["Authorization"] = f"Bearer {token.json()['access_token']}"
    before = datetime.now(UTC)
    assert admin.post("/v1/users/coord-a1/roles", json={
        "role": "monitor", "study": "A", "site": "S1"}).status_code == 200
    assert admin.delete("/v1/users/coord-a1/roles/monitor/A/S1").status_code == 200
    assert admin.post("/v1/users/coord-a1/deactivate").status_code == 200

    directory = runtime.directory()
    events = list(directory.events.get(user_uuid("coord-a1")))
    by_admin = [e for e in events
                if e.envelope.actor.printed_name == "Ada Admin"]  # type: ignore[attr-defined]
    assert [e.TOPIC for e in by_admin] == [  # type: ignore[attr-defined]
        "User.RoleGranted.v1", "User.RoleRevoked.v1", "User.Deactivated.v1"]
    admin_id = directory.user("admin-a1").user_id
    for event in by_admin:
        actor = event.envelope.actor  # type: ignore[attr-defined]
        assert (actor.user_id, actor.role) == (admin_id, "admin")
        assert before <= event.timestamp <= datetime.now(UTC)
    assert not directory.user("coord-a1").active
