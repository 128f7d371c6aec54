"""Remote operations on a station: one request, run as a task whose result is the station's answer.

A CSMS or an operator asks a station to do something now (restart, start or stop charging on an
EVSE, unlock a connector, send a message it would otherwise send later, become available or
not). ``RemoteOperation`` names the operation and its arguments; the station answers with a
``TaskStatus`` for the task ``tasks/<task>`` that carries it out. The task's ``result`` is the
station's answer (an OCPP charger's own status word, such as ``Accepted`` or ``Unlocked``);
a refusal fails the task with the error saying why. Where the answer only promises the effect
(a reset scheduled until the EVSE is idle, a remote start accepted before the transaction
begins), the task stays running until the effect is seen, then succeeds, or fails when it is
not seen in time.
"""

from __future__ import annotations

from enum import StrEnum
from typing import Annotated, ClassVar, Literal

from pydantic import Field, model_validator

from object_model.message_base import ROOT, MessageBase, Path
from object_model.monitoring import TaskId


class OperationKind(StrEnum):
    RESET = "reset"
    START_CHARGING = "start_charging"
    STOP_CHARGING = "stop_charging"
    UNLOCK_CONNECTOR = "unlock_connector"
    TRIGGER_MESSAGE = "trigger_message"
    CHANGE_AVAILABILITY = "change_availability"


class TriggeredMessage(StrEnum):
    """What a station can be asked to send at once (OCPP's MessageTriggerEnumType, in the
    spelling of OCPP, since that is what it names)."""

    BOOT_NOTIFICATION = "BootNotification"
    HEARTBEAT = "Heartbeat"
    STATUS_NOTIFICATION = "StatusNotification"
    METER_VALUES = "MeterValues"
    TRANSACTION_EVENT = "TransactionEvent"
    FIRMWARE_STATUS_NOTIFICATION = "FirmwareStatusNotification"


EvseId = Annotated[int, Field(ge=0, le=128)]
ConnectorId = Annotated[int, Field(ge=1, le=4)]
Word = Annotated[str, Field(max_length=36, pattern=r"^[^\x00-\x1f\x7f-\x9f]*$")]
"""A token or transaction id as OCPP carries it (36 characters), without control characters:
it goes into the task's detail and the station's log."""


class RemoteOperation(MessageBase):
    """Ask station ``tree`` to carry out ``operation`` as task ``task`` (see the module
    docstring). Arguments by operation:

    * ``reset``: ``immediate`` (else when idle); ``evse`` to reset one EVSE only;
    * ``start_charging``: ``evse`` (else the station picks one), ``id_token``;
    * ``stop_charging``: ``transaction_id``, or ``evse`` (its running transaction);
    * ``unlock_connector``: ``evse`` and ``connector``;
    * ``trigger_message``: ``message``, ``evse`` (and ``connector``) where it names one;
    * ``change_availability``: ``operative``, ``evse`` (else the whole station).
    """

    kind: Literal["RemoteOperation"] = "RemoteOperation"
    wire_id: ClassVar[int] = 27
    tree: Path = ROOT
    task: TaskId
    operation: OperationKind
    evse: EvseId | None = None
    connector: ConnectorId | None = None
    immediate: bool = False
    id_token: Word = ""
    transaction_id: Word = ""
    message: TriggeredMessage | None = None
    operative: bool = True

    @model_validator(mode="after")
    def _arguments(self) -> RemoteOperation:
        op = self.operation
        if op is OperationKind.UNLOCK_CONNECTOR and (not self.evse or self.connector is None):
            raise ValueError("unlock_connector names an evse (1 or more) and a connector")
        if op is OperationKind.STOP_CHARGING and not (self.transaction_id or self.evse):
            raise ValueError("stop_charging names a transaction_id or an evse")
        if op is OperationKind.TRIGGER_MESSAGE and self.message is None:
            raise ValueError("trigger_message names the message to send")
        if op is OperationKind.START_CHARGING and not self.id_token:
            raise ValueError("start_charging names the id_token to charge for")
        if self.connector is not None and not self.evse:
            raise ValueError("a connector belongs to an evse: name it too")
        return self

    def describe(self) -> str:
        """The operation in a few words, for a task's detail and logs."""
        parts = [self.operation.value]
        if self.message is not None:
            parts.append(self.message.value)
        if self.evse:
            parts.append(f"evse {self.evse}" + (f" connector {self.connector}"
                                                if self.connector is not None else ""))
        if self.transaction_id:
            parts.append(f"transaction {self.transaction_id}")
        if self.operation is OperationKind.RESET:
            parts.append("now" if self.immediate else "when idle")
        if self.operation is OperationKind.CHANGE_AVAILABILITY:
            parts.append("operative" if self.operative else "inoperative")
        return " ".join(parts)


__all__ = ["OperationKind", "RemoteOperation", "TriggeredMessage"]
