"""A simulated day at one site, on a fake clock: the proving ground of the site allocation.

``SiteDay`` runs the EVSEs of one site from midnight to midnight in fixed steps. EVs arrive
and leave on a schedule drawn from ``DayConfig.seed`` (commuters in the morning, visitors at
midday, residents in the evening; half speak ISO 15118-20, half basic IEC 61851). Each EVSE
describes its EV in PEBC terms exactly as a station does (``actors.logic.station.pebc``), an
allocation function turns those into envelopes, and each EV then draws what its EVSE's
limits allow (the station's own ``limits``: the envelope's element in force, the on/off gap).

The grid: a fuse limit, a DSO curtailment in the evening, and a PV surplus around noon whose
forecast has 68 % and 95 % bands; the PV that actually comes wanders inside the 95 % band.
At every step the day records the site's power against what the grid connection really
allowed then (the fuse or curtailment plus the actual PV), so an overrun cannot hide, and at
every departure whether the EV's energy constraint was met, or was reported infeasible.

Nothing here reads a clock or does I/O; the same config gives the same day.
"""

from __future__ import annotations

import math
import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from actors.logic.energy.allocation import (
    Allocation,
    EvseNeed,
    SiteAllocator,
    SiteInputs,
)
from actors.logic.station.ev import BATTERY_EFFICIENCY, ElectricVehicle
from actors.logic.station.pebc import EvseCapacity, energy_constraints, limits, power_constraints
from actors.logic.station.pebc import transfer_plan as station_plan
from object_model.energy_messages import AlertCode
from object_model.pebc import (
    EnergyConstraints,
    EnergyTransferPlan,
    EnvelopeElement,
    PlanElement,
    PowerConstraints,
    PowerRangeEnvelope,
)
from object_model.station.components import ChargingProtocol

US = 1_000_000
H = 3_600 * US
DAY = 24 * H
Allocate = Callable[[int, Sequence[EvseNeed], SiteInputs], Allocation]


@dataclass(frozen=True)
class DayConfig:
    """One site's day: ``evses`` AC EVSEs of ``evse_kw`` each, a fuse of ``fuse_kw_per_evse``
    per EVSE, curtailed to ``curtail_share`` of it from 17:00 to 19:00, a PV surplus peaking
    at ``pv_peak_kw_per_evse`` per EVSE at noon."""

    evses: int = 30
    seed: int = 1
    step_s: float = 30.0
    evse_kw: float = 22.08
    fuse_kw_per_evse: float = 3.0
    curtail_share: float = 0.4
    curtail_from_h: float = 17.0
    curtail_to_h: float = 19.0
    pv_peak_kw_per_evse: float = 4.0
    iso_share: float = 0.5
    refresh_s: float = 900.0  # how often an EVSE re-states its PC, EC and plan
    pv_band: int = 95  # the PV band the site limit trusts (0: the expected value)


@dataclass(slots=True)
class _Session:
    ev: ElectricVehicle
    started_us: int
    delivered_wh: float = 0.0
    pc: PowerConstraints | None = None
    ec: EnergyConstraints | None = None
    plan: EnergyTransferPlan | None = None
    stated_us: int = -1
    requested_wh: float = 0.0
    reported: set[AlertCode] = field(default_factory=set)


