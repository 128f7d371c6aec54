"""The sans-IO session with a fake clock: no sockets, no sleeping, milliseconds of test time."""

from __future__ import annotations

import hmac
import itertools
import os
import random

import pytest

from broker_bridge.codec import (
    decode_body,
    decode_envelope,
    decode_frame,
    encode_body,
    encode_envelope,
    encode_frame,
)
from broker_bridge.envelope import Envelope, Priority
from broker_bridge.session import (
    MS,
    SECOND,
    EnvelopeAbandoned,
    EnvelopeGuard,
    EnvelopeReceived,
    EnvelopesAcked,
    Frame,
    GapDetected,
    InputRejected,
    NullGuard,
    Session,
    SessionConfig,
    SessionEvent,
    StreamReset,
)
from broker_bridge.session.inbound import RETIRED_EPOCHS, InboundStreams, Verdict, seen_key
from broker_bridge.transport import Origin
from object_model import ErrorCode, ErrorReport, ModelError, PropertyValueUpdate
from object_model.errors import error_class
from object_model.messages import Pause


def body(n: int = 0, size: int = 0) -> bytes:
    msg = PropertyValueUpdate(epoch=n, from_revision=0, to_revision=1,
                              upserts=[] if not size else [("blob", 1, b"x" * size)])
    return encode_body(msg)


def payload_of(env) -> int:  # type: ignore[no-untyped-def]
    return decode_body(env.kind, env.body).epoch  # type: ignore[attr-defined]


class Link:
    """Two sessions and a wire between them that the test controls (loss, reordering)."""

    def __init__(self, config_a: SessionConfig | None = None,
                 config_b: SessionConfig | None = None, *, guard_a: EnvelopeGuard | None = None,
                 guard_b: EnvelopeGuard | None = None) -> None:
        self.a = Session(config_a or SessionConfig(seed=1), ["a"], guard=guard_a)
        self.b = Session(config_b or SessionConfig(seed=2), ["b"], guard=guard_b)
        self.now = 0
        self.delivered: dict[str, list] = {"a": [], "b": []}
        self.events: dict[str, list] = {"a": [], "b": []}

    def send(self, n: int, *, reliable: bool = True, priority: Priority = Priority.STATE,
             size: int = 0, **kw) -> bytes:  # type: ignore[no-untyped-def]
        env = self.a.send(source="a", destination="b", kind="PropertyValueUpdate",
                          body=body(n, size), now=self.now, reliable=reliable,
                          priority=priority, **kw)
        return env.id

    def frames(self, who: str, budget: int | None = None) -> list[Frame]:
        session = self.a if who == "a" else self.b
        session.handle_timer(self.now)
        return session.pop_frames(self.now, budget)

    def step(self, who: str) -> list[Frame]:
        """Advance to ``who``'s next deadline and return the frames it sends then (following
        deadlines through batching windows until something leaves)."""
        session = self.a if who == "a" else self.b
        for _ in range(10):
            deadline = session.next_deadline()
            if deadline is None:
                return []
            self.now = max(self.now, deadline)
            frames = self.frames(who)
            if frames:
                return frames
        return []

    def deliver(self, frames: list[Frame], to: str) -> None:
        session = self.b if to == "b" else self.a
        for frame in frames:
            session.receive_frame(frame.data, self.now)
        self.collect()

    def collect(self) -> None:
        for name, session in (("a", self.a), ("b", self.b)):
            for ev in session.drain_events():
                self.events[name].append(ev)
                if isinstance(ev, EnvelopeReceived) and ev.envelope.kind == "PropertyValueUpdate":
                    self.delivered[name].append(payload_of(ev.envelope))

    def run(self, until: int, *, drop_a: float = 0.0, drop_b: float = 0.0,
            rng: random.Random | None = None) -> None:
        """Advance the clock from deadline to deadline, exchanging frames both ways."""
        rng = rng or random.Random(0)
        while True:
            for src, dst, drop in (("a", "b", drop_a), ("b", "a", drop_b)):
                out = [f for f in self.frames(src) if rng.random() >= drop]
                self.deliver(out, dst)
            deadlines = [d for d in (self.a.next_deadline(), self.b.next_deadline()) if d]
            nxt = min(deadlines) if deadlines else None
            if nxt is None or nxt > until:
                self.now = until
                return
            self.now = max(self.now + 1, nxt)


# -- priorities, rate limit and batching -------------------------------------------------------


def test_critical_never_waits_behind_queued_bulk_under_a_rate_limit() -> None:
    cfg = SessionConfig(seed=1, rate_bytes_per_s=100_000, burst_bytes=10_000)
    link = Link(cfg)
    for i in range(200):  # ~70 kB of bulk: more than half a second of link time
        link.send(i, reliable=False, priority=Priority.BULK, size=300)
    link.now = 10 * MS
    first = link.frames("a")  # the burst lets some bulk go
    link.send(9999, reliable=False, priority=Priority.CRITICAL)
    link.now += 1
    nxt = link.frames("a")
    if not nxt:  # the bucket is in debt: the very next frame must be the critical one
        link.now = link.a.next_deadline()  # type: ignore[assignment]
        nxt = link.frames("a")
    assert nxt[0].priority is Priority.CRITICAL
    assert [payload_of(decode_envelope(e)) for e in decode_frame(nxt[0].data)] == [9999]
    assert sum(len(f.data) for f in first) <= 10_000 + cfg.frame_bytes


def test_on_a_slow_link_bulk_frames_are_small_so_critical_waits_little() -> None:
    cfg = SessionConfig(seed=1, rate_bytes_per_s=500_000, burst_bytes=2000,
                        max_frame_delay_us=2 * MS)
    link = Link(cfg)
    for i in range(400):
        link.send(i, reliable=False, priority=Priority.BULK, size=100)
    link.now = 10 * MS
    waits = []
    for n in range(50):
        link.frames("a")  # the flood keeps the link busy
        link.send(10_000 + n, reliable=False, priority=Priority.CRITICAL)
        sent_at = link.now
        while True:
            frames = link.frames("a")
            if any(f.priority is Priority.CRITICAL for f in frames):
                break
            link.now = link.a.next_deadline()  # type: ignore[assignment]
        waits.append(link.now - sent_at)
        link.now += 7 * MS
    assert max(waits) <= 2 * MS + 100  # at most one small bulk frame's worth of link time
    assert all(len(f.data) <= 1024 for f in link.frames("a") if f.priority is Priority.BULK)


def test_without_a_known_rate_state_and_bulk_frames_are_capped() -> None:
    # an uplink of unknown rate: a critical envelope waits for at most one capped frame
    cfg = SessionConfig(seed=1, bulk_frame_bytes=8192, compress=False)
    assert cfg.frame_limit(Priority.CRITICAL) == cfg.frame_limit(Priority.CONTROL) == 32 * 1024
    assert cfg.frame_limit(Priority.STATE) == cfg.frame_limit(Priority.BULK) == 8192
    link = Link(cfg)
    for i in range(400):
        link.send(i, reliable=False, priority=Priority.BULK, size=300)
    link.now = 10 * MS
    frames = link.frames("a")
    assert len(frames) > 10 and all(len(f.data) <= 8192 for f in frames)


def test_over_the_memory_bound_the_oldest_bulk_is_shed_cheaply() -> None:
    cfg = SessionConfig(seed=1, max_queued_bytes=50_000, compress=False)
    link = Link(cfg)
    critical = link.send(99_999, reliable=False, priority=Priority.CRITICAL)
    for i in range(2000):
        link.send(i, reliable=False, priority=Priority.BULK, size=100)
    assert link.a.queue_counters.dropped_overflow > 1000
    assert link.a._queue.queued_bytes <= 50_000
    link.now = 10 * SECOND
    delivered = []
    while any(link.a.queue_depth().values()):
        link.deliver(link.frames("a"), "b")
        link.now += 10 * MS
    delivered = link.delivered["b"]
    assert delivered[0] == 99_999 and delivered[1:] == sorted(delivered[1:])
    assert delivered[-1] == 1999  # the newest survive; the oldest were dropped
    assert critical


