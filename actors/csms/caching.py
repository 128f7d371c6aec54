"""What a local and a cloud CSMS share: copies of station trees, kept current and resynchronised.

A CSMS holds one copy (``Replica``) per managed station, persisted in SQLite, and an own tree
(registry, site policy, counters). Its aggregate view puts each copy at ``stations/<id>/...`` and
its own tree everywhere else; reads and discovery of copies are answered from the copy (the
station is not bothered), writes to a copy are passed on to whoever answers for the station.

Copies stay current from ``PropertyValueUpdate`` notifications: an update that follows on from
the copy's revision (same epoch) is applied, made durable, then passed on (``on_copy_changed``);
anything else (a gap, a new epoch, a copy never synced) schedules a resynchronisation. After a
restart every copy is resynchronised, a bounded number at a time, at state priority.
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass
from typing import Any

from actors.base import Context, RoleDirectory, handles
from actors.persistence import PersistentTree, TreeStore
from actors.resync import Replica, ResyncEngine, ResyncOutcome
from actors.tree_access import TreeAccess
from actors.tree_actor import TreeActor
from broker_bridge import Endpoint, Priority
from keypath import GLOBSTAR, STAR, KeyPath, KeyPattern
from object_model import (
    ErrorCode,
    MessageBase,
    ModelError,
    ObjectTree,
    PermissiveSchema,
    PropertyAccessKind,
    Write,
)
from object_model.csms_model import CsmsState, csms_access_policy, csms_schema
from object_model.errors import error_class
from object_model.messages import (
    Batch,
    PropertyTreeDiscoveryRequest,
    PropertyTreeDiscoveryResponse,
    PropertyValueRead,
    PropertyValueReadResponse,
    PropertyValueUpdate,
    PropertyValueWrite,
    PropertyValueWriteResponse,
    ReadFailure,
)

log = logging.getLogger("csms.csms")

STATIONS = "stations"
OWN_KEY = "self"


@dataclass(frozen=True)
class CsmsSettings:
    """Settings shared by local and cloud CSMS."""

    heartbeat_s: float = 30.0
    offline_after_s: float = 95.0
    resync_concurrency: int = 64
    publish_interval_s: float = 0.25


def station_key(station: str) -> str:
    return f"{STATIONS}/{station}"


class CachingCsms(TreeActor):
    """Base of the local and the cloud CSMS (see the module docstring)."""

    def __init__(self, address: str, endpoint: Endpoint, *, store: TreeStore,
                 roles: RoleDirectory | None = None, settings: CsmsSettings | None = None,
                 clock: Any = None) -> None:
        super().__init__(address, endpoint, roles=roles, clock=clock)
        self.store = store
        self.settings = settings or CsmsSettings()
        self.policy = csms_access_policy()
        self.own: ObjectTree = ObjectTree(csms_schema())
        self.own_access = TreeAccess(self.own, self.policy)
        self.replicas: dict[str, Replica] = {}
        self._persisted: dict[str, PersistentTree] = {}
        self._own_persisted: PersistentTree | None = None
        self.resync = ResyncEngine(self, concurrency=self.settings.resync_concurrency,
                                   on_synced=self._synced)

    # -- lifecycle ------------------------------------------------------------------------------

    async def on_start(self) -> None:
        loaded = await self.store.load(OWN_KEY, csms_schema())
        if loaded is not None:
            self.own = loaded
        else:
            state = CsmsState(name=self.address, role=self.role.value)
            self.own.write("", state.model_dump(by_alias=True, exclude_none=True))
        self.own_access = TreeAccess(self.own, self.policy)
        self._own_persisted = await self.store.attach(OWN_KEY, self.own)
        for key in await self.store.keys():
            if not key.startswith(f"{STATIONS}/"):
                continue
            station = key.split("/", 1)[1]
            source, remote = self._source_of(station)
            if source is None:
                continue
            tree = await self.store.load(key, PermissiveSchema())
            if tree is None:
                continue
            await self._track(Replica(key, source, remote, tree, synced=True))
        for replica in self.replicas.values():  # after a restart: catch up with everything
            self.resync.schedule(replica)
        self.spawn(self._watch_liveness(), "liveness")

    async def on_stop(self) -> None:
        for persisted in [*self._persisted.values(), self._own_persisted]:
            if persisted is not None:
                await persisted.durable()

    def _source_of(self, station: str) -> tuple[str | None, KeyPath]:
        try:
            entry = self.own.read(f"managed/{station}")
        except Exception:
            return None, KeyPath.root()
        return entry.get("source"), KeyPath.parse(entry.get("remote_tree", ""))

    async def _track(self, replica: Replica) -> None:
        self.replicas[replica.key] = replica
        self._persisted[replica.key] = await self.store.attach(replica.key, replica.tree)

    async def manage(self, station: str, source: str, remote_tree: KeyPath, *,
                     site: str = "") -> Replica:
        """Start (or keep) managing ``station``, whose tree ``source`` answers for as
        ``remote_tree``; returns its copy."""
        key = station_key(station)
        entry = {"source": source, "remote_tree": str(remote_tree), "site": site}
        if f"managed/{station}/admitted_at" not in self.own:
            entry["admitted_at"] = to_micros_now()
        self.own.write(f"managed/{station}", entry)
        replica = self.replicas.get(key)
        if replica is None:
            replica = Replica(key, source, remote_tree, ObjectTree(PermissiveSchema(), epoch=0))
            await self._track(replica)
        else:
            replica.source, replica.remote_tree = source, remote_tree
        return replica

    # -- keeping copies current ---------------------------------------------------------------

    def copy_for_update(self, message: PropertyValueUpdate, ctx: Context) -> Replica | None:
        """The copy an update from ``ctx.sender`` is about (``None``: not one of ours)."""
        segs = message.tree.segments
        if not segs:
            replica = self.replicas.get(station_key(ctx.sender))
        elif segs[0] == STATIONS and len(segs) == 2:
            replica = self.replicas.get(str(message.tree))
        else:
            return None
        return replica if replica is not None and replica.source == ctx.sender else None

    @handles(PropertyValueUpdate)
    async def on_update(self, message: PropertyValueUpdate, ctx: Context) -> MessageBase | None:
        replica = self.copy_for_update(message, ctx)
        if replica is None:
            raise error_class(ErrorCode.NOT_ADMITTED)(
                f"{ctx.sender} is not admitted for {message.tree or 'its tree'} here: join first",
                details={"tree": str(message.tree)})
        replica.last_seen = time.monotonic()
        self._mark_online(replica, True)
        tree = replica.tree
        if (replica.synced and message.epoch == tree.epoch
                and message.from_revision <= tree.revision):
            if message.to_revision > tree.revision:
                tree.apply_changes(message.to_changes())
                self._count("updates")
                await self._persisted[replica.key].durable()
                await self.on_copy_changed(replica, message)
            elif message.from_revision == message.to_revision == tree.revision:
                await self.on_heartbeat(replica, message)
        else:
            if replica.synced:
                self._count("gaps")
            self.resync.schedule(replica)
        return None

    async def on_copy_changed(self, replica: Replica, message: PropertyValueUpdate) -> None:
        """A copy took ``message`` (durably); override to pass it on."""

    async def on_heartbeat(self, replica: Replica, message: PropertyValueUpdate) -> None:
        """A source showed life without changing (its copy is current); override to pass on."""

    async def _synced(self, replica: Replica, outcome: ResyncOutcome) -> None:
        station = replica.key.split("/", 1)[1]
        tree = replica.tree
        self.own.apply([
            Write(f"managed/{station}/epoch", f"{tree.epoch:x}"),
            Write(f"managed/{station}/revision", tree.revision),
            Write(f"managed/{station}/last_resync_mode", outcome.mode),
            Write(f"managed/{station}/resyncs",
                  (self.own.read(f"managed/{station}").get("resyncs", 0) + 1) % 2**32),
        ])
        self._count("resyncs")
        self._count("resync_bytes", int(outcome.bytes))
        self._count("resync_wire_bytes", int(outcome.wire_bytes))
        await self._persisted[replica.key].durable()
        await self.on_copy_resynced(replica, outcome)

    async def on_copy_resynced(self, replica: Replica, outcome: ResyncOutcome) -> None:
        """A copy was brought up to date by resynchronisation; override to react."""

    def _mark_online(self, replica: Replica, online: bool) -> None:
        station = replica.key.split("/", 1)[1]
        path = f"managed/{station}/online"
        try:
            current = self.own.get(path)
        except ModelError:
            current = None
        if current is not online:
            self.own.write(path, online)

    def _count(self, name: str, amount: int = 1) -> None:
        path = f"counters/{name}"
        self.own.write(path, (self.own.get(path) + amount) % 2**64)

    async def _watch_liveness(self) -> None:
        while True:
            await asyncio.sleep(min(5.0, self.settings.offline_after_s / 3))
            limit = time.monotonic() - self.settings.offline_after_s
            for replica in self.replicas.values():
                if replica.last_seen and replica.last_seen < limit:
                    self._mark_online(replica, False)

    # -- the aggregate view ----------------------------------------------------------------------

    def replica_for(self, station: str) -> Replica:
        replica = self.replicas.get(station_key(station))
        if replica is None:
            known = sorted(k.split("/", 1)[1] for k in self.replicas)
            raise error_class(ErrorCode.UNKNOWN_PATH)(
                f"{self.address} manages no station {station!r}"
                + (f" (it manages {', '.join(known[:10])}{'...' if len(known) > 10 else ''})"
                   if known else ""),
                path=station_key(station))
        return replica

    def access_for(self, tree: KeyPath, ctx: Context) -> TreeAccess:
        segs = tree.segments
        if not segs:
            return self.own_access
        if segs[0] == STATIONS and len(segs) == 2:
            return TreeAccess(self.replica_for(segs[1]).tree, self.policy, tree)
        raise error_class(ErrorCode.UNKNOWN_PATH)(
            f"no tree {tree}: address a station's copy as stations/<id>", path=tree)

    @staticmethod
    def split(path: KeyPath) -> tuple[KeyPath, KeyPath]:
        """``stations/cs-1/evse/1`` -> (``stations/cs-1``, ``evse/1``); others stay whole."""
        segs = path.segments
        if len(segs) >= 2 and segs[0] == STATIONS:
            return KeyPath(*segs[:2]), KeyPath(*segs[2:])
        return KeyPath.root(), path

    @handles(PropertyValueRead)
    async def on_read(self, message: PropertyValueRead, ctx: Context) -> MessageBase:
        if message.tree.segments:
            return await super().on_read(message, ctx)
        role = ctx.require_role()
        values, failures = [], []
        groups: dict[KeyPath, list[KeyPath]] = {}
        for path in message.paths:
            tree, rest = self.split(path)
            groups.setdefault(tree, []).append(rest)
        for tree, paths in groups.items():
            try:
                answer = self.access_for(tree, ctx).read(role, paths)
            except ModelError as exc:
                failures += [ReadFailure(path=tree / p, code=exc.code, text=exc.text)
                             for p in paths]
                continue
            values += [(tree / p, r, v) for p, r, v in answer.values]
            failures += [f.model_copy(update={"path": tree / f.path}) for f in answer.failures]
        return PropertyValueReadResponse(epoch=self.own.epoch, revision=self.own.revision,
                                         values=values, failures=failures)

    @handles(PropertyTreeDiscoveryRequest)
    async def on_discover(self, message: PropertyTreeDiscoveryRequest, ctx: Context
                          ) -> MessageBase:
        aggregate = [p for p in message.patterns if p.segments[:1] == (STATIONS,)
                     or p.segments[:1] == (GLOBSTAR,)]
        if message.tree.segments or not aggregate:
            return await super().on_discover(message, ctx)
        role = ctx.require_role()
        leaves, types = [], []
        own_patterns = [p for p in message.patterns if p not in aggregate
                        or p.segments[:1] == (GLOBSTAR,)]
        if own_patterns:
            own = self.own_access.discover(role, message.model_copy(
                update={"patterns": own_patterns}))
            leaves += own.leaves
            types += own.types
        for pattern in aggregate:
            for station, rest in self._expand(pattern):
                tree = KeyPath(STATIONS, station)
                answer = TreeAccess(self.replicas[station_key(station)].tree, self.policy,
                                    tree).discover(role, message.model_copy(
                                        update={"patterns": [rest], "tree": KeyPath.root()}))
                leaves += [(tree / p, r, v) for p, r, v in answer.leaves]
                types += [(tree / p, t) for p, t in answer.types]
        return PropertyTreeDiscoveryResponse(epoch=self.own.epoch, revision=self.own.revision,
                                             root_digest=self.own.digest(visible=True),
                                             leaves=leaves, types=types)

    def _expand(self, pattern: KeyPattern) -> list[tuple[str, KeyPattern]]:
        segs = pattern.segments
        stations = [k.split("/", 1)[1] for k in self.replicas]
        if segs[0] is GLOBSTAR:
            return [(s, pattern) for s in stations]
        if len(segs) < 2:
            return [(s, KeyPattern([GLOBSTAR])) for s in stations] if segs == (STATIONS,) else []
        rest = KeyPattern(segs[2:])
        if segs[1] is STAR or segs[1] is GLOBSTAR:
            rest = KeyPattern(segs[1:]) if segs[1] is GLOBSTAR else rest
            return [(s, rest) for s in stations]
        return [(segs[1], rest)] if station_key(segs[1]) in self.replicas else []  # type: ignore[index]

    @handles(PropertyValueWrite, Batch)
    async def on_write(self, message: PropertyValueWrite | Batch, ctx: Context) -> MessageBase:
        if isinstance(message, Batch) and all(
                isinstance(item, PropertyTreeDiscoveryRequest) for item in message.items):
            return await self.on_discover_many(message, ctx)
        if isinstance(message, PropertyValueWrite) and not message.tree.segments:
            message = self._rooted(message)
        segs = message.tree.segments
        if segs[:1] == (STATIONS,) and len(segs) == 2:
            return await self.forward_write(self.replica_for(segs[1]), message, ctx)
        return await super().on_write(message, ctx)

    def _rooted(self, message: PropertyValueWrite) -> PropertyValueWrite:
        """A write addressed with full aggregate paths, turned into one for a single tree."""
        trees = {self.split(w.path)[0] for w in message.writes}
        if len(trees) != 1:
            raise error_class(ErrorCode.INVALID_MESSAGE)(
                "a write is one transaction on one tree: split writes to several stations",
                details={"trees": sorted(map(str, trees))})
        tree = trees.pop()
        if not tree.segments:
            return message
        writes = [w.model_copy(update={"path": self.split(w.path)[1]}) for w in message.writes]
        return message.model_copy(update={"tree": tree, "writes": writes})

    async def forward_write(self, replica: Replica, message: PropertyValueWrite | Batch,
                            ctx: Context) -> MessageBase:
        """Check ``ctx``'s grants here, then pass the write on to whoever answers for the
        station; its answer (or its ErrorReport) goes back to the requester. A copy does not
        know the station's access kinds: the station applies them itself."""
        role = ctx.require_role()
        mount = KeyPath.parse(replica.key)
        writes = message.writes if isinstance(message, PropertyValueWrite) else [
            w for item in message.items if isinstance(item, PropertyValueWrite)
            for w in item.writes]
        for item in writes:
            self.policy.check_write(role, mount / item.path, PropertyAccessKind.READ_WRITE)
        forwarded = message.model_copy(update={"tree": replica.remote_tree})
        answer = await self.request(replica.source, forwarded, timeout=10.0,
                                    priority=Priority.CONTROL)
        if isinstance(answer, PropertyValueWriteResponse):
            return answer.model_copy(update={"tree": mount})
        return answer


def to_micros_now() -> int:
    return time.time_ns() // 1000


__all__ = ["CachingCsms", "CsmsSettings", "station_key"]
