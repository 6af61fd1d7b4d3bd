"""The composition root: puts the domain's applications on infra's storage and signing key."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from uuid import UUID

from eventsourcing.persistence import Mapper, Transcoder

from domain.clock import Clock
from domain.service import MapperFactory, StudyApplication
from infra import catalog, keys
from infra.mapper import SigningMapper
from infra.postgres import connect, database, eventsourcing_env, schema_for_study
from infra.settings import Settings
from infra.signing import EventSigner


@dataclass
class Runtime:
    """One deployment: a database URL, a signing key, and the study applications opened on it."""

    settings: Settings
    url: str
    signed: bool = True
    _apps: dict[str, StudyApplication] = field(default_factory=dict)

    def study(self, study_id: str, clock: Clock | None = None) -> StudyApplication:
        """The application of one study, in its own schema (created on first use)."""
        if clock is None and study_id in self._apps:
            return self._apps[study_id]
        schema = schema_for_study(study_id)
        if not self.settings.provisioned:
            with connect(self.url) as conn:
                catalog.add_study(conn, study_id, schema)
        app = StudyApplication(
            study_id,
            env=eventsourcing_env(self.url, schema, create_table=not self.settings.provisioned),
            clock=clock,
            mapper_factory=self._mapper_factory(study_id) if self.signed else None,
        )
        if clock is None:
            self._apps[study_id] = app
        return app

    def studies(self) -> list[tuple[str, str]]:
        """Every (study id, schema) of this deployment."""
        with connect(self.url) as conn:
            return catalog.list_studies(conn)

    def _mapper_factory(self, study_id: str) -> MapperFactory:
        private_key = keys.load_signing_key(self.settings)
        signer = EventSigner(study_id, private_key, self.settings.key_name)

        def factory(transcoder: Transcoder) -> Mapper[UUID]:
            return SigningMapper(transcoder, signer)

        return factory

    def close(self) -> None:
        """Close every application's connection pool."""
        for app in self._apps.values():
            app.close()
        self._apps.clear()


@contextmanager
def open_runtime(settings: Settings, *, signed: bool = True) -> Iterator[Runtime]:
    """Open a deployment (starting the embedded PostgreSQL if no URL is set); close it after."""
    with database(settings.database_url, settings.pgdata) as url:
        runtime = Runtime(settings, url, signed=signed)
        try:
            yield runtime
        finally:
            runtime.close()
