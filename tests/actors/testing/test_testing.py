"""The shared testing module: time that moves only when told, and waits with a deadline."""

from __future__ import annotations

import asyncio

import pytest

from actors.testing import FakeClock, until
from actors.testing.clock import T0_US


async def test_a_fake_sleep_ends_only_when_time_reaches_it() -> None:
    clock = FakeClock()
    woke: list[float] = []

    async def sleeper(seconds: float) -> None:
        await clock.sleep(seconds)
        woke.append(clock.monotonic())

    tasks = [asyncio.create_task(sleeper(s)) for s in (30.0, 1.0)]
    await until(lambda: clock.sleeping == 2, "both asleep")
    clock.advance(0.999)
    await asyncio.sleep(0)  # a yield: what may run, runs
    assert woke == []
    clock.advance(0.001)
    await until(lambda: woke == [1.0], "the 1 s sleep over")
    clock.advance(29.0)
    await asyncio.gather(*tasks)
    assert woke == [1.0, 30.0] and clock.now_us() == T0_US + 30_000_000


async def test_a_fake_wait_ends_with_its_event_or_its_time() -> None:
    clock = FakeClock()
    event = asyncio.Event()
    waiting = asyncio.create_task(clock.wait(event, 10.0))
    await until(lambda: clock.sleeping == 1, "the wait armed")
    event.set()
    assert await waiting is True
    event.clear()
    waiting = asyncio.create_task(clock.wait(event, 10.0))
    await until(lambda: clock.sleeping == 1, "the wait armed")
    clock.advance(10.0)
    assert await waiting is False and clock.sleeping == 0


async def test_time_never_goes_back() -> None:
    with pytest.raises(ValueError):
        FakeClock().advance(-1)


async def test_until_names_what_it_waited_for() -> None:
    with pytest.raises(AssertionError, match=r"the impossible: not within 0\.05 s"):
        await until(lambda: False, "the impossible", 0.05)

    async def later() -> list[int]:
        return [1]

    await until(later, "an awaited, truthy condition")
