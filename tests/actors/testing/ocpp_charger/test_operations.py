"""The simulated charger's remote operations against an independent CSMS: UpdateFirmware
(from a small HTTP server), Reset, RequestStart/StopTransaction, NotifyEVChargingNeeds."""

from __future__ import annotations

import hashlib
import threading
from collections.abc import Iterator
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from ocpp.v201 import call

from actors.testing import FakeClock
from tests.actors.testing.ocpp_charger.conftest import advance_until, charger_of, running
from tests.actors.testing.ocpp_charger.csms import Csms

IMAGES = {"/fw-2.3.4.bin": b"FW:2.3.4\n" + bytes(range(256)) * 8,
          "/anonymous.bin": b"\x7fELF an image without a header"}


class _Images(BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        image = IMAGES.get(self.path)
        if image is None:
            self.send_error(404)
            return
        self.send_response(200)
        self.send_header("Content-Length", str(len(image)))
        self.end_headers()
        self.wfile.write(image)

    def log_message(self, *_: object) -> None:
        pass


@pytest.fixture
def images() -> Iterator[str]:
    """The base URL of an HTTP server of ``IMAGES`` (404 for anything else)."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Images)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()
    thread.join()


def _update(request_id: int, location: str, clock: FakeClock) -> call.UpdateFirmware:
    now = datetime.fromtimestamp(clock.now_us() / 1e6, tz=UTC)
    return call.UpdateFirmware(request_id=request_id, firmware={
        "location": location, "retrieve_date_time": now.isoformat()})


def _statuses(csms: Csms, request_id: int) -> list[str]:
    return [p["status"] for p in csms.calls("FirmwareStatusNotification")
            if p.get("requestId") == request_id]


async def test_an_update_downloads_installs_reboots_into_the_new_version(
        csms: Csms, clock: FakeClock, images: str) -> None:
    async with running(charger_of(csms, clock, plugged=0)) as charger:
        await csms.wait_call("StatusNotification", 2)
        answer = await csms.call(_update(5, f"{images}/fw-2.3.4.bin", clock))
        assert answer.status == "Accepted"
        await csms.wait_call("FirmwareStatusNotification", status="Installed")
        assert csms.calls("FirmwareStatusNotification", connection=2) == [
            {"status": "Installed", "requestId": 5}]
        boots = csms.calls("BootNotification", connection=2)
        assert [(b["reason"], b["chargingStation"]["firmwareVersion"]) for b in boots] == [
            ("FirmwareUpdate", "2.3.4")]
        assert charger.firmware_version == "2.3.4"
        assert charger.firmware_sha256 == hashlib.sha256(IMAGES["/fw-2.3.4.bin"]).hexdigest()
        # an image without a header is named by its digest
        await csms.call(_update(6, f"{images}/anonymous.bin", clock))
        await csms.wait_call("FirmwareStatusNotification", requestId=6, status="Installed")
        digest = hashlib.sha256(IMAGES["/anonymous.bin"]).hexdigest()
        assert charger.firmware_version == f"sha-{digest[:8]}"
        assert csms.calls("BootNotification", connection=3)[0]["chargingStation"][
            "firmwareVersion"] == f"sha-{digest[:8]}"
    assert _statuses(csms, 5) == ["Downloading", "Downloaded", "Installing",
                                  "InstallRebooting", "Installed"]
    assert charger.boot_reasons == ["PowerUp", "FirmwareUpdate", "FirmwareUpdate"]
    assert csms.violations == []


async def test_an_update_that_cannot_be_fetched_fails_and_the_charger_stays_up(
        csms: Csms, clock: FakeClock, images: str) -> None:
    async with running(charger_of(csms, clock, plugged=0)) as charger:
        await csms.wait_call("StatusNotification", 2)
        answer = await csms.call(_update(9, f"{images}/missing.bin", clock))
        assert answer.status == "Accepted"
        await csms.wait_call("FirmwareStatusNotification", status="DownloadFailed")
        answer = await csms.call(_update(10, "file:///etc/passwd", clock))
        assert answer.status == "Accepted"
        await csms.wait_call("FirmwareStatusNotification", requestId=10,
                             status="DownloadFailed")
        answer = await csms.call(call.TriggerMessage(
            requested_message="FirmwareStatusNotification"))
        assert answer.status == "Accepted"
        await csms.wait_call("FirmwareStatusNotification", status="Idle")
        assert charger.connections == 1 and charger.firmware_version == "1.0.0"
    assert _statuses(csms, 9) == ["Downloading", "DownloadFailed"]
    assert csms.violations == []


async def test_an_immediate_reset_ends_transactions_and_boots_with_remote_reset(
        csms: Csms, clock: FakeClock) -> None:
    async with running(charger_of(csms, clock)) as charger:
        await csms.wait_call("TransactionEvent", eventType="Started")
        assert (await csms.call(call.Reset(type="Immediate", evse_id=1))).status == "Rejected"
        assert (await csms.call(call.Reset(type="Immediate"))).status == "Accepted"
        await csms.wait_connections(2)
        await csms.wait_call("TransactionEvent", 2, eventType="Started")
        assert charger.connections == 2
    ended = csms.calls("TransactionEvent", connection=1)[-1]
    assert (ended["eventType"], ended["triggerReason"],
            ended["transactionInfo"]["stoppedReason"]) == ("Ended", "ResetCommand",
                                                           "ImmediateReset")
    assert ended["meterValue"][0]["sampledValue"][0]["context"] == "Transaction.End"
    assert [b["reason"] for b in csms.calls("BootNotification")] == ["PowerUp", "RemoteReset"]
    assert csms.violations == []


async def test_a_reset_on_idle_waits_for_the_transaction_to_end(
        csms: Csms, clock: FakeClock) -> None:
    async with running(charger_of(csms, clock)):
        started = (await csms.wait_call("TransactionEvent", eventType="Started"))[0]
        assert (await csms.call(call.Reset(type="OnIdle"))).status == "Scheduled"
        transaction = started["transactionInfo"]["transactionId"]
        answer = await csms.call(call.RequestStopTransaction(transaction_id=transaction))
        assert answer.status == "Accepted"
        await csms.wait_connections(2)
        await csms.wait_call("StatusNotification", 4)
    assert [b["reason"] for b in csms.calls("BootNotification")] == ["PowerUp", "RemoteReset"]
    assert csms.violations == []


async def test_remote_start_and_stop_and_the_transaction_events_they_cause(
        csms: Csms, clock: FakeClock) -> None:
    token = {"id_token": "CAFE0001", "type": "ISO14443"}
    async with running(charger_of(csms, clock, autostart=False, plugged=0,
                                  ev_energy_wh=30_000, ev_departure_s=7_200)) as charger:
        await csms.wait_call("StatusNotification", 2)
        assert csms.calls("TransactionEvent") == []
        answer = await csms.call(call.RequestStartTransaction(id_token=token,
                                                              remote_start_id=41))
        assert answer.status == "Rejected"  # no EV plugged in anywhere
        charger.plug(1, 7_000)
        await csms.wait_call("StatusNotification", evseId=1, connectorStatus="Occupied")
        assert csms.calls("TransactionEvent") == []  # no autostart
        answer = await csms.call(call.RequestStartTransaction(id_token=token,
                                                              remote_start_id=42))
        assert answer.status == "Accepted"
        transaction = answer.transaction_id
        started = (await csms.wait_call("TransactionEvent", eventType="Started"))[0]
        assert started["triggerReason"] == "RemoteStart"
        assert started["transactionInfo"] == {"transactionId": transaction,
                                              "chargingState": "Charging",
                                              "remoteStartId": 42}
        assert started["idToken"] == {"idToken": "CAFE0001", "type": "ISO14443"}
        assert started["evse"] == {"id": 1, "connectorId": 1}
        assert started["meterValue"][0]["sampledValue"][1]["value"] == 7_000
        needs = (await csms.wait_call("NotifyEVChargingNeeds"))[0]
        assert needs["evseId"] == 1 and needs["chargingNeeds"]["requestedEnergyTransfer"] == \
            "AC_three_phase"
        assert needs["chargingNeeds"]["acChargingParameters"] == {
            "energyAmount": 30_000, "evMinCurrent": 6, "evMaxCurrent": 11,
            "evMaxVoltage": 400}
        assert "departureTime" in needs["chargingNeeds"]
        assert charger.charging_needs == {1: "Accepted"}
        answer = await csms.call(call.RequestStartTransaction(id_token=token,
                                                              remote_start_id=43, evse_id=1))
        assert answer.status == "Rejected"  # it has one
        answer = await csms.call(call.RequestStopTransaction(transaction_id="no-such"))
        assert answer.status == "Rejected"
        answer = await csms.call(call.RequestStopTransaction(transaction_id=transaction))
        assert answer.status == "Accepted"
        ended = (await csms.wait_call("TransactionEvent", eventType="Ended"))[0]
        assert charger.evses[1].transaction is None
        # a remote start with no EV waits EVConnectionTimeOut for one
        answer = await csms.call(call.RequestStartTransaction(id_token=token,
                                                              remote_start_id=44, evse_id=2))
        assert answer.status == "Accepted"
        waiting = (await csms.wait_call("TransactionEvent", 2, eventType="Started"))[1]
        assert waiting["transactionInfo"]["chargingState"] == "Idle"
        await advance_until(clock, 60, lambda: len([
            p for p in csms.calls("TransactionEvent") if p["eventType"] == "Ended"]) == 2,
            "the remote start timing out")
    assert (ended["triggerReason"], ended["transactionInfo"]["stoppedReason"],
            ended["transactionInfo"]["transactionId"]) == ("RemoteStop", "Remote", transaction)
    assert ended["seqNo"] == 1
    assert {s["context"] for s in ended["meterValue"][0]["sampledValue"]} == {
        "Transaction.End"}
    timed_out = csms.calls("TransactionEvent")[-1]
    assert (timed_out["triggerReason"], timed_out["transactionInfo"]["stoppedReason"]) == (
        "EVConnectTimeout", "Timeout")
    assert csms.violations == []


async def test_an_ev_leaving_ends_its_transaction(csms: Csms, clock: FakeClock) -> None:
    async with running(charger_of(csms, clock)) as charger:
        await csms.wait_call("TransactionEvent", eventType="Started")
        charger.unplug(1)
        ended = (await csms.wait_call("TransactionEvent", eventType="Ended"))[0]
        await csms.wait_call("StatusNotification", evseId=1, connectorStatus="Available")
        charger.plug(2)  # autostart: it starts at once
        started = (await csms.wait_call("TransactionEvent", 2, eventType="Started"))[1]
    assert (ended["triggerReason"], ended["transactionInfo"]["stoppedReason"],
            ended["transactionInfo"]["chargingState"]) == ("EVCommunicationLost",
                                                           "EVDisconnected", "Idle")
    assert (started["triggerReason"], started["evse"]["id"]) == ("CablePluggedIn", 2)
    assert csms.violations == []
