"""Secrets sealed end to end: a value written to a write-only leaf of a station (a Wi-Fi or
APN password: the schema's ``write`` access, which nobody may read back) is sealed by its
writer to that station's X25519 key, and the CSMS relays it crosses pass it on unread.

*The writer* (an operator's command line) learns the station's key from the station's
certificate, which the station shows in its tree
(``security/certificate``, replicated into every CSMS's copy): ``recipient_of`` checks that
chain against the operator's root, the address and the role before ``seal_writes`` seals the
secret items of a write to it (``broker_bridge.session.encryption.seal_value``: bound to the
station's address and the item's key-path, padded so its size does not tell the secret's
length). Paths stay in clear: every relay checks the writer's rights on them as before, and
refuses a secret in clear at once (``refuse_clear_secrets``), so it goes no further.

*The station* opens them (``open_writes``) before anything else looks at the write. A station
that holds a key takes secrets only sealed: a secret in clear is refused with
``SEALING_REQUIRED`` (a relay saw it: send it again, sealed, and change it if the relay is not
trusted); a sealed value it cannot open (another station's, another leaf's, altered, not a
plain value) with ``DECRYPTION_FAILED``; a sealed item that holds no secret, or more than
``MAX_SEALED_ITEMS`` in one write, with ``INVALID_MESSAGE``. An error about a write that held
secrets never repeats their values (``without_secrets``): it goes back through the relays.
A station without a key (signing off) takes secrets in clear and cannot open sealed ones.

A fan-out writes one item to many stations, so it cannot carry a value sealed to each: a
secret is written to one station at a time.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence

import msgpack
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey

from broker_bridge.session.certificates import RevocationList, check_chain
from broker_bridge.session.encryption import open_value, seal_value
from keypath import KeyPath, KeyPathError
from object_model.access import Role
from object_model.errors import (
    BadSignatureError,
    DecryptionFailedError,
    InvalidMessageError,
    ModelError,
    SealingRequiredError,
    error_class,
)
from object_model.messages import Batch, MessageBase, PropertyValueWrite, WriteItem
from object_model.schema import LeafSchema, SchemaRegistry

CERTIFICATE_PATH = "security/certificate"
"""Where a station shows the chain of the certificate it holds (msgpack: a list of DER)."""


MAX_SEALED_ITEMS = 32
"""Sealed items in one write: a station has a few secrets, and each costs a key agreement."""


def is_secret(schema: SchemaRegistry, item: WriteItem) -> bool:
    """Whether ``item`` writes a value into a leaf nobody may read (a password: ``write`` or
    ``none`` access), alone or inside a component it writes at once. What the schema does
    not know is skipped, not a reason to stop looking: the tree refuses it later, after
    whoever passed it on has seen the rest."""
    if item.delete or item.sealed:
        return False
    return _holds_secret(schema, item.path, item.value)


def _holds_secret(schema: SchemaRegistry, path: KeyPath, value: object) -> bool:
    if value is None:
        return False
    try:
        node = schema.resolve(path)
    except ModelError:
        return False
    if isinstance(node, LeafSchema):
        return not node.access.readable
    if not isinstance(value, Mapping):
        return False
    for key, sub in value.items():
        if type(key) is not str and type(key) is not int:
            continue
        try:
            child = path / key
        except KeyPathError:
            continue
        if _holds_secret(schema, child, sub):
            return True
    return False


def refuse_clear_secrets(schema: SchemaRegistry, writes: Sequence[WriteItem],
                         where: str) -> None:
    """What a relay that forwards a write to a station (at ``where``) checks: a secret in
    clear is refused here with ``SEALING_REQUIRED``, and goes no further."""
    for item in writes:
        if is_secret(schema, item):
            raise SealingRequiredError(
                f"{item.path} is a secret: seal it to the key of {where} (from its "
                f"{CERTIFICATE_PATH}); it is refused here, in clear", path=item.path)


def recipient_of(chain_bytes: object, address: str, anchors: Sequence[x509.Certificate],
                 now_us: int, revoked: RevocationList | None = None) -> X25519PublicKey:
    """The key to seal ``address``'s secrets to, from the chain its tree shows, checked
    against ``anchors`` and the ``revoked`` list (``BAD_SIGNATURE`` with the reason when it
    is not to be trusted)."""
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
    if revoked is not None and (credential.address in revoked.addresses
                                or credential.kid in revoked.keys):
        raise BadSignatureError(f"{address}'s certificate is revoked (list {revoked.number})",
                                details={"reason": "revoked"})
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
    sealed = 0

    def one(write: PropertyValueWrite) -> PropertyValueWrite:
        nonlocal sealed
        if not any(w.sealed for w in write.writes) and (key is None or not any(
                is_secret(schema, w) for w in write.writes)):
            return write
        writes = []
        for w in write.writes:
            if w.sealed:
                sealed += 1
                if sealed > MAX_SEALED_ITEMS:
                    raise InvalidMessageError(f"more than {MAX_SEALED_ITEMS} sealed values in "
                                              "one write", path=w.path)
                if key is None:
                    raise DecryptionFailedError(
                        f"{address} holds no key to open the value sealed for {w.path}: "
                        "write it in clear (this system does not sign)", path=w.path)
                w = _opened(w, key, address)
                if not is_secret(schema, w):
                    raise InvalidMessageError(f"{w.path} holds no secret: write it in clear, "
                                              "where its relays can check it", path=w.path)
            elif key is not None and is_secret(schema, w):
                raise SealingRequiredError(
                    f"{w.path} is a secret: seal it to {address}'s key (from its "
                    f"{CERTIFICATE_PATH}); it was seen in clear by whoever passed it on",
                    path=w.path)
            writes.append(w)
        return write.model_copy(update={"writes": writes})

    return _each_write(message, one)


def secret_paths(schema: SchemaRegistry, message: PropertyValueWrite | Batch) -> list[KeyPath]:
    """The paths of ``message`` (opened) that write secrets."""
    writes = message.writes if isinstance(message, PropertyValueWrite) else [
        w for item in message.items if isinstance(item, PropertyValueWrite) for w in item.writes]
    return [w.path for w in writes if is_secret(schema, w)]


def without_secrets(exc: ModelError, secrets: Sequence[KeyPath]) -> ModelError:
    """``exc`` as it may travel back through the relays of a write holding ``secrets``: an
    error at (or above, or below) a secret, or at no path, says what was wrong but not the
    value (which a type or range error repeats), and no error lists the others."""
    if not secrets:
        return exc
    at = None if exc.path is None else KeyPath.parse(exc.path)
    if at is not None and not any(at.is_prefix_of(p) or p.is_prefix_of(at) for p in secrets):
        return error_class(exc.code)(exc.text, path=exc.path)
    return error_class(exc.code)(f"the write holding a secret is refused: {exc.code.value}",
                                 path=exc.path)


__all__ = ["CERTIFICATE_PATH", "MAX_SEALED_ITEMS", "is_secret", "open_writes", "recipient_of",
           "refuse_clear_secrets", "seal_writes", "secret_paths", "without_secrets"]
