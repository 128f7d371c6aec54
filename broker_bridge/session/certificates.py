"""Actor certificates: whose signing key is whose, vouched for by the operator's root, and
the revocation lists that take it back.

Theory of operation
-------------------
*The chain* (issued by ``broker_bridge.pki``). The operator's root CA (P-256; ``root/trust`` of the demo, kept offline in a real
deployment) signs a CA certificate for each site, which that site's local CSMS issues with,
and the certificates of the actors it commissions itself: the cloud and local CSMSs and the
operators. A site CA issues the certificates of its stations (and resource manager) at
``JoinNetwork``, from a certificate signing request (``make_request``), so a station's private
key never leaves it. An actor certificate names one address (SAN URI
``urn:csms63110:actor:<address>``) and one role (a private extension), carries the actor's
Ed25519 envelope key as its subject key and its X25519 encryption key in a second private
extension, and is short-lived (renewed at two thirds of its life).

*Checking a chain* is our own code (``cryptography``'s path validation takes no Ed25519 leaf
key): the leaf is issued by a CA that the root issued, or by the root itself; every
certificate is valid now; the CA is a CA and the leaf is not; and a CA may issue only the
roles its certificate lists (``ISSUES_OID``): a site CA stations and resource managers, so a
compromised site cannot mint a cloud CSMS or an operator. Whatever fails is
``BAD_SIGNATURE`` with a reason in ``details`` (``expired``, ``unknown_issuer``,
``revoked``, ...).

*The directory.* ``CertificateDirectory`` is the ``KeyDirectory`` of a guard that trusts
certificates: it learns a chain (checked, then its key is known by its key id until the
certificate expires), refuses expired and revoked keys when asked who owns one, and lets a
``JoinNetworkRequest`` introduce the key it is signed with: by the chain it carries (a
member joining again), or by its signing request (enrollment: the request's key verifies
that one envelope, and is learnt only when the CSMS has issued its certificate).

*Revocation.* A ``RevocationList`` is signed by the root, numbered (a directory takes only a
higher number than it holds, so an old list cannot bring a revoked actor back) and names
revoked addresses; an actor whose address is listed is refused whatever certificate it
shows, and so is every certificate its CA issued (a revoked site's stations enroll again
under its new CA). The CSMSs publish the list they hold as a value of their trees and push it
down the hierarchy (``actors``); each directory takes it from there.

Sans-IO: time is passed in (``now_us``), nothing is read or written.
"""

from __future__ import annotations

import datetime
import hashlib
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Protocol

import msgpack
from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PublicKey
from cryptography.x509.oid import NameOID

from broker_bridge.codec import decode_body
from broker_bridge.envelope import Envelope, valid_address
from broker_bridge.session.signing import KID_BYTES, Introduction, StaticKeys, key_id
from object_model.errors import BadSignatureError, InvalidValueError, ModelError

_ARC = "2.25.292380950092930261446083924335227220439"  # a UUID-based arc of our own
ROLE_OID = x509.ObjectIdentifier(_ARC + ".1")
"""The role an actor certificate grants (UTF-8 text: ``station``, ``local_csms``, ...)."""
RECIPIENT_OID = x509.ObjectIdentifier(_ARC + ".2")
"""The actor's X25519 key (32 raw bytes) that bodies for it are sealed to."""
ISSUES_OID = x509.ObjectIdentifier(_ARC + ".3")
"""The roles a CA may issue (UTF-8, comma-separated)."""
SCOPE_OID = x509.ObjectIdentifier(_ARC + ".4")
"""The addresses a CA may issue: prefixes (UTF-8, comma-separated); a site CA's stations and
OCPP chargers, say ``cs-site1-,ocpp-site1-``."""
ACTOR_URI = "urn:csms63110:actor:"
SITE_ROLES = ("station", "resource_manager")
"""What a site's CA issues."""
ROOT_ROLES = ("local_csms", "cloud_csms", "operator", *SITE_ROLES)
REVOCATION_CONTEXT = b"csms63110/revocation-list/1"
MAX_CHAIN = 2  # a certificate and its site CA's (the root is the anchor)
MAX_CERTIFICATE_BYTES = 4096
_EPOCH = datetime.datetime(1970, 1, 1, tzinfo=datetime.UTC)
_DER = serialization.Encoding.DER


