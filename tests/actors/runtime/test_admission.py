"""Admission under a storm: the token bucket on its own, the cloud CSMS admitting rejoining
sites through it, and a site coming back when it was told to. Time is a ``FakeClock``."""

from __future__ import annotations

from typing import Any

import pytest

from actors.csms.cloud import CloudCsms
from actors.csms.local import LocalCsms
from actors.csms.settings import CloudSettings, LocalSettings
from actors.logic.join_proof import join_proof
from actors.runtime.actor import Actor, Context, RoleDirectory, handles
from actors.runtime.services.admission import AdmissionLimiter
from actors.testing import FakeClock, World, until
from broker_bridge.clock import WALL_CLOCK
from keypath import KeyPath
from object_model import ErrorCode, ModelError, Role
from object_model.errors import BusyError
from object_model.messages import JoinNetworkRequest, JoinNetworkResponse, TreeInfo

# -- the bucket -----------------------------------------------------------------------------


def test_a_burst_is_admitted_then_the_rate_holds() -> None:
    bucket = AdmissionLimiter(10.0, 20.0, now=0.0)
    for _ in range(20):
        bucket.admit(1, 0.0)
    with pytest.raises(BusyError) as busy:
        bucket.admit(1, 0.0)
    assert busy.value.code is ErrorCode.BUSY
    assert busy.value.details["retry_after_s"] == pytest.approx(0.1)
    bucket.admit(1, 0.1)  # one token back after 0.1 s at 10/s
    with pytest.raises(BusyError):
        bucket.admit(1, 0.1)
    # never more than the burst, however long it rested
    assert bucket.tokens(1_000.0) == 20.0
    assert (bucket.stats.admitted, bucket.stats.refused, bucket.stats.cost_admitted) == (21, 2, 21)


def test_a_join_larger_than_the_burst_is_admitted_into_debt_and_the_rest_wait_it_out() -> None:
    bucket = AdmissionLimiter(100.0, 50.0, now=0.0)
    bucket.admit(501, 0.0)  # a site of 500 changed stations: never starved by its size
    assert bucket.tokens(0.0) == -451.0
    with pytest.raises(BusyError) as busy:
        bucket.admit(1, 1.0)
    # 351 still owed at 1 s: back when one token is there again
    assert busy.value.details["retry_after_s"] == pytest.approx(3.52)
    bucket.admit(1, 4.52)
    assert [(a.at, a.cost) for a in bucket.stats.recent] == [(0.0, 501), (4.52, 1)]


def test_no_rate_admits_everything_and_still_counts() -> None:
    bucket = AdmissionLimiter(None, 1.0)
    for _ in range(1000):
        bucket.admit(500, 0.0)
    assert bucket.stats.admitted == 1000 and bucket.stats.cost_admitted == 500_000


def test_nonsense_is_refused() -> None:
    with pytest.raises(ValueError):
        AdmissionLimiter(0.0, 10.0)
    with pytest.raises(ValueError):
        AdmissionLimiter(1.0, 0.5)
    with pytest.raises(ValueError):
        AdmissionLimiter(1.0, 1.0).admit(-1, 0.0)


# -- the cloud ------------------------------------------------------------------------------


class Site(Actor):
    """A bare site that joins when told to."""

    role = Role.LOCAL_CSMS


def trees(site: str, count: int, revision: int = 1) -> list[TreeInfo]:
    return [TreeInfo(tree=KeyPath("stations", f"cs-{site}-{i}"), epoch=1, revision=revision,
                     root_digest=bytes(16)) for i in range(count)]


