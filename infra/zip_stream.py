"""A zip archive handed on member by member while it is written, for downloads that must
start at once: the bytes are exactly those :mod:`zipfile` writes to a seekable file (each
local header carries its member's size and CRC, no data descriptors), so a streamed archive
and one written to disk are the same file.

:mod:`zipfile` writes a member's header, its data, then seeks back to complete the header.
The sink below keeps only the member being written (in a spooled temporary file: memory
stays flat for a member of any size) and hands on everything before it.
"""

from __future__ import annotations

import io
import os
import tempfile
import zipfile
from collections.abc import Generator, Iterable, Iterator
from pathlib import Path
from typing import Any

CHUNK = 1 << 20
SPOOL_IN_MEMORY = 8 << 20  # a member larger than this is spooled on disk


class _Sink(io.RawIOBase):
    """A seekable file to :mod:`zipfile` whose bytes before ``base`` are already handed on."""

    def __init__(self) -> None:
        self.base = 0
        # Owned by the sink, closed with it (or with the archive that holds it).
        self.spool = tempfile.SpooledTemporaryFile(max_size=SPOOL_IN_MEMORY)  # noqa: SIM115

    def writable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def write(self, data: Any) -> int:
        return self.spool.write(data)

    def tell(self) -> int:
        return self.base + self.spool.tell()

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        if whence == io.SEEK_SET:
            if offset < self.base:
                raise io.UnsupportedOperation("cannot seek into bytes already handed on")
            self.spool.seek(offset - self.base)
        else:
            self.spool.seek(offset, whence)
        return self.tell()

    def drain(self) -> Iterator[bytes]:
        """What was written since the last drain, in chunks; then forget it."""
        end = self.spool.seek(0, io.SEEK_END)
        self.spool.seek(0)
        while chunk := self.spool.read(CHUNK):
            yield chunk
        self.base += end
        self.spool.seek(0)
        self.spool.truncate()

    def close(self) -> None:
        self.spool.close()
        super().close()


class ZipStream:
    """Write members with :meth:`member` or :meth:`add_file`, hand their bytes on with
    :meth:`drain` after each, and :meth:`finish` with the central directory. An archive left
    unfinished (an error part-way) has no end record: any zip reader refuses it."""

    def __init__(self, compression: int = zipfile.ZIP_STORED) -> None:
        self._sink = _Sink()
        self._zip = zipfile.ZipFile(self._sink, "w", compression)

    def member(self, info: zipfile.ZipInfo, chunks: Iterable[bytes]) -> None:
        """Write one member from ``chunks`` (zip64 headers, whatever its size)."""
        with self._zip.open(info, "w", force_zip64=True) as out:
            for chunk in chunks:
                out.write(chunk)

    def add_file(self, path: Path, name: str) -> None:
        """Write the file at ``path`` as member ``name`` (its own time stamp and mode)."""
        self._zip.write(path, name)

    def drain(self) -> Iterator[bytes]:
        """The bytes of the members written since the last drain."""
        return self._sink.drain()

    def finish(self) -> Iterator[bytes]:
        """Write the central directory; the archive's last bytes."""
        self._zip.close()
        yield from self._sink.drain()
        self._sink.close()


def write_file(chunks: Generator[bytes, None, Any], path: Path) -> Any:
    """Write what ``chunks`` yields to ``path`` and return what it returns. The file appears
    whole or not at all: it is written beside ``path`` and renamed once complete."""
    partial = path.with_name(f".{path.name}.partial")
    try:
        with partial.open("wb") as out:
            while True:
                try:
                    out.write(next(chunks))
                except StopIteration as done:
                    result = done.value
                    break
        os.replace(partial, path)
    finally:
        partial.unlink(missing_ok=True)
    return result
