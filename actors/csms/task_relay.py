"""A CSMS's side of tasks: monitoring stations, storing their samples, updating firmware.

A CSMS sets up, controls and cancels tasks on the stations it manages by forwarding
``MonitoringTaskSetup``, ``TaskControl`` and ``FirmwareUpdate`` addressed to
``stations/<id>`` to whoever answers for the station (the station itself, or the site's local
CSMS, which forwards again). The station reports to whoever forwarded the setup; each CSMS on
the way stores the samples (``SampleStore``: SQLite, bounded by count and age, answering
``MonitoringQuery``) and relays each report to the actor that asked for the task (its
*watcher*: an operator's ``csms monitor``, or the cloud), so a report crosses each link once.
Tasks themselves are listed like any other values: ``stations/<id>/tasks/**``.

A firmware image goes the same way: the CSMS that holds it (its ``BlobService``) names itself the
source; a CSMS forwarding the update expects the blob from upstream and names itself the
source in turn, so the site's stations fetch from their local CSMS, which fetches each chunk
from the cloud once.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import Any

from actors.csms.own_tree import OwnTree
from actors.csms.replicas import ReplicaSet
from actors.runtime.actor import Context, Messenger
from actors.runtime.replication.replica import Replica
from actors.runtime.services.blob_service import BlobService
from actors.runtime.storage.samples import SampleStore
from broker_bridge import Priority
from keypath import KeyPath
from object_model import MessageBase, Role
from object_model.access import AccessPolicy
from object_model.blobs import FirmwareUpdate
from object_model.errors import (
    AccessDeniedError,
    NotAdmittedError,
    NotPresentError,
    UnknownPathError,
)
from object_model.monitoring import (
    MonitoringQuery,
    MonitoringReport,
    MonitoringTaskSetup,
    TaskAction,
    TaskControl,
    TaskStatus,
)
from object_model.operations import RemoteOperation

log = logging.getLogger("csms.tasks")

OPERATING = ("permissions", "may_charge")
"""What a role must be allowed to write of a station to operate it remotely."""

TASK_MESSAGES = (MonitoringTaskSetup, TaskControl, FirmwareUpdate, RemoteOperation,
                 MonitoringReport, MonitoringQuery)
"""What a CSMS's ``TaskRelay.handle`` takes."""


