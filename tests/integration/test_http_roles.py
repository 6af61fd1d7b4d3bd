"""The role matrix: every role x every endpoint x own site / other site / every site.

The expected table below is the design (DESIGN.md, "Roles"), written out by hand; the test
fails if the server allows what the table refuses, refuses what it allows, or if a route
exists that the table does not cover. A refused request stores nothing.
"""

from __future__ import annotations

import itertools
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import pytest
from fastapi.testclient import TestClient

from api.app import create_app
from application.runtime import Runtime
from domain.envelope import Reason
from domain.studies import nct04397107
from tests.support import T0, add_person, envelope, simulated_clock

STUDY = nct04397107.STUDY_ID
S = f"/v1/studies/{STUDY}"
SUBJ = f"{S}/subjects/001"
ROLES = ("investigator", "coordinator", "monitor", "data_manager", "regulator", "admin")
SITES = ("JLU1", "JLU2", "*")  # the subject's site, another site, every site
READERS = {"investigator", "coordinator", "monitor", "data_manager", "regulator"}
ENTER = {"investigator", "coordinator"}
REASON = {"code": "transcription_error", "text": "checked against source"}


def new_id() -> str:
    return uuid.uuid4().hex[:12]


@dataclass
class Person:
    username: str
    role: str
    site: str
    client: TestClient


Body = Callable[[Person], Any]


@dataclass
class Endpoint:
    """One endpoint, who may call it, and where their grant must reach.

    scope: "subject" (a grant at the subject's site, JLU1, or every site), "study" (a grant
    at every site), "any" (a grant at any site of the study).
    """

    method: str
    route: str
    path: str
    roles: set[str]
    scope: str
    body: Body | None = None
    params: dict[str, Any] | None = None

    def allows(self, person: Person) -> bool:
        if person.role not in self.roles:
            return False
        return {"subject": person.site in ("JLU1", "*"), "study": person.site == "*",
                "any": True}[self.scope]


def lab(_: Person) -> dict[str, Any]:
    return {"record_id": new_id(), "observed_at": (T0 + timedelta(days=2)).isoformat(),
            "code": "C3", "value": 0.8, "unit": "g/L"}


def target(runtime: Runtime) -> str:
    name = f"target-{new_id()}"
    add_person(runtime, name, "coordinator", site="JLU1")
    return name