async def test_the_cloud_admits_rejoining_sites_at_its_pace(world: World) -> None:
    clock = FakeClock(WALL_CLOCK.now_us())  # envelopes' expiry is checked on the wall clock
    names = ["a", "b", "c"]
    cloud = await world.actor(CloudCsms(
        "cloud", await world.endpoint("cloud"), store=await world.store("cloud"), clock=clock,
        settings=CloudSettings(site_secrets={n: n for n in names}, join_rate_per_s=10.0,
                               join_burst=10.0)))
    sites = {n: await world.actor(Site(n, await world.endpoint(n), clock=clock,
                                       roles=RoleDirectory({"cloud": Role.CLOUD_CSMS})))
             for n in names}

    async def join(name: str, count: int) -> JoinNetworkResponse | ModelError:
        try:
            answer = await sites[name].request("cloud", JoinNetworkRequest(
                role=Role.LOCAL_CSMS, proof=join_proof(name, name, "cloud"),
                trees=trees(name, count)))
        except ModelError as exc:
            return exc
        assert isinstance(answer, JoinNetworkResponse)
        return answer

    # a: 1 + 5 copies to resynchronise (6 of 10 tokens); b: 6 more, into debt (-2)
    assert isinstance(await join("a", 5), JoinNetworkResponse)
    assert isinstance(await join("b", 5), JoinNetworkResponse)
    refused = await join("c", 5)
    assert isinstance(refused, ModelError) and refused.code is ErrorCode.BUSY
    assert refused.details["retry_after_s"] == pytest.approx(0.3)
    # nothing of c was taken on: no copies, no resynchronisations, no role
    assert not any(key.startswith("stations/cs-c-") for key in cloud.copies.replicas)
    assert cloud.roles.role_of("c") is None
    assert cloud.own.counters["joins"] == 2

    clock.advance(0.29)
    assert isinstance(await join("c", 5), ModelError)
    clock.advance(0.01)
    assert isinstance(await join("c", 5), JoinNetworkResponse)
    assert cloud.admission.stats.admitted == 3 and cloud.admission.stats.refused == 2

    # a site that comes back with copies still behind pays for them again; one that
    # announces nothing to catch up pays only for itself
    clock.advance(10.0)
    cost = cloud.admission.stats.cost_admitted
    await join("a", 5)
    assert cloud.admission.stats.cost_admitted - cost == 6
    await join("b", 0)
    assert cloud.admission.stats.cost_admitted - cost == 7


class BusyCloud(Actor):
    """A cloud that says BUSY (come back in ``retry_after_s``) to the first ``refuse`` joins."""

    role = Role.CLOUD_CSMS

    def __init__(self, *args: Any, refuse: int, retry_after_s: float, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.refuse, self.retry_after_s = refuse, retry_after_s
        self.asked = 0

    @handles(JoinNetworkRequest)
    async def on_join(self, message: JoinNetworkRequest, ctx: Context) -> JoinNetworkResponse:
        self.asked += 1
        if self.asked <= self.refuse:
            raise BusyError("busy", details={"retry_after_s": self.retry_after_s})
        return JoinNetworkResponse(csms=self.address, heartbeat_s=30)


async def test_a_site_told_busy_comes_back_when_told_and_not_before(world: World) -> None:
    clock = FakeClock(WALL_CLOCK.now_us())
    cloud = await world.actor(BusyCloud("cloud", await world.endpoint("cloud"), clock=clock,
                                        roles=RoleDirectory({"local": Role.LOCAL_CSMS}),
                                        refuse=2, retry_after_s=5.0))
    local = await world.actor(LocalCsms(
        "local", await world.endpoint("local"), store=await world.store("local"), clock=clock,
        settings=LocalSettings(site="s", provisioning_secret="p", cloud="cloud",
                               upstream_secret="u")))
    assert local.upstream is not None
    await until(lambda: cloud.asked == 1 and clock.sleeping, "the first join refused")
    clock.advance(4.99)  # told 5 s: not before
    await until(lambda: clock.sleeping, "the site waiting")
    assert cloud.asked == 1
    clock.advance(5.02)  # within twice the time it was told
    await until(lambda: cloud.asked == 2, "the second join")
    clock.advance(10.01)
    await until(local.upstream_joined, "the site admitted on its third join")
    assert local.upstream.refusals == 2
