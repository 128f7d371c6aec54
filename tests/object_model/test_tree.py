"""ObjectTree: atomic transactions, exact change history, digests, diff, snapshots, replicas."""

from __future__ import annotations

import random

import pytest
from hypothesis import given
from hypothesis import strategies as st

from keypath import KeyPath
from object_model import (
    ABSENT,
    ChangeSet,
    Delete,
    ErrorCode,
    ModelError,
    ObjectTree,
    PermissiveSchema,
    Write,
    canonical,
)
from object_model.station import new_station_tree, shared_station_schema, station_schema
from object_model.station.model import new_station, station_writes
from object_model.tree import DiffStats, TransactionCommitted
from tests.object_model.small_model import ReferenceTree, small_schema, transactions


def leaf_map(tree: ObjectTree) -> dict[KeyPath, object]:
    return {p: v for p, _, v in tree.leaves()}


def all_digests(tree: ObjectTree) -> dict[str, bytes]:
    """Digest of every interior node, found by walking the tree's children."""
    out: dict[str, bytes] = {}
    stack = [KeyPath.root()]
    while stack:
        path = stack.pop()
        out[str(path)] = tree.digest(path)
        for name, is_leaf, _ in tree.children(path):
            if not is_leaf:
                stack.append(path / name)
    return out


# -- transactions ------------------------------------------------------------------------------


@pytest.fixture
def station() -> ObjectTree:
    return new_station_tree("cs-1", epoch=42)


@pytest.mark.parametrize(
    ("bad", "code"),
    [
        (Write("evse/1/connector/1/max_current_a", "32"), ErrorCode.WRONG_TYPE),
        (Write("evse/1/connector/1/max_current_a", 5000.0), ErrorCode.OUT_OF_RANGE),
        (Write("evse/1/phases", True), ErrorCode.WRONG_TYPE),
        (Write("evse/1/no_such_thing", 1), ErrorCode.UNKNOWN_PATH),
        (Write("evse/1/power_module/com.nobody:pump", 1), ErrorCode.UNKNOWN_NAMESPACE),
        (Write("evse/one/status", "Available"), ErrorCode.UNKNOWN_PATH),
        (Write("evse/1/status", "Exploded"), ErrorCode.OUT_OF_RANGE),
        (Write("evse/1/connector/9/status", "Available"), ErrorCode.UNKNOWN_PATH),
        (Write("evse/1/connector", 3), ErrorCode.WRONG_TYPE),
        (Write("evse//1", 3), ErrorCode.INVALID_KEYPATH),
        (Delete("evse/1/nope"), ErrorCode.UNKNOWN_PATH),
    ],
)
def test_one_invalid_write_changes_nothing(station: ObjectTree, bad: Write, code: ErrorCode) -> None:
    before = (station.revision, leaf_map(station), all_digests(station))
    seen: list[object] = []
    station.subscribe(seen.append)
    ops = [
        Write("evse/1/session/energy_wh", 1234.5),
        Delete("evse/2/connector/1"),
        bad,
        Write("identity/display_name", "renamed"),
    ]
    with pytest.raises(ModelError) as info:
        station.apply(ops)
    assert info.value.code is code
    assert info.value.details["operation"] == 2
    assert (station.revision, leaf_map(station), all_digests(station)) == before
    assert seen == []


def test_every_invalid_operation_is_listed(station: ObjectTree) -> None:
    with pytest.raises(ModelError) as info:
        station.apply([
            Write("evse/1/phases", 7),
            Write("evse/1/session/energy_wh", 1.0),
            Write("identity/nope", 1),
        ])
    errors = info.value.details["errors"]
    assert [e["code"] for e in errors] == ["out_of_range", "unknown_path"]
    assert [e["operation"] for e in errors] == [0, 2]
    assert errors[1]["path"] == "identity/nope"