def endpoints(runtime: Runtime) -> list[Endpoint]:
    observed = (T0 + timedelta(days=3)).isoformat()
    sid = "/v1/studies/{study}"
    sub = sid + "/subjects/{subject}"
    return [
        Endpoint("GET", sid, S, ROLES_ANY, "any"),
        # Everyone signed in may list studies: the list holds only theirs.
        Endpoint("GET", "/v1/studies", "/v1/studies", ROLES_ANY, "any"),
        Endpoint("GET", sid + "/queries", S + "/queries", READERS, "any",
                 params={"status": "open"}),
        Endpoint("GET", sid + "/signatures", S + "/signatures", READERS, "any"),
        Endpoint("GET", sid + "/ledger/keys", S + "/ledger/keys", READERS, "any"),
        # An admin of this study may set it up (409 here: it is registered already).
        Endpoint("POST", "/v1/studies", "/v1/studies", {"admin"}, "study",
                 lambda _: nct04397107.definition()),
        Endpoint("GET", sub, SUBJ, READERS, "subject"),
        Endpoint("GET", sub + "/history", SUBJ + "/history", READERS, "subject"),
        Endpoint("POST", sid + "/subjects", S + "/subjects", ENTER, "subject",
                 lambda _: {"subject": new_id(), "site": "JLU1", "date_of_birth": "2010-05-01",
                            "sex": "F", "disease": "SLE", "consent_date": "2021-01-10",
                            "screening": nct04397107.ELIGIBLE_SCREENING_ANSWERS, "arm": "STD",
                            "enrolled_on": "2021-01-10"}),
        Endpoint("GET", sid + "/subjects", S + "/subjects", READERS, "any"),
        Endpoint("POST", sub + "/labs", SUBJ + "/labs", ENTER, "subject", lab),
        Endpoint("POST", sub + "/vitals", SUBJ + "/vitals", ENTER, "subject",
                 lambda _: {"observed_at": observed,
                            "measurements": {"WEIGHT": {"value": 37.0, "unit": "kg"}}}),
        Endpoint("POST", sub + "/doses", SUBJ + "/doses", ENTER, "subject",
                 lambda _: {"observed_at": observed, "drug": "IL2", "dose": 600000.0,
                            "unit": "IU", "route": "SC"}),
        Endpoint("POST", sub + "/therapies", SUBJ + "/therapies", ENTER, "subject",
                 lambda _: {"observed_at": observed, "drug": "prednisone",
                            "category": "glucocorticoid", "dose_mg_per_day": 10.0,
                            "route": "PO"}),
        Endpoint("POST", sub + "/assessments", SUBJ + "/assessments", ENTER, "subject",
                 lambda _: {"observed_at": observed, "instrument": "SLEDAI",
                            "items": {"arthritis": True}}),
        Endpoint("POST", sub + "/adverse-events", SUBJ + "/adverse-events", ENTER, "subject",
                 lambda _: {"observed_at": observed, "term": "Fever", "category": "fever",
                            "grade": 1, "serious": False, "relationship": "possible",
                            "action_taken": "none", "outcome": "recovering"}),
        Endpoint("POST", sub + "/therapies/{record}/changes", SUBJ + "/therapies/CM0/changes",
                 ENTER, "subject",
                 lambda _: {"observed_at": observed, "dose_mg_per_day": 7.5}),
        Endpoint("POST", sub + "/adverse-events/{record}/updates",
                 SUBJ + "/adverse-events/AE0/updates", ENTER, "subject",
                 lambda _: {"observed_at": observed, "changes": {"grade": 2}}),
        Endpoint("PATCH", sub + "/{kind}/{record}", SUBJ + "/labs/LB0", ENTER, "subject",
                 lambda p: {"field": "reference_high", "value": 1.0 + len(p.username) / 100,
                            "reason": REASON}),
        Endpoint("PATCH", sub + "/{kind}/{record}", SUBJ + "/adverse-events/AE0",
                 ENTER | {"data_manager"}, "subject",
                 lambda p: {"field": "meddra_pt", "value": f"Pyrexia {p.username}",
                            "reason": {"code": "other", "text": "MedDRA coding"}}),
        Endpoint("POST", sub + "/queries", SUBJ + "/queries", {"monitor", "data_manager"},
                 "subject",
                 lambda _: {"query_id": new_id(), "record_id": "LB0", "field": "value",
                            "text": "please confirm"}),
        Endpoint("POST", sub + "/queries/{query}/answer", SUBJ + "/queries/Q0/answer", ENTER,
                 "subject", lambda _: {"text": "confirmed"}),
        Endpoint("POST", sub + "/queries/{query}/close", SUBJ + "/queries/Q0/close",
                 {"monitor", "data_manager"}, "subject", lambda _: {"text": "done"}),
        Endpoint("POST", sub + "/deviations", SUBJ + "/deviations",
                 {"investigator", "monitor", "data_manager"}, "subject",
                 lambda _: {"deviation_id": new_id(), "category": "procedure",
                            "severity": "minor", "occurred_on": "2021-01-11",
                            "description": "urine sample not sent to the lab"}),
        Endpoint("GET", sid + "/deviations", S + "/deviations", READERS, "any"),
        Endpoint("POST", sub + "/sdv", SUBJ + "/sdv", {"monitor"}, "subject",
                 lambda _: {"record_id": "VS0"}),
        Endpoint("POST", sub + "/signatures", SUBJ + "/signatures", {"investigator"}, "subject",
                 lambda p: {"meaning": "approval", "username": p.username,
                            "password": f"{p.username}-password"}),
        Endpoint("POST", sub + "/lock", SUBJ + "/lock", {"data_manager"}, "subject",
                 lambda _: {"reason": {"code": "database_lock", "text": "lock"}}),
        Endpoint("POST", sub + "/unlock", SUBJ + "/unlock", {"data_manager"}, "subject",
                 lambda _: {"reason": {"code": "new_information", "text": "unlock"}}),
        Endpoint("POST", sub + "/redactions", SUBJ + "/redactions", {"data_manager"},
                 "subject",
                 lambda _: {"request_id": new_id(), "record_id": "AE0", "field": "term",
                            "reason": {"code": "entered_in_error", "text": "a name"}}),
        # Requested in set-up by the coordinator of the envelope: any admin is another person.
        Endpoint("POST", sub + "/redactions/{request_id}/approve",
                 SUBJ + "/redactions/RD0/approve", {"admin"}, "subject"),
        Endpoint("DELETE", sub + "/{kind}/{record}", SUBJ + "/labs/LB9", ENTER, "subject",
                 lambda _: {"reason": {"code": "duplicate_entry", "text": "entered twice"}}),
        Endpoint("POST", sub + "/therapies/{record}/stop", SUBJ + "/therapies/CM9/stop",
                 ENTER, "subject", lambda _: {"observed_at": observed}),
        Endpoint("POST", sub + "/adverse-events/{record}/resolution",
                 SUBJ + "/adverse-events/AE9/resolution", ENTER, "subject",
                 lambda _: {"observed_at": observed, "outcome": "recovered"}),
        Endpoint("POST", sub + "/completion", f"{S}/subjects/002/completion", ENTER,
                 "subject", lambda _: {"observed_at": observed}),
        Endpoint("POST", sub + "/withdrawal", f"{S}/subjects/003/withdrawal", ENTER,
                 "subject", lambda _: {"observed_at": observed, "reason": "moved away"}),
        Endpoint("GET", sid + "/audit", S + "/audit", READERS, "any"),
        Endpoint("GET", sid + "/outcomes", S + "/outcomes", READERS, "study"),
        Endpoint("GET", sid + "/outcomes/cell", S + "/outcomes/cell", READERS, "study",
                 params={"id": "dose/glucocorticoid/BASELINE/IL2"}),
        Endpoint("GET", sid + "/diff", S + "/diff", READERS, "study",
                 params={"from": T0.isoformat(), "to": (T0 + timedelta(days=30)).isoformat()}),
        Endpoint("POST", sid + "/audit/reviews", S + "/audit/reviews", {"monitor"}, "study",
                 lambda _: {"through_position": 1 + len(reviews_done), "comment": "ok"}),
        # NCT04397107 is open-label: a role that may unblind is told so (409), others 403.
        Endpoint("POST", sid + "/unblindings", S + "/unblindings",
                 {"investigator", "data_manager"}, "subject",
                 lambda _: {"subject": "001", "reason": {"code": "other", "text": "emergency"}}),
        Endpoint("POST", sid + "/lock", S + "/lock", {"data_manager"}, "study",
                 lambda _: {"reason": {"code": "database_lock", "text": "lock"}}),
        Endpoint("POST", sid + "/unlock", S + "/unlock", {"data_manager"}, "study",
                 lambda _: {"reason": {"code": "new_information", "text": "unlock"}}),
        Endpoint("GET", sid + "/exports/{export_format}", S + "/exports/odm-snapshot",
                 {"data_manager", "regulator"}, "study"),
        Endpoint("GET", sid + "/ledger/checkpoint", S + "/ledger/checkpoint",
                 READERS, "any"),
        Endpoint("GET", sid + "/ledger/proofs/inclusion", S + "/ledger/proofs/inclusion",
                 READERS, "any", params={"event": 1}),
        Endpoint("GET", sid + "/ledger/proofs/consistency", S + "/ledger/proofs/consistency",
                 READERS, "any", params={"from": 1}),
        Endpoint("POST", "/v1/users", "/v1/users", {"admin"}, "subject",
                 lambda _: {"username": f"new-{new_id()}", "full_name": "New Person",
                            "password": "a-long-password",
                            "roles": [{"role": "monitor", "study": STUDY, "site": "JLU1"}]}),
        Endpoint("GET", "/v1/users", "/v1/users", {"admin"}, "any"),
        Endpoint("POST", "/v1/users/{username}/roles", "/v1/users/{target}/roles", {"admin"},
                 "subject", lambda _: {"role": "monitor", "study": STUDY, "site": "JLU1"}),
        Endpoint("DELETE", "/v1/users/{username}/roles/{role}/{study}/{site}",
                 f"/v1/users/{{target}}/roles/coordinator/{STUDY}/JLU1", {"admin"}, "subject"),
        # What touches a whole account needs every role of the person (a coordinator at
        # JLU1) within the admin's sites.
        Endpoint("POST", "/v1/users/{username}/identity", "/v1/users/{target}/identity",
                 {"admin"}, "subject", lambda _: {"method": "passport"}),
        Endpoint("POST", "/v1/users/{username}/unlock", "/v1/users/{target}/unlock",
                 {"admin"}, "subject"),
        Endpoint("POST", "/v1/users/{username}/deactivate", "/v1/users/{target}/deactivate",
                 {"admin"}, "subject"),
        Endpoint("DELETE", "/v1/users/{username}/totp", "/v1/users/{target}/totp",
                 {"admin"}, "subject"),
        # An API client serves the whole deployment: only an admin of every study and site,
        # whom this table has not (every admin here holds a grant at one study).
        Endpoint("POST", "/v1/clients", "/v1/clients", set(), "any",
                 lambda _: {"client_id": f"app-{new_id()}", "name": "An app"}),
    ]


