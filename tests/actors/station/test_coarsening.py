"""A station in a process that cannot keep up: with its pace stretched, the simulator ticks
less often (covering the same simulated time) and the publisher coalesces more commits per
notification. On a fake clock: the stretch is set as the endpoint's lag probe would set it."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any

from actors.runtime.replication.publisher import Publisher
from actors.station.simulated import SimulatedStation, SimulatorSettings
from actors.testing import FakeClock, until
from broker_bridge.pace import Pace
from object_model import PropertyValueUpdate
from object_model.station import new_station_tree
from object_model.tree import Operation, TransactionCommitted

SECOND_US = 1_000_000


async def test_a_stretched_pace_ticks_less_often_over_the_same_simulated_time() -> None:
    clock, pace = FakeClock(), Pace()
    station = SimulatedStation(SimulatorSettings(tick_s=1.0, speed=10.0), clock=clock)
    tree = station.initial_tree("cs-1", clock.now_us())
    ticks: list[int] = []

    def report(ops: Sequence[Operation]) -> TransactionCommitted | None:
        ticks.append(station.simulated_us)
        return tree.apply(ops)

    start = clock.now_us()
    station.attach(tree, report, start)
    runner = asyncio.create_task(station.run(pace))
    try:
        await until(lambda: clock.sleeping == 1, "the simulator waits for its tick")
        clock.advance(1.0)
        await until(lambda: station.simulated_us == start + 10 * SECOND_US, "one tick, on time")
        await until(lambda: clock.sleeping == 1, "waiting for the next tick")
        pace.stretch = 4  # the process fell behind (read when the next wait begins)
        clock.advance(1.0)
        await until(lambda: station.simulated_us == start + 20 * SECOND_US, "the second tick")
        await until(lambda: clock.sleeping == 1, "waiting for the next, coarser, tick")
        for _ in range(3):
            clock.advance(1.0)
            await asyncio.sleep(0)  # not a wait: gives a (wrong) early tick its chance to run
            assert station.simulated_us == start + 20 * SECOND_US, "no tick before 4 s"
        clock.advance(1.0)
        await until(lambda: station.simulated_us == start + 60 * SECOND_US,
                    "one tick covering four ticks' worth of simulated time")
        assert station.ticks_coarsened == 3
        pace.stretch = 1  # caught up: back to every second
        await until(lambda: clock.sleeping == 1, "waiting for the next tick")
        clock.advance(4.0)  # the wait begun at stretch 4 ends
        await until(lambda: station.simulated_us == start + 100 * SECOND_US, "that tick")
        await until(lambda: clock.sleeping == 1, "waiting for the next tick")
        clock.advance(1.0)
        await until(lambda: station.simulated_us == start + 110 * SECOND_US,
                    "ticks every second again")
        assert station.ticks_coarsened == 6
    finally:
        runner.cancel()


class Recorder:
    """Stands in for the actor: records what the publisher sends."""

    address = "cs-1"

    def __init__(self, clock: FakeClock) -> None:
        self.clock = clock
        self.sent: list[PropertyValueUpdate] = []

    def send(self, destination: str, message: PropertyValueUpdate, **_: Any) -> None:
        self.sent.append(message)


async def test_a_stretched_pace_coalesces_more_commits_per_notification() -> None:
    clock, pace = FakeClock(), Pace()
    tree = new_station_tree("cs-1")
    actor = Recorder(clock)
    publisher = Publisher(actor, tree, interval=0.25, pace=pace)  # type: ignore[arg-type]
    publisher.subscribe("csms", from_revision=tree.revision)
    start = tree.revision
    runner = asyncio.create_task(publisher.run())
    try:
        pace.stretch = 4  # behind: a notification per second instead of per 0.25 s
        for value in ("one", "two", "three"):
            tree.write("identity/display_name", value)
        await until(lambda: clock.sleeping == 1, "the publisher gathers commits")
        clock.advance(0.25)
        await asyncio.sleep(0)  # not a wait: gives a (wrong) early notification its chance
        assert actor.sent == []
        tree.write("identity/display_name", "four")  # joins the same notification
        clock.advance(0.75)
        await until(lambda: len(actor.sent) == 1, "one notification after 1 s")
        (update,) = actor.sent
        assert (update.from_revision, update.to_revision) == (start, start + 4)
        assert [v for _, _, v in update.upserts] == ["four"]  # a value changed 4 times, sent once
        assert publisher.coalesced == 3
    finally:
        runner.cancel()
        publisher.close()
