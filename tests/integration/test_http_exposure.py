"""Security headers on every answer, and /openapi.json and /metrics only as the settings
allow: open on a developer's machine and in the demo, closed in production (issue 14, A-5)."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator

import pytest
from fastapi.testclient import TestClient

from api.app import create_app
from application.runtime import Runtime
from infra.settings import Settings
from tests.support import api_client, study_with_a_child

STUDY = "NCT04397107"
HEADERS = {"x-content-type-options": "nosniff", "x-frame-options": "DENY",
           "referrer-policy": "no-referrer", "cache-control": "no-store"}


def _secured(response: object) -> None:
    headers = response.headers  # type: ignore[attr-defined]
    for name, value in HEADERS.items():
        assert headers.get(name) == value, (name, headers)
    policy = headers["content-security-policy"]
    assert "default-src 'none'" in policy and "frame-ancestors 'none'" in policy
    assert "server" not in headers


def test_every_answer_carries_the_security_headers(runtime: Runtime) -> None:
    study_with_a_child(runtime)
    client = api_client(runtime, "monitor")
    answers = [
        client.get(f"/v1/studies/{STUDY}/subjects/001"),  # patient data
        client.get("/healthz"),
        client.get("/v1/nowhere"),  # 404
        client.get(f"/v1/studies/{STUDY}/subjects/001", headers={"Authorization": "x"}),  # 401
        client.get(f"/v1/studies/{STUDY}/audit", params={"site": "\x01"}),  # 422 (URL)
        client.post(f"/v1/studies/{STUDY}/subjects/001/labs", content=b"x" * 300_000,
                    headers={"Content-Type": "application/json"}),  # 413, refused unread
    ]
    assert [a.status_code for a in answers] == [200, 200, 404, 401, 422, 413]
    for answer in answers:
        _secured(answer)


def test_docs_load_swagger_ui_from_this_server_alone(runtime: Runtime) -> None:
    client = TestClient(create_app(runtime))
    docs = client.get("/docs")
    assert docs.status_code == 200
    assert "/ui/static/vendor/swagger-ui-bundle.js" in docs.text
    assert "http" not in docs.text  # no asset from another host
    assert "<script>" not in docs.text  # no inline script: the policy refuses them
    policy = docs.headers["content-security-policy"]
    assert "script-src 'self';" in policy and "unsafe" not in policy
    assert "frame-ancestors 'none'" in policy
    assert client.get("/ui/static/vendor/swagger-ui-bundle.js").status_code == 200
    assert client.get("/redoc").status_code == 404


def _client(runtime: Runtime, settings: Settings, **changes: object) -> Iterator[TestClient]:
    other = Runtime(dataclasses.replace(settings, **changes), runtime.url)
    try:
        yield TestClient(create_app(other))
    finally:
        other.close()


@pytest.fixture
def production(runtime: Runtime, settings: Settings) -> Iterator[TestClient]:
    yield from _client(runtime, settings, environment="production")


def test_development_settings_keep_the_schema_and_metrics_open(runtime: Runtime) -> None:
    client = TestClient(create_app(runtime))
    assert client.get("/openapi.json").status_code == 200
    assert client.get("/metrics").status_code == 200


def test_production_settings_close_the_schema_and_metrics(production: TestClient) -> None:
    for path in ("/openapi.json", "/docs", "/metrics"):
        closed = production.get(path)
        assert closed.status_code == 404, path
        _secured(closed)
    assert production.get("/healthz").status_code == 200


def test_production_may_expose_the_schema_on_purpose(runtime: Runtime,
                                                     settings: Settings) -> None:
    for client in _client(runtime, settings, environment="production", expose_docs=True):
        assert client.get("/openapi.json").status_code == 200


def test_metrics_with_a_token_answer_only_its_bearer(runtime: Runtime,
                                                     settings: Settings) -> None:
    for client in _client(runtime, settings, metrics_token="s3cret-metrics-token"):
        assert client.get("/metrics").status_code == 404
        assert client.get("/metrics", headers={"Authorization": "Bearer wrong"}
                          ).status_code == 404
        scraped = client.get("/metrics",
                             headers={"Authorization": "Bearer s3cret-metrics-token"})
        assert scraped.status_code == 200 and "trialledger_http_requests_total" in scraped.text


def test_the_environment_names_production(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TRIALLEDGER_ENV", "production")
    assert Settings.from_env("postgresql://x").production
    monkeypatch.setenv("TRIALLEDGER_ENV", "staging")
    with pytest.raises(ValueError, match="TRIALLEDGER_ENV"):
        Settings.from_env("postgresql://x")


SECURED = [b"x-content-type-options", b"content-security-policy", b"x-frame-options",
           b"referrer-policy", b"cache-control"]


def test_every_kind_of_answer_has_its_headers_in_this_order(runtime: Runtime,
                                                            settings: Settings) -> None:
    """The whole header list, in order, of the answers each outer check and a route give: the
    route's or the check's own, then X-Request-ID, then the security headers (a route's own
    ones replaced); the same whether they came from one middleware each or from one."""
    study_with_a_child(runtime)
    client = api_client(runtime, "coordinator", site="JLU1")
    lab = {"observed_at": "2021-01-11T09:00:00+00:00", "code": "C3", "value": 0.8,
           "unit": "g/L"}
    path = f"/v1/studies/{STUDY}/subjects/001/labs"
    keyed = {"Idempotency-Key": "k-1", "X-Request-ID": "rid-1"}
    answers = {
        "first entry": client.post(path, json=lab, headers=keyed),
        "replayed": client.post(path, json=lab, headers={**keyed, "X-Request-ID": "rid-2"}),
        "read": client.get(f"/v1/studies/{STUDY}/subjects/001",
                           headers={"X-Request-ID": "rid-3"}),
        "url": client.get(f"/v1/studies/{STUDY}/audit", params={"site": "\x01"},
                          headers={"X-Request-ID": "rid-4"}),
        "too large": client.post(path, content=b"x" * 300_000, headers={
            "Content-Type": "application/json", "X-Request-ID": "rid-5"}),
        "unmatched": client.get("/v1/nowhere", headers={"X-Request-ID": "rid-6"}),
        "page": client.get("/ui/sign-in", headers={"X-Request-ID": "rid-7"}),
    }
    for closed in _client(runtime, settings, environment="production"):
        answers["hidden"] = closed.get("/openapi.json", headers={"X-Request-ID": "rid-8"})
    statuses = {name: answer.status_code for name, answer in answers.items()}
    assert statuses == {"first entry": 201, "replayed": 201, "read": 200, "url": 422,
                        "too large": 413, "unmatched": 404, "page": 200, "hidden": 404}
    names = {name: [k for k, _ in answer.headers.raw] for name, answer in answers.items()}
    assert names == {
        "first entry": [b"etag", b"content-length", b"content-type", b"x-request-id",
                        *SECURED],
        "replayed": [b"content-type", b"content-length", b"idempotent-replayed", b"etag",
                     b"x-request-id", *SECURED],
        "read": [b"etag", b"content-length", b"content-type", b"x-request-id", *SECURED],
        "url": [b"content-type", b"content-length", b"x-request-id", *SECURED],
        "too large": [b"content-type", b"content-length", b"x-request-id", *SECURED],
        "unmatched": [b"content-length", b"content-type", b"x-request-id", *SECURED],
        "page": [b"content-length", b"content-type", b"set-cookie", b"x-request-id",
                 *SECURED],
        "hidden": [b"content-type", b"content-length", b"x-request-id", *SECURED],
    }
    for n, answer in enumerate(answers.values(), 1):
        assert answer.headers["x-request-id"] == f"rid-{n}"
    assert "script-src 'self'" in answers["page"].headers["content-security-policy"]
    assert "script-src" not in answers["read"].headers["content-security-policy"]
