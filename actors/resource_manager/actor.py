"""The resource manager actor: a site's grid-connection interface.

Its tree (``object_model.rm_model``) holds the grid connection's inputs under ``grid/``: the
fuse limit, DSO curtailments, a PV forecast, and from S2 an instruction's envelope and the
constraints it must respect. Operators write them; a CEM speaking S2 sends ``S2Message``s.
The tree persists in a ``TreeStore`` (loaded on start, or created from the settings), and a
write is answered only once it is durable.

Theory of operation
-------------------
*The envelope.* ``grid/envelope`` is the site's import limit from now to now + ``horizon_s``
(its first element starts ``clock_skew_s`` earlier, for readers whose clocks are behind),
recomputed whenever an input changes and at least every ``envelope_refresh_s`` (the window
moves on), by ``site_envelope`` (``actors.logic.energy.site_envelope``, pure); what it clamped
or cut is logged (an envelope cut short makes the local CSMS fall back to its operator's
limit).

*The push.* Whenever the envelope, the PV forecast or the constraints change, and every
``push_refresh_s``, one ``PropertyValueWrite`` sets the local CSMS's ``energy/grid/*``. One
loop sends them, so there is never more than one in flight, and it builds each write from the
tree when it sends it: changes made meanwhile coalesce, the latest wins. A failed push is
retried with backoff (``push_backoff``). A value we lack is deleted there.

*The site.* The local CSMS writes the site's plan to ``site/plan`` (``plan_received_at`` is
set in the same transaction); it goes on to the S2 peer as a ``PowerForecast`` by one loop
of its own, latest plan first. ``EnergyAlert``s are kept in ``site/alerts/<n>`` (the last
``MAX_ALERTS``; ``n`` counts up, so the ids tell their order) and logged.
"""

from __future__ import annotations

import asyncio
import logging
import random
from typing import Any

from pydantic import field_validator

from actors.logic.energy import s2
from actors.logic.energy.site_envelope import site_envelope
from actors.logic.tree_access import TreeAccess
from actors.runtime.actor import Context, RoleDirectory, handles
from actors.runtime.settings import Address, Settings, positive
from actors.runtime.storage.trees import PersistentTree, TreeStore
from actors.runtime.tree_actor import OneTree, TreeActor
from broker_bridge import Endpoint, Priority
from broker_bridge.backoff import Backoff
from broker_bridge.clock import Clock
from broker_bridge.router import Router
from keypath import KeyPath
from object_model import ErrorCode, MessageBase, ModelError, ObjectTree, Role
from object_model.energy_messages import EnergyAlert, S2Message
from object_model.errors import AccessDeniedError
from object_model.messages import Batch, PropertyValueWrite, WriteItem
from object_model.pebc import (
    EnergyConstraints,
    EnergyTransferPlan,
    PowerConstraints,
    PowerRangeEnvelope,
)
from object_model.rm_model import (
    AlertEntry,
    Curtailment,
    GridConnection,
    ResourceManagerState,
    SiteView,
    resource_manager_access_policy,
    resource_manager_schema,
)
from object_model.tree import Delete, Operation, TransactionCommitted, Write

log = logging.getLogger("csms.rm")

US = 1_000_000
MAX_ALERTS = 100
S2_SENDERS = frozenset({Role.RESOURCE_MANAGER, Role.OPERATOR})
ENVELOPE_INPUTS = frozenset({"fuse_limit_w", "curtailments", "instruction", "power_constraints",
                             "horizon_s"})
PUSHED = ("envelope", "pv_forecast", "power_constraints", "energy_constraints")
S2_PATHS: dict[type, str] = {PowerRangeEnvelope: "grid/instruction",
                             PowerConstraints: "grid/power_constraints",
                             EnergyConstraints: "grid/energy_constraints"}
PLAN = KeyPath("site", "plan")

CurtailmentProfile = tuple[str, int, int, float, str]  # id, start_us, end_us, limit_w, reason


