"""Prometheus metrics of actors and endpoints over the in-memory transport: exact counts by kind
and priority, queue depths, reconnects, resynchronisations, and the text served over HTTP."""

from __future__ import annotations

import asyncio
import socket
import threading
import urllib.error
import urllib.request
from collections import Counter
from collections.abc import AsyncIterator, Iterable
from dataclasses import dataclass
from pathlib import Path

import pytest
from prometheus_client.core import Metric
from prometheus_client.parser import text_string_to_metric_families

from actors.app.config import ConfigError, MetricsConfig, load_config
from actors.app.metrics import ActorCollector, serve_metrics
from actors.app.wiring import start_metrics
from actors.logic.tree_access import TreeAccess
from actors.runtime.actor import Actor, Context, RoleDirectory, handles
from actors.runtime.replication.replica import Replica
from actors.runtime.replication.resync import ResyncEngine
from actors.runtime.tree_actor import OneTree, TreeActor
from actors.testing import until
from broker_bridge import Endpoint, Priority, Router
from broker_bridge.memory import MemoryNetwork, MemoryTransport
from keypath import KeyPath
from object_model import MessageBase, ObjectTree, PermissiveSchema, Role
from object_model.messages import (
    PropertyValueRead,
    PropertyValueReadResponse,
    PropertyValueUpdate,
)
from object_model.station import new_station_tree, station_access_policy

Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


class Sink(Actor):
    role = Role.STATION

    @handles(PropertyValueUpdate)
    async def on_update(self, message: PropertyValueUpdate, ctx: Context) -> None:
        return None

    @handles(PropertyValueRead)
    async def on_read(self, message: PropertyValueRead, ctx: Context) -> MessageBase:
        return PropertyValueReadResponse(epoch=1, revision=2, values=[(message.paths[0], 2, 7)])


class Asker(Actor):
    role = Role.LOCAL_CSMS


@dataclass
class Host:
    endpoint: Endpoint
    actors: list[Actor]


@dataclass
class Pair:
    a: Asker
    b: Sink
    hosts: list[Host]

    @property
    def link_a(self) -> MemoryTransport:
        return self.a.endpoint.transport  # type: ignore[return-value]


@pytest.fixture
async def pair() -> AsyncIterator[Pair]:
    net = MemoryNetwork()
    ea = await Endpoint(net.transport(), name="ep-a").start()
    eb = await Endpoint(net.transport(), name="ep-b").start()
    a, b = Asker("a", ea), Sink("b", eb)
    await a.start()
    await b.start()
    yield Pair(a, b, [Host(ea, [a]), Host(eb, [b])])
    for actor in (a, b):
        await actor.stop()
    await ea.stop()
    await eb.stop()


def update(n: int) -> PropertyValueUpdate:
    return PropertyValueUpdate(epoch=n, from_revision=0, to_revision=1)


# what ``send_the_mix`` sends from a to b, by (kind, priority)
MIX = {("PropertyValueUpdate", "state"): 3, ("PropertyValueUpdate", "bulk"): 2,
       ("PropertyValueUpdate", "critical"): 1}


def send_the_mix(a: Actor) -> None:
    for i in range(3):
        a.send("b", update(i), priority=Priority.STATE)
    for i in range(2):
        a.send("b", update(i), priority=Priority.BULK, reliable=True)
    a.send("b", update(9), priority=Priority.CRITICAL)


def samples(families: Iterable[Metric]) -> Samples:
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for family in families for s in family.samples}


def value(table: Samples, name: str, **labels: str) -> float:
    return table[(name, tuple(sorted(labels.items())))]


def by_kind(table: Samples, name: str, endpoint: str) -> dict[tuple[str, str], float]:
    out = {}
    for (sample, labels), count in table.items():
        found = dict(labels)
        if sample == name and found["endpoint"] == endpoint:
            out[found["kind"], found["priority"]] = count
    return out