def _us(moment: datetime.datetime) -> int:
    return (moment - _EPOCH) // datetime.timedelta(microseconds=1)


def _moment(us: int) -> datetime.datetime:
    return _EPOCH + datetime.timedelta(microseconds=us)


def _refused(reason: str, text: str) -> BadSignatureError:
    return BadSignatureError(text, details={"reason": reason})


def _text_extension(oid: x509.ObjectIdentifier, text: str) -> x509.UnrecognizedExtension:
    return x509.UnrecognizedExtension(oid, text.encode("utf-8"))


def _extension(cert: x509.Certificate | x509.CertificateSigningRequest,
               oid: x509.ObjectIdentifier) -> bytes | None:
    try:
        value = cert.extensions.get_extension_for_oid(oid).value
    except x509.ExtensionNotFound:
        return None
    return value.value if isinstance(value, x509.UnrecognizedExtension) else None


def _named(cert: x509.Certificate | x509.CertificateSigningRequest) -> str | None:
    """The one actor address a certificate (or request) names, if it names exactly one."""
    try:
        alt = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return None
    uris = [u for u in alt.get_values_for_type(x509.UniformResourceIdentifier)
            if u.startswith(ACTOR_URI)]
    if len(uris) != 1:
        return None
    address = uris[0][len(ACTOR_URI):]
    return address if valid_address(address) else None


# -- requests and issuing -----------------------------------------------------------------------


@dataclass(frozen=True)
class CertificateRequest:
    """A checked signing request: who asks, for which keys; ``digest`` names its exact bytes
    (what an enrollment proof binds)."""

    address: str
    key: Ed25519PublicKey
    recipient: X25519PublicKey | None
    digest: bytes


def make_request(key: Ed25519PrivateKey, address: str,
                 recipient: X25519PublicKey | None = None) -> bytes:
    """A PKCS#10 request (DER) for ``address``'s ``key`` (and its encryption key),
    signed by that key: whoever sends it holds the key."""
    builder = (x509.CertificateSigningRequestBuilder()
               .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, address)]))
               .add_extension(x509.SubjectAlternativeName(
                   [x509.UniformResourceIdentifier(ACTOR_URI + address)]), critical=False))
    if recipient is not None:
        builder = builder.add_extension(
            x509.UnrecognizedExtension(RECIPIENT_OID, recipient.public_bytes_raw()),
            critical=False)
    return builder.sign(key, None).public_bytes(_DER)


def read_request(der: bytes) -> CertificateRequest:
    """The request in ``der``, its self-signature checked (``BAD_SIGNATURE``), or
    ``INVALID_VALUE`` for what is not a request of ours."""
    try:
        request = x509.load_der_x509_csr(der)
        key = request.public_key()
        address = _named(request)
        raw = _extension(request, RECIPIENT_OID)
        recipient = None if raw is None else X25519PublicKey.from_public_bytes(raw)
    except (ValueError, TypeError) as exc:
        raise InvalidValueError(f"not a certificate signing request: {exc}") from None
    if not isinstance(key, Ed25519PublicKey) or address is None:
        raise InvalidValueError("a signing request names one actor address for an Ed25519 key")
    if not request.is_signature_valid:
        raise _refused("invalid", f"the signing request for {address!r} is not signed by "
                       "its key")
    return CertificateRequest(address, key, recipient, hashlib.sha256(der).digest())


# -- checking ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Credential:
    """What a checked chain vouches for."""

    address: str
    role: str
    key: Ed25519PublicKey
    recipient: X25519PublicKey | None
    kid: bytes
    issuer: str  # the address of the site CSMS whose CA issued it; "" for the root
    not_before_us: int
    not_after_us: int

    @property
    def renew_at_us(self) -> int:
        """When to ask for the next one: two thirds into its life."""
        return self.not_before_us + (self.not_after_us - self.not_before_us) * 2 // 3


