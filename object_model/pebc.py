"""Power-envelope-based control (PEBC): the complex value types of every energy transfer.

IEC 63110 represents each energy transfer with four types taken from IEC 63402 / EN 50491-12:

* ``PowerConstraints`` (PC): the ranges within which the upper and the lower limit of an
  envelope may be chosen. An IEC 61851 EV cannot draw between 0 and 6 A per phase, so its
  upper limit may be 0 or lie in [6 A, 32 A] x volts x phases: two allowed ranges with an
  on/off gap between them. ``consequence`` says what happens to energy not transferred now:
  it is made up later (``defer``) or lost (``vanish``).
* ``EnergyConstraints`` (EC): the least and the most energy to transfer within a window.
* ``PowerRangeEnvelope`` (PRE): upper and lower power limits over time, as totals or per
  phase. Both limits may sit on the same side of zero ("draw between 3 and 5 kW"), which
  OCPP's charging limits cannot say.
* ``EnergyTransferPlan`` (ETP): the planned power over time, each value with its
  percent-probability ranges (68 % and 95 % bands, and the hard limits), so that a planner
  knows how sure the plan is.

Power is in W (positive: drawn from the grid), energy in Wh, times in microseconds since the
Unix epoch. Every element runs from its ``start_us`` to the next element's (the last one to
``end_us``); elements are in strict time order. Validation refuses what cannot be meant (a
lower limit above the upper, overlapping or unordered elements, bands that are not nested,
absurd magnitudes) with a message that names the element; ``envelope_problems`` checks an
envelope against the constraints it must respect.
"""

from __future__ import annotations

import bisect
import itertools
import math
from collections.abc import Sequence
from enum import StrEnum
from typing import TYPE_CHECKING, Annotated

from pydantic import Field, field_validator, model_validator

from object_model.types import ComplexValue

MAX_W = 1e8  # 100 MW: beyond any site this system will manage
MAX_WH = 1e10
MAX_ELEMENTS = 288  # a day in 5-minute steps, as S2 allows
TOLERANCE_W = 1e-6

Watts = Annotated[float, Field(ge=-MAX_W, le=MAX_W, allow_inf_nan=False)]
WattHours = Annotated[float, Field(ge=-MAX_WH, le=MAX_WH, allow_inf_nan=False)]
Micros = Annotated[int, Field(ge=0, le=2**62)]


class Consequence(StrEnum):
    """What becomes of energy an envelope keeps from flowing now (S2's consequence type)."""

    DEFER = "defer"  # transferred later: the EV stays long enough to make it up
    VANISH = "vanish"  # lost: the EV leaves (or may leave) before it could be made up


class PowerRange(ComplexValue):
    """A closed range of power, ``lower_w`` <= ``upper_w``."""

    lower_w: Watts
    upper_w: Watts

    @model_validator(mode="after")
    def _ordered(self) -> PowerRange:
        if self.lower_w > self.upper_w:
            raise ValueError(f"lower_w {self.lower_w:g} is above upper_w {self.upper_w:g}")
        return self

    def contains(self, watts: float) -> bool:
        return self.lower_w - TOLERANCE_W <= watts <= self.upper_w + TOLERANCE_W


def _check_ranges(ranges: list[PowerRange], what: str) -> list[PowerRange]:
    for i in range(1, len(ranges)):
        if ranges[i].lower_w <= ranges[i - 1].upper_w:
            raise ValueError(f"{what}[{i}] starts at {ranges[i].lower_w:g} W, not after "
                             f"{what}[{i - 1}] ends ({ranges[i - 1].upper_w:g} W): ranges must "
                             "be in ascending order and disjoint")
    return ranges


