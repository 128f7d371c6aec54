"""The station simulator under a fake clock: physics, permissions, faults, determinism."""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import replace

import pytest

from actors.logic.station.ev import Demand, ElectricVehicle, share_power
from actors.logic.station.simulation import SimulationConfig, StationSimulator
from object_model import ObjectTree
from object_model.station import new_station_tree
from object_model.station.components import ChargingProtocol

US = 1_000_000
T0 = 1_700_000_000 * US  # 2023-11-14 22:13:20 UTC
QUIET = SimulationConfig(arrivals_per_evse_hour=0.0, faults_per_hour=0.0, ambient_swing_c=0.0,
                         seed=7)
M = "meter/obis:1-0:"


def make(config: SimulationConfig = QUIET, *, dc: bool = False
         ) -> tuple[ObjectTree, StationSimulator]:
    tree = new_station_tree("cs-1", now_us=T0, seed=1, dc=dc, epoch=1)
    return tree, StationSimulator(tree, config, now_us=T0)


def ev(*, iso: bool = False, phases: int = 3, amps: float = 32.0, soc: float = 0.2,
       stay_s: int = 20 * 3600, token: str = "04AABBCCDD0011") -> ElectricVehicle:
    return ElectricVehicle(
        ev_id="0A1B2C3D4E5F" if iso else "", id_token=token,
        protocol=ChargingProtocol.ISO15118_20 if iso else ChargingProtocol.IEC61851,
        battery_wh=80_000.0, phases=phases, max_current_a=amps, max_power_w=phases * amps * 230,
        soc=soc, target_soc=1.0, arrived_at=T0, departure_at=T0 + stay_s * US)


class Clock:
    """Drives a simulator with a fake clock, applying every tick's operations."""

    def __init__(self, tree: ObjectTree, sim: StationSimulator) -> None:
        self.tree, self.sim, self.now = tree, sim, T0
        self.writes: list[int] = []

    def run(self, seconds: float, step_s: float = 1.0,
            each: Callable[[ObjectTree, int], None] | None = None) -> None:
        end = self.now + int(seconds * US)
        while self.now < end:
            self.now += int(step_s * US)
            ops = self.sim.tick(self.now)
            self.tree.apply(ops)  # never raises
            self.writes.append(len(ops))
            if each is not None:
                each(self.tree, self.now)

    def get(self, path: str) -> object:
        return self.tree.get(path)

    def set(self, path: str, value: object) -> None:
        self.tree.write(path, value)


def evse_power(tree: ObjectTree, evse: int) -> float:
    return tree.get(f"evse/{evse}/{M}16.7.0")


# -- a day --------------------------------------------------------------------------------------


def test_a_simulated_day_meters_exactly_what_it_reports() -> None:
    tree, sim = make(SimulationConfig(arrivals_per_evse_hour=0.4, faults_per_hour=0.05, seed=11))
    clock = Clock(tree, sim)
    start = {e: tree.get(f"evse/{e}/{M}1.8.0") for e in (1, 2)}
    last_meter = dict(start)
    last_grid = tree.get("grid_meter/iec61850:MMTR1/SupWh")
    integral = {1: 0.0, 2: 0.0}
    held = {1: (0.0, T0), 2: (0.0, T0)}
    finished: dict[str, float] = {}
    statuses: set[str] = set()

    def check(t: ObjectTree, now: int) -> None:
        nonlocal last_grid
        for e in (1, 2):
            power, since = held[e]
            integral[e] += power * (now - since) / (3600 * US)
            held[e] = (evse_power(t, e), now)
            meter = t.get(f"evse/{e}/{M}1.8.0")
            assert meter >= last_meter[e]
            last_meter[e] = meter
            statuses.add(t.get(f"evse/{e}/status"))
            if t.get(f"evse/{e}/session/state") == "Finished":
                finished[t.get(f"evse/{e}/session/session_id")] = t.get(
                    f"evse/{e}/session/energy_wh")
        grid = t.get("grid_meter/iec61850:MMTR1/SupWh")
        assert grid >= last_grid
        last_grid = grid
        assert t.get("grid_meter/iec61850:MMXU1/TotW") == evse_power(t, 1) + evse_power(t, 2)

    clock.run(86_400, step_s=5, each=check)
    delivered = {e: tree.get(f"evse/{e}/{M}1.8.0") - start[e] for e in (1, 2)}
    for e in (1, 2):
        assert delivered[e] == pytest.approx(integral[e], rel=1e-9, abs=1e-6)
    ongoing = sum(tree.get(f"evse/{e}/session/energy_wh") for e in (1, 2)
                  if tree.get(f"evse/{e}/session/state") != "Finished")
    total = sum(delivered.values())
    assert sum(finished.values()) + ongoing == pytest.approx(total, rel=1e-9)
    assert tree.get("grid_meter/iec61850:MMTR1/SupWh") == pytest.approx(total, rel=1e-9)
    assert sim.energy_wh_delivered == pytest.approx(total, rel=1e-9)
    assert sim.sessions_started >= 10 and len(finished) >= 8
    assert total > 100_000  # Wh: the EVSEs were busy
    assert {"Available", "Preparing", "Charging"} <= statuses
    assert tree.get("diagnostics/uptime") == 86_400 * US


