"""OCPP 2.0.1 chargers join the hierarchy through the gateway, on real brokers: each is a real
OCPP-J client (the ``ocpp`` package's ``ChargePoint`` over ``websockets``) with a behaviour of
ours, and appears at its local CSMS and at the cloud as a station actor. Test-case ids of the
OCA's Part 6 are in the names where a test covers one (our reading of it)."""

from __future__ import annotations

import asyncio
import base64
import json
import ssl
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import websockets
from ocpp.exceptions import InternalError
from ocpp.routing import on
from ocpp.v201 import ChargePoint, call, call_result
from websockets.exceptions import InvalidStatus

from actors.app.config import ChargerEntry
from actors.app.hierarchy import Hierarchy
from actors.station.actor import ChargingStation
from actors.station.ocpp.charger import OcppCharger
from actors.station.ocpp.gateway import OcppGateway, server_context
from actors.testing import until
from actors.testing.clock import FakeClock
from broker_bridge.pki import CertificateAuthority
from keypath import KeyPath
from object_model import ErrorCode, ModelError
from object_model.messages import PropertyValueWrite, WriteItem
from object_model.pebc import EnvelopeElement, PowerRangeEnvelope

pytestmark = pytest.mark.broker

PASSWORD = "correct-horse-battery"
CHARGERS = ("ocpp-site1-1", "ocpp-site1-2")
US = 1_000_000


def stamp(moment: datetime) -> str:
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")


class Charger(ChargePoint):
    """A charger of ours: it answers the gateway's calls as told (``answer``) and keeps what
    it was sent."""

    def __init__(self, identity: str, connection: Any) -> None:
        super().__init__(identity, connection, response_timeout=10)
        self.profiles: list[dict[str, Any]] = []
        self.availability: list[str] = []
        self.answer = "Accepted"

    @on("SetChargingProfile")
    async def on_profile(self, evse_id: int, charging_profile: dict[str, Any],
                         **_: Any) -> call_result.SetChargingProfile:
        self.profiles.append({"evse_id": evse_id, **charging_profile})
        return call_result.SetChargingProfile(status=self.answer)

    @on("ChangeAvailability")
    async def on_availability(self, operational_status: str,
                              **_: Any) -> call_result.ChangeAvailability:
        self.availability.append(operational_status)
        return call_result.ChangeAvailability(status="Accepted")

    async def boot(self) -> Any:
        return await self.call(call.BootNotification(
            charging_station={"model": "Wallbox 22", "vendor_name": "Acme",
                              "serial_number": f"SN-{self.id}", "firmware_version": "1.2.3"},
            reason="PowerUp"))

    async def event(self, kind: str, seq_no: int, at: datetime, register_wh: float | None,
                    *, context: str = "Sample.Periodic", evse: bool = False,
                    state: str | None = "Charging", offline: bool = False,
                    transaction: str = "tx-1") -> Any:
        info: dict[str, Any] = {"transaction_id": transaction}
        if state is not None:
            info["charging_state"] = state
        if kind == "Ended":
            info["stopped_reason"] = "EVDisconnected"
        meter = None if register_wh is None else [{
            "timestamp": stamp(at), "sampled_value": [
                {"value": register_wh, "context": context,
                 "measurand": "Energy.Active.Import.Register"},
                {"value": 7_000.0 if kind != "Ended" else 0.0, "context": context,
                 "measurand": "Power.Active.Import"}]}]
        return await self.call(call.TransactionEvent(
            event_type=kind, timestamp=stamp(at), trigger_reason="MeterValuePeriodic",
            seq_no=seq_no, transaction_info=info, meter_value=meter,
            offline=offline or None,
            evse={"id": 1, "connector_id": 1} if evse else None,
            id_token={"id_token": "RFID-1", "type": "ISO14443"} if kind == "Started" else None))


def auth(identity: str, password: str = PASSWORD) -> dict[str, str]:
    token = base64.b64encode(f"{identity}:{password}".encode()).decode()
    return {"Authorization": f"Basic {token}"}


