"""The broker bridge over a real Prosody: real sockets, real processes, real kills."""

from __future__ import annotations

import asyncio
import base64
import dataclasses
import json
import os
import random
from dataclasses import replace
from pathlib import Path

import msgpack
import pytest

from actors.testing import Inbox, until
from bench.faults import run_faults
from broker_bridge.backoff import Backoff
from broker_bridge.clock import WALL_CLOCK
from broker_bridge.codec import (
    decode_body,
    decode_envelope,
    decode_frame,
    encode_body,
    encode_envelope,
    encode_frame,
)
from broker_bridge.endpoint import Endpoint
from broker_bridge.envelope import Envelope, Priority
from broker_bridge.managed import bind_port
from broker_bridge.pki import CertificateAuthority
from broker_bridge.prosody import ManagedProsody
from broker_bridge.session import SECOND, SessionConfig
from broker_bridge.xmpp import XmppSettings, XmppTransport
from object_model import ErrorCode, ErrorReport, PropertyValueUpdate

pytestmark = pytest.mark.broker


def update(n: int, blob: bytes | None = None) -> PropertyValueUpdate:
    return PropertyValueUpdate(epoch=n, from_revision=0, to_revision=1,
                               upserts=[] if blob is None else [("blob", 1, blob)])


@pytest.fixture
def settings(managed_prosody: ManagedProsody) -> XmppSettings:
    return managed_prosody.xmpp_settings()


def client(managed_prosody: ManagedProsody, settings: XmppSettings, name: str,
           config: SessionConfig | None = None) -> Endpoint:
    managed_prosody.create_accounts({name: "pw"})
    return Endpoint(XmppTransport.client(settings, name, "pw"), config=config, name=name)


# -- reliability across process and broker crashes ---------------------------------------------


async def test_exactly_once_in_order_through_two_broker_kills() -> None:
    figures = await run_faults(count=10_000, broker_kills=2)
    assert figures["broker_kills"] == 2
    assert figures["delivered"] == figures["sent"] == 20_000
    assert figures["lost"] == figures["duplicates"] == figures["order_violations"] == 0


async def test_a_sender_killed_mid_stream_completes_from_its_outbox() -> None:
    figures = await run_faults(count=4_000, broker_kills=0, kill_sender=True)
    assert figures["sender_kills"] == 1
    assert figures["delivered"] == figures["sent"]
    assert figures["lost"] == figures["duplicates"] == figures["order_violations"] == 0


# -- size, garbage, broadcast, multiplexing ----------------------------------------------------


async def test_a_200_kb_message_crosses_a_16_kb_frame_link_intact(
    managed_prosody: ManagedProsody, settings: XmppSettings
) -> None:
    small = SessionConfig(frame_bytes=16 * 1024)
    inbox = Inbox()
    async with client(managed_prosody, settings, "big-a", small) as a, \
            client(managed_prosody, settings, "big-b", small) as b:
        await a.register("big-a", lambda env: None)
        await b.register("big-b", inbox)
        blob = os.urandom(200_000)
        a.send(source="big-a", destination="big-b", message=update(1, blob), reliable=True)
        await inbox.wait_for(1)
        await a.flush(10)
        assert a.frames_sent >= 13  # it really was chunked
    got = decode_body("PropertyValueUpdate", inbox.envelopes[0].body)
    assert got.upserts[0][2] == blob  # type: ignore[attr-defined]


def _garbage(source: str, destination: str) -> dict[str, bytes]:
    good = Envelope(id=os.urandom(16), source=source, destination=destination,
                    kind="PropertyValueUpdate", body=b"\x94\xa0\x01\x00\x01")
    raw = encode_envelope(good)
    fields = msgpack.unpackb(raw)
    wrong_types = msgpack.packb([fields[0], fields[1], fields[2], fields[3], "high", *fields[5:]])
    unknown_kind = msgpack.packb([*fields[:6], 250, *fields[7:]])
    return {
        "random bytes": os.urandom(64),
        "truncated msgpack": encode_frame([raw])[:-7],
        "declared 4 GB": b"\xdb\xff\xff\xff\xff" + b"x" * 16,
        "wrong header types": encode_frame([wrong_types]),
        "unknown kind": encode_frame([unknown_kind]),
    }


