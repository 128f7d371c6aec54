"""The revocation list a CSMS holds, as a value of its own tree, and its way down the
hierarchy.

An operator writes a list signed by the root (``csms revoke``) to ``security/revocations``
of the cloud's tree; a write whose list is not signed by a root the CSMS trusts, or is no
newer than the one it holds, is refused before anything changes (``bad_signature``,
``stale``). Once committed, the CSMS's certificate directory takes it (from then on every
envelope of a revoked actor, and of whatever a revoked site's CA issued, is refused in the
guard) and the list is written to every site below (a local CSMS checks it the same way),
again to each site when it joins, so a site that was away catches up as it comes back. A
restart loads the list from the tree before the CSMS serves anyone.

Stations hold no list: they hear only their own CSMS, whose short certificate lapses if it
is revoked (and a revoked local CSMS is refused by the cloud at once).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable

from actors.csms.own_tree import OwnTree
from actors.runtime.actor import Messenger
from broker_bridge.envelope import Priority
from broker_bridge.session.certificates import CertificateDirectory, RevocationList
from keypath import KeyPath
from object_model import ModelError, Write
from object_model.errors import NotWritableError, StaleError
from object_model.messages import Batch, PropertyValueWrite, WriteItem
from object_model.tree import TransactionCommitted

log = logging.getLogger("csms.revocations")

LIST_PATH = "security/revocations"
_LIST_KEY = KeyPath.parse(LIST_PATH)


class Revocations:
    """See the module docstring. ``downstream``: the sites to pass a list on to."""

    def __init__(self, actor: Messenger, own: OwnTree, directory: CertificateDirectory | None,
                 *, downstream: Callable[[], Iterable[str]] = tuple) -> None:
        self.actor, self.own, self.directory = actor, own, directory
        self.downstream = downstream

    def start(self) -> None:
        """Take the list the tree holds (before serving anyone), then follow changes."""
        stored = self.own.tree.get(LIST_PATH)
        if stored and self.directory is not None:
            try:
                self.directory.revoke(RevocationList.decode(stored, self.directory.anchors))
            except ModelError as exc:
                log.error("%s: the revocation list in its tree is refused (%s)",
                          self.actor.address, exc)
        self.own.vetted_by(self.vet)
        self.own.tree.subscribe(self._changed)

    def vet(self, message: PropertyValueWrite | Batch) -> None:
        """Refuse a write of a list that is not trusted or not newer (before it commits)."""
        schema = self.own.tree.schema
        for op in message.operations(schema.parse_value):
            if isinstance(op, Write):
                path = op.path if isinstance(op.path, KeyPath) else KeyPath.parse(op.path)
                for leaf, _, value in schema.expand(path, op.value):
                    if leaf == _LIST_KEY:
                        self._checked(value)

    def _checked(self, value: object) -> RevocationList:
        directory = self.directory
        if directory is None:
            raise NotWritableError(f"{self.actor.address} trusts no certificates ([signing] "
                                   "anchor): it holds no revocation list")
        if not isinstance(value, bytes):
            raise NotWritableError("a revocation list is bytes")
        listed = RevocationList.decode(value, directory.anchors)
        held = self.held()
        if listed.number <= held:
            raise StaleError(f"revocation list {listed.number} is no newer than the list "
                             f"{held} held here", details={"number": held})
        return listed

    def held(self) -> int:
        """The number of the list in the tree (0 for none); the directory may hold a newer
        one, when it is shared with another CSMS of the process that took it first."""
        stored = self.own.tree.get(LIST_PATH)
        if not stored or self.directory is None:
            return 0
        try:
            return RevocationList.decode(stored, self.directory.anchors).number
        except ModelError:
            return 0

    def _changed(self, event: TransactionCommitted) -> None:
        if self.directory is None or not any(path == _LIST_KEY for path, _ in event.upserts):
            return
        value = self.own.tree.get(LIST_PATH)
        try:
            listed = RevocationList.decode(value, self.directory.anchors)
        except ModelError:
            return  # vetted before it committed: only a local write could get here
        if self.directory.revoke(listed):
            log.warning("%s: revocation list %d taken: %s revoked", self.actor.address,
                        listed.number, ", ".join(sorted(listed.addresses)) or "nobody")
        self.actor.spawn(self._after(listed), "revocations")

    async def _after(self, listed: RevocationList) -> None:
        self.own.tree.apply([Write("security/revocation_number", listed.number),
                             Write("security/revoked", len(listed.addresses))])
        for site in self.downstream():
            self.push(site)

    def push(self, site: str) -> None:
        """Write the list held to ``site`` (a site that holds it already says ``stale``)."""
        value = self.own.tree.get(LIST_PATH)
        if value:
            self.actor.spawn(self._push(site, value), f"revocations:{site}")

    async def _push(self, site: str, value: bytes) -> None:
        try:
            await self.actor.request(site, PropertyValueWrite(
                tree=KeyPath.root(), writes=[WriteItem(path=_LIST_KEY, value=value)]),
                timeout=30, priority=Priority.CRITICAL)
        except ModelError as exc:
            if not isinstance(exc, StaleError):
                log.warning("%s: could not pass the revocation list on to %s (%s); again "
                            "when it joins", self.actor.address, site, exc)


__all__ = ["LIST_PATH", "Revocations"]
