"""The charging station side of power-envelope-based control: each EVSE's power constraints,
energy constraints and plan, mapped from what its EV speaks, and obedience to the envelope a
CSMS writes. Simulator tests under a fake clock, then one station actor on the in-memory
transport for the refusal and the immediate effect of an envelope."""

from __future__ import annotations

from typing import Any

import pytest

from actors.logic.station.ev import BATTERY_EFFICIENCY, ElectricVehicle
from actors.logic.station.simulation import SimulationConfig
from actors.station.simulated import SimulatedStation
from keypath import KeyPath
from object_model import ErrorCode, ModelError, ObjectTree
from object_model.messages import PropertyValueWrite, PropertyValueWriteResponse, WriteItem
from object_model.pebc import EnergyTransferPlan, PowerConstraints, PowerRangeEnvelope
from object_model.station.components import ChargingProtocol
from tests.actors.logic.test_simulation import QUIET, T0, US, Clock, evse_power, make
from tests.actors.station.site import Site

MIN = 60 * US
HOUR = 3600 * US


def basic_ev(*, phases: int = 3, amps: float = 32.0, at: int = T0) -> ElectricVehicle:
    return ElectricVehicle(
        ev_id="", id_token="04AABBCCDD0011", protocol=ChargingProtocol.IEC61851,
        battery_wh=80_000.0, phases=phases, max_current_a=amps,
        max_power_w=phases * amps * 230, soc=0.2, target_soc=1.0, arrived_at=at,
        departure_at=at + 20 * HOUR)


def iso_ev(*, soc: float = 0.2, min_soc: float = 0.4, target: float = 0.9,
           stay_s: int = 10 * 3600, bidirectional: bool = False) -> ElectricVehicle:
    return ElectricVehicle(
        ev_id="0A1B2C3D4E5F", id_token="BE-ACM-C00000001", protocol=ChargingProtocol.ISO15118_20,
        battery_wh=80_000.0, phases=3, max_current_a=32.0, max_power_w=3 * 32 * 230, soc=soc,
        target_soc=target, min_soc=min_soc, may_discharge=bidirectional, arrived_at=T0,
        departure_at=T0 + stay_s * US)


def energy(tree: ObjectTree, evse: int, what: str) -> Any:
    path = f"evse/{evse}/energy/{what}"
    return tree.get(path) if path in tree else None


def ranges(pc: dict[str, Any], which: str) -> list[list[float]]:
    return [[r["lower_w"], r["upper_w"]] for r in pc[f"{which}_ranges"]]


def plan(tree: ObjectTree, evse: int) -> EnergyTransferPlan:
    return EnergyTransferPlan.model_validate(energy(tree, evse, "plan"))


def envelope(start: int, steps: list[tuple[int, float, float]], minutes: int) -> dict[str, Any]:
    """An envelope from ``start``: ``(minute, lower, upper)`` elements, ``minutes`` long."""
    return PowerRangeEnvelope(end_us=start + minutes * MIN, elements=[
        {"start_us": start + m * MIN, "lower_w": lo, "upper_w": hi} for m, lo, hi in steps
    ]).model_dump()


# -- mapping ------------------------------------------------------------------------------------


def test_a_basic_ev_has_the_on_off_gap_may_vanish_and_a_guessed_window() -> None:
    tree, sim = make()
    clock = Clock(tree, sim)
    clock.run(1)
    idle = energy(tree, 1, "power_constraints")  # no EV: the hardware, no gap known
    assert ranges(idle, "upper") == [[0.0, 22_000.0]] and ranges(idle, "lower") == [[0.0, 0.0]]
    assert energy(tree, 1, "energy_constraints") is None and energy(tree, 1, "plan") is None
    assert energy(tree, 1, "limit_w") == 22_000.0

    sim.plug_in(1, basic_ev())
    clock.run(2)
    pc = energy(tree, 1, "power_constraints")
    assert ranges(pc, "upper") == [[0.0, 0.0], [6 * 230 * 3, 22_000.0]]  # 0 or ≥ 6 A × 3
    assert ranges(pc, "lower") == [[0.0, 0.0]]
    assert pc["consequence"] == "vanish" and pc["phases"] == 3
    ec = energy(tree, 1, "energy_constraints")
    started = tree.get("evse/1/session/started_at")
    assert ec["valid_from_us"] == started and ec["valid_until_us"] == started + 8 * HOUR
    assert ec["min_wh"] == 0.0 and ec["max_wh"] == pytest.approx(22_000.0 * 8)
    assert plan(tree, 1).end_us == ec["valid_until_us"]

    sim.plug_in(2, basic_ev(phases=1, amps=16.0))
    clock.run(2)
    pc = energy(tree, 2, "power_constraints")
    assert ranges(pc, "upper") == [[0.0, 0.0], [6 * 230.0, 16 * 230.0]] and pc["phases"] == 1


