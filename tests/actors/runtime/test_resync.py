"""Resynchronisation between two actors over the in-memory transport: exact results, and
bytes close to the floor."""

from __future__ import annotations

import random
from collections.abc import AsyncIterator, Callable

import msgpack
import pytest

from actors.logic.tree_access import TreeAccess
from actors.runtime.actor import Context, RoleDirectory
from actors.runtime.replication.replica import Replica
from actors.runtime.replication.resync import ResyncEngine
from actors.runtime.tree_actor import OneTree, TreeActor
from actors.testing import until
from broker_bridge import Endpoint
from broker_bridge.backoff import Backoff
from broker_bridge.memory import MemoryNetwork
from keypath import KeyPath
from object_model import ObjectTree, PermissiveSchema, Role, Write
from object_model.errors import BusyError
from object_model.messages import (
    MessageBase,
    PropertyTreeDiscoveryRequest,
    PropertyTreeDiscoveryResponse,
)
from object_model.station import new_station_tree, station_access_policy

ROLES = RoleDirectory({"cs-*": Role.STATION, "csms": Role.LOCAL_CSMS})


class Source(TreeActor):
    """A station serving ``tree`` that records each discovery it answers; ``moving`` runs
    before each answer (the station changing meanwhile), ``failing`` refuses to answer."""

    role = Role.STATION

    def __init__(self, address: str, endpoint: Endpoint, tree: ObjectTree) -> None:
        super().__init__(address, endpoint, roles=ROLES)
        self.asked: list[tuple[PropertyTreeDiscoveryRequest, MessageBase]] = []
        self.moving: Callable[[], None] | None = None
        self.failing = False
        self.serve(tree)

    def serve(self, tree: ObjectTree) -> None:
        """Answer from ``tree`` from now on (a station whose storage was wiped, say)."""
        self.tree = tree
        self.trees = Recording(self, TreeAccess(tree, station_access_policy()))


class Recording(OneTree):
    def __init__(self, source: Source, access: TreeAccess) -> None:
        super().__init__(source.address, access)
        self.source = source

    def discover(self, message: PropertyTreeDiscoveryRequest, ctx: Context) -> MessageBase:
        if self.source.failing:
            raise BusyError("not answering now")
        if self.source.moving is not None:
            self.source.moving()
        answer = super().discover(message, ctx)
        self.source.asked.append((message, answer))
        return answer


class Requester(TreeActor):
    role = Role.LOCAL_CSMS


@pytest.fixture
async def pair() -> AsyncIterator[tuple[Source, Requester, ResyncEngine]]:
    net = MemoryNetwork()
    station_tree = new_station_tree("cs-1", epoch=11)
    a = await Endpoint(net.transport(), name="station").start()
    b = await Endpoint(net.transport(), name="csms").start()
    source = Source("cs-1", a, station_tree)
    requester = Requester("csms", b, roles=ROLES)
    await source.start()
    await requester.start()
    yield source, requester, ResyncEngine(requester)
    await requester.stop()
    await source.stop()
    await a.stop()
    await b.stop()


def floor(tree: ObjectTree, since: int) -> int:
    """The encoded changed key-paths and values: what any resynchronisation must carry."""
    changes = tree.changes_since(since, visible=True)
    return sum(len(msgpack.packb([str(p), v])) for p, _, v in changes.upserts) + sum(
        len(msgpack.packb(str(p))) for p, _ in changes.deletes)


def change_randomly(tree: ObjectTree, rng: random.Random, count: int) -> None:
    paths = [p for p, _, v in tree.leaves() if type(v) is float and tree.leaf_schema(p)
             .access.readable]
    writes = []
    for path in rng.sample(paths, count):
        vt = tree.schema.type_at(path)
        lo, hi = max(getattr(vt, "lo", -1e6), -1e6), min(getattr(vt, "hi", 1e6), 1e6)
        writes.append(Write(path, vt.validate(lo + (hi - lo) * rng.random())))
    tree.apply(writes)


