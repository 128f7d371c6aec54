"""Firmware trust: which images a station installs.

A manufacturer signs each image's *manifest* (``FirmwareManifest``: vendor, model, version, a
version counter, the image's SHA-256 and size) with an Ed25519 key; the signature covers
``canonical([CONTEXT, signer id, manifest])``, so it binds every field and cannot be taken
for a signature of anything else. A station trusts the public keys it was configured with
(``StationSettings.firmware_keys``; a signer id is the first 8 bytes of SHA-256 of the raw
public key) and installs an image only when:

* the manifest carries a signature by one of those keys (``BAD_SIGNATURE`` otherwise: no
  signature, an unknown signer, a wrong signature);
* it describes this station (vendor and model) and this image (hash and size)
  (``INVALID_VALUE``);
* its counter is not below the one installed (``STALE``: a rollback to an older, perhaps
  vulnerable image, even one the manufacturer once signed).

What a CSMS relays cannot change any of it; a CSMS cannot turn the check off.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from keypath import KeyPath
from object_model import canonical
from object_model.blobs import BlobRef, FirmwareManifest, FirmwareUpdate
from object_model.errors import BadSignatureError, InvalidValueError, StaleError

CONTEXT = "csms63110/firmware-manifest/1"
ROOT_PATH = KeyPath.root()
SIGNER_ID_BYTES = 8


def signer_id(public_key: Ed25519PublicKey) -> bytes:
    """The id a signature names its key by."""
    return hashlib.sha256(public_key.public_bytes_raw()).digest()[:SIGNER_ID_BYTES]


def _signed_bytes(signer: bytes, manifest: FirmwareManifest) -> bytes:
    return canonical.encode([CONTEXT, signer, manifest.model_dump(mode="python")])


def sign_manifest(key: Ed25519PrivateKey, manifest: FirmwareManifest) -> tuple[bytes, bytes]:
    """``(signer id, signature)`` of ``manifest`` by the manufacturer's ``key``."""
    signer = signer_id(key.public_key())
    return signer, key.sign(_signed_bytes(signer, manifest))


def signed_update(key: Ed25519PrivateKey, *, task: str, blob: BlobRef, version: str,
                  counter: int, vendor: str, model: str, tree: KeyPath = ROOT_PATH,
                  source: str | None = None) -> FirmwareUpdate:
    """A ``FirmwareUpdate`` of ``blob`` carrying its manifest signed by ``key`` (what a
    manufacturer's release tooling hands the operator)."""
    manifest = FirmwareManifest(vendor=vendor, model=model, version=version, counter=counter,
                                hash=blob.hash, size=blob.size)
    signer, signature = sign_manifest(key, manifest)
    return FirmwareUpdate(tree=tree, task=task, blob=blob, version=version, source=source,
                          manifest=manifest, signer=signer, signature=signature)


def public_hex(key: Ed25519PrivateKey) -> str:
    """The public half of ``key`` as a station's ``firmware_keys`` lists it."""
    return key.public_key().public_bytes_raw().hex()


def trusted_keys(hex_keys: Iterable[str]) -> dict[bytes, Ed25519PublicKey]:
    """Signer id -> key, from raw public keys in hex (a station's ``firmware_keys``)."""
    keys = (Ed25519PublicKey.from_public_bytes(bytes.fromhex(text)) for text in hex_keys)
    return {signer_id(key): key for key in keys}


def check_image(update: FirmwareUpdate, keys: dict[bytes, Ed25519PublicKey], *,
                vendor: str, model: str, installed_counter: int) -> FirmwareManifest:
    """The manifest of ``update`` if this station may install its image (see the module
    docstring); raises the ``ModelError`` that says why not."""
    manifest = update.manifest
    if manifest is None or not update.signature:
        raise BadSignatureError("the image carries no signed manifest: this station installs "
                                "only images its manufacturer signed")
    key = keys.get(update.signer)
    if key is None:
        raise BadSignatureError(
            f"the manifest is signed by {update.signer.hex() or 'nobody'}, a key this station "
            "does not trust", details={"signer": update.signer.hex()})
    try:
        key.verify(update.signature, _signed_bytes(update.signer, manifest))
    except InvalidSignature:
        raise BadSignatureError("the manifest's signature is wrong: the manifest or the "
                                "signature was altered", details={"signer": update.signer.hex()}
                                ) from None
    _describes(manifest, update.blob, update.version, vendor=vendor, model=model)
    if manifest.counter < installed_counter:
        raise StaleError(
            f"image {manifest.version} (counter {manifest.counter}) is older than what is "
            f"installed (counter {installed_counter}): no rollback",
            details={"counter": manifest.counter, "installed": installed_counter})
    return manifest


def _describes(manifest: FirmwareManifest, blob: BlobRef, version: str, *, vendor: str,
               model: str) -> None:
    wrong = [name for name, ok in (
        ("vendor", manifest.vendor == vendor), ("model", manifest.model == model),
        ("hash", manifest.hash == blob.hash), ("size", manifest.size == blob.size),
        ("version", manifest.version == version)) if not ok]
    if wrong:
        raise InvalidValueError(
            f"the signed manifest does not describe this update: its {', '.join(wrong)} "
            "differ", details={"fields": wrong})


__all__ = ["CONTEXT", "check_image", "public_hex", "sign_manifest", "signed_update", "signer_id",
           "trusted_keys"]
