"""What the CSMS asks of an OCPP charger through the gateway, on real brokers, from the cloud:
its device model learned at a Pending boot and written back (SetVariables), remote operations
as tasks ending in the charger's answer, a firmware update served by the gateway, monitoring
tasks the charger watches itself, an EV's charging needs. The chargers are real OCPP-J
clients (``actors.testing.ocpp_charger``). OCA Part 6 test-case ids are in the names where a
test covers one (our reading of it)."""

from __future__ import annotations

import asyncio
import contextlib
import os
import sys
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from actors.app.config import ChargerEntry
from actors.app.demo import write_connect
from actors.app.hierarchy import Hierarchy
from actors.logic.firmware_trust import signed_update
from actors.station.actor import ChargingStation
from actors.station.ocpp.gateway import OcppGateway
from actors.testing import until
from actors.testing.ocpp_charger import SimulatedCharger
from keypath import KeyPath, KeyPattern
from object_model import ErrorCode, ModelError
from object_model.messages import PropertyValueWrite, WriteItem
from object_model.monitoring import (
    MonitoringReport,
    MonitoringTaskSetup,
    ReporterConfig,
    TaskAction,
    TaskControl,
)
from object_model.operations import OperationKind, RemoteOperation, TriggeredMessage

pytestmark = pytest.mark.broker

PASSWORD = "correct-horse-battery"
IDENTITY = "ocpp-site1-1"
DM = "ocpp:dm"


@dataclass
class Site:
    h: Hierarchy
    gateway: OcppGateway
    charger: SimulatedCharger
    runner: asyncio.Task[None]

    @property
    def station(self) -> ChargingStation:
        return next(s for s in self.h.site(1).stations if s.address == IDENTITY)

    def leaf(self, path: str) -> Any:
        tree = self.station.tree
        assert tree is not None
        return tree.get(path) if path in tree else None

    def task(self, task: str) -> dict[str, Any]:
        tree = self.station.tree
        assert tree is not None
        return dict(tree.read(f"tasks/{task}")) if f"tasks/{task}/state" in tree else {}

    async def operate(self, task: str, kind: OperationKind, **args: Any) -> dict[str, Any]:
        """Ask through the cloud; the task's entry once it has ended."""
        operator = await self.h.operator()
        await operator.request("cloud", RemoteOperation(
            tree=KeyPath("stations", IDENTITY), task=task, operation=kind, **args), timeout=15)
        await until(lambda: self.task(task).get("state") in ("succeeded", "failed"),
                    f"task {task} ended", 30, every=0.05)
        return self.task(task)


@pytest.fixture
async def site(tmp_path: Path) -> AsyncIterator[Site]:
    h = await Hierarchy.start(tmp_path)
    runner: asyncio.Task[None] | None = None
    try:
        await h.start_cloud()
        await h.start_site(1)
        _, gateway = await h.start_gateway(1, {IDENTITY: ChargerEntry(password=PASSWORD,
                                                                       evse_count=2)})
        charger = SimulatedCharger(IDENTITY, PASSWORD, gateway.url, evses=2, plugged=1,
                                   report_s=0.5, autostart=False, items_per_message=8)
        runner = asyncio.create_task(charger.run())
        yield Site(h, gateway, charger, runner)
    finally:
        if runner is not None:
            runner.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await runner
        await h.close()


async def accepted(site: Site) -> None:
    await until(lambda: site.charger.registration == "Accepted"
                and site.leaf("ocpp:charger/registration") == "Accepted",
                "the charger's boot accepted", 30, every=0.05)


async def test_tc_b_pending_boot_learns_the_full_inventory_then_accepts(site: Site) -> None:
    """A new charger is Pending while its device model is learned (GetBaseReport, every
    NotifyReport page), then asked to boot again and Accepted; it sent nothing else while
    Pending (B02.FR.09). The model reaches the cloud."""
    await accepted(site)
    charger = site.charger
    sent = [action for action, _ in charger.sent]
    first_accept = next(i for i, (action, payload) in enumerate(charger.sent)
                        if action == "BootNotification" and i > 0)
    assert sent[0] == "BootNotification" and "StatusNotification" not in sent[:first_accept]
    assert charger.received[0][0] == "GetBaseReport"
    pages = [payload for action, payload in charger.sent if action == "NotifyReport"]
    assert len(pages) > 1 and [p["seqNo"] for p in pages] == list(range(len(pages)))
    assert [p["tbc"] for p in pages][-1] is False and all(p["tbc"] for p in pages[:-1])
    assert charger.boot_reasons[-1] == "Triggered"
    tree = site.station.tree
    assert tree is not None
    assert site.leaf("ocpp:charger/variables") == len(charger.model)
    assert site.leaf(f"{DM}/OCPPCommCtrlr/HeartbeatInterval/actual/mutability") == "ReadWrite"
    assert site.leaf(f"{DM}/EVSE@1/Power/supports_monitoring") is True
    assert f"{DM}/SecurityCtrlr/BasicAuthPassword/actual/value" not in tree  # WriteOnly
    assert site.leaf("ocpp:charger/items_per_set") == 8
    await until(site.h.cloud_consistent, "the device model at the cloud (equal digests)", 30,
                every=0.1)


