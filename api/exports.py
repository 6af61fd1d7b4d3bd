"""Exports, for the CLI and the HTTP API alike: each is recorded as an event first, then
rendered from the read tables (ODM, CSV, casebooks) or, for the bundle, the ledger plus all of
those renderings as of one time."""

from __future__ import annotations

import io
import queue
import tempfile
import threading
import zipfile
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from importlib.metadata import version
from pathlib import Path
from typing import IO, Any

from api.runtime import Runtime
from domain.envelope import Envelope
from domain.errors import InvalidInput
from infra import keys
from infra.ledger.bundle import write_bundle
from infra.ledger.sealer import SealingRefused
from infra.logging import get_logger
from infra.postgres import connect, schema_for_study
from projections.casebook_doc import write_casebooks
from projections.csv_export import write_csv
from projections.odm import write_archive, write_snapshot

FORMATS = ("odm-snapshot", "odm-archive", "csv", "casebook", "bundle")
MEDIA_TYPES = {"odm-snapshot": "application/xml", "odm-archive": "application/xml",
               "csv": "application/zip", "casebook": "application/zip",
               "bundle": "application/zip"}
FILE_NAMES = {"odm-snapshot": "snapshot.xml", "odm-archive": "archive.xml", "csv": "csv.zip",
              "casebook": "casebooks.zip", "bundle": "bundle.zip"}
# Where the bundle puts its renderings, beside the ledger's files.
BUNDLE_ODM, BUNDLE_CSV, BUNDLE_CASEBOOKS = "odm", "csv", "casebooks"

_log = get_logger("trialledger.exports")


def record_export(runtime: Runtime, study: str, export_format: str, as_of: datetime | None,
                  envelope: Envelope) -> None:
    """Record that ``export_format`` as of ``as_of`` leaves the system, and by whom."""
    if export_format not in FORMATS:
        raise InvalidInput("format", f"must be one of {', '.join(FORMATS)}")
    runtime.study(study).on_study(lambda s, t: s.record_export(export_format, as_of,
                                                               envelope, t))


def write_rendering(runtime: Runtime, study: str, export_format: str, out: IO[bytes],
                    as_of: datetime | None, created_at: datetime | None = None) -> int:
    """Write an ODM file (subjects or events written) to ``out``."""
    runtime.project(study)
    definition = runtime.study(study).definition()
    writer = write_snapshot if export_format == "odm-snapshot" else write_archive
    with connect(runtime.url) as conn:
        return writer(conn, schema_for_study(study), definition, out, as_of, created_at)


def write_csv_dir(runtime: Runtime, study: str, directory: Path,
                  as_of: datetime | None) -> dict[str, int]:
    """Write the CSV files into ``directory``; rows per file."""
    runtime.project(study)
    app = runtime.study(study)
    definition = app.definition()
    with connect(runtime.url) as conn:
        return write_csv(conn, schema_for_study(study), definition, directory, as_of,
                         definition_data=app.study().definition_data)


def write_casebook_dir(runtime: Runtime, study: str, directory: Path, as_of: datetime | None,
                       created_at: datetime | None = None) -> int:
    """Write each subject's casebook (HTML and PDF) into ``directory``; subjects written."""
    runtime.project(study)
    definition = runtime.study(study).definition()
    with connect(runtime.url) as conn:
        return write_casebooks(conn, schema_for_study(study), definition, directory, as_of,
                               created_at)


def write_casebook_zip(runtime: Runtime, study: str, path: Path,
                       as_of: datetime | None) -> int:
    """The casebooks as a zip at ``path``: ``<subject>.html`` and ``<subject>.pdf`` each."""
    with tempfile.TemporaryDirectory(prefix="trialledger-casebooks-") as tmp:
        count = write_casebook_dir(runtime, study, Path(tmp), as_of)
        _zip_directory(Path(tmp), path)
    return count


def _zip_directory(directory: Path, path: Path) -> None:
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as archive:
        for file in sorted(directory.iterdir()):
            archive.write(file, file.name)


def write_bundle_file(runtime: Runtime, study: str, path: Path,
                      as_of: datetime | None = None) -> dict[str, Any]:
    """Seal (with a fresh checkpoint), then write the bundle: the whole ledger, and the ODM
    snapshot and archive, the CSV files and the casebooks as of ``as_of`` (default: now);
    return its manifest."""
    try:
        runtime.seal(study, force_checkpoint=True)
    except SealingRefused as e:
        # Export what is there all the same: the verifier will name the bad event.
        _log.warning("sealing refused before export", study=study, error=str(e))
    created = datetime.now(UTC)
    # One as-of time for every rendering, so they agree with one another and the manifest.
    when = (as_of or created).astimezone(UTC)
    with tempfile.TemporaryDirectory(prefix="trialledger-bundle-") as tmp:
        files = _renderings(runtime, study, Path(tmp), when, created)
        with connect(runtime.url) as conn:
            manifest: dict[str, Any] = write_bundle(
                conn, study, schema_for_study(study), path,
                keys.load_public_keys(runtime.settings), runtime.signing_key(),
                runtime.settings.key_name, files=files, as_of=when, created_at=created,
                software_version=f"trialledger {version('trialledger')}")
    return manifest


def _renderings(runtime: Runtime, study: str, directory: Path, as_of: datetime,
                created: datetime) -> list[tuple[str, Path]]:
    """Render the bundle's ODM, CSV and casebook files into ``directory``; (name, path)."""
    odm = directory / BUNDLE_ODM
    odm.mkdir()
    for export_format in ("odm-snapshot", "odm-archive"):
        with (odm / FILE_NAMES[export_format]).open("wb") as out:
            write_rendering(runtime, study, export_format, out, as_of, created)
    write_csv_dir(runtime, study, directory / BUNDLE_CSV, as_of)
    write_casebook_dir(runtime, study, directory / BUNDLE_CASEBOOKS, as_of, created)
    return [(file.relative_to(directory).as_posix(), file)
            for file in sorted(directory.rglob("*")) if file.is_file()]


def stream(runtime: Runtime, study: str, export_format: str,
           as_of: datetime | None) -> Iterator[bytes]:
    """The export's bytes as they are produced (ODM), or from a temporary file (zips)."""
    if export_format in ("odm-snapshot", "odm-archive"):
        return _piped(lambda out: write_rendering(runtime, study, export_format, out, as_of))
    return _from_temporary_file(runtime, study, export_format, as_of)


def _from_temporary_file(runtime: Runtime, study: str, export_format: str,
                         as_of: datetime | None) -> Iterator[bytes]:
    with tempfile.TemporaryDirectory(prefix="trialledger-export-") as tmp:
        path = Path(tmp) / FILE_NAMES[export_format]
        if export_format == "bundle":
            write_bundle_file(runtime, study, path, as_of)
        elif export_format == "casebook":
            write_casebook_zip(runtime, study, path, as_of)
        else:
            files = Path(tmp) / "csv"
            write_csv_dir(runtime, study, files, as_of)
            _zip_directory(files, path)
        with path.open("rb") as f:
            while chunk := f.read(256 * 1024):
                yield chunk


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
