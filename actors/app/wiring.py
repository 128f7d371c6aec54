"""Starting and stopping actors from configuration: what ``csms cloud|local|station`` and the
demo run. Each running actor owns its links (one broker connection each: a local CSMS with an
``[uplink]`` holds two), its tree store and an outbox per link, all under its ``state_dir``."""

from __future__ import annotations

import asyncio
import gc
import logging
import zlib
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Protocol

from actors.app.config import (
    BrokerConfig,
    CloudConfig,
    GatewayConfig,
    LocalConfig,
    MetricsConfig,
    ResourceManagerConfig,
    StationsConfig,
    UplinkConfig,
)
from actors.app.metrics import ActorCollector, MetricsServer, serve_metrics
from actors.app.signing import Signing
from actors.csms.cloud import CloudCsms
from actors.csms.local import LocalCsms
from actors.resource_manager.actor import ResourceManager
from actors.runtime.actor import Actor
from actors.runtime.shutdown import StopRequested, StopSignals, halt_when_stopping, shut_down
from actors.runtime.storage.trees import TreeStore
from actors.station.actor import ChargingStation
from actors.station.hardware import StationHardware
from actors.station.ocpp.charger import ChargerSettings, OcppCharger
from actors.station.ocpp.downloads import Downloads, DownloadServer
from actors.station.ocpp.gateway import Admitted, OcppGateway, server_context
from actors.station.simulated import SimulatedStation, SimulatorSettings
from broker_bridge import Endpoint, Router, SessionConfig
from broker_bridge.clock import WALL_CLOCK, Clock
from broker_bridge.xmpp import XmppSettings, XmppTransport

log = logging.getLogger("csms.runtime")


def xmpp_settings(broker: BrokerConfig) -> XmppSettings:
    return XmppSettings(host=broker.host, c2s_port=broker.c2s_port,
                        component_port=broker.component_port, domain=broker.domain,
                        muc_domain=broker.muc_domain,
                        routes=tuple((pattern, domain) for pattern, domain in broker.routes),
                        tls=broker.tls, cafile=broker.cafile,
                        send_window_bytes=broker.send_window_bytes,
                        notsent_lowat=broker.notsent_lowat, alternates=broker.alternates,
                        dead_after_s=broker.dead_after_s)


def session_config(broker: BrokerConfig) -> SessionConfig:
    """The session of a link to ``broker``: paced at 90 % of its known rate, if any, with
    state and bulk frames of at most ``bulk_frame_bytes``."""
    rate = None if broker.rate_kbit is None else broker.rate_kbit * 1000 / 8 * 0.9
    return SessionConfig(rate_bytes_per_s=rate, bulk_frame_bytes=broker.bulk_frame_bytes)


class Service(Protocol):
    """Something a process serves beside its actors (the OCPP gateway's server)."""

    async def stop(self) -> None: ...


@dataclass
class Running:
    """Actors sharing their links, and what must be closed with them."""

    links: Router
    actors: list[Actor]
    stores: list[TreeStore] = field(default_factory=list)
    services: list[Service] = field(default_factory=list)  # stopped before the actors

    @property
    def endpoint(self) -> Endpoint:
        """The default link: the only one, but for a local CSMS with an uplink."""
        return self.links.default

    def halt(self) -> None:
        """Stop every actor's intake and periodic work now (``Actor.halt``)."""
        for actor in self.actors:
            actor.halt()

    async def stop(self) -> None:
        """Stop every actor, then the links, then the stores (``stop_all``)."""
        await stop_all([self])


async def stop_all(running: Sequence[Running]) -> None:
    """Stop everything in ``running`` together: every actor halts before any flushes, and
    the stores close last, within seconds (``actors.runtime.shutdown.shut_down``); a failure
    is logged and the rest still stop (state already durable stays so)."""
    for service in [s for r in running for s in r.services]:
        try:
            await service.stop()
        except Exception:
            log.exception("stopping %s failed", type(service).__name__)
    await shut_down([a for r in running for a in r.actors],
                    [e for r in running for e in r.links.endpoints],
                    [s for r in running for s in r.stores])


