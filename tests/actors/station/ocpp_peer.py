"""A charger of a test's own for ``OcppCharger`` without a broker or a socket: the gateway's
end of a WebSocket in memory (``Wire``), the charger speaking OCPP-J over it (``Peer``), and
an ``OcppCharger`` attached to a plain station tree (``attached``)."""

from __future__ import annotations

import asyncio
import itertools
import json
from collections.abc import Sequence
from typing import Any

from actors.station.ocpp.charger import ChargerSettings, OcppCharger
from actors.testing.clock import FakeClock
from object_model.tree import ObjectTree, Operation, TransactionCommitted


class Wire:
    """The gateway's end of a WebSocket, in memory: what the charger sends is queued for
    ``recv``; what the gateway sends is kept in ``out``."""

    def __init__(self) -> None:
        self.incoming: asyncio.Queue[str | None] = asyncio.Queue()
        self.out: asyncio.Queue[list[Any]] = asyncio.Queue()

    async def send(self, message: str) -> None:
        self.out.put_nowait(json.loads(message))

    async def recv(self) -> str | bytes:
        text = await self.incoming.get()
        if text is None:
            raise ConnectionError("closed")
        return text

    async def close(self, code: int = 1000, reason: str = "") -> None:
        self.incoming.put_nowait(None)


class Peer:
    """The charger: sends calls and reads the gateway's answers and calls, in order."""

    def __init__(self, gateway: OcppCharger) -> None:
        self.gateway = gateway
        self.wire = Wire()
        self.ids = itertools.count(1)
        self.calls: list[list[Any]] = []  # the gateway's calls, as received
        self.serving: asyncio.Task[None] | None = None

    def connect(self) -> None:
        self.wire = Wire()
        self.serving = asyncio.create_task(self.gateway.serve(self.wire))

    async def disconnect(self) -> None:
        await self.wire.close()
        if self.serving is not None:
            await self.serving

    def send(self, frame: list[Any]) -> None:
        self.wire.incoming.put_nowait(json.dumps(frame))

    async def next_frame(self) -> list[Any]:
        frame = await asyncio.wait_for(self.wire.out.get(), 5)
        if frame[0] == 2:
            self.calls.append(frame)
        return frame

    async def call(self, action: str, payload: dict[str, Any]) -> list[Any]:
        """Our call, and the gateway's answer (its calls meanwhile are kept, unanswered)."""
        message_id = f"c{next(self.ids)}"
        self.send([2, message_id, action, payload])
        while True:
            frame = await self.next_frame()
            if frame[0] != 2 and frame[1] == message_id:
                return frame

    async def expect_call(self, action: str) -> list[Any]:
        while True:
            frame = await self.next_frame()
            if frame[0] == 2 and frame[2] == action:
                return frame

    async def boot(self, firmware: str = "1.0") -> dict[str, Any]:
        answer = await self.call("BootNotification", {"reason": "PowerUp", "chargingStation": {
            "model": "M", "vendorName": "V", "firmwareVersion": firmware}})
        assert answer[0] == 3, answer
        return dict(answer[2])


def attached(onboarding: bool = False) -> tuple[OcppCharger, ObjectTree]:
    clock = FakeClock()
    charger = OcppCharger("cs-1", ChargerSettings(onboarding=onboarding), clock=clock)
    tree = charger.initial_tree("cs-1", clock.now_us())

    def report(ops: Sequence[Operation]) -> TransactionCommitted | None:
        return tree.apply(list(ops)) if ops else None

    async def durable(revision: int) -> None:
        return None

    charger.attach(tree, report, clock.now_us(), durable)
    return charger, tree


__all__ = ["Peer", "Wire", "attached"]