def test_the_rate_limit_holds_over_time() -> None:
    cfg = SessionConfig(seed=1, rate_bytes_per_s=50_000, burst_bytes=5_000, compress=False)
    link = Link(cfg)
    for i in range(1000):
        link.send(i, reliable=False, priority=Priority.BULK, size=200)
    sent = 0
    while link.now < 2 * SECOND:
        sent += sum(len(f.data) for f in link.frames("a"))
        link.now = link.a.next_deadline() or link.now + MS
    # 2 s at 50 kB/s plus the initial burst, plus at most one frame of debt
    assert 90_000 <= sent <= 100_000 + 5_000 + cfg.frame_bytes
    assert link.a.queue_depth()[Priority.BULK] > 0


def test_fifo_mode_makes_critical_wait() -> None:
    cfg = SessionConfig(seed=1, priorities=False, rate_bytes_per_s=100_000, burst_bytes=1000)
    link = Link(cfg)
    for i in range(50):
        link.send(i, reliable=False, priority=Priority.BULK, size=300)
    link.send(9999, reliable=False, priority=Priority.CRITICAL)
    link.now = 10 * MS
    order = []
    while link.a.queue_depth()[Priority.CRITICAL] or link.a.queue_depth()[Priority.BULK]:
        for f in link.frames("a"):
            order += [payload_of(decode_envelope(e)) for e in decode_frame(f.data)]
        link.now = link.a.next_deadline() or link.now + MS
    assert order[-1] == 9999


def test_back_pressure_budget_limits_what_leaves() -> None:
    link = Link(SessionConfig(seed=1, compress=False))
    for i in range(100):
        link.send(i, reliable=False, priority=Priority.CRITICAL, size=1000)
    frames = link.frames("a", budget=3000)
    assert 1 <= len(frames) <= 3
    assert link.a.queue_depth()[Priority.CRITICAL] == 100 - len(frames)
    assert link.frames("a", budget=0) == []


def test_envelopes_within_the_window_share_a_frame() -> None:
    link = Link()
    for i in range(10):
        link.send(i, reliable=False, priority=Priority.BULK)
        link.now += 100  # 0.1 ms apart: inside the 5 ms bulk window
    assert link.frames("a") == []
    assert link.a.next_deadline() == 5 * MS
    link.now = 5 * MS
    frames = link.frames("a")
    assert len(frames) == 1 and frames[0].count == 10
    link.send(10, reliable=False, priority=Priority.BULK)  # a new window
    link.now += 4 * MS
    assert link.frames("a") == []
    link.now += MS
    assert [f.count for f in link.frames("a")] == [1]


def test_critical_is_not_batched_and_destinations_do_not_mix() -> None:
    link = Link()
    link.a.send(source="a", destination="b", kind="PropertyValueUpdate", body=body(1),
                now=0, priority=Priority.CRITICAL)
    frames = link.frames("a")
    assert len(frames) == 1 and frames[0].count == 1
    for dest in ("b", "c", "b"):
        link.a.send(source="a", destination=dest, kind="PropertyValueUpdate", body=body(2),
                    now=0, priority=Priority.STATE)
    link.now = 10 * MS
    assert sorted((f.destination, f.count) for f in link.frames("a")) == [("b", 2), ("c", 1)]


def test_expired_envelopes_are_dropped_and_counted() -> None:
    link = Link()
    link.send(1, reliable=False, priority=Priority.BULK, expires_us=2 * MS)
    reliable_id = link.send(2, reliable=True, priority=Priority.BULK, expires_us=2 * MS)
    link.send(3, reliable=False, priority=Priority.BULK)
    link.now = 5 * MS
    frames = link.frames("a")
    link.deliver(frames, "b")
    assert link.delivered["b"] == [3]
    assert link.a.queue_counters.expired[Priority.BULK] == 2
    abandoned = [e for e in link.events["a"] if isinstance(e, EnvelopeAbandoned)]
    assert [e.envelope.id for e in abandoned] == [reliable_id]
    assert link.a.pending_count == 0


# -- chunking ---------------------------------------------------------------------------------


def test_a_200_kb_message_crosses_16_kb_frames_intact() -> None:
    cfg = SessionConfig(seed=1, frame_bytes=16 * 1024)
    link = Link(cfg, SessionConfig(seed=2, frame_bytes=16 * 1024))
    link.send(7, size=200_000)
    link.now = 10 * MS
    frames = link.frames("a")
    assert len(frames) >= 13 and all(len(f.data) <= 16 * 1024 for f in frames)
    random.Random(3).shuffle(frames)
    link.deliver(frames, "b")
    got = [e.envelope for e in link.events["b"] if isinstance(e, EnvelopeReceived)]
    assert len(got) == 1
    assert decode_body(got[0].kind, got[0].body).upserts[0][2] == b"x" * 200_000


def test_reassembly_beyond_the_memory_bound_is_refused_with_an_error_report() -> None:
    receiver = SessionConfig(seed=2, reassembly_max_bytes_per_peer=100_000)
    link = Link(SessionConfig(seed=1, frame_bytes=16 * 1024), receiver)
    link.send(1, size=150_000)
    link.now = 10 * MS
    link.deliver(link.frames("a")[:1], "b")
    rejected = [e for e in link.events["b"] if isinstance(e, InputRejected)]
    assert rejected[0].code is ErrorCode.REASSEMBLY_OVERFLOW and rejected[0].answered
    link.now += 10 * MS
    link.deliver(link.frames("b"), "a")
    reports = [decode_body("ErrorReport", e.envelope.body) for e in link.events["a"]
               if isinstance(e, EnvelopeReceived) and e.envelope.kind == "ErrorReport"]
    assert [r.code for r in reports] == [ErrorCode.REASSEMBLY_OVERFLOW]
    assert link.a.pending_count == 0  # the report is a final answer: no more retransmits


def test_oversized_declared_messages_are_refused_at_the_first_chunk() -> None:
    link = Link(SessionConfig(seed=1, frame_bytes=16 * 1024),
                SessionConfig(seed=2, max_message_bytes=50_000))
    link.send(1, size=60_000)
    link.now = 10 * MS
    link.deliver(link.frames("a")[:1], "b")
    assert [e.code for e in link.events["b"] if isinstance(e, InputRejected)] == [
        ErrorCode.MESSAGE_TOO_LARGE]


def test_incomplete_messages_time_out_with_an_error_report() -> None:
    link = Link(SessionConfig(seed=1, frame_bytes=16 * 1024, retransmit_initial_us=600 * SECOND,
                              retransmit_max_us=600 * SECOND))
    link.send(1, size=40_000)
    link.now = 10 * MS
    frames = link.frames("a")
    link.deliver(frames[:-1], "b")
    assert link.b.next_deadline() == 10 * MS + link.b.config.reassembly_timeout_us
    link.now = 10 * MS + link.b.config.reassembly_timeout_us
    link.frames("b")
    rejected = [e for e in link.events["b"] if isinstance(e, InputRejected)]
    link.collect()
    rejected = [e for e in link.events["b"] if isinstance(e, InputRejected)]
    assert [e.code for e in rejected] == [ErrorCode.REASSEMBLY_TIMEOUT]
    assert link.delivered["b"] == []
    # the report reaches the sender, which keeps the message: a chunk was lost, and a
    # retransmission brings it whole (found by the stateful test: it was settled, and lost)
    link.deliver(link.frames("b"), "a")
    assert link.a.pending_count == 1
    link.run(until=link.now + 700 * SECOND)
    assert link.delivered["b"] == [1] and link.a.pending_count == 0


