"""Who may do what: the roles of the protocol's delegation log, as data.

A role is held at a study and a site (``Grant``); an action on a subject needs a grant that
reaches the subject's site, a study-wide action one that reaches every site.
"""

from __future__ import annotations

from collections.abc import Iterable
from enum import StrEnum

from domain.user import Grant


class Action(StrEnum):
    """What a request asks to do."""

    READ = "read"  # casebooks, audit trail, outcomes, ledger proofs
    ENTER = "enter"  # enroll subjects, enter and correct records
    SIGN = "sign"  # Part 11 e-signatures on casebooks
    ANSWER = "answer"  # answer queries
    QUERY = "query"  # open and close queries
    SDV = "sdv"  # source-data verification marks
    CODE = "code"  # medical coding of adverse events
    DEVIATE = "deviate"  # report protocol deviations
    LOCK = "lock"  # subject and study locks
    REVIEW_AUDIT = "review_audit"  # audit-trail review sign-off
    UNBLIND = "unblind"  # disclose one subject's blinded items (a blinded study declares who)
    EXPORT = "export"  # exports and bundles
    VERIFY = "verify"  # integrity verification, ledger proofs
    MANAGE_USERS = "manage_users"  # people, roles, API clients
    SET_UP_STUDY = "set_up_study"  # register a study's definition
    IMPORT = "import"  # bulk loads of data sets (SDTM)
    REQUEST_REDACTION = "request_redaction"  # ask that identifying values be redacted
    APPROVE_REDACTION = "approve_redaction"  # approve (another person's) redaction request


ROLE_ACTIONS: dict[str, frozenset[Action]] = {
    "investigator": frozenset({Action.READ, Action.ENTER, Action.SIGN, Action.ANSWER,
                               Action.DEVIATE, Action.UNBLIND}),
    "coordinator": frozenset({Action.READ, Action.ENTER, Action.ANSWER}),
    "monitor": frozenset({Action.READ, Action.QUERY, Action.SDV, Action.REVIEW_AUDIT,
                          Action.DEVIATE}),
    "data_manager": frozenset({Action.READ, Action.QUERY, Action.CODE, Action.LOCK,
                               Action.EXPORT, Action.DEVIATE, Action.REQUEST_REDACTION,
                               Action.UNBLIND}),
    "regulator": frozenset({Action.READ, Action.EXPORT, Action.VERIFY}),
    # Admins set up studies and people, and never see or touch clinical data; approving a
    # redaction destroys keys, it shows them no value.
    "admin": frozenset({Action.MANAGE_USERS, Action.SET_UP_STUDY, Action.APPROVE_REDACTION}),
    # The operator at the machine (CLI set-up and imports): the system, never a person's grant.
    "system": frozenset({Action.SET_UP_STUDY, Action.IMPORT}),
}

EDIT_POINTS = {
    "investigator": "site",
    "coordinator": "site",
    "monitor": "monitoring",
    "data_manager": "data_management",
}

# What medical coding may change: the codes, never what the site reported.
CODING_FIELDS = frozenset({"meddra_pt", "meddra_llt"})


def permitting_grant(grants: Iterable[Grant], action: Action, study: str,
                     site: str | None) -> Grant | None:
    """The grant that lets its holder do ``action`` at ``study``/``site`` (None: refused).

    ``site`` None asks for a study-wide action. Of several permitting grants, the one
    with the role listed first in :data:`ROLE_ACTIONS` is taken, so the result is stable.
    """
    order = list(ROLE_ACTIONS)
    for grant in sorted(grants, key=lambda g: (order.index(g.role), g.study, g.site)):
        if action in ROLE_ACTIONS[grant.role] and grant.covers(study, site):
            return grant
    return None


def readable_sites(grants: Iterable[Grant], study: str) -> set[str] | None:
    """Sites whose data the holder may read at ``study`` (None: every site)."""
    sites: set[str] = set()
    for grant in grants:
        if Action.READ in ROLE_ACTIONS[grant.role] and grant.study in ("*", study):
            if grant.site == "*":
                return None
            sites.add(grant.site)
    return sites
