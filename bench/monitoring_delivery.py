"""Monitoring reports delivered end to end through the managed Prosody: step 2 of
``bench.monitoring`` (see its docstring for the scenario and the figures).

All actors run in this process (stations on one XEP-0114 component connection, the sink on its
own client account); Prosody runs in its own. The stations' simulations are paused: only the
bench writes. The driver commits one transaction per station per pass (``tick_writes``), yields
to the event loop every few stations, and after each pass waits while the stations' session
holds many queued or unacknowledged envelopes or the sink's inbox is long, so that what is
measured is what gets delivered, not a queue that grows.
"""

from __future__ import annotations

import asyncio
import os
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from actors.app.hierarchy import Hierarchy
from actors.app.wiring import Running, settle_heap, xmpp_settings
from actors.logic.station.simulation import SimulationConfig
from actors.runtime.actor import Actor, Context, RoleDirectory, handles
from actors.station.actor import ChargingStation
from actors.station.simulated import SimulatorSettings
from bench.monitoring import monitor_setups
from broker_bridge import Endpoint
from broker_bridge.prosody import ManagedProsody
from broker_bridge.xmpp import XmppTransport
from object_model import Role, Write
from object_model.messages import JoinNetworkRequest, JoinNetworkResponse, PropertyValueUpdate
from object_model.monitoring import MonitoringReport

SINK = "local-site1"  # the sink plays the site's local CSMS, on its account
WARMUP_S = 3.0
SETUPS_IN_FLIGHT = 256
MAX_QUEUED = 2_000  # envelopes queued or unacknowledged at the stations' session
MAX_INBOX = 2_000  # envelopes waiting for the sink's handlers
YIELD_EVERY = 50  # stations written between two turns of the event loop
Say = Callable[[str], None]


class Sink(Actor):
    """A CSMS that admits every station and counts what they send it."""

    role = Role.LOCAL_CSMS

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.reports = self.samples = self.updates = 0

    @handles(JoinNetworkRequest)
    async def on_join(self, message: JoinNetworkRequest, ctx: Context) -> JoinNetworkResponse:
        return JoinNetworkResponse(csms=self.address, heartbeat_s=3600)

    @handles(PropertyValueUpdate)
    async def on_update(self, message: PropertyValueUpdate, ctx: Context) -> None:
        self.updates += 1

    @handles(MonitoringReport)
    async def on_report(self, message: MonitoringReport, ctx: Context) -> None:
        self.reports += 1
        self.samples += len(message.samples)


def tick_writes(k: int, i: int) -> list[Write]:
    """Pass ``k`` of station ``i``: new power on both EVSEs, voltage and current moving by more
    than their deltas, session energy by 150 Wh, output power (sampled), a temperature below
    its threshold, an unwatched value; every 20th pass EVSE 1 starts or stops charging."""
    writes = [
        Write("evse/1/meter/obis:1-0:16.7.0", 7000.0 + (k * 37 + i * 11) % 200 * 2.0),
        Write("evse/2/meter/obis:1-0:16.7.0", 3600.0 + (k * 53 + i * 7) % 200 * 2.0),
        Write("evse/1/meter/obis:1-0:32.7.0", 228.0 + 2.0 * (k % 2)),
        Write("evse/1/meter/obis:1-0:31.7.0", 10.0 + 2.0 * (k % 2)),
        Write("evse/1/session/energy_wh", 150.0 * (k + 1)),
        Write("evse/1/power_module/output_power_w", 7200.0 + (k * 37 + i * 11) % 200 * 2.0),
        Write("enclosure/temperature_sensor/1/temperature_c", 20.0 + k % 2),
        Write("diagnostics/cpu_load_percent", 5.0 + k % 3),
    ]
    if k % 20 == 0:
        charging = k // 20 % 2 == 0
        writes += [Write("evse/1/status", "Charging" if charging else "Available"),
                   Write("evse/1/connector/1/status", "Occupied" if charging else "Available")]
    return writes


def _cpu_ticks(pid: int | None) -> float:
    """CPU seconds (user + system) a process used so far; 0 when unknown."""
    if pid is None:
        return 0.0
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


