"""TreeStore: trees come back equal after close, compaction, replication and a real kill -9."""

from __future__ import annotations

import asyncio
import signal
import sqlite3
import subprocess
import sys
from dataclasses import replace
from pathlib import Path
from typing import Any

import msgpack
import pytest

from actors.runtime.storage.trees import (
    CorruptTreeError,
    TreeStore,
    changes_of,
    pack_tree,
    unpack_tree,
)
from keypath import KeyPath
from object_model import ErrorCode, ModelError, Write
from object_model.errors import EpochMismatchError, RevisionGapError
from object_model.schema import PermissiveSchema
from object_model.tree import ChangeSet, ObjectTree
from tests.actors.runtime.persistence_child import KEY, station, transaction

ROOT = Path(__file__).resolve().parents[3]


def state(tree: ObjectTree, since: int | None = None) -> dict[str, Any]:
    """Everything that must survive: history position, leaves with revisions, tombstones."""
    changes = tree.changes_since(tree.horizon if since is None else since)
    return {
        "epoch": tree.epoch, "revision": tree.revision, "horizon": tree.horizon,
        "leaves": sorted(tree.leaves()), "digest": tree.digest(),
        "upserts": sorted(changes.upserts), "deletes": sorted(changes.deletes),
        "tombstones": tree.tombstone_count,
    }


async def run_station(store: TreeStore, tree: ObjectTree, count: int, *, start: int = 1,
                      with_tree: bool = True) -> None:
    for i in range(start, start + count):
        event = tree.apply(transaction(tree, i))
        await store.record(KEY, changes_of(event), tree if with_tree else None)


async def test_a_station_tree_comes_back_identical(tmp_path: Path) -> None:
    db = tmp_path / "trees.sqlite"
    tree = station()
    async with TreeStore(db, compact_every=10_000) as store:
        await store.save_snapshot(KEY, tree)
        await run_station(store, tree, 300)
        assert await store.log_rows(KEY) == 300
    assert tree.horizon > 0  # tombstones were auto-compacted along the way
    async with TreeStore(db) as store:
        loaded = await store.load(KEY, tree.schema, max_tombstones=4)
    assert loaded is not None
    assert state(loaded) == state(tree)
    assert state(loaded, since=tree.revision - 5) == state(tree, since=tree.revision - 5)


async def test_compaction_keeps_the_log_short(tmp_path: Path) -> None:
    db = tmp_path / "trees.sqlite"
    tree = station()
    async with TreeStore(db, compact_every=16) as store:
        for i in range(1, 201):
            event = tree.apply(transaction(tree, i))
            await store.record(KEY, changes_of(event), tree)
            assert await store.log_rows(KEY) < 16
        loaded = await store.load(KEY, tree.schema, max_tombstones=4)
    assert loaded is not None and state(loaded) == state(tree)


async def test_without_the_tree_the_log_is_kept_and_replays(tmp_path: Path) -> None:
    tree = station()
    async with TreeStore(tmp_path / "t.sqlite", compact_every=8) as store:
        await store.save_snapshot(KEY, tree)
        await run_station(store, tree, 40, with_tree=False)
        assert await store.log_rows(KEY) == 40
        loaded = await store.load(KEY, tree.schema, max_tombstones=4)
    # Without the tree no horizon was captured: the copy keeps tombstones the original
    # compacted away (a lower horizon, more history), which is safe.
    assert loaded is not None and loaded.horizon < tree.horizon
    assert state(loaded, since=tree.horizon) | {"horizon": 0, "tombstones": 0} \
        == state(tree) | {"horizon": 0, "tombstones": 0}


async def test_replicas_keep_the_sources_revisions(tmp_path: Path) -> None:
    db = tmp_path / "csms.sqlite"
    source = station()
    source.max_tombstones = 10_000  # keep the history the copies ask for
    replica = ObjectTree(PermissiveSchema(), epoch=source.epoch)
    adopted = ObjectTree(PermissiveSchema(), epoch=1)
    adopted.write("stale/leaf", 1)
    async with TreeStore(db, compact_every=8) as store:
        first = source.changes_since(0)
        replica.apply_changes(first)
        await store.record("replica", first)  # no tree: an empty snapshot, then the log
        adopted.adopt(epoch=source.epoch, revision=source.revision,
                      upserts=list(source.leaves()),
                      deletes=[KeyPath("stale")])
        await store.save_snapshot("adopted", adopted)
        for i in range(1, 61):
            source.apply(transaction(source, i))
            if i % 3 == 0:
                for copy, key in ((replica, "replica"), (adopted, "adopted")):
                    changes = source.changes_since(copy.revision)
                    copy.apply_changes(changes)
                    await store.record(key, changes, copy if key == "adopted" else None)
    async with TreeStore(db) as store:
        loaded = await store.load("replica", PermissiveSchema())
        loaded_adopted = await store.load("adopted", PermissiveSchema())
    assert loaded is not None and loaded_adopted is not None
    assert state(loaded) == state(replica)
    assert sorted(loaded.leaves()) == sorted(source.leaves())
    assert state(loaded_adopted) == state(adopted)
    assert loaded_adopted.digest() == source.digest()