async def test_garbage_is_answered_and_legitimate_traffic_is_untouched(
    managed_prosody: ManagedProsody, settings: XmppSettings
) -> None:
    inbox, reports = Inbox(), Inbox()
    async with client(managed_prosody, settings, "victim") as victim, \
            client(managed_prosody, settings, "honest") as honest, \
            client(managed_prosody, settings, "vandal") as vandal:
        await victim.register("victim", inbox)
        await honest.register("honest", lambda env: None)
        await vandal.register("vandal", reports)
        for i in range(300):
            honest.send(source="honest", destination="victim", message=update(i), reliable=True)
            if i % 60 == 0:
                for data in _garbage("vandal", "victim").values():
                    vandal.transport.send_frame("victim", data)
                await asyncio.sleep(0.01)  # pacing, not a wait: garbage spread through the stream
        # a stanza with a control character: the broker cuts the vandal's stream, not ours
        stream = vandal.transport._stream  # type: ignore[attr-defined]
        stream.send_raw("<message to='victim@csms.local'><f xmlns='urn:csms63110:frame:1'>"
                        "a\x00b</f></message>")
        for i in range(300, 400):
            honest.send(source="honest", destination="victim", message=update(i), reliable=True)
        await inbox.wait_for(400)
        await honest.flush(10)
        await victim.flush(10)
        counters = victim.session.counters
        # every rejection was answered, except beyond the per-sender report rate
        assert counters.error_reports_sent + counters.error_reports_suppressed == counters.rejected
        assert counters.error_reports_sent >= 15
        await reports.wait_for(counters.error_reports_sent, kind="ErrorReport")
    assert inbox.numbers() == list(range(400))  # nothing lost, nothing twice, in order
    codes = {decode_body("ErrorReport", e.body).code for e in reports.envelopes  # type: ignore[attr-defined]
             if e.kind == "ErrorReport"}
    assert codes == {ErrorCode.MALFORMED_MESSAGE, ErrorCode.UNKNOWN_KIND}
    assert victim.session.counters.rejected >= 25
    assert vandal.transport.reconnects >= 1  # type: ignore[attr-defined]


async def test_a_type_confused_envelope_drops_no_connection_and_no_neighbour(
    managed_prosody: ManagedProsody, settings: XmppSettings
) -> None:
    """Issue 14, hole 1: a list where an address belongs raised out of the decoder into
    slixmpp and cut the receiver's connection, losing the envelopes beside it in the frame."""
    inbox, reports, bystanders = Inbox(), Inbox(), Inbox()
    async with client(managed_prosody, settings, "victim") as victim, \
            client(managed_prosody, settings, "vandal") as vandal, \
            client(managed_prosody, settings, "bystander") as bystander:
        await victim.register("victim", inbox)
        await vandal.register("vandal", reports)
        await bystander.register("bystander", bystanders)
        good = encode_envelope(Envelope(id=os.urandom(16), source="vandal",
                                        destination="victim", kind="PropertyValueUpdate",
                                        body=encode_body(update(7))))
        fields = msgpack.unpackb(good)
        confused = [msgpack.packb([*fields[:2], ["vandal"], *fields[3:]]),
                    msgpack.packb([*fields[:3], {"to": "victim"}, *fields[4:]]),
                    # hole 5: broken, and claiming a bystander: the answer goes to the vandal
                    msgpack.packb([*fields[:2], "bystander", "victim", "high", *fields[5:]])]
        vandal.transport.send_frame("victim", encode_frame([*confused, good]))
        await inbox.wait_for(1)
        await reports.wait_for(3, kind="ErrorReport")
        await victim.flush(10)
    assert inbox.numbers() == [7]
    codes = [decode_body("ErrorReport", e.body).code for e in reports.envelopes]  # type: ignore[attr-defined]
    assert codes == [ErrorCode.MALFORMED_MESSAGE] * 3
    assert bystanders.envelopes == []
    assert victim.transport.reconnects == 0  # type: ignore[attr-defined]
    assert victim.session.counters.rejected == 3