class TaskRelay:
    """A CSMS's side of tasks (see the module docstring)."""

    def __init__(self, actor: Messenger, *, own: OwnTree, copies: ReplicaSet,
                 policy: AccessPolicy, blobs: BlobService, samples: SampleStore) -> None:
        self.actor, self.address, self.clock = actor, actor.address, actor.clock
        self.own, self.copies, self.policy = own, copies, policy
        self.blobs, self.samples = blobs, samples
        self.watchers: dict[tuple[str, str], str] = {}
        """Who each ``(station, task)``'s reports are relayed to."""
        self._handlers: dict[type[MessageBase],
                             Callable[[Any, Context], Awaitable[MessageBase | None]]] = {
            MonitoringTaskSetup: self.setup_monitoring, TaskControl: self.control,
            FirmwareUpdate: self.update_firmware, RemoteOperation: self.operate,
            MonitoringReport: self.report,
            MonitoringQuery: self.query}

    async def open(self) -> None:
        """Read who watches which task (the sample store must be open)."""
        self.watchers = await self.samples.watchers()

    async def handle(self, message: MessageBase, ctx: Context) -> MessageBase | None:
        """One of ``TASK_MESSAGES``."""
        return await self._handlers[type(message)](message, ctx)

    def _station_of(self, tree: KeyPath, ctx: Context,
                    message: MessageBase | None = None) -> tuple[str, Replica]:
        segs = tree.segments
        if len(segs) != 2 or segs[0] != "stations":
            raise UnknownPathError(
                f"tasks run on stations: address one as stations/<id>, not {tree or 'the CSMS'}",
                path=tree)
        self.check(ctx.require_role(), tree, message)
        return segs[1], self.copies.replica_for(segs[1])

    def check(self, role: Role, tree: KeyPath, message: MessageBase | None = None) -> None:
        """Whether ``role`` may set up, control or update tasks on the station at ``tree``
        (``ACCESS_DENIED`` if not): whoever may read below it watches and controls tasks;
        a remote operation (a reset, a remote start...) needs the right to write the
        station's ``permissions``, the business decisions it acts on."""
        if isinstance(message, RemoteOperation):
            if not self.policy.may_write(role, KeyPath(*tree.segments, *OPERATING)):
                raise AccessDeniedError(
                    f"role {role.value} may not operate {tree} ({message.operation.value}): "
                    "only who may write its permissions may", path=tree)
            return
        if not self.policy.may_read_below(role, tree):
            raise AccessDeniedError(
                f"role {role.value} may not watch or control {tree}", path=tree)

    async def _forward(self, replica: Replica, message: MessageBase, ctx: Context) -> MessageBase:
        forwarded = message.model_copy(update={"tree": replica.remote_tree})
        answer = await self.actor.request(replica.source, forwarded,
                                    timeout=ctx.time_left(self.clock.now_us(), 10.0))
        if isinstance(answer, TaskStatus):
            return answer.model_copy(update={"tree": KeyPath.parse(replica.key)})
        return answer

    async def setup_monitoring(self, setup: MonitoringTaskSetup, ctx: Context) -> MessageBase:
        station, replica = self._station_of(setup.tree, ctx)
        watcher = setup.reporter.destination or ctx.sender
        # the station reports to us (the sender of what we forward); we store and relay
        forwarded = setup.model_copy(update={
            "reporter": setup.reporter.model_copy(update={"destination": None})})
        answer = await self._forward(replica, forwarded, ctx)
        if watcher != self.address:
            self.watchers[station, setup.task] = watcher
            await self.samples.watch(station, setup.task, watcher)
        return answer

    async def control(self, message: TaskControl, ctx: Context) -> MessageBase:
        station, replica = self._station_of(message.tree, ctx)
        answer = await self._forward(replica, message, ctx)
        if message.action is TaskAction.CANCEL and self.watchers.pop((station, message.task),
                                                                      ""):
            await self.samples.watch(station, message.task, None)
        return answer

    async def update_firmware(self, message: FirmwareUpdate, ctx: Context) -> MessageBase:
        _, replica = self._station_of(message.tree, ctx)
        holds = await self.blobs.store.is_complete(message.blob.hash)
        source = message.source or (self.address if holds else ctx.sender)
        if source != self.address:  # we pass the image on: fetch it (once) from upstream
            await self.blobs.expect(message.blob, source)
        elif not holds:
            raise NotPresentError(
                f"{self.address} does not hold blob {message.blob.hash.hex()[:16]}...: "
                "store the image here first", details={"hash": message.blob.hash.hex()})
        return await self._forward(replica, message.model_copy(
            update={"source": self.address}), ctx)

    async def operate(self, message: RemoteOperation, ctx: Context) -> MessageBase:
        _, replica = self._station_of(message.tree, ctx, message)
        return await self._forward(replica, message, ctx)

    async def report(self, report: MonitoringReport, ctx: Context) -> None:
        segs = report.tree.segments
        key = f"stations/{ctx.sender}" if not segs else str(report.tree)
        replica = self.copies.replicas.get(key)
        if replica is None or replica.source != ctx.sender:
            raise NotAdmittedError(
                f"{ctx.sender} reports on {report.tree or 'itself'}, which it does not answer "
                "for here", details={"tree": str(report.tree)})
        station = replica.station
        await self.samples.add(station, report)
        self.own.count("monitoring_samples", len(report.samples))
        watcher = self.watchers.get((station, report.task))
        if watcher is not None:
            expires = ctx.envelope.expires_us
            left = None if expires is None else max(1, expires - self.clock.now_us())
            self.actor.send(watcher, report.model_copy(update={"tree": KeyPath.parse(key)}),
                      priority=Priority(ctx.envelope.priority), reliable=True,
                      expires_in_us=left)

    async def query(self, query: MonitoringQuery, ctx: Context) -> MessageBase:
        station, _ = self._station_of(query.tree, ctx)
        return await self.samples.query(station, query)


__all__ = ["TASK_MESSAGES", "TaskRelay"]
