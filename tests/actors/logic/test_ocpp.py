"""OCPP 2.0.1, sans-IO: frames, meter values, transactions and profiles, each checked on its
own (the gateway's tests run them against real chargers)."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from actors.logic.ocpp import rpc
from actors.logic.ocpp.meters import read
from actors.logic.ocpp.profiles import availability, limit_profile, set_charging_profile
from actors.logic.ocpp.transactions import KEPT_RECORDS, apply_event, record_key
from actors.station.ocpp import schemas
from object_model.pebc import EnvelopeElement, PowerRangeEnvelope
from object_model.station import new_station_tree
from object_model.tree import ObjectTree, Write

T0 = datetime(2026, 12, 5, 10, 0, tzinfo=UTC)
US = 1_000_000


def stamp(moment: datetime) -> str:
    return moment.isoformat().replace("+00:00", "Z")


def event(kind: str, minutes: float, register_wh: float | None, *, tx: str = "tx-1",
          seq_no: int = 0, context: str = "Sample.Periodic", evse: int | None = 1,
          offline: bool = False, state: str | None = "Charging") -> dict[str, Any]:
    at = stamp(T0 + timedelta(minutes=minutes))
    info: dict[str, Any] = {"transactionId": tx}
    if state is not None:
        info["chargingState"] = state
    payload: dict[str, Any] = {"eventType": kind, "timestamp": at,
                               "triggerReason": "MeterValuePeriodic", "seqNo": seq_no,
                               "transactionInfo": info}
    if register_wh is not None:
        payload["meterValue"] = [{"timestamp": at, "sampledValue": [
            {"value": register_wh, "context": context}]}]
    if evse is not None:
        payload["evse"] = {"id": evse, "connectorId": 1}
    if offline:
        payload["offline"] = True
    schemas.check("TransactionEvent", "Request", payload)
    return payload


def charger_tree() -> ObjectTree:
    tree = new_station_tree("ocpp-1", evse_count=2)
    tree.apply([Write(f"evse/{e}/meter/obis:1-0:1.8.0", 0.0) for e in (1, 2)])
    return tree


NOW_US = int((T0 + timedelta(days=1)).timestamp() * US)


def apply(tree: ObjectTree, payload: dict[str, Any], now_us: int = NOW_US) -> bool:
    applied = apply_event(tree, payload, now_us)
    if applied.ops:
        tree.apply(applied.ops)
    return not applied.repeat


def record(tree: ObjectTree, tx: str = "tx-1") -> dict[str, Any]:
    return dict(tree.read(f"transactions/{record_key(tx)}"))


def test_frames_parse_and_refuse_with_the_code_to_answer() -> None:
    assert rpc.parse('[2,"a","Heartbeat",{}]') == rpc.Call("a", "Heartbeat", {})
    assert rpc.parse('[3,"a",{"x":1}]') == rpc.CallResult("a", {"x": 1})
    assert rpc.parse('[4,"a","GenericError","",{}]') == rpc.CallError("a", "GenericError")
    for text, code, message_id in (("nope", rpc.RPC_FRAMEWORK_ERROR, None),
                                   ('{"a": 1}', rpc.RPC_FRAMEWORK_ERROR, None),
                                   ('[2, 7, "Heartbeat", {}]', rpc.RPC_FRAMEWORK_ERROR, None),
                                   ('[2, "' + "x" * 37 + '", "Heartbeat", {}]',
                                    rpc.RPC_FRAMEWORK_ERROR, None),
                                   ('[2, "a", "Heartbeat"]', rpc.RPC_FRAMEWORK_ERROR, "a"),
                                   ('[5, "a", {}]', rpc.MESSAGE_TYPE_NOT_SUPPORTED, "a"),
                                   ("[" * 100_000, rpc.RPC_FRAMEWORK_ERROR, None)):
        with pytest.raises(rpc.RpcError) as info:
            rpc.parse(text)
        assert (info.value.code, info.value.message_id) == (code, message_id)
        assert json.loads(rpc.encode(info.value.answer()))[:3] == [4, message_id or "-1", code]
        assert info.value.answered
    for text in ('[3, "a"]', '[4, "a", "GenericError", {}]'):  # a malformed answer of theirs
        with pytest.raises(rpc.RpcError) as info:
            rpc.parse(text)
        assert not info.value.answered and info.value.message_id == "a"  # never answered


def test_meter_values_in_the_trees_units_whatever_the_charger_reports() -> None:
    [reading] = read([{"timestamp": stamp(T0), "sampledValue": [
        {"value": 12.5, "unitOfMeasure": {"unit": "kWh"}},
        {"value": 7.4, "measurand": "Power.Active.Import", "unitOfMeasure": {
            "unit": "W", "multiplier": 3}},
        {"value": 230.1, "measurand": "Voltage", "phase": "L1-N"},
        {"value": 99.0, "measurand": "Power.Active.Import", "location": "Inlet"}]}])
    assert reading.energy_wh == 12_500.0 and reading.power_w == 7_400.0
    assert reading.registers["obis:1-0:32.7.0"] == 230.1
    # per phase only: summed; a total, when there is one, wins
    [phases] = read([{"timestamp": stamp(T0), "sampledValue": [
        {"value": v, "phase": p} for v, p in ((100.0, "L1"), (200.0, "L2"), (300.0, "L3"))]}])
    assert phases.energy_wh == 600.0


def test_a_transaction_counts_from_its_begin_register_and_repeats_change_nothing() -> None:
    tree = charger_tree()
    assert apply(tree, event("Started", 0, 1_000.0, context="Transaction.Begin"))
    assert apply(tree, event("Updated", 10, 2_000.0))
    assert not apply(tree, event("Updated", 10, 2_000.0))  # the same, sent again
    assert apply(tree, event("Updated", 20, 3_000.0))  # seqNo 0 again: a new event still
    assert apply(tree, event("Ended", 30, 3_500.0, context="Transaction.End", state=None))
    assert not apply(tree, event("Updated", 40, 9_000.0))  # stamped after its end: ignored
    assert not apply(tree, event("Ended", 45, 9_000.0, state=None))  # a second end too
    got = record(tree)
    assert got["energy_wh"] == 2_500.0 and got["state"] == "Finished"
    assert got["events"] == 4 and got["baseline_wh"] == 1_000.0
    assert tree.get("evse/1/session/energy_wh") == 2_500.0
    assert tree.get("evse/1/session/state") == "Finished"


def test_a_replay_out_of_order_never_moves_live_state_backwards() -> None:
    tree = charger_tree()
    apply(tree, event("Started", 0, 1_000.0, context="Transaction.Begin"))
    apply(tree, event("Updated", 20, 3_000.0))
    apply(tree, event("Updated", 10, 2_000.0, offline=True))  # late: into the record only
    assert tree.get("evse/1/meter/obis:1-0:1.8.0") == 3_000.0
    assert record(tree)["energy_wh"] == 2_000.0
    assert record(tree)["offline_events"] == 1
    # a later transaction shows; an older one replayed does not take the EVSE back
    apply(tree, event("Started", 60, 5_000.0, tx="tx-2", context="Transaction.Begin"))
    apply(tree, event("Updated", 25, 3_100.0, tx="tx-1", offline=True))
    assert tree.get("evse/1/session/session_id") == "tx-2"
    assert record(tree, "tx-1")["energy_wh"] == 2_100.0


def test_an_implausible_begin_register_is_not_the_baseline() -> None:
    """Begin = 0 while the meter shows 910 kWh ten minutes later: a 22 kW EVSE cannot have
    delivered that; the lowest register the transaction reported is the baseline."""
    tree = charger_tree()
    apply(tree, event("Started", 0, 0.0, context="Transaction.Begin", offline=True))
    apply(tree, event("Updated", 10, 910_031.0, offline=True))
    apply(tree, event("Ended", 20, 912_031.0, context="Transaction.End", offline=True,
                      state=None))
    got = record(tree)
    assert got["begin_refused"] is True and got["baseline_wh"] == 910_031.0
    assert got["energy_wh"] == 2_000.0
    # energy never decreases, even if a register goes backwards
    tree2 = charger_tree()
    apply(tree2, event("Started", 0, 100.0, context="Transaction.Begin"))
    apply(tree2, event("Updated", 10, 1_100.0))
    apply(tree2, event("Updated", 20, 600.0))
    assert record(tree2)["energy_wh"] == 1_000.0


def test_finished_records_are_bounded() -> None:
    tree = charger_tree()
    for i in range(KEPT_RECORDS + 5):
        apply(tree, event("Started", i, 0.0, tx=f"tx-{i}", context="Transaction.Begin"))
        apply(tree, event("Ended", i + 0.5, 10.0, tx=f"tx-{i}", state=None))
    assert KEPT_RECORDS <= len(tree.read("transactions")) <= KEPT_RECORDS + 1
    assert f"transactions/{record_key('tx-0')}" not in tree


def test_an_envelope_as_a_profile_never_exceeds_a_limit() -> None:
    start = int(T0.timestamp() * US)
    envelope = PowerRangeEnvelope(end_us=start + 4 * 3_600 * US, elements=[
        EnvelopeElement(start_us=start + i * 900 * US, lower_w=1_000, upper_w=upper)
        for i, upper in enumerate((11_000, 9_000, 4_000, 7_000, 2_000, 8_000))])
    request = set_charging_profile(envelope, 2, max_periods=4)
    schemas.check("SetChargingProfile", "Request", request)
    profile = request["chargingProfile"]
    assert (profile["id"], profile["stackLevel"], request["evseId"]) == (202, 1, 2)
    periods = profile["chargingSchedule"][0]["chargingSchedulePeriod"]
    # three as they are, then one tail at the lowest limit of the rest
    assert [(p["startPeriod"], p["limit"]) for p in periods] == [
        (0, 11_000.0), (900, 9_000.0), (1_800, 4_000.0), (2_700, 2_000.0)]
    amps = set_charging_profile(envelope, 1, amperes=True, phases=3)
    schemas.check("SetChargingProfile", "Request", amps)
    first = amps["chargingProfile"]["chargingSchedule"][0]["chargingSchedulePeriod"][0]
    assert first == {"startPeriod": 0, "limit": round(11_000 / 690, 1), "numberPhases": 3}


def test_standing_limits_and_availability_fit_their_schemas() -> None:
    evse = limit_profile(2, 11_000.0)
    station = limit_profile(0, 40_000.0, amperes=True, phases=3)
    for request in (evse, station):
        schemas.check("SetChargingProfile", "Request", request)
    assert (evse["chargingProfile"]["id"], evse["chargingProfile"]["stackLevel"]) == (102, 0)
    assert station["chargingProfile"]["chargingProfilePurpose"] == "ChargingStationMaxProfile"
    for request in (availability(1, False), availability(0, True)):
        schemas.check("ChangeAvailability", "Request", request)


def test_late_reused_far_future_and_out_of_range_events_as_the_review_found_them() -> None:
    """Cases an attacking review found: each loses, doubles or mis-bills nothing now."""
    # an Updated replayed before its Started (Begin = 0 on a 910 kWh meter): not billed
    tree = charger_tree()
    apply(tree, event("Updated", 10, 910_031.0, offline=True))
    apply(tree, event("Started", 0, 0.0, context="Transaction.Begin", offline=True))
    apply(tree, event("Ended", 20, 912_031.0, context="Transaction.End", state=None))
    assert record(tree)["energy_wh"] == 2_000.0
    # an Ended before its Started: the Started's token and EVSE still reach the record
    tree = charger_tree()
    apply(tree, event("Ended", 30, 3_000.0, evse=None, state=None))
    started = event("Started", 0, 1_000.0, context="Transaction.Begin")
    started["idToken"] = {"idToken": "RFID-9", "type": "ISO14443"}
    apply(tree, started)
    got = record(tree)
    assert (got["energy_wh"], got["evse"], got["id_token"]) == (2_000.0, 1, "RFID-9")
    # an id used again after a reboot: a second transaction, the first one kept
    tree = charger_tree()
    apply(tree, event("Started", 0, 1_000.0, context="Transaction.Begin", tx="1"))
    apply(tree, event("Ended", 10, 2_000.0, tx="1", state=None))
    assert apply(tree, event("Started", 60, 5_000.0, context="Transaction.Begin", tx="1"))
    apply(tree, event("Ended", 70, 5_500.0, tx="1", state=None))
    energies = sorted(r["energy_wh"] for r in tree.read("transactions").values())
    assert energies == [500.0, 1_000.0]
    # a charger's clock in 2099 does not freeze the EVSE: taken as the gateway's time
    tree = charger_tree()
    now = int((T0 + timedelta(minutes=5)).timestamp() * US)
    future = event("Started", 0, 1_000.0, context="Transaction.Begin", tx="X")
    future["timestamp"] = "2099-01-01T00:00:00Z"
    apply(tree, future, now)
    apply(tree, event("Ended", 6, 1_500.0, tx="X", state=None), now + 60 * US)
    assert tree.get("evse/1/session/state") == "Finished"
    tree = charger_tree()  # one sample from 2099 in the middle: the end still counts
    apply(tree, event("Started", 0, 1_000.0, context="Transaction.Begin", tx="Y"), now)
    wild = event("Updated", 2, 1_500.0, tx="Y")
    wild["meterValue"][0]["timestamp"] = "2099-01-01T00:00:00Z"
    apply(tree, wild, now)
    apply(tree, event("Ended", 30, 5_000.0, tx="Y", state=None), now + 1_800 * US)
    assert record(tree, "Y")["energy_wh"] == 4_000.0
    # what the tree cannot hold is left out, and the event still taken
    tree = charger_tree()
    odd = event("Started", 0, -5.0, context="Transaction.Begin", evse=999)
    odd["seqNo"] = 2**40
    assert apply(tree, odd) and record(tree)["evse"] == 0


def test_open_records_never_fill_the_collection() -> None:
    """Transactions whose Ended was lost: a new one on the same EVSE closes the older, and a
    charger with 64 open ones on EVSEs it never reuses still starts a 65th."""
    tree = charger_tree()
    for i in range(80):
        apply(tree, event("Started", i, 0.0, tx=f"lost-{i}", context="Transaction.Begin",
                          evse=1 + i % 2))
    records = tree.read("transactions").values()
    assert len(records) <= 64
    assert sum(r["state"] != "Finished" for r in records) == 2  # the last one per EVSE
    assert {r.get("stopped_reason") for r in records if r["state"] == "Finished"} == {
        "Superseded"}


def test_a_new_transaction_does_not_inherit_the_last_ev_s_departure_or_charge() -> None:
    """Found attacking the gateway: the departure time (and state of charge) the last EV
    gave stayed on the EVSE through the next EV's session."""
    tree = charger_tree()
    assert apply(tree, event("Started", 0, 1_000.0, context="Transaction.Begin"))
    tree.apply([Write("evse/1/session/departure_at", NOW_US + 3_600_000_000),
                Write("evse/1/session/soc_percent", 80.0)])
    assert apply(tree, event("Ended", 30, 3_500.0, context="Transaction.End", state=None))
    assert apply(tree, event("Started", 40, 3_500.0, tx="tx-2", context="Transaction.Begin"))
    for name in ("departure_at", "soc_percent", "ended_at"):
        assert not tree.is_leaf(f"evse/1/session/{name}"), name
    assert tree.get("evse/1/session/session_id") == "tx-2"