async def test_messages_are_counted_by_kind_and_priority_on_both_ends(pair: Pair) -> None:
    a, b = pair.a, pair.b
    send_the_mix(a)
    answer = await a.request("b", PropertyValueRead(paths=[KeyPath.parse("x")]))
    assert isinstance(answer, PropertyValueReadResponse)
    await a.endpoint.flush()
    await b.endpoint.flush()
    await until(lambda: b.handled == 7, "b handled all seven")

    table = samples(ActorCollector(pair.hosts).collect())
    sent_by_a = by_kind(table, "csms_messages_sent_total", "ep-a")
    assert sent_by_a == {**MIX, ("PropertyValueRead", "control"): 1}
    assert by_kind(table, "csms_messages_received_total", "ep-b") == sent_by_a
    # b answered the read and acknowledged the two reliable updates (in one Ack or more)
    sent_by_b = by_kind(table, "csms_messages_sent_total", "ep-b")
    acks = sent_by_b.pop(("Ack", "control"))
    assert sent_by_b == {("PropertyValueReadResponse", "control"): 1}
    assert 1 <= acks <= 2
    assert by_kind(table, "csms_messages_received_total", "ep-a") == {
        ("PropertyValueReadResponse", "control"): 1, ("Ack", "control"): acks}

    # every delivered message is in its priority's latency histogram, once
    for priority, count in (("state", 3), ("bulk", 2), ("critical", 1), ("control", 1)):
        assert value(table, "csms_message_latency_seconds_count", endpoint="ep-b",
                     priority=priority) == count
        assert value(table, "csms_message_latency_seconds_bucket", endpoint="ep-b",
                     priority=priority, le="+Inf") == count
    assert value(table, "csms_message_latency_seconds_sum", endpoint="ep-b",
                 priority="state") == b.endpoint.session.traffic.latency[Priority.STATE].sum_us / 1e6

    # frames and bytes: what a's link carried is what b's session took in
    link = pair.link_a
    assert value(table, "csms_frames_sent_total", endpoint="ep-a") == link.frames_sent > 0
    assert value(table, "csms_sent_bytes_total", endpoint="ep-a") == link.bytes_sent
    assert value(table, "csms_received_bytes_total", endpoint="ep-b") == link.bytes_sent
    assert value(table, "csms_frames_received_total", endpoint="ep-b") == link.frames_sent
    assert value(table, "csms_session_events_total", endpoint="ep-a", event="acked") == 2
    assert value(table, "csms_unacknowledged_envelopes", endpoint="ep-a") == 0
    assert value(table, "csms_pace_stretch", endpoint="ep-a") == 1  # keeping up
    assert value(table, "csms_loop_lag_seconds", endpoint="ep-a") >= 0

    assert value(table, "csms_actor_handled_total", actor="b") == 7
    assert value(table, "csms_actor_rejected_total", actor="b") == 0
    assert value(table, "csms_actor_inbox_envelopes", actor="b") == 0
    assert value(table, "csms_actor_shed_envelopes_total", actor="b") == 0
    assert value(table, "csms_actor_handled_total", actor="a") == 0


async def test_queue_depth_shows_what_waits_while_the_link_is_down(pair: Pair) -> None:
    a, b = pair.a, pair.b
    collector = ActorCollector(pair.hosts)
    pair.link_a.set_link(False)
    send_the_mix(a)
    a.send("b", PropertyValueRead(paths=[KeyPath.parse("x")]), reliable=True)

    table = samples(collector.collect())
    for priority, depth in (("critical", 1), ("control", 1), ("state", 3), ("bulk", 2)):
        assert value(table, "csms_queued_envelopes", endpoint="ep-a", priority=priority) == depth
    assert value(table, "csms_unacknowledged_envelopes", endpoint="ep-a") == 3
    queued = value(table, "csms_queued_bytes", endpoint="ep-a")
    assert queued == a.endpoint.session.queued_bytes > 0
    assert value(table, "csms_broker_connected", endpoint="ep-a") == 0
    assert value(table, "csms_broker_reconnects_total", endpoint="ep-a") == 0
    assert value(table, "csms_frames_sent_total", endpoint="ep-a") == 0

    pair.link_a.set_link(True)
    await until(lambda: b.handled == 7 and a.endpoint.session.idle, "all handled, a idle")
    table = samples(collector.collect())
    for priority in ("critical", "control", "state", "bulk"):
        assert value(table, "csms_queued_envelopes", endpoint="ep-a", priority=priority) == 0
    assert value(table, "csms_queued_bytes", endpoint="ep-a") == 0
    assert value(table, "csms_unacknowledged_envelopes", endpoint="ep-a") == 0
    assert value(table, "csms_broker_connected", endpoint="ep-a") == 1
    assert value(table, "csms_broker_reconnects_total", endpoint="ep-a") == 1
    assert by_kind(table, "csms_messages_received_total", "ep-b") == {
        **MIX, ("PropertyValueRead", "control"): 1}


