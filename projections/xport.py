"""SAS XPORT version 5 (SAS TS-140), as far as an SDTM domain needs it: the headers of a
library holding one member (its name, label and variables), and numbers as IBM System/360
doubles. The observations follow the headers as fixed-width records (each text padded with
blanks to its variable's width, each number 8 bytes), the file padded with blanks to a
multiple of 80 bytes.

Written here rather than by pyreadstat: its writer takes a data frame, and the frame library
(polars) with pyreadstat weighs about 40 MB in a bundle's renderings process, for about a
kilobyte of headers. The bytes are those pyreadstat writes (a test compares them), with the
export's own creation time rather than the clock's.
"""

from __future__ import annotations

import math
import struct
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

RECORD = 80  # every header record, and the file, in 80-byte units
NAME_BYTES, LABEL_BYTES = 8, 40
NAMESTR_BYTES = 140
MISSING = b"." + bytes(7)  # SAS's missing number
# What pyreadstat (ReadStat) states as the writing SAS's version and system.
_SAS_VERSION, _SAS_OS = "6.06", "bsd4.2"
_MONTHS = ("JAN", "FEB", "MAR", "APR", "MAY", "JUN", "JUL", "AUG", "SEP", "OCT", "NOV", "DEC")


@dataclass(frozen=True)
class Variable:
    """A variable of the member: a number (8 bytes) or a text of ``width`` bytes."""

    name: str
    label: str
    numeric: bool
    width: int

    @property
    def length(self) -> int:
        """Its bytes in an observation."""
        return 8 if self.numeric else self.width


def _header(kind: str, numbers: str = "0" * 30) -> bytes:
    return f"HEADER RECORD*******{kind:<8}HEADER RECORD!!!!!!!{numbers}  ".encode("ascii")


def _text(value: str, size: int) -> bytes:
    """``value`` in ``size`` bytes, blank-padded (cut at ``size`` bytes, never mid-character)."""
    raw = value.encode()[:size].decode(errors="ignore").encode()
    return raw.ljust(size, b" ")


def _stamp(when: datetime) -> str:
    """ddMMMyy:hh:mm:ss, in UTC."""
    t = when.astimezone(UTC)
    return f"{t.day:02d}{_MONTHS[t.month - 1]}{t.year % 100:02d}:{t:%H:%M:%S}"


def headers(member: str, label: str, variables: Sequence[Variable],
            created: datetime) -> bytes:
    """Every header of a file holding the one member ``member`` (its name and ``label``, each
    cut to what version 5 holds) with ``variables``, up to and including the header after
    which the observations begin; ``created`` stands for both the creation and the
    modification time."""
    stamp = _stamp(created)
    real = (f"{'SAS':<8}{'SAS':<8}{'SASLIB':<8}{_SAS_VERSION:<8}{_SAS_OS:<8}{'':24}{stamp}"
            f"{stamp}{'':64}").encode("ascii")
    member_data = (f"{'SAS':<8}".encode() + _text(member, NAME_BYTES)
                   + f"{'SASDATA':<8}{_SAS_VERSION:<8}{_SAS_OS:<8}{'':24}{stamp}{stamp}{'':16}"
                   .encode("ascii") + _text(label, LABEL_BYTES) + b" " * 8)
    namestrs = b"".join(_namestr(n, v, sum(w.length for w in variables[:n]))
                        for n, v in enumerate(variables))
    namestrs += b" " * (-len(namestrs) % RECORD)
    return b"".join((
        _header("LIBRARY"), real,
        _header("MEMBER", f"{0:017d}160{0:07d}{NAMESTR_BYTES:03d}"), _header("DSCRPTR"),
        member_data, _header("NAMESTR", f"{0:06d}{len(variables):04d}{0:020d}"), namestrs,
        _header("OBS")))


def _namestr(index: int, variable: Variable, position: int) -> bytes:
    """The variable's description: type (1 number, 2 text), length, number (from 1), name,
    label, no formats (a number right-justified), and where it starts in an observation."""
    return (struct.pack(">hhhh", 1 if variable.numeric else 2, 0, variable.length, index + 1)
            + _text(variable.name, NAME_BYTES) + _text(variable.label, LABEL_BYTES)
            + b" " * 8 + struct.pack(">hhh2x", 0, 0, 1 if variable.numeric else 0)
            + b" " * 8 + struct.pack(">hhi", 0, 0, position) + bytes(52))


def ibm_double(value: float) -> bytes:
    """``value`` as an IBM System/360 double, as XPT files hold numbers: sign, a base-16
    exponent biased by 64, and a 56-bit fraction (wide enough for IEEE's 53 bits: exact)."""
    if value == 0 or math.isnan(value) or math.isinf(value):
        return MISSING if value != 0 else bytes(8)
    bits = int.from_bytes(struct.pack(">d", value), "big")
    sign, exponent = bits >> 63, (bits >> 52) & 0x7FF
    mantissa = bits & ((1 << 52) - 1)
    if exponent:
        mantissa |= 1 << 52
    else:  # subnormal: no implied one
        exponent = 1
    # value = mantissa * 2**(e - 52); as a fraction of 2**56 times 16**hex_exponent.
    k = exponent - 1023 + 1
    while mantissa < 1 << 52:  # a subnormal's mantissa, brought up to 53 bits
        mantissa <<= 1
        k -= 1
    hex_exponent = -(-k // 4)
    if hex_exponent < -64:  # below IBM's smallest number
        return bytes(8)
    if hex_exponent > 63:
        raise ValueError(f"{value} is beyond the largest number an XPT file holds")
    fraction = mantissa << (k + 3 - 4 * hex_exponent)
    return ((sign << 63) | ((hex_exponent + 64) << 56) | fraction).to_bytes(8, "big")
