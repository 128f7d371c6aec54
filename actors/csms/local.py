"""The local CSMS: a site's own management, working with or without the cloud.

It admits the site's stations (``JoinNetwork`` with the site's provisioning secret), keeps a
copy of each station's tree, gives them the site's operational permissions, manages the site's
energy with its resource manager, and answers for the stations upward: the cloud reads and
resynchronises the site's stations through it (``stations/<id>/...`` of its aggregate view)
and sends writes through it. Everything it tells the cloud (relayed changes, join, answers)
goes over its one uplink. When the cloud is unreachable the site carries on: stations are
admitted, copies stay current, permissions are applied, energy is allocated; the cloud
catches up by resynchronisation when it is back.
"""

from __future__ import annotations

import logging
import random
from collections.abc import Callable

from actors.csms.management import Management
from actors.csms.replicas import CopyEvents
from actors.csms.revocations import Revocations
from actors.csms.settings import LocalSettings
from actors.csms.site_energy import SiteEnergy
from actors.csms.site_policy import SitePolicy
from actors.csms.task_relay import TASK_MESSAGES
from actors.logic.join_proof import check_join, join_proof
from actors.logic.revocations import NUMBER_PATH
from actors.runtime.actor import Context, RoleDirectory, handles
from actors.runtime.replication.replica import Replica
from actors.runtime.replication.resync import ResyncOutcome
from actors.runtime.services.enrollment import Credentials, Enroller
from actors.runtime.services.join import Membership
from actors.runtime.storage.trees import TreeStore
from actors.runtime.tree_actor import TreeActor
from broker_bridge import Endpoint, Priority
from broker_bridge.backoff import Backoff
from broker_bridge.clock import Clock
from broker_bridge.router import Router
from broker_bridge.session.certificates import CertificateDirectory
from keypath import KeyPath
from object_model import ErrorCode, MessageBase, ModelError, ObjectTree, Role
from object_model.blobs import BlobChunkRequest
from object_model.errors import NotAdmittedError
from object_model.messages import (
    ErrorReport,
    FanOutRequest,
    JoinNetworkRequest,
    JoinNetworkResponse,
    PropertyValueUpdate,
    TreeInfo,
)
from object_model.station import shared_station_schema

RELAY_EXPIRY_US = 5_000_000
log = logging.getLogger("csms.local")

UPSTREAM_BACKOFF = Backoff(base_s=1.0, cap_s=30.0)