class PowerConstraints(ComplexValue):
    """PC: where an envelope's limits may lie. Each limit may take any value in the union of
    its ranges (ascending, disjoint); the gap between two ranges is a power the transfer
    cannot run at (IEC 61851's 0 to 6 A)."""

    upper_ranges: list[PowerRange] = Field(min_length=1, max_length=16)
    lower_ranges: list[PowerRange] = Field(min_length=1, max_length=16)
    consequence: Consequence = Consequence.DEFER
    phases: int = Field(default=3, ge=1, le=3)

    @field_validator("upper_ranges", "lower_ranges")
    @classmethod
    def _disjoint(cls, ranges: list[PowerRange], info: object) -> list[PowerRange]:
        return _check_ranges(ranges, getattr(info, "field_name", "ranges"))

    @property
    def max_w(self) -> float:
        """The highest upper limit allowed."""
        return self.upper_ranges[-1].upper_w

    @property
    def min_on_w(self) -> float:
        """The least positive power the transfer can run at (the top of the on/off gap)."""
        for r in self.upper_ranges:
            if r.upper_w > TOLERANCE_W:
                return max(r.lower_w, 0.0)
        return math.inf

    @property
    def forced_w(self) -> float:
        """The least lower limit allowed: a positive one means the transfer must run."""
        return self.lower_ranges[0].lower_w

    def allows_upper(self, watts: float) -> bool:
        return any(r.contains(watts) for r in self.upper_ranges)

    def allows_lower(self, watts: float) -> bool:
        return any(r.contains(watts) for r in self.lower_ranges)

    def upper_at_most(self, watts: float) -> float:
        """The highest allowed upper limit not above ``watts`` (the least one if none is)."""
        best = self.upper_ranges[0].lower_w
        for r in self.upper_ranges:
            if r.lower_w > watts + TOLERANCE_W:
                break
            best = min(r.upper_w, watts)
        return best


class EnergyConstraints(ComplexValue):
    """EC: at least ``min_wh`` and at most ``max_wh`` within ``[valid_from_us, valid_until_us)``
    (negative: energy given back to the grid)."""

    valid_from_us: Micros
    valid_until_us: Micros
    min_wh: WattHours
    max_wh: WattHours

    @model_validator(mode="after")
    def _consistent(self) -> EnergyConstraints:
        if self.valid_until_us <= self.valid_from_us:
            raise ValueError("valid_until_us must be after valid_from_us")
        if self.min_wh > self.max_wh:
            raise ValueError(f"min_wh {self.min_wh:g} is above max_wh {self.max_wh:g}")
        return self


class EnvelopeElement(ComplexValue):
    """From ``start_us`` on: total limits ``lower_w``..``upper_w``; with ``per_phase``, the
    limits of each phase (L1, L2, L3), whose sums are the totals."""

    start_us: Micros
    lower_w: Watts
    upper_w: Watts
    per_phase: list[PowerRange] | None = Field(default=None, min_length=3, max_length=3)

    @model_validator(mode="after")
    def _ordered(self) -> EnvelopeElement:
        if self.lower_w > self.upper_w:
            raise ValueError(f"lower_w {self.lower_w:g} is above upper_w {self.upper_w:g}")
        if self.per_phase is not None:
            lower = sum(p.lower_w for p in self.per_phase)
            upper = sum(p.upper_w for p in self.per_phase)
            if abs(lower - self.lower_w) > 1e-3 or abs(upper - self.upper_w) > 1e-3:
                raise ValueError(f"per-phase limits add up to {lower:g}..{upper:g} W, not to "
                                 f"the totals {self.lower_w:g}..{self.upper_w:g} W")
        return self


def _check_times(starts: list[int], end_us: int) -> None:
    for i in range(1, len(starts)):
        if starts[i] <= starts[i - 1]:
            raise ValueError(f"element {i} starts at {starts[i]}, not after element {i - 1} "
                             f"({starts[i - 1]}): elements must be in strict time order")
    if end_us <= starts[-1]:
        raise ValueError(f"end_us {end_us} is not after the last element's start {starts[-1]}")


class _Timeline(ComplexValue):
    """Elements in strict time order, each lasting until the next; the last until ``end_us``."""

    end_us: Micros
    if TYPE_CHECKING:  # each timeline declares its own ``elements``; all have ``start_us``
        elements: Sequence[EnvelopeElement | PlanElement]

    def index_at(self, now_us: int) -> int | None:
        """The index of the element in force at ``now_us`` (None: before the first or from
        ``end_us`` on)."""
        if now_us >= self.end_us:
            return None
        i = bisect.bisect_right(self._starts(), now_us) - 1
        return i if i >= 0 else None

    def _starts(self) -> list[int]:
        return [e.start_us for e in self.elements]

    @property
    def start_us(self) -> int:
        return self._starts()[0]


