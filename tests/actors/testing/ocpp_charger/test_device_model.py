"""The simulated charger's device model, its inventory and its monitors, as pure data."""

from __future__ import annotations

import dataclasses

import pytest

from actors.testing.ocpp_charger.device_model import (
    Attribute,
    Characteristics,
    Component,
    ComponentVariable,
    DeviceModel,
    Variable,
)
from actors.testing.ocpp_charger.inventory import Nameplate, inventory
from actors.testing.ocpp_charger.monitoring import Monitors
from tests.actors.testing.ocpp_charger.csms import schema_errors

PLATE = Nameplate(identity="CP-1", vendor="Simulated", model="Sim 22", evses=2,
                  rating_w=22_000.0)
EVSE1 = Component(name="EVSE", evse=1)


def _model() -> DeviceModel:
    return inventory(PLATE)


def test_the_inventory_reports_schema_valid_and_names_what_the_spec_asks() -> None:
    model = _model()
    report = model.report("FullInventory")
    assert report is not None and len(report) == len(model) and 30 <= len(model) <= 70
    assert schema_errors("NotifyReport", "Request", {
        "requestId": 1, "generatedAt": "2025-06-01T12:00:00.000Z", "seqNo": 0,
        "reportData": report}) == []
    assert model.value("OCPPCommCtrlr", "HeartbeatInterval") == "900"
    assert model.value("SmartChargingCtrlr", "RateUnit") == "W,A"
    assert inventory(dataclasses.replace(PLATE, amperes=True)).value(
        "SmartChargingCtrlr", "RateUnit") == "A"
    assert model.value("smartchargingctrlr", "periodsperschedule") == "24"  # any case
    summary = model.report("SummaryInventory")
    assert summary is not None and {d["variable"]["name"] for d in summary} == {
        "AvailabilityState", "Available", "Problem"}
    assert model.report("Everything") is None
    with pytest.raises(ValueError, match="twice"):
        DeviceModel([*model, next(iter(model))])


def test_get_and_set_answer_with_ocpp_statuses() -> None:
    model = _model()
    assert model.get("OCPPCommCtrlr", "Nothing").status == "UnknownVariable"
    assert model.get("NoCtrlr", "HeartbeatInterval").status == "UnknownComponent"
    assert model.get(Component(name="EVSE", evse=3), "Power").status == "UnknownComponent"
    assert model.get(EVSE1, "Power", "Target").status == "NotSupportedAttributeType"
    assert model.get(EVSE1, "Power", "MaxSet").value == "22000.0"
    assert model.get("SecurityCtrlr", "BasicAuthPassword").status == "Rejected"
    assert model.set("SecurityCtrlr", "BasicAuthPassword", "x" * 20).status == "Accepted"
    assert model.set(EVSE1, "Power", "1").reason == "ReadOnly"
    cases = [("HeartbeatInterval", "0", "ValueOutOfRange"), ("HeartbeatInterval", "1.5",
                                                             "InvalidValue"),
             ("HeartbeatInterval", "61", None)]
    for name, value, reason in cases:
        outcome = model.set("OCPPCommCtrlr", name, value)
        assert outcome.reason == reason and (outcome.status == "Accepted") == (reason is None)
    assert model.set("SmartChargingCtrlr", "Enabled", "FALSE").value == "false"
    assert model.set("SmartChargingCtrlr", "Enabled", "no").reason == "InvalidValue"
    attempts = Variable(name="NetworkProfileConnectionAttempts")
    assert model.set("OCPPCommCtrlr", attempts, "4").status == "RebootRequired"
    assert model.get("OCPPCommCtrlr", attempts).value == "4"


@pytest.mark.parametrize(("data_type", "values", "good", "bad"), [
    ("OptionList", "A,B,C", ["B"], ["A,B", "D", ""]),
    ("MemberList", "A,B,C", ["A,C", "B", ""], ["A,A", "D"]),
    ("SequenceList", "A,B,C", ["C,A"], ["C,C"]),
    ("decimal", None, ["1.5", "-2"], ["nan", "inf", "1,5"]),
    ("dateTime", None, ["2025-06-01T12:00:00Z"], ["noon"]),
    ("string", None, ["short"], ["much too long"]),
])
def test_values_are_checked_against_their_characteristics(
        data_type: str, values: str | None, good: list[str], bad: list[str]) -> None:
    traits = Characteristics(data_type=data_type, values_list=values,  # type: ignore[arg-type]
                             max_limit=10 if data_type == "string" else None)
    assert [traits.check(v)[0] is not None for v in good] == [True] * len(good)
    assert [traits.check(v)[0] for v in bad] == [None] * len(bad)


def test_get_report_selects_by_component_variable_and_criteria() -> None:
    model = _model()
    chosen = model.select([{"component": {"name": "connector"}, "variable": {
        "name": "ConnectorType"}}])
    assert [d["component"]["evse"] for d in chosen] == [{"id": 1, "connectorId": 1},
                                                        {"id": 2, "connectorId": 1}]
    assert len(model.select([{"component": {"name": "EVSE", "evse": {"id": 1}}}])) == 4
    enabled = model.select(criteria=["Enabled"])
    assert {d["component"]["name"] for d in enabled} == {
        "SmartChargingCtrlr", "SampledDataCtrlr", "MonitoringCtrlr"}
    assert model.select(criteria=["Problem"]) == []


def test_threshold_monitors_alert_and_clear_delta_and_periodic_ones_trigger() -> None:
    model = DeviceModel([ComponentVariable(
        component=EVSE1, variable=Variable(name="Power"),
        characteristics=Characteristics(data_type="decimal", supports_monitoring=True),
        attributes={"Actual": Attribute(value="0.0")})])
    monitors = Monitors(model)
    target = {"component": {"name": "EVSE", "evse": {"id": 1}}, "variable": {"name": "Power"}}
    upper = monitors.set({"type": "UpperThreshold", "value": 100, "severity": 1, **target}, 0)
    delta = monitors.set({"type": "Delta", "value": 50, "severity": 2, **target}, 0)
    periodic = monitors.set({"type": "Periodic", "value": 10, "severity": 3,
                             "transaction": True, **target}, 0)
    assert [r["status"] for r in (upper, delta, periodic)] == ["Accepted"] * 3

    def seen(value: float, now_s: float, transactions: dict[int, str] | None = None
             ) -> set[tuple[str, int, object]]:
        model.update(EVSE1, "Power", value)
        return {(e["trigger"], e["variableMonitoringId"], e.get("cleared"))
                for e in monitors.observe(now_s, "2025-06-01T12:00:00Z", transactions or {})}

    assert seen(40, 1) == set()
    assert seen(120, 2) == {("Alerting", upper["id"], False), ("Delta", delta["id"], None)}
    assert seen(130, 3) == set()
    assert seen(90, 11) == {("Alerting", upper["id"], True)}  # no transaction: no periodic
    assert seen(90, 22, {1: "t"}) == {("Periodic", periodic["id"], None)}
    assert seen(40, 23, {1: "t"}) == {("Delta", delta["id"], None)}
    replaced = monitors.set({"id": delta["id"], "type": "Delta", "value": 5, "severity": 2,
                             **target}, 30)
    assert replaced["status"] == "Accepted" and replaced["id"] == delta["id"]
    assert monitors.set({"id": 99, "type": "Delta", "value": 5, "severity": 2, **target},
                        30)["status"] == "Rejected"
    assert monitors.clear([upper["id"], upper["id"]]) == [
        {"status": "Accepted", "id": upper["id"]}, {"status": "NotFound", "id": upper["id"]}]