# -- reliability ---------------------------------------------------------------------------------


def test_a_lost_ack_leads_to_a_retransmission_but_no_second_delivery() -> None:
    link = Link()
    msg_id = link.send(1)
    link.deliver(link.step("a"), "b")
    sent_at = link.now
    assert link.step("b")  # the ack... lost on the wire
    assert link.a.pending_count == 1
    again = link.step("a")
    assert link.now >= sent_at + SECOND
    assert again and link.a.counters.retransmits == 1
    link.deliver(again, "b")
    link.deliver(link.step("b"), "a")
    assert link.delivered["b"] == [1]
    assert link.b.counters.duplicates == 1
    assert any(isinstance(e, EnvelopesAcked) and msg_id in e.ids for e in link.events["a"])
    assert link.a.pending_count == 0


def test_backoff_grows_and_stops_at_expiry() -> None:
    link = Link(SessionConfig(seed=1, retransmit_initial_us=SECOND, retransmit_max_us=4 * SECOND))
    link.send(1, expires_us=20 * SECOND)
    times = []
    while link.a.pending_count and link.now < 60 * SECOND:
        if link.frames("a"):
            times.append(link.now)
        link.now = link.a.next_deadline() or link.now + SECOND
    gaps = [b - a for a, b in itertools.pairwise(times)]
    assert gaps[0] < gaps[1] < gaps[2]
    assert max(gaps) <= 4 * SECOND * 1.25 + 1
    assert link.a.pending_count == 0 and link.a.counters.abandoned == 1


@pytest.mark.parametrize("loss", [0.1, 0.3])
def test_exactly_once_in_order_over_a_lossy_reordering_link(loss: float) -> None:
    link = Link()
    rng = random.Random(int(loss * 100))
    for i in range(300):
        link.send(i, priority=Priority.STATE)
        if i % 10 == 0:
            link.run(link.now + 3 * MS, drop_a=loss, drop_b=loss, rng=rng)
    link.run(link.now + 900 * SECOND, drop_a=loss, drop_b=loss, rng=rng)
    assert link.delivered["b"] == list(range(300))
    assert link.a.pending_count == 0


def test_the_receiver_reorders_within_a_stream() -> None:
    link = Link()
    for i in range(5):
        link.send(i, priority=Priority.CRITICAL)
    frames = link.frames("a")
    assert len(frames) == 5
    link.deliver([frames[i] for i in (3, 1, 4, 0, 2)], "b")
    assert link.delivered["b"] == [0, 1, 2, 3, 4]


def test_classes_are_separate_streams_so_critical_does_not_wait_for_bulk() -> None:
    link = Link()
    link.send(1, priority=Priority.BULK)
    link.send(2, priority=Priority.CRITICAL)
    link.now = 10 * MS
    frames = link.frames("a")
    link.deliver([f for f in frames if f.priority is Priority.CRITICAL], "b")
    assert link.delivered["b"] == [2]


def test_an_abandoned_envelope_is_reported_as_a_gap() -> None:
    link = Link(SessionConfig(seed=1, retransmit_initial_us=SECOND, retransmit_max_us=SECOND))
    link.send(0, priority=Priority.STATE)
    link.send(1, priority=Priority.STATE, expires_us=500 * MS)
    link.now = 10 * MS
    frames = link.frames("a")
    link.deliver(frames, "b")  # both arrive; now lose the next one for good
    link.send(2, priority=Priority.STATE, expires_us=1500 * MS)
    link.now = 20 * MS
    link.frames("a")  # lost
    link.now = 2 * SECOND
    link.frames("a")  # retransmission time: it expired instead
    assert any(isinstance(e, EnvelopeAbandoned) for e in link.a.drain_events())
    link.send(3, priority=Priority.STATE)
    link.run(link.now + 5 * SECOND)  # the gap shows once acks move the sender's base past it
    gaps = [e for e in link.events["b"] if isinstance(e, GapDetected)]
    assert [(g.first_missing, g.resumed_at) for g in gaps] == [(3, 4)]
    assert link.delivered["b"] == [0, 1, 3]


def test_a_gap_that_never_fills_is_reported_after_the_timeout() -> None:
    never = 3600 * SECOND  # the sender will not retransmit within the test
    link = Link(SessionConfig(seed=1, retransmit_initial_us=never, retransmit_max_us=never),
                SessionConfig(seed=2, gap_timeout_us=5 * SECOND))
    for i in range(3):
        link.send(i, priority=Priority.CRITICAL)
    frames = link.frames("a")
    assert len(frames) == 3
    link.deliver(frames[1:], "b")  # the first is lost; the others wait behind it
    assert link.delivered["b"] == []
    assert link.b.next_deadline() == link.now + 5 * SECOND
    link.now += 5 * SECOND
    link.frames("b")
    link.collect()
    gaps = [e for e in link.events["b"] if isinstance(e, GapDetected)]
    assert [(g.first_missing, g.resumed_at) for g in gaps] == [(1, 2)]
    assert link.delivered["b"] == [1, 2]


def test_a_sender_that_lost_its_state_resets_the_stream() -> None:
    link = Link()
    link.send(1)
    link.run(50 * MS)
    fresh = Session(SessionConfig(seed=9), ["a"])  # a restart with the outbox wiped
    link.a = fresh
    link.send(2)
    link.run(100 * MS)
    resets = [e for e in link.events["b"] if isinstance(e, StreamReset)]
    assert len(resets) == 1
    assert link.delivered["b"] == [1, 2]


def test_restore_after_a_sender_restart_resends_unacked_without_duplicates() -> None:
    link = Link(SessionConfig(seed=1, durable=True))
    for i in range(5):
        link.send(i)
    envs, streams = link.a.take_unpersisted()
    assert link.frames("a") == []  # nothing leaves before it is on disk
    link.a.mark_persisted([e.id for e in envs], link.now)
    link.now = 10 * MS
    link.deliver(link.frames("a")[:1], "b")  # b got all five, acks are lost: a crashes
    restarted = Session(SessionConfig(seed=7, durable=True), ["a"])
    restarted.restore_outgoing(streams, envs, link.now)
    link.a = restarted
    link.run(link.now + 100 * MS)
    assert link.delivered["b"] == [0, 1, 2, 3, 4]
    assert link.a.pending_count == 0
    assert not any(isinstance(e, StreamReset) for e in link.events["b"])


def test_durable_receivers_ack_only_after_persisting_and_dedupe_across_restarts() -> None:
    link = Link(config_b=SessionConfig(seed=2, durable=True))
    link.send(1)
    link.now = 10 * MS
    link.deliver(link.frames("a"), "b")
    link.now = 20 * MS
    assert link.frames("b") == []  # no ack before the receipt is persisted
    receipts = link.b.take_receipts()
    assert len(receipts.ids) == 1 and len(receipts.positions) == 1
    restarted = Session(SessionConfig(seed=5, durable=True), ["b"])
    restarted.restore_incoming(receipts.positions,
                               [seen_key(source, i) for i, source, _ in receipts.ids])
    link.b = restarted  # crashed before acking; the sender retransmits
    link.run(link.now + 5 * SECOND)
    assert link.delivered["b"] == [1]
    assert link.a.pending_count == 0


def test_link_up_resends_everything_unacked_at_once() -> None:
    link = Link()
    for i in range(3):
        link.send(i, priority=Priority.CONTROL)
    link.now = 10 * MS
    link.frames("a")  # lost with the broker
    link.a.link_down(link.now)
    link.now = 100 * MS
    assert link.frames("a") == []
    link.a.link_up(link.now)
    link.now += 2 * MS
    link.deliver(link.frames("a"), "b")
    assert link.delivered["b"] == [0, 1, 2]