def test_an_iso15118_20_session_reports_soc_and_ends_at_departure() -> None:
    tree, sim = make()
    clock = Clock(tree, sim)
    sim.plug_in(1, ev(iso=True, phases=3, amps=16.0, soc=0.3, stay_s=3600))
    clock.run(1)
    s = "evse/1/session/"
    assert clock.get("evse/1/status") == "Preparing"
    assert clock.get(s + "state") == "Authorising"
    assert clock.get(s + "protocol") == "ISO15118-20"
    assert clock.get(s + "ev_id") == "0A1B2C3D4E5F"
    assert clock.get(s + "departure_at") == T0 + 3600 * US
    assert clock.get("evse/1/connector/1/status") == "Occupied"
    assert clock.get("evse/1/connector/1/cable_attached") is True
    clock.run(1)
    assert clock.get("evse/1/status") == "Charging"
    assert clock.get("evse/1/contactor/closed") is True
    soc = clock.get(s + "soc_percent")
    clock.run(1800, step_s=5)
    assert clock.get(s + "soc_percent") > soc + 5
    assert clock.get(s + "energy_wh") == pytest.approx(11_000 * 0.5, rel=0.02)
    ops_before = clock.get("evse/1/contactor/operation_count")
    clock.run(1800, step_s=5)
    assert clock.get(s + "state") == "Finished"
    assert T0 + 3600 * US <= clock.get(s + "ended_at") < T0 + 3605 * US  # first tick after
    assert clock.get("evse/1/status") == "Available"
    assert clock.get("evse/1/connector/1/status") == "Available"
    assert clock.get("evse/1/contactor/closed") is False
    assert clock.get("evse/1/contactor/operation_count") == ops_before + 1
    assert evse_power(tree, 1) == 0.0


# -- permissions ----------------------------------------------------------------------------------


@pytest.mark.parametrize("path", ["permissions/may_charge", "evse/1/permissions/may_charge"])
def test_without_may_charge_evs_arrive_but_no_energy_flows(path: str) -> None:
    tree, sim = make(SimulationConfig(arrivals_per_evse_hour=30.0, faults_per_hour=0.0, seed=3))
    clock = Clock(tree, sim)
    clock.set(path, False)
    meter = clock.get(f"evse/1/{M}1.8.0")
    clock.run(1800, step_s=5)
    assert sim.sessions_started > 0
    assert clock.get(f"evse/1/{M}1.8.0") == meter
    assert clock.get("evse/1/status") == "SuspendedEVSE"
    assert clock.get("evse/1/contactor/closed") is False
    if path.startswith("evse/1"):  # the other EVSE is not concerned
        assert clock.get("evse/2/status") in ("Charging", "SuspendedEV")
    clock.set(path, True)  # the CSMS grants it again
    clock.run(10)
    assert clock.get("evse/1/status") == "Charging"
    assert evse_power(tree, 1) > 0
    assert clock.get(f"evse/1/{M}1.8.0") > meter


