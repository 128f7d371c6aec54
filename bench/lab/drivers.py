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
import dataclasses
import random
import shutil
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any, Protocol

from bench.lab import traces
from bench.lab.broker_arch import BrokerSystem
from bench.lab.load import MESSAGE_BYTES, Plan
from bench.lab.ocpp_arch import OcppSystem
from bench.lab.oracle import Oracle
from bench.lab.runner import DRIVERS, Recorder, Repetition
from bench.lab.state import Dynamics
from bench.lab.stats import percentile
from bench.netlab import Lab, Site, netns_available
from bench.netlab.router import UplinkCounters
from bench.sites import poll

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
    async def restart(self, *, fresh: bool = True) -> float: ...
    async def recovered(self) -> tuple[int, int, int]: ...
    async def relearned(self) -> bool: ...
    async def relearn_counters(self) -> dict[str, int]: ...
    async def update_firmware(self, image: bytes, version: str, task: str) -> list[str]: ...
    def task_states(self, task: str) -> dict[str, str]: ...
    async def addresses(self) -> list[str]: ...
    async def control(self, address: str, watts: float) -> None: ...
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


# -- S2: a site uplink outage, then catch-up ----------------------------------------------------


POLL_S = 0.5  # how often the truth and the view are read
CATCH_UP_LIMIT_S = 600.0  # after the last outage, how long the view may take to catch up


async def uplink_outage(rep: Repetition, record: Recorder) -> dict[str, Any]:
    """The stations' EVs come and go (``idle_mean_s``, ``session_mean_s``) while site 1's
    uplink is cut as the scenario's outages say; when the last outage ends the stations
    stand still, and the run goes on until the cloud's view of every EVSE's session equals
    the truth (or ``CATCH_UP_LIMIT_S``). The truth and the view are read every ``POLL_S``
    and judged by the oracle (``bench.lab.state``, ``bench.lab.oracle``)."""
    scenario = rep.scenario
    parameters = scenario.parameters
    dynamics = Dynamics(idle_mean_s=float(parameters.get("idle_mean_s", 60.0)),
                        session_mean_s=float(parameters.get("session_mean_s", 120.0)))
    outages = sorted(scenario.outages, key=lambda o: o.at_s)
    if not outages:
        raise ValueError(f"{scenario.name}: an uplink outage scenario needs [[outages]]")
    oracle = Oracle()
    shown: dict[tuple[str, str], str] = {}
    bytes_at: list[tuple[float, int]] = []  # (t, bytes both ways on site 1's uplink)
    sessions: set[str] = set()

    def note(t: float, side: str, values: dict[str, str]) -> None:
        for key, value in values.items():
            if shown.get((side, key)) != value:
                shown[side, key] = value
                (oracle.truth if side == "truth" else oracle.seen)(t, key, value)
                record(t, side, key, value)
                if side == "truth" and value:
                    sessions.add(value.split("|")[0])

    async with testbed(rep, dynamics=dynamics) as (lab, system):
        site = lab.sites[1]
        await system.animate()
        began = time.monotonic()
        pending = list(outages)
        cut: float | None = None
        restored_at: float | None = None
        while True:
            t = time.monotonic() - began
            if cut is None and pending and t >= pending[0].at_s:
                outage = pending[0]
                site.outage("reject" if outage.kind == "reset" else outage.kind)
                cut = t
                record(t, "outage", "site1", "cut")
            elif cut is not None and t >= pending[0].at_s + pending[0].for_s:
                site.restore()
                pending.pop(0)
                cut = None
                record(t, "outage", "site1", "restored")
                if not pending:
                    await system.freeze()
                    restored_at = time.monotonic() - began
            counters = site.counters()
            bytes_at.append((t, counters.up.bytes + counters.down.bytes))
            note(t, "truth", await system.truth())
            note(time.monotonic() - began, "seen", system.view())
            if restored_at is not None and oracle.lost() == [] and \
                    t >= min(scenario.duration_s, restored_at):
                break  # caught up, and the scenario's time is over
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
        if moment is None:
            return None
        start = next(b for t, b in bytes_at if t >= restored_at)
        upto = next((b for t, b in bytes_at if t >= moment), bytes_at[-1][1])
        return upto - start

    return {
        "outage_s": round(sum(o.for_s for o in outages), 1),
        "sessions": len(sessions),
        "evses": len(oracle.keys),
        "lost": len(oracle.lost()),
        "catch_up_s": None if at99 is None else round(at99 - restored_at, 2),
        "catch_up_all_s": None if at100 is None else round(at100 - restored_at, 2),
        "catch_up_bytes": bytes_until(at99),
        "catch_up_all_bytes": bytes_until(at100),
        "consistent_before_outage": round(oracle.fraction_consistent(outages[0].at_s), 3),
    }