def _valid_at(cert: x509.Certificate, now_us: int, what: str) -> None:
    if now_us < _us(cert.not_valid_before_utc):
        raise _refused("not_yet_valid", f"{what} is not valid yet")
    if now_us > _us(cert.not_valid_after_utc):
        raise _refused("expired", f"{what} expired at {cert.not_valid_after_utc:%Y-%m-%d %H:%M:%S}")


def _issued_by(cert: x509.Certificate, issuer: x509.Certificate, what: str) -> None:
    try:
        cert.verify_directly_issued_by(issuer)
    except (ValueError, TypeError, InvalidSignature):
        raise _refused("unknown_issuer", f"{what} was not issued by a CA we trust") from None


def _is_ca(cert: x509.Certificate) -> bool:
    try:
        return bool(cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca)
    except x509.ExtensionNotFound:
        return False


def check_chain(chain: Sequence[object], anchors: Sequence[x509.Certificate],
                now_us: int) -> Credential:
    """What ``chain`` (leaf first, DER) vouches for, checked against the ``anchors`` (see the
    module docstring), or ``BAD_SIGNATURE`` with the reason."""
    raw = [c for c in chain if isinstance(c, bytes) and len(c) <= MAX_CERTIFICATE_BYTES]
    if len(raw) != len(chain) or not 1 <= len(raw) <= MAX_CHAIN:
        raise _refused("malformed", "a chain is a certificate and at most its CA's")
    try:
        certs = [x509.load_der_x509_certificate(c) for c in raw]
        leaf = certs[0]
        key = leaf.public_key()
        role_raw = _extension(leaf, ROLE_OID)
        recipient_raw = _extension(leaf, RECIPIENT_OID)
        recipient = (None if recipient_raw is None
                     else X25519PublicKey.from_public_bytes(recipient_raw))
    except (ValueError, TypeError) as exc:
        raise _refused("malformed", f"not a certificate: {exc}") from None
    address = _named(leaf)
    if not isinstance(key, Ed25519PublicKey) or address is None or role_raw is None:
        raise _refused("malformed", "an actor certificate names one address and one role "
                       "for an Ed25519 key")
    role = role_raw.decode("utf-8", "replace")
    if _is_ca(leaf):
        raise _refused("malformed", f"{address!r} shows a CA certificate as its own")
    _valid_at(leaf, now_us, f"the certificate of {address!r}")
    issuer_cert, issuer = leaf, ""
    if len(certs) == 2:
        ca = certs[1]
        _issued_by(leaf, ca, f"the certificate of {address!r}")
        if not _is_ca(ca):
            raise _refused("unknown_issuer", f"the issuer of {address!r} is not a CA")
        _valid_at(ca, now_us, f"the CA of {address!r}")
        allowed = (_extension(ca, ISSUES_OID) or b"").decode("utf-8", "replace").split(",")
        if role not in allowed:
            raise _refused("role_not_allowed", f"{address!r}'s CA may not issue the role "
                           f"{role!r}")
        scope = _extension(ca, SCOPE_OID)
        prefixes = [] if scope is None else [
            p for p in scope.decode("utf-8", "replace").split(",") if p]
        if not any(address.startswith(prefix) for prefix in prefixes):
            raise _refused("out_of_scope", f"{address!r} is outside what its CA may name")
        issuer = _named(ca) or ""
        if not issuer:
            raise _refused("unknown_issuer", f"the CA of {address!r} names no site")
        issuer_cert = ca
    else:
        if role not in ROOT_ROLES:
            raise _refused("role_not_allowed", f"unknown role {role!r}")
    for anchor in anchors:
        try:
            issuer_cert.verify_directly_issued_by(anchor)
        except (ValueError, TypeError, InvalidSignature):
            continue
        _valid_at(anchor, now_us, "the root")
        return Credential(address, role, key, recipient, key_id(key), issuer,
                          _us(leaf.not_valid_before_utc), _us(leaf.not_valid_after_utc))
    raise _refused("unknown_issuer", f"the certificate of {address!r} does not lead to a "
                   "root we trust")


