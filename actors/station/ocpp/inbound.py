"""The charger's calls, served: what each OCPP 2.0.1 message does to the station's tree.

Each handler takes the ``OcppCharger`` and the payload (already checked against the official
schema) and returns the answer. What must follow the answer (the report a Pending boot asks
for) is queued on the link with ``after_answer``; no handler makes a call of its own. The
mapping, message by message, is in docs/ocpp-gateway.md.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

from actors.logic.ocpp import device_model as dm
from actors.logic.ocpp.meters import live_ops, micros, read
from actors.logic.ocpp.profiles import VOLTS, rfc3339
from actors.logic.ocpp.rpc import printable
from actors.logic.ocpp.transactions import apply_event, record_key
from actors.station.ocpp import device_model
from object_model.pebc import EnergyConstraints
from object_model.station.ocpp_namespace import CHARGER
from object_model.tree import Delete, Operation, TransactionCommitted, Write

if TYPE_CHECKING:
    from actors.station.ocpp.charger import OcppCharger

log = logging.getLogger("csms.ocpp")

HEARTBEAT_S = 900  # liveness comes from WebSocket pings; a heartbeat still sets the clock
PENDING_RETRY_S = 10  # a Pending charger boots again after this (unless asked sooner)
FUTURE_SLACK_US = 300_000_000  # a time further ahead of ours is taken as ours
ASSUMED_STAY_US = 8 * 3600 * 1_000_000  # an EV that says nothing of its departure

Handler = Callable[["OcppCharger", dict[str, Any]], Awaitable[dict[str, Any]]]


def _apply(charger: OcppCharger, ops: list[Operation]) -> TransactionCommitted | None:
    assert charger.report is not None
    return charger.report(ops) if ops else None


async def on_boot(charger: OcppCharger, payload: dict[str, Any]) -> dict[str, Any]:
    """Accepted, or Pending while the charger's device model is learned (then it is asked to
    boot again)."""
    tree = charger.tree
    assert tree is not None
    station = payload["chargingStation"]
    firmware = printable(station.get("firmwareVersion", ""))
    ops: list[Operation] = [Write("identity/vendor_name", printable(station["vendorName"])),
                            Write("identity/model", printable(station["model"]))]
    if "serialNumber" in station:
        ops.append(Write("identity/serial_number", printable(station["serialNumber"])))
    if firmware:
        ops.append(Write("firmware/version", firmware))
    boots = int(tree.get("diagnostics/boot_count") or 0)
    ops += [Write("diagnostics/boot_count", boots + 1),
            Write("diagnostics/last_boot_reason", payload["reason"][:64])]
    status = "Accepted"
    if charger.onboarding or device_model.needs_inventory(charger, firmware):
        status = "Pending"
        if not charger.onboarding:
            charger.onboarding = True
            charger.link.after_answer(device_model.onboard(charger, firmware))
    elif charger.relearn_transactions:
        charger.relearn_transactions = False
        charger.link.after_answer(device_model.ask_transactions(charger))
    charger.registration = status
    ops.append(Write(f"{CHARGER}/registration", status))
    _apply(charger, ops)
    log.info("%s: booted (%s, firmware %s): %s", charger.identity, payload["reason"],
             firmware or "?", status)
    return {"currentTime": rfc3339(charger.clock.now_us()),
            "interval": HEARTBEAT_S if status == "Accepted" else PENDING_RETRY_S,
            "status": status}


async def on_authorize(charger: OcppCharger, payload: dict[str, Any]) -> dict[str, Any]:
    """Every token is accepted: there is no token model yet (docs/ocpp-gateway.md).
    Answered, so a charger that authorizes before it starts can charge."""
    log.info("%s: authorize %s: accepted (no token list yet)", charger.identity,
             printable(payload["idToken"].get("type", "")))
    return {"idTokenInfo": {"status": "Accepted"}}


async def on_heartbeat(charger: OcppCharger, payload: dict[str, Any]) -> dict[str, Any]:
    return {"currentTime": rfc3339(charger.clock.now_us())}


async def on_status(charger: OcppCharger, payload: dict[str, Any]) -> dict[str, Any]:
    """A connector's status, unless one stamped later was shown (a queue replayed late never
    moves it back)."""
    tree = charger.tree
    assert tree is not None
    evse, connector = payload["evseId"], payload["connectorId"]
    status = payload["connectorStatus"]
    path = f"evse/{evse}/connector/{connector}/status"
    at = min(micros(payload["timestamp"]), charger.clock.now_us() + FUTURE_SLACK_US)
    if at < charger.status_at.get((evse, connector), 0):
        log.info("%s: a status of EVSE %s connector %s older than the one shown: kept out",
                 charger.identity, evse, connector)
        return {}
    ops: list[Operation] = []
    if path in tree:
        charger.status_at[(evse, connector)] = at  # only connectors it has: bounded
        ops.append(Write(path, status))
        if status in ("Unavailable", "Faulted", "Reserved"):
            ops.append(Write(f"evse/{evse}/status", status))
        elif status == "Available" and tree.get(f"evse/{evse}/status") in (
                "Unavailable", "Faulted", "Reserved", "Finishing", "Preparing"):
            ops.append(Write(f"evse/{evse}/status", "Available"))
        elif status == "Occupied" and tree.get(f"evse/{evse}/status") == "Available":
            ops.append(Write(f"evse/{evse}/status", "Preparing"))
    else:
        log.warning("%s: a status for EVSE %s connector %s, which it does not have",
                    charger.identity, evse, connector)
    _apply(charger, ops)
    return {}


async def on_transaction(charger: OcppCharger, payload: dict[str, Any]) -> dict[str, Any]:
    """Answered only once its effect is on disk; a repeat too (the first answer may have
    failed because the store did: the effect is in the tree, perhaps not yet on disk). The
    EVSE's energy needs follow (``_energy_needs``)."""
    tree = charger.tree
    assert tree is not None and charger.durable is not None
    now = charger.clock.now_us()
    applied = apply_event(tree, payload, now)
    _apply(charger, applied.ops)
    if not applied.repeat:
        _apply(charger, _energy_needs(charger, payload, now))
    await charger.durable(tree.revision)
    answer: dict[str, Any] = {}
    if "idToken" in payload:
        answer["idTokenInfo"] = {"status": "Accepted"}
    return answer