async def test_a_forged_ack_or_a_stolen_id_cancels_or_preempts_nothing(
    managed_prosody: ManagedProsody, settings: XmppSettings
) -> None:
    """Issue 14, holes 2 and 4 over a real broker: another account acknowledges an envelope
    still on its way (the ack is counted as forged; the envelope is delivered when its
    receiver comes), and sends its own envelope with that envelope's id first (both are
    delivered: ids are unique per sender)."""
    from object_model.messages import Ack

    inbox = Inbox()
    async with client(managed_prosody, settings, "ahonest") as honest, \
            client(managed_prosody, settings, "amallory") as mallory:
        await honest.register("ahonest", lambda env: None)
        await mallory.register("amallory", lambda env: None)
        sent = honest.send(source="ahonest", destination="asleeper", message=update(1),
                           reliable=True)
        # the receiver is not connected: the envelope stays pending at the sender
        mallory.send(source="amallory", destination="ahonest",
                     message=Ack(message_ids=[sent.id]), priority=Priority.CRITICAL)
        await until(lambda: honest.session.counters.forged >= 1, "the forged ack to arrive")
        assert honest.session.pending_count == 1
        async with client(managed_prosody, settings, "asleeper") as sleeper:
            await sleeper.register("asleeper", inbox)
            # mallory's envelope with the genuine one's id: whichever arrives first, both
            # are delivered (the genuine one comes with the sender's next retransmission)
            pre_empt = Envelope(id=sent.id, source="amallory", destination="asleeper",
                                kind="PropertyValueUpdate", body=encode_body(update(66)))
            mallory.transport.send_frame("asleeper", encode_frame([encode_envelope(pre_empt)]))
            await inbox.wait_for(2)
            await until(lambda: honest.session.pending_count == 0, "the genuine ack")
    assert sorted(inbox.numbers()) == [1, 66]


def _claiming(source: str, destination: str, n: int) -> bytes:
    """A well-formed frame holding one envelope that claims to come from ``source``."""
    return encode_frame([encode_envelope(Envelope(
        id=os.urandom(16), source=source, destination=destination, kind="PropertyValueUpdate",
        body=encode_body(update(n))))])


async def test_nobody_can_send_as_someone_else(
    managed_prosody: ManagedProsody, settings: XmppSettings
) -> None:
    inbox, reports, member = Inbox(), Inbox(), Inbox()
    ep = managed_prosody.endpoint
    component = Endpoint(XmppTransport.component(settings, ep.component_domains[0],
                                                 ep.component_secret), name="fstations")
    async with client(managed_prosody, settings, "fvictim") as victim, \
            client(managed_prosody, settings, "fhonest") as honest, \
            client(managed_prosody, settings, "fvandal") as vandal, component:
        await victim.register("fvictim", inbox)
        await victim.join_group("group:fsite", "fvictim")
        await honest.register("fhonest", member)
        await vandal.register("fvandal", reports)
        await vandal.join_group("group:fsite", "fvandal")
        await component.register("cs-f1", lambda env: None)
        # an account claiming another account; a component claiming an address off its
        # domain; a direct envelope slipped into a broadcast
        vandal.transport.send_frame("fvictim", _claiming("fhonest", "fvictim", 1))
        component.transport.send_frame("fvictim", _claiming("fhonest", "fvictim", 2))
        vandal.transport.send_frame("group:fsite", _claiming("fvandal", "fvictim", 3))
        # what each may do still arrives
        vandal.send(source="fvandal", destination="fvictim", message=update(4))
        component.send(source="cs-f1", destination="fvictim", message=update(5))
        await inbox.wait_for(2)
        await reports.wait_for(2, kind="ErrorReport")
        assert victim.session.counters.forged == 3
    assert sorted(inbox.numbers()) == [4, 5]
    assert {decode_body("ErrorReport", e.body).code for e in reports.envelopes  # type: ignore[attr-defined]
            if e.kind == "ErrorReport"} == {ErrorCode.ACCESS_DENIED}
    assert not member.envelopes  # the claimed sender was never answered in its name