def test_permitted_power_and_current_cap_each_evse_and_the_rating_is_shared() -> None:
    tree, sim = make()
    clock = Clock(tree, sim)
    sim.plug_in(1, ev())
    sim.plug_in(2, ev())
    clock.run(5)
    assert evse_power(tree, 1) + evse_power(tree, 2) > 43_000
    clock.set("permissions/max_power_w", 15_000.0)  # station level: every EVSE
    clock.run(5)
    assert 14_800 < evse_power(tree, 1) <= 15_000 and 14_800 < evse_power(tree, 2) <= 15_000
    clock.set("evse/1/permissions/max_power_w", 4_500.0)
    clock.run(5)
    assert 4_400 < evse_power(tree, 1) <= 4_500
    assert 14_800 < evse_power(tree, 2) <= 15_000
    clock.set("identity/max_power_w", 18_000.0)  # the station's rating, shared
    clock.run(5)
    assert 4_400 < evse_power(tree, 1) <= 4_500
    assert 13_300 < evse_power(tree, 2) <= 13_500
    assert sim.power_w <= 18_000
    clock.set("evse/2/permissions/max_current_a", 10.0)
    clock.run(5)
    assert tree.get(f"evse/2/{M}31.7.0") == pytest.approx(10.0)


def test_a_basic_ev_below_six_amps_suspends_an_iso_ev_switches_to_one_phase() -> None:
    tree, sim = make()
    clock = Clock(tree, sim)
    sim.plug_in(1, ev(iso=False))
    sim.plug_in(2, ev(iso=True, token="BE-ACM-C00000001"))
    clock.set("evse/1/permissions/max_power_w", 3_000.0)  # 4.3 A on three phases
    clock.set("evse/2/permissions/max_power_w", 3_000.0)
    clock.run(5)
    assert clock.get("evse/1/status") == "SuspendedEVSE"
    assert evse_power(tree, 1) == 0.0
    assert clock.get("evse/1/contactor/closed") is False
    assert clock.get("evse/2/status") == "Charging"
    assert 2_900 < evse_power(tree, 2) <= 3_000
    assert tree.get(f"evse/2/{M}31.7.0") >= 6.0 and tree.get(f"evse/2/{M}51.7.0") == 0.0
    clock.set("evse/1/permissions/max_power_w", 5_000.0)  # 7.2 A: enough for three phases
    clock.run(5)
    assert clock.get("evse/1/status") == "Charging"
    assert 6.0 <= tree.get(f"evse/1/{M}51.7.0") <= 7.3


def test_share_power_fills_fairly_and_drops_what_cannot_reach_its_minimum() -> None:
    def d(limit: float, *, switch: bool = False) -> Demand:
        return Demand(limit_w=limit, max_current_a=32.0, volts=230.0, phases=3, dc=False,
                      may_switch_phases=switch)

    shares, suspended = share_power({1: d(3_000.0), 2: d(22_000.0), 3: d(22_000.0)}, 20_000.0)
    assert suspended == {1}  # 3 kW is below 6 A × 3 phases
    assert shares[2][0] == shares[3][0] == 10_000.0
    shares, suspended = share_power({1: d(3_000.0, switch=True), 2: d(22_000.0)}, 20_000.0)
    assert not suspended and shares[1][0] == 3_000.0 and shares[1][1].phases == 1
    assert shares[2][0] == 17_000.0


