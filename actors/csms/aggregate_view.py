"""A CSMS's trees as one: its own tree at the root, each copy at ``stations/<id>/...``.

Reads and discovery of copies are answered from the copy (the station is not bothered);
whoever reads the own tree sees current counters. Writes to the own tree are durable before
they are answered. Writes to a copy are checked against the sender's grants here and passed
on to whoever answers for the station (the station itself, or its site's local CSMS); the
station applies its own access kinds, which a copy does not know, and its answer (or its
ErrorReport) goes back to the writer. A write addressed with full aggregate paths is one
transaction on one tree: it may not span stations.
"""

from __future__ import annotations

from actors.csms.own_tree import OwnTree
from actors.csms.replicas import ReplicaSet
from actors.logic.sealed_values import refuse_clear_secrets
from actors.logic.tree_access import TreeAccess
from actors.runtime.actor import Context, Messenger
from actors.runtime.replication.replica import STATIONS, Replica, station_key
from actors.runtime.tree_actor import written
from broker_bridge import Priority
from keypath import GLOBSTAR, STAR, KeyPath, KeyPattern
from object_model import MessageBase, ModelError, PropertyAccessKind, Role
from object_model.errors import InvalidMessageError, UnknownPathError
from object_model.messages import (
    Batch,
    PropertyTreeDiscoveryRequest,
    PropertyTreeDiscoveryResponse,
    PropertyValueRead,
    PropertyValueReadResponse,
    PropertyValueWrite,
    PropertyValueWriteResponse,
    ReadFailure,
)
from object_model.schema import SchemaRegistry


def split(path: KeyPath) -> tuple[KeyPath, KeyPath]:
    """``stations/cs-1/evse/1`` -> (``stations/cs-1``, ``evse/1``); others stay whole."""
    segs = path.segments
    if len(segs) >= 2 and segs[0] == STATIONS:
        return KeyPath(*segs[:2]), KeyPath(*segs[2:])
    return KeyPath.root(), path


