"""The router over two in-memory networks (a site broker and a cloud broker): which link carries
what, registration on every link, and an outage of one link that leaves the other alone.

Delivery through real brokers, with one of them killed, is tests/integration/test_two_links.py.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass

import pytest

from actors.testing import Inbox
from broker_bridge import Endpoint, Priority, Router
from broker_bridge.memory import MemoryNetwork, MemoryTransport
from broker_bridge.session import SECOND, SessionConfig
from object_model import PropertyValueUpdate

FAST = SessionConfig(retransmit_initial_us=SECOND // 10, retransmit_max_us=SECOND // 2)


def update(n: int) -> PropertyValueUpdate:
    return PropertyValueUpdate(epoch=n, from_revision=0, to_revision=1)


@dataclass
class World:
    """A local CSMS ("local") with a site link (the default) and a cloud link (``cloud*``),
    a station ("cs-1") on the site network and the cloud CSMS ("cloud") on the cloud one."""

    router: Router
    site: Endpoint
    cloud: Endpoint
    uplink: MemoryTransport
    station: Endpoint
    upstream: Endpoint
    local_inbox: Inbox
    station_inbox: Inbox
    upstream_inbox: Inbox


@pytest.fixture
async def world() -> AsyncIterator[World]:
    site_net, cloud_net = MemoryNetwork(), MemoryNetwork()
    uplink = cloud_net.transport("local-uplink")
    site = Endpoint(site_net.transport("local-site"), config=FAST, name="site")
    cloud = Endpoint(uplink, config=FAST, name="cloud")
    station = Endpoint(site_net.transport("cs-1"), config=FAST, name="cs-1")
    upstream = Endpoint(cloud_net.transport("cloud"), config=FAST, name="cloud-csms")
    router = Router(site, [("cloud*", cloud), ("group:cloud-*", cloud)])
    w = World(router, site, cloud, uplink, station, upstream, Inbox(), Inbox(), Inbox())
    endpoints = (site, cloud, station, upstream)
    for endpoint in endpoints:
        await endpoint.start()
    await router.register("local", w.local_inbox, w.local_inbox.event)
    await station.register("cs-1", w.station_inbox)
    await upstream.register("cloud", w.upstream_inbox)
    try:
        yield w
    finally:
        for endpoint in endpoints:
            await endpoint.stop(flush_timeout=1.0)


def test_a_destination_takes_the_first_matching_route_else_the_default() -> None:
    net = MemoryNetwork()
    site, cloud, other = (Endpoint(net.transport(), name=n) for n in ("site", "cloud", "other"))
    router = Router(site, [("cloud", other), ("cloud*", cloud), ("group:cloud-*", cloud)])
    assert router.endpoint_for("cloud") is other  # routes are tried in order
    assert router.endpoint_for("cloud-2") is cloud
    assert router.endpoint_for("group:cloud-all") is cloud
    assert router.endpoint_for("cs-1") is site
    assert router.endpoint_for("group:site") is site
    assert router.endpoint_for("Cloud-2") is site  # addresses are case-sensitive
    assert router.endpoints == (site, other, cloud)  # each once, the default first
    assert Router(cloud, [("x", site), ("y", cloud), ("z", site)]).endpoints == (cloud, site)


def test_a_router_of_one_endpoint_is_that_endpoint() -> None:
    endpoint = Endpoint(MemoryNetwork().transport())
    router = Router(endpoint)
    assert router.default is endpoint and router.endpoints == (endpoint,)
    assert {router.endpoint_for(a) for a in ("cloud", "cs-1", "group:x")} == {endpoint}


async def test_each_message_leaves_on_the_link_its_destination_routes_to(world: World) -> None:
    for i in range(3):
        world.router.send(source="local", destination="cs-1", message=update(i), reliable=True)
        world.router.send(source="local", destination="cloud", message=update(10 + i),
                          reliable=True)
    await world.station_inbox.wait_for(3)
    await world.upstream_inbox.wait_for(3)
    assert world.station_inbox.numbers() == [0, 1, 2]
    assert world.upstream_inbox.numbers() == [10, 11, 12]
    site_transport = world.site.transport
    assert isinstance(site_transport, MemoryTransport)
    assert set(site_transport.frames_by_destination) == {"cs-1"}
    assert set(world.uplink.frames_by_destination) == {"cloud"}


async def test_the_actor_is_reachable_on_every_link_until_unregistered(world: World) -> None:
    world.station.send(source="cs-1", destination="local", message=update(1), reliable=True)
    world.upstream.send(source="cloud", destination="local", message=update(2), reliable=True)
    await world.local_inbox.wait_for(2)
    assert sorted(zip((e.source for e in world.local_inbox.envelopes),
                      world.local_inbox.numbers(), strict=True)) == [("cloud", 2), ("cs-1", 1)]
    world.router.unregister("local")
    assert all("local" not in e.session.local_addresses for e in world.router.endpoints)
    assert world.station.session.local_addresses == {"cs-1"}  # the peers are untouched


async def test_a_group_is_joined_on_the_link_it_routes_to(world: World) -> None:
    await world.router.join_group("group:cloud-all", "local")
    # a broadcast on the site network reaches nobody (the site link did not join); the
    # station's next envelope to "local" follows the same path, so once it is in, the
    # broadcast would have been too
    world.station.send(source="cs-1", destination="group:cloud-all", message=update(1),
                       priority=Priority.CRITICAL)
    world.station.send(source="cs-1", destination="local", message=update(2),
                       priority=Priority.CRITICAL)
    world.upstream.send(source="cloud", destination="group:cloud-all", message=update(3),
                        priority=Priority.CRITICAL)
    await world.local_inbox.wait_for(2)
    assert sorted(world.local_inbox.numbers()) == [2, 3]
    assert [e.destination for e in world.local_inbox.envelopes
            if e.source == "cloud"] == ["group:cloud-all"]


async def test_a_cut_link_holds_only_its_own_traffic_and_delivers_it_when_back(
    world: World
) -> None:
    world.uplink.set_link(False)  # the uplink to the cloud broker goes down
    assert not world.cloud.session.link_is_up and world.site.session.link_is_up
    sent_up = world.uplink.frames_sent
    for i in range(20):
        world.router.send(source="local", destination="cloud", message=update(100 + i),
                          reliable=True, priority=Priority.STATE)
        world.router.send(source="local", destination="cs-1", message=update(i), reliable=True,
                          priority=Priority.STATE)
        world.router.send(source="local", destination="cs-1", message=update(1000 + i),
                          priority=Priority.CRITICAL)
    # the site link carries on: everything arrives, is acknowledged, nothing waits there
    await world.station_inbox.wait_for(40)
    await world.site.flush(5.0)
    numbers = world.station_inbox.numbers()
    assert [n for n in numbers if n < 1000] == list(range(20))
    assert [n for n in numbers if n >= 1000] == list(range(1000, 1020))
    assert world.site.session.pending_count == 0 and world.site.session.idle
    # the cut link holds its reliable envelopes, and sent nothing meanwhile
    assert world.cloud.session.pending_count == 20
    assert world.uplink.frames_sent == sent_up and world.upstream_inbox.envelopes == []
    world.uplink.set_link(True)
    await world.upstream_inbox.wait_for(20)
    await world.cloud.flush(5.0)
    assert world.upstream_inbox.numbers() == [100 + i for i in range(20)]  # in order, once
    assert world.cloud.session.pending_count == 0 and world.cloud.reconnects == 1
    assert world.site.reconnects == 0


class Refusing(MemoryTransport):
    """A link that will not carry a second address (as an XMPP client account would not)."""

    async def add_address(self, address: str) -> None:
        raise ValueError(f"{address!r} is not this link's account")


async def test_registration_is_on_every_link_or_none() -> None:
    net = MemoryNetwork()
    first, second = Endpoint(net.transport(), name="first"), Endpoint(Refusing(net), name="second")
    router = Router(first, [("x*", second)])
    with pytest.raises(ValueError, match="not this link's account"):
        await router.register("local", lambda env: None)
    assert first.session.local_addresses == frozenset()  # undone
