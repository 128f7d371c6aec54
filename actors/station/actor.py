"""The charging station actor: a simulated station whose whole state is its ObjectTree.

The tree is loaded from the station's store on start (same epoch: a restart is cheap for its
CSMS, which catches up by ``changes_since``); a station whose storage was wiped starts a fresh
tree with a new epoch, and its CSMS resynchronises it by digest descent. The simulator ticks
the physical station forward and every tick is one transaction. The station joins its CSMS
with its provisioning secret and tree position, then publishes its changes; it answers the
CSMS's reads, writes and discovery. With no CSMS reachable it simply goes on, obeying the last
operational permissions it was given, and joins again when it can.

The station refuses a power envelope its EVSE cannot keep (outside the EVSE's power
constraints), and obeys a new envelope or new permissions at once: it ticks its simulation
again, at the same simulated time, right after committing them.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from actors.logic.station.simulation import SimulationConfig, StationSimulator
from actors.logic.tree_access import TreeAccess
from actors.runtime.actor import Context, RoleDirectory
from actors.runtime.replication.publisher import Publisher
from actors.runtime.storage.trees import PersistentTree, TreeStore
from actors.runtime.tree_actor import only_tree
from actors.station.tasks import StationTasks, TaskLimits
from broker_bridge import Endpoint
from keypath import KeyPath
from object_model import ErrorCode, ModelError, ObjectTree, Role
from object_model.errors import InvalidMessageError, OutOfRangeError
from object_model.messages import (
    Batch,
    ErrorReport,
    JoinNetworkRequest,
    JoinNetworkResponse,
    PropertyValueWrite,
    TreeInfo,
)
from object_model.pebc import PowerConstraints, PowerRangeEnvelope, envelope_problems
from object_model.station import new_station_tree, station_access_policy, station_schema
from object_model.tree import Operation, TransactionCommitted, Write

log = logging.getLogger("csms.station")


@dataclass(frozen=True)
class StationSettings:
    """A simulated station: whom it reports to, how it is built, how fast it lives.

    ``speed`` is simulated seconds per real second (the demo makes an hour pass in a minute);
    ``trusted`` gives roles to actors other than its CSMS (operators, say)."""

    csms: str
    csms_role: Role = Role.LOCAL_CSMS
    provisioning_secret: str = ""
    evse_count: int = 2
    dc: bool = False
    tick_s: float = 1.0
    speed: float = 1.0
    publish_interval_s: float = 0.25
    simulation: SimulationConfig = field(default_factory=SimulationConfig)
    trusted: Mapping[str, Role] = field(default_factory=dict)
    tasks: TaskLimits = field(default_factory=TaskLimits)


class ChargingStation(StationTasks):
    """See the module docstring."""

    role = Role.STATION

    def __init__(self, address: str, endpoint: Endpoint, *, store: TreeStore,
                 settings: StationSettings, clock: Any = None) -> None:
        roles = RoleDirectory({settings.csms: settings.csms_role, **settings.trusted})
        super().__init__(address, endpoint, roles=roles, clock=clock)
        self.store = store
        self.settings = settings
        self.limits = settings.tasks
        self.tree: ObjectTree | None = None
        self.persisted: PersistentTree | None = None
        self.simulator: StationSimulator | None = None
        self.publisher: Publisher | None = None
        self.admitted = False
        self.fresh = False  # True when this start created a new tree (new epoch)
        self._rejoin = asyncio.Event()
        self._sim_now = 0
        self.paused = False

    async def on_start(self) -> None:
        now = time.time_ns() // 1000
        tree = await self.store.load(self.address, station_schema())
        if tree is None:
            tree = new_station_tree(self.address, evse_count=self.settings.evse_count,
                                    dc=self.settings.dc, now_us=now)
            self.fresh = True
        self.tree = tree
        self.persisted = await self.store.attach(self.address, tree)
        await self.persisted.durable()
        self.access = TreeAccess(tree, station_access_policy())
        self._sim_now = now
        self.simulator = StationSimulator(tree, self.settings.simulation, now_us=now)
        self.publisher = Publisher(self, tree, durable=self.persisted.durable,
                                   interval=self.settings.publish_interval_s)
        self._start_tasks()
        await self._restore_logs()
        self.spawn(self._live(), "simulation")
        self.spawn(self.publisher.run(), "publish")
        self.spawn(self._stay_joined(), "join")

    async def on_stop(self) -> None:
        if self.publisher is not None:
            self.publisher.close()
        if self.tree is not None:
            await self._stop_tasks()
        if self.persisted is not None:
            await self.persisted.detach()

    # -- the simulated station --------------------------------------------------------------

    async def _live(self) -> None:
        step = int(self.settings.tick_s * self.settings.speed * 1e6)
        while True:
            await asyncio.sleep(self.settings.tick_s)
            if self.paused:
                continue
            # never behind the station's clock: when that is the site's time (the demo, or
            # real time at speed 1), an envelope made for "now" finds the station there too
            self.tick(max(self._sim_now + step, self.clock.now_us()))

    @property
    def simulated_us(self) -> int:
        """The simulated time the station has reached (µs since the epoch)."""
        return self._sim_now

    def tick(self, now_us: int | None = None) -> TransactionCommitted | None:
        """Advance the simulation to ``now_us`` (default: where it is, to obey what was just
        written), as one transaction."""
        assert self.simulator is not None and self.tree is not None
        self._sim_now = max(self._sim_now, self._sim_now if now_us is None else now_us)
        ops = self.simulator.tick(self._sim_now)
        return self.tree.apply(ops) if ops else None

    # -- joining the network -----------------------------------------------------------------

    def join_request(self) -> JoinNetworkRequest:
        tree = self.tree
        assert tree is not None
        identity = {key: str(tree.get(f"identity/{key}")) for key in
                    ("vendor_name", "model", "serial_number")}
        identity["firmware"] = str(tree.get("firmware/version"))
        return JoinNetworkRequest(
            role=Role.STATION, identity=identity, secret=self.settings.provisioning_secret,
            trees=[TreeInfo(epoch=tree.epoch, revision=tree.revision,
                            root_digest=tree.digest(visible=True))])

    async def _stay_joined(self) -> None:
        """Join the CSMS, and again whenever it says it does not know us; jittered backoff
        while it is unreachable (thousands of stations must not come back in step)."""
        failures = 0
        while True:
            request = self.join_request()
            try:
                answer = await self.request(self.settings.csms, request, timeout=10)
                if not isinstance(answer, JoinNetworkResponse):
                    raise InvalidMessageError(
                        f"{self.settings.csms} answered JoinNetwork with {type(answer).__name__}")
            except Exception as exc:  # whatever it was, keep trying
                self.admitted = False
                failures += 1
                delay = random.uniform(0, min(60.0, 0.5 * 2**failures))
                if not isinstance(exc, ModelError):
                    log.exception("%s: joining %s failed", self.address, self.settings.csms)
                elif exc.code in (ErrorCode.NOT_ADMITTED, ErrorCode.ACCESS_DENIED):
                    log.warning("%s: %s refused us: %s", self.address, self.settings.csms, exc)
                await asyncio.sleep(delay)
                continue
            assert self.publisher is not None
            failures = 0
            self.admitted = True
            self._monitor_wake.set()  # a backlog of reports may leave now
            self.publisher.heartbeat = answer.heartbeat_s
            # from what we announced: the CSMS judged its copy against that revision, and
            # whatever we committed since must reach it as an update, not as a gap
            self.publisher.subscribe(answer.csms, from_revision=request.trees[0].revision)
            self._rejoin.clear()
            await self._rejoin.wait()
            # our CSMS lost us: all its stations hear that at once; do not all come back at once
            await asyncio.sleep(random.uniform(0, 2.0))

    async def on_error_report(self, report: ErrorReport, ctx: Context) -> None:
        if ctx.sender == self.settings.csms and report.code is ErrorCode.NOT_ADMITTED:
            self.admitted = False
            self._rejoin.set()  # the CSMS does not know us (any more): join again
            return
        await super().on_error_report(report, ctx)

    # -- serving the tree ----------------------------------------------------------------------

    def access_for(self, tree: KeyPath, ctx: Context) -> TreeAccess:
        return only_tree(self.address, tree, self.access)

    async def commit(self, access: TreeAccess, message: PropertyValueWrite | Batch,
                     ctx: Context) -> TransactionCommitted:
        ops = access.operations(ctx.require_role(), message)
        self._check_envelopes(ops)
        expected = message.expected_revision if isinstance(message, PropertyValueWrite) else None
        event = access.tree.apply(ops, expected_revision=expected)
        assert self.persisted is not None
        await self.persisted.durable(event.revision)  # answer only what survives a crash
        if not self.paused and _controls(event):
            try:
                self.tick()  # obey it now, not at the next tick
            except Exception:  # the write stands; the next tick will try again
                log.exception("%s: the tick after a write failed", self.address)
        return event

    def _check_envelopes(self, ops: list[Operation]) -> None:
        """Refuse an envelope outside its EVSE's power constraints (the schema checked that
        it is an envelope at all; an invalid one is left for the tree to refuse)."""
        assert self.tree is not None
        schema = self.tree.schema
        for op in ops:
            if not isinstance(op, Write):
                continue
            path = op.path if isinstance(op.path, KeyPath) else KeyPath.parse(op.path)
            for leaf, node, value in schema.expand(path, op.value):
                segs = leaf.segments
                if len(segs) != 4 or segs[0] != "evse" or segs[2:] != ("energy", "envelope"):
                    continue
                pc_path = f"evse/{segs[1]}/energy/power_constraints"
                if value is None or pc_path not in self.tree:
                    continue
                try:
                    envelope = PowerRangeEnvelope.model_validate(node.value_type.validate(value))
                except ModelError:
                    continue
                pc = PowerConstraints.model_validate(self.tree.get(pc_path))
                if problems := envelope_problems(envelope, pc):
                    raise OutOfRangeError(
                        f"the envelope does not fit EVSE {segs[1]}'s power constraints: "
                        + "; ".join(problems[:3]) + ("; ..." if len(problems) > 3 else ""),
                        path=leaf, details={"problems": problems,
                                            "power_constraints": pc.model_dump(mode="json")})

    # -- figures ------------------------------------------------------------------------------

    @property
    def charging(self) -> int:
        return len(self.simulator.charging_evses) if self.simulator else 0

    @property
    def power_w(self) -> float:
        return self.simulator.power_w if self.simulator else 0.0

    @property
    def energy_wh(self) -> float:
        return self.simulator.energy_wh_delivered if self.simulator else 0.0


def _controls(event: TransactionCommitted) -> bool:
    """Whether ``event`` changed what an EVSE may draw: an envelope or permissions, or a
    delete above them (of ``evse/1``, say)."""
    def near(segs: tuple[str, ...]) -> bool:
        return "permissions" in segs or "envelope" in segs

    return any(near(path.segments) for path, _ in event.upserts) or any(
        near(path.segments) or (path.segments[:1] in ((), ("evse",)) and len(path.segments) <= 3)
        for path in event.deletes)
