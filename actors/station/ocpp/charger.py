"""An OCPP 2.0.1 charger as a station's hardware: the second ``StationHardware``.

The station actor around it is the same as a simulated station's: it joins its CSMS, keeps
and publishes the tree, answers reads, writes, discovery and tasks. This side speaks OCPP-J
with the charger over the WebSocket the gateway hands it (``serve``) and turns what the
charger says into tree transactions (``actors.logic.ocpp``), and what a CSMS writes into
calls to the charger.

*One call in flight per direction* (Part 4 §4.1.1): our calls wait their turn on a lock, and
the charger's are served in the order they come, while one of ours is outstanding, by the
same loop that reads our answers; no handler of the charger's calls waits on a call of ours.
A result that comes late (after the call timed out) is logged, never matched to a newer call.

*Writes the charger must confirm* (``carry_out``): an envelope for EVSE ``e`` becomes a
SetChargingProfile (``actors.logic.ocpp.profiles``), a cleared one a ClearChargingProfile;
``permissions/max_power_w`` of an EVSE or of the station a standing profile at stack level 0
(what the charger falls back to when an envelope ends), ``permissions/may_charge`` a
ChangeAvailability. The write is applied (and answered) only once the charger accepted it;
what it refuses, the writer hears, and the tree keeps what the charger last confirmed. A charger that is not
connected refuses at once (``INVALID_STATE``, reason ``offline``): the CSMS's allocation then
counts it at its last confirmed limit, and nothing waits on a timeout.

*Acknowledged once durable*: a TransactionEvent is answered only when the transaction holding
its effect is on disk; if that fails the charger gets a CALLERROR InternalError and sends it
again (``MessageAttempts``), and the repeat is recognised by its content.

*Link state*: ``network/link/online``, ``last_connected_at`` and ``reconnects`` follow the
WebSocket (not heartbeats).
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from actors.logic.ocpp import rpc
from actors.logic.ocpp.meters import read
from actors.logic.ocpp.profiles import (
    VOLTS,
    availability,
    clear_envelope_profile,
    limit_profile,
    rfc3339,
    set_charging_profile,
)
from actors.logic.ocpp.rpc import Call, CallError, CallResult, RpcError
from actors.logic.ocpp.transactions import apply_event
from actors.station.hardware import Durable, HardwareFigures, Report
from actors.station.ocpp import schemas
from broker_bridge.clock import WALL_CLOCK, Clock
from broker_bridge.pace import Pace
from keypath import GLOBSTAR, KeyPath, KeyPattern
from object_model import ModelError
from object_model.errors import InvalidStateError, InvalidValueError, RequestTimeoutError
from object_model.pebc import Consequence, PowerConstraints, PowerRange, PowerRangeEnvelope
from object_model.station import new_station_tree
from object_model.tree import Delete, ObjectTree, Operation, TransactionCommitted, Write

log = logging.getLogger("csms.ocpp")

ZEROED = ("obis:1-0:1.8.0", "obis:1-0:2.8.0", "obis:1-0:16.7.0", "obis:1-0:21.7.0",
          "obis:1-0:41.7.0", "obis:1-0:61.7.0", "obis:1-0:31.7.0", "obis:1-0:51.7.0",
          "obis:1-0:71.7.0")
"""Registers a new charger's tree holds at zero until it reports them (energy, power,
current; voltage and frequency keep their nominal values)."""
MIN_CURRENT_A = 6.0  # IEC 61851: the least a charge runs at
CALL_TIMEOUT_S = 4.0  # within the CSMS's 5 s for a write to be answered
HEARTBEAT_S = 900  # liveness comes from WebSocket pings; a heartbeat still sets the clock


class Connection(Protocol):
    """What the charger needs of a WebSocket (``websockets``' server connection has it)."""

    async def send(self, message: str) -> None: ...

    async def recv(self) -> str | bytes: ...

    async def close(self, code: int = 1000, reason: str = "") -> None: ...


@dataclass(frozen=True)
class ChargerSettings:
    """What the gateway knows of a charger before it connects: its EVSEs, and whether it
    takes limits in amperes only (``SmartChargingCtrlr.RateUnit``) and how many periods."""

    evse_count: int = 2
    amperes: bool = False
    max_periods: int = 24


class OcppCharger:
    """A charger behind the gateway (see the module docstring)."""

    def __init__(self, identity: str, settings: ChargerSettings | None = None, *,
                 clock: Clock = WALL_CLOCK) -> None:
        self.identity = identity
        self.settings = settings or ChargerSettings()
        self.clock = clock
        self.tree: ObjectTree | None = None
        self._report: Report | None = None
        self._durable: Durable | None = None
        self.connection: Connection | None = None
        self._calls = asyncio.Lock()
        self._pending: tuple[str, asyncio.Future[dict[str, Any]]] | None = None
        self._ids = itertools.count(1)
        self.served = self.refused = 0  # the charger's calls answered, and with an error

    # -- StationHardware -----------------------------------------------------------------------

    def initial_tree(self, address: str, now_us: int) -> ObjectTree:
        """The standard station tree with nothing measured yet: what the charger has not
        said is zero, not a simulator's invention (its registers are the baselines of its
        first transactions)."""
        tree = new_station_tree(address, evse_count=self.settings.evse_count, now_us=now_us)
        ops: list[Operation] = [Write("network/link/online", False)]
        for evse in range(1, self.settings.evse_count + 1):
            ops += [Write(f"evse/{evse}/meter/{register}", 0.0) for register in ZEROED]
        tree.apply(ops)
        return tree

    def attach(self, tree: ObjectTree, report: Report, now_us: int, durable: Durable) -> None:
        self.tree, self._report, self._durable = tree, report, durable
        report([Write("network/link/online", self.connection is not None),
                *self._constraints(tree)])

    def _constraints(self, tree: ObjectTree) -> list[Operation]:
        """What each EVSE can be told, as power constraints: an upper limit of 0, or one from
        6 A per phase to its rating (a limit below 6 A pauses the charge: the on/off gap of
        IEC 61851); and a lower limit of 0 only, since an OCPP 2.0.1 charging profile carries
        no lower limit: the site's allocation never counts on a forced minimum here, and an
        envelope with one is refused (``out_of_range``) rather than silently weakened."""
        ops: list[Operation] = []
        for evse in range(1, self.settings.evse_count + 1):
            base = f"evse/{evse}"
            if f"{base}/max_power_w" not in tree:
                continue
            phases = int(tree.get(f"{base}/phases"))
            rating = float(tree.get(f"{base}/max_power_w"))
            least = min(rating, MIN_CURRENT_A * VOLTS * phases)
            constraints = PowerConstraints(
                upper_ranges=[PowerRange(lower_w=0, upper_w=0),
                              PowerRange(lower_w=least, upper_w=rating)],
                lower_ranges=[PowerRange(lower_w=0, upper_w=0)],
                consequence=Consequence.VANISH, phases=phases)
            ops.append(Write(f"{base}/energy/power_constraints", constraints.model_dump()))
        return ops

    async def run(self, pace: Pace) -> None:
        await asyncio.Event().wait()  # the gateway drives it: ``serve`` per connection

    async def carry_out(self, ops: Sequence[Operation]) -> None:
        """Each write the charger must confirm, in order, one call at a time: envelopes
        (SetChargingProfile, or ClearChargingProfile for one deleted), the EVSE's or the
        station's ``permissions/max_power_w`` (stack-0 profiles) and ``may_charge``
        (ChangeAvailability). The first refusal stops the rest and the write."""
        assert self.tree is not None
        for op in ops:
            path = op.path if isinstance(op.path, KeyPath) else KeyPath.parse(op.path)
            if isinstance(op, Write):
                leaves = [(p.segments, raw) for p, _, raw in self.tree.schema.expand(
                    path, op.value)]
            else:  # a delete: of an envelope, or above one
                leaves = [(p.segments, None) for p, _, _ in self.tree.find(
                    KeyPattern([*path.segments, GLOBSTAR])) if p.name == "envelope"]
                leaves += [(path.segments, None)] if path.name == "envelope" else []
            for segs, value in leaves:
                await self._carry(segs, value)

    async def _carry(self, segs: tuple[str, ...], value: Any) -> None:
        evse = int(segs[1]) if len(segs) > 2 and segs[0] == "evse" else 0
        tail = segs[2:] if evse else segs
        if evse and tail == ("energy", "envelope"):
            await self._send_envelope(evse, value)
        elif tail == ("permissions", "max_power_w") and value is not None:
            answer = await self.call("SetChargingProfile", limit_profile(
                evse, float(value), phases=self._phases(evse), amperes=self.settings.amperes))
            if answer.get("status") != "Accepted":
                raise _refused_by(self.identity, "SetChargingProfile", answer)
        elif tail == ("permissions", "may_charge") and value is not None:
            answer = await self.call("ChangeAvailability", availability(evse, bool(value)))
            if answer.get("status") not in ("Accepted", "Scheduled"):
                raise _refused_by(self.identity, "ChangeAvailability", answer)

    def _phases(self, evse: int) -> int:
        path = f"evse/{evse}/phases"
        return int(self.tree.get(path)) if evse and self.tree is not None and \
            path in self.tree else 3

    def obey(self, event: TransactionCommitted) -> None:
        """An envelope the charger accepted: its limit now is the one in force."""
        assert self.tree is not None and self._report is not None
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
                self._report(ops)
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

    # -- the connection ------------------------------------------------------------------------

    @property
    def online(self) -> bool:
        return self.connection is not None

    async def serve(self, connection: Connection) -> None:
        """Speak OCPP-J over ``connection`` until it closes (or a newer one replaces it)."""
        assert self._report is not None and self.tree is not None
        old, self.connection = self.connection, connection
        if old is not None:  # a new connection for the identity replaces the old one
            log.info("%s: a new connection replaces the old one", self.identity)
            self._fail_pending("its connection was replaced")  # sent on the old one
            with contextlib.suppress(Exception):
                await old.close(1000, "replaced by a new connection")
        reconnects = int(self.tree.get("network/link/reconnects") or 0)
        self._report([Write("network/link/online", True),
                      Write("network/link/last_connected_at", self.clock.now_us()),
                      Write("network/link/reconnects", reconnects + 1)])
        try:
            while True:
                try:
                    text = await connection.recv()
                except Exception:  # closed, one way or another
                    return
                await self._take(connection, text)
        finally:
            if self.connection is connection:
                self.connection = None
                self._fail_pending("the charger disconnected")
                self._report([Write("network/link/online", False)])

    async def _take(self, connection: Connection, text: str | bytes) -> None:
        try:
            frame = rpc.parse(text)
        except RpcError as exc:
            log.info("%s: refused a message: %s", self.identity, exc)
            self.refused += 1
            await self._send(connection, exc.answer())
            return
        if isinstance(frame, Call):
            await self._serve_call(connection, frame)
        else:
            self._settle(frame)

    async def _serve_call(self, connection: Connection, call: Call) -> None:
        try:
            schemas.check(call.action, "Request", call.payload, call.id)
            handler = HANDLERS.get(call.action)
            if handler is None:
                raise RpcError(rpc.NOT_SUPPORTED, f"{call.action} is not supported here",
                               message_id=call.id)
            answer = await handler(self, call.payload)
            schemas.check(call.action, "Response", answer, call.id)
        except RpcError as exc:
            self.refused += 1
            log.info("%s: %s refused: %s", self.identity, call.action, exc)
            await self._send(connection, exc.answer())
            return
        except (ValueError, KeyError, TypeError, ArithmeticError) as exc:  # what the
            # schema lets through (a date it cannot parse, a multiplier of 10^400...)
            self.refused += 1
            log.info("%s: %s refused: %s", self.identity, call.action, exc)
            await self._send(connection, CallError(call.id, rpc.FORMAT_VIOLATION,
                                                   f"{type(exc).__name__}: {exc}"[:255]))
            return
        except ModelError as exc:  # the tree refused what it says
            self.refused += 1
            log.info("%s: %s refused: %s", self.identity, call.action, exc)
            await self._send(connection, CallError(call.id, rpc.PROPERTY_CONSTRAINT_VIOLATION,
                                                   str(exc)[:255]))
            return
        except Exception as exc:  # a store failure: the charger sends it again
            self.refused += 1
            log.exception("%s: serving %s failed", self.identity, call.action)
            await self._send(connection, CallError(
                call.id, rpc.INTERNAL_ERROR, f"{type(exc).__name__}"[:255]))
            return
        self.served += 1
        await self._send(connection, CallResult(call.id, answer))

    async def _send(self, connection: Connection, frame: rpc.Frame) -> None:
        with contextlib.suppress(Exception):  # a closed socket: the charger sends again
            await connection.send(rpc.encode(frame))

    def _settle(self, frame: CallResult | CallError) -> None:
        pending = self._pending
        if pending is None or pending[0] != frame.id or pending[1].done():
            log.warning("%s: an answer to no call of ours in flight (%s): dropped",
                        self.identity, frame.id)
            return
        future = pending[1]
        if isinstance(frame, CallResult):
            future.set_result(frame.payload)
        else:
            future.set_exception(InvalidValueError(
                f"{self.identity} answered {frame.code}: {frame.description}"[:400],
                details={"ocpp_error": frame.code}))

    def _fail_pending(self, why: str) -> None:
        if self._pending is not None and not self._pending[1].done():
            self._pending[1].set_exception(_offline(self.identity, why))

    async def call(self, action: str, payload: dict[str, Any],
                   timeout_s: float = CALL_TIMEOUT_S) -> dict[str, Any]:
        """Call ``action`` on the charger and return its answer (one call in flight: the
        next waits its turn). ``INVALID_STATE`` at once when it is not connected."""
        schemas.check(action, "Request", payload)
        async with self._calls:
            connection = self.connection
            if connection is None:
                raise _offline(self.identity, "it is not connected")
            message_id = f"{self.identity[:20]}-{next(self._ids)}"
            future: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
            self._pending = (message_id, future)
            try:
                await connection.send(rpc.encode(Call(message_id, action, payload)))
                async with asyncio.timeout(timeout_s):
                    answer = await future
            except TimeoutError:
                raise RequestTimeoutError(f"{self.identity} did not answer {action} within "
                                          f"{timeout_s:g} s") from None
            finally:
                self._pending = None
        try:
            schemas.check(action, "Response", answer)
        except RpcError as exc:
            raise InvalidValueError(f"{self.identity} answered {action} off its schema: "
                                    f"{exc.description}") from None
        return answer

    async def _send_envelope(self, evse: int, value: Any) -> None:
        if value is None:
            answer = await self.call("ClearChargingProfile", clear_envelope_profile(evse))
            if answer.get("status") not in ("Accepted", "Unknown"):
                raise _refused_by(self.identity, "ClearChargingProfile", answer)
            return
        envelope = PowerRangeEnvelope.model_validate(value)
        answer = await self.call("SetChargingProfile", set_charging_profile(
            envelope, evse, phases=self._phases(evse), amperes=self.settings.amperes,
            max_periods=self.settings.max_periods))
        if answer.get("status") != "Accepted":
            raise _refused_by(self.identity, "SetChargingProfile", answer)

    # -- the charger's calls -------------------------------------------------------------------

    def _apply(self, ops: Sequence[Operation]) -> TransactionCommitted | None:
        assert self._report is not None
        return self._report(ops) if ops else None

    async def on_boot(self, payload: dict[str, Any]) -> dict[str, Any]:
        station = payload["chargingStation"]
        ops: list[Operation] = [Write("identity/vendor_name", station["vendorName"][:64]),
                                Write("identity/model", station["model"][:64])]
        if "serialNumber" in station:
            ops.append(Write("identity/serial_number", station["serialNumber"][:64]))
        if "firmwareVersion" in station:
            ops.append(Write("firmware/version", station["firmwareVersion"][:64]))
        assert self.tree is not None
        boots = int(self.tree.get("diagnostics/boot_count") or 0)
        ops += [Write("diagnostics/boot_count", boots + 1),
                Write("diagnostics/last_boot_reason", payload["reason"][:64])]
        self._apply(ops)
        return {"currentTime": rfc3339(self.clock.now_us()), "interval": HEARTBEAT_S,
                "status": "Accepted"}

    async def on_authorize(self, payload: dict[str, Any]) -> dict[str, Any]:
        """Every token is accepted: there is no token model yet (docs/ocpp-gateway.md).
        Answered, so a charger that authorizes before it starts can charge."""
        log.info("%s: authorize %s: accepted (no token list yet)", self.identity,
                 payload["idToken"].get("type", ""))
        return {"idTokenInfo": {"status": "Accepted"}}

    async def on_heartbeat(self, payload: dict[str, Any]) -> dict[str, Any]:
        return {"currentTime": rfc3339(self.clock.now_us())}

    async def on_status(self, payload: dict[str, Any]) -> dict[str, Any]:
        assert self.tree is not None
        evse, connector = payload["evseId"], payload["connectorId"]
        status = payload["connectorStatus"]
        path = f"evse/{evse}/connector/{connector}/status"
        ops: list[Operation] = []
        if path in self.tree:
            ops.append(Write(path, status))
            if status in ("Unavailable", "Faulted", "Reserved"):
                ops.append(Write(f"evse/{evse}/status", status))
            elif status == "Available" and self.tree.get(f"evse/{evse}/status") in (
                    "Unavailable", "Faulted", "Reserved", "Finishing", "Preparing"):
                ops.append(Write(f"evse/{evse}/status", "Available"))
            elif status == "Occupied" and self.tree.get(f"evse/{evse}/status") == "Available":
                ops.append(Write(f"evse/{evse}/status", "Preparing"))
        else:
            log.warning("%s: a status for EVSE %s connector %s, which it does not have",
                        self.identity, evse, connector)
        self._apply(ops)
        return {}

    async def on_transaction(self, payload: dict[str, Any]) -> dict[str, Any]:
        assert self.tree is not None and self._durable is not None
        applied = apply_event(self.tree, payload, self.clock.now_us())
        event = self._apply(applied.ops)
        # answered only once its effect is on disk; a repeat too (the first answer may have
        # failed because the store did: the effect is in the tree, perhaps not yet on disk)
        await self._durable(self.tree.revision if event is None else event.revision)
        answer: dict[str, Any] = {}
        if "idToken" in payload:
            answer["idTokenInfo"] = {"status": "Accepted"}
        return answer

    async def on_meter_values(self, payload: dict[str, Any]) -> dict[str, Any]:
        assert self.tree is not None
        evse = payload["evseId"]
        readings = read(payload["meterValue"])
        if evse and readings:
            latest, base = readings[-1], f"evse/{evse}"
            ops: list[Operation] = [Write(f"{base}/meter/{name}", value)
                                    for name, value in latest.registers.items()
                                    if f"{base}/meter/{name}" in self.tree]
            if latest.power_w is not None and f"{base}/session/power_w" in self.tree:
                ops.append(Write(f"{base}/session/power_w", latest.power_w))
            self._apply(ops)
        return {}


    async def on_firmware_status(self, payload: dict[str, Any]) -> dict[str, Any]:
        """The charger's latest word on an update as ``firmware/update_status`` (chargers
        skip and repeat statuses: each is taken as it comes)."""
        status = FIRMWARE_STATUS.get(payload["status"], "Failed")
        ops: list[Operation] = [Write("firmware/update_status", status)]
        if status == "Installed":
            ops.append(Write("firmware/last_update_at", self.clock.now_us()))
        self._apply(ops)
        return {}

    async def on_security_event(self, payload: dict[str, Any]) -> dict[str, Any]:
        """Logged as the security event it is; a failed authentication counts in
        ``security/failed_logins``."""
        assert self.tree is not None
        kind = payload["type"]
        log.warning("%s: security event %s at %s: %s", self.identity, kind[:50],
                    payload["timestamp"], payload.get("techInfo", "")[:255])
        if "Authenticat" in kind or "Certificate" in kind:
            failed = int(self.tree.get("security/failed_logins") or 0)
            self._apply([Write("security/failed_logins", failed + 1)])
        return {}


FIRMWARE_STATUS = {
    "Downloading": "Downloading", "Downloaded": "Downloaded", "SignatureVerified": "Verifying",
    "Installing": "Installing", "InstallRebooting": "Installing",
    "InstallScheduled": "Installing", "Installed": "Installed", "Idle": "Idle",
    "DownloadScheduled": "Downloading", "DownloadPaused": "Downloading"}
"""OCPP's FirmwareStatusEnumType as the tree's ``firmware/update_status``; every other (a
failure: DownloadFailed, InvalidSignature, InstallVerificationFailed...) is Failed."""


def _offline(identity: str, why: str) -> ModelError:
    return InvalidStateError(f"{identity} is offline ({why}): nothing was sent to it",
                             details={"reason": "offline"})


def _refused_by(identity: str, action: str, answer: dict[str, Any]) -> ModelError:
    info = answer.get("statusInfo") or {}
    return InvalidValueError(
        f"{identity} answered {action} {answer.get('status')}"
        + (f": {info.get('reasonCode')} {info.get('additionalInfo', '')}".rstrip()
           if info else ""), details={"ocpp_status": answer.get("status")})


HANDLERS = {
    "Authorize": OcppCharger.on_authorize,
    "BootNotification": OcppCharger.on_boot,
    "Heartbeat": OcppCharger.on_heartbeat,
    "StatusNotification": OcppCharger.on_status,
    "TransactionEvent": OcppCharger.on_transaction,
    "MeterValues": OcppCharger.on_meter_values,
    "FirmwareStatusNotification": OcppCharger.on_firmware_status,
    "SecurityEventNotification": OcppCharger.on_security_event,
}
"""The charger's calls served; any other OCPP 2.0.1 action is answered NotSupported."""

__all__ = ["HANDLERS", "ChargerSettings", "Connection", "OcppCharger"]
