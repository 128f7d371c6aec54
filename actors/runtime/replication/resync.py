"""Resynchronisation: bring copies of other actors' trees up to date with the least exchange.

``ResyncEngine`` runs a ``ResyncPlan`` (``actors.logic.resync_plan``, where the theory of
operation is) per copy, a bounded number at a time, at state priority, so a thousand stations
coming back do not drown control traffic, and counts every byte exchanged. Requests to one
source issued within a few milliseconds travel together in one ``Batch`` (and come back in
one), so a site's hundred stations cost one envelope per round, not a hundred. A run that
fails is retried with backoff; after the last retry the copy waits for its next trigger.
"""

from __future__ import annotations

import asyncio
import logging
import zlib
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from actors.logic.resync_plan import DIGEST_SCHEDULE, MAX_LEAVES, ResyncError, ResyncPlan
from actors.runtime.actor import Messenger
from actors.runtime.replication.replica import Replica
from broker_bridge import Envelope, Priority
from broker_bridge.backoff import Backoff
from broker_bridge.codec import encode_envelope
from object_model.messages import (
    Batch,
    ErrorReport,
    MessageBase,
    PropertyTreeDiscoveryRequest,
    PropertyTreeDiscoveryResponse,
)

log = logging.getLogger("csms.resync")


@dataclass
class ResyncOutcome:
    """What one resynchronisation did and cost."""

    mode: str  # "changes", "descent", "full", "relabel"
    requests: int = 0
    bytes: float = 0.0  # encoded envelopes (msgpack), this copy's share of batched exchanges
    wire_bytes: float = 0.0  # the same deflated, as frames carry them (before XMPP's base64)
    leaves: int = 0
    deletes: int = 0
    seconds: float = 0.0
    consistent: bool = False


@dataclass
class ResyncStats:
    """What an engine's runs did: ``by_mode`` counts the runs that succeeded per mode,
    ``wire_bytes_by_mode`` and ``leaves_by_mode`` what they exchanged."""

    runs: int = 0
    failures: int = 0
    bytes: float = 0.0
    wire_bytes: float = 0.0
    seconds: float = 0.0  # of the runs counted in ``runs``
    by_mode: dict[str, int] = field(default_factory=dict)
    wire_bytes_by_mode: dict[str, float] = field(default_factory=dict)
    leaves_by_mode: dict[str, int] = field(default_factory=dict)

    def count(self, outcome: ResyncOutcome) -> None:
        """One run that succeeded."""
        mode = outcome.mode
        self.runs += 1
        self.bytes += outcome.bytes
        self.wire_bytes += outcome.wire_bytes
        self.seconds += outcome.seconds
        self.by_mode[mode] = self.by_mode.get(mode, 0) + 1
        self.wire_bytes_by_mode[mode] = self.wire_bytes_by_mode.get(mode, 0.0) + outcome.wire_bytes
        self.leaves_by_mode[mode] = self.leaves_by_mode.get(mode, 0) + outcome.leaves


RETRIES = Backoff(base_s=1.0, cap_s=60.0, factor=4.0, floor=0.5, attempts=4)
"""After a failed run: again within 1, 4, 16 and 60 s, then wait for the next trigger."""


class _Coalescer:
    """Sends the discovery requests for one source that arrive within ``window`` seconds as one
    ``Batch``, and hands each requester its answer and its share of the bytes."""

    def __init__(self, actor: Messenger, source: str, *, window: float, max_items: int,
                 priority: Priority, timeout: float) -> None:
        self.actor, self.source = actor, source
        self.window, self.max_items = window, max_items
        self.priority, self.timeout = priority, timeout
        self._queue: list[tuple[PropertyTreeDiscoveryRequest, asyncio.Future[Any]]] = []
        self._flush: asyncio.TimerHandle | None = None

    def ask(self, request: PropertyTreeDiscoveryRequest) -> asyncio.Future[Any]:
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._queue.append((request, future))
        if len(self._queue) >= self.max_items:
            self._send()
        elif self._flush is None:
            self._flush = asyncio.get_running_loop().call_later(self.window, self._send)
        return future

    def _send(self) -> None:
        if self._flush is not None:
            self._flush.cancel()
            self._flush = None
        items, self._queue = self._queue, []
        if items:
            self.actor.spawn(self._exchange(items), f"resync-batch:{self.source}")

    async def _exchange(self, items: list[tuple[PropertyTreeDiscoveryRequest,
                                                asyncio.Future[Any]]]) -> None:
        message: MessageBase = items[0][0] if len(items) == 1 else Batch(
            items=[request for request, _ in items])
        try:
            answer, sent, got = await self.actor.exchange(
                self.source, message, timeout=self.timeout, priority=self.priority)
        except Exception as exc:
            for _, future in items:
                if not future.done():
                    future.set_exception(exc)
            return
        sizes = [_sizes(sent), _sizes(got)]
        share = (sum(s for s, _ in sizes) / len(items), sum(w for _, w in sizes) / len(items))
        answers = answer.items if isinstance(answer, Batch) else [answer]
        if len(answers) != len(items):
            error = ResyncError(f"{self.source} answered {len(answers)} of {len(items)} items")
            for _, future in items:
                if not future.done():
                    future.set_exception(error)
            return
        for (_, future), item in zip(items, answers, strict=True):
            if future.done():
                continue
            if isinstance(item, ErrorReport):
                future.set_exception(item.to_exception())
            else:
                future.set_result((item, share))