@dataclass(slots=True)
class DayResult:
    """What the day showed."""

    steps: int = 0
    max_overrun_w: float = 0.0
    overrun_steps: int = 0
    requested_wh: float = 0.0
    delivered_wh: float = 0.0
    sessions: int = 0
    ec_feasible: int = 0
    ec_met: int = 0
    unmet_unreported: list[str] = field(default_factory=list)
    reported: dict[str, set[str]] = field(default_factory=dict)
    alloc_s: list[float] = field(default_factory=list)
    peak_w: float = 0.0

    @property
    def delivered_share(self) -> float:
        return self.delivered_wh / self.requested_wh if self.requested_wh else 1.0

    @property
    def ms_per_cycle(self) -> float:
        ordered = sorted(self.alloc_s)
        return 1000 * ordered[len(ordered) // 2] if ordered else 0.0


class SiteDay:
    """See the module docstring."""

    def __init__(self, config: DayConfig, allocate: Allocate | None = None) -> None:
        self.config = config
        self.allocate = allocate or SiteAllocator().allocate
        self.rng = random.Random(config.seed)
        n = config.evses
        self.capacity = EvseCapacity(rating_w=config.evse_kw * 1000, permitted_w=math.inf,
                                     max_current_a=32.0, phases=3, dc=False)
        self.fuse_w = config.fuse_kw_per_evse * 1000 * n
        self.schedule = {k: self._arrivals() for k in range(1, n + 1)}
        self.pv_plan = self._pv_forecast(n)
        self.pv_actual = self._pv_truth()
        self.grid = self._grid_envelope()
        self.sessions: dict[int, _Session] = {}
        self.envelopes: dict[int, PowerRangeEnvelope] = {}

    # -- the world ---------------------------------------------------------------------------------

    def _arrivals(self) -> list[tuple[int, int, ElectricVehicle]]:
        """This EVSE's visits: (arrival, departure, EV)."""
        rng = self.rng
        visits: list[tuple[int, int, ElectricVehicle]] = []
        for start_h, stay_h in ((rng.uniform(6.5, 9.5), rng.uniform(7, 10)),
                                (rng.uniform(11, 13.5), rng.uniform(1, 3)),
                                (rng.uniform(17, 21), rng.uniform(9, 12))):
            if rng.random() < 0.3:
                continue
            arrive = int(start_h * H)
            if visits and arrive < visits[-1][1] + 600 * US:
                continue
            leave = int((start_h + stay_h) * H)
            iso = rng.random() < self.config.iso_share
            phases, amps = rng.choice(((3, 16.0), (3, 32.0), (1, 32.0), (3, 16.0)))
            battery = rng.uniform(40, 90) * 1000
            soc = rng.uniform(0.15, 0.6)
            target = rng.choice((0.8, 0.9, 1.0)) if iso else 1.0
            ev = ElectricVehicle(
                ev_id=f"EV{rng.getrandbits(32):08X}" if iso else "", id_token="t",
                protocol=ChargingProtocol.ISO15118_20 if iso else ChargingProtocol.IEC61851,
                battery_wh=battery, phases=phases, max_current_a=amps,
                max_power_w=phases * amps * 230.0, soc=soc, target_soc=target,
                arrived_at=arrive, departure_at=leave,
                min_soc=min(target, soc + rng.uniform(0.1, 0.35)) if iso else 0.0)
            visits.append((arrive, leave, ev))
        return visits

    def _pv_forecast(self, n: int) -> EnergyTransferPlan:
        """Hourly PV surplus forecast: a bell around noon, bands widening with its size."""
        peak = self.config.pv_peak_kw_per_evse * 1000 * n
        elements = []
        for hour in range(24):
            mid = hour + 0.5
            expected = peak * max(0.0, math.cos((mid - 13) / 7 * math.pi)) if 7 <= mid <= 19 \
                else 0.0
            elements.append(PlanElement(start_us=hour * H, power={
                "expected_w": expected, "lower_68_w": 0.8 * expected,
                "upper_68_w": 1.2 * expected, "lower_95_w": 0.55 * expected,
                "upper_95_w": 1.4 * expected, "lower_limit_w": 0.0,
                "upper_limit_w": 1.6 * expected}))
        return EnergyTransferPlan(elements=elements, end_us=DAY)

    def _pv_truth(self) -> list[float]:
        """The PV that comes, per step: wandering inside the forecast's 95 % band."""
        steps = int(DAY / (self.config.step_s * US)) + 1
        out, drift = [], 0.0
        for i in range(steps):
            value = self.pv_plan.at(min(DAY - 1, int(i * self.config.step_s * US)))
            assert value is not None
            drift = 0.97 * drift + self.rng.gauss(0, 0.12)
            lo, hi = value.band(95)
            out.append(min(hi, max(lo, value.expected_w * (1 + drift))))
        return out

    def _grid_envelope(self) -> PowerRangeEnvelope:
        c = self.config
        return PowerRangeEnvelope(elements=[
            EnvelopeElement(start_us=0, lower_w=0, upper_w=self.fuse_w),
            EnvelopeElement(start_us=int(c.curtail_from_h * H), lower_w=0,
                            upper_w=self.fuse_w * c.curtail_share),
            EnvelopeElement(start_us=int(c.curtail_to_h * H), lower_w=0, upper_w=self.fuse_w)],
            end_us=DAY + 12 * H)

    def add_visit(self, evse: int, ev: ElectricVehicle) -> None:
        """Have ``ev`` visit ``evse`` (from ``ev.arrived_at`` to ``ev.departure_at``)."""
        visits = self.schedule[evse]
        visits.append((ev.arrived_at, ev.departure_at, ev))
        visits.sort(key=lambda v: v[0])

    def grid_limit_at(self, now: int) -> float:
        element = self.grid.at(now)
        return element.upper_w if element is not None else self.fuse_w

    # -- the day -------------------------------------------------------------------------------------

    def run(self, on_step: Callable[[int, float, float], None] | None = None, *,
            timer: Callable[[], float] | None = None) -> DayResult:
        """Midnight to midnight; ``on_step(now, site power, allowed)`` sees every step.
        With ``timer`` (seconds, e.g. ``time.perf_counter``), each allocation is timed into
        ``alloc_s``."""
        c, result = self.config, DayResult()
        inputs = SiteInputs(envelope=self.grid, pv_forecast=self.pv_plan, pv_band=c.pv_band)
        step_us = int(c.step_s * US)
        for i in range(int(DAY / step_us)):
            now = i * step_us
            self._come_and_go(now, result)
            needs = [self._state(k, s, now) for k, s in sorted(self.sessions.items())]
            started = timer() if timer is not None else 0.0
            allocation = self.allocate(now, needs, inputs)
            if timer is not None:
                result.alloc_s.append(timer() - started)
            self._record_reports(allocation, result)
            for (_, evse), envelope in allocation.envelopes.items():
                self.envelopes[evse] = envelope
            site_w = sum(self._draw(k, s, now, step_us) for k, s in self.sessions.items())
            allowed = self.grid_limit_at(now) + self.pv_actual[i]
            if site_w > allowed + 1e-6:
                result.overrun_steps += 1
                result.max_overrun_w = max(result.max_overrun_w, site_w - allowed)
            result.peak_w = max(result.peak_w, site_w)
            result.steps += 1
            if on_step is not None:
                on_step(now, site_w, allowed)
        for k, s in list(self.sessions.items()):  # still there at midnight: judged on what is due
            self._leave(k, s, DAY, result, final=True)
        return result

    def _come_and_go(self, now: int, result: DayResult) -> None:
        for k in list(self.sessions):
            s = self.sessions[k]
            if now >= s.ev.departure_at:
                self._leave(k, s, now, result)
        for k, visits in self.schedule.items():
            if k in self.sessions or not visits or visits[0][0] > now:
                continue
            _, _, ev = visits.pop(0)
            ev.arrival_soc = ev.soc
            s = _Session(ev, started_us=now)
            stay_h = (ev.departure_at - now) / H
            need_wh = (ev.target_soc - ev.soc) * ev.battery_wh / BATTERY_EFFICIENCY
            s.requested_wh = max(0.0, min(need_wh, ev.max_power_w * stay_h))
            self.sessions[k] = s
            result.sessions += 1

    def _state(self, k: int, s: _Session, now: int) -> EvseNeed:
        """The EVSE's PEBC view, re-stated on arrival and every ``refresh_s`` (as a station
        publishes only what moved)."""
        if s.stated_us < 0 or now - s.stated_us >= self.config.refresh_s * US:
            s.pc = power_constraints(s.ev, self.capacity, now_us=now, delivered_wh=s.delivered_wh)
            s.ec = energy_constraints(s.ev, self.capacity, started_us=s.started_us, now_us=now,
                                      assumed_stay_us=8 * H)
            s.plan = station_plan(s.ev, s.pc, s.ec, now_us=now, now_w=None,
                                  envelope=self.envelopes.get(k), fallback_w=s.pc.max_w,
                                  delivered_wh=s.delivered_wh)
            s.stated_us = now
        assert s.pc is not None
        return EvseNeed(key=("site", k), constraints=s.pc, energy=s.ec,
                        delivered_wh=s.delivered_wh, plan=s.plan, arrived_us=s.started_us)

    def _draw(self, k: int, s: _Session, now: int, step_us: int) -> float:
        """What the EV draws this step within its EVSE's limits; its battery takes it."""
        assert s.pc is not None
        lim = limits(self.envelopes.get(k), s.pc, now, s.pc.max_w)
        watts = min(s.ev.demand_w(), lim.upper_w)
        if 0 < watts < s.pc.min_on_w:
            watts = 0.0  # below the on/off gap the EV cannot charge
        watts = max(0.0, watts)
        wh = watts * step_us / H
        s.ev.store(wh)
        s.delivered_wh += wh
        return watts

    def _record_reports(self, allocation: Allocation, result: DayResult) -> None:
        for f in allocation.shortfalls:
            s = self.sessions.get(f.key[1])
            if s is not None:
                s.reported.add(f.reason)

    def _leave(self, k: int, s: _Session, now: int, result: DayResult, *,
               final: bool = False) -> None:
        del self.sessions[k]
        self.envelopes.pop(k, None)
        result.requested_wh += s.requested_wh
        result.delivered_wh += s.delivered_wh
        if s.ec is None or s.ec.min_wh <= 0 or (final and s.ev.departure_at > now):
            return
        name = f"evse {k} ({s.ev.ev_id}, {s.ev.protocol})"
        met = s.delivered_wh >= s.ec.min_wh - 1.0
        if s.reported:
            result.reported[name] = {r.value for r in s.reported}
        else:
            result.ec_feasible += 1
            if not met:
                result.unmet_unreported.append(
                    f"{name}: {s.delivered_wh:.0f} of {s.ec.min_wh:.0f} Wh")
        result.ec_met += met


