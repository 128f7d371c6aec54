"""The session: everything between actors and a byte-moving transport, without I/O.

Theory of operation
-------------------
The caller (an asyncio adapter, or a test with a fake clock) drives it:

* ``send(...)`` turns a message body into an envelope and queues it (``outqueue``);
* ``pop_frames(now, budget)`` yields frames for the transport, highest priority first, as fast
  as the link drains;
* ``receive_frame(data, now)`` takes a frame off the wire: envelopes are decoded strictly,
  reassembled, opened by the guard, de-duplicated and put in stream order (``inbound``);
* ``handle_timer(now)`` runs what is due: acknowledgements, retransmissions, reassembly and gap
  timeouts; ``next_deadline()`` says when it next needs calling;
* ``drain_events()`` returns what happened (envelopes to deliver, acks, gaps, rejections).

Reliability. A reliable envelope gets a stream position and stays *pending* until its
destination acknowledges it (an ``Ack`` message, or an ``ErrorReport`` answering it, which is a
final answer too). It is retransmitted with exponential backoff and jitter until acknowledged or
expired, and at once when the link comes back. With ``durable`` set, the outbox handshake makes
the ordering explicit: ``take_unpersisted`` -> write to disk -> ``mark_persisted``; only then may
the envelope leave. Receivers acknowledge only what they delivered, and (``durable``) only after
``take_receipts`` -> write the dedupe window and stream positions -> ``mark_receipts_persisted``,
so an acknowledged envelope is never delivered twice, even across a restart.

Security. Every envelope the session queues passes the guard's ``seal`` just before it is
encoded and chunked (so a retransmission is sealed with its current header), and every
envelope received passes ``open`` once reassembled, before anything acts on it (``guard``).
The default guard changes nothing.

Rejections. Anything undecodable or unacceptable becomes an ``InputRejected`` event and, where
the sender is addressable and within a per-sender rate, an ``ErrorReport`` back to it. Acks and
ErrorReports are never answered with ErrorReports (no loops); what the guard refuses is answered
only where the guard allows it.
"""

from __future__ import annotations

import heapq
import random
import secrets
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from broker_bridge.codec import (
    MAX_FRAME_BYTES,
    decode_body,
    decode_envelope,
    decode_frame,
    encode_body,
    encode_envelope,
    frame_overhead,
    is_manifest,
)
from broker_bridge.envelope import ChunkInfo, Envelope, Priority, is_group, valid_address
from broker_bridge.ids import MessageIds
from broker_bridge.session.config import MS, SessionConfig
from broker_bridge.session.events import (
    EnvelopeAbandoned,
    EnvelopeReceived,
    EnvelopesAcked,
    Frame,
    GapDetected,
    InputRejected,
    SessionEvent,
    StreamReset,
)
from broker_bridge.session.guard import NULL_GUARD, EnvelopeGuard
from broker_bridge.session.inbound import (
    DedupeWindow,
    InboundStreams,
    Reassembler,
    StreamKey,
    Verdict,
)
from broker_bridge.session.outqueue import OutQueue
from broker_bridge.session.traffic import TrafficCounters
from broker_bridge.transport import UNKNOWN_ORIGIN, Origin
from object_model.errors import (
    AccessDeniedError,
    ErrorCode,
    ExpiredError,
    LimitExceededError,
    MalformedMessageError,
    MessageTooLargeError,
    ModelError,
    ReassemblyTimeoutError,
    UnknownActorError,
    from_exception,
)
from object_model.messages import Ack, Pause, error_report

SIGNATURE_ROOM = 80
"""Bytes a piece's own signature takes (a key id and an Ed25519 signature, and framing)."""
MANIFEST_ROOM = 256
"""Bytes kept free in every frame for a frame signature's manifest (at most about 220: a
128-character destination)."""
_SESSION_KINDS = ("Ack", "Pause", "ErrorReport")  # never answered with an ErrorReport


@dataclass
class _OutStream:
    epoch: int
    next_seq: int = 1
    _open: set[int] = field(default_factory=set)
    _heap: list[int] = field(default_factory=list)

    def open(self, seq: int) -> None:
        self._open.add(seq)
        heapq.heappush(self._heap, seq)

    def close(self, seq: int) -> None:
        self._open.discard(seq)

    @property
    def base(self) -> int:
        """The lowest sequence number still unacknowledged (or the next one)."""
        heap = self._heap
        while heap and heap[0] not in self._open:
            heapq.heappop(heap)
        return heap[0] if heap else self.next_seq


