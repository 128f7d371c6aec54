"""The site's operational permissions, given to every station of the site.

An operator sets them in the local CSMS's own tree (``policy/...``); every station whose copy
shows other permissions is written, one write at a time per station: when it joins or is
resynchronised, when the policy changes, and now and then for every synced, online station
(a write that was lost, a station that changed them itself).
"""

from __future__ import annotations

import logging

from actors.csms.own_tree import OwnTree
from actors.csms.replicas import ReplicaSet
from actors.runtime.actor import Messenger
from actors.runtime.replication.replica import Replica
from keypath import KeyPath
from object_model import ModelError
from object_model.messages import PropertyValueWrite, WriteItem
from object_model.tree import TransactionCommitted

log = logging.getLogger("csms.policy")

POLICY_PATHS = {
    "may_charge": "permissions/may_charge",
    "may_discharge": "permissions/may_discharge",
    "needs_authorisation": "permissions/needs_authorisation",
    "max_power_w": "permissions/max_power_w",
}


class SitePolicy:
    """Gives the site's stations the permissions in ``own``'s ``policy/`` (see the module
    docstring), checking every ``check_s`` seconds."""

    def __init__(self, actor: Messenger, *, own: OwnTree, copies: ReplicaSet,
                 check_s: float) -> None:
        self.actor, self.address = actor, actor.address
        self.own, self.copies, self.check_s = own, copies, check_s
        self._pending: set[str] = set()

    def start(self) -> None:
        """Follow the policy from now on (the own tree must be open)."""
        self.own.tree.subscribe(self._own_changed)
        self.actor.spawn(self._reconcile(), "policy")

    def writes_for(self, replica: Replica) -> list[WriteItem]:
        """What to write to make a station's permissions the site's, judged by its copy."""
        policy = self.own.tree.read("policy")
        writes = []
        for name, path in POLICY_PATHS.items():
            try:
                current = replica.tree.get(path)
            except ModelError:
                current = None
            if current != policy[name]:
                writes.append(WriteItem(path=KeyPath.parse(path), value=policy[name]))
        return writes

    async def apply(self, replica: Replica) -> None:
        """Give a station the site's permissions where its copy differs (one write at a time
        per station; the periodic check retries what failed)."""
        if replica.key in self._pending or not (writes := self.writes_for(replica)):
            return
        self._pending.add(replica.key)
        try:
            await self.actor.request(replica.source, PropertyValueWrite(
                tree=replica.remote_tree, writes=writes), timeout=10)
        except ModelError as exc:
            log.warning("%s: could not give %s the site permissions (retried within %g s): %s",
                        self.address, replica.key, self.check_s, exc)
        finally:
            self._pending.discard(replica.key)

    def apply_soon(self, replica: Replica) -> None:
        self.actor.spawn(self.apply(replica), f"policy:{replica.key}")

    async def _reconcile(self) -> None:
        copies = self.copies
        while True:
            await self.actor.clock.sleep(self.check_s)
            for replica in list(copies.replicas.values()):
                if (replica.synced and replica.key not in self._pending
                        and not copies.resync.is_running(replica.key)
                        and copies.is_online(replica) and self.writes_for(replica)):
                    self.apply_soon(replica)

    def _own_changed(self, event: TransactionCommitted) -> None:
        if any(str(path).startswith("policy/") for path, _ in event.upserts):
            for replica in list(self.copies.replicas.values()):
                self.apply_soon(replica)


__all__ = ["POLICY_PATHS", "SitePolicy"]
