"""Incoming envelopes: de-duplication, chunk reassembly and per-stream ordering.

Theory of operation. The broker may lose envelopes (around restarts) and duplicate them (stream
management resends), and a priority queue at the sender reorders classes on purpose. So:

* every envelope id is remembered in a bounded window and a second copy is dropped;
* a chunked envelope is held until all its chunks are in, within a memory bound per sender and
  a timeout, and rejected beyond either;
* reliable envelopes carry ``(stream, epoch, seq, base)``. Each stream delivers in ``seq``
  order from ``expected``; later envelopes wait in a bounded reorder buffer. ``base`` is the
  lowest number the sender may still send: when it passes ``expected``, the envelopes in
  between were abandoned by the sender and will never come, which is a gap the application must
  repair by resynchronising. A new ``epoch`` means the sender lost its stream state: a reset.

The transitions of one stream, for an envelope numbered ``seq``:

    ==========================  ==================================================
    condition                   action
    ==========================  ==================================================
    unknown stream              start at ``base`` (the sender's oldest open seq)
    other epoch                 StreamReset; restart at ``base``
    base > expected             GapDetected(expected, base); deliver what waited
                                below ``base``; expected = base
    seq < expected              duplicate: acknowledge again, do not deliver
    seq == expected             deliver, then every consecutive waiting envelope
    seq > expected              wait (bounded; beyond the bound, drop unacked so
                                the sender retransmits)
    stuck past gap_timeout      GapDetected; skip to the lowest waiting envelope
    ==========================  ==================================================
"""

from __future__ import annotations

from collections import OrderedDict, deque
from collections.abc import Iterable
from dataclasses import dataclass, field
from enum import Enum

from broker_bridge.envelope import Envelope, is_group
from broker_bridge.session.config import SessionConfig
from broker_bridge.session.events import GapDetected, SessionEvent, StreamReset
from object_model.errors import (
    ErrorCode,
    LimitExceededError,
    MessageTooLargeError,
    ModelError,
    error_class,
)

StreamKey = tuple[str, str, str]  # (source, destination, stream)
RETIRED_EPOCHS = 16  # per stream: stragglers of this many lost stream states are recognised


class Verdict(Enum):
    """What an envelope offered to ``InboundStreams.accept`` turned out to be."""

    NEW = "new"  # not seen before: delivered now or waiting in the reorder buffer
    DELIVERED = "delivered"  # a copy of something delivered before: acknowledge it again
    WAITING = "waiting"  # a copy of something not deliverable yet (so not acknowledged)


def seen_key(source: str, message_id: bytes) -> bytes:
    """How the dedupe window (and the outbox that keeps it) names a delivered envelope: its
    id with its sender, since an id is unique only per sender."""
    return message_id + source.encode("utf-8")


class DedupeWindow:
    """The last ``size`` envelopes delivered, as ``(sender, id)``, in arrival order.

    Keyed by sender, not by id alone: otherwise anyone who learnt (or guessed) the id of a
    message could send their own envelope with it first and have the genuine one dropped as a
    duplicate. Only delivered envelopes are added (after the guard opened them), never
    envelopes merely received. An ``OrderedDict``: evicting the oldest of a plain dict with
    ``next(iter(d))`` scans the slots freed by earlier evictions, which made every add linear
    once the window was full."""

    def __init__(self, size: int) -> None:
        self.size = size
        self._keys: OrderedDict[bytes, None] = OrderedDict()

    def seen(self, source: str, message_id: bytes) -> bool:
        return seen_key(source, message_id) in self._keys

    def add(self, source: str, message_id: bytes) -> None:
        self._remember(seen_key(source, message_id))

    def _remember(self, key: bytes) -> None:
        keys = self._keys
        keys[key] = None
        if len(keys) > self.size:
            keys.popitem(last=False)

    def keys(self) -> list[bytes]:
        """Every ``seen_key`` in the window, oldest first (what the outbox persists)."""
        return list(self._keys)

    def restore(self, keys: Iterable[bytes]) -> None:
        """The window as ``keys`` saved it. Keys of 16 bytes or less (an outbox written
        before ids were keyed by sender) name no sender and are left out."""
        for key in keys:
            if type(key) is bytes and len(key) > 16:
                self._remember(key)

    def __len__(self) -> int:
        return len(self._keys)


