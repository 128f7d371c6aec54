"""The CSMS's calls the simulated charger serves, one function each: it decides, changes the
charger's state and answers at once; what the answer promises (a report's pages, a triggered
message, a transaction's events, a firmware update, a reset) is the ``Followup`` it returns,
which runs once the answer is on the wire (``client``).

Every payload is the call as it came (the spec's camelCase JSON); the charger trusts its
CSMS to send schema-valid calls (one a handler cannot read is answered a CALLERROR
InternalError, by the ``ocpp`` package). An action not in ``HANDLERS`` is answered
NotImplemented.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from ocpp.exceptions import OccurrenceConstraintViolationError

from actors.testing.ocpp_charger import firmware
from actors.testing.ocpp_charger.charging import STATION_PURPOSES, keep
from actors.testing.ocpp_charger.client import Answer, Followup, Handler, Payload
from actors.testing.ocpp_charger.device_model import Component, Outcome, Variable

if TYPE_CHECKING:
    from actors.testing.ocpp_charger.charger import SimulatedCharger
    from actors.testing.ocpp_charger.charging import Evse


def _status(status: str, reason: str | None = None, **more: Any) -> Payload:
    out: Payload = {"status": status} | more
    if reason is not None:
        out["statusInfo"] = {"reasonCode": reason}
    return out


def _within(charger: SimulatedCharger, component: str, instance: str,
            items: Sequence[Any]) -> None:
    """A CALLERROR OccurrenceConstraintViolation when ``items`` are more than the charger's
    ItemsPerMessage of ``instance`` allows."""
    most = int(charger.model.number(component, Variable(name="ItemsPerMessage",
                                                        instance=instance)))
    if len(items) > most:
        raise OccurrenceConstraintViolationError(
            description=f"{len(items)} items, ItemsPerMessage{instance} is {most}")


# -- smart charging and availability (K01, K10, G03) -------------------------------------------

def set_charging_profile(charger: SimulatedCharger, payload: Payload) -> Answer:
    number, profile = int(payload["evseId"]), payload["chargingProfile"]
    purpose = profile["chargingProfilePurpose"]
    schedule = profile["chargingSchedule"][0]
    model = charger.model
    if model.value("SmartChargingCtrlr", "Enabled") != "true":
        return _status("Rejected", "Disabled"), None
    if number != 0 and number not in charger.evses:
        return _status("Rejected", "UnknownEvse"), None
    if (purpose in STATION_PURPOSES and number != 0) or (purpose == "TxProfile"
                                                          and number == 0):
        return _status("Rejected", "InvalidProfile"), None
    if schedule["chargingRateUnit"] not in model.value("SmartChargingCtrlr",
                                                       "RateUnit").split(","):
        return _status("Rejected", "InvalidSchedule"), None
    if len(schedule["chargingSchedulePeriod"]) > model.number("SmartChargingCtrlr",
                                                              "PeriodsPerSchedule"):
        return _status("Rejected", "InvalidSchedule"), None
    everywhere = [charger.station_profiles, *(e.profiles for e in charger.evses.values())]
    if number == 0:
        keep(charger.station_profiles, profile, everywhere)
        return _status("Accepted"), None
    evse = charger.evses[number]
    # a TxProfile only for a transaction running on the EVSE
    if purpose == "TxProfile" and (evse.transaction is None or profile.get(
            "transactionId", evse.transaction) != evse.transaction):
        return _status("Rejected", "TxNotFound"), None
    keep(evse.profiles, profile, everywhere)
    return _status("Accepted"), None


def clear_charging_profile(charger: SimulatedCharger, payload: Payload) -> Answer:
    ident = payload.get("chargingProfileId")
    criteria = payload.get("chargingProfileCriteria") or {}
    found = False
    for number, kept in [(0, charger.station_profiles),
                         *((n, e.profiles) for n, e in charger.evses.items())]:
        for key, profile in list(kept.items()):
            if ident is not None and profile["id"] != ident:
                continue
            if "evseId" in criteria and criteria["evseId"] != number:
                continue
            if "chargingProfilePurpose" in criteria and \
                    criteria["chargingProfilePurpose"] != profile["chargingProfilePurpose"]:
                continue
            if "stackLevel" in criteria and criteria["stackLevel"] != profile["stackLevel"]:
                continue
            del kept[key]
            found = True
    return _status("Accepted" if found else "Unknown"), None


def change_availability(charger: SimulatedCharger, payload: Payload) -> Answer:
    """Takes effect at once, transaction or not (they go on, drawing nothing)."""
    operative = payload["operationalStatus"] == "Operative"
    evse = payload.get("evse")
    if evse is not None:
        target = charger.evses.get(int(evse["id"]))
        if target is None or evse.get("connectorId", 1) != 1:
            return _status("Rejected", "UnknownEvse"), None
        changed = [target] if target.operative != operative else []
        target.operative = operative
    else:
        changed = list(charger.evses.values()) if charger.operative != operative else []
        charger.operative = operative

    async def tell() -> None:
        for each in changed:
            await charger.status_notification(each)
        await charger.observe()

    return _status("Accepted"), tell if changed else None


# -- the device model (B07, B08, B06, B05) -----------------------------------------------------

def _pages(charger: SimulatedCharger, request_id: int, data: list[Payload]) -> Followup:
    size = int(charger.model.number("DeviceDataCtrlr", Variable(name="ItemsPerMessage",
                                                                instance="GetReport")))
    pages = [data[i:i + size] for i in range(0, len(data), size)]

    async def notify() -> None:
        for seq, page in enumerate(pages):
            await charger.send("NotifyReport", {
                "requestId": request_id, "generatedAt": charger.stamp_now(), "seqNo": seq,
                "tbc": seq < len(pages) - 1, "reportData": page})

    return notify


def get_base_report(charger: SimulatedCharger, payload: Payload) -> Answer:
    charger.refresh()
    data = charger.model.report(str(payload["reportBase"]))
    if data is None:
        return _status("NotSupported"), None
    if not data:
        return _status("EmptyResultSet"), None
    return _status("Accepted"), _pages(charger, int(payload["requestId"]), data)


def get_report(charger: SimulatedCharger, payload: Payload) -> Answer:
    wanted = payload.get("componentVariable") or []
    _within(charger, "DeviceDataCtrlr", "GetReport", wanted)
    charger.refresh()
    data = charger.model.select(wanted, payload.get("componentCriteria"))
    if not data:
        return _status("EmptyResultSet"), None
    return _status("Accepted"), _pages(charger, int(payload["requestId"]), data)


def _result(item: Mapping[str, Any], outcome: Outcome, value: bool) -> Payload:
    out: Payload = {"attributeStatus": outcome.status, "component": item["component"],
                    "variable": item["variable"]}
    if "attributeType" in item:
        out["attributeType"] = item["attributeType"]
    if value and outcome.value is not None and outcome.status == "Accepted":
        out["attributeValue"] = outcome.value
    if outcome.reason:
        out["attributeStatusInfo"] = {"reasonCode": outcome.reason}
    return out


def get_variables(charger: SimulatedCharger, payload: Payload) -> Answer:
    items = payload["getVariableData"]
    _within(charger, "DeviceDataCtrlr", "GetVariables", items)
    charger.refresh()
    return {"getVariableResult": [_result(item, charger.model.get(
        Component.of(item["component"]), Variable.of(item["variable"]),
        item.get("attributeType", "Actual")), value=True) for item in items]}, None


def set_variables(charger: SimulatedCharger, payload: Payload) -> Answer:
    items = payload["setVariableData"]
    _within(charger, "DeviceDataCtrlr", "SetVariables", items)
    results = []
    for item in items:
        component, variable = Component.of(item["component"]), Variable.of(item["variable"])
        outcome = charger.model.set(component, variable, str(item["attributeValue"]),
                                    item.get("attributeType", "Actual"))
        if outcome.status == "Accepted":
            _takes_effect(charger, component, variable, str(outcome.value))
        results.append(_result(item, outcome, value=False))
    return {"setVariableResult": results}, None


def _takes_effect(charger: SimulatedCharger, component: Component, variable: Variable,
                  value: str) -> None:
    """What the charger does at once with a value set (see ``inventory``)."""
    name = (component.key[0], variable.key[0])
    if name == ("ocppcommctrlr", "heartbeatinterval"):
        charger.reschedule()
    elif name == ("sampleddatactrlr", "txupdatedinterval"):
        charger.report_s = float(value)
        charger.reschedule()
    elif name == ("securityctrlr", "basicauthpassword"):
        charger.password = value  # from the next connection on


# -- monitoring (N04, N06) ---------------------------------------------------------------------

def set_variable_monitoring(charger: SimulatedCharger, payload: Payload) -> Answer:
    items = payload["setMonitoringData"]
    _within(charger, "MonitoringCtrlr", "SetVariableMonitoring", items)
    charger.refresh()
    now_s = charger.clock.monotonic()
    results = [charger.monitors.set(item, now_s) for item in items]
    charger.wake()  # a Periodic monitor's first deadline
    # a threshold already crossed reports at once
    return {"setMonitoringResult": results}, charger.observe if any(
        r["status"] == "Accepted" for r in results) else None


def clear_variable_monitoring(charger: SimulatedCharger, payload: Payload) -> Answer:
    ids = payload["id"]
    _within(charger, "MonitoringCtrlr", "ClearVariableMonitoring", ids)
    return {"clearMonitoringResult": charger.monitors.clear(ids)}, None


# -- firmware and reset (L01, B11, B12) --------------------------------------------------------

def update_firmware(charger: SimulatedCharger, payload: Payload) -> Answer:
    canceled = charger.cancel_firmware()

    async def update() -> None:
        await firmware.update(charger, payload)

    return _status("AcceptedCanceled" if canceled else "Accepted"), update


def reset(charger: SimulatedCharger, payload: Payload) -> Answer:
    if payload.get("evseId") is not None:
        return _status("Rejected", "UnsupportedParam"), None  # no EVSE resets modelled
    if payload["type"] == "OnIdle" and not charger.idle:
        charger.reset_when_idle()
        return _status("Scheduled"), None
    return _status("Accepted"), charger.reset_now


# -- transactions (F01, F03, F05) --------------------------------------------------------------

def request_start_transaction(charger: SimulatedCharger, payload: Payload) -> Answer:
    """The given EVSE, or the first with an EV plugged in, when it has no transaction; one
    started without an EV waits EVConnectionTimeOut for it."""
    if charger.registration != "Accepted":
        return _status("Rejected", "NotAccepted"), None
    number = payload.get("evseId")
    free: list[Evse] = [e for e in charger.evses.values()
                        if e.transaction is None and e.operative and charger.operative]
    if number is not None:
        chosen = next((e for e in free if e.number == number), None)
    else:
        chosen = next((e for e in free if e.plugged), None)
    profile = payload.get("chargingProfile")
    if chosen is None or (profile is not None and
                          profile["chargingProfilePurpose"] != "TxProfile"):
        return _status("Rejected"), None
    transaction = charger.begin(chosen, remote_start_id=int(payload["remoteStartId"]),
                                id_token=payload["idToken"])
    if profile is not None:
        keep(chosen.profiles, profile | {"transactionId": transaction},
             [charger.station_profiles, *(e.profiles for e in charger.evses.values())])

    async def started() -> None:
        await charger.started(chosen, "RemoteStart")

    return _status("Accepted", transactionId=transaction), started


def request_stop_transaction(charger: SimulatedCharger, payload: Payload) -> Answer:
    chosen = next((e for e in charger.evses.values()
                   if e.transaction is not None and e.transaction == payload["transactionId"]),
                  None)
    if chosen is None:
        return _status("Rejected"), None

    async def stop() -> None:
        await charger.stop(chosen, "RemoteStop", "Remote")

    return _status("Accepted"), stop


def unlock_connector(charger: SimulatedCharger, payload: Payload) -> Answer:
    evse = charger.evses.get(int(payload["evseId"]))
    if evse is None or payload["connectorId"] != 1:
        return _status("UnknownConnector"), None
    if evse.transaction is not None:
        return _status("OngoingAuthorizedTransaction"), None
    return _status("Unlocked"), None


# -- TriggerMessage (F06) ----------------------------------------------------------------------

def trigger_message(charger: SimulatedCharger, payload: Payload) -> Answer:
    """BootNotification only while not Accepted (F06.FR.17); StatusNotification for one
    connector named (F06.FR.12); MeterValues and TransactionEvent for the EVSE named or all
    (a TransactionEvent needs a running transaction); FirmwareStatusNotification the update's
    status, Idle when none runs; Heartbeat. Anything else: NotImplemented."""
    kind, named = payload["requestedMessage"], payload.get("evse")
    evse = None
    if named is not None:
        evse = charger.evses.get(int(named["id"]))
        if evse is None:
            return _status("Rejected", "UnknownEvse"), None
    targets = [evse] if evse is not None else list(charger.evses.values())
    followup: Followup
    if kind == "BootNotification":
        if charger.registration == "Accepted":
            return _status("Rejected", "AlreadyAccepted"), None

        async def followup() -> None:
            charger.trigger_boot()
    elif kind == "Heartbeat":
        followup = charger.heartbeat
    elif kind == "StatusNotification":
        if named is None or evse is None or named.get("connectorId") != 1:
            return _status("Rejected", "UnknownConnector"), None

        async def followup() -> None:
            await charger.status_notification(evse)
    elif kind == "MeterValues":
        async def followup() -> None:
            for each in targets:
                await charger.meter_values(each, "Trigger")
    elif kind == "TransactionEvent":
        running = [e for e in targets if e.transaction is not None]
        if not running:
            return _status("Rejected", "NoTransaction"), None

        async def followup() -> None:
            for each in running:
                if each.transaction is not None:
                    await charger.transaction_event(each, "Updated", "Trigger", "Trigger")
    elif kind == "FirmwareStatusNotification":
        async def followup() -> None:
            if charger.firmware_busy:
                await charger.firmware_notify(charger.firmware_status,
                                              charger.firmware_request)
            else:
                await charger.firmware_notify("Idle", None)
    else:
        return _status("NotImplemented"), None
    return _status("Accepted"), followup


HANDLERS: dict[str, Handler] = {
    "SetChargingProfile": set_charging_profile,
    "ClearChargingProfile": clear_charging_profile,
    "ChangeAvailability": change_availability,
    "GetBaseReport": get_base_report,
    "GetReport": get_report,
    "GetVariables": get_variables,
    "SetVariables": set_variables,
    "SetVariableMonitoring": set_variable_monitoring,
    "ClearVariableMonitoring": clear_variable_monitoring,
    "UpdateFirmware": update_firmware,
    "Reset": reset,
    "RequestStartTransaction": request_start_transaction,
    "RequestStopTransaction": request_stop_transaction,
    "UnlockConnector": unlock_connector,
    "TriggerMessage": trigger_message,
}
"""The CSMS's calls served, by action."""

__all__ = ["HANDLERS"]
