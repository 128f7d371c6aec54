"""Signed envelopes: an ``EnvelopeGuard`` that signs what its actors send and verifies what
they receive, end to end, whatever brokers and relays an envelope crossed.

Theory of operation
-------------------
*Signing.* Each local actor that has a key (Ed25519) signs every envelope it sends, its
session's acknowledgements and error reports too, over
``msgpack([CONTEXT, kid, envelope bytes without the signature])``: every header field
(version, id, source, destination, priority, timestamp, kind, flags, expiry, correlation,
stream, epoch, seq, base, encryption) and the body, under a context string of its own, so a
signature is good for this envelope only and for nothing else the project signs. ``kid`` is
the first 8 bytes of SHA-256 of the raw public key; the envelope's ``signature`` field holds
``kid || signature`` (72 bytes). An envelope too large for one frame travels in chunks,
each signed on its own (``seal_chunk``, its chunk position included) and checked before it
joins a reassembly (``open_chunk``); the whole is then opened as proven by its chunks
(encrypted bodies are sealed whole, before they are cut). A retransmission is sealed again
(its ``base`` may have moved). State and bulk envelopes of a link that speaks for one actor
may be left to their frame's signature instead (``sign_frame``, ``open_frame``).

*Verifying.* The receiver looks the ``kid`` up in its ``KeyDirectory``, which says whose key it
is: an envelope is refused (``BAD_SIGNATURE``) when its key is unknown, when the key belongs
to another actor than the ``source`` the envelope claims, when the signature does not verify,
and when it carries no signature although its source is known to sign (no downgrade). With
``require_signatures``, unsigned envelopes of unknown senders are refused as well.

*Replay.* Reliable envelopes are protected by their stream position (a replayed one is a
duplicate the session acknowledges again and never delivers twice). An unreliable envelope
must be fresh: its timestamp no more than ``max_age_us`` old nor ``max_skew_us`` ahead
(``STALE``), and its (sender, id) not seen within ``max_age_us`` (``REPLAYED``). The window of
ids is lost with the process, so the guard also keeps, per sender, the newest timestamp it
accepted (``marks``, which the endpoint persists in its outbox): after a restart, an
unreliable envelope stamped at or before its sender's mark is refused as ``REPLAYED`` (it, or
something newer, was taken before the restart). The endpoint commits the marks at most once a
second: a crash forgets at most the last second's.

*Answers.* A refused envelope's source is unproven, so a refusal is answered only for
``STALE`` (a genuine sender with a skewed clock learns why); ``BAD_SIGNATURE`` and
``REPLAYED`` are met with silence (an answer would tell an attacker which keys are known).

The guard is sans-IO like the session: keys and the directory are given, time is ``now``.
"""

from __future__ import annotations

import hashlib
from collections import OrderedDict
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Protocol

import msgpack
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey

from broker_bridge.codec import MANIFEST_VERSION, encode_envelope
from broker_bridge.envelope import Envelope, Priority, is_group
from broker_bridge.session.encryption import decrypt_body, encrypt_body
from object_model.errors import (
    BadSignatureError,
    DecryptionFailedError,
    ErrorCode,
    LimitExceededError,
    ModelError,
    ReplayedError,
    StaleError,
)

CONTEXT = b"csms63110/env-sig/1"
FRAME_CONTEXT = b"csms63110/frame-sig/1"
MAX_MANIFEST_BYTES = 512
FRAME_PRIORITIES = frozenset({Priority.STATE, Priority.BULK})
"""What a link that speaks for one actor leaves to its frames' signatures."""
KID_BYTES = 8
SIGNATURE_BYTES = KID_BYTES + 64
SECOND_US = 1_000_000


def key_id(key: Ed25519PublicKey) -> bytes:
    """The id a signature names its key by."""
    return hashlib.sha256(key.public_bytes_raw()).digest()[:KID_BYTES]


