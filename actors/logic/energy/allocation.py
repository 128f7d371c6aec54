"""Sharing a site's power envelope among its EVSEs: the allocation of the local CSMS.

Theory of operation
-------------------
``SiteAllocator.allocate(now_us, needs, site)`` is pure (time is passed in; nothing here reads
a clock or does I/O), so a whole day runs under a fake clock and the same inputs give the same
envelopes. Its inputs are generic PEBC data only: each EVSE's power constraints (PC), energy
constraints (EC), the energy its session has had, and the station's plan (ETP); the site's
grid envelope and PV surplus forecast from the resource manager. Its output is one power range
envelope (PRE) per EVSE, the site's plan and the alerts for what cannot be done.

*The site limit* at a moment is the grid envelope's upper limit plus the PV surplus the
forecast is 95 % sure of (its lower 95 % band), minus the load the allocator does not control.
Planning with the expected PV would overrun the grid connection whenever the sun disappoints;
the 95 % band is where safety is at stake. With no envelope in force the operator's
``fallback_limit_w`` applies and a ``NO_ENVELOPE`` alert says so.

*One allocation* (at now, and at every change of the site limit within the horizon, so a
curtailment at 17:00 is in every station's envelope before 17:00 comes):

1. Lower limits first. An EVSE needs a lower limit when its PC forces one, or when its EC's
   least energy would otherwise not arrive in time (its laxity, the time left minus the time
   the rest needs at full power, is down to ``urgency_margin_s``). If these lower limits alone
   exceed the site limit, EVSEs are shed until they fit: lowest priority first, deferrable
   energy before energy that would vanish, most laxity first; each is named in a
   ``LOWER_LIMITS_EXCEED_SITE`` alert. An EC that cannot be met even at full power is an
   ``ENERGY_UNREACHABLE`` alert from the moment that is known.
2. The on/off gap. An IEC 61851 EV cannot draw less than 6 A, so each EVSE either runs at
   least its ``min_on_w`` or not at all. EVSEs are admitted in order (running ones first,
   then by priority and urgency) while the sum of their minimums fits. Hysteresis keeps this
   from flapping: an EVSE that is off starts only if ``1 + hysteresis`` times its minimum fits
   and it has been off ``min_off_s``; one that runs keeps running for ``min_on_s`` unless the
   site limit itself forbids it.
3. Weighted water-filling shares the rest among the admitted EVSEs: each gets
   ``clamp(weight x level, minimum, cap)`` for the one level at which the sum is exactly what
   is left (an exact sweep over the sorted breakpoints, O(n log n)). The weight is the EVSE's
   priority raised by its urgency, so EVs that must leave with energy get more of a scarce
   site first. The cap is the most the EVSE can take: its PC's maximum and its plan's limit.

The upper limits sum to at most the site limit at every moment by construction, so the site
cannot overrun whatever the EVs do; the station enforces its EVSE's upper limit itself.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

from object_model.energy_messages import AlertCode
from object_model.pebc import (
    Consequence,
    EnergyConstraints,
    EnergyTransferPlan,
    EnvelopeElement,
    ForecastValue,
    PlanElement,
    PowerConstraints,
    PowerRangeEnvelope,
)

US_PER_H = 3_600_000_000
EvseKey = tuple[str, int]  # (station, evse)


@dataclass(frozen=True, slots=True)
class EvseNeed:
    """What the allocator knows of one EVSE (read from the CSMS's copy of its station)."""

    key: EvseKey
    constraints: PowerConstraints
    energy: EnergyConstraints | None = None
    delivered_wh: float = 0.0  # energy of the session so far (the EC counts from its start)
    plan: EnergyTransferPlan | None = None
    priority: float = 1.0
    arrived_us: int = 0

    def cap_w(self, at_us: int) -> float:
        """The most the EVSE can take at ``at_us``: its PC's maximum, and its plan's limit."""
        cap = self.constraints.max_w
        value = self.plan.at(at_us) if self.plan is not None else None
        if value is not None:
            cap = min(cap, value.band(100)[1])
        return max(0.0, cap)

    def active(self, at_us: int) -> bool:
        """Whether an EV is there that wants energy (an EC in force with energy left)."""
        ec = self.energy
        return (ec is not None and ec.valid_from_us <= at_us < ec.valid_until_us
                and ec.max_wh - self.delivered_wh > 1e-6 and self.cap_w(at_us) > 0)

    def remaining_min_wh(self) -> float:
        return 0.0 if self.energy is None else max(0.0, self.energy.min_wh - self.delivered_wh)

    def hours_left(self, at_us: int) -> float:
        return 0.0 if self.energy is None else max(0.0, (self.energy.valid_until_us - at_us)
                                                   / US_PER_H)


@dataclass(frozen=True, slots=True)
class SiteInputs:
    """The site's limits as the resource manager gives them."""

    envelope: PowerRangeEnvelope | None = None
    pv_forecast: EnergyTransferPlan | None = None
    fallback_limit_w: float = 0.0
    unmanaged_w: float = 0.0  # load the allocator does not control (counted against the limit)
    pv_band: int = 95  # which band of the PV forecast to trust (100: only its hard limit)

    def limit_at(self, at_us: int) -> tuple[float, float, bool]:
        """``(upper, lower, from_envelope)`` of the site at ``at_us``."""
        element = self.envelope.at(at_us) if self.envelope is not None else None
        if element is None:
            upper, lower, known = self.fallback_limit_w, -math.inf, False
        else:
            upper, lower, known = element.upper_w, element.lower_w, True
        pv = self.pv_forecast.at(at_us) if self.pv_forecast is not None else None
        if pv is not None:
            upper += max(0.0, pv_lower(pv, self.pv_band))
        return upper - self.unmanaged_w, lower - self.unmanaged_w, known

    def breakpoints(self, start_us: int, end_us: int) -> list[int]:
        """The moments in ``(start_us, end_us)`` at which the site limit may change."""
        points: set[int] = set()
        for timeline in (self.envelope, self.pv_forecast):
            if timeline is None:
                continue
            points.update(e.start_us for e in timeline.elements)
            points.add(timeline.end_us)
        return sorted(p for p in points if start_us < p < end_us)


def pv_lower(value: ForecastValue, band: int) -> float:
    """The PV surplus ``band`` percent sure to be there (the expected value when band is 0)."""
    return value.expected_w if band == 0 else value.band(band)[0]


@dataclass(frozen=True, slots=True)
class AllocatorSettings:
    """How the allocation behaves (see the module docstring)."""

    horizon_s: float = 3_600.0
    urgency_margin_s: float = 900.0
    urgency_weight: float = 4.0
    hysteresis: float = 0.2
    min_on_s: float = 60.0
    min_off_s: float = 60.0
    max_points: int = 12  # allocations per cycle: now and at most this many breakpoints
    clock_skew_s: float = 30.0  # envelopes start this much before now: a station whose
    # clock is behind the CSMS's (or that ticked a moment ago) must not find it not yet begun


@dataclass(frozen=True, slots=True)
class Shortfall:
    """Why one EVSE does not get what it needs."""

    key: EvseKey
    reason: AlertCode
    needed_w: float
    granted_w: float
    shortfall_wh: float
    text: str


@dataclass(slots=True)
class Allocation:
    """One cycle's result: each EVSE's envelope, the site's plan and what cannot be done."""

    at_us: int
    site_limit_w: float
    envelopes: dict[EvseKey, PowerRangeEnvelope]
    granted_w: dict[EvseKey, float]  # upper limits now
    lower_limits_w: float
    plan: EnergyTransferPlan
    shortfalls: list[Shortfall] = field(default_factory=list)
    codes: set[AlertCode] = field(default_factory=set)

    @property
    def allocated_w(self) -> float:
        return sum(self.granted_w.values())


@dataclass(slots=True)
class _Switch:
    on: bool
    since_us: int


@dataclass(slots=True)
class _Point:
    """One allocation at one moment."""

    upper: dict[EvseKey, float]
    lower: dict[EvseKey, float]
    limit_w: float
    lower_sum_w: float
    shortfalls: list[Shortfall]
    codes: set[AlertCode]


class SiteAllocator:
    """See the module docstring. Keeps only the on/off state of each EVSE between cycles."""

    def __init__(self, settings: AllocatorSettings | None = None) -> None:
        self.settings = settings or AllocatorSettings()
        self._switches: dict[EvseKey, _Switch] = {}
        self.switches = 0  # on/off changes so far (flapping shows here)

    def allocate(self, now_us: int, needs: Sequence[EvseNeed], site: SiteInputs) -> Allocation:
        s = self.settings
        end_us = now_us + int(s.horizon_s * 1e6)
        points = [now_us, *site.breakpoints(now_us, end_us)[: s.max_points]]
        first = self._allocate_at(now_us, needs, site, commit=True)
        results = [first]
        for t in points[1:]:  # later moments: assume each EVSE draws what it has now till then
            done = {k: w * (t - now_us) / US_PER_H for k, w in first.upper.items()}
            results.append(self._allocate_at(t, needs, site, commit=False, done_wh=done))
        envelopes = {}
        for need in needs:
            elements: list[EnvelopeElement] = []
            for t, result in zip(points, results, strict=True):
                lo, up = result.lower.get(need.key, 0.0), result.upper.get(need.key, 0.0)
                if elements and elements[-1].lower_w == lo and elements[-1].upper_w == up:
                    continue
                start = t if elements else t - int(s.clock_skew_s * 1e6)
                elements.append(EnvelopeElement(start_us=max(0, start), lower_w=lo, upper_w=up))
            envelopes[need.key] = PowerRangeEnvelope(elements=elements, end_us=end_us)
        shortfalls = {(f.key, f.reason): f for r in results for f in r.shortfalls}
        return Allocation(
            at_us=now_us, site_limit_w=first.limit_w, envelopes=envelopes,
            granted_w=dict(first.upper), lower_limits_w=first.lower_sum_w,
            plan=self._plan(points, results, needs, end_us),
            shortfalls=list(shortfalls.values()),
            codes=set().union(*(r.codes for r in results)))

    # -- one moment ----------------------------------------------------------------------------

    def _allocate_at(self, at_us: int, needs: Sequence[EvseNeed], site: SiteInputs, *,
                     commit: bool, done_wh: dict[EvseKey, float] | None = None) -> _Point:
        s = self.settings
        limit, site_lower, known = site.limit_at(at_us)
        budget = max(0.0, limit)
        codes: set[AlertCode] = set() if known else {AlertCode.NO_ENVELOPE}
        shortfalls: list[Shortfall] = []
        active = [n for n in needs if n.active(at_us)]
        caps = {n.key: n.cap_w(at_us) for n in active}

        # 1. lower limits: forced by the PC, or by an EC that can wait no longer
        hard: dict[EvseKey, float] = {}
        laxity: dict[EvseKey, float] = {}
        urgency: dict[EvseKey, float] = {}
        for n in active:
            cap, left_h = caps[n.key], n.hours_left(at_us)
            need_wh = max(0.0, n.remaining_min_wh() - (done_wh or {}).get(n.key, 0.0))
            laxity[n.key] = left_h - need_wh / cap
            urgency[n.key] = min(1.0, need_wh / (cap * left_h)) if left_h > 0 else 1.0
            if commit and need_wh > cap * left_h + 1e-6:
                codes.add(AlertCode.ENERGY_UNREACHABLE)
                shortfalls.append(Shortfall(
                    n.key, AlertCode.ENERGY_UNREACHABLE, cap, cap, need_wh - cap * left_h,
                    f"needs {need_wh / 1000:.1f} kWh in {left_h:.2f} h; at most "
                    f"{cap * left_h / 1000:.1f} kWh can arrive at {cap / 1000:.1f} kW"))
            lower = max(0.0, n.constraints.forced_w)
            if need_wh > 0 and laxity[n.key] * 3600 <= s.urgency_margin_s:
                lower = max(lower, min(cap, max(need_wh / max(left_h, 1e-9),
                                                n.constraints.min_on_w)))
            if lower > 0:
                hard[n.key] = min(lower, cap)
        if sum(hard.values()) > budget + 1e-6:
            codes.add(AlertCode.LOWER_LIMITS_EXCEED_SITE)
            by_key = {n.key: n for n in active}
            order = sorted(hard, key=lambda k: (
                by_key[k].priority, by_key[k].constraints.consequence != Consequence.DEFER,
                -laxity[k], k))
            total = sum(hard.values())
            for key in order:
                if total <= budget + 1e-6:
                    break
                total -= hard[key]
                need = by_key[key]
                shortfalls.append(Shortfall(
                    key, AlertCode.LOWER_LIMITS_EXCEED_SITE, hard[key], 0.0,
                    need.remaining_min_wh(),
                    f"shed: the lower limits of the site's EVSEs exceed its limit of "
                    f"{budget / 1000:.1f} kW ({need.constraints.consequence} energy, "
                    f"priority {need.priority:g}, laxity {laxity[key]:.2f} h)"))
                del hard[key]
        # 2. the on/off gap, with hysteresis: who runs
        rest = budget - sum(hard.values())
        admitted: dict[EvseKey, float] = dict(hard)  # key -> floor
        shed = {f.key for f in shortfalls if f.reason is AlertCode.LOWER_LIMITS_EXCEED_SITE}
        candidates = [n for n in active if n.key not in hard and n.key not in shed]
        candidates.sort(key=lambda n: (not self._running(n.key, at_us, hold=True),
                                       not self._running(n.key, at_us, hold=False),
                                       -n.priority, -urgency[n.key], n.arrived_us, n.key))
        for n in candidates:
            floor = min(n.constraints.min_on_w, caps[n.key])
            if self._running(n.key, at_us, hold=False):
                needed = floor
            elif self._may_start(n.key, at_us):
                needed = floor * (1 + s.hysteresis)
            else:
                continue
            if needed <= rest + 1e-6:
                admitted[n.key] = floor
                rest -= floor
        # 3. weighted water-filling of what is left above the floors
        weights = {n.key: n.priority * (1 + s.urgency_weight * urgency[n.key])
                   for n in active if n.key in admitted}
        grants = water_fill({k: (admitted[k], caps[k]) for k in admitted}, weights,
                            budget if admitted else 0.0)
        upper: dict[EvseKey, float] = {}
        lowers: dict[EvseKey, float] = {}
        for n in needs:
            up = grants.get(n.key, 0.0)
            up = n.constraints.upper_at_most(up) if up > 0 else 0.0
            if not n.constraints.allows_upper(up):  # no EV and a PC without zero: its least
                up = n.constraints.upper_ranges[0].lower_w
            upper[n.key] = up
            lo = max(n.constraints.forced_w, 0.0)
            lowers[n.key] = lo if n.constraints.allows_lower(lo) and lo <= up else \
                n.constraints.lower_ranges[0].lower_w
        if site_lower > -math.inf and sum(upper.values()) < site_lower - 1e-6:
            codes.add(AlertCode.SITE_LOWER_UNMET)
        if commit:
            self._commit(at_us, upper, needs)
        return _Point(upper, lowers, limit, sum(hard.values()), shortfalls, codes)

    # -- hysteresis ------------------------------------------------------------------------------

    def _running(self, key: EvseKey, at_us: int, *, hold: bool) -> bool:
        """Whether ``key`` runs (``hold``: and must keep running, its ``min_on_s`` not over)."""
        sw = self._switches.get(key)
        if sw is None or not sw.on:
            return False
        return not hold or at_us - sw.since_us < self.settings.min_on_s * 1e6

    def _may_start(self, key: EvseKey, at_us: int) -> bool:
        sw = self._switches.get(key)
        return sw is None or at_us - sw.since_us >= self.settings.min_off_s * 1e6

    def _commit(self, at_us: int, upper: dict[EvseKey, float], needs: Iterable[EvseNeed]) -> None:
        present = set()
        for n in needs:
            present.add(n.key)
            on = upper.get(n.key, 0.0) > 0 and n.active(at_us)
            sw = self._switches.get(n.key)
            if sw is None:
                self._switches[n.key] = _Switch(on, at_us if on else -(1 << 62))
            elif sw.on != on:
                self._switches[n.key] = _Switch(on, at_us)
                self.switches += 1
        for key in set(self._switches) - present:
            del self._switches[key]

    # -- the site's plan ---------------------------------------------------------------------------

    def _plan(self, points: list[int], results: list[_Point], needs: Sequence[EvseNeed],
              end_us: int) -> EnergyTransferPlan:
        """The site's aggregated plan: each EVSE's planned power (its plan's value, within
        what it was granted), summed; the bands add as independent errors (in quadrature),
        the hard limits add up."""
        elements = []
        for t, result in zip(points, results, strict=True):
            expected = lo68 = hi68 = lo95 = hi95 = lo_lim = hi_lim = 0.0
            for n in needs:
                granted = result.upper.get(n.key, 0.0)
                value = n.plan.at(t) if n.plan is not None else None
                if value is None or granted <= 0:
                    continue
                e = min(value.expected_w, granted)
                a68, b68 = (min(x, granted) for x in value.band(68))
                a95, b95 = (min(x, granted) for x in value.band(95))
                a, b = (min(x, granted) for x in value.band(100))
                expected += e
                lo68 += (e - a68) ** 2
                hi68 += (b68 - e) ** 2
                lo95 += (e - a95) ** 2
                hi95 += (b95 - e) ** 2
                lo_lim += a
                hi_lim += b
            value = ForecastValue(
                expected_w=expected,
                lower_68_w=expected - math.sqrt(lo68), upper_68_w=expected + math.sqrt(hi68),
                lower_95_w=max(lo_lim, expected - math.sqrt(lo95)),
                upper_95_w=min(hi_lim, expected + math.sqrt(hi95)),
                lower_limit_w=min(lo_lim, expected), upper_limit_w=max(hi_lim, expected))
            value = _nest(value)
            elements.append(PlanElement(start_us=t, power=value))
        return EnergyTransferPlan(elements=elements, end_us=end_us)


def _nest(v: ForecastValue) -> ForecastValue:
    """Make rounding-level disorders between bands vanish (quadrature sums of clipped bands
    can cross the hard limits by a rounding error)."""
    lo_lim = min(v.lower_limit_w or 0.0, v.expected_w)
    lo95 = min(max(v.lower_95_w or 0.0, lo_lim), v.expected_w)
    lo68 = min(max(v.lower_68_w or 0.0, lo95), v.expected_w)
    hi_lim = max(v.upper_limit_w or 0.0, v.expected_w)
    hi95 = max(min(v.upper_95_w or 0.0, hi_lim), v.expected_w)
    hi68 = max(min(v.upper_68_w or 0.0, hi95), v.expected_w)
    return ForecastValue(expected_w=v.expected_w, lower_68_w=lo68, upper_68_w=hi68,
                         lower_95_w=lo95, upper_95_w=hi95, lower_limit_w=lo_lim,
                         upper_limit_w=hi_lim)


def water_fill(bounds: dict[EvseKey, tuple[float, float]], weights: dict[EvseKey, float],
               total: float) -> dict[EvseKey, float]:
    """Share ``total``: each key gets ``clamp(weight x level, floor, cap)`` for the level at
    which the shares add up to ``total`` (all caps if they fit; all floors if even those do
    not, which the caller avoids). Exact: a sweep over the sorted breakpoints."""
    if not bounds:
        return {}
    floors = sum(lo for lo, _ in bounds.values())
    caps = sum(max(lo, hi) for lo, hi in bounds.values())
    if total >= caps:
        return {k: max(lo, hi) for k, (lo, hi) in bounds.items()}
    if total <= floors:
        return {k: lo for k, (lo, _) in bounds.items()}
    # x_k(level) = clamp(w level, lo, hi): piecewise linear in level, with slope sum(w) over
    # the keys between their two breakpoints lo/w and hi/w
    events: list[tuple[float, float]] = []  # (level, change of slope)
    for k, (lo, hi) in bounds.items():
        w = max(weights.get(k, 1.0), 1e-9)
        events.append((lo / w, w))
        events.append((max(lo, hi) / w, -w))
    events.sort()
    level, slope, value = 0.0, 0.0, floors  # value = sum of shares at ``level``
    i = 0
    while i < len(events):
        nxt = events[i][0]
        reach = value + slope * (nxt - level)
        if reach >= total:
            break
        level, value = nxt, reach
        while i < len(events) and events[i][0] == nxt:
            slope += events[i][1]
            i += 1
    if slope > 0:
        level += (total - value) / slope
    return {k: min(max(lo, hi), max(lo, max(weights.get(k, 1.0), 1e-9) * level))
            for k, (lo, hi) in bounds.items()}

