"""The actor base over the in-memory transport: routing, answers, errors, timeouts, tasks."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest

from actors.runtime import actor as actor_module
from actors.runtime.actor import Actor, Context, RoleDirectory, handles
from actors.testing import until
from broker_bridge import Endpoint, Envelope, Priority
from broker_bridge.codec import encode_body
from broker_bridge.memory import MemoryNetwork
from keypath import KeyPath
from object_model import ErrorCode, MessageBase, ModelError, Role
from object_model.messages import (
    ErrorReport,
    JoinNetworkResponse,
    PropertyValueRead,
    PropertyValueReadResponse,
    PropertyValueWrite,
)


class Echo(Actor):
    role = Role.STATION

    def __init__(self, *args: object, **kwargs: object) -> None:
        super().__init__(*args, **kwargs)  # type: ignore[arg-type]
        self.reports: list[ErrorReport] = []
        self.order: list[str] = []

    @handles(PropertyValueRead)
    async def read(self, message: PropertyValueRead, ctx: Context) -> MessageBase:
        self.order.append(str(message.paths[0]))
        if str(message.paths[0]) == "slow":
            await asyncio.sleep(0.05)  # not a wait: a slow handler is the behaviour under test
        if str(message.paths[0]) == "boom":
            raise RuntimeError("a bug")
        if str(message.paths[0]) == "silence":
            return None  # type: ignore[return-value]
        ctx.require_role()
        return PropertyValueReadResponse(epoch=1, revision=2, values=[(message.paths[0], 2, 7)])

    async def on_error_report(self, report: ErrorReport, ctx: Context) -> None:
        self.reports.append(report)


class Inherited(Echo):
    @handles(PropertyValueWrite)
    async def write(self, message: PropertyValueWrite, ctx: Context) -> MessageBase:
        raise ModelError("no")


@pytest.fixture
async def pair() -> AsyncIterator[tuple[Echo, Echo]]:
    net = MemoryNetwork()
    ea = await Endpoint(net.transport()).start()
    eb = await Endpoint(net.transport()).start()
    roles = RoleDirectory({"a": Role.LOCAL_CSMS, "b": Role.STATION})
    a, b = Echo("a", ea, roles=roles), Inherited("b", eb, roles=roles)
    await a.start()
    await b.start()
    yield a, b
    for actor in (a, b):
        await actor.stop()
    await ea.stop()
    await eb.stop()


def read(path: str) -> PropertyValueRead:
    return PropertyValueRead(paths=[KeyPath.parse(path)])


async def test_handlers_are_routed_per_class_and_inherited() -> None:
    assert Echo._routes == {"PropertyValueRead": "read"}
    assert Inherited._routes == {"PropertyValueRead": "read", "PropertyValueWrite": "write"}
    assert Actor._routes == {}


async def test_request_gets_the_typed_answer(pair) -> None:  # type: ignore[no-untyped-def]
    a, _b = pair
    answer = await a.request("b", read("x"))
    assert isinstance(answer, PropertyValueReadResponse) and answer.values[0][2] == 7


async def test_failures_come_back_as_detailed_error_reports(pair) -> None:  # type: ignore[no-untyped-def]
    a, b = pair
    with pytest.raises(ModelError) as info:
        await a.request("b", read("boom"))
    assert info.value.code is ErrorCode.INTERNAL_ERROR and "a bug" in info.value.text
    with pytest.raises(ModelError) as info:
        await a.request("b", JoinNetworkResponse(csms="a"))
    assert info.value.code is ErrorCode.UNSUPPORTED_OPERATION
    assert "PropertyValueRead" in info.value.details["handled"]
    assert b.rejected == 2


async def test_strangers_have_no_rights(pair) -> None:  # type: ignore[no-untyped-def]
    a, b = pair
    a.roles = RoleDirectory()
    b.roles = RoleDirectory()  # b no longer knows a
    with pytest.raises(ModelError) as info:
        await a.request("b", read("x"))
    assert info.value.code is ErrorCode.ACCESS_DENIED


async def test_undecodable_bodies_are_answered(pair) -> None:  # type: ignore[no-untyped-def]
    a, _b = pair
    env = a.endpoint.send(source="a", destination="b", kind="PropertyValueRead",
                          body=encode_body(read("x"))[:-3])
    await until(lambda: bool(a.reports), "an error report answering the undecodable body")
    assert a.reports and a.reports[0].answers == env.id
    assert a.reports[0].code in (ErrorCode.MALFORMED_MESSAGE, ErrorCode.INVALID_MESSAGE)


async def test_silence_is_a_timeout_and_the_pending_request_is_cleaned_up(pair) -> None:  # type: ignore[no-untyped-def]
    a, _b = pair
    with pytest.raises(ModelError) as info:
        await a.request("b", read("silence"), timeout=0.2)
    assert info.value.code is ErrorCode.TIMEOUT
    assert a._pending == {}
    task = asyncio.create_task(a.request("b", read("silence"), timeout=5))
    await until(lambda: bool(a._pending), "the request waiting for its answer")
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert a._pending == {}


async def test_messages_are_handled_in_arrival_order(pair) -> None:  # type: ignore[no-untyped-def]
    a, b = pair
    results = await asyncio.gather(*(a.request("b", read(p)) for p in ("slow", "x", "y")))
    assert b.order == ["slow", "x", "y"] and len(results) == 3


async def test_a_handler_may_await_a_request_without_deadlock() -> None:
    net = MemoryNetwork()
    roles = RoleDirectory({"*": Role.LOCAL_CSMS})

    class Relay(Actor):
        role = Role.LOCAL_CSMS

        @handles(PropertyValueRead)
        async def read(self, message: PropertyValueRead, ctx: Context) -> MessageBase:
            return await self.request("leaf", message)

    endpoints = [await Endpoint(net.transport()).start() for _ in range(3)]
    relay = Relay("relay", endpoints[0], roles=roles)
    leaf = Echo("leaf", endpoints[1], roles=roles)
    client = Echo("client", endpoints[2], roles=roles)
    for actor in (relay, leaf, client):
        await actor.start()
    answer = await client.request("relay", read("x"))
    assert isinstance(answer, PropertyValueReadResponse)
    for actor in (relay, leaf, client):
        await actor.stop()
    for endpoint in endpoints:
        await endpoint.stop()


async def test_tracked_tasks_are_cancelled_at_stop_and_failures_logged(
        pair, caplog: pytest.LogCaptureFixture) -> None:  # type: ignore[no-untyped-def]
    a, _ = pair
    started = asyncio.Event()

    async def forever() -> None:
        started.set()
        await asyncio.sleep(3600)  # not a wait: a task that never ends, for stop to cancel

    async def broken() -> None:
        raise ValueError("oops")

    task = a.spawn(forever(), "forever")
    a.spawn(broken(), "broken")
    await started.wait()
    await until(lambda: any(r.levelname == "ERROR" for r in caplog.records),
                "the broken task's failure logged")
    assert any("broken" in r.message and r.levelname == "ERROR" for r in caplog.records)
    await a.stop()
    assert task.cancelled()


async def test_nothing_is_handled_before_on_start_has_loaded_the_state() -> None:
    net = MemoryNetwork()
    roles = RoleDirectory({"*": Role.LOCAL_CSMS})
    loaded = asyncio.Event()

    class Slow(Echo):
        async def on_start(self) -> None:
            self.order.append("loading")
            await loaded.wait()
            self.order.append("loaded")

    ea, eb = await Endpoint(net.transport()).start(), await Endpoint(net.transport()).start()
    slow, client = Slow("slow", ea, roles=roles), Echo("client", eb, roles=roles)
    await client.start()
    starting = asyncio.create_task(slow.start())
    answer = asyncio.create_task(client.request("slow", read("x")))
    await until(lambda: slow.inbox_depth == 1, "the request arrived, waiting in the inbox")
    assert slow.order == ["loading"]
    loaded.set()
    await starting
    assert isinstance(await answer, PropertyValueReadResponse)
    assert slow.order == ["loading", "loaded", "x"]
    for actor in (slow, client):
        await actor.stop()
    for endpoint in (ea, eb):
        await endpoint.stop()


async def test_a_late_answer_is_dropped_not_answered(pair) -> None:  # type: ignore[no-untyped-def]
    a, b = pair
    with pytest.raises(ModelError):
        await a.request("b", read("slow"), timeout=0.01)  # b answers after 50 ms
    await until(lambda: a.late_answers > 0, "the late answer", timeout=5)
    assert a.late_answers == 1
    assert b.reports == [] and a.rejected == 0  # no error ping-pong about it


async def test_a_broadcast_carries_no_rights() -> None:
    net = MemoryNetwork()
    roles = RoleDirectory({"a": Role.LOCAL_CSMS})
    ea, eb = await Endpoint(net.transport()).start(), await Endpoint(net.transport()).start()
    a, b = Echo("a", ea, roles=roles), Echo("b", eb, roles=roles)
    for actor in (a, b):
        await actor.start()
    await eb.join_group("group:site", "b")
    a.send("group:site", read("x"))
    await until(lambda: bool(a.reports), "the broadcast refused")
    assert [r.code for r in a.reports] == [ErrorCode.ACCESS_DENIED]
    assert b.order == ["x"]
    for actor in (a, b):
        await actor.stop()
    for endpoint in (ea, eb):
        await endpoint.stop()


def test_roles_are_found_exactly_or_by_pattern_and_strangers_cost_bounded_memory() -> None:
    roles = RoleDirectory({"cs-*": Role.STATION, "cloud": Role.CLOUD_CSMS}, cache_size=100)
    roles.add("cs-vip", Role.OPERATOR)
    roles.add("op-*", Role.OPERATOR)
    assert roles.role_of("cloud") is Role.CLOUD_CSMS
    assert roles.role_of("cs-vip") is Role.OPERATOR  # an exact entry beats any pattern
    assert roles.role_of("cs-17") is Role.STATION
    assert roles.role_of("op-1") is Role.OPERATOR
    for i in range(1000):
        assert roles.role_of(f"stranger-{i}") is None
    assert len(roles._cache) <= 100


async def hold_the_inbox(a: Echo, b: Echo) -> asyncio.Event:
    """Send ``b`` a bulk read ("first") whose handler waits until the returned event is set:
    everything sent after it waits in ``b``'s inbox meanwhile."""
    gate, holding = asyncio.Event(), asyncio.Event()
    original = b.read

    async def held(message: PropertyValueRead, ctx: Context) -> MessageBase:
        if str(message.paths[0]) == "first":
            holding.set()
            await gate.wait()
        return await original(message, ctx)

    b.read = held  # type: ignore[method-assign]
    a.endpoint.send(source="a", destination="b", message=read("first"), priority=Priority.BULK)
    await until(holding.is_set, "the first read in its handler")
    return gate