# -- garbage ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("data", "code"),
    [
        (b"\x00\x01garbage", ErrorCode.MALFORMED_MESSAGE),
        (b"\x93\x01", ErrorCode.MALFORMED_MESSAGE),
        (b"\x92\x09\xc4\x01x", ErrorCode.UNSUPPORTED_VERSION),
        (b"\xdb\xff\xff\xff\xff", ErrorCode.MALFORMED_MESSAGE),
    ],
)
def test_garbage_frames_are_rejected_and_answered_when_the_sender_is_known(
    data: bytes, code: ErrorCode
) -> None:
    link = Link()
    link.b.receive_frame(data, 0, Origin("a"))
    link.collect()
    rejected = [e for e in link.events["b"] if isinstance(e, InputRejected)]
    assert [e.code for e in rejected] == [code] and rejected[0].answered
    link.now = 10 * MS
    link.deliver(link.frames("b"), "a")
    report = [e.envelope for e in link.events["a"] if isinstance(e, EnvelopeReceived)]
    assert isinstance(decode_body("ErrorReport", report[0].body), ErrorReport)


def test_envelopes_claiming_a_source_their_connection_may_not_use_are_refused() -> None:
    link = Link()
    link.a.send(source="a", destination="b", kind="PropertyValueUpdate", body=body(1), now=0,
                priority=Priority.CRITICAL)
    link.collect()
    frames = [f.data for f in link.frames("a")]
    only_x = Origin("x", {"x"}.__contains__)
    for data in frames:
        link.b.receive_frame(data, 0, only_x)  # "x" may send only as "x", not as "a"
        link.b.receive_frame(data, 0, Origin("x", broadcast=True))  # direct, via a group
    link.collect()
    assert not [e for e in link.events["b"] if isinstance(e, EnvelopeReceived)]
    rejected = [e for e in link.events["b"] if isinstance(e, InputRejected)]
    assert [e.code for e in rejected] == [ErrorCode.ACCESS_DENIED] * 2
    assert link.b.counters.forged == 2
    # the same frame from a connection that may send as "a" is delivered
    for data in frames:
        link.b.receive_frame(data, 0, Origin("a", {"a"}.__contains__))
    link.collect()
    assert [e.envelope.source for e in link.events["b"] if isinstance(e, EnvelopeReceived)] == ["a"]


def test_error_reports_are_rate_limited_per_sender() -> None:
    link = Link(config_b=SessionConfig(seed=2, error_reports_per_s=5))
    for _ in range(50):
        link.b.receive_frame(b"junk", 0, Origin("a"))
    assert link.b.counters.error_reports_sent == 5
    assert link.b.counters.error_reports_suppressed == 45
    assert link.b.counters.rejected == 50


def test_unknown_destinations_get_unknown_actor() -> None:
    link = Link()
    link.a.send(source="a", destination="nobody", kind="PropertyValueUpdate", body=body(1),
                now=0, priority=Priority.CRITICAL)
    link.deliver(link.frames("a"), "b")
    assert [e.code for e in link.events["b"] if isinstance(e, InputRejected)] == [
        ErrorCode.UNKNOWN_ACTOR]


def test_configuration_is_validated() -> None:
    with pytest.raises(ValueError, match="frame_bytes"):
        SessionConfig(frame_bytes=4096)
    with pytest.raises(ValueError, match="not a local address"):
        Session(SessionConfig(), ["a"]).send(source="x", destination="b", kind="Ack", body=b"",
                                             now=0)
    with pytest.raises(ValueError, match="broadcasts cannot be reliable"):
        Session(SessionConfig(), ["a"]).send(source="a", destination="group:site1", kind="Ack",
                                             body=b"", now=0, reliable=True)


def test_the_dedupe_window_keeps_the_newest_ids_per_sender() -> None:
    from broker_bridge.session.inbound import DedupeWindow

    window = DedupeWindow(1000)
    ids = [i.to_bytes(16, "big") for i in range(40_000)]
    for message_id in ids:
        window.add("a", message_id)
    assert len(window) == 1000
    assert not window.seen("a", ids[38_999]) and window.seen("a", ids[39_000])
    assert window.seen("a", ids[-1]) and not window.seen("b", ids[-1])
    assert window.keys() == [seen_key("a", i) for i in ids[-1000:]]
    restored = DedupeWindow(1000)
    restored.restore([*window.keys(), ids[0]])  # a bare id (an old outbox) names no sender
    assert restored.keys() == window.keys()


def test_stragglers_of_the_last_16_retired_epochs_are_ignored() -> None:
    def env(epoch: int, seq: int) -> Envelope:
        return Envelope(id=bytes([seq]) + epoch.to_bytes(15, "big"), source="a",
                        destination="b", kind="PropertyValueUpdate", body=body(seq),
                        reliable=True, stream="s", stream_epoch=epoch, seq=seq, base=1)

    streams = InboundStreams(SessionConfig())
    events: list[SessionEvent] = []
    # the sender loses its stream state 17 times; epochs fall, so an eviction by set order
    # (rather than age) would evict the epoch retired last
    epochs = [1000 - i for i in range(RETIRED_EPOCHS + 2)]
    for epoch in epochs:
        assert streams.accept(env(epoch, 1), 0, events)[0] == [env(epoch, 1)]
    assert len([e for e in events if isinstance(e, StreamReset)]) == RETIRED_EPOCHS + 1
    events.clear()
    for epoch in epochs[1:-1]:  # the last 16 retired: their stragglers are ignored
        assert streams.accept(env(epoch, 2), 0, events) == ([], Verdict.WAITING)
    assert events == []
    assert streams.position(("a", "b", "s")) == (epochs[-1], 2)
    # the oldest was evicted: its straggler is taken for a new stream state (a reset), where
    # it waits for seq 1
    assert streams.accept(env(epochs[0], 2), 0, events) == ([], Verdict.NEW)
    assert [(e.old_epoch, e.new_epoch) for e in events] == [(epochs[-1], epochs[0])]


# -- the guard ----------------------------------------------------------------------------------


class HmacGuard:
    """A test guard: seals with an HMAC over the envelope's encoding (signature left out), and
    refuses what does not verify. ``answer``: whether refusals may be answered."""

    authenticates = True

    def __init__(self, key: bytes = b"k" * 32, *, answer: bool = True) -> None:
        self.key = key
        self.answer = answer
        self.opened: list[Envelope] = []

    def _mac(self, env: Envelope) -> bytes:
        return hmac.digest(self.key, encode_envelope(env._replace(signature=None)), "sha256")

    def seal(self, envelope: Envelope, now: int) -> Envelope:
        return envelope._replace(signature=self._mac(envelope))

    def open(self, envelope: Envelope, now: int) -> Envelope:
        self.opened.append(envelope)
        bad = error_class(ErrorCode.BAD_SIGNATURE)
        if envelope.signature is None:
            raise bad("unsigned", details={"reason": "missing"})
        if not hmac.compare_digest(envelope.signature, self._mac(envelope)):
            raise bad("the signature does not verify", details={"reason": "invalid"})
        return envelope._replace(signature=None)

    def answers(self, refusal: ModelError, envelope: Envelope) -> bool:
        return self.answer


def envelopes_of(frames: list[Frame]) -> list[Envelope]:
    return [decode_envelope(raw) for f in frames for raw in decode_frame(f.data)]


def tampered(frame: Frame) -> Frame:
    """The frame with one byte of each envelope's body flipped, signatures kept."""
    flipped = [encode_envelope(env._replace(body=env.body[:-1] + bytes([env.body[-1] ^ 1])))
               for env in envelopes_of([frame])]
    return Frame(frame.destination, encode_frame(flipped), len(flipped), frame.priority)


