"""The simulated charger against an independent CSMS: booting, heartbeats, its device model
over the wire, monitors, TriggerMessage and UnlockConnector."""

from __future__ import annotations

from typing import Any

import pytest
from ocpp.exceptions import OccurrenceConstraintViolationError
from ocpp.v201 import call

from actors.testing import FakeClock, until
from tests.actors.testing.ocpp_charger.conftest import advance_until, charger_of, running
from tests.actors.testing.ocpp_charger.csms import Csms


def _cv(component: str, variable: str, *, evse: int | None = None,
        connector: int | None = None, instance: str | None = None) -> dict[str, object]:
    comp: dict[str, object] = {"name": component}
    if evse is not None:
        comp["evse"] = {"id": evse} | ({"connectorId": connector} if connector else {})
    var: dict[str, object] = {"name": variable}
    if instance is not None:
        var["instance"] = instance
    return {"component": comp, "variable": var}


async def test_a_pending_charger_sends_nothing_unasked_until_a_triggered_boot_is_accepted(
        csms: Csms, clock: FakeClock) -> None:
    csms.boot_statuses = ["Pending", "Pending"]
    async with running(charger_of(csms, clock)) as charger:
        await csms.wait_call("BootNotification")
        # while Pending it serves the CSMS (and sends what the CSMS asks for)
        answer = await csms.call(call.GetVariables(get_variable_data=[
            _cv("OCPPCommCtrlr", "HeartbeatInterval")]))
        assert answer.get_variable_result[0]["attribute_status"] == "Accepted"
        assert [m.action for m in csms.log if m.kind == "call"] == ["BootNotification"]
        # it boots again after the interval, with the same reason
        await advance_until(clock, csms.interval, lambda: len(csms.calls("BootNotification"))
                            == 2, "a second BootNotification")
        assert charger.registration == "Pending"
        assert [m.action for m in csms.log if m.kind == "call"] == ["BootNotification"] * 2
        answer = await csms.call(call.TriggerMessage(requested_message="BootNotification"))
        assert answer.status == "Accepted"
        await csms.wait_call("StatusNotification", 2)
    boots = csms.calls("BootNotification")
    assert [b["reason"] for b in boots] == ["PowerUp", "PowerUp", "Triggered"]
    assert charger.boot_reasons == ["PowerUp", "PowerUp", "Triggered"]
    triggered = csms.index("call", "BootNotification", csms.index("result", "TriggerMessage"))
    first_status = csms.index("call", "StatusNotification")
    assert 0 < triggered < first_status  # the answer first, the boot, then statuses
    assert {(s["evseId"], s["connectorStatus"]) for s in csms.calls("StatusNotification")} \
        == {(1, "Occupied"), (2, "Available")}
    assert csms.violations == []


async def test_it_serves_the_csms_while_a_call_of_its_own_waits_for_its_answer(
        csms: Csms, clock: FakeClock) -> None:
    charger = charger_of(csms, clock)

    async def answered_get_variables() -> None:
        await until(lambda: [a for a, _ in charger.answered if a == "GetVariables"],
                    "the charger's answer to GetVariables", 5)

    csms.before_boot_answer = answered_get_variables  # its BootNotification waits for it
    async with running(charger):
        await csms.wait_call("BootNotification")
        answer = await csms.call(call.GetVariables(get_variable_data=[
            _cv("SecurityCtrlr", "Identity")]))
        assert answer.get_variable_result[0]["attribute_value"] == "CP-1"
        await csms.wait_call("StatusNotification", 2)
    assert csms.index("result", "GetVariables") < csms.index("call", "StatusNotification")
    assert csms.violations == []


async def test_an_accepted_charger_refuses_a_triggered_boot_and_beats_at_the_csms_interval(
        csms: Csms, clock: FakeClock) -> None:
    csms.interval = 40
    async with running(charger_of(csms, clock)) as charger:
        await csms.wait_call("StatusNotification", 2)
        assert charger.heartbeat_s == 40 and charger.connected
        answer = await csms.call(call.TriggerMessage(requested_message="BootNotification"))
        assert answer.status == "Rejected"  # F06.FR.17
        assert csms.calls("Heartbeat") == []
        await advance_until(clock, 40, lambda: csms.calls("Heartbeat"), "a heartbeat")
        await advance_until(clock, 40, lambda: len(csms.calls("Heartbeat")) >= 2,
                            "a second heartbeat")
    assert charger.heartbeats >= 2
    assert csms.violations == []


