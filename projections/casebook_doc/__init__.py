"""Casebooks for people: one HTML page and one PDF per subject, as of a recorded time."""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import psycopg

from domain.identifiers import is_safe_file_stem
from domain.study import StudyDefinition
from projections.casebook_doc.html import write_html
from projections.casebook_doc.model import casebook, subjects
from projections.casebook_doc.pdf import write_pdf
from projections.streaming import aware, consistent_read


def file_stem(subject: str) -> str:
    """A file name for ``subject``'s casebook: the code itself when it is a safe file name,
    otherwise a sanitised code plus a hash of the real one (never a path, never a clash, never
    a name Windows reserves: ``CON`` becomes ``CON-<hash>``). Codes enrolled before the rule of
    :mod:`domain.identifiers` may be unsafe."""
    if is_safe_file_stem(subject):
        return subject
    digest = hashlib.sha256(subject.encode()).hexdigest()[:10]
    return f"{re.sub(r'[^A-Za-z0-9_-]', '_', subject)}-{digest}"


def casebook_files(conn: psycopg.Connection[Any], schema: str, definition: StudyDefinition,
                   directory: Path, as_of: datetime | None = None,
                   created_at: datetime | None = None) -> Iterator[tuple[str, Path]]:
    """``<subject>.html`` and ``<subject>.pdf`` of every subject the system showed at
    ``as_of`` (now when None), as (file name, path in ``directory``) sorted by name.

    Each subject is rendered when its first file is asked for, and each file is deleted once
    the next one is asked for, so a consumer can hand them on (a zip, a download) from the
    first subject on, with one subject on disk at a time. ``conn`` must not be inside a
    transaction: all casebooks come from one consistent read.
    """
    created = aware("created_at", created_at) or datetime.now(UTC)
    when = aware("as_of", as_of) or created
    directory.mkdir(parents=True, exist_ok=True)
    with consistent_read(conn):
        owners: dict[str, Any] = {}
        for subject_id, code in subjects(conn, schema, when):
            stem = file_stem(code)
            owners.update({f"{stem}.html": subject_id, f"{stem}.pdf": subject_id})
        rendered: set[Any] = set()
        for name in sorted(owners):
            subject_id = owners[name]
            if subject_id not in rendered:
                document = casebook(conn, schema, definition, subject_id, when, created)
                stem = file_stem(document.subject)
                with (directory / f"{stem}.html").open("w", encoding="utf-8") as out:
                    write_html(document, out)
                write_pdf(document, directory / f"{stem}.pdf", created)
                rendered.add(subject_id)
            path = directory / name
            yield name, path
            path.unlink()
