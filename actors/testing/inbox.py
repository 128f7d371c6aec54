"""An endpoint callback that keeps what arrives, for tests of delivery."""

from __future__ import annotations

import asyncio
from typing import Any

from broker_bridge.codec import decode_body
from broker_bridge.envelope import Envelope
from broker_bridge.session import SessionEvent


class Inbox:
    """Register it as an address's envelope handler (and ``event`` as its event handler):
    it keeps the envelopes and session events in arrival order."""

    def __init__(self) -> None:
        self.envelopes: list[Envelope] = []
        self.events: list[SessionEvent] = []
        self._changed = asyncio.Event()

    def __call__(self, env: Envelope) -> None:
        self.envelopes.append(env)
        self._changed.set()

    def event(self, event: SessionEvent) -> None:
        self.events.append(event)
        self._changed.set()

    def of_kind(self, kind: str) -> list[Envelope]:
        return [e for e in self.envelopes if e.kind == kind]

    def messages(self, kind: str = "PropertyValueUpdate") -> list[Any]:
        """The decoded messages of ``kind``, in arrival order."""
        return [decode_body(e.kind, e.body) for e in self.of_kind(kind)]

    def numbers(self, kind: str = "PropertyValueUpdate") -> list[int]:
        """The ``epoch`` fields of the updates that arrived: tests number their messages so."""
        return [message.epoch for message in self.messages(kind)]

    async def wait_for(self, count: int, kind: str = "PropertyValueUpdate",
                       timeout: float = 20.0) -> None:
        """Until ``count`` envelopes of ``kind`` arrived (``AssertionError`` after
        ``timeout``)."""
        try:
            async with asyncio.timeout(timeout):
                while len(self.of_kind(kind)) < count:
                    self._changed.clear()
                    await self._changed.wait()
        except TimeoutError:
            raise AssertionError(f"{len(self.of_kind(kind))} of {count} {kind} envelopes "
                                 f"arrived within {timeout:g} s") from None


__all__ = ["Inbox"]
