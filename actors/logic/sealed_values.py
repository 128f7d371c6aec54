"""Secrets sealed end to end: a value written to a write-only leaf of a station (a Wi-Fi or
APN password: the schema's ``write`` access, which nobody may read back) is sealed by its
writer to that station's X25519 key, and the CSMS relays it crosses pass it on unread.

*The writer* (an operator's command line, a CSMS writing for itself) learns the station's key
from the station's certificate, which the station shows in its tree
(``security/certificate``, replicated into every CSMS's copy): ``recipient_of`` checks that
chain against the operator's root, the address and the role before ``seal_writes`` seals the
secret items of a write to it (``broker_bridge.session.encryption.seal_value``: bound to the
station's address and the item's key-path). Paths stay in clear: every relay checks the
writer's rights on them as before.

*The station* opens them (``open_writes``) before anything else looks at the write. A station
that holds a key takes secrets only sealed: a secret in clear is refused with
``SEALING_REQUIRED`` (a relay saw it: send it again, sealed, and change it if the relay is not
trusted); a sealed value it cannot open (another station's, another leaf's, altered) with
``DECRYPTION_FAILED``. A station without a key (signing off) takes secrets in clear and
cannot open sealed ones.

A fan-out writes one item to many stations, so it cannot carry a value sealed to each: a
secret is written to one station at a time.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import msgpack
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey

from broker_bridge.session.certificates import check_chain
from broker_bridge.session.encryption import open_value, seal_value
from object_model.access import PropertyAccessKind, Role
from object_model.errors import (
    BadSignatureError,
    DecryptionFailedError,
    ModelError,
    SealingRequiredError,
)
from object_model.messages import Batch, MessageBase, PropertyValueWrite, WriteItem
from object_model.schema import LeafSchema, SchemaRegistry

CERTIFICATE_PATH = "security/certificate"
"""Where a station shows the chain of the certificate it holds (msgpack: a list of DER)."""


def is_secret(schema: SchemaRegistry, item: WriteItem) -> bool:
    """Whether ``item`` writes a value into a write-only leaf (whole or inside a component
    it writes at once). A path the schema does not know is no secret: the tree refuses it."""
    if item.delete or item.sealed or item.value is None:
        return False
    try:
        return any(isinstance(node, LeafSchema) and node.access is PropertyAccessKind.WRITE
                   and value is not None
                   for _, node, value in schema.expand(item.path, item.value))
    except ModelError:
        return False


def recipient_of(chain_bytes: object, address: str, anchors: Sequence[x509.Certificate],
                 now_us: int) -> X25519PublicKey:
    """The key to seal ``address``'s secrets to, from the chain its tree shows, checked
    against ``anchors`` (``BAD_SIGNATURE`` with the reason when it is not to be trusted)."""
    if not isinstance(chain_bytes, bytes) or not chain_bytes:
        raise BadSignatureError(f"{address} shows no certificate: it has not enrolled, or "
                                "the system does not sign", details={"reason": "missing"})
    try:
        chain = msgpack.unpackb(chain_bytes, raw=False)
    except (ValueError, TypeError, msgpack.UnpackException):
        chain = None
    if not isinstance(chain, list):
        raise BadSignatureError(f"{address}'s certificate is not a chain",
                                details={"reason": "malformed"})
    credential = check_chain(chain, anchors, now_us)
    if credential.address != address or credential.role != Role.STATION.value:
        raise BadSignatureError(f"{address} shows the certificate of a {credential.role} "
                                f"{credential.address!r}", details={"reason": "mismatch"})
    if credential.recipient is None:
        raise BadSignatureError(f"{address}'s certificate names no key to seal to",
                                details={"reason": "no_recipient"})
    return credential.recipient


def _sealed(item: WriteItem, recipient: X25519PublicKey, address: str) -> WriteItem:
    plain = [item.value, item.text]
    return WriteItem(path=item.path, sealed=True,
                     value=seal_value(plain, recipient, address=address, path=str(item.path)))


def seal_writes(message: PropertyValueWrite, schema: SchemaRegistry, address: str,
                recipient: X25519PublicKey) -> PropertyValueWrite:
    """``message`` (a write to the station ``address``, paths relative to its tree) with its
    secret items sealed to ``recipient``."""
    writes = [_sealed(w, recipient, address) if is_secret(schema, w) else w
              for w in message.writes]
    return message.model_copy(update={"writes": writes})


def _opened(item: WriteItem, key: X25519PrivateKey, address: str) -> WriteItem:
    assert isinstance(item.value, bytes)
    plain = open_value(item.value, key, address=address, path=str(item.path))
    if not (isinstance(plain, list) and len(plain) == 2 and type(plain[1]) is bool):
        raise DecryptionFailedError(f"the value sealed for {item.path} is not one of ours",
                                    path=item.path)
    return WriteItem(path=item.path, value=plain[0], text=plain[1])


def _each_write(message: PropertyValueWrite | Batch,
                change: Callable[[PropertyValueWrite], PropertyValueWrite],
                ) -> PropertyValueWrite | Batch:
    if isinstance(message, PropertyValueWrite):
        return change(message)
    items: list[MessageBase] = [change(i) if isinstance(i, PropertyValueWrite) else i
                                for i in message.items]
    return message.model_copy(update={"items": items})


def open_writes(message: PropertyValueWrite | Batch, schema: SchemaRegistry, address: str,
                key: X25519PrivateKey | None) -> PropertyValueWrite | Batch:
    """``message`` as the station ``address`` applies it: its sealed items opened with
    ``key``; with a key, a secret in clear is refused (see the module docstring)."""

    def one(write: PropertyValueWrite) -> PropertyValueWrite:
        if not any(w.sealed for w in write.writes) and (key is None or not any(
                is_secret(schema, w) for w in write.writes)):
            return write
        writes = []
        for w in write.writes:
            if w.sealed:
                if key is None:
                    raise DecryptionFailedError(
                        f"{address} holds no key to open the value sealed for {w.path}: "
                        "write it in clear (this system does not sign)", path=w.path)
                w = _opened(w, key, address)
            elif key is not None and is_secret(schema, w):
                raise SealingRequiredError(
                    f"{w.path} is a secret: seal it to {address}'s key (from its "
                    f"{CERTIFICATE_PATH}); it was seen in clear by whoever passed it on",
                    path=w.path)
            writes.append(w)
        return write.model_copy(update={"writes": writes})

    return _each_write(message, one)


__all__ = ["CERTIFICATE_PATH", "is_secret", "open_writes", "recipient_of", "seal_writes"]
