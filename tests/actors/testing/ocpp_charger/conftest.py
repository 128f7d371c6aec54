"""Fixtures of the simulated charger's tests: a CSMS, a fake clock, a charger running."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest

from actors.testing import FakeClock, until
from actors.testing.ocpp_charger import SimulatedCharger
from tests.actors.testing.ocpp_charger.csms import Csms

IDENTITY, PASSWORD = "CP-1", "a-password-of-16+"


@pytest.fixture
async def csms() -> AsyncIterator[Csms]:
    async with Csms() as server:
        yield server
    assert server.violations == []  # every message the charger sent fits its schema


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@contextlib.asynccontextmanager
async def running(charger: SimulatedCharger) -> AsyncIterator[SimulatedCharger]:
    """``charger`` running until the block ends."""
    task = asyncio.create_task(charger.run())
    try:
        yield charger
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


def charger_of(csms: Csms, clock: FakeClock, **options: Any) -> SimulatedCharger:
    return SimulatedCharger(IDENTITY, PASSWORD, csms.url, clock=clock, seed=1, **options)


async def advance_until(clock: FakeClock, seconds: float, condition: Callable[[], Any],
                        what: str, *, steps: int = 10) -> None:
    """Move ``clock`` on by ``seconds`` at a time until ``condition()`` holds (the charger
    may arm its timer a moment after the test looks)."""
    for _ in range(steps):
        clock.advance(seconds)
        with contextlib.suppress(AssertionError):
            await until(condition, what, 0.3)
            return
    raise AssertionError(f"{what}: not after {steps} x {seconds:g} s of clock time")
