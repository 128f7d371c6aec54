"""CSMS logic over the in-memory transport, with real SQLite stores: binding stations to sites,
drift detection, relaying only what is durable and in order, and reconciling site policy.
(Delivery itself is proven against the real broker in test_hierarchy.)"""

from __future__ import annotations

import asyncio
import itertools
import sqlite3
from typing import Any

import pytest

from actors.csms.cloud import CloudCsms
from actors.csms.local import LocalCsms
from actors.csms.settings import CloudSettings, LocalSettings
from actors.logic.join_proof import join_proof
from actors.runtime.actor import Actor, Context, RoleDirectory, handles
from actors.runtime.storage.trees import TreeStore
from actors.station.actor import ChargingStation, StationSettings
from actors.station.simulated import SimulatedStation
from actors.testing import FakeClock, World, until
from broker_bridge.clock import WALL_CLOCK, Clock
from keypath import KeyPath, KeyPattern
from object_model import ErrorCode, ModelError, PermissiveSchema, Role
from object_model.messages import (
    FanOutRequest,
    FanOutResponse,
    FanOutResult,
    JoinNetworkRequest,
    JoinNetworkResponse,
    PropertyValueUpdate,
    PropertyValueWrite,
    TreeInfo,
    WriteItem,
)
from object_model.monitoring import MonitoringReport, MonitoringTaskSetup, ReporterConfig


class Peer(Actor):
    """A bare actor that says what it is told to (a site, an upstream CSMS)."""

    role = Role.LOCAL_CSMS

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.updates: list[PropertyValueUpdate] = []

    @handles(PropertyValueUpdate)
    async def on_update(self, message: PropertyValueUpdate, ctx: Context) -> None:
        self.updates.append(message)


class Upstream(Peer):
    """A cloud that admits any site and records what the site relays."""

    role = Role.CLOUD_CSMS

    @handles(JoinNetworkRequest)
    async def on_join(self, message: JoinNetworkRequest, ctx: Context) -> JoinNetworkResponse:
        return JoinNetworkResponse(csms=self.address, heartbeat_s=30)


def info(station: str) -> TreeInfo:
    return TreeInfo(tree=KeyPath("stations", station), epoch=1, revision=1,
                    root_digest=bytes(16))


async def test_a_station_stays_bound_to_the_site_that_brought_it(world: World) -> None:
    cloud = await world.actor(CloudCsms(
        "cloud", await world.endpoint("cloud"), store=await world.store("cloud"),
        settings=CloudSettings(site_secrets={"site-a": "a", "site-b": "b"})))
    site_a = await world.actor(Peer("site-a", await world.endpoint("a"),
                                    roles=RoleDirectory({"cloud": Role.CLOUD_CSMS})))
    site_b = await world.actor(Peer("site-b", await world.endpoint("b"),
                                    roles=RoleDirectory({"cloud": Role.CLOUD_CSMS})))
    await site_a.request("cloud", JoinNetworkRequest(role=Role.LOCAL_CSMS,
                                                     proof=join_proof("a", "site-a", "cloud"),
                                                     trees=[info("cs-1")]))
    # site b claims a's station: its join goes through, the claim does not
    await site_b.request("cloud", JoinNetworkRequest(role=Role.LOCAL_CSMS,
                                                     proof=join_proof("b", "site-b", "cloud"),
                                                     trees=[info("cs-1"), info("cs-2")]))
    assert cloud.copies.replicas["stations/cs-1"].source == "site-a"
    assert cloud.copies.replicas["stations/cs-2"].source == "site-b"
    assert cloud.own.counters["rejected_claims"] == 1
    assert cloud.own.tree.get("managed/cs-1/site") == "site-a"

    # nor can it slip the station in as an update, write to it through the cloud, or set the
    # cloud's policy; and it is refused with ACCESS_DENIED, not told to join again
    with pytest.raises(ModelError) as refused:
        await site_b.request("cloud", PropertyValueWrite(
            tree=KeyPath("stations", "cs-1"),
            writes=[WriteItem(path=KeyPath.parse("permissions/may_charge"), value=False)]))
    assert refused.value.code is ErrorCode.ACCESS_DENIED
    with pytest.raises(ModelError) as refused:
        await site_b.request("cloud", PropertyValueWrite(
            writes=[WriteItem(path=KeyPath.parse("policy/may_charge"), value=False)]))
    assert refused.value.code is ErrorCode.ACCESS_DENIED
    site_b.send("cloud", PropertyValueUpdate(tree=KeyPath("stations", "cs-1"), epoch=1,
                                             from_revision=1, to_revision=2))
    await until(lambda: cloud.own.counters["rejected_claims"] == 2, "the second claim refused")
    assert cloud.copies.replicas["stations/cs-1"].source == "site-a"
    assert cloud.own.tree.get("policy/may_charge") is True


