"""What the write path renders and counts more cheaply than before renders and counts the
same: the answer to a committed write, the access log's metrics, and a thread's result
handed to the event loop (issue 19, session 12)."""

from __future__ import annotations

import asyncio
import json
import threading
from concurrent.futures import Future
from datetime import UTC, datetime, timedelta, timezone
from types import SimpleNamespace
from typing import Any, cast

import pytest
from fastapi.responses import JSONResponse
from prometheus_client import generate_latest

from api.metrics import Metrics
from api.schemas import WrittenOut
from api.writes import written
from application.runtime import Runtime
from domain.group_commit import Awaited, GroupCommitter
from domain.subject import Subject

CASES = [
    ("001", 8, "LB1", datetime(2021, 3, 1, 7, 0, 12, 345678, tzinfo=UTC), 201),
    ("002", 1, None, datetime(2021, 3, 1, tzinfo=UTC), 200),
    ('ü "q" \\ /\u2028\x1f', 12, "é€", datetime(2021, 3, 1, tzinfo=timezone(timedelta(hours=8))),
     201),
]


@pytest.mark.parametrize(("code", "version", "record_id", "at", "status"), CASES)
def test_a_written_answer_is_the_json_response_it_was(code: str, version: int,
                                                      record_id: str | None, at: datetime,
                                                      status: int) -> None:
    subject = cast(Subject, SimpleNamespace(subject_code=code, version=version,
                                            modified_on=at))
    before = JSONResponse(WrittenOut(subject=code, version=version, record_id=record_id,
                                     recorded_at=at).model_dump(mode="json"),
                          status_code=status, headers={"ETag": f'"{version}"'})
    now = written(subject, record_id, status)
    assert isinstance(now, JSONResponse)
    assert (now.status_code, now.body, now.raw_headers) == \
        (before.status_code, before.body, before.raw_headers)
    assert json.loads(now.body)["subject"] == code


def test_answered_counts_what_the_labelled_metrics_counted() -> None:
    ours = Metrics(cast(Runtime, SimpleNamespace()))
    theirs = Metrics(cast(Runtime, SimpleNamespace()))
    answers = [("POST", "/v1/x", 201, 0.004), ("POST", "/v1/x", 201, 0.3),
               ("GET", "/v1/y", 404, 0.001), ("POST", "/v1/x", 409, 12.0)]
    for method, route, status, seconds in answers:
        ours.answered(method, route, status, seconds)
        theirs.requests.labels(method, route, str(status)).inc()
        theirs.latency.labels(method, route).observe(seconds)
    assert _values(ours) == _values(theirs)


def _values(metrics: Metrics) -> list[bytes]:
    """The exposition less the ``_created`` times (when each child was made)."""
    return [line for line in generate_latest(metrics.registry).splitlines()
            if b"_created" not in line]


def _settle(done: Awaited[Any] | Future[Any], value: Any = None,
            error: BaseException | None = None) -> None:
    if error is not None:
        done.set_exception(error)
    else:
        done.set_result(value)


def test_awaited_hands_a_threads_result_or_error_to_the_loop() -> None:
    async def run() -> None:
        loop = asyncio.get_running_loop()
        done: Awaited[int] = Awaited()
        loop.run_in_executor(None, _settle, done, 7)
        assert await done.future == 7
        failed: Awaited[int] = Awaited()
        loop.run_in_executor(None, _settle, failed, None, ValueError("refused"))
        with pytest.raises(ValueError, match="refused"):
            await failed.future
        ready: Awaited[str] = Awaited()
        ready.set_result("already")  # on the loop's own thread too
        assert await ready.future == "already"

    asyncio.run(run())


def test_a_cancelled_wait_leaves_the_work_to_its_thread() -> None:
    async def run() -> None:
        pending: Awaited[int] = Awaited()
        waiting = asyncio.ensure_future(pending.future)
        await asyncio.sleep(0)
        waiting.cancel()
        with pytest.raises(asyncio.CancelledError):
            await waiting
        # The thread settles it as ever: no InvalidStateError, nothing left unretrieved.
        await asyncio.get_running_loop().run_in_executor(None, _settle, pending, 3)
        failed: Awaited[int] = Awaited()
        failed.future.cancel()
        await asyncio.get_running_loop().run_in_executor(
            None, _settle, failed, None, ValueError("late"))
        await asyncio.sleep(0.01)
        assert pending.future.cancelled() and failed.future.cancelled()

    asyncio.run(run())


def test_a_thread_settling_after_the_loop_closed_changes_nothing() -> None:
    async def make() -> Awaited[int]:
        return Awaited()

    loop = asyncio.new_event_loop()
    done = loop.run_until_complete(make())
    loop.close()
    done.set_result(1)
    done.set_exception(ValueError("gone"))
    assert not done.future.done()


def test_a_committer_whose_waiter_left_with_its_loop_goes_on() -> None:
    # The loop that awaited a batch closes before the batch is stored: the committer thread
    # hands the outcome to nobody and stores the next batch as ever.
    entered, release = threading.Event(), threading.Event()
    stored: list[list[Any]] = []

    def store(events: Any, expected: Any, receipts: Any) -> None:
        entered.set()
        release.wait(5)
        stored.append(list(events))

    committer = GroupCommitter(store)
    try:
        async def submit() -> asyncio.Future[None]:
            return committer.submit_awaited(["first"])

        loop = asyncio.new_event_loop()
        loop.run_until_complete(submit())
        assert entered.wait(5)
        loop.close()
        release.set()
        committer.commit(["second"])
        assert stored == [["first"], ["second"]]
    finally:
        committer.close()
