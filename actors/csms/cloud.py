"""The cloud CSMS: many sites through their local CSMS, and stations connected directly.

A site joins with its local CSMS's secret and the tree positions of its stations; the cloud
keeps a copy of each station, sourced at the site (``stations/<id>`` of the local CSMS's
aggregate view), and resynchronises through the site, never bothering the station. A station
the site admits later shows up as a relayed update for an unknown tree, and the cloud starts
managing it. Small operators' stations join the cloud directly, as they would a local CSMS.
Operators read from the copies; their writes go down through the site to the station.
"""

from __future__ import annotations

import logging
import random

from actors.csms.management import Management
from actors.csms.revocations import Revocations
from actors.csms.settings import CloudSettings
from actors.csms.task_relay import TASK_MESSAGES
from actors.logic.join_proof import check_join
from actors.runtime.actor import Context, RoleDirectory, handles
from actors.runtime.replication.replica import STATIONS, station_key
from actors.runtime.services.admission import AdmissionLimiter
from actors.runtime.services.enrollment import admit_certificate
from actors.runtime.storage.trees import TreeStore
from actors.runtime.tree_actor import TreeActor
from broker_bridge import Endpoint
from broker_bridge.backoff import Backoff
from broker_bridge.clock import Clock
from broker_bridge.router import Router
from broker_bridge.session.certificates import CertificateDirectory
from keypath import KeyPath, KeyPattern
from object_model import MessageBase, ModelError, Role, Write
from object_model.blobs import BlobChunkRequest
from object_model.energy_messages import EnergyAlert
from object_model.errors import AccessDeniedError, InvalidMessageError, NotAdmittedError
from object_model.messages import (
    FanOutRequest,
    JoinNetworkRequest,
    JoinNetworkResponse,
    PropertyTreeDiscoveryRequest,
    PropertyTreeDiscoveryResponse,
    PropertyValueUpdate,
    TreeInfo,
)
from object_model.station import shared_station_schema

log = logging.getLogger("csms.cloud")

LEARN_BACKOFF = Backoff(base_s=1.0, cap_s=60.0)


