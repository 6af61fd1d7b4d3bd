"""Every check of a validation run, in the order they run: installation first, then the
operational scenario."""

from __future__ import annotations

from application.validation import installation, operational
from application.validation.model import Check

CHECKS: tuple[Check, ...] = (*installation.CHECKS, *operational.CHECKS)
