"""Architecture (b) of the lab: the OCPP 2.0.1 baseline, point to point.

    cloud (the lab's root namespace)                                  site k (its namespace)
    OCPP CSMS: our gateway at the lab's cloud address ── a CSMS    <── one WebSocket per charger
                                                                       (N chargers, one process)

The cloud's OCPP CSMS is our gateway (``actors.station.ocpp``) in front of a CSMS of ours (and
the cloud CSMS the operator talks to), all in the lab's process with their brokers on
loopback; the gateway listens on the lab's cloud address. Each site's chargers are simulated OCPP 2.0.1 chargers
(``actors.testing.ocpp_charger``: the ``ocpp`` package over ``websockets``, permessage-deflate
on, OCPP's jittered RetryBackOff) in a process of their own in the site's namespace
(``python -m bench.lab.ocpp_arch fleet SPEC``), each with its own WebSocket across the uplink.
They boot unknown, so the gateway learns each one's device model with GetBaseReport.

The baseline is given the best a good OCPP implementation does, and nothing OCPP forbids: each
charger sends through an application-level priority queue (``PriorityCaller``: a safety
message goes before any queued telemetry) but with one call in flight, as OCPP-J allows.
Telemetry is ``MeterValues`` carrying the load's filler as ``customData``; a safety message
is ``NotifyEvent`` of ``ChargingStation.Problem`` (raised on odd sequence numbers, cleared on
even ones), which the gateway writes into the charger's device model, where the lab sees it.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import heapq
import itertools
import json
import logging
import random
import secrets
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from actors.app.config import ChargerEntry
from actors.app.hierarchy import Hierarchy
from actors.app.wiring import Running
from actors.station.actor import ChargingStation
from actors.testing.ocpp_charger import SimulatedCharger
from bench.lab import operations, state
from bench.lab.load import Plan, filler, offer
from bench.lab.state import Dynamics
from bench.netlab import Lab
from bench.sites import ChildProcess, Handler, poll, serve
from object_model.tree import TransactionCommitted

log = logging.getLogger(__name__)

BACKLOG = 64  # telemetry calls a site's chargers may hold queued, together, before shedding
EVSES = 2  # per charger, as our simulated stations have
TX_UPDATED_S = 60.0  # TxUpdatedInterval: a charging EVSE's meter values, once a minute
TRACK_S = 0.1
PROBLEM = "/chargingstation/problem/actual/value"  # in ocpp:dm, lower-cased
SAFETY, TELEMETRY = 0, 1  # PriorityCaller's classes


def identity(site: int, station: int) -> str:
    """Charger ``station`` (0-based) of lab site ``site``: one of the gateway's site-1 chargers."""
    return f"ocpp-site1-{site}x{station}"


def password(identity: str, secret: str) -> str:
    return f"{secret}-{identity}"[-40:]