class CloudCsms(TreeActor):
    """See the module docstring."""

    role = Role.CLOUD_CSMS

    def __init__(self, address: str, links: Router | Endpoint, *, store: TreeStore,
                 settings: CloudSettings | None = None, roles: RoleDirectory | None = None,
                 clock: Clock | None = None, rng: random.Random | None = None,
                 certificates: CertificateDirectory | None = None) -> None:
        """``certificates``: the directory its guard trusts (sites then join by the
        certificates the operator's root gave them, and it holds a revocation list)."""
        settings = settings or CloudSettings()
        super().__init__(address, links, roles=settings.roles(roles), clock=clock, rng=rng)
        self.settings = settings
        self.store = store
        self.certificates = certificates
        self.management = parts = Management(self, self.role, store, self.settings)
        self.own, self.copies, self.trees = parts.own, parts.copies, parts.view
        if certificates is not None:  # stations hold keys: their secrets travel sealed
            self.trees.sealed_secrets = shared_station_schema()
        self.blobs, self.tasks = parts.blobs, parts.tasks
        self.revocations = Revocations(self, self.own, certificates,
                                       downstream=lambda: list(self.own.tree.read("sites")))
        self.admission = AdmissionLimiter(settings.join_rate_per_s, settings.join_burst,
                                          now=self.clock.monotonic())

    async def on_start(self) -> None:
        await self.management.open()
        self.revocations.start()
        own = self.own.tree
        for name in own.read("sites") if "sites" in own else {}:
            self.roles.add(name, Role.LOCAL_CSMS)
            # stations the site admitted while we were away: ask it what it answers for
            self.spawn(self._learn_stations(name), f"learn:{name}")
        for replica in self.copies.replicas.values():
            if replica.source == replica.station:
                self.roles.add(replica.source, Role.STATION)

    async def on_stop(self) -> None:
        await self.management.close()

    # -- admission -------------------------------------------------------------------------------

    @handles(JoinNetworkRequest)
    async def on_join(self, message: JoinNetworkRequest, ctx: Context) -> MessageBase:
        if message.role is Role.LOCAL_CSMS:
            return await self._admit_site(message, ctx)
        if message.role is Role.STATION:
            return await self._admit_station(message, ctx)
        self.own.count("rejected_joins")
        raise NotAdmittedError(
            f"{self.address} admits sites and stations, not {message.role.value}s")

    async def _admit_site(self, message: JoinNetworkRequest, ctx: Context) -> MessageBase:
        try:
            if self.certificates is not None and message.certificate:
                admit_certificate(self.certificates, message, ctx.sender, Role.LOCAL_CSMS,
                                  self.clock.now_us())
            else:
                check_join(self.settings.site_secrets.get(ctx.sender, ""), message,
                           ctx.sender, self.address)
        except NotAdmittedError:
            self.own.count("rejected_joins")
            raise
        stations = [info for info in message.trees if _station_of(info.tree)]
        # what admitting it costs: itself, and each copy it would have us resynchronise
        self.admission.admit(1 + sum(not self._copy_at(info) for info in stations),
                             self.clock.monotonic(), ctx.sender)
        self.roles.add(ctx.sender, Role.LOCAL_CSMS)
        self.own.tree.apply([Write(f"sites/{ctx.sender}", {
            "admitted_at": self.clock.now_us(), "online": True, "stations": len(stations)})])
        self.own.count("joins")
        for info in stations:
            try:
                replica = await self.copies.manage(_station_of(info.tree), ctx.sender,
                                                   info.tree, site=ctx.sender)
            except ModelError:
                continue  # bound to another site (logged and counted); the rest still join
            if not replica.is_at(info):
                self.copies.resync.schedule(replica)
        log.info("%s: site %s joined with %d stations", self.address, ctx.sender, len(stations))
        self.revocations.push(ctx.sender)  # a site that was away catches up
        return JoinNetworkResponse(csms=self.address, heartbeat_s=self.settings.heartbeat_s)

    async def _admit_station(self, message: JoinNetworkRequest, ctx: Context) -> MessageBase:
        try:
            check_join(self.settings.station_secret, message, ctx.sender, self.address)
        except NotAdmittedError:
            self.own.count("rejected_joins")
            raise
        info = next((t for t in message.trees if not t.tree.segments), None)
        replica = self.copies.replicas.get(station_key(ctx.sender))
        self.admission.admit(1 + (replica is None or not replica.is_at(info)),
                             self.clock.monotonic(), ctx.sender)
        self.roles.add(ctx.sender, Role.STATION)
        replica = await self.copies.manage(ctx.sender, ctx.sender, KeyPath.root())
        self.own.count("joins")
        if not replica.is_at(info):
            self.copies.resync.schedule(replica)
        return JoinNetworkResponse(csms=self.address, heartbeat_s=self.settings.heartbeat_s)

    def _copy_at(self, info: TreeInfo) -> bool:
        """Whether our copy of the station ``info`` announces already is what it says."""
        replica = self.copies.replicas.get(station_key(_station_of(info.tree)))
        return replica is not None and replica.is_at(info)

    async def _learn_stations(self, site: str) -> None:
        """Ask ``site`` which stations it answers for (its registry, ``managed/*``; again and
        again while it is unreachable) and start managing those we do not know."""
        failures = 0
        while True:
            try:
                answer = await self.request(site, PropertyTreeDiscoveryRequest(
                    patterns=[KeyPattern.parse("managed/*/source")]), timeout=10)
                if not isinstance(answer, PropertyTreeDiscoveryResponse):
                    raise InvalidMessageError(
                        f"{site} answered discovery with {type(answer).__name__}")
            except ModelError as exc:
                failures += 1
                delay = LEARN_BACKOFF.delay(failures, self.rng)
                log.info("%s: asking %s for its stations failed (%s); again in %.1f s",
                         self.address, site, exc.code.value, delay)
                await self.clock.sleep(delay)
                continue
            for path, _, _ in answer.leaves:
                station = path.segments[1] if len(path.segments) == 3 else ""
                if station_key(station) in self.copies.replicas:
                    continue
                try:
                    replica = await self.copies.manage(station, site, KeyPath(STATIONS, station),
                                                       site=site)
                except ModelError as exc:
                    log.warning("%s: %s reports station %r: %s", self.address, site, station,
                                exc)
                    continue
                self.copies.resync.schedule(replica)
            return

    # -- what sites and stations send --------------------------------------------------------------

    @handles(PropertyValueUpdate)
    async def on_update(self, message: PropertyValueUpdate, ctx: Context) -> None:
        station = _station_of(message.tree)
        if (station and self.copies.copy_for_update(message, ctx.sender) is None
                and self.roles.role_of(ctx.sender) is Role.LOCAL_CSMS):
            # a station the site admitted after it joined: start managing it now
            replica = await self.copies.manage(station, ctx.sender, message.tree,
                                               site=ctx.sender)
            self.copies.resync.schedule(replica)
            return
        self.copies.take(message, ctx.sender)

    @handles(EnergyAlert)
    async def on_energy_alert(self, alert: EnergyAlert, ctx: Context) -> None:
        """A site cannot manage its energy as asked (or is back to normal): kept with the
        site's entry and logged; the EVSEs concerned are in the alert."""
        own = self.own.tree
        if ctx.require_role() is not Role.LOCAL_CSMS or f"sites/{ctx.sender}" not in own:
            raise AccessDeniedError(
                f"{ctx.sender}: only an admitted site reports energy alerts here")
        try:
            count = own.get(f"sites/{ctx.sender}/energy_alerts")
        except ModelError:
            count = 0
        own.apply([Write(f"sites/{ctx.sender}/energy_alerts", (count + 1) % 2**32),
                   Write(f"sites/{ctx.sender}/last_energy_alert", alert.text[:500])])
        (log.warning if alert.active else log.info)(
            "%s: energy alert from %s: %s (%d EVSEs)", self.address, ctx.sender, alert.text,
            len(alert.evses))

    @handles(FanOutRequest)
    async def on_fan_out(self, message: FanOutRequest, ctx: Context) -> MessageBase:
        return await self.management.fan_out.handle(message, ctx)

    @handles(*TASK_MESSAGES)
    async def on_task(self, message: MessageBase, ctx: Context) -> MessageBase | None:
        return await self.tasks.handle(message, ctx)

    @handles(BlobChunkRequest)
    async def on_blob_chunk(self, message: BlobChunkRequest, ctx: Context) -> MessageBase | None:
        return await self.blobs.serve(message, ctx)


def _station_of(tree: KeyPath) -> str:
    segs = tree.segments
    return segs[1] if len(segs) == 2 and segs[0] == STATIONS else ""


__all__ = ["CloudCsms", "CloudSettings"]
