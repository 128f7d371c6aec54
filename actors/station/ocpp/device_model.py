"""An OCPP charger's device model, the gateway's side (the sans-IO mapping is
``actors.logic.ocpp.device_model``): learned at onboarding (a Pending boot, GetBaseReport
FullInventory, NotifyReport pages committed as they come, then TriggerMessage
BootNotification), and written back by SetVariables when a CSMS writes an ``ocpp:dm`` value."""

from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING, Any

from actors.logic.ocpp import device_model as dm
from actors.logic.ocpp.operations import reason_of
from actors.logic.ocpp.rpc import printable
from keypath import KeyPath
from object_model import ModelError
from object_model.errors import InvalidValueError, RequestTimeoutError
from object_model.station.ocpp_namespace import (
    CHARGER,
    MAX_COMPONENTS,
    MAX_VARIABLES_PER_COMPONENT,
)
from object_model.tree import Operation, Write

if TYPE_CHECKING:
    from actors.station.ocpp.charger import OcppCharger

log = logging.getLogger("csms.ocpp")

REPORT_TIMEOUT_S = 120.0  # a full inventory, every page


async def set_variables(charger: OcppCharger, settings: list[tuple[KeyPath, Any]]) -> None:
    """SetVariables for the device-model values written, ``items_per_set`` at a time;
    what the charger accepted is shown in the tree even when it refused another."""
    assert charger.tree is not None and charger.report is not None
    items = dm.settings_of(charger.tree, settings)
    per_call = int(charger.tree.get(f"{CHARGER}/items_per_set")) \
        if f"{CHARGER}/items_per_set" in charger.tree else 8
    for start in range(0, len(items), per_call):
        batch = items[start:start + per_call]
        answer = await charger.link.call("SetVariables", {
            "setVariableData": [item for _, item in batch]})
        results = answer.get("setVariableResult", [])
        accepted: list[Operation] = []
        refusal: ModelError | None = None
        reboot = False
        for (path, item), result in zip(batch, results, strict=False):
            status = result.get("attributeStatus")
            if status in ("Accepted", "RebootRequired"):
                accepted.append(Write(path, item["attributeValue"]))
                reboot |= status == "RebootRequired"
            elif refusal is None:
                info = {"statusInfo": result.get("attributeStatusInfo")}
                refusal = InvalidValueError(
                    f"{charger.identity} answered SetVariables {status} for "
                    f"{printable(item['component']['name'])}."
                    f"{printable(item['variable']['name'])}{reason_of(info)}", path=path,
                    details={"ocpp_status": status})
        if len(results) < len(batch) and refusal is None:
            refusal = InvalidValueError(f"{charger.identity} answered {len(results)} of "
                                        f"{len(batch)} settings")
        if reboot:
            accepted.append(Write(f"{CHARGER}/reboot_required", True))
        if refusal is not None:
            if accepted:  # the tree shows what the charger took
                charger.report(accepted)
            raise refusal


def needs_inventory(charger: OcppCharger, firmware: str) -> bool:
    tree = charger.tree
    assert tree is not None
    learned = f"{CHARGER}/inventory_firmware"
    return charger.settings.onboarding and firmware[:50] not in charger.unreported and (
        f"{CHARGER}/inventory_at" not in tree or str(tree.get(learned)) != firmware[:50])


async def onboard(charger: OcppCharger, firmware: str) -> None:
    """Learn the charger's device model (GetBaseReport FullInventory, every page), then
    ask it to boot again, to be Accepted. A report that does not come (no answer, or not
    every page within ``REPORT_TIMEOUT_S``) is not asked for again while the gateway runs:
    the charger is accepted with what came, rather than kept Pending for good."""
    assert charger.report is not None and charger.tree is not None
    request_id = charger.next_id()
    pages: asyncio.Future[set[tuple[str, str]]] = \
        asyncio.get_running_loop().create_future()
    charger.reports[request_id] = (pages, set())
    try:
        try:
            answer = await charger.link.call("GetBaseReport", {"requestId": request_id,
                                                            "reportBase": "FullInventory"})
        except InvalidValueError as exc:  # NotImplemented, NotSupported: it has none
            answer = {"status": exc.details.get("ocpp_error", "refused")}
        except RequestTimeoutError:  # its answer may be what was lost: wait for pages
            answer = {"status": "Accepted"}
        learned: list[Operation] = [Write(f"{CHARGER}/inventory_at", charger.clock.now_us()),
                                    Write(f"{CHARGER}/inventory_firmware", firmware[:50])]
        if answer.get("status") == "Accepted":
            try:
                async with asyncio.timeout(REPORT_TIMEOUT_S):
                    reported = await pages
            except TimeoutError:
                log.warning("%s: its full inventory did not come within %g s: accepted "
                            "with what came (asked again once the gateway restarts)",
                            charger.identity, REPORT_TIMEOUT_S)
                charger.unreported.add(firmware[:50])
                learned = []
            else:
                charger.report(dm.forgotten(charger.tree, reported))
        else:
            log.warning("%s: answered GetBaseReport %s: its device model stays unknown",
                        charger.identity, printable(str(answer.get("status")), 40))
        charger.report([*learned, *dm.capabilities(charger.tree)])
    finally:
        charger.reports.pop(request_id, None)
        charger.onboarding = False
    charger.relearn_transactions = True
    answer = await charger.link.call("TriggerMessage", {"requestedMessage": "BootNotification"})
    if answer.get("status") != "Accepted":  # it boots again after the interval anyway
        log.info("%s: answered TriggerMessage(BootNotification) %s", charger.identity,
                 answer.get("status"))


async def ask_transactions(charger: OcppCharger) -> None:
    """TriggerMessage(TransactionEvent) for every EVSE: a gateway that learned a charger's
    model anew (its state lost, or a first meeting) learns the transactions running on it
    too, each with its EVSE, rather than at the next TxUpdatedInterval."""
    try:
        answer = await charger.link.call("TriggerMessage",
                                         {"requestedMessage": "TransactionEvent"})
    except ModelError as exc:  # no answer, or one off the spec: they come at their interval
        log.info("%s: asking for its running transactions failed: %s", charger.identity, exc)
        return
    log.info("%s: asked for its running transactions: %s", charger.identity,
             printable(str(answer.get("status")), 40))


def take_page(charger: OcppCharger, payload: dict[str, Any]) -> None:
    """A NotifyReport page into ``ocpp:dm`` (committed page by page); the last one
    completes the report asked for."""
    assert charger.report is not None and charger.tree is not None
    outcome = dm.report_ops(charger.tree, payload.get("reportData", []), charger.clock.now_us())
    if outcome.dropped:
        log.warning("%s: %d variables of its device model left out (more than the tree "
                    "holds: %d in all, %d a component, %d components; or a key the tree "
                    "cannot take)", charger.identity, outcome.dropped, dm.MAX_VARIABLES,
                    MAX_VARIABLES_PER_COMPONENT, MAX_COMPONENTS)
    if outcome.ops:
        charger.report(outcome.ops)
    waiting = charger.reports.get(payload["requestId"])
    if waiting is not None:
        waiting[1].update(outcome.keys)
        if not payload.get("tbc", False) and not waiting[0].done():
            waiting[0].set_result(waiting[1])


__all__ = ["REPORT_TIMEOUT_S", "ask_transactions", "needs_inventory", "onboard", "set_variables",
           "take_page"]
