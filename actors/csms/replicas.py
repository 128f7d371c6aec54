"""The copies a CSMS keeps of the station trees it manages, kept current and resynchronised.

A CSMS holds one copy (``Replica``) per managed station, persisted in its tree store, and a
registry entry for each in its own tree (``managed/<id>``: who answers for the station, the
site it is bound to, whether it is online, the revision its copy holds).

Copies stay current from ``PropertyValueUpdate`` notifications: an update that follows on from
the copy's revision (same epoch) is applied at once and its root digest checked; a relay task
then makes the copies durable (all updates that arrived meanwhile in one SQLite transaction)
and passes the updates on in arrival order (``CopyEvents.changed``), so nothing is passed on
that a crash could take back. Anything else (a gap, a new epoch, a copy never synced, a digest
that does not match, an update while the copy is being resynchronised) schedules a
resynchronisation. After a restart every copy is resynchronised, a bounded number at a time,
at state priority. A station silent for ``offline_after_s`` is marked offline.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from actors.csms.own_tree import OwnTree
from actors.csms.settings import CsmsSettings
from actors.runtime.actor import Messenger
from actors.runtime.replication.replica import STATIONS, Replica, check_station_id, station_key
from actors.runtime.replication.resync import ResyncEngine, ResyncOutcome
from actors.runtime.storage.trees import CorruptTreeError, PersistentTree, TreeStore
from keypath import KeyPath
from object_model import ModelError, ObjectTree, PermissiveSchema, Write
from object_model.errors import AccessDeniedError, NotAdmittedError, UnknownPathError
from object_model.messages import PropertyValueUpdate

log = logging.getLogger("csms.replicas")



async def _nothing(replica: Replica, what: object) -> None:
    """A CSMS that passes nothing on."""


@dataclass(frozen=True)
class CopyEvents:
    """What the CSMS does when a copy moved: ``changed`` took an update (durable now),
    ``heartbeat`` its source showed life without changing, ``resynced`` it was brought up to
    date by resynchronisation."""

    changed: Callable[[Replica, PropertyValueUpdate], Awaitable[None]] = _nothing
    heartbeat: Callable[[Replica, PropertyValueUpdate], Awaitable[None]] = _nothing
    resynced: Callable[[Replica, ResyncOutcome], Awaitable[None]] = _nothing


@dataclass
class _Relay:
    """An update a copy took, waiting to be made durable and passed on (``changed``), or a
    heartbeat to pass on in order with them."""

    replica: Replica
    message: PropertyValueUpdate
    changed: bool


class ReplicaSet:
    """The copies of one CSMS (see the module docstring)."""

    def __init__(self, actor: Messenger, own: OwnTree, store: TreeStore,
                 settings: CsmsSettings, events: CopyEvents | None = None) -> None:
        self.actor, self.address, self.clock = actor, actor.address, actor.clock
        self.own, self.store, self.settings = own, store, settings
        self.events = events or CopyEvents()
        self.replicas: dict[str, Replica] = {}
        self._persisted: dict[str, PersistentTree] = {}
        self.resync = ResyncEngine(actor, concurrency=settings.resync_concurrency,
                                   on_synced=self._synced)
        self._relays: list[_Relay] = []
        self._relay_wake = asyncio.Event()

    # -- lifecycle ------------------------------------------------------------------------------

    async def open(self) -> None:
        """Load the stored copies, resynchronise them all, start relaying and watching
        liveness (the own tree must be open)."""
        started = self.clock.monotonic()
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
            await self._track(Replica(key, *sources[key], tree, synced=synced,
                                      last_seen=started))
        if self.replicas:
            log.info("%s: loaded %d copies in %.2f s; resynchronising them", self.address,
                     len(self.replicas), self.clock.monotonic() - started)
        for replica in self.replicas.values():  # after a restart: catch up with everything
            self.resync.schedule(replica)
        self.actor.spawn(self._watch_liveness(), "liveness")
        self.actor.spawn(self._relay_loop(), "relay")

    async def close(self) -> None:
        """Pass on what waits, then make every copy durable (stop the actor's tasks first)."""
        await self._flush_relays()
        for persisted in self._persisted.values():
            await persisted.detach(snapshot=False)

    def _source_of(self, station: str) -> tuple[str | None, KeyPath]:
        try:
            entry = self.own.tree.read(f"managed/{station}")
            return entry.get("source"), KeyPath.parse(entry.get("remote_tree", ""))
        except ModelError as exc:
            log.warning("%s: stored copy %s has no usable registry entry (%s); ignoring it",
                        self.address, station, exc)
            return None, KeyPath.root()

    async def _track(self, replica: Replica) -> None:
        self.replicas[replica.key] = replica
        self._persisted[replica.key] = await self.store.attach(replica.key, replica.tree)

    # -- the registry ---------------------------------------------------------------------------

    @property
    def stations(self) -> list[str]:
        return [replica.station for replica in self.replicas.values()]

    def site_of(self, station: str) -> str | None:
        """The site ``station`` is bound to (``""``: connected directly), ``None`` if it is
        not managed here."""
        try:
            return str(self.own.tree.get(f"managed/{check_station_id(station)}/site"))
        except ModelError:
            return None

    async def manage(self, station: str, source: str, remote_tree: KeyPath, *,
                     site: str = "") -> Replica:
        """Start (or keep) managing ``station``, whose tree ``source`` answers for as
        ``remote_tree``; returns its copy.

        A station is bound to the site that brought it first (``site``; ``""`` for a direct
        connection): another site, or the station itself, claiming it later is refused, so no
        site can take over (read or write through) another's stations (``ACCESS_DENIED``:
        not ``NOT_ADMITTED``, which tells a peer to join again). An operator releases a
        station that moved by deleting ``managed/<id>``.
        """
        check_station_id(station)
        bound = self.site_of(station)
        if bound is not None and bound != site:
            self.own.count("rejected_claims")
            log.warning("%s: %s claims station %s, which belongs to %s; refused", self.address,
                        source, station, bound or "a direct connection")
            raise AccessDeniedError(
                f"station {station} is managed through {bound or 'a direct connection'} here, "
                f"not through {site or 'a direct connection'}: an operator must release it "
                f"(delete managed/{station}) before it can move",
                details={"station": station, "bound_to": bound})
        key = station_key(station)
        entry: dict[str, str | int] = {"source": source, "remote_tree": str(remote_tree),
                                       "site": site}
        if f"managed/{station}/admitted_at" not in self.own.tree:
            entry["admitted_at"] = self.clock.now_us()
        self.own.tree.write(f"managed/{station}", entry)
        replica = self.replicas.get(key)
        if replica is None:
            replica = Replica(key, source, remote_tree, ObjectTree(PermissiveSchema(), epoch=0))
            # empty until resynchronised, and made durable then: a handler admitting a site's
            # stations (or learning of one from an update) waits for no transaction per copy
            self.replicas[key] = replica
            self._persisted[key] = self.store.attach_soon(key, replica.tree)
        else:
            replica.source, replica.remote_tree = source, remote_tree
        return replica

    def replica_for(self, station: str) -> Replica:
        """The copy of ``station`` (``UNKNOWN_PATH`` if it is not managed here)."""
        replica = self.replicas.get(station_key(station))
        if replica is None:
            known = sorted(self.stations)
            raise UnknownPathError(
                f"{self.address} manages no station {station!r}"
                + (f" (it manages {', '.join(known[:10])}{'...' if len(known) > 10 else ''})"
                   if known else ""),
                path=station_key(station))
        return replica

    # -- keeping copies current -----------------------------------------------------------------

    def copy_for_update(self, message: PropertyValueUpdate, sender: str) -> Replica | None:
        """The copy an update from ``sender`` is about (``None``: not one of ours)."""
        segs = message.tree.segments
        if not segs:
            replica = self.replicas.get(station_key(sender))
        elif segs[0] == STATIONS and len(segs) == 2:
            replica = self.replicas.get(str(message.tree))
        else:
            return None
        return replica if replica is not None and replica.source == sender else None

    def take(self, message: PropertyValueUpdate, sender: str) -> None:
        """Apply an update from ``sender`` to its copy, or resynchronise the copy
        (``NOT_ADMITTED`` when ``sender`` answers for no copy here: it must join first)."""
        replica = self.copy_for_update(message, sender)
        if replica is None:
            raise NotAdmittedError(
                f"{sender} is not admitted for {message.tree or 'its tree'} here: join first",
                details={"tree": str(message.tree)})
        self.seen(replica)
        tree = replica.tree
        if self.resync.is_running(replica.key):
            # the run may have read the source before this change: it must get there too
            self.resync.schedule(replica, reach=(message.epoch, message.to_revision))
        elif (replica.synced and message.epoch == tree.epoch
                and message.from_revision <= tree.revision):
            changed = message.to_revision > tree.revision
            if changed:
                tree.apply_changes(message.to_changes())
                self.own.count("updates")
            if (changed or message.from_revision == message.to_revision == tree.revision) \
                    and not self._drifted(replica, message):
                self._relay(_Relay(replica, message, changed=changed))
        else:
            if replica.synced:
                self.own.count("gaps")
            self.resync.schedule(replica)

    def _drifted(self, replica: Replica, message: PropertyValueUpdate) -> bool:
        """Whether the copy, at ``message.to_revision``, differs from what the source says it
        holds there (then it is resynchronised)."""
        if message.root_digest is None or replica.tree.digest() == message.root_digest:
            return False
        self.own.count("drifts")
        log.warning("%s: copy %s differs from %s at revision %d; resynchronising",
                    self.address, replica.key, replica.source, message.to_revision)
        self.resync.schedule(replica)
        return True

    def _relay(self, relay: _Relay) -> None:
        self._relays.append(relay)
        self._relay_wake.set()

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
        lost = {key: result for key, result in zip(revisions, results, strict=True)
                if isinstance(result, BaseException)}
        for key, result in lost.items():  # resynchronised meanwhile (a new epoch), or the store failed
            log.info("%s: not passing on updates of %s: %s", self.address, key, result)
        for relay in relays:
            if relay.replica.key in lost:
                continue
            try:
                if relay.changed:
                    await self.events.changed(relay.replica, relay.message)
                else:
                    await self.events.heartbeat(relay.replica, relay.message)
            except Exception:
                log.exception("%s: passing on an update of %s failed", self.address,
                              relay.replica.key)

    async def _synced(self, replica: Replica, outcome: ResyncOutcome) -> None:
        station = replica.station
        tree = replica.tree
        self.own.tree.apply([
            Write(f"managed/{station}/epoch", f"{tree.epoch:x}"),
            Write(f"managed/{station}/revision", tree.revision),
            Write(f"managed/{station}/last_resync_mode", outcome.mode),
            Write(f"managed/{station}/resyncs",
                  (self.own.tree.read(f"managed/{station}").get("resyncs", 0) + 1) % 2**32),
        ])
        self.own.count("resyncs")
        self.own.count("resync_requests", outcome.requests)
        self.own.count("resync_bytes", round(outcome.bytes))
        self.own.count("resync_wire_bytes", round(outcome.wire_bytes))
        await self._persisted[replica.key].durable()
        await self.events.resynced(replica, outcome)

    # -- liveness -------------------------------------------------------------------------------

    def seen(self, replica: Replica) -> None:
        """``replica``'s source showed life now."""
        replica.last_seen = self.clock.monotonic()
        self.mark_online(replica, True)

    def is_online(self, replica: Replica) -> bool:
        try:
            return self.own.tree.get(f"managed/{replica.station}/online") is True
        except ModelError:
            return False

    def mark_online(self, replica: Replica, online: bool) -> None:
        path = f"managed/{replica.station}/online"
        try:
            current = self.own.tree.get(path)
        except ModelError:
            current = None
        if current is not online:
            self.own.tree.write(path, online)

    async def _watch_liveness(self) -> None:
        every = min(5.0, self.settings.offline_after_s / 3)
        while True:
            await self.clock.sleep(every)
            limit = self.clock.monotonic() - self.settings.offline_after_s
            for replica in self.replicas.values():
                if replica.last_seen and replica.last_seen < limit:
                    self.mark_online(replica, False)


__all__ = ["STATIONS", "CopyEvents", "ReplicaSet"]