# -- revocation ----------------------------------------------------------------------------------


class RootSigner(Protocol):
    """What signs a revocation list: the root CA (``broker_bridge.pki``)."""

    def sign_bytes(self, data: bytes) -> bytes: ...



@dataclass(frozen=True)
class RevocationList:
    """Revoked actor addresses, and revoked keys (by key id: a stolen key of an actor that
    enrolls again with a new one), numbered and signed by the root (see the module
    docstring)."""

    number: int
    issued_us: int
    addresses: frozenset[str]
    signature: bytes = b""
    keys: frozenset[bytes] = frozenset()

    def _signed(self) -> bytes:
        return msgpack.packb([REVOCATION_CONTEXT, self.number, self.issued_us,
                              sorted(self.addresses), sorted(self.keys)], use_bin_type=True)

    @classmethod
    def make(cls, root: RootSigner, number: int, addresses: Iterable[str],
             now_us: int, keys: Iterable[bytes] = ()) -> RevocationList:
        unsigned = cls(number, now_us, frozenset(addresses), keys=frozenset(keys))
        return cls(number, now_us, unsigned.addresses, root.sign_bytes(unsigned._signed()),
                   unsigned.keys)

    def encode(self) -> bytes:
        return msgpack.packb([self.number, self.issued_us, sorted(self.addresses),
                              self.signature, sorted(self.keys)], use_bin_type=True)

    @classmethod
    def decode(cls, data: bytes, anchors: Sequence[x509.Certificate]) -> RevocationList:
        """The list in ``data``, its signature checked against the ``anchors``."""
        try:
            number, issued, addresses, signature, keys = msgpack.unpackb(data, raw=False)
        except (ValueError, TypeError, msgpack.UnpackException):
            raise InvalidValueError("not a revocation list") from None
        if not (type(number) is int and type(issued) is int and isinstance(addresses, list)
                and all(isinstance(a, str) for a in addresses)
                and isinstance(keys, list)
                and all(isinstance(k, bytes) and len(k) == KID_BYTES for k in keys)
                and isinstance(signature, bytes) and len(signature) <= 160):
            raise InvalidValueError("not a revocation list")
        listed = cls(number, issued, frozenset(addresses), signature, frozenset(keys))
        for anchor in anchors:
            key = anchor.public_key()
            if not isinstance(key, ec.EllipticCurvePublicKey):
                continue
            try:
                key.verify(listed.signature, listed._signed(), ec.ECDSA(hashes.SHA256()))
            except InvalidSignature:
                continue
            return listed
        raise _refused("invalid", "the revocation list is not signed by a root we trust")


# -- the directory -------------------------------------------------------------------------------


