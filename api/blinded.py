"""What a blind person is shown: every read route passes its answer through :func:`shown`,
and routes whose answer is by arm refuse a blind person (:func:`refuse_blind`).

Who is blind, and to what, is the trial service's rule (``TrialService.mask_for``); the
masking itself is the read side's one walk (``projections.blinding.masked``).
"""

from __future__ import annotations

from typing import TypeVar

from fastapi import Request

from api.auth import Principal
from api.writes import service_of
from domain.blinding import Mask
from domain.errors import Forbidden
from projections.blinding import masked

T = TypeVar("T")


def mask_of(request: Request, principal: Principal, study: str) -> Mask | None:
    """What ``principal`` must be shown masked at ``study`` (None: nothing)."""
    return service_of(request).mask_for(principal.caller, study)


def shown(request: Request, principal: Principal, study: str, answer: T) -> T:
    """``answer`` (JSON-native) as ``principal`` may see it at ``study``."""
    mask = mask_of(request, principal, study)
    return answer if mask is None else masked(answer, mask)


def refuse_blind(request: Request, principal: Principal, study: str, what: str) -> None:
    """Refuse ``what`` (an answer by arm, or carrying the allocation) to a blind person."""
    if mask_of(request, principal, study) is not None:
        raise Forbidden(f"{principal.user.username} is blinded at {study}: {what} would "
                        "disclose the allocation")



def view_key(mask: Mask | None, subject: str) -> str | None:
    """What tells a masked view of ``subject`` from an unmasked one in its ETag (None:
    unmasked), so an unblinding is not answered 304 from a masked copy."""
    return None if mask is None or subject in mask.visible_subjects else "blinded"
