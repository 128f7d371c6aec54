"""The resource manager over the in-memory transport, with real SQLite stores: the envelope
follows the grid's inputs over (fake) time, reaches a real local CSMS within moments of an
operator's curtailment, one push at a time; S2 messages change its inputs or are refused
without changing anything; alerts are kept; plans go on to the CEM as S2; inputs persist."""

from __future__ import annotations

import asyncio
import json
import logging
import time
import uuid
from datetime import UTC, datetime
from typing import Any

import pytest
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

from actors.csms.local import LocalCsms
from actors.csms.settings import LocalSettings
from actors.logic.energy.site_envelope import site_envelope
from actors.resource_manager import actor as rm_module
from actors.resource_manager.actor import (
    ResourceManager,
    ResourceManagerSettings,
)
from actors.runtime.actor import Actor, Context, handles
from actors.testing import FakeClock, World, until
from keypath import KeyPath
from object_model import ErrorCode, MessageBase, ModelError, Role
from object_model.energy_messages import AlertCode, AlertEvse, EnergyAlert, S2Message
from object_model.errors import BusyError
from object_model.messages import PropertyValueWrite, PropertyValueWriteResponse, WriteItem
from object_model.pebc import (
    EnergyTransferPlan,
    EnvelopeElement,
    ForecastValue,
    PlanElement,
    PowerConstraints,
    PowerRange,
    PowerRangeEnvelope,
)

US = 1_000_000
T0 = 1_748_779_200 * US  # 2025-06-01 12:00 UTC
MIN = 60 * US
Q = CommodityQuantity.ELECTRIC_POWER_3_PHASE_SYMMETRIC


class Operator(Actor):
    role = Role.OPERATOR


class Cem(Actor):
    """A CEM speaking S2: it answers every S2 message with an OK ReceptionStatus."""

    role = Role.RESOURCE_MANAGER

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.received: list[Any] = []

    @handles(S2Message)
    async def on_s2(self, message: S2Message, ctx: Context) -> S2Message:
        parsed = S2Parser.parse_as_any_message(message.payload)
        self.received.append(parsed)
        return S2Message(payload=ReceptionStatus(subject_message_id=parsed.message_id,
                                                 status=ReceptionStatusValues.OK).to_json())


class SiteStub(Actor):
    """A local CSMS that records the grid writes it is sent; ``gate`` holds them up and
    ``failures`` refuses the first ones."""

    role = Role.LOCAL_CSMS

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.writes: list[PropertyValueWrite] = []
        self.gate = asyncio.Event()
        self.gate.set()
        self.failures = 0
        self.arrived = 0

    @handles(PropertyValueWrite)
    async def on_write(self, message: PropertyValueWrite, ctx: Context) -> MessageBase:
        self.arrived += 1
        await self.gate.wait()
        if self.failures:
            self.failures -= 1
            raise BusyError("not now")
        self.writes.append(message)
        return PropertyValueWriteResponse(epoch=1, revision=len(self.writes), changed=True)

    def latest(self, name: str) -> Any:
        items = {str(w.path): w for w in self.writes[-1].writes}
        item = items[f"energy/grid/{name}"]
        return None if item.delete else item.value


async def start_rm(world: World, clock: Any = None, **options: Any) -> ResourceManager:
    """The RM ``rm``: operator ``op`` and CEM ``cem`` trusted, no local CSMS unless given."""
    options = {"site_csms": None, "trusted": {"op": Role.OPERATOR, "cem": Role.RESOURCE_MANAGER},
               "clock_skew_s": 0.0, **options}
    return await world.actor(ResourceManager(
        "rm", await world.endpoint("rm"), store=await world.store("rm"),
        settings=ResourceManagerSettings(**options), clock=clock))


def limits(envelope: Any) -> list[tuple[int, float, float]]:
    """``(start, lower, upper)`` of each element, starts relative to T0."""
    env = PowerRangeEnvelope.model_validate(envelope)
    return [(e.start_us - T0, e.lower_w, e.upper_w) for e in env.elements]


