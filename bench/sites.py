"""Sites, and other actors a benchmark must watch from outside, as processes of their own.

A benchmark (``bench.hierarchy``, ``bench.scale``) runs each site in a child process:
``python -m <benchmark> site <spec as JSON>``, whose ``main`` hands the spec to ``run_site``
with the commands that benchmark adds. The site process runs the site's own Prosody,
optionally its resource manager, its local CSMS (with its one uplink to the cloud's broker)
and a host of simulated stations on the site's component connection.

The parent drives a child over its standard input and output: one JSON command per line in
(``{"cmd": "status", ...}``), one JSON answer per line out; the child's first line says it is
ready. That channel is the oracle of what the site holds: it is not the network, so it works
while a site's uplink is cut. A child dies with its parent (``die_with_parent``), stops on
``stop`` or when its standard input ends, and its standard error goes to a log file.

Where the child runs is the parent's choice: in a network namespace behind an impaired
uplink (``namespace=``, ``bench.hierarchy``), or in the root namespace on loopback (the
default, ``bench.scale``: only the number of processes matters there).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import secrets
import signal
import sys
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Self

from actors.app.config import BrokerConfig, StationsConfig
from actors.app.demo import SiteTime, fast_site
from actors.app.hierarchy import Hierarchy, Site, broker_config, die_with_parent, simulated
from actors.app.wiring import (
    Running,
    session_config,
    settle_heap,
    simulator_for,
    tune_gc,
    xmpp_settings,
)
from actors.csms.local import LocalCsms
from actors.csms.settings import EnergySettings
from actors.logic.station.simulation import SimulationConfig
from actors.resource_manager.actor import ResourceManager
from actors.runtime.storage.trees import TreeStore
from actors.station.actor import ChargingStation
from actors.station.simulated import SimulatedStation, SimulatorSettings
from bench.netlab.commands import in_netns
from broker_bridge import Endpoint, Router
from broker_bridge.clock import WALL_CLOCK, Clock
from broker_bridge.xmpp import XmppTransport

Answer = dict[str, Any]
Handler = Callable[[dict[str, Any]], Awaitable[Answer | None]]
"""A command of a child: its JSON arguments in, its JSON answer out (``None``: ``{}``)."""

REPO = Path(__file__).resolve().parents[1]


# -- the parent's side ------------------------------------------------------------------------


class ChildProcess:
    """A child process asked over its standard input and output (see the module
    docstring)."""

    def __init__(self, name: str, process: asyncio.subprocess.Process, log: Path) -> None:
        self.name, self.process, self.log = name, process, log
        self.ready: Answer = {}  # its first line

    @classmethod
    async def start(cls, name: str, argv: Sequence[str], log: Path, *,
                    namespace: str | None = None, ready_timeout: float = 180) -> Self:
        """Start ``python <argv>`` (in ``namespace`` if given) and wait for its ready line."""
        process = await asyncio.create_subprocess_exec(
            *in_netns(namespace, [sys.executable, *argv]),
            stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE,
            stderr=log.open("ab"), preexec_fn=die_with_parent(),
            env={**os.environ, "PYTHONPATH": str(REPO)},
            limit=2**26)  # a status of thousands of digests is one long line
        child = cls(name, process, log)
        try:
            ready = await child._line(ready_timeout)
        except BaseException:
            await child.kill()
            raise
        if not ready.get("ready"):
            await child.kill()
            raise RuntimeError(f"{name} did not start ({ready}); see {log}")
        child.ready = ready
        return child

    @property
    def pid(self) -> int:
        return self.process.pid

    async def _line(self, timeout: float) -> Answer:
        assert self.process.stdout is not None
        try:
            line = await asyncio.wait_for(self.process.stdout.readline(), timeout)
        except TimeoutError:
            raise RuntimeError(f"{self.name}: no answer within {timeout:g} s; see "
                               f"{self.log}") from None
        if not line:
            raise RuntimeError(f"{self.name}'s process exited ({await self.process.wait()}); "
                               f"see {self.log}")
        answer: Answer = json.loads(line)
        if "error" in answer:
            raise RuntimeError(f"{self.name}: {answer['error']}")
        return answer

    async def ask(self, cmd: str, timeout: float = 120, **args: Any) -> Answer:
        """Send command ``cmd`` with ``args``; its answer."""
        assert self.process.stdin is not None
        self.process.stdin.write((json.dumps({"cmd": cmd, **args}) + "\n").encode())
        await self.process.stdin.drain()
        return await self._line(timeout)

    async def stop(self, timeout: float = 20) -> None:
        """Ask it to stop; SIGKILL it if it has not within ``timeout`` seconds."""
        if self.process.returncode is None:
            with contextlib.suppress(Exception):
                await self.ask("stop", timeout=timeout)
            try:
                await asyncio.wait_for(self.process.wait(), timeout)
            except TimeoutError:
                await self.kill()

    async def kill(self) -> None:
        if self.process.returncode is None:
            self.process.kill()
        await self.process.wait()


class SiteProcess(ChildProcess):
    """A site's process: ``python -m <module> site <spec>`` (see ``run_site``)."""

    number = 0

    @classmethod
    async def start_site(cls, spec: Mapping[str, Any], log: Path, *, module: str,
                         namespace: str | None = None,
                         ready_timeout: float = 180) -> SiteProcess:
        """Site ``spec["site"]`` in its own process, run by ``module``'s ``main``."""
        site = await cls.start(f"site {spec['site']}", ["-m", module, "site", json.dumps(spec)],
                               log, namespace=namespace, ready_timeout=ready_timeout)
        site.number = spec["site"]
        return site


