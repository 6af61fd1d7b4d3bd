"""A derived value stored with its inputs and the versioned method that produced it."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

Scalar = float | int | str | bool


class RuleError(ValueError):
    """An input a clinical rule cannot accept; ``field`` names it."""

    def __init__(self, field: str, message: str) -> None:
        self.field = field
        self.message = message
        super().__init__(f"{field}: {message}")


@dataclass(frozen=True)
class Derived:
    """A derived value: what, in which unit, by which method (name/version), from what."""

    value: float
    unit: str
    method: str
    inputs: dict[str, Scalar] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """JSON-native form."""
        return {"value": self.value, "unit": self.unit, "method": self.method,
                "inputs": dict(self.inputs)}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Derived:
        """Inverse of :meth:`to_dict`."""
        return cls(float(data["value"]), str(data["unit"]), str(data["method"]),
                   dict(data.get("inputs", {})))


def require_number(field: str, value: object, *, positive: bool = False,
                   low: float | None = None, high: float | None = None) -> float:
    """``value`` as a finite float within bounds, or :class:`RuleError` naming ``field``."""
    import math

    if isinstance(value, bool) or not isinstance(value, int | float):
        raise RuleError(field, "must be a number")
    number = float(value)
    if not math.isfinite(number):
        raise RuleError(field, "must be finite")
    if positive and number <= 0:
        raise RuleError(field, "must be greater than 0")
    if number < 0:
        raise RuleError(field, "must not be negative")
    if low is not None and number < low:
        raise RuleError(field, f"must be at least {low:g}")
    if high is not None and number > high:
        raise RuleError(field, f"must be at most {high:g}")
    return number
