"""ObjectTree: one actor's whole state, versioned, transactional and comparable by digest.

Theory of operation
-------------------
*History.* A tree has an ``epoch`` (a random 64-bit id, new whenever its history is lost) and a
``revision`` that grows by one per committed transaction. Every leaf remembers the revision of
its last change; every deletion leaves a tombstone ``(path, revision)``. ``changes_since(r)``
is therefore exact: the leaves whose revision is above ``r`` plus the tombstones above ``r``.
The leaf index is a dict kept in last-change order (a changed leaf moves to the end), so the
answer is read from the tail in time proportional to its size, not to the tree's. Tombstones
are dropped below a compaction *horizon*; asking for changes older than the horizon raises
``HorizonPassedError`` and the caller compares digests instead.

*Transactions.* ``apply(ops)`` validates every operation first (paths against the schema,
values against their types, collection sizes), collecting all errors; only if all pass does it
mutate, and the mutation step cannot fail. A transaction that changes something yields exactly
one new revision; one that changes nothing (rewriting equal values, deleting what is absent)
leaves the revision alone.

*Digests.* A leaf's hash is ``H(path || canonical(value))`` (BLAKE2b, 128 bits). A node's digest
is the sum, modulo 2**128, of the hashes of all leaves below it. Sums commute, so equal content
gives equal digests whatever order the writes came in, and a write costs one hash plus one
addition per ancestor. Because the path is inside each leaf hash, comparing two trees node by
node from the root (``diff``) finds exactly the differing leaves while visiting only the
subtrees whose digests differ. Revisions are not part of digests: two copies with the same
content compare equal even if one learnt it later. (The sum is a consistency check, not a
cryptographic commitment: signatures are the envelope's job.)

*Visible digests.* Some leaves no remote actor may read (a provisioning secret, write-only
passwords); a CSMS's copy can never hold them. So every node keeps a second sum over the leaves
whose access kind is readable, the *visible* digest: copies are compared by it (``digest(path,
visible=True)``), and ``changes_since(r, visible=True)`` leaves the unreadable leaves out. In a
copy (a permissive schema) every leaf is visible, so its plain digest is its visible digest.

*Replicas.* A CSMS keeps copies of station trees. ``apply_changes`` plays a ``ChangeSet`` from
another tree onto a copy with the same epoch, keeping the source's revisions, so the copy can in
turn answer ``changes_since`` for the same history. ``adopt`` installs leaves learnt by digest
descent and starts a new horizon at the source revision.
"""

from __future__ import annotations

import hashlib
import math
import secrets
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any, NamedTuple, cast

from keypath import GLOBSTAR, KeyPath, KeyPattern
from object_model import canonical
from object_model.errors import (
    EpochMismatchError,
    ErrorCode,
    HorizonPassedError,
    LimitExceededError,
    ModelError,
    NotPresentError,
    RevisionAheadError,
    RevisionConflictError,
    RevisionGapError,
    SnapshotInvalidError,
    WrongTypeError,
)
from object_model.schema import (
    AnySchema,
    CollectionSchema,
    LeafSchema,
    PermissiveSchema,
    RecordSchema,
    SchemaNode,
    SchemaRegistry,
    parse_path,
)
from object_model.types import ValueType

MASK = (1 << 128) - 1
DIGEST_BYTES = 16
SNAPSHOT_FORMAT = 1
MAX_REPORTED_ERRORS = 20


# -- operations, events and results ----------------------------------------------------------


class Leaf(NamedTuple):
    """One value of a tree and the revision of its last change, as ``leaves`` and ``find``
    give it. Its field order is the order of every leaf triple (``LeafTuple``): in change sets
    and in messages on the wire, which carry plain tuples (a NamedTuple costs three times as
    much to make, and change sets are made on every commit that is published)."""

    path: KeyPath
    revision: int
    value: Any


LeafTuple = tuple[KeyPath, int, Any]
"""``(path, revision, value)``: a leaf as change sets and messages carry it."""


@dataclass(frozen=True, slots=True)
class Write:
    """Set the value at ``path`` (a leaf; a map at a record or collection spreads over its leaves)."""

    path: KeyPath | str
    value: Any


@dataclass(frozen=True, slots=True)
class Delete:
    """Remove the node at ``path`` and everything below it."""

    path: KeyPath | str


Operation = Write | Delete


@dataclass(frozen=True, slots=True, kw_only=True)
class TransactionCommitted:
    """A transaction changed the tree. ``upserts`` and ``deletes`` are its net effect."""

    epoch: int
    revision: int
    upserts: tuple[tuple[KeyPath, Any], ...]
    deletes: tuple[KeyPath, ...]

    @property
    def changed(self) -> bool:
        return bool(self.upserts or self.deletes)


ListenerErrorHook = Callable[[Exception, TransactionCommitted], None]


def _ignore_listener_error(exc: Exception, event: TransactionCommitted) -> None:
    """The default: counted in ``listener_failures`` only."""


@dataclass(frozen=True, slots=True, kw_only=True)
class ChangeSet:
    """What changed in a tree between two revisions, in ascending revision order.

    To replay it, apply for each revision its deletes first, then its upserts.
    """

    epoch: int
    from_revision: int
    to_revision: int
    upserts: tuple[LeafTuple, ...] = ()
    deletes: tuple[tuple[KeyPath, int], ...] = ()

    def __len__(self) -> int:
        return len(self.upserts) + len(self.deletes)


class _Absent:
    __slots__ = ()

    def __repr__(self) -> str:
        return "ABSENT"

    def __bool__(self) -> bool:
        return False


ABSENT: Any = _Absent()
"""Stands for 'no value here' in diffs."""


