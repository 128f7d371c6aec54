"""S2: a site uplink outage of minutes, then catch-up."""

from __future__ import annotations

import asyncio
import time
from typing import Any

from bench.lab.runner import Recorder, Repetition
from bench.lab.state import Dynamics
from bench.lab.testbed import CATCH_UP_LIMIT_S, POLL_S, Watch, testbed


async def uplink_outage(rep: Repetition, record: Recorder) -> dict[str, Any]:
    """The stations' EVs come and go (``idle_mean_s``, ``session_mean_s``) while site 1's
    uplink is cut as the scenario's outages say; as the last outage ends the stations stand
    still (then the uplink returns: the catch-up's clock and byte count start there), and the
    run goes on until the cloud's view of every EVSE's session equals the truth (or
    ``CATCH_UP_LIMIT_S``). The truth and the view are read every ``POLL_S`` and judged by the
    oracle (``bench.lab.state``, ``bench.lab.oracle``)."""
    scenario = rep.scenario
    parameters = scenario.parameters
    dynamics = Dynamics(idle_mean_s=float(parameters.get("idle_mean_s", 60.0)),
                        session_mean_s=float(parameters.get("session_mean_s", 120.0)))
    outages = sorted(scenario.outages, key=lambda o: o.at_s)
    if not outages:
        raise ValueError(f"{scenario.name}: an uplink outage scenario needs [[outages]]")
    watch = Watch(record)
    oracle, note = watch.oracle, watch.note
    bytes_at: list[tuple[float, int]] = []  # (t, bytes both ways on site 1's uplink)

    async with testbed(rep, dynamics=dynamics) as (lab, system):
        site = lab.sites[1]
        await system.animate()
        began = time.monotonic()
        pending = list(outages)
        cut: float | None = None
        restored_at: float | None = None
        restored_bytes = 0
        while True:
            t = time.monotonic() - began
            if cut is None and pending and t >= pending[0].at_s:
                outage = pending[0]
                await asyncio.to_thread(site.outage,
                                        "reject" if outage.kind == "reset" else outage.kind)
                cut = t
                record(t, "outage", "site1", "cut")
            elif cut is not None and t >= pending[0].at_s + pending[0].for_s:
                last_cut = len(pending) == 1
                if last_cut:  # the truth stands still from the moment the uplink returns
                    await system.freeze()
                await asyncio.to_thread(site.restore)
                counters = await asyncio.to_thread(site.counters)
                t = time.monotonic() - began
                pending.pop(0)
                cut = None
                record(t, "outage", "site1", "restored")
                if last_cut:
                    restored_at, restored_bytes = t, counters.up.bytes + counters.down.bytes
            counters = await asyncio.to_thread(site.counters)
            bytes_at.append((t, counters.up.bytes + counters.down.bytes))
            note(t, "truth", await system.truth())
            note(time.monotonic() - began, "seen", system.view())
            if restored_at is not None and not oracle.lost():
                break  # caught up: the truth stands still, nothing more will change
            if restored_at is not None and t - restored_at > CATCH_UP_LIMIT_S:
                break
            await asyncio.sleep(POLL_S)  # the oracle's sampling
    assert restored_at is not None
    last = outages[-1]
    at99 = oracle.consistent_at(restored_at, 0.99)
    at100 = oracle.consistent_at(restored_at, 1.0)
    end = bytes_at[-1][0]
    for t, fraction in oracle.recovery_curve(max(0.0, last.at_s - 10), end, 1.0):
        record(t, "consistency", "sessions", round(fraction, 4))

    def bytes_until(moment: float | None) -> int | None:
        """The uplink's bytes from the restore until the first poll at or after ``moment``."""
        if moment is None:
            return None
        return next((b for t, b in bytes_at if t >= moment), bytes_at[-1][1]) - restored_bytes

    return {
        "outage_s": round(sum(o.for_s for o in outages), 1),
        "sessions": len(watch.sessions),
        "evses": len(oracle.keys),
        "lost": len(oracle.lost()),
        "catch_up_s": None if at99 is None else round(at99 - restored_at, 2),
        "catch_up_all_s": None if at100 is None else round(at100 - restored_at, 2),
        "catch_up_bytes": bytes_until(at99),
        "catch_up_all_bytes": bytes_until(at100),
        "consistent_before_outage": round(oracle.fraction_consistent(outages[0].at_s), 3),
    }


__all__ = ["uplink_outage"]
