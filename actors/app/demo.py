"""``csms demo``: a whole local-plus-cloud hierarchy on managed brokers, in one process.

It starts a private Prosody for the cloud and one per site, a cloud CSMS, and per site a
resource manager, a local CSMS (on its site's broker, and on the cloud's by its uplink), a
host of simulated stations (one component connection each) and an OCPP 2.0.1 gateway with
``--ocpp-chargers`` simulated OCPP chargers (real OCPP-J clients: docs/ocpp-gateway.md), whose
station actors the CSMSs manage like the native ones; it shows a live table (each
site's power against the limit its resource manager gives), and writes ``connect.json`` in
its state directory so that ``csms get|set|discover`` can reach it: ``csms set rm-site1
grid/fuse_limit_w 40000`` changes a site's grid limit live. Time at the sites runs
``--speed`` times faster than real time (one ``SiteTime`` for stations, local CSMS and
resource manager), so that EVs come and go while you watch. Ctrl-C or SIGTERM (or
``--duration``) stops everything cleanly within seconds, even while starting (a second one
exits at once); the broker dies with the process in any case. When one process cannot keep up
with all it hosts, the stations coarsen their ticks and publications (``broker_bridge.pace``),
and the progress line says how far behind it is and what was coarsened or shed.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import secrets
import shutil
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

from actors.app.config import BrokerConfig, ChargerEntry
from actors.app.hierarchy import Hierarchy, Say
from actors.csms.cloud import CloudCsms
from actors.csms.local import LocalCsms
from actors.csms.settings import EnergySettings
from actors.logic.energy.allocation import AllocatorSettings
from actors.logic.station.simulation import SimulationConfig
from actors.runtime.shutdown import StopRequested, StopSignals
from actors.station.actor import ChargingStation
from actors.station.simulated import SimulatedStation, SimulatorSettings
from actors.testing import until
from actors.testing.ocpp_charger import SimulatedCharger
from broker_bridge import Endpoint, Priority
from broker_bridge.clock import WALL_CLOCK, Clock


@dataclass(frozen=True)
class DemoSettings:
    sites: int = 2
    stations: int = 10
    duration: float | None = None
    json: bool = False
    state_dir: Path = Path("state/demo")
    speed: float = 120.0
    arrivals_per_evse_hour: float = 1.5
    keep_state: bool = False
    fuse_kw_per_station: float = 12.0  # each site's grid connection, per station
    ocpp_chargers: int = 2  # per site, through the site's OCPP gateway (docs/ocpp-gateway.md)


class SiteTime:
    """The demo's one clock for everything that plans over time (stations, local CSMS,
    resource manager): wall time at start, then ``speed`` times faster."""

    def __init__(self, speed: float, clock: Clock = WALL_CLOCK) -> None:
        self.speed, self._clock = speed, clock
        self._origin_us = clock.now_us()
        self._t0 = clock.monotonic()

    def now_us(self) -> int:
        return self._origin_us + int((self._clock.monotonic() - self._t0) * self.speed * 1e6)

    def monotonic(self) -> float:
        """Intervals and timeouts stay real: only the site's wall time runs faster."""
        return self._clock.monotonic()

    async def sleep(self, seconds: float) -> None:
        await self._clock.sleep(seconds)

    async def wait(self, event: asyncio.Event, seconds: float | None) -> bool:
        return await self._clock.wait(event, seconds)


def fast_site(speed: float, arrivals_per_evse_hour: float
              ) -> tuple[EnergySettings, SimulatorSettings]:
    """The energy and simulator settings of a site whose time runs ``speed`` times faster
    (a ``SiteTime``): EVs arrive ``arrivals_per_evse_hour`` times an hour of site time."""
    # envelopes reach a station up to a tick after the CSMS made them: a tick of site time
    energy = EnergySettings(allocator=AllocatorSettings(
        clock_skew_s=30.0 + 2 * speed, horizon_s=max(3_600.0, 60 * speed)))
    simulator = SimulatorSettings(speed=speed, simulation=SimulationConfig(
        arrivals_per_evse_hour=arrivals_per_evse_hour))
    return energy, simulator


