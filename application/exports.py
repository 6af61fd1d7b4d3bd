"""Exports, for the CLI and the HTTP API alike, rendered from the read tables (ODM, CSV,
Dataset-JSON, XPT, casebooks) or, for the bundle, the ledger plus all of those renderings as
of one time. Each is recorded as an event: over HTTP before its first byte leaves; into a
file once the file is complete (or as a failed export)."""

from __future__ import annotations

import io
import os
import queue
import shutil
import tempfile
import threading
import time
import zipfile
from collections.abc import Callable, Generator, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from importlib.metadata import version
from pathlib import Path
from typing import IO, Any, TypeVar

from application.bundle_tables import Renderings, Tables, csv_files, rendering
from application.bundle_tables import files as table_files
from application.runtime import Runtime
from domain.envelope import Envelope
from domain.errors import InvalidInput
from infra import keys
from infra.ledger.bundle import bundle_chunks
from infra.ledger.sealer import SealingRefused
from infra.logging import get_logger
from infra.postgres import connect, schema_for_study
from infra.replica import ON_PRIMARY, ReadSource
from infra.zip_stream import ZipStream, write_file
from projections.casebook_doc import Progress, casebook_files
from projections.dataset_json import Layout, write_domains
from projections.odm import write_archive, write_snapshot

FORMATS = ("odm-snapshot", "odm-archive", "csv", "dataset-json", "dataset-ndjson", "xpt",
           "casebook", "bundle")
# The per-domain formats (a directory of one file per SDTM domain), and each one's layout.
DOMAIN_FORMATS: dict[str, Layout] = {"dataset-json": "json", "dataset-ndjson": "ndjson",
                                     "xpt": "xpt"}
MEDIA_TYPES = {"odm-snapshot": "application/xml", "odm-archive": "application/xml",
               **dict.fromkeys(("csv", *DOMAIN_FORMATS, "casebook", "bundle"),
                               "application/zip")}
FILE_NAMES = {"odm-snapshot": "snapshot.xml", "odm-archive": "archive.xml", "csv": "csv.zip",
              **{f: f"{f}.zip" for f in DOMAIN_FORMATS},
              "casebook": "casebooks.zip", "bundle": "bundle.zip"}
# Where the bundle puts its casebooks, beside the ledger's files and the other renderings.
BUNDLE_CASEBOOKS = "casebooks"

_log = get_logger("trialledger.exports")

T = TypeVar("T")


class DestinationRefused(Exception):
    """An export's destination holds something already, or its directory does not exist."""


def record_export(runtime: Runtime, study: str, export_format: str, as_of: datetime | None,
                  envelope: Envelope) -> None:
    """Record that ``export_format`` as of ``as_of`` leaves the system, and by whom."""
    if export_format not in FORMATS:
        raise InvalidInput("format", f"must be one of {', '.join(FORMATS)}")
    runtime.study(study).on_study(lambda s, t: s.record_export(export_format, as_of,
                                                               envelope, t))


def record_export_failure(runtime: Runtime, study: str, export_format: str,
                          as_of: datetime | None, failure: str, envelope: Envelope) -> None:
    """Record that an export of ``export_format`` was begun and failed, and why."""
    runtime.study(study).on_study(lambda s, t: s.record_export_failure(
        export_format, as_of, failure, envelope, t))


def check_destination(path: Path, replace: bool) -> None:
    """Refuse to write an export over a file or into a directory that holds files, unless
    ``replace``; and into a directory that does not exist."""
    if not path.parent.is_dir():
        raise DestinationRefused(f"{path.parent} is not a directory")
    if replace or not (path.exists() or path.is_symlink()):
        return
    if path.is_dir() and not path.is_symlink():
        if any(path.iterdir()):
            raise DestinationRefused(f"{path} is a directory that is not empty")
        return
    raise DestinationRefused(f"{path} exists")


