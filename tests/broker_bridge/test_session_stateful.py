"""A hypothesis state machine over two sessions and a wire it controls, with an attacker on
the broker: reliable envelopes sent, frames delivered out of order, duplicated and dropped,
time advanced (retransmissions), and forged acknowledgements and id pre-emptions from
another account. Whatever the interleaving: the receiver delivers each envelope at most once
and in order, forged input settles and pre-empts nothing, and once the wire is left alone
everything sent arrives exactly once."""

from __future__ import annotations

from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from broker_bridge.codec import encode_body, encode_envelope, encode_frame
from broker_bridge.envelope import Envelope, Priority
from broker_bridge.session import SECOND, EnvelopeReceived, Session, SessionConfig
from broker_bridge.transport import Origin
from object_model.messages import Ack, ErrorReport
from tests.broker_bridge.test_session import body, payload_of

A = Origin("a", lambda source: source == "a")
B = Origin("b", lambda source: source == "b")
MALLORY = Origin("mallory", lambda source: source == "mallory")


class Wire(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.a = Session(SessionConfig(seed=1, frame_bytes=16 * 1024), ["a"])
        self.b = Session(SessionConfig(seed=2, frame_bytes=16 * 1024), ["b"])
        self.now = 1_000 * SECOND
        self.to_b: list[bytes] = []
        self.to_a: list[bytes] = []
        self.sent: list[int] = []
        self.ids: list[bytes] = []
        self.delivered: list[int] = []
        self.forged = 0

    # -- the honest parties ------------------------------------------------------------------

    @rule(large=st.booleans())
    def send(self, large: bool) -> None:
        n = len(self.sent) + 1
        env = self.a.send(source="a", destination="b", kind="PropertyValueUpdate",
                          body=body(n, 40_000 if large else 0), now=self.now, reliable=True,
                          priority=Priority.STATE)
        self.sent.append(n)
        self.ids.append(env.id)

    @rule()
    def pump(self) -> None:
        for session, wire in ((self.a, self.to_b), (self.b, self.to_a)):
            session.handle_timer(self.now)
            wire.extend(frame.data for frame in session.pop_frames(self.now))

    @rule(seconds=st.sampled_from([0.002, 0.05, 1.0, 5.0]))
    def advance(self, seconds: float) -> None:
        self.now += int(seconds * SECOND)

    # -- the wire ----------------------------------------------------------------------------

    @precondition(lambda self: self.to_b)
    @rule(data=st.data(), keep=st.booleans())
    def deliver_to_b(self, data: st.DataObject, keep: bool) -> None:
        """Any frame, in any order; ``keep``: a duplicate stays on the wire."""
        index = data.draw(st.integers(0, len(self.to_b) - 1))
        frame = self.to_b[index] if keep else self.to_b.pop(index)
        self.b.receive_frame(frame, self.now, A)
        self._collect()

    @precondition(lambda self: self.to_a)
    @rule(data=st.data(), keep=st.booleans())
    def deliver_to_a(self, data: st.DataObject, keep: bool) -> None:
        index = data.draw(st.integers(0, len(self.to_a) - 1))
        frame = self.to_a[index] if keep else self.to_a.pop(index)
        self.a.receive_frame(frame, self.now, B)
        self.a.drain_events()

    @precondition(lambda self: self.to_b or self.to_a)
    @rule(data=st.data())
    def drop(self, data: st.DataObject) -> None:
        wire = self.to_b if self.to_b else self.to_a
        wire.pop(data.draw(st.integers(0, len(wire) - 1)))

    # -- the attacker ------------------------------------------------------------------------

    def _forge(self, destination: str, kind: str, message: object, *,
               correlation: bytes | None = None, message_id: bytes | None = None) -> bytes:
        self.forged += 1
        env = Envelope(id=message_id or (10**6 + self.forged).to_bytes(16, "big"),
                       source="mallory", destination=destination, kind=kind,
                       body=encode_body(message), priority=Priority.CONTROL,  # type: ignore[arg-type]
                       timestamp_us=self.now, correlation=correlation)
        return encode_frame([encode_envelope(env)])

    @precondition(lambda self: self.ids)
    @rule(data=st.data(), as_error=st.booleans())
    def forge_settlement(self, data: st.DataObject, as_error: bool) -> None:
        """Another account acknowledges (or reports an error for) a's envelopes: nothing
        pending at a may be settled by it."""
        target = data.draw(st.sampled_from(self.ids))
        pending = self.a.pending_count
        if as_error:
            frame = self._forge("a", "ErrorReport", ErrorReport(code="busy", text="no"),
                                correlation=target)
        else:
            frame = self._forge("a", "Ack", Ack(message_ids=[target]))
        self.a.receive_frame(frame, self.now, MALLORY)
        self.a.drain_events()
        assert self.a.pending_count == pending

    @precondition(lambda self: self.ids)
    @rule(data=st.data())
    def forge_preemption(self, data: st.DataObject) -> None:
        """Another account sends b an envelope carrying one of a's ids first: it must not
        stop a's envelope from being delivered (dedupe is per sender)."""
        target = data.draw(st.sampled_from(self.ids))
        frame = self._forge("b", "PropertyValueUpdate", _decoy(), message_id=target)
        self.b.receive_frame(frame, self.now, MALLORY)
        self._collect()

    @rule()
    def forge_source(self) -> None:
        """Another account claims to be a: refused, whatever it says."""
        env = Envelope(id=(2 * 10**6 + self.forged).to_bytes(16, "big"), source="a",
                       destination="b", kind="PropertyValueUpdate", body=body(999_999),
                       priority=Priority.STATE, timestamp_us=self.now)
        self.forged += 1
        self.b.receive_frame(encode_frame([encode_envelope(env)]), self.now, MALLORY)
        self._collect()

    # -- what must hold ----------------------------------------------------------------------

    def _collect(self) -> None:
        for event in self.b.drain_events():
            if isinstance(event, EnvelopeReceived) and event.envelope.source == "a":
                self.delivered.append(payload_of(event.envelope))

    @invariant()
    def at_most_once_in_order_and_only_what_was_sent(self) -> None:
        assert self.delivered == sorted(set(self.delivered)), self.delivered
        assert set(self.delivered) <= set(self.sent)

    def teardown(self) -> None:
        """Leave the wire alone: everything sent arrives, exactly once, in order."""
        self.to_b.clear()  # what is still on the wire may be lost: retransmission must cover it
        self.to_a.clear()
        for _ in range(400):
            self.now += SECOND // 2
            for session, other, origin in ((self.a, self.b, A), (self.b, self.a, B)):
                session.handle_timer(self.now)
                for frame in session.pop_frames(self.now):
                    other.receive_frame(frame.data, self.now, origin)
            self._collect()
            self.a.drain_events()
            if self.delivered == self.sent and self.a.pending_count == 0:
                break
        assert self.delivered == self.sent
        assert self.a.pending_count == 0


def _decoy():  # type: ignore[no-untyped-def]
    from object_model import PropertyValueUpdate

    return PropertyValueUpdate(epoch=777_777, from_revision=0, to_revision=1)


TestWire = Wire.TestCase
TestWire.settings = settings(max_examples=150, stateful_step_count=50, deadline=None,
                             suppress_health_check=[HealthCheck.too_slow])
