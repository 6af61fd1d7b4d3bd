"""Installation qualification: what is installed and how it is set up — the packages and
their files, PostgreSQL's durability settings, who may change the stored events, where the
signing key is kept, and the clock."""

from __future__ import annotations

import base64
import hashlib
import re
import shutil
import stat
import subprocess
from datetime import UTC, datetime
from importlib.metadata import Distribution, PackageNotFoundError, distribution
from pathlib import Path
from typing import Any

from psycopg import sql

from application.validation.model import Check, CheckFailed, Context
from infra.catalog import CATALOG_SCHEMA, EVENTS_TABLE, list_studies
from infra.ledger import store
from infra.postgres import connect

# The settings a committed event's survival rests on, and the values that keep it.
DURABILITY = {"fsync": {"on"}, "full_page_writes": {"on"},
              "synchronous_commit": {"on", "remote_write", "remote_apply"}}
# Tables whose rows are records (append-only by triggers), per schema.
RECORD_TABLES = (store.LEAVES, store.NODES, store.CHECKPOINTS, store.COSIGNED)
# Privileges no role but the owner may hold on them (UPDATE is granted to the application
# only for the events table's LOCK TABLE, and the trigger refuses every UPDATE).
FORBIDDEN = frozenset({"DELETE", "TRUNCATE", "TRIGGER", "REFERENCES"})
CLOCKSOURCE = Path("/sys/devices/system/clocksource/clocksource0/current_clocksource")
# Largest difference between this host's clock and the database server's.
CLOCK_SKEW_SECONDS = 1.0
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")


def _installed(name: str) -> Distribution | None:
    try:
        return distribution(name)
    except PackageNotFoundError:
        return None


def _requirements(dist: Distribution) -> list[str]:
    """The names of what ``dist`` needs to run (its extras left out)."""
    names = []
    for requirement in dist.requires or []:
        if "extra ==" in requirement:
            continue
        match = _NAME.match(requirement)
        if match:
            names.append(match.group(0))
    return names


def record_mismatches(dist: Distribution) -> tuple[int, list[str]]:
    """(files checked, files whose SHA-256 differs from the RECORD or that are missing)."""
    checked, bad = 0, []
    for file in dist.files or []:
        if file.hash is None or file.hash.mode != "sha256":
            continue
        path = Path(str(file.locate()))
        checked += 1
        try:
            digest = hashlib.sha256(path.read_bytes()).digest()
        except OSError:
            bad.append(f"{dist.metadata['Name']}: {file} is missing")
            continue
        if base64.urlsafe_b64encode(digest).rstrip(b"=").decode() != file.hash.value:
            bad.append(f"{dist.metadata['Name']}: {file} differs from its RECORD")
    return checked, bad


def packages(ctx: Context) -> str:
    """TrialLedger and every package it runs on: version, and every installed file's SHA-256
    against the wheel's RECORD."""
    root = _installed("trialledger")
    if root is None:
        raise CheckFailed("the trialledger distribution is not installed")
    seen: dict[str, Distribution] = {}
    queue = [root]
    while queue:
        dist = queue.pop()
        name = str(dist.metadata["Name"]).lower()
        if name in seen:
            continue
        seen[name] = dist
        queue.extend(d for d in map(_installed, _requirements(dist)) if d is not None)
    rows, problems, files = [], [], 0
    for _, dist in sorted(seen.items()):
        checked, bad = record_mismatches(dist)
        files += checked
        problems += bad
        rows.append({"name": dist.metadata["Name"], "version": dist.version, "files": checked})
    ctx.facts["packages"] = rows
    if problems:
        raise CheckFailed(f"{len(problems)} installed file(s) differ from their RECORD: "
                          + "; ".join(problems[:5]))
    return (f"trialledger {root.version} and {len(rows) - 1} packages it runs on; "
            f"{files} installed files, each matching the SHA-256 in its RECORD")


def postgres_settings(ctx: Context) -> str:
    """The PostgreSQL version, and the settings that keep a committed event on disk."""
    with connect(ctx.runtime.url) as conn:
        version = str(conn.execute("SHOW server_version").fetchone()[0])  # type: ignore[index]
        values = {name: str(conn.execute(sql.SQL("SHOW {}").format(sql.Identifier(name)))
                            .fetchone()[0])  # type: ignore[index]
                  for name in DURABILITY}
    ctx.facts["postgresql"] = {"server_version": version, **values}
    wrong = [f"{name} = {value}" for name, value in values.items()
             if value not in DURABILITY[name]]
    said = ", ".join(f"{name} = {value}" for name, value in values.items())
    if wrong:
        raise CheckFailed(f"PostgreSQL {version}: {', '.join(wrong)} (a committed event may "
                          "be lost in a crash)")
    return f"PostgreSQL {version}: {said}"


def record_tables(conn: Any) -> list[tuple[str, str]]:
    """(schema, table) of every append-only table: each study's and the directory's, and
    the catalogue of studies."""
    tables = [(CATALOG_SCHEMA, "directory_events")]
    for _, schema in list_studies(conn):
        tables.append((schema, EVENTS_TABLE))
    tables += [(schema, table) for schema in {s for s, _ in tables} for table in RECORD_TABLES]
    return sorted([(CATALOG_SCHEMA, "studies"), *tables])


