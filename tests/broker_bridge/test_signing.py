"""Signed envelopes end to end (issue 14, item 3): the SigningGuard in two sessions on a fake
clock, against forged sources, altered bytes, downgrades and replays; and over a real broker,
a rogue station host on the same component domain."""

from __future__ import annotations

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

from broker_bridge.codec import (
    decode_envelope,
    decode_frame,
    encode_body,
    encode_envelope,
    encode_frame,
    is_manifest,
)
from broker_bridge.envelope import Envelope, Priority
from broker_bridge.session import MS, SECOND, EnvelopeReceived, InputRejected, SessionConfig
from broker_bridge.session.core import Session
from broker_bridge.session.signing import SIGNATURE_BYTES, SigningGuard, StaticKeys
from keypath import KeyPath
from object_model import ErrorCode
from object_model.messages import PropertyValueWrite, WriteItem
from tests.broker_bridge.test_session import Link, body, payload_of

START = 1_700_000_000 * SECOND
KEYS = {name: Ed25519PrivateKey.from_private_bytes(bytes([n]) * 32)
        for n, name in enumerate(("a", "b", "mallory"), 1)}
DIRECTORY = StaticKeys({name: key.public_key() for name, key in KEYS.items()})


def guard(*names: str, **options: object) -> SigningGuard:
    return SigningGuard({n: KEYS[n] for n in names}, DIRECTORY, **options)  # type: ignore[arg-type]


def signed_link() -> Link:
    link = Link(guard_a=guard("a"), guard_b=guard("b"))
    link.now = START
    return link


def rejected(link: Link, who: str = "b") -> list[ErrorCode]:
    link.collect()
    return [e.code for e in link.events[who] if isinstance(e, InputRejected)]


def sealed_by(sender: str, env: Envelope, now: int = START) -> Envelope:
    return guard(sender).seal(env, now)


def frame(env: Envelope) -> bytes:
    return encode_frame([encode_envelope(env)])


def envelope(n: int, *, source: str = "a", reliable: bool = False, stamp: int = START,
             message_id: bytes | None = None) -> Envelope:
    return Envelope(id=message_id or n.to_bytes(16, "big"), source=source, destination="b",
                    kind="PropertyValueUpdate", body=body(n), priority=Priority.CRITICAL,
                    timestamp_us=stamp, reliable=reliable)


def test_signed_envelopes_and_their_acknowledgements_flow_and_settle() -> None:
    link = signed_link()
    for n in range(5):
        link.send(n, priority=Priority.CONTROL)  # signed one by one
    link.run(link.now + 2 * SECOND)
    assert link.delivered["b"] == [0, 1, 2, 3, 4]
    assert link.a.pending_count == 0  # the acks were signed by b and verified by a
    assert link.a.guard.verified >= 1 and link.b.guard.verified == 5  # type: ignore[attr-defined]
    for n in range(5, 10):
        link.send(n, priority=Priority.CONTROL)
    sent = [decode_envelope(raw) for f in link.step("a") for raw in decode_frame(f.data)]
    assert len(sent) == 5
    assert all(e.signature is not None and len(e.signature) == SIGNATURE_BYTES for e in sent)


def test_state_traffic_is_signed_once_per_frame_and_each_envelope_stays_proven() -> None:
    link = signed_link()
    for n in range(300):
        link.send(n)  # state: one link, one actor, so one signature per frame
    frames = link.step("a")
    items = [raw for f in frames for raw in decode_frame(f.data)]
    manifests = [raw for raw in items if is_manifest(raw)]
    envelopes = [decode_envelope(raw) for raw in items if not is_manifest(raw)]
    assert len(manifests) == len(frames) < 10 and len(envelopes) == 300
    assert all(e.signature is None for e in envelopes)
    link.deliver(frames, "b")
    link.run(link.now + 2 * SECOND)
    assert link.delivered["b"] == list(range(300))
    assert link.b.guard.frames_verified == len(frames)  # type: ignore[attr-defined]
    assert link.b.guard.verified == len(frames)  # type: ignore[attr-defined]


