"""What a study id or a subject code may be: one rule for the HTTP schema, the CLI and the
domain.

Both end up in URLs (path segments), in file names (a casebook per subject, on any
operating system a reader unpacks a zip on) and, for a study, in a PostgreSQL schema name
(``study_<id>``, at most 63 bytes). So both use only ASCII letters, digits, ``-`` and ``_``
(a subject code also ``.``, as SDTM's ``01-701-1015`` style allows), start with a letter or
a digit, never end with a dot, and are never one of the device names Windows reserves
(``CON``, ``PRN``, ``AUX``, ``NUL``, ``COM0``…``COM9``, ``LPT0``…``LPT9``, in any case and
with any extension).
"""

from __future__ import annotations

import re

from domain.errors import Problem

SCHEMA_PREFIX = "study_"
"""What a study's PostgreSQL schema name starts with (the rest is the lower-cased id)."""
POSTGRES_IDENTIFIER = 63
"""PostgreSQL's longest identifier, in bytes (NAMEDATALEN - 1)."""
STUDY_ID = POSTGRES_IDENTIFIER - len(SCHEMA_PREFIX)
"""The longest study id: its schema name must fit PostgreSQL's identifier limit."""
SUBJECT_CODE = 64
"""The longest subject code."""

# Windows keeps these names for devices, whatever follows a dot ("CON.html" included).
_NOT_RESERVED = r"(?!(?:[Cc][Oo][Nn]|[Pp][Rr][Nn]|[Aa][Uu][Xx]|[Nn][Uu][Ll]" \
                r"|[Cc][Oo][Mm][0-9]|[Ll][Pp][Tt][0-9])(?:\.|$))"

STUDY_ID_PATTERN = rf"^{_NOT_RESERVED}[A-Za-z0-9][A-Za-z0-9_-]*$"
"""A study id (ECMA-262 and Python alike, as OpenAPI states it)."""
SUBJECT_CODE_PATTERN = rf"^{_NOT_RESERVED}[A-Za-z0-9](?:[A-Za-z0-9._-]*[A-Za-z0-9_-])?$"
"""A subject code (ECMA-262 and Python alike, as OpenAPI states it)."""

_STUDY = re.compile(STUDY_ID_PATTERN)
_SUBJECT = re.compile(SUBJECT_CODE_PATTERN)
_RULES = ("letters, digits, '-' and '_'", "letters, digits, '.', '-' and '_', not ending in "
          "'.'")


def study_id_problem(field: str, value: object) -> Problem | None:
    """What is wrong with ``value`` as a study id (None: nothing)."""
    return _problem(field, value, _STUDY, STUDY_ID, _RULES[0])


def subject_code_problem(field: str, value: object) -> Problem | None:
    """What is wrong with ``value`` as a subject code (None: nothing)."""
    return _problem(field, value, _SUBJECT, SUBJECT_CODE, _RULES[1])


def is_safe_file_stem(name: str) -> bool:
    """True if ``name`` can be used as it is as a file name's stem on every OS."""
    return subject_code_problem("name", name) is None


def _problem(field: str, value: object, pattern: re.Pattern[str], longest: int,
             allowed: str) -> Problem | None:
    if not isinstance(value, str) or not value:
        return Problem(field, "is required")
    if len(value) > longest:
        return Problem(field, f"must be at most {longest} characters (got {len(value)})")
    # fullmatch: Python's "$" would also accept a final line break.
    if pattern.fullmatch(value) is None:
        return Problem(field, f"must start with a letter or digit and hold only {allowed}; "
                              "device names Windows reserves (CON, PRN, AUX, NUL, COM1, LPT1…) "
                              "are refused")
    return None
