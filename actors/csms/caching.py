"""What a local and a cloud CSMS share: copies of station trees, kept current and resynchronised.

A CSMS holds one copy (``Replica``) per managed station, persisted in SQLite, and an own tree
(registry, site policy, counters). Its aggregate view puts each copy at ``stations/<id>/...`` and
its own tree everywhere else; reads and discovery of copies are answered from the copy (the
station is not bothered), writes to a copy are passed on to whoever answers for the station.

Copies stay current from ``PropertyValueUpdate`` notifications: an update that follows on from
the copy's revision (same epoch) is applied at once and its root digest checked; a relay task
then makes the copies durable (all updates that arrived meanwhile in one SQLite transaction)
and passes the updates on in arrival order (``on_copy_changed``), so nothing is passed on that
a crash could take back. Anything else (a gap, a new epoch, a copy never synced, a digest that
does not match, an update while the copy is being resynchronised) schedules a
resynchronisation. After a restart every copy is resynchronised, a bounded number at a time,
at state priority.

Counters (joins, updates, gaps, resyncs, bytes) are kept in memory, where counting is cheap,
and copied into the own tree's ``counters/...`` when someone reads the own tree and every
``counters_every_s`` seconds (so they persist, and are read like any other key-path).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import Counter
from dataclasses import dataclass
from typing import Any

from actors.csms.task_relay import CsmsTasks
from actors.logic.tree_access import TreeAccess
from actors.runtime.actor import Context, RoleDirectory, handles
from actors.runtime.replication.resync import Replica, ResyncEngine, ResyncOutcome
from actors.runtime.storage.trees import CorruptTreeError, PersistentTree, TreeStore
from actors.runtime.tree_actor import TreeActor
from broker_bridge import Endpoint, Priority
from broker_bridge.envelope import valid_address
from keypath import GLOBSTAR, STAR, KeyPath, KeyPattern
from object_model import (
    MessageBase,
    ModelError,
    ObjectTree,
    PermissiveSchema,
    PropertyAccessKind,
    Write,
)
from object_model.csms_model import CsmsState, csms_access_policy, csms_schema
from object_model.errors import (
    AccessDeniedError,
    InvalidMessageError,
    InvalidValueError,
    NotAdmittedError,
    UnknownPathError,
)
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
from object_model.tree import TransactionCommitted

log = logging.getLogger("csms.csms")

STATIONS = "stations"
OWN_KEY = "self"


@dataclass(frozen=True)
class CsmsSettings:
    """Settings shared by local and cloud CSMS."""

    heartbeat_s: float = 30.0
    offline_after_s: float = 95.0
    resync_concurrency: int = 256
    publish_interval_s: float = 0.25
    counters_every_s: float = 10.0


def station_key(station: str) -> str:
    return f"{STATIONS}/{station}"


def check_station_id(station: object) -> str:
    """``station`` if it can name a station (an actor address: it becomes a path segment
    and a key), else ``INVALID_VALUE``."""
    if not isinstance(station, str) or not valid_address(station):
        raise InvalidValueError(
            f"{str(station)[:80]!r} is not a station id (an actor address: letters, digits, "
            "'.', '_', '-', '@', at most 128 characters)")
    return station


@dataclass
class _Relay:
    """An update a copy took, waiting to be made durable and passed on (``changed``), or a
    heartbeat to pass on in order with them."""

    replica: Replica
    message: PropertyValueUpdate
    changed: bool


class CachingCsms(CsmsTasks, TreeActor):
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
        self.counters: Counter[str] = Counter()
        self._relays: list[_Relay] = []
        self._relay_wake = asyncio.Event()

    # -- lifecycle ------------------------------------------------------------------------------

    async def on_start(self) -> None:
        await self._open_task_stores(self.store.path)
        loaded = await self.store.load(OWN_KEY, csms_schema())
        if loaded is not None:
            self.own = loaded
        else:
            state = CsmsState(name=self.address, role=self.role.value)
            self.own.write("", state.model_dump(by_alias=True, exclude_none=True))
        self.own_access = TreeAccess(self.own, self.policy)
        self.counters.update({name: value for name, value in self.own.read("counters").items()
                              if isinstance(value, int)})
        self._own_persisted = await self.store.attach(OWN_KEY, self.own)
        now = time.monotonic()
        sources = {}
        for key in await self.store.keys():
            if key.startswith(f"{STATIONS}/"):
                source, remote = self._source_of(key.split("/", 1)[1])
                if source is not None:
                    sources[key] = source, remote
        async for key, tree in self.store.load_many(sources, PermissiveSchema()):
            if isinstance(tree, CorruptTreeError):  # attaching an empty one replaces it
                log.error("%s: %s; fetching that station's tree afresh", self.address, tree)
                tree = ObjectTree(PermissiveSchema(), epoch=0)
            # a copy that never held anything (epoch 0) has nothing to catch up from
            synced = tree.epoch != 0 and len(tree) > 0
            await self._track(Replica(key, *sources[key], tree, synced=synced, last_seen=now))
        if self.replicas:
            log.info("%s: loaded %d copies in %.2f s; resynchronising them", self.address,
                     len(self.replicas), time.monotonic() - now)
        for replica in self.replicas.values():  # after a restart: catch up with everything
            self.resync.schedule(replica)
        self.spawn(self._watch_liveness(), "liveness")
        self.spawn(self._relay_loop(), "relay")

    async def on_stop(self) -> None:
        await self._flush_relays()
        self._publish_counters()
        for persisted in [*self._persisted.values(), self._own_persisted]:
            if persisted is not None:
                await persisted.detach(snapshot=False)
        await self._close_task_stores()

    def _source_of(self, station: str) -> tuple[str | None, KeyPath]:
        try:
            entry = self.own.read(f"managed/{station}")
            return entry.get("source"), KeyPath.parse(entry.get("remote_tree", ""))
        except ModelError as exc:
            log.warning("%s: stored copy %s has no usable registry entry (%s); ignoring it",
                        self.address, station, exc)
            return None, KeyPath.root()

    async def _track(self, replica: Replica) -> None:
        self.replicas[replica.key] = replica
        self._persisted[replica.key] = await self.store.attach(replica.key, replica.tree)

    def site_of(self, station: str) -> str | None:
        """The site ``station`` is bound to (``""``: connected directly), ``None`` if it is
        not managed here."""
        try:
            return str(self.own.get(f"managed/{check_station_id(station)}/site"))
        except ModelError:
            return None

    async def manage(self, station: str, source: str, remote_tree: KeyPath, *,
                     site: str = "") -> Replica:
        """Start (or keep) managing ``station``, whose tree ``source`` answers for as
        ``remote_tree``; returns its copy.

        A station is bound to the site that brought it first (``site``; ``""`` for a direct
        connection): another site, or the station itself, claiming it later is refused, so no site can take over (read or write through) another's
        stations (``ACCESS_DENIED``: not ``NOT_ADMITTED``, which tells a peer to join
        again). An operator releases a station that moved by deleting ``managed/<id>``.
        """
        check_station_id(station)
        bound = self.site_of(station)
        if bound is not None and bound != site:
            self._count("rejected_claims")
            log.warning("%s: %s claims station %s, which belongs to %s; refused", self.address,
                        source, station, bound or "a direct connection")
            raise AccessDeniedError(
                f"station {station} is managed through {bound or 'a direct connection'} here, "
                f"not through {site or 'a direct connection'}: an operator must release it "
                f"(delete managed/{station}) before it can move",
                details={"station": station, "bound_to": bound})
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
            raise NotAdmittedError(
                f"{ctx.sender} is not admitted for {message.tree or 'its tree'} here: join first",
                details={"tree": str(message.tree)})
        replica.last_seen = time.monotonic()
        self._mark_online(replica, True)
        tree = replica.tree
        if self.resync.is_running(replica.key):
            # the run may have read the source before this change: it must get there too
            self.resync.schedule(replica, reach=(message.epoch, message.to_revision))
        elif (replica.synced and message.epoch == tree.epoch
                and message.from_revision <= tree.revision):
            if message.to_revision > tree.revision:
                tree.apply_changes(message.to_changes())
                self._count("updates")
                if self._drifted(replica, message):
                    return None
                self._relays.append(_Relay(replica, message, changed=True))
                self._relay_wake.set()
            elif message.from_revision == message.to_revision == tree.revision:
                if self._drifted(replica, message):
                    return None
                self._relays.append(_Relay(replica, message, changed=False))
                self._relay_wake.set()
        else:
            if replica.synced:
                self._count("gaps")
            self.resync.schedule(replica)
        return None

    def _drifted(self, replica: Replica, message: PropertyValueUpdate) -> bool:
        """Whether the copy, at ``message.to_revision``, differs from what the source says it
        holds there (then it is resynchronised)."""
        if message.root_digest is None or replica.tree.digest() == message.root_digest:
            return False
        self._count("drifts")
        log.warning("%s: copy %s differs from %s at revision %d; resynchronising",
                    self.address, replica.key, replica.source, message.to_revision)
        self.resync.schedule(replica)
        return True

    async def _relay_loop(self) -> None:
        while True:
            await self._relay_wake.wait()
            try:
                await self._flush_relays()
            except Exception:  # a bug here must not stop every later relay
                log.exception("%s: relaying updates failed", self.address)

    async def _flush_relays(self) -> None:
        """Make the copies the waiting updates changed durable (one store transaction for
        all of them), then pass the updates on in the order they came."""
        self._relay_wake.clear()
        relays, self._relays = self._relays, []
        if not relays:
            return
        revisions: dict[str, int] = {}
        for relay in relays:
            if relay.changed:
                key = relay.replica.key
                revisions[key] = max(revisions.get(key, 0), relay.message.to_revision)
        results = await asyncio.gather(
            *(self._persisted[key].durable(revision) for key, revision in revisions.items()),
            return_exceptions=True)
        lost = {key for key, result in zip(revisions, results, strict=True)
                if isinstance(result, BaseException)}
        for key in lost:  # resynchronised meanwhile (a new epoch), or the store failed
            log.info("%s: not passing on updates of %s: %s", self.address, key,
                     results[list(revisions).index(key)])
        for relay in relays:
            if relay.replica.key in lost:
                continue
            try:
                if relay.changed:
                    await self.on_copy_changed(relay.replica, relay.message)
                else:
                    await self.on_heartbeat(relay.replica, relay.message)
            except Exception:
                log.exception("%s: passing on an update of %s failed", self.address,
                              relay.replica.key)

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
        self._count("resync_bytes", round(outcome.bytes))
        self._count("resync_wire_bytes", round(outcome.wire_bytes))
        await self._persisted[replica.key].durable()
        await self.on_copy_resynced(replica, outcome)

    async def on_copy_resynced(self, replica: Replica, outcome: ResyncOutcome) -> None:
        """A copy was brought up to date by resynchronisation; override to react."""

    def _is_online(self, replica: Replica) -> bool:
        try:
            return self.own.get(f"managed/{replica.key.split('/', 1)[1]}/online") is True
        except ModelError:
            return False

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
        self.counters[name] += amount

    def _publish_counters(self) -> None:
        """Copy the counters that changed into the own tree's ``counters/...``."""
        current = self.own.read("counters")
        writes = [Write(f"counters/{name}", value % 2**64) for name, value in self.counters.items()
                  if name in current and current[name] != value % 2**64]
        if writes:
            self.own.apply(writes)

    async def _watch_liveness(self) -> None:
        every = min(5.0, self.settings.offline_after_s / 3)
        last_counters = time.monotonic()
        while True:
            await asyncio.sleep(every)
            now = time.monotonic()
            limit = now - self.settings.offline_after_s
            for replica in self.replicas.values():
                if replica.last_seen and replica.last_seen < limit:
                    self._mark_online(replica, False)
            if now - last_counters >= self.settings.counters_every_s:
                last_counters = now
                self._publish_counters()

    # -- the aggregate view ----------------------------------------------------------------------

    def replica_for(self, station: str) -> Replica:
        replica = self.replicas.get(station_key(station))
        if replica is None:
            known = sorted(k.split("/", 1)[1] for k in self.replicas)
            raise UnknownPathError(
                f"{self.address} manages no station {station!r}"
                + (f" (it manages {', '.join(known[:10])}{'...' if len(known) > 10 else ''})"
                   if known else ""),
                path=station_key(station))
        return replica

    def access_for(self, tree: KeyPath, ctx: Context) -> TreeAccess:
        segs = tree.segments
        if not segs:
            self._publish_counters()  # whoever reads the own tree sees current counts
            return self.own_access
        if segs[0] == STATIONS and len(segs) == 2:
            return TreeAccess(self.replica_for(segs[1]).tree, self.policy, tree)
        raise UnknownPathError(
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
            self._publish_counters()
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

    async def commit(self, access: TreeAccess, message: PropertyValueWrite | Batch,
                     ctx: Context) -> TransactionCommitted:
        event = await super().commit(access, message, ctx)
        if access.tree is self.own and self._own_persisted is not None:
            await self._own_persisted.durable(event.revision)  # answer only what survives
        return event

    async def on_write(self, message: PropertyValueWrite | Batch, ctx: Context) -> MessageBase:
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
            raise InvalidMessageError(
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
        answer = await self.request(replica.source, forwarded,
                                    timeout=ctx.time_left(self.clock.now_us(), 10.0),
                                    priority=Priority.CONTROL)
        if isinstance(answer, PropertyValueWriteResponse):
            return answer.model_copy(update={"tree": mount})
        return answer


def to_micros_now() -> int:
    return time.time_ns() // 1000


__all__ = ["CachingCsms", "CsmsSettings", "station_key"]