def export_to_path(runtime: Runtime, study: str, export_format: str, path: Path,
                   as_of: datetime | None, envelope: Envelope, write: Callable[[Path], T], *,
                   replace: bool = False) -> T:
    """Run ``write`` (an export of ``export_format`` into the file or directory it is given)
    beside ``path``; once it completed, record the export and put it at ``path`` (replacing
    what is there only if ``replace``). A failure is recorded as a failed export and leaves
    ``path`` as it was."""
    check_destination(path, replace)
    partial = path.with_name(f".{path.name}.partial-{os.getpid()}")
    try:
        try:
            result = write(partial)
        except Exception as e:
            record_export_failure(runtime, study, export_format, as_of,
                                  f"{type(e).__name__}: {e}", envelope)
            raise
        record_export(runtime, study, export_format, as_of, envelope)
        _discard(path)
        os.replace(partial, path)
    finally:
        _discard(partial)
    return result


def _discard(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    else:
        path.unlink(missing_ok=True)


# Told which server an export reads from (a standby when one is configured).
Told = Callable[[ReadSource], object]


@contextmanager
def _reading(runtime: Runtime, study: str, as_of: datetime | None,
             told: Told | None) -> Iterator[Any]:
    """The connection an export reads from: the standby's (when configured and it has
    replayed ``as_of``) for a caller that takes the news (``told``); the primary's otherwise
    — a bundle's renderings must agree with the checkpoint it has just sealed there."""
    if told is None:
        with runtime.primary_read() as conn:
            yield conn
        return
    with runtime.reading(study, as_of) as (conn, source):
        told(source)
        yield conn


def write_rendering(runtime: Runtime, study: str, export_format: str, out: IO[bytes],
                    as_of: datetime | None, created_at: datetime | None = None,
                    told: Told | None = None) -> int:
    """Write an ODM file (subjects or events written) to ``out``."""
    runtime.project(study)
    definition = runtime.study(study).definition()
    writer = write_snapshot if export_format == "odm-snapshot" else write_archive
    with _reading(runtime, study, as_of, told) as conn:
        return writer(conn, schema_for_study(study), definition, out, as_of, created_at)


def write_csv_dir(runtime: Runtime, study: str, directory: Path,
                  as_of: datetime | None, told: Told | None = None) -> dict[str, int]:
    """Write the CSV files into ``directory``, with the analysis datasets behind the
    outcome tables (ADSL.csv, ADLIST.csv) as of the same time; rows per file."""
    runtime.project(study)
    app = runtime.study(study)
    with _reading(runtime, study, as_of, told) as conn:
        return csv_files(conn, study, app.definition(), app.study().definition_data,
                         directory, as_of)


def write_domain_dir(runtime: Runtime, study: str, export_format: str, directory: Path,
                     as_of: datetime | None, created_at: datetime | None = None,
                     told: Told | None = None) -> dict[str, int]:
    """Write one file per SDTM domain in ``export_format`` (Dataset-JSON, its NDJSON form,
    or SAS XPORT v5) into ``directory``; rows per file."""
    runtime.project(study)
    definition = runtime.study(study).definition()
    with _reading(runtime, study, as_of, told) as conn:
        return write_domains(conn, schema_for_study(study), definition, directory,
                             DOMAIN_FORMATS[export_format], _software_version(), as_of,
                             created_at)


def _software_version() -> str:
    return version("trialledger")


def casebook_zip(runtime: Runtime, study: str, as_of: datetime | None,
                 progress: Progress | None = None,
                 told: Told | None = None) -> Generator[bytes, None, int]:
    """The casebooks as a zip, ``<subject>.html`` and ``<subject>.pdf`` each, yielded subject
    by subject as they are rendered (``progress(done, total)`` told of each); returns the
    number of subjects."""
    runtime.project(study)
    definition = runtime.study(study).definition()
    archive = ZipStream(zipfile.ZIP_DEFLATED)
    subjects = 0
    with (tempfile.TemporaryDirectory(prefix="trialledger-casebooks-") as tmp,
          _reading(runtime, study, as_of, told) as conn):
        for name, path in casebook_files(conn, schema_for_study(study), definition, Path(tmp),
                                         as_of, progress=progress):
            archive.add_file(path, name)
            subjects += name.endswith(".html")
            yield from archive.drain()
    yield from archive.finish()
    return subjects


def write_casebook_zip(runtime: Runtime, study: str, path: Path, as_of: datetime | None,
                       progress: Progress | None = None) -> int:
    """The casebooks as a zip at ``path`` (the bytes :func:`casebook_zip` yields); subjects
    written."""
    subjects: int = write_file(casebook_zip(runtime, study, as_of, progress), path)
    return subjects


def _directory_zip(runtime: Runtime, study: str, export_format: str,
                   as_of: datetime | None, told: Told | None) -> Iterator[bytes]:
    """A zip of the files a directory export (CSV, or one file per domain) writes."""
    archive = ZipStream(zipfile.ZIP_DEFLATED)
    with tempfile.TemporaryDirectory(prefix="trialledger-files-") as tmp:
        if export_format == "csv":
            write_csv_dir(runtime, study, Path(tmp), as_of, told)
        else:
            write_domain_dir(runtime, study, export_format, Path(tmp), as_of, told=told)
        for file in sorted(Path(tmp).iterdir()):
            archive.add_file(file, file.name)
            yield from archive.drain()
    yield from archive.finish()


def bundle(runtime: Runtime, study: str, as_of: datetime | None = None,
           progress: Progress | None = None) -> Generator[bytes, None, dict[str, Any]]:
    """Seal (with a fresh checkpoint), then the bundle, yielded member by member: the whole
    ledger, then the casebooks (subject by subject, ``progress(done, total)`` told of each),
    the CSV files, Dataset-JSON, the ODM snapshot and archive and XPT as of ``as_of``
    (default: now), then the signed manifest, which it returns. The renderings other than
    the casebooks are made meanwhile by processes of their own (:mod:`bundle_tables`)."""
    try:
        runtime.seal(study, force_checkpoint=True)
    except SealingRefused as e:
        # Export what is there all the same: the verifier will name the bad event.
        _log.warning("sealing refused before export", study=study, error=str(e))
    created = datetime.now(UTC)
    # One as-of time for every rendering, so they agree with one another and the manifest.
    when = (as_of or created).astimezone(UTC)
    runtime.project(study)
    app = runtime.study(study)
    tables = Tables(runtime.url, study, app.definition(), app.study().definition_data, when,
                    created, _software_version())
    with (tempfile.TemporaryDirectory(prefix="trialledger-bundle-") as tmp,
          rendering(tables, Path(tmp) / "tables") as rendered,
          # Two connections for the bundle's whole length (the ledger's and the casebooks'),
          # its own rather than the reads' pool's: two bundles would wait on each other there.
          connect(runtime.url) as conn):
        manifest: dict[str, Any] = yield from bundle_chunks(
            conn, study, schema_for_study(study), keys.load_public_keys(runtime.settings),
            runtime.signing_key(), runtime.settings.key_name,
            files=_renderings(runtime, study, Path(tmp), rendered, when, created, progress),
            as_of=when, created_at=created,
            software_version=f"trialledger {_software_version()}",
            witnessed=bool(runtime.settings.witnesses))
    return manifest


def write_bundle_file(runtime: Runtime, study: str, path: Path,
                      as_of: datetime | None = None,
                      progress: Progress | None = None) -> dict[str, Any]:
    """Write the bundle (the bytes :func:`bundle` yields) to ``path``; return its manifest.
    The file appears whole or not at all."""
    manifest: dict[str, Any] = write_file(bundle(runtime, study, as_of, progress), path)
    return manifest


def _renderings(runtime: Runtime, study: str, directory: Path, rendered: Renderings,
                as_of: datetime, created: datetime,
                progress: Progress | None) -> Iterator[tuple[str, Path]]:
    """The bundle's renderings as (bundle name, file), sorted by name: casebooks/ subject by
    subject, rendered into ``directory`` when asked for; then, once ``rendered`` are done,
    what the renderings' processes wrote (csv/, dataset-json/, odm/, xpt/)."""
    definition = runtime.study(study).definition()
    started = time.perf_counter()
    with connect(runtime.url) as conn:
        # The tables' renderings keep a core busy beside this process while they run: the
        # casebooks get workers only on the cores beyond those two until they are done (on
        # two cores, one worker from then on: one process of about 120 MB at a time).
        for name, path in casebook_files(conn, schema_for_study(study), definition,
                                         directory / BUNDLE_CASEBOOKS, as_of, created,
                                         progress,
                                         busy_cores=lambda: 2 if rendered.running else 1):
            yield f"{BUNDLE_CASEBOOKS}/{name}", path
    casebooks_done = time.perf_counter()
    rendered.wait()
    # Where a bundle's time goes: the renderings' process logs each of its renderings.
    _log.info("bundle.rendered", rendering="casebooks",
              seconds=round(casebooks_done - started, 2),
              then_waited_s=round(time.perf_counter() - casebooks_done, 2))
    yield from table_files(directory / "tables")


def stream(runtime: Runtime, study: str, export_format: str, as_of: datetime | None,
           envelope: Envelope, told: Told | None = None) -> Iterator[bytes]:
    """The export's bytes as they are produced (the export recorded already). The first
    chunk is made before this returns, so a failure up to then raises here, to a proper
    error answer; a failure after it is logged and cuts the stream off (a zip then lacks its
    end record). Either failure is recorded as a failed export. With ``told``, every format
    but the bundle may be read from a standby, and ``told`` learns which server it was
    (before this returns)."""
    chunks: Iterator[bytes]
    if export_format in ("odm-snapshot", "odm-archive"):
        chunks = _piped(lambda out: write_rendering(runtime, study, export_format, out, as_of,
                                                    told=told))
    elif export_format == "bundle":
        if told is not None:
            told(ON_PRIMARY)
        chunks = bundle(runtime, study, as_of)
    elif export_format == "casebook":
        chunks = casebook_zip(runtime, study, as_of, told=told)
    else:
        chunks = _directory_zip(runtime, study, export_format, as_of, told)
    def failed(e: Exception) -> None:
        try:
            record_export_failure(runtime, study, export_format, as_of,
                                  f"{type(e).__name__}: {e}", envelope)
        except Exception as unrecorded:  # the log keeps what the event could not
            _log.error("a failed export could not be recorded", study=study,
                       format=export_format, error=repr(unrecorded))

    try:
        first = next(chunks, b"")
    except Exception as e:
        failed(e)
        raise
    return _watched(first, chunks, study, export_format, failed)


def _watched(first: bytes, chunks: Iterator[bytes], study: str, export_format: str,
             failed: Callable[[Exception], None]) -> Iterator[bytes]:
    yield first
    try:
        yield from chunks
    except Exception as e:
        # The answer's status is already out: the log, the failure's event and the cut-off
        # itself tell.
        _log.error("export failed after its first byte; the download is cut off",
                   study=study, format=export_format, error=repr(e))
        failed(e)
        raise


class _Pipe(io.RawIOBase):
    """What a writer thread writes, handed to a reader in bounded chunks."""

    def __init__(self) -> None:
        self.chunks: queue.Queue[bytes | BaseException | None] = queue.Queue(maxsize=16)
        self.cancelled = threading.Event()

    def writable(self) -> bool:
        return True

    def write(self, data: Any) -> int:
        chunk = bytes(data)
        while not self.cancelled.is_set():
            try:
                self.chunks.put(chunk, timeout=0.5)
                return len(chunk)
            except queue.Full:
                continue
        raise BrokenPipeError("the reader went away")


def _piped(produce: Callable[[IO[bytes]], object]) -> Iterator[bytes]:
    """Run ``produce`` in a thread writing to a pipe; yield what it writes (constant memory:
    the pipe holds a few chunks; a reader that stops stops the writer)."""
    pipe = _Pipe()

    def run() -> None:
        try:
            with io.BufferedWriter(pipe, 256 * 1024) as buffered:
                produce(buffered)
        except BaseException as e:  # handed to the reader, which raises it
            if not pipe.cancelled.is_set():
                pipe.chunks.put(e)
        finally:
            if not pipe.cancelled.is_set():
                pipe.chunks.put(None)

    threading.Thread(target=run, name="export", daemon=True).start()
    try:
        while (chunk := pipe.chunks.get()) is not None:
            if isinstance(chunk, BaseException):
                raise chunk
            yield chunk
    finally:
        pipe.cancelled.set()