@dataclass(frozen=True, slots=True)
class DiffEntry:
    """A leaf that differs between two trees (``ABSENT`` where one side has none)."""

    path: KeyPath
    mine: Any
    theirs: Any


@dataclass(slots=True)
class DiffStats:
    """How much of two trees a digest descent had to look at."""

    nodes_compared: int = 0
    leaves_compared: int = 0


# -- tree nodes ------------------------------------------------------------------------------------


class _Interior:
    __slots__ = ("children", "digest", "name", "parent", "visible")

    def __init__(self, name: str, parent: _Interior | None) -> None:
        self.name = name
        self.parent = parent
        self.children: dict[str, _Interior | _Leaf] = {}
        self.digest = 0
        self.visible = 0  # the same sum over readable leaves only


class _Leaf:
    __slots__ = ("hash", "key", "name", "parent", "path", "public", "readable", "revision",
                 "schema", "value")

    def __init__(self, path: KeyPath, parent: _Interior, schema: LeafSchema | AnySchema) -> None:
        self.path = path
        self.name = path.name
        self.parent = parent
        self.schema = schema
        self.readable = schema.access.readable
        self.key = str(path).encode("utf-8") + b"\x00"
        self.value: Any = None
        self.hash = 0
        self.revision = 0
        # what readers get: made on the first read after a change (every place that changes
        # ``value`` or ``revision`` clears it), then shared by every reader until the next
        self.public: Leaf | None = None

    @property
    def visible(self) -> int:
        return self.hash if self.readable else 0

    def leaf(self) -> Leaf:
        """This leaf as readers see it."""
        public = self.public
        if public is None:
            public = self.public = _make_leaf(Leaf, (self.path, self.revision, self.value))
        return public


_EVERYTHING = (GLOBSTAR,)  # the rest of a pattern that matches every leaf below its start

_make_leaf = tuple.__new__  # a NamedTuple without its Python-level __new__: twice as fast


_MEMO_KINDS = frozenset({bool, int, float, str, type(None)})
_MEMO_TEXT = 64  # longer texts are rarely shared: not remembered
_MEMO_LIMIT = 1 << 16
_hashes: dict[tuple[Any, ...], int] = {}


def _leaf_hash(key: bytes, value: Any) -> int:
    """A leaf's hash: of its path and its value's canonical bytes. The same small values at
    the same paths recur across the thousands of trees a process holds (every station's fan
    at 0 rpm, in its own tree and in each CSMS's copy), so those hashes are remembered
    (``_MEMO_LIMIT`` of them); the type is part of what is remembered (``1``, ``1.0`` and
    ``True`` are equal in Python, not in a digest), and so is the sign of a zero."""
    kind = type(value)
    memo = None
    if kind in _MEMO_KINDS and (kind is not str or len(value) <= _MEMO_TEXT):
        memo = (key, kind, value) if value or kind is not float else (
            key, kind, value, math.copysign(1.0, value))
        known = _hashes.get(memo)
        if known is not None:
            return known
    digest = hashlib.blake2b(key + canonical.encode(value), digest_size=DIGEST_BYTES).digest()
    result = int.from_bytes(digest, "big")
    if memo is not None:
        if len(_hashes) >= _MEMO_LIMIT:
            _hashes.clear()
        _hashes[memo] = result
    return result


def _sum_digests(node: _Interior) -> None:
    """Set the digests of ``node`` and every interior node below from their leaves."""
    digest = visible = 0
    for child in node.children.values():
        if isinstance(child, _Interior):
            _sum_digests(child)
        digest += child.hash if isinstance(child, _Leaf) else child.digest
        visible += child.visible
    node.digest, node.visible = digest & MASK, visible & MASK


def _as_path(path: KeyPath | str) -> KeyPath:
    return path if isinstance(path, KeyPath) else parse_path(path)


def _to_digest(total: int) -> bytes:
    return total.to_bytes(DIGEST_BYTES, "big")


# -- the tree ----------------------------------------------------------------------------------------