class ThreadNoting(Host):
    """Remembers which threads read its actors."""

    def __init__(self, endpoint: Endpoint, actors: list[Actor]) -> None:
        self.endpoint = endpoint
        self._actors = actors
        self.readers: set[int] = set()

    @property  # type: ignore[override]
    def actors(self) -> list[Actor]:
        self.readers.add(threading.get_ident())
        return self._actors


async def test_the_served_text_parses_and_was_read_on_the_event_loop(pair: Pair) -> None:
    send_the_mix(pair.a)
    await pair.a.endpoint.flush()
    await until(lambda: pair.b.handled == 6, "b handled all six")
    noting = ThreadNoting(pair.a.endpoint, [pair.a])
    hosts = [noting, pair.hosts[1]]
    collector = ActorCollector(hosts, loop=asyncio.get_running_loop())
    server = serve_metrics(0, collector)
    url = f"http://127.0.0.1:{server.port}/metrics"
    try:
        text = await asyncio.to_thread(lambda: urllib.request.urlopen(url, timeout=5).read())
    finally:
        await server.stop()
    assert noting.readers == {threading.get_ident()}  # the loop's thread, not the server's

    families = {f.name: f for f in text_string_to_metric_families(text.decode())}
    assert families["csms_messages_sent"].type == "counter"
    assert families["csms_message_latency_seconds"].type == "histogram"
    assert families["csms_queued_envelopes"].type == "gauge"
    served = samples(families.values())
    assert by_kind(served, "csms_messages_sent_total", "ep-a") == MIX
    assert by_kind(served, "csms_messages_received_total", "ep-b") == MIX
    def counted(table: Samples) -> Samples:  # the loop's lag moves on its own
        return {k: v for k, v in table.items() if k[0] != "csms_loop_lag_seconds"}

    assert counted(served) == counted(samples(collector.read()))  # nothing moved in between
    assert not any(name.startswith("python_") or name.startswith("process_")
                   for name in families)  # its own registry, not the global one

    with pytest.raises(urllib.error.URLError):
        await asyncio.to_thread(lambda: urllib.request.urlopen(url, timeout=2).read())


@dataclass
class Copies:
    resync: ResyncEngine


@dataclass
class Own:
    counters: Counter[str]


class Requester(TreeActor):
    """A CSMS as the collector sees it: copies with a resync engine, and an own tree's
    ``counters``."""

    role = Role.LOCAL_CSMS

    def __init__(self, address: str, endpoint: Endpoint) -> None:
        super().__init__(address, endpoint)
        self.copies = Copies(ResyncEngine(self))
        self.own = Own(Counter(joins=3, gaps=1, resync_bytes=5000))


class Source(TreeActor):
    role = Role.STATION

    def __init__(self, address: str, endpoint: Endpoint, tree: ObjectTree) -> None:
        super().__init__(address, endpoint)
        self.trees = OneTree(address, TreeAccess(tree, station_access_policy()))


