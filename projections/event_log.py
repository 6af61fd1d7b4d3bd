"""Reading a study's event log in batches, in log order: all of it, or one part of it.

A part holds every event of some aggregates (chosen by their ids), so a process folding it
folds whole subjects; the parts of a log together hold each of its events once.
"""

from __future__ import annotations

from collections.abc import Iterator

from eventsourcing.persistence import ApplicationRecorder, Notification
from eventsourcing.postgres import PostgresApplicationRecorder
from psycopg.rows import tuple_row
from psycopg.sql import SQL, Identifier

Batches = Iterator[list[Notification]]


def log_batches(recorder: ApplicationRecorder, start: int, batch_size: int,
                limit: int | None = None, through: int | None = None) -> Batches:
    """The events from position ``start`` on (``limit`` of them at most; none after position
    ``through``, if given).

    Each batch is read after the previous one was taken: positions commit in order (the
    recorder's table lock), so reading on from the last position misses nothing written
    meanwhile.
    """
    done = 0
    while limit is None or done < limit:
        wanted = batch_size if limit is None else min(batch_size, limit - done)
        batch = list(recorder.select_notifications(start, wanted, stop=through))
        if not batch:
            return
        yield batch
        done += len(batch)
        start = batch[-1].id + 1


def part_batches(recorder: ApplicationRecorder, part: int, parts: int, through: int,
                 batch_size: int) -> Batches:
    """The events up to position ``through`` of the aggregates in part ``part`` (from 0) of
    ``parts``, about ``batch_size`` at a time.

    An aggregate's part is the last byte of its id modulo ``parts`` (one part: the whole
    log): the ids are name-based or random UUIDs, whose last byte is evenly spread. The log
    is read in windows of positions: a window is one index range, where "the next
    ``batch_size`` of the part" would have PostgreSQL sort what is left of the whole log
    (0.3 s a batch at 1M events).
    Rows come in binary: the events' bytes as they are, not hex-encoded and decoded again.
    """
    if not 0 <= part < parts <= 256:
        raise ValueError(f"part {part} of {parts}: need 0 <= part < parts <= 256")
    if not isinstance(recorder, PostgresApplicationRecorder):
        raise TypeError("a log is read in parts from PostgreSQL only")
    statement = SQL(
        "SELECT notification_id, originator_id, originator_version, topic, state FROM {}.{}"
        " WHERE notification_id >= %s AND notification_id < %s"
        " AND get_byte(uuid_send(originator_id), 15) %% %s = %s ORDER BY notification_id"
    ).format(Identifier(recorder.datastore.schema), Identifier(recorder.events_table_name))
    start = 1
    while start <= through:
        end = min(start + batch_size * parts, through + 1)
        with recorder.datastore.get_connection() as conn, \
                conn.cursor(row_factory=tuple_row, binary=True) as curs:
            curs.execute(statement, (start, end, parts, part), prepare=True)
            batch = [Notification(id=row[0], originator_id=row[1], originator_version=row[2],
                                  topic=row[3], state=bytes(row[4]))
                     for row in curs.fetchall()]
        start = end
        if batch:
            yield batch