class LocalCsms(TreeActor):
    """See the module docstring."""

    role = Role.LOCAL_CSMS

    def __init__(self, address: str, links: Router | Endpoint, *, store: TreeStore,
                 settings: LocalSettings | None = None, roles: RoleDirectory | None = None,
                 clock: Clock | None = None, site_clock: Clock | None = None,
                 rng: random.Random | None = None, enroller: Enroller | None = None,
                 credentials: Credentials | None = None,
                 certificates: CertificateDirectory | None = None) -> None:
        """``site_clock`` is the time the site's energy is planned in (default: ``clock``;
        the demo runs it faster); everything else runs on ``clock``, the wall time that
        envelopes' timestamps and expiry are compared with. With an ``enroller`` (the site
        CA), stations join by certificates it issues them, not by the provisioning secret;
        ``credentials`` is the certificate it shows the cloud; ``certificates`` the directory
        its guard trusts (it then holds a revocation list)."""
        settings = settings or LocalSettings()
        super().__init__(address, links, roles=settings.roles(roles), clock=clock, rng=rng)
        self.settings = settings
        self.enroller, self.credentials = enroller, credentials
        if settings.cloud:
            self.roles.add(settings.cloud, Role.CLOUD_CSMS)
        if settings.resource_manager:
            self.roles.add(settings.resource_manager, Role.RESOURCE_MANAGER)
        self.store = store
        self._unwatch_uplink: Callable[[], None] = lambda: None
        self.management = parts = Management(self, self.role, store, settings, CopyEvents(
            changed=self._copy_changed, heartbeat=self._heartbeat, resynced=self._resynced))
        self.own, self.copies, self.trees = parts.own, parts.copies, parts.view
        if certificates is not None or enroller is not None:  # stations hold keys
            self.trees.sealed_secrets = shared_station_schema()
        self.blobs, self.tasks = parts.blobs, parts.tasks
        self.site_policy = SitePolicy(self, own=self.own, copies=self.copies,
                                      check_s=settings.policy_check_s)
        self.upstream = None if not settings.cloud else Membership(
            self, settings.cloud, self.join_request, backoff=UPSTREAM_BACKOFF,
            on_joined=self._joined_cloud)
        self.revocations = Revocations(
            self, self.own, certificates or (None if enroller is None else enroller.directory),
            downstream=lambda: list(self.copies.stations))
        self.energy = SiteEnergy(self, own=self.own, copies=self.copies,
                                 clock=site_clock or self.clock,
                                 settings=settings.energy, site=settings.site,
                                 resource_manager=settings.resource_manager,
                                 cloud=settings.cloud, upstream_joined=self.upstream_joined,
                                 pace=self.endpoint.pace)

    async def on_start(self) -> None:
        if self.enroller is not None:
            await self.enroller.open()
        elif not self.settings.provisioning_secret:
            log.warning("%s: no provisioning_secret is set, so no station can join site %s: "
                        "set one in [local]", self.address, self.settings.site)
        await self.management.open()
        self.revocations.start()
        own = self.own.tree
        if self.settings.fallback_limit_w and own.get("energy/fallback_limit_w") == 0:
            own.write("energy/fallback_limit_w", self.settings.fallback_limit_w)
        for station in self.copies.stations:  # stations we already knew keep their rights
            self.roles.add(station, Role.STATION)
        self.site_policy.start()
        if self.upstream is not None and self.settings.cloud:
            uplink = self.links.endpoint_for(self.settings.cloud)
            if uplink is not self.links.default:  # the cloud is across an uplink of its own
                self.upstream.link_changed(uplink.link_up)
                self._unwatch_uplink = uplink.on_link_change(self.upstream.link_changed)
            self.spawn(self.upstream.run(), "join-cloud")
        self.energy.start()

    async def on_stop(self) -> None:
        self._unwatch_uplink()
        await self.management.close()
        if self.enroller is not None:
            await self.enroller.close()

    def upstream_joined(self) -> bool:
        """Whether the cloud has admitted this site (now)."""
        return self.upstream is not None and self.upstream.joined

    # -- stations --------------------------------------------------------------------------

    @handles(JoinNetworkRequest)
    async def on_join(self, message: JoinNetworkRequest, ctx: Context) -> MessageBase:
        if message.role is not Role.STATION:
            self.own.count("rejected_joins")
            raise NotAdmittedError(
                f"{self.address} admits stations, not {message.role.value}s")
        chain: list[bytes] = []
        try:
            if self.enroller is not None:
                chain = await self.enroller.admit(message, ctx.sender, Role.STATION,
                                                  ctx.message_id)
            else:
                check_join(self.settings.provisioning_secret, message, ctx.sender, self.address)
        except NotAdmittedError:
            self.own.count("rejected_joins")
            raise
        self.roles.add(ctx.sender, Role.STATION)
        replica = await self.copies.manage(ctx.sender, ctx.sender, KeyPath.root(),
                                           site=self.settings.site)
        self.own.count("joins")
        self.copies.seen(replica)
        if not replica.is_at(next((t for t in message.trees if not t.tree.segments), None)):
            self.copies.resync.schedule(replica)
        else:
            self.site_policy.apply_soon(replica)
        log.info("%s: admitted %s", self.address, ctx.sender)
        # a station that was away (or new) gets the revocation list it lacks
        self.revocations.push(ctx.sender, holds=_number(replica.tree) if replica.synced
                              else None)
        return JoinNetworkResponse(csms=self.address, heartbeat_s=self.settings.heartbeat_s,
                                   certificate=chain)

    @handles(PropertyValueUpdate)
    async def on_update(self, message: PropertyValueUpdate, ctx: Context) -> None:
        self.copies.take(message, ctx.sender)

    @handles(FanOutRequest)
    async def on_fan_out(self, message: FanOutRequest, ctx: Context) -> MessageBase:
        return await self.management.fan_out.handle(message, ctx)

    @handles(*TASK_MESSAGES)
    async def on_task(self, message: MessageBase, ctx: Context) -> MessageBase | None:
        return await self.tasks.handle(message, ctx)

    @handles(BlobChunkRequest)
    async def on_blob_chunk(self, message: BlobChunkRequest, ctx: Context) -> MessageBase | None:
        return await self.blobs.serve(message, ctx)

    # -- what the copies do ------------------------------------------------------------------

    async def _copy_changed(self, replica: Replica, message: PropertyValueUpdate) -> None:
        self._relay(message.model_copy(update={"tree": KeyPath.parse(replica.key)}))
        self.energy.copy_energy_changed([str(path) for path, _, _ in message.upserts])

    async def _heartbeat(self, replica: Replica, message: PropertyValueUpdate) -> None:
        # the cloud's liveness view of the station, and its chance to notice it is behind
        self._relay(message.model_copy(update={"tree": KeyPath.parse(replica.key)}))

    async def _resynced(self, replica: Replica, outcome: ResyncOutcome) -> None:
        self.energy.energy_input_changed()
        await self.site_policy.apply(replica)
        # tell the cloud at once: its copy learns from the empty update that it is behind
        tree = replica.tree
        self._relay(PropertyValueUpdate(tree=KeyPath.parse(replica.key), epoch=tree.epoch,
                                        from_revision=tree.revision, to_revision=tree.revision,
                                        root_digest=tree.digest()))

    def _relay(self, update: PropertyValueUpdate) -> None:
        if self.upstream_joined() and self.settings.cloud:
            # a relay that could not leave within seconds is stale: by then the uplink is
            # down, and the cloud relearns what changed by resynchronising when we rejoin
            self.send(self.settings.cloud, update, priority=Priority.STATE,
                      expires_in_us=RELAY_EXPIRY_US)

    # -- the cloud -------------------------------------------------------------------------

    def join_request(self) -> JoinNetworkRequest:
        trees = [TreeInfo(tree=KeyPath.parse(key), epoch=r.tree.epoch, revision=r.tree.revision,
                          root_digest=r.tree.digest())
                 for key, r in self.copies.replicas.items() if r.synced]
        if self.credentials is not None and self.credentials.chain:
            return JoinNetworkRequest(role=Role.LOCAL_CSMS, identity={"site": self.settings.site},
                                      trees=trees, certificate=self.credentials.chain)
        return JoinNetworkRequest(
            role=Role.LOCAL_CSMS, identity={"site": self.settings.site}, trees=trees,
            proof=join_proof(self.settings.upstream_secret, self.address, self.settings.cloud or ""))

    def _joined_cloud(self, request: JoinNetworkRequest, answer: JoinNetworkResponse) -> None:
        alert = self.energy.current_alert
        if alert is not None and alert.active:  # raised while the cloud was unreachable
            self.energy.alert_upstream()

    async def on_error_report(self, report: ErrorReport, ctx: Context) -> None:
        if (self.upstream is not None and ctx.sender == self.settings.cloud
                and report.code is ErrorCode.NOT_ADMITTED):
            self.upstream.lost()
            return
        await super().on_error_report(report, ctx)


def _number(tree: ObjectTree) -> int:
    """The revocation list number a copy of a station shows (0: none, or an older station)."""
    try:
        value = tree.get(NUMBER_PATH)
    except ModelError:
        return 0
    return value if isinstance(value, int) else 0


__all__ = ["LocalCsms", "LocalSettings"]
