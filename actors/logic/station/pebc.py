"""What an EVSE tells a CSMS about its energy transfer, in the generic PEBC types.

The station knows what the EV speaks; the CSMS must not need to. This module maps an EV and
the EVSE it is plugged into to ``PowerConstraints`` (PC), ``EnergyConstraints`` (EC) and an
``EnergyTransferPlan`` (ETP), and an envelope (PRE) back to the limits the EVSE obeys. Pure
functions: time comes in as ``now_us``; no clock, no I/O.

How each protocol maps:

* **basic IEC 61851** (PWM only): the station knows neither the departure time, nor the state
  of charge, nor the energy wanted. Its upper limit is 0 or at least 6 A on every phase the EV
  uses (the on/off gap); the driver may leave at any time, so energy held back may be lost
  (``vanish``). The EC is a guess: from the session start over an assumed stay, anything from
  nothing to what full power would deliver. Its plan is wide: the EV may stop drawing at any
  moment, or draw less than offered.
* **ISO 15118-20**: the EV reports its departure time, state of charge and energy requests
  (``EVMinimumEnergyRequest``: to its minimum SoC; ``EVMaximumEnergyRequest``: to its target),
  and may switch to one phase, so the gap is one phase's 6 A. A bidirectional EV, where the
  EVSE may discharge, accepts any power from its discharge limit to its charge limit. Held-back
  energy is ``defer`` while it can still be made up before departure, else ``vanish``. Its
  plan is narrow: the EV tells what it will draw.
* **no EV**: the EVSE's hardware range, no EC, no plan.

``EnergyTransfers`` keeps these values in the station's tree, tick by tick, writing them only
when they change.

EC amounts are grid-side energy since the session started, so they stay put for the whole
session; what is still needed is ``min_wh - session/energy_wh``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TypeVar

from actors.logic.station.changes import EvseLayout, TickChanges
from actors.logic.station.ev import (
    BATTERY_EFFICIENCY,
    MIN_AC_CURRENT_A,
    MIN_DC_POWER_W,
    NOMINAL_V,
    ElectricVehicle,
)
from object_model.pebc import (
    MAX_ELEMENTS,
    Consequence,
    EnergyConstraints,
    EnergyTransferPlan,
    ForecastValue,
    PlanElement,
    PowerConstraints,
    PowerRange,
    PowerRangeEnvelope,
)

US = 1_000_000
WH_US = 3_600 * US
MAX_DISCHARGE_W = 10_000.0
DEFER_LAXITY = 0.8  # defer while the remaining need takes under 80 % of the time left
PLAN_MOVE_W, PLAN_MOVE_SHARE, PLAN_MOVE_US = 500.0, 0.05, 5 * 60 * US
NARROW_68, NARROW_95 = 0.03, 0.08
# a plan is computed again when the power drawn moved this much, or after a minute
REPLAN_W, REPLAN_SHARE, REPLAN_US = 200.0, 0.02, 60 * US
_M = TypeVar("_M", PowerRangeEnvelope, EnergyTransferPlan)


@dataclass(frozen=True, slots=True, kw_only=True)
class EvseCapacity:
    """What an EVSE can deliver now, whatever EV is plugged in: ``rating_w`` is its hardware
    (halved while derating), ``permitted_w`` and ``max_current_a`` (per phase, connector
    included) what its permissions allow, ``may_discharge`` whether it may give power back."""

    rating_w: float
    permitted_w: float
    max_current_a: float
    phases: int
    dc: bool
    may_discharge: bool = False


@dataclass(frozen=True, slots=True)
class Limits:
    """The limits an EVSE obeys now: draw at most ``upper_w`` and at least ``floor_w`` (when
    the EV takes that much); ``envelope`` says whether a CSMS envelope set them."""

    upper_w: float
    floor_w: float
    envelope: bool


# -- power constraints ---------------------------------------------------------------------------


def max_power_w(ev: ElectricVehicle, evse: EvseCapacity) -> float:
    """The most the EVSE can deliver to ``ev``: the EV's charger, the connector and permitted
    current on the phases in use, the EVSE's rating and permitted power."""
    cap = min(ev.max_power_w, evse.rating_w, evse.permitted_w)
    if not evse.dc:
        amps = min(ev.max_current_a, evse.max_current_a)
        cap = min(cap, amps * NOMINAL_V * min(ev.phases, evse.phases))
    return float(math.floor(max(0.0, cap)))


