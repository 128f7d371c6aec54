"""Secrets sealed end to end to a station: what a writer seals, a station opens, and what
neither a relay nor another station can read, move or pass off in clear."""

from __future__ import annotations

import time
from pathlib import Path

import msgpack
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

from actors.app.commission import Commissioning
from actors.logic.sealed_values import (
    MAX_SEALED_ITEMS,
    is_secret,
    open_writes,
    recipient_of,
    refuse_clear_secrets,
    seal_writes,
    secret_paths,
    without_secrets,
)
from broker_bridge.codec import decode_body, encode_body
from broker_bridge.pki import CertificateAuthority
from broker_bridge.session.certificates import RevocationList
from broker_bridge.session.encryption import seal_value
from broker_bridge.session.signing import key_id
from keypath import KeyPath
from object_model import ErrorCode, ModelError
from object_model.messages import Batch, PropertyValueWrite, WriteItem
from object_model.station import new_station_tree, shared_station_schema
from object_model.tree import Write

SCHEMA = shared_station_schema()
STATION = "cs-site1-1"
SECRET = "network/profiles/0/wifi_password"


def write(path: str, value: object, *, text: bool = False) -> WriteItem:
    return WriteItem(path=KeyPath.parse(path), value=value, text=text)


def chain_for(tmp_path: Path, address: str, role: str, recipient: X25519PrivateKey | None,
              ) -> tuple[bytes, object]:
    trust = Commissioning(tmp_path / "trust")
    ca = CertificateAuthority(trust.site_ca("local-site1", "cs-site1-"))
    now = time.time_ns() // 1000
    cert = ca.certify(address, role, Ed25519PrivateKey.generate(),
                      None if recipient is None else recipient.public_key(),
                      lifetime_s=3_600, now_us=now)
    anchor = trust.root.certificate
    return msgpack.packb(ca.chain(cert, anchor)), anchor


def code_of(call: object) -> ErrorCode:
    with pytest.raises(ModelError) as info:
        call()  # type: ignore[operator]
    return info.value.code


def test_write_only_leaves_are_secrets_alone_or_inside_a_component() -> None:
    assert is_secret(SCHEMA, write(SECRET, "hunter2", text=True))
    assert is_secret(SCHEMA, write("network/profiles/1/apn_password", "pw"))
    assert is_secret(SCHEMA, write("network/profiles/0", {"wifi_password": "pw", "ssid": "x"}))
    assert not is_secret(SCHEMA, write("network/profiles/0", {"ssid": "x"}))
    assert not is_secret(SCHEMA, write("identity/display_name", "Bay 2"))
    assert not is_secret(SCHEMA, WriteItem(path=KeyPath.parse(SECRET), delete=True))
    assert not is_secret(SCHEMA, write("no/such/leaf", "x"))  # the tree refuses it