def _frame_of(guard_a: SigningGuard, envelopes: list[Envelope]) -> list[bytes]:
    return guard_a.sign_frame("b", [(e, encode_envelope(e)) for e in envelopes])


def test_a_frame_signature_proves_exactly_the_bytes_it_names() -> None:
    from object_model.errors import ModelError

    sender = guard("a")
    receiver = guard("b", require_signatures=True)
    batch = [sender.seal(envelope(n)._replace(priority=Priority.STATE), START)
             for n in range(1, 4)]
    assert all(e.signature is None for e in batch)
    items = _frame_of(sender, batch)
    manifest, rest = items[:1], items[1:]

    def proven(entries: list[bytes], manifests: list[bytes] = manifest) -> dict[int, str]:
        return receiver.open_frame(manifests, [(raw, decode_envelope(raw)) for raw in entries],
                                   START)

    assert proven(rest) == {0: "a", 1: "a", 2: "a"}
    # one envelope altered, one left out, one added, or another frame's manifest: nothing
    altered = decode_envelope(rest[1])._replace(body=body(99))
    assert proven([rest[0], encode_envelope(altered), rest[2]]) == {}
    assert proven(rest[:2]) == {}
    extra = encode_envelope(envelope(5)._replace(priority=Priority.STATE))
    assert proven([*rest, extra]) == {}
    other = _frame_of(sender, [sender.seal(envelope(n)._replace(priority=Priority.STATE), START)
                               for n in range(7, 10)])
    assert proven(rest, other[:1]) == {}
    # a manifest by a key nobody vouched for, or garbage where a manifest belongs
    stranger = SigningGuard({"a": Ed25519PrivateKey.generate()}, StaticKeys())
    assert proven(rest, _frame_of(stranger, batch)[:1]) == {}
    assert proven(rest, [b"\x95\xcc\xc8" + b"junk"]) == {}
    # an unproven unsigned envelope is refused as before; a proven one opens once
    with pytest.raises(ModelError):
        receiver.open(batch[0], START)
    assert receiver.open(batch[0], START, framed_by="a").id == batch[0].id
    with pytest.raises(ModelError):  # and its replay, even framed again, is refused
        receiver.open(batch[0], START, framed_by="a")
    with pytest.raises(ModelError):  # proven for another signer: not for this source
        receiver.open(batch[1], START, framed_by="mallory")


def test_each_chunk_is_signed_and_checked_before_it_joins_a_reassembly() -> None:
    """A large message travels in pieces each signed on its own (chunk position included);
    the receiver checks every piece before reassembly, so a forged or altered piece carrying
    the message's id is refused alone and the genuine message still arrives whole."""
    from broker_bridge.transport import Origin

    for priority in (Priority.CONTROL, Priority.STATE):  # signed alone, or left to frames
        link = signed_link()
        link.send(7, size=200_000, priority=priority)
        frames = link.step("a")
        pieces = [decode_envelope(raw) for f in frames for raw in decode_frame(f.data)
                  if not is_manifest(raw)]
        assert len(pieces) >= 6 and all(p.chunk is not None for p in pieces)
        assert all(p.signature is not None and len(p.signature) == SIGNATURE_BYTES
                   for p in pieces)
        assert len({p.signature for p in pieces}) == len(pieces)  # each its own
        # a forged first piece (another key, or the genuine one altered) arrives first
        first = pieces[0]
        forged = SigningGuard({"a": KEYS["mallory"]}, DIRECTORY).seal_chunk(
            first._replace(body=b"x" * len(first.body)))
        altered = first._replace(body=b"y" * len(first.body))
        for bad in (forged, altered):
            link.b.receive_frame(frame(bad), link.now, Origin("a", "a".__eq__))
        assert link.b.reassembling_bytes == 0  # neither joined a reassembly
        assert rejected(link) == [ErrorCode.BAD_SIGNATURE] * 2
        link.deliver(frames, "b")
        link.run(link.now + 5 * SECOND)
        assert link.delivered["b"] == [7]