class CertificateDirectory(StaticKeys):
    """A ``KeyDirectory`` that trusts certificates leading to ``anchors`` (see the module
    docstring); keys given by configuration (``StaticKeys``) stay trusted as such, short of
    revocation."""

    def __init__(self, anchors: Sequence[x509.Certificate],
                 keys: Mapping[str, Ed25519PublicKey] | None = None,
                 recipients: Mapping[str, X25519PublicKey] | None = None) -> None:
        super().__init__(keys, recipients)
        self.anchors = list(anchors)
        self._credentials: dict[bytes, Credential] = {}
        self._by_address: dict[str, Credential] = {}
        self.revocations = RevocationList(0, 0, frozenset())

    def learn(self, chain: Sequence[bytes], now_us: int) -> Credential:
        """Check ``chain`` and know its key from now on (until it expires)."""
        credential = check_chain(chain, self.anchors, now_us)
        self._check_not_revoked(credential)
        address = credential.address
        if address in self._static:
            raise _refused("conflict", f"{address!r} has a configured key: no certificate "
                           "speaks for it")
        current = self._by_address.get(address)
        if (current is not None and current.kid != credential.kid
                and now_us <= current.not_after_us and current.kid not in self.revocations.keys
                and (current.role, current.issuer) != (credential.role, credential.issuer)):
            raise _refused("conflict", f"{address!r} holds a {current.role} certificate from "
                           f"{current.issuer or 'the root'}; another CA cannot speak for it")
        self._credentials[credential.kid] = credential
        if current is None or credential.not_before_us >= current.not_before_us:
            # the newest one names its keys (an older chain shown again rolls nothing back)
            self._by_address[address] = credential
            if credential.recipient is not None:
                self._recipients[address] = credential.recipient
        self._signers.add(address)
        return credential

    def _speaks_for(self, address: str, now_us: int) -> bool:
        """Whether a configured key or a valid certificate speaks for ``address``."""
        current = self._by_address.get(address)
        return address in self._static or (
            current is not None and now_us <= current.not_after_us
            and current.kid not in self.revocations.keys)

    def credential(self, address: str) -> Credential | None:
        """The newest certificate learnt for ``address``."""
        return self._by_address.get(address)

    def owner(self, kid: bytes, now_us: int = 0) -> tuple[str, Ed25519PublicKey] | None:
        credential = self._credentials.get(kid)
        if credential is None:
            known = super().owner(kid, now_us)
            if known is not None and known[0] in self.revocations.addresses:
                raise _refused("revoked", f"{known[0]!r} is revoked")
            return known
        if now_us > credential.not_after_us:
            raise _refused("expired", f"the certificate of {credential.address!r} expired")
        self._check_not_revoked(credential)
        return credential.address, credential.key

    def _check_not_revoked(self, credential: Credential) -> None:
        if credential.kid in self.revocations.keys:
            raise _refused("revoked", f"the key {credential.kid.hex()} of "
                           f"{credential.address!r} is revoked")
        revoked = self.revocations.addresses
        if credential.address in revoked:
            raise _refused("revoked", f"{credential.address!r} is revoked")
        if credential.issuer in revoked:
            raise _refused("revoked", f"the CA of {credential.issuer!r}, which issued "
                           f"{credential.address!r}'s certificate, is revoked")

    def revoke(self, revocations: RevocationList) -> bool:
        """Take a newer (checked) list; ``False`` for one no newer than what it holds."""
        if revocations.number <= self.revocations.number:
            return False
        self.revocations = revocations
        return True

    def introduce(self, kid: bytes, envelope: Envelope, now_us: int) -> Introduction | None:
        """How an envelope signed by an unknown ``kid`` introduces its key: a
        ``JoinNetworkRequest``'s chain (learnt once the envelope verifies) or its signing
        request (that envelope only, and only for an address no valid key speaks for: an
        enrollment); ``None`` for anything else."""
        if envelope.kind != "JoinNetworkRequest" or envelope.encryption is not None:
            return None
        try:
            join = decode_body(envelope.kind, envelope.body)
            chain: list[bytes] = list(getattr(join, "certificate", []))
            request: bytes = getattr(join, "csr", b"")
            if chain:
                credential = check_chain(chain, self.anchors, now_us)
                self._check_not_revoked(credential)
                if credential.kid == kid and credential.address == envelope.source:
                    return Introduction(credential.key, chain)
            if request:
                asked = read_request(request)
                if asked.address == envelope.source and key_id(asked.key) == kid:
                    if asked.address in self.revocations.addresses:
                        raise _refused("revoked", f"{asked.address!r} is revoked")
                    if self._speaks_for(asked.address, now_us):
                        # a known actor renews with its own key; a new key for its address
                        # is someone else (or a station that lost its key: revoke the old)
                        raise _refused("already_certified", f"{asked.address!r} holds a "
                                       "valid key: a request for another key is refused")
                    return Introduction(asked.key)
        except BadSignatureError:
            raise
        except ModelError:
            return None
        return None


__all__ = ["ACTOR_URI", "ISSUES_OID", "RECIPIENT_OID", "ROLE_OID", "SITE_ROLES",
           "CertificateDirectory", "CertificateRequest", "Credential", "RevocationList",
           "RootSigner", "check_chain", "make_request", "read_request"]
