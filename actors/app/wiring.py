"""Starting and stopping actors from configuration: what ``csms cloud|local|station`` and the
demo run. Each running actor owns its endpoint (one broker connection), its tree store and its
outbox, all under its ``state_dir``."""

from __future__ import annotations

import asyncio
import gc
import logging
import signal
import zlib
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from actors.app.config import (
    BrokerConfig,
    CloudConfig,
    LocalConfig,
    MetricsConfig,
    ResourceManagerConfig,
    StationsConfig,
)
from actors.app.metrics import ActorCollector, MetricsServer, serve_metrics
from actors.csms.cloud import CloudCsms, CloudSettings
from actors.csms.local import LocalCsms, LocalSettings
from actors.csms.site_energy import EnergySettings
from actors.logic.station.simulation import SimulationConfig
from actors.resource_manager.actor import ResourceManager, ResourceManagerSettings
from actors.runtime.actor import Actor, RoleDirectory
from actors.runtime.storage.trees import TreeStore
from actors.station.actor import ChargingStation, StationSettings
from actors.station.simulated import SimulatedStation, SimulatorSettings
from broker_bridge import Endpoint, SessionConfig
from broker_bridge.clock import WALL_CLOCK, Clock
from broker_bridge.xmpp import XmppSettings, XmppTransport
from object_model import Role

log = logging.getLogger("csms.runtime")


def xmpp_settings(broker: BrokerConfig) -> XmppSettings:
    return XmppSettings(host=broker.host, c2s_port=broker.c2s_port,
                        component_port=broker.component_port, domain=broker.domain,
                        muc_domain=broker.muc_domain, routes=broker.routes, tls=broker.tls)


@dataclass
class Running:
    """Actors sharing one endpoint, and what must be closed with them."""

    endpoint: Endpoint
    actors: list[Actor]
    stores: list[TreeStore] = field(default_factory=list)

    async def stop(self) -> None:
        """Stop every actor, then the endpoint, then the stores; a failure is logged and the
        rest still stop (state already durable stays so)."""
        for actor in self.actors:
            try:
                await actor.stop()
            except Exception:
                log.exception("stopping %s failed", actor.address)
        try:
            await self.endpoint.stop(flush_timeout=2.0)
        except Exception:
            log.exception("stopping the endpoint %s failed", self.endpoint.name)
        for store in self.stores:
            try:
                await store.close()
            except Exception:
                log.exception("closing the store %s failed", store.path)


def settle_heap() -> None:
    """Leave what exists now (the actors' trees, caches and copies: hundreds of thousands
    of objects that live as long as the process) out of the garbage collector's full
    collections. Otherwise each full collection walks all of them and stalls the event loop
    for seconds on a host with a thousand stations or copies, at random moments; the objects
    made afterwards are still collected as usual. Call it when a large state has been
    loaded or built."""
    gc.freeze()


def _operators(names: tuple[str, ...]) -> dict[str, Role]:
    return dict.fromkeys(names, Role.OPERATOR)


async def _csms_parts(broker: BrokerConfig, address: str, password: str,
                      state_dir: str) -> tuple[Endpoint, TreeStore]:
    """A CSMS's own account connection (opened, not yet connected) and its tree store."""
    state = Path(state_dir)
    transport = XmppTransport.client(xmpp_settings(broker), address, password)
    endpoint = await Endpoint(transport, outbox_path=state / "outbox.db", name=address).open()
    return endpoint, await TreeStore(state / "trees.db", compact_every=64).open()


async def start_cloud(broker: BrokerConfig, cfg: CloudConfig) -> Running:
    endpoint, store = await _csms_parts(broker, cfg.address, cfg.password, cfg.state_dir)
    actor = CloudCsms(cfg.address, endpoint, store=store,
                      roles=RoleDirectory(_operators(cfg.operators)),
                      settings=CloudSettings(site_secrets=cfg.site_secrets,
                                             station_secret=cfg.station_secret))
    return await _start_then_connect(Running(endpoint, [actor], [store]))


