"""One actor on two real brokers: an outage of one link leaves the other's traffic untouched.

A local CSMS stand-in ("local") holds a site-broker link (its default) and a cloud-broker link
(for "cloud"), each an ``Endpoint`` with its own XMPP client connection, through a ``Router``.
A station ("cs-1") sits on the site broker, the cloud CSMS ("cloud") on the cloud broker. The
cloud broker is then stopped (or killed): requests and reliable envelopes over the site broker
keep arriving, as fast as before the outage (measured in the same run), nothing for the site
link waits, and what was sent to the cloud meanwhile arrives, in order, once its broker is back.
"""

from __future__ import annotations

import asyncio
import statistics
from pathlib import Path

import pytest

from actors.runtime.actor import Actor, Context, handles
from actors.testing import until
from broker_bridge import Endpoint, Priority, Router
from broker_bridge.prosody import ManagedProsody
from broker_bridge.session import SECOND, SessionConfig
from broker_bridge.xmpp import XmppTransport
from keypath import KeyPath
from object_model import MessageBase, Role
from object_model.messages import (
    PropertyValueRead,
    PropertyValueReadResponse,
    PropertyValueUpdate,
)

pytestmark = pytest.mark.broker

FAST = SessionConfig(retransmit_initial_us=SECOND // 4, retransmit_max_us=SECOND)
PASSWORD = "pw"
ROUNDS = 20  # requests and reliable envelopes per measurement


class Probe(Actor):
    """Answers reads with the asker's address; records updates and how long they took."""

    role = Role.LOCAL_CSMS

    def __init__(self, address: str, links: Router | Endpoint) -> None:
        super().__init__(address, links)
        self.updates: list[int] = []
        self.latencies_s: list[float] = []

    @handles(PropertyValueRead)
    async def read(self, message: PropertyValueRead, ctx: Context) -> MessageBase:
        return PropertyValueReadResponse(epoch=1, revision=1,
                                         values=[(message.paths[0], 1, ctx.sender)])

    @handles(PropertyValueUpdate)
    async def update(self, message: PropertyValueUpdate, ctx: Context) -> None:
        self.updates.append(message.epoch)
        self.latencies_s.append((self.clock.now_us() - ctx.envelope.timestamp_us) / 1e6)


def link(broker: ManagedProsody, account: str) -> Endpoint:
    broker.create_accounts({account: PASSWORD})
    # a short reconnect cap: the test waits for links to come back, not for a long backoff
    transport = XmppTransport.client(broker.xmpp_settings(reconnect_cap_s=0.5), account,
                                     PASSWORD,
                                     name=f"{account}@{broker.endpoint.domain}")
    return Endpoint(transport, config=FAST, name=f"{account}@{broker.endpoint.domain}")


def read() -> PropertyValueRead:
    return PropertyValueRead(paths=[KeyPath.parse("who")])


def update(n: int) -> PropertyValueUpdate:
    return PropertyValueUpdate(epoch=n, from_revision=0, to_revision=1)


async def site_round(local: Probe, station: Probe, first: int) -> tuple[list[float], list[float]]:
    """``ROUNDS`` requests each way over the site link and ``ROUNDS`` reliable envelopes to the
    station: the round-trip times (s) and the envelopes' one-way latencies (s)."""
    loop = asyncio.get_running_loop()
    round_trips: list[float] = []
    for asker, peer in ((local, "cs-1"), (station, "local")):
        for _ in range(ROUNDS // 2):
            started = loop.time()
            answer = await asker.request(peer, read(), timeout=5)
            round_trips.append(loop.time() - started)
            assert isinstance(answer, PropertyValueReadResponse)
            assert answer.values[0][2] == asker.address
    seen = len(station.updates)
    for n in range(first, first + ROUNDS):  # one at a time: latency, not throughput
        local.send("cs-1", update(n), reliable=True, priority=Priority.STATE)
        await until(lambda n=n: station.updates[-1:] == [n], f"envelope {n} reaches cs-1",
                    every=0.005)
    assert station.updates[seen:] == list(range(first, first + ROUNDS))
    return round_trips, station.latencies_s[seen:]


@pytest.mark.parametrize("outage", ["stop", "kill"])
async def test_an_outage_of_the_cloud_broker_leaves_the_site_link_untouched(
    tmp_path: Path, outage: str
) -> None:
    site_broker = ManagedProsody(tmp_path / "site-broker", domain="site1.local",
                                 component_domains=())
    cloud_broker = ManagedProsody(tmp_path / "cloud-broker", domain="cloud.local",
                                  component_domains=())
    await site_broker.start()
    await cloud_broker.start()
    to_site, to_cloud = link(site_broker, "local"), link(cloud_broker, "local")
    station_link, upstream_link = link(site_broker, "cs-1"), link(cloud_broker, "cloud")
    endpoints = (to_site, to_cloud, station_link, upstream_link)
    local = Probe("local", Router(to_site, [("cloud", to_cloud)]))
    station, upstream = Probe("cs-1", station_link), Probe("cloud", upstream_link)
    actors = (local, station, upstream)
    try:
        for endpoint in endpoints:
            await endpoint.start()
        for actor in actors:
            await actor.start()
        answer = await local.request("cloud", read(), timeout=5)  # the cloud link works
        assert isinstance(answer, PropertyValueReadResponse)

        before_rtt, before_latency = await site_round(local, station, 0)

        if outage == "kill":
            cloud_broker.kill()
        else:
            await cloud_broker.stop()
        await until(lambda: not to_cloud.transport.connected, "the cloud link is seen down")
        for n in range(ROUNDS):  # sent while the cloud is away: held on its own link
            local.send("cloud", update(n), reliable=True, priority=Priority.STATE)

        during_rtt, during_latency = await site_round(local, station, 1000)
        await to_site.flush(5)  # nothing of the site link's waits: all sent and acknowledged
        assert to_site.session.idle and to_site.session.pending_count == 0
        assert to_site.reconnects == 0 and to_site.transport.connected
        assert to_cloud.session.pending_count == ROUNDS and upstream.updates == []
        assert not to_cloud.transport.connected  # the outage lasted through the measurements

        # the site link is as fast as before the outage (generous bounds for a shared
        # machine; a link held behind the dead one would take retransmissions, 250 ms+)
        for name, before, during in (("round trip", before_rtt, during_rtt),
                                     ("one-way latency", before_latency, during_latency)):
            median_before, median_during = statistics.median(before), statistics.median(during)
            assert median_during <= 3 * median_before + 0.02, (
                f"{name}: median {median_during * 1e3:.1f} ms during the outage, "
                f"{median_before * 1e3:.1f} ms before")
            assert max(during) < 0.2 + 3 * max(before), f"{name}: slowest {max(during):.3f} s"

        await cloud_broker.start()  # same state directory and ports: the accounts survive
        await until(lambda: len(upstream.updates) == ROUNDS,
                    "what was sent to the cloud arrives once its broker is back", timeout=30)
        assert upstream.updates == list(range(ROUNDS))  # in order, once
        await to_cloud.flush(10)
        assert to_cloud.session.pending_count == 0 and to_cloud.reconnects == 1
        answer = await local.request("cloud", read(), timeout=5)
        assert isinstance(answer, PropertyValueReadResponse)
    finally:
        for actor in actors:
            await actor.stop()
        for endpoint in endpoints:
            await endpoint.stop(flush_timeout=2.0)
        await cloud_broker.stop()
        await site_broker.stop()
