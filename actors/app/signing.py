"""The keys one process's actors sign envelopes with, and the directory they verify others
with (``[signing]``; ``broker_bridge.session.signing`` does the signing)."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from actors.app.config import SigningConfig
from actors.runtime.storage.keys import KeyStore
from broker_bridge.session.signing import SigningGuard, StaticKeys


class Signing:
    """The keys one process's actors sign with and the directory they verify others with
    (``[signing]``; see ``SigningConfig``). Every guard it makes shares the directory, and
    adds the keys of the actors it signs for: actors of one process (the demo's) know each
    other's keys without configuration."""

    def __init__(self, key_dir: Path | str, keys: Mapping[str, str] | None = None, *,
                 require: bool = False) -> None:
        self.store = KeyStore(key_dir)
        self.directory = StaticKeys({address: Ed25519PublicKey.from_public_bytes(
            bytes.fromhex(key)) for address, key in (keys or {}).items()})
        self.require = require
        self.guards: list[SigningGuard] = []

    @classmethod
    def of(cls, cfg: SigningConfig | None) -> Signing | None:
        return None if cfg is None else cls(cfg.key_dir, cfg.keys, require=cfg.require)

    def know(self, addresses: Iterable[str]) -> None:
        """Put the keys of ``addresses`` (made on first use) in the directory: actors of other
        processes that sign with them (the operator's command line) are then taken."""
        for address in addresses:
            self.directory.add(address, self.store.key(address).public_key())

    def guard(self, addresses: Iterable[str]) -> SigningGuard:
        """A guard signing as ``addresses`` (their keys made on first use)."""
        own = {address: self.store.key(address) for address in addresses}
        for address, key in own.items():
            self.directory.add(address, key.public_key())
        guard = SigningGuard(own, self.directory, require_signatures=self.require)
        self.guards.append(guard)
        return guard

    def public_keys(self) -> dict[str, str]:
        """Every key of the directory, as ``[signing] keys`` lists them."""
        return self.directory.public_hex()


__all__ = ["Signing"]
