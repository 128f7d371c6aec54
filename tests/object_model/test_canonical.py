"""Canonical encoding: one byte string per value, decodable, bounded."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from object_model import ErrorCode, ModelError, canonical

scalars = st.one_of(
    st.none(), st.booleans(), st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=False), st.text(max_size=20), st.binary(max_size=20),
)
values = st.recursive(
    scalars,
    lambda inner: st.one_of(st.lists(inner, max_size=4),
                            st.dictionaries(st.text(max_size=5), inner, max_size=4)),
    max_leaves=20,
)


@given(values)
def test_round_trip(value: object) -> None:
    assert canonical.decode(canonical.encode(value)) == value


@given(st.dictionaries(st.text(max_size=5), st.integers(), max_size=6), st.randoms())
def test_dict_order_does_not_matter(d: dict, rnd) -> None:  # type: ignore[no-untyped-def]
    items = list(d.items())
    rnd.shuffle(items)
    assert canonical.encode(dict(items)) == canonical.encode(d)


def test_types_are_distinguished() -> None:
    encodings = {canonical.encode(v) for v in (1, 1.0, True, "1", b"1", [1], None, 0, False)}
    assert len(encodings) == 9


@pytest.mark.parametrize(
    "data", [b"", b"q", b"s\x05ab", b"l\xff\xff\xff\xff\x0f", b"i" + b"\xff" * 20, b"NN"]
)
def test_malformed_input_is_rejected(data: bytes) -> None:
    with pytest.raises(ModelError) as info:
        canonical.decode(data)
    assert info.value.code in (ErrorCode.MALFORMED_MESSAGE, ErrorCode.LIMIT_EXCEEDED)


def test_depth_is_bounded() -> None:
    deep: list = []
    for _ in range(canonical.MAX_DEPTH + 2):
        deep = [deep]
    with pytest.raises(ModelError) as info:
        canonical.encode(deep)
    assert info.value.code is ErrorCode.LIMIT_EXCEEDED
    with pytest.raises(ModelError):
        canonical.decode(b"l\x01" * (canonical.MAX_DEPTH + 2) + b"N")


def test_non_plain_values_are_rejected() -> None:
    with pytest.raises(ModelError) as info:
        canonical.encode(object())
    assert info.value.code is ErrorCode.WRONG_TYPE
    with pytest.raises(ModelError):
        canonical.encode({1: "x"})