def test_a_whitelist_rejects_unknown_tokens_when_authorisation_is_needed() -> None:
    tree, sim = make(SimulationConfig(arrivals_per_evse_hour=0.0, faults_per_hour=0.0,
                                      authorised_tokens=frozenset({"04AABBCCDD0011"})))
    clock = Clock(tree, sim)
    sim.plug_in(1, ev(token="04AABBCCDD0011"))
    sim.plug_in(2, ev(token="04FFFFFFFFFFFF"))
    clock.run(60)
    assert clock.get("evse/1/status") == "Charging"
    assert clock.get("evse/2/status") == "Preparing" and evse_power(tree, 2) == 0.0
    clock.run(120)
    assert clock.get("evse/2/status") == "Available"  # the driver gave up
    clock.set("evse/2/permissions/needs_authorisation", False)
    clock.set("permissions/needs_authorisation", False)
    sim.plug_in(2, ev(token="04FFFFFFFFFFFF"))
    clock.run(5)
    assert clock.get("evse/2/status") == "Charging"


# -- faults and heat ------------------------------------------------------------------------------


def test_faults_occur_and_are_repaired_over_a_long_run() -> None:
    tree, sim = make(SimulationConfig(arrivals_per_evse_hour=1.0, faults_per_hour=0.3,
                                      repair_mean_s=3600.0, seed=5))
    clock = Clock(tree, sim)
    seen: set[str] = set()

    def watch(t: ObjectTree, now: int) -> None:
        for e in (1, 2):
            if t.get(f"evse/{e}/status") == "Faulted":
                seen.add("evse")
                assert t.get(f"evse/{e}/session/state") in ("Finished", "Idle")
                assert t.get(f"evse/{e}/contactor/closed") is False
            if t.get(f"evse/{e}/power_module/derating_active"):
                seen.add("derating")

    clock.run(3 * 86_400, step_s=60, each=watch)
    assert sim.faults >= 10
    assert sim.repairs >= sim.faults - 4
    assert seen == {"evse", "derating"}


def test_a_failed_fan_derates_the_power_module_to_half_power() -> None:
    tree, sim = make()
    clock = Clock(tree, sim)
    sim.plug_in(1, ev())
    clock.run(10)
    full = evse_power(tree, 1)
    assert full > 21_000
    clock.set("evse/1/power_module/fan/1/state", "Fault")
    clock.run(3)
    assert clock.get("evse/1/power_module/derating_active") is True
    assert clock.get("evse/1/power_module/state") == "Derated"
    assert clock.get("evse/1/power_module/fan/1/speed_rpm") == 0
    assert 10_800 < evse_power(tree, 1) <= 11_000
    clock.set("evse/1/power_module/fan/1/state", "Standby")  # repaired
    clock.run(3)
    assert clock.get("evse/1/power_module/derating_active") is False
    assert evse_power(tree, 1) == pytest.approx(full, rel=0.01)


def test_temperatures_rise_under_load_and_fall_when_idle() -> None:
    tree, sim = make()
    clock = Clock(tree, sim)
    pm = "evse/1/power_module/"
    cool = pm + "com.acme:coolingLoop/"
    cold = clock.get(pm + "temperature_c")
    sim.plug_in(1, ev())
    clock.run(3600, step_s=5)
    hot = clock.get(pm + "temperature_c")
    assert hot > cold + 20
    assert clock.get(pm + "fan/1/speed_rpm") > 0 and clock.get(pm + "fan/1/state") == "Running"
    assert clock.get(pm + "fan/1/operating_hours") > 0.5
    assert clock.get(pm + "fan/1/temperature_sensor/1/temperature_c") > QUIET.ambient_c + 10
    assert clock.get(cool + "pump_speed_rpm") > 0 and clock.get(cool + "flow_l_per_min") > 0
    assert clock.get(cool + "outlet_temperature_c") > clock.get(cool + "inlet_temperature_c")
    assert clock.get("evse/2/power_module/temperature_c") < cold + 1
    clock.set("evse/1/permissions/may_charge", False)
    clock.run(3600, step_s=5)
    assert clock.get(pm + "temperature_c") < hot - 15
    assert clock.get(pm + "fan/1/speed_rpm") == 0
    assert clock.get(cool + "pump_speed_rpm") == 0


# -- transaction size, determinism, restarts ----------------------------------------------------


