"""What a site offers its uplink in a lab scenario: telemetry at a rate, and safety messages at
planned moments, the same for both architectures.

The lab process draws the plan (``Plan.draw``: from the repetition's seed, so both
architectures face the same moments and stations) and sends it to each site's process as JSON;
there ``offer`` plays it through two callbacks of the architecture's own: ``telemetry()``
hands one telemetry message to the site's sender and says whether it took it (a sender whose
backlog is full sheds it: offered load twice the link's must not pile up without bound, in
either architecture), ``safety(station, seq)`` sends one safety message at once. What
``offer`` returns is the site's ground truth: when each safety message was raised (wall-clock
seconds: the lab process and the sites share the machine's clock) and how much telemetry was
offered, taken and shed.

A telemetry message carries ``Plan.message_bytes`` hex characters of fresh random bytes (they
deflate to half and no further: both architectures compress what they send, and OCPP's
permessage-deflate keeps its context from one message to the next), in the architecture's own
form: a bulk state update of ours, an OCPP ``MeterValues``.
"""

from __future__ import annotations

import asyncio
import os
import random
import time
from collections.abc import Awaitable, Callable
from dataclasses import asdict, dataclass, field
from typing import Any

MESSAGE_BYTES = 1200  # hex characters per telemetry message, unless the scenario says


def filler(size: int) -> str:
    """A telemetry message's body: ``size`` hex characters of fresh random bytes."""
    return os.urandom(size // 2).hex()


@dataclass(frozen=True)
class Plan:
    """One site's load for one repetition: ``telemetry_bytes_per_s`` offered over
    ``seconds`` in messages of ``message_bytes``; ``safety``: ``(offset_s, station index)``
    in time order."""

    seconds: float
    telemetry_bytes_per_s: float
    safety: tuple[tuple[float, int], ...] = ()
    message_bytes: int = MESSAGE_BYTES

    @classmethod
    def draw(cls, seed: int, *, seconds: float, telemetry_bytes_per_s: float, safety: int,
             stations: int, quiet_s: float = 0.0, message_bytes: int = MESSAGE_BYTES) -> Plan:
        """``safety`` messages at uniformly random moments after ``quiet_s`` (the warm-up),
        each from a random station of ``stations``."""
        rng = random.Random(seed)
        moments = sorted(rng.uniform(quiet_s, seconds) for _ in range(safety))
        return cls(seconds, telemetry_bytes_per_s,
                   tuple((round(t, 6), rng.randrange(stations)) for t in moments), message_bytes)

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Plan:
        return cls(float(data["seconds"]), float(data["telemetry_bytes_per_s"]),
                   tuple((float(t), int(s)) for t, s in data["safety"]),
                   int(data["message_bytes"]))


@dataclass
class Offered:
    """What a site offered: ``raised`` ``(wall time, station, seq)`` of each safety message,
    and the telemetry ``offered``, ``taken`` and ``shed`` (messages)."""

    raised: list[tuple[float, int, int]] = field(default_factory=list)
    offered: int = 0
    taken: int = 0
    shed: int = 0

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


Telemetry = Callable[[], bool]
Safety = Callable[[int, int], Awaitable[None] | None]


async def offer(plan: Plan, start_at: float, telemetry: Telemetry, safety: Safety,
                *, tick_s: float = 0.01) -> Offered:
    """Play ``plan`` from wall time ``start_at`` (see the module docstring)."""
    out = Offered()
    rate = plan.telemetry_bytes_per_s / plan.message_bytes  # messages per second
    pending = list(plan.safety)
    seqs: dict[int, int] = {}
    await asyncio.sleep(max(0.0, start_at - time.time()))  # the plan's own schedule
    began = time.monotonic()
    credit = 0.0
    last = began
    while True:
        now = time.monotonic()
        elapsed = now - began
        if elapsed >= plan.seconds:
            break
        while pending and pending[0][0] <= elapsed:
            _, station = pending.pop(0)
            seq = seqs[station] = seqs.get(station, 0) + 1
            out.raised.append((time.time(), station, seq))
            sent = safety(station, seq)
            if sent is not None:
                await sent
        credit = min(credit + (now - last) * rate, max(1.0, rate))  # at most a second's worth
        last = now
        while credit >= 1:
            credit -= 1
            out.offered += 1
            if telemetry():
                out.taken += 1
            else:
                out.shed += 1
        await asyncio.sleep(tick_s)  # the offered load's pace
    return out


__all__ = ["MESSAGE_BYTES", "Offered", "Plan", "filler", "offer"]
