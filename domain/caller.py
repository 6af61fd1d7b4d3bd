"""Who is asking the service to act: a person (their grants), the client transporting the
request, the request's id and the channel it came through."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from domain.envelope import Actor, Envelope, Reason
from domain.errors import Forbidden
from domain.permissions import EDIT_POINTS, Action, permitting_grant
from domain.user import Grant, User

Channel = Literal["api", "cli", "import", "demo"]
# What the operator at the machine holds (CLI set-up commands, imports): the system's role.
OPERATOR_GRANT = Grant("system", "*", "*")
# The envelope's source for each channel: only the API and the import are told apart in
# stored events; the CLI operator and the demo simulation are recorded as the system.
_SOURCES: dict[str, str] = {"api": "api", "cli": "system", "import": "import",
                            "demo": "system"}


@dataclass(frozen=True, slots=True)
class Caller:
    """The person on whose behalf a command is run, and how the command reached us."""

    user_id: str
    username: str
    full_name: str
    grants: tuple[Grant, ...]
    client: str
    request_id: str
    channel: Channel = "api"

    @classmethod
    def of(cls, user: User, client: str, request_id: str, channel: Channel = "api") -> Caller:
        """``user`` of the directory, calling through ``client``."""
        return cls(user.user_id, user.username, user.full_name, tuple(user.grants), client,
                   request_id, channel)

    def grant_for(self, action: Action, study: str, site: str | None) -> Grant:
        """The grant allowing ``action`` at ``study``/``site`` (None: study-wide), or
        :class:`Forbidden`."""
        grant = permitting_grant(self.grants, action, study, site)
        if grant is None:
            where = f"{study}/{site}" if site is not None else f"{study} (every site)"
            raise Forbidden(f"{self.username} may not {action.value} at {where}")
        return grant

    def holds(self, action: Action, study: str, site: str | None) -> bool:
        """True if a grant allows ``action`` at ``study``/``site``."""
        return permitting_grant(self.grants, action, study, site) is not None

    def actor(self, grant: Grant) -> Actor:
        """The person as recorded on events, in the role ``grant`` gives them."""
        return Actor(self.user_id, self.full_name, grant.role, grant.site)

    def envelope(self, grant: Grant, reason: Reason | None = None) -> Envelope:
        """The envelope of an event caused by this call: its edit point by the role (the
        domain makes an edit of a casebook locked before a post-lock edit)."""
        return Envelope(self.actor(grant), self.client, _SOURCES[self.channel],
                        self.request_id, EDIT_POINTS.get(grant.role, "site"), reason)
