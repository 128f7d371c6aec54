"""An OCPP charger's device model in the tree and remote operations as OCPP calls: the
sans-IO parts on their own (the whole path: tests/integration/test_ocpp_gateway.py)."""

from __future__ import annotations

from typing import Any

import pytest

from actors.logic.ocpp import device_model as dm
from actors.logic.ocpp.operations import call_of, judge
from keypath import KeyPath, KeyPattern
from object_model import ErrorCode, ModelError
from object_model.monitoring import MonitoringTaskSetup
from object_model.operations import OperationKind, RemoteOperation
from object_model.station import new_station_tree, ocpp_namespace
from object_model.tree import ObjectTree


def item(component: dict[str, Any], variable: str, value: str | None, *,
         mutability: str = "ReadWrite", data_type: str = "integer",
         monitoring: bool = False) -> dict[str, Any]:
    attribute: dict[str, Any] = {"type": "Actual", "mutability": mutability}
    if value is not None:
        attribute["value"] = value
    return {"component": component, "variable": {"name": variable},
            "variableAttribute": [attribute],
            "variableCharacteristics": {"dataType": data_type,
                                        "supportsMonitoring": monitoring}}


def charger_tree() -> ObjectTree:
    tree = new_station_tree("ocpp-1", evse_count=2, now_us=0)
    outcome = dm.report_ops(tree, [
        item({"name": "OCPPCommCtrlr"}, "HeartbeatInterval", "900"),
        item({"name": "SmartChargingCtrlr"}, "RateUnit", "A", mutability="ReadOnly",
             data_type="MemberList"),
        item({"name": "SmartChargingCtrlr"}, "PeriodsPerSchedule", "5", mutability="ReadOnly"),
        item({"name": "SecurityCtrlr"}, "BasicAuthPassword", "hunter2-secret",
             mutability="WriteOnly", data_type="string"),
        item({"name": "securityCTRLR", "instance": "2"}, "Identity", "x", data_type="string"),
        item({"name": "EVSE", "evse": {"id": 1}}, "Power", "7400", mutability="ReadOnly",
             data_type="decimal", monitoring=True),
        item({"name": "MonitoringCtrlr"}, "Enabled", "true", data_type="boolean"),
        {"component": {"name": "DeviceDataCtrlr"},
         "variable": {"name": "ItemsPerMessage", "instance": "SetVariables"},
         "variableAttribute": [{"value": "2", "mutability": "ReadOnly"}]},
    ], now_us=5)
    tree.apply(outcome.ops)
    tree.apply(dm.capabilities(tree))
    return tree


def test_keys_spell_a_component_and_variable_one_way_and_back() -> None:
    for component, variable in (({"name": "Connector", "evse": {"id": 1, "connectorId": 2}},
                                 {"name": "ConnectorType"}),
                                ({"name": "Odd@Name#1", "instance": "a b%"},
                                 {"name": "X", "instance": "Ünï"}),
                                ({"name": "EVSE", "evse": {"id": 3}}, {"name": "Power"})):
        key = dm.component_key(component), dm.variable_key(variable)
        assert dm.parts_of(*key) == (component, variable)
    assert dm.component_key({"name": "Connector", "evse": {"id": 1, "connectorId": 2}}) == \
        "Connector@1.2"
    with pytest.raises(ModelError) as bad:
        dm.parts_of("a#b#c", "x")
    assert bad.value.code is ErrorCode.UNKNOWN_PATH


def test_a_report_lands_in_the_tree_without_write_only_values_and_sets_capabilities() -> None:
    tree = charger_tree()
    assert tree.get("ocpp:dm/OCPPCommCtrlr/HeartbeatInterval/actual/value") == "900"
    assert tree.get("ocpp:dm/EVSE@1/Power/supports_monitoring") is True
    assert "ocpp:dm/SecurityCtrlr/BasicAuthPassword/actual/value" not in tree  # WriteOnly
    assert tree.get("ocpp:charger/rate_unit") == "A"
    assert tree.get("ocpp:charger/periods_per_schedule") == 5
    assert tree.get("ocpp:charger/items_per_set") == 2
    assert tree.get("ocpp:charger/monitoring") is True
    assert tree.get("ocpp:charger/variables") == 8
    # a full inventory without one of them: it is forgotten
    gone = dm.forgotten(tree, dm.known_variables(tree) - {("OCPPCommCtrlr", "HeartbeatInterval")})
    tree.apply(gone)
    assert "ocpp:dm/OCPPCommCtrlr/HeartbeatInterval" not in tree


