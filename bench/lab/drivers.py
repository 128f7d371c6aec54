"""The scenario drivers: one repetition of a scenario kind on one architecture, on real
namespaces, real brokers and real OCPP-J connections.

Every driver builds the same testbed (``testbed``): a ``bench.netlab`` lab with the scenario's
sites, each behind an uplink impaired as the scenario says, and the architecture under test on
it (``bench.lab.broker_arch.BrokerSystem`` or ``bench.lab.ocpp_arch.OcppSystem``, which answer
the same questions: ``ready``, ``offer``, ``safety_seen``, ``telemetry_seen``, ``consistent``).
A driver then plays the scenario, records its events and returns its figures. Times in the
events are seconds from the moment the measured part began.

Importing this module registers the drivers in ``bench.lab.runner.DRIVERS``.
"""

from __future__ import annotations

import asyncio
import contextlib
import shutil
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any, Protocol

from bench.lab.broker_arch import BrokerSystem
from bench.lab.load import MESSAGE_BYTES, Plan
from bench.lab.ocpp_arch import OcppSystem
from bench.lab.runner import DRIVERS, Recorder, Repetition
from bench.lab.stats import percentile
from bench.netlab import Lab, netns_available
from bench.netlab.router import UplinkCounters
from bench.sites import poll

LAB_PREFIX = "lab"
STRAGGLERS_S = 30.0  # how long a repetition waits for safety messages still on their way


class System(Protocol):
    name: str

    async def ready(self, timeout: float = 300) -> float: ...
    async def consistent(self) -> bool: ...
    async def offer(self, plans: dict[int, Plan], start_at: float
                    ) -> dict[int, dict[str, Any]]: ...
    def safety_seen(self) -> list[tuple[float, int, int, int]]: ...
    async def telemetry_seen(self) -> dict[int, int]: ...
    async def close(self) -> None: ...


SYSTEMS: dict[str, type[BrokerSystem] | type[OcppSystem]] = {"broker": BrokerSystem,
                                                              "ocpp": OcppSystem}


class LabUnavailable(RuntimeError):
    """This machine cannot build the lab (no network namespaces)."""


def say(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


@contextlib.asynccontextmanager
async def testbed(rep: Repetition, tell: Callable[[str], None] = say
                  ) -> AsyncIterator[tuple[Lab, System]]:
    """The scenario's sites and uplinks, and the architecture of ``rep`` on them."""
    reason = netns_available()
    if reason is not None:
        raise LabUnavailable(f"the lab needs network namespaces: {reason}")
    scenario = rep.scenario
    root = Path(tempfile.mkdtemp(prefix=f"lab-{scenario.name}-{rep.architecture}-"))
    failed = True
    try:
        with Lab(LAB_PREFIX, seed=rep.seed("link"), log_dir=root / "netlab") as lab:
            for k in range(1, scenario.sites.count + 1):
                lab.add_site(k, scenario.link.profile())
            system: System = await SYSTEMS[rep.architecture].start(
                lab, root, stations=scenario.sites.stations,
                seed=rep.seed("stations") % 2**20, say=tell)
            try:
                ready_s = await system.ready()
                tell(f"{rep.architecture}: ready in {ready_s:.1f} s")
                yield lab, system
            finally:
                await system.close()
        failed = False
    finally:
        if failed:
            tell(f"{rep.architecture}: the testbed's logs are kept in {root}")
        else:
            shutil.rmtree(root, ignore_errors=True)


def uplink_bytes(lab: Lab) -> UplinkCounters | None:
    """Site 1's uplink counters (``None`` without sites)."""
    site = lab.sites.get(1)
    return None if site is None else site.counters()


# -- S1: a safety message behind telemetry on a saturated uplink -------------------------------


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
        before = {k: site.counters() for k, site in lab.sites.items()}
        telemetry_before = await system.telemetry_seen()
        offered = await system.offer(plans, start_at)
        measured_s = time.time() - start_at
        after = {k: site.counters() for k, site in lab.sites.items()}
        telemetry_after = await system.telemetry_seen()
        raised = {(k, station, seq): at for k, answer in offered.items()
                  for at, station, seq in answer["raised"]}
        with contextlib.suppress(RuntimeError):  # what never came is counted as lost
            await poll("the safety messages still on their way",
                       _async(lambda: len(system.safety_seen()) >= len(raised)), STRAGGLERS_S)
        seen = {(k, station, seq): at for at, k, station, seq in system.safety_seen()}
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


# -- S5: upstream TCP connections and idle bytes per site -------------------------------------


async def idle_connections(rep: Repetition, record: Recorder) -> dict[str, Any]:
    """Once everything is joined and the warm-up has passed, nothing happens for the rest of
    the run: the TCP connections crossing each uplink are counted, and the bytes crossing it
    (both ways) are what the architecture costs at rest."""
    scenario = rep.scenario
    async with testbed(rep) as (lab, _):
        await asyncio.sleep(scenario.warmup_s)  # the scenario's warm-up: a schedule
        connections = {k: len(site.uplink_tcp_connections()) for k, site in lab.sites.items()}
        began = time.monotonic()
        before = {k: site.counters() for k, site in lab.sites.items()}
        window = scenario.duration_s - scenario.warmup_s
        step = min(10.0, window)
        while (elapsed := time.monotonic() - began) < window:
            await asyncio.sleep(min(step, window - elapsed))  # the measurement's sampling
            for k, site in lab.sites.items():
                now = site.counters()
                record(time.monotonic() - began, "bytes", f"site{k}/up",
                       now.up.bytes - before[k].up.bytes)
                record(time.monotonic() - began, "bytes", f"site{k}/down",
                       now.down.bytes - before[k].down.bytes)
        after = {k: site.counters() for k, site in lab.sites.items()}
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


def _async(check: Callable[[], bool]) -> Callable[[], Any]:
    async def run() -> bool:
        return check()
    return run


for _architecture in SYSTEMS:
    DRIVERS[("safety_latency", _architecture)] = safety_latency
    DRIVERS[("idle_connections", _architecture)] = idle_connections


__all__ = ["SYSTEMS", "LabUnavailable", "idle_connections", "safety_latency", "testbed"]