@dataclass
class Demo:
    """A running demo: its hierarchy, when it started (monotonic seconds), and its simulated
    OCPP chargers (each run as a task)."""

    hierarchy: Hierarchy
    started: float
    chargers: list[SimulatedCharger] = field(default_factory=list)
    charger_tasks: list[asyncio.Task[None]] = field(default_factory=list)

    @property
    def cloud_actor(self) -> CloudCsms:
        return self.hierarchy.cloud_actor

    def locals(self) -> list[LocalCsms]:
        return [site.local_csms for site in self.hierarchy.sites]

    def stations(self) -> list[ChargingStation]:
        return self.hierarchy.stations()

    def endpoints(self) -> list[Endpoint]:
        h = self.hierarchy
        running = [h.cloud] + [r for site in h.sites for r in (site.local, site.rm, *site.hosts)]
        return [e for r in running if r is not None for e in r.links.endpoints]

    def messages_by_priority(self) -> dict[Priority, int]:
        totals = dict.fromkeys(Priority, 0)
        for endpoint in self.endpoints():
            for prio, count in endpoint.session.queue_counters.envelopes.items():
                totals[prio] += count
        return totals

    def errors(self) -> int:
        actors = [self.cloud_actor, *self.locals(), *self.stations()]
        return (sum(a.rejected for a in actors)
                + sum(e.session.counters.rejected for e in self.endpoints()))

    def signed(self) -> dict[str, int]:
        """Envelopes signed and verified end to end, bodies encrypted and decrypted, and
        envelopes refused by a guard."""
        signing = self.hierarchy.signing
        guards = [] if signing is None else signing.guards
        return {"signed": sum(g.signed for g in guards),
                "verified": sum(g.verified for g in guards),
                "encrypted": sum(g.encrypted for g in guards),
                "decrypted": sum(g.decrypted for g in guards),
                "refused": sum(e.session.counters.refused_by_guard for e in self.endpoints())}

    def certificates(self) -> dict[str, int]:
        """Stations enrolled at JoinNetwork (certificates issued for one-time tokens),
        certificates renewed, and joins refused by the sites' enrollment."""
        enrollers = [local.enroller for local in self.locals() if local.enroller is not None]
        return {"enrolled": sum(e.enrolled for e in enrollers),
                "renewed": sum(e.renewed for e in enrollers),
                "refused": sum(e.refused for e in enrollers)}

    def resyncs(self) -> int:
        return self.cloud_actor.copies.resync.stats.runs + sum(
            local.copies.resync.stats.runs for local in self.locals())

    def consistent(self) -> bool:
        """Every station's tree equals the cloud's copy of it (visible digests)."""
        replicas = self.cloud_actor.copies.replicas
        for station in self.stations():
            copy = replicas.get(f"stations/{station.address}")
            if copy is None or station.tree is None:
                return False
            if copy.tree.digest() != station.tree.digest(visible=True):
                return False
        return True

    def summary(self) -> dict[str, Any]:
        stations = self.stations()
        by_prio = self.messages_by_priority()
        return {
            "sites": len(self.hierarchy.sites),
            "stations": len(stations),
            "stations_online": sum(_online(local) for local in self.locals()),
            "ocpp_chargers_connected": sum(c.connected for c in self.chargers),
            "stations_admitted": sum(1 for s in stations if s.admitted),
            "stations_charging": sum(1 for s in stations if s.charging),
            "evses_charging": sum(s.charging for s in stations),
            "site_power_kw": round(sum(s.power_w for s in stations) / 1000, 1),
            "energy_wh": round(sum(s.energy_wh for s in stations), 1),
            "messages": sum(by_prio.values()),
            "messages_by_priority": {p.name.lower(): n for p, n in by_prio.items()},
            "resyncs": self.resyncs(),
            "errors": self.errors(),
            "signed": self.signed(),
            "certificates": self.certificates(),
            "cloud_copies": len(self.cloud_actor.copies.replicas),
            "sites_energy": self.energy(),
            "load": self.load(),
            "seconds": round(WALL_CLOCK.monotonic() - self.started, 1),
        }

    def load(self) -> dict[str, Any]:
        """How far behind the process runs, and what it coarsened or shed to keep up."""
        paces = [e.pace for e in self.endpoints()]
        stations = self.stations()
        actors = [self.cloud_actor, *self.locals(), *stations]
        return {
            "loop_lag_s": round(max((p.lag_s for p in paces), default=0.0), 2),
            "loop_lag_max_s": round(max((p.max_lag_s for p in paces), default=0.0), 2),
            "pace": max((p.stretch for p in paces), default=1),
            "inbox_max": max((a.inbox_depth for a in actors), default=0),
            "ticks_coarsened": sum(s.hardware.ticks_coarsened for s in stations
                                   if isinstance(s.hardware, SimulatedStation)),
            "updates_coalesced": sum(s.publisher.coalesced for s in stations
                                     if s.publisher is not None),
            "allocations_deferred": sum(local.energy.deferred for local in self.locals()),
            # dropped by policy: unreliable bulk (then state, from a full send queue), never
            # critical or control
            "shed": sum(a.shed for a in actors) + sum(
                e.session.queue_counters.dropped_overflow for e in self.endpoints()),
            # dropped because their sender's deadline passed while they waited to leave
            "expired": sum(sum(e.session.queue_counters.expired.values())
                           for e in self.endpoints()),
        }

    def energy(self) -> list[dict[str, Any]]:
        """Each site's power against its limit now, and its energy alerts so far."""
        out = []
        for site in self.hierarchy.sites:
            local = site.local_csms
            power = sum(s.power_w for s in site.stations)
            managed = local.energy.last_allocation is not None
            own = local.own.tree
            out.append({"site": local.settings.site, "power_kw": round(power / 1000, 1),
                        "limit_kw": round(own.get("energy/limit_w") / 1000, 1)
                        if managed else None,
                        "alerts": own.get("energy/alerts")})
        return out


