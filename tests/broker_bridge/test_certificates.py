"""Actor certificates, revocation lists and the certificate directory
(``broker_bridge.session.certificates``), sans-IO: what a chain vouches for, what it must
not, and how a guard lets a join introduce its key."""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

import msgpack
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

from broker_bridge.codec import decode_envelope, encode_body, encode_envelope
from broker_bridge.envelope import Envelope, Priority
from broker_bridge.pki import CertificateAuthority, site_authority
from broker_bridge.session import SECOND
from broker_bridge.session.certificates import (
    CertificateDirectory,
    RevocationList,
    check_chain,
    make_request,
    read_request,
)
from broker_bridge.session.signing import SigningGuard
from object_model import ErrorCode
from object_model.access import Role
from object_model.errors import ModelError
from object_model.messages import JoinNetworkRequest

NOW = time.time_ns() // 1000  # when the CAs were made, on the wall clock (the fixture sets it:
# a CA is valid from five minutes before it is made, and the suite may take longer than that
# to come to this module after importing it)
DAY = 86_400


@dataclass
class Pki:
    root: CertificateAuthority
    site: CertificateAuthority
    other_root: CertificateAuthority

    def station(self, address: str, key: Ed25519PrivateKey, *, lifetime_s: float = DAY,
                now: int | None = None) -> list[bytes]:
        request = read_request(make_request(key, address,
                                            X25519PrivateKey.generate().public_key()))
        return self.site.chain(self.site.issue_actor(
            request, "station", lifetime_s=lifetime_s, now_us=NOW if now is None else now),
            self.root.certificate)


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    global NOW
    base: Path = tmp_path_factory.mktemp("pki")
    root = CertificateAuthority(base / "root", "operator root", path_length=1)
    made = Pki(root, site_authority(base / "site1", root, "local-site1", "cs-site1-"),
               CertificateAuthority(base / "other", "someone else's root", path_length=1))
    NOW = time.time_ns() // 1000
    return made


def reason(info: pytest.ExceptionInfo[ModelError]) -> str:
    assert info.value.code is ErrorCode.BAD_SIGNATURE
    return str(info.value.details.get("reason"))


def test_a_chain_names_its_actor_role_and_keys(pki: Pki) -> None:
    key = Ed25519PrivateKey.generate()
    credential = check_chain(pki.station("cs-site1-3", key), [pki.root.certificate], NOW)
    assert (credential.address, credential.role, credential.issuer) == (
        "cs-site1-3", "station", "local-site1")
    assert credential.key.public_bytes_raw() == key.public_key().public_bytes_raw()
    assert credential.recipient is not None
    assert credential.not_before_us < NOW < credential.renew_at_us < credential.not_after_us
    # a CSMS commissioned by the root shows its certificate alone
    csms = pki.root.certify("local-site1", "local_csms", Ed25519PrivateKey.generate(), None,
                            lifetime_s=DAY, now_us=NOW)
    assert check_chain(pki.root.chain(csms, pki.root.certificate),
                       [pki.root.certificate], NOW).role == "local_csms"


def test_chains_that_must_not_be_trusted_are_refused_with_their_reason(pki: Pki) -> None:
    key = Ed25519PrivateKey.generate()
    good = pki.station("cs-site1-3", key)
    anchors = [pki.root.certificate]
    mine = pki.other_root.certify("cs-site1-3", "station", key, None, lifetime_s=DAY,
                                  now_us=NOW)
    minted = pki.site.certify("cloud", "cloud_csms", key, None, lifetime_s=DAY, now_us=NOW)
    altered = bytearray(good[0])
    altered[-5] ^= 1
    cases = {
        "expired": (good, NOW + 2 * DAY * SECOND),
        "not_yet_valid": (good, NOW - DAY * SECOND),
        "unknown_issuer": ([mine], NOW),
        "role_not_allowed": ([minted, good[1]], NOW),  # a site CA minting a cloud CSMS
        "malformed": ([b"not a certificate"], NOW),
    }
    for expected, (chain, when) in cases.items():
        with pytest.raises(ModelError) as info:
            check_chain(chain, anchors, when)
        assert reason(info) == expected
    with pytest.raises(ModelError) as info:
        check_chain([bytes(altered), good[1]], anchors, NOW)
    assert reason(info) in ("unknown_issuer", "malformed")
    with pytest.raises(ModelError) as info:  # the site CA's own certificate as a leaf
        check_chain([good[1]], anchors, NOW)
    assert reason(info) == "malformed"


