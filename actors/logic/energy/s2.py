"""S2 (EN 50491-12-2) PEBC messages to and from our PEBC types: a pure mapping, no I/O.

The only module that imports s2-python (the layer check enforces it). A site energy manager
(CEM) speaking S2 sends the resource manager ``PEBC.Instruction``, ``PEBC.PowerConstraints``
and ``PEBC.EnergyConstraint`` messages; the resource manager answers with ``ReceptionStatus``
and tells the CEM the site's plan as a ``PowerForecast``.

Theory of operation
-------------------
*Parsing.* ``parse_s2`` validates a JSON text twice: against the generated S2 model (the
schema as published) and against s2-python's own class (its extra rules, such as one upper
and one lower range per quantity). The second alone is not enough: in s2-python 0.11.1 some
required fields (``PEBC.Instruction.power_envelopes`` and ``power_constraints_id``,
``PEBC.AllowedLimitRange.abnormal_condition_only``, ``PEBC.EnergyConstraint.
commodity_quantity``) have a list holding the field's description as their default, so a
message without them would pass. Every failure is our ``INVALID_MESSAGE`` with the message
type and each validation error's location and text; no s2-python exception leaves here.

*Quantities.* Our PEBC values are site totals in W (positive: drawn from the grid), as S2's.
``ELECTRIC.POWER.3_PHASE_SYMMETRIC`` is read as the *total* of the three phases, each phase
carrying a third: S2 describes it as "power equally shared among the three phases", and S2
CEM implementations split such a value by three onto L1..L3. ``ELECTRIC.POWER.L1`` alone is a
single-phase connection (S2: a one-phase device always uses L1); L1, L2 and L3 together give
per-phase limits whose sums are the totals. Other combinations (L2 without L3, a symmetric
envelope beside per-phase ones, gas or heat quantities) have no meaning for a site's grid
connection and are refused, saying which quantities came.

*Times.* S2 gives a start (``execution_time``, ``start_time``, ``valid_from``) and element
durations in ms; our types give each element's start in microseconds since the epoch.
Zero-length S2 elements are never in force and are dropped.

Whatever a mapping yields is validated by our types, which refuse more than S2 does (a lower
limit above the upper, unordered bands); such a message is refused with the same detail.
"""

from __future__ import annotations

import itertools
import json
import random
import uuid
from collections.abc import Iterable, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

from pydantic import BaseModel, ValidationError
from s2python.common import (
    CommodityQuantity,
    Duration,
    PowerForecast,
    PowerForecastElement,
    PowerForecastValue,
    ReceptionStatus,
    ReceptionStatusValues,
)
from s2python.pebc import (
    PEBCEnergyConstraint,
    PEBCInstruction,
    PEBCPowerConstraints,
    PEBCPowerEnvelope,
    PEBCPowerEnvelopeConsequenceType,
    PEBCPowerEnvelopeElement,
    PEBCPowerEnvelopeLimitType,
)
from s2python.s2_parser import TYPE_TO_MESSAGE_CLASS
from s2python.s2_validation_error import S2ValidationError

from object_model import ModelError
from object_model.errors import InvalidMessageError
from object_model.pebc import (
    Consequence,
    EnergyConstraints,
    EnergyTransferPlan,
    EnvelopeElement,
    PowerConstraints,
    PowerRange,
    PowerRangeEnvelope,
)

EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
PEBC_TYPES = ("PEBC.Instruction", "PEBC.PowerConstraints", "PEBC.EnergyConstraint")
_Q = CommodityQuantity
PHASES = (_Q.ELECTRIC_POWER_L1, _Q.ELECTRIC_POWER_L2, _Q.ELECTRIC_POWER_L3)
SYMMETRIC = _Q.ELECTRIC_POWER_3_PHASE_SYMMETRIC
_CONSEQUENCES = {PEBCPowerEnvelopeConsequenceType.DEFER: Consequence.DEFER,
                 PEBCPowerEnvelopeConsequenceType.VANISH: Consequence.VANISH}


def _invalid(text: str, message_type: object, **details: Any) -> ModelError:
    return InvalidMessageError(
        text, details={"message_type": str(message_type), **details})


def _errors(exc: ValidationError) -> list[dict[str, str]]:
    return [{"location": ".".join(str(p) for p in e["loc"]) or "(message)", "message": e["msg"]}
            for e in exc.errors()[:20]]


def _generated(cls: type[BaseModel]) -> type[BaseModel]:
    return next(c for c in cls.__mro__ if c.__module__ == "s2python.generated.gen_s2")


# -- parsing --------------------------------------------------------------------------------


