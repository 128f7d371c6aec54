"""Admission under a storm: how many joins a CSMS takes per second, and how much work with them.

When a broker restarts, every member of a CSMS loses its link at the same moment and comes
back within the few seconds of its reconnect backoff; each then joins again at once, announcing
what its trees hold, and every copy that moved on meanwhile costs the CSMS a resynchronisation.
A cloud whose ten sites hold 500 stations each may be asked for 5,000 resynchronisations
within a second or two. Reconnect storms are a known failure of OCPP deployments: the CSMS
times out on everything, members time out and retry, and the storm feeds itself.

``AdmissionLimiter`` bounds that with a token bucket in units of work: a join costs 1 for the
member plus 1 per copy it makes the CSMS resynchronise (a site that rejoins with nothing
changed costs 1, a site of 500 changed stations 501). The bucket refills at ``rate_per_s``
up to ``burst``. A join is admitted while the bucket holds a token, and then takes its whole
cost, running the bucket into debt: a large site is never starved by small ones
(it needs no full bucket), and over any time ``t`` the CSMS admits at most
``burst + rate_per_s * t`` plus one join's cost. A join that finds the bucket empty or in
debt is refused with ``BUSY``, told in ``retry_after_s`` when a token will be back; the
member adds its own jitter (``actors.runtime.services.join``), so refused members do not come
back in step.

Pure: the caller passes its clock's monotonic time in, so a test drives it with a fake
clock, and it keeps what a benchmark needs to see the storm (``recent``: when each admission
happened and what it cost).
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field

from object_model.errors import BusyError


@dataclass(frozen=True, slots=True, kw_only=True)
class JoinAdmitted:
    """A join the limiter let through: when (monotonic seconds) and its cost."""

    at: float
    cost: int


@dataclass(slots=True)
class AdmissionStats:
    """Joins admitted and refused since start, and the cost admitted."""

    admitted: int = 0
    refused: int = 0
    cost_admitted: int = 0
    recent: deque[JoinAdmitted] = field(default_factory=lambda: deque(maxlen=4096))


class AdmissionLimiter:
    """A token bucket of ``burst`` tokens refilled at ``rate_per_s`` (see the module
    docstring); ``rate_per_s`` of ``None`` admits everything (and still counts it)."""

    def __init__(self, rate_per_s: float | None, burst: float, *, now: float = 0.0) -> None:
        if rate_per_s is not None and rate_per_s <= 0:
            raise ValueError(f"rate_per_s must be positive or None, got {rate_per_s}")
        if burst < 1:
            raise ValueError(f"burst must be at least 1, got {burst}")
        self.rate_per_s, self.burst = rate_per_s, float(burst)
        self._tokens = float(burst)
        self._at = now
        self.stats = AdmissionStats()

    def tokens(self, now: float) -> float:
        """What the bucket holds at ``now`` (negative: in debt)."""
        if self.rate_per_s is None:
            return self.burst
        return min(self.burst, self._tokens + (now - self._at) * self.rate_per_s)

    def admit(self, cost: int, now: float, who: str = "") -> None:
        """Take ``cost`` tokens at ``now``, or raise ``BusyError`` with ``retry_after_s``
        (seconds until the bucket holds a token again) when it holds less than one."""
        if cost < 0:
            raise ValueError(f"a join costs 0 or more, got {cost}")
        tokens = self.tokens(now)
        if tokens < 1 - 1e-9:  # (float time: a token due now is there)
            assert self.rate_per_s is not None
            self.stats.refused += 1
            retry_after = (1 - tokens) / self.rate_per_s
            raise BusyError(f"{who or 'a member'}: too many joins just now; join again in "
                            f"{retry_after:.2f} s", details={"retry_after_s": round(retry_after, 3)})
        self._tokens, self._at = tokens - cost, now
        self.stats.admitted += 1
        self.stats.cost_admitted += cost
        self.stats.recent.append(JoinAdmitted(at=now, cost=cost))


__all__ = ["AdmissionLimiter", "AdmissionStats", "JoinAdmitted"]
