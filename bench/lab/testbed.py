"""The lab's testbed: the scenario's sites behind their impaired uplinks, and one architecture
on them, answering the same questions whichever it is.

``testbed`` builds a ``bench.netlab`` lab with the scenario's sites, each behind an uplink
impaired as the scenario says, and starts the architecture under test on it
(``bench.lab.broker_arch.BrokerSystem`` or ``bench.lab.ocpp_arch.OcppSystem``: see ``System``
for what both answer); the drivers (``bench.lab.drivers``) play their scenarios on it.
``Watch`` feeds the oracle from polls of the truth and the view. Times in the events a
driver records are seconds from the moment its measured part began.
"""

from __future__ import annotations

import asyncio
import contextlib
import shutil
import sys
import tempfile
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any, Protocol

from bench.lab.broker_arch import BrokerSystem
from bench.lab.load import Plan
from bench.lab.ocpp_arch import OcppSystem
from bench.lab.oracle import Oracle
from bench.lab.runner import Recorder, Repetition
from bench.lab.state import Dynamics
from bench.netlab import Lab, Site, netns_available
from bench.netlab.router import UplinkCounters

LAB_PREFIX = "lab"
STRAGGLERS_S = 30.0  # how long a repetition waits for safety messages still on their way


class System(Protocol):
    name: str

    async def ready(self, timeout: float = 300) -> float: ...
    async def consistent(self) -> bool: ...
    async def truth(self) -> dict[str, str]: ...
    def view(self) -> dict[str, str]: ...
    async def freeze(self) -> None: ...
    async def animate(self) -> None: ...
    async def crash(self, *, broker: bool = False) -> None: ...
    async def restart(self, *, fresh: bool = True,
                      serving: asyncio.Future[float] | None = None) -> float: ...
    async def recovered(self) -> tuple[int, int, int]: ...
    async def relearned(self) -> bool: ...
    async def relearn_counters(self) -> dict[str, int]: ...
    async def update_firmware(self, image: bytes, version: str, task: str) -> list[str]: ...
    def task_states(self, task: str) -> dict[str, str]: ...
    async def addresses(self) -> list[str]: ...
    async def control(self, address: str, watts: float) -> None: ...
    async def offer(self, plans: dict[int, Plan], start_at: float
                    ) -> dict[int, dict[str, Any]]: ...
    async def safety_seen(self) -> list[tuple[float, int, int, int]]: ...
    async def telemetry_seen(self) -> dict[int, int]: ...
    async def close(self) -> None: ...


SYSTEMS: dict[str, type[BrokerSystem] | type[OcppSystem]] = {"broker": BrokerSystem,
                                                              "ocpp": OcppSystem}


class LabUnavailable(RuntimeError):
    """This machine cannot build the lab (no network namespaces)."""


def say(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


@contextlib.asynccontextmanager
async def testbed(rep: Repetition, tell: Callable[[str], None] = say, *,
                  dynamics: Dynamics | None = None, cloud_process: bool = False
                  ) -> AsyncIterator[tuple[Lab, System]]:
    """The scenario's sites and uplinks, and the architecture of ``rep`` on them (its EVs
    coming and going as ``dynamics`` says once animated; our cloud CSMS in a process of its
    own with ``cloud_process``)."""
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
                seed=rep.seed("stations") % 2**20, say=tell, dynamics=dynamics,
                cloud_process=cloud_process)
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


POLL_S = 0.5  # how often the truth and the view are read
CATCH_UP_LIMIT_S = 600.0  # after the last outage, how long the view may take to catch up


class Watch:
    """Feeds the oracle from polls of the truth and the view (``bench.lab.state``'s session
    keys): each value that changed since the last poll of its side is an oracle event and a
    recorded one; ``sessions`` collects the session ids the truth showed; ``baseline`` is
    the first poll of the truth (what it found then was no change: ``staleness(since=)``)."""

    def __init__(self, record: Recorder) -> None:
        self.oracle = Oracle()
        self.record = record
        self.sessions: set[str] = set()
        self.baseline: float | None = None  # the first poll of the truth: what it found
        self._shown: dict[tuple[str, str], str] = {}

    def note(self, t: float, side: str, values: dict[str, str]) -> None:
        if side == "truth" and self.baseline is None:
            self.baseline = t
        for key, value in values.items():
            if self._shown.get((side, key)) != value:
                self._shown[side, key] = value
                (self.oracle.truth if side == "truth" else self.oracle.seen)(t, key, value)
                self.record(t, side, key, value)
                if side == "truth" and value:
                    self.sessions.add(value.split("|")[0])


def peak_rate(points: list[tuple[float, int]], window_s: float = 1.0) -> float:
    """The most a cumulative count grew within any ``window_s`` of its samples, per second."""
    best = 0
    for i, (t, count) in enumerate(points):
        j = i
        while j + 1 < len(points) and points[j + 1][0] - t <= window_s:
            j += 1
        best = max(best, points[j][1] - count)
    return round(best / window_s, 1)


async def counters(site: Site) -> UplinkCounters:
    """A site's uplink counters, read off the event loop (``ip`` and ``nft`` take tens of
    milliseconds; the cloud's actors, whose timings are measured, share the loop)."""
    return await asyncio.to_thread(site.counters)


async def uplink_bytes(lab: Lab) -> int:
    """Bytes across every site's uplink so far, both ways (read off the event loop: the
    cloud's actors, whose timings are measured, share it)."""
    total = 0
    for site in lab.sites.values():
        now = await counters(site)
        total += now.up.bytes + now.down.bytes
    return total


__all__ = ["CATCH_UP_LIMIT_S", "LAB_PREFIX", "POLL_S", "STRAGGLERS_S", "SYSTEMS", "LabUnavailable",
           "System", "Watch", "counters", "peak_rate", "say", "testbed", "uplink_bytes"]
