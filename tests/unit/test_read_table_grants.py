"""The application role may update every read table the projector keeps, and no other."""

from infra.roles import READ_TABLES
from projections.history_view import SHAPE, TABLES


def test_every_read_table_the_projector_keeps_is_granted_to_the_application_role() -> None:
    # A table added to the projection but not to the grants stops a deployment's projector
    # (the application role cannot close a version) while the owner's tests pass.
    kept = {table.name for table in TABLES} | {SHAPE}
    assert kept <= set(READ_TABLES), sorted(kept - set(READ_TABLES))
    assert "trialledger_events" not in READ_TABLES