GC_YOUNG_THRESHOLD = 10_000


def tune_gc() -> None:
    """Collect the youngest generation every 10,000 allocations, not every 700 (Python's
    default). A process that builds and keeps hundreds of thousands of objects (a station
    host's trees, a CSMS's copies) otherwise spends a quarter of its time moving survivors
    between generations; cyclic garbage lives a few thousand allocations longer. Call it
    once, when a process that hosts actors starts."""
    _, middle, old = gc.get_threshold()
    gc.set_threshold(GC_YOUNG_THRESHOLD, middle, old)


def settle_heap() -> None:
    """Leave what exists now (the actors' trees, caches and copies: hundreds of thousands
    of objects that live as long as the process) out of the garbage collector's full
    collections. Otherwise each full collection walks all of them and stalls the event loop
    for seconds on a host with a thousand stations or copies, at random moments; the objects
    made afterwards are still collected as usual. Call it when a large state has been
    loaded or built."""
    gc.freeze()


async def _link(broker: BrokerConfig, account: str, password: str, outbox: Path,
                name: str, signing: Signing | None = None) -> Endpoint:
    """One account connection to ``broker`` (opened, not yet connected), with its outbox."""
    transport = XmppTransport.client(xmpp_settings(broker), account, password, name=name)
    guard = None if signing is None else signing.guard([account])
    return await Endpoint(transport, config=session_config(broker), outbox_path=outbox,
                          name=name, guard=guard).open()


async def _account(broker: BrokerConfig, account: CloudConfig | LocalConfig
                   | ResourceManagerConfig, signing: Signing | None = None
                   ) -> tuple[Router, TreeStore]:
    """An actor's own account connection and its tree store."""
    state = Path(account.state_dir)
    endpoint = await _link(broker, account.address, account.password, state / "outbox.db",
                           account.address, signing)
    try:
        return Router(endpoint), await TreeStore(state / "trees.db", compact_every=64).open()
    except BaseException:  # failed or cancelled: an open outbox would outlive us
        await endpoint.stop()
        raise


async def start_cloud(broker: BrokerConfig, cfg: CloudConfig,
                      clock: Clock | None = None, signing: Signing | None = None) -> Running:
    """A cloud CSMS on its own account; ``cfg`` is its settings."""
    links, store = await _account(broker, cfg, signing)
    actor = CloudCsms(cfg.address, links, store=store, settings=cfg, clock=clock,
                      certificates=None if signing is None else signing.certificates)
    return await _start_then_connect(Running(links, [actor], [store]))


async def start_local(broker: BrokerConfig, cfg: LocalConfig,
                      site_clock: Clock | None = None,
                      uplink: UplinkConfig | None = None,
                      signing: Signing | None = None) -> Running:
    """A site's local CSMS on its own account; ``cfg`` is its settings, ``site_clock`` the
    time its energy is planned in (the demo's runs faster than the wall clock). With an
    ``uplink``, everything for ``cfg.cloud`` takes a second connection, to the cloud's broker
    (its own outbox, link state and budget: an uplink outage holds nothing of the site's)."""
    links, store = await _account(broker, cfg, signing)
    if uplink is not None and cfg.cloud is not None:
        up = await _link(uplink, cfg.address, uplink.password or cfg.password,
                         Path(cfg.state_dir) / "outbox-uplink.db", f"{cfg.address}-uplink",
                         signing)
        links = Router(links.default, [(cfg.cloud, up)])
    trust: dict[str, Any] = {}
    if signing is not None and signing.certificates is not None:
        trust = {"certificates": signing.certificates,
                 "credentials": signing.credentials(cfg.address),
                 "enroller": signing.enroller(cfg.address, cfg.state_dir)}
    actor = LocalCsms(cfg.address, links, store=store, settings=cfg, site_clock=site_clock,
                      **trust)
    return await _start_then_connect(Running(links, [actor], [store]))


