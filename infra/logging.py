"""structlog configured once for the whole process: JSON lines on stderr."""

from __future__ import annotations

import logging
import sys

import orjson
import structlog

_configured = False


def configure_logging(level: int = logging.INFO) -> None:
    """Configure structlog (idempotent): ISO UTC timestamps, level, JSON rendering."""
    global _configured
    if _configured:
        return
    # orjson when stderr takes bytes: every request writes an access-log line, and orjson
    # renders it several times faster than the standard library.
    binary = getattr(sys.stderr, "buffer", None)
    renderer = (structlog.processors.JSONRenderer(serializer=orjson.dumps) if binary is not None
                else structlog.processors.JSONRenderer())
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            structlog.processors.format_exc_info,
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(level),
        logger_factory=(structlog.BytesLoggerFactory(file=binary) if binary is not None
                        else structlog.PrintLoggerFactory(file=sys.stderr)),
        cache_logger_on_first_use=True,
    )
    # Libraries that log through the standard library stay quiet unless something is wrong.
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr)
    _configured = True


def get_logger(name: str) -> structlog.stdlib.BoundLogger:
    """A logger bound to ``name``; configures logging on first use."""
    configure_logging()
    logger: structlog.stdlib.BoundLogger = structlog.get_logger(name)
    return logger