async def connect(gateway: OcppGateway, identity: str, password: str = PASSWORD,
                  subprotocols: list[str] | None = None) -> Any:
    return await websockets.connect(
        f"{gateway.url}{identity}", subprotocols=subprotocols or ["ocpp2.0.1"],  # type: ignore[arg-type]
        additional_headers=auth(identity, password), open_timeout=5)


async def start_charger(gateway: OcppGateway, identity: str
                        ) -> tuple[Charger, Any, asyncio.Task[None]]:
    connection = await connect(gateway, identity)
    charger = Charger(identity, connection)
    task = asyncio.create_task(charger.start())
    return charger, connection, task


@pytest.fixture
async def site(tmp_path: Path) -> AsyncIterator[tuple[Hierarchy, OcppGateway]]:
    h = await Hierarchy.start(tmp_path)
    try:
        await h.start_cloud()
        await h.start_site(1)
        _, gateway = await h.start_gateway(1, {identity: ChargerEntry(
            password=PASSWORD, evse_count=2, onboarding=False) for identity in CHARGERS})
        yield h, gateway
    finally:
        await h.close()


def station(h: Hierarchy, identity: str) -> ChargingStation:
    return next(s for s in h.site(1).stations if s.address == identity)


async def test_chargers_boot_charge_and_appear_at_their_csms_and_the_cloud(
        site: tuple[Hierarchy, OcppGateway]) -> None:
    h, gateway = site
    started = datetime.now(UTC) - timedelta(minutes=20)  # a charge that began before
    running = []
    for identity in CHARGERS:
        charger, connection, task = await start_charger(gateway, identity)
        running.append((charger, connection, task))
        booted = await charger.boot()
        assert booted.status == "Accepted" and booted.interval > 0
        await charger.call(call.StatusNotification(
            timestamp=stamp(started), connector_status="Occupied", evse_id=1, connector_id=1))
    charger = running[0][0]
    await charger.event("Started", 0, started, 1_000.0, context="Transaction.Begin",
                        evse=True)
    await charger.event("Updated", 1, started + timedelta(minutes=10), 2_150.0)
    one = station(h, "ocpp-site1-1")
    assert one.tree is not None
    assert one.tree.get("identity/vendor_name") == "Acme"
    assert one.tree.get("identity/serial_number") == "SN-ocpp-site1-1"
    assert one.tree.get("network/link/online") is True
    assert one.tree.get("evse/1/connector/1/status") == "Occupied"
    assert one.tree.get("evse/1/session/session_id") == "tx-1"
    assert one.tree.get("evse/1/session/energy_wh") == pytest.approx(1_150.0)
    assert one.tree.get("evse/1/status") == "Charging"
    assert one.tree.get("evse/1/meter/obis:1-0:1.8.0") == pytest.approx(2_150.0)
    assert one.tree.get("diagnostics/last_boot_reason") == "PowerUp"
    # what the charger says of its firmware and its security, in the tree
    await charger.call(call.FirmwareStatusNotification(status="SignatureVerified"))
    assert one.tree.get("firmware/update_status") == "Verifying"
    await charger.call(call.FirmwareStatusNotification(status="InvalidSignature"))
    assert one.tree.get("firmware/update_status") == "Failed"
    failed = one.tree.get("security/failed_logins")
    await charger.call(call.SecurityEventNotification(
        type="FailedToAuthenticateAtCsms", timestamp=stamp(started)))
    assert one.tree.get("security/failed_logins") == failed + 1
    await until(lambda: all(s.admitted for s in h.site(1).stations), "the chargers joined", 30)
    await until(h.cloud_consistent, "the cloud's copies equal the chargers' trees", 30,
                every=0.2)
    # a charger that goes away is offline at once, and still in the view
    await running[1][1].close()
    two = station(h, "ocpp-site1-2")
    await until(lambda: two.tree.get("network/link/online") is False, "offline", 10)
    for _, connection, task in running:
        await connection.close()
        task.cancel()


