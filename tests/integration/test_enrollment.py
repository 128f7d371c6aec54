"""Certificates in a running hierarchy, on real TLS brokers: stations enroll at their first
join with one-time tokens, renew before expiry, and a revocation list written at the cloud
reaches the site in one push and shuts the revoked station out there; a secret the operator
seals to a station crosses the site's CSMS unread. The cloud runs with a certificate directory
of its own, so what the site learns it learns from the push."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from actors.app.hierarchy import Hierarchy
from actors.app.signing import Signing
from actors.app.wiring import start_cloud
from actors.logic.sealed_values import CERTIFICATE_PATH, recipient_of, seal_writes
from actors.testing import until
from broker_bridge.codec import encode_body
from keypath import KeyPath
from object_model import ErrorCode, ModelError
from object_model.messages import (
    FanOutRequest,
    FanOutResponse,
    PropertyValueRead,
    PropertyValueReadResponse,
    PropertyValueWrite,
    WriteItem,
)
from object_model.station import shared_station_schema
from tests.integration.conftest import site_simulator

pytestmark = pytest.mark.broker

LIFETIME_S = 12.0
SECRET = "network/profiles/0/wifi_password"


@pytest.fixture
async def hierarchy(tmp_path: Path) -> AsyncIterator[Hierarchy]:
    h = await Hierarchy.start(tmp_path, signing=True, certificates=True)
    try:
        assert h.signing is not None and h.commissioning is not None
        cloud_signing = Signing(h.root / "keys", require=True, anchor=h.commissioning.anchor)
        h.cloud = await start_cloud(h.config, h.cloud_config(), signing=cloud_signing)
        h.signing.certificate_lifetime_s = LIFETIME_S
        await h.start_site(1, simulator=site_simulator(), seed=5)
        # the stations (and the operator's client) trust by a directory of their own: what
        # they refuse, they learnt themselves
        stations_signing = Signing(h.root / "keys", require=True,
                                   anchor=h.commissioning.anchor)
        h.site_signing, h.signing = h.signing, stations_signing
        await h.add_stations(1, [f"cs-site1-{k}" for k in (1, 2, 3)],
                             simulator=site_simulator(), seed=5)
        yield h
    finally:
        await h.close()


def site_directory_of(h: Hierarchy) -> object:
    return h.site_signing.certificates  # type: ignore[attr-defined]


def revocations(h: Hierarchy, number: int, *addresses: str) -> PropertyValueWrite:
    assert h.commissioning is not None
    return PropertyValueWrite(writes=[WriteItem(
        path=KeyPath.parse("security/revocations"),
        value=h.commissioning.revocation_list(number, addresses))])


async def test_stations_enroll_renew_and_a_revoked_one_is_shut_out_after_one_push(
        hierarchy: Hierarchy) -> None:
    h = hierarchy
    site = h.site(1)
    local = site.local_csms
    assert local.enroller is not None and h.signing is not None
    station_directory = h.signing.certificates
    assert station_directory is not None and station_directory is not site_directory_of(h)
    await until(lambda: all(s.admitted for s in site.stations), "the stations enrolled", 60)
    assert local.enroller.enrolled == 3 and local.enroller.refused == 0
    keys = h.signing.store.directory
    for station in site.stations:
        assert station.credentials is not None and station.credentials.credential is not None
        assert station.credentials.credential.issuer == "local-site1"
        assert (keys / f"{station.address}.chain").is_file()
        assert not (keys / f"{station.address}.token").exists()  # spent, and gone
    # each renews two thirds into its short life, without a token, and stays joined
    await until(lambda: local.enroller is not None and local.enroller.renewed >= 3,
                "every station renewed", 4 * LIFETIME_S)
    assert local.enroller.enrolled == 3 and local.enroller.refused == 0
    await until(h.cloud_consistent, "the cloud's copies", 60, every=0.2)

    # the operator revokes cs-site1-2 at the cloud: refused there at once, and at the site
    # as soon as the cloud's push arrives (the site's directory is not the cloud's)
    operator = await h.operator()
    site_directory = h.site_signing.certificates  # type: ignore[attr-defined]
    assert site_directory is not None and site_directory.revocations.number == 0
    await operator.request("cloud", revocations(h, 1, "cs-site1-2"), timeout=10)
    await until(lambda: site_directory.revocations.number == 1,
                "the site took the pushed list", 20)
    assert local.own.tree.get("security/revocation_number") == 1
    cloud = h.cloud_actor
    await until(lambda: cloud.own.tree.get("security/revocation_number") == 1,
                "the cloud's tree shows its list", 10)
    revoked = next(s for s in site.stations if s.address == "cs-site1-2")
    refused_before = local.endpoint.session.counters.refused_by_guard
    await until(lambda: local.endpoint.session.counters.refused_by_guard > refused_before,
                "the revoked station's envelopes refused at its site", 20)
    copy = local.copies.replicas["stations/cs-site1-2"]
    frozen = copy.tree.revision
    others = {r.key: r.tree.revision for r in local.copies.replicas.values()
              if r.key != copy.key}
    await until(lambda: all(local.copies.replicas[k].tree.revision > v
                            for k, v in others.items()), "the others still update", 20)
    assert copy.tree.revision == frozen and revoked.tree is not None
    assert revoked.tree.revision > frozen  # it lives on, unheard

    # an old, a repeated or a foreign list changes nothing, with a reason
    for number, code in ((1, ErrorCode.STALE), (0, ErrorCode.STALE)):
        with pytest.raises(ModelError) as info:
            await operator.request("cloud", revocations(h, number), timeout=10)
        assert info.value.code is code
    from actors.app.commission import Commissioning

    stranger = Commissioning(h.root / "someone-else").revocation_list(9, [])
    with pytest.raises(ModelError) as info:
        await operator.request("cloud", PropertyValueWrite(writes=[WriteItem(
            path=KeyPath.parse("security/revocations"), value=stranger)]), timeout=10)
    assert info.value.code is ErrorCode.BAD_SIGNATURE
    assert cloud.own.tree.get("security/revocation_number") == 1
    assert site_directory.revocations.number == 1

    # the stations got the list too (they hear the operator directly): a revoked operator
    # is refused at the cloud, at the site and at each station, after one push
    for station in site.stations:
        await until(lambda s=station: s.tree.get("security/revocation_number") == 1,
                    f"{station.address} took the list", 20)
    station = next(s for s in site.stations if s.address == "cs-site1-1")
    assert station.tree is not None
    expires = station.tree.get("security/certificate_expires_at")
    assert expires > 0 and station.tree.get("security/certificate_serial")
    read = PropertyValueRead(paths=[KeyPath.parse("identity/serial_number")])
    assert await operator.request("cs-site1-1", read, timeout=10)  # before
    await operator.request("cloud", revocations(h, 2, "cs-site1-2", "operator"), timeout=10)
    await until(lambda: station.tree.get("security/revocation_number") == 2,
                "the station took the second list", 20)
    await until(lambda: station_directory.revocations.number == 2,
                "the stations' own directory took it", 10)
    with pytest.raises(ModelError) as info:
        await operator.request("cs-site1-1", read, timeout=3)
    assert info.value.code is ErrorCode.TIMEOUT  # refused in silence


async def test_a_secret_written_at_the_cloud_crosses_the_site_sealed_to_its_station(
        hierarchy: Hierarchy, monkeypatch: pytest.MonkeyPatch) -> None:
    """The operator seals a Wi-Fi password to cs-site1-1's key, read from the certificate
    the station shows in the cloud's copy; the site's CSMS checks the path and passes it on
    unread; the station opens it. In clear, moved to another station or to another leaf, it
    is refused and nothing changes."""
    h = hierarchy
    site = h.site(1)
    local = site.local_csms
    await until(lambda: all(s.admitted for s in site.stations), "the stations enrolled", 60)
    await until(h.cloud_consistent, "the cloud's copies", 60, every=0.2)
    operator = await h.operator()
    assert h.commissioning is not None
    root = h.commissioning.root.certificate
    shown = await operator.request("cloud", PropertyValueRead(paths=[KeyPath.parse(
        f"stations/cs-site1-1/{CERTIFICATE_PATH}")]), timeout=10)
    assert isinstance(shown, PropertyValueReadResponse)
    recipient = recipient_of(shown.values[0][2], "cs-site1-1", [root], time.time_ns() // 1000)
    relayed: list[bytes] = []
    forward = local.trees.forward_write

    async def spy(replica: object, message: PropertyValueWrite, ctx: object) -> object:
        relayed.append(encode_body(message))  # all the site's CSMS ever has of it
        return await forward(replica, message, ctx)  # type: ignore[arg-type]

    monkeypatch.setattr(local.trees, "forward_write", spy)
    secret = PropertyValueWrite(writes=[WriteItem(path=KeyPath.parse(SECRET), value="hunter2")])
    sealed = seal_writes(secret, shared_station_schema(), "cs-site1-1", recipient)
    at_cloud = sealed.model_copy(update={"writes": [sealed.writes[0].model_copy(
        update={"path": KeyPath.parse(f"stations/cs-site1-1/{SECRET}")})]})
    await operator.request("cloud", at_cloud, timeout=10)
    station = next(s for s in site.stations if s.address == "cs-site1-1")
    assert station.tree is not None and station.tree.get(SECRET) == "hunter2"
    assert relayed and all(b"hunter2" not in body for body in relayed)

    other = next(s for s in site.stations if s.address == "cs-site1-2")
    assert other.tree is not None
    moved_station = at_cloud.model_copy(update={"writes": [at_cloud.writes[0].model_copy(
        update={"path": KeyPath.parse(f"stations/cs-site1-2/{SECRET}")})]})
    moved_leaf = at_cloud.model_copy(update={"writes": [at_cloud.writes[0].model_copy(
        update={"path": KeyPath.parse("stations/cs-site1-1/network/profiles/1/apn_password")})]})
    in_clear = PropertyValueWrite(writes=[WriteItem(
        path=KeyPath.parse(f"stations/cs-site1-1/{SECRET}"), value="swordfish")])
    for attempt, code in ((moved_station, ErrorCode.DECRYPTION_FAILED),
                          (moved_leaf, ErrorCode.DECRYPTION_FAILED)):
        with pytest.raises(ModelError) as info:
            await operator.request("cloud", attempt, timeout=10)
        assert info.value.code is code
    # in clear, alone or as a fan-out to every station: refused at the cloud, no further
    passed_on = len(relayed)
    with pytest.raises(ModelError) as info:
        await operator.request("cloud", in_clear, timeout=10)
    assert info.value.code is ErrorCode.SEALING_REQUIRED
    fan_out = await operator.request("cloud", FanOutRequest(item=PropertyValueWrite(writes=[
        WriteItem(path=KeyPath.parse(SECRET), value="swordfish")])), timeout=10)
    assert isinstance(fan_out, FanOutResponse) and len(fan_out.results) == 3
    assert {r.error for r in fan_out.results} == {ErrorCode.SEALING_REQUIRED}
    assert len(relayed) == passed_on
    assert station.tree.get(SECRET) == "hunter2"  # the station ticks on: its revision moves
    assert SECRET not in other.tree