async def test_a_gateway_that_lost_its_state_relearns_the_running_transaction_at_once(
        site: Site, tmp_path: Path) -> None:
    """A gateway whose state is gone (a new state directory: a CSMS that lost what it held)
    learns the charger's model again and, once its boot is accepted, asks for the running
    transactions (TriggerMessage(TransactionEvent), F06): the EVSE shows its session at once,
    not at the next TxUpdatedInterval."""
    await accepted(site)
    site.charger.report_s = 3600.0  # no periodic event would tell it for an hour
    await site.operate("start", OperationKind.START_CHARGING, evse=1,
                       id_token="04A1B2C3")
    transaction = site.charger.evses[1].transaction
    assert transaction is not None
    running = site.h.site(1).hosts.pop()
    await running.stop()
    _, gateway = await site.h.start_gateway(1, {IDENTITY: ChargerEntry(
        password=PASSWORD, evse_count=2)}, port=site.gateway.port,
        state_dir=tmp_path / "gateway-again")
    await until(lambda: site.leaf("evse/1/session/session_id") == transaction,
                "the running transaction learned again", 30, every=0.05)
    asked = [payload for action, payload in site.charger.received if action == "TriggerMessage"]
    assert {"requestedMessage": "TransactionEvent"} in asked
    assert site.leaf("evse/1/session/state") == "Charging"
    assert gateway.port == site.gateway.port


async def test_tc_b_06_07_set_variables_from_the_cloud_accepted_and_rejected(
        site: Site) -> None:
    """``csms set`` of a device-model value becomes SetVariables: Accepted changes the
    charger and the tree; Rejected (out of range) is the writer's error and changes nothing;
    a ReadOnly value and the gateway's own credentials are refused before anything is sent."""
    await accepted(site)
    operator = await site.h.operator()
    station = KeyPath("stations", IDENTITY)
    interval = f"{DM}/OCPPCommCtrlr/HeartbeatInterval/actual/value"

    async def write(path: str, value: str) -> Any:
        return await operator.request("cloud", PropertyValueWrite(
            tree=station, writes=[WriteItem(path=KeyPath.parse(path), value=value)]),
            timeout=10)

    await write(interval, "120")
    assert site.charger.model.value("OCPPCommCtrlr", "HeartbeatInterval") == "120"
    assert site.leaf(interval) == "120"
    asked = sum(action == "SetVariables" for action, _ in site.charger.received)
    with pytest.raises(ModelError) as rejected:
        await write(interval, "0")  # below its minLimit: the charger says Rejected
    assert rejected.value.code is ErrorCode.INVALID_VALUE and "Rejected" in rejected.value.text
    assert site.leaf(interval) == "120"
    assert site.charger.model.value("OCPPCommCtrlr", "HeartbeatInterval") == "120"
    for path, code in ((f"{DM}/SmartChargingCtrlr/RateUnit/actual/value",
                        ErrorCode.ACCESS_DENIED),
                       (f"{DM}/SecurityCtrlr/BasicAuthPassword/actual/value",
                        ErrorCode.ACCESS_DENIED)):
        with pytest.raises(ModelError) as refused:
            await write(path, "W")
        assert refused.value.code is code, path
    assert sum(action == "SetVariables" for action, _ in site.charger.received) == asked + 1


