"""A station's hardware, as the station actor sees it.

The station actor owns what every station does whatever it is made of: its tree and the tree's
persistence, joining its CSMS, publishing changes, answering reads, writes and discovery,
monitoring and firmware tasks, and refusing what its EVSEs cannot do. The hardware owns what
happens physically: it says what a new station's tree looks like, reports what it measures
and does as tree operations, and obeys what a CSMS writes (operational permissions, limits,
power envelopes). Two implementations: the simulator (``actors.station.simulated``) and the
OCPP 2.0.1 gateway, where a real charger behind a WebSocket is the hardware.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Protocol

from broker_bridge.pace import Pace
from object_model.tree import ObjectTree, Operation, TransactionCommitted

Report = Callable[[Sequence[Operation]], TransactionCommitted | None]
"""Applies what the hardware observed as one transaction of the station's tree (persisted,
published and monitored like any other); ``None`` when nothing changed."""

Durable = Callable[[int], Awaitable[None]]
"""Returns once the tree's revision given is on disk (hardware that must not acknowledge
what it reported before it survives a crash: an OCPP charger's transaction events)."""


@dataclass(frozen=True, slots=True)
class HardwareFigures:
    """What the hardware does now: EVSEs delivering energy, power drawn from the grid (W),
    energy delivered since it started (Wh)."""

    charging: int = 0
    power_w: float = 0.0
    energy_wh: float = 0.0


class StationHardware(Protocol):
    """What a station actor needs from its hardware."""

    def initial_tree(self, address: str, now_us: int) -> ObjectTree:
        """The tree of a station that has none stored (its epoch is new)."""
        ...

    def attach(self, tree: ObjectTree, report: Report, now_us: int, durable: Durable) -> None:
        """Take the station's tree (loaded or new) as it is at ``now_us``; from now on
        report through ``report`` (and wait on ``durable`` where an acknowledgement must
        survive a crash). Called once, before ``run`` and ``obey``."""
        ...

    async def carry_out(self, ops: Sequence[Operation]) -> None:
        """A write from above, checked and about to be applied: hardware that must have a
        device confirm it first (an OCPP charger answering a SetChargingProfile) does so
        here, and raises a ``ModelError`` when the device refuses it or cannot be reached;
        nothing is applied then. Hardware that obeys what is applied returns at once."""
        ...

    async def run(self, pace: Pace) -> None:
        """Report what the hardware does until cancelled (the actor runs it as a task).
        ``pace`` is the process's: hardware that reports on a timer of its own (a simulator)
        reports ``pace.stretch`` times less often while the process cannot keep up."""
        ...

    def obey(self, event: TransactionCommitted) -> None:
        """A write from above committed (and is durable): act on what it changed now, not at
        the next reading. Must not raise for what it cannot do; it reports instead."""
        ...

    @property
    def figures(self) -> HardwareFigures:
        """What the hardware does now."""
        ...


__all__ = ["Durable", "HardwareFigures", "Report", "StationHardware"]
