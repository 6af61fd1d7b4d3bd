"""Casebooks for people: one HTML page and one PDF per subject, as of a recorded time."""

from __future__ import annotations

import hashlib
import re
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import psycopg

from domain.study import StudyDefinition
from projections.casebook_doc.html import write_html
from projections.casebook_doc.model import casebooks
from projections.casebook_doc.pdf import write_pdf
from projections.streaming import aware, consistent_read

_SAFE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]*")


def file_stem(subject: str) -> str:
    """A file name for ``subject``'s casebook: the code itself when it is a safe file name,
    otherwise a sanitised code plus a hash of the real one (never a path, never a clash)."""
    if _SAFE.fullmatch(subject) and ".." not in subject:
        return subject
    digest = hashlib.sha256(subject.encode()).hexdigest()[:10]
    return f"{re.sub(r'[^A-Za-z0-9_-]', '_', subject)}-{digest}"


def write_casebooks(conn: psycopg.Connection[Any], schema: str, definition: StudyDefinition,
                    directory: Path, as_of: datetime | None = None,
                    created_at: datetime | None = None) -> int:
    """Write ``<subject>.html`` and ``<subject>.pdf`` for every subject the system showed at
    ``as_of`` (now when None) into ``directory``; return the number of subjects.

    ``conn`` must not be inside a transaction: all casebooks come from one consistent read,
    written one subject at a time.
    """
    created = aware("created_at", created_at) or datetime.now(UTC)
    when = aware("as_of", as_of) or created
    directory.mkdir(parents=True, exist_ok=True)
    count = 0
    with consistent_read(conn):
        for document in casebooks(conn, schema, definition, when, created):
            stem = file_stem(document.subject)
            with (directory / f"{stem}.html").open("w", encoding="utf-8") as out:
                write_html(document, out)
            write_pdf(document, directory / f"{stem}.pdf", created)
            count += 1
    return count