async def test_tc_f_remote_operations_end_in_the_charger_s_answer(site: Site) -> None:
    """RequestStart/StopTransaction, UnlockConnector, TriggerMessage, ChangeAvailability and
    Reset from the cloud, each a task of the station whose result is the charger's answer
    (TC_F_01..04, TC_F_06, TC_F_11..., TC_B_20..)."""
    await accepted(site)
    started = await site.operate("start-1", OperationKind.START_CHARGING, evse=1,
                                 id_token="04A1B2C3")
    assert started["state"] == "succeeded", started
    assert started["result"].startswith("started transaction")
    transaction = site.charger.evses[1].transaction
    assert transaction is not None and site.leaf("evse/1/session/session_id") == transaction
    refused = await site.operate("unlock-1", OperationKind.UNLOCK_CONNECTOR, evse=1,
                                 connector=1)
    assert refused["state"] == "failed" and "OngoingAuthorizedTransaction" in refused["error"]
    stopped = await site.operate("stop-1", OperationKind.STOP_CHARGING, evse=1)
    assert stopped["state"] == "succeeded" and transaction in stopped["result"]
    await until(lambda: site.leaf("evse/1/session/state") == "Finished", "the session ended")
    unlocked = await site.operate("unlock-2", OperationKind.UNLOCK_CONNECTOR, evse=1,
                                  connector=1)
    assert unlocked["state"] == "succeeded" and unlocked["result"] == "Unlocked"
    missing = await site.operate("unlock-3", OperationKind.UNLOCK_CONNECTOR, evse=2,
                                 connector=3)
    assert missing["state"] == "failed" and "UnknownConnector" in missing["error"]
    heartbeats = site.charger.heartbeats
    triggered = await site.operate("trigger-1", OperationKind.TRIGGER_MESSAGE,
                                   message=TriggeredMessage.HEARTBEAT)
    assert triggered["state"] == "succeeded" and triggered["result"] == "Accepted"
    await until(lambda: site.charger.heartbeats > heartbeats, "the triggered heartbeat")
    off = await site.operate("off-2", OperationKind.CHANGE_AVAILABILITY, evse=2,
                             operative=False)
    assert off["state"] == "succeeded" and site.leaf("evse/2/permissions/may_charge") is False
    boots = len(site.charger.boot_reasons)
    reset = await site.operate("reset-1", OperationKind.RESET, immediate=True)
    assert reset["state"] == "succeeded" and reset["result"] == "rebooted (RemoteReset)"
    assert site.charger.boot_reasons[boots:][0] == "RemoteReset"


async def test_an_offline_charger_fails_an_operation_at_once(site: Site) -> None:
    await accepted(site)
    site.runner.cancel()  # the charger is gone
    await until(lambda: site.leaf("network/link/online") is False, "the charger gone")
    gone = await site.operate("reset-2", OperationKind.RESET)
    assert gone["state"] == "failed" and gone["error_code"] == ErrorCode.INVALID_STATE.value
    assert "offline" in gone["error"]


async def test_tc_l_firmware_served_by_the_gateway_and_installed(site: Site) -> None:
    """A signed image held at the cloud reaches the gateway's station actor through the
    hierarchy, is served to the charger at a one-time URL of the gateway (UpdateFirmware),
    and the task succeeds when the charger boots with the new version (TC_L_01 as we read
    it); the URL is gone afterwards."""
    await accepted(site)
    image = b"FW:2.0.0\n" + bytes(range(256)) * 400
    ref = await site.h.cloud_actor.blobs.store.put(image)  # the operator stored it there
    operator = await site.h.operator()
    await operator.request("cloud", signed_update(
        site.h.manufacturer, tree=KeyPath("stations", IDENTITY), task="fw", blob=ref,
        version="2.0.0", counter=1, vendor="Simulated", model="Sim 22"), timeout=15)
    await until(lambda: site.task("fw").get("state") in ("succeeded", "failed"),
                "the update ended", 60, every=0.1)
    task = site.task("fw")
    assert task["state"] == "succeeded", task
    assert task["result"] == "installed 2.0.0"
    assert site.charger.firmware_version == "2.0.0"
    assert site.charger.firmware_sha256 == ref.hash.hex()
    assert site.leaf("firmware/version") == "2.0.0"
    assert "FirmwareUpdate" in site.charger.boot_reasons
    assert site.gateway.downloads is not None
    served = site.gateway.downloads.downloads
    assert served.served >= 1 and served.bytes_sent == len(image)
    [url] = [p["firmware"]["location"] for a, p in site.charger.received
             if a == "UpdateFirmware"]
    token = url.rsplit("/", 1)[1]
    assert served.plan(f"/firmware/{token}", {}).status == 404  # withdrawn once it ended


