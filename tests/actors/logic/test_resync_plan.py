"""The resynchronisation plan without a network: a copy, a source tree, and the answers the
source would give (``TreeAccess.discover``), one request at a time, in microseconds."""

from __future__ import annotations

import random
from collections.abc import Callable

import pytest

from actors.logic.resync_plan import ResyncError, ResyncPlan
from actors.logic.tree_access import TreeAccess
from keypath import KeyPath
from object_model import ObjectTree, PermissiveSchema, Role, Write
from object_model.messages import PropertyTreeDiscoveryRequest, PropertyTreeDiscoveryResponse
from object_model.station import new_station_tree, station_access_policy

ROOT = KeyPath.root()


def run(plan: ResyncPlan, source: ObjectTree, *, between: Callable[[], None] | None = None,
        limit: int = 100) -> list[PropertyTreeDiscoveryRequest]:
    """Answer the plan's requests from ``source`` until it is done; the requests it made."""
    access = TreeAccess(source, station_access_policy())
    asked = []
    while (request := plan.next_request()) is not None:
        asked.append(request)
        assert len(asked) <= limit, "the plan does not end"
        if between is not None:
            between()
        answer = access.discover(Role.LOCAL_CSMS, request)
        assert isinstance(answer, PropertyTreeDiscoveryResponse)
        plan.take(answer)
    return asked


def change(tree: ObjectTree, rng: random.Random, count: int) -> list[KeyPath]:
    floats = [p for p, _, v in tree.leaves() if type(v) is float
              and tree.leaf_schema(p).access.readable and "permissions" not in p.segments]
    picked = rng.sample(floats, count)
    tree.apply([Write(p, tree.value_type(p).validate(rng.random() * 10)) for p in picked])
    return picked


def copy_of(source: ObjectTree) -> ObjectTree:
    copy = ObjectTree(PermissiveSchema(), epoch=0)
    run(ResyncPlan(copy, ROOT, synced=False), source)
    return copy


def test_an_empty_copy_is_filled_in_one_request() -> None:
    source = new_station_tree("cs-1", epoch=11)
    copy = ObjectTree(PermissiveSchema(), epoch=0)
    plan = ResyncPlan(copy, ROOT, synced=False)
    asked = run(plan, source)
    assert plan.mode == "full" and len(asked) == 2  # the top, then everything
    assert copy.digest() == source.digest(visible=True)
    assert (copy.epoch, copy.revision) == (source.epoch, source.revision)


def test_the_same_epoch_costs_one_request_carrying_exactly_the_changes() -> None:
    source = new_station_tree("cs-1", epoch=11)
    copy = copy_of(source)
    changed = change(source, random.Random(1), 3)
    plan = ResyncPlan(copy, ROOT, synced=True)
    (request,) = run(plan, source)
    assert request.since_revision is not None and request.digests_on_gap
    assert plan.mode == "changes" and plan.leaves == len(changed)
    assert copy.digest() == source.digest(visible=True)


def test_a_new_epoch_fetches_only_what_differs() -> None:
    source = new_station_tree("cs-1", epoch=11)
    copy = copy_of(source)
    fresh = new_station_tree("cs-1", epoch=99)  # storage wiped: same content, new history
    changed = change(fresh, random.Random(2), 3)
    plan = ResyncPlan(copy, ROOT, synced=True)
    asked = run(plan, fresh)
    assert plan.mode == "descent" and copy.epoch == 99
    assert copy.digest() == fresh.digest(visible=True)
    assert len(changed) <= plan.leaves <= 10  # the changed leaves, not the tree
    assert len(asked) <= 8


def test_the_same_content_under_a_new_epoch_is_relabelled() -> None:
    source = new_station_tree("cs-1", epoch=11)
    copy = copy_of(source)
    plan = ResyncPlan(copy, ROOT, synced=True)
    run(plan, new_station_tree("cs-1", epoch=77))
    assert plan.mode == "relabel" and plan.leaves == 0 and copy.epoch == 77


def test_changes_made_during_a_descent_are_caught_up() -> None:
    source = new_station_tree("cs-1", epoch=11)
    copy = copy_of(source)
    fresh = new_station_tree("cs-1", epoch=55)
    change(fresh, random.Random(3), 5)
    rng = random.Random(4)
    run(ResyncPlan(copy, ROOT, synced=True), fresh, between=lambda: change(fresh, rng, 2))
    assert copy.digest() == fresh.digest(visible=True) and copy.revision == fresh.revision


def test_a_source_sending_too_much_is_refused_and_the_copy_left_empty() -> None:
    copy = ObjectTree(PermissiveSchema(), epoch=0)
    with pytest.raises(ResyncError, match="more than 50 leaves"):
        run(ResyncPlan(copy, ROOT, synced=False, max_leaves=50), new_station_tree("cs-1"))
    assert len(copy) == 0


def test_an_answer_without_epoch_and_revision_is_refused() -> None:
    copy = ObjectTree(PermissiveSchema(), epoch=0)
    plan = ResyncPlan(copy, ROOT, synced=False, source="cs-9")
    with pytest.raises(ResyncError, match="cs-9 did not say which epoch"):
        plan.take(PropertyTreeDiscoveryResponse())
    with pytest.raises(ResyncError, match="cs-9 did not say"):
        plan.next_request()  # a failed plan never looks done
    with pytest.raises(ResyncError, match="nothing was asked"):
        plan.take(PropertyTreeDiscoveryResponse())