async def start_resource_manager(broker: BrokerConfig, cfg: ResourceManagerConfig,
                                 clock: Clock | None = None,
                                 signing: Signing | None = None) -> Running:
    """A site's resource manager on its own account; ``cfg`` is its settings."""
    links, store = await _account(broker, cfg, signing)
    actor = ResourceManager(cfg.address, links, store=store, settings=cfg, clock=clock)
    return await _start_then_connect(Running(links, [actor], [store]))


async def restore_applied(running: Running) -> None:
    """Give the guards of ``running``'s links what its stores say was applied (per sender,
    the newest state-changing message): a replay of it after a crash is refused even if the
    guards' own marks were not written in time."""
    for store in running.stores:
        marks = await store.applied_marks()
        for endpoint in running.links.endpoints:
            endpoint.session.guard.restore(marks)


async def _start_then_connect(running: Running) -> Running:
    """Start the actors (loading their state), then connect: the broker hands over what it
    kept for an account while it was away as soon as it is back, and that must find its actor
    registered (its inbox holds it until the actor serves), not be refused as unknown. What
    the actors send meanwhile waits in the session's queues."""
    halt_when_stopping(running.halt)  # a signal during the start halts it at once
    started: list[Actor] = []
    try:
        for actor in running.actors:
            await actor.start()
            started.append(actor)
        await restore_applied(running)
        default = running.links.default
        for endpoint in running.links.endpoints:
            # only the default link must be up to start: a site works while its uplink is down
            await endpoint.start(wait=endpoint is default)
    except BaseException:
        await Running(running.links, started, running.stores).stop()
        raise
    settle_heap()
    return running


START_TOGETHER = 50
"""Stations of a host started concurrently: their loads and first snapshots share the store's
transactions (one at a time, a start waited for a transaction of its own behind the ticks of
those already running, and 300 stations took 70 s to start)."""


def simulator_for(cfg: StationsConfig, index: int, station: str) -> SimulatorSettings:
    """The simulator of station ``index`` of ``cfg`` (``station``): ``cfg.simulator``, seeded
    with ``cfg.seed + index`` (default: from its address), so no two stations live alike."""
    sim = cfg.simulator
    seed = zlib.crc32(station.encode()) if cfg.seed is None else cfg.seed + index
    return sim.model_copy(update={"simulation": replace(sim.simulation, seed=seed)})


async def start_stations(broker: BrokerConfig, cfg: StationsConfig,
                         progress: Callable[[str], None] | None = None,
                         clock: Clock | None = None, paused: bool = False,
                         signing: Signing | None = None,
                         hardware_for: Callable[[int, str], StationHardware] | None = None,
                         ) -> Running:
    """Host ``cfg.ids`` on one component connection, each with its own address and tree;
    ``cfg`` is every station's settings; ``paused`` stations do not tick from the start
    (not even while the rest of the host starts). Station ``i`` runs on
    ``hardware_for(i, address)`` (default: a simulator, ``simulator_for``)."""
    state = Path(cfg.state_dir)
    transport = XmppTransport.component(xmpp_settings(broker), cfg.component,
                                        cfg.component_secret, name=f"host-{state.name}")
    guard = None if signing is None else signing.guard(cfg.ids)
    endpoint = await Endpoint(transport, config=session_config(broker),
                              name=cfg.component, guard=guard).start()
    running = Running(Router(endpoint), [])
    halt_when_stopping(running.halt)  # a signal during the start halts it at once
    try:
        running.stores.append(await TreeStore(state / "trees.db", compact_every=128).open())
        await restore_applied(running)  # before the stations serve what the broker kept
        for first in range(0, len(cfg.ids), START_TOGETHER):
            batch = []
            for i, station in enumerate(cfg.ids[first:first + START_TOGETHER], first):
                if hardware_for is not None:
                    hardware = hardware_for(i, station)
                else:
                    simulated = SimulatedStation(simulator_for(cfg, i, station),
                                                 clock=clock or WALL_CLOCK)
                    simulated.paused = paused  # before its start: it never ticks
                    hardware = simulated
                batch.append(ChargingStation(
                    station, endpoint, store=running.stores[0], settings=cfg,
                    hardware=hardware, clock=clock,
                    credentials=signing.credentials(station) if signing else None))
            running.actors.extend(batch)  # stopped with the rest if their start is cut short
            async with asyncio.TaskGroup() as group:
                for actor in batch:
                    group.create_task(actor.start())
            done = first + len(batch)
            if progress is not None and done // 100 > first // 100:
                progress(f"{done}/{len(cfg.ids)} stations started")
    except BaseException:  # failed or cancelled (a stop requested): undo what started
        await running.stop()
        raise
    settle_heap()
    return running


