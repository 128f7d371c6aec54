"""S6: a reconnect storm after a cloud restart."""

from __future__ import annotations

import asyncio
import time
from typing import Any

from bench.lab.runner import Recorder, Repetition
from bench.lab.testbed import CATCH_UP_LIMIT_S, peak_rate, testbed


async def reconnect_storm(rep: Repetition, record: Recorder) -> dict[str, Any]:
    """After the warm-up the whole cloud goes down (ours: its broker and its CSMS SIGKILLed;
    OCPP: the CSMS the chargers connect to) for ``down_s``, then restarts on the state it
    kept. Figures: seconds from the restart until 99 % and all of the stations are reached
    again (ours: their site's uplink joined; OCPP: the charger connected and accepted), and
    the peak rates of stations recovered and of connections made, per second."""
    scenario = rep.scenario
    down_s = float(scenario.parameters.get("down_s", 20.0))
    curve: list[tuple[float, int, int]] = []  # (t, stations reached, connections)
    async with testbed(rep, cloud_process=True) as (_, system):
        await asyncio.sleep(scenario.warmup_s)  # the scenario's warm-up: a schedule
        await system.crash(broker=True)
        await asyncio.sleep(down_s)  # the cloud stays down this long: a schedule
        serving: asyncio.Future[float] = asyncio.get_running_loop().create_future()
        # the rest of the restart (our cloud CSMS's process) goes on while recovery is
        # sampled: sites that rejoin meanwhile count from the moment the broker served
        restart = asyncio.create_task(system.restart(fresh=False, serving=serving))
        try:
            await asyncio.wait({serving, restart}, return_when=asyncio.FIRST_COMPLETED)
            if not serving.done():
                restart.result()  # it failed before serving: say why
            restarted = serving.result()
            while True:
                reached, total, connections = await system.recovered()
                t = time.monotonic() - restarted
                curve.append((t, reached, connections))
                record(t, "consistency", "reached", round(reached / total, 4))
                if reached == total or t > CATCH_UP_LIMIT_S:
                    break
                await asyncio.sleep(0.25)  # the recovery's sampling
        finally:
            await restart  # its failure is the repetition's
    at99 = next((t for t, reached, _ in curve if reached >= 0.99 * total), None)
    at100 = next((t for t, reached, _ in curve if reached == total), None)
    return {
        "stations": total,
        "recovered_99_s": None if at99 is None else round(at99, 2),
        "recovered_all_s": None if at100 is None else round(at100, 2),
        "peak_recovered_per_s": peak_rate([(t, r) for t, r, _ in curve]),
        "peak_connections_per_s": peak_rate([(t, c) for t, _, c in curve]),
        "connections": curve[-1][2],
    }


__all__ = ["reconnect_storm"]