def test_a_transaction_is_one_revision_applied_in_order(station: ObjectTree) -> None:
    rev = station.revision
    events: list[object] = []
    station.subscribe(events.append)
    result = station.apply([
        Write("evse/1/session/energy_wh", 1.0),
        Write("evse/1/session/energy_wh", 2.0),
        Delete("evse/2"),
        Write("evse/2/status", "Faulted"),
    ])
    assert result.revision == station.revision == rev + 1
    assert station.get("evse/1/session/energy_wh") == 2.0
    assert [p for p, _, _ in station.leaves("evse/2")] == [KeyPath.parse("evse/2/status")]
    assert len(events) == 1 and events[0] is result
    assert dict(result.upserts) == {
        KeyPath.parse("evse/1/session/energy_wh"): 2.0,
        KeyPath.parse("evse/2/status"): "Faulted",
    }
    assert result.deletes == (KeyPath.parse("evse/2"),)


def test_rewriting_equal_values_changes_nothing(station: ObjectTree) -> None:
    rev = station.revision
    value = station.get("evse/1/phases")
    result = station.apply([Write("evse/1/phases", value), Delete("evse/9")])
    assert not result.changed and station.revision == rev


def test_writes_are_normalised_by_type(station: ObjectTree) -> None:
    station.write("evse/1/connector/1/max_current_a", 16)  # int accepted for a float32
    assert station.get("evse/1/connector/1/max_current_a") == 16.0
    station.write("evse/1/connector/1/max_current_a", 0.1)  # rounded to float32
    assert station.get("evse/1/connector/1/max_current_a") == pytest.approx(0.1, rel=1e-7)
    assert station.get("evse/1/connector/1/max_current_a") != 0.1


def test_a_map_written_at_a_record_spreads_over_its_leaves(station: ObjectTree) -> None:
    station.write("evse/2/connector/2", {"type": "cCCS2", "max_current_a": 200})
    assert station.get("evse/2/connector/2/type") == "cCCS2"
    assert station.read("evse/2/connector/2") == {"type": "cCCS2", "max_current_a": 200.0}


def test_collection_capacity_is_enforced(station: ObjectTree) -> None:
    with pytest.raises(ModelError) as info:
        station.apply([Write(f"evse/1/connector/{i}/locked", True) for i in (2, 3, 4, 5)])
    assert info.value.code is ErrorCode.UNKNOWN_PATH  # ids above 4 do not exist
    tree = ObjectTree(small_schema())
    tree.apply([Write(f"items/{i}/x", i) for i in range(1, 5)])
    with pytest.raises(ModelError) as info:
        tree.apply([Write("items/5/x", 5), Write("items/6/x", 6)])
    assert info.value.code is ErrorCode.LIMIT_EXCEEDED
    assert info.value.path == "items/6" and info.value.details["max_members"] == 5
    assert len(tree) == 4
    tree.apply([Write("items/5/x", 5)])
    assert len(tree) == 5


def test_a_collection_made_in_the_same_transaction_is_bounded_too(station: ObjectTree) -> None:
    """Found attacking the OCPP gateway: a charger reporting 300 variables of one new
    component in one page was let through (ocpp:dm/<component> holds 256), and the tree's
    snapshot then did not restore, so its station did not start again."""
    def variables(component: str, count: int) -> list[Write]:
        return [Write(f"ocpp:dm/{component}/V{i}/data_type", "string") for i in range(count)]

    with pytest.raises(ModelError) as info:
        station.apply(variables("Vendor", 257))
    assert info.value.code is ErrorCode.LIMIT_EXCEEDED
    assert info.value.path == "ocpp:dm/Vendor/V256" and info.value.details["max_members"] == 256
    assert "ocpp:dm/Vendor" not in station
    station.apply(variables("Vendor", 256))
    assert len(ObjectTree.restore(station.snapshot(), station.schema).read("ocpp:dm/Vendor")) \
        == 256


def test_expected_revision_guards_a_transaction(station: ObjectTree) -> None:
    with pytest.raises(ModelError) as info:
        station.apply([Write("evse/1/phases", 1)], expected_revision=station.revision - 1)
    assert info.value.code is ErrorCode.REVISION_CONFLICT
    station.apply([Write("evse/1/phases", 1)], expected_revision=station.revision)
    assert station.get("evse/1/phases") == 1


