"""An actor that serves trees: the generic read, write and discovery handlers.

Subclasses say which tree answers a request (``access_for``): a station answers from its own
tree; a CSMS routes ``stations/<id>/...`` to its copy of that station. Writes are committed by
``commit``, which subclasses extend (a station persists and publishes; a CSMS forwards writes
for stations to the station itself).
"""

from __future__ import annotations

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


def only_tree(address: str, tree: KeyPath, access: TreeAccess) -> TreeAccess:
    """``access`` for an actor that serves one tree, addressed as the root (``UNKNOWN_PATH``
    for any other)."""
    if tree.segments:
        raise UnknownPathError(
            f"{address} serves one tree: address it with tree ''", path=tree)
    return access


class TreeActor(Actor):
    """Answers PropertyValueRead/Write, Batch and PropertyTreeDiscovery for its trees."""

    def access_for(self, tree: KeyPath, ctx: Context) -> TreeAccess:
        """The tree serving requests addressed to ``tree`` (``UNKNOWN_PATH`` if none)."""
        raise UnknownPathError(f"no tree {tree} here", path=tree)

    async def commit(self, access: TreeAccess, message: PropertyValueWrite | Batch,
                     ctx: Context) -> TransactionCommitted:
        """Apply a checked write; subclasses add persistence, publication or forwarding."""
        return access.write(ctx.require_role(), message)

    @handles(PropertyValueRead)
    async def on_read(self, message: PropertyValueRead, ctx: Context) -> MessageBase:
        role = ctx.require_role()
        return self.access_for(message.tree, ctx).read(role, message.paths)

    @handles(PropertyValueWrite)
    async def on_write(self, message: PropertyValueWrite | Batch, ctx: Context) -> MessageBase:
        """A write, or a ``Batch`` of writes: one transaction on one tree."""
        access = self.access_for(message.tree, ctx)
        event = await self.commit(access, message, ctx)
        return PropertyValueWriteResponse(tree=message.tree, epoch=access.tree.epoch,
                                          revision=event.revision, changed=event.changed)

    @handles(Batch)
    async def on_batch(self, batch: Batch, ctx: Context) -> MessageBase:
        """A ``Batch`` holds discovery requests (each answered on its own, in order) or
        writes (applied together, as one transaction), not both."""
        kinds = {type(item) for item in batch.items}
        if kinds == {PropertyTreeDiscoveryRequest}:
            return await self.on_discover_many(batch, ctx)
        if kinds == {PropertyValueWrite}:
            return await self.on_write(batch, ctx)
        raise InvalidMessageError(
            "a Batch holds either discovery requests or writes (one transaction), not "
            + (", ".join(sorted(k.__name__ for k in kinds)) or "nothing"),
            details={"kinds": sorted(k.__name__ for k in kinds)})

    @handles(PropertyTreeDiscoveryRequest)
    async def on_discover(self, message: PropertyTreeDiscoveryRequest, ctx: Context
                          ) -> MessageBase:
        role = ctx.require_role()
        return self.access_for(message.tree, ctx).discover(role, message)

    async def on_discover_many(self, batch: Batch, ctx: Context) -> MessageBase:
        """A batch of discoveries (a CSMS resynchronising many copies at once): one answer
        per item, in order; an item that fails is answered by its ErrorReport. Answers do not
        repeat their request's ``tree`` (the position says which request they answer)."""
        answers: list[MessageBase] = []
        for item in batch.items:
            try:
                answer = await self.on_discover(item, ctx)  # type: ignore[arg-type]
            except ModelError as exc:
                answers.append(error_report(exc))
            else:
                answers.append(answer.model_copy(update={"tree": _ROOT}))
        return Batch(tree=batch.tree, items=answers)