def test_an_iso_ev_asks_for_its_minimum_and_target_energy_until_it_leaves() -> None:
    tree, sim = make()
    clock = Clock(tree, sim)
    sim.plug_in(1, iso_ev(stay_s=10 * 3600))
    sim.plug_in(2, iso_ev(stay_s=3 * 3600))
    clock.run(2)
    started = tree.get("evse/1/session/started_at")
    ec = energy(tree, 1, "energy_constraints")
    assert ec["valid_from_us"] == started and ec["valid_until_us"] == T0 + 10 * HOUR
    assert ec["min_wh"] == pytest.approx(0.2 * 80_000 / BATTERY_EFFICIENCY, abs=0.1)
    assert ec["max_wh"] == pytest.approx(0.7 * 80_000 / BATTERY_EFFICIENCY, abs=0.1)
    pc = energy(tree, 1, "power_constraints")
    assert ranges(pc, "upper") == [[0.0, 0.0], [6 * 230.0, 22_000.0]]  # it can go one phase
    assert pc["consequence"] == "defer"  # 2.7 h of need in 10 h
    assert energy(tree, 2, "power_constraints")["consequence"] == "vanish"  # ... in 3 h
    clock.run(600)
    assert energy(tree, 1, "energy_constraints") == ec  # stable: the CSMS subtracts the meter

    clock.set("evse/1/permissions/may_discharge", True)  # not bidirectional: nothing changes
    clock.run(1)
    assert ranges(energy(tree, 1, "power_constraints"), "lower") == [[0.0, 0.0]]


def test_a_bidirectional_ev_offers_its_discharge_range_only_where_permitted() -> None:
    tree, sim = make()
    clock = Clock(tree, sim)
    sim.plug_in(1, iso_ev(soc=0.7, min_soc=0.4, bidirectional=True))
    clock.run(2)
    assert ranges(energy(tree, 1, "power_constraints"), "lower") == [[0.0, 0.0]]
    assert energy(tree, 1, "energy_constraints")["min_wh"] == 0.0
    clock.set("evse/1/permissions/may_discharge", True)
    clock.run(1)
    pc = energy(tree, 1, "power_constraints")
    assert ranges(pc, "upper") == ranges(pc, "lower") == [[-10_000.0, 22_000.0]]
    ec = energy(tree, 1, "energy_constraints")  # it may give back down to its minimum SoC
    assert ec["min_wh"] == pytest.approx(-0.3 * 80_000 * BATTERY_EFFICIENCY, abs=0.1)


def test_plans_are_narrow_for_an_iso_ev_and_wide_for_a_basic_one() -> None:
    tree, sim = make()
    clock = Clock(tree, sim)
    sim.plug_in(1, iso_ev())
    sim.plug_in(2, basic_ev())
    clock.run(10)
    iso, basic = plan(tree, 1), plan(tree, 2)
    now = iso.at(clock.now), basic.at(clock.now)
    assert now[0] is not None and now[1] is not None
    for forecast in now:
        assert forecast.expected_w == pytest.approx(21_900, abs=200)
    width = [[f.band(p)[1] - f.band(p)[0] for p in (68, 95)] for f in now]
    assert width[0][0] < 0.07 * now[0].expected_w and width[0][1] < 0.17 * now[0].expected_w
    assert width[1][0] >= 0.5 * now[1].expected_w and width[1][1] == 22_000.0
    assert width[1][1] > 5 * width[0][1]
    # the ISO EV's plan ends its transfer when its maximum energy is in, then waits to leave
    done = iso.elements[-1]
    need_h = 0.7 * 80_000 / BATTERY_EFFICIENCY / now[0].expected_w
    assert done.power.expected_w == 0.0 and len(iso.elements) == 2
    assert done.start_us == pytest.approx(T0 + need_h * HOUR, abs=5 * MIN)
    assert iso.end_us == T0 + 10 * HOUR
    assert len(basic.elements) == 1  # unknown need: it may draw until the window ends


