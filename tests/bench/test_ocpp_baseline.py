"""The OCPP 2.0.1 baseline builds schema-valid payloads that carry every leaf exactly once."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

ocpp = pytest.importorskip("ocpp")
jsonschema = pytest.importorskip("jsonschema")

from bench import ocpp_baseline as ob  # noqa: E402
from object_model import Write  # noqa: E402
from object_model.access import PropertyAccessKind  # noqa: E402
from object_model.station import new_station_tree  # noqa: E402

SCHEMAS = Path(ocpp.__file__).parent / "v201" / "schemas"
NOW = 1_750_000_000_123_000


def _checker(action: str, kind: str = "Request") -> jsonschema.Validator:
    """An independent validator: the package's schema file, draft 6, formats checked."""
    schema = json.loads((SCHEMAS / f"{action}{kind}.json").read_text(encoding="utf-8-sig"))
    checker = jsonschema.FormatChecker()
    checker.checks("date-time", raises=ValueError)(ob._RFC3339.fullmatch)
    return jsonschema.Draft6Validator(schema, format_checker=checker)


@pytest.fixture(scope="module")
def tree():
    return new_station_tree("cs-1")


def _reported(tree) -> int:
    return sum(1 for p, _, _ in tree.leaves()
               if tree.schema.resolve(p).access is not PropertyAccessKind.NONE)


def test_every_notify_report_validates_and_every_leaf_appears_once(tree) -> None:
    frames = ob.full_report_messages(tree, station_id="cs-1", now_us=NOW)
    validator = _checker("NotifyReport")
    keys = []
    for seq, frame in enumerate(frames):
        assert frame[0] == 2 and frame[2] == "NotifyReport"
        payload = frame[3]
        validator.validate(payload)
        assert payload["seqNo"] == seq
        assert payload.get("tbc", False) is (seq < len(frames) - 1)
        assert len(payload["reportData"]) <= ob.ITEMS_PER_MESSAGE
        keys += [json.dumps([d["component"], d["variable"]], sort_keys=True)
                 for d in payload["reportData"]]
    assert len({f[1] for f in frames}) == len(frames)  # unique message ids
    assert len(keys) == len(set(keys)) == _reported(tree) == len(tree)


def test_values_are_ocpp_text(tree) -> None:
    by_address = {(d["component"]["name"], d["variable"]["name"],
                   d["variable"].get("instance")): d for d in reversed(ob.report_data(tree))}
    status = by_address[("Connector", "AvailabilityState", None)]  # the first one: EVSE 1
    assert status["component"]["evse"] == {"id": 1, "connectorId": 1}
    assert status["variableAttribute"][0]["value"] == "Available"
    assert status["variableCharacteristics"]["dataType"] == "OptionList"
    energy = by_address[("FiscalMetering", "Energy.Active.Import.Register", "1-0:1.8.0")]
    assert energy["variableCharacteristics"]["unit"] == "Wh"
    lock = by_address[("ConnectorPlugRetentionLock", "Active", None)]
    assert lock["variableAttribute"][0]["value"] == "false"
    limit = by_address[("OperationalPermissions", "Power", "Maximum")]
    assert limit["variableAttribute"][0]["mutability"] == "ReadWrite"
    assert by_address[("ChargingStation", "ManufacturedAt", None)]["variableAttribute"][0][
        "value"] == "1970-01-01T00:00:00Z"
    assert ob.rfc3339(NOW) == "2025-06-15T15:06:40.123Z"


def test_write_only_leaves_are_reported_without_value() -> None:
    tree = new_station_tree("cs-1")
    tree.apply([Write("network/profiles/0/wifi_password", "s3cret")])
    data = [d for d in ob.report_data(tree) if d["variable"]["name"] == "WifiPassword"]
    assert data == [{"component": {"name": "NetworkConfiguration", "instance": "0"},
                     "variable": {"name": "WifiPassword"},
                     "variableAttribute": [{"type": "Actual", "mutability": "WriteOnly"}],
                     "variableCharacteristics": {"dataType": "string",
                                                 "supportsMonitoring": False}}]
    assert "s3cret" not in json.dumps(ob.full_report_messages(tree, station_id="cs-1"))


def test_secrets_nobody_may_access_are_not_reported() -> None:
    tree = new_station_tree("cs-1")
    tree.apply([Write("security/provisioning_secret", "hidden")])
    assert len(ob.report_data(tree)) == len(tree) - 1 == _reported(tree)