def kinds_sent(link: Link, who: str) -> list[str]:
    """The kinds of everything ``who`` sends from now until it has nothing left to do."""
    kinds = []
    for _ in range(1000):  # a bound: a session that never falls silent fails the test
        if not (frames := link.step(who)):
            return kinds
        kinds += [env.kind for env in envelopes_of(frames)]
    raise AssertionError(f"{who} still sends after 1000 steps")


def test_what_the_guard_seals_it_opens_acks_included() -> None:
    link = Link(guard_a=HmacGuard(), guard_b=HmacGuard())
    for i in range(5):
        link.send(i, reliable=i % 2 == 0)
    link.now = 10 * MS
    frames = link.frames("a")
    assert all(env.signature is not None for env in envelopes_of(frames))
    link.deliver(frames, "b")
    acks = link.step("b")
    assert [env.kind for env in envelopes_of(acks)] == ["Ack"]
    assert all(env.signature is not None for env in envelopes_of(acks))
    link.deliver(acks, "a")
    assert link.delivered["b"] == [0, 1, 2, 3, 4]
    assert link.a.pending_count == 0  # the signed acks were opened and settled them
    assert link.a.counters.refused_by_guard == link.b.counters.refused_by_guard == 0


def test_a_retransmission_is_sealed_with_its_current_header() -> None:
    link = Link(guard_a=HmacGuard(), guard_b=HmacGuard())
    link.send(0, priority=Priority.CRITICAL)
    link.send(1, priority=Priority.CRITICAL)
    first, _lost = link.frames("a")
    link.deliver([first], "b")
    link.deliver(link.step("b"), "a")  # 0 is acknowledged: the stream's base moves to 2
    again = link.step("a")
    assert [(env.seq, env.base) for env in envelopes_of(again)] == [(2, 2)]
    link.deliver(again, "b")
    assert link.delivered["b"] == [0, 1]
    assert link.b.counters.refused_by_guard == 0


def test_a_chunked_message_is_opened_once_it_is_whole() -> None:
    small = SessionConfig(seed=1, frame_bytes=16 * 1024)
    link = Link(small, SessionConfig(seed=2, frame_bytes=16 * 1024), guard_a=HmacGuard(),
                guard_b=(guard := HmacGuard()))
    link.send(7, size=100_000)
    link.now = 10 * MS
    frames = link.frames("a")
    assert len(frames) >= 7
    random.Random(5).shuffle(frames)
    link.deliver(frames, "b")
    assert link.delivered["b"] == [7]
    assert len(guard.opened) == 1 and guard.opened[0].chunk is None
    link.deliver(link.step("b"), "a")
    assert link.a.pending_count == 0


def test_one_tampered_chunk_spoils_the_whole_message() -> None:
    small = SessionConfig(seed=1, frame_bytes=16 * 1024)
    link = Link(small, SessionConfig(seed=2, frame_bytes=16 * 1024), guard_a=HmacGuard(),
                guard_b=HmacGuard())
    link.send(7, size=100_000)
    link.now = 10 * MS
    frames = link.frames("a")
    frames[3] = tampered(frames[3])
    link.deliver(frames, "b")
    assert link.delivered["b"] == []
    assert link.b.counters.refused_by_guard == 1
    assert [e.code for e in link.events["b"] if isinstance(e, InputRejected)] == [
        ErrorCode.BAD_SIGNATURE]
    assert kinds_sent(link, "b") == ["ErrorReport"]  # no Ack


def test_tampered_and_unsigned_envelopes_are_refused_and_not_acknowledged() -> None:
    link = Link(guard_a=HmacGuard(), guard_b=HmacGuard())
    link.send(1, priority=Priority.CRITICAL)
    link.deliver([tampered(f) for f in link.frames("a")], "b")
    unsigned = Session(SessionConfig(seed=3), ["a"])  # the null guard: seals nothing
    unsigned.send(source="a", destination="b", kind="PropertyValueUpdate", body=body(2), now=0,
                  priority=Priority.CRITICAL, reliable=True)
    link.deliver(unsigned.pop_frames(link.now), "b")
    assert link.delivered["b"] == []
    rejected = [e for e in link.events["b"] if isinstance(e, InputRejected)]
    assert [(e.code, e.answered) for e in rejected] == [(ErrorCode.BAD_SIGNATURE, True)] * 2
    assert link.b.counters.refused_by_guard == 2
    assert link.b.counters.delivered == 0
    assert kinds_sent(link, "b") == ["ErrorReport", "ErrorReport"]  # no Ack


def test_a_refusal_the_guard_keeps_silent_about_leaves_no_trace() -> None:
    link = Link(guard_a=HmacGuard(), guard_b=HmacGuard(answer=False))
    link.send(1, priority=Priority.CRITICAL)
    genuine = link.frames("a")
    link.deliver([tampered(f) for f in genuine], "b")
    assert link.b.counters.refused_by_guard == 1
    assert [e.answered for e in link.events["b"] if isinstance(e, InputRejected)] == [False]
    assert link.b.counters.error_reports_sent == link.b.counters.error_reports_suppressed == 0
    assert kinds_sent(link, "b") == []  # silence: no ErrorReport, no Ack
    # the forgery left nothing behind (dedupe window, stream position): the genuine copy of
    # the same id is delivered and acknowledged
    link.deliver(genuine, "b")
    assert link.delivered["b"] == [1]
    assert kinds_sent(link, "b") == ["Ack"]


def test_refusals_are_answered_within_the_rate_and_never_to_a_broadcast() -> None:
    link = Link(config_b=SessionConfig(seed=2, error_reports_per_s=5), guard_b=HmacGuard())
    link.b.join_group("group:g")
    for i in range(20):
        link.send(i, priority=Priority.CRITICAL, reliable=False)
    link.a.send(source="a", destination="group:g", kind="PropertyValueUpdate", body=body(99),
                now=link.now, priority=Priority.CRITICAL)
    link.deliver(link.frames("a"), "b")  # all unsigned
    counters = link.b.counters
    assert counters.refused_by_guard == 21 and counters.delivered == 0
    assert counters.error_reports_sent == 5 and counters.error_reports_suppressed == 15
    rejected = [e for e in link.events["b"] if isinstance(e, InputRejected)]
    assert rejected[-1].answered is False  # the broadcast: its source is nobody's word


def test_a_duplicate_chunked_message_is_opened_acknowledged_again_and_delivered_once() -> None:
    small = SessionConfig(seed=1, frame_bytes=16 * 1024)
    link = Link(small, SessionConfig(seed=2, frame_bytes=16 * 1024), guard_a=HmacGuard(),
                guard_b=(guard := HmacGuard()))
    link.send(7, size=100_000)
    link.now = 10 * MS
    chunks = envelopes_of(frames := link.frames("a"))
    link.deliver(frames, "b")
    assert link.step("b")  # the ack is lost
    again = link.step("a")  # every chunk is sent again
    for _ in range(100):
        if not any(link.a.queue_depth().values()):
            break
        again += link.step("a")
    assert len(envelopes_of(again)) == len(chunks) >= 7 and link.a.counters.retransmits == 1
    link.deliver(again, "b")
    ack = link.step("b")
    assert [env.kind for env in envelopes_of(ack)] == ["Ack"]
    link.deliver(ack, "a")
    assert link.delivered["b"] == [7]
    assert link.b.counters.duplicates == 1
    assert len(guard.opened) == 2  # reassembled and opened before it was found a duplicate
    assert link.a.pending_count == 0