def parse_s2(text: str) -> Any:
    """The s2-python model of the S2 message ``text`` (any S2 message type), or
    ``INVALID_MESSAGE`` naming its ``message_type`` and every validation error."""
    try:
        raw = json.loads(text)
    except (ValueError, TypeError) as exc:
        raise _invalid(f"not S2: the payload is not JSON ({exc})", None,
                       errors=[{"location": "(message)", "message": str(exc)}]) from None
    message_type = raw.get("message_type") if isinstance(raw, dict) else None
    cls = TYPE_TO_MESSAGE_CLASS.get(message_type) if isinstance(message_type, str) else None
    if cls is None:
        raise _invalid(f"not S2: unknown message_type {message_type!r}", message_type,
                       known=sorted(TYPE_TO_MESSAGE_CLASS))
    try:
        _generated(cls).model_validate(raw)
        return cls.model_validate(raw)
    except ValidationError as exc:
        errors = _errors(exc)
    except S2ValidationError as exc:  # raised by s2-python's own checks
        errors = [{"location": "(message)", "message": str(exc.msg)}]
    raise _invalid(f"invalid {message_type}: " + "; ".join(
        f"{e['location']}: {e['message']}" for e in errors), message_type, errors=errors)


def message_type_of(message: Any) -> str:
    return str(message.message_type)


def message_id_of(message: Any) -> str:
    """The S2 ``message_id`` (a ReceptionStatus has none: its subject's id)."""
    return str(getattr(message, "message_id", None) or message.subject_message_id)


def new_id(rng: random.Random) -> uuid.UUID:
    """A random (version 4) UUID drawn from ``rng``: S2 names every message by one."""
    return uuid.UUID(int=rng.getrandbits(128), version=4)


def reception_status(subject_message_id: str, *, ok: bool = True, label: str | None = None
                     ) -> str:
    """The JSON of a ``ReceptionStatus`` for ``subject_message_id`` (OK, or INVALID_CONTENT)."""
    status = ReceptionStatusValues.OK if ok else ReceptionStatusValues.INVALID_CONTENT
    return ReceptionStatus(subject_message_id=uuid.UUID(subject_message_id), status=status,
                           diagnostic_label=label).to_json()


def reception_problem(message: Any) -> str | None:
    """What a ``ReceptionStatus`` refuses (None: it is OK, or not a ReceptionStatus)."""
    if message_type_of(message) != "ReceptionStatus" or message.status == ReceptionStatusValues.OK:
        return None
    return f"{message.status.value}: {message.diagnostic_label or 'no reason given'}"


def to_pebc(message: Any) -> PowerRangeEnvelope | PowerConstraints | EnergyConstraints:
    """The PEBC value a parsed PEBC message stands for (``INVALID_MESSAGE`` for others)."""
    if isinstance(message, PEBCInstruction):
        return envelope_from_instruction(message)
    if isinstance(message, PEBCPowerConstraints):
        return power_constraints_from_s2(message)
    if isinstance(message, PEBCEnergyConstraint):
        return energy_constraints_from_s2(message)
    raise _invalid(f"{message_type_of(message)} is not handled here: send one of "
                   + ", ".join(PEBC_TYPES), message_type_of(message), handled=list(PEBC_TYPES))


# -- times ----------------------------------------------------------------------------------


def to_us(moment: datetime) -> int:
    return (moment - EPOCH) // timedelta(microseconds=1)


def from_us(micros: int) -> datetime:
    return EPOCH + timedelta(microseconds=micros)


def _checked(message_type: str, build: Any, *args: Any, **kwargs: Any) -> Any:
    """``build(...)``, a refusal of our types turned into ``INVALID_MESSAGE``."""
    try:
        return build(*args, **kwargs)
    except ValidationError as exc:
        errors = _errors(exc)
        raise _invalid(f"{message_type} maps to an invalid PEBC value: " + "; ".join(
            f"{e['location']}: {e['message']}" for e in errors), message_type,
            errors=errors) from None


# -- S2 to ours -----------------------------------------------------------------------------


def _phase_layout(quantities: Sequence[CommodityQuantity], message_type: str) -> str:
    """'total' (3-phase symmetric or L1 alone) or 'phases' (L1, L2 and L3)."""
    kinds = set(quantities)
    if kinds in ({SYMMETRIC}, {_Q.ELECTRIC_POWER_L1}):
        return "total"
    if kinds == set(PHASES):
        return "phases"
    raise _invalid(f"{message_type}: quantities {sorted(q.value for q in kinds)} do not "
                   "describe a grid connection: use ELECTRIC.POWER.3_PHASE_SYMMETRIC (the "
                   "total), ELECTRIC.POWER.L1 alone (one phase) or L1, L2 and L3 together",
                   message_type, quantities=sorted(q.value for q in kinds))


