"""An actor on two links (in memory): it answers on both, asks over the link each peer routes
to, and keeps ``endpoint`` as its default link for callers that know only one."""

from __future__ import annotations

import pytest

from actors.runtime.actor import Actor, Context, handles
from broker_bridge import Endpoint, Router
from broker_bridge.memory import MemoryNetwork, MemoryTransport
from keypath import KeyPath
from object_model import MessageBase, Role
from object_model.messages import PropertyValueRead, PropertyValueReadResponse


class Named(Actor):
    """Answers a read of any path with the address of whoever asked."""

    role = Role.LOCAL_CSMS

    @handles(PropertyValueRead)
    async def read(self, message: PropertyValueRead, ctx: Context) -> MessageBase:
        return PropertyValueReadResponse(epoch=1, revision=1,
                                         values=[(message.paths[0], 1, ctx.sender)])


def read() -> PropertyValueRead:
    return PropertyValueRead(paths=[KeyPath.parse("who")])


def test_a_bare_endpoint_becomes_a_router_of_one() -> None:
    endpoint = Endpoint(MemoryNetwork().transport())
    actor = Named("a", endpoint)
    assert isinstance(actor.links, Router) and actor.links.endpoints == (endpoint,)
    assert actor.endpoint is endpoint
    with pytest.raises(AttributeError):
        actor.endpoint = endpoint  # type: ignore[misc]
    router = Router(endpoint)
    assert Named("b", router).links is router


async def test_an_actor_on_two_links_asks_and_answers_over_each() -> None:
    site_net, cloud_net = MemoryNetwork(), MemoryNetwork()
    site, cloud = Endpoint(site_net.transport(), name="site"), Endpoint(cloud_net.transport(),
                                                                         name="cloud")
    station_link, upstream_link = (Endpoint(site_net.transport(), name="cs-1"),
                                   Endpoint(cloud_net.transport(), name="cloud-csms"))
    endpoints = (site, cloud, station_link, upstream_link)
    for endpoint in endpoints:
        await endpoint.start()
    local = Named("local", Router(site, [("cloud", cloud)]))
    station, upstream = Named("cs-1", station_link), Named("cloud", upstream_link)
    try:
        for actor in (local, station, upstream):
            await actor.start()
        assert local.endpoint is site
        # the local actor asks each peer over the link it routes to, and each asks it back
        # over the only link they share
        for peer in ("cs-1", "cloud"):
            answer = await local.request(peer, read(), timeout=5)
            assert isinstance(answer, PropertyValueReadResponse)
            assert answer.values[0][2] == "local"
        for peer in (station, upstream):
            answer = await peer.request("local", read(), timeout=5)
            assert isinstance(answer, PropertyValueReadResponse)
            assert answer.values[0][2] == peer.address
        assert local.handled == 2
        for endpoint, peer in ((site, "cs-1"), (cloud, "cloud")):
            transport = endpoint.transport
            assert isinstance(transport, MemoryTransport)
            assert set(transport.frames_by_destination) == {peer}
    finally:
        for actor in (local, station, upstream):
            await actor.stop()
        for endpoint in endpoints:
            await endpoint.stop(flush_timeout=1.0)
    assert all("local" not in e.session.local_addresses for e in (site, cloud))


async def test_answers_go_back_by_the_link_the_request_came_by() -> None:
    """An operator on the cloud's broker that no route names (routes say where to *send*) is
    answered on the cloud link it asked by, not on the default site link, where it is not."""
    site_net, cloud_net = MemoryNetwork(), MemoryNetwork()
    site, cloud = Endpoint(site_net.transport(), name="site"), Endpoint(cloud_net.transport(),
                                                                         name="cloud")
    operator_link = Endpoint(cloud_net.transport(), name="operator")
    for endpoint in (site, cloud, operator_link):
        await endpoint.start()
    local = Named("local", Router(site, [("cloud", cloud)]))
    operator = Named("operator", operator_link)
    try:
        for actor in (local, operator):
            await actor.start()
        answer = await operator.request("local", read(), timeout=5)
        assert isinstance(answer, PropertyValueReadResponse)
        assert answer.values[0][2] == "operator"
        site_transport = site.transport
        assert isinstance(site_transport, MemoryTransport)
        assert "operator" not in site_transport.frames_by_destination
    finally:
        for actor in (local, operator):
            await actor.stop()
        for endpoint in (site, cloud, operator_link):
            await endpoint.stop(flush_timeout=1.0)