class OcppSystem:
    """The cloud's OCPP CSMS in this process, the chargers in the sites' (see the module
    docstring)."""

    name = "ocpp"

    def __init__(self, lab: Lab, root: Path, stations: int, say: Callable[[str], None],
                 dynamics: Dynamics | None = None) -> None:
        self.lab, self.root, self.stations, self.say = lab, root, stations, say
        self.dynamics = dynamics
        self.fleets: dict[int, ChildProcess] = {}
        self.hierarchy: Hierarchy | None = None
        self.safety: list[tuple[float, int, int, str]] = []  # (wall time, site, station, value)
        self._unsubscribe: list[Callable[[], None]] = []
        self.entries: dict[str, ChargerEntry] = {}
        self.port = 0  # the gateway's, once it first started: it comes back on the same
        self._gateway: Running | None = None
        self._generation = 0

    @classmethod
    async def start(cls, lab: Lab, root: Path, *, stations: int, seed: int,
                    say: Callable[[str], None], dynamics: Dynamics | None = None,
                    cloud_process: bool = False) -> OcppSystem:
        """With ``dynamics``, the chargers' EVs come and go once ``animate`` is called. The
        OCPP CSMS always runs in this process (``cloud_process`` is for the other
        architecture): ``crash`` drops it with everything it held."""
        system = cls(lab, root, stations, say, dynamics)
        try:
            await system._start(seed)
        except BaseException:
            await system.close()
            raise
        return system

    async def _start(self, seed: int) -> None:
        lab, root = self.lab, self.root
        secret = secrets.token_urlsafe(16)
        by_site = {k: [identity(k, i) for i in range(self.stations)] for k in lab.sites}
        self.say("ocpp: starting the cloud's OCPP CSMS (our gateway and a CSMS)...")
        self.hierarchy = h = await Hierarchy.start(root)
        await h.start_cloud()  # operators reach the chargers through it, as ours
        await h.start_site(1)
        self.entries = {i: ChargerEntry(password=password(i, secret), evse_count=EVSES)
                        for ids in by_site.values() for i in ids}
        await self.restart()
        url = f"ws://{lab.cloud_address}:{self.port}/ocpp/"
        for k, lab_site in lab.sites.items():
            self.say(f"ocpp: starting site {k}'s {self.stations} chargers in its namespace...")
            spec = {"site": k, "url": url, "seed": seed + k,
                    "chargers": [[i, password(i, secret)] for i in by_site[k]],
                    "dynamics": None if self.dynamics is None else asdict(self.dynamics)}
            self.fleets[k] = await ChildProcess.start(
                f"site {k}'s chargers", ["-m", "bench.lab.ocpp_arch", "fleet", json.dumps(spec)],
                root / f"fleet{k}.err", namespace=lab_site.namespace)

    def _watch(self, station: ChargingStation) -> None:
        """Note when the charger's Problem variable changes in what the CSMS holds."""
        assert station.tree is not None
        site, index = station.address.rsplit("-", 1)[1].split("x")

        def changed(event: TransactionCommitted) -> None:
            for path, value in event.upserts:
                if str(path).lower().endswith(PROBLEM):
                    self.safety.append((time.time(), int(site), int(index), str(value)))

        self._unsubscribe.append(station.tree.subscribe(changed))

    async def crash(self, *, broker: bool = False) -> None:
        """The OCPP CSMS (our gateway: where the chargers connect) is gone, and every
        connection with it. (``broker`` is the other architecture's.)"""
        assert self.hierarchy is not None and self._gateway is not None
        for unsubscribe in self._unsubscribe:
            unsubscribe()
        self._unsubscribe.clear()
        running, self._gateway = self._gateway, None
        self.hierarchy.site(1).hosts.remove(running)
        await running.stop()

    async def restart(self, *, fresh: bool = True,
                      serving: asyncio.Future[float] | None = None) -> float:
        """The OCPP CSMS again on the same port: ``fresh``, knowing nothing of the chargers
        (what it held was lost: each device model is learnt again with GetBaseReport before
        the charger's next boot is accepted); else on the state it kept. Returns (and sets
        ``serving`` to) the monotonic moment it took connections again."""
        assert self.hierarchy is not None
        if fresh or not self._generation:
            self._generation += 1
        for fleet in self.fleets.values():
            await fleet.ask("mark")  # who reconnects counts from here
        self._gateway, gateway = await self.hierarchy.start_gateway(
            1, self.entries, host=self.lab.cloud_address, port=self.port,
            state_dir=self.root / f"gateway-{self._generation}")
        self.port = gateway.port
        moment = time.monotonic()
        if serving is not None:
            serving.set_result(moment)
        for station in self.hierarchy.site(1).stations:
            if station.address in self.entries:
                self._watch(station)
        return moment

    async def relearned(self) -> bool:
        """Every charger connected again since the restart, booted and accepted (its device
        model learnt), and every running session as it holds it."""
        back, total, _ = await self.recovered()
        return back == total and state.current(self.view()) == state.current(await self.truth())

    async def update_firmware(self, image: bytes, version: str, task: str) -> list[str]:
        """Every charger of site 1 told to install ``image``, held at the cloud CSMS: each
        charger downloads it from the gateway's own server (a one-time URL each: OCPP has no
        shared cache), across the uplink. The chargers told."""
        assert self.hierarchy is not None
        targets = [identity(1, i) for i in range(self.stations)]
        await operations.update_firmware(self.hierarchy, self.hierarchy.cloud_actor, image,
                                         version, task, targets)
        return targets

    async def addresses(self) -> list[str]:
        """Every charger's address (its identity)."""
        return sorted(self.entries)

    async def control(self, address: str, watts: float) -> None:
        """A limit to one charger from the cloud (``operations.set_limit``: the gateway
        sends it a SetChargingProfile and the write ends with its answer)."""
        assert self.hierarchy is not None
        await operations.set_limit(self.hierarchy, address, watts)

    def task_states(self, task: str) -> dict[str, str]:
        """Each charger's state of ``task`` as the CSMS's copies show it."""
        assert self.hierarchy is not None
        return state.task_states(self.hierarchy.site(1).local_csms.copies.replicas, task)

    async def recovered(self) -> tuple[int, int, int]:
        """Chargers connected and accepted again since the restart, of all, and the
        connections that took (one per charger)."""
        back = 0
        for fleet in self.fleets.values():
            back += (await fleet.ask("status"))["reconnected"]
        return back, len(self.entries), back

    async def relearn_counters(self) -> dict[str, int]:
        """OCPP calls so far, both ways, over every charger."""
        calls = 0
        for fleet in self.fleets.values():
            status = await fleet.ask("status")
            calls += status["calls_sent"] + status["calls_received"]
        return {"requests": calls}

    async def ready(self, timeout: float = 300) -> float:
        """Seconds until every charger is booted (Accepted, its device model learnt) and
        online at the CSMS."""
        began = time.monotonic()

        async def booted() -> bool:
            for fleet in self.fleets.values():
                status = await fleet.ask("status")
                if status["accepted"] < status["chargers"]:
                    return False
            return True

        await poll("every charger booted and accepted", booted, timeout)
        assert self.hierarchy is not None
        await poll("every charger online at the CSMS", self.consistent, timeout)
        return time.monotonic() - began

    async def consistent(self) -> bool:
        """Every charger online in what the CSMS holds."""
        assert self.hierarchy is not None
        return all(s.tree is not None and s.tree.get("network/link/online") is True
                   for s in self.hierarchy.site(1).stations)

    async def offer(self, plans: dict[int, Plan], start_at: float) -> dict[int, dict[str, Any]]:
        self.safety.clear()  # what the device model's report wrote is no safety message
        answers = await asyncio.gather(*(
            self.fleets[k].ask("offer", timeout=plan.seconds + 120, plan=plan.to_json(),
                               start_at=start_at) for k, plan in plans.items()))
        return dict(zip(plans, answers, strict=True))

    async def truth(self) -> dict[str, str]:
        """Every EVSE's session as its charger holds it (``bench.lab.state``)."""
        out: dict[str, str] = {}
        for fleet in self.fleets.values():
            out.update((await fleet.ask("sessions"))["sessions"])
        return out

    def view(self) -> dict[str, str]:
        """Every EVSE's session as the CSMS's copies show it."""
        assert self.hierarchy is not None
        return state.view(self.hierarchy.site(1).local_csms.copies.replicas)

    async def freeze(self) -> None:
        """No EV comes or goes from now: the truth no longer moves."""
        for fleet in self.fleets.values():
            await fleet.ask("freeze")

    async def animate(self) -> None:
        """EVs come and go from now (``dynamics``)."""
        for fleet in self.fleets.values():
            await fleet.ask("animate")

    async def safety_seen(self) -> list[tuple[float, int, int, int]]:
        """``(wall time, site, station, seq)``: each change of a charger's Problem is the next
        of its safety messages that was delivered (those whose call failed changed nothing:
        the charger says which)."""
        failed: set[tuple[int, int, int]] = set()
        for k, fleet in self.fleets.items():
            failed |= {(k, i, seq) for i, seq in (await fleet.ask("status"))["safety_failed"]}
        delivered: dict[tuple[int, int], int] = {}
        seen = []
        for at, site, station, _ in self.safety:
            seq = delivered.get((site, station), 0) + 1
            while (site, station, seq) in failed:
                seq += 1
            delivered[site, station] = seq
            seen.append((at, site, station, seq))
        return seen

    async def telemetry_seen(self) -> dict[int, int]:
        """Telemetry calls answered, by site (the chargers count them)."""
        return {k: (await fleet.ask("status"))["telemetry_answered"]
                for k, fleet in self.fleets.items()}

    async def close(self) -> None:
        for unsubscribe in self._unsubscribe:
            with contextlib.suppress(ValueError):
                unsubscribe()
        self._unsubscribe.clear()
        for fleet in self.fleets.values():
            with contextlib.suppress(Exception):
                await fleet.stop()
        if self.hierarchy is not None:
            await self.hierarchy.close()


