"""``csms demo``: a whole local-plus-cloud hierarchy on the managed broker, in one process.

It starts a private Prosody, a cloud CSMS, and per site a resource manager, a local CSMS and
a host of simulated stations (one component connection each), shows a live table (each
site's power against the limit its resource manager gives), and writes ``connect.json`` in
its state directory so that ``csms get|set|discover`` can reach it: ``csms set rm-site1
grid/fuse_limit_w 40000`` changes a site's grid limit live. Time at the sites runs
``--speed`` times faster than real time (one ``SiteTime`` for stations, local CSMS and
resource manager), so that EVs come and go while you watch. Ctrl-C (or ``--duration``) stops everything cleanly; the broker dies with the process
in any case.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import secrets
import shutil
import signal
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

from actors.app.config import (
    BrokerConfig,
    CloudConfig,
    LocalConfig,
    ResourceManagerConfig,
    StationsConfig,
)
from actors.app.wiring import (
    Running,
    start_cloud,
    start_local,
    start_resource_manager,
    start_stations,
)
from actors.csms.cloud import CloudCsms
from actors.csms.local import LocalCsms
from actors.csms.site_energy import EnergySettings
from actors.logic.energy.allocation import AllocatorSettings
from actors.station.actor import ChargingStation
from broker_bridge import Priority
from broker_bridge.clock import WALL_CLOCK, Clock
from broker_bridge.prosody import ManagedProsody


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


@dataclass
class Demo:
    broker: ManagedProsody
    cloud: Running
    sites: list[tuple[Running, Running]]  # (local CSMS, station host)
    started: float
    rms: list[Running] = field(default_factory=list)

    @property
    def cloud_actor(self) -> CloudCsms:
        return self.cloud.actors[0]  # type: ignore[return-value]

    def locals(self) -> list[LocalCsms]:
        return [local.actors[0] for local, _ in self.sites]  # type: ignore[misc]

    def stations(self) -> list[ChargingStation]:
        return [a for _, host in self.sites for a in host.actors]  # type: ignore[misc]

    def endpoints(self) -> list[Any]:
        return [self.cloud.endpoint] + [r.endpoint for pair in self.sites for r in pair]

    def messages_by_priority(self) -> dict[Priority, int]:
        totals = dict.fromkeys(Priority, 0)
        for endpoint in self.endpoints():
            for prio, count in endpoint.session.queue_counters.envelopes.items():
                totals[prio] += count
        return totals

    def errors(self) -> int:
        actors = [self.cloud_actor] + [a for pair in self.sites for r in pair for a in r.actors]
        return (sum(a.rejected for a in actors)
                + sum(e.session.counters.rejected for e in self.endpoints()))

    def resyncs(self) -> int:
        locals_ = [pair[0].actors[0] for pair in self.sites]
        return self.cloud_actor.copies.resync.stats.runs + sum(
            a.copies.resync.stats.runs for a in locals_)  # type: ignore[attr-defined]

    def consistent(self) -> bool:
        """Every station's tree equals the cloud's copy of it (visible digests)."""
        cloud = self.cloud_actor
        for station in self.stations():
            copy = cloud.copies.replicas.get(f"stations/{station.address}")
            if copy is None or station.tree is None:
                return False
            if copy.tree.digest() != station.tree.digest(visible=True):
                return False
        return True

    def summary(self) -> dict[str, Any]:
        stations = self.stations()
        by_prio = self.messages_by_priority()
        online = sum(_online(local) for local in self.locals())
        return {
            "sites": len(self.sites),
            "stations": len(stations),
            "stations_online": online,
            "stations_admitted": sum(1 for s in stations if s.admitted),
            "stations_charging": sum(1 for s in stations if s.charging),
            "evses_charging": sum(s.charging for s in stations),
            "site_power_kw": round(sum(s.power_w for s in stations) / 1000, 1),
            "energy_wh": round(sum(s.energy_wh for s in stations), 1),
            "messages": sum(by_prio.values()),
            "messages_by_priority": {p.name.lower(): n for p, n in by_prio.items()},
            "resyncs": self.resyncs(),
            "errors": self.errors(),
            "cloud_copies": len(self.cloud_actor.copies.replicas),
            "sites_energy": self.energy(),
            "seconds": round(time.monotonic() - self.started, 1),
        }


    def energy(self) -> list[dict[str, Any]]:
        """Each site's power against its limit now, and its energy alerts so far."""
        out = []
        for local_run, host in self.sites:
            local: LocalCsms = local_run.actors[0]  # type: ignore[assignment]
            power = sum(s.power_w for s in host.actors)  # type: ignore[attr-defined]
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


