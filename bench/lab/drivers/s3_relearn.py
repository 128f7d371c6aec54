"""S3: a cloud CSMS crash and state re-learn, swept over round-trip time."""

from __future__ import annotations

import asyncio
import dataclasses
import time
from typing import Any

from bench.lab.runner import Recorder, Repetition
from bench.lab.state import Dynamics
from bench.lab.testbed import testbed, uplink_bytes
from bench.sites import poll


async def cloud_relearn(rep: Repetition, record: Recorder) -> dict[str, Any]:
    """For each round-trip time of ``rtts_ms`` (the uplink's delay set to half of it each
    way): the stations live for the warm-up, the cloud CSMS crashes, they live on for
    ``down_s``, then stand still while it restarts; figures per RTT are the time from the
    restart until the cloud knows every station again, the bytes across the uplinks
    meanwhile, and the request-answer exchanges it took per station. Ours: the cloud CSMS's
    process SIGKILLed and started again on its own state, re-learning by resynchronisation
    until every copy's root digest equals its station's. OCPP: the CSMS gone with what it
    held, every charger reconnecting (OCPP's backoff), re-learnt with GetBaseReport before
    its boot is accepted, until every charger is accepted again and every session as it
    holds it."""
    scenario = rep.scenario
    parameters = scenario.parameters
    rtts = [float(x) for x in str(parameters.get("rtts_ms", "20,100,300")).split(",")]
    down_s = float(parameters.get("down_s", 10.0))
    dynamics = Dynamics(idle_mean_s=float(parameters.get("idle_mean_s", 60.0)),
                        session_mean_s=float(parameters.get("session_mean_s", 120.0)))
    figures: dict[str, Any] = {}
    async with testbed(rep, dynamics=dynamics, cloud_process=True) as (lab, system):
        began = time.monotonic()
        for rtt in rtts:
            name = f"rtt{rtt:g}ms"
            profile = dataclasses.replace(scenario.link.profile(), delay_ms=rtt / 2)
            for site in lab.sites.values():
                await asyncio.to_thread(site.set_profile, profile)
            await system.animate()
            await asyncio.sleep(scenario.warmup_s)  # the stations live: a schedule
            counted = (await system.relearn_counters())["requests"]
            record(time.monotonic() - began, "crash", name, "cloud")
            await system.crash()
            await asyncio.sleep(down_s)  # the stations live on while it is down: a schedule
            await system.freeze()
            before = await uplink_bytes(lab)
            restarted = await system.restart()  # from the moment it serves again
            await poll(f"everything re-learnt ({name})", system.relearned, 600, every=0.25)
            seconds = time.monotonic() - restarted
            relearnt = await uplink_bytes(lab) - before
            requests = (await system.relearn_counters())["requests"] - counted
            stations = scenario.sites.stations * len(lab.sites)
            record(time.monotonic() - began, "relearn", name, round(seconds, 3))
            figures[f"relearn_s_{name}"] = round(seconds, 2)
            figures[f"relearn_bytes_{name}"] = relearnt
            figures[f"relearn_requests_per_station_{name}"] = round(requests / stations, 2)
    return figures


__all__ = ["cloud_relearn"]
