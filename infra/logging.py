"""structlog configured for the whole process: log lines on stderr, as JSON for machines
(operators' collectors, files, pipes) and as plain text for a person at a terminal.

``TRIALLEDGER_LOG_FORMAT`` chooses: ``json``, ``console``, or ``auto`` (the default: console
when stderr is a terminal, else JSON). ``TRIALLEDGER_LOG_LEVEL`` (e.g. ``INFO``) overrides the
level a command asks for. Child processes (the sealer, server workers) inherit both. Every
line names the service and its version.
"""

from __future__ import annotations

import functools
import logging
import os
import sys
from collections.abc import Callable
from importlib.metadata import PackageNotFoundError, version
from typing import Any, Literal, TextIO

import orjson
import structlog
from structlog.typing import EventDict

LOG_FORMAT_ENV = "TRIALLEDGER_LOG_FORMAT"
LOG_LEVEL_ENV = "TRIALLEDGER_LOG_LEVEL"
LOG_FORMATS = ("auto", "json", "console")

_configured = False


class LogSettingError(ValueError):
    """A log format or level that does not exist."""


def resolved_format(log_format: str | None = None) -> Literal["json", "console"]:
    """The format to write: ``log_format``, else the environment's, ``auto`` resolved."""
    chosen = (log_format or os.environ.get(LOG_FORMAT_ENV) or "auto").strip().lower()
    if chosen not in LOG_FORMATS:
        raise LogSettingError(f"log format (--log-format, {LOG_FORMAT_ENV}) must be one of "
                              f"{', '.join(LOG_FORMATS)}, not {chosen!r}")
    if chosen == "auto":
        return "console" if _stderr().isatty() else "json"
    return "json" if chosen == "json" else "console"


def resolved_level(default: int = logging.INFO) -> int:
    """``TRIALLEDGER_LOG_LEVEL`` when set, else ``default``."""
    name = os.environ.get(LOG_LEVEL_ENV, "").strip().upper()
    if not name:
        return default
    level = logging.getLevelNamesMapping().get(name)
    if level is None:
        raise LogSettingError(f"{LOG_LEVEL_ENV}: must be a level such as DEBUG, INFO, "
                              f"WARNING or ERROR, not {name!r}")
    return level


def configure_logging(level: int | None = None, log_format: str | None = None) -> None:
    """Configure structlog: ISO UTC timestamps, level, JSON or console rendering on stderr.

    Without arguments it configures once (INFO, format from the environment) and later calls
    change nothing; a command line passes its own default ``level`` (and ``log_format``),
    which reconfigures, and must do so before its first log line.
    """
    global _configured
    implicit = level is None and log_format is None
    if _configured and implicit:
        return
    try:
        fmt = resolved_format(log_format)
        wanted = resolved_level(logging.INFO if level is None else level)
    except LogSettingError:
        if not implicit:
            raise
        # Configured on import, before a command line can refuse the setting in one line.
        fmt, wanted = resolved_format("auto"), logging.INFO
    processors: list[structlog.typing.Processor] = [
        structlog.contextvars.merge_contextvars,
        _service_and_version,
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
    ]
    stderr = _stderr()
    binary = getattr(stderr, "buffer", None)
    logger_factory: Callable[..., Any]
    if fmt == "console":
        processors.append(structlog.dev.ConsoleRenderer(colors=stderr.isatty()))
        logger_factory = structlog.PrintLoggerFactory(file=stderr)
    elif binary is not None:
        # orjson when stderr takes bytes: every request writes an access-log line, and orjson
        # renders it several times faster than the standard library.
        processors += [structlog.processors.format_exc_info,
                       structlog.processors.JSONRenderer(serializer=orjson.dumps)]
        logger_factory = structlog.BytesLoggerFactory(file=binary)
    else:
        processors += [structlog.processors.format_exc_info,
                       structlog.processors.JSONRenderer()]
        logger_factory = structlog.PrintLoggerFactory(file=stderr)
    structlog.configure(
        processors=processors,
        wrapper_class=structlog.make_filtering_bound_logger(wanted),
        logger_factory=logger_factory,
        cache_logger_on_first_use=True,
    )
    # Libraries that log through the standard library stay quiet unless something is wrong.
    logging.basicConfig(level=logging.WARNING, stream=stderr)
    _configured = True


SERVICE = "trialledger"


@functools.cache
def service_version() -> str:
    """The installed version of TrialLedger ("unknown" when run from a source tree that was
    never installed)."""
    try:
        return version(SERVICE)
    except PackageNotFoundError:
        return "unknown"


def _service_and_version(_: Any, __: str, event: EventDict) -> EventDict:
    """Names the service and its version on every line, so that lines from many hosts and
    releases in one collector can be told apart."""
    event.setdefault("service", SERVICE)
    event.setdefault("version", service_version())
    return event


def _stderr() -> TextIO:
    """The process's own stderr: a stream swapped in for a while (a test runner capturing a
    command's output) would be kept by the loggers and closed under them."""
    return sys.__stderr__ or sys.stderr


def get_logger(name: str) -> structlog.stdlib.BoundLogger:
    """A logger bound to ``name``; configures logging on first use."""
    configure_logging()
    logger: structlog.stdlib.BoundLogger = structlog.get_logger(name)
    return logger
