"""Which people and grants an admin may manage: only within the studies and sites they hold.

An admin's scope is the set of (study, site) their ``admin`` grants cover; ``*`` covers every
study or site, and a grant at ``*`` is within scope only of an admin grant at ``*``. A person
belongs to an admin's scope when they hold a role there; what touches the whole account
(deactivation, unlocking, identity, the second factor) needs every role the person holds to
be within scope, and a person with no role at all is managed by deployment-wide admins only.
"""

from __future__ import annotations

from collections.abc import Iterable

from domain.errors import Forbidden
from domain.permissions import ROLE_ACTIONS, Action, permitting_grant
from domain.user import ALL, Grant


def deployment_wide(admin: Iterable[Grant]) -> Grant | None:
    """The admin grant over every study and site, if ``admin`` holds one."""
    return permitting_grant(admin, Action.MANAGE_USERS, ALL, ALL)


def grant_over(admin: Iterable[Grant], study: str, site: str) -> Grant | None:
    """The admin grant covering ``study``/``site`` (``*`` only by ``*``), or None."""
    return permitting_grant(admin, Action.MANAGE_USERS, study, site)


def grant_over_role(admin: Iterable[Grant], username: str, grant: Grant) -> Grant:
    """The admin grant allowing to grant or revoke ``grant``, or :class:`Forbidden`."""
    over = grant_over(admin, grant.study, grant.site)
    if over is None:
        raise Forbidden(f"{username} may not manage people at {grant.study}/{grant.site}")
    return over


def grant_over_person(admin: Iterable[Grant], username: str, person: Iterable[Grant], *,
                      whole_account: bool) -> Grant:
    """The admin grant allowing to act on a person holding ``person``, or :class:`Forbidden`.

    With ``whole_account`` every role of the person must be within scope, else one.
    """
    admin = list(admin)
    wide = deployment_wide(admin)
    if wide is not None:
        return wide
    covering = [grant_over(admin, g.study, g.site) for g in person]
    found = [g for g in covering if g is not None]
    if found and (not whole_account or len(found) == len(covering)):
        return found[0]
    raise Forbidden(f"{username} may not manage this person: they hold roles outside the "
                    f"studies and sites {username} administers")


def within_scope(admin: Iterable[Grant], person: Iterable[Grant]) -> bool:
    """True if an admin holding ``admin`` sees a person holding ``person`` in listings."""
    admin = list(admin)
    return deployment_wide(admin) is not None or any(
        grant_over(admin, g.study, g.site) is not None for g in person)


def any_admin_grant(admin: Iterable[Grant], username: str) -> Grant:
    """One admin grant of the caller (a stable pick), or :class:`Forbidden`."""
    for grant in sorted(admin, key=lambda g: (g.study, g.site, g.role)):
        if Action.MANAGE_USERS in ROLE_ACTIONS[grant.role]:
            return grant
    raise Forbidden(f"{username} may not manage people")
