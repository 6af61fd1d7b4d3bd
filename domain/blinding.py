"""Blinding as a study declares it: which items are blinded, which roles are blind to them,
and which roles may unblind one subject in an emergency.

A definition's ``blinding`` object::

    {"items": ["arm", "actual_arm", "doses.drug"],   # a field, or kind.field
     "roles": ["investigator", "coordinator", "monitor"],
     "unblinding_roles": ["investigator"]}

A person holding any blinded role at the study is blind there (blindness is a person's
knowledge: a second, unblinded role must not open it). A blind person sees each blinded item
as :data:`MASK`, and the definition's arm list, products and arm comparisons too (they name
the allocation); outputs that are themselves by arm (outcome tables, exports) are refused.
After an unblinding of a subject, the person who unblinded sees that subject's items.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from domain.errors import InvalidInput

MASK = "[blinded]"
# What a definition's own sections say of the allocation: masked with the declared items.
DEFINITION_SECTIONS = ("arms", "products", "comparison")
ROLES = ("investigator", "coordinator", "monitor", "data_manager", "regulator")


@dataclass(frozen=True)
class Blinding:
    """A study's blinding declaration."""

    items: tuple[str, ...]
    roles: frozenset[str]
    unblinding_roles: frozenset[str]

    @classmethod
    def from_dict(cls, data: Any) -> Blinding | None:
        """The declaration of a definition's ``blinding`` object (None: an open study)."""
        if data is None:
            return None
        if not isinstance(data, dict):
            raise InvalidInput("blinding", "must be an object of items, roles, unblinding_roles")
        items = data.get("items")
        if not isinstance(items, list) or not items or not all(
                isinstance(i, str) and 0 < len(i) <= 100 for i in items):
            raise InvalidInput("blinding.items", "must list the blinded fields (field or "
                                                 "kind.field)")
        return cls(tuple(items), _roles("blinding.roles", data.get("roles")),
                   _roles("blinding.unblinding_roles", data.get("unblinding_roles", [])))

    def blinds(self, roles: Iterable[str]) -> bool:
        """True if a person holding ``roles`` at the study is blind there."""
        return not self.roles.isdisjoint(roles)


def _roles(name: str, value: Any) -> frozenset[str]:
    if not isinstance(value, list) or not all(v in ROLES for v in value):
        raise InvalidInput(name, f"must be a list of roles among {', '.join(ROLES)}")
    return frozenset(value)


@dataclass(frozen=True)
class Mask:
    """What one blind person is shown masked: the blinded fields (``kind.field`` ones only in
    records of that kind, or where the kind is not known) and the subjects they unblinded."""

    items: tuple[str, ...]
    visible_subjects: frozenset[str]

    def hides(self, name: str, kind: str | None) -> bool:
        """True if field ``name`` of a record of ``kind`` (None: not known) is masked."""
        if name in self.items or name in DEFINITION_SECTIONS:
            return True
        return any(item == f"{k}.{name}" and kind in (None, "", k)
                   for item in self.items for k in [item.partition(".")[0]] if "." in item)
