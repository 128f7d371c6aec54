"""Resynchronisation: bring a copy of another actor's tree up to date with the least exchange.

Theory of operation (DESIGN.md section 7). A copy (``Replica``) mirrors its source's epoch and
per-leaf revisions, so:

1. *Same epoch.* Ask for ``changes_since`` the copy's revision: the answer is exactly what
   changed (the floor), plus the source's root digest, which the copy must match afterwards.
2. *New epoch, or history compacted past the copy's revision.* Digest descent: compare the
   source's children digests (truncated to ``digest_bytes``; the final check uses the whole root
   digest) with the copy's, level by level, opening only subtrees that differ. Differing leaves
   and subtrees the copy lacks are fetched, subtrees the source lacks are deleted, and the copy
   ``adopt``s the result at the revision the descent started from (``R0``). Whatever changed at
   the source during the descent is then caught up with ``changes_since(R0)``, which the
   source can serve because the copy now shares its epoch, and the root digest is checked.
3. *Empty copy.* Fetch everything once.

The engine runs a bounded number of these at a time at state priority, so a thousand stations
coming back do not drown control traffic, and counts every byte it exchanges. Requests to one
source issued within a few milliseconds travel together in one ``Batch`` (and come back in
one), so a site's hundred stations cost one envelope per round, not a hundred.

Interior digests are compared at 1 byte first: a collision makes a differing subtree look equal,
which the final whole-root-digest check catches; the descent then goes round again at 4, then 16
bytes, and since the copy already matches everywhere else, the second round only opens what
still differs. A copy is never left wrong, and the short digests cost far less than the rare
second round.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
import zlib
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from actors.runtime.actor import Actor
from broker_bridge import Envelope, Priority
from broker_bridge.codec import encode_envelope
from keypath import GLOBSTAR, KeyPath, KeyPattern
from object_model import ChangeSet, Leaf, ObjectTree
from object_model.messages import (
    Batch,
    ChildDigest,
    ErrorReport,
    MessageBase,
    NodeDigests,
    PropertyTreeDiscoveryRequest,
    PropertyTreeDiscoveryResponse,
    children_shape,
    unpack_children,
)

log = logging.getLogger("csms.resync")


@dataclass
class Replica:
    """A copy of another actor's tree and where to refresh it: ``source`` answers discovery
    for it as ``remote_tree`` (``""`` for a station's own tree, ``stations/cs-17`` at a local
    CSMS). ``synced`` is False until the copy first shares the source's epoch."""

    key: str
    source: str
    remote_tree: KeyPath
    tree: ObjectTree
    synced: bool = False
    last_seen: float = 0.0


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
    runs: int = 0
    failures: int = 0
    bytes: float = 0.0
    wire_bytes: float = 0.0
    seconds: float = 0.0  # of the runs counted in ``runs``
    by_mode: dict[str, int] = field(default_factory=dict)


class ResyncError(RuntimeError):
    """A copy could not be brought to the source's state (retried later)."""


DIGEST_BYTES = 16
DIGEST_SCHEDULE = (1, 4, DIGEST_BYTES)
MAX_LEAVES = 50_000  # a station tree holds a few hundred; a source sending more is broken
FRONTIER_CHUNK = 4096  # subtrees whose children one discovery request asks for
RETRY_DELAYS = (1.0, 4.0, 15.0, 60.0)  # after failed runs; then wait for the next trigger