class AggregateView:
    """The ``TreeServer`` of a CSMS (see the module docstring)."""

    def __init__(self, actor: Messenger, own: OwnTree, copies: ReplicaSet) -> None:
        self.actor, self.address = actor, actor.address
        self.own, self.copies, self.policy = own, copies, own.policy
        # the stations' schema when their secrets must travel sealed to them (the system
        # signs with certificates): one in clear is refused here (actors.logic.sealed_values)
        self.sealed_secrets: SchemaRegistry | None = None

    def access_for(self, tree: KeyPath) -> TreeAccess:
        """The tree addressed as ``tree``: ``""`` the own tree, ``stations/<id>`` a copy."""
        segs = tree.segments
        if not segs:
            self.own.publish_counters()  # whoever reads the own tree sees current counts
            return self.own.access
        if segs[0] == STATIONS and len(segs) == 2:
            return TreeAccess(self.copies.replica_for(segs[1]).tree, self.policy, tree)
        raise UnknownPathError(f"no tree {tree}: address a station's copy as stations/<id>",
                               path=tree)

    # -- reading --------------------------------------------------------------------------------

    def read(self, message: PropertyValueRead, ctx: Context) -> MessageBase:
        role = ctx.require_role()
        if message.tree.segments:
            return self.access_for(message.tree).read(role, message.paths)
        values, failures = [], []
        groups: dict[KeyPath, list[KeyPath]] = {}
        for path in message.paths:
            tree, rest = split(path)
            groups.setdefault(tree, []).append(rest)
        for tree, paths in groups.items():
            try:
                answer = self.access_for(tree).read(role, paths)
            except ModelError as exc:
                failures += [ReadFailure(path=tree / p, code=exc.code, text=exc.text)
                             for p in paths]
                continue
            values += [(tree / p, r, v) for p, r, v in answer.values]
            failures += [f.model_copy(update={"path": tree / f.path}) for f in answer.failures]
        own = self.own.tree
        return PropertyValueReadResponse(epoch=own.epoch, revision=own.revision,
                                         values=values, failures=failures)

    def discover(self, message: PropertyTreeDiscoveryRequest, ctx: Context) -> MessageBase:
        role = ctx.require_role()
        aggregate = [p for p in message.patterns if p.segments[:1] == (STATIONS,)
                     or p.segments[:1] == (GLOBSTAR,)]
        if message.tree.segments or not aggregate:
            return self.access_for(message.tree).discover(role, message)
        leaves, types = [], []
        own_patterns = [p for p in message.patterns if p not in aggregate
                        or p.segments[:1] == (GLOBSTAR,)]
        if own_patterns:
            self.own.publish_counters()
            own = self.own.access.discover(role, message.model_copy(
                update={"patterns": own_patterns}))
            leaves += own.leaves
            types += own.types
        for pattern in aggregate:
            for station, rest in self._expand(pattern):
                tree = KeyPath(STATIONS, station)
                answer = TreeAccess(self.copies.replicas[station_key(station)].tree, self.policy,
                                    tree).discover(role, message.model_copy(
                                        update={"patterns": [rest], "tree": KeyPath.root()}))
                leaves += [(tree / p, r, v) for p, r, v in answer.leaves]
                types += [(tree / p, t) for p, t in answer.types]
        own_tree = self.own.tree
        return PropertyTreeDiscoveryResponse(epoch=own_tree.epoch, revision=own_tree.revision,
                                             root_digest=own_tree.digest(visible=True),
                                             leaves=leaves, types=types)

    def _expand(self, pattern: KeyPattern) -> list[tuple[str, KeyPattern]]:
        segs = pattern.segments
        stations = self.copies.stations
        if segs[0] is GLOBSTAR:
            return [(s, pattern) for s in stations]
        if len(segs) < 2:
            return [(s, KeyPattern([GLOBSTAR])) for s in stations] if segs == (STATIONS,) else []
        rest = KeyPattern(segs[2:])
        first = segs[1]
        if first is STAR or first is GLOBSTAR:
            rest = KeyPattern(segs[1:]) if first is GLOBSTAR else rest
            return [(s, rest) for s in stations]
        assert isinstance(first, str)  # a literal segment: the wildcards are singletons
        return [(first, rest)] if station_key(first) in self.copies.replicas else []

    # -- writing --------------------------------------------------------------------------------

    async def write(self, message: PropertyValueWrite | Batch, ctx: Context) -> MessageBase:
        if isinstance(message, PropertyValueWrite) and not message.tree.segments:
            message = self._rooted(message)
        segs = message.tree.segments
        if segs[:1] == (STATIONS,) and len(segs) == 2:
            return await self.forward_write(self.copies.replica_for(segs[1]), message, ctx)
        access = self.access_for(message.tree)
        if access is self.own.access:  # the writer's rights first, then what it writes
            access.operations(ctx.require_role(), message)
            self.own.vet(message)
        event = access.write(ctx.require_role(), message)
        if access is self.own.access:  # its id goes to disk with its effect
            self.own.note_applied(ctx.sender, ctx.message_id, ctx.envelope.timestamp_us)
        await self.own.durable(event.revision)  # answer only what survives a crash
        return written(message.tree, access, event)

    def _rooted(self, message: PropertyValueWrite) -> PropertyValueWrite:
        """A write addressed with full aggregate paths, turned into one for a single tree."""
        trees = {split(w.path)[0] for w in message.writes}
        if len(trees) != 1:
            raise InvalidMessageError(
                "a write is one transaction on one tree: split writes to several stations",
                details={"trees": sorted(map(str, trees))})
        tree = trees.pop()
        if not tree.segments:
            return message
        writes = [w.model_copy(update={"path": split(w.path)[1]}) for w in message.writes]
        return message.model_copy(update={"tree": tree, "writes": writes})

    def check_forward(self, role: Role, mount: KeyPath,
                      message: PropertyValueWrite | Batch) -> None:
        """Whether ``role`` may write what ``message`` writes to the copy at ``mount``, checked
        here before the write goes on (``ACCESS_DENIED`` if not)."""
        writes = message.writes if isinstance(message, PropertyValueWrite) else [
            w for item in message.items if isinstance(item, PropertyValueWrite)
            for w in item.writes]
        for item in writes:
            self.policy.check_write(role, mount / item.path, PropertyAccessKind.READ_WRITE)
        if self.sealed_secrets is not None:
            refuse_clear_secrets(self.sealed_secrets, writes, mount.name or str(mount))

    async def forward_write(self, replica: Replica, message: PropertyValueWrite | Batch,
                            ctx: Context) -> MessageBase:
        """Check ``ctx``'s grants here, then pass the write on to whoever answers for the
        station; its answer (or its ErrorReport) goes back to the requester."""
        mount = KeyPath.parse(replica.key)
        self.check_forward(ctx.require_role(), mount, message)
        forwarded = message.model_copy(update={"tree": replica.remote_tree})
        answer = await self.actor.request(replica.source, forwarded,
                                          timeout=ctx.time_left(self.actor.clock.now_us(), 10.0),
                                          priority=Priority.CONTROL)
        if isinstance(answer, PropertyValueWriteResponse):
            return answer.model_copy(update={"tree": mount})
        return answer


__all__ = ["AggregateView", "split"]
