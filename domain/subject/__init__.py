"""A subject's casebook: the ``Subject`` aggregate, one consistency boundary for its records,
status and lock. :mod:`domain.subject.aggregate` says which module holds which rule."""

from domain.subject.aggregate import Subject
from domain.subject.changes import AE_FIELDS_NEEDING_REASON
from domain.subject.sdtm_loading import SCREEN_FAILURE_ARM
from domain.subject.state import subject_uuid

__all__ = ["AE_FIELDS_NEEDING_REASON", "SCREEN_FAILURE_ARM", "Subject", "subject_uuid"]
