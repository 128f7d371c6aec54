"""The envelope: what travels between actors, whatever the broker.

An envelope carries one message body (msgpack of a catalogue message) plus what the bridge
needs to route, prioritise, order, de-duplicate, reassemble and secure it. Actors address each
other by *actor addresses* (``cs-17``, ``local-site1``, ``cloud``) and groups by *group
addresses* (``group:site1``); how an address maps to the broker (JIDs, rooms, components) is the
transport's business and never leaves ``broker_bridge``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from enum import IntEnum
from typing import Any, NamedTuple

PROTOCOL_VERSION = 1
GROUP_PREFIX = "group:"
_ADDRESS = re.compile(r"(group:)?[A-Za-z0-9][A-Za-z0-9._-]{0,127}")


class Priority(IntEnum):
    """Priority classes; a lower value leaves first."""

    CRITICAL = 0  # safety: emergency stops, fault reports
    CONTROL = 1  # control: permissions, set points, acks, request/response
    STATE = 2  # state: change notifications, resynchronisation
    BULK = 3  # bulk telemetry: monitoring reports, logs, blobs


def is_group(address: str) -> bool:
    """True for a broadcast (group) address."""
    return address.startswith(GROUP_PREFIX)


_VALID: set[str] = set()


def valid_address(address: str) -> bool:
    """Actor and group addresses: letters, digits, ``. _ -``; at most 128 characters.

    Addresses repeat endlessly on the wire, so valid ones are remembered (up to a bound)."""
    if type(address) is not str:  # before the set: a list or a map is not even hashable
        return False
    if address in _VALID:
        return True
    if not _ADDRESS.fullmatch(address):
        return False
    if len(_VALID) < 100_000:
        _VALID.add(address)
    return True


@dataclass(frozen=True, slots=True)
class ChunkInfo:
    """Position of a chunk in a message split for small frames."""

    index: int
    count: int
    total_size: int  # size of the whole body


class Envelope(NamedTuple):
    """One message on its way between two actors (or an actor and a group).

    ``id`` is the end-to-end 128-bit message id (time-ordered); ``correlation`` the id of the
    request this answers. Reliable envelopes carry a stream position: ``stream`` (a name),
    ``stream_epoch`` (new when the sender's stream state was lost), ``seq`` and ``base`` (the
    lowest sequence number the sender may still send, so the receiver knows which gaps will
    never be filled). ``kind`` names the catalogue message in ``body``.

    An immutable named tuple rather than a frozen dataclass: receivers build tens of thousands
    per second, and a frozen dataclass of this size costs six times as much to construct.
    Build it with keywords.
    """

    id: bytes
    source: str
    destination: str
    kind: str
    body: bytes
    priority: Priority = Priority.CONTROL
    timestamp_us: int = 0
    expires_us: int | None = None
    correlation: bytes | None = None
    reliable: bool = False
    stream: str | None = None
    stream_epoch: int = 0
    seq: int = 0
    base: int = 0
    chunk: ChunkInfo | None = None
    signature: bytes | None = None
    encryption: bytes | None = None
    version: int = PROTOCOL_VERSION

    def expired(self, now_us: int) -> bool:
        return self.expires_us is not None and now_us >= self.expires_us

    def with_changes(self, **changes: Any) -> Envelope:
        return self._replace(**changes)
