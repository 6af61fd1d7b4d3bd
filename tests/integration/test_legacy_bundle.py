"""A bundle exported by an earlier version (main at 69e9d0d, before explicit stored names)
still verifies offline and loads with today's code.

The fixture is the demo study's bundle (``trialledger demo --no-serve`` then ``export --format
bundle``) as that version wrote it, xz-compressed, with the public key it was signed with.
"""

from __future__ import annotations

import base64
import csv
import io
import json
import lzma
import zipfile
from collections import Counter
from pathlib import Path

import psycopg
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from eventsourcing.persistence import StoredEvent, Transcoder

from application.runtime import Runtime
from domain.service import StudyApplication
from domain.subject import Subject
from infra.mapper import SigningMapper
from infra.postgres import schema_for_study
from infra.signing import EventSigner
from projections.oracle import fold_subjects
from tests.support import study_with_a_corrected_lab
from trialledger_verifier.bundle import load_public_keys, verify_bundle

DATA = Path(__file__).resolve().parent.parent / "data"
BUNDLE = DATA / "nct04397107-demo-bundle-69e9d0d.zip.xz"
KEYS = DATA / "nct04397107-demo-bundle-69e9d0d.keys.pem"
STUDY = "NCT04397107"


@pytest.fixture(scope="module")
def bundle(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("legacy") / "bundle.zip"
    path.write_bytes(lzma.decompress(BUNDLE.read_bytes()))
    return path


@pytest.mark.requirement("R17")
def test_the_old_bundle_verifies_offline(bundle: Path) -> None:
    report = verify_bundle(bundle, load_public_keys(KEYS.read_text()))
    assert report.study == STUDY
    assert report.events == report.latest_size == 2841


def test_the_old_log_loads_into_todays_domain(bundle: Path) -> None:
    with zipfile.ZipFile(bundle) as z:
        events = [json.loads(line) for line in io.TextIOWrapper(z.open("events.jsonl"))]
        dm = list(csv.DictReader(io.TextIOWrapper(z.open("csv/DM.csv"), encoding="utf-8")))
        lb = list(csv.DictReader(io.TextIOWrapper(z.open("csv/LB.csv"), encoding="utf-8")))
    topics = Counter(e["topic"] for e in events)
    assert all(t.startswith("domain.") for t in topics)  # the fixture is what it claims

    # Today's application, in memory, with the signing mapper (decoding checks no signature).
    signer = EventSigner(STUDY, Ed25519PrivateKey.generate(), "test")

    def mapper(transcoder: Transcoder) -> SigningMapper:
        return SigningMapper(transcoder, signer)

    app = StudyApplication(STUDY, mapper_factory=mapper)
    for e in events:
        app.recorder.insert_events([StoredEvent(
            originator_id=e["originator_id"], originator_version=e["version"],
            topic=e["topic"], state=base64.b64decode(e["state"]))])

    decoded = Counter(type(app.mapper.to_domain_event(n)).TOPIC
                      for n in app.recorder.select_notifications(1, 10_000))
    assert sum(decoded.values()) == len(events)
    assert decoded["Subject.RecordCorrected.v1"] == topics["domain.subject:Subject.RecordCorrected"]

    subjects = {s.subject_code: s for s in fold_subjects(app).values()}
    assert sorted(subjects) == sorted(row["SUBJID"] for row in dm)
    for row in dm:
        subject = subjects[row["SUBJID"]]
        assert (subject.site, subject.arm, subject.status) == (
            row["SITEID"], row["ARMCD"], row["STATUS"])
    labs = Counter(code for code, s in subjects.items() for r in s.records.values()
                   if r.kind == "labs" and not r.removed)
    assert labs == Counter(row["USUBJID"].removeprefix(f"{STUDY}-") for row in lb)
    assert isinstance(app.repository.get(next(iter(fold_subjects(app)))), Subject)


def test_a_new_store_holds_only_explicit_names(runtime: Runtime) -> None:
    study_with_a_corrected_lab(runtime)
    runtime.seal(STUDY)
    with psycopg.connect(runtime.url) as conn:
        topics = {row[0] for row in conn.execute(
            f"SELECT DISTINCT topic FROM {schema_for_study(STUDY)}.trialledger_events")}
    assert {"Subject.RecordCorrected.v1", "Keyring.KeyRegistered.v1"} <= topics
    assert not [t for t in topics if ":" in t or t.startswith("domain.")]