async def test_a_busy_actor_takes_critical_envelopes_before_its_backlog(pair) -> None:  # type: ignore[no-untyped-def]
    # the handlers fall behind (a slow one holds the inbox) while bulk piles up; a critical
    # envelope that arrives last is handled next, before the bulk that waited for longer
    a, b = pair
    gate = await hold_the_inbox(a, b)
    for i in range(20):
        a.endpoint.send(source="a", destination="b", message=read(f"bulk{i}"),
                        priority=Priority.BULK)
    a.endpoint.send(source="a", destination="b", message=read("state"), priority=Priority.STATE)
    await until(lambda: b.inbox_depth == 21, "the backlog in the inbox")
    a.endpoint.send(source="a", destination="b", message=read("safety"),
                    priority=Priority.CRITICAL)
    await until(lambda: b.inbox_depth == 22, "the critical read behind it")
    gate.set()
    await until(lambda: len(b.order) == 23, "everything handled")
    assert b.order[:3] == ["first", "safety", "state"]
    assert b.order[3:] == [f"bulk{i}" for i in range(20)]  # in arrival order within a class


async def test_a_busy_actor_holds_its_senders_bulk_at_them_and_takes_it_as_it_catches_up(
        pair) -> None:  # type: ignore[no-untyped-def]
    # the flood waits in the sender's priority queues, not in the buffers in between, and
    # a critical envelope still goes through; nothing is lost
    a, b = pair
    gate = await hold_the_inbox(a, b)
    pause_at = b.backpressure.settings.pause_at
    for i in range(pause_at):
        a.endpoint.send(source="a", destination="b", message=read(f"bulk{i}"),
                        priority=Priority.BULK)
    await until(lambda: a.endpoint.session.held("b", a.clock.now_us()), "the sender held by the receiver")
    assert b.backpressure.pauses == 1 and b.inbox_depth == pause_at
    for i in range(pause_at, pause_at + 50):  # more of the flood: it stays at the sender
        a.endpoint.send(source="a", destination="b", message=read(f"bulk{i}"),
                        priority=Priority.BULK)
    a.endpoint.send(source="a", destination="b", message=read("safety"),
                    priority=Priority.CRITICAL)
    await until(lambda: b.inbox_depth == pause_at + 1, "the critical read through the hold")
    assert a.endpoint.session.queue_depth()[Priority.BULK] == 50
    gate.set()
    await until(lambda: len(b.order) == pause_at + 52, "everything handled", 10)
    assert b.order[:2] == ["first", "safety"]
    assert b.order[2:] == [f"bulk{i}" for i in range(pause_at + 50)]  # in order, none lost
    assert b.backpressure.backlog == 0 and b.backpressure.credits >= 1  # let go batch by batch
    await until(lambda: not a.endpoint.session.held("b", a.clock.now_us()), "the hold ending by itself", 5)


