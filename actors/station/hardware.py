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
from object_model.blobs import BlobRef
from object_model.monitoring import MonitoringTaskSetup
from object_model.operations import RemoteOperation
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


@dataclass(frozen=True, slots=True)
class OperationAnswer:
    """The hardware's answer to a remote operation: ``result``, its own word for it
    (``Accepted``, ``Unlocked``...). When the answer only promises the effect (a reset
    scheduled for when the station is idle, a remote start before its transaction begins),
    ``effect`` waits for it: it returns what was seen, or raises a ``ModelError`` when it
    was not (the station bounds how long it waits)."""

    result: str
    effect: Awaitable[str] | None = None


@dataclass(frozen=True, slots=True)
class FirmwareImage:
    """A firmware image downloaded in full and verified (its manifest's signature, vendor,
    model and rollback counter), ready to install: ``chunk(i)`` reads its ``i``-th chunk of
    ``blob.chunk_size`` bytes (``None``: no longer held); ``install_s`` is how long a
    simulated install takes (real hardware takes its own time)."""

    version: str
    counter: int
    blob: BlobRef
    chunk: Callable[[int], Awaitable[bytes | None]]
    install_s: float = 0.0


Progress = Callable[[float, str], None]
"""Reports an install's progress: percent of the install, and what it is doing."""


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

    async def operate(self, operation: RemoteOperation) -> OperationAnswer:
        """Carry out a remote operation (a reset, a remote start...) and say what came of it;
        a ``ModelError`` when the hardware refuses it or cannot do it at all."""
        ...

    async def install(self, image: FirmwareImage, progress: Progress) -> str:
        """Install ``image``; returns the firmware version the hardware runs afterwards. A
        ``ModelError`` when it failed (the task fails, saying why)."""
        ...

    async def watch(self, task: str, setup: MonitoringTaskSetup | None) -> str:
        """A monitoring task ``task`` now runs on the station (``None``: it ended): hardware
        that only reports some values when asked (an OCPP charger's device model) is asked
        to report what ``setup`` selects. Returns a word on what it did, for the task's
        detail ("" for nothing); never raises for what it cannot do."""
        ...

    @property
    def figures(self) -> HardwareFigures:
        """What the hardware does now."""
        ...


__all__ = ["Durable", "FirmwareImage", "HardwareFigures", "OperationAnswer", "Progress", "Report",
           "StationHardware"]
