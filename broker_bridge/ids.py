"""128-bit end-to-end message ids: unique, and ordered by creation time.

Layout (big-endian): 48 bits of Unix milliseconds, 16 bits of a counter within that
millisecond, 64 random bits fixed per generator. Ids from one generator sort in creation order
(the counter keeps order within a millisecond, and a generator never goes back in time even if
the clock does); ids from different generators differ in their random part. The time is passed
in: this module never reads the clock.
"""

from __future__ import annotations

import secrets

ID_BYTES = 16


class MessageIds:
    """A generator of message ids for one process or endpoint."""

    __slots__ = ("_counter", "_last_ms", "_node")

    def __init__(self, node: int | None = None) -> None:
        self._node = secrets.randbits(64) if node is None else node & (2**64 - 1)
        self._last_ms = 0
        self._counter = 0

    def new(self, now_us: int) -> bytes:
        """A fresh id for a message created at ``now_us`` (microseconds since the epoch)."""
        ms = now_us // 1000
        if ms <= self._last_ms:
            ms = self._last_ms
            self._counter += 1
            if self._counter > 0xFFFF:  # more than 65,536 ids in one millisecond: borrow the next
                ms += 1
                self._counter = 0
        else:
            self._counter = 0
        self._last_ms = ms
        value = ((ms & (2**48 - 1)) << 80) | (self._counter << 64) | self._node
        return value.to_bytes(ID_BYTES, "big")


def id_time_ms(message_id: bytes) -> int:
    """The creation time (Unix milliseconds) encoded in an id."""
    return int.from_bytes(message_id[:6], "big")


def short(message_id: bytes) -> str:
    """A short hex form for logs."""
    return message_id.hex()[:12]