async def test_tc_a_02_03_admission_wrong_password_unknown_identity_and_subprotocol(
        site: tuple[Hierarchy, OcppGateway]) -> None:
    """An unknown identity gets 404, a wrong password or another identity's 401, a client
    without the subprotocol a handshake without it and a close (1002); nothing is created,
    and the refusals are counted."""
    h, gateway = site
    before = len(h.site(1).stations)
    for identity, password, status in (("ocpp-site1-9", PASSWORD, 404),
                                       ("ocpp-site1-1", "wrong-password-123", 401)):
        with pytest.raises(InvalidStatus) as info:
            await connect(gateway, identity, password)
        assert info.value.response.status_code == status
    token = base64.b64encode(f"ocpp-site1-2:{PASSWORD}".encode()).decode()
    with pytest.raises(InvalidStatus) as info:  # another charger's credentials
        await websockets.connect(f"{gateway.url}ocpp-site1-1", subprotocols=["ocpp2.0.1"],  # type: ignore[list-item]
                                 additional_headers={"Authorization": f"Basic {token}"})
    assert info.value.response.status_code == 401
    for offered in (None, ["ocpp1.6"]):  # handshake without a subprotocol, then closed
        other = await websockets.connect(f"{gateway.url}ocpp-site1-1", subprotocols=offered,  # type: ignore[arg-type]
                                         additional_headers=auth("ocpp-site1-1"))
        await asyncio.wait_for(other.wait_closed(), 5)
        assert other.subprotocol is None and other.close_code == 1002
    assert len(h.site(1).stations) == before
    assert gateway.refused == {404: 1, 401: 2}


async def test_bad_json_schema_violations_and_unknown_actions_keep_the_connection(
        site: tuple[Hierarchy, OcppGateway]) -> None:
    _, gateway = site
    connection = await connect(gateway, "ocpp-site1-1")
    try:
        async def ask(text: str) -> list[Any]:
            await connection.send(text)
            return json.loads(await asyncio.wait_for(connection.recv(), 5))

        assert (await ask("{not json"))[:3] == [4, "-1", "RpcFrameworkError"]
        answer = await ask(json.dumps([2, "m1", "BootNotification", {"reason": "PowerUp"}]))
        assert answer[:3] == [4, "m1", "FormatViolation"] and "chargingStation" in answer[3]
        answer = await ask(json.dumps([2, "m2", "BootNotification", {
            "reason": "powerup", "chargingStation": {"model": "m", "vendorName": "v"}}]))
        assert answer[:3] == [4, "m2", "FormatViolation"]  # enum values are case-sensitive
        assert (await ask(json.dumps([2, "m3", "FlyToTheMoon", {}])))[:3] == [
            4, "m3", "NotImplemented"]
        assert (await ask(json.dumps([2, "m4", "DataTransfer", {"vendorId": "x"}])))[:3] == [
            4, "m4", "NotSupported"]
        answer = await ask(json.dumps([2, "m5", "Heartbeat", {}]))
        assert answer[:2] == [3, "m5"] and answer[2]["currentTime"].endswith("Z")
        answer = await ask(json.dumps([2, "m6", "MeterValues", {"evseId": 1, "meterValue": [{
            "timestamp": "2026-12-05T10:00:00Z", "sampledValue": [
                {"value": 1.0, "unitOfMeasure": {"unit": "Wh", "multiplier": 400}}]}]}]))
        assert answer[:3] == [4, "m6", "FormatViolation"]  # 10^400: no value, no crash
        assert (await ask(json.dumps([2, "m7", "X" * 300, {}])))[:3] == [
            4, "m7", "NotImplemented"]
        answer = await ask(json.dumps([2, "m8", "Authorize", {
            "idToken": {"idToken": "RFID-1", "type": "ISO14443"}}]))
        assert answer == [3, "m8", {"idTokenInfo": {"status": "Accepted"}}]
    finally:
        await connection.close()


