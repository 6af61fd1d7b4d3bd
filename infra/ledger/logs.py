"""The logs a deployment seals: one per study, and the directory's (people, roles, API
clients, sign-ins). A log is named by what its events' signatures and leaves are bound to: a
study's id, or :data:`DIRECTORY_LOG`, which no study id can be (a study id starts with a
letter or a digit)."""

from __future__ import annotations

from infra.catalog import EVENTS_TABLE

DIRECTORY_LOG = "(directory)"
DIRECTORY_EVENTS = "directory_events"  # eventsourcing names it after the application


def origin(log: str) -> str:
    """The checkpoint origin of a log: ``trialledger/<study>``, or
    ``trialledger/(directory)``."""
    return f"trialledger/{log}"


def events_table(log: str) -> str:
    """The table (in the log's schema) holding the log's events."""
    return DIRECTORY_EVENTS if log == DIRECTORY_LOG else EVENTS_TABLE


def label(log: str) -> str:
    """The log as a person is told of it."""
    return "the directory" if log == DIRECTORY_LOG else f"study {log}"


def title(log: str) -> str:
    """The log as a line of a report starts: a study's id, or the directory described."""
    return "directory (people, roles, clients, sign-ins)" if log == DIRECTORY_LOG else log