# -- the chargers of a site, in its namespace (the child process) -------------------------------


@dataclass(order=True)
class _Queued:
    priority: int
    order: int
    action: str = field(compare=False)
    payload: dict[str, Any] = field(compare=False)
    tag: int | None = field(default=None, compare=False)  # a safety message's seq


class PriorityCaller:
    """A charger's calls through one application-level priority queue, one in flight (OCPP-J
    allows no more): a safety call waits for the call in flight, never for queued telemetry."""

    def __init__(self, charger: SimulatedCharger) -> None:
        self.charger = charger
        self._heap: list[_Queued] = []
        self._order = itertools.count()
        self._ready = asyncio.Event()
        self.queued = {SAFETY: 0, TELEMETRY: 0}
        self.answered = {SAFETY: 0, TELEMETRY: 0}
        self.failed = 0
        self.failed_tags: list[int] = []  # safety messages that were not delivered

    def put(self, priority: int, action: str, payload: dict[str, Any],
            tag: int | None = None) -> None:
        heapq.heappush(self._heap, _Queued(priority, next(self._order), action, payload, tag))
        self.queued[priority] += 1
        self._ready.set()

    async def run(self) -> None:
        while True:
            while not self._heap:
                self._ready.clear()
                await self._ready.wait()
            item = heapq.heappop(self._heap)
            self.queued[item.priority] -= 1
            try:
                await self.charger.send(item.action, item.payload)
            except Exception as exc:  # not connected, or no answer in time: lost, as OCPP's
                self.failed += 1
                if item.tag is not None:
                    self.failed_tags.append(item.tag)
                log.debug("%s: %s not sent: %s", self.charger.identity, item.action, exc)
            else:
                self.answered[item.priority] += 1


