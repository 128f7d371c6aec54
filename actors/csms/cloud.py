"""The cloud CSMS: many sites through their local CSMS, and stations connected directly.

A site joins with its local CSMS's secret and the tree positions of its stations; the cloud
keeps a copy of each station, sourced at the site (``stations/<id>`` of the local CSMS's
aggregate view), and resynchronises through the site, never bothering the station. A station
the site admits later shows up as a relayed update for an unknown tree, and the cloud starts
managing it. Small operators' stations join the cloud directly, as they would a local CSMS.
Operators read from the copies; their writes go down through the site to the station.
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import Mapping
from dataclasses import dataclass, field

from actors.csms.caching import (
    STATIONS,
    CachingCsms,
    CsmsSettings,
    station_key,
    to_micros_now,
)
from actors.runtime.actor import Context, handles
from actors.runtime.replication.resync import Replica
from keypath import KeyPath, KeyPattern
from object_model import MessageBase, ModelError, Role, Write
from object_model.energy_messages import EnergyAlert
from object_model.errors import (
    AccessDeniedError,
    InvalidMessageError,
    NotAdmittedError,
)
from object_model.messages import (
    JoinNetworkRequest,
    JoinNetworkResponse,
    PropertyTreeDiscoveryRequest,
    PropertyTreeDiscoveryResponse,
    PropertyValueUpdate,
    TreeInfo,
)

log = logging.getLogger("csms.cloud")


@dataclass(frozen=True)
class CloudSettings(CsmsSettings):
    """Secrets: one per site (its local CSMS presents it), and one for direct stations."""

    site_secrets: Mapping[str, str] = field(default_factory=dict)
    station_secret: str = ""


class CloudCsms(CachingCsms):
    role = Role.CLOUD_CSMS
    settings: CloudSettings

    async def on_start(self) -> None:
        await super().on_start()
        for name in self.own.read("sites") if "sites" in self.own else {}:
            self.roles.add(name, Role.LOCAL_CSMS)
            # stations the site admitted while we were away: ask it what it answers for
            self.spawn(self._learn_stations(name), f"learn:{name}")
        for replica in self.replicas.values():
            if replica.source == replica.key.split("/", 1)[1]:
                self.roles.add(replica.source, Role.STATION)

    @handles(JoinNetworkRequest)
    async def on_join(self, message: JoinNetworkRequest, ctx: Context) -> MessageBase:
        if message.role is Role.LOCAL_CSMS:
            return await self._admit_site(message, ctx)
        if message.role is Role.STATION:
            return await self._admit_station(message, ctx)
        self._count("rejected_joins")
        raise NotAdmittedError(
            f"{self.address} admits sites and stations, not {message.role.value}s")

    async def _admit_site(self, message: JoinNetworkRequest, ctx: Context) -> MessageBase:
        expected = self.settings.site_secrets.get(ctx.sender)
        if expected is None or message.secret != expected:
            self._count("rejected_joins")
            raise NotAdmittedError(
                f"{ctx.sender}: unknown site or wrong secret", details={"site": ctx.sender})
        self.roles.add(ctx.sender, Role.LOCAL_CSMS)
        stations = [info for info in message.trees if _station_of(info.tree)]
        self.own.apply([Write(f"sites/{ctx.sender}", {
            "admitted_at": to_micros_now(), "online": True, "stations": len(stations)})])
        self._count("joins")
        for info in stations:
            try:
                replica = await self.manage(_station_of(info.tree), ctx.sender, info.tree,
                                            site=ctx.sender)
            except ModelError:
                continue  # bound to another site (logged and counted); the rest still join
            if not _same(replica, info):
                self.resync.schedule(replica)
        log.info("%s: site %s joined with %d stations", self.address, ctx.sender, len(stations))
        return JoinNetworkResponse(csms=self.address, heartbeat_s=self.settings.heartbeat_s)

    async def _admit_station(self, message: JoinNetworkRequest, ctx: Context) -> MessageBase:
        if not self.settings.station_secret or message.secret != self.settings.station_secret:
            self._count("rejected_joins")
            raise NotAdmittedError(
                f"{ctx.sender}: wrong provisioning secret for direct stations")
        self.roles.add(ctx.sender, Role.STATION)
        replica = await self.manage(ctx.sender, ctx.sender, KeyPath.root())
        self._count("joins")
        info = next((t for t in message.trees if not t.tree.segments), None)
        if info is None or not _same(replica, info):
            self.resync.schedule(replica)
        return JoinNetworkResponse(csms=self.address, heartbeat_s=self.settings.heartbeat_s)

    @handles(EnergyAlert)
    async def on_energy_alert(self, alert: EnergyAlert, ctx: Context) -> None:
        """A site cannot manage its energy as asked (or is back to normal): kept with the
        site's entry and logged; the EVSEs concerned are in the alert."""
        if ctx.require_role() is not Role.LOCAL_CSMS or f"sites/{ctx.sender}" not in self.own:
            raise AccessDeniedError(
                f"{ctx.sender}: only an admitted site reports energy alerts here")
        try:
            count = self.own.get(f"sites/{ctx.sender}/energy_alerts")
        except ModelError:
            count = 0
        self.own.apply([Write(f"sites/{ctx.sender}/energy_alerts", (count + 1) % 2**32),
                        Write(f"sites/{ctx.sender}/last_energy_alert", alert.text[:500])])
        (log.warning if alert.active else log.info)(
            "%s: energy alert from %s: %s (%d EVSEs)", self.address, ctx.sender, alert.text,
            len(alert.evses))

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
                delay = random.uniform(0, min(60.0, 0.5 * 2**failures))
                log.info("%s: asking %s for its stations failed (%s); again in %.1f s",
                         self.address, site, exc.code.value, delay)
                await asyncio.sleep(delay)
                continue
            for path, _, _ in answer.leaves:
                station = path.segments[1] if len(path.segments) == 3 else ""
                if station_key(station) in self.replicas:
                    continue
                try:
                    replica = await self.manage(station, site, KeyPath(STATIONS, station),
                                                site=site)
                except ModelError as exc:
                    log.warning("%s: %s reports station %r: %s", self.address, site, station,
                                exc)
                    continue
                self.resync.schedule(replica)
            return

    async def on_update(self, message: PropertyValueUpdate, ctx: Context) -> MessageBase | None:
        station = _station_of(message.tree)
        if (station and self.copy_for_update(message, ctx) is None
                and self.roles.role_of(ctx.sender) is Role.LOCAL_CSMS):
            # a station the site admitted after it joined: start managing it now
            replica = await self.manage(station, ctx.sender, message.tree, site=ctx.sender)
            self.resync.schedule(replica)
            return None
        return await super().on_update(message, ctx)


def _station_of(tree: KeyPath) -> str:
    segs = tree.segments
    return segs[1] if len(segs) == 2 and segs[0] == STATIONS else ""


def _same(replica: Replica, info: TreeInfo) -> bool:
    tree = replica.tree
    return (replica.synced and info.epoch == tree.epoch and info.revision == tree.revision
            and info.root_digest == tree.digest())