@dataclass
class _Counts:
    """What the window is measured from: the same counters at its start and end."""

    at: float
    reports: int
    samples: int
    updates: int
    made: int
    transactions: int
    frame_bytes: int
    ack_bytes: int
    cpu: float
    broker_cpu: float


class Delivery:
    """The broker, the sink and the stations (see the module docstring)."""

    def __init__(self, root: Path, say: Say) -> None:
        self.root, self.say = root, say
        self.hierarchy: Hierarchy | None = None
        self.sink: Sink | None = None
        self.hosts: Running | None = None
        self.transactions = 0
        self.pass_no = 0

    @property
    def stations(self) -> list[ChargingStation]:
        assert self.hierarchy is not None
        return self.hierarchy.stations()

    @property
    def broker(self) -> ManagedProsody:
        assert self.hierarchy is not None
        return self.hierarchy.site_broker(1)

    async def start(self, count: int) -> None:
        self.hierarchy = h = await Hierarchy.start(self.root, say=self.say)
        endpoint = await Endpoint(XmppTransport.client(
            xmpp_settings(h.site_config(1)), SINK, h.passwords[SINK]), name=SINK).start()
        self.sink = Sink(SINK, endpoint, roles=RoleDirectory({"cs-*": Role.STATION}))
        await self.sink.start()
        started = time.monotonic()
        self.say(f"starting {count} station actors on one component connection")
        # a tick of an hour and no arrivals: nothing changes but what the bench writes
        self.hosts = await h.add_stations(
            1, [f"cs-site1-{i}" for i in range(1, count + 1)], seed=1, paused=True,
            simulator=SimulatorSettings(tick_s=3600.0, simulation=SimulationConfig(
                arrivals_per_evse_hour=0.0)))
        await self._until(lambda: sum(s.admitted for s in self.stations), count, "joined", 120)
        self.say(f"{count} stations started and joined in {time.monotonic() - started:.1f} s")

    async def _until(self, done: Callable[[], int], total: int, what: str,
                     timeout: float) -> None:
        deadline, shown = time.monotonic() + timeout, time.monotonic()
        while (n := done()) < total:
            if time.monotonic() > deadline:
                raise RuntimeError(f"only {n}/{total} stations {what} after {timeout:g} s")
            if time.monotonic() - shown >= 2.0:
                shown = time.monotonic()
                self.say(f"{n}/{total} stations {what}")
            await asyncio.sleep(0.05)

    async def set_up_monitors(self) -> float:
        """The sink sets up the ten tasks on every station; seconds it took."""
        assert self.sink is not None
        sink, setups, limit = self.sink, monitor_setups(), asyncio.Semaphore(SETUPS_IN_FLIGHT)
        started = time.monotonic()
        done = [0]

        async def one(address: str) -> None:
            for setup in setups:
                async with limit:
                    await sink.request(address, setup, timeout=120)
                done[0] += 1

        work = asyncio.gather(*(one(s.address) for s in self.stations))
        total = len(self.stations) * len(setups)
        while not work.done():
            await asyncio.wait([work], timeout=2.0)
            self.say(f"{done[0]}/{total} monitoring tasks set up")
        await work
        return time.monotonic() - started

    def _counts(self) -> _Counts:
        assert self.sink is not None and self.hosts is not None
        sink = self.sink
        return _Counts(
            at=time.monotonic(), reports=sink.reports, samples=sink.samples,
            updates=sink.updates, made=sum(s.monitors.stats.reports for s in self.stations),
            transactions=self.transactions, frame_bytes=self.hosts.endpoint.bytes_sent,
            ack_bytes=sink.endpoint.bytes_sent, cpu=time.process_time(),
            broker_cpu=_cpu_ticks(self.broker.pid))

    def _backlogged(self) -> bool:
        assert self.sink is not None and self.hosts is not None
        session = self.hosts.endpoint.session
        return (sum(session.queue_depth().values()) + session.pending_count > MAX_QUEUED
                or self.sink.inbox_depth > MAX_INBOX)

    async def _drive(self, until: float) -> None:
        stations = self.stations
        while time.monotonic() < until:
            k = self.pass_no
            for i, station in enumerate(stations):
                station.tree.apply(tick_writes(k, i))  # type: ignore[union-attr]
                if i % YIELD_EVERY == YIELD_EVERY - 1:
                    await asyncio.sleep(0)
            self.transactions += len(stations)
            self.pass_no += 1
            await asyncio.sleep(0)
            while self._backlogged() and time.monotonic() < until:
                await asyncio.sleep(0.005)

    async def window(self, seconds: float, warmup: float = WARMUP_S) -> dict[str, Any]:
        """Drive the stations for ``warmup`` + ``seconds``, measure the last ``seconds``, then
        wait (up to 60 s) until the sink got every report made."""
        assert self.sink is not None
        settle_heap()
        await self._drive(time.monotonic() + warmup)
        start = self._counts()
        await self._drive(start.at + seconds)
        end = self._counts()
        span = end.at - start.at
        made = sum(s.monitors.stats.reports for s in self.stations)
        deadline, last, last_change = time.monotonic() + 60, -1, time.monotonic()
        while self.sink.reports < made and time.monotonic() < deadline:
            if self.sink.reports != last:
                last, last_change = self.sink.reports, time.monotonic()
            elif time.monotonic() - last_change > 10:
                break  # nothing more is coming
            await asyncio.sleep(0.05)
        reports, samples = end.reports - start.reports, end.samples - start.samples
        return {
            "stations": len(self.stations),
            "seconds": round(span, 2),
            "reports_per_s": round(reports / span, 1),
            "samples_per_s": round(samples / span, 1),
            "samples_per_report": round(samples / max(reports, 1), 2),
            "updates_per_s": round((end.updates - start.updates) / span, 1),
            "transactions_per_s": round((end.transactions - start.transactions) / span, 1),
            "reports_made": end.made - start.made,
            "delivered": reports,
            "delivered_all": self.sink.reports >= made,
            "drain_seconds": round(time.monotonic() - end.at, 2),
            "station_frame_bytes_per_sample": round((end.frame_bytes - start.frame_bytes)
                                                    / max(samples, 1), 1),
            "ack_bytes_per_report": round((end.ack_bytes - start.ack_bytes) / max(reports, 1), 1),
            "process_cpu_percent": round(100 * (end.cpu - start.cpu) / span, 1),
            "broker_cpu_percent": round(100 * (end.broker_cpu - start.broker_cpu) / span, 1),
        }

    async def quiesce(self, timeout: float = 10.0) -> None:
        """Wait until the last reports have left and been acknowledged (nothing new for 1.5 s,
        nothing pending): either side stopping before that would see the other's traffic
        refused as addressed to an unknown actor."""
        assert self.sink is not None and self.hosts is not None
        deadline, last, since = time.monotonic() + timeout, -1, time.monotonic()
        while time.monotonic() < deadline:
            if self.sink.reports != last:
                last, since = self.sink.reports, time.monotonic()
            elif (time.monotonic() - since >= 1.5
                  and self.hosts.endpoint.session.pending_count == 0):
                return
            await asyncio.sleep(0.05)

    async def stop(self) -> None:
        if self.hierarchy is not None:
            for host in self.hierarchy.site(1).hosts:
                await host.stop()
        if self.sink is not None:
            await self.sink.stop()
            await self.sink.endpoint.stop(flush_timeout=1)
        if self.hierarchy is not None:
            await self.hierarchy.close()


async def measure_delivery(stations: int, seconds: float, *, warmup: float = WARMUP_S,
                           say: Say = lambda _: None) -> dict[str, Any]:
    """Two windows: stations as they are (publishing their changes to the sink too), then
    with publishing off (only monitoring reports travel)."""
    with tempfile.TemporaryDirectory() as tmp:
        run = Delivery(Path(tmp), say)
        try:
            await run.start(stations)
            setup_s = await run.set_up_monitors()
            say(f"monitoring tasks set up in {setup_s:.1f} s; measuring with publishing on "
                f"({warmup:g} s warm-up, {seconds:g} s)")
            publishing = await run.window(seconds, warmup)
            for station in run.stations:
                assert station.publisher is not None
                station.publisher.unsubscribe(SINK)
            say(f"measuring with publishing off ({warmup:g} s warm-up, {seconds:g} s)")
            reports_only = await run.window(seconds, warmup)
            await run.quiesce()
        finally:
            await run.stop()
    publishing["setup_seconds"] = round(setup_s, 1)
    return {"publishing": publishing, "reports_only": reports_only}
