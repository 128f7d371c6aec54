"""``OcppCharger`` and its link without a broker or a socket: a charger of the test's own over
an in-memory connection, to see what a hostile or broken charger can make the gateway do (the
whole path with real chargers: tests/integration/test_ocpp_gateway.py and
test_ocpp_operations.py)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator

import pytest

from actors.logic.ocpp import device_model as dm
from actors.station.ocpp import device_model as onboarding
from actors.station.ocpp.link import OcppLink
from actors.testing import until
from object_model import ErrorCode, ModelError
from object_model.monitoring import MonitoringTaskSetup
from object_model.operations import OperationKind, RemoteOperation
from object_model.tree import Delete
from tests.actors.station.ocpp_peer import Peer, attached

STAMP = "2025-06-01T12:00:00Z"


@pytest.fixture
async def peer() -> AsyncIterator[Peer]:
    charger, _ = attached(onboarding=True)
    peer = Peer(charger)
    peer.connect()
    try:
        yield peer
    finally:
        with contextlib.suppress(Exception):
            await peer.disconnect()
        await charger.link.stop()


@pytest.mark.parametrize("answered", [True, False])
async def test_a_report_that_never_comes_does_not_keep_the_charger_pending(
        peer: Peer, monkeypatch: pytest.MonkeyPatch, answered: bool) -> None:
    """A charger that answers GetBaseReport Accepted and sends no page, or does not answer
    it at all: after the report's time it is accepted with what came (its boots were
    Pending for good, each asking for the inventory again)."""
    monkeypatch.setattr(onboarding, "REPORT_TIMEOUT_S", 0.05)
    monkeypatch.setattr(OcppLink.call, "__defaults__", (0.05,))  # the call's timeout
    assert (await peer.boot())["status"] == "Pending"
    asked = await peer.expect_call("GetBaseReport")
    if answered:
        peer.send([3, asked[1], {"status": "Accepted"}])
    trigger = await peer.expect_call("TriggerMessage")
    assert trigger[3] == {"requestedMessage": "BootNotification"}
    peer.send([3, trigger[1], {"status": "Accepted"}])
    assert (await peer.boot())["status"] == "Accepted"
    assert peer.gateway.registration == "Accepted"
    assert [call[2] for call in peer.calls] == ["GetBaseReport", "TriggerMessage"]


async def test_statuses_of_connectors_it_does_not_have_are_not_remembered() -> None:
    """Each (evse, connector) a StatusNotification named was remembered, whether the charger
    has it or not: one charger could grow the gateway's memory without end."""
    charger, tree = attached()
    peer = Peer(charger)
    peer.connect()
    try:
        assert (await peer.boot())["status"] == "Accepted"
        for evse in range(1, 200):
            answer = await peer.call("StatusNotification", {
                "timestamp": STAMP, "connectorStatus": "Occupied", "evseId": evse,
                "connectorId": evse * 7})
            assert answer[0] == 3
        assert set(charger.status_at) <= {(1, 1), (2, 1)}
        await peer.call("StatusNotification", {"timestamp": STAMP, "connectorStatus": "Faulted",
                                               "evseId": 1, "connectorId": 1})
        assert tree.get("evse/1/connector/1/status") == "Faulted"
        assert set(charger.status_at) == {(1, 1)}
    finally:
        await peer.disconnect()


async def test_reconnects_without_a_call_ask_for_the_monitors_once() -> None:
    """Each connection queued the monitors of every monitoring task again, to be asked after
    the charger's next call: a charger that connected a thousand times without one had a
    thousand requests queued in the gateway's memory, then sent to it one after another."""
    charger, tree = attached()
    power = {"component": {"name": "EVSE", "evse": {"id": 1}}, "variable": {"name": "Power"},
             "variableAttribute": [{"value": "0", "mutability": "ReadOnly"}],
             "variableCharacteristics": {"dataType": "decimal", "supportsMonitoring": True}}
    enabled = {"component": {"name": "MonitoringCtrlr"}, "variable": {"name": "Enabled"},
               "variableAttribute": [{"value": "true"}]}
    tree.apply(dm.report_ops(tree, [power, enabled], 1).ops)
    tree.apply(dm.capabilities(tree))
    peer = Peer(charger)
    peer.connect()
    setup = MonitoringTaskSetup(task="m1", selectors=["ocpp:dm/*/Power/actual/value"],
                                trigger={"kind": "on_change"})
    watching = asyncio.create_task(charger.watch("m1", setup))
    asked = await peer.expect_call("SetVariableMonitoring")
    peer.send([3, asked[1], {"setMonitoringResult": [{
        "id": 7, "status": "Accepted", "type": "Delta", "severity": 4,
        "component": power["component"], "variable": power["variable"]}]}])
    assert "monitors 1 of 1" in await watching
    for _ in range(5):
        await peer.disconnect()
        peer.connect()
    try:
        assert (await peer.boot())["status"] == "Accepted"
        again = await peer.expect_call("SetVariableMonitoring")
        peer.send([3, again[1], {"setMonitoringResult": [{
            "id": 7, "status": "Duplicate", "type": "Delta", "severity": 4,
            "component": power["component"], "variable": power["variable"]}]}])
        await peer.call("Heartbeat", {})
        await until(lambda: not charger.link._followers, "what followed the answers done")
        assert peer.wire.out.empty() and not charger.link._after  # nothing more to ask
        assert [call[2] for call in peer.calls] == ["SetVariableMonitoring"] * 2
    finally:
        await peer.disconnect()
        await charger.link.stop()


