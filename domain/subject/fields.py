"""A record's fields by name: ``items.<name>`` reaches into an assessment's items."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from domain.errors import InvalidInput


def get_field(fields: Mapping[str, Any], path: str) -> Any:
    """A field by name; ``items.<name>`` reaches into an assessment's items."""
    head, _, rest = path.partition(".")
    if head not in fields:
        raise InvalidInput("field", f"unknown field {path!r}")
    value = fields[head]
    if rest:
        if not isinstance(value, Mapping):
            raise InvalidInput("field", f"unknown field {path!r}")
        return value.get(rest)
    return value


def set_field(fields: dict[str, Any], path: str, value: Any) -> None:
    """Set a field by name in ``fields``; an item is set in a new copy of its mapping."""
    head, _, rest = path.partition(".")
    if rest:
        fields[head] = {**fields[head], rest: value}
    else:
        fields[head] = value
