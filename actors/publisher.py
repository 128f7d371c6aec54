"""Publishing a tree's changes to the actors that keep copies of it.

A station tells its CSMS what changed with ``PropertyValueUpdate`` notifications. Each one
names the revision it starts from, so the chain checks itself: a copy that receives an update
starting after its own revision knows it missed something and resynchronises (cheaply, by
``changes_since``). That makes plain, unacknowledged envelopes the right carrier: during an
outage nothing piles up in an outbox, and after it one resynchronisation replaces a backlog of
retransmissions.

The publisher coalesces the commits of ``interval`` seconds into one notification per
subscriber, publishes only revisions that are durable (a crash must never make a station reuse
a revision number its CSMS has seen), and sends an empty notification after ``heartbeat``
seconds of silence so that subscribers know it is alive.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from actors.base import Actor
from broker_bridge import Priority
from keypath import KeyPath
from object_model import ModelError, ObjectTree, PropertyValueUpdate
from object_model.messages import MAX_ITEMS

_ROOT = KeyPath.root()


@dataclass
class _Subscriber:
    address: str
    tree_path: KeyPath
    published: int  # the last revision this subscriber was told about
    last_sent: float = 0.0


class Publisher:
    """Publishes ``tree``'s changes to subscribers (see the module docstring)."""

    def __init__(self, actor: Actor, tree: ObjectTree, *,
                 durable: Callable[[int], Awaitable[None]] | None = None,
                 interval: float = 0.25, heartbeat: float = 30.0,
                 priority: Priority = Priority.STATE) -> None:
        self.actor = actor
        self.tree = tree
        self.durable = durable
        self.interval = interval
        self.heartbeat = heartbeat
        self.priority = priority
        self._subscribers: dict[str, _Subscriber] = {}
        self._changed = asyncio.Event()
        self._unsubscribe = tree.subscribe(lambda event: self._changed.set())
        self.sent = 0

    def subscribe(self, address: str, *, from_revision: int,
                  tree_path: KeyPath = _ROOT) -> None:
        """Tell ``address`` about every change after ``from_revision`` (its copy's revision)."""
        self._subscribers[address] = _Subscriber(address, tree_path, from_revision)
        self._changed.set()

    def unsubscribe(self, address: str) -> None:
        self._subscribers.pop(address, None)

    @property
    def subscribers(self) -> list[str]:
        return list(self._subscribers)

    async def run(self) -> None:
        """Publish until cancelled (run it as one of the actor's tracked tasks)."""
        loop = asyncio.get_running_loop()
        while True:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self.heartbeat):
                    await self._changed.wait()
            self._changed.clear()
            await asyncio.sleep(self.interval)  # let more commits join this notification
            revision = self.tree.revision
            if self.durable is not None:
                await self.durable(revision)
            now = loop.time()
            for sub in list(self._subscribers.values()):
                if sub.published < revision or now - sub.last_sent >= self.heartbeat:
                    self._publish(sub, revision, now)

    def _publish(self, sub: _Subscriber, revision: int, now: float) -> None:
        tree = self.tree
        try:
            changes = tree.changes_since(sub.published, visible=True)
        except ModelError:
            # history compacted past what the subscriber has (or another epoch): send a
            # notification that starts at the current revision; the gap makes it resync
            update = PropertyValueUpdate(tree=sub.tree_path, epoch=tree.epoch,
                                         from_revision=revision, to_revision=revision)
        else:
            if len(changes) > MAX_ITEMS:  # too much to tell: make it resynchronise instead
                update = PropertyValueUpdate(tree=sub.tree_path, epoch=tree.epoch,
                                             from_revision=revision, to_revision=revision)
            else:
                update = PropertyValueUpdate.from_changes(changes, sub.tree_path)
        self.actor.send(sub.address, update, priority=self.priority)
        sub.published = revision
        sub.last_sent = now
        self.sent += 1

    def close(self) -> None:
        self._unsubscribe()