async def test_attached_trees_record_commits_adopts_and_new_epochs(tmp_path: Path) -> None:
    db = tmp_path / "attached.sqlite"
    tree, source = station(), station()
    source.max_tombstones = 10_000
    replica = ObjectTree(PermissiveSchema(), epoch=source.epoch)
    async with TreeStore(db, compact_every=8) as store:
        own = await store.attach(KEY, tree)
        copy = await store.attach("copy", replica)
        for i in range(1, 50):
            event = tree.apply(transaction(tree, i))
            source.apply(transaction(source, i))
            if i % 5 == 0:
                await own.durable(event.revision)  # the station may publish it now
            if i % 4 == 0:
                replica.apply_changes(source.changes_since(replica.revision))
            if i == 22:  # a resync by digest descent, ahead of the recorded revision
                replica.adopt(epoch=source.epoch, revision=source.revision,
                              upserts=list(source.leaves()))
                await copy.durable()
            if i == 24:  # one at the same revision: no delta can describe it
                await copy.durable()
                replica.adopt(epoch=source.epoch, revision=replica.revision,
                              deletes=[KeyPath("evse", "1", "session")])
                await copy.durable()
                assert state(await store.load("copy", PermissiveSchema())) == state(replica)
            if i == 30:  # the station came back with a new epoch
                source = ObjectTree(source.schema)
                source.apply(transaction(source, i))
                replica.adopt(epoch=source.epoch, revision=source.revision,
                              upserts=list(source.leaves()),
                              deletes=[p for p, _, _ in replica.leaves()])
        await own.durable()
        await copy.durable()
        assert await store.log_rows(KEY) < 8
    async with TreeStore(db) as store:
        assert state(await store.load(KEY, tree.schema, max_tombstones=4)) == state(tree)
        assert state(await store.load("copy", PermissiveSchema())) == state(replica)
        await (await store.attach("copy", replica)).detach()
        assert await store.log_rows("copy") == 0


async def test_one_tree_per_key(tmp_path: Path) -> None:
    async with TreeStore(tmp_path / "t.sqlite") as store:
        first = await store.attach(KEY, station())
        with pytest.raises(ValueError, match="already attached"):
            await store.attach(KEY, station())  # two histories would interleave in one log
        await first.detach()
        await store.attach(KEY, station())  # once detached, another may take its place


async def test_attach_soon_queues_the_first_snapshot_and_durable_waits_for_it(
        tmp_path: Path) -> None:
    db = tmp_path / "t.sqlite"
    copies = [ObjectTree(PermissiveSchema(), epoch=0) for _ in range(100)]
    async with TreeStore(db) as store:
        attached = [store.attach_soon(f"copy{i}", tree) for i, tree in enumerate(copies)]
        assert store.transactions == 0  # nothing waited for a write
        with pytest.raises(ValueError, match="already attached"):
            store.attach_soon("copy0", copies[0])
        copies[7].apply([Write("a", 1)])
        await asyncio.gather(*(a.durable() for a in attached))
        assert store.transactions <= 2  # the hundred snapshots went in one or two
        assert await store.keys() == sorted(f"copy{i}" for i in range(100))
    async with TreeStore(db) as store:
        assert state(await store.load("copy7", PermissiveSchema())) == state(copies[7])


async def test_closing_the_store_writes_what_attached_trees_committed(tmp_path: Path) -> None:
    db = tmp_path / "t.sqlite"
    tree = station()
    async with TreeStore(db) as store:
        await store.attach(KEY, tree)
        for i in range(1, 20):
            tree.apply(transaction(tree, i))  # nobody waits for durability here
    async with TreeStore(db) as store:
        assert state(await store.load(KEY, tree.schema, max_tombstones=4)) == state(tree)


