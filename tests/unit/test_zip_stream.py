"""A streamed zip is byte for byte the zip :mod:`zipfile` writes to a seekable file, and
hands each member on as soon as it is complete."""

from __future__ import annotations

import io
import os
import zipfile
from collections.abc import Generator
from pathlib import Path

import pytest

from infra.zip_stream import SPOOL_IN_MEMORY, ZipStream, write_file


def _info(name: str) -> zipfile.ZipInfo:
    return zipfile.ZipInfo(name, date_time=(1980, 1, 1, 0, 0, 0))


@pytest.mark.parametrize("compression", [zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED])
def test_the_stream_is_the_zip_written_to_a_file(tmp_path: Path, compression: int) -> None:
    # One member larger than the in-memory spool, so it goes through a file on disk too.
    big = os.urandom(SPOOL_IN_MEMORY + 12345)
    small = tmp_path / "small.txt"
    small.write_text("a small file\n")
    expected = io.BytesIO()
    with zipfile.ZipFile(expected, "w", compression) as z:
        with z.open(_info("big.bin"), "w", force_zip64=True) as member:
            member.write(big[:1000])
            member.write(big[1000:])
        z.write(small, "small.txt")

    archive = ZipStream(compression)
    archive.member(_info("big.bin"), [big[:1000], big[1000:]])
    first = b"".join(archive.drain())
    archive.add_file(small, "small.txt")
    second = b"".join(archive.drain())
    last = b"".join(archive.finish())
    # The first member leaves whole before the second is written; the end record comes last.
    assert len(first) > len(big) and big[-100:] in first
    assert first + second + last == expected.getvalue()
    with zipfile.ZipFile(io.BytesIO(first + second + last)) as z:
        assert z.read("big.bin") == big and z.testzip() is None


def test_an_unfinished_stream_is_no_zip() -> None:
    archive = ZipStream()
    archive.member(_info("a.txt"), [b"some text"])
    with pytest.raises(zipfile.BadZipFile):
        zipfile.ZipFile(io.BytesIO(b"".join(archive.drain())))


def test_a_file_appears_whole_or_not_at_all(tmp_path: Path) -> None:
    def failing() -> Generator[bytes, None, None]:
        yield b"the first part"
        raise OSError("the database went away")

    target = tmp_path / "out.zip"
    with pytest.raises(OSError, match="went away"):
        write_file(failing(), target)
    assert list(tmp_path.iterdir()) == []

    def whole() -> Generator[bytes, None, int]:
        yield b"all of it"
        return 7

    assert write_file(whole(), target) == 7
    assert target.read_bytes() == b"all of it"