async def test_an_empty_copy_is_filled_and_matches(pair) -> None:  # type: ignore[no-untyped-def]
    source, _requester, engine = pair
    copy = Replica("cs-1", "cs-1", KeyPath.root(), ObjectTree(PermissiveSchema(), epoch=0))
    outcome = await engine.sync(copy)
    assert outcome.mode == "full" and outcome.consistent
    station = source.tree
    assert copy.tree.digest() == station.digest(visible=True)
    assert (copy.tree.epoch, copy.tree.revision) == (station.epoch, station.revision)
    assert "security/provisioning_secret" not in copy.tree


async def test_same_epoch_resync_costs_close_to_the_floor(pair) -> None:  # type: ignore[no-untyped-def]
    source, _requester, engine = pair
    copy = Replica("cs-1", "cs-1", KeyPath.root(), ObjectTree(PermissiveSchema(), epoch=0))
    await engine.sync(copy)
    station = source.tree
    since = station.revision
    change_randomly(station, random.Random(1), 3)
    source.asked.clear()
    outcome = await engine.sync(copy)
    assert outcome.mode == "changes" and outcome.requests == 1
    # the fallback digests of the root were asked for, and left out as the changes came
    (request, answer), = source.asked
    assert request.digests_on_gap and request.digests_of == [KeyPath.root()]
    assert isinstance(answer, PropertyTreeDiscoveryResponse) and answer.digests == []
    assert copy.tree.digest() == station.digest(visible=True)
    assert copy.tree.changes_since(since).upserts == station.changes_since(since,
                                                                           visible=True).upserts
    assert outcome.bytes <= 1.5 * floor(station, since) + 100 + 150  # + one envelope pair


async def test_new_epoch_goes_by_digest_descent_and_fetches_only_differences(pair) -> None:  # type: ignore[no-untyped-def]
    source, _requester, engine = pair
    copy = Replica("cs-1", "cs-1", KeyPath.root(), ObjectTree(PermissiveSchema(), epoch=0))
    await engine.sync(copy)
    station = source.tree
    fresh = new_station_tree("cs-1", epoch=99)  # storage wiped: same content, new history
    change_randomly(fresh, random.Random(2), 3)
    fresh.delete("evse/2/connector/1")
    source.serve(fresh)
    source.asked.clear()
    outcome = await engine.sync(copy)
    assert outcome.mode == "descent" and outcome.consistent
    # the first answer brought the root's children digests: the descent went on below them
    (_, answer), (second, _) = source.asked[:2]
    assert isinstance(answer, PropertyTreeDiscoveryResponse) and not answer.complete
    assert len(answer.digests) == 1 and answer.digests[0][2]
    assert second.digests_of and KeyPath.root() not in second.digests_of
    assert copy.tree.epoch == 99 and copy.tree.digest() == fresh.digest(visible=True)
    assert outcome.leaves <= 10  # the changed leaves, not the tree
    assert station.epoch == 11


async def test_the_same_content_under_a_new_epoch_is_relabelled(pair) -> None:  # type: ignore[no-untyped-def]
    source, _requester, engine = pair
    copy = Replica("cs-1", "cs-1", KeyPath.root(), ObjectTree(PermissiveSchema(), epoch=0))
    await engine.sync(copy)
    source.serve(new_station_tree("cs-1", epoch=77))
    outcome = await engine.sync(copy)
    assert outcome.mode == "relabel" and outcome.leaves == 0 and copy.tree.epoch == 77