async def test_nothing_acknowledged_is_lost_to_kill_9(tmp_path: Path) -> None:
    db = tmp_path / "killed.sqlite"
    child = subprocess.Popen(
        [sys.executable, "-m", "tests.actors.runtime.persistence_child", str(db)],
        cwd=ROOT, stdout=subprocess.PIPE, text=True)
    assert child.stdout is not None
    last = 0
    try:
        for _ in range(150):  # several compactions (every 32 rows)
            line = child.stdout.readline()
            assert line, "the child stopped before it was killed"
            last = int(line)
    finally:
        child.send_signal(signal.SIGKILL)
        child.wait()
    assert child.returncode == -signal.SIGKILL
    async with TreeStore(db) as store:
        loaded = await store.load(KEY, station().schema, max_tombstones=4)
    assert loaded is not None and loaded.revision >= last
    reference = station()
    i = 0
    while reference.revision < loaded.revision:
        i += 1
        reference.apply(transaction(reference, i))
    assert state(loaded) == state(reference)


async def test_concurrent_records_are_group_committed(tmp_path: Path) -> None:
    trees = [ObjectTree(PermissiveSchema()) for _ in range(1000)]
    events = [tree.write(f"evse/{n}/status", "Available") for n, tree in enumerate(trees)]
    async with TreeStore(tmp_path / "many.sqlite") as store:
        before = store.transactions
        await asyncio.gather(*(store.record(f"cs-{n:04d}", changes_of(event))
                               for n, event in enumerate(events)))
        assert store.transactions - before <= 3
        assert await store.keys() == [f"cs-{n:04d}" for n in range(1000)]
        for n, tree in enumerate(trees[:3]):
            loaded = await store.load(f"cs-{n:04d}", PermissiveSchema())
            assert loaded is not None and state(loaded) == state(tree)


async def test_a_record_that_does_not_follow_on_fails_alone(tmp_path: Path) -> None:
    tree = ObjectTree(PermissiveSchema(), epoch=7)
    tree.write("a", 1)
    second = changes_of(tree.write("a", 2))
    other_epoch = ChangeSet(epoch=8, from_revision=0, to_revision=1,
                            upserts=((KeyPath("b"), 1, 0),))
    async with TreeStore(tmp_path / "t.sqlite") as store:
        results = await asyncio.gather(
            store.record("gap", second), store.record("ok", changes_of(ObjectTree(PermissiveSchema()).write("x", 1))),
            return_exceptions=True)
        assert isinstance(results[0], RevisionGapError) and "'gap'" in str(results[0])
        assert results[1] is None
        await store.save_snapshot("tree", tree)
        with pytest.raises(EpochMismatchError, match="'tree'"):
            await store.record("tree", replace(other_epoch, from_revision=2, to_revision=3))
        await store.record("tree", other_epoch)  # from revision 0: a new history replaces it
        loaded = await store.load("tree", PermissiveSchema())
        assert loaded is not None and (loaded.epoch, loaded.read()) == (8, {"b": 0})
        with pytest.raises(LookupError):
            await store.flushed("tree", 99)
        await store.flushed("tree", 1, epoch=8)


async def test_corrupt_rows_raise_an_error_naming_the_key(tmp_path: Path) -> None:
    db = tmp_path / "t.sqlite"
    tree = station()
    async with TreeStore(db) as store:
        await store.save_snapshot(KEY, tree)
        await run_station(store, tree, 5)
        await store.save_snapshot("other", tree)
    with sqlite3.connect(db) as raw:
        raw.execute("UPDATE log SET data = x'6c03' WHERE revision = 4")
        raw.execute("UPDATE snapshots SET data = x'00' WHERE key = 'other'")
    async with TreeStore(db) as store:
        with pytest.raises(CorruptTreeError, match="'station/cs-kill' is corrupt at revision 4"):
            await store.load(KEY, tree.schema)
        with pytest.raises(CorruptTreeError, match=r"'other'.*snapshot"):
            await store.load("other", tree.schema)
        assert await store.keys() == ["other", KEY]
        await store.delete(KEY)
        assert await store.load(KEY, tree.schema) is None
        assert await store.keys() == ["other"]
        assert await store.log_rows() == 0


async def test_load_many_matches_load_and_reports_corrupt_keys_without_stopping(
        tmp_path: Path) -> None:
    db = tmp_path / "t.sqlite"
    trees = {f"stations/cs-{i}": station() for i in range(7)}
    async with TreeStore(db) as store:
        for key, tree in trees.items():
            await store.save_snapshot(key, tree)
            for i in range(1, 4):  # a snapshot plus log rows to replay
                await store.record(key, changes_of(tree.apply(transaction(tree, i))), tree)
    with sqlite3.connect(db) as raw:
        raw.execute("UPDATE log SET data = x'6c03' WHERE key = 'stations/cs-2'")
        raw.execute("DELETE FROM snapshots WHERE key = 'stations/cs-5'")
    async with TreeStore(db) as store:
        wanted = [*trees, "stations/missing"]
        got = [item async for item in store.load_many(wanted, PermissiveSchema(), chunk=3)]
        assert [key for key, _ in got] == list(trees)  # in order; the missing key is skipped
        for key, loaded in got:
            if key in ("stations/cs-2", "stations/cs-5"):
                assert isinstance(loaded, CorruptTreeError) and repr(key) in str(loaded)
                continue
            single = await store.load(key, PermissiveSchema())
            assert isinstance(loaded, ObjectTree) and single is not None
            assert (loaded.epoch, loaded.revision, loaded.digest()) == \
                (trees[key].epoch, trees[key].revision, trees[key].digest())
            assert sorted(loaded.leaves()) == sorted(single.leaves())