def _online(local: LocalCsms) -> int:
    """How many of ``local``'s stations are online."""
    return sum(local.copies.is_online(r) for r in local.copies.replicas.values())


async def start_demo(settings: DemoSettings, say: Say) -> Demo:
    state = settings.state_dir
    if state.exists() and not settings.keep_state:
        shutil.rmtree(state)
    state.mkdir(parents=True, exist_ok=True)
    h = await Hierarchy.start(state, sites=settings.sites, say=say, signing=True,
                              certificates=True)
    demo = Demo(h, WALL_CLOCK.monotonic())
    try:
        await h.start_cloud()
        site_time = SiteTime(settings.speed)
        energy, simulator = fast_site(settings.speed, settings.arrivals_per_evse_hour)
        for k in range(1, settings.sites + 1):
            say(f"starting rm-site{k}, local-site{k} and its {settings.stations} stations...")
            await h.start_resource_manager(
                k, fuse_limit_w=settings.fuse_kw_per_station * 1000 * settings.stations,
                clock=site_time)
            await h.start_site(k, settings.stations, simulator=simulator, seed=1000 * k,
                               resource_manager=True, energy=energy, clock=site_time)
        await start_chargers(demo, settings, say, site_time)
    except BaseException:
        await stop_demo(demo)
        raise
    write_connect(h, state / "connect.json")
    return demo