async def test_an_envelope_becomes_a_charging_profile_answered_by_the_charger(
        site: tuple[Hierarchy, OcppGateway]) -> None:
    """A write of an EVSE's envelope is answered only once the charger answered its
    SetChargingProfile: Accepted, the envelope and its limit stand; Rejected, nothing changes
    and the writer hears why; offline, refused at once."""
    h, gateway = site
    charger, connection, task = await start_charger(gateway, "ocpp-site1-1")
    try:
        await charger.boot()
        one = station(h, "ocpp-site1-1")
        await until(lambda: one.admitted, "joined", 30)
        local = h.site(1).local_csms  # the site's energy manager writes envelopes
        now = datetime.now(UTC)
        start_us = int(now.timestamp() * US)
        envelope = PowerRangeEnvelope(end_us=start_us + 3_600 * US, elements=[
            EnvelopeElement(start_us=start_us, lower_w=0, upper_w=7_400),
            EnvelopeElement(start_us=start_us + 900 * US, lower_w=0, upper_w=4_600)])
        write = PropertyValueWrite(writes=[WriteItem(
            path=KeyPath.parse("evse/1/energy/envelope"), value=envelope.model_dump())])
        await local.request("ocpp-site1-1", write, timeout=10)
        [profile] = charger.profiles
        assert profile["evse_id"] == 1 and profile["id"] == 201
        assert profile["charging_profile_purpose"] == "TxDefaultProfile"
        periods = profile["charging_schedule"][0]["charging_schedule_period"]
        assert [(p["start_period"], p["limit"]) for p in periods] == [(0, 7400.0),
                                                                      (900, 4600.0)]
        assert one.tree is not None and one.tree.get("evse/1/energy/limit_w") == 7_400.0
        # a lower limit OCPP cannot carry, or an upper one in the on/off gap: refused by the
        # station before anything is sent (its power constraints say what it can be told)
        constraints = one.tree.get("evse/1/energy/power_constraints")
        assert constraints["lower_ranges"] == [{"lower_w": 0.0, "upper_w": 0.0}]
        for lower_w, upper_w in ((1_000, 7_400), (0, 2_000)):
            unfit = envelope.model_copy(update={"elements": [EnvelopeElement(
                start_us=start_us, lower_w=lower_w, upper_w=upper_w)]})
            with pytest.raises(ModelError) as info:
                await local.request("ocpp-site1-1", PropertyValueWrite(writes=[WriteItem(
                    path=KeyPath.parse("evse/1/energy/envelope"), value=unfit.model_dump())]),
                    timeout=10)
            assert info.value.code is ErrorCode.OUT_OF_RANGE
        assert len(charger.profiles) == 1
        # permissions are standing profiles at stack 0, availability a ChangeAvailability
        await local.request("ocpp-site1-1", PropertyValueWrite(writes=[WriteItem(
            path=KeyPath.parse("evse/2/permissions/max_power_w"), value=11_000.0)]),
            timeout=10)
        standing = charger.profiles[-1]
        assert (standing["evse_id"], standing["id"], standing["stack_level"]) == (2, 102, 0)
        await local.request("ocpp-site1-1", PropertyValueWrite(writes=[WriteItem(
            path=KeyPath.parse("permissions/may_charge"), value=False)]), timeout=10)
        assert charger.availability == ["Inoperative"]
        assert one.tree.get("permissions/may_charge") is False
        # the charger refuses the next: the writer hears it, the tree keeps the last
        charger.answer = "Rejected"
        lower = envelope.model_copy(update={"elements": [
            EnvelopeElement(start_us=start_us, lower_w=0, upper_w=5_000)]})
        with pytest.raises(ModelError) as info:
            await local.request("ocpp-site1-1", PropertyValueWrite(writes=[WriteItem(
                path=KeyPath.parse("evse/1/energy/envelope"), value=lower.model_dump())]),
                timeout=10)
        assert info.value.code is ErrorCode.INVALID_VALUE and "Rejected" in info.value.text
        assert one.tree.get("evse/1/energy/limit_w") == 7_400.0
        # offline: refused at once, with the reason
        await connection.close()
        await until(lambda: one.tree.get("network/link/online") is False, "offline", 10)
        loop = asyncio.get_running_loop()
        began = loop.time()
        with pytest.raises(ModelError) as info:
            await local.request("ocpp-site1-1", write, timeout=10)
        assert info.value.code is ErrorCode.INVALID_STATE
        assert info.value.details.get("reason") == "offline"
        assert loop.time() - began < 2.0
    finally:
        await connection.close()
        task.cancel()