def test_stored_snapshots_round_trip_every_plain_value_exactly() -> None:
    tree = ObjectTree(PermissiveSchema(), epoch=3)
    values = {"t": "text ü", "b": b"\x00\xff", "i": -7, "f": 1.0, "n": None, "y": True,
              "l": [1, "a", [2.5]], "m": {"z": 1, "a": {"k": b"v"}}, "u": 2**63 + 5}
    tree.apply([Write(k, v) for k, v in values.items()])
    tree.delete("n")
    packed = pack_tree(tree)
    assert packed[:1] != b"l"  # msgpack, not the canonical form
    back = unpack_tree(packed, PermissiveSchema())
    for k in values.keys() - {"n"}:  # same value and same type (1.0 stays a float)
        assert back.get(k) == values[k] and type(back.get(k)) is type(values[k]), k
    assert (back.epoch, back.revision, back.digest()) == (tree.epoch, tree.revision, tree.digest())
    assert back.changes_since(tree.revision - 1) == tree.changes_since(tree.revision - 1)
    # a value msgpack cannot hold keeps the canonical form, which reads back as well
    tree.write("huge", 2**70)
    assert pack_tree(tree)[:1] == b"l"
    assert unpack_tree(pack_tree(tree), PermissiveSchema()).get("huge") == 2**70
    for damaged in (packed[:-3], b"\x96\x01", b"\xc1", msgpack.packb([1, 2, 3, 4, 5, [[1]], []])):
        with pytest.raises(ModelError) as info:
            unpack_tree(damaged, PermissiveSchema())
        assert info.value.code is ErrorCode.SNAPSHOT_INVALID


async def test_a_writes_id_is_stored_with_its_effect_and_refuses_its_replay_after_a_crash(
        tmp_path: Path) -> None:
    """The id of a state-changing message goes to disk in the transaction that writes its
    effect; after a restart the store's marks make the guard refuse a replay of it (or of
    anything older from that sender), though the guard's own marks were never written."""
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    from broker_bridge.envelope import Envelope
    from broker_bridge.session.signing import SigningGuard, StaticKeys

    stamp = 1_750_000_000_000_000
    store = await TreeStore(tmp_path / "trees.db").open()
    tree = ObjectTree(PermissiveSchema())
    persisted = await store.attach("t", tree)
    await persisted.durable()
    before = store.transactions
    tree.apply([Write("policy/max_power_w", 11000.0)])
    persisted.note_applied("operator", b"\x07" * 16, stamp)
    await persisted.durable()
    assert store.transactions == before + 1  # one transaction: the effect and the id
    with sqlite3.connect(tmp_path / "trees.db") as raw:  # as a crash would leave the file
        assert raw.execute("SELECT sender, id, stamp FROM applied").fetchall() == [
            ("operator", b"\x07" * 16, stamp)]
    await store.close()

    reopened = await TreeStore(tmp_path / "trees.db").open()
    marks = await reopened.applied_marks()
    await reopened.close()
    assert marks == {"operator": stamp}
    key = Ed25519PrivateKey.generate()
    sender = SigningGuard({"operator": key}, StaticKeys({"operator": key.public_key()}))
    receiver = SigningGuard({}, StaticKeys({"operator": key.public_key()}))
    receiver.restore(marks)
    receiver.restore({"operator": stamp - 10})  # marks from elsewhere add up, never lower

    def write(at: int, n: int) -> Envelope:
        return sender.seal(Envelope(id=bytes([n]) * 16, source="operator", destination="t",
                                    kind="PropertyValueWrite", body=b"\x90", timestamp_us=at),
                           at)

    with pytest.raises(ModelError) as info:
        receiver.open(write(stamp, 7), stamp + 1_000)  # the replay
    assert info.value.code is ErrorCode.REPLAYED
    assert receiver.open(write(stamp + 1, 8), stamp + 1_000).id == bytes([8]) * 16
