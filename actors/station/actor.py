"""The charging station actor: a station whose whole state is its ObjectTree.

The tree is loaded from the station's store on start (same epoch: a restart is cheap for its
CSMS, which catches up by ``changes_since``); a station whose storage was wiped starts a fresh
tree from its hardware, with a new epoch, and its CSMS resynchronises it by digest descent.
The hardware (``StationHardware``: the simulator, or an OCPP charger behind the gateway)
reports what it does as transactions of the tree and obeys what a CSMS writes. The station
joins its CSMS with its provisioning secret and tree position, then publishes its changes; it
answers the CSMS's reads, writes and discovery, and runs monitoring and firmware tasks. With
no CSMS reachable it simply goes on, obeying the last operational permissions it was given,
and joins again when it can.

The station refuses a power envelope its EVSE cannot keep (outside the EVSE's power
constraints); a write it accepts is durable before it is answered and handed to the hardware
at once.
"""

from __future__ import annotations

import logging
import random
import re
from collections.abc import Sequence

import msgpack
from pydantic import Field, field_validator

from actors.logic.firmware_trust import trusted_keys
from actors.logic.join_proof import join_proof
from actors.logic.monitoring import Monitors
from actors.logic.revocations import LIST_PATH, NUMBER_PATH, checked_list, stored_list, written_list
from actors.logic.sealed_values import (
    CERTIFICATE_PATH,
    open_writes,
    secret_paths,
    without_secrets,
)
from actors.logic.tree_access import TreeAccess
from actors.runtime.actor import Context, RoleDirectory, handles
from actors.runtime.replication.publisher import Publisher
from actors.runtime.services.enrollment import Credentials
from actors.runtime.services.join import Membership
from actors.runtime.settings import Address, Settings, positive
from actors.runtime.storage.blobs import BlobStore
from actors.runtime.storage.trees import PersistentTree, TreeStore
from actors.runtime.tree_actor import OneTree, TreeActor
from actors.station.hardware import HardwareFigures, StationHardware
from actors.station.tasks import StationTasks, TaskLimits
from broker_bridge import Endpoint
from broker_bridge.backoff import Backoff
from broker_bridge.clock import Clock
from broker_bridge.router import Router
from broker_bridge.session.certificates import RevocationList
from keypath import KeyPath
from object_model import ErrorCode, MessageBase, ModelError, ObjectTree, Role
from object_model.blobs import FirmwareUpdate
from object_model.errors import (
    DecryptionFailedError,
    OutOfRangeError,
    RevisionConflictError,
    SealingRequiredError,
)
from object_model.messages import (
    Batch,
    ErrorReport,
    JoinNetworkRequest,
    JoinNetworkResponse,
    PropertyValueWrite,
    TreeInfo,
)
from object_model.monitoring import MonitoringTaskSetup, TaskControl
from object_model.operations import RemoteOperation
from object_model.pebc import PowerConstraints, PowerRangeEnvelope, envelope_problems
from object_model.schema import LeafSchema
from object_model.station import shared_station_schema, station_access_policy
from object_model.tree import Operation, TransactionCommitted, Write

log = logging.getLogger("csms.station")

JOIN_BACKOFF = Backoff(base_s=1.0, cap_s=60.0)