async def test_station_ids_that_cannot_be_addresses_are_refused(world: World) -> None:
    cloud = await world.actor(CloudCsms(
        "cloud", await world.endpoint("cloud"), store=await world.store("cloud"),
        settings=CloudSettings(site_secrets={"site-a": "a"})))
    site_a = await world.actor(Peer("site-a", await world.endpoint("a")))
    bad = TreeInfo(tree=KeyPath("stations", "x/../y"), epoch=1, revision=1,
                   root_digest=bytes(16))
    await site_a.request("cloud", JoinNetworkRequest(role=Role.LOCAL_CSMS,
                                                     proof=join_proof("a", "site-a", "cloud"),
                                                     trees=[bad, info("cs-9")]))
    assert list(cloud.copies.replicas) == ["stations/cs-9"]


async def site(world: World, *, stations: int = 2, policy_check_s: float = 30.0,
               site_clock: Clock | None = None
               ) -> tuple[LocalCsms, Upstream, list[ChargingStation]]:
    """A local CSMS whose 'cloud' is a bare peer recording what is relayed to it, and its
    stations (not ticking: only what a test writes changes)."""
    cloud = await world.actor(Upstream("cloud", await world.endpoint("cloud"),
                                       roles=RoleDirectory({"local": Role.LOCAL_CSMS})))
    local = await world.actor(LocalCsms(
        "local", await world.endpoint("local"), store=await world.store("local"),
        site_clock=site_clock,
        settings=LocalSettings(site="s", provisioning_secret="p", cloud="cloud",
                               upstream_secret="u", policy_check_s=policy_check_s,
                               operators=("operator",))))
    host = await world.endpoint("host")
    store = await world.store("stations")
    built = []
    for i in range(stations):
        hardware = SimulatedStation()
        hardware.paused = True
        station = ChargingStation(f"cs-{i}", host, store=store, hardware=hardware,
                                  settings=StationSettings(
                                      csms="local", provisioning_secret="p",
                                      publish_interval_s=0.01,
                                      trusted={"operator": Role.OPERATOR}))
        built.append(await world.actor(station))
    await until(lambda: local.upstream_joined() and all(s.admitted for s in built)
                and all(local.copies.replicas[f"stations/{s.address}"].synced for s in built)
                and not local.copies.resync.busy, "the site to settle")
    return local, cloud, built


async def test_a_copy_that_drifted_is_noticed_at_the_next_update_and_resynchronised(
        world: World) -> None:
    local, _, (station, _) = await site(world)
    copy = local.copies.replicas["stations/cs-0"].tree
    rev = copy.revision
    # the copy goes wrong without its revision moving (a bug, a bad disk)
    copy.adopt(epoch=copy.epoch, revision=rev,
               upserts=[(KeyPath.parse("identity/display_name"), rev, "garbage")])
    assert station.tree is not None and copy.digest() != station.tree.digest(visible=True)
    station.tree.write("identity/location/latitude", 12.5)  # any change: its update checks
    await until(lambda: copy.digest() == station.tree.digest(visible=True),  # type: ignore[union-attr]
                "the drifted copy repaired")
    assert local.own.counters["drifts"] == 1
    assert copy.get("identity/display_name") == station.tree.get("identity/display_name")


async def test_updates_go_upstream_in_order_and_only_once_durable(world: World) -> None:
    local, cloud, (station, other) = await site(world)
    assert station.tree is not None and other.tree is not None
    cloud.updates.clear()
    for i in range(30):
        (station if i % 2 else other).tree.write(  # type: ignore[union-attr]
            "identity/location/latitude", float(i))
        await asyncio.sleep(0.003)  # pacing, not a wait: writes spread over many publish intervals
    await until(lambda: local.copies.replicas["stations/cs-0"].tree.revision == station.tree.revision
                and local.copies.replicas["stations/cs-1"].tree.revision == other.tree.revision,
                "the local copies")
    await local.stop()  # flushes the relay queue
    for name, tree in (("cs-0", station.tree), ("cs-1", other.tree)):
        relayed = [u for u in cloud.updates if u.tree == KeyPath("stations", name)
                   and u.to_revision > u.from_revision]
        assert relayed, name
        # a chain, in order, ending where the station is
        for before, after in itertools.pairwise(relayed):
            assert after.from_revision == before.to_revision
        assert relayed[-1].to_revision == tree.revision
        assert relayed[-1].root_digest == tree.digest(visible=True)
    # and each relayed revision is in the local's store
    async with TreeStore(world.root / "local.db") as reopened:
        for name, tree in (("cs-0", station.tree), ("cs-1", other.tree)):
            stored = await reopened.load(f"stations/{name}", PermissiveSchema())
            assert stored is not None and stored.revision == tree.revision


