"""S7: an hour of normal operation on a poor cellular link."""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Callable
from typing import Any

from bench.lab import traces
from bench.lab.runner import Recorder, Repetition
from bench.lab.state import Dynamics
from bench.lab.stats import percentile
from bench.lab.testbed import POLL_S, Watch, testbed
from bench.netlab import Site


async def cellular_day(rep: Repetition, record: Recorder) -> dict[str, Any]:
    """Every site's uplink follows the scenario's capacity trace (``[link] trace``) while EVs
    come and go, and every ``control_every_s`` the cloud limits a station drawn from the
    repetition's seed (alternating 7.4 and 11 kW). Figures: the staleness of the cloud's
    view of every session (from a change at the station until the cloud shows it), and the
    control latency (from the cloud's write until the station took it: for OCPP, until the
    charger answered its SetChargingProfile)."""
    scenario = rep.scenario
    parameters = scenario.parameters
    if not scenario.link.trace:
        raise ValueError(f"{scenario.name}: a cellular day needs [link] trace")
    steps = traces.load(scenario.link.trace)
    dynamics = Dynamics(idle_mean_s=float(parameters.get("idle_mean_s", 60.0)),
                        session_mean_s=float(parameters.get("session_mean_s", 120.0)))
    every_s = float(parameters.get("control_every_s", 10.0))
    poll_s = float(parameters.get("poll_s", POLL_S))  # staleness below it is not resolved
    watch = Watch(record)
    oracle, note = watch.oracle, watch.note
    controls: list[float] = []
    failed = 0
    rng = random.Random(rep.seed("controls"))

    async with testbed(rep, dynamics=dynamics) as (lab, system):
        addresses = await system.addresses()
        began = time.monotonic()
        base = scenario.link.profile()

        def clock() -> float:
            return time.monotonic() - began

        def cutter(site: Site) -> Callable[[bool], None]:
            def cut(dead: bool) -> None:
                if dead:
                    site.outage("drop")
                else:
                    site.restore()
            return cut

        followers = [asyncio.create_task(traces.replay(steps, base, site.set_profile,
                                                       cutter(site), clock))
                     for site in lab.sites.values()]

        async def control(n: int, address: str) -> None:
            nonlocal failed
            sent = time.monotonic()
            try:
                await system.control(address, 7400.0 if n % 2 else 11000.0)
            except Exception as exc:  # no answer, or a refusal: a control that failed
                failed += 1
                record(clock(), "control_failed", address, type(exc).__name__)
            else:
                controls.append(time.monotonic() - sent)
                record(clock(), "latency", "control", round(controls[-1], 6))

        in_flight: set[asyncio.Task[None]] = set()

        async def controlling() -> None:
            """A control every ``every_s``, on the clock: the same moments and stations for
            both architectures, however long each takes."""
            n = 0
            while True:
                n += 1
                await asyncio.sleep(max(0.0, n * every_s - clock()))  # the operator's schedule
                task = asyncio.create_task(control(n, rng.choice(addresses)))
                in_flight.add(task)
                task.add_done_callback(in_flight.discard)

        controller = asyncio.create_task(controlling())
        try:
            await system.animate()
            while clock() < scenario.duration_s:
                t = clock()
                note(t, "truth", await system.truth())
                note(clock(), "seen", system.view())
                await asyncio.sleep(poll_s)  # the oracle's sampling
        finally:
            unfinished = len(in_flight)  # still waiting for their answers at the end
            tasks = [*followers, controller, *in_flight]
            for task in tasks:
                task.cancel()
            for task, outcome in zip(tasks, await asyncio.gather(*tasks, return_exceptions=True),
                                     strict=True):
                if isinstance(outcome, Exception):  # a trace follower that died, say
                    raise RuntimeError(f"{task.get_name()} failed") from outcome
    staleness = oracle.staleness(since=watch.baseline if watch.baseline is not None else 0.0)
    measured = staleness.delays_s
    return {
        "stations": len(addresses),
        "changes": len(measured) + staleness.unresolved,
        "staleness_p50_s": round(percentile(measured, 50), 3),
        "staleness_p99_s": round(percentile(measured, 99), 3),
        "staleness_unresolved": staleness.unresolved,
        "controls": len(controls) + failed + unfinished,
        "controls_unfinished": unfinished,
        "control_p50_ms": round(percentile(controls, 50) * 1000, 1),
        "control_p99_ms": round(percentile(controls, 99) * 1000, 1),
        "controls_failed": failed,
    }


__all__ = ["cellular_day"]