async def start_demo(settings: DemoSettings, say: Any) -> Demo:
    state = settings.state_dir
    if state.exists() and not settings.keep_state:
        shutil.rmtree(state)
    state.mkdir(parents=True, exist_ok=True)
    domains = tuple(f"site{k}.stations.csms.local" for k in range(1, settings.sites + 1))
    broker = ManagedProsody(state / "broker", component_domains=domains)
    say("starting the managed Prosody broker...")
    ep = await broker.start()
    secret = {name: secrets.token_urlsafe(12) for name in
              ["cloud", "operator", *(f"local-site{k}" for k in range(1, settings.sites + 1)),
               *(f"rm-site{k}" for k in range(1, settings.sites + 1))]}
    broker.create_accounts(secret)
    cfg = BrokerConfig(host=ep.host, c2s_port=ep.c2s_port, component_port=ep.component_port,
                       domain=ep.domain, muc_domain=ep.muc_domain,
                       routes=tuple((f"cs-site{k}-*", d) for k, d in enumerate(domains, 1)))
    site_secrets = {f"local-site{k}": secrets.token_urlsafe(12)
                    for k in range(1, settings.sites + 1)}
    say("starting the cloud CSMS...")
    cloud = await start_cloud(cfg, CloudConfig(address="cloud", password=secret["cloud"],
                                               state_dir=str(state / "cloud"),
                                               site_secrets=site_secrets))
    sites, rms = [], []
    site_time = SiteTime(settings.speed)
    # envelopes reach a station up to a tick after the CSMS made them: a tick of site time
    energy = EnergySettings(allocator=AllocatorSettings(
        clock_skew_s=30.0 + 2 * settings.speed, horizon_s=max(3_600.0, 60 * settings.speed)))
    for k in range(1, settings.sites + 1):
        name, rm_name = f"local-site{k}", f"rm-site{k}"
        provisioning = secrets.token_urlsafe(12)
        say(f"starting {rm_name}, {name} and its {settings.stations} stations...")
        rm = await start_resource_manager(cfg, ResourceManagerConfig(
            address=rm_name, password=secret[rm_name], state_dir=str(state / rm_name),
            site_csms=name, fuse_limit_w=settings.fuse_kw_per_station * 1000 * settings.stations),
            clock=site_time)
        local = await start_local(cfg, LocalConfig(
            address=name, password=secret[name], state_dir=str(state / name), site=f"site{k}",
            provisioning_secret=provisioning, cloud="cloud", upstream_secret=site_secrets[name],
            resource_manager=rm_name), energy=energy, clock=site_time)
        host = await start_stations(cfg, StationsConfig(
            component=domains[k - 1], component_secret=ep.component_secret,
            ids=tuple(f"cs-site{k}-{i}" for i in range(1, settings.stations + 1)), csms=name,
            provisioning_secret=provisioning, state_dir=str(state / f"stations-site{k}"),
            speed=settings.speed, arrivals_per_evse_per_h=settings.arrivals_per_evse_hour,
            seed=1000 * k), progress=say, clock=site_time)
        sites.append((local, host))
        rms.append(rm)
    actors = ["cloud", *site_secrets, *(r.actors[0].address for r in rms),
              *(a.address for _, h in sites for a in h.actors)]
    (state / "connect.json").write_text(json.dumps({
        "broker": {"host": ep.host, "c2s_port": ep.c2s_port, "domain": ep.domain,
                   "muc_domain": ep.muc_domain, "routes": [list(r) for r in cfg.routes]},
        "account": "operator", "password": secret["operator"], "actors": actors,
    }, indent=2))
    return Demo(broker, cloud, sites, time.monotonic(), rms)


