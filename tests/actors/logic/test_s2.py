"""The S2 mapping: PEBC messages built with s2-python become our PEBC values with the right
numbers; what we emit is valid S2; what is not S2, or not a valid PEBC value, is refused with
a specific INVALID_MESSAGE."""

from __future__ import annotations

import json
import random
import uuid
from datetime import UTC, datetime, timedelta, timezone

import pytest
from hypothesis import given
from hypothesis import strategies as st
from s2python.common import (
    CommodityQuantity,
    Duration,
    NumberRange,
    PowerForecast,
    ReceptionStatus,
    ReceptionStatusValues,
)
from s2python.pebc import (
    PEBCAllowedLimitRange,
    PEBCEnergyConstraint,
    PEBCInstruction,
    PEBCPowerConstraints,
    PEBCPowerEnvelope,
    PEBCPowerEnvelopeConsequenceType,
    PEBCPowerEnvelopeElement,
    PEBCPowerEnvelopeLimitType,
)
from s2python.s2_parser import S2Parser

from actors.logic.energy import s2
from object_model import ErrorCode, ModelError
from object_model.pebc import (
    Consequence,
    EnergyTransferPlan,
    EnvelopeElement,
    ForecastValue,
    PlanElement,
    PowerRange,
    PowerRangeEnvelope,
)

T0 = datetime(2025, 6, 1, 12, 0, tzinfo=UTC)
T0_US = 1_748_779_200_000_000
MIN = 60_000  # ms
Q = CommodityQuantity
UPPER, LOWER = PEBCPowerEnvelopeLimitType.UPPER_LIMIT, PEBCPowerEnvelopeLimitType.LOWER_LIMIT


def ids() -> dict[str, uuid.UUID]:
    return {"message_id": uuid.uuid4(), "id": uuid.uuid4()}


def envelope(quantity: Q, *elements: tuple[int, float, float]) -> PEBCPowerEnvelope:
    """An S2 envelope of ``(duration_ms, lower, upper)`` elements."""
    return PEBCPowerEnvelope(id=str(uuid.uuid4()), commodity_quantity=quantity,
                             power_envelope_elements=[
                                 PEBCPowerEnvelopeElement(duration=Duration(root=ms),
                                                          lower_limit=low, upper_limit=high)
                                 for ms, low, high in elements])


def instruction(*envelopes: PEBCPowerEnvelope, at: datetime = T0) -> PEBCInstruction:
    return PEBCInstruction(**ids(), execution_time=at, abnormal_condition=False,
                           power_constraints_id=str(uuid.uuid4()),
                           power_envelopes=list(envelopes))


def limit(quantity: Q, kind: PEBCPowerEnvelopeLimitType, low: float, high: float,
          abnormal: bool = False) -> PEBCAllowedLimitRange:
    return PEBCAllowedLimitRange(commodity_quantity=quantity, limit_type=kind,
                                 range_boundary=NumberRange(start_of_range=low,
                                                            end_of_range=high),
                                 abnormal_condition_only=abnormal)


def constraints(*ranges: PEBCAllowedLimitRange, consequence: str = "DEFER"
                ) -> PEBCPowerConstraints:
    return PEBCPowerConstraints(**ids(), valid_from=T0,
                                consequence_type=PEBCPowerEnvelopeConsequenceType(consequence),
                                allowed_limit_ranges=list(ranges))


def pairs(ranges: list[PowerRange]) -> list[tuple[float, float]]:
    return [(r.lower_w, r.upper_w) for r in ranges]


def refused(text: str) -> ModelError:
    with pytest.raises(ModelError) as caught:
        s2.to_pebc(s2.parse_s2(text))
    assert caught.value.code is ErrorCode.INVALID_MESSAGE
    return caught.value


# -- S2 to ours -----------------------------------------------------------------------------