async def start_local(broker: BrokerConfig, cfg: LocalConfig,
                      energy: EnergySettings | None = None, clock: Clock | None = None
                      ) -> Running:
    endpoint, store = await _csms_parts(broker, cfg.address, cfg.password, cfg.state_dir)
    energy = energy or EnergySettings(interval_s=cfg.allocation_interval_s)
    actor = LocalCsms(cfg.address, endpoint, store=store, clock=clock,
                      roles=RoleDirectory(_operators(cfg.operators)),
                      settings=LocalSettings(site=cfg.site,
                                             provisioning_secret=cfg.provisioning_secret,
                                             cloud=cfg.cloud, upstream_secret=cfg.upstream_secret,
                                             resource_manager=cfg.resource_manager,
                                             fallback_limit_w=cfg.fallback_limit_w,
                                             energy=energy))
    return await _start_then_connect(Running(endpoint, [actor], [store]))


async def start_resource_manager(broker: BrokerConfig, cfg: ResourceManagerConfig,
                                 clock: Any = None) -> Running:
    """A site's resource manager on its own account."""
    endpoint, store = await _csms_parts(broker, cfg.address, cfg.password, cfg.state_dir)
    actor = ResourceManager(cfg.address, endpoint, store=store, clock=clock,
                            settings=ResourceManagerSettings(
                                site_csms=cfg.site_csms, s2_peer=cfg.s2_peer,
                                fuse_limit_w=cfg.fuse_limit_w,
                                trusted={**_operators(cfg.operators), **(
                                    {cfg.s2_peer: Role.RESOURCE_MANAGER} if cfg.s2_peer else {})}))
    return await _start_then_connect(Running(endpoint, [actor], [store]))


async def _start_then_connect(running: Running) -> Running:
    """Start the actors (loading their state), then connect: the broker hands over what it
    kept for an account while it was away as soon as it is back, and that must find its actor
    registered (its inbox holds it until the actor serves), not be refused as unknown. What
    the actors send meanwhile waits in the session's queues."""
    started: list[Actor] = []
    try:
        for actor in running.actors:
            await actor.start()
            started.append(actor)
        await running.endpoint.start()
    except BaseException:
        await Running(running.endpoint, started, running.stores).stop()
        raise
    settle_heap()
    return running


async def start_stations(broker: BrokerConfig, cfg: StationsConfig,
                         progress: Callable[[str], None] | None = None,
                         clock: Any = None) -> Running:
    """Host ``cfg.ids`` on one component connection, each with its own address and tree."""
    state = Path(cfg.state_dir)
    transport = XmppTransport.component(xmpp_settings(broker), cfg.component,
                                        cfg.component_secret, name=f"host-{state.name}")
    endpoint = await Endpoint(transport, config=SessionConfig(), name=cfg.component).start()
    store = await TreeStore(state / "trees.db", compact_every=128).open()
    running = Running(endpoint, [], [store])
    for i, station in enumerate(cfg.ids):
        seed = None if cfg.seed is None else cfg.seed + i
        settings = StationSettings(
            csms=cfg.csms, csms_role=cfg.role, provisioning_secret=cfg.provisioning_secret,
            trusted=_operators(cfg.operators))
        hardware = SimulatedStation(SimulatorSettings(
            evse_count=cfg.evse_count, dc=cfg.dc, tick_s=cfg.tick_s, speed=cfg.speed,
            simulation=SimulationConfig(
                arrivals_per_evse_hour=cfg.arrivals_per_evse_per_h,
                seed=seed if seed is not None else zlib.crc32(station.encode()))),
            clock=clock or WALL_CLOCK)
        actor = ChargingStation(station, endpoint, store=store, settings=settings,
                                hardware=hardware, clock=clock)
        await actor.start()
        running.actors.append(actor)
        if progress is not None and (i + 1) % 100 == 0:
            progress(f"{i + 1}/{len(cfg.ids)} stations started")
    settle_heap()
    return running


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
    stop everything cleanly, the metrics server last."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    running = await start()
    server = None
    try:
        server = start_metrics(running, metrics)
        if describe is not None:
            describe(running)
        await stop.wait()
    finally:
        for item in reversed(running):
            await item.stop()
        if server is not None:
            await server.stop()
    return 0