async def poll(what: str, check: Callable[[], Awaitable[Any]], timeout: float,
               every: float = 0.5) -> float:
    """Seconds until the coroutine function ``check`` returns true (polled: it asks other
    processes); raises with ``what`` after ``timeout``."""
    start = time.monotonic()
    while not await check():
        if time.monotonic() - start > timeout:
            raise RuntimeError(f"{what}: not within {timeout:g} s")
        await asyncio.sleep(every)  # a poll of other processes, not a wait on our own state
    return time.monotonic() - start


# -- the child's side -------------------------------------------------------------------------


async def serve(handlers: Mapping[str, Handler], ready: Answer | None = None) -> None:
    """Say ``ready`` (``{"ready": true}`` and more), then answer commands from stdin, one
    JSON line each, until ``stop``, the end of stdin or SIGTERM. A command that fails answers
    ``{"error": ...}`` and the child goes on. Ctrl-C at a terminal reaches the whole process
    group: a child leaves it to its parent, which stops its children in order."""
    loop = asyncio.get_running_loop()
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    stopping = asyncio.Event()
    loop.add_signal_handler(signal.SIGTERM, stopping.set)
    reader = asyncio.StreamReader(limit=2**26)
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    print(json.dumps({"ready": True, **(ready or {})}), flush=True)
    stop = asyncio.ensure_future(stopping.wait())
    try:
        while True:
            read = asyncio.ensure_future(reader.readline())
            await asyncio.wait({read, stop}, return_when=asyncio.FIRST_COMPLETED)
            if not read.done():
                read.cancel()
                return
            line = read.result()
            if not line:
                return
            cmd = json.loads(line)
            name = cmd["cmd"]
            if name == "stop":
                return
            handler = handlers.get(name)
            try:
                if handler is None:
                    raise KeyError(f"unknown command {name!r}")
                answer = await handler(cmd) or {}
            except Exception as exc:
                answer = {"error": f"{name}: {type(exc).__name__}: {exc}"}
            print(json.dumps(answer), flush=True)
    finally:
        stop.cancel()
        loop.remove_signal_handler(signal.SIGTERM)