def test_a_request_proves_its_key_and_names_one_address() -> None:
    key = Ed25519PrivateKey.generate()
    request = make_request(key, "cs-1", X25519PrivateKey.generate().public_key())
    assert read_request(request).address == "cs-1"
    tampered = bytearray(request)
    tampered[tampered.index(b"cs-1") + 3] = ord("2")  # the name, after it was signed
    with pytest.raises(ModelError) as info:
        read_request(bytes(tampered))
    assert info.value.code in (ErrorCode.BAD_SIGNATURE, ErrorCode.INVALID_VALUE)
    with pytest.raises(ModelError):
        read_request(b"\x30\x03garbage")


def test_revocation_lists_are_signed_numbered_and_refuse_whom_they_name(pki: Pki) -> None:
    anchors = [pki.root.certificate]
    directory = CertificateDirectory(anchors)
    station_key = Ed25519PrivateKey.generate()
    station = directory.learn(pki.station("cs-site1-3", station_key), NOW)
    other = directory.learn(pki.station("cs-site1-4", Ed25519PrivateKey.generate()), NOW)
    assert directory.owner(station.kid, NOW) == ("cs-site1-3", station.key)
    wire = RevocationList.make(pki.root, 1, ["cs-site1-3"], NOW).encode()
    listed = RevocationList.decode(wire, anchors)
    assert directory.revoke(listed) and not directory.revoke(listed)  # only newer numbers
    with pytest.raises(ModelError) as info:
        directory.owner(station.kid, NOW)
    assert reason(info) == "revoked"
    assert directory.owner(other.kid, NOW) is not None
    with pytest.raises(ModelError) as info:  # its certificate shown again changes nothing
        directory.learn(pki.station("cs-site1-3", station_key), NOW)
    assert reason(info) == "revoked"
    # revoking a site takes every certificate its CA issued
    assert directory.revoke(RevocationList.make(pki.root, 2, ["local-site1"], NOW))
    with pytest.raises(ModelError):
        directory.owner(other.kid, NOW)
    # an older list cannot bring them back; forged and altered lists are refused
    assert not directory.revoke(RevocationList.make(pki.root, 1, [], NOW))
    with pytest.raises(ModelError):
        RevocationList.decode(RevocationList.make(pki.other_root, 9, [], NOW).encode(), anchors)
    with pytest.raises(ModelError):
        RevocationList.decode(wire.replace(b"cs-site1-3", b"cs-site1-9"), anchors)
    with pytest.raises(ModelError):
        RevocationList.decode(b"\x93\x01", anchors)
    # and an expired certificate's key is refused though it was learnt
    fresh = CertificateDirectory(anchors)
    short = fresh.learn(pki.station("cs-site1-5", Ed25519PrivateKey.generate(),
                                    lifetime_s=60), NOW)
    with pytest.raises(ModelError) as info:
        fresh.owner(short.kid, NOW + 61 * SECOND)
    assert reason(info) == "expired"


def _join(source: str, join: JoinNetworkRequest, n: int = 1) -> Envelope:
    return Envelope(id=n.to_bytes(16, "big"), source=source, destination="local-site1",
                    kind="JoinNetworkRequest", body=encode_body(join), reliable=False,
                    priority=Priority.CONTROL, timestamp_us=NOW)