@dataclass
class _Partial:
    first: Envelope
    count: int
    total: int
    started: int
    peer: str  # whose budget it is charged to (``_budget``)
    pieces: dict[int, bytes] = field(default_factory=dict)
    size: int = 0


def _budget(env: Envelope) -> str:
    """Whose reassembly budget a chunk is charged to: its sender's for a direct message, the
    room's for a broadcast (whose claimed source nobody vouches for: a room member must not
    spend another actor's budget)."""
    return env.destination if is_group(env.destination) else env.source


class Reassembler:
    """Collects chunks per (destination, sender, id) within a timeout and memory bounds: per
    sender (bytes and messages; a room is one sender), and for every sender together, so that
    many senders, or one claiming many sources, cannot add up to unbounded memory, and one
    cannot take every slot."""

    def __init__(self, config: SessionConfig) -> None:
        self.config = config
        self._partials: dict[tuple[str, str, bytes], _Partial] = {}
        self._bytes_by_peer: dict[str, int] = {}
        self._count_by_peer: dict[str, int] = {}
        self._bytes = 0

    @property
    def held_bytes(self) -> int:
        """Bytes of partial messages held, every sender's together."""
        return self._bytes

    def add(self, env: Envelope, now: int) -> Envelope | None:
        """The whole envelope once its last chunk is in, else ``None``; raises a
        ``ModelError`` (its ErrorCode says why) when the message must be refused."""
        chunk = env.chunk
        assert chunk is not None
        key = (env.destination, env.source, env.id)
        partial = self._partials.get(key)
        if partial is None:
            if chunk.total_size > self.config.max_message_bytes:
                raise _refuse(MessageTooLargeError.code,
                              f"message of {chunk.total_size} bytes exceeds the limit of "
                              f"{self.config.max_message_bytes}", env)
            peer = _budget(env)
            used = self._bytes_by_peer.get(peer, 0)
            if used + chunk.total_size > self.config.reassembly_max_bytes_per_peer:
                raise _refuse(ErrorCode.REASSEMBLY_OVERFLOW,
                              f"reassembly buffer for {peer} would exceed "
                              f"{self.config.reassembly_max_bytes_per_peer} bytes", env)
            if self._count_by_peer.get(peer, 0) >= self.config.reassembly_max_messages_per_peer:
                raise _refuse(ErrorCode.REASSEMBLY_OVERFLOW,
                              f"{peer} has {self.config.reassembly_max_messages_per_peer} "
                              "messages being put together here already", env)
            if (self._bytes + chunk.total_size > self.config.reassembly_max_bytes
                    or len(self._partials) >= self.config.reassembly_max_messages):
                raise _refuse(ErrorCode.REASSEMBLY_OVERFLOW,
                              "the reassembly buffers of all senders are full: try again "
                              "later", env)
            if chunk.count > chunk.total_size + 1:
                raise _refuse(ErrorCode.MALFORMED_MESSAGE, "more chunks than bytes", env)
            partial = self._partials[key] = _Partial(env, chunk.count, chunk.total_size, now,
                                                     peer)
            self._bytes_by_peer[peer] = used + chunk.total_size
            self._count_by_peer[peer] = self._count_by_peer.get(peer, 0) + 1
            self._bytes += chunk.total_size
        if chunk.count != partial.count or chunk.total_size != partial.total:
            self._drop(key)
            raise _refuse(ErrorCode.MALFORMED_MESSAGE, "chunks disagree on count or size", env)
        if chunk.index in partial.pieces:
            return None
        partial.pieces[chunk.index] = env.body
        partial.size += len(env.body)
        if partial.size > partial.total:
            self._drop(key)
            raise _refuse(ErrorCode.MALFORMED_MESSAGE, "chunks exceed the declared size", env)
        if len(partial.pieces) < partial.count:
            return None
        self._drop(key)
        body = b"".join(partial.pieces[i] for i in range(partial.count))
        if len(body) != partial.total:
            raise _refuse(ErrorCode.MALFORMED_MESSAGE, "reassembled size is wrong", env)
        return partial.first.with_changes(body=body, chunk=None)

    def _drop(self, key: tuple[str, str, bytes]) -> None:
        partial = self._partials.pop(key, None)
        if partial is not None:
            self._bytes -= partial.total
            peer = partial.peer
            left = self._bytes_by_peer.get(peer, 0) - partial.total
            if left > 0:
                self._bytes_by_peer[peer] = left
            else:
                self._bytes_by_peer.pop(peer, None)
            count = self._count_by_peer.get(peer, 0) - 1
            if count > 0:
                self._count_by_peer[peer] = count
            else:
                self._count_by_peer.pop(peer, None)

    def expire(self, now: int) -> list[Envelope]:
        """Drop partial messages older than the timeout; returns their first chunks."""
        limit = now - self.config.reassembly_timeout_us
        stale = [k for k, p in self._partials.items() if p.started <= limit]
        out = []
        for key in stale:
            out.append(self._partials[key].first)
            self._drop(key)
        return out

    def next_deadline(self) -> int | None:
        if not self._partials:
            return None
        return min(p.started for p in self._partials.values()) + self.config.reassembly_timeout_us

    @property
    def buffered_bytes(self) -> int:
        return self._bytes