def test_reading_absent_and_unknown_paths(station: ObjectTree) -> None:
    station.delete("evse/1/session/soc_percent")
    with pytest.raises(ModelError) as info:
        station.get("evse/1/session/soc_percent")
    assert info.value.code is ErrorCode.NOT_PRESENT
    with pytest.raises(ModelError) as info:
        station.get("evse/1/session/state_of_charge")
    assert info.value.code is ErrorCode.UNKNOWN_PATH
    assert "did you mean" not in info.value.text or "soc" in info.value.text
    with pytest.raises(ModelError) as info:
        station.get("com.example:thing")
    assert info.value.code is ErrorCode.UNKNOWN_NAMESPACE
    assert station.read("evse/1/connector/1")["type"] == "sType2"


def test_find_matches_patterns(station: ObjectTree) -> None:
    found = {str(p) for p, _, _ in station.find("evse/*/connector/*/status")}
    assert found == {"evse/1/connector/1/status", "evse/2/connector/1/status"}
    energy = {str(p) for p, _, _ in station.find("**/obis:1-0:1.8.0")}
    assert energy == {"evse/1/meter/obis:1-0:1.8.0", "evse/2/meter/obis:1-0:1.8.0"}
    assert len(list(station.find("**"))) == len(station)


# -- history -------------------------------------------------------------------------------------


@given(st.lists(transactions, min_size=1, max_size=25), st.data())
def test_changes_since_is_exact_against_a_brute_force_model(
    history: list[list[Write | Delete]], data: st.DataObject
) -> None:
    tree = ObjectTree(small_schema(), epoch=7)
    ref = ReferenceTree()
    snapshots = {0: tree.snapshot()}
    for ops in history:
        event = tree.apply(ops)
        assert ref.apply(ops) == event.changed
        assert tree.revision == ref.revision
        snapshots[tree.revision] = tree.snapshot()
    assert leaf_map(tree) == {p: v for p, (v, _) in ref.leaves.items()}

    since = data.draw(st.sampled_from(sorted(snapshots)))
    changes = tree.changes_since(since)
    assert {p: v for p, _, v in changes.upserts} == ref.upserts_since(since)
    assert dict(changes.deletes) == ref.deletes_since(since)
    revs = [r for _, r, _ in changes.upserts]
    assert revs == sorted(revs)

    # a copy restored at `since` that replays the change set equals the tree
    copy = ObjectTree.restore(snapshots[since], small_schema())
    copy.apply_changes(changes)
    assert leaf_map(copy) == leaf_map(tree)
    assert copy.digest() == tree.digest()
    assert copy.revision == tree.revision


def test_horizon_and_compaction() -> None:
    tree = ObjectTree(small_schema(), max_tombstones=10)
    for i in range(1, 9):
        tree.write(f"items/1/cells/{i}/v", i)
    for i in range(1, 9):
        tree.delete(f"items/1/cells/{i}")
    assert tree.changes_since(0).deletes  # all history still there
    dropped = tree.compact(12)
    assert dropped == 4 and tree.horizon == 12
    with pytest.raises(ModelError) as info:
        tree.changes_since(11)
    assert info.value.code is ErrorCode.HORIZON_PASSED
    assert len(tree.changes_since(12).deletes) == 4
    with pytest.raises(ModelError) as info:
        tree.changes_since(tree.revision + 1)
    assert info.value.code is ErrorCode.REVISION_AHEAD


def test_tombstones_are_bounded_by_automatic_compaction() -> None:
    tree = ObjectTree(small_schema(), max_tombstones=6)
    for round_ in range(20):
        cell = round_ % 9 + 1
        tree.write(f"items/1/cells/{cell}/v", round_)
        tree.delete(f"items/1/cells/{cell}")
    assert tree.tombstone_count <= 6
    assert tree.horizon > 0
    assert tree.changes_since(tree.horizon).to_revision == tree.revision


