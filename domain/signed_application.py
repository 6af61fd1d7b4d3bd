"""What every application of the deployment shares: a clock, and events stored through the
mapper handed in (the signing one in production) with the domain's transcodings."""

from __future__ import annotations

from collections.abc import Callable
from uuid import UUID

from eventsourcing.application import Application
from eventsourcing.persistence import JSONTranscoder, Mapper, Transcoder
from eventsourcing.utils import EnvType

# Imported for its registrations: a log holding module-path topics decodes whatever the code's
# layout (see domain/topics.py).
import domain.topics  # noqa: F401
from domain.clock import Clock, SystemClock
from domain.transcodings import TRANSCODINGS

MapperFactory = Callable[[Transcoder], Mapper[UUID]]


class SignedApplication(Application[UUID]):
    """An eventsourcing Application with a clock and a mapper supplied by its composer."""

    def __init__(self, env: EnvType | None = None, clock: Clock | None = None,
                 mapper_factory: MapperFactory | None = None) -> None:
        self.clock: Clock = clock or SystemClock()
        self._mapper_factory = mapper_factory
        super().__init__(env)

    def construct_mapper(self) -> Mapper[UUID]:
        """The mapper handed in (the signing one in production), else eventsourcing's."""
        if self._mapper_factory is not None:
            return self._mapper_factory(self.construct_transcoder())
        return super().construct_mapper()

    def register_transcodings(self, transcoder: JSONTranscoder) -> None:
        """eventsourcing's transcodings plus the domain's value types."""
        super().register_transcodings(transcoder)
        for transcoding in TRANSCODINGS:
            transcoder.register(transcoding)
