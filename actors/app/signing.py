"""The keys one process's actors sign envelopes with, the directory they verify others with,
and the certificates that vouch for both (``[signing]``; ``broker_bridge.session.signing``
signs, ``broker_bridge.session.certificates`` checks certificates,
``actors.runtime.services.enrollment`` asks for and issues them)."""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping
from pathlib import Path

import msgpack
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PublicKey

from actors.app.config import ENCRYPTED_KINDS, SigningConfig
from actors.runtime.services.enrollment import DEFAULT_LIFETIME_S, Credentials, Enroller
from actors.runtime.storage.enrollment import EnrollmentBook
from actors.runtime.storage.keys import KeyStore
from broker_bridge.clock import WALL_CLOCK, Clock
from broker_bridge.pki import CertificateAuthority
from broker_bridge.session.certificates import CertificateDirectory
from broker_bridge.session.signing import SigningGuard, StaticKeys
from object_model.errors import ModelError

log = logging.getLogger("csms.signing")

CHAIN_SUFFIX = ".chain"


class Signing:
    """The keys one process's actors sign and open envelopes with, and the directory they
    verify and seal to others with (``[signing]``; see ``SigningConfig``). Every guard it
    makes shares the directory and adds the keys of the actors it serves: actors of one
    process (the demo's) know each other's keys without configuration.

    With an ``anchor`` (the operator's root certificate), the directory trusts certificates
    leading to it: every ``*.chain`` in ``key_dir`` is learnt at start (the actor's own, and
    the peers' it was commissioned with), stations enroll at JoinNetwork (``credentials``)
    and a local CSMS with a ``site_ca`` issues their certificates (``enroller``)."""

    def __init__(self, key_dir: Path | str, keys: Mapping[str, str] | None = None, *,
                 encryption_keys: Mapping[str, str] | None = None,
                 encrypt: Iterable[str] = ENCRYPTED_KINDS, require: bool = False,
                 anchor: Path | str | None = None, site_ca: Path | str | None = None,
                 certificate_lifetime_s: float = DEFAULT_LIFETIME_S,
                 clock: Clock = WALL_CLOCK) -> None:
        self.store = KeyStore(key_dir)
        signers = {address: Ed25519PublicKey.from_public_bytes(bytes.fromhex(key))
                   for address, key in (keys or {}).items()}
        recipients = {address: X25519PublicKey.from_public_bytes(bytes.fromhex(key))
                      for address, key in (encryption_keys or {}).items()}
        self.clock = clock
        self.anchor: x509.Certificate | None = None
        self.directory: StaticKeys
        if anchor is not None:
            self.anchor = x509.load_pem_x509_certificate(Path(anchor).read_bytes())
            self.directory = CertificateDirectory([self.anchor], signers, recipients)
            self._learn_chains()
        else:
            self.directory = StaticKeys(signers, recipients)
        self.site_ca = None if site_ca is None else Path(site_ca)
        self.site_cas: dict[str, Path] = {}  # per local CSMS, where one process runs several
        self.certificate_lifetime_s = certificate_lifetime_s
        self.encrypt = frozenset(encrypt)
        # with certificates every actor signs: nothing unsigned is taken from anyone (else an
        # enrolled station whose certificate this process has not seen yet, after a restart,
        # could be spoken for unsigned)
        self.require = require or anchor is not None
        self.guards: list[SigningGuard] = []

    @classmethod
    def of(cls, cfg: SigningConfig | None) -> Signing | None:
        return None if cfg is None else cls(
            cfg.key_dir, cfg.keys, encryption_keys=cfg.encryption_keys, encrypt=cfg.encrypt,
            require=cfg.require, anchor=cfg.anchor, site_ca=cfg.site_ca,
            certificate_lifetime_s=cfg.certificate_days * 86_400)

    @property
    def certificates(self) -> CertificateDirectory | None:
        """The directory, when it trusts certificates."""
        return self.directory if isinstance(self.directory, CertificateDirectory) else None

    def _learn_chains(self) -> None:
        assert isinstance(self.directory, CertificateDirectory)
        for path in sorted(self.store.directory.glob(f"*{CHAIN_SUFFIX}")):
            try:
                self.directory.learn(msgpack.unpackb(path.read_bytes()), self.clock.now_us())
            except (ModelError, ValueError, TypeError) as exc:
                log.warning("%s is no use (%s): left out", path, exc)

    def know(self, addresses: Iterable[str]) -> None:
        """Put the keys of ``addresses`` (made on first use) in the directory: actors of other
        processes that use them (the operator's command line) are then taken."""
        for address in addresses:
            self.directory.add(address, self.store.key(address).public_key(),
                               self.store.recipient_key(address).public_key())

    def guard(self, addresses: Iterable[str], *, known: bool | None = None) -> SigningGuard:
        """A guard signing and opening as ``addresses`` (their keys made on first use); with
        ``known`` (by default: when no certificates vouch for them), their keys are put in
        the directory."""
        addresses = list(addresses)
        if known if known is not None else self.certificates is None:
            self.know(addresses)
        guard = SigningGuard({a: self.store.key(a) for a in addresses}, self.directory,
                             decryption_keys={a: self.store.recipient_key(a)
                                              for a in addresses},
                             encrypt_kinds=self.encrypt, require_encryption=self.require,
                             require_signatures=self.require)
        self.guards.append(guard)
        return guard

    def credentials(self, address: str) -> Credentials | None:
        """What ``address`` enrolls with (``None`` without an anchor: no certificates)."""
        directory = self.certificates
        if directory is None:
            return None
        return Credentials(address, self.store.key(address),
                           self.store.recipient_key(address), directory,
                           self.store.directory, clock=self.clock)

    def enroller(self, csms: str, state_dir: Path | str) -> Enroller | None:
        """The issuer of a local CSMS's stations (``None`` without ``site_ca``); its book in
        ``state_dir``, opened by the CSMS."""
        directory, site_ca = self.certificates, self.site_cas.get(csms, self.site_ca)
        if directory is None or site_ca is None or self.anchor is None:
            return None
        if not (site_ca / "ca.crt").is_file() or not (site_ca / "ca.key").is_file():
            raise ValueError(f"[signing] site_ca: no site CA in {site_ca} (the operator "
                             "makes it: csms commission --site-ca)")
        authority = CertificateAuthority(site_ca)
        return Enroller(csms, authority, self.anchor, directory,
                        EnrollmentBook(Path(state_dir) / "enrollment.db", clock=self.clock),
                        lifetime_s=self.certificate_lifetime_s, clock=self.clock)

    def public_keys(self) -> dict[str, str]:
        """Every signing key of the directory, as ``[signing] keys`` lists them."""
        return self.directory.public_hex()

    def encryption_keys(self) -> dict[str, str]:
        """Every encryption key of the directory, as ``[signing] encryption_keys`` lists
        them."""
        return self.directory.recipients_hex()


__all__ = ["CHAIN_SUFFIX", "Signing"]