def test_power_constraints_become_sorted_merged_ranges_without_abnormal_ones() -> None:
    message = constraints(
        limit(Q.ELECTRIC_POWER_3_PHASE_SYMMETRIC, UPPER, 11_000, 22_000),
        limit(Q.ELECTRIC_POWER_3_PHASE_SYMMETRIC, UPPER, 0, 0),
        limit(Q.ELECTRIC_POWER_3_PHASE_SYMMETRIC, UPPER, 4_000, 12_000),  # overlaps: merged
        limit(Q.ELECTRIC_POWER_3_PHASE_SYMMETRIC, UPPER, 22_000, 44_000, abnormal=True),
        limit(Q.ELECTRIC_POWER_3_PHASE_SYMMETRIC, LOWER, 0, 0),
        limit(Q.ELECTRIC_POWER_3_PHASE_SYMMETRIC, LOWER, -5_000, -1_000),
        consequence="VANISH")
    pc = s2.to_pebc(s2.parse_s2(message.to_json()))
    assert pairs(pc.upper_ranges) == [(0, 0), (4_000, 22_000)]
    assert pairs(pc.lower_ranges) == [(-5_000, -1_000), (0, 0)]
    assert pc.consequence == Consequence.VANISH
    assert pc.phases == 3


def test_equal_phase_ranges_become_totals_and_unequal_ones_are_refused() -> None:
    phases = (Q.ELECTRIC_POWER_L1, Q.ELECTRIC_POWER_L2, Q.ELECTRIC_POWER_L3)
    same = [r for q in phases for r in (limit(q, UPPER, 1_380, 7_360), limit(q, LOWER, 0, 0))]
    pc = s2.power_constraints_from_s2(constraints(*same))
    assert pairs(pc.upper_ranges) == [(4_140, 22_080)]
    assert pairs(pc.lower_ranges) == [(0, 0)]
    single = s2.power_constraints_from_s2(constraints(limit(Q.ELECTRIC_POWER_L1, UPPER, 0, 7_360),
                                                      limit(Q.ELECTRIC_POWER_L1, LOWER, 0, 0)))
    assert single.phases == 1 and pairs(single.upper_ranges) == [(0, 7_360)]
    unequal = [*same, limit(Q.ELECTRIC_POWER_L3, UPPER, 8_000, 9_000)]
    error = refused(constraints(*unequal).to_json())
    assert "differ between phases" in error.text


def test_constraints_with_only_abnormal_upper_ranges_are_refused() -> None:
    q = Q.ELECTRIC_POWER_3_PHASE_SYMMETRIC
    error = refused(constraints(limit(q, UPPER, 0, 50_000, abnormal=True), limit(q, LOWER, 0, 0),
                                limit(q, UPPER, 0, 1, abnormal=True)).to_json())
    assert "UPPER_LIMIT" in error.text and error.details["message_type"] == "PEBC.PowerConstraints"


def test_an_energy_constraint_becomes_energies_over_its_window() -> None:
    ec = PEBCEnergyConstraint(**ids(), valid_from=T0, valid_until=T0 + timedelta(hours=2),
                              lower_average_power=1_500.0, upper_average_power=11_000.0,
                              commodity_quantity=Q.ELECTRIC_POWER_3_PHASE_SYMMETRIC)
    ours = s2.to_pebc(s2.parse_s2(ec.to_json()))
    assert (ours.valid_from_us, ours.valid_until_us) == (T0_US, T0_US + 7_200_000_000)
    assert (ours.min_wh, ours.max_wh) == pytest.approx((3_000.0, 22_000.0))


def test_a_symmetric_instruction_gives_totals_from_its_execution_time() -> None:
    paris = timezone(timedelta(hours=2))
    message = instruction(envelope(Q.ELECTRIC_POWER_3_PHASE_SYMMETRIC,
                                   (15 * MIN, 0, 40_000), (0, 5, 5), (30 * MIN, 2_000, 25_000)),
                          at=datetime(2025, 6, 1, 14, 0, tzinfo=paris))
    env = s2.to_pebc(s2.parse_s2(message.to_json()))
    assert [(e.start_us, e.lower_w, e.upper_w, e.per_phase) for e in env.elements] == [
        (T0_US, 0, 40_000, None),  # the zero-length element is never in force: dropped
        (T0_US + 900_000_000, 2_000, 25_000, None)]
    assert env.end_us == T0_US + 45 * 60_000_000


