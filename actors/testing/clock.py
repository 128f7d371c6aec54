"""A clock for tests: time moves only when the test says so."""

from __future__ import annotations

import asyncio
import heapq
import itertools

T0_US = 1_748_779_200_000_000  # 2025-06-01 12:00 UTC: a fixed, realistic wall time


class FakeClock:
    """A ``Clock`` whose wall and monotonic time move together, only by ``advance``.

    ``sleep`` (and the time limit of ``wait``) waits until ``advance`` has moved the clock
    past its deadline (``sleep(0)`` only yields to the loop), so a retry loop with a 30 s backoff runs in microseconds of test
    time, and a test can see that nothing happens before the deadline."""

    def __init__(self, now_us: int = T0_US) -> None:
        self._now_us = now_us
        self._origin_us = now_us
        self._sleepers: list[tuple[int, int, asyncio.Future[None]]] = []
        self._order = itertools.count()

    def now_us(self) -> int:
        return self._now_us

    def monotonic(self) -> float:
        return (self._now_us - self._origin_us) / 1e6

    async def sleep(self, seconds: float) -> None:
        if seconds <= 0:
            await asyncio.sleep(0)
            return
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        heapq.heappush(self._sleepers,
                       (self._now_us + round(seconds * 1e6), next(self._order), future))
        await future

    async def wait(self, event: asyncio.Event, seconds: float | None) -> bool:
        if event.is_set():
            return True
        waiter = asyncio.ensure_future(event.wait())
        sleeper = asyncio.ensure_future(self.sleep(seconds)) if seconds is not None else None
        try:
            await asyncio.wait([f for f in (waiter, sleeper) if f is not None],
                               return_when=asyncio.FIRST_COMPLETED)
        finally:
            for future in (waiter, sleeper):
                if future is not None and not future.done():
                    future.cancel()
        return event.is_set()

    @property
    def sleeping(self) -> int:
        """Sleeps still waiting for their deadline."""
        return sum(1 for _, _, future in self._sleepers if not future.done())

    def advance(self, seconds: float) -> None:
        """Move time on by ``seconds`` and wake every sleep whose deadline it reached (they
        run once the caller yields to the loop)."""
        if seconds < 0:
            raise ValueError("time does not go back")
        self._now_us += round(seconds * 1e6)
        while self._sleepers and self._sleepers[0][0] <= self._now_us:
            _, _, future = heapq.heappop(self._sleepers)
            if not future.done():
                future.set_result(None)

    def set(self, now_us: int) -> None:
        """Move wall time to ``now_us`` (not backwards), as ``advance`` does."""
        self.advance((now_us - self._now_us) / 1e6)


__all__ = ["T0_US", "FakeClock"]
