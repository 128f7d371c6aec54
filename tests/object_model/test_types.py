"""Native simple types: ranges, strictness, normalisation and text parsing."""

from __future__ import annotations

import math
from datetime import UTC, datetime, timedelta, timezone

import pytest

from object_model import ErrorCode, ModelError
from object_model.types import (
    BOOL,
    DURATION,
    INT_RANGES,
    TIMESTAMP,
    BytesType,
    EnumType,
    IntType,
    float32,
    float64,
    from_micros,
    string,
    to_micros,
)


def code_of(fn, *args) -> ErrorCode:  # type: ignore[no-untyped-def]
    with pytest.raises(ModelError) as info:
        fn(*args)
    return info.value.code


@pytest.mark.parametrize("native", sorted(INT_RANGES))
def test_integer_ranges_are_exact(native: str) -> None:
    lo, hi = INT_RANGES[native]
    t = IntType(native)
    assert t.validate(lo) == lo and t.validate(hi) == hi
    assert code_of(t.validate, lo - 1) is ErrorCode.OUT_OF_RANGE
    assert code_of(t.validate, hi + 1) is ErrorCode.OUT_OF_RANGE
    assert code_of(t.validate, True) is ErrorCode.WRONG_TYPE
    assert code_of(t.validate, 1.0) is ErrorCode.WRONG_TYPE
    assert code_of(t.validate, "1") is ErrorCode.WRONG_TYPE


def test_narrowed_integers_and_text() -> None:
    t = IntType("uint8", 1, 3)
    assert t.validate(3) == 3
    assert code_of(t.validate, 0) is ErrorCode.OUT_OF_RANGE
    assert t.parse_text(" 2 ") == 2
    assert code_of(t.parse_text, "two") is ErrorCode.WRONG_TYPE
    with pytest.raises(ValueError):
        IntType("uint8", -1)


def test_floats_round_check_and_accept_ints() -> None:
    f32, f64 = float32(), float64(0, 10)
    assert f32.validate(0.1) == pytest.approx(0.1) and f32.validate(0.1) != 0.1
    assert f64.validate(0.1) == 0.1
    assert f64.validate(3) == 3.0 and type(f64.validate(3)) is float
    assert code_of(f32.validate, 1e39) is ErrorCode.OUT_OF_RANGE
    assert code_of(f64.validate, math.nan) is ErrorCode.OUT_OF_RANGE
    assert code_of(f64.validate, math.inf) is ErrorCode.OUT_OF_RANGE
    assert code_of(f64.validate, 10.5) is ErrorCode.OUT_OF_RANGE
    assert code_of(f64.validate, False) is ErrorCode.WRONG_TYPE
    assert f64.parse_text("2.5") == 2.5


def test_bool_is_strict() -> None:
    assert BOOL.validate(True) is True
    assert code_of(BOOL.validate, 1) is ErrorCode.WRONG_TYPE
    assert BOOL.parse_text("on") is True and BOOL.parse_text("False") is False
    assert code_of(BOOL.parse_text, "maybe") is ErrorCode.WRONG_TYPE


def test_strings_bytes_enums() -> None:
    s = string(5, pattern=r"[a-z]+")
    assert s.validate("abc") == "abc"
    assert code_of(s.validate, "abcdef") is ErrorCode.OUT_OF_RANGE
    assert code_of(s.validate, "ABC") is ErrorCode.INVALID_VALUE
    assert code_of(s.validate, 3) is ErrorCode.WRONG_TYPE
    b = BytesType(4)
    assert b.validate(bytearray(b"ab")) == b"ab"
    assert code_of(b.validate, b"12345") is ErrorCode.OUT_OF_RANGE
    assert b.parse_text("0aff") == b"\x0a\xff"
    e = EnumType(["On", "Off"])
    assert e.validate("On") == "On"
    assert code_of(e.validate, "on") is ErrorCode.OUT_OF_RANGE


def test_timestamps_and_durations() -> None:
    moment = datetime(2026, 11, 21, 12, 0, 0, 5, tzinfo=UTC)
    micros = to_micros(moment)
    assert from_micros(micros) == moment
    assert TIMESTAMP.validate(moment) == micros
    cet = moment.astimezone(timezone(timedelta(hours=1)))
    assert TIMESTAMP.validate(cet) == micros
    assert TIMESTAMP.parse_text("2026-11-21T12:00:00.000005Z") == micros
    assert code_of(TIMESTAMP.validate, datetime(2026, 1, 1)) is ErrorCode.INVALID_VALUE
    assert code_of(TIMESTAMP.validate, -1) is ErrorCode.OUT_OF_RANGE
    assert DURATION.validate(timedelta(seconds=1.5)) == 1_500_000
    assert DURATION.parse_text("250ms") == 250_000
    assert DURATION.parse_text("2min") == 120_000_000
    assert code_of(DURATION.validate, -5) is ErrorCode.OUT_OF_RANGE
    assert code_of(DURATION.parse_text, "soon") is ErrorCode.WRONG_TYPE