async def test_tc_e_53_offline_replay_is_never_lost_doubled_or_backwards(
        site: tuple[Hierarchy, OcppGateway]) -> None:
    """A charger that charged offline replays its queue: Begin register 0 (its lifetime
    meter is far above), seqNo 0 on every event, events out of order and repeated with new
    message ids. One record, energy = end register minus the right baseline, live state at
    the newest event."""
    h, gateway = site
    charger, connection, task = await start_charger(gateway, "ocpp-site1-2")
    try:
        await charger.boot()
        t0 = datetime.now(UTC) - timedelta(hours=1)
        events = [("Started", t0, 0.0, "Transaction.Begin", True),
                  ("Updated", t0 + timedelta(minutes=20), 910_031.0 + 2_000, "Sample.Periodic",
                   False),
                  ("Updated", t0 + timedelta(minutes=10), 910_031.0 + 1_000, "Sample.Periodic",
                   False),
                  ("Ended", t0 + timedelta(minutes=30), 910_031.0 + 3_000, "Transaction.End",
                   False)]
        order = [0, 1, 2, 1, 3, 2, 3]  # out of order, and repeated
        for i in order:
            kind, at, register, context, evse = events[i]
            await charger.event(kind, 0, at, register, context=context, evse=evse,
                                offline=True, transaction="tx-off",
                                state=None if kind == "Ended" else "Charging")
        two = station(h, "ocpp-site1-2")
        assert two.tree is not None
        records = two.tree.read("transactions")
        assert len(records) == 1
        [record] = records.values()
        assert record["transaction_id"] == "tx-off" and record["state"] == "Finished"
        assert record["energy_wh"] == pytest.approx(2_000.0)  # not 913 kWh
        assert record["events"] == 4 and record["offline_events"] == 4
        assert two.tree.get("evse/1/session/state") == "Finished"
        assert two.tree.get("evse/1/session/energy_wh") == pytest.approx(2_000.0)
        assert two.tree.get("evse/1/meter/obis:1-0:1.8.0") == pytest.approx(913_031.0)
    finally:
        await connection.close()
        task.cancel()


async def test_a_store_failure_answers_internal_error_and_the_resend_counts_once(
        site: tuple[Hierarchy, OcppGateway]) -> None:
    """OCPP-NOTES rule 3: a TransactionEvent whose effect cannot be made durable is answered
    with a CALLERROR InternalError, so the charger sends it again; the resend is recognised by
    its content and counted once, and answered only once on disk."""
    h, gateway = site
    charger, connection, task = await start_charger(gateway, "ocpp-site1-1")
    try:
        await charger.boot()
        one = station(h, "ocpp-site1-1")
        hardware = one.hardware
        assert isinstance(hardware, OcppCharger)
        durable = hardware.durable
        assert durable is not None
        failures = [OSError("disk full")]

        async def failing(revision: int) -> None:
            if failures:
                raise failures.pop()
            await durable(revision)

        hardware.durable = failing
        began = datetime.now(UTC)
        payload = call.TransactionEvent(
            event_type="Started", timestamp=stamp(began), trigger_reason="CablePluggedIn",
            seq_no=0, transaction_info={"transaction_id": "tx-disk"},
            evse={"id": 1, "connector_id": 1},
            meter_value=[{"timestamp": stamp(began), "sampled_value": [
                {"value": 500.0, "context": "Transaction.Begin"}]}])
        with pytest.raises(InternalError):
            await charger.call(payload, suppress=False)
        await charger.call(payload, suppress=False)  # the charger's resend: accepted
        assert one.tree is not None
        [record] = one.tree.read("transactions").values()
        assert record["events"] == 1 and record["transaction_id"] == "tx-disk"
    finally:
        await connection.close()
        task.cancel()