def envelope(n: int, priority: Priority, *, reliable: bool = False) -> Envelope:
    return Envelope(id=n.to_bytes(16, "big"), source="client", destination="slow",
                    kind="PropertyValueRead", body=encode_body(read(f"p{n}")),
                    priority=priority, reliable=reliable)


async def test_a_deep_inbox_sheds_unreliable_bulk_and_nothing_else(
        monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    monkeypatch.setattr(actor_module, "INBOX_BULK_LIMIT", 3)
    loaded = asyncio.Event()

    class Busy(Echo):
        async def on_start(self) -> None:
            await loaded.wait()  # the inbox fills meanwhile, as behind a saturated loop

    endpoint = await Endpoint(MemoryNetwork().transport()).start()
    busy = Busy("slow", endpoint, roles=RoleDirectory({"*": Role.LOCAL_CSMS}))
    starting = asyncio.create_task(busy.start())
    await until(lambda: busy._running, "the actor registered and loading")
    for n in range(3):
        busy._arrived(envelope(n, Priority.STATE))
    busy._arrived(envelope(3, Priority.BULK))  # over the limit: shed
    busy._arrived(envelope(4, Priority.BULK, reliable=True))  # promised: waits
    busy._arrived(envelope(5, Priority.CONTROL))
    busy._arrived(envelope(6, Priority.CRITICAL))
    assert busy.shed == 1 and busy.inbox_depth == 6
    assert any("shedding unreliable bulk" in r.message for r in caplog.records)
    loaded.set()
    await starting
    await until(lambda: busy.inbox_depth == 0, "the rest handled")
    # nothing else lost, and the highest priority first
    assert busy.order == ["p6", "p5", "p0", "p1", "p2", "p4"]
    await busy.stop()
    await endpoint.stop()


async def test_halt_stops_intake_and_work_at_once_and_stop_flushes_after_the_tasks(
        pair) -> None:  # type: ignore[no-untyped-def]
    a, _ = pair
    seen: list[str] = []
    started = asyncio.Event()

    async def forever() -> None:
        started.set()
        try:
            await asyncio.Event().wait()
        finally:
            seen.append("task ended")

    async def on_stop() -> None:
        seen.append("on_stop")

    a.on_stop = on_stop
    task = a.spawn(forever(), "forever")
    await started.wait()
    a.halt()
    a._arrived(envelope(1, Priority.CONTROL)._replace(destination="a"))
    assert a.inbox_depth == 0  # halted: nothing more is taken
    await a.stop()
    assert task.cancelled() and seen == ["task ended", "on_stop"]
