"""The PEBC types refuse what cannot be meant, and say where."""

from __future__ import annotations

import itertools

import pytest
from hypothesis import given
from hypothesis import strategies as st
from pydantic import ValidationError

from object_model.pebc import (
    EnergyConstraints,
    EnergyTransferPlan,
    EnvelopeElement,
    ForecastValue,
    PowerConstraints,
    PowerRange,
    PowerRangeEnvelope,
    envelope_problems,
)
from object_model.station import new_station_tree
from object_model.types import ComplexType


def r(lo: float, hi: float) -> PowerRange:
    return PowerRange(lower_w=lo, upper_w=hi)


IEC61851_3PH = PowerConstraints(upper_ranges=[r(0, 0), r(4140, 22080)], lower_ranges=[r(0, 0)])


def element(start: int, lo: float, hi: float) -> dict:
    return {"start_us": start, "lower_w": lo, "upper_w": hi}


def test_the_on_off_gap_of_a_basic_ev_is_part_of_its_constraints() -> None:
    pc = IEC61851_3PH
    assert (pc.min_on_w, pc.max_w, pc.forced_w) == (4140, 22080, 0)
    assert pc.allows_upper(0) and pc.allows_upper(5000) and not pc.allows_upper(3000)
    assert pc.upper_at_most(3000) == 0 and pc.upper_at_most(9000) == 9000
    assert pc.upper_at_most(50_000) == 22080


def test_limits_may_both_sit_on_one_side_of_zero() -> None:
    envelope = PowerRangeEnvelope(elements=[EnvelopeElement(start_us=0, lower_w=3000,
                                                            upper_w=5000)], end_us=10)
    v2g = PowerConstraints(upper_ranges=[r(-11000, 11000)], lower_ranges=[r(-11000, 11000)])
    assert envelope_problems(envelope, v2g) == []
    problems = envelope_problems(envelope, IEC61851_3PH)
    assert problems == ["element 0: lower_w 3000 W is outside the allowed lower ranges [0, 0]"]


@pytest.mark.parametrize(("value", "says"), [
    ({"elements": [element(0, 6000, 5000)], "end_us": 9}, "lower_w 6000 is above upper_w 5000"),
    ({"elements": [element(5, 0, 1), element(4, 0, 1)], "end_us": 9}, "strict time order"),
    ({"elements": [element(5, 0, 1)], "end_us": 5}, "end_us 5 is not after"),
    ({"elements": [element(0, 0, 1e12)], "end_us": 9}, "less than or equal to 100000000"),
    ({"elements": [element(0, 0, float("nan"))], "end_us": 9}, "finite number"),
    ({"elements": [], "end_us": 9}, "at least 1 item"),
    ({"elements": [{**element(0, 0, 5), "per_phase": [
        {"lower_w": 0, "upper_w": 1}] * 3}], "end_us": 9}, "add up to"),
])
def test_a_bad_envelope_is_refused_saying_where(value: dict, says: str) -> None:
    with pytest.raises(ValidationError) as caught:
        PowerRangeEnvelope.model_validate(value)
    assert says in str(caught.value)


def test_a_bad_envelope_written_to_a_station_tree_changes_nothing() -> None:
    tree = new_station_tree("cs-1", evse_count=1, now_us=0)
    revision = tree.revision
    with pytest.raises(Exception) as caught:
        tree.write("evse/1/energy/envelope", {"elements": [element(0, 6000, 5000)], "end_us": 9})
    assert caught.value.code == "invalid_value"  # type: ignore[attr-defined]
    assert caught.value.details["errors"][0]["loc"] == ["elements", "0"]  # type: ignore[attr-defined]
    assert tree.revision == revision and "evse/1/energy/envelope" not in tree


def test_ranges_must_be_ascending_and_disjoint() -> None:
    with pytest.raises(ValidationError, match="ascending order and disjoint"):
        PowerConstraints(upper_ranges=[r(4000, 9000), r(0, 5000)], lower_ranges=[r(0, 0)])
    with pytest.raises(ValidationError, match="lower_w 5 is above upper_w 1"):
        r(5, 1)


def test_energy_constraints_need_a_window_and_min_below_max() -> None:
    with pytest.raises(ValidationError, match="min_wh 5 is above max_wh 1"):
        EnergyConstraints(valid_from_us=0, valid_until_us=9, min_wh=5, max_wh=1)
    with pytest.raises(ValidationError, match="valid_until_us must be after"):
        EnergyConstraints(valid_from_us=9, valid_until_us=9, min_wh=0, max_wh=1)


def test_a_plan_looks_up_its_element_in_force() -> None:
    plan = EnergyTransferPlan(elements=[
        {"start_us": 10, "power": {"expected_w": 5}},
        {"start_us": 20, "power": {"expected_w": 7, "upper_95_w": 9}}], end_us=30)
    assert plan.at(9) is None and plan.at(30) is None
    assert plan.at(10).expected_w == 5 and plan.at(29).band(95) == (7, 9)  # type: ignore[union-attr]


BANDS = ("lower_limit_w", "lower_95_w", "lower_68_w", "expected_w",
         "upper_68_w", "upper_95_w", "upper_limit_w")


@given(st.lists(st.floats(-1e6, 1e6), min_size=7, max_size=7),
       st.lists(st.booleans(), min_size=7, max_size=7))
def test_bands_are_accepted_exactly_when_nested(values: list[float], keep: list[bool]) -> None:
    keep[3] = True  # the expected value is required
    given_ = {name: v for name, v, k in zip(BANDS, values, keep, strict=True) if k}
    ordered = [given_[n] for n in BANDS if n in given_]
    nested = all(a <= b + 1e-6 for a, b in itertools.pairwise(ordered))
    try:
        value = ForecastValue(**given_)
    except ValidationError as exc:
        assert not nested and "bands are not nested" in str(exc)
    else:
        assert nested
        for pct in (68, 95, 100):
            low, high = value.band(pct)
            # compared as the validator compares (a <= b + tolerance): moving the tolerance to
            # the other side rounds differently (1e-6 - 1e-6 > -5e-176 is false, yet the
            # validator rightly took -5e-176 as 1e-6 within tolerance)
            assert low <= value.expected_w + 1e-6 and value.expected_w <= high + 1e-6


def test_the_complex_type_reports_every_error_with_its_location() -> None:
    kind = ComplexType(EnergyTransferPlan)
    with pytest.raises(Exception) as caught:
        kind.validate({"elements": [{"start_us": 0, "power": {
            "expected_w": 5, "upper_68_w": 9, "upper_95_w": 7}}], "end_us": 5})
    assert "bands are not nested: upper_68_w 9 is above upper_95_w 7" in str(caught.value)