def test_a_join_introduces_its_key_by_its_request_once_and_by_its_chain_for_good(
        pki: Pki) -> None:
    anchors = [pki.root.certificate]
    csms = SigningGuard({"local-site1": Ed25519PrivateKey.generate()},
                        CertificateDirectory(anchors), require_signatures=True)
    key = Ed25519PrivateKey.generate()
    station = SigningGuard({"cs-site1-3": key}, CertificateDirectory(anchors))
    enrolling = JoinNetworkRequest(role=Role.STATION, csr=make_request(key, "cs-site1-3"))
    assert csms.open(station.seal(_join("cs-site1-3", enrolling), NOW), NOW).kind == (
        "JoinNetworkRequest")
    # the request's key verified that join only: it is not certified
    update = Envelope(id=bytes(15) + b"\x09", source="cs-site1-3", destination="local-site1",
                      kind="PropertyTreeDiscoveryRequest", body=b"\x90", timestamp_us=NOW)
    with pytest.raises(ModelError) as info:
        csms.open(station.seal(update, NOW), NOW)
    assert reason(info) == "unknown_key"
    # a request for another address, or signed by another key, introduces nothing
    thief = SigningGuard({"cs-site1-3": Ed25519PrivateKey.generate()},
                         CertificateDirectory(anchors))
    for forged in (JoinNetworkRequest(role=Role.STATION, csr=make_request(key, "cs-site1-4")),
                   enrolling):
        with pytest.raises(ModelError) as info:
            csms.open(thief.seal(_join("cs-site1-3", forged, 2), NOW), NOW)
        assert reason(info) == "unknown_key"
    # a join showing its chain is learnt: what follows is taken
    rejoin = JoinNetworkRequest(role=Role.STATION, certificate=pki.station("cs-site1-3", key))
    csms.open(station.seal(_join("cs-site1-3", rejoin, 3), NOW), NOW)
    assert csms.open(station.seal(update, NOW), NOW).kind == "PropertyTreeDiscoveryRequest"


def test_a_signing_request_introduces_no_key_for_an_address_a_key_speaks_for(pki: Pki) -> None:
    """Found by review: a fresh key could sign as any actor through a join carrying a
    request for that address. Now a request introduces a key only for an address no valid
    key speaks for, only for an unreliable join, and it leaves no mark for that address."""
    anchors = [pki.root.certificate]
    directory = CertificateDirectory(anchors)
    csms = SigningGuard({"local-site1": Ed25519PrivateKey.generate()}, directory,
                        require_signatures=True)
    genuine_key = Ed25519PrivateKey.generate()
    directory.learn(pki.station("cs-site1-3", genuine_key), NOW)
    impostor = Ed25519PrivateKey.generate()
    forged = SigningGuard({"cs-site1-3": impostor}, CertificateDirectory(anchors)).seal(
        _join("cs-site1-3", JoinNetworkRequest(role=Role.STATION,
                                               csr=make_request(impostor, "cs-site1-3"))), NOW)
    with pytest.raises(ModelError) as info:
        csms.open(forged, NOW)
    assert reason(info) == "already_certified"
    # a newcomer's join is introduced, but a reliable one is not, and neither leaves a mark
    newcomer = Ed25519PrivateKey.generate()
    join = _join("cs-site1-8", JoinNetworkRequest(role=Role.STATION,
                                                  csr=make_request(newcomer, "cs-site1-8")))
    sealer = SigningGuard({"cs-site1-8": newcomer}, CertificateDirectory(anchors))
    with pytest.raises(ModelError):
        csms.open(sealer.seal(join._replace(reliable=True, stream="s", seq=1), NOW), NOW)
    future = join._replace(id=bytes(15) + b"\x42", timestamp_us=NOW + 20 * SECOND)
    csms.open(sealer.seal(future, NOW), NOW)
    assert csms.marks() is None  # nothing recorded for an address nobody vouched for


def test_a_site_ca_names_only_its_own_stations_and_cannot_take_over_an_address(
        pki: Pki) -> None:
    """Found by review: a site CA could issue a "station" certificate naming the cloud (or
    another site's station), and learning it rebound that address's keys."""
    anchors = [pki.root.certificate]
    key = Ed25519PrivateKey.generate()
    for address in ("cloud", "cs-site2-1", "operator"):
        chain = pki.site.chain(pki.site.certify(address, "station", key, None, lifetime_s=DAY,
                                                now_us=NOW), pki.root.certificate)
        with pytest.raises(ModelError) as info:
            check_chain(chain, anchors, NOW)
        assert reason(info) == "out_of_scope"
    directory = CertificateDirectory(anchors)
    cloud_key = Ed25519PrivateKey.generate()
    directory.learn(pki.root.chain(pki.root.certify("cs-site1-5", "resource_manager",
                                                    cloud_key, None, lifetime_s=DAY,
                                                    now_us=NOW), pki.root.certificate), NOW)
    with pytest.raises(ModelError) as info:  # another CA, another role, for the same name
        directory.learn(pki.station("cs-site1-5", key), NOW)
    assert reason(info) == "conflict"
    # an older chain shown again rolls nothing back
    station_key = Ed25519PrivateKey.generate()
    old = pki.station("cs-site1-6", station_key, now=NOW - 60 * SECOND)
    new = pki.station("cs-site1-6", station_key)
    learnt = directory.learn(new, NOW)
    directory.learn(old, NOW)
    assert directory.credential("cs-site1-6") == learnt
    assert directory.recipient("cs-site1-6") == learnt.recipient


