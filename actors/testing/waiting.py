"""Waiting for a condition with a deadline: what a test does instead of sleeping."""

from __future__ import annotations

import asyncio
import inspect
from collections.abc import Awaitable, Callable
from typing import Any


async def until(condition: Callable[[], Any | Awaitable[Any]], what: str = "the condition",
                timeout: float = 20.0, *, every: float = 0.01) -> None:
    """Return as soon as ``condition()`` (a function, or a coroutine function) is true; after
    ``timeout`` seconds fail with an ``AssertionError`` naming ``what`` was awaited."""
    try:
        async with asyncio.timeout(timeout):
            while True:
                result = condition()
                if inspect.isawaitable(result):
                    result = await result
                if result:
                    return
                await asyncio.sleep(every)
    except TimeoutError:
        raise AssertionError(f"{what}: not within {timeout:g} s") from None


__all__ = ["until"]
