"""The asyncio endpoint over the in-memory transport: pumping, persistence, broadcast.

These check the glue (outbox handshake, dispatch, restarts); delivery through a real broker is
proven in test_xmpp_*.py."""

from __future__ import annotations

from pathlib import Path

from actors.testing import Inbox, until
from broker_bridge.endpoint import Endpoint
from broker_bridge.envelope import Priority
from broker_bridge.memory import MemoryNetwork
from broker_bridge.session import SECOND, GapDetected, SessionConfig, StreamReset
from object_model import PropertyValueUpdate


def update(n: int) -> PropertyValueUpdate:
    return PropertyValueUpdate(epoch=n, from_revision=0, to_revision=1)


FAST = SessionConfig(retransmit_initial_us=SECOND // 10, retransmit_max_us=SECOND // 2)


async def test_reliable_messages_arrive_once_in_order_over_a_lossy_network() -> None:
    net = MemoryNetwork(loss=0.2, seed=4)
    inbox = Inbox()
    async with Endpoint(net.transport(), config=FAST, name="a") as a, \
            Endpoint(net.transport(), config=FAST, name="b") as b:
        await a.register("a", lambda env: None)
        await b.register("b", inbox)
        for i in range(300):
            a.send(source="a", destination="b", message=update(i), reliable=True,
                   priority=Priority.STATE)
        await inbox.wait_for(300)
        await a.flush(10)
    assert inbox.numbers() == list(range(300))


async def test_a_crashed_sender_resends_from_its_outbox_without_duplicates(tmp_path: Path) -> None:
    net = MemoryNetwork()
    inbox = Inbox()
    receiver = await Endpoint(net.transport(), config=FAST, outbox_path=tmp_path / "b.db",
                              name="b").start()
    await receiver.register("b", inbox)
    sender_transport = net.transport()
    sender = await Endpoint(sender_transport, config=FAST, outbox_path=tmp_path / "a.db",
                            name="a").start()
    await sender.register("a", lambda env: None)
    sender_transport.set_link(False)  # nothing gets out: everything stays unacknowledged
    for i in range(50):
        sender.send(source="a", destination="b", message=update(i), reliable=True)

    async def all_held() -> bool:
        return await sender.outbox.unacked_count() >= 50  # type: ignore[union-attr]

    await until(all_held, "all 50 envelopes held unacknowledged in the outbox", timeout=5)
    # crash: no flush, no goodbye
    sender._pump_task.cancel()  # type: ignore[union-attr]
    await sender.outbox.close()  # type: ignore[union-attr]
    await sender_transport.stop()

    restarted = await Endpoint(net.transport(), config=FAST, outbox_path=tmp_path / "a.db",
                               name="a2").start()
    await restarted.register("a", lambda env: None)
    await inbox.wait_for(50)
    await restarted.flush(5)
    assert inbox.numbers() == list(range(50))
    assert await restarted.outbox.unacked_count() == 0  # type: ignore[union-attr]
    restarted.send(source="a", destination="b", message=update(50), reliable=True)
    await inbox.wait_for(51)
    assert not [e for e in inbox.events if isinstance(e, StreamReset)]
    await restarted.stop()
    await receiver.stop()


async def test_a_broadcast_leaves_the_sender_once_and_reaches_every_member() -> None:
    net = MemoryNetwork()
    inboxes = [Inbox() for _ in range(5)]
    uplink = net.transport("cloud")
    async with Endpoint(uplink, name="cloud") as cloud:
        await cloud.register("cloud", lambda env: None)
        stations = []
        for i, inbox in enumerate(inboxes):
            ep = await Endpoint(net.transport(), name=f"cs-{i}").start()
            await ep.register(f"cs-{i}", inbox)
            await ep.join_group("group:site1", f"cs-{i}")
            stations.append(ep)
        cloud.send(source="cloud", destination="group:site1", message=update(7),
                   priority=Priority.CRITICAL)
        for inbox in inboxes:
            await inbox.wait_for(1)
        assert uplink.frames_by_destination["group:site1"] == 1
        assert all(inbox.numbers() == [7] for inbox in inboxes)
        for ep in stations:
            await ep.stop()


async def test_stream_resets_and_gaps_reach_the_actor() -> None:
    net = MemoryNetwork()
    inbox = Inbox()
    async with Endpoint(net.transport(), name="b") as b:
        await b.register("b", inbox, inbox.event)
        a1 = await Endpoint(net.transport(), name="a1").start()
        await a1.register("a", lambda env: None)
        a1.send(source="a", destination="b", message=update(1), reliable=True)
        await inbox.wait_for(1)
        await a1.stop()
        a2 = await Endpoint(net.transport(), name="a2").start()  # state lost: new epoch
        await a2.register("a", lambda env: None)
        a2.send(source="a", destination="b", message=update(2), reliable=True)
        await inbox.wait_for(2)
        await a2.stop()
    assert [type(e) for e in inbox.events] == [StreamReset]
    assert not [e for e in inbox.events if isinstance(e, GapDetected)]