@dataclass
class _Pending:
    envelope: Envelope
    key: StreamKey
    attempts: int = 0
    queued_chunks: int = 0
    persisted: bool = True
    due: int = 0


@dataclass
class Receipts:
    """What a receiver must persist before acknowledging: ids delivered (for the dedupe
    window) and the stream positions reached."""

    ids: list[tuple[bytes, str, str]]  # (id, from, to)
    positions: dict[StreamKey, tuple[int, int]]


@dataclass
class SessionCounters:
    received_frames: int = 0
    received_bytes: int = 0
    delivered: int = 0
    duplicates: int = 0
    retransmits: int = 0
    acked: int = 0
    abandoned: int = 0
    rejected: int = 0
    forged: int = 0  # envelopes whose source the sending connection may not claim
    refused_by_guard: int = 0  # envelopes the guard would not open (bad signature, replay...)
    paused: int = 0  # times a receiver asked us to hold what we send it
    error_reports_sent: int = 0
    error_reports_suppressed: int = 0
    gaps: int = 0
    resets: int = 0


_RETRYABLE = frozenset({ErrorCode.REASSEMBLY_TIMEOUT})
"""What a receiver's session reports about a message that a retransmission may yet bring
whole (its chunks came too slowly: some were lost): no final answer. (An overflow is final:
the message does not fit the receiver's budget.)"""


def _retryable(report: Envelope) -> bool:
    """Whether an ``ErrorReport`` says only that the envelope should come again."""
    try:
        message = decode_body(report.kind, report.body)
    except ModelError:
        return False
    return getattr(message, "code", None) in _RETRYABLE


