"""What every CSMS manages stations with, local or cloud: its own tree, the copies of its
stations' trees, the aggregate view it serves of both, the task relay, the fan-out of one
command to many stations and the blob cache, with the sample and blob stores they keep beside
the CSMS's tree store. Built, opened and closed together; each actor holds the parts as its
own attributes and adds what is its alone.
"""

from __future__ import annotations

from pathlib import Path

from actors.csms.aggregate_view import AggregateView
from actors.csms.fan_out import FanOut
from actors.csms.own_tree import OwnTree
from actors.csms.replicas import CopyEvents, ReplicaSet
from actors.csms.settings import CsmsSettings
from actors.csms.task_relay import TaskRelay
from actors.runtime.actor import Context, Messenger
from actors.runtime.services.blob_service import BlobService
from actors.runtime.storage.blobs import BlobStore
from actors.runtime.storage.samples import SampleStore
from actors.runtime.storage.trees import TreeStore
from keypath import KeyPath
from object_model import MessageBase, Role
from object_model.messages import PropertyValueWrite


def beside(store: TreeStore, what: str) -> Path:
    """The file of another store kept next to ``store``'s (``trees.db`` -> ``trees.what.db``)."""
    return store.path.with_name(f"{store.path.stem}.{what}.db")


class Management:
    """The parts (see the module docstring) of ``actor``, a CSMS playing ``role``."""

    def __init__(self, actor: Messenger, role: Role, store: TreeStore, settings: CsmsSettings,
                 events: CopyEvents | None = None) -> None:
        self.actor, self.settings = actor, settings
        self.own = OwnTree(actor, role, store)
        self.copies = ReplicaSet(actor, self.own, store, settings, events)
        self.view = AggregateView(actor, self.own, self.copies)
        self.blobs = BlobService(actor, BlobStore(beside(store, "blobs"), clock=actor.clock))
        self.tasks = TaskRelay(actor, own=self.own, copies=self.copies, policy=self.own.policy,
                               blobs=self.blobs,
                               samples=SampleStore(beside(store, "samples"), clock=actor.clock))
        self.fan_out = FanOut(actor, self.copies, handle=self._for_one_station,
                              check=self._may_for_one_station)

    async def _for_one_station(self, message: MessageBase, ctx: Context) -> MessageBase | None:
        """A fan-out's item for one station, handled as if it had come alone."""
        if isinstance(message, PropertyValueWrite):
            return await self.view.write(message, ctx)
        return await self.tasks.handle(message, ctx)

    def _may_for_one_station(self, message: MessageBase, role: Role, tree: KeyPath) -> None:
        """The rights a fan-out's item needs of ``role`` on the station at ``tree``, checked
        here before it goes on to a site (which sees only our role, not the requester's)."""
        if isinstance(message, PropertyValueWrite):
            self.view.check_forward(role, tree, message)
        else:
            self.tasks.check(role, tree, message)

    async def open(self) -> None:
        """Open the stores, load the own tree and the copies, start resynchronising them all."""
        await self.tasks.samples.open()
        await self.blobs.store.open()
        await self.tasks.open()
        await self.own.open()
        await self.copies.open()
        self.actor.spawn(self.own.run(self.settings.counters_every_s), "counters")

    async def close(self) -> None:
        """Make everything durable and close the stores (the actor's tasks are stopped)."""
        try:
            await self.copies.close()
            await self.own.close()
        finally:
            await self.tasks.samples.close()
            await self.blobs.store.close()


__all__ = ["Management", "beside"]