async def settle(demo: Demo, timeout: float = 10.0) -> bool:
    """Pause the stations and wait (bounded) until the cloud's copies equal them: the proof
    that the hierarchy holds the true state."""
    for station in demo.stations():
        station.hardware.paused = True  # type: ignore[attr-defined]
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if demo.consistent():
            return True
        await asyncio.sleep(0.2)
    return demo.consistent()


async def stop_demo(demo: Demo) -> None:
    for local, host in demo.sites:
        await host.stop()
        await local.stop()
    for rm in demo.rms:
        await rm.stop()
    await demo.cloud.stop()
    await demo.broker.stop()


def render(demo: Demo, rates: dict[Priority, float], out: TextIO, tty: bool) -> None:
    rows = []
    for local_run, host in demo.sites:
        local: LocalCsms = local_run.actors[0]  # type: ignore[assignment]
        stations: list[ChargingStation] = host.actors  # type: ignore[assignment]
        online = _online(local)
        limit = (local.own.tree.get("energy/limit_w") / 1000 if local.energy.last_allocation
                 else None)
        rows.append((local.settings.site, f"{online}/{len(stations)}",
                     sum(s.charging for s in stations),
                     sum(s.power_w for s in stations) / 1000,
                     "-" if limit is None else f"{limit:.1f}",
                     sum(s.energy_wh for s in stations) / 1000))
    lines = [f"csms demo: {len(demo.sites)} sites, {len(demo.stations())} stations, "
             f"{time.monotonic() - demo.started:5.0f} s  (Ctrl-C to stop)",
             f"{'site':<8}{'online':>8}{'charging':>10}{'power kW':>10}{'limit kW':>10}"
             f"{'energy kWh':>12}"]
    lines += [f"{site:<8}{online:>8}{charging:>10}{power:>10.1f}{limit:>10}{energy:>12.1f}"
              for site, online, charging, power, limit, energy in rows]
    lines.append("messages/s  " + "  ".join(f"{p.name.lower()} {rates.get(p, 0.0):6.1f}"
                                            for p in Priority))
    lines.append(f"resyncs {demo.resyncs()}   errors {demo.errors()}   cloud copies "
                 f"{len(demo.cloud_actor.copies.replicas)}")
    if tty:
        out.write("\x1b[H\x1b[2J" + "\n".join(lines) + "\n")
    else:
        out.write(" | ".join(lines[2:2 + len(rows)]) + " | " + lines[-2] + "\n")
    out.flush()


async def run_demo(settings: DemoSettings, out: TextIO = sys.stdout,
                   err: TextIO = sys.stderr) -> dict[str, Any]:
    def say(message: str) -> None:
        print(message, file=err, flush=True)

    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    demo = await start_demo(settings, say)
    try:
        if not settings.json:
            say(f"running. In another terminal: .venv/bin/csms get cs-site1-1 evse/1/status "
                f"(connection details in {settings.state_dir / 'connect.json'}); change a "
                f"site's grid limit live: .venv/bin/csms set rm-site1 grid/fuse_limit_w 40000")
        tty = out.isatty() and not settings.json
        last = demo.messages_by_priority()
        last_t = time.monotonic()
        ticks = 0
        while not stop.is_set():
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(1.0):
                    await stop.wait()
            now = time.monotonic()
            if settings.duration is not None and now - demo.started >= settings.duration:
                break
            current = demo.messages_by_priority()
            rates = {p: (current[p] - last[p]) / (now - last_t) for p in Priority}
            last, last_t = current, now
            ticks += 1
            if not settings.json and (tty or ticks % 5 == 0):
                render(demo, rates, out, tty)
        summary = demo.summary()
        summary["cloud_consistent"] = await settle(demo)
        return summary
    finally:
        say("stopping...")
        await stop_demo(demo)