def discharge_w(ev: ElectricVehicle, evse: EvseCapacity) -> float:
    """The most ``ev`` may give back through this EVSE now (0: it may not)."""
    if not (ev.iso15118_20 and ev.may_discharge and evse.may_discharge):
        return 0.0
    return float(math.floor(min(MAX_DISCHARGE_W, ev.max_power_w, evse.rating_w,
                                evse.permitted_w)))


def power_constraints(ev: ElectricVehicle | None, evse: EvseCapacity, *, now_us: int = 0,
                      delivered_wh: float = 0.0, phases: int | None = None) -> PowerConstraints:
    """The PC of the EVSE with ``ev`` plugged in (or none), ``delivered_wh`` into the session;
    ``phases`` are those the EV uses now (an ISO 15118-20 EV may have switched to one), which
    does not narrow the ranges: it may switch back."""
    if ev is None:
        top = float(math.floor(max(0.0, evse.rating_w)))
        return PowerConstraints(upper_ranges=[PowerRange(lower_w=0.0, upper_w=top)],
                                lower_ranges=[_ZERO], consequence=Consequence.DEFER,
                                phases=evse.phases)
    top = max_power_w(ev, evse)
    phases = evse.phases if evse.dc else phases or min(ev.phases, evse.phases)
    if evse.dc:
        gap = MIN_DC_POWER_W
    else:  # an ISO 15118-20 EV can switch to one phase: only one phase's 6 A is a gap
        gap = MIN_AC_CURRENT_A * NOMINAL_V * (1 if ev.iso15118_20 else min(ev.phases, evse.phases))
    give = discharge_w(ev, evse)
    if give > 0:
        both = [PowerRange(lower_w=-give, upper_w=top)]
        upper, lower = both, both
    else:
        upper = [_ZERO] + ([PowerRange(lower_w=gap, upper_w=top)] if top >= gap else [])
        lower = [_ZERO]
    return PowerConstraints(upper_ranges=upper, lower_ranges=lower, phases=phases,
                            consequence=consequence(ev, evse, now_us=now_us,
                                                    delivered_wh=delivered_wh))


_ZERO = PowerRange(lower_w=0.0, upper_w=0.0)


def consequence(ev: ElectricVehicle, evse: EvseCapacity, *, now_us: int, delivered_wh: float
                ) -> Consequence:
    """Energy held back now can be made up later only if the EV stays long enough: a basic
    EV may leave at any time; an ISO 15118-20 one says when, so it defers while its laxity
    is comfortable (its remaining need at full power takes under 80 % of the time left)."""
    if not ev.iso15118_20:
        return Consequence.VANISH
    top_w = max_power_w(ev, evse)
    need_wh = _grid_wh(ev, ev.target_soc) - delivered_wh
    if need_wh <= 0:
        return Consequence.DEFER
    left_h = (ev.departure_at - now_us) / WH_US
    if top_w <= 0 or left_h <= 0 or need_wh / top_w >= DEFER_LAXITY * left_h:
        return Consequence.VANISH
    return Consequence.DEFER


# -- energy constraints --------------------------------------------------------------------------


def _grid_wh(ev: ElectricVehicle, soc: float) -> float:
    """Grid-side energy to bring ``ev`` from its SoC at arrival to ``soc`` (negative: given
    back, with the losses on the other side)."""
    battery_wh = (soc - ev.arrival_soc) * ev.battery_wh
    return battery_wh / BATTERY_EFFICIENCY if battery_wh >= 0 else battery_wh * BATTERY_EFFICIENCY


