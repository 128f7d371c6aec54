"""Remote operations on a simulated station: a task whose result is the hardware's answer
(the OCPP charger's answers: tests/integration/test_ocpp_gateway.py)."""

from __future__ import annotations

import pytest

from actors.runtime.actor import RoleDirectory
from actors.testing import until
from object_model import ErrorCode, ModelError, Role
from object_model.monitoring import TaskState, TaskStatus
from object_model.operations import OperationKind, RemoteOperation, TriggeredMessage
from tests.actors.station.site import Csms, Site


def task(station_tree: object, task_id: str) -> dict[str, object]:
    entry = station_tree.read(f"tasks/{task_id}")  # type: ignore[attr-defined]
    assert isinstance(entry, dict)
    return entry


async def test_a_reset_is_a_task_that_succeeds_with_the_station_s_answer(site: Site) -> None:
    csms = await site.start_csms()
    station = await site.station()
    assert station.tree is not None
    boots = station.tree.get("diagnostics/boot_count")
    status = await csms.request("cs-1", RemoteOperation(task="reset-1",
                                                        operation=OperationKind.RESET))
    assert isinstance(status, TaskStatus)
    assert status.state is TaskState.SUCCEEDED and status.task_kind == "reset"
    entry = task(station.tree, "reset-1")
    assert entry["result"] == "Accepted" and entry["owner"] == "csms"
    assert station.tree.get("diagnostics/boot_count") == boots + 1
    assert station.tree.get("diagnostics/last_boot_reason") == "RemoteReset"


async def test_what_the_station_refuses_fails_the_task_saying_why(site: Site) -> None:
    csms = await site.start_csms()
    station = await site.station()
    assert station.tree is not None
    status = await csms.request("cs-1", RemoteOperation(
        task="trigger-1", operation=OperationKind.TRIGGER_MESSAGE,
        message=TriggeredMessage.HEARTBEAT))
    assert isinstance(status, TaskStatus) and status.state is TaskState.FAILED
    entry = task(station.tree, "trigger-1")
    assert entry["error_code"] == ErrorCode.UNSUPPORTED_OPERATION.value
    assert "publishes every change" in str(entry["error"])
    status = await csms.request("cs-1", RemoteOperation(
        task="unlock-9", operation=OperationKind.UNLOCK_CONNECTOR, evse=1, connector=4))
    assert isinstance(status, TaskStatus) and status.state is TaskState.FAILED
    assert task(station.tree, "unlock-9")["error_code"] == ErrorCode.UNKNOWN_PATH.value


async def test_an_unlock_waits_for_the_session_to_end_and_availability_is_obeyed(
        site: Site) -> None:
    csms = await site.start_csms()
    station = await site.station()
    tree = station.tree
    assert tree is not None
    started = await csms.request("cs-1", RemoteOperation(
        task="start-1", operation=OperationKind.START_CHARGING, evse=1, id_token="04A1B2"))
    assert isinstance(started, TaskStatus) and started.state is TaskState.SUCCEEDED
    await until(lambda: tree.get("evse/1/session/state") != "Idle", "an EV arrived at EVSE 1")
    refused = await csms.request("cs-1", RemoteOperation(
        task="unlock-1", operation=OperationKind.UNLOCK_CONNECTOR, evse=1, connector=1))
    assert isinstance(refused, TaskStatus) and refused.state is TaskState.FAILED
    assert "session runs" in str(task(tree, "unlock-1")["error"])
    off = await csms.request("cs-1", RemoteOperation(
        task="off-2", operation=OperationKind.CHANGE_AVAILABILITY, evse=2, operative=False))
    assert isinstance(off, TaskStatus) and off.state is TaskState.SUCCEEDED
    assert tree.get("evse/2/permissions/may_charge") is False


async def test_only_who_may_write_the_permissions_may_operate(site: Site) -> None:
    await site.start_csms()
    station = await site.station(trusted={"rm": Role.RESOURCE_MANAGER})
    rm = await site.actor(Csms("rm", await site.endpoint("rm"),
                               roles=RoleDirectory({"cs-*": Role.STATION})))
    with pytest.raises(ModelError) as refused:
        await rm.request("cs-1", RemoteOperation(task="reset-2", operation=OperationKind.RESET))
    assert refused.value.code is ErrorCode.ACCESS_DENIED
    assert station.tree is not None and "tasks/reset-2/kind" not in station.tree


async def test_an_operation_cut_by_a_restart_fails_as_unknown(site: Site) -> None:
    await site.start_csms()
    station = await site.station()
    assert station.tree is not None and station.tasks is not None
    station.tasks.book.create("start-9", OperationKind.START_CHARGING.value, owner="csms",
                              spec="{}")
    assert station.persisted is not None
    await station.persisted.durable()
    await station.stop()
    again = await site.restart(station)
    assert again.tree is not None
    entry = task(again.tree, "start-9")
    assert entry["state"] == TaskState.FAILED.value
    assert "outcome is not known" in str(entry["error"])