def test_a_frame_with_forged_manifests_costs_one_look(pki: Pki) -> None:
    """Found by review: manifests were parsed loosely (an integer key id allocated that many
    bytes) and every manifest re-hashed every envelope."""
    key = Ed25519PrivateKey.generate()
    directory = CertificateDirectory([pki.root.certificate])
    directory.learn(pki.station("cs-site1-3", key), NOW)
    guard = SigningGuard({"local-site1": Ed25519PrivateKey.generate()}, directory)
    sender = SigningGuard({"cs-site1-3": key}, directory, frame_signing=True)
    envs = [sender.seal(Envelope(id=bytes([n]) * 16, source="cs-site1-3",
                                 destination="local-site1", kind="PropertyTreeDiscoveryRequest",
                                 body=b"\x90", priority=Priority.STATE, timestamp_us=NOW), NOW)
            for n in range(1, 4)]
    items = sender.sign_frame("local-site1", [(e, encode_envelope(e)) for e in envs])
    entries = [(raw, decode_envelope(raw)) for raw in items[1:]]
    assert guard.open_frame(items[:1], entries, NOW) == {0: "cs-site1-3", 1: "cs-site1-3",
                                                          2: "cs-site1-3"}
    assert guard.open_frame(items[:1] * 2, entries, NOW) == {}  # one manifest per frame
    for bomb in ([200, 1_000_000_000, "local-site1", 3, b""],
                 [200, b"\x00" * 8, "local-site1", 10**9, b"\x00" * 64],
                 [200, b"\x00" * 8, "local-site1", 3, 10**9]):
        assert guard.open_frame([msgpack.packb(bomb)], entries, NOW) == {}


def test_a_revoked_key_leaves_its_actor_free_to_enroll_with_a_new_one(pki: Pki) -> None:
    """Revocation by key id: the stolen key is refused everywhere the list reaches, and the
    station (whose address is not revoked) enrolls again with a new key."""
    anchors = [pki.root.certificate]
    directory = CertificateDirectory(anchors)
    csms = SigningGuard({"local-site1": Ed25519PrivateKey.generate()}, directory,
                        require_signatures=True)
    stolen = Ed25519PrivateKey.generate()
    old = directory.learn(pki.station("cs-site1-3", stolen), NOW)
    listed = RevocationList.make(pki.root, 1, [], NOW, keys=[old.kid])
    wire = listed.encode()
    assert RevocationList.decode(wire, anchors).keys == {old.kid}
    with pytest.raises(ModelError):  # the key list is signed too
        RevocationList.decode(wire.replace(old.kid, bytes(8)), anchors)
    assert directory.revoke(RevocationList.decode(wire, anchors))
    with pytest.raises(ModelError) as info:
        directory.owner(old.kid, NOW)
    assert reason(info) == "revoked"
    fresh = Ed25519PrivateKey.generate()
    join = _join("cs-site1-3", JoinNetworkRequest(role=Role.STATION,
                                                  csr=make_request(fresh, "cs-site1-3")))
    sealed = SigningGuard({"cs-site1-3": fresh}, CertificateDirectory(anchors)).seal(join, NOW)
    assert csms.open(sealed, NOW).kind == "JoinNetworkRequest"  # introduced: enrollment
    new = directory.learn(pki.station("cs-site1-3", fresh), NOW)
    assert directory.owner(new.kid, NOW) == ("cs-site1-3", new.key)