@dataclass
class RunningSite:
    """What a site process runs, for its commands: ``spec`` is what it was started with."""

    spec: dict[str, Any]
    hierarchy: Hierarchy
    site: Site
    site_time: Clock | None
    resource_manager: ResourceManager | None
    closing: list[Callable[[], Awaitable[None]]] = field(default_factory=list)

    @property
    def number(self) -> int:
        return self.site.number

    @property
    def local(self) -> LocalCsms:
        return self.site.local_csms

    @property
    def uplink(self) -> Endpoint:
        return self.local.links.endpoint_for("cloud")

    def status(self) -> Answer:
        """Every station's digest, what the site does, and whether its uplink is joined."""
        stations, local, uplink = self.site.stations, self.local, self.uplink
        return {
            "digests": {s.address: s.tree.digest(visible=True).hex()
                        for s in stations if s.tree is not None},
            "admitted": sum(s.admitted for s in stations),
            "energy_wh": sum(s.energy_wh for s in stations),
            "power_w": sum(s.power_w for s in stations),
            "charging": sum(s.charging for s in stations),
            "allocations": local.own.tree.get("energy/allocations"),
            "limit_w": local.own.tree.get("energy/limit_w"),
            "local_consistent": self.hierarchy.local_consistent(),
            "uplink_up": uplink.link_up, "joined": local.upstream_joined(),
            "pace": self.pace(),
        }

    def pace(self) -> int:
        """How many times coarser this process's periodic work runs now (the largest stretch
        over its links; 1: on time, ``broker_bridge.pace``)."""
        site = self.site
        running = [r for r in (site.local, site.rm, *site.hosts) if r is not None]
        return max((e.pace.stretch for r in running for e in r.links.endpoints), default=1)


Extension = Callable[[RunningSite], Mapping[str, Handler]]
"""What a benchmark adds to a site process: its commands, given the running site."""


def site_settings(spec: Mapping[str, Any]
                  ) -> tuple[SiteTime | None, EnergySettings | None, SimulatorSettings]:
    """The site's time, energy and simulator settings from ``spec``: ``speed`` above 1 runs
    the site's time that much faster than the wall clock (EVs come and go while a benchmark
    watches), ``arrivals_per_evse_hour`` and ``tick_s`` shape the stations' lives."""
    speed = float(spec.get("speed", 1.0))
    arrivals = float(spec.get("arrivals_per_evse_hour",
                              SimulationConfig().arrivals_per_evse_hour))
    tick_s = float(spec.get("tick_s", 1.0))
    if speed == 1.0:
        simulator = SimulatorSettings(tick_s=tick_s, simulation=SimulationConfig(
            arrivals_per_evse_hour=arrivals))
        return None, None, simulator
    energy, simulator = fast_site(speed, arrivals_per_evse_hour=arrivals)
    return SiteTime(speed), energy, simulator.model_copy(update={"tick_s": tick_s})


class AccountSites(Hierarchy):
    """Sites whose stations log in to their site's broker on accounts of their own (one
    client connection each), not as JIDs of the site's component: the site's actors find
    them on the site's main domain."""

    def site_config(self, number: int) -> BrokerConfig:
        return broker_config(self.site_brokers[number])

    async def add_account_stations(self, number: int, count: int, *, simulator: SimulatorSettings,
                                   seed: int, paused: bool, clock: Clock | None,
                                   together: int = 50) -> Running:
        """``count`` stations of site ``number``, each on an account of its own (made here)
        and its own connection, sharing one store; ``together`` connect at a time."""
        site = self.site(number)
        ids = [f"cs-site{number}-{i}" for i in range(1, count + 1)]
        passwords = {i: secrets.token_urlsafe(9) for i in ids}
        self.site_brokers[number].create_accounts(passwords)
        broker = self.site_config(number)
        cfg = StationsConfig(ids=tuple(ids), csms=site.name,
                             provisioning_secret=self.provisioning(number),
                             state_dir=str(self.root / f"stations-site{number}-accounts"),
                             simulator=simulator, seed=seed)
        store = await TreeStore(Path(cfg.state_dir) / "trees.db", compact_every=128).open()
        endpoints: list[Endpoint] = []
        stations: list[ChargingStation] = []
        try:
            for first in range(0, count, together):
                batch = ids[first:first + together]
                started = await asyncio.gather(*(Endpoint(XmppTransport.client(
                    xmpp_settings(broker), i, passwords[i], name=i),
                    config=session_config(broker), name=i).start() for i in batch),
                    return_exceptions=True)
                endpoints += [e for e in started if isinstance(e, Endpoint)]
                for outcome in started:
                    if isinstance(outcome, BaseException):
                        raise outcome
                for index, address in enumerate(batch, first):
                    hardware = SimulatedStation(simulator_for(cfg, index, address),
                                                clock=clock or WALL_CLOCK)
                    hardware.paused = paused
                    station = ChargingStation(address, endpoints[index], store=store,
                                              settings=cfg, hardware=hardware, clock=clock)
                    await station.start()
                    stations.append(station)
        except BaseException:  # undo what started, then say why
            for station in stations:
                with contextlib.suppress(Exception):
                    await station.stop()
            for endpoint in endpoints:
                with contextlib.suppress(Exception):
                    await endpoint.stop(flush_timeout=0.2)
            await store.close()
            raise
        settle_heap()
        # one Running holds them all: its router lists every station's endpoint (the routes
        # are never used to send: each station sends on its own endpoint)
        host = Running(Router(endpoints[0], list(zip(ids[1:], endpoints[1:], strict=True))),
                       list(stations), [store])
        site.hosts.append(host)
        return host