def test_without_an_authenticating_guard_a_resent_chunk_is_acknowledged_at_once() -> None:
    small = SessionConfig(seed=1, frame_bytes=16 * 1024)
    link = Link(small, SessionConfig(seed=2, frame_bytes=16 * 1024))
    link.send(7, size=100_000)
    link.now = 10 * MS
    frames = link.frames("a")
    link.deliver(frames, "b")
    assert link.step("b")  # the ack is lost
    again = link.step("a")  # the first frames of the retransmission
    first = envelopes_of(again)[0]
    assert first.chunk is not None and first.chunk.index == 0
    link.deliver(again[:1], "b")  # its first chunk alone is enough to acknowledge again
    ack = link.step("b")
    assert [env.kind for env in envelopes_of(ack)] == ["Ack"]
    link.deliver(ack, "a")
    assert link.a.pending_count == 0 and link.delivered["b"] == [7]


def test_an_authenticating_guard_leaves_unknown_destinations_unanswered() -> None:
    for guard, answered in ((NullGuard(), True), (HmacGuard(), False)):
        link = Link(guard_a=HmacGuard() if guard.authenticates else None, guard_b=guard)
        link.a.send(source="a", destination="nobody", kind="PropertyValueUpdate", body=body(1),
                    now=0, priority=Priority.STATE)
        link.now = 10 * MS
        link.deliver(link.frames("a"), "b")
        rejected = [e for e in link.events["b"] if isinstance(e, InputRejected)]
        assert [(e.code, e.answered) for e in rejected] == [(ErrorCode.UNKNOWN_ACTOR, answered)]


def test_the_null_guard_changes_nothing_on_the_wire() -> None:
    guard = NullGuard()
    env = Envelope(id=bytes(16), source="a", destination="b", kind="Ack", body=b"\x91\x90")
    assert guard.seal(env, 0) is env and guard.open(env, 0) is env
    link = Link()
    sent = link.a.send(source="a", destination="b", kind="PropertyValueUpdate", body=body(1),
                       now=0, priority=Priority.CRITICAL)
    (frame,) = link.frames("a")
    assert frame.data == encode_frame([encode_envelope(sent)])


def test_a_failing_guard_costs_one_envelope_not_its_frame() -> None:
    class Buggy(NullGuard):
        def open(self, envelope: Envelope, now: int) -> Envelope:
            if payload_of(envelope) == 1:
                raise KeyError("a bug")
            return envelope

    link = Link(guard_b=Buggy())
    for i in range(3):
        link.send(i, reliable=False)
    link.now = 10 * MS
    (frame,) = link.frames("a")
    link.deliver([frame], "b")
    assert link.delivered["b"] == [0, 2]
    rejected = [e for e in link.events["b"] if isinstance(e, InputRejected)]
    assert [(e.code, e.answered) for e in rejected] == [(ErrorCode.INTERNAL_ERROR, False)]
    assert link.b.counters.refused_by_guard == 1


# -- a receiver's Pause -------------------------------------------------------------------------


def pause_from_b(link: Link, hold_ms: int, *, to: str = "a") -> None:
    """``b`` asks its peer to hold what it sends ``b`` (or sends it to the group ``to``)."""
    if to == "a":
        link.b.pause_sender("b", "a", hold_ms * MS, link.now)
    else:
        link.b.send(source="b", destination=to, kind="Pause",
                    body=encode_body(Pause(hold_ms=hold_ms)), now=link.now,
                    priority=Priority.CRITICAL)
    frames = link.frames("b")
    assert [e.kind for e in envelopes_of(frames)] == ["Pause"]
    assert frames[0].priority is Priority.CRITICAL
    link.a.join_group("group:site1")
    link.deliver(frames, "a")


def test_a_pause_holds_state_and_bulk_for_its_sender_only_and_ends_by_itself() -> None:
    link = Link(SessionConfig(seed=1))
    link.a.add_local("a2")
    pause_from_b(link, 300)
    assert link.a.held("b", link.now) and link.a.counters.paused == 1
    link.send(1, reliable=False, priority=Priority.BULK)
    link.send(2, reliable=True, priority=Priority.STATE)
    link.a.send(source="a2", destination="c", kind="PropertyValueUpdate", body=body(3),
                now=link.now, priority=Priority.BULK)
    link.send(4, reliable=False, priority=Priority.CRITICAL)
    link.send(5, reliable=True, priority=Priority.CONTROL)
    link.now += 100 * MS  # past every batching window, within the hold
    left = envelopes_of(link.frames("a"))
    assert sorted((e.destination, payload_of(e)) for e in left) == [("b", 4), ("b", 5),
                                                                     ("c", 3)]
    assert link.a.next_deadline() == 300 * MS  # the pump wakes when the hold ends
    link.now = 300 * MS
    assert [payload_of(e) for e in envelopes_of(link.frames("a"))] == [2, 1]  # in class order
    assert not link.a.held("b", link.now)


def test_a_pause_of_zero_lifts_the_hold_at_once_in_order() -> None:
    link = Link(SessionConfig(seed=1))
    pause_from_b(link, 10_000)
    for i in range(5):
        link.send(i, reliable=False, priority=Priority.BULK)
    link.now += 100 * MS
    assert link.frames("a") == []
    pause_from_b(link, 0)
    assert [payload_of(e) for e in envelopes_of(link.frames("a"))] == [0, 1, 2, 3, 4]


def test_a_credit_lets_that_many_bytes_go_in_order_and_holds_the_rest() -> None:
    link = Link(SessionConfig(seed=1, batch_max_envelopes=1))  # a batch per envelope
    pause_from_b(link, 10_000)
    for i in range(10):
        link.send(i, reliable=False, priority=Priority.BULK, size=1000)
    link.now += 100 * MS
    assert link.frames("a") == []
    link.b.pause_sender("b", "a", 10_000 * MS, link.now, credit_bytes=2500)
    link.deliver(link.frames("b"), "a")
    # a batch leaves while any credit is left: three of ~1 kB for 2.5 kB of credit
    assert [payload_of(e) for e in envelopes_of(link.frames("a"))] == [0, 1, 2]
    link.now += 100 * MS
    assert link.frames("a") == [] and link.a.held("b", link.now)
    link.b.pause_sender("b", "a", 10_000 * MS, link.now, credit_bytes=1)
    link.deliver(link.frames("b"), "a")
    assert [payload_of(e) for e in envelopes_of(link.frames("a"))] == [3]


def test_a_pause_in_a_broadcast_holds_nothing() -> None:
    link = Link(SessionConfig(seed=1))
    pause_from_b(link, 5_000, to="group:site1")  # anyone in a room may claim to be b
    assert not link.a.held("b", link.now) and link.a.counters.paused == 0


def test_held_bulk_is_shed_first_over_the_memory_bound() -> None:
    link = Link(SessionConfig(seed=1, max_queued_bytes=20_000))
    pause_from_b(link, 10_000)
    for i in range(40):  # ~12 kB for b, set aside once its batches close
        link.send(i, reliable=False, priority=Priority.BULK, size=300)
    link.now += 100 * MS
    assert link.frames("a") == []
    for i in range(40):  # and as much for c: over the bound
        link.a.send(source="a", destination="c", kind="PropertyValueUpdate",
                    body=body(100 + i, 300), now=link.now, priority=Priority.BULK)
    assert link.a.queued_bytes <= 20_000
    link.now += 100 * MS
    to_c = [e for e in envelopes_of(link.frames("a")) if e.destination == "c"]
    assert len(to_c) == 40  # what was shed was b's, held, older