async def test_site_policy_is_given_back_to_a_station_that_lost_it(world: World) -> None:
    _, _, (station, _) = await site(world, policy_check_s=0.1)
    assert station.tree is not None and station.tree.get("permissions/may_charge") is True
    # someone trusted switches charging off at the station itself, behind the site's back
    operator = await world.actor(Peer("operator", await world.endpoint("operator")))
    await operator.request("cs-0", PropertyValueWrite(
        writes=[WriteItem(path=KeyPath.parse("permissions/may_charge"), value=False)]))
    assert station.tree.get("permissions/may_charge") is False
    await until(lambda: station.tree.get("permissions/may_charge") is True,  # type: ignore[union-attr]
                "the site's permission restored")


async def test_a_csms_whose_stored_copy_is_corrupt_starts_and_fetches_it_afresh(
        world: World, caplog: pytest.LogCaptureFixture) -> None:
    local, _, (station, other) = await site(world)
    await local.stop()
    with sqlite3.connect(world.root / "local.db") as raw:  # a bad disk, between two runs
        raw.execute("UPDATE snapshots SET data = x'6c03' WHERE key = 'stations/cs-0'")
    again = await world.actor(LocalCsms(
        "local", await world.endpoint("local-again"), store=local.store, settings=local.settings))
    for s in (station, other):
        await until(lambda s=s: again.copies.replicas[f"stations/{s.address}"].tree.digest()
                    == s.tree.digest(visible=True), f"{s.address}'s copy")  # type: ignore[union-attr]
    assert again.copies.replicas["stations/cs-1"].tree.epoch == other.tree.epoch  # type: ignore[union-attr]
    assert "'stations/cs-0' is corrupt" in caplog.text


class Watcher(Peer):
    """An operator that watches a task and keeps its reports."""

    role = Role.OPERATOR

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.reports: list[MonitoringReport] = []

    @handles(MonitoringReport)
    async def on_report(self, report: MonitoringReport, ctx: Context) -> None:
        self.reports.append(report)


async def test_a_site_planning_in_its_own_time_still_relays_in_wall_time(world: World) -> None:
    """The demo runs a site's energy planning faster than the wall clock; what the local CSMS
    relays must still expire by the wall clock, or reports die on the way."""
    ahead = FakeClock(WALL_CLOCK.now_us() + 86_400_000_000)  # a day ahead of the wall
    local, _, (station, _) = await site(world, site_clock=ahead)
    assert local.energy.clock is ahead and local.clock is not ahead
    watcher = await world.actor(Watcher("operator", await world.endpoint("operator")))
    power = "evse/1/meter/obis:1-0:16.7.0"
    await watcher.request("local", MonitoringTaskSetup(
        tree=KeyPath("stations", "cs-0"), task="power", selectors=[KeyPattern.parse(power)],
        reporter=ReporterConfig(interval_s=1, priority=2)))
    assert station.tree is not None
    station.tree.write(power, 3_700.0)
    await until(lambda: any(s[2] == 3_700.0 for r in watcher.reports for s in r.samples),
                "the report relayed to the operator")


