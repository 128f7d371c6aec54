"""The revocation list a CSMS holds, as a value of its own tree, and its way down the
hierarchy (how a write of one is judged: ``actors.logic.revocations``).

An operator writes a list signed by the root (``csms revoke``) to ``security/revocations``
of the cloud's tree; a write whose list is not signed by a root the CSMS trusts, or is no
newer than the one it holds, is refused before anything changes (``bad_signature``,
``stale``). Once committed, the CSMS's certificate directory takes it (from then on every
envelope of a revoked actor, and of whatever a revoked site's CA issued, is refused in the
guard) and the list is written to every member below: the cloud's sites, a site's stations
(each checks it the same way and its guard takes it: a station hears the operator directly
too), and again to each member that joins holding an older one, so a member that was away
catches up as it comes back. A restart loads the list from the tree before serving anyone.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable

from actors.csms.own_tree import OwnTree
from actors.logic.revocations import (
    LIST_PATH,
    NUMBER_PATH,
    checked_list,
    stored_list,
    written_list,
)
from actors.runtime.actor import Messenger
from broker_bridge.envelope import Priority
from broker_bridge.session.certificates import CertificateDirectory, RevocationList
from keypath import KeyPath
from object_model import ModelError, Write
from object_model.errors import StaleError
from object_model.messages import Batch, PropertyValueWrite, WriteItem
from object_model.tree import TransactionCommitted

log = logging.getLogger("csms.revocations")

_LIST_KEY = KeyPath.parse(LIST_PATH)


class Revocations:
    """See the module docstring. ``downstream``: the sites to pass a list on to."""

    def __init__(self, actor: Messenger, own: OwnTree, directory: CertificateDirectory | None,
                 *, downstream: Callable[[], Iterable[str]] = tuple) -> None:
        self.actor, self.own, self.directory = actor, own, directory
        self.downstream = downstream

    def start(self) -> None:
        """Take the list the tree holds (before serving anyone), then follow changes."""
        if self.directory is not None:
            try:
                listed = stored_list(self.own.tree.get(LIST_PATH), self.directory)
                if listed is not None:
                    self.directory.revoke(listed)
            except ModelError as exc:
                log.error("%s: the revocation list in its tree is refused (%s)",
                          self.actor.address, exc)
        self.own.vetted_by(self.vet)
        self.own.tree.subscribe(self._changed)

    def vet(self, message: PropertyValueWrite | Batch) -> None:
        """Refuse a write of a list that is not trusted or not newer (before it commits)."""
        schema = self.own.tree.schema
        value = written_list(schema, message.operations(schema.parse_value))
        if value is not None:
            checked_list(value, self.directory, held=self.held(), holder=self.actor.address)

    def held(self) -> int:
        """The number of the list in the tree (0 for none); the directory may hold a newer
        one, when it is shared with another CSMS of the process that took it first."""
        if self.directory is None:
            return 0
        try:
            listed = stored_list(self.own.tree.get(LIST_PATH), self.directory)
        except ModelError:
            return 0
        return 0 if listed is None else listed.number

    def _changed(self, event: TransactionCommitted) -> None:
        if self.directory is None or not any(path == _LIST_KEY for path, _ in event.upserts):
            return
        try:
            listed = stored_list(self.own.tree.get(LIST_PATH), self.directory)
        except ModelError:
            return  # vetted before it committed: only a local write could get here
        if listed is None:
            return
        if self.directory.revoke(listed):
            log.warning("%s: revocation list %d taken: %s revoked", self.actor.address,
                        listed.number, ", ".join(sorted(listed.addresses)) or "nobody")
        self.actor.spawn(self._after(listed), "revocations")

    async def _after(self, listed: RevocationList) -> None:
        self.own.tree.apply([Write(NUMBER_PATH, listed.number),
                             Write("security/revoked", len(listed.addresses))])
        for site in self.downstream():
            self.push(site)

    def push(self, member: str, holds: int | None = None) -> None:
        """Write the list held to ``member`` (a site, a station), unless it ``holds`` one as
        new (a member that holds it already says ``stale``)."""
        value = self.own.tree.get(LIST_PATH)
        if value and (holds is None or holds < self.held()):
            self.actor.spawn(self._push(member, value), f"revocations:{member}")

    async def _push(self, member: str, value: bytes) -> None:
        try:
            await self.actor.request(member, PropertyValueWrite(
                tree=KeyPath.root(), writes=[WriteItem(path=_LIST_KEY, value=value)]),
                timeout=30, priority=Priority.CRITICAL)
        except ModelError as exc:
            if not isinstance(exc, StaleError):
                log.warning("%s: could not pass the revocation list on to %s (%s); again "
                            "when it joins", self.actor.address, member, exc)


__all__ = ["Revocations"]
