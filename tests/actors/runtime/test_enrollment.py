"""Enrollment at JoinNetwork (``actors.runtime.services.enrollment``), on a real SQLite book
and a fake clock: a token admits once, proofs bind the request, renewal needs no token, and
every refusal says why without issuing anything."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

from actors.app.commission import Commissioning
from actors.runtime.services.enrollment import Credentials, Enroller
from actors.runtime.storage.enrollment import EnrollmentBook
from actors.testing.clock import FakeClock
from broker_bridge.pki import CertificateAuthority
from broker_bridge.session.certificates import CertificateDirectory, make_request
from object_model import ErrorCode
from object_model.access import Role
from object_model.errors import ModelError
from object_model.messages import JoinNetworkRequest

CSMS = "local-site1"


class World:
    def __init__(self, base: Path) -> None:
        self.clock = FakeClock(time.time_ns() // 1000)
        self.trust = Commissioning(base / "trust")
        self.anchor = self.trust.root.certificate
        self.csms_directory = CertificateDirectory([self.anchor])
        self.book = EnrollmentBook(base / "enrollment.db", clock=self.clock)
        self.enroller = Enroller(CSMS, CertificateAuthority(self.trust.site_ca(CSMS, "cs-site1-")),
                                 self.anchor, self.csms_directory, self.book,
                                 lifetime_s=3_600, clock=self.clock)
        self.base = base
        self.ids = 0

    def member(self, address: str, folder: str = "station") -> Credentials:
        return Credentials(address, Ed25519PrivateKey.generate(),
                           X25519PrivateKey.generate(),
                           CertificateDirectory([self.anchor]), self.base / folder,
                           clock=self.clock)

    async def token(self, member: Credentials, **options: float) -> str:
        token = await self.book.add_token(member.address, **options)
        member.token_path.parent.mkdir(parents=True, exist_ok=True)
        member.token_path.write_text(token)
        return token

    async def join(self, member: Credentials, **fields: object) -> list[bytes]:
        self.ids += 1
        request = JoinNetworkRequest(role=Role.STATION,
                                     **(fields or member.join_fields(CSMS)))  # type: ignore[arg-type]
        return await self.enroller.admit(request, member.address, Role.STATION,
                                         self.ids.to_bytes(16, "big"))


@pytest.fixture
async def world(tmp_path: Path):  # type: ignore[no-untyped-def]
    w = World(tmp_path)
    await w.book.open()
    yield w
    await w.book.close()


async def refused(world: World, member: Credentials, **fields: object) -> str:
    with pytest.raises(ModelError) as info:
        await world.join(member, **fields)
    assert info.value.code is ErrorCode.NOT_ADMITTED
    return str(info.value.details["reason"])


async def test_a_token_enrolls_once_and_the_certificate_then_joins_and_renews(
        world: World) -> None:
    station = world.member("cs-site1-1")
    await world.token(station)
    chain = await world.join(station)
    station.take(chain)
    assert station.credential is not None and station.credential.address == "cs-site1-1"
    assert not station.token_path.exists() and station.chain_path.exists()
    assert world.csms_directory.credential("cs-site1-1") == station.credential
    # joining again shows the certificate: nothing issued, no token needed
    assert await world.join(station) == [] and world.enroller.enrolled == 1
    # a restarted station loads its chain from disk
    again = Credentials(station.address, station.key, station.recipient_key,
                        CertificateDirectory([world.anchor]), world.base / "station",
                        clock=world.clock)
    assert again.chain == station.chain
    # two thirds into its life it asks for the next one with the same key, no token
    world.clock.advance(0.7 * 3_600)
    fields = station.join_fields(CSMS)
    assert fields["csr"] and "proof" not in fields
    station.take(await world.join(station, **fields))
    assert world.enroller.renewed == 1
    assert station.credential.not_after_us > world.clock.now_us() + 3_000 * 1_000_000


async def test_a_spent_token_admits_nobody_else(world: World) -> None:
    genuine, thief = world.member("cs-site1-2"), world.member("cs-site1-2", "thief")
    token = await world.token(genuine)
    thief.token_path.parent.mkdir(parents=True, exist_ok=True)
    thief.token_path.write_text(token)  # stolen
    assert await world.join(thief)  # it works once...
    assert await refused(world, genuine) == "token_used"  # ...and the owner finds out
    assert world.enroller.refused == 1


async def test_proofs_bind_their_request_address_and_csms(world: World) -> None:
    station, other = world.member("cs-site1-3"), world.member("cs-site1-4")
    await world.token(station)
    await world.token(other)
    fields = station.join_fields(CSMS)
    # the proof with another request (another key): it named the first request only
    swapped = dict(fields, csr=make_request(Ed25519PrivateKey.generate(), "cs-site1-3"))
    assert await refused(world, station, **swapped) == "unknown"
    # a request for another address
    foreign = dict(fields, csr=make_request(station.key, "cs-site1-4"))
    assert await refused(world, station, **foreign) == "request_mismatch"
    # a proof made for another CSMS
    elsewhere = station.join_fields("local-site2")
    assert await refused(world, station, **elsewhere) == "unknown"
    # garbage where the request belongs, and nothing at all
    assert await refused(world, station, csr=b"\x30\x00", proof=fields["proof"]) == (
        "bad_request")
    assert await refused(world, station, proof=fields["proof"]) == "no_credentials"
    # none of that spent the token
    assert await world.join(station, **fields)


async def test_lapsed_tokens_replayed_requests_and_foreign_certificates_are_refused(
        world: World) -> None:
    late = world.member("cs-site1-5")
    await world.token(late, ttl_s=60)
    world.clock.advance(61)
    assert await refused(world, late) == "expired"
    # the same request (same message id) taken twice: the second is a replay
    station = world.member("cs-site1-6")
    await world.token(station)
    request = JoinNetworkRequest(role=Role.STATION, **station.join_fields(CSMS))  # type: ignore[arg-type]
    station.take(await world.enroller.admit(request, station.address, Role.STATION,
                                            b"\x01" * 16))
    await world.token(station)  # even with a fresh token
    with pytest.raises(ModelError) as info:
        await world.enroller.admit(request, station.address, Role.STATION, b"\x01" * 16)
    assert info.value.details["reason"] == "replayed"
    assert len(await world.book.issued(station.address)) == 1  # recorded with the token
    # a certificate shown by someone it does not name, or for another role
    other = world.member("cs-site1-7")
    assert await refused(world, other, certificate=station.chain) == "certificate_mismatch"
    with pytest.raises(ModelError) as info:
        await world.enroller.admit(JoinNetworkRequest(role=Role.RESOURCE_MANAGER,
                                                      certificate=station.chain),
                                   station.address, Role.RESOURCE_MANAGER, b"\x02" * 16)
    assert info.value.details["reason"] == "certificate_mismatch"


async def test_a_lost_answer_is_answered_again_and_no_foreign_certificate_renews(
        world: World) -> None:
    """Found by review: a lost JoinNetworkResponse stranded the station (its token spent, a
    retry taken for theft); any certified actor could renew itself into a station of the
    site without a token; a station certified by another site was admitted."""
    station = world.member("cs-site1-4")
    await world.token(station)
    fields = station.join_fields(CSMS)
    first = await world.join(station, **fields)  # ...and the answer is lost on the way
    # the CSMS restarts (its directory forgets the certificate), the station retries with a
    # new message id and the same key and token: it gets the certificate it was issued
    world.enroller.directory = world.csms_directory = CertificateDirectory([world.anchor])
    again = await world.join(station, **fields)
    assert again == first and world.enroller.enrolled == 2  # counted, not issued twice
    assert len(await world.book.issued(station.address)) == 1
    assert (world.base / "enrollment.db").stat().st_mode & 0o777 == 0o600
    # the operator's own (root) certificate does not renew into a station of this site
    operator_key = Ed25519PrivateKey.generate()
    chain = world.trust.root.chain(world.trust.root.certify(
        "cs-site1-5", "resource_manager", operator_key, None, lifetime_s=3_600,
        now_us=world.clock.now_us()), world.anchor)
    world.csms_directory.learn(chain, world.clock.now_us())
    other = Credentials("cs-site1-5", operator_key, None, CertificateDirectory([world.anchor]),
                        world.base / "other", clock=world.clock)
    assert await refused(world, other, csr=make_request(operator_key, "cs-site1-5"),
                         proof=b"") == "unknown"
    # a station certified by another site's CA is not one of ours
    elsewhere = CertificateAuthority(world.trust.site_ca("local-site2", "cs-site1-"))
    foreign_key = Ed25519PrivateKey.generate()
    foreign = elsewhere.chain(elsewhere.certify("cs-site1-6", "station", foreign_key, None,
                                                lifetime_s=3_600, now_us=world.clock.now_us()),
                              world.anchor)
    assert await refused(world, world.member("cs-site1-6"), certificate=foreign) == (
        "foreign_issuer")