class StationSettings(Settings):
    """Whom a station reports to and how: its CSMS and the role that plays, the secret it
    joins with, how often it publishes, what it grants tasks; ``operators`` and ``trusted``
    give roles to other actors."""

    csms: Address
    csms_role: Role = Role.LOCAL_CSMS
    provisioning_secret: str = Field("", repr=False)
    publish_interval_s: float = 0.25
    trusted: dict[str, Role] = {}
    operators: tuple[Address, ...] = ()
    tasks: TaskLimits = TaskLimits()
    firmware_keys: tuple[str, ...] = ()  # manufacturers' Ed25519 public keys, 64 hex digits

    _positive = field_validator("publish_interval_s")(positive)

    @field_validator("firmware_keys")
    @classmethod
    def _keys(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        for key in value:
            if not re.fullmatch(r"[0-9a-fA-F]{64}", key):
                raise ValueError(f"{key[:16]!r}...: a firmware key is an Ed25519 public key "
                                 "as 64 hex digits")
        return value

    @field_validator("csms_role")
    @classmethod
    def _role(cls, value: Role) -> Role:
        if value not in (Role.LOCAL_CSMS, Role.CLOUD_CSMS):
            raise ValueError(f"{value.value!r} is not local_csms or cloud_csms")
        return value

    def roles(self) -> RoleDirectory:
        """Who plays which role for the station."""
        return RoleDirectory({self.csms: self.csms_role, **dict.fromkeys(
            self.operators, Role.OPERATOR), **self.trusted})


class ChargingStation(TreeActor):
    """See the module docstring."""

    role = Role.STATION

    def __init__(self, address: str, links: Router | Endpoint, *, store: TreeStore,
                 settings: StationSettings, hardware: StationHardware,
                 clock: Clock | None = None, rng: random.Random | None = None,
                 credentials: Credentials | None = None) -> None:
        """``credentials``: the certificate it joins with (enrolled at its first join);
        without, it proves its provisioning secret."""
        super().__init__(address, links, roles=settings.roles(), clock=clock, rng=rng)
        self.store = store
        self.settings = settings
        self.hardware = hardware
        self.credentials = credentials
        self.fresh = False  # True when this start created a new tree (new epoch)
        self.membership = Membership(
            self, settings.csms, self.join_request, backoff=JOIN_BACKOFF,
            on_joined=self._joined,
            renew_at=lambda: None if credentials is None else credentials.renew_at_us())
        # made on start, once the tree is loaded
        self.tree: ObjectTree | None = None
        self.persisted: PersistentTree | None = None
        self.publisher: Publisher | None = None
        self.tasks: StationTasks | None = None

    async def on_start(self) -> None:
        now = self.clock.now_us()
        tree = await self.store.load(self.address, shared_station_schema())
        if tree is None:
            tree = self.hardware.initial_tree(self.address, now)
            self.fresh = True
        self.tree = tree
        self.persisted = persisted = await self.store.attach(self.address, tree)
        await persisted.durable()
        if self.credentials is not None:  # the revocations it took before a restart
            try:
                listed = stored_list(tree.get(LIST_PATH), self.credentials.directory)
            except ModelError as exc:
                log.error("%s: the revocation list in its tree is refused (%s)", self.address,
                          exc)
            else:
                if listed is not None:
                    self.credentials.directory.revoke(listed)
        access = TreeAccess(tree, station_access_policy())
        self.trees = OneTree(self.address, access, self._commit)
        self.hardware.attach(tree, self._report, now, persisted.durable)
        self.publisher = Publisher(self, tree, durable=persisted.durable,
                                   interval=self.settings.publish_interval_s,
                                   pace=self.endpoint.pace)
        self.tasks = StationTasks(self, tree=tree, access=access, persisted=persisted,
                                  store=self.store,
                                  link=self.links.endpoint_for(self.settings.csms),
                                  joined=lambda: self.membership.joined,
                                  limits=self.settings.tasks, hardware=self.hardware,
                                  firmware_keys=trusted_keys(self.settings.firmware_keys))
        await self.tasks.start()
        self.spawn(self.hardware.run(self.endpoint.pace), "hardware")
        self.spawn(self.publisher.run(), "publish")
        self.spawn(self.membership.run(), "join")

    async def on_stop(self) -> None:
        if self.publisher is not None:
            self.publisher.close()
        if self.tasks is not None:
            await self.tasks.stop()
        if self.persisted is not None:
            await self.persisted.detach()

    @property
    def monitors(self) -> Monitors:
        """The station's monitoring tasks (once started)."""
        assert self.tasks is not None
        return self.tasks.monitors

    @property
    def blobs(self) -> BlobStore | None:
        """The station's blob cache (opened by its first firmware update)."""
        return None if self.tasks is None else self.tasks.blobs

    @property
    def admitted(self) -> bool:
        """Whether the station's CSMS has admitted it."""
        return self.membership.joined

    def _report(self, ops: Sequence[Operation]) -> TransactionCommitted | None:
        assert self.tree is not None
        return self.tree.apply(ops)

    # -- joining the network -----------------------------------------------------------------

    def join_request(self) -> JoinNetworkRequest:
        tree = self.tree
        assert tree is not None
        identity = {key: str(tree.get(f"identity/{key}")) for key in
                    ("vendor_name", "model", "serial_number")}
        identity["firmware"] = str(tree.get("firmware/version"))
        trees = [TreeInfo(epoch=tree.epoch, revision=tree.revision,
                          root_digest=tree.digest(visible=True))]
        if self.credentials is not None:
            return JoinNetworkRequest(role=Role.STATION, identity=identity, trees=trees,
                                      **self.credentials.join_fields(self.settings.csms))
        return JoinNetworkRequest(
            role=Role.STATION, identity=identity, trees=trees,
            proof=join_proof(self.settings.provisioning_secret, self.address, self.settings.csms))

    def _joined(self, request: JoinNetworkRequest, answer: JoinNetworkResponse) -> None:
        assert self.publisher is not None and self.tasks is not None
        if self.credentials is not None and answer.certificate:
            try:
                self.credentials.take(answer.certificate)
            except ModelError as exc:  # kept the one it had, if any: renewal asks again
                log.error("%s: the certificate %s issued is refused: %s", self.address,
                          answer.csms, exc)
        held = None if self.credentials is None else self.credentials.credential
        if held is not None and self.tree is not None:  # what the CSMS sees of it
            assert self.credentials is not None
            self.tree.apply([Write("security/certificate_serial", held.kid.hex()),
                             Write("security/certificate_expires_at", held.not_after_us),
                             Write(CERTIFICATE_PATH, msgpack.packb(self.credentials.chain))])
        self.tasks.link_changed()  # a backlog of reports may leave now
        self.publisher.heartbeat = answer.heartbeat_s
        # from what we announced: the CSMS judged its copy against that revision, and
        # whatever we committed since must reach it as an update, not as a gap
        self.publisher.subscribe(answer.csms, from_revision=request.trees[0].revision)

    async def on_error_report(self, report: ErrorReport, ctx: Context) -> None:
        if ctx.sender == self.settings.csms and report.code is ErrorCode.NOT_ADMITTED:
            self.membership.lost()  # the CSMS does not know us (any more): join again
            return
        await super().on_error_report(report, ctx)

    # -- tasks ---------------------------------------------------------------------------------

    @handles(MonitoringTaskSetup)
    async def on_monitoring_setup(self, setup: MonitoringTaskSetup, ctx: Context) -> MessageBase:
        assert self.tasks is not None
        return await self.tasks.setup_monitoring(setup, ctx)

    @handles(TaskControl)
    async def on_task_control(self, message: TaskControl, ctx: Context) -> MessageBase:
        assert self.tasks is not None
        return await self.tasks.control(message, ctx)

    @handles(FirmwareUpdate)
    async def on_firmware_update(self, message: FirmwareUpdate, ctx: Context) -> MessageBase:
        assert self.tasks is not None
        return await self.tasks.update_firmware(message, ctx)

    @handles(RemoteOperation)
    async def on_operation(self, message: RemoteOperation, ctx: Context) -> MessageBase:
        assert self.tasks is not None
        return await self.tasks.operate(message, ctx)

    # -- writes from above ----------------------------------------------------------------------

    async def _commit(self, access: TreeAccess, message: PropertyValueWrite | Batch,
                      ctx: Context) -> TransactionCommitted:
        schema = access.tree.schema
        try:
            message = open_writes(message, schema, self.address,
                                  None if self.credentials is None
                                  else self.credentials.recipient_key)
        except (SealingRequiredError, DecryptionFailedError) as exc:
            log.warning("%s: %s wrote a secret %s (at %s): refused", self.address, ctx.sender,
                        "in clear, so whoever passed it on has seen it"
                        if isinstance(exc, SealingRequiredError)
                        else "that does not open (altered, moved or not ours)", exc.path)
            raise
        try:
            return await self._apply(access, message, ctx)
        except ModelError as exc:  # its answer goes back through the relays
            raise without_secrets(exc, secret_paths(schema, message)) from None

    async def _apply(self, access: TreeAccess, message: PropertyValueWrite | Batch,
                     ctx: Context) -> TransactionCommitted:
        ops = access.operations(ctx.require_role(), message)
        refuse_unfit_envelopes(access.tree, ops)
        revoked = self._revocations_in(access.tree, ops)
        if revoked is not None:
            ops = [*ops, Write(NUMBER_PATH, revoked.number)]
        expected = message.expected_revision if isinstance(message, PropertyValueWrite) else None
        if expected is not None and expected != access.tree.revision:  # before the device
            raise RevisionConflictError(
                f"expected revision {expected}, tree is at {access.tree.revision}",
                details={"expected": expected, "actual": access.tree.revision})
        await self.hardware.carry_out(ops)  # a device that must confirm it, first
        event = access.tree.apply(ops, expected_revision=expected)
        assert self.persisted is not None
        # its id goes to disk with its effect: a replay after a crash is refused
        self.persisted.note_applied(ctx.sender, ctx.message_id, ctx.envelope.timestamp_us)
        await self.persisted.durable(event.revision)  # answer only what survives a crash
        self.hardware.obey(event)
        if revoked is not None and self.credentials is not None:
            self.credentials.directory.revoke(revoked)  # refused here too, from now on
            log.warning("%s: revocation list %d taken: %s revoked", self.address,
                        revoked.number, ", ".join(sorted(revoked.addresses)) or "nobody")
        return event

    def _revocations_in(self, tree: ObjectTree, ops: list[Operation]) -> RevocationList | None:
        """The revocation list a write brings, checked (``actors.logic.revocations``)."""
        value = written_list(tree.schema, ops)
        if value is None:
            return None
        directory = None if self.credentials is None else self.credentials.directory
        return checked_list(value, directory, held=int(tree.get(NUMBER_PATH) or 0),
                            holder=self.address)

    # -- figures ------------------------------------------------------------------------------

    @property
    def figures(self) -> HardwareFigures:
        return self.hardware.figures

    @property
    def charging(self) -> int:
        return self.hardware.figures.charging

    @property
    def power_w(self) -> float:
        return self.hardware.figures.power_w

    @property
    def energy_wh(self) -> float:
        return self.hardware.figures.energy_wh


def refuse_unfit_envelopes(tree: ObjectTree, ops: list[Operation]) -> None:
    """Refuse an envelope outside its EVSE's power constraints (the schema checked that it
    is an envelope at all; an invalid one is left for the tree to refuse)."""
    schema = tree.schema
    for op in ops:
        if not isinstance(op, Write):
            continue
        path = op.path if isinstance(op.path, KeyPath) else KeyPath.parse(op.path)
        for leaf, node, value in schema.expand(path, op.value):
            segs = leaf.segments
            if len(segs) != 4 or segs[0] != "evse" or segs[2:] != ("energy", "envelope"):
                continue
            pc_path = f"evse/{segs[1]}/energy/power_constraints"
            if value is None or pc_path not in tree or not isinstance(node, LeafSchema):
                continue
            try:
                envelope = PowerRangeEnvelope.model_validate(node.value_type.validate(value))
            except ModelError:
                continue
            pc = PowerConstraints.model_validate(tree.get(pc_path))
            if problems := envelope_problems(envelope, pc):
                raise OutOfRangeError(
                    f"the envelope does not fit EVSE {segs[1]}'s power constraints: "
                    + "; ".join(problems[:3]) + ("; ..." if len(problems) > 3 else ""),
                    path=leaf, details={"problems": problems,
                                        "power_constraints": pc.model_dump(mode="json")})


__all__ = ["ChargingStation", "StationSettings", "refuse_unfit_envelopes"]