def write(path: str, value: Any = None, *, delete: bool = False) -> PropertyValueWrite:
    return PropertyValueWrite(writes=[WriteItem(path=KeyPath.parse(path), value=value,
                                                delete=delete)])


def s2_envelope(*elements: tuple[int, float, float]) -> PEBCPowerEnvelope:
    return PEBCPowerEnvelope(id=str(uuid.uuid4()), commodity_quantity=Q, power_envelope_elements=[
        PEBCPowerEnvelopeElement(duration=Duration(root=ms), lower_limit=low, upper_limit=high)
        for ms, low, high in elements])


def s2_instruction(*elements: tuple[int, float, float], at_us: int = T0) -> PEBCInstruction:
    return PEBCInstruction(message_id=uuid.uuid4(), id=uuid.uuid4(),
                           execution_time=datetime.fromtimestamp(at_us / US, UTC),
                           abnormal_condition=False, power_constraints_id=str(uuid.uuid4()),
                           power_envelopes=[s2_envelope(*elements)])


def s2_constraints(upper: list[tuple[float, float]], lower: list[tuple[float, float]]
                   ) -> PEBCPowerConstraints:
    ranges = [PEBCAllowedLimitRange(commodity_quantity=Q, limit_type=kind,
                                    range_boundary=NumberRange(start_of_range=a, end_of_range=b),
                                    abnormal_condition_only=False)
              for kind, side in ((PEBCPowerEnvelopeLimitType.UPPER_LIMIT, upper),
                                 (PEBCPowerEnvelopeLimitType.LOWER_LIMIT, lower))
              for a, b in side]
    return PEBCPowerConstraints(message_id=uuid.uuid4(), id=uuid.uuid4(),
                                valid_from=datetime.fromtimestamp(T0 / US, UTC),
                                consequence_type=PEBCPowerEnvelopeConsequenceType.DEFER,
                                allowed_limit_ranges=ranges)


async def send_s2(sender: Actor, message: Any) -> Any:
    answer = await sender.request("rm", S2Message(payload=message.to_json()))
    assert isinstance(answer, S2Message)
    return S2Parser.parse_as_any_message(answer.payload)


# -- the envelope ---------------------------------------------------------------------------


def test_the_envelope_takes_the_least_upper_limit_and_the_instructions_lower() -> None:
    instruction = PowerRangeEnvelope(end_us=T0 + 30 * MIN, elements=[
        EnvelopeElement(start_us=T0 - MIN, lower_w=5_000, upper_w=40_000,
                        per_phase=[PowerRange(lower_w=0, upper_w=20_000),
                                   PowerRange(lower_w=5_000, upper_w=10_000),
                                   PowerRange(lower_w=0, upper_w=10_000)]),
        EnvelopeElement(start_us=T0 + 20 * MIN, lower_w=30_000, upper_w=45_000)])
    env, notes = site_envelope(T0, 3600, 50_000, [(T0 + 10 * MIN, T0 + 25 * MIN, 20_000)],
                               instruction)
    assert limits(env) == [(0, 5_000, 40_000), (10 * MIN, 5_000, 20_000),
                           (20 * MIN, 20_000, 20_000),  # lower never above upper
                           (25 * MIN, 30_000, 45_000), (30 * MIN, 0, 50_000)]
    assert env.elements[0].per_phase == instruction.elements[0].per_phase  # it alone binds
    assert env.elements[1].per_phase is None  # the curtailment cut it: totals only
    assert env.end_us == T0 + 3600 * US and notes == []
    constraints = PowerConstraints(upper_ranges=[PowerRange(lower_w=0, upper_w=0),
                                                 PowerRange(lower_w=25_000, upper_w=42_000)],
                                   lower_ranges=[PowerRange(lower_w=0, upper_w=6_000)])
    clamped, notes = site_envelope(T0, 3600, 50_000, [(T0 + 10 * MIN, T0 + 25 * MIN, 20_000)],
                                   instruction, constraints)
    assert limits(clamped) == [(0, 5_000, 40_000), (10 * MIN, 0, 0),
                               (25 * MIN, 6_000, 42_000), (30 * MIN, 0, 42_000)]
    assert "upper 20000 W clamped to 0 W" in notes
    early, _ = site_envelope(T0, 3600, 50_000, [], lead_us=30 * US)
    assert limits(early) == [(-30 * US, 0, 50_000)]  # a reader a little behind finds it begun