async def start_chargers(demo: Demo, settings: DemoSettings, say: Say, site_time: Clock
                         ) -> None:
    """Per site, an OCPP gateway and ``settings.ocpp_chargers`` simulated OCPP chargers for
    it (real OCPP-J clients living in the site's time, like its simulated stations), each
    connected before the next site's: real chargers join so."""
    h = demo.hierarchy
    for k in range(1, settings.sites + 1):
        if not settings.ocpp_chargers:
            break
        passwords = {f"ocpp-site{k}-{i}": secrets.token_urlsafe(18)
                     for i in range(1, settings.ocpp_chargers + 1)}
        say(f"starting site {k}'s OCPP gateway and its {len(passwords)} OCPP chargers...")
        _, gateway = await h.start_gateway(k, {identity: ChargerEntry(password=password)
                                               for identity, password in passwords.items()},
                                           clock=site_time)
        chargers = [SimulatedCharger(identity, password, gateway.url, seed=i,
                                     report_s=1.0, clock=site_time)
                    for i, (identity, password) in enumerate(passwords.items())]
        demo.chargers += chargers
        demo.charger_tasks += [asyncio.create_task(c.run(), name=f"charger {c.identity}")
                               for c in chargers]
        await until(lambda cs=chargers: all(c.connected for c in cs),  # type: ignore[misc]
                    f"site {k}'s OCPP chargers connected", 30)


def write_connect(h: Hierarchy, path: Path) -> None:
    """``connect.json``: how ``csms get|set|discover|monitor`` reach the demo's actors, each
    on its own broker (the cloud and the local CSMSs on the cloud's; resource managers and
    stations on their site's), as the operator (mode 0600: it holds the password)."""

    def broker(cfg: BrokerConfig) -> dict[str, Any]:
        return {"host": cfg.host, "c2s_port": cfg.c2s_port, "domain": cfg.domain,
                "muc_domain": cfg.muc_domain, "routes": [list(r) for r in cfg.routes],
                "tls": cfg.tls, "cafile": cfg.cafile}

    brokers = {"cloud": broker(h.config)} | {
        f"site{site.number}": broker(h.site_config(site.number)) for site in h.sites}
    actors = {"cloud": "cloud"} | {site.name: "cloud" for site in h.sites} | {
        f"rm-site{site.number}": f"site{site.number}" for site in h.sites} | {
        s.address: f"site{site.number}" for site in h.sites for s in site.stations}
    signing = None if h.signing is None else {
        "key_dir": str(h.signing.store.directory), "keys": h.signing.public_keys(),
        "encryption_keys": h.signing.encryption_keys(),
        "anchor": None if h.commissioning is None else str(h.commissioning.anchor)}
    path.touch(mode=0o600)
    path.write_text(json.dumps({"brokers": brokers, "account": "operator",
                                "password": h.passwords["operator"], "actors": actors,
                                "signing": signing}, indent=2))


async def settle(demo: Demo, timeout: float = 10.0) -> bool:
    """Pause the stations and wait (bounded) until the cloud's copies equal them: the proof
    that the hierarchy holds the true state."""
    demo.hierarchy.pause()
    try:
        await until(demo.consistent, "the cloud's copies equal the stations", timeout,
                    every=0.2)
    except AssertionError:
        return False
    return True


async def stop_demo(demo: Demo) -> None:
    """The simulated chargers first (each closes its socket, given a second at most), then
    the hierarchy, the gateways' servers first."""
    for task in demo.charger_tasks:
        task.cancel()
    if demo.charger_tasks:
        await asyncio.wait(demo.charger_tasks, timeout=2.0)
    await demo.hierarchy.close()


