"""Encrypted bodies: an envelope's body sealed to its receiver's X25519 key with HPKE
(RFC 9180, base mode: DHKEM(X25519, HKDF-SHA256), HKDF-SHA256, ChaCha20-Poly1305), so that
brokers (and anyone reading their traffic) carry what they cannot read.

HPKE's ``info`` binds the ciphertext to the envelope it travels in: the context string, id,
source, destination, kind, priority, timestamp, reliability, correlation and stream position
(not ``base``, which a retransmission may move), so a body cannot be moved into another
envelope. The envelope's ``encryption`` field says how its body is sealed (``SUITE``); the
signature (``broker_bridge.session.signing``) covers the sealed body and that field, and is
checked first. A single-shot seal costs one X25519 key agreement each way (measured here:
about 70 us to seal and 40 us to open a small body) and adds 48 bytes.

*Sealed values* go further than the hop: a secret written to a station (a Wi-Fi or APN
password) is sealed by its writer to the station's own key, so the CSMS relays it crosses pass
it on without reading it (they check the writer's rights by its key-path, which stays in
clear). Its ``info`` binds it to the station's address and the key-path it is written at, so a
relay can neither open it nor move it to another station or leaf.
"""

from __future__ import annotations

import msgpack
from cryptography.hazmat.primitives import hpke
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey

from broker_bridge.envelope import Envelope
from object_model.errors import DecryptionFailedError, LimitExceededError

CONTEXT = b"csms63110/env-enc/1"
VALUE_CONTEXT = b"csms63110/sealed-value/1"
MAX_SEALED_VALUE_BYTES = 16_384
MAX_SEALED_DEPTH = 8  # a component of leaves, or a leaf holding a small structure
VALUE_PADDING = 64
SUITE = b"\x01"  # HPKE base mode, X25519, HKDF-SHA256, ChaCha20-Poly1305
_HPKE = hpke.Suite(hpke.KEM.X25519, hpke.KDF.HKDF_SHA256, hpke.AEAD.CHACHA20_POLY1305)


def _info(env: Envelope) -> bytes:
    return msgpack.packb([CONTEXT, env.id, env.source, env.destination, env.kind,
                          int(env.priority), env.timestamp_us, env.reliable, env.correlation,
                          env.stream, env.stream_epoch, env.seq], use_bin_type=True)


def encrypt_body(env: Envelope, recipient: X25519PublicKey) -> Envelope:
    """``env`` with its body sealed to ``recipient``."""
    return env.with_changes(body=_HPKE.encrypt(env.body, recipient, info=_info(env)),
                            encryption=SUITE)


def decrypt_body(env: Envelope, key: X25519PrivateKey | None) -> Envelope:
    """``env`` with its body opened by ``key`` (``DecryptionFailedError`` when it is not
    ours, was altered, or was moved from another envelope)."""
    if env.encryption != SUITE:
        raise DecryptionFailedError("unknown encryption suite")
    if key is None:
        raise DecryptionFailedError(f"no key here to open a body for {env.destination!r}")
    try:
        body = _HPKE.decrypt(env.body, key, info=_info(env))
    except Exception:  # InvalidTag, or a ciphertext too short to hold the sender's key
        raise DecryptionFailedError("the body does not open with this receiver's key") from None
    return env.with_changes(body=body, encryption=None)


def _value_info(address: str, path: str) -> bytes:
    return msgpack.packb([VALUE_CONTEXT, address, path], use_bin_type=True)


def seal_value(value: object, recipient: X25519PublicKey, *, address: str, path: str) -> bytes:
    """``value`` (a plain value) sealed for the actor ``address`` holding ``recipient``'s
    private key, to be written at ``path`` of its tree; padded to a multiple of
    ``VALUE_PADDING`` bytes, so its size does not tell a password's length."""
    plain = msgpack.packb(value, use_bin_type=True)
    if len(plain) > MAX_SEALED_VALUE_BYTES:
        raise LimitExceededError(f"a sealed value holds at most {MAX_SEALED_VALUE_BYTES} bytes")
    plain += bytes(-len(plain) % VALUE_PADDING)
    return _HPKE.encrypt(plain, recipient, info=_value_info(address, path))


def _reject_ext(code: int, data: bytes) -> object:
    raise ValueError("no extension types in a sealed value")


def open_value(sealed: bytes, key: X25519PrivateKey, *, address: str, path: str) -> object:
    """The plain value ``seal_value`` sealed for ``address`` at ``path``
    (``DecryptionFailedError`` when it was sealed for another key, actor or path, or
    altered)."""
    if len(sealed) > MAX_SEALED_VALUE_BYTES + VALUE_PADDING + 48:  # HPKE: a key, a tag
        raise DecryptionFailedError("a sealed value too large to be one of ours")
    try:
        plain = _HPKE.decrypt(sealed, key, info=_value_info(address, path))
    except Exception:  # InvalidTag, or too short to hold the sender's key
        raise DecryptionFailedError(f"the value sealed for {path} does not open with "
                                    f"{address}'s key") from None
    unpacker = msgpack.Unpacker(raw=False, strict_map_key=True, ext_hook=_reject_ext,
                                max_buffer_size=len(plain))
    unpacker.feed(plain)
    try:
        value = unpacker.unpack()
        rest = plain[unpacker.tell():]
    except (ValueError, TypeError, msgpack.UnpackException, msgpack.OutOfData, RecursionError):
        raise DecryptionFailedError(f"the value sealed for {path} is not a value") from None
    if rest.strip(b"\x00") or not _plain(value, MAX_SEALED_DEPTH):
        raise DecryptionFailedError(f"the value sealed for {path} is not a value")
    return value


def _plain(value: object, depth: int) -> bool:
    """Whether ``value`` is a value a tree can take: scalars, lists, maps by text, at most
    ``depth`` deep."""
    if value is None or type(value) in (bool, int, float, str, bytes):
        return True
    if depth <= 0:
        return False
    if type(value) is list:
        return all(_plain(v, depth - 1) for v in value)
    if type(value) is dict:
        return all(type(k) is str and _plain(v, depth - 1) for k, v in value.items())
    return False


__all__ = ["CONTEXT", "MAX_SEALED_VALUE_BYTES", "SUITE", "VALUE_CONTEXT", "decrypt_body",
           "encrypt_body", "open_value", "seal_value"]
