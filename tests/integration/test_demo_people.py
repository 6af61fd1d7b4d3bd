"""The demo's people: one per role, passwords written once to a 0600 file, never rotated."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from application.demo import (
    CREDENTIALS_FILE,
    CredentialsUnreadable,
    demo_people,
    ensure_demo_people,
)
from application.runtime import Runtime
from domain.directory import DirectoryApplication, SignInRefused
from domain.envelope import Envelope
from domain.studies import nct04397107
from infra.passwords import check_password
from infra.postgres import temporary_database
from infra.settings import Settings
from tests.support import envelope

USERNAMES = {p.username for p in demo_people(nct04397107.definition())}


@pytest.fixture
def other_runtime(server_url: str, tmp_path: Path) -> Iterator[Runtime]:
    """A second deployment, on a database of its own."""
    with temporary_database(server_url, "tl_test") as url:
        runtime = Runtime(Settings(database_url=url, home=tmp_path / "other"), url)
        try:
            yield runtime
        finally:
            runtime.close()


def _signs_in(directory: DirectoryApplication, username: str, password: str) -> bool:
    def as_self(_: object) -> Envelope:
        return envelope()

    try:
        directory.sign_in(username, password, "test-client", "session", check_password,
                          as_self)
    except SignInRefused:
        return False
    return True


def test_every_role_gets_a_person_whose_password_is_in_a_private_file(
        runtime: Runtime, settings: Settings) -> None:
    path = settings.home / CREDENTIALS_FILE
    report = ensure_demo_people(runtime.directory(), path)

    assert set(report.registered) == USERNAMES and not report.unknown
    assert path.stat().st_mode & 0o777 == 0o600
    people = json.loads(path.read_text())["people"]
    assert set(people) == USERNAMES
    roles = {(p["role"], p["site"]) for p in people.values()}
    assert roles == {("investigator", "JLU1"), ("coordinator", "JLU1"), ("monitor", "*"),
                     ("data_manager", "*"), ("regulator", "*"), ("admin", "*")}
    directory = runtime.directory()
    for username, person in people.items():
        user = directory.user(username)
        assert {(g.role, g.study, g.site) for g in user.grants} == {
            (person["role"], nct04397107.STUDY_ID, person["site"])}
        assert _signs_in(directory, username, person["password"])
    assert len({p["password"] for p in people.values()}) == len(people)


def test_a_rerun_changes_nothing_and_a_fresh_database_gets_the_same_passwords(
        runtime: Runtime, settings: Settings, other_runtime: Runtime) -> None:
    path = settings.home / CREDENTIALS_FILE
    ensure_demo_people(runtime.directory(), path)
    written = path.read_bytes()

    again = ensure_demo_people(runtime.directory(), path)
    assert not again.registered and set(again.already) == USERNAMES
    assert path.read_bytes() == written

    # Another database, the same home (e.g. the embedded one after `--database-url`): the
    # people are registered there with the passwords already handed out.
    elsewhere = ensure_demo_people(other_runtime.directory(), path)
    assert set(elsewhere.registered) == USERNAMES
    assert path.read_bytes() == written
    people = json.loads(written)["people"]
    assert _signs_in(other_runtime.directory(), "demo-monitor",
                     people["demo-monitor"]["password"])


def test_people_whose_passwords_this_home_lacks_are_named_not_reset(
        runtime: Runtime, settings: Settings, tmp_path: Path) -> None:
    first = settings.home / CREDENTIALS_FILE
    ensure_demo_people(runtime.directory(), first)
    password = json.loads(first.read_text())["people"]["demo-monitor"]["password"]

    elsewhere = tmp_path / "another-home" / CREDENTIALS_FILE
    report = ensure_demo_people(runtime.directory(), elsewhere)
    assert set(report.unknown) == USERNAMES and not report.registered
    assert not elsewhere.exists()
    assert _signs_in(runtime.directory(), "demo-monitor", password)


def test_a_file_that_is_not_a_credentials_file_is_left_alone(
        runtime: Runtime, settings: Settings) -> None:
    path = settings.home / CREDENTIALS_FILE
    path.parent.mkdir(parents=True)
    path.write_text("my notes\n")
    with pytest.raises(CredentialsUnreadable, match="not a demo credentials file"):
        ensure_demo_people(runtime.directory(), path)
    assert path.read_text() == "my notes\n"
    assert runtime.directory().users() == []