def render(demo: Demo, rates: dict[Priority, float], out: TextIO, tty: bool) -> None:
    rows = []
    for site in demo.hierarchy.sites:
        local, stations = site.local_csms, site.stations
        online = _online(local)
        limit = (local.own.tree.get("energy/limit_w") / 1000 if local.energy.last_allocation
                 else None)
        rows.append((local.settings.site, f"{online}/{len(stations)}",
                     sum(s.charging for s in stations),
                     sum(s.power_w for s in stations) / 1000,
                     "-" if limit is None else f"{limit:.1f}",
                     sum(s.energy_wh for s in stations) / 1000))
    lines = [f"csms demo: {len(demo.hierarchy.sites)} sites, {len(demo.stations())} stations, "
             f"{WALL_CLOCK.monotonic() - demo.started:5.0f} s  (Ctrl-C to stop)",
             f"{'site':<8}{'online':>8}{'charging':>10}{'power kW':>10}{'limit kW':>10}"
             f"{'energy kWh':>12}"]
    lines += [f"{site:<8}{online:>8}{charging:>10}{power:>10.1f}{limit:>10}{energy:>12.1f}"
              for site, online, charging, power, limit, energy in rows]
    lines.append("messages/s  " + "  ".join(f"{p.name.lower()} {rates.get(p, 0.0):6.1f}"
                                            for p in Priority))
    lines.append(f"resyncs {demo.resyncs()}   errors {demo.errors()}   cloud copies "
                 f"{len(demo.cloud_actor.copies.replicas)}")
    load = demo.load()
    lines.append(f"loop lag {load['loop_lag_s']:.2f} s (max {load['loop_lag_max_s']:.2f})  "
                 f"pace x{load['pace']}  inbox max {load['inbox_max']}  coarsened: ticks "
                 f"{load['ticks_coarsened']} updates {load['updates_coalesced']} allocations "
                 f"{load['allocations_deferred']}  shed {load['shed']} expired "
                 f"{load['expired']}")
    if tty:
        out.write("\x1b[H\x1b[2J" + "\n".join(lines) + "\n")
    else:
        out.write(" | ".join([*lines[2:2 + len(rows)], lines[-3], lines[-1]]) + "\n")
    out.flush()


async def run_demo(settings: DemoSettings, out: TextIO = sys.stdout,
                   err: TextIO = sys.stderr) -> dict[str, Any]:
    """Run the demo until ``settings.duration`` is over or a signal asks it to stop (during
    the start too: see ``StopSignals``); its summary."""
    def say(message: str) -> None:
        print(message, file=err, flush=True)

    async with StopSignals() as signals:
        return await _run_demo(settings, signals, say, out)


async def _run_demo(settings: DemoSettings, signals: StopSignals, say: Say,
                    out: TextIO) -> dict[str, Any]:
    try:
        demo = await signals.guard(start_demo(settings, say))
    except StopRequested as stopped:
        say(f"{stopped} while starting")
        return {"started": False, "stopped_by": signals.signal and signals.signal.name}
    try:
        if settings.json:
            say(f"running: {len(demo.stations())} stations")
        else:
            say(f"running. In another terminal: .venv/bin/csms get cs-site1-1 evse/1/status "
                f"(connection details in {settings.state_dir / 'connect.json'}); change a "
                f"site's grid limit live: .venv/bin/csms set rm-site1 grid/fuse_limit_w 40000")
        tty = out.isatty() and not settings.json
        last = demo.messages_by_priority()
        last_t = WALL_CLOCK.monotonic()
        ticks = 0
        while not signals.requested.is_set():
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(1.0):
                    await signals.requested.wait()
            now = WALL_CLOCK.monotonic()
            if settings.duration is not None and now - demo.started >= settings.duration:
                break
            current = demo.messages_by_priority()
            rates = {p: (current[p] - last[p]) / (now - last_t) for p in Priority}
            last, last_t = current, now
            ticks += 1
            if not settings.json and (tty or ticks % 5 == 0):
                render(demo, rates, out, tty)
        summary = demo.summary()
        summary["cloud_consistent"] = None  # the proof takes seconds: not if asked to stop
        with contextlib.suppress(StopRequested):
            if not signals.requested.is_set():
                summary["cloud_consistent"] = await signals.guard(settle(demo))
        if signals.signal is not None:
            summary["stopped_by"] = signals.signal.name
        return summary
    finally:
        say("stopping...")
        began = WALL_CLOCK.monotonic()
        await stop_demo(demo)
        say(f"stopped in {WALL_CLOCK.monotonic() - began:.1f} s")
