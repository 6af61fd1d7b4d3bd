"""CDISC ODM 1.3.2 exports: a Snapshot as of a recorded time, and the Transactional archive."""

from projections.odm.archive import write_archive
from projections.odm.snapshot import write_snapshot

__all__ = ["write_archive", "write_snapshot"]
