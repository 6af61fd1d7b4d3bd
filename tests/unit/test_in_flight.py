"""Requests that miss the session cache together share one asking (api.in_flight)."""

from __future__ import annotations

import asyncio

import pytest

from api.in_flight import InFlight


def test_concurrent_asks_for_a_key_share_one_answer_and_later_ones_ask_again() -> None:
    asked: list[str] = []

    async def ask(key: str) -> str:
        asked.append(key)
        number = len(asked)
        await asyncio.sleep(0.01)
        return f"answer {number}"

    async def run() -> None:
        in_flight: InFlight[str] = InFlight()
        first = await asyncio.gather(*(in_flight.run("t", lambda: ask("t")) for _ in range(8)),
                                     in_flight.run("u", lambda: ask("u")))
        assert first == ["answer 1"] * 8 + ["answer 2"]
        assert await in_flight.run("t", lambda: ask("t")) == "answer 3"

    asyncio.run(run())
    assert asked == ["t", "u", "t"]


def test_an_error_reaches_everyone_who_waited_for_it() -> None:
    async def refuse() -> str:
        await asyncio.sleep(0.01)
        raise PermissionError("the token is unknown")

    async def run() -> list[BaseException | str]:
        in_flight: InFlight[str] = InFlight()
        return await asyncio.gather(*(in_flight.run("t", refuse) for _ in range(3)),
                                    return_exceptions=True)

    outcomes = asyncio.run(run())
    assert all(isinstance(o, PermissionError) for o in outcomes), outcomes


def test_when_the_asker_is_cancelled_one_of_those_waiting_asks() -> None:
    asked = 0

    async def ask() -> str:
        nonlocal asked
        asked += 1
        await asyncio.sleep(0.05 if asked == 1 else 0.01)
        return f"answer {asked}"

    async def run() -> list[str]:
        in_flight: InFlight[str] = InFlight()
        asker = asyncio.ensure_future(in_flight.run("t", ask))
        await asyncio.sleep(0)
        waiting = [asyncio.ensure_future(in_flight.run("t", ask)) for _ in range(3)]
        await asyncio.sleep(0.01)
        asker.cancel()
        with pytest.raises(asyncio.CancelledError):
            await asker
        return await asyncio.gather(*waiting)

    assert asyncio.run(run()) == ["answer 2"] * 3
    assert asked == 2
