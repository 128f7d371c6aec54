"""The site's power envelope from its grid connection's inputs (pure).

At every moment an input changes, the upper limit is the least of the fuse, every curtailment
in force and the S2 instruction's upper limit; the lower limit is the instruction's (0 without
one), never above the upper. With power constraints, limits are clamped into their allowed
ranges, except that an upper limit is never raised above what the grid allows (the DSO's limit
wins; the clamp is noted). Equal neighbours merge; beyond ``MAX_ELEMENTS`` elements the
envelope ends early, and says so in the notes.
"""

from __future__ import annotations

from collections.abc import Iterable

from object_model.pebc import (
    MAX_ELEMENTS,
    TOLERANCE_W,
    EnvelopeElement,
    PowerConstraints,
    PowerRange,
    PowerRangeEnvelope,
)

US = 1_000_000


def _highest_allowed(ranges: list[PowerRange], watts: float) -> float | None:
    """The highest value of the union of ``ranges`` not above ``watts`` (None: none is)."""
    best = None
    for r in ranges:
        if r.lower_w <= watts + TOLERANCE_W:
            best = min(r.upper_w, watts)
    return best


def _clamp(pc: PowerConstraints, upper: float, lower: float, notes: set[str]
           ) -> tuple[float, float]:
    if not pc.allows_upper(upper):
        allowed = _highest_allowed(pc.upper_ranges, upper)
        if allowed is None:
            notes.add(f"upper {upper:g} W is below every allowed upper range: kept (the grid's "
                      "limit wins over the power constraints)")
        else:
            notes.add(f"upper {upper:g} W clamped to {allowed:g} W")
            upper = allowed
    lower = min(lower, upper)
    if not pc.allows_lower(lower):
        allowed = _highest_allowed(pc.lower_ranges, lower)
        allowed = pc.lower_ranges[0].lower_w if allowed is None else allowed
        if allowed > upper:
            notes.add(f"lower {lower:g} W kept: the least allowed lower limit {allowed:g} W is "
                      f"above the upper limit {upper:g} W")
        else:
            notes.add(f"lower {lower:g} W clamped to {allowed:g} W")
            lower = allowed
    return upper, lower


def site_envelope(now_us: int, horizon_s: int, fuse_w: float,
                  curtailments: Iterable[tuple[int, int, float]],
                  instruction: PowerRangeEnvelope | None = None,
                  constraints: PowerConstraints | None = None, *, lead_us: int = 0
                  ) -> tuple[PowerRangeEnvelope, list[str]]:
    """The site's envelope over ``[now_us, now_us + horizon_s)`` and notes on what was
    clamped or cut (see the module docstring). ``curtailments``: ``(start, end, limit_w)``.
    The first element, computed for now, starts ``lead_us`` earlier: a reader whose clock is
    a little behind ours must not find the envelope not yet begun."""
    end = now_us + horizon_s * US
    windows = [(s, e, w) for s, e, w in curtailments if s < e and e > now_us and s < end]
    marks = {now_us, *(t for s, e, _ in windows for t in (s, e))}
    if instruction is not None:
        marks.update(e.start_us for e in instruction.elements)
        marks.add(instruction.end_us)
    notes: set[str] = set()
    elements: list[EnvelopeElement] = []
    for t in sorted(m for m in marks if now_us <= m < end):
        upper = min([fuse_w, *(w for s, e, w in windows if s <= t < e)])
        held = instruction.at(t) if instruction is not None else None
        lower, per_phase = 0.0, None
        if held is not None:
            upper, lower = min(upper, held.upper_w), held.lower_w
        lower = min(lower, upper)
        if constraints is not None:
            upper, lower = _clamp(constraints, upper, lower, notes)
            lower = min(lower, upper)
        if held is not None and (upper, lower) == (held.upper_w, held.lower_w):
            per_phase = held.per_phase  # the instruction binds alone: its phases still hold
        element = EnvelopeElement(start_us=t, lower_w=lower, upper_w=upper, per_phase=per_phase)
        if elements and element.model_dump(exclude={"start_us"}) == elements[-1].model_dump(
                exclude={"start_us"}):
            continue
        elements.append(element)
    elements[0] = elements[0].model_copy(update={"start_us": max(0, now_us - lead_us)})
    if len(elements) > MAX_ELEMENTS:
        end = elements[MAX_ELEMENTS].start_us
        notes.add(f"cut after {MAX_ELEMENTS} elements: the envelope ends early")
        elements = elements[:MAX_ELEMENTS]
    return PowerRangeEnvelope(end_us=end, elements=elements), sorted(notes)


__all__ = ["site_envelope"]