# -- S3: a cloud CSMS crash and state re-learn, swept over round-trip time ----------------------


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
                site.set_profile(profile)
            await system.animate()
            await asyncio.sleep(scenario.warmup_s)  # the stations live: a schedule
            counted = (await system.relearn_counters())["requests"]
            record(time.monotonic() - began, "crash", name, "cloud")
            await system.crash()
            await asyncio.sleep(down_s)  # the stations live on while it is down: a schedule
            await system.freeze()
            before = _uplink_bytes(lab)
            restarted = time.monotonic()
            await system.restart()
            await poll(f"everything re-learnt ({name})", system.relearned, 600, every=0.25)
            seconds = time.monotonic() - restarted
            relearnt = _uplink_bytes(lab) - before
            requests = (await system.relearn_counters())["requests"] - counted
            stations = scenario.sites.stations * len(lab.sites)
            record(time.monotonic() - began, "relearn", name, round(seconds, 3))
            figures[f"relearn_s_{name}"] = round(seconds, 2)
            figures[f"relearn_bytes_{name}"] = relearnt
            figures[f"relearn_round_trips_per_station_{name}"] = round(requests / stations, 2)
    return figures


# -- S4: a firmware image to N stations of one site ---------------------------------------------


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
        before = site.counters()
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
        after = site.counters()
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


# -- S6: a reconnect storm after a cloud restart ------------------------------------------------


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
        restarted = await system.restart(fresh=False)
        while True:
            reached, total, connections = await system.recovered()
            t = time.monotonic() - restarted
            curve.append((t, reached, connections))
            record(t, "consistency", "reached", round(reached / total, 4))
            if reached == total or t > CATCH_UP_LIMIT_S:
                break
            await asyncio.sleep(0.25)  # the recovery's sampling
    at99 = next((t for t, reached, _ in curve if reached >= 0.99 * total), None)
    at100 = next((t for t, reached, _ in curve if reached == total), None)
    return {
        "stations": total,
        "recovered_99_s": None if at99 is None else round(at99, 2),
        "recovered_all_s": None if at100 is None else round(at100, 2),
        "peak_recovered_per_s": _peak_rate([(t, r) for t, r, _ in curve]),
        "peak_connections_per_s": _peak_rate([(t, c) for t, _, c in curve]),
        "connections": curve[-1][2],
    }


# -- S7: an hour of normal operation on a poor cellular link -----------------------------------


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
    oracle = Oracle()
    shown: dict[tuple[str, str], str] = {}
    controls: list[float] = []
    failed = 0
    rng = random.Random(rep.seed("controls"))

    def note(t: float, side: str, values: dict[str, str]) -> None:
        for key, value in values.items():
            if shown.get((side, key)) != value:
                shown[side, key] = value
                (oracle.truth if side == "truth" else oracle.seen)(t, key, value)
                record(t, side, key, value)

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

        async def controlling() -> None:
            nonlocal failed
            n = 0
            while True:
                await asyncio.sleep(every_s)  # the operator's pace
                n += 1
                address = rng.choice(addresses)
                sent = time.monotonic()
                try:
                    await system.control(address, 7400.0 if n % 2 else 11000.0)
                except Exception as exc:  # no answer, or a refusal: a control that failed
                    failed += 1
                    record(clock(), "control_failed", address, type(exc).__name__)
                else:
                    controls.append(time.monotonic() - sent)
                    record(clock(), "latency", "control", round(controls[-1], 6))

        controller = asyncio.create_task(controlling())
        try:
            await system.animate()
            while clock() < scenario.duration_s:
                t = clock()
                note(t, "truth", await system.truth())
                note(clock(), "seen", system.view())
                await asyncio.sleep(poll_s)  # the oracle's sampling
        finally:
            for task in (*followers, controller):
                task.cancel()
            await asyncio.gather(*followers, controller, return_exceptions=True)
    staleness = oracle.staleness()
    measured = staleness.delays_s
    return {
        "stations": len(addresses),
        "changes": len(measured) + staleness.unresolved,
        "staleness_p50_s": round(percentile(measured, 50), 3),
        "staleness_p99_s": round(percentile(measured, 99), 3),
        "staleness_unresolved": staleness.unresolved,
        "controls": len(controls) + failed,
        "control_p50_ms": round(percentile(controls, 50) * 1000, 1),
        "control_p99_ms": round(percentile(controls, 99) * 1000, 1),
        "controls_failed": failed,
    }


def _peak_rate(points: list[tuple[float, int]], window_s: float = 1.0) -> float:
    """The most a cumulative count grew within any ``window_s`` of its samples, per second."""
    best = 0
    for i, (t, count) in enumerate(points):
        j = i
        while j + 1 < len(points) and points[j + 1][0] - t <= window_s:
            j += 1
        best = max(best, points[j][1] - count)
    return round(best / window_s, 1)


def _uplink_bytes(lab: Lab) -> int:
    """Bytes across every site's uplink so far, both ways."""
    total = 0
    for site in lab.sites.values():
        counters = site.counters()
        total += counters.up.bytes + counters.down.bytes
    return total


def _async(check: Callable[[], bool]) -> Callable[[], Any]:
    async def run() -> bool:
        return check()
    return run


for _architecture in SYSTEMS:
    DRIVERS[("safety_latency", _architecture)] = safety_latency
    DRIVERS[("idle_connections", _architecture)] = idle_connections
    DRIVERS[("uplink_outage", _architecture)] = uplink_outage
    DRIVERS[("cloud_relearn", _architecture)] = cloud_relearn
    DRIVERS[("firmware_fanout", _architecture)] = firmware_fanout
    DRIVERS[("reconnect_storm", _architecture)] = reconnect_storm
    DRIVERS[("cellular_day", _architecture)] = cellular_day


__all__ = ["SYSTEMS", "LabUnavailable", "idle_connections", "safety_latency", "testbed",
           "uplink_outage"]