def test_a_departure_clears_the_session_values_and_a_stale_envelope_is_clamped() -> None:
    tree, sim = make()
    clock = Clock(tree, sim)
    sim.plug_in(1, iso_ev(stay_s=60))
    clock.run(5)
    clock.set("evse/1/energy/envelope", envelope(clock.now, [(0, -5_000.0, -2_000.0)], 60))
    clock.run(60)  # the EV left; the envelope cannot be kept: 0 W, no crash
    assert tree.get("evse/1/session/state") == "Finished"
    assert energy(tree, 1, "energy_constraints") is None and energy(tree, 1, "plan") is None
    assert ranges(energy(tree, 1, "power_constraints"), "upper") == [[0.0, 22_000.0]]
    assert energy(tree, 1, "limit_w") == 0.0 and evse_power(tree, 1) == 0.0


# -- obeying the envelope -------------------------------------------------------------------------


def test_the_station_keeps_to_a_time_varying_envelope_at_every_tick() -> None:
    tree, sim = make()
    clock = Clock(tree, sim)
    sim.plug_in(1, basic_ev())
    sim.plug_in(2, iso_ev(soc=0.5, min_soc=0.3, bidirectional=True))
    clock.set("evse/2/permissions/may_discharge", True)
    clock.run(3)
    clock.set("identity/max_power_w", 12_000.0)  # shared: 6 kW each, unless a floor says more
    start = clock.now
    envelopes = {
        1: envelope(start, [(0, 0.0, 11_000.0), (10, 0.0, 3_000.0),  # 3 kW: in the gap
                            (20, 0.0, 22_000.0), (35, 0.0, 6_000.0), (50, 0.0, 0.0)], 60),
        2: envelope(start, [(0, 9_000.0, 22_000.0), (15, 0.0, 2_000.0),
                            (30, -5_000.0, -3_000.0), (45, 4_000.0, 7_000.0)], 60),
    }
    models = {e: PowerRangeEnvelope.model_validate(v) for e, v in envelopes.items()}
    pcs = {}
    for e, value in envelopes.items():
        clock.set(f"evse/{e}/energy/envelope", value)
        pcs[e] = PowerConstraints.model_validate(energy(tree, e, "power_constraints"))
    seen: dict[tuple[int, int], set[float]] = {}

    def check(t: ObjectTree, now: int) -> None:
        for e, env in models.items():
            element = env.at(now)
            if element is None:
                continue
            power = evse_power(t, e)
            upper = pcs[e].upper_at_most(element.upper_w)  # 3 kW in the gap: 0
            assert power <= upper, (e, now, power, element)
            ev = sim.evs[e]
            assert power >= min(element.lower_w, ev.demand_w()) * 0.99 - 10, (e, now, power)
            assert t.get(f"evse/{e}/energy/limit_w") == pytest.approx(upper)
            seen.setdefault((e, env.index_at(now) or 0), set()).add(power)

    clock.run(3600, each=check)
    assert len(seen) == 9  # every element was in force at some tick
    assert seen[1, 1] == {0.0}  # upper in the gap: suspended
    assert min(seen[2, 0]) >= 8_900  # its floor, above its 6 kW share of the rating
    assert max(seen[2, 2]) <= -3_000 and min(seen[2, 2]) >= -5_000  # it gave power back
    assert max(seen[1, 4]) == 0.0
    # the envelope ended: the permissions alone apply again
    clock.run(5)
    assert energy(tree, 2, "limit_w") == 22_000.0 and evse_power(tree, 2) > 5_000


def test_the_plan_is_rewritten_a_handful_of_times_in_an_hour_not_every_tick() -> None:
    tree, sim = make(SimulationConfig(arrivals_per_evse_hour=0.0, faults_per_hour=0.0,
                                      ambient_swing_c=0.0, seed=QUIET.seed))
    sim.plug_in(1, iso_ev())
    sim.plug_in(2, basic_ev())
    writes: dict[str, int] = {}
    now = T0
    for _ in range(3600):
        now += US
        ops = sim.tick(now)
        tree.apply(ops)
        for op in ops:
            if "/energy/" in str(op.path):
                writes[str(op.path)] = writes.get(str(op.path), 0) + 1
    assert tree.get("evse/1/status") == tree.get("evse/2/status") == "Charging"
    for e in (1, 2):
        assert 1 <= writes[f"evse/{e}/energy/plan"] <= 4, writes
        assert writes[f"evse/{e}/energy/power_constraints"] <= 3, writes
        assert writes[f"evse/{e}/energy/energy_constraints"] == 1, writes