async def test_reconnects_are_admitted_at_a_bounded_rate(
        site: tuple[Hierarchy, OcppGateway]) -> None:
    """After a gateway restart every charger comes back at once: beyond the burst they are
    told 503 with Retry-After (on a fake clock here), and only chargers that proved who they
    are take tokens, so a stranger cannot lock the others out."""
    _, gateway = site
    clock = FakeClock()
    limited = await OcppGateway(gateway.chargers, connects_per_s=1.0, connect_burst=1,
                                clock=clock).start()
    opened = []
    try:
        opened.append(await connect(limited, "ocpp-site1-1"))
        for _ in range(3):  # strangers: refused as such, taking nothing
            with pytest.raises(InvalidStatus) as info:
                await connect(limited, "ocpp-site1-1", "wrong-password-123")
            assert info.value.response.status_code == 401
        with pytest.raises(InvalidStatus) as info:
            await connect(limited, "ocpp-site1-2")
        assert info.value.response.status_code == 503
        assert info.value.response.headers["Retry-After"] == "1"
        clock.advance(1.0)
        opened.append(await connect(limited, "ocpp-site1-2"))  # a token again
        # a charger admitted within the minute replaces its connection: no token taken
        opened.append(await connect(limited, "ocpp-site1-1"))
        assert limited.refused == {401: 3, 503: 1}
        assert limited.admission.stats.admitted == 2
    finally:
        for connection in opened:
            await connection.close()
        await limited.stop()


async def test_tc_a_07_08_security_profile_3_client_certificates(
        site: tuple[Hierarchy, OcppGateway], tmp_path: Path) -> None:
    """Profile 3: TLS 1.2+, and each charger shows a certificate of the gateway's client CA
    naming its identity. Another charger's certificate is refused (401), no certificate or
    one of another CA gets no TLS session at all."""
    _, gateway = site
    ca = CertificateAuthority(tmp_path / "ca", "chargers' CA")
    server = ca.issue_server(tmp_path / "gateway", "gateway", ["localhost"], ["127.0.0.1"])
    own = ca.issue_client(tmp_path / "chargers", "one", "ocpp-site1-1")
    other = ca.issue_client(tmp_path / "chargers", "two", "ocpp-site1-2")
    stranger = CertificateAuthority(tmp_path / "stranger", "a stranger's CA").issue_client(
        tmp_path / "stranger-out", "one", "ocpp-site1-1")
    secured = await OcppGateway(gateway.chargers, ssl_context=server_context(
        server.certificate, server.key, ca.directory / "ca.crt")).start()

    def client(issued: Any | None) -> ssl.SSLContext:
        context = ssl.create_default_context(cafile=str(ca.directory / "ca.crt"))
        if issued is not None:
            context.load_cert_chain(issued.certificate, issued.key)
        return context

    async def open_as(identity: str, issued: Any | None) -> Any:
        return await websockets.connect(f"{secured.url}{identity}", ssl=client(issued),
                                        subprotocols=["ocpp2.0.1"],  # type: ignore[list-item]
                                        open_timeout=5)

    try:
        assert secured.url.startswith("wss://")
        connection = await open_as("ocpp-site1-1", own)
        charger = Charger("ocpp-site1-1", connection)
        task = asyncio.create_task(charger.start())
        assert (await charger.boot()).status == "Accepted"
        task.cancel()
        await connection.close()
        with pytest.raises(InvalidStatus) as info:  # another charger's certificate
            await open_as("ocpp-site1-1", other)
        assert info.value.response.status_code == 401
        for issued in (None, stranger):  # no certificate, or one of another CA
            with pytest.raises((ssl.SSLError, ConnectionError, OSError,
                                websockets.exceptions.InvalidMessage)):
                await open_as("ocpp-site1-1", issued)
    finally:
        await secured.stop()