def energy_constraints(ev: ElectricVehicle | None, evse: EvseCapacity, *, started_us: int,
                       now_us: int, assumed_stay_us: int) -> EnergyConstraints | None:
    """The EC of the session that began at ``started_us`` (None without an EV).

    ISO 15118-20: from the session start to the departure, the energy to the EV's minimum SoC
    (or less, if it may give some back) and to its target. IEC 61851: the departure is unknown,
    so the window is an assumed stay (extended by another one whenever ``now_us`` passes it)
    and the need is anything up to what full power would deliver in it."""
    if ev is None:
        return None
    if ev.iso15118_20:
        least = _grid_wh(ev, ev.min_soc)
        if discharge_w(ev, evse) <= 0:
            least = max(0.0, least)
        most = max(least, _grid_wh(ev, ev.target_soc))
        return EnergyConstraints(valid_from_us=started_us,
                                 valid_until_us=max(ev.departure_at, started_us + 1),
                                 min_wh=round(least, 1), max_wh=round(most, 1))
    stays = max(1, (now_us - started_us) // assumed_stay_us + 1)
    until = started_us + stays * assumed_stay_us
    return EnergyConstraints(valid_from_us=started_us, valid_until_us=until, min_wh=0.0,
                             max_wh=round(max_power_w(ev, evse) * (until - started_us) / WH_US, 1))


# -- the envelope ---------------------------------------------------------------------------------


def limits(envelope: PowerRangeEnvelope | None, pc: PowerConstraints, now_us: int,
           fallback_w: float) -> Limits:
    """The limits to obey at ``now_us``: the envelope's element in force, clamped into ``pc``
    (an envelope written for another EV may no longer fit), else ``fallback_w`` (the
    permissions or the rating) and no floor."""
    element = envelope.at(now_us) if envelope is not None else None
    if element is None:
        return Limits(upper_w=fallback_w, floor_w=0.0, envelope=False)
    upper = pc.upper_at_most(min(element.upper_w, pc.max_w))
    floor = min(element.lower_w, pc.lower_ranges[-1].upper_w, upper)
    return Limits(upper_w=upper, floor_w=max(floor, pc.lower_ranges[0].lower_w), envelope=True)


# -- the energy transfer plan ---------------------------------------------------------------------


def transfer_plan(ev: ElectricVehicle | None, pc: PowerConstraints,
                  ec: EnergyConstraints | None, *, now_us: int, now_w: float | None,
                  envelope: PowerRangeEnvelope | None, fallback_w: float,
                  delivered_wh: float) -> EnergyTransferPlan | None:
    """The plan from ``now_us`` to the end of the EC window (None without an EV).

    Expected power follows the limits over time (the envelope's elements, then
    ``fallback_w``), capped by what the EV takes now; ``now_w``, the power drawn now (None
    before the EV was authorised), stands for the present. An ISO 15118-20 EV's plan drops to
    0 W once its remaining maximum energy is delivered; its bands are narrow (the EV says what
    it will do). A basic EV's are wide: it may stop, or draw less than offered, at any time."""
    if ev is None or ec is None or ec.valid_until_us <= now_us:
        return None
    ev_w = ev.demand_w()
    need_wh = ec.max_wh - delivered_wh if ev.iso15118_20 else math.inf
    bounds = {now_us}
    if envelope is not None:
        bounds.update(e.start_us for e in envelope.elements)
        bounds.add(envelope.end_us)
    times = sorted(t for t in bounds if now_us <= t < ec.valid_until_us)
    steps: list[tuple[int, float]] = []
    for i, t in enumerate(times):
        lim = limits(envelope, pc, t, fallback_w)
        if i == 0 and now_w is not None:
            watts = now_w
        else:
            watts = min(ev_w, pc.upper_at_most(min(lim.upper_w, pc.max_w)))
            watts = max(watts, min(lim.floor_w, ev_w)) if lim.floor_w > 0 else watts
            watts = lim.upper_w if lim.upper_w < 0 else watts  # giving back on request
        end = times[i + 1] if i + 1 < len(times) else ec.valid_until_us
        if watts > 0 and need_wh <= watts * (end - t) / WH_US:
            done = t + int(max(0.0, need_wh) / watts * WH_US)
            steps += [(t, watts)] if done > t else []
            steps.append((done, 0.0))
            break
        steps.append((t, watts))
        need_wh -= watts * (end - t) / WH_US
    return _plan(steps, ec.valid_until_us, pc, narrow=ev.iso15118_20)


def _plan(steps: list[tuple[int, float]], end_us: int, pc: PowerConstraints, *, narrow: bool
          ) -> EnergyTransferPlan:
    merged: list[tuple[int, float]] = []
    for t, watts in steps:
        if t >= end_us:
            break
        if not merged or abs(merged[-1][1] - watts) > 1.0:
            merged.append((t, float(round(watts))))
    merged = merged[:MAX_ELEMENTS]
    low, high = pc.upper_ranges[0].lower_w, pc.max_w
    return EnergyTransferPlan(end_us=end_us, elements=[
        PlanElement(start_us=t, power=_forecast(watts, low, high, narrow)) for t, watts in merged])


def _forecast(watts: float, low: float, high: float, narrow: bool) -> ForecastValue:
    watts = min(high, max(low, watts))
    if narrow:
        def band(share: float) -> tuple[float, float]:
            spread = abs(watts) * share
            return max(low, watts - spread), min(high, watts + spread)
        (l68, u68), (l95, u95) = band(NARROW_68), band(NARROW_95)
    else:  # the EV may draw less, stop, or take more when a neighbour stops
        l68, u68 = 0.5 * watts, min(high, max(watts, 1.3 * watts))
        l95, u95 = min(0.0, watts), high
    return ForecastValue(expected_w=watts, lower_68_w=l68, upper_68_w=u68, lower_95_w=l95,
                         upper_95_w=u95, lower_limit_w=min(low, l95), upper_limit_w=high)


def plan_moved(old: EnergyTransferPlan | None, new: EnergyTransferPlan | None, now_us: int
               ) -> bool:
    """Whether ``new`` differs materially from ``old`` from ``now_us`` on, so that it is worth
    publishing: another shape, an expected power moved by more than the larger of 5 % and
    500 W, a limit changed, or a boundary (not the first start, which is always "now")
    moved by more than 5 minutes."""
    if old is None or new is None:
        return old is not new
    first = old.index_at(now_us)
    if first is None or len(old.elements) - first != len(new.elements):
        return True
    if abs(old.end_us - new.end_us) > PLAN_MOVE_US:
        return True
    for k, (a, b) in enumerate(zip(old.elements[first:], new.elements, strict=True)):
        if k and abs(a.start_us - b.start_us) > PLAN_MOVE_US:
            return True
        pa, pb = a.power, b.power
        if abs(pa.expected_w - pb.expected_w) > max(
                PLAN_MOVE_W, PLAN_MOVE_SHARE * max(abs(pa.expected_w), abs(pb.expected_w))):
            return True
        if pa.band(100) != pb.band(100):
            return True
    return False


# -- in the station's tree ------------------------------------------------------------------------


@dataclass(frozen=True, slots=True, kw_only=True)
class Control:
    """One EVSE's energy transfer at this tick: what it can do, its constraints, the limits
    it obeys (the envelope's ``envelope``, else ``fallback_w``)."""

    capacity: EvseCapacity
    pc: PowerConstraints
    limits: Limits
    envelope: PowerRangeEnvelope | None
    fallback_w: float
    key: tuple[object, ...]  # equal keys: equal constraints and limits


class EnergyTransfers:
    """Keeps each EVSE's ``energy/`` values in the tree, through a tick's ``TickChanges``.

    Writes are published to the CSMS and beyond, so they are made only when a value changes
    (the plan: when it moved materially, ``plan_moved``); and since a station ticks every
    second, the models are rebuilt only when one of their inputs changed.
    """

    def __init__(self, *, assumed_stay_us: int) -> None:
        self.assumed_stay_us = assumed_stay_us
        self.control: dict[int, Control] = {}
        self._phases: dict[int, int] = {}  # the phases each EV used at the last tick
        self._parsed: dict[str, tuple[object, object]] = {}  # path -> (plain, model)
        self._pcs: dict[int, tuple[tuple[object, ...], PowerConstraints]] = {}
        self._plans: dict[int, tuple[tuple[object, ...], int, float]] = {}  # key, when, power

    def constrain(self, w: TickChanges, e: EvseLayout, ev: ElectricVehicle | None, *,
                  now_us: int, may_charge: bool, max_w: float, max_a: float) -> Control:
        """Write the EVSE's power constraints and the upper limit it obeys now (``max_w`` and
        ``max_a`` per phase are its permissions, station and EVSE level together)."""
        p = f"{e.p}energy/"
        rating = w.get(f"{e.p}max_power_w", 0.0)
        if w.get(f"{e.p}power_module/derating_active"):
            rating /= 2
        conn_a = max((w.get(f"{e.p}connector/{c}/max_current_a", 0.0)
                      for c in ((ev.connector,) if ev else e.connectors)), default=0.0)
        cap = EvseCapacity(rating_w=rating, permitted_w=max_w, max_current_a=min(conn_a, max_a),
                           phases=w.get(f"{e.p}phases", 3), dc=e.dc,
                           may_discharge=bool(w.get(f"{e.p}permissions/may_discharge", False)))
        if ev is None:
            self._phases.pop(e.id, None)
        delivered = w.get(f"{e.p}session/energy_wh", 0.0) if ev else 0.0
        key = (_visit(ev), cap, self._phases.get(e.id),
               ev and consequence(ev, cap, now_us=now_us, delivered_wh=delivered))
        memo = self._pcs.get(e.id)
        if memo is None or memo[0] != key:
            memo = self._pcs[e.id] = (key, power_constraints(
                ev, cap, now_us=now_us, phases=self._phases.get(e.id), delivered_wh=delivered))
            w.set(p + "power_constraints", memo[1])
        pc = memo[1]
        envelope = self._model(w, p + "envelope", PowerRangeEnvelope)
        fallback = min(rating, max_w) if may_charge else 0.0
        obeyed = limits(envelope, pc, now_us, fallback)
        if not may_charge:
            obeyed = Limits(min(0.0, obeyed.upper_w), min(0.0, obeyed.floor_w), obeyed.envelope)
        w.set(p + "limit_w", obeyed.upper_w)
        self.control[e.id] = Control(capacity=cap, pc=pc, limits=obeyed, envelope=envelope,
                                     fallback_w=fallback, key=(key, id(envelope), fallback))
        return self.control[e.id]

    def plan(self, w: TickChanges, e: EvseLayout, ev: ElectricVehicle | None, power: float,
             now_us: int, *, phases: int | None) -> None:
        """Write the EVSE's energy constraints, and its plan when it moved materially;
        ``power`` is drawn now, on ``phases`` (None: not drawing)."""
        if ev is not None and phases is not None:
            self._phases[e.id] = phases
        ctl, p = self.control[e.id], f"{e.p}energy/"
        if ev is not None and ev.authorised is False:
            ev = None  # refused: no transfer to plan
        started = w.get(f"{e.p}session/started_at") or now_us
        key = (ctl.key, _visit(ev), (now_us - started) // self.assumed_stay_us)
        memo = self._plans.get(e.id)
        if memo is not None and memo[0] == key and now_us - memo[1] < REPLAN_US and abs(
                power - memo[2]) <= max(REPLAN_W, REPLAN_SHARE * abs(memo[2])):
            return  # nothing moved: the plan stands
        self._plans[e.id] = (key, now_us, power)
        ec = energy_constraints(ev, ctl.capacity, now_us=now_us, started_us=started,
                                assumed_stay_us=self.assumed_stay_us)
        plan = transfer_plan(ev, ctl.pc, ec, now_us=now_us, envelope=ctl.envelope,
                             now_w=power if ev is not None and ev.authorised else None,
                             fallback_w=ctl.fallback_w,
                             delivered_wh=w.get(f"{e.p}session/energy_wh", 0.0))
        if ec is None:
            w.clear(p + "energy_constraints")
        else:
            w.set(p + "energy_constraints", ec)
        if plan is None:
            w.clear(p + "plan")
        elif plan_moved(self._model(w, p + "plan", EnergyTransferPlan), plan, now_us):
            w.set(p + "plan", plan)

    def _model(self, w: TickChanges, path: str, model: type[_M]) -> _M | None:
        """The complex value at ``path`` as its model, parsed again only when it changed."""
        plain = w.get(path)
        if plain is None:
            return None
        hit = self._parsed.get(path)
        if hit is None or not (hit[0] is plain or hit[0] == plain):
            hit = self._parsed[path] = (plain, model.model_validate(plain))
        parsed = hit[1]
        assert isinstance(parsed, model)  # the cache holds what was parsed as ``model``
        return parsed


def _visit(ev: ElectricVehicle | None) -> tuple[int, int] | None:
    """Which visit of an EV (the EV object changes state, its visit does not)."""
    return None if ev is None else (id(ev), ev.arrived_at)


__all__ = [
    "Control",
    "EnergyTransfers",
    "EvseCapacity",
    "Limits",
    "consequence",
    "discharge_w",
    "energy_constraints",
    "limits",
    "max_power_w",
    "plan_moved",
    "power_constraints",
    "transfer_plan",
]