class KeyDirectory(Protocol):
    """Whose keys are whose: what a receiver knows about the senders it hears."""

    def owner(self, kid: bytes, now_us: int) -> tuple[str, Ed25519PublicKey] | None:
        """The actor a key belongs to, and the key; ``None`` for a key nobody vouched for
        (``BadSignatureError`` for one vouched for no longer: expired, revoked)."""
        ...

    def introduce(self, kid: bytes, envelope: Envelope, now_us: int) -> Introduction | None:
        """The key an envelope signed by the unknown ``kid`` vouches for itself (its body
        opened): a join's certificate or signing request; ``None`` if it does not."""
        ...

    def learn(self, chain: list[bytes], now_us: int) -> object:
        """Know the key of a checked ``chain`` from now on (once an envelope it introduced
        verified)."""
        ...

    def signs(self, address: str) -> bool:
        """Whether ``address`` signs what it sends (so it is never accepted unsigned)."""
        ...

    def recipient(self, address: str) -> X25519PublicKey | None:
        """The key bodies for ``address`` are sealed to, if it has one."""
        ...


@dataclass(frozen=True)
class Introduction:
    """How an envelope signed by an unknown key vouches for that key: by a certificate
    ``chain`` (learnt once the envelope verifies), or, with ``chain`` ``None``, by its
    signing request (good for that one envelope: enrollment)."""

    key: Ed25519PublicKey
    chain: list[bytes] | None = None


class StaticKeys:
    """A ``KeyDirectory`` of public keys given by address (from configuration)."""

    def __init__(self, keys: Mapping[str, Ed25519PublicKey] | None = None,
                 recipients: Mapping[str, X25519PublicKey] | None = None) -> None:
        self._by_kid: dict[bytes, tuple[str, Ed25519PublicKey]] = {}
        self._static: set[str] = set()  # addresses given a key here
        self._signers: set[str] = set()
        self._recipients: dict[str, X25519PublicKey] = dict(recipients or {})
        for address, key in (keys or {}).items():
            self.add(address, key)

    def add(self, address: str, key: Ed25519PublicKey,
            recipient: X25519PublicKey | None = None) -> None:
        self._by_kid[key_id(key)] = (address, key)
        self._signers.add(address)
        self._static.add(address)
        if recipient is not None:
            self._recipients[address] = recipient

    def recipient(self, address: str) -> X25519PublicKey | None:
        return self._recipients.get(address)

    def recipients_hex(self) -> dict[str, str]:
        """Every encryption key, by address: raw public keys in hex."""
        return {address: key.public_bytes_raw().hex()
                for address, key in self._recipients.items()}

    def owner(self, kid: bytes, now_us: int = 0) -> tuple[str, Ed25519PublicKey] | None:
        return self._by_kid.get(kid)

    def introduce(self, kid: bytes, envelope: Envelope, now_us: int) -> Introduction | None:
        return None

    def learn(self, chain: list[bytes], now_us: int) -> object:
        raise BadSignatureError("this directory trusts no certificates")

    def signs(self, address: str) -> bool:
        return address in self._signers

    def public_hex(self) -> dict[str, str]:
        """Every key, by address: raw public keys in hex."""
        return {address: key.public_bytes_raw().hex() for address, key in self._by_kid.values()}


def _frame_bytes(kid: bytes, destination: str, items: list[bytes]) -> bytes:
    """What a frame's manifest signs: the signer's key id, the destination, and the SHA-256
    of each envelope it covers, exactly as sent, in frame order."""
    return msgpack.packb([FRAME_CONTEXT, kid, destination,
                          [hashlib.sha256(item).digest() for item in items]],
                         use_bin_type=True)


def _signed_bytes(kid: bytes, env: Envelope) -> bytes:
    return msgpack.packb([CONTEXT, kid, encode_envelope(env._replace(signature=None))],
                         use_bin_type=True)


