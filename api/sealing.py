"""The background work a server runs every few seconds for every study: seal new events
(checkpoint every N events or T seconds, whichever comes first), then project them into the
read tables."""

from __future__ import annotations

import threading
import time

from api.runtime import Runtime
from infra.ledger.sealer import SealingRefused
from infra.logging import get_logger

log = get_logger(__name__)


class BackgroundSealer(threading.Thread):
    """Seals every ``interval`` seconds; forces a checkpoint after ``checkpoint_after`` seconds."""

    def __init__(self, runtime: Runtime, interval: float = 2.0,
                 checkpoint_after: float = 60.0) -> None:
        super().__init__(name="trialledger-sealer", daemon=True)
        self.runtime = runtime
        self.interval = interval
        self.checkpoint_after = checkpoint_after
        self.stopping = threading.Event()
        self._last_checkpoint: dict[str, float] = {}

    def run(self) -> None:
        """Seal until stopped."""
        while not self.stopping.wait(self.interval):
            self.seal_all()

    def seal_all(self) -> None:
        """One round over every study."""
        for study_id, _ in self.runtime.studies():
            now = time.monotonic()
            due = now - self._last_checkpoint.get(study_id, 0.0) >= self.checkpoint_after
            try:
                result = self.runtime.seal(study_id, force_checkpoint=due)
            except SealingRefused as e:
                # Never seal past a bad event; say so loudly, keep serving reads.
                log.error("ledger.sealing_refused", study=study_id, reason=str(e))
                continue
            if result.checkpoint_size is not None or due:
                self._last_checkpoint[study_id] = now
            if result.sealed:
                log.info("ledger.sealed", study=study_id, sealed=result.sealed,
                         tree_size=result.tree_size, checkpoint=result.checkpoint_size)
            projected = self.runtime.project(study_id)
            if projected:
                log.info("projection.caught_up", study=study_id, events=projected)

    def stop(self) -> None:
        """Stop after the current round."""
        self.stopping.set()
        self.join(timeout=30)
