"""The one clock: every time read and every timed wait of the bridge and the actors goes
through a ``Clock`` passed in, so that tests move time by hand (``actors.testing.FakeClock``)
and the demo runs a site's day faster (``actors.app.demo.SiteTime``).

Two kinds of time, never mixed: ``now_us`` is wall time (microseconds since the Unix epoch),
what envelopes, envelopes' expiry and tree values carry across machines; ``monotonic`` is
seconds that only move forward, what intervals, deadlines and liveness are measured in.
"""

from __future__ import annotations

import asyncio
import time
from typing import Protocol


class Clock(Protocol):
    """What reads time and waits for it."""

    def now_us(self) -> int:
        """Wall time: microseconds since the Unix epoch."""
        ...

    def monotonic(self) -> float:
        """Seconds from an arbitrary origin that never go back."""
        ...

    async def sleep(self, seconds: float) -> None:
        """Wait ``seconds`` of this clock's time."""
        ...

    async def wait(self, event: asyncio.Event, seconds: float | None) -> bool:
        """Wait until ``event`` is set or ``seconds`` of this clock's time passed (``None``:
        no limit); whether it was set."""
        ...


class WallClock:
    """The machine's clocks."""

    def now_us(self) -> int:
        return time.time_ns() // 1000

    def monotonic(self) -> float:
        return time.monotonic()

    async def sleep(self, seconds: float) -> None:
        await asyncio.sleep(seconds)

    async def wait(self, event: asyncio.Event, seconds: float | None) -> bool:
        # asyncio.timeout, not wait_for: in Python 3.11 wait_for can swallow a cancellation
        # that coincides with the wake-up, and a loop waiting here would outlive its stop
        try:
            async with asyncio.timeout(seconds):
                await event.wait()
        except TimeoutError:
            return False
        return True


WALL_CLOCK = WallClock()
"""The clock of everything not given another."""

__all__ = ["WALL_CLOCK", "Clock", "WallClock"]