def _stamp() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


async def run_fleet(spec: dict[str, Any]) -> int:
    """Site ``spec["site"]``'s chargers (``spec["chargers"]``: identity and password each)
    against ``spec["url"]``; commands ``status``, ``offer`` and ``stop``."""
    dynamics = None if spec.get("dynamics") is None else Dynamics(**spec["dynamics"])
    chargers = [SimulatedCharger(name, secret, spec["url"], evses=EVSES, plugged=0,
                                 report_s=TX_UPDATED_S, seed=spec["seed"] * 1000 + i)
                for i, (name, secret) in enumerate(spec["chargers"])]
    callers = [PriorityCaller(c) for c in chargers]
    tasks = [asyncio.create_task(c.run(), name=c.identity) for c in chargers]
    tasks += [asyncio.create_task(p.run(), name=f"{p.charger.identity} calls") for p in callers]
    size = 0
    rotation = itertools.cycle(callers)
    per_charger = max(2, BACKLOG // len(callers))

    def telemetry() -> bool:
        caller = next(rotation)
        if caller.queued[TELEMETRY] >= per_charger or not caller.charger.connected:
            return False
        caller.put(TELEMETRY, "MeterValues", {
            "evseId": 1, "meterValue": [{"timestamp": _stamp(), "sampledValue": [
                {"value": 0.0, "measurand": "Energy.Active.Import.Register"}]}],
            "customData": {"vendorId": "lab", "samples": filler(size)}})
        return True

    def safety(station: int, seq: int) -> None:
        now = _stamp()
        callers[station].put(SAFETY, "NotifyEvent", {
            "generatedAt": now, "seqNo": 0, "tbc": False, "eventData": [{
                "eventId": seq, "timestamp": now, "trigger": "Alerting",
                "actualValue": "true" if seq % 2 else "false",
                "eventNotificationType": "HardWiredMonitor",
                "component": {"name": "ChargingStation"}, "variable": {"name": "Problem"}}]},
            tag=seq)

    marked = [0] * len(chargers)  # each charger's connections at the last mark

    async def mark(cmd: dict[str, Any]) -> dict[str, Any]:
        marked[:] = [c.connections for c in chargers]
        return {"connections": sum(marked)}

    async def status(cmd: dict[str, Any]) -> dict[str, Any]:
        return {"chargers": len(chargers),
                "reconnected": sum(c.connections > m and c.connected
                                   and c.registration == "Accepted"
                                   for c, m in zip(chargers, marked, strict=True)),
                "accepted": sum(c.connected and c.registration == "Accepted" for c in chargers),
                "telemetry_answered": sum(p.answered[TELEMETRY] for p in callers),
                "safety_answered": sum(p.answered[SAFETY] for p in callers),
                "failed": sum(p.failed for p in callers),
                "safety_failed": [[i, seq] for i, p in enumerate(callers)
                                  for seq in p.failed_tags],
                "connections": sum(c.connections for c in chargers),
                "calls_sent": sum(sum(c.counts.values()) for c in chargers),
                "calls_received": sum(c.calls_received for c in chargers)}

    async def run_offer(cmd: dict[str, Any]) -> dict[str, Any]:
        nonlocal size
        plan = Plan.from_json(cmd["plan"])
        size = plan.message_bytes
        return (await offer(plan, cmd["start_at"], telemetry, safety)).to_json()

    last: dict[tuple[int, int], str] = {}  # each EVSE's latest transaction, as polled

    def track() -> None:
        for i, charger in enumerate(chargers):
            for number, evse in charger.evses.items():
                if evse.transaction is not None:
                    last[i, number] = evse.transaction

    async def tracking() -> None:
        while True:
            track()
            await asyncio.sleep(TRACK_S)  # a poll of the chargers' own state

    def leave(charger: SimulatedCharger, number: int) -> None:
        track()  # its transaction, noted before it ends
        charger.unplug(number)

    living: list[asyncio.Task[None]] = []
    rngs = {(i, n): random.Random(spec["seed"] * 1000 + i * 16 + n)  # as our stations' lives
            for i, c in enumerate(chargers) for n in c.evses}
    tasks.append(asyncio.create_task(tracking(), name="tracking"))

    async def sessions(cmd: dict[str, Any]) -> dict[str, Any]:
        track()
        return {"sessions": {
            f"{c.identity}/evse{n}": state.session_value(
                evse.transaction or last.get((i, n)), evse.transaction is not None)
            for i, c in enumerate(chargers) for n, evse in c.evses.items()}}

    async def freeze(cmd: dict[str, Any]) -> None:
        for task in living:
            task.cancel()
        await asyncio.gather(*living, return_exceptions=True)
        living.clear()

    async def animate(cmd: dict[str, Any]) -> None:
        if dynamics is None:
            raise ValueError("these chargers were started without dynamics")
        if not living:
            living.extend(asyncio.create_task(state.live(
                dynamics, rngs[i, n], functools.partial(c.plug, n), functools.partial(leave, c, n)))
                for i, c in enumerate(chargers) for n in c.evses)

    handlers: dict[str, Handler] = {"status": status, "offer": run_offer, "sessions": sessions,
                                    "freeze": freeze, "animate": animate, "mark": mark}
    try:
        await serve(handlers)
    finally:
        ending = [*tasks, *living]
        for task in ending:
            task.cancel()
        await asyncio.gather(*ending, return_exceptions=True)
    return 0


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] != ["fleet"] or len(argv) != 2:
        print("usage: python -m bench.lab.ocpp_arch fleet SPEC (run by the lab)",
              file=sys.stderr)
        return 2
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr)
    return asyncio.run(run_fleet(json.loads(argv[1])))


if __name__ == "__main__":
    sys.exit(main())
