"""KeyPattern: wildcard semantics against a brute-force reference."""

from __future__ import annotations

import pytest
from hypothesis import given

from keypath import GLOBSTAR, STAR, KeyPath, KeyPathError, KeyPattern
from tests.keypath.strategies import paths, small_paths, small_patterns


def reference_match(pattern: tuple, segs: tuple) -> bool:
    """Obviously-correct recursive definition of the wildcard semantics."""
    if not pattern:
        return not segs
    head, rest = pattern[0], pattern[1:]
    if head is GLOBSTAR:
        return any(reference_match(rest, segs[i:]) for i in range(len(segs) + 1))
    if not segs:
        return False
    if head is STAR or head == segs[0]:
        return reference_match(rest, segs[1:])
    return False


def reference_may_match_below(pattern: tuple, segs: tuple) -> bool:
    # some extension of segs matches: try extending with the pattern's own remaining literals
    if reference_match(pattern, segs):
        return True
    for cut in range(len(pattern) + 1):
        tail = tuple("x" if s is STAR or s is GLOBSTAR else s for s in pattern[cut:])
        if reference_match(pattern, segs + tail):
            return True
    return False


@given(small_patterns, small_paths)
def test_matches_agrees_with_reference(pattern: KeyPattern, path: KeyPath) -> None:
    assert pattern.matches(path) == reference_match(pattern.segments, path.segments)


@given(small_patterns, small_paths)
def test_may_match_below_agrees_with_reference(pattern: KeyPattern, path: KeyPath) -> None:
    assert pattern.may_match_below(path) == reference_may_match_below(
        pattern.segments, path.segments
    )


@given(small_patterns)
def test_patterns_round_trip_through_text(pattern: KeyPattern) -> None:
    assert KeyPattern.parse(str(pattern)) == pattern


@given(paths)
def test_a_path_text_is_a_pattern_matching_exactly_that_path(path: KeyPath) -> None:
    pattern = KeyPattern.parse(str(path))
    assert pattern.is_literal
    assert pattern.matches(path)
    assert pattern.to_path() == path


@pytest.mark.parametrize(
    ("pattern", "path", "expected"),
    [
        ("evse/*/status", "evse/1/status", True),
        ("evse/*/status", "evse/1/connector/1/status", False),
        ("evse/**/status", "evse/1/connector/1/status", True),
        ("evse/**/status", "evse/status", True),
        ("**", "", True),
        ("**", "a/b/c", True),
        ("", "", True),
        ("", "a", False),
        ("evse/**", "evse", True),
        ("**/obis:1-0:1.8.0", "evse/2/meter/obis:1-0:1.8.0", True),
        ("evse/~2", "evse/~2", True),
        ("evse/~2", "evse/1", False),
    ],
)
def test_wildcard_examples(pattern: str, path: str, expected: bool) -> None:
    assert KeyPattern.parse(pattern).matches(KeyPath.parse(path)) is expected


def test_globstar_runs_normalise_and_prefix() -> None:
    assert KeyPattern.parse("a/**/**/b") == KeyPattern.parse("a/**/b")
    assert KeyPattern.parse("evse/*/meter/**").literal_prefix == KeyPath.parse("evse")
    assert not KeyPattern.parse("evse/*").is_literal


@pytest.mark.parametrize(
    ("text", "position"),
    [("evse/1*", 6), ("evse/***", 5), ("a/*b/c", 2), ("a//b", 2), ("a/~x", 2)],
)
def test_pattern_errors_name_the_position(text: str, position: int) -> None:
    with pytest.raises(KeyPathError) as info:
        KeyPattern.parse(text)
    assert info.value.position == position