def test_forged_altered_and_downgraded_envelopes_are_refused_in_silence() -> None:
    link = signed_link()
    forged = [
        sealed_by("mallory", envelope(1, source="mallory")).with_changes(source="a"),
        envelope(2),  # unsigned, claiming a, who signs: a downgrade
    ]
    good = sealed_by("a", envelope(3))
    altered = [good.with_changes(body=body(99)), good.with_changes(priority=Priority.BULK),
               good.with_changes(destination="b2"), good.with_changes(id=bytes(16)),
               good.with_changes(signature=good.signature[:8] + bytes(64))]  # type: ignore[index]
    stranger = Ed25519PrivateKey.from_private_bytes(bytes([9]) * 32)
    unknown = SigningGuard({"a": stranger}, DIRECTORY).seal(envelope(4), START)
    for env in [*forged, *altered[:2], *altered[3:], unknown]:
        link.b.receive_frame(frame(env), link.now)
    codes = rejected(link)
    assert codes == [ErrorCode.BAD_SIGNATURE] * 7
    assert link.delivered["b"] == []
    assert link.b.counters.error_reports_sent == 0  # nothing to tell an attacker
    link.b.receive_frame(frame(good), link.now)
    link.collect()
    assert link.delivered["b"] == [3]


def test_unreliable_replays_stale_and_future_envelopes_are_refused() -> None:
    link = signed_link()
    fresh = sealed_by("a", envelope(1))
    link.b.receive_frame(frame(fresh), link.now)
    link.b.receive_frame(frame(fresh), link.now + SECOND)  # replayed at once
    old = sealed_by("a", envelope(2, stamp=START - 200 * SECOND))
    ahead = sealed_by("a", envelope(3, stamp=START + 60 * SECOND))
    for env in (old, ahead):
        link.b.receive_frame(frame(env), link.now)
    assert rejected(link) == [ErrorCode.REPLAYED, ErrorCode.STALE, ErrorCode.STALE]
    assert link.delivered["b"] == [1]
    # the receiver restarts: its window of ids is gone, but the marks it kept (the newest
    # timestamp taken per sender) refuse the replay; something newer is taken
    marks = link.b.guard.marks()
    assert marks == {"a": START}
    link.b = Session(SessionConfig(seed=3), ["b"], guard=guard("b"))
    link.b.guard.restore(marks)
    link.b.receive_frame(frame(fresh), link.now + 20 * MS)
    newer = sealed_by("a", envelope(4, stamp=START + 1))
    link.b.receive_frame(frame(newer), link.now + 20 * MS)
    assert rejected(link)[-1] is ErrorCode.REPLAYED
    assert link.delivered["b"] == [1, 4]


def test_a_reliable_envelope_retransmitted_across_a_receiver_restart_is_accepted() -> None:
    link = signed_link()
    link.send(1)
    link.now += 10 * MS
    link.frames("a")  # lost
    link.b = Session(SessionConfig(seed=3), ["b"], guard=guard("b"))
    link.b.guard.restore({"a": link.now + 5 * SECOND})  # marks bind unreliable ones only
    link.run(link.now + 10 * SECOND)
    assert link.delivered["b"] == [1] and link.a.pending_count == 0


def test_strict_receivers_refuse_unsigned_envelopes_from_anyone() -> None:
    strict = Session(SessionConfig(seed=2), ["b"], guard=guard("b", require_signatures=True))
    lenient = Session(SessionConfig(seed=2), ["b"], guard=guard("b"))
    unsigned = frame(envelope(1, source="legacy"))
    strict.receive_frame(unsigned, START)
    lenient.receive_frame(unsigned, START)
    assert [e.code for e in strict.drain_events() if isinstance(e, InputRejected)] == [
        ErrorCode.BAD_SIGNATURE]
    assert [payload_of(e.envelope) for e in lenient.drain_events()
            if isinstance(e, EnvelopeReceived)] == [1]