ROLES_ANY = set(ROLES)
reviews_done: list[int] = []
UNGUARDED = {("POST", "/v1/auth/token"), ("DELETE", "/v1/auth/token"),
             ("POST", "/v1/auth/password"),  # every signed-in person may use them
             ("POST", "/v1/auth/totp"), ("POST", "/v1/auth/totp/confirm")}  # by password


@pytest.fixture
def people(runtime: Runtime) -> dict[tuple[str, str], Person]:
    clock = simulated_clock()
    app = runtime.study(STUDY, clock=clock)
    definition = nct04397107.definition()
    definition["sites"].append({"code": "JLU2", "name": "A second site"})
    app.register_study(definition, envelope())
    for code in ("001", "002", "003"):
        app.enroll_subject(code, "JLU1", T0.date().replace(year=2010), "F", "SLE", T0.date(),
                           nct04397107.ELIGIBLE_SCREENING_ANSWERS, "IL2", T0.date(),
                           envelope())
    clock.set(T0 + timedelta(days=1))
    at = T0 + timedelta(hours=1)

    def setup(s: Any, t: Any) -> None:
        s.record_vital_signs("VS0", at, {"HEIGHT": (142.0, "cm"), "WEIGHT": (36.0, "kg")},
                             envelope(), t)
        for rid in ("LB0", "LB9"):
            s.record_lab_result(rid, at, "C3", 0.8, "g/L", envelope(), t)
        for rid in ("CM0", "CM9"):
            s.start_therapy(rid, at, "prednisone", "glucocorticoid", 10.0, "PO", envelope(), t)
        for rid in ("AE0", "AE9"):
            s.report_adverse_event(rid, at, {
                "term": "Fever", "category": "fever", "grade": 1, "serious": False,
                "relationship": "possible", "action_taken": "none",
                "outcome": "recovering"}, envelope(), t)
        s.open_query("Q0", "LB0", "value", "please confirm", envelope(), t)
        s.request_redaction("RD0", "AE9", "term", {"adverse-events": ("term",)},
                            envelope(reason=Reason("entered_in_error", "a name")), t)

    app.on_subject("001", setup)
    app.close()
    runtime.seal(STUDY, force_checkpoint=True)
    result = {}
    for role, site in itertools.product(ROLES, SITES):
        username = f"{role}-{site}".replace("*", "all")
        password = add_person(runtime, username, role, site=site)
        client = TestClient(create_app(runtime))
        token = client.post("/v1/auth/token", json={"username": username, "password": password})
        client.headers["Authorization"] = f"Bearer {token.json()['access_token']}"
        result[(role, site)] = Person(username, role, site, client)
    return result