class SigningGuard:
    """See the module docstring. ``keys``: the private key of each local actor that signs."""

    authenticates = True
    _SILENT = frozenset({ErrorCode.BAD_SIGNATURE, ErrorCode.REPLAYED,
                         ErrorCode.LIMIT_EXCEEDED, ErrorCode.DECRYPTION_FAILED})

    def __init__(self, keys: Mapping[str, Ed25519PrivateKey], directory: KeyDirectory, *,
                 decryption_keys: Mapping[str, X25519PrivateKey] | None = None,
                 encrypt_kinds: frozenset[str] = frozenset(),
                 require_encryption: bool = False,
                 require_signatures: bool = False,
                 max_age_us: int = 120 * SECOND_US, max_skew_us: int = 30 * SECOND_US,
                 max_seen_per_sender: int = 100_000, frame_signing: bool | None = None
                 ) -> None:
        self._keys = {address: (key, key_id(key.public_key())) for address, key in keys.items()}
        # one signature per frame where the link speaks for one actor (a host of many
        # stations would need one per station in each frame: no saving)
        self.frame_signing = len(self._keys) == 1 if frame_signing is None else frame_signing
        self.frames_signed = self.frames_verified = 0
        self.directory = directory
        self._decryption_keys = dict(decryption_keys or {})
        self.encrypt_kinds = encrypt_kinds
        self.require_encryption = require_encryption
        self.require_signatures = require_signatures
        self.max_age_us, self.max_skew_us = max_age_us, max_skew_us
        self.max_seen_per_sender = max_seen_per_sender
        self._seen: dict[str, OrderedDict[bytes, int]] = {}  # sender -> id -> timestamp
        self._marks: dict[str, int] = {}  # sender -> newest timestamp accepted
        self._restored: dict[str, int] = {}  # the marks of before the last restart
        self._marks_changed = False
        self.signed = self.verified = self.encrypted = self.decrypted = 0

    # -- the guard ---------------------------------------------------------------------------

    def seal(self, envelope: Envelope, now: int) -> Envelope:
        own = self._keys.get(envelope.source)
        if own is None:
            return envelope
        if envelope.kind in self.encrypt_kinds and not is_group(envelope.destination):
            recipient = self.directory.recipient(envelope.destination)
            if recipient is not None:
                envelope = encrypt_body(envelope.with_changes(encryption=None), recipient)
                self.encrypted += 1
        if self._framed(envelope):
            return envelope.with_changes(signature=None)  # the frame's manifest covers it
        key, kid = own
        self.signed += 1
        signature = kid + key.sign(_signed_bytes(kid, envelope.with_changes(signature=None)))
        return envelope.with_changes(signature=signature)

    def seal_chunk(self, piece: Envelope) -> Envelope:
        """A piece of a large envelope, signed on its own (its chunk position included), so
        the receiver checks it before it joins a reassembly."""
        own = self._keys.get(piece.source)
        if own is None:
            return piece
        key, kid = own
        self.signed += 1
        return piece.with_changes(signature=kid + key.sign(
            _signed_bytes(kid, piece.with_changes(signature=None))))

    def open_chunk(self, piece: Envelope, now: int) -> str | None:
        """Check a piece before reassembly: the sender it is proven to come from, ``None``
        for an unsigned piece of a sender that may send unsigned; refused otherwise."""
        if piece.signature is None:
            if self.require_signatures or self.directory.signs(piece.source):
                raise BadSignatureError(f"an unsigned chunk claiming {piece.source!r}, who "
                                        "signs: refused")
            return None
        self._verify(piece, now)
        if not piece.reliable:
            self._fresh(piece, now, record=False)  # an old piece is no use: bounds only
        return piece.source

    def _framed(self, envelope: Envelope) -> bool:
        """Whether ``envelope`` is left to its frame's signature: state and bulk traffic of
        a link that speaks for one actor, in clear, to one receiver."""
        return (self.frame_signing and envelope.priority in FRAME_PRIORITIES
                and envelope.encryption is None and not is_group(envelope.destination))

    def sign_frame(self, destination: str, items: list[tuple[Envelope, bytes]]) -> list[bytes]:
        encoded = [data for _, data in items]
        signer = next((env.source for env, _ in items
                       if env.signature is None and env.source in self._keys), None)
        if signer is None:
            return encoded
        # one signer per frame: a guard that frame-signs speaks for one actor
        covered = [data for env, data in items
                   if env.signature is None and env.source == signer]
        key, kid = self._keys[signer]
        signature = key.sign(_frame_bytes(kid, destination, covered))
        self.frames_signed += 1
        self.signed += 1
        manifest = msgpack.packb([MANIFEST_VERSION, kid, destination, len(covered), signature],
                                 use_bin_type=True)
        return [manifest, *encoded]

    def open_frame(self, manifests: list[bytes], entries: list[tuple[bytes, Envelope | None]],
                   now: int) -> dict[int, str]:
        # one manifest per frame (a sender frame-signs for one actor), parsed strictly before
        # anything is spent on it: a frame of many forged manifests costs one look
        if len(manifests) != 1 or len(manifests[0]) > MAX_MANIFEST_BYTES:
            return {}
        try:
            _, kid, destination, count, signature = msgpack.unpackb(manifests[0])
        except Exception:  # not a manifest of ours: it proves nothing
            return {}
        if not (isinstance(kid, bytes) and len(kid) == KID_BYTES
                and isinstance(destination, str) and type(count) is int
                and 0 < count <= len(entries)
                and isinstance(signature, bytes) and len(signature) == 64):
            return {}
        try:
            known = self.directory.owner(kid, now)
        except ModelError:
            return {}  # a revoked or expired signer: its envelopes fail as unsigned
        if known is None:
            return {}
        signer, key = known
        indices = [i for i, (_, env) in enumerate(entries)
                   if env is not None and env.signature is None and env.source == signer
                   and env.destination == destination]
        if len(indices) != count:
            return {}
        try:
            key.verify(signature, _frame_bytes(kid, destination,
                                               [entries[i][0] for i in indices]))
        except InvalidSignature:
            return {}
        self.frames_verified += 1
        self.verified += 1
        return dict.fromkeys(indices, signer)

    def open(self, envelope: Envelope, now: int, *, framed_by: str | None = None) -> Envelope:
        signature = envelope.signature
        if signature is None:
            if framed_by is not None and framed_by == envelope.source:
                if not envelope.reliable:
                    self._fresh(envelope, now)
                return self._opened(envelope)
            if self.require_signatures or self.directory.signs(envelope.source):
                raise BadSignatureError(f"an unsigned envelope claiming {envelope.source!r}, "
                                        "who signs: refused")
            return self._opened(envelope)
        by_request = self._verify(envelope, now, introductions=True)
        if not envelope.reliable:
            # an enrollment's key is nobody's yet: it leaves no mark for its claimed source
            self._fresh(envelope, now, record=not by_request)
        return self._opened(envelope)

    def _verify(self, envelope: Envelope, now: int, *, introductions: bool = False) -> bool:
        """Check ``envelope``'s signature: a key vouched for, of the source it claims, over
        its exact header and body (``BAD_SIGNATURE`` otherwise). ``True`` when only its
        own signing request vouched for the key (an enrollment: that envelope only)."""
        signature = envelope.signature
        assert signature is not None
        if len(signature) != SIGNATURE_BYTES:
            raise BadSignatureError("a signature is a key id and an Ed25519 signature")
        kid = signature[:KID_BYTES]
        known = self.directory.owner(kid, now)
        introduced = None
        if known is None:
            introduced = self._introduced(kid, envelope, now) if introductions else None
            if introduced is None:
                raise BadSignatureError(f"signed by key {kid.hex()}, which nobody vouched "
                                        "for", details={"reason": "unknown_key"})
            if envelope.reliable:  # it must open no stream state for its claimed source
                raise BadSignatureError("a key introduced by its envelope signs unreliable "
                                        "joins only")
            known = (envelope.source, introduced.key)
        owner, key = known
        if owner != envelope.source:
            raise BadSignatureError(f"signed with {owner!r}'s key, claiming {envelope.source!r}")
        try:
            key.verify(signature[KID_BYTES:], _signed_bytes(kid, envelope))
        except InvalidSignature:
            raise BadSignatureError(f"the signature of {envelope.source!r} does not verify: "
                                    "the envelope was altered") from None
        self.verified += 1
        if introduced is not None and introduced.chain is not None:
            self.directory.learn(introduced.chain, now)  # only now that it verified
        return introduced is not None and introduced.chain is None

    def _introduced(self, kid: bytes, envelope: Envelope, now: int) -> Introduction | None:
        """The key of an unknown ``kid`` as the envelope vouches for it (a join: see
        ``KeyDirectory.introduce``); its body is opened to look, for joins to local actors
        only (nothing else costs a decryption before its signature is checked)."""
        if envelope.destination not in self._keys or envelope.kind != "JoinNetworkRequest":
            return None
        if envelope.encryption is not None:
            envelope = decrypt_body(envelope, self._decryption_keys.get(envelope.destination))
        return self.directory.introduce(kid, envelope, now)

    def _opened(self, envelope: Envelope) -> Envelope:
        """The envelope with its body decrypted (it was signed: its sender is proven)."""
        if envelope.encryption is not None:
            envelope = decrypt_body(envelope, self._decryption_keys.get(envelope.destination))
            self.decrypted += 1
        elif (self.require_encryption and envelope.kind in self.encrypt_kinds
              and envelope.destination in self._decryption_keys):
            raise DecryptionFailedError(f"a {envelope.kind} for {envelope.destination!r} "
                                        "arrived in clear: refused (it must be encrypted)")
        return envelope

    def answers(self, refusal: ModelError, envelope: Envelope) -> bool:
        return refusal.code not in self._SILENT

    def marks(self) -> dict[str, int] | None:
        if not self._marks_changed:
            return None
        self._marks_changed = False
        return dict(self._marks)

    def restore(self, marks: dict[str, int]) -> None:
        """Take ``marks`` (several sources add up: the outbox's, the actors' stores')."""
        for sender, stamp in marks.items():
            self._restored[sender] = max(stamp, self._restored.get(sender, -1))
            self._marks[sender] = max(stamp, self._marks.get(sender, 0))

    # -- replay --------------------------------------------------------------------------------

    def _fresh(self, envelope: Envelope, now: int, *, record: bool = True) -> None:
        """Refuse what is too old, too far ahead, or seen before; with ``record``, remember
        it (its id in the window, its time in its sender's mark)."""
        stamp = envelope.timestamp_us
        if stamp > now + self.max_skew_us:
            raise StaleError(f"timestamped {(stamp - now) / 1e6:.1f} s in the future: check "
                             "the sender's clock", details={"timestamp_us": stamp})
        if stamp < now - self.max_age_us:
            raise StaleError(f"timestamped {(now - stamp) / 1e6:.1f} s ago, more than "
                             f"{self.max_age_us / 1e6:g} s", details={"timestamp_us": stamp})
        if stamp <= self._restored.get(envelope.source, -1):
            raise ReplayedError(f"envelope {envelope.id.hex()[:12]} from {envelope.source!r} "
                                "is no newer than what was taken before a restart")
        if not record:
            return
        seen = self._seen.get(envelope.source)
        if seen is None:
            seen = self._seen[envelope.source] = OrderedDict()
        horizon = now - self.max_age_us
        while seen and next(iter(seen.values())) < horizon:
            seen.popitem(last=False)  # too old to be accepted again anyway
        if envelope.id in seen:
            raise ReplayedError(f"envelope {envelope.id.hex()[:12]} from "
                                f"{envelope.source!r} was seen before")
        if len(seen) >= self.max_seen_per_sender:
            raise LimitExceededError(f"{envelope.source!r} sent more than "
                                     f"{self.max_seen_per_sender} envelopes within "
                                     f"{self.max_age_us / 1e6:g} s")
        seen[envelope.id] = max(stamp, next(reversed(seen.values()), stamp))
        if stamp > self._marks.get(envelope.source, -1):
            self._marks[envelope.source] = stamp
            self._marks_changed = True


__all__ = ["CONTEXT", "KeyDirectory", "SigningGuard", "StaticKeys", "key_id"]
