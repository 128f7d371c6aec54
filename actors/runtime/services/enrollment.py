"""Certificates at JoinNetwork: the member asks (``Credentials``), its CSMS issues
(``Enroller``). DESIGN.md section 9; the chain and its checks are
``broker_bridge.session.certificates``.

*Enrolling.* An actor without a certificate joins with a signing request for its own key and
a proof made with the one-time token it was commissioned with (``token_proof``: bound to
that request, its address and that CSMS; the token itself never travels). The CSMS checks the
request's self-signature and address, spends the token and records the certificate in one
transaction (``EnrollmentBook``), learns the certificate, and answers with the chain. The
member checks the chain leads to its root and names its address and key before it keeps it.
A token spent once admits nobody again: a second use is refused (``token_used``) and logged
as the theft it may be.

*Joining again* shows the chain held (the CSMS learns it if it had forgotten, after a restart);
*renewal* at two thirds of the certificate's life asks again for the same key, with no token:
the key is certified now. An expired certificate counts as none: the actor needs a new token.
"""

from __future__ import annotations

import hmac
import logging
from pathlib import Path

import msgpack
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

from actors.logic.join_proof import token_key, token_proof
from actors.runtime.storage.enrollment import EnrollmentBook, Spent
from broker_bridge.clock import WALL_CLOCK, Clock
from broker_bridge.pki import CertificateAuthority, write_file
from broker_bridge.session.certificates import (
    CertificateDirectory,
    Credential,
    make_request,
    read_request,
)
from broker_bridge.session.signing import key_id
from object_model.access import Role
from object_model.errors import ModelError, NotAdmittedError
from object_model.messages import JoinNetworkRequest

log = logging.getLogger("csms.enrollment")

DEFAULT_LIFETIME_S = 7 * 86_400.0


def _refused(sender: str, text: str, reason: str) -> NotAdmittedError:
    return NotAdmittedError(f"{sender}: {text}", details={"reason": reason})


class Enroller:
    """A CSMS issuing certificates to the actors that join it (see the module docstring)."""

    def __init__(self, csms: str, authority: CertificateAuthority, root: x509.Certificate,
                 directory: CertificateDirectory, book: EnrollmentBook, *,
                 lifetime_s: float = DEFAULT_LIFETIME_S, clock: Clock = WALL_CLOCK) -> None:
        self.csms, self.authority, self.root = csms, authority, root
        self.directory, self.book = directory, book
        self.lifetime_s, self.clock = lifetime_s, clock
        self.enrolled = self.renewed = self.refused = 0

    async def open(self) -> None:
        await self.book.open()

    async def close(self) -> None:
        await self.book.close()

    async def admit(self, message: JoinNetworkRequest, sender: str, role: Role,
                    message_id: bytes) -> list[bytes]:
        """Admit ``message`` from ``sender`` as ``role``: the chain issued for its request
        (empty when it showed one it holds), or ``NotAdmittedError`` saying why."""
        try:
            return await self._admit(message, sender, role, message_id)
        except NotAdmittedError:
            self.refused += 1
            raise

    async def _admit(self, message: JoinNetworkRequest, sender: str, role: Role,
                     message_id: bytes) -> list[bytes]:
        now = self.clock.now_us()
        if message.csr:
            return await self._issue(message, sender, role, message_id, now)
        admit_certificate(self.directory, message, sender, role, now, issuer=self.csms)
        return []

    async def _issue(self, message: JoinNetworkRequest, sender: str, role: Role,
                     message_id: bytes, now: int) -> list[bytes]:
        try:
            request = read_request(message.csr)
        except ModelError as exc:
            raise _refused(sender, f"its signing request is refused: {exc}",
                           "bad_request") from None
        if request.address != sender:
            raise _refused(sender, f"asks a certificate for {request.address!r}",
                           "request_mismatch")
        kid = key_id(request.key)
        not_after = now + int(self.lifetime_s * 1e6)

        def make() -> bytes:
            return self.authority.issue_actor(request, role.value,
                                              lifetime_s=self.lifetime_s, now_us=now)

        current = self.directory.credential(sender)
        # a renewal: the key is certified now, by us, for this role: no token needed
        renewal = (current is not None and current.kid == kid and current.not_after_us >= now
                   and current.issuer == self.csms and current.role == role.value)
        outcome = await self.book.enroll(
            sender, None if renewal else lambda key: hmac.compare_digest(
                token_proof(key, sender, self.csms, request.digest), message.proof),
            kid=kid, role=role.value, message_id=message_id, not_after_us=not_after,
            issue=make)
        if isinstance(outcome, Spent):
            if outcome.reason == "token_used":
                log.warning("%s: %s presented an enrollment token that was spent before: "
                            "stolen, or enrolled twice; it stays refused", self.csms, sender)
            raise _refused(sender, _SPENT[outcome.reason], outcome.reason)
        certificate = outcome
        if renewal:
            self.renewed += 1
        else:
            self.enrolled += 1
        chain = self.authority.chain(certificate, self.root)
        self.directory.learn(chain, now)
        log.info("%s: issued %s a certificate (key %s)", self.csms, sender, kid.hex())
        return chain


