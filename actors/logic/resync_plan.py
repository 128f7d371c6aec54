"""The plan of one resynchronisation: which discovery requests bring a copy of another actor's
tree to the source's state with the least exchange, one answer at a time.

Theory of operation (DESIGN.md section 7). A copy mirrors its source's epoch and per-leaf
revisions, so:

1. *Same epoch.* Ask for ``changes_since`` the copy's revision: the answer is exactly what
   changed (the floor), plus the source's root digest, which the copy must match afterwards.
   Should the changes be out of reach, the same request asks for the root's children digests
   instead, and the descent saves a round.
2. *New epoch, or history compacted past the copy's revision.* Digest descent: compare the
   source's children digests (truncated to ``digest_bytes``; the final check uses the whole
   root digest) with the copy's, level by level, opening only subtrees that differ. Differing
   leaves and subtrees the copy lacks are fetched, subtrees the source lacks are deleted, and
   the copy ``adopt``s the result at the revision the descent started from (``R0``).
   Whatever changed at the source during the descent is caught up with ``changes_since(R0)``
   in the last request, which the source can serve because the copy now shares its epoch,
   and the root digest is checked.
3. *Empty copy.* Fetch everything once.

Interior digests are compared at 1 byte first: a collision makes a differing subtree look
equal, which the final whole-root-digest check catches; the descent then goes round again at
4, then 16 bytes, and since the copy already matches everywhere else, the second round only
opens what still differs. A copy is never left wrong, and the short digests cost far less than
the rare second round.

Pure: the plan applies answers to the copy (an in-memory ``ObjectTree``) and says what to ask
next; the caller (``actors.runtime.replication.resync.ResyncEngine``) sends the requests,
batches them with other copies' and counts the bytes. Tests drive it with answers from a
second tree, in microseconds.
"""

from __future__ import annotations

from collections.abc import Generator
from typing import Any

from keypath import GLOBSTAR, KeyPath, KeyPattern
from object_model import ChangeSet, ObjectTree
from object_model.messages import (
    PropertyTreeDiscoveryRequest,
    PropertyTreeDiscoveryResponse,
)
from object_model.node_digests import ChildDigest, NodeDigests, children_shape, unpack_children

DIGEST_BYTES = 16
DIGEST_SCHEDULE = (1, 4, DIGEST_BYTES)
MAX_LEAVES = 50_000  # a station tree holds a few hundred; a source sending more is broken
FRONTIER_CHUNK = 4096  # subtrees whose children one discovery request asks for
FETCH_CHUNK = 200  # patterns one fetch request carries

_ROOT = KeyPath.root()
Steps = Generator[PropertyTreeDiscoveryRequest, PropertyTreeDiscoveryResponse, None]


class ResyncError(RuntimeError):
    """A copy could not be brought to the source's state (retried later)."""