class Session:
    """The sans-IO core of one broker connection, for any number of local actors."""

    def __init__(self, config: SessionConfig | None = None, local: Iterable[str] = (),
                 *, ids: MessageIds | None = None, guard: EnvelopeGuard | None = None) -> None:
        self.config = config or SessionConfig()
        self.guard: EnvelopeGuard = guard if guard is not None else NULL_GUARD
        seed = self.config.seed if self.config.seed is not None else secrets.randbits(64)
        self._rng = random.Random(seed)
        self._ids = ids or MessageIds()
        self._local: set[str] = set()
        for address in local:
            self.add_local(address)
        self._groups: set[str] = set()
        # room in each frame for a frame signature's manifest, where the guard makes them
        # (a guard that never does needs no ``sign_frame`` and no ``open_frame``)
        framing = bool(getattr(self.guard, "frame_signing", False))
        self._reserve = MANIFEST_ROOM if framing else 0
        self._queue = OutQueue(self.config, self._expired_in_queue, self._left_in_frame,
                               finish=self.guard.sign_frame if framing else None,
                               reserve=self._reserve)
        self._pending: dict[bytes, _Pending] = {}
        self._retry: list[tuple[int, int, bytes]] = []
        self._retry_counter = 0
        self._out_streams: dict[StreamKey, _OutStream] = {}
        self._unpersisted: list[Envelope] = []
        self._dedupe = DedupeWindow(self.config.dedupe_window)
        self._reassembler = Reassembler(self.config)
        self._in_streams = InboundStreams(self.config)
        self._acks: dict[tuple[str, str], list[bytes]] = {}
        self._ack_due: int | None = None
        self._receipts: list[tuple[bytes, str, str]] = []
        self._touched: set[StreamKey] = set()
        self._error_budget: dict[str, tuple[float, int]] = {}
        self._events: list[SessionEvent] = []
        self.link_is_up = True
        self.counters = SessionCounters()
        self.traffic = TrafficCounters()

    # -- addresses -------------------------------------------------------------------------------

    def add_local(self, address: str) -> None:
        """Accept envelopes for ``address`` (an actor hosted behind this session)."""
        if not valid_address(address) or is_group(address):
            raise ValueError(f"invalid actor address {address!r}")
        self._local.add(address)

    def remove_local(self, address: str) -> None:
        self._local.discard(address)

    def join_group(self, group: str) -> None:
        """Accept envelopes sent to the broadcast address ``group``."""
        if not is_group(group) or not valid_address(group):
            raise ValueError(f"invalid group address {group!r}")
        self._groups.add(group)

    @property
    def local_addresses(self) -> frozenset[str]:
        return frozenset(self._local)

    # -- sending --------------------------------------------------------------------------------

    def send(self, *, source: str, destination: str, kind: str, body: bytes, now: int,
             priority: Priority = Priority.CONTROL, reliable: bool = False,
             expires_us: int | None = None, correlation: bytes | None = None,
             stream: str | None = None) -> Envelope:
        """Queue a message; returns its envelope. Reliable messages belong to a stream
        (default: one per priority class, so classes never wait on each other)."""
        if source not in self._local:
            raise ValueError(f"{source!r} is not a local address of this session")
        if not valid_address(destination):
            raise ValueError(f"invalid destination address {destination!r}")
        if reliable and is_group(destination):
            raise ValueError("broadcasts cannot be reliable: receivers resynchronise instead")
        # positional: this runs for every message sent (see Envelope for the field order)
        env = Envelope(self._ids.new(now), source, destination, kind, body, priority, now,
                       expires_us, correlation, reliable)
        self.traffic.sent[kind, priority] += 1
        if reliable:
            name = stream or f"p{int(priority)}"
            key = (source, destination, name)
            out = self._out_streams.get(key)
            if out is None:
                out = self._out_streams[key] = _OutStream(self._rng.getrandbits(63))
            seq = out.next_seq
            out.next_seq += 1
            out.open(seq)
            env = env._replace(stream=name, stream_epoch=out.epoch, seq=seq, base=out.base)
            pending = self._pending[env.id] = _Pending(env, key)
            if self.config.durable:
                pending.persisted = False
                self._unpersisted.append(env)
                return env
        self._enqueue(env, now)
        return env

    def take_unpersisted(self) -> tuple[list[Envelope], dict[StreamKey, tuple[int, int]]]:
        """Reliable envelopes waiting to be written to the outbox, and the stream states to
        write with them (``epoch, next_seq``)."""
        envs, self._unpersisted = self._unpersisted, []
        return envs, self.stream_states()

    def mark_persisted(self, ids: Iterable[bytes], now: int) -> None:
        """These reliable envelopes are on disk: they may leave."""
        for message_id in ids:
            pending = self._pending.get(message_id)
            if pending is not None and not pending.persisted:
                pending.persisted = True
                self._enqueue(pending.envelope, now)

    def stream_states(self) -> dict[StreamKey, tuple[int, int]]:
        return {k: (s.epoch, s.next_seq) for k, s in self._out_streams.items()}

    def _enqueue(self, env: Envelope, now: int) -> None:
        pending = self._pending.get(env.id) if env.reliable else None
        if pending is not None:
            out = self._out_streams[pending.key]
            if env.base != out.base:
                env = env._replace(base=out.base)  # tell the receiver what was abandoned
        env = self.guard.seal(env, now)  # the header is final: what the receiver will open
        encoded = encode_envelope(env)
        room = self.config.frame_bytes - frame_overhead(1) - self._reserve
        if len(encoded) > room and is_group(env.destination):
            raise MessageTooLargeError(
                f"a broadcast of {len(encoded)} bytes: broadcasts travel in one frame (at most "
                f"{room} bytes; a room member could spoil the chunks of a larger one)")
        pieces = [(env, encoded)] if len(encoded) <= room else self._chunk(env, encoded, room)
        if pending is not None:
            pending.queued_chunks = len(pieces)
        for piece, data in pieces:
            self._queue.push(piece, data, now)

    def _chunk(self, env: Envelope, encoded: bytes, room: int) -> list[tuple[Envelope, bytes]]:
        """``env`` in pieces that fit ``room``; each piece sealed on its own by the guard (a
        signature of its own, checked before reassembly: a forged chunk never joins one)."""
        body = env.body
        seal_chunk = getattr(self.guard, "seal_chunk", None)
        header = len(encoded) - len(body) + 24  # chunk field and length-prefix growth
        if seal_chunk is not None and env.signature is None:
            header += SIGNATURE_ROOM  # the pieces' own signatures
        size = room - header
        count = -(-len(body) // size)
        out = []
        for index in range(count):
            piece = env._replace(body=body[index * size:(index + 1) * size],
                                 chunk=ChunkInfo(index, count, len(body)))
            if seal_chunk is not None:
                piece = seal_chunk(piece)
            data = encode_envelope(piece)
            assert len(data) <= room, "chunk does not fit its frame"
            out.append((piece, data))
        return out

    def pop_frames(self, now: int, budget: int | None = None, *,
                   urgent: int | None = None) -> list[Frame]:
        """Frames the transport may write now (none while the link is down): critical and
        control within ``urgent`` (default ``budget``), state and bulk within ``budget``."""
        if not self.link_is_up:
            return []
        return self._queue.pop_frames(now, budget, urgent=urgent)

    def _left_in_frame(self, env: Envelope, now: int) -> None:
        if not env.reliable:
            return
        pending = self._pending.get(env.id)
        if pending is None:
            return
        pending.queued_chunks -= 1
        if pending.queued_chunks <= 0:
            self._schedule_retry(pending, now)

    def _schedule_retry(self, pending: _Pending, now: int) -> None:
        backoff = min(self.config.retransmit_initial_us * (2 ** pending.attempts),
                      self.config.retransmit_max_us)
        pending.due = now + int(backoff * (1 + 0.25 * self._rng.random()))
        self._retry_counter += 1
        heapq.heappush(self._retry, (pending.due, self._retry_counter, pending.envelope.id))

    def _expired_in_queue(self, env: Envelope) -> None:
        if env.reliable:
            self._abandon(env.id, "expired before it could be sent")

    def _abandon(self, message_id: bytes, reason: str) -> None:
        pending = self._pending.pop(message_id, None)
        if pending is None:
            return
        self._out_streams[pending.key].close(pending.envelope.seq)
        self.counters.abandoned += 1
        self._events.append(EnvelopeAbandoned(pending.envelope, reason))

    # -- link state ---------------------------------------------------------------------------

    def link_down(self, now: int) -> None:
        """The transport lost its connection: hold frames until it is back."""
        self.link_is_up = False

    def link_up(self, now: int) -> None:
        """The transport is connected again: resend every unacknowledged envelope now (the
        broker may have lost whatever was in flight)."""
        self.link_is_up = True
        for pending in self._pending.values():
            if pending.persisted and pending.queued_chunks <= 0:
                pending.attempts = 0
                self._enqueue(pending.envelope, now)

    # -- receiving ----------------------------------------------------------------------------

    def receive_frame(self, data: bytes, now: int, origin: Origin = UNKNOWN_ORIGIN) -> None:
        """A frame from the transport. ``origin`` says who sent it as far as the transport
        knows: where to answer a frame too broken to name its sender, and which sources the
        sender may claim (an envelope claiming another is refused with ``ACCESS_DENIED``:
        one connected account must not speak for another)."""
        self.counters.received_frames += 1
        self.counters.received_bytes += len(data)
        try:
            items = decode_frame(data, MAX_FRAME_BYTES)
        except ModelError as exc:
            self._reject(exc, origin.address, None, None, None, now)
            return
        manifests = 0
        while manifests < len(items) and is_manifest(items[manifests]):
            manifests += 1  # a frame signature's manifests come first
        entries: list[tuple[bytes, Envelope | None]] = []
        for raw in items[manifests:]:
            try:
                entries.append((raw, decode_envelope(raw)))
            except ModelError as exc:
                entries.append((raw, None))
                # answer the connection it came from, never the sender it claims (who may be a
                # victim the garbage was made to reflect at); a room's frame: nobody (every
                # member would answer)
                self._reject(exc, None if origin.broadcast else origin.address,
                             exc.details.get("id"), None, None, now)
        framed: dict[int, str] = {}
        open_frame = getattr(self.guard, "open_frame", None)
        if manifests and open_frame is not None and not origin.broadcast:
            try:
                framed = open_frame(items[:manifests], entries, now)
            except Exception as exc:  # a guard's bug: the envelopes go on unproven
                self._reject(from_exception(exc), None, None, None, None, now, answer=False)
        for index, (_, env) in enumerate(entries):
            if env is None:
                continue
            try:
                if origin is not UNKNOWN_ORIGIN and not self._authentic(env, origin, now):
                    continue
                self._receive(env, now, framed.get(index))
            except Exception as exc:  # a bug of ours: it costs this envelope, not its frame
                self._reject(from_exception(exc), None, env.id, env.destination, env.kind,
                             now, answer=False)

    def _authentic(self, env: Envelope, origin: Origin, now: int) -> bool:
        if origin.broadcast and not is_group(env.destination):
            problem = f"an envelope for {env.destination!r} came through a group"
        elif origin.may_send_as is not None and not origin.may_send_as(env.source):
            problem = (f"an envelope from {env.source!r} came from a connection that may not "
                       "send as it")
        else:
            return True
        self.counters.forged += 1
        exc = AccessDeniedError(
            f"{problem}: refused (each actor sends only as itself)",
            details={"source": env.source, "destination": env.destination})
        # answer the connection, not the claimed source (which never sent it)
        self._reject(exc, origin.address, env.id, env.destination, env.kind, now)
        return False

    def _receive(self, env: Envelope, now: int, framed_by: str | None = None) -> None:
        dest = env.destination
        authenticates = self.guard.authenticates
        if dest not in self._local and dest not in self._groups:
            exc = UnknownActorError(
                f"no actor {dest!r} here", details={"destination": dest})
            # with a guard that proves senders, the claimed source is unproven here: silence
            self._reject(exc, None if authenticates else env.source, env.id, None, env.kind,
                         now)
            return
        if env.reliable and is_group(dest):
            # no session sends one (a broadcast has no single receiver to acknowledge it), so
            # it can only be forged, and each would open a stream state: silence
            self._reject(MalformedMessageError("a broadcast cannot be reliable"), None, env.id,
                         dest, env.kind, now)
            return
        if env.chunk is not None and is_group(dest):
            # no session sends one; through a room, anyone may claim a broadcast's source and
            # id, and one forged chunk would spoil the genuine message's reassembly: silence
            self._reject(MalformedMessageError("a broadcast is never chunked"), None, env.id,
                         dest, env.kind, now, answer=False)
            return
        if env.chunk is not None:
            if env.chunk.total_size > self.config.max_message_bytes:  # cheap checks first
                # answered to its source, which the connection was checked to speak for
                # (a room's chunks never get here)
                self._reject(MessageTooLargeError(
                    f"message of {env.chunk.total_size} bytes exceeds the limit of "
                    f"{self.config.max_message_bytes}"), env.source, env.id, dest, env.kind,
                    now)
                return
            open_chunk = getattr(self.guard, "open_chunk", None)
            if open_chunk is not None:
                try:  # before it joins a reassembly: a forged chunk spoils nothing
                    framed_by = open_chunk(env, now)
                except ModelError as refusal:
                    self._refused(refusal, env, now, answer=self.guard.answers(refusal, env))
                    return
            if not authenticates and self._dedupe.seen(env.source, env.id):
                self._duplicate(env, now)  # its first ack may have been lost: at once again
                return
            # with a guard that proves senders, even the chunks of a message delivered
            # before are reassembled: only the whole can be opened, and only an opened
            # envelope may be taken for a duplicate (and acknowledged again)
            try:
                whole = self._reassembler.add(env, now)
            except ModelError as exc:
                # a broadcast's claimed source is nobody's word: never answer it (each member
                # of the room would, at whoever it names)
                self._reject(exc, env.source, env.id, dest, env.kind, now,
                             answer=not is_group(dest))
                return
            if whole is None:
                return
            env = whole
            if open_chunk is not None and framed_by is not None:
                env = whole._replace(signature=None)  # proven piece by piece
        try:
            env = (self.guard.open(env, now) if framed_by is None
                   else self.guard.open(env, now, framed_by=framed_by))
        except ModelError as refusal:
            self._refused(refusal, env, now, answer=self.guard.answers(refusal, env))
            return
        except Exception as exc:  # a guard's bug: refuse this envelope, not the whole frame
            self._refused(from_exception(exc), env, now, answer=False)
            return
        if env.expired(now):  # a replay of something long gone, or too late to matter
            self._reject(ExpiredError("the envelope expired before it arrived"), None, env.id,
                         dest, env.kind, now, answer=False)
            return
        if env.kind in ("Ack", "ErrorReport") and is_group(dest):
            # nobody vouches for a broadcast's source: it settles nothing
            if env.kind == "Ack":
                return
        elif env.kind == "Ack":
            self.traffic.received["Ack", env.priority] += 1
            self._receive_ack(env, now)
            return
        if env.kind == "Pause":
            self.traffic.received["Pause", env.priority] += 1
            self._receive_pause(env, now)
            return
        if (env.kind == "ErrorReport" and env.correlation in self._pending
                and not is_group(dest) and not _retryable(env)):
            # a final answer (stop retransmitting), if it comes from where the envelope went
            self._acknowledged([env.correlation], env.source, now)
        if env.reliable and env.stream is not None:
            if self._dedupe.seen(env.source, env.id):  # delivered before, in any epoch
                self._duplicate(env, now)
                return
            try:
                deliverable, verdict = self._in_streams.accept(env, now, self._events)
            except LimitExceededError as exc:
                # a sender opening too many streams is told; when all senders together
                # have, nobody is (the sender sends again later, unacknowledged)
                self._reject(exc, env.source, env.id, dest, env.kind, now,
                             answer=exc.details.get("scope") == "pair")
                return
            self._touched.add((env.source, env.destination, env.stream))
            if verdict is Verdict.DELIVERED:
                self._duplicate(env, now)
            elif verdict is Verdict.WAITING:
                self.counters.duplicates += 1
            for item in deliverable:
                self._deliver(item, now)
            return
        if self._dedupe.seen(env.source, env.id):
            self.counters.duplicates += 1
            return
        self._deliver(env, now)

    def _refused(self, refusal: ModelError, env: Envelope, now: int, *, answer: bool) -> None:
        """The guard would not open ``env``: count it, and answer only where the guard allows
        (never a broadcast, whose claimed source nobody vouched for). Nothing else happens:
        no delivery, no acknowledgement, no trace in the dedupe window or the streams."""
        self.counters.refused_by_guard += 1
        answer = answer and not is_group(env.destination)
        self._reject(refusal, env.source, env.id, env.destination, env.kind, now, answer=answer)

    def _deliver(self, env: Envelope, now: int) -> None:
        self._dedupe.add(env.source, env.id)
        self.counters.delivered += 1
        traffic = self.traffic
        traffic.received[env.kind, env.priority] += 1
        traffic.latency[env.priority].observe(now - env.timestamp_us)
        self._events.append(EnvelopeReceived(env))
        if env.reliable:
            if self.config.durable:
                self._receipts.append((env.id, env.source, env.destination))
            else:
                self._queue_ack(env.destination, env.source, env.id, now)

    def _duplicate(self, env: Envelope, now: int) -> None:
        self.counters.duplicates += 1
        if env.reliable:  # the first ack may have been lost: acknowledge again
            self._queue_ack(env.destination, env.source, env.id, now)

    def _receive_ack(self, env: Envelope, now: int) -> None:
        try:
            ack = decode_body("Ack", env.body)
        except ModelError as exc:
            self._reject(exc, env.source, env.id, env.destination, env.kind, now)
            return
        assert isinstance(ack, Ack)
        self._acknowledged(ack.message_ids, env.source, now)

    def _receive_pause(self, env: Envelope, now: int) -> None:
        """A receiver asks us to hold what we send it (only what we send *it*: the broker
        vouches for the source of a direct envelope; a broadcast's is nobody's)."""
        if is_group(env.destination):
            return
        try:
            pause = decode_body("Pause", env.body)
        except ModelError as exc:
            self._reject(exc, env.source, env.id, env.destination, env.kind, now)
            return
        assert isinstance(pause, Pause)
        self.counters.paused += pause.hold_ms > 0
        self._queue.hold(env.source, now + pause.hold_ms * MS, now, pause.credit_bytes)

    def pause_sender(self, local: str, peer: str, hold_us: int, now: int, *,
                     credit_bytes: int = 0) -> None:
        """Ask ``peer`` to hold its state and bulk envelopes for ``local`` for ``hold_us``
        (``0``: to send them again now) but for ``credit_bytes`` of them; sent as critical,
        ahead of anything queued."""
        if local not in self._local or is_group(peer) or not valid_address(peer):
            return
        body = encode_body(Pause(hold_ms=min(10_000, max(0, hold_us // MS)),
                                 credit_bytes=credit_bytes))
        self.send(source=local, destination=peer, kind="Pause", body=body, now=now,
                  priority=Priority.CRITICAL)

    def held(self, destination: str, now: int) -> bool:
        """Whether a ``Pause`` from ``destination`` holds what we send it at ``now``."""
        return self._queue.held(destination, now)

    def _acknowledged(self, ids: Iterable[bytes | None], by: str, now: int) -> None:
        """``by`` settles the pending envelopes of ``ids`` that it was sent to. Only the
        destination may: anyone else (another account, a room occupant) who learnt an id
        would otherwise cancel a reliable envelope before it arrived."""
        done = []
        foreign = 0
        for message_id in ids:
            pending = self._pending.get(message_id) if message_id else None
            if pending is None:
                continue
            if pending.envelope.destination != by:
                foreign += 1
                continue
            del self._pending[pending.envelope.id]
            self._out_streams[pending.key].close(pending.envelope.seq)
            done.append(pending.envelope.id)
        if foreign:
            self.counters.forged += foreign
            exc = AccessDeniedError(
                f"{by!r} acknowledged {foreign} envelope(s) sent to another actor: ignored",
                details={"source": by})
            self._reject(exc, by, None, None, None, now, answer=False)
        if done:
            self.counters.acked += len(done)
            self._events.append(EnvelopesAcked(tuple(done)))

    # -- acknowledgements -----------------------------------------------------------------------

    def _queue_ack(self, local: str, remote: str, message_id: bytes, now: int) -> None:
        key = (local, remote)
        ids = self._acks.setdefault(key, [])
        ids.append(message_id)
        if len(ids) >= self.config.ack_batch:
            self._flush_ack(key, now)
        elif self._ack_due is None:
            self._ack_due = now + self.config.ack_delay_us

    def _flush_ack(self, key: tuple[str, str], now: int) -> None:
        ids = self._acks.pop(key, None)
        if not ids or key[0] not in self._local:
            return
        body = encode_body(Ack(message_ids=list(dict.fromkeys(ids))))
        self.send(source=key[0], destination=key[1], kind="Ack", body=body, now=now,
                  priority=Priority.CONTROL)

    def take_receipts(self) -> Receipts:
        """What must be persisted before the pending acknowledgements may go out."""
        ids, self._receipts = self._receipts, []
        touched, self._touched = self._touched, set()
        positions = {k: v for k in touched if (v := self._in_streams.position(k)) is not None}
        return Receipts(ids, positions)

    def mark_receipts_persisted(self, receipts: Receipts, now: int) -> None:
        """The receipts are on disk: acknowledge those envelopes."""
        for message_id, remote, local in receipts.ids:
            self._queue_ack(local, remote, message_id, now)

    # -- restarts -----------------------------------------------------------------------------

    def restore_outgoing(self, streams: dict[StreamKey, tuple[int, int]],
                         envelopes: Iterable[Envelope], now: int) -> None:
        """After a restart: stream states and unacknowledged envelopes from the outbox; the
        envelopes are sent again at once."""
        for key, (epoch, next_seq) in streams.items():
            self._out_streams[key] = _OutStream(epoch, next_seq)
        for env in sorted(envelopes, key=lambda e: (e.stream or "", e.seq)):
            key = (env.source, env.destination, env.stream or "")
            out = self._out_streams.setdefault(key, _OutStream(env.stream_epoch, env.seq + 1))
            out.open(env.seq)
            self._pending[env.id] = _Pending(env, key)
        for env in list(p.envelope for p in self._pending.values()):
            self._enqueue(env, now)

    def restore_incoming(self, positions: dict[StreamKey, tuple[int, int]],
                         seen: Iterable[bytes]) -> None:
        """After a restart: stream positions and the dedupe window from the outbox."""
        for key, (epoch, expected) in positions.items():
            self._in_streams.restore(key, epoch, expected)
        self._dedupe.restore(seen)

    def seen_ids(self) -> list[bytes]:
        """The dedupe window as the outbox keeps it (``seen_key`` of each)."""
        return self._dedupe.keys()

    # -- timers -------------------------------------------------------------------------------

    def handle_timer(self, now: int) -> None:
        """Do whatever is due at ``now``."""
        if self._ack_due is not None and self._ack_due <= now:
            self._ack_due = None
            for key in list(self._acks):
                self._flush_ack(key, now)
        while self._retry and self._retry[0][0] <= now:
            due, _, message_id = heapq.heappop(self._retry)
            pending = self._pending.get(message_id)
            if pending is None or pending.due != due or pending.queued_chunks > 0:
                continue
            if pending.envelope.expired(now):
                self._abandon(message_id, "expired before it was acknowledged")
                continue
            if not self.link_is_up:
                continue  # link_up() resends everything
            pending.attempts += 1
            self.counters.retransmits += 1
            self._enqueue(pending.envelope, now)
        for first in self._reassembler.expire(now):
            exc = ReassemblyTimeoutError(
                f"message {first.id.hex()} was not complete after "
                f"{self.config.reassembly_timeout_us / 1e6:g} s")
            self._reject(exc, first.source, first.id, first.destination, first.kind, now,
                         answer=not is_group(first.destination))
        for env in self._in_streams.expire(now, self._events):
            self._deliver(env, now)

    def next_deadline(self) -> int | None:
        """The next time ``handle_timer`` or ``pop_frames`` has something to do."""
        candidates: list[int] = []
        if self._ack_due is not None:
            candidates.append(self._ack_due)
        while self._retry:
            due, _, message_id = self._retry[0]
            pending = self._pending.get(message_id)
            if pending is None or pending.due != due:
                heapq.heappop(self._retry)
                continue
            candidates.append(due)
            break
        for deadline in (self._reassembler.next_deadline(), self._in_streams.next_deadline()):
            if deadline is not None:
                candidates.append(deadline)
        if self.link_is_up:
            queued = self._queue.next_deadline()
            if queued is not None:
                candidates.append(queued)
        return min(candidates) if candidates else None

    # -- errors --------------------------------------------------------------------------------

    def _reject(self, exc: ModelError, sender: str | None, answers: bytes | None,
                local: str | None, kind: str | None, now: int, *, answer: bool = True) -> None:
        """Count and report a refusal; answer it with an ErrorReport where the sender is an
        addressable actor, within its rate, unless ``answer`` says to keep silent."""
        self.counters.rejected += 1
        answered = False
        if (answer and sender is not None and valid_address(sender) and not is_group(sender)
                and kind not in _SESSION_KINDS):
            source = local if local in self._local else next(iter(sorted(self._local)), None)
            if source is not None and self._may_report(sender, now):
                report = error_report(exc, answers=answers)
                self.send(source=source, destination=sender, kind="ErrorReport",
                          body=encode_body(report), now=now, priority=Priority.CONTROL,
                          correlation=answers)
                self.counters.error_reports_sent += 1
                answered = True
            elif source is not None:
                self.counters.error_reports_suppressed += 1
        self._events.append(InputRejected(sender=sender, code=exc.code, text=exc.text,
                                          message_id=answers, answered=answered))

    def _may_report(self, remote: str, now: int) -> bool:
        """A token bucket per remote, so a flood of garbage cannot make us flood back."""
        rate = self.config.error_reports_per_s
        tokens, updated = self._error_budget.get(remote, (rate, now))
        tokens = min(rate, tokens + rate * (now - updated) / 1e6)
        if tokens < 1:
            self._error_budget[remote] = (tokens, now)
            return False
        self._error_budget[remote] = (tokens - 1, now)
        if len(self._error_budget) > 10_000:
            self._error_budget.clear()
        return True

    # -- results ----------------------------------------------------------------------------

    @property
    def reassembling_bytes(self) -> int:
        """Bytes of partial messages waiting for their other chunks."""
        return self._reassembler.held_bytes

    def drain_events(self) -> list[SessionEvent]:
        """What happened since the last call, in order."""
        events, self._events = self._events, []
        for ev in events:
            if isinstance(ev, GapDetected):
                self.counters.gaps += 1
            elif isinstance(ev, StreamReset):
                self.counters.resets += 1
        return events

    @property
    def idle(self) -> bool:
        """Nothing left to do: no envelope queued or unacknowledged, no ack or receipt owed."""
        return not (self._pending or self._acks or self._receipts or self._unpersisted
                    or any(self._queue.depth().values()))

    @property
    def pending_count(self) -> int:
        """Reliable envelopes sent and not yet acknowledged."""
        return len(self._pending)

    def queue_depth(self) -> dict[Priority, int]:
        return self._queue.depth()

    @property
    def queued_bytes(self) -> int:
        """Bytes of the envelopes waiting in the queues."""
        return self._queue.queued_bytes

    @property
    def queue_counters(self) -> Any:
        return self._queue.counters