class ResourceManagerSettings(Settings):
    """A site's resource manager: its local CSMS, its S2 peer (a CEM, told the site's plan,
    and given the resource manager role), the profile a fresh tree starts from (fuse,
    curtailments, PV forecast) and its timing. ``operators`` and ``trusted`` give roles to
    others."""

    site_csms: Address | None = None
    s2_peer: Address | None = None
    fuse_limit_w: float = 100_000.0
    curtailments: tuple[CurtailmentProfile, ...] = ()
    pv_forecast: EnergyTransferPlan | None = None
    push_refresh_s: float = 60.0
    operators: tuple[Address, ...] = ()
    trusted: dict[str, Role] = {}
    envelope_refresh_s: float = 60.0
    push_timeout_s: float = 5.0
    max_backoff_s: float = 30.0  # the longest pause between failed pushes
    clock_skew_s: float = 30.0  # the envelope's first element starts this much before now

    _positive = field_validator("push_refresh_s", "envelope_refresh_s", "push_timeout_s",
                                "max_backoff_s")(positive)

    @field_validator("fuse_limit_w")
    @classmethod
    def _fuse(cls, value: float) -> float:
        if not 0 < value <= 1e8:
            raise ValueError(f"must be more than 0 and at most 1e8 W, got {value}")
        return value

    def roles(self) -> RoleDirectory:
        """Who plays which role for the resource manager."""
        roles = RoleDirectory({**dict.fromkeys(self.operators, Role.OPERATOR), **self.trusted})
        if self.s2_peer:
            roles.add(self.s2_peer, Role.RESOURCE_MANAGER)
        if self.site_csms:
            roles.add(self.site_csms, Role.LOCAL_CSMS)
        return roles


# -- the actor ----------------------------------------------------------------------------------