def test_a_full_send_window_holds_back_state_and_bulk_not_critical_or_control() -> None:
    link = Link(SessionConfig(seed=1))
    link.send(1, reliable=False, priority=Priority.BULK)
    link.send(2, reliable=True, priority=Priority.STATE)
    link.send(3, reliable=False, priority=Priority.CRITICAL)
    link.send(4, reliable=True, priority=Priority.CONTROL)
    link.now += 100 * MS
    link.a.handle_timer(link.now)
    # the kernel holds a whole window (budget 0); the write buffer has room (urgent)
    left = link.a.pop_frames(link.now, 0, urgent=64 * 1024)
    assert sorted(payload_of(e) for e in envelopes_of(left)) == [3, 4]
    assert link.a.pop_frames(link.now, 0, urgent=64 * 1024) == []
    assert [payload_of(e) for e in envelopes_of(link.a.pop_frames(link.now, 10_000))] == [2, 1]


def test_without_priorities_the_window_holds_back_everything() -> None:
    link = Link(SessionConfig(seed=1, priorities=False))
    link.send(3, reliable=False, priority=Priority.CRITICAL)
    link.now += 100 * MS
    assert link.a.pop_frames(link.now, 0, urgent=64 * 1024) == []
    assert [payload_of(e) for e in envelopes_of(link.a.pop_frames(link.now, 1))] == [3]


# -- holes found by attacking the running system (issue 14) -------------------------------------


def _raw_envelope(source: object, destination: object = "b", *, message_id: bytes | None = None,
                  kind: int = 3, payload: bytes | None = None) -> bytes:
    """An envelope's bytes built field by field, so a test can put anything anywhere."""
    import msgpack

    from broker_bridge.codec import _WIRE_IDS

    wire = _WIRE_IDS["PropertyValueUpdate"] if kind == 3 else kind
    return msgpack.packb([1, message_id or bytes(range(16)), source, destination, 2, 1, wire,
                          payload if payload is not None else body(7)], use_bin_type=True)


def test_a_type_confused_envelope_costs_only_itself_and_is_answered_to_its_connection() -> None:
    """Hole 1: a list or a map where an address belongs raised TypeError out of the session,
    and the good envelopes after it in the same frame were lost. Hole 5: a malformed envelope
    was answered to the source it claims, which made the session reflect errors at a
    victim."""
    link = Link()
    good = link.a.send(source="a", destination="b", kind="PropertyValueUpdate", body=body(5),
                       now=0, priority=Priority.CRITICAL)
    bad = [_raw_envelope(["a"]), _raw_envelope({"x": 1}), _raw_envelope("a", ["b"]),
           _raw_envelope("victim", 7)]
    frame = encode_frame([*bad, encode_envelope(good)])
    link.b.receive_frame(frame, 0, Origin("a", {"a"}.__contains__))
    link.collect()
    assert link.delivered["b"] == [5]
    rejected = [e for e in link.events["b"] if isinstance(e, InputRejected)]
    assert [e.code for e in rejected] == [ErrorCode.MALFORMED_MESSAGE] * 4
    link.now = 10 * MS
    answers = [decode_envelope(raw) for f in link.frames("b") for raw in decode_frame(f.data)]
    # every answer went to the connection ("a"), none to the "victim" the garbage named
    assert answers and {env.destination for env in answers} == {"a"}


def test_garbage_through_a_room_is_never_answered() -> None:
    link = Link()
    link.b.join_group("group:site1")
    frame = encode_frame([_raw_envelope("victim", ["group:site1"])])
    link.b.receive_frame(frame, 0, Origin("room-member", broadcast=True))
    link.collect()
    rejected = [e for e in link.events["b"] if isinstance(e, InputRejected)]
    assert [e.code for e in rejected] == [ErrorCode.MALFORMED_MESSAGE]
    assert not rejected[0].answered and link.b.counters.error_reports_sent == 0


def test_a_bug_handling_one_envelope_spares_the_others_in_its_frame() -> None:
    class Fragile(NullGuard):
        def open(self, envelope: Envelope, now: int) -> Envelope:
            if payload_of(envelope) == 13:
                raise RuntimeError("a bug")
            return envelope

    link = Link(guard_b=Fragile())
    for n in (12, 13, 14):
        link.send(n, reliable=False, priority=Priority.CRITICAL)
    link.now = 10 * MS
    link.deliver(link.frames("a"), "b")
    assert link.delivered["b"] == [12, 14]


def _forged_ack(sender: str, ids: list[bytes]) -> bytes:
    from object_model.messages import Ack

    env = Envelope(id=bytes([9] * 16), source=sender, destination="a", kind="Ack",
                   body=encode_body(Ack(message_ids=ids)), priority=Priority.CRITICAL,
                   timestamp_us=1)
    return encode_frame([encode_envelope(env)])


def test_only_the_destination_settles_a_reliable_envelope() -> None:
    """Hole 2: an Ack, or an ErrorReport correlated to a pending id, from anyone (any room
    occupant) cancelled that reliable envelope."""
    link = Link()
    link.a.add_local("a")
    message_id = link.send(1)
    link.now = 10 * MS
    lost = link.frames("a")  # the broker loses it
    assert lost
    link.a.receive_frame(_forged_ack("mallory", [message_id]), link.now)
    report = Envelope(id=bytes([8] * 16), source="mallory", destination="a",
                      kind="ErrorReport", body=encode_body(ErrorReport(code="internal_error",
                                                                       text="no")),
                      correlation=message_id, priority=Priority.CRITICAL, timestamp_us=1)
    link.a.receive_frame(encode_frame([encode_envelope(report)]), link.now)
    link.collect()
    assert link.a.pending_count == 1  # still waiting for "b"
    assert link.a.counters.forged == 2  # the ack and the report
    assert not [e for e in link.events["a"] if isinstance(e, EnvelopesAcked)]
    link.run(link.now + 5 * SECOND)  # the retransmission arrives and "b" acknowledges it
    assert link.delivered["b"] == [1] and link.a.pending_count == 0


def test_another_sender_cannot_preempt_a_message_by_sending_its_id_first() -> None:
    """Hole 4: the dedupe window was keyed by id alone."""
    link = Link()
    link.b.add_local("b")
    message_id = bytes(range(16))
    mallory = _raw_envelope("mallory", message_id=message_id, payload=body(66))
    genuine = _raw_envelope("a", message_id=message_id, payload=body(1))
    link.b.receive_frame(encode_frame([mallory]), 0)
    link.b.receive_frame(encode_frame([genuine]), 0)
    link.b.receive_frame(encode_frame([genuine]), 0)  # a true duplicate is still dropped
    link.collect()
    assert sorted(link.delivered["b"]) == [1, 66]
    assert link.b.counters.duplicates == 1


def test_reliable_broadcasts_are_refused_without_a_trace() -> None:
    """Part of hole 6: no session sends a reliable broadcast, and each forged one opened a
    stream state."""
    link = Link()
    link.b.join_group("group:site1")
    for n in range(50):
        env = Envelope(id=n.to_bytes(16, "big"), source=f"claimed-{n}",
                       destination="group:site1", kind="PropertyValueUpdate", body=body(n),
                       reliable=True, stream="s", seq=n, timestamp_us=1)
        link.b.receive_frame(encode_frame([encode_envelope(env)]), 0,
                             Origin(None, broadcast=True))
    link.collect()
    assert link.delivered["b"] == []
    assert link.b._in_streams.positions() == {}
    assert link.b.counters.error_reports_sent == 0


def _reliable(source: str, n: int, *, stream: str = "s", seq: int = 0, chunk=None,  # type: ignore[no-untyped-def]
              size: int = 0) -> bytes:
    env = Envelope(id=os.urandom(16), source=source, destination="b",
                   kind="PropertyValueUpdate", body=body(n, size), reliable=True, stream=stream,
                   seq=seq, chunk=chunk, timestamp_us=1)
    return encode_frame([encode_envelope(env)])


def _codes(session: Session) -> list[ErrorCode]:
    return [e.code for e in session.drain_events() if isinstance(e, InputRejected)]


