"""The operations' view in one process (issue 16, item 7): ``/metrics`` shows sealing and
projection lag, checkpoint age and cosignatures, failed sign-ins and lock-outs, pools and
process figures; ``/readyz`` says which of the sealer and the projector has stalled while
events wait, and is ready again once they have caught up. The sealer's rounds are run here
by the test, on a real PostgreSQL."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from prometheus_client.parser import text_string_to_metric_families

from api.app import create_app
from application.ledger_watch import SealerWatch, start_watch
from application.runtime import Runtime
from application.sealing import SealingRounds
from domain.studies import nct04397107
from domain.user import MAX_FAILED_LOGINS
from infra.sealer_status import STATUS_FILE
from infra.settings import Settings
from tests.support import add_person, envelope, study_with_a_child

STUDY = nct04397107.STUDY_ID
# How long the sealer may make no progress while events wait, here: short, so that the test
# need not wait a minute for a stall.
STALL_AFTER = 1.0


@pytest.fixture
def watched(db_url: str, tmp_path: Path) -> Iterator[tuple[Runtime, SealingRounds, TestClient]]:
    """A deployment with NCT04397107 (child 001 and one lab), an app watching a sealer's
    status file, and that sealer's rounds (run by the test)."""
    runtime = Runtime(Settings(database_url=db_url, home=tmp_path / "home",
                               stall_after=STALL_AFTER), db_url)
    status = tmp_path / STATUS_FILE
    try:
        study_with_a_child(runtime, lab=True)
        start_watch(status)
        rounds = SealingRounds(runtime, watch=SealerWatch(runtime, status))
        yield runtime, rounds, TestClient(create_app(runtime, status_path=status))
    finally:
        runtime.close()


def _samples(client: TestClient) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    answer = client.get("/metrics")
    assert answer.status_code == 200, answer.text
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(answer.text) for s in family.samples}


def _value(samples: dict[tuple[str, tuple[tuple[str, str], ...]], float], name: str,
           **labels: str) -> float:
    return samples[(name, tuple(sorted(labels.items())))]


def test_metrics_show_the_ledger_lags_until_a_round_seals_and_projects(
        watched: tuple[Runtime, SealingRounds, TestClient]) -> None:
    _, rounds, client = watched
    before = _samples(client)
    # Registered, enrolled, a key registered and a lab: none sealed or projected yet.
    assert _value(before, "trialledger_sealing_lag_events", study=STUDY) >= 4
    assert _value(before, "trialledger_projection_lag_events", study=STUDY) >= 4
    assert _value(before, "trialledger_sealing_lag_seconds", study=STUDY) > 0
    assert ("trialledger_checkpoint_age_seconds", (("study", STUDY),)) not in before

    rounds.seal_all()
    after = _samples(client)
    assert _value(after, "trialledger_sealing_lag_events", study=STUDY) == 0
    assert _value(after, "trialledger_sealing_lag_seconds", study=STUDY) == 0
    assert _value(after, "trialledger_projection_lag_events", study=STUDY) == 0
    assert 0 <= _value(after, "trialledger_checkpoint_age_seconds", study=STUDY) < 60
    assert _value(after, "trialledger_checkpoint_cosignatures", study=STUDY) == 0  # no witness
    assert _value(after, "trialledger_sealer_heartbeat_age_seconds") < 60
    assert _value(after, "trialledger_stalled", study=STUDY, stage="sealing") == 0


def test_readiness_names_the_stalled_sealer_and_projector_and_recovers(
        watched: tuple[Runtime, SealingRounds, TestClient]) -> None:
    runtime, rounds, client = watched
    rounds.seal_all()
    assert client.get("/readyz").status_code == 200
    # Idle past the bound with nothing waiting: still ready.
    time.sleep(STALL_AFTER + 0.5)
    assert client.get("/readyz").status_code == 200

    app = runtime.study(STUDY)
    app.on_subject("001", lambda s, t: s.record_lab_result(
        "LB2", t, "C4", 0.2, "g/L", envelope(), t))
    time.sleep(STALL_AFTER + 0.5)  # no round meanwhile: the sealer has stalled
    answer = client.get("/readyz")
    assert answer.status_code == 503
    assert answer.headers["content-type"] == "application/problem+json"
    problem = answer.json()
    assert problem["stalled"] == ["projector", "sealer"]
    assert f"study {STUDY}" in problem["detail"]
    assert _value(_samples(client), "trialledger_stalled", study=STUDY, stage="sealing") == 1

    rounds.seal_all()
    assert client.get("/readyz").status_code == 200


def test_failed_sign_ins_lockouts_pools_and_processes_are_counted(
        watched: tuple[Runtime, SealingRounds, TestClient]) -> None:
    runtime, _, client = watched
    add_person(runtime, "lwei", "coordinator", site="JLU1")
    for _ in range(MAX_FAILED_LOGINS + 1):
        refused = client.post("/v1/auth/token", json={"username": "lwei", "password": "wrong"})
        assert refused.status_code == 401
    client.post("/v1/auth/token", json={"username": "nobody", "password": "wrong"})
    samples = _samples(client)
    assert _value(samples, "trialledger_sign_in_failures_total") == MAX_FAILED_LOGINS + 2
    assert _value(samples, "trialledger_lockouts_total") == 1
    assert _value(samples, "trialledger_pool_connections", role="api", pool="api") >= 1
    assert _value(samples, "trialledger_pool_waiting", role="api", pool="api") == 0
    assert _value(samples, "trialledger_process_resident_memory_bytes", role="api") > 0