class ResourceManager(TreeActor):
    """See the module docstring."""

    role = Role.RESOURCE_MANAGER

    def __init__(self, address: str, links: Router | Endpoint, *, store: TreeStore,
                 settings: ResourceManagerSettings, clock: Clock | None = None,
                 rng: random.Random | None = None) -> None:
        super().__init__(address, links, roles=settings.roles(), clock=clock, rng=rng)
        self.store = store
        self.settings = settings
        self.push_backoff = Backoff(base_s=min(0.2, settings.max_backoff_s),
                                    cap_s=settings.max_backoff_s, floor=0.5)
        self.tree: ObjectTree = ObjectTree(resource_manager_schema())
        self.access = TreeAccess(self.tree, resource_manager_access_policy())
        self.trees = OneTree(address, self.access, self._commit)
        self.persisted: PersistentTree | None = None
        self.fresh = False
        self.push_failures = 0
        self._recompute = asyncio.Event()
        self._push_wanted = asyncio.Event()
        self._plan_wanted = asyncio.Event()
        self._notes: list[str] = []

    async def on_start(self) -> None:
        tree = await self.store.load(self.address, resource_manager_schema())
        if tree is None:
            tree = ObjectTree(resource_manager_schema())
            tree.write("", self._initial_state().model_dump(by_alias=True, exclude_none=True))
            self.fresh = True
        self.tree = tree
        self.access = TreeAccess(tree, resource_manager_access_policy())
        self.trees = OneTree(self.address, self.access, self._commit)
        self.persisted = await self.store.attach(self.address, tree)
        await self.persisted.durable()
        tree.subscribe(self._committed)
        self.refresh_envelope()
        self.spawn(self._envelope_loop(), "envelope")
        if self.settings.site_csms:
            self._push_wanted.set()  # whatever the CSMS holds may be stale
            self.spawn(self._push_loop(), "push")
        if self.settings.s2_peer:
            self.spawn(self._plan_loop(), "plan")

    async def on_stop(self) -> None:
        if self.persisted is not None:
            await self.persisted.detach()

    def _initial_state(self) -> ResourceManagerState:
        s = self.settings
        curtailments = {cid: Curtailment(start_at=start, end_at=end, limit_w=limit, reason=why)
                        for cid, start, end, limit, why in s.curtailments}
        grid = GridConnection(fuse_limit_w=s.fuse_limit_w, curtailments=curtailments,
                              pv_forecast=s.pv_forecast)
        return ResourceManagerState(name=self.address, grid=grid,
                                    site=SiteView(csms=s.site_csms or ""))

    def value(self, path: str) -> Any:
        """The value at ``path`` of the tree (a subtree as dicts), None when absent."""
        try:
            return self.tree.read(path)
        except ModelError as exc:
            if exc.code is ErrorCode.NOT_PRESENT:
                return None
            raise

    def _committed(self, event: TransactionCommitted) -> None:
        grid = [p.segments[1:] for p in [*(p for p, _ in event.upserts), *event.deletes]
                if p.segments[:1] == ("grid",)]
        if any(not rest or rest[0] in ENVELOPE_INPUTS for rest in grid):
            self._recompute.set()
        if any(not rest or rest[0] in PUSHED for rest in grid):
            self._push_wanted.set()

    # -- the envelope -----------------------------------------------------------------------

    def refresh_envelope(self) -> PowerRangeEnvelope:
        """Recompute ``grid/envelope`` from the inputs, as of the clock's now."""
        curtailments = [(c["start_at"], c["end_at"], c["limit_w"])
                        for c in (self.value("grid/curtailments") or {}).values()]
        instruction = self.value("grid/instruction")
        constraints = self.value("grid/power_constraints")
        envelope, notes = site_envelope(
            self.clock.now_us(), self.tree.get("grid/horizon_s"),
            self.tree.get("grid/fuse_limit_w"), curtailments,
            None if instruction is None else PowerRangeEnvelope.model_validate(instruction),
            None if constraints is None else PowerConstraints.model_validate(constraints),
            lead_us=int(self.settings.clock_skew_s * US))
        if notes != self._notes:
            self._notes = notes
            if notes:
                log.info("%s: envelope adjusted: %s", self.address, "; ".join(notes))
        self.tree.write("grid/envelope", envelope.model_dump())
        return envelope

    async def _envelope_loop(self) -> None:
        while True:
            await self.clock.wait(self._recompute, self.settings.envelope_refresh_s)
            self._recompute.clear()
            try:
                self.refresh_envelope()
            except ModelError:
                log.exception("%s: could not compute the envelope", self.address)

    # -- the push ---------------------------------------------------------------------------

    def push_message(self) -> PropertyValueWrite:
        """The write that tells the local CSMS the grid's limits as they are now."""
        writes = []
        for name in PUSHED:
            path, value = KeyPath("energy", "grid", name), self.value(f"grid/{name}")
            writes.append(WriteItem(path=path, delete=True) if value is None
                          else WriteItem(path=path, value=value))
        writes += [WriteItem(path=KeyPath("energy", "grid", "source"), value=self.address),
                   WriteItem(path=KeyPath("energy", "grid", "updated_at"),
                             value=self.clock.now_us())]
        return PropertyValueWrite(tree=KeyPath.root(), writes=writes)

    async def _push_loop(self) -> None:
        csms = self.settings.site_csms
        assert csms is not None
        while True:
            if self.push_failures:
                await self.clock.sleep(self.push_backoff.delay(self.push_failures, self.rng))
            else:
                await self.clock.wait(self._push_wanted, self.settings.push_refresh_s)
            self._push_wanted.clear()
            try:
                await self.request(csms, self.push_message(), priority=Priority.CONTROL,
                                   timeout=self.settings.push_timeout_s)
            except Exception as exc:  # whatever it was, try again
                self.push_failures += 1
                if not isinstance(exc, ModelError):
                    log.exception("%s: pushing the envelope to %s failed", self.address, csms)
                else:
                    (log.warning if self.push_failures == 1 else log.info)(
                        "%s: pushing the envelope to %s failed (%d in a row): %s",
                        self.address, csms, self.push_failures, exc)
                continue
            self.push_failures = 0
            self.tree.apply([Write("grid/pushed_at", self.clock.now_us()),
                             Write("grid/pushes", self.tree.get("grid/pushes") + 1)])

    # -- S2 ---------------------------------------------------------------------------------

    @handles(S2Message)
    async def on_s2(self, message: S2Message, ctx: Context) -> MessageBase | None:
        """A PEBC message from the CEM: its value replaces ours in one durable transaction,
        and a ReceptionStatus answers; anything else is refused and changes nothing."""
        role = ctx.require_role()
        if role not in S2_SENDERS:
            raise AccessDeniedError(
                f"{ctx.sender!r} ({role.value}) may not send S2 here",
                details={"sender": ctx.sender, "role": role.value})
        parsed = s2.parse_s2(message.payload)
        if s2.message_type_of(parsed) == "ReceptionStatus":  # never answered (S2's rule)
            if problem := s2.reception_problem(parsed):
                log.warning("%s: %s refused an S2 message: %s", self.address, ctx.sender, problem)
            return None
        value = s2.to_pebc(parsed)
        path = KeyPath.parse(S2_PATHS[type(value)])
        self.access.check_write(role, path)
        event = self.tree.apply([Write(path, value.model_dump())])
        assert self.persisted is not None
        await self.persisted.durable(event.revision)
        log.info("%s: %s from %s is now %s", self.address, s2.message_type_of(parsed),
                 ctx.sender, path)
        return S2Message(payload=s2.reception_status(s2.message_id_of(parsed)))

    async def _plan_loop(self) -> None:
        peer = self.settings.s2_peer
        assert peer is not None
        while True:
            await self._plan_wanted.wait()
            self._plan_wanted.clear()
            plan = self.value("site/plan")
            if plan is None:
                continue
            forecast = s2.plan_to_power_forecast(EnergyTransferPlan.model_validate(plan),
                                                 self.rng)
            try:
                answer = await self.request(peer, S2Message(payload=s2.to_json(forecast)))
                problem = (s2.reception_problem(s2.parse_s2(answer.payload))
                           if isinstance(answer, S2Message) else None)
            except ModelError as exc:
                problem = str(exc)
            if problem:
                log.warning("%s: the site's plan did not reach %s: %s", self.address, peer,
                            problem)

    # -- the site ---------------------------------------------------------------------------

    @handles(EnergyAlert)
    async def on_alert(self, message: EnergyAlert, ctx: Context) -> None:
        """Kept and logged; not answered (alerts are sent reliably: the session acknowledges
        them)."""
        ctx.require_role()
        n = self.tree.get("site/alerts_total")
        entry = AlertEntry(at=message.at_us, codes=",".join(dict.fromkeys(message.codes))[:200],
                           text=message.text[:500], site_limit_w=message.site_limit_w,
                           evses=len(message.evses), active=message.active)
        ops: list[Operation] = [Write(f"site/alerts/{n}", entry.model_dump(by_alias=True)),
                                Write("site/alerts_total", n + 1)]
        if n >= MAX_ALERTS:
            ops.append(Delete(f"site/alerts/{n - MAX_ALERTS}"))
        log.warning("%s: energy alert from %s (site %s, %s, %s): %s", self.address, ctx.sender,
                    message.site, entry.codes or "no code",
                    "active" if message.active else "ended", message.text)
        event = self.tree.apply(ops)
        assert self.persisted is not None
        await self.persisted.durable(event.revision)

    # -- writes ---------------------------------------------------------------------------

    async def _commit(self, access: TreeAccess, message: PropertyValueWrite | Batch,
                      ctx: Context) -> TransactionCommitted:
        """A checked write, durable before it is answered; a plan written to ``site/plan``
        is stamped in the same transaction and goes on to the S2 peer."""
        ops = access.operations(ctx.require_role(), message)
        plan = any(PLAN.is_prefix_of(_path(op)) or _path(op).is_prefix_of(PLAN) for op in ops)
        if plan:
            ops.append(Write("site/plan_received_at", self.clock.now_us()))
        expected = message.expected_revision if isinstance(message, PropertyValueWrite) else None
        event = access.tree.apply(ops, expected_revision=expected)
        assert self.persisted is not None
        await self.persisted.durable(event.revision)
        if plan:
            self._plan_wanted.set()
        return event


def _path(op: Operation) -> KeyPath:
    return op.path if isinstance(op.path, KeyPath) else KeyPath.parse(op.path)


__all__ = ["MAX_ALERTS", "ResourceManager", "ResourceManagerSettings", "site_envelope"]
