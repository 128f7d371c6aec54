"""OCPP-J frames (OCPP 2.0.1 Part 4 §4): ``[2, id, action, payload]`` a call,
``[3, id, payload]`` its result, ``[4, id, code, description, details]`` its error.

``parse`` turns a WebSocket text message into a frame or raises ``RpcError`` carrying the
code the other side is answered with (and the message id, when one could be read, so the
answer can name it); ``encode`` writes a frame. Payloads are checked against the official
schemas elsewhere (``actors.station.ocpp.schemas``): here only the frame's shape.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from typing import Any

_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")


def printable(text: str, limit: int = 64) -> str:
    """A charger's words as the tree, errors and logs take them: no control characters (a
    newline would forge a log line, an escape sequence reach an operator's terminal), at
    most ``limit`` characters."""
    return _CONTROL.sub("", text)[:limit]


CALL, CALL_RESULT, CALL_ERROR = 2, 3, 4
MAX_MESSAGE_ID = 36  # Part 4 §4.1.3: a string of at most 36 characters

# the error codes of Part 4 §4.3 (2.0.1 spells FormatViolation so)
FORMAT_VIOLATION = "FormatViolation"
GENERIC_ERROR = "GenericError"
INTERNAL_ERROR = "InternalError"
MESSAGE_TYPE_NOT_SUPPORTED = "MessageTypeNotSupported"
NOT_IMPLEMENTED = "NotImplemented"
NOT_SUPPORTED = "NotSupported"
PROTOCOL_ERROR = "ProtocolError"
PROPERTY_CONSTRAINT_VIOLATION = "PropertyConstraintViolation"
RPC_FRAMEWORK_ERROR = "RpcFrameworkError"
SECURITY_ERROR = "SecurityError"


@dataclass(frozen=True, slots=True)
class Call:
    id: str
    action: str
    payload: dict[str, Any]


@dataclass(frozen=True, slots=True)
class CallResult:
    id: str
    payload: dict[str, Any]


@dataclass(frozen=True, slots=True)
class CallError:
    id: str
    code: str
    description: str = ""
    details: dict[str, Any] = field(default_factory=dict)


Frame = Call | CallResult | CallError


class RpcError(Exception):
    """A message that cannot be served: answered with a CALLERROR of ``code`` (to
    ``message_id``, or to ``"-1"`` when none could be read, as Part 4 §4.2.3 says)."""

    def __init__(self, code: str, description: str, *, message_id: str | None = None,
                 details: dict[str, Any] | None = None, answered: bool = True) -> None:
        super().__init__(f"{code}: {description}")
        self.code, self.description = code, description
        self.message_id = message_id
        self.details = dict(details or {})
        self.answered = answered  # False: an answer of the peer's, malformed: never answered

    def answer(self) -> CallError:
        return CallError(self.message_id or "-1", self.code, self.description[:255],
                         self.details)


def parse(text: str | bytes) -> Frame:
    """The frame in ``text`` (see the module docstring)."""
    if isinstance(text, bytes):  # OCPP-J is text frames only
        raise RpcError(RPC_FRAMEWORK_ERROR, "OCPP-J messages are WebSocket text frames")
    try:
        frame = json.loads(text)
    except (ValueError, RecursionError):
        raise RpcError(RPC_FRAMEWORK_ERROR, "not JSON") from None
    if not isinstance(frame, list) or not frame or type(frame[0]) is not int:
        raise RpcError(RPC_FRAMEWORK_ERROR, "not an OCPP-J message: [type, id, ...]")
    kind = frame[0]
    message_id = frame[1] if len(frame) > 1 and isinstance(frame[1], str) else None
    if message_id is None or not 0 < len(message_id) <= MAX_MESSAGE_ID:
        raise RpcError(RPC_FRAMEWORK_ERROR, "the message id is a string of 1 to 36 characters")
    if kind == CALL:
        if len(frame) != 4 or not isinstance(frame[2], str) or not isinstance(frame[3], dict):
            raise RpcError(RPC_FRAMEWORK_ERROR, "a CALL is [2, id, action, {payload}]",
                           message_id=message_id)
        return Call(message_id, frame[2], frame[3])
    if kind == CALL_RESULT:
        if len(frame) != 3 or not isinstance(frame[2], dict):
            raise RpcError(RPC_FRAMEWORK_ERROR, "a CALLRESULT is [3, id, {payload}]",
                           message_id=message_id, answered=False)
        return CallResult(message_id, frame[2])
    if kind == CALL_ERROR:
        if (len(frame) != 5 or not isinstance(frame[2], str) or not isinstance(frame[3], str)
                or not isinstance(frame[4], dict)):
            raise RpcError(RPC_FRAMEWORK_ERROR,
                           "a CALLERROR is [4, id, code, description, {details}]",
                           message_id=message_id, answered=False)
        return CallError(message_id, frame[2], frame[3], frame[4])
    raise RpcError(MESSAGE_TYPE_NOT_SUPPORTED, f"message type {kind} is not 2, 3 or 4",
                   message_id=message_id)


def encode(frame: Frame) -> str:
    """The WebSocket text of ``frame``."""
    if isinstance(frame, Call):
        body: list[Any] = [CALL, frame.id, frame.action, frame.payload]
    elif isinstance(frame, CallResult):
        body = [CALL_RESULT, frame.id, frame.payload]
    else:
        body = [CALL_ERROR, frame.id, frame.code, frame.description, frame.details]
    return json.dumps(body, separators=(",", ":"), ensure_ascii=False)


__all__ = ["CALL", "CALL_ERROR", "CALL_RESULT", "FORMAT_VIOLATION", "GENERIC_ERROR",
           "INTERNAL_ERROR", "MESSAGE_TYPE_NOT_SUPPORTED", "NOT_IMPLEMENTED", "NOT_SUPPORTED",
           "PROPERTY_CONSTRAINT_VIOLATION", "PROTOCOL_ERROR", "RPC_FRAMEWORK_ERROR", "SECURITY_ERROR",
           "Call", "CallError",
           "CallResult", "Frame", "RpcError", "encode", "parse", "printable"]
