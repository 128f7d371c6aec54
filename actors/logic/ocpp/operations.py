"""Remote operations as OCPP 2.0.1 calls, and how their effect is recognised (sans-IO).

``call_of`` turns a ``RemoteOperation`` into the call that asks for it (Reset,
RequestStartTransaction, RequestStopTransaction, UnlockConnector, TriggerMessage,
ChangeAvailability). ``judge`` reads the charger's answer: the words that mean yes for
that call, and, where yes only promises the effect, a ``Sighting`` that recognises the
message showing it:

* a reset (Accepted or Scheduled) is done when the charger boots with reason RemoteReset;
* a remote start when a TransactionEvent carries its ``remoteStartId``;
* a remote stop when the transaction's Ended event comes;
* an availability change answered Scheduled when a StatusNotification shows it.

Anything else the charger answers fails the task with its status and reason.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from actors.logic.ocpp.rpc import printable
from object_model.errors import (
    InvalidStateError,
    InvalidValueError,
    ModelError,
    UnsupportedOperationError,
)
from object_model.operations import OperationKind, RemoteOperation

Sighting = Callable[[str, dict[str, Any]], str | None]
"""Given one of the charger's calls (action, payload), what it shows of the effect awaited
(the task's result), or ``None`` when it is not that."""

YES: dict[str, frozenset[str]] = {
    "Reset": frozenset({"Accepted", "Scheduled"}),
    "RequestStartTransaction": frozenset({"Accepted"}),
    "RequestStopTransaction": frozenset({"Accepted"}),
    "UnlockConnector": frozenset({"Unlocked"}),
    "TriggerMessage": frozenset({"Accepted"}),
    "ChangeAvailability": frozenset({"Accepted", "Scheduled"}),
}


def call_of(op: RemoteOperation, *, remote_start_id: int,
            transaction_id: str | None = None) -> tuple[str, dict[str, Any]]:
    """The OCPP call asking for ``op``. ``transaction_id``: the transaction a stop by EVSE
    means (the caller looks it up)."""
    kind = op.operation
    if kind is OperationKind.RESET:
        payload: dict[str, Any] = {"type": "Immediate" if op.immediate else "OnIdle"}
        if op.evse:
            payload["evseId"] = op.evse
        return "Reset", payload
    if kind is OperationKind.START_CHARGING:
        payload = {"idToken": {"idToken": op.id_token, "type": "Central"},
                   "remoteStartId": remote_start_id}
        if op.evse:
            payload["evseId"] = op.evse
        return "RequestStartTransaction", payload
    if kind is OperationKind.STOP_CHARGING:
        chosen = op.transaction_id or transaction_id
        if not chosen:
            raise InvalidStateError(f"no transaction runs on EVSE {op.evse}",
                                    details={"evse": op.evse})
        return "RequestStopTransaction", {"transactionId": chosen}
    if kind is OperationKind.UNLOCK_CONNECTOR:
        return "UnlockConnector", {"evseId": op.evse, "connectorId": op.connector}
    if kind is OperationKind.TRIGGER_MESSAGE:
        assert op.message is not None  # the message's validator sees to it
        payload = {"requestedMessage": op.message.value}
        if op.evse:
            payload["evse"] = {"id": op.evse} | (
                {"connectorId": op.connector} if op.connector is not None else {})
        return "TriggerMessage", payload
    if kind is OperationKind.CHANGE_AVAILABILITY:
        payload = {"operationalStatus": "Operative" if op.operative else "Inoperative"}
        if op.evse:
            payload["evse"] = {"id": op.evse}
        return "ChangeAvailability", payload
    raise UnsupportedOperationError(f"no OCPP call does {kind.value}")


@dataclass(frozen=True)
class Judgement:
    """The charger said yes: ``result`` its words; ``sighting`` what shows the effect, when
    the answer only promised it."""

    result: str
    sighting: Sighting | None = None


def judge(op: RemoteOperation, action: str, request: dict[str, Any],
          answer: dict[str, Any]) -> Judgement:
    """What the charger's ``answer`` to ``action`` means (a ``ModelError`` when it said no)."""
    status = printable(str(answer.get("status", "")), 40)
    if status not in YES[action]:
        error: ModelError = InvalidStateError(
            f"the charger answered {action} {status}{reason_of(answer)}",
            details={"ocpp_status": status, "operation": op.operation.value})
        if status in ("NotImplemented", "NotSupported"):
            error = UnsupportedOperationError(error.text, details=error.details)
        raise error
    result = status
    if action == "RequestStartTransaction":
        started = printable(str(answer.get("transactionId", "")), 36)
        result = f"{status} (transaction {started})" if started else status
        wanted = request["remoteStartId"]
        return Judgement(result, lambda act, payload: _started(act, payload, wanted))
    if action == "RequestStopTransaction":
        stopping = request["transactionId"]
        return Judgement(result, lambda act, payload: _ended(act, payload, stopping))
    if action == "Reset":
        return Judgement(result, _rebooted)
    if action == "ChangeAvailability" and status == "Scheduled":
        want = "Available" if request["operationalStatus"] == "Operative" else "Unavailable"
        evse = (request.get("evse") or {}).get("id")
        return Judgement(result, lambda act, payload: _shows(act, payload, want, evse))
    return Judgement(result)


def reason_of(answer: dict[str, Any]) -> str:
    """The reason a charger gave with a status (``statusInfo``: its code and words, cleaned
    of control characters), as ``": code words"``, or nothing."""
    info = answer.get("statusInfo") or {}
    if not info:
        return ""
    return f": {printable(str(info.get('reasonCode', '')), 20)} " \
           f"{printable(str(info.get('additionalInfo', '')), 512)}".rstrip()


def _started(action: str, payload: dict[str, Any], wanted: int) -> str | None:
    info = payload.get("transactionInfo", {}) if action == "TransactionEvent" else {}
    if info.get("remoteStartId") == wanted:
        return f"started transaction {printable(str(info.get('transactionId', '')), 36)}"
    return None


def _ended(action: str, payload: dict[str, Any], transaction: str) -> str | None:
    if action == "TransactionEvent" and payload.get("eventType") == "Ended" and \
            payload.get("transactionInfo", {}).get("transactionId") == transaction:
        return f"transaction {printable(transaction, 36)} ended " \
               f"({payload['transactionInfo'].get('stoppedReason', 'Remote')})"
    return None


def _rebooted(action: str, payload: dict[str, Any]) -> str | None:
    if action == "BootNotification" and payload.get("reason") == "RemoteReset":
        return "rebooted (RemoteReset)"
    return None


def _shows(action: str, payload: dict[str, Any], status: str, evse: int | None) -> str | None:
    if action == "StatusNotification" and payload.get("connectorStatus") == status and (
            evse is None or payload.get("evseId") == evse):
        return f"{status} (as scheduled)"
    return None


def refused_by(identity: str, action: str, answer: dict[str, Any]) -> ModelError:
    """The error of a write the charger answered with a status other than yes."""
    status = printable(str(answer.get("status")), 40)
    return InvalidValueError(f"{identity} answered {action} {status}{reason_of(answer)}",
                             details={"ocpp_status": answer.get("status")})


__all__ = ["YES", "Judgement", "Sighting", "call_of", "judge", "reason_of", "refused_by"]