async def test_a_broadcast_crosses_the_uplink_once_and_reaches_50_stations(
    managed_prosody: ManagedProsody, settings: XmppSettings
) -> None:
    names = [f"bcs-{i}" for i in range(50)]
    inboxes = {n: Inbox() for n in names}
    stations = [client(managed_prosody, settings, n) for n in names]
    async with client(managed_prosody, settings, "bcloud") as cloud:
        await cloud.register("bcloud", lambda env: None)
        await asyncio.gather(*(s.start() for s in stations))
        try:
            for name, station in zip(names, stations, strict=True):
                await station.register(name, inboxes[name])
                await station.join_group("group:bsite", name)  # returns once confirmed
            uplink = cloud.transport
            before = uplink.frames_sent  # type: ignore[attr-defined]
            cloud.send(source="bcloud", destination="group:bsite", message=update(42),
                       priority=Priority.CRITICAL)
            for inbox in inboxes.values():
                await inbox.wait_for(1)
            assert uplink.frames_sent - before == 1  # type: ignore[attr-defined]
            assert all(inbox.numbers() == [42] for inbox in inboxes.values())
        finally:
            await asyncio.gather(*(s.stop() for s in stations))


async def test_one_component_connection_hosts_thousands_of_stations(
    managed_prosody: ManagedProsody, settings: XmppSettings
) -> None:
    ep = managed_prosody.endpoint
    inbox = Inbox()
    hosted = Endpoint(XmppTransport.component(settings, ep.component_domains[0],
                                              ep.component_secret), name="stations")
    async with hosted, client(managed_prosody, settings, "mcloud") as cloud:
        await cloud.register("mcloud", inbox)
        for i in range(2000):
            await hosted.register(f"cs-{i}", lambda env, i=i: hosted.send(
                source=f"cs-{i}", destination="mcloud", message=update(i), reliable=True))
        for i in range(2000):
            cloud.send(source="mcloud", destination=f"cs-{i}", message=update(i), reliable=True)
        await inbox.wait_for(2000, timeout=30)
        await hosted.flush(10)
    assert sorted(inbox.numbers()) == list(range(2000))
    assert {e.source for e in inbox.envelopes} == {f"cs-{i}" for i in range(2000)}