@pytest.mark.parametrize("bad", [b"", b"x" * 71, b"x" * 200])
def test_a_signature_of_the_wrong_size_is_refused(bad: bytes) -> None:
    link = signed_link()
    link.b.receive_frame(frame(envelope(1).with_changes(signature=bad)), link.now)
    assert rejected(link) == [ErrorCode.BAD_SIGNATURE]


@pytest.mark.broker
async def test_signatures_survive_a_real_broker_and_unsigned_strangers_are_refused(
        managed_prosody) -> None:  # type: ignore[no-untyped-def]
    """Over Prosody (and TLS): every envelope and acknowledgement signed by its sender and
    verified by its receiver; an account the receiver has no key for is refused."""
    from actors.testing import Inbox, until
    from broker_bridge.endpoint import Endpoint
    from broker_bridge.xmpp import XmppTransport
    from object_model import PropertyValueUpdate

    settings = managed_prosody.xmpp_settings()
    managed_prosody.create_accounts({"a": "pw", "b": "pw", "stranger": "pw"})
    guards = {n: SigningGuard({n: KEYS[n]}, DIRECTORY, require_signatures=(n == "b"))
              for n in ("a", "b")}
    inbox = Inbox()

    def update(n: int) -> PropertyValueUpdate:
        return PropertyValueUpdate(epoch=n, from_revision=0, to_revision=1, upserts=[])

    async with Endpoint(XmppTransport.client(settings, "a", "pw"), guard=guards["a"]) as a, \
            Endpoint(XmppTransport.client(settings, "b", "pw"), guard=guards["b"]) as b, \
            Endpoint(XmppTransport.client(settings, "stranger", "pw")) as stranger:
        await b.register("b", inbox)
        await a.register("a", lambda env: None)
        await stranger.register("stranger", lambda env: None)
        for n in range(20):
            a.send(source="a", destination="b", message=update(n), reliable=n % 4 != 0,
                   priority=Priority.STATE)
        stranger.send(source="stranger", destination="b", message=update(99),
                      priority=Priority.CRITICAL)
        await inbox.wait_for(20)
        await until(lambda: b.session.counters.refused_by_guard == 1, "the stranger refused")
        await until(lambda: a.session.pending_count == 0, "the signed acks")
    assert sorted(inbox.numbers()) == list(range(20))
    # state traffic: a signature per frame (each proving every envelope in it), not per
    # envelope; the acks (control) one by one
    assert 1 <= guards["b"].frames_verified == guards["a"].frames_signed < 20
    assert guards["a"].verified >= 1 and guards["b"].signed >= 1


async def test_the_marks_survive_a_restart_in_the_outbox(tmp_path) -> None:  # type: ignore[no-untyped-def]
    """A replay after the receiver restarts is refused: the guard's marks are kept in the
    endpoint's outbox (here over the in-memory transport: the glue, not delivery)."""
    from actors.testing import Inbox, until
    from broker_bridge.endpoint import Endpoint
    from broker_bridge.memory import MemoryNetwork

    net = MemoryNetwork()
    inbox = Inbox()
    receiver = await Endpoint(net.transport(), outbox_path=tmp_path / "b.db", name="b",
                              guard=guard("b")).start()
    await receiver.register("b", inbox)
    sender = await Endpoint(net.transport(), name="a", guard=guard("a")).start()
    await sender.register("a", lambda env: None)
    sent = sender.send(source="a", destination="b", kind="PropertyValueUpdate", body=body(5),
                       priority=Priority.CRITICAL)
    await inbox.wait_for(1)
    await receiver.stop()
    captured = sender.session.guard.seal(sent, sent.timestamp_us)  # what was on the wire
    inbox = Inbox()
    again = await Endpoint(net.transport(), outbox_path=tmp_path / "b.db", name="b",
                           guard=guard("b")).start()
    await again.register("b", inbox)
    again.session.receive_frame(frame(captured), sent.timestamp_us + SECOND)
    await until(lambda: again.session.counters.refused_by_guard == 1, "the replay refused")
    sender.send(source="a", destination="b", kind="PropertyValueUpdate", body=body(6),
                priority=Priority.CRITICAL)
    await inbox.wait_for(1)
    assert [payload_of(e) for e in inbox.envelopes] == [6]
    await again.stop()
    await sender.stop()


