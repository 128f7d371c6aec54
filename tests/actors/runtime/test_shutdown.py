"""Stopping a process of actors: a signal halts what started and cuts the start short; the
staged stop halts every actor before any flushes, keeps its deadline, and always closes the
stores. (The whole of it, on a saturated real process: tests/integration/test_stopping.py.)"""

from __future__ import annotations

import asyncio
import os
import signal
from collections.abc import Iterator, Sequence

import pytest

from actors.runtime.actor import Actor
from actors.runtime.shutdown import StopRequested, StopSignals, halt_when_stopping, shut_down
from broker_bridge import Endpoint
from broker_bridge.memory import MemoryNetwork
from object_model import Role


@pytest.fixture
def own_handlers() -> Iterator[None]:
    """Put back the process's handlers: a StopSignals that saw a signal leaves forcing ones."""
    saved = {sig: signal.getsignal(sig) for sig in (signal.SIGINT, signal.SIGTERM)}
    yield
    for sig, handler in saved.items():
        signal.signal(sig, handler)


async def test_a_signal_halts_what_the_start_registered_and_cuts_the_start_short(
        own_handlers: None) -> None:
    said: list[str] = []
    halted: list[str] = []
    unwound = asyncio.Event()

    async def start() -> None:
        halt_when_stopping(lambda: halted.append("host"))
        os.kill(os.getpid(), signal.SIGTERM)
        try:
            await asyncio.Event().wait()  # a start that would go on for minutes
        finally:
            assert halted == ["host"], "halted before the start unwinds"
            unwound.set()

    async with StopSignals(grace_s=60, say=said.append) as signals:
        with pytest.raises(StopRequested, match="SIGTERM"):
            await signals.guard(start())
        signals.disarm()
    assert unwound.is_set() and signals.signal is signal.SIGTERM
    assert signals.requested.is_set()
    assert said and "stopping cleanly" in said[0]
    halt_when_stopping(lambda: halted.append("outside"))  # no guard here: nothing to do
    assert halted == ["host"]


async def test_work_that_ends_before_any_signal_is_left_alone(own_handlers: None) -> None:
    async def start() -> int:
        halt_when_stopping(lambda: pytest.fail("halted without a signal"))
        return 7

    async with StopSignals(grace_s=60) as signals:
        assert await signals.guard(start()) == 7
    assert signals.signal is None and not signals.requested.is_set()


class Flusher(Actor):
    """Records, when its ``on_stop`` runs, which actors were still running."""

    role = Role.STATION
    seen: list[tuple[str, list[str]]] = []
    everyone: Sequence[Actor] = ()
    hang = False

    async def on_stop(self) -> None:
        Flusher.seen.append((self.address, [a.address for a in Flusher.everyone
                                            if a._running]))
        if self.hang:
            await asyncio.Event().wait()  # a flush that would never end


class Store:
    def __init__(self) -> None:
        self.closed = False

    async def close(self, timeout: float) -> None:
        self.closed = True


async def test_every_actor_halts_before_any_flushes_and_the_stores_always_close() -> None:
    net = MemoryNetwork()
    endpoints = [await Endpoint(net.transport(), name=f"ep{i}").start() for i in range(2)]
    actors = [Flusher(f"a{i}", endpoints[i % 2]) for i in range(6)]
    Flusher.seen, Flusher.everyone = [], actors
    actors[3].hang = True
    for actor in actors:
        await actor.start()
    ticking = [actor.spawn(asyncio.Event().wait(), "ticks") for actor in actors]
    stores = [Store(), Store()]
    loop = asyncio.get_running_loop()
    began = loop.time()
    await shut_down(actors, endpoints, stores, within=1.0)
    assert loop.time() - began < 2.0  # the hanging flush was cut short at its deadline
    assert sorted(address for address, _ in Flusher.seen) == [f"a{i}" for i in range(6)]
    assert all(running == [] for _, running in Flusher.seen)  # all halted before any flush
    assert all(task.cancelled() for task in ticking)
    assert all(store.closed for store in stores)
