"""Keys on disk: per actor address, an Ed25519 key it signs with (``<address>.key``) and an
X25519 key bodies sealed to it are opened with (``<address>.x25519``), made on first use.

Each key is 32 raw bytes in ``<directory>/<address>.<kind>``, readable by its owner only, in a
directory only its owner may list (0700); written atomically (a scratch file renamed into
place), so a crash never leaves half a key, and never replaced once made: what a peer learnt
of it stays true.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

from broker_bridge.envelope import valid_address
from broker_bridge.pki import write_file


class KeyStore:
    """The private keys of the actors one process hosts (see the module docstring)."""

    def __init__(self, directory: Path | str) -> None:
        self.directory = Path(directory)
        self._cache: dict[str, Ed25519PrivateKey] = {}
        self._recipients: dict[str, X25519PrivateKey] = {}

    def key(self, address: str) -> Ed25519PrivateKey:
        """``address``'s signing key, made (and kept) the first time it is asked for."""
        key = self._cache.get(address)
        if key is None:
            raw = self._raw(address, "key", lambda: Ed25519PrivateKey.generate()
                            .private_bytes_raw())
            key = self._cache[address] = Ed25519PrivateKey.from_private_bytes(raw)
        return key

    def recipient_key(self, address: str) -> X25519PrivateKey:
        """``address``'s key for opening bodies sealed to it (``<address>.x25519``)."""
        key = self._recipients.get(address)
        if key is None:
            raw = self._raw(address, "x25519", lambda: X25519PrivateKey.generate()
                            .private_bytes_raw())
            key = self._recipients[address] = X25519PrivateKey.from_private_bytes(raw)
        return key

    def _raw(self, address: str, suffix: str, make: Callable[[], bytes]) -> bytes:
        if not valid_address(address):
            raise ValueError(f"{address!r} is not an actor address")
        path = self.directory / f"{address}.{suffix}"
        if not path.is_file():
            self.directory.mkdir(parents=True, exist_ok=True)
            os.chmod(self.directory, 0o700)
            write_file(path, make(), 0o600)
        data = path.read_bytes()
        if len(data) != 32:
            raise ValueError(f"{path} is not a key (32 bytes): remove it to make one")
        return data

    def public_hex(self, address: str) -> str:
        """The public half of ``address``'s key, as a directory lists it."""
        return self.key(address).public_key().public_bytes_raw().hex()


__all__ = ["KeyStore"]