async def test_a_charger_s_message_ids_and_errors_forge_no_log_line(
        caplog: pytest.LogCaptureFixture) -> None:
    """An answer to no call of ours was logged with its id as sent (36 characters of the
    charger's choosing), and a CALLERROR's code and description became the error of the
    write or task, and its log line, as they were: a newline forged a line."""
    charger, _ = attached()
    peer = Peer(charger)
    peer.connect()
    forged = "\n2026-01-01 WARNING forged\x1b[2J"
    try:
        with caplog.at_level(logging.INFO, logger="csms.ocpp"):
            peer.send([3, "x" + forged[:30], {}])
            peer.send([4, "y" + forged[:30], "NotSupported", forged, {}])
            calling = asyncio.create_task(charger.link.call("ClearCache", {}))
            asked = await peer.expect_call("ClearCache")
            peer.send([4, asked[1], "Generic\nError", "no" + forged, {}])
            with pytest.raises(ModelError) as refused:
                await calling
        assert "forged" in refused.value.text
        assert not any(ch in refused.value.text for ch in "\n\x1b")
        lines = [record.getMessage() for record in caplog.records]
        assert sum("an answer to no call" in line for line in lines) == 2
        assert not any(ch in line for line in lines for ch in "\n\x1b")
    finally:
        await peer.disconnect()
        await charger.link.stop()


async def test_a_device_model_value_cannot_be_deleted_behind_the_charger_s_back() -> None:
    """Found attacking the gateway: an operator may write ``ocpp:dm/.../value``, and so
    delete it; nothing was sent to the charger and the tree lost the value it still has."""
    charger, tree = attached()
    tree.apply(dm.report_ops(tree, [{
        "component": {"name": "OCPPCommCtrlr"}, "variable": {"name": "HeartbeatInterval"},
        "variableAttribute": [{"value": "900"}]}], 1).ops)
    value = "ocpp:dm/OCPPCommCtrlr/HeartbeatInterval/actual/value"
    with pytest.raises(ModelError) as refused:
        await charger.carry_out([Delete(value)])
    assert refused.value.code is ErrorCode.INVALID_VALUE and refused.value.path == value


async def test_an_operation_on_an_evse_it_does_not_have_is_refused_before_sending() -> None:
    """Found attacking the gateway: change_availability of EVSE 100 that a charger answered
    Accepted wrote ``evse/100/permissions/may_charge``, making a phantom EVSE in the tree
    every CSMS and the site's allocation read."""
    charger, tree = attached()
    peer = Peer(charger)
    peer.connect()
    try:
        await until(lambda: charger.online, "connected")
        operating = asyncio.create_task(charger.operate(RemoteOperation(
            task="t", operation=OperationKind.CHANGE_AVAILABILITY, evse=100, operative=False)))
        await until(lambda: operating.done() or not peer.wire.out.empty(), "asked or refused")
        if not peer.wire.out.empty():  # asked: a charger that says yes to anything
            asked = await peer.expect_call("ChangeAvailability")
            peer.send([3, asked[1], {"status": "Accepted"}])
        with pytest.raises(ModelError) as refused:
            await operating
        assert refused.value.code is ErrorCode.UNKNOWN_PATH and "evse/100" not in tree
        assert not peer.calls  # nothing was sent
    finally:
        await peer.disconnect()


async def test_absurd_charging_needs_are_rejected_and_change_nothing() -> None:
    """Found attacking the gateway: an EV asking for 10^300 Wh (schema-valid) had the charger
    answered FormatViolation after the EVSE was marked as one whose EV had said its needs, so
    its assumed needs were no longer renewed; a negative voltage made its most power 0."""
    charger, tree = attached()
    peer = Peer(charger)
    peer.connect()

    def needs(**ac: int) -> dict[str, object]:
        return {"evseId": 1, "chargingNeeds": {
            "requestedEnergyTransfer": "AC_three_phase", "departureTime": "2025-06-01T20:00:00Z",
            "acChargingParameters": {"energyAmount": 20_000, "evMinCurrent": 6,
                                     "evMaxCurrent": 16, "evMaxVoltage": 400, **ac}}}

    try:
        assert (await peer.boot())["status"] == "Accepted"
        started = await peer.call("TransactionEvent", {
            "eventType": "Started", "timestamp": STAMP, "triggerReason": "Authorized",
            "seqNo": 0, "transactionInfo": {"transactionId": "tx-1", "chargingState": "Charging"},
            "evse": {"id": 1, "connectorId": 1}})
        assert started[0] == 3
        assumed = tree.read("evse/1/energy/energy_constraints")
        constraints = tree.read("evse/1/energy/power_constraints")
        for absurd in ({"energyAmount": 10**300}, {"evMaxVoltage": -400},
                       {"evMaxCurrent": -16}):
            answer = await peer.call("NotifyEVChargingNeeds", needs(**absurd))
            assert answer[:3] == [3, answer[1], {"status": "Rejected"}], absurd
        assert not charger.ev_needs
        assert tree.read("evse/1/energy/energy_constraints") == assumed
        assert tree.read("evse/1/energy/power_constraints") == constraints
        answer = await peer.call("NotifyEVChargingNeeds", needs())
        assert answer[2] == {"status": "Accepted"} and charger.ev_needs == {1}
        assert tree.read("evse/1/energy/energy_constraints")["max_wh"] == 20_000
    finally:
        await peer.disconnect()
