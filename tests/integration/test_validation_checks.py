"""Installation checks of `trialledger validate`, one by one, on the cases a whole run on a
fresh database never meets: a role granted more than `db grant` gives, a signing key file
others may read, an installed file that differs from its wheel's RECORD."""

from __future__ import annotations

import base64
import hashlib
import uuid
from collections.abc import Iterator
from dataclasses import replace
from importlib.metadata import PathDistribution
from pathlib import Path

import psycopg
import pytest
from psycopg.sql import SQL, Identifier

from application.runtime import Runtime
from application.validation.installation import key_storage, record_mismatches, roles_and_grants
from application.validation.model import CheckFailed, Context
from application.validation.operational import DEFAULT_ODM_XSD
from application.validation.run import CannotValidate, run_validation
from infra.catalog import EVENTS_TABLE
from infra.postgres import schema_for_study
from infra.roles import create_login_role, grant_app_role, grant_directory
from infra.settings import Settings
from tests.support import study_with_a_child

STUDY = "NCT04397107"


def context(runtime: Runtime, tmp_path: Path) -> Context:
    return Context(runtime, "VALIDATION-TEST", tmp_path, DEFAULT_ODM_XSD)


@pytest.fixture
def app_role(runtime: Runtime, db_url: str) -> Iterator[str]:
    """An application role set up as `trialledger db grant` does, on a study in use."""
    study_with_a_child(runtime)
    runtime.history_view(STUDY).datastore.close()
    runtime.directory()
    runtime.pool()
    role = f"tl_app_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(db_url, autocommit=True) as conn:
        create_login_role(conn, role, None)
        grant_directory(conn, role)
        grant_app_role(conn, role, schema_for_study(STUDY))
    try:
        yield role
    finally:
        with psycopg.connect(db_url, autocommit=True) as conn:
            conn.execute(SQL("DROP OWNED BY {}").format(Identifier(role)))
            conn.execute(SQL("DROP ROLE {}").format(Identifier(role)))


@pytest.mark.requirement("R6", "R19")
def test_roles_as_db_grant_sets_them_pass_and_a_delete_grant_fails(
        runtime: Runtime, db_url: str, app_role: str, tmp_path: Path) -> None:
    ctx = context(runtime, tmp_path)
    said = roles_and_grants(ctx)
    assert f"application role(s) {app_role} read and append only" in said
    with psycopg.connect(db_url, autocommit=True) as conn:
        conn.execute(SQL("GRANT DELETE ON {}.{} TO {}").format(
            Identifier(schema_for_study(STUDY)), Identifier(EVENTS_TABLE), Identifier(app_role)))
    with pytest.raises(CheckFailed, match=f"{app_role} holds DELETE on "
                                          f"{schema_for_study(STUDY)}.{EVENTS_TABLE}"):
        roles_and_grants(ctx)


@pytest.mark.requirement("R6")
def test_a_role_that_acts_as_the_owner_fails(runtime: Runtime, db_url: str, app_role: str,
                                             tmp_path: Path) -> None:
    with psycopg.connect(db_url, autocommit=True) as conn:
        owner = conn.execute("SELECT current_user").fetchone()
        assert owner is not None
        conn.execute(SQL("GRANT {} TO {}").format(Identifier(owner[0]), Identifier(app_role)))
    with pytest.raises(CheckFailed, match=f"{app_role} acts as the owner"):
        roles_and_grants(context(runtime, tmp_path))


@pytest.mark.requirement("R9", "R21")
def test_a_signing_key_file_others_may_read_fails(runtime: Runtime, settings: Settings,
                                                  tmp_path: Path) -> None:
    key = tmp_path / "signing.key"
    key.write_bytes(b"not read by the check")
    key.chmod(0o600)
    filed = Runtime(replace(settings, signing_key_file=key), runtime.url)
    assert "mode 0600 (owner only)" in key_storage(context(filed, tmp_path))
    key.chmod(0o640)
    with pytest.raises(CheckFailed, match="mode 0640: others may read it"):
        key_storage(context(filed, tmp_path))


def _installed_wheel(root: Path) -> PathDistribution:
    """A distribution installed in ``root`` as a wheel installs it: its module, its
    METADATA, and a RECORD with each file's SHA-256."""
    (root / "demo_pkg").mkdir()
    module = root / "demo_pkg" / "__init__.py"
    module.write_text("ANSWER = 42\n")
    info = root / "demo_pkg-1.0.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: demo-pkg\nVersion: 1.0\n")
    digest = base64.urlsafe_b64encode(hashlib.sha256(module.read_bytes()).digest())
    (info / "RECORD").write_text(
        f"demo_pkg/__init__.py,sha256={digest.rstrip(b'=').decode()},12\n"
        "demo_pkg-1.0.dist-info/METADATA,,\ndemo_pkg-1.0.dist-info/RECORD,,\n")
    return PathDistribution(info)


@pytest.mark.requirement("R23")
def test_an_installed_file_changed_after_installation_is_named(tmp_path: Path) -> None:
    dist = _installed_wheel(tmp_path)
    assert record_mismatches(dist) == (1, [])
    (tmp_path / "demo_pkg" / "__init__.py").write_text("ANSWER = 43\n")
    assert record_mismatches(dist) == (
        1, ["demo-pkg: demo_pkg/__init__.py differs from its RECORD"])
    (tmp_path / "demo_pkg" / "__init__.py").unlink()
    assert record_mismatches(dist)[1] == ["demo-pkg: demo_pkg/__init__.py is missing"]


@pytest.mark.requirement("R23")
def test_a_provisioned_application_role_is_told_to_run_it_as_the_owner(
        settings: Settings, db_url: str, tmp_path: Path) -> None:
    provisioned = Runtime(replace(settings, provisioned=True), db_url)
    with pytest.raises(CannotValidate, match="run it as the database owner"):
        run_validation(provisioned, tmp_path, DEFAULT_ODM_XSD)
    assert not any(tmp_path.iterdir())