def _steps(start_us: int, elements: Iterable[Any]) -> list[tuple[int, int, Any]]:
    """``(start_us, end_us, element)`` of each S2 element that lasts (durations in ms)."""
    steps, t = [], start_us
    for element in elements:
        end = t + element.duration.root * 1000
        if end > t:
            steps.append((t, end, element))
        t = end
    return steps


def envelope_from_instruction(instr: PEBCInstruction) -> PowerRangeEnvelope:
    """A ``PEBC.Instruction`` as our envelope: one element per boundary of any of its
    envelopes (they may be cut differently), per-phase limits when it gives L1, L2 and L3."""
    kind = "PEBC.Instruction"
    start = to_us(instr.execution_time)
    by_quantity = {e.commodity_quantity: _steps(start, e.power_envelope_elements)
                   for e in instr.power_envelopes}
    layout = _phase_layout(list(by_quantity), kind)
    if any(not steps for steps in by_quantity.values()):
        raise _invalid(f"{kind}: an envelope has no element that lasts", kind)
    ends = {q.value: steps[-1][1] for q, steps in by_quantity.items()}
    if len(set(ends.values())) > 1:
        raise _invalid(f"{kind}: the envelopes end at different times ({ends}); beyond the "
                       "shortest one a phase would have no limit", kind, ends=ends)
    end = next(iter(ends.values()))
    bounds = sorted({s for steps in by_quantity.values() for s, _, _ in steps})
    elements = []
    for t in bounds:
        limits = {q: next(e for s, stop, e in steps if s <= t < stop)
                  for q, steps in by_quantity.items()}
        if layout == "total":
            (only,) = limits.values()
            elements.append({"start_us": t, "lower_w": only.lower_limit,
                             "upper_w": only.upper_limit})
            continue
        per_phase = [{"lower_w": limits[q].lower_limit, "upper_w": limits[q].upper_limit}
                     for q in PHASES]
        elements.append({"start_us": t, "per_phase": per_phase,
                         "lower_w": sum(p["lower_w"] for p in per_phase),
                         "upper_w": sum(p["upper_w"] for p in per_phase)})
    return _checked(kind, PowerRangeEnvelope.model_validate,
                    {"end_us": end, "elements": elements})


def _merged(ranges: list[tuple[float, float]]) -> list[dict[str, float]]:
    """Ranges sorted, overlapping or touching ones merged (our type wants them disjoint)."""
    out: list[list[float]] = []
    for low, high in sorted(ranges):
        if out and low <= out[-1][1]:
            out[-1][1] = max(out[-1][1], high)
        else:
            out.append([low, high])
    return [{"lower_w": low, "upper_w": high} for low, high in out]


def power_constraints_from_s2(pc: PEBCPowerConstraints) -> PowerConstraints:
    """A ``PEBC.PowerConstraints`` as ours. Ranges allowed only in an abnormal condition are
    left out: our constraints describe normal operation, and an envelope clamped into them
    must not lean on an emergency range. Per-phase ranges become totals when the three
    phases allow the same ranges (three times each); unequal phases cannot be totals."""
    kind = "PEBC.PowerConstraints"
    normal = [r for r in pc.allowed_limit_ranges if not r.abnormal_condition_only]
    layout = _phase_layout([r.commodity_quantity for r in normal] or [SYMMETRIC], kind)
    sides: dict[str, list[dict[str, float]]] = {}
    for name, limit in (("upper_ranges", PEBCPowerEnvelopeLimitType.UPPER_LIMIT),
                        ("lower_ranges", PEBCPowerEnvelopeLimitType.LOWER_LIMIT)):
        per_quantity: dict[CommodityQuantity, list[tuple[float, float]]] = {}
        for r in normal:
            if r.limit_type == limit:
                per_quantity.setdefault(r.commodity_quantity, []).append(
                    (r.range_boundary.start_of_range, r.range_boundary.end_of_range))
        if not per_quantity:
            raise _invalid(f"{kind}: no {limit.value} range outside abnormal conditions",
                           kind, left_out=len(pc.allowed_limit_ranges) - len(normal))
        merged: dict[Any, list[dict[str, float]]] = {q: _merged(v)
                                                     for q, v in per_quantity.items()}
        if layout == "phases":
            if len({json.dumps(v) for v in merged.values()}) != 1 or len(merged) != 3:
                raise _invalid(f"{kind}: the {limit.value} ranges differ between phases; "
                               "they cannot be told as totals", kind)
            merged = {SYMMETRIC: [{k: 3 * w for k, w in r.items()}
                                  for r in merged[_Q.ELECTRIC_POWER_L1]]}
        (sides[name],) = merged.values()
    phases = 1 if layout == "total" and normal[0].commodity_quantity in PHASES else 3
    return _checked(kind, PowerConstraints.model_validate,
                    {**sides, "consequence": _CONSEQUENCES[pc.consequence_type],
                     "phases": phases})