class ResyncEngine:
    """Resynchronises replicas for ``actor``, ``concurrency`` at a time.

    A run that fails (the source is unreachable, answers nonsense, or sends more than
    ``max_leaves``) is retried after ``retries`` delays; once it gives up the copy waits for
    its next trigger (an update, a join)."""

    def __init__(self, actor: Messenger, *, concurrency: int = 64,
                 digest_schedule: tuple[int, ...] = DIGEST_SCHEDULE,
                 priority: Priority = Priority.STATE, timeout: float = 20.0,
                 batch_window: float = 0.004, batch_items: int = 128,
                 max_leaves: int = MAX_LEAVES, retries: Backoff = RETRIES,
                 on_synced: Callable[[Replica, ResyncOutcome], Awaitable[None]] | None = None
                 ) -> None:
        self.actor = actor
        self.max_leaves = max_leaves
        self.retries = retries
        self.digest_schedule = digest_schedule
        self.priority = priority
        self.timeout = timeout
        self.batch_window = batch_window
        self.batch_items = batch_items
        self.on_synced = on_synced
        self._coalescers: dict[str, _Coalescer] = {}
        self._slots = asyncio.Semaphore(concurrency)
        self._running: dict[str, asyncio.Task[ResyncOutcome | None]] = {}
        # copies asked for again while running: what they must reach (None: run once more)
        self._again: dict[str, list[tuple[int, int]] | None] = {}
        self.stats = ResyncStats()

    @property
    def busy(self) -> int:
        """Resynchronisations running or waiting for a slot."""
        return len(self._running)

    def is_running(self, key: str) -> bool:
        """Whether ``key``'s copy is being resynchronised (or waits for a slot or a retry)."""
        return key in self._running

    def schedule(self, replica: Replica, *, reach: tuple[int, int] | None = None
                 ) -> asyncio.Task[ResyncOutcome | None]:
        """Resynchronise ``replica`` soon. Asking again while it runs makes it run once more
        afterwards (its source moved on during the run), unless ``reach`` (an epoch and a
        revision the source announced) says what it must reach and the run got there."""
        task = self._running.get(replica.key)
        if task is not None:
            if reach is None:
                self._again[replica.key] = None
            elif (targets := self._again.setdefault(replica.key, [])) is not None:
                targets.append(reach)
            return task
        task = self.actor.spawn(self._run(replica), f"resync:{replica.key}")
        self._running[replica.key] = task
        return task

    async def _run(self, replica: Replica) -> ResyncOutcome | None:
        outcome = None
        failures = 0
        try:
            while True:
                async with self._slots:
                    try:
                        outcome = await self.sync(replica)
                    except Exception as exc:
                        self.stats.failures += 1
                        outcome = None
                        failures += 1
                        log.warning("%s: resync of %s from %s failed (attempt %d): %s",
                                    self.actor.address, replica.key, replica.source, failures,
                                    exc)
                if outcome is not None:
                    failures = 0
                    if self.on_synced is not None:
                        try:
                            await self.on_synced(replica, outcome)
                        except Exception:
                            log.exception("%s: after resync of %s", self.actor.address,
                                          replica.key)
                elif not self.retries.gives_up(failures):
                    await self.actor.clock.sleep(self.retries.delay(failures, self.actor.rng))
                    continue
                if not self._run_again(replica, outcome):
                    return outcome
        finally:
            self._running.pop(replica.key, None)
            self._again.pop(replica.key, None)

    def _run_again(self, replica: Replica, outcome: ResyncOutcome | None) -> bool:
        if replica.key not in self._again:
            return False
        targets = self._again.pop(replica.key)
        tree = replica.tree
        return (targets is None or outcome is None or not all(
            epoch == tree.epoch and revision <= tree.revision for epoch, revision in targets))

    async def wait_idle(self) -> None:
        """Until no resynchronisation is running or queued."""
        while self._running:
            await asyncio.gather(*self._running.values(), return_exceptions=True)

    # -- one resynchronisation -------------------------------------------------------------------

    async def sync(self, replica: Replica) -> ResyncOutcome:
        """Bring ``replica`` to its source's state now (see ``ResyncPlan``)."""
        started = self.actor.clock.monotonic()
        outcome = ResyncOutcome(mode="changes")
        plan = ResyncPlan(replica.tree, replica.remote_tree, synced=replica.synced,
                          digest_schedule=self.digest_schedule, max_leaves=self.max_leaves,
                          source=replica.source)
        ask = self._asker(replica, outcome)
        while (request := plan.next_request()) is not None:
            plan.take(await ask(request))
        outcome.mode, outcome.leaves, outcome.deletes = plan.mode, plan.leaves, plan.deletes
        replica.synced = True
        outcome.consistent = True
        outcome.seconds = self.actor.clock.monotonic() - started
        self.stats.count(outcome)
        return outcome

    def _asker(self, replica: Replica, outcome: ResyncOutcome) -> Any:
        coalescer = self._coalescers.get(replica.source)
        if coalescer is None:
            coalescer = self._coalescers[replica.source] = _Coalescer(
                self.actor, replica.source, window=self.batch_window,
                max_items=self.batch_items, priority=self.priority, timeout=self.timeout)

        async def ask(message: PropertyTreeDiscoveryRequest) -> PropertyTreeDiscoveryResponse:
            answer, (share, wire) = await coalescer.ask(message)
            outcome.requests += 1
            outcome.bytes += share
            outcome.wire_bytes += wire
            if not isinstance(answer, PropertyTreeDiscoveryResponse):
                raise ResyncError(f"{replica.source} answered discovery with "
                                  f"{type(answer).__name__}")
            return answer

        return ask


def _sizes(env: Envelope) -> tuple[int, int]:
    """An envelope's encoded size and its size in a frame (deflated when that pays, as the
    session's frames are)."""
    data = encode_envelope(env)
    packed = len(zlib.compress(data, 1))
    return len(data), packed if packed < len(data) * 0.9 else len(data)


__all__ = ["RETRIES", "ResyncEngine", "ResyncError", "ResyncOutcome", "ResyncStats"]
