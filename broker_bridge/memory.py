"""An in-memory transport for unit tests of actor logic (never the proof that delivery works:
that is the XMPP adapter's job, tested against a real broker).

A ``MemoryNetwork`` plays the broker: it routes frames between ``MemoryTransport``s by address,
fans group frames out to every member, and lets a test cut a transport's link, drop frames or
count what crossed. Delivery is asynchronous (``call_soon``), like a real network.
"""

from __future__ import annotations

import asyncio
import random
from collections import defaultdict

from broker_bridge.envelope import is_group
from broker_bridge.transport import FrameCallback, LinkCallback, Origin, WritableCallback


def _ignore_frame(origin: Origin, data: bytes) -> None:
    pass


def _ignore_link(up: bool) -> None:
    pass


def _ignore() -> None:
    pass


class MemoryNetwork:
    """The broker of a test: routes frames between transports."""

    def __init__(self, *, loss: float = 0.0, seed: int = 0) -> None:
        self.loss = loss
        self._rng = random.Random(seed)
        self._by_address: dict[str, MemoryTransport] = {}
        self._groups: dict[str, set[MemoryTransport]] = defaultdict(set)
        self.frames_routed = 0

    def transport(self, name: str = "") -> MemoryTransport:
        return MemoryTransport(self, name)

    def _route(self, sender: MemoryTransport, destination: str, data: bytes) -> None:
        self.frames_routed += 1
        if is_group(destination):
            targets = [t for t in self._groups.get(destination, ()) if t is not sender]
        else:
            target = self._by_address.get(destination)
            targets = [target] if target is not None else []
        loop = asyncio.get_running_loop()
        for target in targets:
            if not target.connected or self._rng.random() < self.loss:
                continue
            loop.call_soon(target._arrive, sender.origin(broadcast=is_group(destination)), data)


class MemoryTransport:
    """One endpoint's link to a ``MemoryNetwork``."""

    def __init__(self, network: MemoryNetwork, name: str = "") -> None:
        self.network = network
        self.name = name
        self.on_frame: FrameCallback = _ignore_frame
        self.on_link: LinkCallback = _ignore_link
        self.on_writable: WritableCallback = _ignore
        self._addresses: list[str] = []
        self._up = False
        self.frames_sent = 0
        self.bytes_sent = 0
        self.frames_by_destination: dict[str, int] = defaultdict(int)

    @property
    def first_address(self) -> str | None:
        return self._addresses[0] if self._addresses else None

    def origin(self, *, broadcast: bool) -> Origin:
        """What receivers learn about this transport's frames: it may send as the addresses it
        registered (like a broker that authenticated each connection)."""
        return Origin(self.first_address, self._addresses.__contains__, broadcast)

    async def start(self, *, wait: bool = True) -> None:
        self.set_link(True)

    async def stop(self) -> None:
        self._up = False
        for address in self._addresses:
            if self.network._by_address.get(address) is self:
                del self.network._by_address[address]
        for members in self.network._groups.values():
            members.discard(self)

    def set_link(self, up: bool) -> None:
        """Cut or restore the link (frames sent while it is down are lost, as with a dead
        broker connection)."""
        if up != self._up:
            self._up = up
            self.on_link(up)

    def send_frame(self, destination: str, data: bytes) -> None:
        if not self._up:
            return
        self.frames_sent += 1
        self.bytes_sent += len(data)
        self.frames_by_destination[destination] += 1
        self.network._route(self, destination, data)

    def budget(self, *, urgent: bool = False) -> int | None:
        return None

    async def add_address(self, address: str) -> None:
        self._addresses.append(address)
        self.network._by_address[address] = self

    async def join_group(self, group: str) -> None:
        self.network._groups[group].add(self)

    @property
    def connected(self) -> bool:
        return self._up

    def _arrive(self, origin: Origin, data: bytes) -> None:
        if self._up:
            self.on_frame(origin, data)