class ObjectTree:
    """One actor's state: a typed tree of leaves addressed by key-path.

    ``schema`` declares what may exist (``PermissiveSchema()`` for replica caches);
    ``epoch`` defaults to a fresh random id. ``max_tombstones`` bounds deletion history: beyond
    it the oldest half is compacted and the horizon moves up. ``max_leaves`` bounds size.
    """

    def __init__(
        self,
        schema: SchemaRegistry,
        *,
        epoch: int | None = None,
        max_tombstones: int = 10_000,
        max_leaves: int = 1_000_000,
    ) -> None:
        self.schema = schema
        self.epoch: int = secrets.randbits(63) if epoch is None else epoch
        self.revision = 0
        self.horizon = 0
        self.max_tombstones = max_tombstones
        self.max_leaves = max_leaves
        self._root = _Interior("", None)
        self._leaves: dict[KeyPath, _Leaf] = {}  # in last-change order
        self._tombstones: dict[KeyPath, int] = {}  # in deletion order
        self._listeners: list[Callable[[TransactionCommitted], None]] = []
        self.listener_failures = 0
        self.on_listener_error: ListenerErrorHook = _ignore_listener_error
        """Called with a listener's exception and the event it failed on (the owner of the
        tree logs it; this package does no I/O)."""

    # -- reading ---------------------------------------------------------------------------------

    def __len__(self) -> int:
        """Number of leaves."""
        return len(self._leaves)

    def __contains__(self, path: KeyPath | str) -> bool:
        return self._find(_as_path(path)) is not None

    def is_leaf(self, path: KeyPath | str) -> bool:
        """True when a value (not a subtree) is stored at ``path``."""
        return _as_path(path) in self._leaves

    def get(self, path: KeyPath | str) -> Any:
        """The value of the leaf at ``path``.

        ``NotPresentError`` if the schema declares the path but it holds nothing now;
        ``UnknownPathError`` / ``UnknownNamespaceError`` if the schema does not declare it.
        """
        path = _as_path(path)
        leaf = self._leaves.get(path)
        if leaf is not None:
            return leaf.value
        raise self._absence(path)

    def entry(self, path: KeyPath | str) -> tuple[Any, int]:
        """``(value, revision of its last change)`` of the leaf at ``path``."""
        path = _as_path(path)
        leaf = self._leaves.get(path)
        if leaf is None:
            raise self._absence(path)
        return leaf.value, leaf.revision

    def read(self, path: KeyPath | str = "") -> Any:
        """The value at ``path``: a leaf's value, or a subtree as nested dicts."""
        path = _as_path(path)
        node = self._find(path)
        if node is None:
            raise self._absence(path)
        return self._plain(node)

    def leaf_schema(self, path: KeyPath) -> SchemaNode:
        """The schema node of ``path`` (from the leaf when present, else from the schema)."""
        leaf = self._leaves.get(path)
        return leaf.schema if leaf is not None else self.schema.resolve(path)

    def value_type(self, path: KeyPath) -> ValueType:
        """The type of the value at ``path`` (``WRONG_TYPE`` if the schema declares a
        subtree there)."""
        node = self.leaf_schema(path)
        if not isinstance(node, (LeafSchema, AnySchema)):
            raise WrongTypeError(f"{path} is a subtree, not a value", path=path)
        return node.value_type

    def leaves(self, under: KeyPath | str = "") -> Iterator[Leaf]:
        """Every leaf at or below ``under``, in tree order."""
        node = self._find(_as_path(under))
        if node is None:
            return
        for leaf in _iter_leaves(node):
            yield leaf.public or leaf.leaf()

    def find(self, pattern: KeyPattern | str, *, visible: bool = False) -> Iterator[Leaf]:
        """Every leaf matching ``pattern`` (with ``visible``, readable leaves only)."""
        if not isinstance(pattern, KeyPattern):
            pattern = KeyPattern.parse(pattern)
        start = pattern.literal_prefix
        node = self._find(start)
        if node is None:
            return
        if isinstance(node, _Leaf):
            if pattern.matches(node.path) and (node.readable or not visible):
                yield node.public or node.leaf()
            return
        if pattern.segments[len(start):] == _EVERYTHING:  # every leaf below matches
            for leaf in _iter_leaves(node):
                if leaf.readable or not visible:
                    yield leaf.public or leaf.leaf()
            return
        stack: list[tuple[_Interior | _Leaf, KeyPath]] = [(node, start)]
        while stack:
            current, path = stack.pop()
            if isinstance(current, _Leaf):
                if pattern.matches(current.path) and (current.readable or not visible):
                    yield current.public or current.leaf()
                continue
            if not pattern.may_match_below(path):
                continue
            segments = path.segments
            for name, child in reversed(current.children.items()):
                # a leaf knows its path; an interior node's is made of names already checked
                stack.append((child, path if isinstance(child, _Leaf)
                              else KeyPath._trusted((*segments, name))))

    def children(self, path: KeyPath | str = "", *, visible: bool = False
                 ) -> list[tuple[str, bool, bytes]]:
        """``(name, is_leaf, digest)`` of each child of the interior node at ``path``. With
        ``visible``, digests are visible digests and children with nothing readable are left
        out (a copy could not hold them)."""
        node = self._find(_as_path(path))
        if node is None or isinstance(node, _Leaf):
            return []
        out = []
        for name, child in node.children.items():
            total = _node_sum(child, visible)
            if visible and total == 0:
                continue
            out.append((name, isinstance(child, _Leaf), _to_digest(total)))
        return out

    def digest(self, path: KeyPath | str = "", *, visible: bool = False) -> bytes:
        """The 16-byte digest of the subtree at ``path`` (all zeros when nothing is there);
        ``visible`` counts readable leaves only."""
        node = self._find(_as_path(path))
        if node is None:
            return bytes(DIGEST_BYTES)
        return _to_digest(_node_sum(node, visible))

    # -- writing -----------------------------------------------------------------------------

    def write(self, path: KeyPath | str, value: Any) -> TransactionCommitted:
        """A transaction of one write."""
        return self.apply((Write(path, value),))

    def delete(self, path: KeyPath | str) -> TransactionCommitted:
        """A transaction of one delete."""
        return self.apply((Delete(path),))

    def apply(
        self, operations: Iterable[Operation], *, expected_revision: int | None = None
    ) -> TransactionCommitted:
        """Apply ``operations`` as one atomic transaction, in order.

        All are validated before anything changes; on the first invalid one nothing changes
        and its error is raised, with every error found listed in ``details["errors"]``.
        ``expected_revision`` makes the transaction conditional (optimistic concurrency).
        """
        if expected_revision is not None and expected_revision != self.revision:
            raise RevisionConflictError(
                f"expected revision {expected_revision}, tree is at {self.revision}",
                details={"expected": expected_revision, "actual": self.revision},
            )
        if not self._leaves and not self._tombstones:  # a tree being built: one pass
            operations = list(operations)
            loaded = self._load_into_empty(operations)
            if loaded is not None:
                return loaded
        plan = self._validate(operations)
        return self._commit(plan)

    def _load_into_empty(self, operations: list[Operation]) -> TransactionCommitted | None:
        """``apply`` to a tree that holds nothing (a station building its tree at its first
        start), its leaves built in one pass (``_fill``); ``None``, with nothing changed,
        when the operations do not fit that pass (a delete, a path twice, a value the schema
        refuses): ``apply``'s general way then commits them or names every error."""
        writes = [op for op in operations if type(op) is Write]
        if not writes or len(writes) != len(operations):
            return None
        revision = self.revision + 1
        leaves: list[tuple[KeyPath, int, Any]] = []
        try:
            for op in writes:
                path = op.path if type(op.path) is KeyPath else _as_path(op.path)
                leaves += [(lpath, revision, raw)
                           for lpath, _, raw in self.schema.expand(path, op.value)]
        except ModelError:
            return None
        if not leaves or not self._fill_empty(leaves):
            return None
        self.revision = revision
        event = TransactionCommitted(epoch=self.epoch, revision=revision,
                                     upserts=tuple((p, self._leaves[p].value)
                                                   for p, _, _ in leaves), deletes=())
        self._notify(event)
        return event

    def _fill_empty(self, leaves: list[tuple[KeyPath, int, Any]]) -> bool:
        """``_fill`` an empty tree; False, with the tree empty again, when it refuses."""
        try:
            self._fill(leaves)
        except ModelError:
            self._root = _Interior("", None)
            self._leaves = {}
            return False
        return True

    def _validate(self, operations: Iterable[Operation]) -> list[tuple[KeyPath, Any, Any, int]]:
        """Check everything; return ``(path, value_or_DELETE, schema, op_index)`` steps or raise."""
        plan: list[tuple[KeyPath, Any, Any, int]] = []
        errors: list[ModelError] = []
        created: dict[KeyPath, set[str]] = {}
        new_leaves = 0
        leaves = self._leaves
        collections = not isinstance(self.schema, PermissiveSchema)  # which declares none
        for index, op in enumerate(operations):
            try:
                if type(op) is Write:
                    path = op.path if type(op.path) is KeyPath else _as_path(op.path)
                    leaf = leaves.get(path)
                    if leaf is not None:
                        plan.append(
                            (path, leaf.schema.value_type.validate(op.value), leaf.schema, index)
                        )
                        continue
                    for lpath, node, raw in self.schema.expand(path, op.value):
                        leaf = leaves.get(lpath)
                        if leaf is None:
                            if not isinstance(node, (LeafSchema, AnySchema)):
                                raise WrongTypeError(f"{lpath} is a {node.kind}, not a value")
                            if collections:
                                self._check_capacity(lpath, created)
                            new_leaves += 1
                        else:
                            node = leaf.schema
                        try:
                            plan.append((lpath, node.value_type.validate(raw), node, index))
                        except ModelError as exc:
                            raise exc.at(lpath) from None
                elif type(op) is Delete:
                    path = _as_path(op.path)
                    self.schema.resolve(path)
                    plan.append((path, _DELETE, None, index))
                else:
                    raise WrongTypeError(f"operation {index} is {type(op).__name__}, not Write/Delete")
            except ModelError as exc:
                exc.at(getattr(op, "path", ""))
                exc.details.setdefault("operation", index)
                errors.append(exc)
        if len(leaves) + new_leaves > self.max_leaves:
            errors.append(LimitExceededError(
                f"the tree would hold {len(leaves) + new_leaves} leaves; the limit is "
                f"{self.max_leaves}"))
        if errors:
            first = errors[0]
            if len(errors) > 1 or "errors" not in first.details:
                first.details["errors"] = [
                    {"code": e.code.value, "path": e.path, "text": e.text,
                     "operation": e.details.get("operation")}
                    for e in errors[:MAX_REPORTED_ERRORS]
                ]
                first.details["error_count"] = len(errors)
            raise first
        return plan

    def _check_capacity(self, path: KeyPath, created: dict[KeyPath, set[str]]) -> None:
        """Refuse a new collection member beyond the collection's ``max_members``, at every
        level the write creates (a collection made by this transaction is bounded too: its
        members would otherwise pass here and make a tree no snapshot of restores)."""
        node: _Interior | _Leaf | None = self._root
        segs = path.segments
        for depth, seg in enumerate(segs):
            nxt = node.children.get(seg) if isinstance(node, _Interior) else None
            if nxt is not None:
                node = nxt
                continue
            have = len(node.children) if isinstance(node, _Interior) else 0
            schema: SchemaNode | None = self.schema.resolve(KeyPath._trusted(segs[:depth]))
            for below in range(depth, len(segs)):  # the levels this write creates
                if isinstance(schema, RecordSchema):
                    schema = schema.fields.get(segs[below])
                    continue
                if not isinstance(schema, CollectionSchema):
                    return
                parent_path = KeyPath._trusted(segs[:below])
                pending = created.setdefault(parent_path, set())
                pending.add(segs[below])
                if (have if below == depth else 0) + len(pending) > schema.max_members:
                    raise LimitExceededError(
                        f"{parent_path} holds at most {schema.max_members} members",
                        path=parent_path / segs[below],
                        details={"max_members": schema.max_members},
                    )
                schema = schema.member
            return

    def _commit(self, plan: Sequence[tuple[KeyPath, Any, Any, int]]) -> TransactionCommitted:
        revision = self.revision + 1
        upserts: dict[KeyPath, Any] = {}
        deletes: list[KeyPath] = []
        fresh = not self._leaves
        for path, value, schema, _ in plan:
            if value is _DELETE:
                if self._delete(path, revision):
                    deletes.append(path)
                    for p in [p for p in upserts if path.is_prefix_of(p)]:
                        del upserts[p]
            elif self._set_leaf(path, value, schema, revision, sum_later=fresh):
                upserts[path] = value
        if fresh:
            _sum_digests(self._root)
        if not upserts and not deletes:
            return TransactionCommitted(
                epoch=self.epoch, revision=self.revision, upserts=(), deletes=()
            )
        self.revision = revision
        if len(self._tombstones) > self.max_tombstones:
            self._auto_compact()
        event = TransactionCommitted(
            epoch=self.epoch,
            revision=revision,
            upserts=tuple(upserts.items()),
            deletes=tuple(deletes),
        )
        self._notify(event)
        return event

    def _notify(self, event: TransactionCommitted) -> None:
        """Tell every listener. The transaction has committed before any is called, so a
        listener that raises must not make ``apply`` raise (a caller would retry and commit
        twice): its error goes to ``on_listener_error`` and is counted, and the others still
        hear."""
        for listener in tuple(self._listeners):
            try:
                listener(event)
            except Exception as exc:
                self.listener_failures += 1
                self.on_listener_error(exc, event)

    def _set_leaf(
        self, path: KeyPath, value: Any, schema: LeafSchema | AnySchema, revision: int,
        stamp: bool = False, sum_later: bool = False,
    ) -> bool:
        """Set one leaf; True when its value changed. ``stamp`` records ``revision`` on the
        leaf even when the value is unchanged (replicas mirror their source's revisions).
        ``sum_later`` leaves the ancestors' digests alone: a transaction filling an empty
        tree sums them once at its end (``_sum_digests``)."""
        leaf = self._leaves.get(path)
        new = leaf is None
        if leaf is None:
            leaf = self._create_leaf(path, schema, revision)
        h = _leaf_hash(leaf.key, value)
        if not new and h == leaf.hash:
            if stamp and leaf.revision != revision:
                leaf.revision = revision
                leaf.public = None
                del self._leaves[path]
                self._leaves[path] = leaf
            return False
        delta = h - leaf.hash
        node: _Interior | None = None if sum_later else leaf.parent
        if leaf.readable:
            while node is not None:
                node.digest = (node.digest + delta) & MASK
                node.visible = (node.visible + delta) & MASK
                node = node.parent
        else:
            while node is not None:
                node.digest = (node.digest + delta) & MASK
                node = node.parent
        leaf.value = value
        leaf.hash = h
        leaf.revision = revision
        leaf.public = None
        if not new:
            del self._leaves[path]
        self._leaves[path] = leaf
        return True

    def _create_leaf(self, path: KeyPath, schema: LeafSchema | AnySchema, revision: int
                     ) -> _Leaf:
        node = self._root
        segs = path.segments
        for depth, seg in enumerate(segs[:-1]):
            child = node.children.get(seg)
            if child is None:
                child = node.children[seg] = _Interior(seg, node)
            elif isinstance(child, _Leaf):
                # permissive trees only: a leaf becomes a subtree; replicas learn by tombstone.
                # Deleting may prune now-empty ancestors, so walk again from the root.
                self._delete(KeyPath._trusted(segs[: depth + 1]), revision)
                child = self._ensure_interior(segs[: depth + 1])
            node = child
        existing = node.children.get(segs[-1])
        if existing is not None:  # an interior node is replaced by a leaf (permissive only)
            self._delete(path, revision)
            node = self._ensure_interior(segs[:-1])
        leaf = _Leaf(path, node, schema)
        node.children[segs[-1]] = leaf
        return leaf

    def _ensure_interior(self, segs: tuple[str, ...]) -> _Interior:
        node = self._root
        for seg in segs:
            child = node.children.get(seg)
            if child is None:
                child = node.children[seg] = _Interior(seg, node)
            node = cast("_Interior", child)  # callers delete any leaf on the way first
        return node

    def _delete(self, path: KeyPath, revision: int) -> bool:
        node = self._find(path)
        if node is None or (node is self._root and not self._leaves):
            return False  # a node exists only while it has leaves; an empty root is nothing
        if node is self._root:
            self._root.children.clear()
            self._root.digest = self._root.visible = 0
            self._leaves.clear()
        else:
            self._detach(node)
            if isinstance(node, _Leaf):
                del self._leaves[node.path]
            else:
                for leaf in _iter_leaves(node):
                    del self._leaves[leaf.path]
        self._tombstones.pop(path, None)
        self._tombstones[path] = revision
        return True

    def _detach(self, node: _Interior | _Leaf) -> None:
        amount = node.hash if isinstance(node, _Leaf) else node.digest
        seen = node.visible
        parent = node.parent
        assert parent is not None
        del parent.children[node.name]
        up: _Interior | None = parent
        while up is not None:
            up.digest = (up.digest - amount) & MASK
            up.visible = (up.visible - seen) & MASK
            up = up.parent
        # prune interior nodes left empty (never the root)
        while parent is not self._root and not parent.children:
            grand = parent.parent
            assert grand is not None
            del grand.children[parent.name]
            parent = grand

    # -- history -------------------------------------------------------------------------------

    def changes_since(self, revision: int, *, visible: bool = False) -> ChangeSet:
        """Exactly the leaves changed and the nodes deleted after ``revision`` (with
        ``visible``, only what a remote reader may see).

        ``HorizonPassedError`` when deletions after ``revision`` may have been compacted away;
        ``RevisionAheadError`` when ``revision`` is newer than this tree (another history).
        """
        if revision < self.horizon:
            raise HorizonPassedError(
                f"revision {revision} is older than the horizon {self.horizon}: compare digests",
                details={"horizon": self.horizon, "revision": self.revision},
            )
        if revision > self.revision:
            raise RevisionAheadError(
                f"revision {revision} is newer than this tree's {self.revision}",
                details={"revision": self.revision},
            )
        upserts: list[LeafTuple] = []
        for leaf in reversed(self._leaves.values()):
            if leaf.revision <= revision:
                break
            if leaf.readable or not visible:
                upserts.append((leaf.path, leaf.revision, leaf.value))
        deletes: list[tuple[KeyPath, int]] = []
        for path, rev in reversed(self._tombstones.items()):
            if rev <= revision:
                break
            if not visible or self._readable_path(path):
                deletes.append((path, rev))
        upserts.reverse()
        deletes.reverse()
        return ChangeSet(
            epoch=self.epoch,
            from_revision=revision,
            to_revision=self.revision,
            upserts=tuple(upserts),
            deletes=tuple(deletes),
        )

    def compact(self, horizon: int) -> int:
        """Forget tombstones at or below ``horizon``; returns how many were dropped."""
        horizon = min(horizon, self.revision)
        dropped = 0
        for path, rev in list(self._tombstones.items()):
            if rev > horizon:
                break
            del self._tombstones[path]
            dropped += 1
        self.horizon = max(self.horizon, horizon)
        return dropped

    def _auto_compact(self) -> None:
        keep = self.max_tombstones // 2
        revisions = list(self._tombstones.values())
        self.compact(revisions[len(revisions) - keep - 1])

    @property
    def tombstone_count(self) -> int:
        return len(self._tombstones)

    # -- replication -------------------------------------------------------------------------

    def apply_changes(self, changes: ChangeSet) -> TransactionCommitted:
        """Replay another tree's ``ChangeSet`` onto this copy, keeping its revisions.

        The copy must share the epoch (``EpochMismatchError``) and be at or after
        ``changes.from_revision`` (``RevisionGapError`` otherwise: some changes were missed).
        Entries this copy already has are skipped, so overlapping change sets are harmless.
        """
        if changes.epoch != self.epoch:
            raise EpochMismatchError(
                f"changes are for epoch {changes.epoch:x}, this copy has {self.epoch:x}",
                details={"expected": self.epoch, "got": changes.epoch},
            )
        if changes.from_revision > self.revision:
            raise RevisionGapError(
                f"changes start after revision {changes.from_revision}; this copy is at "
                f"{self.revision}",
                details={"have": self.revision, "from": changes.from_revision},
            )
        if changes.to_revision <= self.revision:
            return TransactionCommitted(epoch=self.epoch, revision=self.revision,
                                        upserts=(), deletes=())
        for path, rev, _value in changes.upserts:
            if rev > changes.to_revision:
                raise RevisionAheadError(f"{path} has revision {rev} > {changes.to_revision}")
        fresh = [(p, rev, v) for p, rev, v in changes.upserts if rev > self.revision]
        plan = self._validate([Write(p, v) for p, _, v in fresh])
        steps: list[tuple[int, int, KeyPath, Any, Any]] = [
            (fresh[i][1], 1, path, value, schema) for path, value, schema, i in plan
        ]
        for path, rev in changes.deletes:
            if rev > self.revision:
                steps.append((rev, 0, path, _DELETE, None))
        steps.sort(key=lambda s: (s[0], s[1]))
        return self._replay(steps, changes.to_revision)

    def adopt(
        self,
        *,
        epoch: int,
        revision: int,
        upserts: Iterable[tuple[KeyPath, int, Any]] = (),
        deletes: Iterable[KeyPath] = (),
    ) -> TransactionCommitted:
        """Install what a digest descent learnt: the given leaves (with the source's revisions)
        and the removal of the given paths, making this copy equal to the source at
        ``revision``. History before it is unknown, so the horizon moves to ``revision``."""
        ups = list(upserts)
        dels = list(deletes)
        if not self._leaves and not dels:
            adopted = self._adopt_into_empty(epoch, revision, ups)
            if adopted is not None:
                return adopted
        plan = self._validate([Write(p, v) for p, _, v in ups])
        steps: list[tuple[int, int, KeyPath, Any, Any]] = [
            (0, 0, p, _DELETE, None) for p in dels
        ]
        steps += [(ups[i][1], 1, path, value, schema) for path, value, schema, i in plan]
        self.epoch = epoch
        event = self._replay(steps, revision, delete_revision=revision, notify=False)
        # Leaves the descent did not touch equal the source's but carry revisions of an older
        # history; no query may go below the new horizon, so cap them there. Then restore the
        # leaf index's revision order, which out-of-order installs broke.
        for leaf in self._leaves.values():
            if leaf.revision > revision:
                leaf.revision = revision
                leaf.public = None
        self._leaves = dict(sorted(self._leaves.items(), key=lambda kv: kv[1].revision))
        self._tombstones.clear()
        self.horizon = self.revision = revision
        self._notify(event)  # only now is the tree in its final state
        return event

    def _adopt_into_empty(self, epoch: int, revision: int, ups: list[tuple[KeyPath, int, Any]]
                          ) -> TransactionCommitted | None:
        """``adopt`` into a copy that holds nothing (a CSMS learning a station for the first
        time), its leaves built in one pass (``_fill``). ``None``, with nothing changed, when
        a leaf does not fit that pass (a path given twice, a value or a path the schema
        refuses): ``adopt``'s general way then applies it or names the error."""
        if not self._fill_empty(ups):
            return None
        for leaf in self._leaves.values():
            if leaf.revision > revision:  # as ``adopt`` caps them
                leaf.revision = revision
        leaves = self._leaves
        self._leaves = dict(sorted(leaves.items(), key=lambda kv: kv[1].revision))
        self.epoch = epoch
        self._tombstones.clear()
        self.horizon = self.revision = revision
        event = TransactionCommitted(epoch=epoch, revision=revision,
                                     upserts=tuple((p, leaves[p].value) for p, _, _ in ups),
                                     deletes=())
        self._notify(event)
        return event

    def _replay(
        self, steps: Sequence[tuple[int, int, KeyPath, Any, Any]], to_revision: int,
        delete_revision: int | None = None, notify: bool = True,
    ) -> TransactionCommitted:
        upserts: dict[KeyPath, Any] = {}
        deletes: list[KeyPath] = []
        fresh = not self._leaves
        for rev, _, path, value, schema in steps:
            if value is _DELETE:
                if self._delete(path, delete_revision or rev):
                    deletes.append(path)
                    for p in [p for p in upserts if path.is_prefix_of(p)]:
                        del upserts[p]
            elif self._set_leaf(path, value, schema, rev, stamp=True, sum_later=fresh):
                upserts[path] = value
        if fresh:
            _sum_digests(self._root)
        self.revision = to_revision
        event = TransactionCommitted(epoch=self.epoch, revision=self.revision,
                                     upserts=tuple(upserts.items()), deletes=tuple(deletes))
        if event.changed and notify:
            self._notify(event)
        return event

    # -- comparison ------------------------------------------------------------------------------

    def diff(self, other: ObjectTree, stats: DiffStats | None = None) -> list[DiffEntry]:
        """The leaves that differ from ``other``, found by digest descent: only subtrees whose
        digests differ are opened. Sorted by path."""
        stats = stats if stats is not None else DiffStats()
        out: list[DiffEntry] = []
        _diff_nodes(self._root, other._root, KeyPath.root(), out, stats)
        out.sort(key=lambda e: e.path)
        return out

    # -- persistence ----------------------------------------------------------------------------

    def snapshot(self) -> bytes:
        """The whole tree, its history position and tombstones as bytes (``restore`` reverses)."""
        return canonical.encode(self.snapshot_plain())

    def snapshot_plain(self) -> list[Any]:
        """What ``snapshot`` encodes, as a plain list (for a store that prefers a faster codec
        of plain values; ``restore_plain`` reverses)."""
        leaves = [[str(leaf.path), leaf.revision, leaf.value] for leaf in self._leaves.values()]
        tombs = [[str(p), rev] for p, rev in self._tombstones.items()]
        return [SNAPSHOT_FORMAT, self.epoch, self.revision, self.horizon, leaves, tombs]

    @classmethod
    def restore(cls, data: bytes, schema: SchemaRegistry, **options: Any) -> ObjectTree:
        """Rebuild a tree from ``snapshot`` bytes, validating every value against ``schema``."""
        try:
            plain = canonical.decode(data)
        except (ModelError, ValueError, TypeError) as exc:
            raise SnapshotInvalidError(f"snapshot does not decode: {exc}") from None
        return cls.restore_plain(plain, schema, **options)

    @classmethod
    def restore_plain(cls, plain: Any, schema: SchemaRegistry, **options: Any) -> ObjectTree:
        """Rebuild a tree from ``snapshot_plain``'s list, validating every value."""
        try:
            fmt, epoch, revision, horizon, leaves, tombs = plain
            if not all(type(n) is int for n in (epoch, revision, horizon)):
                raise TypeError("epoch, revision and horizon must be integers")
            if type(leaves) is not list or type(tombs) is not list:
                raise TypeError("leaves and tombstones must be lists")
        except (ValueError, TypeError) as exc:
            raise SnapshotInvalidError(f"snapshot is not a tree: {exc}") from None
        if fmt != SNAPSHOT_FORMAT:
            raise SnapshotInvalidError(f"snapshot format {fmt} is not {SNAPSHOT_FORMAT}")
        tree = cls(schema, epoch=epoch, **options)
        if len(leaves) > tree.max_leaves:
            raise SnapshotInvalidError(
                f"snapshot holds {len(leaves)} leaves; the limit is {tree.max_leaves}")
        try:
            tree._restore_leaves(leaves)
            for p, rev in tombs:
                if type(rev) is not int:
                    raise TypeError(f"tombstone {p!r} has revision {rev!r}")
                tree._tombstones[parse_path(p)] = rev
        except ModelError as exc:
            raise SnapshotInvalidError(
                f"snapshot does not fit the schema: {exc.code.value}: {exc.text}",
                path=exc.path, details=exc.details
            ) from None
        except (ValueError, TypeError) as exc:  # an entry of the wrong shape
            raise SnapshotInvalidError(f"snapshot is not a tree: {exc}") from None
        tree.revision, tree.horizon = revision, horizon
        return tree

    def _restore_leaves(self, leaves: list[list[Any]]) -> None:
        """Build the leaves of a snapshot (``[path text, revision, value]`` in last-change
        order) into an empty tree (a cloud CSMS restores a thousand copies when it starts)."""
        self._fill((parse_path(text), revision, value) for text, revision, value in leaves)

    def _fill(self, leaves: Iterable[tuple[KeyPath, int, Any]]) -> None:
        """Build ``(path, revision, value)`` leaves into an empty tree: each path resolved and
        each value validated once, as a write would, without a transaction's bookkeeping,
        and the digests summed once at the end. Raises a ``ModelError`` on the first bad
        leaf, leaving the tree half built: callers start again from an empty tree."""
        interiors: dict[tuple[str, ...], _Interior] = {(): self._root}
        resolve = self.schema.resolve
        for path, revision, value in leaves:
            segs = path.segments
            if not segs:
                raise WrongTypeError("the root of a tree cannot hold a value", path=path)
            node = resolve(path)
            if not isinstance(node, (LeafSchema, AnySchema)):
                raise WrongTypeError(f"{path} is a {node.kind}, not a value", path=path)
            if type(revision) is not int:
                raise WrongTypeError(f"{path}: revision {revision!r} is not an integer",
                                     path=path)
            try:
                value = node.value_type.validate(value)
            except ModelError as exc:
                raise exc.at(path) from None
            parent = interiors.get(segs[:-1])
            if parent is None:  # siblings share their parent: most leaves skip this walk
                parent = self._root
                for depth, seg in enumerate(segs[:-1], 1):
                    child = interiors.get(segs[:depth])
                    if child is None:
                        if seg in parent.children:  # a leaf, which cannot have children
                            raise WrongTypeError(f"{KeyPath._trusted(segs[:depth])} is both a "
                                                 "value and a subtree", path=path)
                        child = parent.children[seg] = _Interior(seg, parent)
                        interiors[segs[:depth]] = child
                    parent = child
            if segs[-1] in parent.children:
                raise WrongTypeError(f"{path} appears twice, or is both a value and a subtree",
                                     path=path)
            leaf = parent.children[segs[-1]] = _Leaf(path, parent, node)
            leaf.value, leaf.hash, leaf.revision = value, _leaf_hash(leaf.key, value), revision
            self._leaves[path] = leaf
        if len(self._leaves) > self.max_leaves:
            raise LimitExceededError(f"the tree would hold {len(self._leaves)} leaves; the "
                                     f"limit is {self.max_leaves}")
        _sum_digests(self._root)
        if not isinstance(self.schema, PermissiveSchema):  # which declares no collections
            self._check_members(self._root, KeyPath.root())

    def _check_members(self, node: _Interior, path: KeyPath) -> None:
        """Refuse collections holding more members than their schema allows."""
        if path.segments:
            declared = self.schema.resolve(path)
            if isinstance(declared, CollectionSchema) and \
                    len(node.children) > declared.max_members:
                raise LimitExceededError(
                    f"{path} holds {len(node.children)} members; at most "
                    f"{declared.max_members} are allowed", path=path,
                    details={"max_members": declared.max_members})
        for name, child in node.children.items():
            if isinstance(child, _Interior):
                self._check_members(child, KeyPath._trusted((*path.segments, name)))

    # -- observers ------------------------------------------------------------------------------

    def subscribe(self, listener: Callable[[TransactionCommitted], None]) -> Callable[[], None]:
        """Call ``listener`` after every committed change; returns a function that unsubscribes."""
        self._listeners.append(listener)
        return lambda: self._listeners.remove(listener)

    # -- internals ---------------------------------------------------------------------------------

    def _find(self, path: KeyPath) -> _Interior | _Leaf | None:
        leaf = self._leaves.get(path)
        if leaf is not None:
            return leaf
        node: _Interior | _Leaf = self._root
        for seg in path.segments:
            if isinstance(node, _Leaf):
                return None
            child = node.children.get(seg)
            if child is None:
                return None
            node = child
        return node

    def _readable_path(self, path: KeyPath) -> bool:
        try:
            return self.schema.resolve(path).access.readable
        except ModelError:
            return True  # unknown to the schema now: tell the copy, deleting is harmless

    def _absence(self, path: KeyPath) -> ModelError:
        self.schema.resolve(path)  # raises when the schema does not declare the path
        return NotPresentError(f"{path} holds no value", path=path)

    def _plain(self, node: _Interior | _Leaf) -> Any:
        if isinstance(node, _Leaf):
            return node.value
        return {name: self._plain(child) for name, child in node.children.items()}

    def __repr__(self) -> str:
        return (f"<ObjectTree epoch={self.epoch:016x} revision={self.revision} "
                f"leaves={len(self._leaves)}>")