def test_whole_exchange_validates(tree) -> None:
    for _, frame in ob.full_report_exchange(tree, station_id="cs-1", now_us=NOW):
        if frame[0] == 2:
            _checker(frame[2]).validate(frame[3])
    minimal = ob.minimal_exchange(tree, station_id="cs-1", now_us=NOW)
    calls = {f[1]: f[2] for _, f in minimal if f[0] == 2}
    for _, frame in minimal:
        if frame[0] == 2:
            _checker(frame[2]).validate(frame[3])
        else:
            _checker(calls[frame[1]], "Response").validate(frame[2])
    assert [f[2] for _, f in minimal if f[0] == 2] == ["BootNotification"] + [
        "StatusNotification"] * 2


def test_invalid_payloads_fail_loudly() -> None:
    with pytest.raises(ValueError, match="NotifyReportRequest"):
        ob.validate("NotifyReport", {"requestId": 1, "generatedAt": "now", "seqNo": 0})
    with pytest.raises(ValueError, match="is too long"):
        ob.validate("NotifyEvent", {"generatedAt": "2025-01-01T00:00:00Z", "seqNo": 0,
                                    "eventData": [{"eventId": 1, "timestamp":
                                                   "2025-01-01T00:00:00Z", "trigger": "Delta",
                                                   "actualValue": "x" * 2501,
                                                   "eventNotificationType": "CustomMonitor",
                                                   "component": {"name": "EVSE"},
                                                   "variable": {"name": "Power"}}]})


@pytest.mark.parametrize("evses", [2, 3])
def test_figures_are_in_the_fact_sheets_ballpark(evses: int) -> None:
    tree = new_station_tree("cs-1", evse_count=evses)
    figures = ob.full_report_bytes(tree, "cs-1", now_us=NOW)
    assert figures["report_data"] == len(tree)
    assert figures["messages"] == -(-len(tree) // ob.ITEMS_PER_MESSAGE)
    assert 100 <= figures["json_bytes"] / figures["report_data"] <= 400  # fact sheet: ~256
    assert 0 < figures["deflated_bytes"] < figures["json_bytes"] / 5
    assert 400 < figures["minimal_bytes"] < 1500  # fact sheet: ~744 for two EVSEs
    assert figures["minimal_deflated_bytes"] < figures["minimal_bytes"]


def test_deflate_follows_rfc7692_with_context_takeover(tree) -> None:
    exchange = ob.full_report_exchange(tree, station_id="cs-1", now_us=NOW)
    sizes = ob.deflated_sizes(exchange)
    alone = [ob.deflated_sizes([pair])[0] for pair in exchange]
    assert sum(sizes) < sum(alone)  # later messages reuse the earlier ones' context


@pytest.mark.parametrize(("path", "value"), [
    ("evse/1/meter/obis:1-0:1.8.0", 1963712.5),
    ("evse/2/power_module/fan/1/temperature_sensor/1/temperature_c", 41.5),
    ("evse/1/connector/1/status", "Occupied"),
    ("enclosure/door_open", True),
])
def test_notify_event_validates_and_is_plausible(tree, path: str, value: object) -> None:
    frame = ob.notify_event_message(path, value, tree=tree, station_id="cs-1", now_us=NOW)
    _checker("NotifyEvent").validate(frame[3])
    event = frame[3]["eventData"][0]
    assert (event["component"], event["variable"]) == ob.ocpp_address(path)
    size = ob.notify_event_bytes(path, value, tree=tree, station_id="cs-1", now_us=NOW)
    assert size == len(json.dumps(frame, separators=(",", ":")).encode())
    assert 250 <= size <= 600


def test_notify_event_rejects_values_of_the_wrong_type(tree) -> None:
    with pytest.raises(Exception, match="expected"):
        ob.notify_event_bytes("evse/1/meter/obis:1-0:1.8.0", "lots", tree=tree,
                              station_id="cs-1")


def test_main_prints_json(capsys) -> None:
    ob.main(["--json"])
    figures = json.loads(capsys.readouterr().out)
    two_evse = new_station_tree("cs-1")  # one ReportData per leaf any role may see or set
    leaves = [p for p, _, _ in two_evse.leaves()
              if two_evse.schema.resolve(p).access is not PropertyAccessKind.NONE]
    assert figures["full_report_2_evse"]["report_data"] == len(leaves) > 200
    assert figures["full_report_3_evse"]["json_bytes"] > figures["full_report_2_evse"]["json_bytes"]