def test_a_charger_that_reports_too_much_is_cut_off() -> None:
    tree = new_station_tree("ocpp-1", evse_count=1, now_us=0)
    flood = [item({"name": f"C{i // 200}"}, f"V{i % 200}", "1")
             for i in range(dm.MAX_VARIABLES + 50)]
    outcome = dm.report_ops(tree, flood, now_us=1)
    assert outcome.dropped == 50 and len(outcome.ops) == dm.MAX_VARIABLES


def test_settings_are_checked_before_anything_is_sent() -> None:
    tree = charger_tree()

    def ask(path: str, value: Any = "60") -> list[tuple[KeyPath, dict[str, Any]]]:
        return dm.settings_of(tree, [(KeyPath.parse(path), value)])

    [(_, request)] = ask("ocpp:dm/OCPPCommCtrlr/HeartbeatInterval/actual/value")
    assert request == {"attributeType": "Actual", "attributeValue": "60",
                       "component": {"name": "OCPPCommCtrlr"},
                       "variable": {"name": "HeartbeatInterval"}}
    for path, code in (("ocpp:dm/SmartChargingCtrlr/RateUnit/actual/value",
                        ErrorCode.ACCESS_DENIED),  # ReadOnly
                       ("ocpp:dm/SecurityCtrlr/BasicAuthPassword/actual/value",
                        ErrorCode.ACCESS_DENIED),  # the gateway's own
                       ("ocpp:dm/securityCTRLR#2/Identity/actual/value",
                        ErrorCode.ACCESS_DENIED),  # names are case-insensitive
                       ("ocpp:dm/OCPPCommCtrlr/Nope/actual/value", ErrorCode.UNKNOWN_PATH),
                       ("ocpp:dm/OCPPCommCtrlr/HeartbeatInterval/target/value",
                        ErrorCode.UNKNOWN_PATH)):
        with pytest.raises(ModelError) as refused:
            ask(path)
        assert refused.value.code is code, path
    with pytest.raises(ModelError) as typed:
        ask("ocpp:dm/OCPPCommCtrlr/HeartbeatInterval/actual/value", 60)
    assert typed.value.code is ErrorCode.INVALID_VALUE


def test_events_update_what_the_model_has_and_monitors_map_to_ocpp_kinds() -> None:
    tree = charger_tree()
    ops = dm.event_ops(tree, [
        {"component": {"name": "EVSE", "evse": {"id": 1}}, "variable": {"name": "Power"},
         "actualValue": "3680"},
        {"component": {"name": "Unknown"}, "variable": {"name": "X"}, "actualValue": "1"}])
    tree.apply(ops)
    assert tree.get("ocpp:dm/EVSE@1/Power/actual/value") == "3680"
    assert "ocpp:dm/Unknown" not in tree  # what it never reported stays out
    pattern = KeyPattern.parse("ocpp:dm/*/*/actual/value")
    matched = [path for path, _, _ in tree.find(pattern)]
    for trigger, expected in (({"kind": "on_change"}, [("Delta", 0.0)]),
                              ({"kind": "delta", "absolute": 500}, [("Delta", 500.0)]),
                              ({"kind": "threshold", "upper": 10_000, "lower": 100},
                               [("UpperThreshold", 10_000), ("LowerThreshold", 100)]),
                              ({"kind": "periodic", "every_s": 30}, [("Periodic", 30.0)]),
                              ({"kind": "delta", "relative": 10}, [])):
        setup = MonitoringTaskSetup(task="m", selectors=[pattern], trigger=trigger)
        asked = dm.monitor_requests(tree, setup, matched, severity=4)
        # only EVSE.Power supports monitoring
        assert [(a["type"], a["value"]) for a in asked] == expected
        assert all(a["component"] == {"name": "EVSE", "evse": {"id": 1}} for a in asked)