# -- encrypted bodies (issue 14, item 5) -------------------------------------------------------

RECIPIENTS = {name: X25519PrivateKey.from_private_bytes(bytes([n + 16]) * 32)
              for n, name in enumerate(("a", "b", "mallory"), 1)}
SEALING = StaticKeys({name: key.public_key() for name, key in KEYS.items()},
                     {name: key.public_key() for name, key in RECIPIENTS.items()})
WRITE = PropertyValueWrite(writes=[WriteItem(path=KeyPath.parse("network/profiles/1/password"),
                                             value="hunter2")])


def sealing_guard(name: str, **options: object) -> SigningGuard:
    return SigningGuard({name: KEYS[name]}, SEALING,
                        decryption_keys={name: RECIPIENTS[name]},
                        encrypt_kinds=frozenset({"PropertyValueWrite"}),
                        **options)  # type: ignore[arg-type]


def write_envelope(n: int = 1, *, destination: str = "b") -> Envelope:
    return Envelope(id=n.to_bytes(16, "big"), source="a", destination=destination,
                    kind="PropertyValueWrite", body=encode_body(WRITE), reliable=False,
                    priority=Priority.CONTROL, timestamp_us=START)


def test_chosen_kinds_cross_encrypted_and_only_their_receiver_reads_them() -> None:
    sender, receiver = sealing_guard("a"), sealing_guard("b", require_encryption=True)
    sealed = sender.seal(write_envelope(), START)
    wire = encode_envelope(sealed)
    assert b"hunter2" not in wire and sealed.encryption is not None
    assert len(sealed.body) == len(encode_body(WRITE)) + 48
    opened = receiver.open(decode_envelope(wire), START)
    assert opened.body == encode_body(WRITE) and opened.encryption is None
    assert (sender.encrypted, receiver.decrypted) == (1, 1)
    # an update (not a chosen kind) goes in clear, still signed
    plain = sender.seal(envelope(2), START)
    assert plain.encryption is None and receiver.open(plain, START).body == body(2)


def test_a_sealed_body_opens_nowhere_else_and_clear_text_is_refused_where_required() -> None:
    from object_model.errors import ModelError

    sender = sealing_guard("a")
    # a receiver that knows no signer, so what decryption alone proves shows
    lenient_b = SigningGuard({}, StaticKeys(), decryption_keys={"b": RECIPIENTS["b"]})
    unsigned = sender.seal(write_envelope(), START).with_changes(signature=None)
    cases = {
        # lifted into another envelope: HPKE's info binds it to its id
        "moved": unsigned.with_changes(id=bytes([7]) * 16),
        "altered": unsigned.with_changes(body=unsigned.body[:-1] + bytes([unsigned.body[-1] ^ 1])),
        "sealed to someone else": SigningGuard({"a": KEYS["a"]}, SEALING,
                                               encrypt_kinds=frozenset({"PropertyValueWrite"}))
        .seal(write_envelope(destination="mallory"), START)
        .with_changes(destination="b", signature=None),
    }
    for case, env in cases.items():
        with pytest.raises(ModelError) as info:
            lenient_b.open(env, START)
        assert info.value.code is ErrorCode.DECRYPTION_FAILED, case
    strict = sealing_guard("b", require_encryption=True)
    clear = SigningGuard({"a": KEYS["a"]}, SEALING).seal(write_envelope(), START)
    with pytest.raises(ModelError) as info:
        strict.open(clear, START)
    assert info.value.code is ErrorCode.DECRYPTION_FAILED
    assert strict.answers(info.value, clear) is False  # in silence


def test_broadcasts_are_not_encrypted() -> None:
    sealed = sealing_guard("a").seal(write_envelope(destination="group:site1"), START)
    assert sealed.encryption is None and sealed.signature is not None