def test_replicas_detect_gaps_and_other_epochs() -> None:
    source = new_station_tree("cs-1", epoch=1)
    copy = ObjectTree(PermissiveSchema(), epoch=1)
    copy.apply_changes(source.changes_since(0))
    assert copy.digest() == source.digest()
    source.write("evse/1/session/energy_wh", 10.0)
    first = source.changes_since(copy.revision)
    source.write("evse/1/session/energy_wh", 20.0)
    second = source.changes_since(first.to_revision)
    with pytest.raises(ModelError) as info:
        copy.apply_changes(second)
    assert info.value.code is ErrorCode.REVISION_GAP
    copy.apply_changes(first)
    copy.apply_changes(first)  # replaying is harmless
    copy.apply_changes(second)
    assert copy.digest() == source.digest() and copy.revision == source.revision
    other = ChangeSet(epoch=2, from_revision=0, to_revision=9)
    with pytest.raises(ModelError) as info:
        copy.apply_changes(other)
    assert info.value.code is ErrorCode.EPOCH_MISMATCH
    # the copy keeps the source's revisions, so it can serve changes_since itself
    assert copy.changes_since(first.from_revision).upserts == source.changes_since(
        first.from_revision).upserts


# -- digests and diff --------------------------------------------------------------------------


@given(st.randoms(use_true_random=False), st.integers(1, 5))
def test_digests_do_not_depend_on_write_order(rnd: random.Random, batch: int) -> None:
    template = new_station_tree("cs-7", epoch=1)
    writes = [Write(p, v) for p, _, v in template.leaves()]
    rnd.shuffle(writes)
    other = ObjectTree(station_schema(), epoch=2)
    for i in range(0, len(writes), batch):
        other.apply(writes[i : i + batch])
    assert all_digests(other) == all_digests(template)
    assert other.digest() == template.digest()


@given(st.data())
def test_any_single_differing_leaf_changes_the_root_digest(data: st.DataObject) -> None:
    a = new_station_tree("cs-7", epoch=1)
    b = new_station_tree("cs-7", epoch=2)
    assert a.digest() == b.digest()
    paths = [p for p, _, v in a.leaves() if type(v) in (float, int, bool) and type(v) is not bool]
    path = data.draw(st.sampled_from(paths))
    vt = a.schema.type_at(path)
    current = a.get(path)
    for candidate in (current + 1, current - 1, 0, 1):
        try:
            new = vt.validate(candidate)
        except ModelError:
            continue
        if new != current:
            break
    else:
        pytest.skip("no other value fits")
    b.write(path, new)
    assert a.digest() != b.digest()
    assert a.diff(b) == [type(a.diff(b)[0])(path, current, new)]


def test_deleting_a_leaf_changes_the_digest_and_restoring_it_undoes() -> None:
    a = new_station_tree("cs-7", epoch=1)
    root = a.digest()
    value = a.get("identity/display_name")
    a.delete("identity/display_name")
    assert a.digest() != root
    a.write("identity/display_name", value)
    assert a.digest() == root


@given(st.lists(transactions, min_size=1, max_size=10), st.lists(transactions, max_size=10))
def test_digest_descent_diff_finds_exactly_the_differing_leaves(
    common: list[list[Write | Delete]], divergent: list[list[Write | Delete]]
) -> None:
    a = ObjectTree(small_schema())
    for ops in common:
        a.apply(ops)
    b = ObjectTree.restore(a.snapshot(), small_schema())
    for ops in divergent:
        b.apply(ops)
    mine, theirs = leaf_map(a), leaf_map(b)
    expected = {
        p: (mine.get(p, ABSENT), theirs.get(p, ABSENT))
        for p in mine.keys() | theirs.keys()
        if p not in mine or p not in theirs or mine[p] != theirs[p]
        or type(mine[p]) is not type(theirs[p])
    }
    found = {e.path: (e.mine, e.theirs) for e in a.diff(b)}
    assert found == expected


def test_diff_opens_only_differing_subtrees() -> None:
    a = new_station_tree("cs-7", epoch=1)
    b = new_station_tree("cs-7", epoch=2)
    b.write("evse/2/power_module/fan/1/temperature_sensor/1/temperature_c", 61.5)
    stats = DiffStats()
    found = a.diff(b, stats)
    assert [str(e.path) for e in found] == [
        "evse/2/power_module/fan/1/temperature_sensor/1/temperature_c"]
    # the descent compares the root's children, then one child per level down to the leaf
    assert stats.nodes_compared < 60 < len(a)


# -- snapshots and adoption ----------------------------------------------------------------------