@pytest.mark.requirement("R19")
@pytest.mark.slow(seconds=120)
def test_every_role_at_every_site_on_every_endpoint(runtime: Runtime,
                                                    people: dict[tuple[str, str], Person]
                                                    ) -> None:
    table = endpoints(runtime)
    routes = {(method.upper(), path) for path, item in create_app(runtime).openapi()["paths"]
              .items() if path.startswith("/v1") for method in item}
    assert routes - UNGUARDED == {(e.method, e.route) for e in table}, "a route is not in the table"
    study = runtime.study(STUDY)
    directory = runtime.directory()
    mismatches = []
    for endpoint, person in itertools.product(table, people.values()):
        path = endpoint.path.replace("{target}", target(runtime)) if "{target}" in \
            endpoint.path else endpoint.path
        params = dict(endpoint.params or {})
        if endpoint.route.endswith("/audit") and person.site != "*":
            params["site"] = person.site  # site-scoped readers name their site
        before = (study.recorder.max_notification_id(), directory.recorder.max_notification_id())
        response = person.client.request(
            endpoint.method, path, params=params,
            json=endpoint.body(person) if endpoint.body else None)
        if endpoint.route.endswith("/reviews") and response.status_code == 201:
            reviews_done.append(1)
        allowed = endpoint.allows(person)
        if allowed == (response.status_code in (401, 403)) or response.status_code >= 500:
            mismatches.append(f"{endpoint.method} {path} as {person.username}: "
                              f"{response.status_code} {response.text[:200]}")
        if not allowed:
            after = (study.recorder.max_notification_id(),
                     directory.recorder.max_notification_id())
            assert after == before, f"{endpoint.method} {path} as {person.username} stored"
    assert not mismatches, "\n".join(mismatches)