@pytest.mark.parametrize(("operation", "action", "request_part"), [
    (RemoteOperation(task="t", operation=OperationKind.RESET), "Reset", {"type": "OnIdle"}),
    (RemoteOperation(task="t", operation=OperationKind.RESET, immediate=True, evse=2), "Reset",
     {"type": "Immediate", "evseId": 2}),
    (RemoteOperation(task="t", operation=OperationKind.START_CHARGING, id_token="AB12", evse=1),
     "RequestStartTransaction", {"remoteStartId": 77, "evseId": 1}),
    (RemoteOperation(task="t", operation=OperationKind.STOP_CHARGING, transaction_id="tx-9"),
     "RequestStopTransaction", {"transactionId": "tx-9"}),
    (RemoteOperation(task="t", operation=OperationKind.UNLOCK_CONNECTOR, evse=1, connector=1),
     "UnlockConnector", {"evseId": 1, "connectorId": 1}),
    (RemoteOperation(task="t", operation=OperationKind.TRIGGER_MESSAGE, evse=1,
                     message="StatusNotification"), "TriggerMessage",
     {"requestedMessage": "StatusNotification", "evse": {"id": 1}}),
    (RemoteOperation(task="t", operation=OperationKind.CHANGE_AVAILABILITY, operative=False),
     "ChangeAvailability", {"operationalStatus": "Inoperative"}),
])
def test_each_operation_is_its_ocpp_call(operation: RemoteOperation, action: str,
                                         request_part: dict[str, Any]) -> None:
    got, request = call_of(operation, remote_start_id=77)
    assert got == action and request_part.items() <= request.items()


def test_answers_are_judged_and_promises_wait_for_their_effect() -> None:
    start = RemoteOperation(task="t", operation=OperationKind.START_CHARGING, id_token="AB12")
    action, request = call_of(start, remote_start_id=5)
    judged = judge(start, action, request, {"status": "Accepted", "transactionId": "tx-3"})
    assert judged.result == "Accepted (transaction tx-3)" and judged.sighting is not None
    assert judged.sighting("TransactionEvent", {"transactionInfo": {
        "transactionId": "tx-3", "remoteStartId": 4}}) is None
    assert judged.sighting("TransactionEvent", {"transactionInfo": {
        "transactionId": "tx-3", "remoteStartId": 5}}) == "started transaction tx-3"
    reset = RemoteOperation(task="t", operation=OperationKind.RESET)
    action, request = call_of(reset, remote_start_id=1)
    rebooted = judge(reset, action, request, {"status": "Scheduled"}).sighting
    assert rebooted is not None
    assert rebooted("BootNotification", {"reason": "PowerUp"}) is None
    assert rebooted("BootNotification", {"reason": "RemoteReset"}) == "rebooted (RemoteReset)"
    unlock = RemoteOperation(task="t", operation=OperationKind.UNLOCK_CONNECTOR, evse=1,
                             connector=1)
    action, request = call_of(unlock, remote_start_id=1)
    with pytest.raises(ModelError) as refused:
        judge(unlock, action, request, {"status": "OngoingAuthorizedTransaction"})
    assert refused.value.code is ErrorCode.INVALID_STATE
    assert "OngoingAuthorizedTransaction" in refused.value.text
    stop = RemoteOperation(task="t", operation=OperationKind.STOP_CHARGING, evse=1)
    with pytest.raises(ModelError) as nothing:
        call_of(stop, remote_start_id=1)  # no transaction runs there
    assert nothing.value.code is ErrorCode.INVALID_STATE