def test_snapshot_round_trips_everything() -> None:
    tree = new_station_tree("cs-1", epoch=99)
    tree.delete("evse/2/connector/1")
    tree.write("evse/1/session/energy_wh", 5.5)
    tree.compact(1)
    copy = ObjectTree.restore(tree.snapshot(), station_schema())
    assert (copy.epoch, copy.revision, copy.horizon) == (tree.epoch, tree.revision, tree.horizon)
    assert sorted(copy.leaves()) == sorted(tree.leaves())
    assert all_digests(copy) == all_digests(tree)
    assert copy.changes_since(1) == tree.changes_since(1)
    assert copy.snapshot() == tree.snapshot()


@pytest.mark.parametrize("damage", [b"", b"\x00", b"garbage", b"l\x05i\x02"])
def test_damaged_snapshots_are_rejected(damage: bytes) -> None:
    with pytest.raises(ModelError) as info:
        ObjectTree.restore(damage, station_schema())
    assert info.value.code is ErrorCode.SNAPSHOT_INVALID


def test_snapshot_that_breaks_the_schema_is_rejected() -> None:
    tree = ObjectTree(PermissiveSchema())
    tree.write("evse/1/phases", 99)
    with pytest.raises(ModelError) as info:
        ObjectTree.restore(tree.snapshot(), station_schema())
    assert info.value.code is ErrorCode.SNAPSHOT_INVALID
    assert info.value.path == "evse/1/phases"


def test_snapshot_beyond_the_schemas_bounds_is_rejected() -> None:
    crowded = ObjectTree(PermissiveSchema())
    crowded.apply([Write(f"items/{i}/x", 3) for i in range(1, 7)])  # at most 5 members
    with pytest.raises(ModelError) as info:
        ObjectTree.restore(crowded.snapshot(), small_schema())
    assert info.value.code is ErrorCode.SNAPSHOT_INVALID
    assert info.value.path == "items"
    assert info.value.details["max_members"] == 5
    with pytest.raises(ModelError) as info:
        ObjectTree.restore(crowded.snapshot(), PermissiveSchema(), max_leaves=5)
    assert info.value.code is ErrorCode.SNAPSHOT_INVALID


def test_snapshot_naming_a_leaf_twice_is_rejected() -> None:
    tree = ObjectTree(PermissiveSchema(), epoch=1)
    tree.write("a", 1)
    fmt, epoch, revision, horizon, leaves, tombs = canonical.decode(tree.snapshot())
    value_and_subtree = [["a/b", 1, 2]]
    for bad in (leaves * 2, leaves + value_and_subtree, value_and_subtree + leaves, [["a"]]):
        data = canonical.encode([fmt, epoch, revision, horizon, bad, tombs])
        with pytest.raises(ModelError) as info:
            ObjectTree.restore(data, PermissiveSchema())
        assert info.value.code is ErrorCode.SNAPSHOT_INVALID


def test_adopt_installs_a_digest_descent_result() -> None:
    source = new_station_tree("cs-1", epoch=5)
    for i in range(30):
        source.write("evse/1/session/energy_wh", float(i))
    copy = ObjectTree(PermissiveSchema(), epoch=3)
    copy.apply_changes(ChangeSet(epoch=3, from_revision=0, to_revision=1,
                                 upserts=tuple((p, 1, v) for p, v, _ in
                                               new_station_tree("cs-1").leaves())))
    copy.write("stale/leaf", 1)
    differing = source.diff(copy)
    copy.adopt(
        epoch=source.epoch,
        revision=source.revision,
        upserts=[(e.path, source.entry(e.path)[1], e.mine) for e in differing
                 if e.mine is not ABSENT],
        deletes=[e.path for e in differing if e.mine is ABSENT],
    )
    assert copy.digest() == source.digest()
    assert (copy.epoch, copy.revision, copy.horizon) == (source.epoch, source.revision,
                                                        source.revision)
    source.write("evse/2/session/energy_wh", 77.0)
    copy.apply_changes(source.changes_since(copy.revision))
    assert copy.digest() == source.digest()
    assert copy.changes_since(copy.revision - 1).upserts == source.changes_since(
        source.revision - 1).upserts