def roles_and_grants(ctx: Context) -> str:
    """No role but the owner may delete, truncate or set triggers on an append-only table,
    nor act as its owner (as `trialledger db grant` sets them up)."""
    problems, holders = [], set()
    query = (
        "SELECT r.rolname, a.privilege_type, o.rolname, "
        "pg_has_role(r.oid, c.relowner, 'USAGE') OR r.rolsuper "
        "FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
        "JOIN pg_roles o ON o.oid = c.relowner "
        "CROSS JOIN LATERAL aclexplode(c.relacl) a JOIN pg_roles r ON r.oid = a.grantee "
        "WHERE n.nspname = %s AND c.relname = %s AND a.grantee <> c.relowner")
    owners = set()
    with connect(ctx.runtime.url) as conn:
        tables = record_tables(conn)
        for schema, table in tables:
            owner = conn.execute(
                "SELECT tableowner FROM pg_tables WHERE schemaname = %s AND tablename = %s",
                (schema, table)).fetchone()
            if owner is None:
                continue
            owners.add(owner[0])
            for role, privilege, _, acts_as_owner in conn.execute(query, (schema, table)):
                holders.add(role)
                if privilege in FORBIDDEN:
                    problems.append(f"{role} holds {privilege} on {schema}.{table}")
                if acts_as_owner:
                    problems.append(f"{role} acts as the owner of {schema}.{table}")
    ctx.facts["roles"] = {"owners": sorted(owners), "application roles": sorted(holders)}
    if problems:
        raise CheckFailed("; ".join(sorted(set(problems))[:5]))
    granted = (f"application role(s) {', '.join(sorted(holders))} read and append only"
               if holders else "no application role granted yet (`trialledger db grant`)")
    return (f"{len(tables)} append-only tables owned by {', '.join(sorted(owners))}; "
            f"{granted}")


def key_storage(ctx: Context) -> str:
    """The signing key is kept outside the database: in the environment, or in a file only
    its owner may read."""
    settings = ctx.runtime.settings
    if settings.signing_key_pem:
        ctx.facts["signing key"] = "environment (TRIALLEDGER_SIGNING_KEY)"
        return "the signing key comes from the environment (TRIALLEDGER_SIGNING_KEY)"
    path = settings.signing_key_file or settings.keys_dir / f"{settings.key_name}.key"
    ctx.facts["signing key"] = str(path)
    try:
        mode = stat.S_IMODE(path.stat().st_mode)
    except OSError as e:
        raise CheckFailed(f"the signing key file {path} cannot be read: {e}") from None
    if mode & 0o077:
        raise CheckFailed(f"the signing key file {path} has mode {mode:04o}: others may read it")
    return f"the signing key is the file {path}, mode {mode:04o} (owner only)"


def _ntp_synchronised() -> str | None:
    """timedatectl's NTPSynchronized (yes/no), or None where it cannot tell (no systemd)."""
    if shutil.which("timedatectl") is None:
        return None
    try:
        answer = subprocess.run(["timedatectl", "show", "-p", "NTPSynchronized", "--value"],
                                capture_output=True, text=True, timeout=5, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return answer.stdout.strip() or None if answer.returncode == 0 else None


def clock_source(ctx: Context) -> str:
    """The host's clock source and NTP state, and that the database server's clock agrees
    with this host's (recorded times come from the server's clock, in UTC)."""
    try:
        source = CLOCKSOURCE.read_text().strip()
    except OSError:
        source = "unknown"
    ntp = _ntp_synchronised()
    with connect(ctx.runtime.url) as conn:
        before = datetime.now(UTC)
        database_now = conn.execute("SELECT now()").fetchone()[0]  # type: ignore[index]
        after = datetime.now(UTC)
    skew = abs((database_now - (before + (after - before) / 2)).total_seconds())
    ctx.facts["clock"] = {"clock source": source, "NTP synchronised": ntp or "not known",
                          "database clock skew (s)": f"{skew:.3f}"}
    if ntp == "no":
        raise CheckFailed("the host's clock is not synchronised by NTP (timedatectl)")
    if skew > CLOCK_SKEW_SECONDS:
        raise CheckFailed(f"the database server's clock is {skew:.1f} s off this host's")
    return (f"clock source {source}; NTP synchronised: {ntp or 'not known (no timedatectl)'}; "
            f"database clock within {skew:.3f} s of this host's")


CHECKS = (
    Check("IQ-1 packages", "installation", ("R23",),
          "Installed packages and the SHA-256 of their files", packages),
    Check("IQ-2 postgresql", "installation", ("R17",),
          "PostgreSQL version and durability settings", postgres_settings),
    Check("IQ-3 roles", "installation", ("R6", "R19"),
          "Roles and grants on the append-only tables", roles_and_grants),
    Check("IQ-4 signing key", "installation", ("R9", "R21"),
          "Signing key kept outside the database, owner-only", key_storage),
    Check("IQ-5 clock", "installation", ("R7",),
          "Clock source, NTP and the database server's clock", clock_source),
)