_DELETE: Any = object()


def _iter_leaves(node: _Interior | _Leaf) -> Iterator[_Leaf]:
    if isinstance(node, _Leaf):
        yield node
        return
    stack: list[_Interior | _Leaf] = [node]
    while stack:
        current = stack.pop()
        if isinstance(current, _Leaf):
            yield current
        else:
            stack.extend(reversed(current.children.values()))


def _node_digest(node: _Interior | _Leaf | None) -> int:
    if node is None:
        return 0
    return node.hash if isinstance(node, _Leaf) else node.digest


def _node_sum(node: _Interior | _Leaf, visible: bool) -> int:
    if visible:
        return node.visible
    return node.hash if isinstance(node, _Leaf) else node.digest


def _diff_nodes(
    mine: _Interior | _Leaf | None,
    theirs: _Interior | _Leaf | None,
    path: KeyPath,
    out: list[DiffEntry],
    stats: DiffStats,
) -> None:
    stats.nodes_compared += 1
    if _node_digest(mine) == _node_digest(theirs) and type(mine) is type(theirs):
        return
    if isinstance(mine, _Leaf) or isinstance(theirs, _Leaf):
        stats.leaves_compared += 1
        if isinstance(mine, _Leaf) and isinstance(theirs, _Leaf):
            out.append(DiffEntry(path, mine.value, theirs.value))
            return
        # a leaf on one side, a subtree or nothing on the other
        for side, other_is_mine in ((mine, True), (theirs, False)):
            if side is None:
                continue
            for leaf in _iter_leaves(side):
                if other_is_mine:
                    out.append(DiffEntry(leaf.path, leaf.value, ABSENT))
                else:
                    out.append(DiffEntry(leaf.path, ABSENT, leaf.value))
        return
    mine_children = mine.children if mine is not None else {}
    theirs_children = theirs.children if theirs is not None else {}
    for name in mine_children.keys() | theirs_children.keys():
        _diff_nodes(mine_children.get(name), theirs_children.get(name), path / name, out, stats)


__all__ = [
    "ABSENT",
    "ChangeSet",
    "Delete",
    "DiffEntry",
    "DiffStats",
    "ErrorCode",
    "ObjectTree",
    "Operation",
    "PermissiveSchema",
    "TransactionCommitted",
    "Write",
]