def _adopt_both_ways(upserts: list[tuple[KeyPath, int, object]], revision: int
                     ) -> tuple[ObjectTree, ObjectTree, TransactionCommitted]:
    """Adopt ``upserts`` into an empty copy (one pass) and into a copy holding one leaf
    that the adoption deletes (the general way): both must end the same."""
    empty = ObjectTree(PermissiveSchema(), epoch=1)
    events: list[TransactionCommitted] = []
    empty.subscribe(events.append)
    event = empty.adopt(epoch=9, revision=revision, upserts=upserts)
    general = ObjectTree(PermissiveSchema(), epoch=1)
    general.write("zz/old", 1)
    general.adopt(epoch=9, revision=revision, upserts=upserts,
                  deletes=[KeyPath.parse("zz")])
    assert events == [event]
    return empty, general, event


def test_adopt_into_an_empty_copy_ends_as_the_general_way_does() -> None:
    source = new_station_tree("cs-1", epoch=5)
    for i in range(5):
        source.write("evse/1/session/energy_wh", float(i))
    upserts = [(p, r, v) for p, r, v in source.leaves()]
    empty, general, event = _adopt_both_ways(upserts, source.revision)
    for copy in (empty, general):
        assert copy.digest() == source.digest(visible=True) == general.digest()
        assert (copy.epoch, copy.revision, copy.horizon) == (9, source.revision,
                                                            source.revision)
    assert list(empty.leaves()) == list(general.leaves())
    for copy in (empty, general):
        copy.write("evse/2/session/energy_wh", 99.0)
    assert empty.changes_since(source.revision).upserts == \
        general.changes_since(source.revision).upserts
    assert dict(event.upserts) == leaf_map(source)
    # a path given twice: the later value wins, as in a transaction
    twice = [(KeyPath.parse("a/b"), 1, 1), (KeyPath.parse("a/b"), 2, 2)]
    empty, general, _ = _adopt_both_ways(twice, 2)
    assert leaf_map(empty) == leaf_map(general) == {KeyPath.parse("a/b"): 2}
    # a value the schema refuses: nothing changes, and the error names it
    copy = ObjectTree(PermissiveSchema(max_value_bytes=8), epoch=1)
    with pytest.raises(ModelError):
        copy.adopt(epoch=9, revision=3, upserts=[(KeyPath.parse("a"), 1, 1),
                                                 (KeyPath.parse("b"), 1, "x" * 64)])
    assert len(copy) == 0 and copy.epoch == 1 and copy.digest() == bytes(16)


def test_permissive_trees_replace_leaves_by_subtrees_and_back() -> None:
    tree = ObjectTree(PermissiveSchema(), epoch=1)
    tree.write("a/b", 1)
    mark = tree.revision
    tree.write("a/b/c", 2)
    assert leaf_map(tree) == {KeyPath.parse("a/b/c"): 2}
    tree.write("a/b", 3)
    assert leaf_map(tree) == {KeyPath.parse("a/b"): 3}
    copy = ObjectTree(PermissiveSchema(), epoch=1)
    copy.apply_changes(ChangeSet(epoch=1, from_revision=0, to_revision=mark,
                                 upserts=((KeyPath.parse("a/b"), mark, 1),)))
    tree.delete("a/b")
    copy.apply_changes(tree.changes_since(mark))
    assert leaf_map(copy) == leaf_map(tree) == {}


def test_limit_on_leaves() -> None:
    tree = ObjectTree(PermissiveSchema(), max_leaves=3)
    tree.apply([Write(f"x/{i}", i) for i in range(3)])
    with pytest.raises(ModelError) as info:
        tree.write("x/9", 9)
    assert info.value.code is ErrorCode.LIMIT_EXCEEDED
    assert len(tree) == 3