def _refuse(code: ErrorCode, text: str, env: Envelope) -> ModelError:
    return error_class(code)(text, details={"id": env.id, "source": env.source})


@dataclass
class _InStream:
    epoch: int
    expected: int
    waiting: dict[int, Envelope] = field(default_factory=dict)
    stuck_since: int | None = None


class InboundStreams:
    """Ordering state of every reliable stream this endpoint receives, within bounds: streams
    from one sender to one local actor, and in all (a new stream beyond them is refused with ``LIMIT_EXCEEDED``), and
    the bytes waiting in every reorder buffer together (beyond it an early envelope is
    dropped unacknowledged, so its sender sends it again)."""

    def __init__(self, config: SessionConfig) -> None:
        self.config = config
        self._streams: dict[StreamKey, _InStream] = {}
        self._per_pair: dict[tuple[str, str], int] = {}
        self._waiting_bytes = 0
        # oldest first, so the bound evicts the oldest: evicting an arbitrary one (set.pop)
        # could drop the epoch just retired, whose stragglers would then reset the stream
        self._retired: dict[StreamKey, deque[int]] = {}

    def restore(self, key: StreamKey, epoch: int, expected: int) -> None:
        if key not in self._streams:
            self._per_pair[key[:2]] = self._per_pair.get(key[:2], 0) + 1
        self._streams[key] = _InStream(epoch, expected)

    def position(self, key: StreamKey) -> tuple[int, int] | None:
        st = self._streams.get(key)
        return None if st is None else (st.epoch, st.expected)

    def accept(self, env: Envelope, now: int, events: list[SessionEvent]
               ) -> tuple[list[Envelope], Verdict]:
        """Deliverable envelopes in order, and what ``env`` was (see ``Verdict``; a straggler of
        a retired epoch counts as ``WAITING``: never delivered, never acknowledged).
        ``LimitExceededError`` when ``env`` would open a stream beyond the bounds (its
        ``details["scope"]`` says which: ``pair`` or ``all``)."""
        key = (env.source, env.destination, env.stream or "")
        st = self._streams.get(key)
        if st is None or st.epoch != env.stream_epoch:
            if env.stream_epoch in self._retired.get(key, ()):
                return [], Verdict.WAITING  # a straggler from a stream state the sender lost
            if st is None:
                self._admit(key[0], key[1])
            else:
                events.append(StreamReset(source=env.source, destination=env.destination,
                                          stream=key[2], old_epoch=st.epoch,
                                          new_epoch=env.stream_epoch))
                retired = self._retired.get(key)
                if retired is None:
                    retired = self._retired[key] = deque(maxlen=RETIRED_EPOCHS)
                retired.append(st.epoch)  # a full deque drops its oldest
                self._waiting_bytes -= sum(len(e.body) for e in st.waiting.values())
            st = self._streams[key] = _InStream(env.stream_epoch, env.base)
        out: list[Envelope] = []
        if env.base > st.expected:
            events.append(GapDetected(source=env.source, destination=env.destination,
                                      stream=key[2], first_missing=st.expected,
                                      resumed_at=env.base))
            for seq in sorted(s for s in st.waiting if s < env.base):
                out.append(self._unwait(st, seq))
            st.expected = env.base
            self._drain(st, out)  # what waited at the new position can go now
        if env.seq < st.expected:
            return out, Verdict.DELIVERED
        if env.seq in st.waiting:
            return out, Verdict.WAITING
        if env.seq == st.expected:
            out.append(env)
            st.expected += 1
            self._drain(st, out)
        elif (len(st.waiting) < self.config.reorder_max_envelopes and self._waiting_bytes
              + len(env.body) <= self.config.reorder_max_bytes):
            st.waiting[env.seq] = env
            self._waiting_bytes += len(env.body)
        if not st.waiting:
            st.stuck_since = None
        elif out or st.stuck_since is None:
            st.stuck_since = now  # the clock for a gap restarts whenever the stream moves
        return out, Verdict.NEW

    def _admit(self, source: str, destination: str) -> None:
        """Make room for one more stream from ``source`` to ``destination``, or refuse it."""
        have = self._per_pair.get((source, destination), 0)
        limit = self.config.max_in_streams_per_pair
        if have >= limit:
            raise LimitExceededError(
                f"{source} has {have} reliable streams open to {destination}; at most "
                f"{limit} are allowed", details={"scope": "pair", "limit": limit})
        if len(self._streams) >= self.config.max_in_streams:
            raise LimitExceededError(
                f"{len(self._streams)} reliable streams are open here, the limit",
                details={"scope": "all", "limit": self.config.max_in_streams})
        self._per_pair[(source, destination)] = have + 1

    def _unwait(self, st: _InStream, seq: int) -> Envelope:
        env = st.waiting.pop(seq)
        self._waiting_bytes -= len(env.body)
        return env

    def _drain(self, st: _InStream, out: list[Envelope]) -> None:
        while st.expected in st.waiting:
            out.append(self._unwait(st, st.expected))
            st.expected += 1

    def expire(self, now: int, events: list[SessionEvent]) -> list[Envelope]:
        """Skip gaps that stayed open past the timeout; returns what became deliverable."""
        out: list[Envelope] = []
        limit = now - self.config.gap_timeout_us
        for key, st in self._streams.items():
            if st.stuck_since is None or st.stuck_since > limit or not st.waiting:
                continue
            resume = min(st.waiting)
            events.append(GapDetected(source=key[0], destination=key[1], stream=key[2],
                                      first_missing=st.expected, resumed_at=resume))
            st.expected = resume
            self._drain(st, out)
            st.stuck_since = now if st.waiting else None
        return out

    def next_deadline(self) -> int | None:
        stuck = [st.stuck_since for st in self._streams.values() if st.stuck_since is not None]
        return min(stuck) + self.config.gap_timeout_us if stuck else None

    def positions(self) -> dict[StreamKey, tuple[int, int]]:
        return {k: (st.epoch, st.expected) for k, st in self._streams.items()}


__all__ = ["DedupeWindow", "InboundStreams", "Reassembler", "Verdict", "seen_key"]