async def test_a_monitoring_task_is_watched_by_the_charger_and_reported(site: Site) -> None:
    """A monitoring task on a device-model value the charger can monitor becomes a
    SetVariableMonitoring; its NotifyEvents update the tree and the reports reach the cloud's
    operator."""
    await accepted(site)
    operator = await site.h.operator()
    await operator.request("cloud", MonitoringTaskSetup(
        tree=KeyPath("stations", IDENTITY), task="power",
        selectors=[KeyPattern.parse(f"{DM}/EVSE@1/Power/actual/value")],
        reporter=ReporterConfig(interval_s=1, priority=2)), timeout=15)
    await until(lambda: any(a == "SetVariableMonitoring" for a, _ in site.charger.received),
                "the charger asked to monitor")
    await until(lambda: "monitors 1 of 1" in str(site.task("power").get("detail")),
                "the task's detail: the charger watches the value")
    site.charger.plug(1, 7_400.0)
    await site.operate("start-p", OperationKind.START_CHARGING, evse=1, id_token="04A1B2C3")
    await until(lambda: any(a == "NotifyEvent" for a, _ in site.charger.sent),
                "a NotifyEvent", 30)
    await until(lambda: float(site.leaf(f"{DM}/EVSE@1/Power/actual/value") or 0) > 0,
                "the value in the tree", 30)
    report: MonitoringReport = await asyncio.wait_for(operator.reports.get(), 30)
    assert report.task == "power" and any(
        str(path).endswith("EVSE@1/Power/actual/value") for path, _, _ in report.samples)
    assert site.charger.monitors.by_id
    await operator.request("cloud", TaskControl(tree=KeyPath("stations", IDENTITY),
                                                task="power", action=TaskAction.CANCEL),
                           timeout=15)
    await until(lambda: not site.charger.monitors.by_id, "the charger's monitor cleared")
    assert any(a == "ClearVariableMonitoring" for a, _ in site.charger.received)


async def test_an_ev_s_charging_needs_narrow_its_evse_s_constraints(site: Site) -> None:
    await accepted(site)
    site.charger.ev_energy_wh, site.charger.ev_departure_s = 20_000.0, 3 * 3600.0
    await site.operate("start-n", OperationKind.START_CHARGING, evse=1, id_token="04A1B2C3")
    await until(lambda: site.charger.charging_needs.get(1) == "Accepted", "needs accepted")
    await until(lambda: site.leaf("evse/1/energy/energy_constraints") is not None,
                "the energy constraints")
    energy = site.leaf("evse/1/energy/energy_constraints")
    assert energy["max_wh"] == 20_000.0
    assert site.leaf("evse/1/session/departure_at") == energy["valid_until_us"]
    upper = site.leaf("evse/1/energy/power_constraints")["upper_ranges"]
    assert upper[0] == {"lower_w": 0.0, "upper_w": 0.0}
    assert site.leaf("evse/1/ocpp:limits/lower_limit") is False


async def csms(*args: str) -> tuple[int, str, str]:
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "actors.app.cli", *args, stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE, env={**os.environ, "PYTHONPATH": str(Path.cwd())})
    out, err = await asyncio.wait_for(process.communicate(), 60)
    assert process.returncode is not None
    return process.returncode, out.decode(), err.decode()


async def test_csms_set_and_csms_operate_on_an_ocpp_charger(site: Site, tmp_path: Path) -> None:
    """The operator's commands: ``csms set`` of a device-model value (SetVariables) and
    ``csms operate`` (a task, followed until the charger answered)."""
    await accepted(site)
    await site.h.disconnect_operator()  # the commands log in as the operator
    connect = tmp_path / "connect.json"
    write_connect(site.h, connect)
    code, out, err = await csms(
        "set", "--connect", str(connect), "cloud",
        f"stations/{IDENTITY}/{DM}/TxCtrlr/EVConnectionTimeOut/actual/value", "45")
    assert code == 0, err
    assert site.charger.model.value("TxCtrlr", "EVConnectionTimeOut") == "45"
    code, out, err = await csms("operate", "--connect", str(connect), "cloud", IDENTITY,
                                "unlock_connector", "--evse", "2", "--connector", "1",
                                "--task", "unlock-cli")
    assert code == 0, err
    assert "succeeded" in out and "answer: Unlocked" in out
    code, out, err = await csms("operate", "--connect", str(connect), "cloud", IDENTITY,
                                "stop_charging", "--evse", "2", "--task", "stop-cli")
    assert code == 1 and "failed" in out and "no transaction runs on EVSE 2" in out