async def run_site(spec: dict[str, Any], extend: Extension | None = None) -> int:
    """The site process (see the module docstring). ``spec``: ``site`` (its number),
    ``stations`` (how many), ``cloud`` (how to reach the cloud's broker: a ``[broker]``
    section as JSON), ``passwords``, ``root`` (its state directory); optionally ``host`` (its
    broker's address, default loopback), ``fuse_limit_w`` (start its resource manager with
    that fuse), ``seed``, ``paused`` (stations start without ticking), ``accounts`` (each
    station on an account and connection of its own: ``AccountSites``) and what
    ``site_settings`` reads. Commands: ``status``, ``pause`` (``paused``: false resumes),
    ``add_station`` (``name``), ``pids`` (this process and its broker), ``stop``, and those of
    ``extend``."""
    tune_gc()
    k, accounts = spec["site"], bool(spec.get("accounts"))
    kind = AccountSites if accounts else Hierarchy
    h = await kind.start_site_broker(Path(spec["root"]), k, cloud=BrokerConfig(**spec["cloud"]),
                                     passwords=spec["passwords"],
                                     host=spec.get("host", "127.0.0.1"))
    running: RunningSite | None = None
    try:
        site_time, energy, simulator = site_settings(spec)
        fuse = spec.get("fuse_limit_w")
        rm = None if fuse is None else await h.start_resource_manager(
            k, fuse_limit_w=fuse, clock=site_time)
        seed, paused = spec.get("seed", k), spec.get("paused", False)
        await h.start_site(k, 0 if accounts else spec["stations"],
                           resource_manager=rm is not None, seed=seed, energy=energy,
                           simulator=simulator, clock=site_time, paused=paused)
        if isinstance(h, AccountSites):
            await h.add_account_stations(k, spec["stations"], simulator=simulator, seed=seed,
                                         paused=paused, clock=site_time)
        running = RunningSite(spec, h, h.site(k), site_time, rm)
        site = running

        async def status(cmd: dict[str, Any]) -> Answer:
            return site.status()

        async def pause(cmd: dict[str, Any]) -> None:
            h.pause(cmd.get("paused", True))

        async def add_station(cmd: dict[str, Any]) -> None:
            station = await h.add_station(k, cmd["name"])
            simulated(station).paused = False

        async def pids(cmd: dict[str, Any]) -> Answer:
            return {"site": os.getpid(), "broker": h.site_broker(k).pid}

        handlers: dict[str, Handler] = {"status": status, "pause": pause,
                                        "add_station": add_station, "pids": pids}
        if extend is not None:
            handlers.update(extend(running))
        await serve(handlers)
    finally:
        if running is not None:
            for close in running.closing:
                with contextlib.suppress(Exception):
                    await close()
        await h.close()
    return 0


__all__ = ["AccountSites", "ChildProcess", "Extension", "Handler", "RunningSite", "SiteProcess", "poll",
           "run_site", "serve", "site_settings"]
