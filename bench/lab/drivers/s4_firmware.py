"""S4: a firmware image to every station of one site."""

from __future__ import annotations

import random
import time
from typing import Any

from bench.lab.runner import Recorder, Repetition
from bench.lab.testbed import counters, testbed
from bench.sites import poll


async def firmware_fanout(rep: Repetition, record: Recorder) -> dict[str, Any]:
    """Every station of site 1 is told to install one image of ``image_kb`` (random bytes
    from the repetition's seed, signed as the manufacturer's); figures are the time until
    every station's task ended, and the bytes that crossed the uplink (towards the site, and
    over the image's size: 1 is one copy for the whole site)."""
    scenario = rep.scenario
    size = int(float(scenario.parameters.get("image_kb", 1024)) * 1024)
    image = b"FW:2.0.0\n" + random.Random(rep.seed("image")).randbytes(size)
    task = f"fw-{rep.number}"
    async with testbed(rep) as (lab, system):
        site = lab.sites[1]
        before = await counters(site)
        began = time.monotonic()
        targets = await system.update_firmware(image, "2.0.0", task)
        done: dict[str, float] = {}

        async def ended() -> bool:
            for station, state in system.task_states(task).items():
                if station in targets and state in ("succeeded", "failed") and \
                        station not in done:
                    done[station] = time.monotonic() - began
                    record(done[station], "task", station, state)
            return len(done) == len(targets)

        await poll("every station's firmware task ended", ended, 1800, every=0.25)
        seconds = time.monotonic() - began
        after = await counters(site)
        states = system.task_states(task)
    down = after.down.bytes - before.down.bytes
    return {
        "stations": len(targets),
        "image_bytes": len(image),
        "succeeded": sum(states.get(t) == "succeeded" for t in targets),
        "firmware_s": round(seconds, 2),
        "uplink_down_bytes": down,
        "uplink_up_bytes": after.up.bytes - before.up.bytes,
        "uplink_copies_of_image": round(down / len(image), 2),
    }


__all__ = ["firmware_fanout"]