def test_what_the_tree_cannot_hold_is_left_out_and_the_rest_of_the_page_lands() -> None:
    """Found attacking the gateway: one variable whose key the tree could not take (empty,
    or 600 characters once percent-encoded) or a component of more variables than the tree
    holds had the whole page refused, so a full inventory never completed and the charger
    stayed Pending."""
    tree = new_station_tree("ocpp-1", evse_count=1, now_us=0)
    page = [item({"name": ""}, "X", "1"),
            item({"name": "é" * 50}, "X", "1"),  # 600 characters encoded
            item({"name": "%" * 50, "instance": "%%%%"}, "X", "1"),  # 163 encoded
            item({"name": "OCPPCommCtrlr"}, "HeartbeatInterval", "900"),
            *[item({"name": "Vendor"}, f"V{i}", "1")
              for i in range(ocpp_namespace.MAX_VARIABLES_PER_COMPONENT + 5)]]
    outcome = dm.report_ops(tree, page, now_us=1)
    tree.apply(outcome.ops)
    assert outcome.dropped == 3 + 5
    assert tree.get("ocpp:dm/OCPPCommCtrlr/HeartbeatInterval/actual/value") == "900"
    assert len(tree.read("ocpp:dm/Vendor")) == ocpp_namespace.MAX_VARIABLES_PER_COMPONENT
    assert len(dm.known_variables(tree)) == ocpp_namespace.MAX_VARIABLES_PER_COMPONENT + 1
    many = [item({"name": f"C{i}"}, "V", "1") for i in range(ocpp_namespace.MAX_COMPONENTS)]
    outcome = dm.report_ops(tree, many, now_us=2)
    tree.apply(outcome.ops)  # room for all but the two components held already
    assert outcome.dropped == 2 and len(tree.read("ocpp:dm")) == ocpp_namespace.MAX_COMPONENTS


def test_a_charger_s_words_in_an_answer_forge_no_log_line() -> None:
    """Found attacking the gateway: a refusal's ``additionalInfo`` (512 characters of the
    charger's choosing) went into the task's error and the station's log as it was, so a
    newline in it forged a log line (and an escape sequence reached an operator's terminal)."""
    unlock = RemoteOperation(task="t", operation=OperationKind.UNLOCK_CONNECTOR, evse=1,
                             connector=1)
    action, request = call_of(unlock, remote_start_id=1)
    with pytest.raises(ModelError) as refused:
        judge(unlock, action, request, {"status": "UnknownConnector", "statusInfo": {
            "reasonCode": "x\r\n", "additionalInfo": "no\n2026-01-01 WARNING forged\x1b[2J"}})
    assert "UnknownConnector" in refused.value.text and "forged" in refused.value.text
    assert not any(ch in refused.value.text for ch in "\r\n\x1b")
    start = RemoteOperation(task="t", operation=OperationKind.START_CHARGING, id_token="AB")
    action, request = call_of(start, remote_start_id=5)
    judged = judge(start, action, request, {"status": "Accepted", "transactionId": "t\n1"})
    assert judged.result == "Accepted (transaction t1)" and judged.sighting is not None
    assert judged.sighting("TransactionEvent", {"transactionInfo": {
        "transactionId": "t\n1", "remoteStartId": 5}}) == "started transaction t1"


@pytest.mark.parametrize("field", ["id_token", "transaction_id"])
def test_a_remote_operation_s_words_are_printable(field: str) -> None:
    """What an operator names (a token, a transaction) goes into the task's detail and the
    station's log: a control character there is refused with the request."""
    with pytest.raises(ValueError, match=field):
        RemoteOperation(task="t", operation=OperationKind.STOP_CHARGING, evse=1,
                        **{field: "tx\n2026-01-01 WARNING forged"})


def test_a_write_only_setting_is_refused_rather_than_shown_to_every_reader() -> None:
    """Found attacking the gateway: a WriteOnly attribute (a vendor's secret) written with
    ``csms set`` was sent, then stored in the tree on Accepted, where every reader of the
    station (operators, each CSMS) saw it; the model never stores WriteOnly values."""
    tree = charger_tree()
    tree.apply(dm.report_ops(tree, [item({"name": "VendorCtrlr"}, "ApiKey", None,
                                          mutability="WriteOnly", data_type="string")], 6).ops)
    with pytest.raises(ModelError) as refused:
        dm.settings_of(tree, [(KeyPath.parse("ocpp:dm/VendorCtrlr/ApiKey/actual/value"),
                               "s3cret")])
    assert refused.value.code is ErrorCode.ACCESS_DENIED and "WriteOnly" in refused.value.text
    assert dm.event_ops(tree, [{"component": {"name": "VendorCtrlr"},
                                "variable": {"name": "ApiKey"}, "actualValue": "s3cret"}]) == []
