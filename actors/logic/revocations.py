"""Revocation lists as values of a tree: how a write of one is judged, wherever it lands (a
CSMS's own tree, a station's). The list is signed by the operator's root and numbered
(``broker_bridge.session.certificates.RevocationList``); a tree takes only a newer one than
it holds, and records its number beside it."""

from __future__ import annotations

from collections.abc import Sequence

from broker_bridge.session.certificates import CertificateDirectory, RevocationList
from keypath import KeyPath
from object_model.errors import NotWritableError, StaleError
from object_model.schema import SchemaRegistry
from object_model.tree import Operation, Write

LIST_PATH = "security/revocations"
NUMBER_PATH = "security/revocation_number"
_LIST_KEY = KeyPath.parse(LIST_PATH)


def written_list(schema: SchemaRegistry, ops: Sequence[Operation]) -> object | None:
    """The value a write's operations put at ``LIST_PATH`` (``None``: they do not touch it),
    whether written there or as part of a map above it."""
    found: object | None = None
    for op in ops:
        if isinstance(op, Write):
            path = op.path if isinstance(op.path, KeyPath) else KeyPath.parse(op.path)
            for leaf, _, value in schema.expand(path, op.value):
                if leaf == _LIST_KEY:
                    found = value
    return found


def checked_list(value: object, directory: CertificateDirectory | None, *, held: int,
                 holder: str) -> RevocationList:
    """The list ``value`` holds, if ``holder`` may take it: signed by a root ``directory``
    trusts (``BAD_SIGNATURE`` otherwise) and newer than the list number ``held`` (``STALE``);
    ``NOT_WRITABLE`` where nothing trusts certificates."""
    if directory is None:
        raise NotWritableError(f"{holder} trusts no certificates ([signing] anchor): it holds "
                               "no revocation list")
    if not isinstance(value, bytes):
        raise NotWritableError("a revocation list is bytes")
    listed = RevocationList.decode(value, directory.anchors)
    if listed.number <= held:
        raise StaleError(f"revocation list {listed.number} is no newer than the list {held} "
                         f"held by {holder}", details={"number": held})
    return listed


def stored_list(value: object, directory: CertificateDirectory) -> RevocationList | None:
    """The list a tree holds (checked again: what is on disk is not trusted blindly)."""
    if not isinstance(value, bytes) or not value:
        return None
    return RevocationList.decode(value, directory.anchors)


__all__ = ["LIST_PATH", "NUMBER_PATH", "checked_list", "stored_list", "written_list"]
