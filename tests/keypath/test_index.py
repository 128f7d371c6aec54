"""PatternIndex agrees with brute-force matching, through adds and removes."""

from __future__ import annotations

from collections import Counter

import pytest
from hypothesis import given
from hypothesis import strategies as st

from keypath import GLOBSTAR, KeyPath, KeyPattern, PatternIndex
from tests.keypath.strategies import small_paths, small_patterns


@given(st.lists(small_patterns, max_size=30), st.lists(small_paths, min_size=1, max_size=10))
def test_match_equals_brute_force(patterns: list[KeyPattern], probes: list[KeyPath]) -> None:
    index: PatternIndex[int] = PatternIndex()
    for i, p in enumerate(patterns):
        index.add(p, i)
    for path in probes:
        expected = Counter(i for i, p in enumerate(patterns) if p.matches(path))
        assert Counter(index.match(path)) == expected
        assert index.any_match(path) == bool(expected)


@given(st.lists(small_patterns, max_size=30), small_paths,
       st.lists(small_paths, min_size=1, max_size=10))
def test_matches_all_below_promises_a_match_for_every_path_below(
        patterns: list[KeyPattern], path: KeyPath, tails: list[KeyPath]) -> None:
    index: PatternIndex[int] = PatternIndex()
    for i, p in enumerate(patterns):
        index.add(p, i)
    if index.matches_all_below(path):
        assert index.any_match(path)
        for tail in tails:
            assert index.any_match(path / tail)
    # and it is said whenever a pattern ending in ``**`` matches the path itself
    assert index.matches_all_below(path) == any(
        p.segments[-1:] == (GLOBSTAR,) and p.matches(path) for p in patterns)


@given(
    st.lists(st.tuples(small_patterns, st.integers(0, 3)), max_size=30),
    st.data(),
    st.lists(small_paths, min_size=1, max_size=8),
)
def test_match_equals_brute_force_after_removals(
    regs: list[tuple[KeyPattern, int]], data: st.DataObject, probes: list[KeyPath]
) -> None:
    index: PatternIndex[int] = PatternIndex()
    for p, payload in regs:
        index.add(p, payload)
    remaining = list(regs)
    for _ in range(data.draw(st.integers(0, len(regs)))):
        victim = data.draw(st.sampled_from(remaining))
        index.remove(*victim)
        remaining.remove(victim)
    assert len(index) == len(remaining)
    for path in probes:
        expected = Counter(payload for p, payload in remaining if p.matches(path))
        assert Counter(index.match(path)) == expected


def test_removing_everything_leaves_an_empty_trie() -> None:
    index: PatternIndex[str] = PatternIndex()
    for text in ("evse/*/status", "evse/**", "**/x", "a/b/c"):
        index.add(text, text)
    for text in ("evse/*/status", "evse/**", "**/x", "a/b/c"):
        index.remove(text, text)
    assert len(index) == 0
    assert index._root.is_empty()
    assert index.match(KeyPath.parse("evse/1/status")) == []


def test_remove_of_unknown_registration_is_a_key_error() -> None:
    index: PatternIndex[int] = PatternIndex()
    index.add("a/*", 1)
    with pytest.raises(KeyError):
        index.remove("a/*", 2)
    with pytest.raises(KeyError):
        index.remove("b/*", 1)


def test_matching_patterns_are_reported() -> None:
    index: PatternIndex[int] = PatternIndex()
    index.add("evse/*/status", 1)
    index.add("evse/*/status", 2)
    index.add("**/status", 3)
    found = index.matching_patterns(KeyPath.parse("evse/1/status"))
    assert sorted(map(str, found)) == ["**/status", "evse/*/status"]
    assert sorted(index.match(KeyPath.parse("evse/1/status"))) == [1, 2, 3]