async def test_resyncs_are_counted_with_their_duration_and_bytes() -> None:
    net = MemoryNetwork()
    async with Endpoint(net.transport(), name="station") as es, \
            Endpoint(net.transport(), name="csms") as ec:
        source = Source("cs-1", es, new_station_tree("cs-1", epoch=11))
        source.roles = RoleDirectory({"csms": Role.LOCAL_CSMS})
        requester = Requester("csms", ec)
        async with source, requester:
            copy = Replica("cs-1", "cs-1", KeyPath.root(), ObjectTree(PermissiveSchema(), epoch=0))
            first = await requester.copies.resync.sync(copy)
            second = await requester.copies.resync.sync(copy)
            table = samples(ActorCollector([Host(ec, [requester]), Host(es, [source])]).collect())
    assert (first.mode, second.mode) == ("full", "changes")
    assert value(table, "csms_resyncs_total", actor="csms", mode="full") == 1
    assert value(table, "csms_resyncs_total", actor="csms", mode="changes") == 1
    assert value(table, "csms_resync_duration_seconds_count", actor="csms") == 2
    seconds = value(table, "csms_resync_duration_seconds_sum", actor="csms")
    assert seconds == pytest.approx(first.seconds + second.seconds) and seconds > 0
    assert value(table, "csms_resync_bytes_total", actor="csms") == pytest.approx(
        first.bytes + second.bytes)
    assert value(table, "csms_resync_failures_total", actor="csms") == 0
    assert value(table, "csms_resyncs_running", actor="csms") == 0
    assert value(table, "csms_csms_events_total", actor="csms", event="joins") == 3
    assert value(table, "csms_csms_events_total", actor="csms", event="gaps") == 1
    assert not any(dict(labels).get("event") == "resync_bytes" for _, labels in table)
    assert not any(dict(labels).get("actor") == "cs-1" and name.startswith("csms_resync")
                   for name, labels in table)  # a station has no resync engine


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def test_the_runtime_serves_metrics_only_when_a_port_is_configured(pair: Pair) -> None:
    assert start_metrics(pair.hosts, None) is None  # type: ignore[arg-type]
    assert start_metrics(pair.hosts, MetricsConfig()) is None  # type: ignore[arg-type]
    port = free_port()
    server = start_metrics(pair.hosts, MetricsConfig(port=port))  # type: ignore[arg-type]
    assert server is not None and server.port == port
    try:
        url = f"http://127.0.0.1:{port}/metrics"
        text = await asyncio.to_thread(lambda: urllib.request.urlopen(url, timeout=5).read())
    finally:
        await server.stop()
    assert b'csms_actor_handled_total{actor="b"} 0.0' in text


def test_the_metrics_section_is_optional_and_checked(tmp_path: Path) -> None:
    path = tmp_path / "m.toml"
    path.write_text("[local]\n")
    assert load_config(path).metrics == MetricsConfig(port=0, host="127.0.0.1")
    path.write_text("[metrics]\nport = 9101\nhost = '0.0.0.0'\n")
    assert load_config(path).metrics == MetricsConfig(port=9101, host="0.0.0.0")
    path.write_text("[metrics]\nport = 70000\n")
    with pytest.raises(ConfigError, match=r"\[metrics\]: port: 70000 is not a TCP port"):
        load_config(path)
    path.write_text("[metrics]\nprot = 1\n")
    with pytest.raises(ConfigError, match="unknown key"):
        load_config(path)


async def test_every_link_of_an_actor_is_measured() -> None:
    """A local CSMS holds a site link and an uplink: both show up, each with its own
    counts (the router sends each message on one of them)."""
    site, cloud = MemoryNetwork(), MemoryNetwork()
    async with Endpoint(site.transport(), name="site-link") as near, \
            Endpoint(cloud.transport(), name="uplink") as far, \
            Endpoint(site.transport(), name="peer-site") as ep_b, \
            Endpoint(cloud.transport(), name="peer-cloud") as ep_c:
        links = Router(near, [("c", far)])
        a = Asker("a", links)
        async with a, Sink("b", ep_b), Sink("c", ep_c):
            a.send("b", update(1), priority=Priority.STATE)
            a.send("c", update(2), priority=Priority.STATE)
            a.send("c", update(3), priority=Priority.STATE)
            await near.flush()
            await far.flush()
            table = samples(ActorCollector([Host(near, [a])]).collect())
    sent = {endpoint: sum(by_kind(table, "csms_messages_sent_total", endpoint).values())
            for endpoint in ("site-link", "uplink")}
    assert sent == {"site-link": 1, "uplink": 2}
