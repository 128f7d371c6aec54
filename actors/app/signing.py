"""The keys one process's actors sign envelopes with, and the directory they verify others
with (``[signing]``; ``broker_bridge.session.signing`` does the signing)."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PublicKey

from actors.app.config import ENCRYPTED_KINDS, SigningConfig
from actors.runtime.storage.keys import KeyStore
from broker_bridge.session.signing import SigningGuard, StaticKeys


class Signing:
    """The keys one process's actors sign and open envelopes with, and the directory they
    verify and seal to others with (``[signing]``; see ``SigningConfig``). Every guard it
    makes shares the directory and adds the keys of the actors it serves: actors of one
    process (the demo's) know each other's keys without configuration."""

    def __init__(self, key_dir: Path | str, keys: Mapping[str, str] | None = None, *,
                 encryption_keys: Mapping[str, str] | None = None,
                 encrypt: Iterable[str] = ENCRYPTED_KINDS, require: bool = False) -> None:
        self.store = KeyStore(key_dir)
        self.directory = StaticKeys(
            {address: Ed25519PublicKey.from_public_bytes(bytes.fromhex(key))
             for address, key in (keys or {}).items()},
            {address: X25519PublicKey.from_public_bytes(bytes.fromhex(key))
             for address, key in (encryption_keys or {}).items()})
        self.encrypt = frozenset(encrypt)
        self.require = require
        self.guards: list[SigningGuard] = []

    @classmethod
    def of(cls, cfg: SigningConfig | None) -> Signing | None:
        return None if cfg is None else cls(cfg.key_dir, cfg.keys,
                                            encryption_keys=cfg.encryption_keys,
                                            encrypt=cfg.encrypt, require=cfg.require)

    def know(self, addresses: Iterable[str]) -> None:
        """Put the keys of ``addresses`` (made on first use) in the directory: actors of other
        processes that use them (the operator's command line) are then taken."""
        for address in addresses:
            self.directory.add(address, self.store.key(address).public_key(),
                               self.store.recipient_key(address).public_key())

    def guard(self, addresses: Iterable[str]) -> SigningGuard:
        """A guard signing and opening as ``addresses`` (their keys made on first use)."""
        addresses = list(addresses)
        self.know(addresses)
        guard = SigningGuard({a: self.store.key(a) for a in addresses}, self.directory,
                             decryption_keys={a: self.store.recipient_key(a)
                                              for a in addresses},
                             encrypt_kinds=self.encrypt, require_encryption=self.require,
                             require_signatures=self.require)
        self.guards.append(guard)
        return guard

    def public_keys(self) -> dict[str, str]:
        """Every signing key of the directory, as ``[signing] keys`` lists them."""
        return self.directory.public_hex()

    def encryption_keys(self) -> dict[str, str]:
        """Every encryption key of the directory, as ``[signing] encryption_keys`` lists
        them."""
        return self.directory.recipients_hex()


__all__ = ["Signing"]
