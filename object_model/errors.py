"""Stable error codes and the exceptions that carry them.

Every rejection anywhere in the system is an exception whose class knows its ``ErrorCode``;
turning any of them into an ``ErrorReport`` for the sender is one generic step
(``object_model.messages.error_report``). The codes are part of the wire protocol: never rename
or reuse one, only add.
"""

from __future__ import annotations

from enum import StrEnum
from typing import Any, ClassVar


class ErrorCode(StrEnum):
    """Why something was rejected. Values are stable wire identifiers."""

    # key-paths and schema
    INVALID_KEYPATH = "invalid_keypath"
    UNKNOWN_PATH = "unknown_path"
    UNKNOWN_NAMESPACE = "unknown_namespace"
    NOT_PRESENT = "not_present"
    WRONG_TYPE = "wrong_type"
    OUT_OF_RANGE = "out_of_range"
    INVALID_VALUE = "invalid_value"
    PATH_CONFLICT = "path_conflict"
    # access control
    ACCESS_DENIED = "access_denied"
    NOT_READABLE = "not_readable"
    NOT_WRITABLE = "not_writable"
    # tree history and resynchronisation
    HORIZON_PASSED = "horizon_passed"
    EPOCH_MISMATCH = "epoch_mismatch"
    REVISION_AHEAD = "revision_ahead"
    REVISION_GAP = "revision_gap"
    REVISION_CONFLICT = "revision_conflict"
    SNAPSHOT_INVALID = "snapshot_invalid"
    # messages, envelopes and transport
    MALFORMED_MESSAGE = "malformed_message"
    INVALID_MESSAGE = "invalid_message"
    UNSUPPORTED_VERSION = "unsupported_version"
    UNKNOWN_KIND = "unknown_kind"
    MESSAGE_TOO_LARGE = "message_too_large"
    LIMIT_EXCEEDED = "limit_exceeded"
    EXPIRED = "expired"
    REASSEMBLY_TIMEOUT = "reassembly_timeout"
    REASSEMBLY_OVERFLOW = "reassembly_overflow"
    SEQUENCE_GAP = "sequence_gap"
    # security
    BAD_SIGNATURE = "bad_signature"
    DECRYPTION_FAILED = "decryption_failed"
    REPLAYED = "replayed"
    STALE = "stale"
    NOT_ADMITTED = "not_admitted"
    # actors
    UNKNOWN_ACTOR = "unknown_actor"
    UNSUPPORTED_OPERATION = "unsupported_operation"
    TIMEOUT = "timeout"
    BUSY = "busy"
    INVALID_STATE = "invalid_state"
    INTERNAL_ERROR = "internal_error"


class ModelError(Exception):
    """Base of every error that becomes an ``ErrorReport``.

    ``path`` is the key-path concerned (text), ``details`` structured facts for programs.
    """

    code: ClassVar[ErrorCode] = ErrorCode.INTERNAL_ERROR

    def __init__(
        self, text: str, *, path: object | None = None, details: dict[str, Any] | None = None
    ) -> None:
        super().__init__(text)
        self.text = text
        self.path = None if path is None else str(path)
        self.details: dict[str, Any] = dict(details or {})

    def at(self, path: object) -> ModelError:
        """Attach the key-path concerned when the raiser did not know it; returns self."""
        if self.path is None:
            self.path = str(path)
        return self

    def __str__(self) -> str:
        where = f" (at {self.path})" if self.path else ""
        return f"{self.code.value}: {self.text}{where}"


def _error(name: str, error_code: ErrorCode, doc: str) -> type[ModelError]:
    return type(name, (ModelError,), {"code": error_code, "__doc__": doc})