async def test_the_link_comes_back_after_a_broker_restart(
    managed_prosody: ManagedProsody, settings: XmppSettings
) -> None:
    fast = SessionConfig(retransmit_initial_us=SECOND // 4, retransmit_max_us=SECOND)
    inbox = Inbox()
    async with client(managed_prosody, settings, "ra", fast) as a, \
            client(managed_prosody, settings, "rb", fast) as b:
        await a.register("ra", lambda env: None)
        await b.register("rb", inbox)
        managed_prosody.kill()
        for i in range(20):
            a.send(source="ra", destination="rb", message=update(i), reliable=True)
        await managed_prosody.restart()
        await inbox.wait_for(20)
        assert inbox.numbers() == list(range(20))
        assert a.transport.reconnects >= 1  # type: ignore[attr-defined]


async def test_a_client_given_two_brokers_moves_to_the_other_when_its_own_dies(
    tmp_path: Path,
) -> None:
    """Failover by ``alternates``, on two independent Prosodys (a cluster's nodes share
    accounts and routes; these two share accounts only): envelopes sent on the first broker,
    which cannot reach the peer, arrive once the sender moved to the second."""
    fast = SessionConfig(retransmit_initial_us=SECOND // 4, retransmit_max_us=SECOND)
    ca = CertificateAuthority(tmp_path / "ca")  # two nodes of one broker: one CA
    first = ManagedProsody(tmp_path / "first", ca=ca)
    second = ManagedProsody(tmp_path / "second", ca=ca)
    async with first, second:
        for broker in (first, second):
            broker.create_accounts({"mover": "pw", "stay": "pw"})
        both = first.xmpp_settings(alternates=second.xmpp_settings().servers,
                                   reconnect_cap_s=0.2)
        inbox = Inbox()
        async with Endpoint(XmppTransport.client(both, "mover", "pw"), config=fast) as mover, \
                Endpoint(XmppTransport.client(second.xmpp_settings(), "stay", "pw")) as stay:
            await mover.register("mover", lambda env: None)
            await stay.register("stay", inbox)
            for i in range(10):
                mover.send(source="mover", destination="stay", message=update(i), reliable=True)
            first.kill()
            await inbox.wait_for(10, timeout=10)
            assert inbox.numbers() == list(range(10))
            assert mover.transport.connected and mover.reconnects == 1
            # and it stays on the node that works
            await until(lambda: mover.session.idle, "the acks", timeout=5)
            assert mover.transport.reconnects == 1  # type: ignore[attr-defined]


async def test_a_transport_whose_first_node_is_down_starts_on_the_next(
    managed_prosody: ManagedProsody, settings: XmppSettings
) -> None:
    managed_prosody.create_accounts({"late": "pw"})
    dead = bind_port(settings.host)  # free, so nothing answers there
    skewed = replace(settings, c2s_port=dead, component_port=dead,
                     alternates=settings.servers, reconnect_cap_s=0.2)
    client_link = XmppTransport.client(skewed, "late", "pw")
    component_link = XmppTransport.component(skewed, "stations.csms.local",
                                             managed_prosody.endpoint.component_secret)
    for link in (client_link, component_link):
        await link.start()
        try:
            assert link.connected
        finally:
            await link.stop()


def test_alternates_survive_a_json_round_trip() -> None:
    settings = XmppSettings(alternates=(("127.0.0.1", 5223, 5348),))
    raw = json.loads(json.dumps(dataclasses.asdict(settings)))
    assert XmppSettings(**{**raw, "routes": (), "extra_domains": ()}) == settings
    assert settings.servers == (("127.0.0.1", 5222, 5347), ("127.0.0.1", 5223, 5348))
    assert XmppSettings().servers == (("127.0.0.1", 5222, 5347),)


class SkippingClock:
    """Wall time as it is; waits recorded and skipped, so a reconnect loop runs in test time."""

    def __init__(self) -> None:
        self.slept: list[float] = []

    def now_us(self) -> int:
        return WALL_CLOCK.now_us()

    def monotonic(self) -> float:
        return WALL_CLOCK.monotonic()

    async def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)
        await asyncio.sleep(0)  # the skipped wait still yields, as a real one would


async def test_reconnects_back_off_with_full_jitter_on_the_injected_clock(
    managed_prosody: ManagedProsody, settings: XmppSettings
) -> None:
    managed_prosody.create_accounts({"jit": "pw"})
    slow = replace(settings, reconnect_base_s=0.1, reconnect_cap_s=0.8)
    clock = SkippingClock()
    transport = XmppTransport.client(slow, "jit", "pw", clock=clock, rng=random.Random(7))
    await transport.start()
    try:
        assert clock.slept == []  # the first attempt connected
        managed_prosody.kill()
        # attempts fail at once: collect a few backoffs
        await until(lambda: len(clock.slept) >= 8, "eight backoffs", timeout=10, every=0.001)
        await managed_prosody.start()
        await until(lambda: transport.connected, "the link back", timeout=10, every=0.001)
    finally:
        await transport.stop()
    # the loss counts as the first failure, each failed attempt as one more; the delays are
    # the Backoff's, drawn from the transport's own generator
    expected_rng, backoff = random.Random(7), Backoff(0.1, 0.8)
    assert clock.slept == [backoff.delay(n, expected_rng) for n in range(1, len(clock.slept) + 1)]
    assert all(0 <= d <= min(0.8, 0.1 * 2 ** n) for n, d in enumerate(clock.slept))
    assert transport.reconnects == 1


async def test_the_stream_survives_slixmpps_starttls_reentry() -> None:
    """STARTTLS makes slixmpp call ``connection_made(transport, send_event=False)`` on the
    upgraded connection; the override that resets write pausing must take it."""
    import socket

    from broker_bridge.xmpp.stream import ClientStream

    stream = ClientStream("tls@csms.local/bridge", "pw", tls=True, window=16,
                          sink=lambda *_: None, on_resume=lambda: None,
                          presence=lambda *_: None)
    connected: list[object] = []
    stream.add_event_handler("connected", connected.append)
    ours, theirs = socket.socketpair()
    try:
        transport, _ = await asyncio.get_running_loop().create_connection(lambda: stream,
                                                                          sock=ours)
        stream.pause_writing()
        stream.connection_made(transport, send_event=False)  # as after the TLS upgrade
        assert not stream.write_paused and len(connected) == 1
        transport.close()
    finally:
        theirs.close()


async def test_an_unreachable_broker_is_reported_clearly() -> None:
    settings = XmppSettings(c2s_port=1, connect_timeout_s=0.5)
    transport = XmppTransport.client(settings, "nobody", "pw")
    with pytest.raises(ConnectionError, match="is the broker running"):
        await transport.start()


def test_frames_decode_from_base64_text() -> None:
    env = Envelope(id=bytes(16), source="a", destination="b", kind="Ack", body=b"\x91\x90")
    text = base64.b64encode(encode_frame([encode_envelope(env)])).decode()
    assert decode_envelope(decode_frame(base64.b64decode(text))[0]) == env
    assert isinstance(ErrorReport, type)


async def test_what_arrives_as_soon_as_an_account_connects_finds_its_actor(
    managed_prosody: ManagedProsody, settings: XmppSettings, tmp_path: os.PathLike[str]
) -> None:
    """An actor registered on an opened (not yet connected) endpoint gets what its peers sent
    while it was away, and what it queued meanwhile leaves numbered after its last run's."""
    fast = SessionConfig(retransmit_initial_us=SECOND // 4, retransmit_max_us=SECOND)
    inbox, back, refused = Inbox(), Inbox(), Inbox()
    outbox = f"{tmp_path}/ob-outbox.db"
    async with client(managed_prosody, settings, "oa", fast) as a:
        await a.register("oa", lambda env: (back if env.kind != "ErrorReport" else refused)(env))
        managed_prosody.create_accounts({"ob": "pw"})
        b1 = Endpoint(XmppTransport.client(settings, "ob", "pw"), config=fast,
                      outbox_path=outbox, name="ob")
        async with b1:
            await b1.register("ob", inbox)
            for i in range(5):
                b1.send(source="ob", destination="oa", message=update(i), reliable=True,
                        stream="s")
            await back.wait_for(5)
        for i in range(20):  # ob is away
            a.send(source="oa", destination="ob", message=update(100 + i), reliable=True)
        b2 = await Endpoint(XmppTransport.client(settings, "ob", "pw"), config=fast,
                            outbox_path=outbox, name="ob").open()
        await b2.register("ob", inbox)
        for i in range(5, 10):
            b2.send(source="ob", destination="oa", message=update(i), reliable=True,
                    stream="s")
        async with b2:
            await inbox.wait_for(20)
            await back.wait_for(10)
        assert inbox.numbers() == [100 + i for i in range(20)]
        assert back.numbers() == list(range(10))  # in order, none taken for a replay
        assert refused.envelopes == []  # nothing came back as UNKNOWN_ACTOR