def test_idle_ticks_write_little_and_a_charging_evse_a_few_dozen() -> None:
    tree, sim = make(SimulationConfig(arrivals_per_evse_hour=0.0, faults_per_hour=0.0))
    clock = Clock(tree, sim)
    clock.run(600)  # the tree's factory temperatures settle
    clock.writes.clear()
    clock.run(3600)
    idle = clock.writes
    assert sum(idle) / len(idle) < 2.5 and max(idle) <= 15
    sim.plug_in(1, ev(iso=True))
    clock.run(60)
    clock.writes.clear()
    clock.run(600)
    charging = clock.writes
    assert sum(charging) / len(charging) < 15 and max(charging) <= 40


def test_same_seed_same_ticks_same_tree_same_operations() -> None:
    config = SimulationConfig(arrivals_per_evse_hour=6.0, faults_per_hour=2.0, seed=42,
                              stay_mean_s=900.0, stay_spread_s=300.0)
    runs = []
    for seed in (42, 42, 43):
        tree, sim = make(replace(config, seed=seed))
        ops_log = []
        for i in range(1, 1500):
            ops = sim.tick(T0 + i * 4 * US)
            tree.apply(ops)
            ops_log.append(ops)
        runs.append((ops_log, tree.digest(), sim.sessions_started, sim.faults))
    assert runs[0] == runs[1]
    assert runs[0][2] > 3 and runs[0][3] > 0  # sessions and faults happened
    assert runs[0][1] != runs[2][1]  # another seed, another story


def test_a_restarted_simulator_ends_the_session_it_finds_and_meters_no_downtime() -> None:
    tree, sim = make()
    clock = Clock(tree, sim)
    sim.plug_in(1, ev())
    clock.run(600)
    assert clock.get("evse/1/session/state") == "Charging"
    meter = clock.get(f"evse/1/{M}1.8.0")
    later = clock.now + 3600 * US  # an hour without power
    sim2 = StationSimulator(tree, QUIET, now_us=later)
    tree.apply(sim2.tick(later + US))
    assert clock.get("evse/1/session/state") == "Finished"
    assert clock.get("evse/1/session/ended_at") == later + US
    assert clock.get("evse/1/status") == "Available"
    assert clock.get("evse/1/contactor/closed") is False
    assert clock.get(f"evse/1/{M}1.8.0") == meter
    assert evse_power(tree, 1) == 0.0


def test_a_dc_station_runs_too() -> None:
    tree, sim = make(SimulationConfig(arrivals_per_evse_hour=2.0, faults_per_hour=0.1,
                                      stay_mean_s=1800.0, stay_spread_s=600.0, seed=2), dc=True)
    clock = Clock(tree, sim)
    clock.set("permissions/max_power_w", 150_000.0)  # the factory default is 22 kW
    peak = 0.0

    def watch(t: ObjectTree, now: int) -> None:
        nonlocal peak
        peak = max(peak, evse_power(t, 1), evse_power(t, 2))

    clock.run(6 * 3600, step_s=5, each=watch)
    assert sim.sessions_started > 3 and sim.energy_wh_delivered > 20_000
    assert 40_000 < peak <= 150_000
    assert tree.get("grid_meter/iec61850:MMTR1/SupWh") > sim.energy_wh_delivered  # losses
    assert not math.isnan(tree.get("evse/1/power_module/temperature_c"))


def test_an_ev_told_to_depart_leaves_at_the_next_tick_whatever_its_plan() -> None:
    tree, sim = make()
    clock = Clock(tree, sim)
    sim.plug_in(1, ev(stay_s=10 * 3600))
    clock.run(3)
    assert clock.get("evse/1/session/state") in ("Authorising", "Charging")
    sim.depart(2)  # no EV there: nothing happens
    sim.depart(1)
    clock.run(1)
    assert clock.get("evse/1/session/state") == "Finished"
    assert clock.get("evse/1/connector/1/cable_attached") is False
    clock.run(3)  # a departure is a one-off: the next EV stays as it plans
    sim.plug_in(1, ev(stay_s=3600))
    clock.run(3)
    assert clock.get("evse/1/session/state") == "Charging"