class FanOutSite(Peer):
    """A site that answers a fan-out for the stations it is asked about (all it ``has`` when
    none are named), and also claims an answer for ``forges`` (another site's station)."""

    def __init__(self, *args: Any, has: tuple[str, ...], forges: str = "",
                 **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.has, self.forges = has, forges
        self.asked: list[FanOutRequest] = []

    @handles(FanOutRequest)
    async def on_fan_out(self, message: FanOutRequest, ctx: Context) -> FanOutResponse:
        self.asked.append(message)
        stations = [*(message.stations or self.has), *([self.forges] if self.forges else [])]
        return FanOutResponse(results=[FanOutResult(station=s, text=f"by {self.address}")
                                       for s in stations])


async def test_a_fan_out_reaches_each_site_once_and_no_site_answers_for_anothers(
        world: World) -> None:
    await world.actor(CloudCsms(
        "cloud", await world.endpoint("cloud"), store=await world.store("cloud"),
        settings=CloudSettings(site_secrets={"site-a": "a", "site-b": "b"},
                               operators=["op"])))
    directory = RoleDirectory({"cloud": Role.CLOUD_CSMS})
    site_a = await world.actor(FanOutSite("site-a", await world.endpoint("a"), roles=directory,
                                          has=("cs-1", "cs-2"), forges="cs-3"))
    site_b = await world.actor(FanOutSite("site-b", await world.endpoint("b"), roles=directory,
                                          has=("cs-3",)))
    await site_a.request("cloud", JoinNetworkRequest(role=Role.LOCAL_CSMS,
                                                     proof=join_proof("a", "site-a", "cloud"),
                                                     trees=[info("cs-1"), info("cs-2")]))
    await site_b.request("cloud", JoinNetworkRequest(role=Role.LOCAL_CSMS,
                                                     proof=join_proof("b", "site-b", "cloud"),
                                                     trees=[info("cs-3")]))
    op = await world.actor(Peer("op", await world.endpoint("op")))
    item = PropertyValueWrite(writes=[WriteItem(path=KeyPath.parse(
        "evse/1/permissions/max_power_w"), value=1.0)])

    answer = await op.request("cloud", FanOutRequest(stations=["cs-3", "cs-1", "cs-9", "cs-1"],
                                                     item=item))
    assert isinstance(answer, FanOutResponse)
    assert [(r.station, r.error, r.text) for r in answer.results] == [
        ("cs-1", None, "by site-a"),
        ("cs-3", None, "by site-b"),  # not site-a's forged answer for it
        ("cs-9", ErrorCode.UNKNOWN_PATH, "cloud manages no such station")]
    assert [m.stations for m in site_a.asked] == [["cs-1"]]
    assert [m.stations for m in site_b.asked] == [["cs-3"]]

    # a whole site: its local CSMS is asked once, for all it has
    answer = await op.request("cloud", FanOutRequest(site="site-a", item=item))
    assert isinstance(answer, FanOutResponse)
    assert [r.station for r in answer.results] == ["cs-1", "cs-2"]
    assert site_a.asked[-1].stations == [] and len(site_b.asked) == 1

    # a stranger is refused outright, and no site hears of it
    stranger = await world.actor(Peer("stranger", await world.endpoint("x")))
    with pytest.raises(ModelError) as refused:
        await stranger.request("cloud", FanOutRequest(item=item))
    assert refused.value.code is ErrorCode.ACCESS_DENIED
    assert len(site_a.asked) == 2 and len(site_b.asked) == 1


# -- joining with a proof of the provisioning secret (issue 14, hole 7) -------------------------


class Joiner(Peer):
    role = Role.STATION


async def test_a_site_admits_only_a_proof_of_its_secret_and_never_without_one(
        world: World) -> None:
    """Hole 7: a local CSMS with no provisioning_secret admitted a station presenting an
    empty one; the secret travelled in clear and was compared in non-constant time."""
    open_site = await world.actor(LocalCsms(
        "open", await world.endpoint("open"), store=await world.store("open"),
        settings=LocalSettings(site="o")))
    local = await world.actor(LocalCsms(
        "local", await world.endpoint("local"), store=await world.store("local"),
        settings=LocalSettings(site="s", provisioning_secret="p")))
    station = await world.actor(Joiner("cs-1", await world.endpoint("cs-1")))
    thief = await world.actor(Joiner("cs-2", await world.endpoint("cs-2")))

    async def join(who: Joiner, csms: str, **fields: Any) -> ErrorCode | None:
        try:
            await who.request(csms, JoinNetworkRequest(role=Role.STATION, **fields))
        except ModelError as exc:
            return exc.code
        return None

    # a CSMS given no secret admits nobody, whatever is presented
    for fields in ({}, {"proof": join_proof("", "cs-1", "open")}, {"secret": ""}):
        assert await join(station, "open", **fields) is ErrorCode.NOT_ADMITTED
    # the secret in clear is refused even when it is right: it must never travel
    assert await join(station, "local", secret="p") is ErrorCode.NOT_ADMITTED
    # a proof made for another station, another CSMS or with another secret does not admit
    assert await join(thief, "local", proof=join_proof("p", "cs-1", "local")) \
        is ErrorCode.NOT_ADMITTED
    assert await join(station, "local", proof=join_proof("p", "cs-1", "open")) \
        is ErrorCode.NOT_ADMITTED
    assert await join(station, "local", proof=join_proof("q", "cs-1", "local")) \
        is ErrorCode.NOT_ADMITTED
    assert local.own.counters["rejected_joins"] == 4  # a metric, published as counters/...
    assert "cs-1" not in local.copies.stations
    assert await join(station, "local", proof=join_proof("p", "cs-1", "local")) is None
    assert "cs-1" in local.copies.stations and open_site.copies.stations == []


def test_a_join_proof_binds_the_secret_to_both_ends_and_hides_it() -> None:
    from actors.logic.join_proof import proves

    proof = join_proof("s3cret", "cs-1", "local")
    assert len(proof) == 32 and b"s3cret" not in proof
    assert proves("s3cret", proof, "cs-1", "local")
    assert not proves("s3cret", proof, "cs-1", "locals")
    assert not proves("s3cret", proof, "cs-10", "local")
    assert not proves("", join_proof("", "cs-1", "local"), "cs-1", "local")
    assert not proves("s3cret", b"", "cs-1", "local")
    # the fields are separated: moving a character across the boundary changes the proof
    assert join_proof("s", "cs-1a", "b") != join_proof("s", "cs-1", "ab")