async def test_changes_during_a_descent_are_caught_up(pair) -> None:  # type: ignore[no-untyped-def]
    source, _requester, engine = pair
    copy = Replica("cs-1", "cs-1", KeyPath.root(), ObjectTree(PermissiveSchema(), epoch=0))
    await engine.sync(copy)
    fresh = new_station_tree("cs-1", epoch=55)
    change_randomly(fresh, random.Random(3), 5)
    source.serve(fresh)
    rng = random.Random(4)
    source.moving = lambda: change_randomly(fresh, rng, 2)  # it changes while we descend
    outcome = await engine.sync(copy)
    assert outcome.consistent
    assert copy.tree.digest() == fresh.digest(visible=True)


async def test_stations_without_rights_cannot_follow_a_tree(pair) -> None:  # type: ignore[no-untyped-def]
    _source, requester, _ = pair
    from object_model import ModelError
    from object_model.messages import PropertyTreeDiscoveryRequest

    intruder = Requester("cs-2", requester.endpoint, roles=ROLES)
    await intruder.start()
    with pytest.raises(ModelError) as info:
        await intruder.request("cs-1", PropertyTreeDiscoveryRequest(digests_of=[KeyPath.root()]))
    assert info.value.code.value == "access_denied"
    await intruder.stop()


async def test_a_batch_mixing_discovery_and_writes_is_refused_whole(pair) -> None:  # type: ignore[no-untyped-def]
    source, requester, _ = pair
    from object_model import ErrorCode, ModelError
    from object_model.messages import (
        Batch,
        PropertyTreeDiscoveryRequest,
        PropertyValueWrite,
        WriteItem,
    )

    before = source.tree.revision
    mixed = Batch(items=[
        PropertyTreeDiscoveryRequest(digests_of=[KeyPath.root()]),
        PropertyValueWrite(writes=[WriteItem(path=KeyPath.parse("identity/display_name"),
                                             value="x")])])
    with pytest.raises(ModelError) as info:
        await requester.request("cs-1", mixed)
    assert info.value.code is ErrorCode.INVALID_MESSAGE and "either" in info.value.text
    assert source.tree.revision == before


async def test_a_failed_resync_is_retried_and_a_source_sending_too_much_is_refused(
        pair) -> None:  # type: ignore[no-untyped-def]
    source, requester, _ = pair
    copy = Replica("cs-1", "cs-1", KeyPath.root(), ObjectTree(PermissiveSchema(), epoch=0))
    small = ResyncEngine(requester, max_leaves=50,
                         retries=Backoff(base_s=0.01, cap_s=0.01, attempts=1))
    assert await small.schedule(copy) is None  # a station tree has hundreds of leaves
    assert small.stats.failures == 2 and len(copy.tree) == 0 and not copy.synced
    engine = ResyncEngine(requester, retries=Backoff(base_s=0.01, cap_s=0.01, attempts=2))
    source.failing = True  # answering fails once ...
    task = engine.schedule(copy)
    await until(lambda: engine.stats.failures > 0, "the first attempt failed")
    source.failing = False  # ... then the retry succeeds
    outcome = await task
    assert outcome is not None and outcome.consistent and copy.synced
    assert copy.tree.digest() == source.tree.digest(visible=True)


async def test_updates_seen_during_a_run_rerun_it_only_if_it_did_not_reach_them(
        pair) -> None:  # type: ignore[no-untyped-def]
    source, _requester, engine = pair
    station = source.tree
    copy = Replica("cs-1", "cs-1", KeyPath.root(), ObjectTree(PermissiveSchema(), epoch=0))
    task = engine.schedule(copy)
    engine.schedule(copy, reach=(station.epoch, station.revision))  # already there
    await task
    assert engine.stats.runs == 1
    station.write("identity/display_name", "moved on")
    task = engine.schedule(copy)
    engine.schedule(copy, reach=(station.epoch, station.revision))  # the run gets there
    await engine.wait_idle()
    assert copy.tree.revision == station.revision and engine.stats.runs == 2
    task = engine.schedule(copy)
    engine.schedule(copy, reach=(station.epoch, station.revision + 1))  # it cannot: once more
    await engine.wait_idle()
    assert engine.stats.runs == 4