class _Coalescer:
    """Sends the discovery requests for one source that arrive within ``window`` seconds as one
    ``Batch``, and hands each requester its answer and its share of the bytes."""

    def __init__(self, actor: Actor, source: str, *, window: float, max_items: int,
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
    ``max_leaves``) is retried after ``retry_delays`` (jittered); after the last one the copy
    waits for its next trigger (an update, a join)."""

    def __init__(self, actor: Actor, *, concurrency: int = 64,
                 digest_schedule: tuple[int, ...] = DIGEST_SCHEDULE,
                 priority: Priority = Priority.STATE, timeout: float = 20.0,
                 batch_window: float = 0.004, batch_items: int = 128,
                 max_leaves: int = MAX_LEAVES,
                 retry_delays: tuple[float, ...] = RETRY_DELAYS,
                 on_synced: Callable[[Replica, ResyncOutcome], Awaitable[None]] | None = None
                 ) -> None:
        self.actor = actor
        self.max_leaves = max_leaves
        self.retry_delays = retry_delays
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
                elif failures <= len(self.retry_delays):
                    delay = self.retry_delays[failures - 1]
                    await asyncio.sleep(random.uniform(0.5 * delay, delay))
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
        """Bring ``replica`` to its source's state now (see the module docstring)."""
        started = time.monotonic()
        tree = replica.tree
        outcome = ResyncOutcome(mode="changes")
        ask = self._asker(replica, outcome)
        root = KeyPath.root()
        # the root's children as the requester saw them when it asked for their digests
        known: dict[KeyPath, list[ChildDigest]] = {}
        if replica.synced:
            # should the changes be out of reach, the root's children digests come instead,
            # and the descent saves a round
            known[root] = tree.children(root) if len(tree) else []
            fallback = [root] if known[root] else []
            first = await ask(PropertyTreeDiscoveryRequest(
                tree=replica.remote_tree, epoch=tree.epoch, since_revision=tree.revision,
                digests_of=fallback, digests_on_gap=True,
                digest_bytes=self.digest_schedule[0],
                shapes=[children_shape(known[root])] if fallback else []))
            if first.complete and first.epoch == tree.epoch:
                self._apply(replica, first, tree.revision, outcome)
                if tree.digest() == first.root_digest:
                    return self._done(replica, outcome, started)
        else:
            first = await ask(PropertyTreeDiscoveryRequest(tree=replica.remote_tree,
                                                           include_values=False))
        for attempt, digest_bytes in enumerate(self.digest_schedule):
            outcome.mode = "descent" if len(tree) else "full"
            if first.epoch is None or first.revision is None:
                raise ResyncError(f"{replica.source} did not say which epoch and revision "
                                  f"{replica.remote_tree or 'its tree'} is at")
            if attempt == 0 and tree.digest() == first.root_digest and len(tree):
                outcome.mode = "relabel"  # same content under a new epoch: adopt, fetch nothing
                tree.adopt(epoch=first.epoch, revision=first.revision)
                last = await ask(PropertyTreeDiscoveryRequest(
                    tree=replica.remote_tree, epoch=first.epoch, since_revision=tree.revision))
                if last.complete:
                    self._apply(replica, last, tree.revision, outcome)
            else:
                given = {}
                if attempt == 0 and not first.complete and len(first.digests) == 1 and known:
                    given[root] = (known[root], first.digests[0])
                last = await self._descend(replica, first, digest_bytes, ask, outcome, given)
            if last.complete and tree.digest() == last.root_digest:
                return self._done(replica, outcome, started)
            first = last
        raise ResyncError(f"{replica.key}: copy still differs from {replica.source} after "
                          f"descents with {self.digest_schedule}-byte digests")

    async def _descend(self, replica: Replica, top: PropertyTreeDiscoveryResponse,
                       digest_bytes: int, ask: Any, outcome: ResyncOutcome,
                       given: dict[KeyPath, tuple[list[ChildDigest], NodeDigests]]
                       ) -> PropertyTreeDiscoveryResponse:
        """One digest descent from ``top`` (the source at ``R0``); returns the answer of its
        last request, which also asked for the changes since ``R0``: when it is complete, the
        copy now equals the source at that answer's revision. ``given``: nodes whose children
        digests (at ``digest_bytes``, with the copy's children they were asked against)
        came with ``top``."""
        tree = replica.tree
        fetch: list[KeyPattern] = []
        deletes: list[KeyPath] = []
        frontier = [KeyPath.root()] if len(tree) else []
        if not len(tree):
            fetch.append(KeyPattern([GLOBSTAR]))
        # Shapes let the source leave out the names of children the copy has too; not in
        # the last, whole-digest round, where a shape collision must not repeat.
        shaped = digest_bytes < DIGEST_BYTES
        while frontier:
            ready = {path for path in frontier if path in given}
            level = [(path, *given.pop(path)) for path in ready]
            frontier = [path for path in frontier if path not in ready]
            for start in range(0, len(frontier), FRONTIER_CHUNK):
                paths = frontier[start:start + FRONTIER_CHUNK]
                children = [tree.children(path) for path in paths]
                answer = await ask(PropertyTreeDiscoveryRequest(
                    tree=replica.remote_tree, digests_of=paths, digest_bytes=digest_bytes,
                    include_values=False,
                    shapes=[children_shape(c) for c in children] if shaped else []))
                if len(answer.digests) != len(paths):
                    raise ResyncError(f"{replica.source} answered {len(answer.digests)} of "
                                      f"{len(paths)} nodes' digests")
                level.extend(zip(paths, children, answer.digests, strict=True))
            frontier = []
            for path, my_children, node in level:
                mine = {name: (leaf, digest[:digest_bytes]) for name, leaf, digest in my_children}
                theirs = {name: (leaf, digest) for name, leaf, digest
                          in unpack_children(node, digest_bytes, my_children)}
                deletes.extend(path / name for name in mine.keys() - theirs.keys())
                for name, (leaf, digest) in theirs.items():
                    have = mine.get(name)
                    if have == (leaf, digest):
                        continue
                    child = path / name
                    if leaf:
                        fetch.append(KeyPattern.from_path(child))
                        if have is not None and not have[0]:
                            deletes.append(child)  # a subtree here became a leaf
                    elif have is None or have[0]:
                        fetch.append(KeyPattern([*child.segments, GLOBSTAR]))
                        if have is not None:
                            deletes.append(child)  # a leaf here became a subtree
                    else:
                        frontier.append(child)
        # Fetch what differs; the last request also asks for the changes since R0, so the copy
        # catches up with whatever changed during the descent without another round trip.
        upserts: list[tuple[KeyPath, int, Any]] = []
        chunks = [fetch[start:start + 200] for start in range(0, len(fetch), 200)] or [[]]
        for index, chunk in enumerate(chunks):
            final = index == len(chunks) - 1
            answer = await ask(PropertyTreeDiscoveryRequest(
                tree=replica.remote_tree, patterns=chunk,
                epoch=top.epoch if final else None,
                since_revision=top.revision if final else None))
            upserts.extend(answer.leaves)
            self._check_size(replica, len(tree) + len(upserts))
        assert top.epoch is not None and top.revision is not None  # checked by sync
        if answer.complete and answer.epoch == top.epoch and answer.revision is not None:
            # the changes since R0 are among the leaves (and deletes): the copy is at R1
            deletes.extend(path for path, _ in answer.deletes)
            tree.adopt(epoch=top.epoch, revision=answer.revision, upserts=upserts,
                       deletes=deletes)
        else:  # history since R0 is gone (or the epoch moved on): the next round sorts it out
            tree.adopt(epoch=top.epoch, revision=top.revision, upserts=upserts, deletes=deletes)
        outcome.leaves += len(upserts)
        outcome.deletes += len(deletes)
        return answer

    def _check_size(self, replica: Replica, leaves: int) -> None:
        if leaves > self.max_leaves:
            raise ResyncError(f"{replica.source} sends more than {self.max_leaves} leaves for "
                              f"{replica.key}; refusing to hold them")

    def _apply(self, replica: Replica, answer: PropertyTreeDiscoveryResponse, since: int,
               outcome: ResyncOutcome) -> None:
        tree = replica.tree
        if answer.epoch is None or answer.revision is None:
            raise ResyncError(f"{replica.source} answered changes_since without epoch and "
                              "revision")
        self._check_size(replica, len(tree) + len(answer.leaves))
        tree.apply_changes(ChangeSet(epoch=answer.epoch, from_revision=since,
                                     to_revision=answer.revision,
                                     upserts=tuple(map(Leaf._make, answer.leaves)),
                                     deletes=tuple(answer.deletes)))
        outcome.leaves += len(answer.leaves)
        outcome.deletes += len(answer.deletes)

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

    def _done(self, replica: Replica, outcome: ResyncOutcome, started: float) -> ResyncOutcome:
        replica.synced = True
        outcome.consistent = True
        outcome.seconds = time.monotonic() - started
        self.stats.runs += 1
        self.stats.bytes += outcome.bytes
        self.stats.wire_bytes += outcome.wire_bytes
        self.stats.seconds += outcome.seconds
        self.stats.by_mode[outcome.mode] = self.stats.by_mode.get(outcome.mode, 0) + 1
        return outcome


def _sizes(env: Envelope) -> tuple[int, int]:
    """An envelope's encoded size and its size in a frame (deflated when that pays, as the
    session's frames are)."""
    data = encode_envelope(env)
    packed = len(zlib.compress(data, 1))
    return len(data), packed if packed < len(data) * 0.9 else len(data)
