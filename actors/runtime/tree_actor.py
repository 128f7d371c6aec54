"""An actor that serves trees: the generic read, write and discovery handlers.

What answers a request is the actor's ``trees``, a ``TreeServer``: ``OneTree`` for an actor
that serves its own tree (a station, a resource manager), the CSMS's ``AggregateView`` for its
own tree and its copies of other actors' trees. The handlers are the same for every actor: a
``Batch`` holds discovery requests (each answered on its own, in order) or writes (applied
together, as one transaction), never both.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Protocol

from actors.logic.tree_access import TreeAccess
from actors.runtime.actor import Actor, Context, handles
from keypath import KeyPath
from object_model import MessageBase, ModelError
from object_model.errors import InvalidMessageError, UnknownPathError
from object_model.messages import (
    Batch,
    PropertyTreeDiscoveryRequest,
    PropertyValueRead,
    PropertyValueWrite,
    PropertyValueWriteResponse,
    error_report,
)
from object_model.tree import TransactionCommitted

_ROOT = KeyPath.root()

Commit = Callable[[TreeAccess, PropertyValueWrite | Batch, Context],
                  Awaitable[TransactionCommitted]]
"""Applies a write to the tree ``access`` serves; what a write means to its actor (made
durable, checked against the hardware, stamped) happens here."""


class TreeServer(Protocol):
    """Answers generic requests for the trees an actor serves."""

    def read(self, message: PropertyValueRead, ctx: Context) -> MessageBase: ...

    def discover(self, message: PropertyTreeDiscoveryRequest, ctx: Context) -> MessageBase: ...

    async def write(self, message: PropertyValueWrite | Batch, ctx: Context) -> MessageBase: ...


async def apply_write(access: TreeAccess, message: PropertyValueWrite | Batch,
                      ctx: Context) -> TransactionCommitted:
    """The plain commit: check the sender's grants and apply, all or nothing."""
    return access.write(ctx.require_role(), message)


class OneTree:
    """Serves one tree, addressed as the root (``UNKNOWN_PATH`` for any other tree)."""

    def __init__(self, address: str, access: TreeAccess, commit: Commit = apply_write) -> None:
        self.address = address
        self.access = access
        self.commit = commit

    def access_for(self, tree: KeyPath) -> TreeAccess:
        if tree.segments:
            raise UnknownPathError(f"{self.address} serves one tree: address it with tree ''",
                                   path=tree)
        return self.access

    def read(self, message: PropertyValueRead, ctx: Context) -> MessageBase:
        role = ctx.require_role()
        return self.access_for(message.tree).read(role, message.paths)

    def discover(self, message: PropertyTreeDiscoveryRequest, ctx: Context) -> MessageBase:
        role = ctx.require_role()
        return self.access_for(message.tree).discover(role, message)

    async def write(self, message: PropertyValueWrite | Batch, ctx: Context) -> MessageBase:
        access = self.access_for(message.tree)
        event = await self.commit(access, message, ctx)
        return written(message.tree, access, event)


def written(tree: KeyPath, access: TreeAccess, event: TransactionCommitted
            ) -> PropertyValueWriteResponse:
    """The answer to a write that committed as ``event``."""
    return PropertyValueWriteResponse(tree=tree, epoch=access.tree.epoch,
                                      revision=event.revision, changed=event.changed)


class TreeActor(Actor):
    """An actor answering PropertyValueRead/Write, Batch and PropertyTreeDiscovery from its
    ``trees`` (set before ``start``)."""

    trees: TreeServer

    @handles(PropertyValueRead)
    async def on_read(self, message: PropertyValueRead, ctx: Context) -> MessageBase:
        return self.trees.read(message, ctx)

    @handles(PropertyValueWrite)
    async def on_write(self, message: PropertyValueWrite, ctx: Context) -> MessageBase:
        return await self.trees.write(message, ctx)

    @handles(PropertyTreeDiscoveryRequest)
    async def on_discover(self, message: PropertyTreeDiscoveryRequest, ctx: Context
                          ) -> MessageBase:
        return self.trees.discover(message, ctx)

    @handles(Batch)
    async def on_batch(self, batch: Batch, ctx: Context) -> MessageBase:
        kinds = {type(item) for item in batch.items}
        if kinds == {PropertyTreeDiscoveryRequest}:
            return self._discover_many(batch, ctx)
        if kinds == {PropertyValueWrite}:
            return await self.trees.write(batch, ctx)
        raise InvalidMessageError(
            "a Batch holds either discovery requests or writes (one transaction), not "
            + (", ".join(sorted(k.__name__ for k in kinds)) or "nothing"),
            details={"kinds": sorted(k.__name__ for k in kinds)})

    def _discover_many(self, batch: Batch, ctx: Context) -> MessageBase:
        """A batch of discoveries (a CSMS resynchronising many copies at once): one answer
        per item, in order; an item that fails is answered by its ErrorReport. Answers do not
        repeat their request's ``tree`` (the position says which request they answer)."""
        answers: list[MessageBase] = []
        for item in batch.items:
            assert isinstance(item, PropertyTreeDiscoveryRequest)  # checked by on_batch
            try:
                answer = self.trees.discover(item, ctx)
            except ModelError as exc:
                answers.append(error_report(exc))
            else:
                answers.append(answer.model_copy(update={"tree": _ROOT}))
        return Batch(tree=batch.tree, items=answers)


__all__ = ["Commit", "OneTree", "TreeActor", "TreeServer", "apply_write", "written"]
