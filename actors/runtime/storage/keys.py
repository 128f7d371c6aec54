"""Signing keys on disk: one Ed25519 private key per actor address, made on first use.

Each key is 32 raw bytes in ``<directory>/<address>.key``, readable by its owner only, in a
directory only its owner may list (0700); written atomically (a scratch file renamed into
place), so a crash never leaves half a key, and never replaced once made: what a peer learnt
of it stays true.
"""

from __future__ import annotations

import os
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from broker_bridge.envelope import valid_address


class KeyStore:
    """The private keys of the actors one process hosts (see the module docstring)."""

    def __init__(self, directory: Path | str) -> None:
        self.directory = Path(directory)
        self._cache: dict[str, Ed25519PrivateKey] = {}

    def key(self, address: str) -> Ed25519PrivateKey:
        """``address``'s key, made (and kept) the first time it is asked for."""
        key = self._cache.get(address)
        if key is not None:
            return key
        if not valid_address(address):
            raise ValueError(f"{address!r} is not an actor address")
        path = self.directory / f"{address}.key"
        if not path.is_file():
            self.directory.mkdir(parents=True, exist_ok=True)
            os.chmod(self.directory, 0o700)
            scratch = path.with_name(path.name + ".tmp")
            fd = os.open(scratch, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            with os.fdopen(fd, "wb") as out:
                out.write(Ed25519PrivateKey.generate().private_bytes_raw())
            os.replace(scratch, path)
        data = path.read_bytes()
        if len(data) != 32:
            raise ValueError(f"{path} is not an Ed25519 key (32 bytes): remove it to make one")
        key = self._cache[address] = Ed25519PrivateKey.from_private_bytes(data)
        return key

    def public_hex(self, address: str) -> str:
        """The public half of ``address``'s key, as a directory lists it."""
        return self.key(address).public_key().public_bytes_raw().hex()


__all__ = ["KeyStore"]