# -- the station actor ----------------------------------------------------------------------------


async def test_an_envelope_outside_the_constraints_is_refused_and_a_good_one_obeyed_at_once(
        site: Site) -> None:
    csms = await site.start_csms()
    station = await site.station()
    sim = station.hardware
    assert isinstance(sim, SimulatedStation) and sim.simulator is not None
    assert station.tree is not None
    t = sim.simulated_us
    sim.simulator.plug_in(1, basic_ev(at=t))
    for k in (1, 2, 3):
        sim.tick(t + k * US)
    tree = station.tree
    assert evse_power(tree, 1) > 21_000
    revision = tree.revision

    def write(value: dict[str, Any]) -> PropertyValueWrite:
        return PropertyValueWrite(writes=[WriteItem(
            path=KeyPath.parse("evse/1/energy/envelope"), value=value)])

    bad = envelope(t, [(0, 0.0, 8_000.0), (10, 0.0, 3_000.0), (20, 2_000.0, 9_000.0)], 30)
    with pytest.raises(ModelError) as refused:
        await csms.request("cs-1", write(bad))
    assert refused.value.code is ErrorCode.OUT_OF_RANGE
    assert refused.value.path == "evse/1/energy/envelope"
    problems = refused.value.details["problems"]
    assert len(problems) == 2
    assert problems[0].startswith("element 1: upper_w 3000 W is outside")
    assert problems[1].startswith("element 2: lower_w 2000 W is outside")
    assert tree.revision == revision and "evse/1/energy/envelope" not in tree

    answer = await csms.request("cs-1", write(envelope(t, [(0, 0.0, 5_000.0)], 30)))
    assert isinstance(answer, PropertyValueWriteResponse) and answer.revision == revision + 1
    # no waiting for the next tick (an hour away here): it ticked again before answering
    assert tree.revision == revision + 2 and sim.simulated_us == t + 3 * US
    assert 4_140 <= evse_power(tree, 1) <= 5_000
    assert tree.get("evse/1/energy/limit_w") == 5_000.0
    assert tree.get("evse/1/meter/last_reading_at") == t + 3 * US


@pytest.mark.parametrize(("value", "says"), [
    ({"elements": [{"start_us": 0, "lower_w": 6_000.0, "upper_w": 5_000.0}], "end_us": 9},
     "lower_w 6000 is above upper_w 5000"),
    ({"elements": [{"start_us": 5, "lower_w": 0.0, "upper_w": 1.0},
                   {"start_us": 4, "lower_w": 0.0, "upper_w": 1.0}], "end_us": 9},
     "strict time order"),
    ({"elements": [{"start_us": 0, "lower_w": 0.0, "upper_w": 5e12}], "end_us": 9},
     "less than or equal to 100000000"),
    ({"elements": [{"start_us": 0, "lower_w": 0.0, "upper_w": 3.0, "per_phase": [
        {"lower_w": 0.0, "upper_w": 2.0}] * 3}], "end_us": 9}, "add up to"),
    ({"elements": [{"start_us": 0, "lower_w": 0.0}], "end_us": 9}, "Field required"),
    ("full power", "expected PowerRangeEnvelope"),
])
async def test_a_malformed_envelope_gets_a_detailed_error_report_and_changes_nothing(
        site: Site, value: Any, says: str) -> None:
    csms = await site.start_csms()
    station = await site.station()
    assert station.tree is not None
    revision = station.tree.revision
    with pytest.raises(ModelError) as refused:
        await csms.request("cs-1", PropertyValueWrite(writes=[WriteItem(
            path=KeyPath.parse("evse/1/energy/envelope"), value=value)]))
    assert refused.value.code in (ErrorCode.INVALID_VALUE, ErrorCode.WRONG_TYPE)
    assert refused.value.path == "evse/1/energy/envelope"
    assert says in str(refused.value)
    if refused.value.code is ErrorCode.INVALID_VALUE:
        assert refused.value.details["errors"][0]["msg"]  # every error, with its location
    assert station.tree.revision == revision and "evse/1/energy/envelope" not in station.tree