def test_per_phase_envelopes_merge_their_boundaries_and_sum_to_totals() -> None:
    message = instruction(
        envelope(Q.ELECTRIC_POWER_L1, (MIN, 0, 10_000), (MIN, 0, 5_000)),
        envelope(Q.ELECTRIC_POWER_L2, (MIN // 2, 0, 10_000), (3 * MIN // 2, 1_000, 4_000)),
        envelope(Q.ELECTRIC_POWER_L3, (2 * MIN, 0, 7_000)))
    env = s2.envelope_from_instruction(message)
    assert [e.start_us - T0_US for e in env.elements] == [0, 30_000_000, 60_000_000]
    assert env.end_us == T0_US + 120_000_000
    assert [(e.lower_w, e.upper_w) for e in env.elements] == [
        (0, 27_000), (1_000, 21_000), (1_000, 16_000)]
    assert pairs(env.elements[2].per_phase or []) == [(0, 5_000), (1_000, 4_000), (0, 7_000)]


def test_instructions_without_a_meaning_for_the_grid_connection_are_refused() -> None:
    partial = instruction(envelope(Q.ELECTRIC_POWER_L1, (MIN, 0, 1)),
                          envelope(Q.ELECTRIC_POWER_L2, (MIN, 0, 1)))
    assert refused(partial.to_json()).details["quantities"] == [
        "ELECTRIC.POWER.L1", "ELECTRIC.POWER.L2"]
    uneven = instruction(*(envelope(q, (MIN, 0, 1)) for q in (Q.ELECTRIC_POWER_L1,
                                                                Q.ELECTRIC_POWER_L2)),
                         envelope(Q.ELECTRIC_POWER_L3, (2 * MIN, 0, 1)))
    assert "end at different times" in refused(uneven.to_json()).text


# -- ours to S2 -----------------------------------------------------------------------------


def test_a_plan_becomes_a_valid_s2_power_forecast_with_its_bands() -> None:
    plan = EnergyTransferPlan(end_us=T0_US + 3_600_000_000, elements=[
        PlanElement(start_us=T0_US, power=ForecastValue(
            expected_w=10_000, lower_68_w=8_000, upper_68_w=12_000, lower_95_w=5_000,
            upper_95_w=15_000, lower_limit_w=0, upper_limit_w=22_000)),
        PlanElement(start_us=T0_US + 900_000_000, power=ForecastValue(expected_w=4_000))])
    text = s2.to_json(s2.plan_to_power_forecast(plan, random.Random(1)))
    forecast = S2Parser.parse_as_any_message(text)  # s2-python's own reading
    assert isinstance(forecast, PowerForecast)
    PowerForecast.model_validate_json(text)
    assert forecast.start_time == T0
    assert [e.duration.root for e in forecast.elements] == [15 * MIN, 45 * MIN]
    first = forecast.elements[0].power_values[0]
    assert first.commodity_quantity is Q.ELECTRIC_POWER_3_PHASE_SYMMETRIC
    assert (first.value_lower_68PPR, first.value_expected, first.value_upper_68PPR) == (
        8_000, 10_000, 12_000)
    assert (first.value_lower_95PPR, first.value_upper_95PPR) == (5_000, 15_000)
    assert (first.value_lower_limit, first.value_upper_limit) == (0, 22_000)
    assert "value_upper_95PPR" not in json.loads(text)["elements"][1]["power_values"][0]


def test_an_envelope_round_trips_through_a_valid_instruction() -> None:
    env = PowerRangeEnvelope(end_us=T0_US + 7_200_000_000, elements=[
        EnvelopeElement(start_us=T0_US, lower_w=0, upper_w=30_000),
        EnvelopeElement(start_us=T0_US + 1_800_000_000, lower_w=-3_000, upper_w=11_000)])
    message = s2.envelope_to_instruction(env, str(uuid.uuid4()), random.Random(2))
    parsed = S2Parser.parse_as_any_message(message.to_json())
    assert s2.envelope_from_instruction(parsed) == env


@given(st.lists(st.tuples(st.integers(1, 10**7), st.floats(-1e5, 1e5), st.floats(0, 1e5)),
                min_size=1, max_size=20), st.booleans())
def test_any_whole_ms_envelope_round_trips(elements: list[tuple[int, float, float]],
                                           phased: bool) -> None:
    starts = [T0_US]
    for ms, _, _ in elements:
        starts.append(starts[-1] + ms * 1000)

    def element(start: int, low: float, width: float) -> EnvelopeElement:
        if not phased:
            return EnvelopeElement(start_us=start, lower_w=low, upper_w=low + width)
        phases = [PowerRange(lower_w=low / 4, upper_w=low / 4 + width / (i + 2)) for i in range(3)]
        return EnvelopeElement(start_us=start, per_phase=phases,
                               lower_w=sum(p.lower_w for p in phases),
                               upper_w=sum(p.upper_w for p in phases))

    env = PowerRangeEnvelope(end_us=starts[-1], elements=[
        element(start, low, width) for start, (_, low, width) in zip(starts, elements,
                                                                   strict=False)])
    message = S2Parser.parse_as_any_message(
        s2.envelope_to_instruction(env, str(uuid.uuid4()), random.Random(3)).to_json())
    back = s2.envelope_from_instruction(message)
    assert [e.start_us for e in back.elements] == [e.start_us for e in env.elements]
    assert back.end_us == env.end_us
    for a, b in zip(back.elements, env.elements, strict=True):
        assert (a.lower_w, a.upper_w) == pytest.approx((b.lower_w, b.upper_w), abs=1e-6)


def test_a_reception_status_is_valid_s2() -> None:
    subject = str(uuid.uuid4())
    status = S2Parser.parse_as_any_message(s2.reception_status(subject))
    assert isinstance(status, ReceptionStatus)
    assert (str(status.subject_message_id), status.status) == (subject, ReceptionStatusValues.OK)
    assert s2.reception_problem(status) is None
    refusal = s2.parse_s2(s2.reception_status(subject, ok=False, label="no"))
    assert s2.reception_problem(refusal) == "INVALID_CONTENT: no"


# -- refusals -------------------------------------------------------------------------------


def test_text_that_is_not_json_is_refused() -> None:
    error = refused('{"message_type": "PEBC.Instruction", ')
    assert "not JSON" in error.text and error.details["errors"]


@pytest.mark.parametrize("text", ['[1, 2]', '{"message_type": 7}', '{"id": "x"}',
                                  '{"message_type": "PEBC.Teleport"}'])
def test_unknown_message_types_are_refused(text: str) -> None:
    error = refused(text)
    assert "unknown message_type" in error.text and "PEBC.Instruction" in error.details["known"]


def test_a_field_of_the_wrong_type_is_refused_with_its_location() -> None:
    raw = json.loads(instruction(envelope(Q.ELECTRIC_POWER_L1, (MIN, 0, 1))).to_json())
    raw["power_envelopes"][0]["power_envelope_elements"][0]["duration"] = -5
    error = refused(json.dumps(raw))
    assert error.details["message_type"] == "PEBC.Instruction"
    assert error.details["errors"][0]["location"] == (
        "power_envelopes.0.power_envelope_elements.0.duration")


def test_required_fields_that_s2python_lets_default_are_still_required() -> None:
    raw = json.loads(instruction(envelope(Q.ELECTRIC_POWER_L1, (MIN, 0, 1))).to_json())
    del raw["power_envelopes"]
    assert PEBCInstruction.model_validate(raw)  # s2-python 0.11.1 takes it
    error = refused(json.dumps(raw))
    assert {e["location"] for e in error.details["errors"]} == {"power_envelopes"}


def test_s2pythons_own_rules_are_applied_too() -> None:
    raw = json.loads(constraints(limit(Q.ELECTRIC_POWER_L1, UPPER, 0, 1),
                                 limit(Q.ELECTRIC_POWER_L1, LOWER, 0, 0)).to_json())
    raw["allowed_limit_ranges"][1]["limit_type"] = "UPPER_LIMIT"  # no lower range left
    error = refused(json.dumps(raw))
    assert "LOWER_LIMIT" in error.text


def test_an_instruction_whose_lower_limit_is_above_its_upper_is_refused() -> None:
    bad = instruction(envelope(Q.ELECTRIC_POWER_3_PHASE_SYMMETRIC, (MIN, 0, 10),
                               (MIN, 9_000, 2_000)))
    assert S2Parser.parse_as_any_message(bad.to_json())  # s2-python lets it through
    error = refused(bad.to_json())
    assert "maps to an invalid PEBC value" in error.text
    assert error.details["errors"][0]["location"] == "elements.1"
    assert "lower_w 9000 is above upper_w 2000" in error.details["errors"][0]["message"]


def test_s2_messages_other_than_pebc_are_refused() -> None:
    status = s2.reception_status(str(uuid.uuid4()))
    error = refused(status)
    assert error.details == {"message_type": "ReceptionStatus", "handled": list(s2.PEBC_TYPES)}
