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
    SEALING_REQUIRED = "sealing_required"
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


# One class per code, named once. Keep the order of ErrorCode; a test checks that every
# code has exactly one class.

# -- key-paths and schema


class InvalidKeyPathError(ModelError):
    """Unparsable key-path."""

    code = ErrorCode.INVALID_KEYPATH


class UnknownPathError(ModelError):
    """No such key-path in the schema (or no such tree here)."""

    code = ErrorCode.UNKNOWN_PATH


class UnknownNamespaceError(ModelError):
    """Namespace not registered."""

    code = ErrorCode.UNKNOWN_NAMESPACE


class NotPresentError(ModelError):
    """Declared in the schema but holds no value now."""

    code = ErrorCode.NOT_PRESENT


class WrongTypeError(ModelError):
    """Value of the wrong type."""

    code = ErrorCode.WRONG_TYPE


class OutOfRangeError(ModelError):
    """Value outside its range."""

    code = ErrorCode.OUT_OF_RANGE


class InvalidValueError(ModelError):
    """Value fails a rule of its complex type."""

    code = ErrorCode.INVALID_VALUE


class PathConflictError(ModelError):
    """A leaf and a subtree would share a path."""

    code = ErrorCode.PATH_CONFLICT


# -- access control


class AccessDeniedError(ModelError):
    """The role may not touch this key-path (or the sender has no role)."""

    code = ErrorCode.ACCESS_DENIED


class NotReadableError(ModelError):
    """The node's access kind forbids reading."""

    code = ErrorCode.NOT_READABLE


class NotWritableError(ModelError):
    """The node's access kind forbids writing."""

    code = ErrorCode.NOT_WRITABLE


# -- tree history and resynchronisation


class HorizonPassedError(ModelError):
    """The history asked for was compacted away: compare digests instead."""

    code = ErrorCode.HORIZON_PASSED


class EpochMismatchError(ModelError):
    """The tree's history is not the one expected."""

    code = ErrorCode.EPOCH_MISMATCH


class RevisionAheadError(ModelError):
    """A revision newer than the tree's own."""

    code = ErrorCode.REVISION_AHEAD


class RevisionGapError(ModelError):
    """Changes do not follow on from the replica."""

    code = ErrorCode.REVISION_GAP


class RevisionConflictError(ModelError):
    """The tree moved on since the expected revision."""

    code = ErrorCode.REVISION_CONFLICT


class SnapshotInvalidError(ModelError):
    """A snapshot could not be restored."""

    code = ErrorCode.SNAPSHOT_INVALID


# -- messages, envelopes and transport


class MalformedMessageError(ModelError):
    """Bytes that do not decode."""

    code = ErrorCode.MALFORMED_MESSAGE


class InvalidMessageError(ModelError):
    """A message that decodes but breaks its schema."""

    code = ErrorCode.INVALID_MESSAGE


class UnsupportedVersionError(ModelError):
    """A protocol version we do not speak."""

    code = ErrorCode.UNSUPPORTED_VERSION


class UnknownKindError(ModelError):
    """Unknown message kind."""

    code = ErrorCode.UNKNOWN_KIND


class MessageTooLargeError(ModelError):
    """Bigger than the receiver accepts."""

    code = ErrorCode.MESSAGE_TOO_LARGE


class LimitExceededError(ModelError):
    """A size, depth or count limit was exceeded."""

    code = ErrorCode.LIMIT_EXCEEDED


class ExpiredError(ModelError):
    """The message's expiry passed before it could be handled."""

    code = ErrorCode.EXPIRED


class ReassemblyTimeoutError(ModelError):
    """A chunked message was not complete in time."""

    code = ErrorCode.REASSEMBLY_TIMEOUT


class ReassemblyOverflowError(ModelError):
    """A sender's partial messages exceed the memory granted to it."""

    code = ErrorCode.REASSEMBLY_OVERFLOW


class SequenceGapError(ModelError):
    """A stream skipped sequence numbers it cannot recover."""

    code = ErrorCode.SEQUENCE_GAP


# -- security


class BadSignatureError(ModelError):
    """A signature that is missing, malformed or does not verify."""

    code = ErrorCode.BAD_SIGNATURE


class DecryptionFailedError(ModelError):
    """An encrypted body that does not decrypt."""

    code = ErrorCode.DECRYPTION_FAILED


class SealingRequiredError(ModelError):
    """A secret written in clear where it must be sealed to its receiver's key."""

    code = ErrorCode.SEALING_REQUIRED


class ReplayedError(ModelError):
    """A message seen before, sent again by someone."""

    code = ErrorCode.REPLAYED


class StaleError(ModelError):
    """A message signed too long ago (or too far in the future)."""

    code = ErrorCode.STALE


class NotAdmittedError(ModelError):
    """The sender has not joined (or its admission was lost): join first."""

    code = ErrorCode.NOT_ADMITTED


# -- actors


class UnknownActorError(ModelError):
    """No actor at that address here."""

    code = ErrorCode.UNKNOWN_ACTOR


class UnsupportedOperationError(ModelError):
    """The receiver does not handle this request."""

    code = ErrorCode.UNSUPPORTED_OPERATION


class RequestTimeoutError(ModelError):
    """No answer within the time allowed (not the builtin TimeoutError)."""

    code = ErrorCode.TIMEOUT


class BusyError(ModelError):
    """The receiver cannot do it now: ask again later."""

    code = ErrorCode.BUSY


class InvalidStateError(ModelError):
    """Not allowed in the state the target is in."""

    code = ErrorCode.INVALID_STATE


class InternalError(ModelError):
    """A fault of the receiver, not of the request."""

    code = ErrorCode.INTERNAL_ERROR


_BY_CODE: dict[ErrorCode, type[ModelError]] = {
    cls.code: cls for cls in (
        InvalidKeyPathError, UnknownPathError, UnknownNamespaceError,
        NotPresentError, WrongTypeError, OutOfRangeError,
        InvalidValueError, PathConflictError, AccessDeniedError,
        NotReadableError, NotWritableError, HorizonPassedError,
        EpochMismatchError, RevisionAheadError, RevisionGapError,
        RevisionConflictError, SnapshotInvalidError, MalformedMessageError,
        InvalidMessageError, UnsupportedVersionError, UnknownKindError,
        MessageTooLargeError, LimitExceededError, ExpiredError,
        ReassemblyTimeoutError, ReassemblyOverflowError, SequenceGapError,
        BadSignatureError, DecryptionFailedError, SealingRequiredError, ReplayedError,
        StaleError, NotAdmittedError, UnknownActorError,
        UnsupportedOperationError, RequestTimeoutError, BusyError,
        InvalidStateError, InternalError,
    )
}


def error_class(code: ErrorCode) -> type[ModelError]:
    """The exception class of ``code`` (the same class every time)."""
    return _BY_CODE[code]


def from_exception(exc: BaseException) -> ModelError:
    """Any exception as a ``ModelError``: ours unchanged, a ``KeyPathError`` as invalid_keypath,
    anything else as internal_error (its text kept, since it is what a developer needs)."""
    if isinstance(exc, ModelError):
        return exc
    code = getattr(exc, "code", None)
    if code == ErrorCode.INVALID_KEYPATH.value:
        details: dict[str, Any] = {}
        position = getattr(exc, "position", None)
        if position is not None:
            details["position"] = position
        return InvalidKeyPathError(str(exc), path=getattr(exc, "text", None) or None, details=details)
    return InternalError(f"{type(exc).__name__}: {exc}")
