"""128-bit end-to-end message ids: unique, ordered by creation time, and unguessable.

Layout (big-endian): 48 bits of Unix milliseconds, 16 bits of a counter within that
millisecond, and 64 random bits drawn afresh for every id from the operating system's
generator. Ids from one generator sort in creation order (the counter keeps order within a
millisecond, and a generator never goes back in time even if the clock does). The random part
is new each time because ids are seen by others (every ``ErrorReport`` and ``Ack`` quotes
one): had it been fixed per generator, one id would give away the next, and with it a cheap
forged acknowledgement. The time is passed in: this module never reads the clock.
"""

from __future__ import annotations

import secrets

ID_BYTES = 16
_POOL_BYTES = 8 * 512  # random bytes drawn from the system at a time, 8 per id


class MessageIds:
    """A generator of message ids for one process or endpoint."""

    __slots__ = ("_counter", "_last_ms", "_pool", "_taken")

    def __init__(self) -> None:
        self._last_ms = 0
        self._counter = 0
        self._pool = b""
        self._taken = 0

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
        taken = self._taken
        if taken >= len(self._pool):
            self._pool, taken = secrets.token_bytes(_POOL_BYTES), 0
        self._taken = taken + 8
        head = ((ms & (2**48 - 1)) << 16) | self._counter
        return head.to_bytes(8, "big") + self._pool[taken:taken + 8]


def id_time_ms(message_id: bytes) -> int:
    """The creation time (Unix milliseconds) encoded in an id."""
    return int.from_bytes(message_id[:6], "big")


def short(message_id: bytes) -> str:
    """A short hex form for logs."""
    return message_id.hex()[:12]