def _energy_needs(charger: OcppCharger, payload: dict[str, Any], now_us: int
                  ) -> list[Operation]:
    """What the site's allocation needs to know of the EVSE the event is about: while its
    transaction runs and the EV said nothing of its needs (no NotifyEVChargingNeeds: an IEC
    61851 EV), anything up to full power over an assumed stay, renewed as it passes, as a
    native station shows a basic EV; when it ends, no need and the EVSE's own constraints."""
    tree = charger.tree
    assert tree is not None
    record = f"transactions/{record_key(payload['transactionInfo']['transactionId'])}"
    if f"{record}/evse" not in tree:
        return []
    evse = int(tree.get(f"{record}/evse"))
    if evse not in charger.evses(tree):
        return []
    needs = f"evse/{evse}/energy/energy_constraints"
    if tree.get(f"{record}/state") == "Finished":
        charger.ev_needs.discard(evse)
        done: list[Operation] = [charger.constraints(tree, evse)]
        if tree.is_leaf(needs):
            done.append(Delete(needs))
        return done
    if evse in charger.ev_needs or tree.get(f"evse/{evse}/session/session_id") != \
            payload["transactionInfo"]["transactionId"]:
        return []
    started = int(tree.get(f"{record}/started_at"))
    stays = max(1, (now_us - started) // ASSUMED_STAY_US + 1)
    until = started + stays * ASSUMED_STAY_US
    most = float(tree.get(f"evse/{evse}/max_power_w")) * (until - started) / 3.6e9
    assumed = EnergyConstraints(valid_from_us=started, valid_until_us=until, min_wh=0.0,
                                max_wh=round(most, 1)).model_dump()
    return [] if tree.is_leaf(needs) and tree.get(needs) == assumed else [Write(needs, assumed)]


async def on_meter_values(charger: OcppCharger, payload: dict[str, Any]) -> dict[str, Any]:
    tree = charger.tree
    assert tree is not None
    evse = payload["evseId"]
    readings = read(payload["meterValue"])
    if evse and readings:
        latest = readings[-1]
        latest.at_us = min(latest.at_us, charger.clock.now_us() + FUTURE_SLACK_US)
        _apply(charger, live_ops(tree, evse, latest))
    return {}


async def on_firmware_status(charger: OcppCharger, payload: dict[str, Any]) -> dict[str, Any]:
    """The charger's latest word on an update as ``firmware/update_status`` (chargers skip
    and repeat statuses: each is taken as it comes; the install task reads them too)."""
    status = FIRMWARE_STATUS.get(payload["status"], "Failed")
    ops: list[Operation] = [Write("firmware/update_status", status)]
    if status == "Installed":
        ops.append(Write("firmware/last_update_at", charger.clock.now_us()))
    _apply(charger, ops)
    return {}


async def on_security_event(charger: OcppCharger, payload: dict[str, Any]) -> dict[str, Any]:
    """Logged as the security event it is; a failed authentication counts in
    ``security/failed_logins``."""
    tree = charger.tree
    assert tree is not None
    kind = payload["type"]
    log.warning("%s: security event %s at %s: %s", charger.identity, printable(kind, 50),
                payload["timestamp"], printable(payload.get("techInfo", ""), 255))
    if "Authenticat" in kind or "Certificate" in kind:
        failed = int(tree.get("security/failed_logins") or 0)
        _apply(charger, [Write("security/failed_logins", failed + 1)])
    return {}


async def on_notify_report(charger: OcppCharger, payload: dict[str, Any]) -> dict[str, Any]:
    """A page of the device model (``ocpp:dm``), committed as it comes."""
    device_model.take_page(charger, payload)
    return {}


async def on_notify_event(charger: OcppCharger, payload: dict[str, Any]) -> dict[str, Any]:
    """What the charger's monitors saw: each value written to its variable, where the device
    model has it, so the station's own monitoring tasks see it."""
    tree = charger.tree
    assert tree is not None
    events = payload["eventData"]
    for event in events[:8]:
        log.info("%s: event %s %s.%s = %s%s", charger.identity, event["trigger"],
                 printable(event["component"]["name"]), printable(event["variable"]["name"]),
                 printable(str(event["actualValue"])), " (cleared)" if event.get("cleared")
                 else "")
    _apply(charger, dm.event_ops(tree, events))
    return {}


async def on_charging_needs(charger: OcppCharger, payload: dict[str, Any]) -> dict[str, Any]:
    """What the EV needs (ISO 15118, through the charger) as the EVSE's PEBC constraints: its
    power range (the EV's least and most at the EVSE's phases) and the energy it wants by its
    departure. Rejected without a transaction on the EVSE, with parameters that do not
    match the energy transfer asked for (K17.FR.06), or with figures no EV has (a negative
    voltage or current, more energy than the tree holds): nothing changes then."""
    tree = charger.tree
    assert tree is not None
    evse = payload["evseId"]
    needs = payload["chargingNeeds"]
    transfer = needs["requestedEnergyTransfer"]
    ac, dc = needs.get("acChargingParameters"), needs.get("dcChargingParameters")
    if evse not in charger.evses(tree) or charger.running_transaction(evse) is None:
        return {"status": "Rejected"}
    if (transfer.startswith("AC") and ac is None) or (transfer.startswith("DC") and dc is None):
        return {"status": "Rejected"}
    if any(float(value) < 0 for value in (*(ac or {}).values(), *(dc or {}).values())
           if isinstance(value, int | float)):
        return {"status": "Rejected"}
    phases = int(tree.get(f"evse/{evse}/phases"))
    now = charger.clock.now_us()
    if ac is not None:
        volts = min(float(ac["evMaxVoltage"]) / (3 ** 0.5 if phases == 3 else 1.0), VOLTS) \
            or VOLTS
        least = float(ac["evMinCurrent"]) * volts * phases
        most = float(ac["evMaxCurrent"]) * volts * phases
        energy = float(ac["energyAmount"])
    else:
        most = float(dc.get("evMaxPower") or float(dc["evMaxCurrent"]) * float(
            dc["evMaxVoltage"]))
        least, energy = 0.0, float(dc.get("energyAmount") or 0.0)
    ops: list[Operation] = [charger.constraints(tree, evse, least, most)]
    departure = micros(needs["departureTime"]) if "departureTime" in needs else None
    if departure is not None and departure > now:
        ops.append(Write(f"evse/{evse}/session/departure_at", departure))
        if energy > 0:
            try:
                wanted = EnergyConstraints(valid_from_us=now, valid_until_us=departure,
                                           min_wh=0.0, max_wh=energy)
            except ValueError:  # 10^300 Wh: more than any EV, and than the tree holds
                return {"status": "Rejected"}
            ops.append(Write(f"evse/{evse}/energy/energy_constraints", wanted.model_dump()))
    _apply(charger, ops)
    charger.ev_needs.add(evse)  # once its needs are shown: the assumed ones end
    return {"status": "Accepted"}


FIRMWARE_STATUS = {
    "Downloading": "Downloading", "Downloaded": "Downloaded", "SignatureVerified": "Verifying",
    "Installing": "Installing", "InstallRebooting": "Installing",
    "InstallScheduled": "Installing", "Installed": "Installed", "Idle": "Idle",
    "DownloadScheduled": "Downloading", "DownloadPaused": "Downloading"}
"""OCPP's FirmwareStatusEnumType as the tree's ``firmware/update_status``; every other (a
failure: DownloadFailed, InvalidSignature, InstallVerificationFailed...) is Failed."""

HANDLERS: dict[str, Handler] = {
    "Authorize": on_authorize,
    "BootNotification": on_boot,
    "Heartbeat": on_heartbeat,
    "StatusNotification": on_status,
    "TransactionEvent": on_transaction,
    "MeterValues": on_meter_values,
    "FirmwareStatusNotification": on_firmware_status,
    "SecurityEventNotification": on_security_event,
    "NotifyReport": on_notify_report,
    "NotifyEvent": on_notify_event,
    "NotifyEVChargingNeeds": on_charging_needs,
}
"""The charger's calls served; any other OCPP 2.0.1 action is answered NotSupported."""

WHILE_PENDING = frozenset({"BootNotification", "NotifyReport"})
"""What a charger whose boot is Pending may send (B02.FR.09: its boot, and the report it was
asked for); anything else is answered SecurityError."""

__all__ = ["FIRMWARE_STATUS", "HANDLERS", "HEARTBEAT_S", "WHILE_PENDING"]
