"""Monitoring tasks on an OCPP charger (``OcppCharger.watch``): what a task selects of the
device model that the charger can monitor is asked of it with SetVariableMonitoring (again
after each reconnect, once it is accepted: a monitor it kept is answered Duplicate), and
cleared by the ids it gave when the task ends; its NotifyEvents then update the values the
station's own monitors watch. The rest is watched on what the charger reports anyway."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from actors.logic.ocpp import device_model as dm
from object_model import ModelError
from object_model.monitoring import MonitoringTaskSetup
from object_model.station.ocpp_namespace import CHARGER

if TYPE_CHECKING:
    from actors.station.ocpp.charger import OcppCharger

log = logging.getLogger("csms.ocpp")

SEVERITY = (1, 4, 6, 8)  # a monitoring task's priority (0 critical .. 3 bulk) as OCPP severity
MONITORS_PER_TASK = 64
TAKEN = frozenset({"Accepted", "Duplicate"})  # a monitor the charger has, new or not


async def watch(charger: OcppCharger, task: str, setup: MonitoringTaskSetup | None) -> str:
    if setup is None:
        charger.watched.pop(task, None)
        ids = sorted(charger.monitor_ids.pop(task, set()))
        if ids and charger.link.online:
            try:
                await charger.link.call("ClearVariableMonitoring", {"id": ids})
            except ModelError as exc:
                log.info("%s: monitors of task %s not cleared: %s", charger.identity, task, exc)
        return ""
    charger.watched[task] = setup
    return await ask_monitors(charger, task, setup)


async def ask_monitors(charger: OcppCharger, task: str, setup: MonitoringTaskSetup) -> str:
    tree = charger.tree
    assert tree is not None
    matched = [path for selector in setup.selectors for path, _, _ in tree.find(selector)]
    items = dm.monitor_requests(tree, setup, matched, SEVERITY[setup.reporter.priority])
    if not items:
        return ""
    if not tree.get(f"{CHARGER}/monitoring"):
        return "the charger does not monitor: values as it reports them"
    items = items[:MONITORS_PER_TASK]
    try:
        answer = await charger.link.call("SetVariableMonitoring", {"setMonitoringData": items})
    except ModelError as exc:
        return f"the charger was not asked to monitor ({exc.text[:120]}): asked again " \
               "when it connects"
    results = answer.get("setMonitoringResult", [])
    kept = [result for result in results if result.get("status") in TAKEN]
    charger.monitor_ids.setdefault(task, set()).update(
        int(result["id"]) for result in kept if "id" in result)
    return f"the charger monitors {len(kept)} of {len(items)} values" + (
        "" if len(kept) == len(items) else " (the rest: as it reports them)")


async def rewatch(charger: OcppCharger) -> None:
    for task, setup in list(charger.watched.items()):
        if task not in charger.watched:  # ended meanwhile
            continue
        said = await ask_monitors(charger, task, setup)
        log.info("%s: monitoring task %s asked again: %s", charger.identity, task, said or "-")


__all__ = ["MONITORS_PER_TASK", "SEVERITY", "ask_monitors", "rewatch", "watch"]