def test_a_sealed_secret_crosses_a_relay_unread_and_only_its_station_opens_it(
        tmp_path: Path) -> None:
    key = X25519PrivateKey.generate()
    shown, anchor = chain_for(tmp_path, STATION, "station", key)
    recipient = recipient_of(shown, STATION, [anchor], time.time_ns() // 1000)
    message = PropertyValueWrite(writes=[write(SECRET, "hunter2", text=True),
                                         write("identity/display_name", "Bay 2")])
    sealed = seal_writes(message, SCHEMA, STATION, recipient)
    # what a relay decodes: the path in clear (its access checks), the secret not
    relayed = decode_body("PropertyValueWrite", encode_body(sealed))
    assert b"hunter2" not in encode_body(sealed)
    assert isinstance(relayed, PropertyValueWrite)
    assert relayed.writes[0].sealed and str(relayed.writes[0].path) == SECRET
    assert relayed.writes[1] == message.writes[1]  # what is no secret stays as it was
    with pytest.raises(ModelError) as info:  # a tree without the key cannot apply it
        relayed.operations()
    assert info.value.code is ErrorCode.DECRYPTION_FAILED
    # the station opens it and applies it like any text write
    opened = open_writes(relayed, SCHEMA, STATION, key)
    assert isinstance(opened, PropertyValueWrite) and opened.writes[0] == message.writes[0]
    tree = new_station_tree(STATION)
    tree.apply(opened.operations(SCHEMA.parse_value))
    assert tree.get(SECRET) == "hunter2"
    # inside a batch too
    batch = open_writes(Batch(items=[relayed]), SCHEMA, STATION, key)
    assert isinstance(batch, Batch) and batch.items[0] == opened


def test_a_sealed_value_does_not_open_moved_altered_or_at_another_station(
        tmp_path: Path) -> None:
    key = X25519PrivateKey.generate()
    sealed = seal_writes(PropertyValueWrite(writes=[write(SECRET, "hunter2")]), SCHEMA, STATION,
                         key.public_key())
    item = sealed.writes[0]
    assert isinstance(item.value, bytes)
    moved = PropertyValueWrite(writes=[item.model_copy(update={
        "path": KeyPath.parse("network/profiles/1/apn_password")})])
    altered = PropertyValueWrite(writes=[item.model_copy(update={
        "value": item.value[:-1] + bytes([item.value[-1] ^ 1])})])
    for attempt in (moved, altered):
        assert code_of(lambda m=attempt: open_writes(m, SCHEMA, STATION, key)) \
            is ErrorCode.DECRYPTION_FAILED
    assert code_of(lambda: open_writes(sealed, SCHEMA, "cs-site1-2", key)) \
        is ErrorCode.DECRYPTION_FAILED
    assert code_of(lambda: open_writes(sealed, SCHEMA, STATION, X25519PrivateKey.generate())) \
        is ErrorCode.DECRYPTION_FAILED
    # a station without a key (a system that does not sign) cannot open it, and says so
    assert code_of(lambda: open_writes(sealed, SCHEMA, STATION, None)) \
        is ErrorCode.DECRYPTION_FAILED
    # a sealed write is bytes and deletes nothing, or it is no message at all
    for bad in ({"value": "hunter2"}, {"value": b"x", "delete": True}):
        with pytest.raises(ValueError):
            WriteItem(path=KeyPath.parse(SECRET), sealed=True, **bad)


def test_a_station_with_a_key_takes_secrets_only_sealed() -> None:
    key = X25519PrivateKey.generate()
    plain = PropertyValueWrite(writes=[write("network/profiles/0",
                                             {"ssid": "depot", "wifi_password": "pw"})])
    assert code_of(lambda: open_writes(plain, SCHEMA, STATION, key)) \
        is ErrorCode.SEALING_REQUIRED
    assert code_of(lambda: open_writes(Batch(items=[plain]), SCHEMA, STATION, key)) \
        is ErrorCode.SEALING_REQUIRED
    # without a key it is taken in clear; what is no secret is taken either way
    assert open_writes(plain, SCHEMA, STATION, None) is plain
    other = PropertyValueWrite(writes=[write("identity/display_name", "Bay 2")])
    assert open_writes(other, SCHEMA, STATION, key) is other


def test_the_key_to_seal_to_comes_only_from_a_trusted_chain_naming_that_station(
        tmp_path: Path) -> None:
    now = time.time_ns() // 1000
    shown, anchor = chain_for(tmp_path, STATION, "station", X25519PrivateKey.generate())
    reasons = {}
    for name, chain, address, anchors in (
            ("another station's", shown, "cs-site1-2", [anchor]),
            ("unknown root", shown, STATION, [Commissioning(tmp_path / "other").root.certificate]),
            ("nothing shown", b"", STATION, [anchor]),
            ("garbage", b"\xc1garbage", STATION, [anchor])):
        with pytest.raises(ModelError) as info:
            recipient_of(chain, address, anchors, now)
        assert info.value.code is ErrorCode.BAD_SIGNATURE, name
        reasons[name] = info.value.details.get("reason")
    assert reasons == {"another station's": "mismatch", "unknown root": "unknown_issuer",
                       "nothing shown": "missing", "garbage": "malformed"}
    keyless, keyless_anchor = chain_for(tmp_path / "b", STATION, "station", None)
    with pytest.raises(ModelError) as info:
        recipient_of(keyless, STATION, [keyless_anchor], now)
    assert info.value.details["reason"] == "no_recipient"
    rm, rm_anchor = chain_for(tmp_path / "c", "cs-site1-1", "resource_manager",
                              X25519PrivateKey.generate())
    with pytest.raises(ModelError) as info:
        recipient_of(rm, STATION, [rm_anchor], now)
    assert info.value.details["reason"] == "mismatch"  # a resource manager's, not a station's
    # what a copy holds and a writer reads: the leaf takes the chain as it is shown
    tree = new_station_tree(STATION)
    tree.apply([Write("security/certificate", shown)])
    key = recipient_of(tree.get("security/certificate"), STATION, [anchor], now)
    assert key.public_bytes_raw() == recipient_of(shown, STATION, [anchor], now).public_bytes_raw()


def test_what_a_station_opens_is_bounded_padded_and_only_ever_a_secret() -> None:
    key = X25519PrivateKey.generate()

    def sealed_item(path: str, value: object) -> WriteItem:
        return WriteItem(path=KeyPath.parse(path), sealed=True, value=seal_value(
            [value, False], key.public_key(), address=STATION, path=path))

    # its size does not tell the password's length
    short, long = (sealed_item(SECRET, text).value for text in ("a", "a" * 40))
    assert isinstance(short, bytes) and isinstance(long, bytes) and len(short) == len(long)
    # sealing hides nothing a relay should check: only secrets travel sealed
    hidden = PropertyValueWrite(writes=[sealed_item("identity/display_name", "Bay 2")])
    assert code_of(lambda: open_writes(hidden, SCHEMA, STATION, key)) \
        is ErrorCode.INVALID_MESSAGE
    # at most MAX_SEALED_ITEMS key agreements per write
    many = PropertyValueWrite(writes=[sealed_item(SECRET, "pw")] * (MAX_SEALED_ITEMS + 1))
    assert code_of(lambda: open_writes(many, SCHEMA, STATION, key)) is ErrorCode.INVALID_MESSAGE
    # a plaintext nested deeper than a value may be (anyone may seal to a station's key)
    deep: object = "pw"
    for _ in range(200):
        deep = [deep]
    assert code_of(lambda: open_writes(PropertyValueWrite(writes=[sealed_item(SECRET, deep)]),
                                       SCHEMA, STATION, key)) is ErrorCode.DECRYPTION_FAILED


def test_an_error_about_a_secret_never_repeats_it() -> None:
    """A sealed value of the wrong type: the tree's error would quote it, and the error goes
    back through the relays that were not to read it."""
    tree = new_station_tree(STATION)
    write_ = PropertyValueWrite(writes=[write("identity/display_name", 7),
                                        write(SECRET, 31415926)])
    with pytest.raises(ModelError) as info:
        tree.apply(write_.operations())
    assert "31415926" in str(info.value) + str(info.value.details)  # what the tree says
    scrubbed = without_secrets(info.value, secret_paths(SCHEMA, write_))
    assert scrubbed.code is ErrorCode.WRONG_TYPE
    assert "31415926" not in str(scrubbed) + str(scrubbed.details)
    # an error elsewhere keeps its words, not the list naming the secret's error
    with pytest.raises(ModelError) as info:
        tree.apply([Write("identity/display_name", 7), Write(SECRET, 31415926)])
    other = without_secrets(info.value, [KeyPath.parse(SECRET)])
    assert other.path == "identity/display_name" and not other.details
    assert without_secrets(info.value, []) is info.value


def test_a_relay_refuses_a_secret_in_clear_wherever_it_hides_in_the_write() -> None:
    for item in (write(SECRET, "pw"),
                 write("network/profiles/0", {"bogus": 1, "wifi_password": "pw"}),
                 write("network/profiles/0", {"wifi_password": "pw", "bogus": 1}),
                 write("network", {"profiles": {"2": {"apn_password": "pw"}}})):
        assert is_secret(SCHEMA, item), item
        with pytest.raises(ModelError) as info:
            refuse_clear_secrets(SCHEMA, [write("identity/display_name", "x"), item],
                                 STATION)
        assert info.value.code is ErrorCode.SEALING_REQUIRED
    refuse_clear_secrets(SCHEMA, [write("identity/display_name", "x")], STATION)
    # a member named by bytes is no path: refused as such, not a crash
    with pytest.raises(ModelError) as info:
        list(SCHEMA.expand(KeyPath.parse("network/profiles/0"), {b"wifi_password": "pw"}))
    assert info.value.code is ErrorCode.WRONG_TYPE


def test_a_revoked_station_key_is_not_sealed_to(tmp_path: Path) -> None:
    now = time.time_ns() // 1000
    trust = Commissioning(tmp_path / "trust")
    ca = CertificateAuthority(trust.site_ca("local-site1", "cs-site1-"))
    key = Ed25519PrivateKey.generate()
    cert = ca.certify(STATION, "station", key, X25519PrivateKey.generate().public_key(),
                      lifetime_s=3_600, now_us=now)
    shown = msgpack.packb(ca.chain(cert, trust.root.certificate))
    anchors = [trust.root.certificate]
    for revoked in (RevocationList.decode(trust.revocation_list(1, [STATION]), anchors),
                    RevocationList.decode(trust.revocation_list(
                        2, [], keys=[key_id(key.public_key())]), anchors)):
        with pytest.raises(ModelError) as info:
            recipient_of(shown, STATION, anchors, now, revoked)
        assert info.value.details["reason"] == "revoked"
    others = RevocationList.decode(trust.revocation_list(3, ["cs-site1-9"]), anchors)
    assert recipient_of(shown, STATION, anchors, now, others) is not None
