"""KeyPath: parsing, formatting, escaping, operators and errors."""

from __future__ import annotations

import pickle

import pytest
from hypothesis import given

from keypath import KeyPath, KeyPathError, local_name, namespace_of
from keypath.path import MAX_DEPTH, MAX_SEGMENT_CHARS
from tests.keypath.strategies import paths


@given(paths)
def test_every_path_round_trips_through_its_text(path: KeyPath) -> None:
    assert KeyPath.parse(str(path)) == path
    assert KeyPath.parse(str(path)).segments == path.segments


@given(paths)
def test_parsed_text_formats_back_identically(path: KeyPath) -> None:
    text = str(path)
    assert str(KeyPath.parse(text)) == text


@given(paths, paths)
def test_order_equality_and_hash_agree_with_segments(a: KeyPath, b: KeyPath) -> None:
    assert (a == b) == (a.segments == b.segments)
    assert (a < b) == (a.segments < b.segments)
    if a == b:
        assert hash(a) == hash(b)


@pytest.mark.parametrize(
    ("segment", "text"),
    [
        ("a/b", "a~1b"),
        ("*", "~2"),
        ("**", "~2~2"),
        ("~", "~0"),
        ("~1", "~01"),
        ("x*y/z~", "x~2y~1z~0"),
        ("com.acme:coolingLoop", "com.acme:coolingLoop"),
        ("obis:1-0:1.8.0", "obis:1-0:1.8.0"),
        ("iec61850:MMXU1", "iec61850:MMXU1"),
        ("with space", "with space"),
        ("Ladesäule 7", "Ladesäule 7"),
    ],
)
def test_escaping_of_special_characters(segment: str, text: str) -> None:
    path = KeyPath("evse", segment)
    assert str(path) == f"evse/{text}"
    assert KeyPath.parse(f"evse/{text}") == path


def test_segments_operators_and_relations() -> None:
    p = KeyPath.parse("evse/1/connector/2/status")
    assert p.segments == ("evse", "1", "connector", "2", "status")
    assert p.parent == KeyPath.parse("evse/1/connector/2")
    assert p.parent / "type" == KeyPath.parse("evse/1/connector/2/type")
    assert KeyPath.parse("evse") / 1 / "status" == KeyPath("evse", "1", "status")
    assert KeyPath.parse("evse") / KeyPath.parse("1/status") == KeyPath.parse("evse/1/status")
    assert KeyPath.parse("evse/1").is_prefix_of(p)
    assert p.is_prefix_of(p)
    assert not KeyPath.parse("evse/10").is_prefix_of(p)
    assert not p.is_prefix_of(KeyPath.parse("evse/1"))
    assert KeyPath.root().is_prefix_of(p)
    assert p.relative_to(KeyPath.parse("evse/1")) == KeyPath.parse("connector/2/status")
    assert p.name == "status" and len(p) == 5 and p[1] == "1" and p[:2] == KeyPath("evse", "1")
    assert str(KeyPath.root()) == "" and KeyPath.parse("") == KeyPath.root()
    assert sorted([KeyPath.parse("b"), KeyPath.parse("a/b"), KeyPath.parse("a")]) == [
        KeyPath.parse("a"), KeyPath.parse("a/b"), KeyPath.parse("b")]
    assert pickle.loads(pickle.dumps(p)) == p


def test_namespaces_of_segments() -> None:
    assert namespace_of("com.acme:coolingLoop") == "com.acme"
    assert local_name("com.acme:coolingLoop") == "coolingLoop"
    assert namespace_of("obis:1-0:1.8.0") == "obis"
    assert local_name("obis:1-0:1.8.0") == "1-0:1.8.0"
    assert namespace_of("iec61850:MMXU1") == "iec61850"
    assert namespace_of("status") is None
    assert namespace_of(":x") is None
    assert KeyPath.parse("evse/1/power_module/com.acme:coolingLoop").namespace == "com.acme"


@pytest.mark.parametrize(
    ("text", "position", "reason"),
    [
        ("/evse", 0, "leading '/'"),
        ("evse/", 5, "trailing '/'"),
        ("evse//1", 5, "empty segment"),
        ("evse/~3", 5, "'~' must be followed by"),
        ("evse/ab~", 7, "'~' must be followed by"),
        ("evse/*/status", 5, "wildcard"),
        ("evse/a\x00b", 6, "control character U+0000"),
        ("evse/a\nb", 6, "control character U+000A"),
    ],
)
def test_parse_errors_name_position_and_reason(text: str, position: int, reason: str) -> None:
    with pytest.raises(KeyPathError) as info:
        KeyPath.parse(text)
    assert info.value.position == position
    assert reason in info.value.reason
    assert info.value.code == "invalid_keypath"


def test_limits_are_enforced() -> None:
    with pytest.raises(KeyPathError, match="deeper than"):
        KeyPath.parse("/".join(["a"] * (MAX_DEPTH + 1)))
    with pytest.raises(KeyPathError, match="longer than"):
        KeyPath("x" * (MAX_SEGMENT_CHARS + 1))
    with pytest.raises(KeyPathError, match="empty segment"):
        KeyPath("a", "")
    with pytest.raises(KeyPathError):
        KeyPath.parse(123)  # type: ignore[arg-type]
    with pytest.raises(KeyPathError, match="root has no parent"):
        _ = KeyPath.root().parent


def test_a_text_parsed_again_gives_the_same_path_and_bad_input_still_fails() -> None:
    first = KeyPath.parse("evse/1/meter/obis:1-0:1.8.0")
    again = KeyPath.parse("evse/1/meter/obis:1-0:1.8.0")
    assert again is first and str(again) == "evse/1/meter/obis:1-0:1.8.0"

    class Sly(str):
        def __hash__(self) -> int:
            return hash("evse/1/meter/obis:1-0:1.8.0")

    sly = KeyPath.parse(Sly("evse/2"))  # a str subclass is parsed, never looked up
    assert sly.segments == ("evse", "2")
    for bad in (["evse"], {"a": 1}, b"evse", 5, None):
        with pytest.raises(KeyPathError):
            KeyPath.parse(bad)  # type: ignore[arg-type]
    for bad_text in ("a//b", "a/*", "x\x00"):
        for _ in range(2):  # a refused text is not remembered
            with pytest.raises(KeyPathError):
                KeyPath.parse(bad_text)