def test_memory_has_a_bound_for_every_sender_together() -> None:
    """Hole 6: reassembly had a budget per peer only, and streams were unbounded."""
    from broker_bridge.envelope import ChunkInfo

    config = SessionConfig(seed=2, reassembly_max_bytes_per_peer=10_000,
                           reassembly_max_bytes=25_000, reassembly_max_messages=1_000,
                           max_in_streams=50, max_in_streams_per_pair=20,
                           reorder_max_bytes=3_000)
    b = Session(config, ["b"])
    # partial messages: each peer within its own budget, all of them together not
    for peer in range(4):
        b.receive_frame(_reliable(f"p{peer}", 0, chunk=ChunkInfo(0, 2, 8_000)), 0)
    assert _codes(b) == [ErrorCode.REASSEMBLY_OVERFLOW]  # the fourth: 32,000 > 25,000
    assert b._reassembler.buffered_bytes == 24_000
    # streams: one sender may open 20 to one actor; everyone together 50
    for n in range(25):
        b.receive_frame(_reliable("greedy", n, stream=f"s{n}"), 0)
    assert _codes(b) == [ErrorCode.LIMIT_EXCEEDED] * 5
    for n in range(40):
        b.receive_frame(_reliable(f"claimed-{n}", n), 0)
    refused = _codes(b)
    assert refused == [ErrorCode.LIMIT_EXCEEDED] * 10 and len(b._in_streams.positions()) == 50
    sent = b.counters.error_reports_sent
    # an open stream goes on; early envelopes wait within the bytes bound, the rest are
    # dropped unacknowledged (their senders send them again)
    for seq in range(2, 12):
        b.receive_frame(_reliable("greedy", 100 + seq, stream="s0", seq=seq, size=500), 0)
    assert b._in_streams._waiting_bytes <= 3_000
    b.receive_frame(_reliable("greedy", 101, stream="s0", seq=1), 0)
    delivered = [payload_of(e.envelope) for e in b.drain_events()
                 if isinstance(e, EnvelopeReceived)]
    assert delivered[0] == 101 and len(delivered) == 1 + 3_000 // len(body(0, 500))
    assert b._in_streams._waiting_bytes == 0
    assert b.counters.error_reports_sent == sent  # the global bound answers nobody


# -- found by attacking the signing guard's session (this stop) -------------------------------


def _chunk(source: str, destination: str, n: int, *, message_id: bytes, total: int,
           count: int = 2, index: int = 0) -> bytes:
    from broker_bridge.envelope import ChunkInfo

    env = Envelope(id=message_id, source=source, destination=destination,
                   kind="PropertyValueUpdate", body=b"x", timestamp_us=1,
                   chunk=ChunkInfo(index, count, total))
    return encode_frame([encode_envelope(env)])


def test_room_chunks_spend_the_rooms_budget_and_are_never_answered() -> None:
    """A room member claiming "a" filled a's reassembly budget at b (a's genuine large
    message was then refused, and the refusal settled it: lost), and each chunk error of a
    broadcast was answered by every member at whoever it named."""
    link = Link(config_b=SessionConfig(seed=2, reassembly_max_bytes_per_peer=100_000))
    link.b.join_group("group:site1")
    for n in range(3):  # three huge partials claiming a, through the room
        link.b.receive_frame(_chunk("a", "group:site1", n, message_id=bytes([n]) * 16,
                                    total=60_000), 0, Origin("mallory", broadcast=True))
    link.collect()
    assert link.b.counters.error_reports_sent == 0  # refused (chunked broadcasts): unanswered
    assert link.b.reassembling_bytes == 0  # and nothing held for them
    link.send(7, size=80_000)  # a's genuine large message, in chunks, direct
    link.run(link.now + 5 * SECOND)
    assert link.delivered["b"] == [7]


def test_a_room_member_cannot_spoil_a_broadcast_with_a_forged_chunk() -> None:
    """Broadcasts travel in one frame and chunks through a room are refused: a member who
    injects a chunk claiming a genuine broadcast's source and id spoils nothing (it used to
    join the genuine message's reassembly and fail it whole)."""
    link = Link()
    link.b.join_group("group:site1")
    genuine = link.a.send(source="a", destination="group:site1", kind="PropertyValueUpdate",
                          body=body(5), now=0)
    link.b.receive_frame(_chunk("a", "group:site1", 0, message_id=genuine.id, total=2), 0,
                         Origin("mallory", broadcast=True))
    link.now = 10 * MS
    for frame in link.frames("a"):
        link.b.receive_frame(frame.data, link.now, Origin(None, broadcast=True))
    link.collect()
    assert link.delivered["b"] == [5]
    with pytest.raises(ModelError) as info:  # and no session sends a broadcast in chunks
        link.a.send(source="a", destination="group:site1", kind="PropertyValueUpdate",
                    body=body(6, 60_000), now=link.now)
    assert info.value.code is ErrorCode.MESSAGE_TOO_LARGE


def test_one_sender_cannot_take_every_reassembly_slot() -> None:
    config = SessionConfig(seed=2, reassembly_max_messages=100,
                           reassembly_max_messages_per_peer=10)
    b = Session(config, ["b"])
    for n in range(50):
        b.receive_frame(_chunk("mallory", "b", n, message_id=n.to_bytes(16, "big"),
                               total=2), 0, Origin("mallory", {"mallory"}.__contains__))
    assert len(b._reassembler._partials) == 10
    b.receive_frame(_chunk("a", "b", 0, message_id=bytes(16), total=2), 0,
                    Origin("a", {"a"}.__contains__))
    assert len(b._reassembler._partials) == 11  # another sender still has room


def test_acks_and_error_reports_through_a_room_settle_nothing() -> None:
    from object_model.messages import Ack

    link = Link()
    link.a.join_group("group:site1")
    message_id = link.send(1)
    link.now = 10 * MS
    link.frames("a")  # lost on the way
    for kind, body_bytes, correlation in (
            ("Ack", encode_body(Ack(message_ids=[message_id])), None),
            ("ErrorReport", encode_body(ErrorReport(code="internal_error", text="no")),
             message_id)):
        env = Envelope(id=os.urandom(16), source="b", destination="group:site1", kind=kind,
                       body=body_bytes, correlation=correlation, timestamp_us=1)
        link.a.receive_frame(encode_frame([encode_envelope(env)]), link.now,
                             Origin(None, broadcast=True))
    assert link.a.pending_count == 1


def test_a_reliable_envelope_delivered_before_is_not_delivered_again_in_a_new_epoch() -> None:
    """A captured reliable envelope replayed after its sender lost its stream state (a new
    epoch resets the stream) was delivered a second time; and an envelope past its expiry
    was delivered at all."""
    link = Link()
    link.send(1)
    link.now = 10 * MS
    captured = list(link.frames("a"))
    link.deliver(captured, "b")
    assert link.delivered["b"] == [1]
    reset = Envelope(id=os.urandom(16), source="a", destination="b",
                     kind="PropertyValueUpdate", body=body(2), reliable=True, stream="other",
                     stream_epoch=99, seq=0, timestamp_us=1)
    link.b.receive_frame(encode_frame([encode_envelope(reset)]), link.now)
    first = decode_envelope(decode_frame(captured[0].data)[0])
    replay = first._replace(stream_epoch=first.stream_epoch + 1)  # as a new epoch would carry
    link.b.receive_frame(encode_frame([encode_envelope(replay)]), link.now)
    late = Envelope(id=os.urandom(16), source="a", destination="b", kind="PropertyValueUpdate",
                    body=body(3), expires_us=5, timestamp_us=1)
    link.b.receive_frame(encode_frame([encode_envelope(late)]), link.now)
    link.collect()
    assert link.delivered["b"] == [1, 2]
    assert ErrorCode.EXPIRED in [e.code for e in link.events["b"]
                                 if isinstance(e, InputRejected)]