InvalidKeyPathError = _error("InvalidKeyPathError", ErrorCode.INVALID_KEYPATH, "Unparsable key-path.")
UnknownPathError = _error("UnknownPathError", ErrorCode.UNKNOWN_PATH, "No such key-path in the schema.")
UnknownNamespaceError = _error(
    "UnknownNamespaceError", ErrorCode.UNKNOWN_NAMESPACE, "Namespace not registered."
)
NotPresentError = _error(
    "NotPresentError", ErrorCode.NOT_PRESENT, "Declared in the schema but holds no value now."
)
WrongTypeError = _error("WrongTypeError", ErrorCode.WRONG_TYPE, "Value of the wrong type.")
OutOfRangeError = _error("OutOfRangeError", ErrorCode.OUT_OF_RANGE, "Value outside its range.")
InvalidValueError = _error(
    "InvalidValueError", ErrorCode.INVALID_VALUE, "Value fails a rule of its complex type."
)
PathConflictError = _error(
    "PathConflictError", ErrorCode.PATH_CONFLICT, "A leaf and a subtree would share a path."
)
AccessDeniedError = _error(
    "AccessDeniedError", ErrorCode.ACCESS_DENIED, "The role may not touch this key-path."
)
NotReadableError = _error(
    "NotReadableError", ErrorCode.NOT_READABLE, "The node's access kind forbids reading."
)
NotWritableError = _error(
    "NotWritableError", ErrorCode.NOT_WRITABLE, "The node's access kind forbids writing."
)
HorizonPassedError = _error(
    "HorizonPassedError",
    ErrorCode.HORIZON_PASSED,
    "The history asked for was compacted away: compare digests instead.",
)
EpochMismatchError = _error(
    "EpochMismatchError", ErrorCode.EPOCH_MISMATCH, "The tree's history is not the one expected."
)
RevisionAheadError = _error(
    "RevisionAheadError", ErrorCode.REVISION_AHEAD, "A revision newer than the tree's own."
)
RevisionGapError = _error(
    "RevisionGapError", ErrorCode.REVISION_GAP, "Changes do not follow on from the replica."
)
RevisionConflictError = _error(
    "RevisionConflictError", ErrorCode.REVISION_CONFLICT, "The tree moved on since the expected revision."
)
SnapshotInvalidError = _error(
    "SnapshotInvalidError", ErrorCode.SNAPSHOT_INVALID, "A snapshot could not be restored."
)
MalformedMessageError = _error(
    "MalformedMessageError", ErrorCode.MALFORMED_MESSAGE, "Bytes that do not decode."
)
InvalidMessageError = _error(
    "InvalidMessageError", ErrorCode.INVALID_MESSAGE, "A message that decodes but breaks its schema."
)
UnknownKindError = _error("UnknownKindError", ErrorCode.UNKNOWN_KIND, "Unknown message kind.")
UnsupportedVersionError = _error(
    "UnsupportedVersionError", ErrorCode.UNSUPPORTED_VERSION, "A protocol version we do not speak."
)
MessageTooLargeError = _error(
    "MessageTooLargeError", ErrorCode.MESSAGE_TOO_LARGE, "Bigger than the receiver accepts."
)
LimitExceededError = _error(
    "LimitExceededError", ErrorCode.LIMIT_EXCEEDED, "A size, depth or count limit was exceeded."
)
UnsupportedOperationError = _error(
    "UnsupportedOperationError",
    ErrorCode.UNSUPPORTED_OPERATION,
    "The receiver does not handle this request.",
)


def error_class(code: ErrorCode) -> type[ModelError]:
    """The exception class for a code (a generic ``ModelError`` subclass if none is named)."""
    for cls in _ALL:
        if cls.code is code:
            return cls
    return _error(f"{code.name.title().replace('_', '')}Error", code, f"Error {code.value}.")


_ALL: list[type[ModelError]] = [
    v for v in list(globals().values()) if isinstance(v, type) and issubclass(v, ModelError)
]


def from_exception(exc: BaseException) -> ModelError:
    """Any exception as a ``ModelError``: ours unchanged, a ``KeyPathError`` as invalid_keypath,
    anything else as internal_error (its text kept, since it is what a developer needs)."""
    if isinstance(exc, ModelError):
        return exc
    code = getattr(exc, "code", None)
    if code == ErrorCode.INVALID_KEYPATH.value:
        details: dict[str, Any] = {}
        if getattr(exc, "position", None) is not None:
            details["position"] = exc.position  # type: ignore[attr-defined]
        return InvalidKeyPathError(str(exc), path=getattr(exc, "text", None) or None, details=details)
    err = ModelError(f"{type(exc).__name__}: {exc}")
    return err
