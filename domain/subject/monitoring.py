"""Monitoring: Part 11 e-signatures on the casebook (invalidated when its content changes),
queries on a record's field, and source-data verification."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from datetime import datetime
from typing import Any

from domain import limits
from domain.clock import require_aware
from domain.envelope import Actor, Envelope
from domain.errors import InvalidInput, InvalidState, NotFound
from domain.subject.changes import RecordChanges
from domain.subject.events import (
    Event,
    QueryAnswered,
    QueryClosed,
    QueryOpened,
    Signed,
    SourceVerified,
)


class Monitoring(RecordChanges):
    """The subject's signature, query and SDV commands (a query may be answered by a
    correction, hence a kind of :class:`RecordChanges`)."""

    def sign(self, signature_id: str, meaning: str, meanings: Mapping[str, str],
             signer: Actor, envelope: Envelope, at: datetime) -> None:
        """Apply an e-signature with ``meaning`` (one of the study's ``meanings``).

        The caller has re-authenticated ``signer`` with username and password.
        """
        limits.check_texts(("meaning", meaning, limits.ID),
                           ("signature_id", signature_id, limits.ID))
        if meaning not in meanings:
            raise InvalidInput("meaning", f"must be one of {', '.join(meanings)}")
        if not signature_id.strip():
            raise InvalidInput("signature_id", "is required")
        if signature_id in self.signatures:
            raise InvalidInput("signature_id", f"signature {signature_id!r} already exists")
        if self.status in ("consented", "screened"):
            raise InvalidState(f"subject is {self.status}: nothing to sign yet")
        self.trigger_event(Signed, timestamp=require_aware("recorded_at", at),
                           envelope=envelope, signature_id=signature_id, meaning=meaning,
                           meaning_text=meanings[meaning], signer=signer,
                           signed_version=self.version, content_sha256=self.content_digest())

    def open_query(self, query_id: str, record_id: str, field: str, text: str,
                   envelope: Envelope, at: datetime) -> None:
        """Question one field of one record."""
        limits.check_texts(("query_id", query_id, limits.ID), ("record_id", record_id, limits.ID),
                           ("field", field, limits.ID), ("text", text, limits.TEXT))
        envelope = self._check_editable(envelope)
        record = self._record(record_id)
        if field not in record.fields and field.partition(".")[0] not in record.fields:
            raise InvalidInput("field", f"record {record_id} has no field {field!r}")
        if not query_id.strip():
            raise InvalidInput("query_id", "is required")
        if query_id in self.queries:
            raise InvalidInput("query_id", f"query {query_id!r} already exists")
        if not text.strip():
            raise InvalidInput("text", "the question is required")
        self.trigger_event(QueryOpened, timestamp=require_aware("recorded_at", at),
                           envelope=envelope, query_id=query_id, on_record=record_id,
                           on_field=field, text=text)

    def answer_query(self, query_id: str, text: str, envelope: Envelope, at: datetime,
                     correction_version: int | None = None) -> None:
        """Answer an open query (optionally naming the correction made in answer)."""
        limits.check_text("text", text, limits.TEXT)
        envelope = self._check_editable(envelope)
        query = self._query(query_id)
        if query["status"] == "closed":
            raise InvalidState(f"query {query_id} is closed")
        if not text.strip():
            raise InvalidInput("text", "the answer is required")
        self.trigger_event(QueryAnswered, timestamp=require_aware("recorded_at", at),
                           envelope=envelope, query_id=query_id, text=text,
                           correction_version=correction_version)

    def correct_in_answer(self, query_id: str, record_id: str, field: str, new_value: Any,
                          envelope: Envelope, at: datetime) -> None:
        """Correct a field in answer to a query: the correction and the answer are linked."""
        query = self._query(query_id)
        if query["status"] == "closed":
            raise InvalidState(f"query {query_id} is closed")
        self.correct(record_id, field, new_value, envelope, at)
        self.answer_query(query_id, envelope.require_reason().text, envelope, at,
                          correction_version=self.version)

    def close_query(self, query_id: str, text: str, envelope: Envelope, at: datetime) -> None:
        """Close a query."""
        limits.check_text("text", text, limits.TEXT)
        envelope = self._check_editable(envelope)
        query = self._query(query_id)
        if query["status"] == "closed":
            raise InvalidState(f"query {query_id} is already closed")
        self.trigger_event(QueryClosed, timestamp=require_aware("recorded_at", at),
                           envelope=envelope, query_id=query_id, text=text)

    def verify_source(self, record_id: str, envelope: Envelope, at: datetime) -> None:
        """Mark the record, as it stands now, verified against source documents."""
        envelope = self._check_editable(envelope)
        record = self._record(record_id)
        done = self.sdv.get(record_id)
        if done is not None and done["revision"] == record.revisions:
            raise InvalidState(f"record {record_id} is already verified at this revision")
        self.trigger_event(SourceVerified, timestamp=require_aware("recorded_at", at),
                           envelope=envelope, on_record=record_id,
                           record_revision=record.revisions)

    def data_changed(self, event: Event) -> None:
        """Clinical content changed: every valid signature on the old content is invalidated."""
        for signature in self.signatures.values():
            if signature["status"] == "valid":
                signature.update(status="invalidated",
                                 invalidated_at=event.timestamp.isoformat(),
                                 invalidated_by_version=event.originator_version)

    def content_digest(self) -> str:
        """SHA-256 of the casebook's clinical content (header and every record, as folded)."""
        content = {
            "study_id": self.study_id, "subject": self.subject_code, "site": self.site,
            "date_of_birth": self.date_of_birth, "sex": self.sex, "disease": self.disease,
            "consent_date": self.consent_date, "status": self.status, "arm": self.arm,
            "enrolled_on": self.enrolled_on,
            "records": {rid: [r.kind, r.observed_at, r.visit, r.fields, r.derived, r.removed]
                        for rid, r in self.records.items()},
        }
        canonical = json.dumps(content, sort_keys=True, separators=(",", ":"), default=str)
        return hashlib.sha256(canonical.encode()).hexdigest()

    def _query(self, query_id: str) -> dict[str, Any]:
        query = self.queries.get(query_id)
        if query is None:
            raise NotFound(f"no query {query_id!r} for subject {self.subject_code}")
        return query
