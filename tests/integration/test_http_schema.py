"""schemathesis against /openapi.json (bounded examples): no 5xx, and every response matches
the schema the API publishes."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta
from typing import Any

import pytest
import schemathesis
from fastapi import FastAPI
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from schemathesis.checks import not_a_server_error, response_schema_conformance

from api.app import create_app
from application.runtime import Runtime
from tests.support import T0, add_person, enroll, envelope, register, simulated_clock

ROLES = ("admin", "investigator", "coordinator", "monitor", "data_manager", "regulator")


@pytest.fixture
def served(runtime: Runtime) -> Iterator[tuple[FastAPI, dict[str, str]]]:
    clock = simulated_clock()
    app = runtime.study("NCT04397107", clock=clock)
    register(app)
    enroll(app, "001")
    clock.set(T0 + timedelta(days=1))
    app.on_subject("001", lambda s, t: s.record_lab_result("LB1", T0, "C3", 0.8, "g/L",
                                                           envelope(), t))
    app.close()
    # One person holding every role everywhere, so generated requests get past the
    # role check and reach the code behind it.
    password = add_person(runtime, "fuzzer", "admin", study="*")
    runtime.directory().record("fuzzer", lambda u: [
        u.grant(role, "*", "*", envelope(), runtime.directory().clock.now())
        for role in ROLES[1:]])
    api = create_app(runtime)
    from fastapi.testclient import TestClient

    token = TestClient(api).post("/v1/auth/token",
                                 json={"username": "fuzzer", "password": password})
    yield api, {"Authorization": f"Bearer {token.json()['access_token']}"}


# Signing out or changing the password would end the fuzzer's own session; tested elsewhere.
SIGN_OUTS = {"DELETE /v1/auth/token", "POST /v1/auth/password"}


def _known_ids(drawn: tuple[Any, bool]) -> Any:
    """Half the cases aim at the registered study and enrolled subject, so generated bodies
    reach the domain instead of stopping at a 404."""
    case, aim = drawn
    if aim and case.path_parameters:
        for name, value in (("study", "NCT04397107"), ("subject", "001"), ("kind", "labs"),
                            ("record", "LB1"), ("username", "fuzzer")):
            if name in case.path_parameters:
                case.path_parameters[name] = value
    return case


@pytest.mark.slow
def test_the_api_keeps_its_published_schema(served: tuple[FastAPI, dict[str, str]]) -> None:
    api, headers = served
    schema = schemathesis.openapi.from_asgi("/openapi.json", api)
    failures = []
    calls: list[str] = []
    statuses: list[int] = []
    for result in schema.get_all_operations():
        operation = result.ok()
        if operation.label in SIGN_OUTS:
            continue

        @given(case=st.tuples(operation.as_strategy(), st.booleans()).map(_known_ids))
        @settings(max_examples=8, deadline=None, database=None,
                  suppress_health_check=list(HealthCheck))
        def call(case: Any) -> None:
            calls.append(case.path_parameters.get("subject", ""))
            response = case.call_and_validate(
                headers=headers, checks=[not_a_server_error, response_schema_conformance])
            statuses.append(response.status_code)

        try:
            call()
        except Exception as e:  # collect every operation's failure, not only the first
            failures.append(f"{operation.label}: {e}")
    assert not failures, "\n\n".join(failures)
    assert calls.count("001") > 50, "the fuzzing never reached the enrolled subject"
    assert sum(200 <= s < 300 for s in statuses) > 20, "hardly any generated request succeeded"
