"""An OCPP 2.0.1 charger as a station's hardware: the second ``StationHardware``.

The station actor around it is the same as a simulated station's: it joins its CSMS, keeps
and publishes the tree, answers reads, writes, discovery and tasks. This side speaks OCPP-J
with the charger (``actors.station.ocpp.link``), turns what the charger says into tree
transactions (``actors.station.ocpp.inbound``, over the sans-IO ``actors.logic.ocpp``), and
what a CSMS asks into calls to the charger:

*Writes the charger must confirm* (``carry_out``): an envelope for EVSE ``e`` becomes a
SetChargingProfile (``actors.logic.ocpp.profiles``), a cleared one a ClearChargingProfile;
``permissions/max_power_w`` of an EVSE or of the station a standing profile at stack level 0
(what the charger falls back to when an envelope ends), ``permissions/may_charge`` a
ChangeAvailability; a device-model value (``ocpp:dm/.../value``) a SetVariables, as many
settings per call as the charger takes. The write is applied (and answered) only once the
charger accepted it; what it refuses, the writer hears, and the tree keeps what the charger
last confirmed (of several settings, those it accepted are shown). A charger that is not
connected refuses at once (``INVALID_STATE``, reason ``offline``): the CSMS's allocation then
counts it at its last confirmed limit, and nothing waits on a timeout.

*Remote operations* (``operate``) are the calls of ``actors.logic.ocpp.operations``; where
the answer only promises the effect, the task waits for the message that shows it.

*Firmware* (``install``): the image is offered at a one-time URL of the gateway's server
(``actors.station.ocpp.downloads``), the charger is sent UpdateFirmware, and the install is
done when the charger says Installed or boots with reason FirmwareUpdate; a failure status
fails it.

*Monitoring* (``watch``): what a monitoring task selects of the device model that the
charger can monitor is asked of it with SetVariableMonitoring (again after each reconnect: a
monitor it kept is answered Duplicate), and cleared by the ids it gave when the task ends;
its NotifyEvents then update the values the station's own monitors watch. The rest is
watched on what the charger reports anyway.

*Registration* (OCPP-NOTES rule 9): a charger whose device model is not known for the
firmware it boots with is answered Pending, asked for its full inventory (GetBaseReport,
NotifyReport pages into ``ocpp:dm``), then asked to boot again (TriggerMessage), and
Accepted. While Pending, its other calls get ``SecurityError``.

*Link state*: ``network/link/online``, ``last_connected_at`` and ``reconnects`` follow the
WebSocket (not heartbeats).
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from actors.logic.ocpp import rpc
from actors.logic.ocpp.operations import Sighting, call_of, judge, refused_by
from actors.logic.ocpp.profiles import (
    VOLTS,
    availability,
    clear_envelope_profile,
    limit_profile,
    set_charging_profile,
)
from actors.logic.ocpp.rpc import RpcError
from actors.station.hardware import (
    Durable,
    FirmwareImage,
    HardwareFigures,
    OperationAnswer,
    Progress,
    Report,
)
from actors.station.ocpp import device_model, firmware, monitoring
from actors.station.ocpp.downloads import Downloads
from actors.station.ocpp.inbound import HANDLERS, WHILE_PENDING
from actors.station.ocpp.link import CALL_TIMEOUT_S, Connection, OcppLink
from broker_bridge.clock import WALL_CLOCK, Clock
from broker_bridge.pace import Pace
from keypath import GLOBSTAR, KeyPath, KeyPattern
from object_model import ModelError
from object_model.errors import (
    InvalidValueError,
    UnknownPathError,
)
from object_model.monitoring import MonitoringTaskSetup
from object_model.operations import OperationKind, RemoteOperation
from object_model.pebc import Consequence, PowerConstraints, PowerRange, PowerRangeEnvelope
from object_model.station import new_station_tree
from object_model.station.ocpp_namespace import (
    CHARGER,
    DEVICE_MODEL,
    LIMITS,
)
from object_model.tree import Delete, ObjectTree, Operation, TransactionCommitted, Write

log = logging.getLogger("csms.ocpp")

ZEROED = ("obis:1-0:1.8.0", "obis:1-0:2.8.0", "obis:1-0:16.7.0", "obis:1-0:21.7.0",
          "obis:1-0:41.7.0", "obis:1-0:61.7.0", "obis:1-0:31.7.0", "obis:1-0:51.7.0",
          "obis:1-0:71.7.0")
"""Registers a new charger's tree holds at zero until it reports them (energy, power,
current; voltage and frequency keep their nominal values)."""
MIN_CURRENT_A = 6.0  # IEC 61851: the least a charge runs at


@dataclass(frozen=True)
class ChargerSettings:
    """What the gateway knows of a charger before it connects: its EVSEs, and whether it
    takes limits in amperes only (``SmartChargingCtrlr.RateUnit``) and how many periods
    (its device model, once learned, says so too and is believed); ``onboarding``: learn its
    device model (Pending boot, GetBaseReport) whenever it boots with a firmware version
    whose model is not known."""

    evse_count: int = 2
    amperes: bool = False
    max_periods: int = 24
    onboarding: bool = True


class OcppCharger:
    """A charger behind the gateway (see the module docstring)."""

    def __init__(self, identity: str, settings: ChargerSettings | None = None, *,
                 clock: Clock = WALL_CLOCK, downloads: Downloads | None = None) -> None:
        self.identity = identity
        self.settings = settings or ChargerSettings()
        self.clock = clock
        self.downloads = downloads
        self.tree: ObjectTree | None = None
        self.report: Report | None = None
        self.durable: Durable | None = None
        self.link = OcppLink(identity, self._handle, opened=self._opened, closed=self._closed)
        self.registration = "Accepted"
        self.onboarding = False  # its device model is being learned
        self.unreported: set[str] = set()  # firmware whose report did not come: not again
        # its device model was just learned: what else the gateway may not know (running
        # transactions) is asked for once its next boot is accepted
        self.relearn_transactions = False
        self.reports: dict[int, tuple[asyncio.Future[set[tuple[str, str]]],
                                      set[tuple[str, str]]]] = {}
        self.sightings: list[tuple[Sighting, asyncio.Future[str]]] = []
        self._ids = random.Random().randrange(1, 2**30)  # request ids, remote start ids
        self.watched: dict[str, MonitoringTaskSetup] = {}
        self.monitor_ids: dict[str, set[int]] = {}  # the charger's monitors, by task
        self.rewatch_due = False  # the monitors are asked again after its next call
        self.status_at: dict[tuple[int, int], int] = {}  # the latest status shown, by connector
        self.ev_needs: set[int] = set()  # EVSEs whose EV said what it needs

    def next_id(self) -> int:
        self._ids = self._ids % (2**31 - 2) + 1
        return self._ids

    # -- StationHardware -----------------------------------------------------------------------

    def initial_tree(self, address: str, now_us: int) -> ObjectTree:
        """The standard station tree with nothing measured yet: what the charger has not
        said is zero, not a simulator's invention (its registers are the baselines of its
        first transactions)."""
        tree = new_station_tree(address, evse_count=self.settings.evse_count, now_us=now_us)
        ops: list[Operation] = [Write("network/link/online", False),
                                Write(f"{CHARGER}/rate_unit",
                                      "A" if self.settings.amperes else "W,A"),
                                Write(f"{CHARGER}/periods_per_schedule",
                                      self.settings.max_periods)]
        for evse in range(1, self.settings.evse_count + 1):
            ops += [Write(f"evse/{evse}/meter/{register}", 0.0) for register in ZEROED]
            ops.append(Write(f"evse/{evse}/{LIMITS}", {"lower_limit": False,
                                                       "probability_bands": False}))
        tree.apply(ops)
        return tree

    def attach(self, tree: ObjectTree, report: Report, now_us: int, durable: Durable) -> None:
        self.tree, self.report, self.durable = tree, report, durable
        registration = f"{CHARGER}/registration"
        self.registration = str(tree.get(registration)) if registration in tree else "Accepted"
        report([Write("network/link/online", self.link.online),
                *[self.constraints(tree, evse) for evse in self.evses(tree)]])

    def evses(self, tree: ObjectTree) -> list[int]:
        return [evse for evse in range(1, self.settings.evse_count + 1)
                if f"evse/{evse}/max_power_w" in tree]

    def constraints(self, tree: ObjectTree, evse: int, least_w: float | None = None,
                    most_w: float | None = None) -> Operation:
        """What EVSE ``evse`` can be told, as power constraints: an upper limit of 0, or one
        from 6 A per phase (or the EV's least, ``least_w``) to its rating (or the EV's most,
        ``most_w``): a limit below 6 A pauses the charge, the on/off gap of IEC 61851; and a
        lower limit of 0 only, since an OCPP 2.0.1 charging profile carries no lower limit:
        the site's allocation never counts on a forced minimum here, and an envelope with one
        is refused (``out_of_range``) rather than silently weakened."""
        base = f"evse/{evse}"
        phases = int(tree.get(f"{base}/phases"))
        rating = float(tree.get(f"{base}/max_power_w"))
        top = rating if most_w is None else max(0.0, min(rating, most_w))
        least = min(top, max(MIN_CURRENT_A * VOLTS * phases, least_w or 0.0))
        upper = [PowerRange(lower_w=0, upper_w=0)]
        if top > 0:
            upper.append(PowerRange(lower_w=least, upper_w=top))
        constraints = PowerConstraints(upper_ranges=upper,
                                       lower_ranges=[PowerRange(lower_w=0, upper_w=0)],
                                       consequence=Consequence.VANISH, phases=phases)
        return Write(f"{base}/energy/power_constraints", constraints.model_dump())

    async def run(self, pace: Pace) -> None:
        try:
            await asyncio.Event().wait()  # the gateway drives it: ``serve`` per connection
        finally:
            await self.link.stop()

    async def carry_out(self, ops: Sequence[Operation]) -> None:
        """Each write the charger must confirm, in order, one call at a time: envelopes
        (SetChargingProfile, or ClearChargingProfile for one deleted), the EVSE's or the
        station's ``permissions/max_power_w`` (stack-0 profiles) and ``may_charge``
        (ChangeAvailability), device-model values (SetVariables). The first refusal stops
        the rest and the write."""
        assert self.tree is not None
        settings: list[tuple[KeyPath, Any]] = []
        for op in ops:
            path = op.path if isinstance(op.path, KeyPath) else KeyPath.parse(op.path)
            if isinstance(op, Write):
                leaves = [(p, raw) for p, _, raw in self.tree.schema.expand(path, op.value)]
            elif path.segments[:1] == (DEVICE_MODEL,):  # OCPP has no "unset"
                raise InvalidValueError("a device-model value is the charger's: write it, "
                                        "it cannot be deleted", path=path)
            else:  # a delete: of an envelope, or above one
                leaves = [(p, None) for p, _, _ in self.tree.find(
                    KeyPattern([*path.segments, GLOBSTAR])) if p.name == "envelope"]
                leaves += [(path, None)] if path.name == "envelope" else []
            for leaf, value in leaves:
                if leaf.segments[:1] == (DEVICE_MODEL,):
                    settings.append((leaf, value))
                else:
                    await self._carry(leaf.segments, value)
        if settings:
            await device_model.set_variables(self, settings)

    async def _carry(self, segs: tuple[str, ...], value: Any) -> None:
        evse = int(segs[1]) if len(segs) > 2 and segs[0] == "evse" else 0
        tail = segs[2:] if evse else segs
        if evse and tail == ("energy", "envelope"):
            await self._send_envelope(evse, value)
        elif tail == ("permissions", "max_power_w") and value is not None:
            answer = await self.link.call("SetChargingProfile", limit_profile(
                evse, float(value), phases=self._phases(evse), amperes=self.amperes))
            if answer.get("status") != "Accepted":
                raise refused_by(self.identity, "SetChargingProfile", answer)
        elif tail == ("permissions", "may_charge") and value is not None:
            answer = await self.link.call("ChangeAvailability", availability(evse, bool(value)))
            if answer.get("status") not in ("Accepted", "Scheduled"):
                raise refused_by(self.identity, "ChangeAvailability", answer)

    @property
    def amperes(self) -> bool:
        tree = self.tree
        unit = f"{CHARGER}/rate_unit"
        if tree is None or unit not in tree:
            return self.settings.amperes
        return str(tree.get(unit)) == "A"

    def _periods(self) -> int:
        tree, leaf = self.tree, f"{CHARGER}/periods_per_schedule"
        return int(tree.get(leaf)) if tree is not None and leaf in tree else \
            self.settings.max_periods

    def _phases(self, evse: int) -> int:
        path = f"evse/{evse}/phases"
        return int(self.tree.get(path)) if evse and self.tree is not None and \
            path in self.tree else 3

    def obey(self, event: TransactionCommitted) -> None:
        """An envelope the charger accepted: its limit now is the one in force."""
        assert self.tree is not None and self.report is not None
        now = self.clock.now_us()
        ops: list[Operation] = []
        for path, value in event.upserts:
            segs = path.segments
            if len(segs) == 4 and segs[0] == "evse" and segs[2:] == ("energy", "envelope"):
                limit = f"evse/{segs[1]}/energy/limit_w"
                element = None if value is None else PowerRangeEnvelope.model_validate(
                    value).at(now)
                if element is not None:
                    ops.append(Write(limit, element.upper_w))
                elif self.tree.is_leaf(limit):  # not in force yet, or no more
                    ops.append(Delete(limit))
        if ops:
            try:
                self.report(ops)
            except ModelError as exc:  # the write stands; what it means shows next time
                log.warning("%s: the limit now in force is not shown: %s", self.identity, exc)

    @property
    def figures(self) -> HardwareFigures:
        tree = self.tree
        if tree is None:
            return HardwareFigures()
        charging, power, energy = 0, 0.0, 0.0
        for evse in range(1, self.settings.evse_count + 1):
            base = f"evse/{evse}/session"
            if f"{base}/power_w" not in tree:
                continue
            watts = float(tree.get(f"{base}/power_w") or 0.0)
            charging += watts > 0
            power += watts
            energy += float(tree.get(f"{base}/energy_wh") or 0.0)
        return HardwareFigures(charging=charging, power_w=power, energy_wh=energy)

    # -- remote operations, firmware, monitoring ------------------------------------------------

    async def operate(self, operation: RemoteOperation) -> OperationAnswer:
        assert self.tree is not None
        if operation.evse and operation.evse not in self.evses(self.tree):
            raise UnknownPathError(f"{self.identity} has no EVSE {operation.evse}",
                                   path=f"evse/{operation.evse}")  # nothing is asked of it
        running = None
        if operation.operation is OperationKind.STOP_CHARGING and not operation.transaction_id:
            running = self.running_transaction(operation.evse or 0)
        action, request = call_of(operation, remote_start_id=self.next_id(),
                                  transaction_id=running)
        sighting = None
        try:
            answer = await self.link.call(action, request)
        except RpcError as exc:  # off the schema: a value OCPP cannot carry
            raise InvalidValueError(f"{action}: {exc.description}") from None
        judged = judge(operation, action, request, answer)
        if judged.sighting is not None:
            sighting = self.expect(judged.sighting)
        if operation.operation is OperationKind.CHANGE_AVAILABILITY and self.report:
            base = f"evse/{operation.evse}/" if operation.evse else ""
            self.report([Write(f"{base}permissions/may_charge", operation.operative)])
        return OperationAnswer(judged.result, sighting)

    async def install(self, image: FirmwareImage, progress: Progress) -> str:
        return await firmware.install(self, image, progress)

    async def watch(self, task: str, setup: MonitoringTaskSetup | None) -> str:
        return await monitoring.watch(self, task, setup)

    def running_transaction(self, evse: int) -> str | None:
        tree = self.tree
        if tree is None or not evse or f"evse/{evse}/session/session_id" not in tree:
            return None
        if tree.get(f"evse/{evse}/session/state") in ("Idle", "Finished"):
            return None
        return str(tree.get(f"evse/{evse}/session/session_id")) or None

    def expect(self, sighting: Sighting) -> asyncio.Future[str]:
        """A future resolved by the first of the charger's calls that ``sighting`` sees."""
        future: asyncio.Future[str] = asyncio.get_running_loop().create_future()
        self.sightings.append((sighting, future))
        return future

    def saw(self, action: str, payload: dict[str, Any]) -> None:
        """One of the charger's calls, served: what it shows of the effects awaited."""
        kept = []
        for sighting, future in self.sightings:
            if future.done():
                continue
            seen = sighting(action, payload)
            if seen is None:
                kept.append((sighting, future))
            else:
                future.set_result(seen)
        self.sightings = kept

    # -- the connection ------------------------------------------------------------------------

    @property
    def online(self) -> bool:
        return self.link.online

    async def serve(self, connection: Connection) -> None:
        """Speak OCPP-J over ``connection`` until it closes (or a newer one replaces it)."""
        assert self.report is not None and self.tree is not None
        await self.link.serve(connection)

    def _opened(self) -> None:
        assert self.report is not None and self.tree is not None
        reconnects = int(self.tree.get("network/link/reconnects") or 0)
        self.report([Write("network/link/online", True),
                     Write("network/link/last_connected_at", self.clock.now_us()),
                     Write("network/link/reconnects", reconnects + 1)])
        self.rewatch_due = True  # it may have lost its monitors: asked once it is accepted

    def _closed(self) -> None:
        assert self.report is not None
        self.report([Write("network/link/online", False)])

    async def _handle(self, action: str, payload: dict[str, Any]) -> dict[str, Any]:
        if self.registration != "Accepted" and action not in WHILE_PENDING:
            raise RpcError(rpc.SECURITY_ERROR, f"{action} before the boot was accepted "
                           f"({self.registration})")
        handler = HANDLERS.get(action)
        if handler is None:
            raise RpcError(rpc.NOT_SUPPORTED, f"{action} is not supported here")
        answer = await handler(self, payload)
        self.saw(action, payload)
        if self.rewatch_due and self.watched and self.registration == "Accepted":
            self.rewatch_due = False  # once per connection, however many come and go
            self.link.after_answer(monitoring.rewatch(self))
        return answer

    async def _send_envelope(self, evse: int, value: Any) -> None:
        if value is None:
            answer = await self.link.call("ClearChargingProfile", clear_envelope_profile(evse))
            if answer.get("status") not in ("Accepted", "Unknown"):
                raise refused_by(self.identity, "ClearChargingProfile", answer)
            return
        envelope = PowerRangeEnvelope.model_validate(value)
        answer = await self.link.call("SetChargingProfile", set_charging_profile(
            envelope, evse, phases=self._phases(evse), amperes=self.amperes,
            max_periods=self._periods()))
        if answer.get("status") != "Accepted":
            raise refused_by(self.identity, "SetChargingProfile", answer)





__all__ = ["CALL_TIMEOUT_S", "ChargerSettings", "OcppCharger"]