async def start_gateway(broker: BrokerConfig, cfg: GatewayConfig,
                        progress: Callable[[str], None] | None = None,
                        signing: Signing | None = None, clock: Clock | None = None,
                        ) -> tuple[Running, OcppGateway]:
    """An OCPP 2.0.1 gateway: a station actor for each of ``cfg.chargers`` (on one component
    connection, as ``start_stations`` hosts them), then the server they connect to;
    ``clock`` is the site's time (the demo's runs fast, and so do its simulated chargers)."""
    clock = clock or WALL_CLOCK
    downloads = Downloads(clock.monotonic)
    chargers = {identity: OcppCharger(identity, ChargerSettings(
        evse_count=entry.evse_count, amperes=entry.amperes, max_periods=entry.max_periods,
        onboarding=entry.onboarding), clock=clock, downloads=downloads)
        for identity, entry in cfg.chargers.items()}
    running = await start_stations(broker, cfg, progress, signing=signing, clock=clock,
                                   hardware_for=lambda _, identity: chargers[identity])
    context = None
    if cfg.certfile is not None and cfg.keyfile is not None:
        context = server_context(cfg.certfile, cfg.keyfile, cfg.client_cafile)
    server = DownloadServer(downloads, host=cfg.host, port=cfg.download_port,
                            public_host=cfg.public_host, ssl_context=None if context is None
                            else server_context(cfg.certfile or "", cfg.keyfile or ""))
    gateway = OcppGateway({identity: Admitted(chargers[identity], entry.password)
                           for identity, entry in cfg.chargers.items()},
                          host=cfg.host, port=cfg.port, ssl_context=context,
                          ping_interval_s=cfg.ping_interval_s,
                          connects_per_s=cfg.connects_per_s, connect_burst=cfg.connect_burst,
                          clock=clock, downloads=server)
    try:
        await gateway.start()
    except BaseException:
        await running.stop()
        raise
    running.services.append(gateway)
    return running, gateway


def start_metrics(running: list[Running], metrics: MetricsConfig | None) -> MetricsServer | None:
    """Serve the metrics of ``running`` (as it is at each scrape) if ``metrics`` asks for it."""
    if metrics is None or not metrics.port:
        return None
    collector = ActorCollector(running, loop=asyncio.get_running_loop())
    server = serve_metrics(metrics.port, collector, host=metrics.host)
    log.info("serving metrics on http://%s:%d/metrics", metrics.host, server.port)
    return server


async def run_until_signalled(start: Callable[[], Awaitable[list[Running]]],
                              describe: Callable[[list[Running]], Any] | None = None,
                              metrics: MetricsConfig | None = None) -> int:
    """Start, serve metrics (if ``metrics`` has a port), then wait for Ctrl-C or SIGTERM, then
    stop everything cleanly, the metrics server last. A signal during the start cuts it
    short (``StopSignals``); a second one exits at once."""
    async with StopSignals() as signals:
        try:
            running = await signals.guard(start())
        except StopRequested:
            return 0
        server = None
        try:
            server = start_metrics(running, metrics)
            if describe is not None:
                describe(running)
            await signals.wait()
        finally:
            await stop_all(running)
            if server is not None:
                await server.stop()
    return 0
