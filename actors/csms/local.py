"""The local CSMS: a site's own management, working with or without the cloud.

It admits the site's stations (``JoinNetwork`` with the site's provisioning secret), keeps a
copy of each station's tree, gives them the site's operational permissions, and answers for
them upward: the cloud reads and resynchronises the site's stations through it
(``stations/<id>/...`` of its aggregate view) and sends writes through it. Everything it tells
the cloud (relayed changes, join, answers) goes over its one connection. When the cloud is
unreachable the site carries on: stations are admitted, copies stay current, permissions are
applied; the cloud catches up by resynchronisation when it is back.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from dataclasses import dataclass, field

from actors.csms.caching import STATIONS, CachingCsms, CsmsSettings, station_key
from actors.csms.site_energy import EnergySettings, SiteEnergyManagement
from actors.runtime.actor import Context, handles
from actors.runtime.replication.resync import Replica, ResyncOutcome
from broker_bridge import Priority
from keypath import KeyPath
from object_model import ErrorCode, MessageBase, ModelError, Role
from object_model.errors import NotAdmittedError
from object_model.messages import (
    ErrorReport,
    JoinNetworkRequest,
    JoinNetworkResponse,
    PropertyValueUpdate,
    PropertyValueWrite,
    TreeInfo,
    WriteItem,
)

log = logging.getLogger("csms.local")

POLICY_PATHS = {
    "may_charge": "permissions/may_charge",
    "may_discharge": "permissions/may_discharge",
    "needs_authorisation": "permissions/needs_authorisation",
    "max_power_w": "permissions/max_power_w",
}


@dataclass(frozen=True)
class LocalSettings(CsmsSettings):
    """A site's local CSMS: its name, the secret its stations present, and its cloud."""

    site: str = "site1"
    provisioning_secret: str = ""
    cloud: str | None = None
    upstream_secret: str = ""
    policy_check_s: float = 30.0
    resource_manager: str | None = None
    energy: EnergySettings = field(default_factory=EnergySettings)