class PowerRangeEnvelope(_Timeline):
    """PRE: power limits over time."""

    elements: list[EnvelopeElement] = Field(min_length=1, max_length=MAX_ELEMENTS)

    @model_validator(mode="after")
    def _in_order(self) -> PowerRangeEnvelope:
        _check_times(self._starts(), self.end_us)
        return self

    def at(self, now_us: int) -> EnvelopeElement | None:
        i = self.index_at(now_us)
        return None if i is None else self.elements[i]


class ForecastValue(ComplexValue):
    """One planned power with its percent-probability ranges: the value lies within the
    68 % band with 68 % probability, within the 95 % band with 95 %, and never outside the
    limits. Bands nest: upper limit >= upper 95 >= upper 68 >= expected, and the mirror below.
    A band left out is as wide as the next one inside it."""

    expected_w: Watts
    lower_68_w: Watts | None = None
    upper_68_w: Watts | None = None
    lower_95_w: Watts | None = None
    upper_95_w: Watts | None = None
    lower_limit_w: Watts | None = None
    upper_limit_w: Watts | None = None

    @model_validator(mode="after")
    def _nested(self) -> ForecastValue:
        names = ("lower_limit_w", "lower_95_w", "lower_68_w", "expected_w",
                 "upper_68_w", "upper_95_w", "upper_limit_w")
        present = [(n, getattr(self, n)) for n in names if getattr(self, n) is not None]
        for (a, va), (b, vb) in itertools.pairwise(present):
            if va > vb + TOLERANCE_W:
                raise ValueError(f"bands are not nested: {a} {va:g} is above {b} {vb:g} "
                                 "(need limit >= 95 % >= 68 % >= expected, and the mirror below)")
        return self

    def band(self, percent: int) -> tuple[float, float]:
        """``(lower, upper)`` of the ``percent`` band (68, 95 or 100), widening missing ones
        to the next band inside."""
        # the allocation asks this millions of times a day: plain branches, no loop
        low = high = self.expected_w
        if (v := self.lower_68_w) is not None:
            low = v
        if (v := self.upper_68_w) is not None:
            high = v
        if percent == 68:
            return low, high
        if (v := self.lower_95_w) is not None:
            low = v
        if (v := self.upper_95_w) is not None:
            high = v
        if percent == 95:
            return low, high
        if percent != 100:
            raise KeyError(percent)
        if (v := self.lower_limit_w) is not None:
            low = v
        if (v := self.upper_limit_w) is not None:
            high = v
        return low, high


class PlanElement(ComplexValue):
    start_us: Micros
    power: ForecastValue


class EnergyTransferPlan(_Timeline):
    """ETP: planned power over time, with its uncertainty."""

    elements: list[PlanElement] = Field(min_length=1, max_length=MAX_ELEMENTS)

    @model_validator(mode="after")
    def _in_order(self) -> EnergyTransferPlan:
        _check_times(self._starts(), self.end_us)
        return self

    def at(self, now_us: int) -> ForecastValue | None:
        i = self.index_at(now_us)
        return None if i is None else self.elements[i].power


def envelope_problems(envelope: PowerRangeEnvelope, constraints: PowerConstraints) -> list[str]:
    """Why ``envelope`` does not respect ``constraints`` (empty: it does): every element's
    upper limit must be an allowed upper value and its lower limit an allowed lower value."""
    problems = []
    for i, e in enumerate(envelope.elements):
        if not constraints.allows_upper(e.upper_w):
            problems.append(f"element {i}: upper_w {e.upper_w:g} W is outside the allowed "
                            f"upper ranges {_ranges(constraints.upper_ranges)}")
        if not constraints.allows_lower(e.lower_w):
            problems.append(f"element {i}: lower_w {e.lower_w:g} W is outside the allowed "
                            f"lower ranges {_ranges(constraints.lower_ranges)}")
    return problems


def _ranges(ranges: list[PowerRange]) -> str:
    return ", ".join(f"[{r.lower_w:g}, {r.upper_w:g}]" for r in ranges)


__all__ = [
    "Consequence",
    "EnergyConstraints",
    "EnergyTransferPlan",
    "EnvelopeElement",
    "ForecastValue",
    "PlanElement",
    "PowerConstraints",
    "PowerRange",
    "PowerRangeEnvelope",
    "envelope_problems",
]
