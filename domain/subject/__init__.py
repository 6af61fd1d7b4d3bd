"""A subject's casebook: the ``Subject`` aggregate, one consistency boundary for its records,
status and lock (see :mod:`domain.subject.aggregate`)."""

from domain.subject.aggregate import (
    AE_FIELDS_NEEDING_REASON,
    SCREEN_FAILURE_ARM,
    Subject,
    subject_uuid,
)

__all__ = ["AE_FIELDS_NEEDING_REASON", "SCREEN_FAILURE_ARM", "Subject", "subject_uuid"]
