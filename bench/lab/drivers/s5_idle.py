"""S5: upstream TCP connections and idle bytes per site."""

from __future__ import annotations

import asyncio
import time
from typing import Any

from bench.lab.runner import Recorder, Repetition
from bench.lab.testbed import counters, testbed


async def idle_connections(rep: Repetition, record: Recorder) -> dict[str, Any]:
    """Once everything is joined and the warm-up has passed, nothing happens for the rest of
    the run: the TCP connections crossing each uplink are counted, and the bytes crossing it
    (both ways) are what the architecture costs at rest."""
    scenario = rep.scenario
    async with testbed(rep) as (lab, _):
        await asyncio.sleep(scenario.warmup_s)  # the scenario's warm-up: a schedule
        connections = {k: len(site.uplink_tcp_connections()) for k, site in lab.sites.items()}
        began = time.monotonic()
        before = {k: await counters(site) for k, site in lab.sites.items()}
        window = scenario.duration_s - scenario.warmup_s
        step = min(10.0, window)
        while (elapsed := time.monotonic() - began) < window:
            await asyncio.sleep(min(step, window - elapsed))  # the measurement's sampling
            for k, site in lab.sites.items():
                now = await counters(site)
                record(time.monotonic() - began, "bytes", f"site{k}/up",
                       now.up.bytes - before[k].up.bytes)
                record(time.monotonic() - began, "bytes", f"site{k}/down",
                       now.down.bytes - before[k].down.bytes)
        after = {k: await counters(site) for k, site in lab.sites.items()}
        measured_s = time.monotonic() - began
    sites, stations = len(lab.sites), scenario.sites.stations
    up = sum(after[k].up.bytes - before[k].up.bytes for k in lab.sites) / sites / measured_s
    down = sum(after[k].down.bytes - before[k].down.bytes for k in lab.sites) / sites / measured_s
    for k, count in connections.items():
        record(0.0, "connections", f"site{k}", count)
    return {
        "upstream_tcp_connections": max(connections.values()),
        "idle_up_bytes_per_s": round(up, 1),
        "idle_down_bytes_per_s": round(down, 1),
        "idle_bytes_per_station_per_s": round((up + down) / stations, 2),
    }


__all__ = ["idle_connections"]