def test_visible_digests_let_a_copy_without_secrets_compare_equal() -> None:
    station = new_station_tree("cs-1", epoch=4)
    station.apply([Write("security/provisioning_secret", "s3cret"),
                   Write("network/profiles/1/apn_password", "pw")])
    copy = ObjectTree(PermissiveSchema(), epoch=4)
    copy.apply_changes(station.changes_since(0, visible=True))
    assert "security/provisioning_secret" not in copy
    assert "network/profiles/1/apn_password" not in copy
    assert station.digest() != station.digest(visible=True)
    assert copy.digest() == station.digest(visible=True)
    assert dict((n, d) for n, _, d in copy.children("network/profiles/1")) == dict(
        (n, d) for n, _, d in station.children("network/profiles/1", visible=True))
    assert [n for n, _, _ in station.children("security", visible=True)] == [
        "certificate_serial", "certificate_expires_at", "certificate", "failed_logins",
        "revocations", "revocation_number"]
    rev = station.revision
    station.write("security/provisioning_secret", "rotated")  # invisible change
    assert station.digest(visible=True) == copy.digest()
    assert station.changes_since(rev, visible=True).upserts == ()
    station.delete("security")
    copy.apply_changes(station.changes_since(copy.revision, visible=True))
    assert copy.digest() == station.digest(visible=True)


def test_a_failing_listener_never_fails_a_committed_transaction() -> None:
    tree = new_station_tree("cs-1")
    heard: list[int] = []
    failures: list[tuple[str, int]] = []

    def broken(event: TransactionCommitted) -> None:
        raise RuntimeError("listener bug")

    tree.subscribe(broken)
    tree.subscribe(lambda event: heard.append(event.revision))
    tree.on_listener_error = lambda exc, event: failures.append((str(exc), event.revision))
    before = tree.revision
    event = tree.apply([Write("evse/1/status", "Unavailable")])  # no exception: it committed
    assert event.revision == tree.revision == before + 1
    assert heard == [event.revision]  # the others still hear
    assert failures == [("listener bug", event.revision)] and tree.listener_failures == 1


def test_a_transaction_into_an_empty_tree_ends_as_the_general_way_does() -> None:
    """Building a station's tree takes the one-pass way (``_load_into_empty``); a tree that
    held a leaf once (a tombstone) takes the general way: both end the same, and what one
    refuses the other refuses too, with nothing changed."""
    station = new_station("cs-1", seed=3)
    writes = station_writes(station)
    fast = ObjectTree(shared_station_schema(), epoch=4)
    events: list[TransactionCommitted] = []
    fast.subscribe(events.append)
    general = ObjectTree(shared_station_schema(), epoch=4)
    general.write("identity/display_name", "x")
    general.delete("identity/display_name")  # a tombstone: no longer the first transaction
    event = fast.apply(writes)
    general.apply(writes)
    assert events == [event] and event.revision == fast.revision == 1
    assert fast.digest() == general.digest() and fast.digest(visible=True) == general.digest(
        visible=True)
    assert leaf_map(fast) == leaf_map(general) == dict(event.upserts)
    fast.write("evse/1/session/energy_wh", 5.0)
    assert [p for p, _, _ in fast.changes_since(0).upserts][-1] == KeyPath.parse(
        "evse/1/session/energy_wh")
    # refused by either way: the error names it, nothing changes
    for tree in (ObjectTree(shared_station_schema()), general):
        before = (tree.revision, tree.digest())
        with pytest.raises(ModelError) as info:
            tree.apply([Write("identity/display_name", "ok"), Write("evse/1/max_power_w", "x")])
        assert info.value.code is ErrorCode.WRONG_TYPE
        assert (tree.revision, tree.digest()) == before
    # a path twice: the later value wins, as in any transaction
    twice = ObjectTree(shared_station_schema())
    twice.apply([Write("identity/display_name", "a"), Write("identity/display_name", "b")])
    assert twice.get("identity/display_name") == "b" and len(twice) == 1


def test_remembered_leaf_hashes_keep_values_python_calls_equal_apart() -> None:
    """Leaf hashes of small values are remembered per path and value; ``0.0`` and ``-0.0``,
    ``1``, ``1.0`` and ``True`` compare equal in Python but are different values."""
    digests = []
    for value in (0.0, -0.0, 0, False, 1, 1.0, True, None, "", "x"):
        for _ in range(2):  # the second time from what was remembered
            tree = ObjectTree(PermissiveSchema())
            tree.write("a/b", value)
            digests.append((repr(value), tree.digest()))
    assert len(set(digests)) == len(digests) // 2
    assert len({d for _, d in digests}) == len(digests) // 2
