"""What a validation check is, what it finds, and what the checks share in one run."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from application.runtime import Runtime
from domain.caller import Caller

Group = Literal["installation", "operational"]


class CheckFailed(Exception):
    """A check found the installation not as required; the message says what it found."""


@dataclass
class Context:
    """What the checks of one run share: the deployment, the validation study, and the
    facts the operational scenario leaves for the checks after it."""

    runtime: Runtime
    study: str
    work: Path
    odm_xsd: Path
    facts: dict[str, Any] = field(default_factory=dict)
    investigator: Caller | None = None
    password: str = ""


@dataclass(frozen=True)
class Check:
    """One qualification check: it returns what it saw (evidence, a line of text) or raises
    :class:`CheckFailed`."""

    name: str
    group: Group
    requirements: tuple[str, ...]
    title: str
    run: Callable[[Context], str]


@dataclass(frozen=True)
class Result:
    """A check's outcome in this run."""

    check: Check
    passed: bool
    evidence: str
    seconds: float