class LocalCsms(SiteEnergyManagement, CachingCsms):
    role = Role.LOCAL_CSMS
    settings: LocalSettings

    def __init__(self, *args: object, **kwargs: object) -> None:
        super().__init__(*args, **kwargs)  # type: ignore[arg-type]
        if self.settings.cloud:
            self.roles.add(self.settings.cloud, Role.CLOUD_CSMS)
        if self.settings.resource_manager:
            self.roles.add(self.settings.resource_manager, Role.RESOURCE_MANAGER)
        self.upstream_joined = False
        self._rejoin = asyncio.Event()
        self._policy_pending: set[str] = set()

    async def on_start(self) -> None:
        await super().on_start()
        for replica in self.replicas.values():  # stations we already knew keep their rights
            self.roles.add(replica.key.split("/", 1)[1], Role.STATION)
        self.own.subscribe(self._own_changed)
        self.spawn(self._reconcile_policy(), "policy")
        if self.settings.cloud:
            self.spawn(self._stay_joined(), "join-cloud")
        self._start_energy(self.settings.energy, self.settings.resource_manager,
                           self.settings.cloud)

    # -- stations --------------------------------------------------------------------------

    @handles(JoinNetworkRequest)
    async def on_join(self, message: JoinNetworkRequest, ctx: Context) -> MessageBase:
        if message.role is not Role.STATION:
            self._count("rejected_joins")
            raise NotAdmittedError(
                f"{self.address} admits stations, not {message.role.value}s")
        if message.secret != self.settings.provisioning_secret:
            self._count("rejected_joins")
            raise NotAdmittedError(
                f"{ctx.sender}: wrong provisioning secret for site {self.settings.site}",
                details={"site": self.settings.site})
        self.roles.add(ctx.sender, Role.STATION)
        replica = await self.manage(ctx.sender, ctx.sender, KeyPath.root(),
                                    site=self.settings.site)
        self._count("joins")
        replica.last_seen = time.monotonic()
        self._mark_online(replica, True)
        if not _matches(replica, message.trees):
            self.resync.schedule(replica)
        else:
            self.spawn(self._apply_policy(replica), f"policy:{ctx.sender}")
        log.info("%s: admitted %s", self.address, ctx.sender)
        return JoinNetworkResponse(csms=self.address, heartbeat_s=self.settings.heartbeat_s)

    async def on_copy_resynced(self, replica: Replica, outcome: ResyncOutcome) -> None:
        self.energy_input_changed()
        await self._apply_policy(replica)
        # tell the cloud at once: its copy learns from the empty update that it is behind
        tree = replica.tree
        self._relay(PropertyValueUpdate(tree=KeyPath.parse(replica.key), epoch=tree.epoch,
                                        from_revision=tree.revision, to_revision=tree.revision,
                                        root_digest=tree.digest()))

    async def on_copy_changed(self, replica: Replica, message: PropertyValueUpdate) -> None:
        self._relay(message.model_copy(update={"tree": KeyPath.parse(replica.key)}))
        self.copy_energy_changed([str(path) for path, _, _ in message.upserts])

    async def on_heartbeat(self, replica: Replica, message: PropertyValueUpdate) -> None:
        # the cloud's liveness view of the station, and its chance to notice it is behind
        self._relay(message.model_copy(update={"tree": KeyPath.parse(replica.key)}))

    def _relay(self, update: PropertyValueUpdate) -> None:
        if self.upstream_joined and self.settings.cloud:
            self.send(self.settings.cloud, update, priority=Priority.STATE)

    def _policy_writes(self, replica: Replica) -> list[WriteItem]:
        """What to write to make a station's permissions the site's, judged by its copy."""
        policy = self.own.read("policy")
        writes = []
        for name, path in POLICY_PATHS.items():
            try:
                current = replica.tree.get(path)
            except ModelError:
                current = None
            if current != policy[name]:
                writes.append(WriteItem(path=KeyPath.parse(path), value=policy[name]))
        return writes

    async def _apply_policy(self, replica: Replica) -> None:
        """Give a station the site's operational permissions where its copy differs (one
        write at a time per station; ``_reconcile_policy`` retries what failed)."""
        if replica.key in self._policy_pending or not (writes := self._policy_writes(replica)):
            return
        self._policy_pending.add(replica.key)
        try:
            await self.request(replica.source, PropertyValueWrite(tree=replica.remote_tree,
                                                                  writes=writes), timeout=10)
        except ModelError as exc:
            log.warning("%s: could not give %s the site permissions (retried within %g s): %s",
                        self.address, replica.key, self.settings.policy_check_s, exc)
        finally:
            self._policy_pending.discard(replica.key)

    async def _reconcile_policy(self) -> None:
        """Now and then, give the site's permissions to every synced, online station whose
        copy shows others (a write that was lost, a station that changed them itself)."""
        while True:
            await asyncio.sleep(self.settings.policy_check_s)
            for replica in list(self.replicas.values()):
                if (replica.synced and replica.key not in self._policy_pending
                        and not self.resync.is_running(replica.key)
                        and self._is_online(replica) and self._policy_writes(replica)):
                    self.spawn(self._apply_policy(replica), f"policy:{replica.key}")

    def _own_changed(self, event: object) -> None:
        changed = getattr(event, "upserts", ())
        if any(str(path).startswith("policy/") for path, _ in changed):
            for replica in list(self.replicas.values()):
                self.spawn(self._apply_policy(replica), f"policy:{replica.key}")

    # -- the cloud -------------------------------------------------------------------------

    def join_request(self) -> JoinNetworkRequest:
        trees = [TreeInfo(tree=KeyPath.parse(key), epoch=r.tree.epoch, revision=r.tree.revision,
                          root_digest=r.tree.digest())
                 for key, r in self.replicas.items() if r.synced]
        return JoinNetworkRequest(role=Role.LOCAL_CSMS, identity={"site": self.settings.site},
                                  secret=self.settings.upstream_secret, trees=trees)

    async def _stay_joined(self) -> None:
        """Join the cloud, and again whenever it says it does not know us (it lost its
        storage, or our admission); back off with jitter while it is unreachable."""
        failures = 0
        assert self.settings.cloud is not None
        while True:
            try:
                await self.request(self.settings.cloud, self.join_request(), timeout=10)
            except Exception as exc:  # whatever it was, keep trying
                if not isinstance(exc, ModelError):
                    log.exception("%s: joining %s failed", self.address, self.settings.cloud)
                self.upstream_joined = False
                failures += 1
                delay = random.uniform(0, min(30.0, 0.5 * 2**failures))
                log.info("%s: joining %s failed (%s); again in %.1f s", self.address,
                         self.settings.cloud, getattr(exc, "code", exc), delay)
                await asyncio.sleep(delay)
                continue
            failures = 0
            self.upstream_joined = True
            if self.current_alert is not None and self.current_alert.active:
                self.alert_upstream()
            self._rejoin.clear()
            log.info("%s: joined %s", self.address, self.settings.cloud)
            await self._rejoin.wait()
            # the cloud lost us: every site hears that at once, so do not all come back at once
            await asyncio.sleep(random.uniform(0, 2.0))

    async def on_error_report(self, report: ErrorReport, ctx: Context) -> None:
        if ctx.sender == self.settings.cloud and report.code is ErrorCode.NOT_ADMITTED:
            self.upstream_joined = False
            self._rejoin.set()
            return
        await super().on_error_report(report, ctx)


def _matches(replica: Replica, trees: list[TreeInfo]) -> bool:
    """True when the copy already is what the joining actor announced."""
    info = next((t for t in trees if not t.tree.segments), None)
    tree = replica.tree
    return (info is not None and replica.synced and info.epoch == tree.epoch
            and info.revision == tree.revision and info.root_digest == tree.digest())


__all__ = ["STATIONS", "LocalCsms", "LocalSettings", "station_key"]
