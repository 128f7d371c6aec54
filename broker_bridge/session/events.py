"""What the session tells its caller: facts, as frozen records with past-tense names."""

from __future__ import annotations

from dataclasses import dataclass

from broker_bridge.envelope import Envelope, Priority
from object_model.errors import ErrorCode


@dataclass(frozen=True, slots=True)
class Frame:
    """Bytes for the transport: one stanza to ``destination`` carrying ``count`` envelopes."""

    destination: str
    data: bytes
    count: int
    priority: Priority


@dataclass(frozen=True, slots=True)
class EnvelopeReceived:
    """An envelope for a local actor, in stream order and never twice."""

    envelope: Envelope


@dataclass(frozen=True, slots=True)
class EnvelopesAcked:
    """Reliable envelopes the destination confirmed (the outbox may forget them)."""

    ids: tuple[bytes, ...]


@dataclass(frozen=True, slots=True)
class EnvelopeAbandoned:
    """A reliable envelope expired before it was acknowledged (the outbox may forget it)."""

    envelope: Envelope
    reason: str


@dataclass(frozen=True, slots=True, kw_only=True)
class GapDetected:
    """Envelopes ``first_missing`` up to (not including) ``resumed_at`` of a stream will never
    arrive: whatever state they carried must be resynchronised."""

    source: str
    destination: str
    stream: str
    first_missing: int
    resumed_at: int


@dataclass(frozen=True, slots=True, kw_only=True)
class StreamReset:
    """The sender of a stream lost its stream state (new epoch): resynchronise with it."""

    source: str
    destination: str
    stream: str
    old_epoch: int
    new_epoch: int


@dataclass(frozen=True, slots=True, kw_only=True)
class InputRejected:
    """Something received was refused (an ErrorReport went back where possible)."""

    sender: str | None
    code: ErrorCode
    text: str
    message_id: bytes | None = None
    answered: bool = False


SessionEvent = (
    EnvelopeReceived | EnvelopesAcked | EnvelopeAbandoned | GapDetected | StreamReset
    | InputRejected
)