def test_a_long_envelope_is_cut_at_the_element_limit() -> None:
    curtailments = [(T0 + i * MIN, T0 + i * MIN + MIN // 2, 1_000 + i) for i in range(200)]
    env, notes = site_envelope(T0, 86_400, 50_000, curtailments)
    assert len(env.elements) == 288 and env.end_us == env.elements[-1].start_us + MIN // 2
    assert any("cut after 288" in n for n in notes)


async def test_the_envelope_follows_fuse_and_curtailments_over_time(world: World) -> None:
    clock = FakeClock()
    rm = await start_rm(world, clock, fuse_limit_w=50_000.0, curtailments=(
        ("dso-1", T0 + 10 * MIN, T0 + 40 * MIN, 20_000.0, "evening peak"),
        ("dso-2", T0 + 30 * MIN, T0 + 60 * MIN, 30_000.0, "")))
    day = 86_400 * US
    assert limits(rm.tree.read("grid/envelope")) == [
        (0, 0, 50_000), (10 * MIN, 0, 20_000), (40 * MIN, 0, 30_000), (60 * MIN, 0, 50_000)]
    assert rm.tree.read("grid/envelope")["end_us"] == T0 + day
    clock.set(T0 + 35 * MIN)
    rm.refresh_envelope()  # what the minute timer does
    assert limits(rm.tree.read("grid/envelope")) == [
        (35 * MIN, 0, 20_000), (40 * MIN, 0, 30_000), (60 * MIN, 0, 50_000)]
    clock.set(T0 + 2 * 60 * MIN)
    rm.refresh_envelope()
    assert limits(rm.tree.read("grid/envelope")) == [(120 * MIN, 0, 50_000)]
    # an input written by an operator is in the envelope at once
    operator = await world.actor(Operator("op", await world.endpoint("op")))
    await operator.request("rm", write("grid/fuse_limit_w", 40_000.0))
    await until(lambda: limits(rm.tree.read("grid/envelope")) == [(120 * MIN, 0, 40_000)],
                "the envelope follows the fuse")
    with pytest.raises(ModelError) as refused:  # nobody else writes the envelope
        await operator.request("rm", write("grid/envelope", rm.tree.read("grid/envelope")))
    assert refused.value.code in (ErrorCode.NOT_WRITABLE, ErrorCode.ACCESS_DENIED)


# -- the push -------------------------------------------------------------------------------


async def test_an_operators_curtailment_reaches_the_local_csms_at_once(world: World) -> None:
    csms = await world.actor(LocalCsms(
        "site", await world.endpoint("site"), store=await world.store("site"),
        settings=LocalSettings(site="s", resource_manager="rm")))
    plan = EnergyTransferPlan(end_us=T0 + 60 * MIN, elements=[
        PlanElement(start_us=T0, power=ForecastValue(expected_w=-8_000, lower_95_w=-12_000,
                                                     upper_95_w=-2_000))])
    rm = await start_rm(world, site_csms="site", fuse_limit_w=60_000.0, pv_forecast=plan)
    operator = await world.actor(Operator("op", await world.endpoint("op")))

    def held(name: str) -> Any:
        try:
            return csms.own.tree.read(f"energy/grid/{name}")
        except ModelError:
            return None

    await until(lambda: rm.tree.get("grid/pushes") >= 1, "the first push")
    assert held("envelope") == rm.tree.read("grid/envelope")
    assert held("source") == "rm" and held("pv_forecast") == plan.model_dump()
    assert held("energy_constraints") is None

    now = time.time_ns() // 1000
    sent = time.monotonic()
    await operator.request("rm", write("grid/curtailments/dso-7", {
        "start_at": now - US, "end_at": now + 3600 * US, "limit_w": 12_000.0,
        "reason": "transformer maintenance"}))
    await until(lambda: (held("envelope") or {}).get("elements", [{}])[0].get("upper_w")
                == 12_000.0, "the curtailment reaches the CSMS", timeout=5)
    took = time.monotonic() - sent
    logging.getLogger(__name__).info("the curtailment reached the CSMS in %.1f ms", took * 1e3)
    assert took < 0.5, f"the curtailment took {took * 1000:.0f} ms to reach the CSMS"
    assert held("envelope") == rm.tree.read("grid/envelope")
    assert held("updated_at") is not None and rm.tree.get("grid/pushed_at") is not None
    # and a removed input is removed there too
    await operator.request("rm", write("grid/pv_forecast", delete=True))
    await until(lambda: held("pv_forecast") is None, "the PV forecast is deleted at the CSMS")


async def test_pushes_are_one_at_a_time_and_coalesce(world: World) -> None:
    site = await world.actor(SiteStub("site", await world.endpoint("site")))
    clock = FakeClock()
    rm = await start_rm(world, clock, site_csms="site")
    await until(lambda: len(site.writes) == 1, "the first push")
    site.gate.clear()
    operator = await world.actor(Operator("op", await world.endpoint("op")))
    await operator.request("rm", write("grid/fuse_limit_w", 45_000.0))
    await until(lambda: site.arrived == 2, "push 2 is held up at the site")
    for i in range(5):
        await operator.request("rm", write(f"grid/curtailments/c{i}", {
            "start_at": T0 + i * MIN, "end_at": T0 + (i + 1) * MIN, "limit_w": 1_000.0 * i}))
    await until(lambda: len(rm.tree.read("grid/envelope")["elements"]) == 6,
                "the envelope has every curtailment")
    site.gate.set()
    await until(lambda: rm.tree.get("grid/pushes") == 3, "the held and the coalesced push")
    assert len(site.writes) == 3
    assert site.latest("envelope") == rm.tree.read("grid/envelope")


async def test_a_failing_push_is_retried(world: World) -> None:
    site = await world.actor(SiteStub("site", await world.endpoint("site")))
    site.failures = 3
    clock = FakeClock()
    rm = await start_rm(world, clock, site_csms="site", max_backoff_s=0.2)
    for failures in (1, 2, 3):  # each refusal is followed by a backoff of at most 0.2 s
        # two sleep on the clock then: the envelope's minute refresh, and the backoff
        await until(lambda f=failures: rm.push_failures == f and clock.sleeping == 2,
                    f"the push backs off after failure {failures}")
        clock.advance(0.2)
    await until(lambda: rm.tree.get("grid/pushes") == 1, "the push gets through in the end")
    assert len(site.writes) == 1 and rm.push_failures == 0
    assert site.latest("source") == "rm" and site.latest("updated_at") == T0 + 3 * 200_000


# -- S2 -------------------------------------------------------------------------------------


async def test_s2_messages_set_the_inputs_and_are_acknowledged(world: World) -> None:
    rm = await start_rm(world, FakeClock(), fuse_limit_w=50_000.0)
    cem = await world.actor(Cem("cem", await world.endpoint("cem")))
    pc = s2_constraints(upper=[(0, 0), (4_000, 44_000)], lower=[(0, 0)])
    status = await send_s2(cem, pc)
    assert isinstance(status, ReceptionStatus) and status.status is ReceptionStatusValues.OK
    assert status.subject_message_id == pc.message_id
    assert rm.tree.read("grid/power_constraints")["upper_ranges"][1] == {
        "lower_w": 4_000.0, "upper_w": 44_000.0}

    instruction = s2_instruction((20 * 60_000, 2_000, 30_000), (10 * 60_000, 0, 60_000))
    assert (await send_s2(cem, instruction)).subject_message_id == instruction.message_id
    assert limits(rm.tree.read("grid/instruction")) == [(0, 2_000, 30_000),
                                                         (20 * MIN, 0, 60_000)]
    # the lower limit 2 kW is not allowed (only 0 is): relaxed; 50 kW above 44 kW: clamped
    await until(lambda: limits(rm.tree.read("grid/envelope")) == [
        (0, 0, 30_000), (20 * MIN, 0, 44_000)],
        "the envelope follows the instruction, clamped into the constraints")

    ec = PEBCEnergyConstraint(message_id=uuid.uuid4(), id=uuid.uuid4(),
                              valid_from=datetime.fromtimestamp(T0 / US, UTC),
                              valid_until=datetime.fromtimestamp((T0 + 60 * MIN) / US, UTC),
                              lower_average_power=2_000.0, upper_average_power=9_000.0,
                              commodity_quantity=Q)
    await send_s2(cem, ec)
    assert rm.tree.read("grid/energy_constraints") == {
        "valid_from_us": T0, "valid_until_us": T0 + 60 * MIN, "min_wh": 2_000.0,
        "max_wh": 9_000.0}


async def test_a_bad_s2_message_is_refused_and_changes_nothing(world: World) -> None:
    rm = await start_rm(world, FakeClock())
    cem = await world.actor(Cem("cem", await world.endpoint("cem")))
    await send_s2(cem, s2_constraints(upper=[(0, 50_000)], lower=[(0, 0)]))
    revision = rm.tree.revision
    lower_above_upper = s2_instruction((60_000, 9_000, 2_000)).to_json()
    handshake = json.dumps({"message_type": "Handshake", "message_id": str(uuid.uuid4()),
                            "role": "CEM"})
    cases = {"{not json": "not JSON", '{"message_type": "PEBC.Nope"}': "unknown message_type",
             lower_above_upper: "lower_w 9000 is above upper_w 2000",
             handshake: "is not handled here"}
    for payload, why in cases.items():
        with pytest.raises(ModelError) as refused:
            await cem.request("rm", S2Message(payload=payload))
        assert refused.value.code is ErrorCode.INVALID_MESSAGE and why in refused.value.text
    assert rm.tree.revision == revision

    # only a CEM (or an operator) may speak S2 here
    stranger = await world.actor(Cem("stranger", await world.endpoint("stranger")))
    with pytest.raises(ModelError) as refused:
        await send_s2(stranger, s2_instruction((60_000, 0, 1_000)))
    assert refused.value.code is ErrorCode.ACCESS_DENIED
    assert rm.tree.revision == revision


# -- the site -------------------------------------------------------------------------------


async def test_energy_alerts_are_kept_in_a_ring(world: World, caplog: pytest.LogCaptureFixture,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(rm_module, "MAX_ALERTS", 3)
    rm = await start_rm(world, FakeClock(), site_csms="site")
    site = await world.actor(SiteStub("site", await world.endpoint("site")))
    with caplog.at_level(logging.WARNING, logger="csms.rm"):
        for i in range(5):  # as the local CSMS sends them: reliably, not as requests
            site.send("rm", EnergyAlert(
                site="s", at_us=T0 + i, codes=[AlertCode.LOWER_LIMITS_EXCEED_SITE] * 2,
                text=f"shed cs-{i}/1", site_limit_w=11_000.0, lower_limits_w=14_000.0,
                evses=[AlertEvse(station=f"cs-{i}", evse=1,
                                 reason=AlertCode.LOWER_LIMITS_EXCEED_SITE)]), reliable=True)
        await until(lambda: rm.tree.get("site/alerts_total") == 5, "every alert is kept")
    assert sorted(rm.tree.read("site/alerts"), key=int) == ["2", "3", "4"]
    assert rm.tree.get("site/alerts_total") == 5
    assert rm.tree.read("site/alerts/4") == {
        "at": T0 + 4, "codes": "lower_limits_exceed_site", "text": "shed cs-4/1",
        "site_limit_w": 11_000.0, "evses": 1, "active": True}
    assert "shed cs-4/1" in caplog.text


async def test_a_plan_from_the_csms_goes_to_the_cem_as_an_s2_power_forecast(world: World
                                                                           ) -> None:
    clock = FakeClock()
    rm = await start_rm(world, clock, site_csms="site", s2_peer="cem")
    site = await world.actor(SiteStub("site", await world.endpoint("site")))
    cem = await world.actor(Cem("cem", await world.endpoint("cem")))
    plan = EnergyTransferPlan(end_us=T0 + 30 * MIN, elements=[
        PlanElement(start_us=T0, power=ForecastValue(
            expected_w=20_000, lower_68_w=18_000, upper_68_w=21_000, lower_95_w=15_000,
            upper_95_w=22_000)),
        PlanElement(start_us=T0 + 10 * MIN, power=ForecastValue(expected_w=7_000))])
    clock.set(T0 + 5 * US)
    await site.request("rm", write("site/plan", plan.model_dump()))
    assert rm.tree.get("site/plan_received_at") == T0 + 5 * US
    await until(lambda: len(cem.received) == 1, "the CEM is told the plan")
    forecast = cem.received[0]
    assert isinstance(forecast, PowerForecast)
    assert [e.duration.root for e in forecast.elements] == [600_000, 1_200_000]
    value = forecast.elements[0].power_values[0]
    assert (value.value_lower_95PPR, value.value_lower_68PPR, value.value_expected,
            value.value_upper_68PPR, value.value_upper_95PPR) == (
        15_000, 18_000, 20_000, 21_000, 22_000)
    with pytest.raises(ModelError) as refused:  # the CSMS writes the plan, not the grid
        await site.request("rm", write("grid/fuse_limit_w", 1.0))
    assert refused.value.code is ErrorCode.ACCESS_DENIED


async def test_the_inputs_survive_a_restart(world: World) -> None:
    store = await world.store("rm")
    endpoint = await world.endpoint("rm")
    settings = ResourceManagerSettings(site_csms=None, clock_skew_s=0.0, trusted={
        "op": Role.OPERATOR, "cem": Role.RESOURCE_MANAGER})
    operator = await world.actor(Operator("op", await world.endpoint("op")))
    cem = await world.actor(Cem("cem", await world.endpoint("cem")))
    clock = FakeClock()
    async with ResourceManager("rm", endpoint, store=store, settings=settings,
                               clock=clock) as first:
        await operator.request("rm", write("grid/fuse_limit_w", 32_000.0))
        await operator.request("rm", write("grid/curtailments/dso-1", {
            "start_at": T0, "end_at": T0 + MIN, "limit_w": 5_000.0, "reason": "test"}))
        await send_s2(cem, s2_instruction((60_000, 0, 25_000)))
        inputs = first.tree.read("grid")
        epoch = first.tree.epoch
    again = ResourceManager("rm", endpoint, store=store, clock=clock,
                            settings=ResourceManagerSettings(site_csms=None, fuse_limit_w=1.0,
                                                             clock_skew_s=0.0))
    async with again:
        assert not again.fresh and again.tree.epoch == epoch
        for name in ("fuse_limit_w", "curtailments", "instruction"):
            assert again.tree.read(f"grid/{name}") == inputs[name]
        assert limits(again.tree.read("grid/envelope"))[:2] == [(0, 0, 5_000),
                                                                (MIN, 0, 32_000)]