class ResyncPlan:
    """Brings ``tree`` (a copy; ``synced`` once it shares its source's epoch) to the state of
    the source's ``remote_tree``: ask ``next_request()``, give its answer to ``take()``,
    until ``next_request()`` is ``None``; the copy is then consistent. ``mode`` says how
    (``changes``, ``descent``, ``full`` or ``relabel``); a source that answers nonsense or
    sends more than ``max_leaves`` raises ``ResyncError`` from ``take``."""

    def __init__(self, tree: ObjectTree, remote_tree: KeyPath, *, synced: bool,
                 digest_schedule: tuple[int, ...] = DIGEST_SCHEDULE,
                 max_leaves: int = MAX_LEAVES, source: str = "the source") -> None:
        self.tree, self.remote_tree, self.synced = tree, remote_tree, synced
        self.digest_schedule, self.max_leaves, self.source = digest_schedule, max_leaves, source
        self.mode = "changes"
        self.leaves = 0  # fetched or applied
        self.deletes = 0
        self._steps = self._run()
        self._next: PropertyTreeDiscoveryRequest | None = next(self._steps)
        self._failure: BaseException | None = None

    def next_request(self) -> PropertyTreeDiscoveryRequest | None:
        """What to ask the source next (``None``: the copy is consistent); raises again what
        made the plan fail, if it did."""
        if self._failure is not None:
            raise self._failure
        return self._next

    def take(self, answer: PropertyTreeDiscoveryResponse) -> None:
        """The source's answer to ``next_request()``."""
        if self._next is None:
            raise ResyncError("the resynchronisation is over: nothing was asked")
        try:
            self._next = self._steps.send(answer)
        except StopIteration:
            self._next = None
        except BaseException as exc:
            self._next, self._failure = None, exc
            raise

    # -- the steps ---------------------------------------------------------------------------------

    def _ask(self, **fields: Any) -> PropertyTreeDiscoveryRequest:
        return PropertyTreeDiscoveryRequest(tree=self.remote_tree, **fields)

    def _run(self) -> Steps:
        tree = self.tree
        # the root's children as the requester saw them when it asked for their digests
        known: dict[KeyPath, list[ChildDigest]] = {}
        if self.synced:
            known[_ROOT] = tree.children(_ROOT) if len(tree) else []
            fallback = [_ROOT] if known[_ROOT] else []
            first = yield self._ask(
                epoch=tree.epoch, since_revision=tree.revision, digests_of=fallback,
                digests_on_gap=True, digest_bytes=self.digest_schedule[0],
                shapes=[children_shape(known[_ROOT])] if fallback else [])
            if first.complete and first.epoch == tree.epoch:
                self._apply(first, tree.revision)
                if tree.digest() == first.root_digest:
                    return
        else:
            first = yield self._ask(include_values=False)
        for attempt, digest_bytes in enumerate(self.digest_schedule):
            self.mode = "descent" if len(tree) else "full"
            if first.epoch is None or first.revision is None:
                raise ResyncError(f"{self.source} did not say which epoch and revision "
                                  f"{self.remote_tree or 'its tree'} is at")
            if attempt == 0 and tree.digest() == first.root_digest and len(tree):
                self.mode = "relabel"  # same content under a new epoch: adopt, fetch nothing
                tree.adopt(epoch=first.epoch, revision=first.revision)
                last = yield self._ask(epoch=first.epoch, since_revision=tree.revision)
                if last.complete:
                    self._apply(last, tree.revision)
            else:
                given = {}
                if attempt == 0 and not first.complete and len(first.digests) == 1 and known:
                    given[_ROOT] = (known[_ROOT], first.digests[0])
                last = yield from self._descend(first, digest_bytes, given)
            if last.complete and tree.digest() == last.root_digest:
                return
            first = last
        raise ResyncError(f"the copy still differs from {self.source} after descents with "
                          f"{self.digest_schedule}-byte digests")

    def _descend(self, top: PropertyTreeDiscoveryResponse, digest_bytes: int,
                 given: dict[KeyPath, tuple[list[ChildDigest], NodeDigests]]
                 ) -> Generator[PropertyTreeDiscoveryRequest, PropertyTreeDiscoveryResponse,
                                PropertyTreeDiscoveryResponse]:
        """One digest descent from ``top`` (the source at ``R0``); returns the answer of its
        last request, which also asked for the changes since ``R0``: when it is complete, the
        copy now equals the source at that answer's revision. ``given``: nodes whose children
        digests (at ``digest_bytes``, with the copy's children they were asked against)
        came with ``top``."""
        tree = self.tree
        fetch: list[KeyPattern] = []
        deletes: list[KeyPath] = []
        frontier = [_ROOT] if len(tree) else []
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
                answer = yield self._ask(
                    digests_of=paths, digest_bytes=digest_bytes, include_values=False,
                    shapes=[children_shape(c) for c in children] if shaped else [])
                if len(answer.digests) != len(paths):
                    raise ResyncError(f"{self.source} answered {len(answer.digests)} of "
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
        chunks = [fetch[start:start + FETCH_CHUNK]
                  for start in range(0, len(fetch), FETCH_CHUNK)] or [[]]
        for index, chunk in enumerate(chunks):
            final = index == len(chunks) - 1
            answer = yield self._ask(patterns=chunk, epoch=top.epoch if final else None,
                                     since_revision=top.revision if final else None)
            upserts.extend(answer.leaves)
            self._check_size(len(tree) + len(upserts))
        assert top.epoch is not None and top.revision is not None  # checked by _run
        if answer.complete and answer.epoch == top.epoch and answer.revision is not None:
            # the changes since R0 are among the leaves (and deletes): the copy is at R1
            deletes.extend(path for path, _ in answer.deletes)
            tree.adopt(epoch=top.epoch, revision=answer.revision, upserts=upserts,
                       deletes=deletes)
        else:  # history since R0 is gone (or the epoch moved on): the next round sorts it out
            tree.adopt(epoch=top.epoch, revision=top.revision, upserts=upserts, deletes=deletes)
        self.leaves += len(upserts)
        self.deletes += len(deletes)
        return answer

    def _check_size(self, leaves: int) -> None:
        if leaves > self.max_leaves:
            raise ResyncError(f"{self.source} sends more than {self.max_leaves} leaves; "
                              "refusing to hold them")

    def _apply(self, answer: PropertyTreeDiscoveryResponse, since: int) -> None:
        tree = self.tree
        if answer.epoch is None or answer.revision is None:
            raise ResyncError(f"{self.source} answered changes_since without epoch and "
                              "revision")
        self._check_size(len(tree) + len(answer.leaves))
        tree.apply_changes(ChangeSet(epoch=answer.epoch, from_revision=since,
                                     to_revision=answer.revision,
                                     upserts=tuple(answer.leaves),
                                     deletes=tuple(answer.deletes)))
        self.leaves += len(answer.leaves)
        self.deletes += len(answer.deletes)


__all__ = ["DIGEST_BYTES", "DIGEST_SCHEDULE", "MAX_LEAVES", "ResyncError", "ResyncPlan"]