async def test_a_full_inventory_comes_in_pages_of_items_per_message(
        csms: Csms, clock: FakeClock) -> None:
    async with running(charger_of(csms, clock, items_per_message=8)) as charger:
        await csms.wait_call("StatusNotification", 2)
        answer = await csms.call(call.GetBaseReport(request_id=7, report_base="FullInventory"))
        assert answer.status == "Accepted"
        await csms.wait_call("NotifyReport", tbc=False)
        pages = csms.calls("NotifyReport")
        assert len(pages) == -(-len(charger.model) // 8) >= 5
        assert [p["seqNo"] for p in pages] == list(range(len(pages)))
        assert [p["tbc"] for p in pages] == [True] * (len(pages) - 1) + [False]
        assert all(p["requestId"] == 7 and 1 <= len(p["reportData"]) <= 8 for p in pages)
        data = [d for p in pages for d in p["reportData"]]
        assert len(data) == len(charger.model) and 30 <= len(data) <= 70
        by_name = {(d["component"]["name"], d["component"].get("evse", {}).get("id"),
                    d["variable"]["name"], d["variable"].get("instance")): d for d in data}
        password = by_name["SecurityCtrlr", None, "BasicAuthPassword", None]
        assert password["variableAttribute"] == [{"type": "Actual", "mutability": "WriteOnly",
                                                  "persistent": True, "constant": False}]
        power = by_name["EVSE", 1, "Power", None]
        assert power["variableCharacteristics"] == {
            "dataType": "decimal", "unit": "W", "minLimit": 0, "maxLimit": 22000.0,
            "supportsMonitoring": True}
        assert {a["type"] for a in power["variableAttribute"]} == {"Actual", "MaxSet"}
        assert float(power["variableAttribute"][0]["value"]) == 11_000.0  # it charges
        assert by_name["SmartChargingCtrlr", None, "RateUnit", None]["variableAttribute"][0][
            "value"] == "W,A"
        assert by_name["DeviceDataCtrlr", None, "ItemsPerMessage", "GetReport"][
            "variableAttribute"][0]["value"] == "8"

        answer = await csms.call(call.GetBaseReport(request_id=8,
                                                    report_base="ConfigurationInventory"))
        assert answer.status == "Accepted"
        await csms.wait_call("NotifyReport", requestId=8, tbc=False)
        config = [d for p in csms.calls("NotifyReport") if p["requestId"] == 8
                  for d in p["reportData"]]
        assert config and all(any(a["mutability"] != "ReadOnly" for a in d["variableAttribute"])
                              for d in config)
        answer = await csms.call(call.GetBaseReport(request_id=9, report_base="Bogus"),
                                 skip_schema_validation=True)
        assert answer.status == "NotSupported"
        # GetReport: what the criteria name, or EmptyResultSet
        answer = await csms.call(call.GetReport(request_id=10, component_variable=[
            {"component": {"name": "EVSE", "evse": {"id": 2}}}]))
        assert answer.status == "Accepted"
        await csms.wait_call("NotifyReport", requestId=10, tbc=False)
        evse2 = [d for p in csms.calls("NotifyReport") if p["requestId"] == 10
                 for d in p["reportData"]]
        assert {d["variable"]["name"] for d in evse2} == {"Available", "AvailabilityState",
                                                          "Power", "SupplyPhases"}
        answer = await csms.call(call.GetReport(request_id=11, component_variable=[
            {"component": {"name": "NoSuchCtrlr"}}]))
        assert answer.status == "EmptyResultSet"
    assert csms.violations == []


async def test_set_variables_answers_per_item_and_what_is_set_is_read_and_takes_effect(
        csms: Csms, clock: FakeClock) -> None:
    async with running(charger_of(csms, clock, report_s=5)) as charger:
        await csms.wait_call("StatusNotification", 2)
        await csms.wait_call("TransactionEvent", eventType="Started")
        items = [
            {**_cv("OCPPCommCtrlr", "HeartbeatInterval"), "attribute_value": "30"},
            {**_cv("SecurityCtrlr", "SecurityProfile"), "attribute_value": "3"},
            {**_cv("TxCtrlr", "EVConnectionTimeOut"), "attribute_value": "soon"},
            {**_cv("SampledDataCtrlr", "TxUpdatedInterval"), "attribute_value": "-1"},
            {**_cv("OCPPCommCtrlr", "NoSuchVariable"), "attribute_value": "1"},
            {**_cv("NoSuchCtrlr", "Enabled"), "attribute_value": "true"},
            {**_cv("OCPPCommCtrlr", "NetworkProfileConnectionAttempts"),
             "attribute_value": "5"},
            {**_cv("OCPPCommCtrlr", "OfflineThreshold"), "attribute_value": "9",
             "attribute_type": "Target"}]
        answer = await csms.call(call.SetVariables(set_variable_data=items))
        statuses = [r["attribute_status"] for r in answer.set_variable_result]
        assert statuses == ["Accepted", "Rejected", "Rejected", "Rejected", "UnknownVariable",
                            "UnknownComponent", "RebootRequired", "NotSupportedAttributeType"]
        reasons = [(r.get("attribute_status_info") or {}).get("reason_code")
                   for r in answer.set_variable_result[1:4]]
        assert reasons == ["ReadOnly", "InvalidValue", "ValueOutOfRange"]
        answer = await csms.call(call.SetVariables(set_variable_data=[
            {**_cv("SampledDataCtrlr", "TxUpdatedInterval"), "attribute_value": "2"},
            {**_cv("SecurityCtrlr", "BasicAuthPassword"),
             "attribute_value": "another-password-16"}]))
        assert [r["attribute_status"] for r in answer.set_variable_result] == ["Accepted"] * 2

        answer = await csms.call(call.GetVariables(get_variable_data=[
            _cv("OCPPCommCtrlr", "HeartbeatInterval"),
            _cv("SampledDataCtrlr", "TxUpdatedInterval"),
            _cv("OCPPCommCtrlr", "NetworkProfileConnectionAttempts"),
            _cv("SecurityCtrlr", "BasicAuthPassword"),
            _cv("EVSE", "Power", evse=1),
            _cv("EVSE", "Power", evse=9),
            {**_cv("EVSE", "Power", evse=1), "attribute_type": "MaxSet"},
            {**_cv("EVSE", "Power", evse=1), "attribute_type": "Target"}]))
        got = [(r["attribute_status"], r.get("attribute_value"))
               for r in answer.get_variable_result]
        assert got == [("Accepted", "30"), ("Accepted", "2"), ("Accepted", "5"),
                       ("Rejected", None), ("Accepted", "11000.0"), ("UnknownComponent", None),
                       ("Accepted", "22000.0"), ("NotSupportedAttributeType", None)]
        assert charger.password == "another-password-16" and charger.heartbeat_s == 30
        with pytest.raises(OccurrenceConstraintViolationError):  # ItemsPerMessage is 8
            await csms.call(call.GetVariables(get_variable_data=[
                _cv("OCPPCommCtrlr", "HeartbeatInterval")] * 9), suppress=False)
        # the effects: a TransactionEvent every 2 s, a heartbeat every 30 s
        updates = len(csms.calls("TransactionEvent"))
        await advance_until(clock, 2, lambda: len(csms.calls("TransactionEvent")) > updates,
                            "an Updated after 2 s")
        await advance_until(clock, 30, lambda: csms.calls("Heartbeat"), "a heartbeat at 30 s")
    assert csms.violations == []


async def test_monitors_report_deltas_and_thresholds_as_notify_events(
        csms: Csms, clock: FakeClock) -> None:
    async with running(charger_of(csms, clock, report_s=5)) as charger:
        await csms.wait_call("TransactionEvent", eventType="Started")
        transaction = csms.calls("TransactionEvent")[0]["transactionInfo"]["transactionId"]
        power = _cv("EVSE", "Power", evse=1)
        answer = await csms.call(call.SetVariableMonitoring(set_monitoring_data=[
            {"value": 1000, "type": "Delta", "severity": 5, **power},
            {"value": 8000, "type": "UpperThreshold", "severity": 2, **power},
            {"value": 1, "type": "UpperThreshold", "severity": 5,
             **_cv("OCPPCommCtrlr", "HeartbeatInterval")},
            {"value": 1, "type": "Delta", "severity": 5, **_cv("EVSE", "Watts", evse=1)},
            {"value": 1, "type": "Delta", "severity": 5, **_cv("EVSE", "Power", evse=7)},
            {"value": 1, "type": "PeriodicClockAligned", "severity": 5, **power},
            {"value": 500, "type": "Delta", "severity": 5, **power},
            {"value": 1, "type": "Delta", "severity": 12, **power}]))
        results = answer.set_monitoring_result
        assert [r["status"] for r in results] == [
            "Accepted", "Accepted", "UnsupportedMonitorType", "UnknownVariable",
            "UnknownComponent", "UnsupportedMonitorType", "Duplicate", "Rejected"]
        delta, upper = results[0]["id"], results[1]["id"]
        # 11 kW is above 8 kW: alerting at once
        await csms.wait_call("NotifyEvent")
        first = csms.calls("NotifyEvent")[0]
        assert first["eventData"][0] | {"eventId": 0, "timestamp": ""} == {
            "eventId": 0, "timestamp": "", "trigger": "Alerting", "actualValue": "11000.0",
            "eventNotificationType": "CustomMonitor", "component": power["component"],
            "variable": power["variable"], "variableMonitoringId": upper, "cleared": False,
            "transactionId": transaction}
        # a 4 kW limit: power drops by 7 kW, the threshold clears
        answer = await csms.call(call.SetChargingProfile(evse_id=1, charging_profile={
            "id": 30, "stackLevel": 1, "chargingProfilePurpose": "TxDefaultProfile",
            "chargingProfileKind": "Absolute", "chargingSchedule": [{
                "id": 30, "chargingRateUnit": "W",
                "chargingSchedulePeriod": [{"startPeriod": 0, "limit": 4000}]}]}))
        assert answer.status == "Accepted"
        await advance_until(clock, 5, lambda: len(csms.calls("NotifyEvent")) >= 2,
                            "events of the drop")
        events = [e for p in csms.calls("NotifyEvent")[1:] for e in p["eventData"]]
        assert {(e["trigger"], e["variableMonitoringId"], e.get("cleared"), e["actualValue"])
                for e in events} == {("Delta", delta, None, "4000.0"),
                                     ("Alerting", upper, True, "4000.0")}
        assert all(p["seqNo"] == 0 and p["tbc"] is False for p in csms.calls("NotifyEvent"))
        # the same power again: nothing more
        count = len(csms.calls("NotifyEvent"))
        updates = len(csms.calls("TransactionEvent"))
        await advance_until(clock, 5, lambda: len(csms.calls("TransactionEvent")) > updates,
                            "another Updated")
        assert len(csms.calls("NotifyEvent")) == count
        answer = await csms.call(call.ClearVariableMonitoring(id=[delta, 999]))
        assert [(r["id"], r["status"]) for r in answer.clear_monitoring_result] == [
            (delta, "Accepted"), (999, "NotFound")]
        answer = await csms.call(call.SetVariableMonitoring(set_monitoring_data=[
            {"value": 10, "type": "Periodic", "severity": 8, **power}]))
        periodic = answer.set_monitoring_result[0]["id"]
        await advance_until(clock, 10, lambda: any(
            e["trigger"] == "Periodic" for p in csms.calls("NotifyEvent")
            for e in p["eventData"]), "a periodic event")
        assert charger.monitors.by_id.keys() == {upper, periodic}
    assert csms.violations == []


async def test_trigger_message_answers_first_then_sends_what_was_asked(
        csms: Csms, clock: FakeClock) -> None:
    async with running(charger_of(csms, clock)):
        await csms.wait_call("TransactionEvent", eventType="Started")
        asked: list[tuple[dict[str, Any], str, str]] = [
            ({"requested_message": "Heartbeat"}, "Accepted", "Heartbeat"),
            ({"requested_message": "StatusNotification", "evse": {"id": 2, "connector_id": 1}},
             "Accepted", "StatusNotification"),
            ({"requested_message": "MeterValues", "evse": {"id": 1}}, "Accepted",
             "MeterValues"),
            ({"requested_message": "TransactionEvent", "evse": {"id": 1}}, "Accepted",
             "TransactionEvent"),
            ({"requested_message": "FirmwareStatusNotification"}, "Accepted",
             "FirmwareStatusNotification")]
        for request, status, action in asked:
            start = len(csms.log)
            answer = await csms.call(call.TriggerMessage(**request))
            assert answer.status == status
            await until(lambda a=action, s=start: csms.index("call", a, s) >= 0,  # type: ignore[misc]
                        f"the triggered {action}", 5)
            assert csms.index("result", "TriggerMessage", start) < csms.index("call", action,
                                                                              start)
        assert csms.calls("StatusNotification")[-1] == csms.calls("StatusNotification")[-1] | {
            "evseId": 2, "connectorId": 1, "connectorStatus": "Available"}
        sampled = csms.calls("MeterValues")[0]["meterValue"][0]["sampledValue"]
        assert {s["context"] for s in sampled} == {"Trigger"}
        triggered = csms.calls("TransactionEvent")[-1]
        assert (triggered["eventType"], triggered["triggerReason"]) == ("Updated", "Trigger")
        assert csms.calls("FirmwareStatusNotification") == [{"status": "Idle"}]
        refused: list[tuple[dict[str, Any], str]] = [
                ({"requested_message": "StatusNotification"}, "Rejected"),
                ({"requested_message": "TransactionEvent", "evse": {"id": 2}}, "Rejected"),
                ({"requested_message": "MeterValues", "evse": {"id": 5}}, "Rejected"),
                ({"requested_message": "LogStatusNotification"}, "NotImplemented")]
        for request, status in refused:
            answer = await csms.call(call.TriggerMessage(**request))
            assert answer.status == status, request
    assert csms.violations == []


async def test_unlock_connector_answers_for_each_connector(csms: Csms, clock: FakeClock
                                                           ) -> None:
    async with running(charger_of(csms, clock)):
        await csms.wait_call("TransactionEvent", eventType="Started")
        answers = [(await csms.call(call.UnlockConnector(evse_id=e, connector_id=c))).status
                   for e, c in ((2, 1), (1, 1), (3, 1), (1, 2))]
    assert answers == ["Unlocked", "OngoingAuthorizedTransaction", "UnknownConnector",
                       "UnknownConnector"]
    assert csms.violations == []


async def test_transaction_events_of_an_offline_charger_are_kept_and_sent_in_order_when_back(
        clock: FakeClock) -> None:
    async with Csms() as first:
        charger = charger_of(first, clock, evses=2, plugged=1)
        async with running(charger):
            started = await first.wait_call("TransactionEvent", eventType="Started")
    # the CSMS is gone: the EV at EVSE 1 leaves and one arrives at EVSE 2, offline
    await until(lambda: not charger.connected, "the charger offline", 5)
    charger.unplug(1)
    charger.plug(2)
    kinds = [(p["eventType"], p["evse"]["id"] if "evse" in p else None)
             for p in charger.offline_queue]
    assert kinds == [("Ended", None), ("Started", 2)]
    async with Csms() as second:
        charger.url = second.url
        async with running(charger):
            events = await second.wait_call("TransactionEvent", count=2)
    assert [e["eventType"] for e in events[:2]] == ["Ended", "Started"]
    assert all(e["offline"] is True for e in events[:2])
    assert events[0]["transactionInfo"]["transactionId"] == \
        started[0]["transactionInfo"]["transactionId"]
    assert not charger.offline_queue
    assert second.violations == []


async def test_a_transaction_starts_as_the_ev_plugs_in_even_when_the_link_dies_that_moment(
        clock: FakeClock) -> None:
    async with Csms() as first:
        charger = charger_of(first, clock, evses=1, plugged=0)
        async with running(charger):
            await first.wait_call("StatusNotification")
            assert charger.registration == "Accepted"
            first.close_all()  # the link dies...
            charger.plug(1)  # ...as the EV plugs in, before the charger noticed
            transaction = charger.evses[1].transaction
            assert transaction is not None  # it started all the same
            await until(lambda: not charger.connected, "the charger offline", 5)
    async with Csms() as second:
        charger.url = second.url
        async with running(charger):
            [started] = await second.wait_call("TransactionEvent", eventType="Started")
    assert started["transactionInfo"]["transactionId"] == transaction
    assert second.violations == []