def energy_constraints_from_s2(ec: PEBCEnergyConstraint) -> EnergyConstraints:
    """A ``PEBC.EnergyConstraint`` as ours: average powers times the window are energies."""
    kind = "PEBC.EnergyConstraint"
    _phase_layout([ec.commodity_quantity], kind)
    start, end = to_us(ec.valid_from), to_us(ec.valid_until)
    hours = (end - start) / 3.6e9
    return _checked(kind, EnergyConstraints.model_validate, {
        "valid_from_us": start, "valid_until_us": end,
        "min_wh": ec.lower_average_power * hours, "max_wh": ec.upper_average_power * hours})


# -- ours to S2 -----------------------------------------------------------------------------


def _durations_ms(starts: list[int], end_us: int) -> list[int]:
    """Element durations in whole ms, rounded at each boundary (so they never drift)."""
    marks = [round((t - starts[0]) / 1000) for t in [*starts, end_us]]
    return [b - a for a, b in itertools.pairwise(marks)]


def plan_to_power_forecast(plan: EnergyTransferPlan, rng: random.Random) -> PowerForecast:
    """Our plan as an S2 ``PowerForecast`` of site totals (3-phase symmetric, see above),
    each value with its 68 % and 95 % bands and hard limits where the plan has them
    (``rng`` draws its message id)."""
    starts = [e.start_us for e in plan.elements]
    elements = []
    for element, ms in zip(plan.elements, _durations_ms(starts, plan.end_us), strict=True):
        p = element.power
        value = PowerForecastValue(
            commodity_quantity=SYMMETRIC, value_expected=p.expected_w,
            value_lower_68PPR=p.lower_68_w, value_upper_68PPR=p.upper_68_w,
            value_lower_95PPR=p.lower_95_w, value_upper_95PPR=p.upper_95_w,
            value_lower_limit=p.lower_limit_w, value_upper_limit=p.upper_limit_w)
        elements.append(PowerForecastElement(duration=Duration(root=ms), power_values=[value]))
    return PowerForecast(message_id=new_id(rng), start_time=from_us(starts[0]),
                         elements=elements)


def envelope_to_instruction(envelope: PowerRangeEnvelope, power_constraints_id: str,
                            rng: random.Random) -> PEBCInstruction:
    """Our envelope as a ``PEBC.Instruction``: L1, L2 and L3 envelopes when every element
    has per-phase limits, else one 3-phase symmetric envelope of the totals."""
    starts = [e.start_us for e in envelope.elements]
    durations = _durations_ms(starts, envelope.end_us)
    phased = all(e.per_phase is not None for e in envelope.elements)

    def limits(e: EnvelopeElement, phase: int | None) -> PowerRange:
        if phase is None:
            return PowerRange(lower_w=e.lower_w, upper_w=e.upper_w)
        assert e.per_phase is not None
        return e.per_phase[phase]

    envelopes = []
    for phase, quantity in (enumerate(PHASES) if phased else [(None, SYMMETRIC)]):
        items = [PEBCPowerEnvelopeElement(duration=Duration(root=ms),
                                          lower_limit=limits(e, phase).lower_w,
                                          upper_limit=limits(e, phase).upper_w)
                 for e, ms in zip(envelope.elements, durations, strict=True)]
        envelopes.append(PEBCPowerEnvelope(id=str(new_id(rng)), commodity_quantity=quantity,
                                           power_envelope_elements=items))
    return PEBCInstruction(message_id=new_id(rng), id=new_id(rng),
                           execution_time=from_us(starts[0]), abnormal_condition=False,
                           power_constraints_id=power_constraints_id,
                           power_envelopes=envelopes)


def to_json(message: Any) -> str:
    """The S2 JSON text of an s2-python message."""
    return str(message.to_json())


__all__ = [
    "PEBC_TYPES",
    "energy_constraints_from_s2",
    "envelope_from_instruction",
    "envelope_to_instruction",
    "from_us",
    "message_id_of",
    "message_type_of",
    "new_id",
    "parse_s2",
    "plan_to_power_forecast",
    "power_constraints_from_s2",
    "reception_problem",
    "reception_status",
    "to_json",
    "to_pebc",
    "to_us",
]
