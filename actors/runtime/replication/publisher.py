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
seconds of silence so that subscribers know it is alive. Every notification carries the
visible root digest at its ``to_revision``, so a copy checks what it holds after applying it.

While the process cannot keep up (``pace`` stretched), the interval stretches with it: each
notification then covers more commits (a value changed twice travels once), and the work of
every copy downstream falls by as much. ``coalesced`` counts the commits that went out
folded into another's notification.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from actors.runtime.actor import Messenger
from broker_bridge import Priority
from broker_bridge.backoff import Backoff
from broker_bridge.pace import Pace
from keypath import KeyPath
from object_model import ModelError, ObjectTree, PropertyValueUpdate
from object_model.messages import MAX_ITEMS

_ROOT = KeyPath.root()
RETRY = Backoff(base_s=0.5, cap_s=5.0, floor=0.5)
"""After a round that failed (the store could not write): again within 0.5 s to 5 s."""
log = logging.getLogger("csms.publisher")


@dataclass
class _Subscriber:
    address: str
    tree_path: KeyPath
    published: int  # the last revision this subscriber was told about
    last_sent: float = 0.0


class Publisher:
    """Publishes ``tree``'s changes to subscribers (see the module docstring)."""

    def __init__(self, actor: Messenger, tree: ObjectTree, *,
                 durable: Callable[[int], Awaitable[None]] | None = None,
                 interval: float = 0.25, heartbeat: float = 30.0,
                 priority: Priority = Priority.STATE, pace: Pace | None = None) -> None:
        self.actor = actor
        self.tree = tree
        self.durable = durable
        self.interval = interval
        self.pace = pace or Pace()
        self.heartbeat = heartbeat
        self.priority = priority
        self._subscribers: dict[str, _Subscriber] = {}
        self._changed = asyncio.Event()
        self._unsubscribe = tree.subscribe(lambda event: self._changed.set())
        self.sent = 0
        self.coalesced = 0

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
        """Publish until cancelled (run it as one of the actor's tracked tasks). A round that
        fails (the store cannot write) is logged and tried again: a station that stops
        publishing would look dead to its CSMS while it charges on."""
        clock, failures = self.actor.clock, 0
        while True:
            await clock.wait(self._changed, self.heartbeat)
            self._changed.clear()
            # let more commits join this notification (more of them while the loop lags)
            await clock.sleep(self.interval * self.pace.stretch)
            try:
                await self._round()
            except Exception:
                failures += 1
                log.exception("%s: publishing failed (%d in a row); trying again",
                              self.actor.address, failures)
                self._changed.set()
                await clock.sleep(RETRY.delay(failures, self.actor.rng))
            else:
                failures = 0

    async def _round(self) -> None:
        # what each subscriber is told is fixed here, at one revision R; only once R is
        # durable does it leave (commits made meanwhile go with the next round)
        revision, now = self.tree.revision, self.actor.clock.monotonic()
        due = [(sub, self._update_for(sub, revision)) for sub in self._subscribers.values()
               if sub.published < revision or now - sub.last_sent >= self.heartbeat]
        if not due:
            return
        if self.durable is not None:
            await self.durable(revision)
        for sub, update in due:
            if self._subscribers.get(sub.address) is not sub:
                continue  # unsubscribed, or subscribed afresh, while we waited
            self.actor.send(sub.address, update, priority=self.priority)
            self.coalesced += max(0, revision - sub.published - 1)
            sub.published, sub.last_sent = revision, now
            self.sent += 1

    def _update_for(self, sub: _Subscriber, revision: int) -> PropertyValueUpdate:
        """The notification taking ``sub`` from what it was told to ``revision`` (the tree's
        current one), with the visible root digest there to check against."""
        tree = self.tree
        digest = tree.digest(visible=True)
        try:
            changes = tree.changes_since(sub.published, visible=True)
        except ModelError:
            changes = None  # history compacted past what the subscriber has, or another epoch
        if changes is None or len(changes) > MAX_ITEMS:
            # a notification that starts at the current revision: the gap makes it resync
            return PropertyValueUpdate(tree=sub.tree_path, epoch=tree.epoch,
                                       from_revision=revision, to_revision=revision,
                                       root_digest=digest)
        return PropertyValueUpdate.from_changes(changes, sub.tree_path, root_digest=digest)

    def close(self) -> None:
        self._unsubscribe()