def admit_certificate(directory: CertificateDirectory, message: JoinNetworkRequest,
                      sender: str, role: Role, now_us: int, *, issuer: str = "") -> Credential:
    """Admit a join by the certificate it shows (learnt, if it was not), or
    ``NotAdmittedError`` saying why: none shown, not trusted, another actor's or role's, or
    issued by another CA than ``issuer`` (a CSMS's address: its site CA; ``""``: the
    root)."""
    if not message.certificate:
        raise _refused(sender, "joins with neither a certificate nor a signing request: "
                       "give it an enrollment token (csms enroll)", "no_credentials")
    try:
        credential = directory.learn(message.certificate, now_us)
    except ModelError as exc:
        raise _refused(sender, f"its certificate is refused: {exc}",
                       str(exc.details.get("reason", "invalid"))) from None
    if credential.address != sender or credential.role != role.value:
        raise _refused(sender, f"shows the certificate of a {credential.role} "
                       f"{credential.address!r}", "certificate_mismatch")
    if credential.issuer != issuer:
        raise _refused(sender, f"shows a certificate of {credential.issuer or 'the root'}, "
                       f"not of {issuer or 'the root'}", "foreign_issuer")
    return credential


_SPENT = {
    "unknown": "no enrollment token of ours matches its proof",
    "token_used": "its enrollment token was spent before",
    "expired": "its enrollment token lapsed: give it a new one (csms enroll)",
    "replayed": "this request was taken before",
}


class Credentials:
    """One actor's certificate, as a member of a CSMS (see the module docstring), and its
    keys: ``key`` signs, ``recipient_key`` opens what is sealed to it (its public half goes
    into the certificate). Files in ``folder``: ``<address>.chain`` (what it was issued) and
    ``<address>.token`` (its enrollment token, removed once spent)."""

    def __init__(self, address: str, key: Ed25519PrivateKey,
                 recipient_key: X25519PrivateKey | None, directory: CertificateDirectory,
                 folder: Path | str, *, clock: Clock = WALL_CLOCK) -> None:
        self.address, self.key, self.recipient_key = address, key, recipient_key
        self.recipient = None if recipient_key is None else recipient_key.public_key()
        self.directory, self.clock = directory, clock
        folder = Path(folder)
        self.chain_path = folder / f"{address}.chain"
        self.token_path = folder / f"{address}.token"
        self.chain: list[bytes] = []
        self.credential: Credential | None = None
        if self.chain_path.is_file():
            try:
                self._keep(msgpack.unpackb(self.chain_path.read_bytes()), self.clock.now_us())
            except (ModelError, ValueError, TypeError) as exc:
                log.warning("%s: the certificate in %s is no use (%s): enrolling again",
                            address, self.chain_path, exc)

    def renew_at_us(self) -> int | None:
        """When to ask for the next certificate (``None`` without one)."""
        return None if self.credential is None else self.credential.renew_at_us

    def join_fields(self, csms: str) -> dict[str, object]:
        """What the ``JoinNetworkRequest`` to ``csms`` carries: the chain held, a request
        to renew it when due, or a request with a token's proof."""
        now = self.clock.now_us()
        valid = self.credential is not None and now < self.credential.not_after_us
        if valid and now < (self.renew_at_us() or 0):
            return {"certificate": self.chain}
        request = make_request(self.key, self.address, self.recipient)
        if valid:
            return {"csr": request, "certificate": self.chain}
        if not self.token_path.is_file():
            log.error("%s: no valid certificate and no enrollment token (%s): ask the "
                      "operator for one (csms enroll)", self.address, self.token_path)
            return {}
        token = self.token_path.read_text().strip()
        digest = read_request(request).digest
        return {"csr": request, "proof": token_proof(token_key(token), self.address, csms,
                                                     digest)}

    def take(self, chain: list[bytes]) -> None:
        """Keep the chain a CSMS issued (checked: it leads to our root and names our address
        and key), and forget the token it spent."""
        if not chain:
            return
        self._keep(chain, self.clock.now_us())
        write_file(self.chain_path, msgpack.packb(chain, use_bin_type=True), 0o644)
        self.token_path.unlink(missing_ok=True)

    def _keep(self, chain: list[bytes], now: int) -> None:
        credential = self.directory.learn(chain, now)
        if (credential.address != self.address
                or credential.kid != key_id(self.key.public_key())):
            raise NotAdmittedError(f"{self.address}: was issued a certificate for "
                                   f"{credential.address!r} or another key: refused",
                                   details={"reason": "certificate_mismatch"})
        self.chain, self.credential = list(chain), credential


__all__ = ["DEFAULT_LIFETIME_S", "Credentials", "Enroller", "admit_certificate"]
