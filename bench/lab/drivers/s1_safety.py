"""S1: a safety message behind telemetry on a saturated uplink."""

from __future__ import annotations

import contextlib
import time
from typing import Any

from bench.lab.load import MESSAGE_BYTES, Plan
from bench.lab.runner import Recorder, Repetition
from bench.lab.stats import percentile
from bench.lab.testbed import STRAGGLERS_S, counters, testbed
from bench.sites import poll


async def safety_latency(rep: Repetition, record: Recorder) -> dict[str, Any]:
    """Every site offers ``telemetry_bytes_per_s`` of telemetry (per site) for the run, and
    ``safety_messages`` safety messages (per site) at moments drawn from the repetition's
    seed after the warm-up; latency is from a safety message's raising at its station to the
    cloud CSMS's taking it."""
    scenario = rep.scenario
    parameters = scenario.parameters
    async with testbed(rep) as (lab, system):
        plans = {k: Plan.draw(rep.seed("safety", k), seconds=scenario.duration_s,
                              telemetry_bytes_per_s=float(parameters["telemetry_bytes_per_s"]),
                              safety=int(parameters["safety_messages"]),
                              stations=scenario.sites.stations, quiet_s=scenario.warmup_s,
                              message_bytes=int(parameters.get("telemetry_message_bytes",
                                                               MESSAGE_BYTES)))
                 for k in lab.sites}
        start_at = time.time() + 1.0
        before = {k: await counters(site) for k, site in lab.sites.items()}
        telemetry_before = await system.telemetry_seen()
        offered = await system.offer(plans, start_at)
        measured_s = time.time() - start_at
        after = {k: await counters(site) for k, site in lab.sites.items()}
        telemetry_after = await system.telemetry_seen()
        raised = {(k, station, seq): at for k, answer in offered.items()
                  for at, station, seq in answer["raised"]}

        async def arrived() -> bool:
            return len({(k, s, q) for _, k, s, q in await system.safety_seen()}) >= len(raised)

        with contextlib.suppress(RuntimeError):  # what never came is counted as lost
            await poll("the safety messages still on their way", arrived, STRAGGLERS_S)
        seen: dict[tuple[int, int, int], float] = {}
        for at, k, station, seq in await system.safety_seen():
            seen.setdefault((k, station, seq), at)  # the first arrival of each
    latencies = []
    for key, at in sorted(raised.items(), key=lambda item: item[1]):
        name = f"site{key[0]}/station{key[1]}"
        record(at - start_at, "truth", name, key[2])
        if key in seen:
            record(seen[key] - start_at, "seen", name, key[2])
            record(at - start_at, "latency", "safety", round(seen[key] - at, 6))
            latencies.append(seen[key] - at)
    up_bytes = sum(after[k].up.bytes - before[k].up.bytes for k in lab.sites)
    delivered = sum(telemetry_after.get(k, 0) - telemetry_before.get(k, 0) for k in lab.sites)
    offered_messages = sum(a["offered"] for a in offered.values())
    size = plans[1].message_bytes
    sites = len(lab.sites)
    return {
        "safety_messages": len(raised),
        "safety_lost": len(raised) - len(latencies),
        "safety_p50_ms": round(percentile(latencies, 50) * 1000, 1),
        "safety_p99_ms": round(percentile(latencies, 99) * 1000, 1),
        "safety_max_ms": round(max(latencies, default=float("nan")) * 1000, 1),
        "telemetry_offered_kbit_per_site": round(
            offered_messages * size * 8 / 1000 / measured_s / sites, 1),
        "telemetry_delivered_kbit_per_site": round(
            delivered * size * 8 / 1000 / measured_s / sites, 1),
        "telemetry_shed_share": round(
            sum(a["shed"] for a in offered.values()) / max(1, offered_messages), 3),
        "uplink_up_kbit_per_site": round(up_bytes * 8 / 1000 / measured_s / sites, 1),
    }


__all__ = ["safety_latency"]
