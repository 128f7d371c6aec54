"""Durable object trees: an actor's trees survive a kill -9 of its process (aiosqlite).

*What is stored.* Any number of ``ObjectTree``s, each under a text key, in one SQLite file: per
key the latest snapshot (``pack_tree``) and a log of the ``ChangeSet``s
recorded after it (canonical bytes, one row per change set, keyed by its ``to_revision``).
``load`` restores the snapshot and replays the log with ``apply_changes``, so a station's own
tree and a CSMS's replica come back with the same epoch, revision, per-leaf revisions, tombstones
and horizon (the horizon is captured when ``record`` gets the tree at the change's revision;
without it a loaded tree may keep tombstones the original compacted away, which is safe). When a
key's log reaches ``compact_every`` rows and the caller passed the tree, a snapshot replaces the
log. A record that does not follow on from what the key holds (another epoch, a gap) becomes a
snapshot of the tree when one is passed, else it is refused: no log is kept that cannot replay.

*Durability.* WAL mode with ``synchronous=NORMAL``: a committed transaction is in the operating
system's cache, so it survives the death of the process (SIGKILL, crash); only a power cut may
lose the last transactions. One process owns a file. Wiping the file loses the history: the
caller then builds a fresh tree, whose new epoch tells every peer that the old history is gone.

*Group commit.* ``record``, ``save_snapshot`` and ``delete`` enqueue; one writer task takes all
that is queued, checks each record against what its key holds, writes the batch in one
transaction and only then resolves the callers' futures. What arrives meanwhile goes into the
next transaction, so 1,000 concurrent records cost one or two transactions, not 1,000.

*The contract: never publish before durable.* A revision may be told to anyone (published to a
CSMS, acknowledged to a writer) only once it is durable. Otherwise a crash could bring a station
back at an older revision of the same epoch; it would then commit different content under
revision numbers its CSMS has already seen, and the two would disagree without either being
able to tell. So publish only after ``await store.record(key, changes, tree)`` returned, or, for
a tree attached with ``store.attach``, after ``await persistent.durable(revision)`` (equivalently
``store.flushed(key, revision)``). A CSMS has the mirror rule: acknowledge a station's changes
only after recording them, so that after a crash it asks ``changes_since`` of what it holds.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
from collections.abc import AsyncIterator, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any

import aiosqlite
import msgpack

from object_model import canonical
from object_model.errors import (
    EpochMismatchError,
    ModelError,
    RevisionGapError,
    SnapshotInvalidError,
)
from object_model.schema import PermissiveSchema, SchemaRegistry, parse_path
from object_model.tree import ChangeSet, ObjectTree, TransactionCommitted

log = logging.getLogger(__name__)

LOG_FORMAT = 1
_SCHEMA = """
CREATE TABLE IF NOT EXISTS snapshots (
    key TEXT PRIMARY KEY, epoch TEXT NOT NULL, revision INTEGER NOT NULL, data BLOB NOT NULL
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS log (
    key TEXT, revision INTEGER, data BLOB NOT NULL, PRIMARY KEY (key, revision)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS side (key TEXT PRIMARY KEY, data BLOB NOT NULL) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS applied (
    sender TEXT, id BLOB, stamp INTEGER NOT NULL, PRIMARY KEY (sender, id)
) WITHOUT ROWID;
"""
APPLIED_KEPT_US = 86_400_000_000
"""How long the ids of applied state-changing messages are kept (far beyond any replay
window: a replay older than that is refused as stale)."""


class CorruptTreeError(Exception):
    """A stored snapshot or log row of ``key`` cannot be read back (``revision``: which one)."""

    def __init__(self, key: str, revision: int | None, reason: str) -> None:
        where = "" if revision is None else f" at revision {revision}"
        super().__init__(f"stored tree {key!r} is corrupt{where}: {reason}")
        self.key, self.revision = key, revision


def changes_of(event: TransactionCommitted) -> ChangeSet:
    """The ``ChangeSet`` of one committed transaction of an authoritative tree."""
    rev = event.revision
    return ChangeSet(epoch=event.epoch, from_revision=rev - 1, to_revision=rev,
                     upserts=tuple((path, rev, value) for path, value in event.upserts),
                     deletes=tuple((path, rev) for path in event.deletes))


def pack_tree(tree: ObjectTree) -> bytes:
    """A snapshot of ``tree`` for the store: ``snapshot_plain`` in msgpack, which a cloud
    CSMS restoring a thousand copies decodes in C, several times faster than the canonical
    form (that one stays the fallback, for integers msgpack cannot hold)."""
    try:
        return msgpack.packb(tree.snapshot_plain(), use_bin_type=True)
    except (OverflowError, TypeError, ValueError):
        return tree.snapshot()


def unpack_tree(data: bytes, schema: SchemaRegistry, **tree_options: Any) -> ObjectTree:
    """Reverse ``pack_tree`` (or read a canonical ``ObjectTree.snapshot``, which starts with
    the list tag ``l``; msgpack's 6-element array starts with 0x96)."""
    if data[:1] == b"l":
        return ObjectTree.restore(data, schema, **tree_options)
    try:
        plain = msgpack.unpackb(data, raw=False, strict_map_key=True)
    except Exception as exc:  # msgpack raises several types for damaged bytes
        raise SnapshotInvalidError(f"snapshot does not decode: {exc}") from None
    return ObjectTree.restore_plain(plain, schema, **tree_options)


def _encode_changes(changes: ChangeSet, horizon: int | None) -> bytes:
    return canonical.encode([
        LOG_FORMAT, changes.epoch, changes.from_revision, changes.to_revision, horizon,
        [[str(p), rev, value] for p, rev, value in changes.upserts],
        [[str(p), rev] for p, rev in changes.deletes]])


def _decode_changes(data: bytes) -> tuple[ChangeSet, int | None]:
    fmt, epoch, start, end, horizon, ups, dels = canonical.decode(data)
    if fmt != LOG_FORMAT:
        raise ValueError(f"log format {fmt!r} is not {LOG_FORMAT}")
    if any(type(n) is not int for n in (epoch, start, end, 0 if horizon is None else horizon)):
        raise TypeError("epoch, revisions and horizon must be integers")
    return ChangeSet(
        epoch=epoch, from_revision=start, to_revision=end,
        upserts=tuple((parse_path(p), int(rev), value) for p, rev, value in ups),
        deletes=tuple((parse_path(p), int(rev)) for p, rev in dels),
    ), horizon


@dataclass(frozen=True, slots=True)
class _Head:
    """What the store holds for a key: epoch, newest revision, log rows after the snapshot."""

    epoch: int
    revision: int
    log_rows: int


def _new_future() -> asyncio.Future[None]:
    return asyncio.get_running_loop().create_future()


@dataclass(slots=True)
class _Op:
    kind: str  # "record" | "snapshot" | "delete" | "applied" (ids only)
    key: str
    changes: ChangeSet | None = None
    tree: ObjectTree | None = None
    horizon: int | None = None
    snapshot: tuple[int, int, bytes] | None = None  # epoch, revision, data
    # the state-changing messages whose effect this op carries: (sender, id, timestamp)
    applied: list[tuple[str, bytes, int]] = field(default_factory=list)
    future: asyncio.Future[None] = field(default_factory=_new_future)


def _settle(future: asyncio.Future[None], error: BaseException | None = None) -> None:
    if not future.done():
        future.set_result(None) if error is None else future.set_exception(error)


class _Plan:
    """One batch's effect: the heads after it and the rows to delete and insert."""

    def __init__(self, durable: dict[str, _Head]) -> None:
        self._durable = durable
        self.heads: dict[str, _Head | None] = {}
        self.truncate: set[str] = set()  # keys whose stored log rows all go
        self.drop: set[str] = set()  # keys whose stored snapshot goes
        self.snapshots: dict[str, tuple[str, int, bytes]] = {}
        self.rows: dict[str, list[tuple[int, bytes]]] = {}
        self.applied: list[tuple[str, bytes, int]] = []

    def head(self, key: str) -> _Head | None:
        return self.heads[key] if key in self.heads else self._durable.get(key)

    def snapshot(self, key: str, epoch: int, revision: int, data: bytes) -> None:
        self.truncate.add(key)
        self.rows.pop(key, None)
        self.snapshots[key] = (str(epoch), revision, data)  # text: an epoch may exceed int64
        self.heads[key] = _Head(epoch, revision, 0)

    def log(self, key: str, changes: ChangeSet, data: bytes) -> None:
        head = self.head(key)
        assert head is not None
        self.rows.setdefault(key, []).append((changes.to_revision, data))
        self.heads[key] = _Head(head.epoch, changes.to_revision, head.log_rows + 1)

    def delete(self, key: str) -> None:
        self.truncate.add(key)
        self.drop.add(key)
        self.snapshots.pop(key, None)
        self.rows.pop(key, None)
        self.heads[key] = None


class TreeStore:
    """Trees under text keys in one SQLite file, written by one group-committing task.

    ``compact_every``: a key's log becomes a snapshot when it reaches this many rows (when
    ``record`` is given the tree). ``transactions`` counts committed write transactions.
    """

    def __init__(self, path: Path | str, *, compact_every: int = 256) -> None:
        if compact_every < 1:
            raise ValueError("compact_every must be at least 1")
        self.path = Path(path)
        self.compact_every = compact_every
        self.transactions = 0
        self._db: aiosqlite.Connection | None = None
        self._heads: dict[str, _Head] = {}  # what is committed, per key
        self._queue: list[_Op] = []
        self._last_op: dict[str, asyncio.Future[None]] = {}
        self._wakeup = asyncio.Event()
        self._lock = asyncio.Lock()  # keeps reads out of the writer's open transaction
        self._writer: asyncio.Task[None] | None = None
        self._closing = False
        self._attached: dict[str, PersistentTree] = {}

    async def open(self) -> TreeStore:
        """Open (or create) the file and start the writer task."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        db = await aiosqlite.connect(self.path, isolation_level=None)
        try:
            await db.execute("PRAGMA journal_mode=WAL")
            await db.execute("PRAGMA synchronous=NORMAL")
            await db.executescript(_SCHEMA)
            heads = {key: _Head(int(epoch), revision, 0) for key, epoch, revision in
                     await db.execute_fetchall("SELECT key, epoch, revision FROM snapshots")}
            for key, count, top in await db.execute_fetchall(
                    "SELECT key, COUNT(*), MAX(revision) FROM log GROUP BY key"):
                if (head := heads.get(key)) is not None:  # orphan rows: load reports them
                    heads[key] = _Head(head.epoch, max(head.revision, top), count)
        except BaseException:
            await db.close()
            raise
        self._db, self._heads, self._closing = db, heads, False
        self._writer = asyncio.create_task(self._write_loop(), name=f"tree-store {self.path}")
        self._writer.add_done_callback(self._writer_done)
        return self

    async def close(self, timeout: float = 10.0) -> None:
        """Stop intake, write what is queued (with what attached trees committed) within
        ``timeout`` seconds, close the file."""
        if self._db is None:
            return
        for attached in list(self._attached.values()):
            attached.flush()  # commits not yet submitted still get written
        self._closing = True
        self._wakeup.set()
        if (writer := self._writer) is not None:
            try:
                await asyncio.wait_for(asyncio.shield(writer), timeout)
            except TimeoutError:
                writer.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await writer
        for op in self._queue:
            _settle(op.future, RuntimeError("the tree store closed before this was written"))
        self._queue.clear()
        await self._db.close()
        self._db = self._writer = None

    async def __aenter__(self) -> TreeStore:
        return await self.open()

    async def __aexit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                        tb: TracebackType | None) -> None:
        await self.close()

    @property
    def db(self) -> aiosqlite.Connection:
        if self._db is None:
            raise RuntimeError("the tree store is not open")
        return self._db

    # -- writing -----------------------------------------------------------------------------

    async def record(self, key: str, changes: ChangeSet, tree: ObjectTree | None = None) -> None:
        """Append ``changes`` to ``key``'s log; on return it is on disk.

        ``tree``, the tree the changes come from (or were applied to), lets the store compact
        the log into a snapshot every ``compact_every`` rows, and turn a record that does not
        follow on from the stored state into a snapshot. Without it such a record raises
        ``EpochMismatchError`` / ``RevisionGapError`` (so a key's first record must start at
        revision 0). Changes already covered by a newer snapshot are accepted as they are.
        """
        exact = tree is not None and (tree.epoch, tree.revision) == (changes.epoch,
                                                                     changes.to_revision)
        horizon = tree.horizon if exact and tree is not None else None
        await asyncio.shield(self.submit(
            _Op("record", key, changes=changes, tree=tree, horizon=horizon)))

    async def save_snapshot(self, key: str, tree: ObjectTree) -> None:
        """Store ``tree`` as it is now as ``key``'s snapshot and drop the key's log (after
        ``adopt``, i.e. a resync, and on clean shutdown). On return it is on disk."""
        snapshot = (tree.epoch, tree.revision, pack_tree(tree))
        await asyncio.shield(self.submit(_Op("snapshot", key, snapshot=snapshot)))

    async def delete(self, key: str) -> None:
        """Forget ``key`` (snapshot and log)."""
        await asyncio.shield(self.submit(_Op("delete", key)))

    async def flushed(self, key: str, revision: int, *, epoch: int | None = None) -> None:
        """Return once ``revision`` of ``key`` (in ``epoch``, if given) is durable.

        Waits for the writes already submitted for the key; raises their error if they failed,
        and ``LookupError`` if the store still does not hold that revision after them.
        """
        if not self._durable(key, revision, epoch) and (op := self._last_op.get(key)):
            await asyncio.shield(op)
        if not self._durable(key, revision, epoch):
            raise LookupError(f"revision {revision} of tree {key!r} was not recorded "
                              f"(the store holds {self._heads.get(key)})")

    async def attach(self, key: str, tree: ObjectTree) -> PersistentTree:
        """Record every later change of ``tree`` under ``key`` (see ``PersistentTree``),
        after a snapshot unless the store holds ``tree``'s epoch and revision already.

        One tree per key: attaching a second one would interleave two histories in one log.
        """
        self._check_detached(key)
        if self._needs_snapshot(key, tree):
            await self.save_snapshot(key, tree)
        return self._attach(key, tree)

    def attach_soon(self, key: str, tree: ObjectTree) -> PersistentTree:
        """``attach`` without waiting for the first snapshot: it is queued, and durable with
        the store's next transaction (``PersistentTree.durable`` waits for it, as for any
        later change). For a tree that holds nothing worth waiting for yet, such as a new,
        empty copy that a resynchronisation is about to fill: a CSMS admitting a site's
        thousand stations must not wait for a thousand transactions in a row."""
        self._check_detached(key)
        if self._needs_snapshot(key, tree):
            self.submit(_Op("snapshot", key, snapshot=(tree.epoch, tree.revision,
                                                       pack_tree(tree))))
        return self._attach(key, tree)

    def _check_detached(self, key: str) -> None:
        if key in self._attached:
            raise ValueError(f"tree {key!r} is already attached to {self.path}; detach it first")

    def _needs_snapshot(self, key: str, tree: ObjectTree) -> bool:
        head = self._heads.get(key)
        return head is None or (head.epoch, head.revision) != (tree.epoch, tree.revision)

    def _attach(self, key: str, tree: ObjectTree) -> PersistentTree:
        attached = PersistentTree(self, key, tree)
        self._attached[key] = attached
        return attached

    def release(self, attached: PersistentTree) -> None:
        """``attached`` no longer records its tree here (another tree may be attached)."""
        if self._attached.get(attached.key) is attached:
            del self._attached[attached.key]

    def _durable(self, key: str, revision: int, epoch: int | None) -> bool:
        head = self._heads.get(key)
        return head is not None and head.revision >= revision and epoch in (None, head.epoch)

    def submit(self, op: _Op) -> asyncio.Future[None]:
        """Queue ``op``; its future resolves once it is on disk (callers await it shielded,
        so a cancelled caller does not cancel the write)."""
        if self._db is None or self._closing:
            raise RuntimeError("the tree store is closed")
        self._queue.append(op)
        self._last_op[op.key] = op.future

        def done(future: asyncio.Future[None]) -> None:
            if self._last_op.get(op.key) is future:
                del self._last_op[op.key]
            if not future.cancelled():
                future.exception()  # failures are raised to waiters or logged by the writer

        op.future.add_done_callback(done)
        self._wakeup.set()
        return op.future

    # -- the writer ----------------------------------------------------------------------------

    async def _write_loop(self) -> None:
        while True:
            if not self._queue:
                if self._closing:
                    return
                self._wakeup.clear()
                await self._wakeup.wait()
                continue
            batch, self._queue = self._queue, []
            plan, accepted = _Plan(self._heads), []
            for op in batch:
                try:
                    self._plan(op, plan)
                    accepted.append(op)
                except (ModelError, ValueError, TypeError) as exc:  # a bad record fails alone
                    _settle(op.future, exc)
            try:
                if plan.heads or plan.applied:
                    async with self._lock:
                        await self._commit(plan)
                    self.transactions += 1
            except Exception as exc:
                log.exception("tree store %s: a transaction of %d writes failed",
                              self.path, len(accepted))
                for op in accepted:
                    _settle(op.future, exc)
                continue
            except asyncio.CancelledError:  # close() gave up waiting: nobody may wait forever
                for op in accepted:
                    _settle(op.future, RuntimeError("the tree store closed before this was written"))
                raise
            for key, head in plan.heads.items():
                if head is None:
                    self._heads.pop(key, None)
                else:
                    self._heads[key] = head
            for op in accepted:
                _settle(op.future)

    def _writer_done(self, task: asyncio.Task[None]) -> None:
        if not task.cancelled() and task.exception() is not None:
            log.error("tree store %s: the writer died", self.path, exc_info=task.exception())

    def _plan(self, op: _Op, plan: _Plan) -> None:
        self._plan_effect(op, plan)
        plan.applied += op.applied  # in the transaction that writes the effect

    def _plan_effect(self, op: _Op, plan: _Plan) -> None:
        if op.kind == "applied":
            return
        if op.kind == "delete":
            plan.delete(op.key)
            return
        if op.snapshot is not None:
            plan.snapshot(op.key, *op.snapshot)
            return
        key, changes, tree = op.key, op.changes, op.tree
        assert changes is not None
        head = plan.head(key)
        stored = head.revision if head is not None and head.epoch == changes.epoch else None
        if stored is not None and changes.to_revision <= stored:
            return  # already durable: a later snapshot covered it
        follows = stored is not None and changes.from_revision <= stored
        full = head is not None and head.log_rows + 1 >= self.compact_every
        if tree is not None and tree.epoch == changes.epoch \
                and tree.revision >= changes.to_revision and (full or not follows):
            # The tree may have moved on since: its snapshot covers this and later records.
            plan.snapshot(key, tree.epoch, tree.revision, pack_tree(tree))
            return
        if not follows and changes.from_revision != 0:
            raise _refusal(key, head, changes)
        data = _encode_changes(changes, op.horizon)
        if not follows:  # a new history from scratch: an empty tree, then this
            empty = pack_tree(ObjectTree(PermissiveSchema(), epoch=changes.epoch))
            plan.snapshot(key, changes.epoch, 0, empty)
        plan.log(key, changes, data)

    async def _commit(self, plan: _Plan) -> None:
        db = self.db
        rows = [(k, rev, data) for k, rows in plan.rows.items() for rev, data in rows]
        steps = [  # in this order: a batch's deletes never touch the rows it inserts
            ("DELETE FROM log WHERE key = ?", [(k,) for k in plan.truncate]),
            ("DELETE FROM snapshots WHERE key = ?",
             [(k,) for k in plan.drop - plan.snapshots.keys()]),
            ("INSERT OR REPLACE INTO snapshots VALUES (?, ?, ?, ?)",
             [(k, *snap) for k, snap in plan.snapshots.items()]),
            ("INSERT INTO log VALUES (?, ?, ?)", rows),
            ("INSERT OR IGNORE INTO applied VALUES (?, ?, ?)", plan.applied),
        ]
        await db.execute("BEGIN")
        try:
            for sql, params in steps:
                if params:  # each statement is a round trip to aiosqlite's thread
                    await db.executemany(sql, params)
            await db.execute("COMMIT")
        except BaseException:
            with contextlib.suppress(aiosqlite.Error):
                await db.execute("ROLLBACK")
            raise

    async def applied_marks(self) -> dict[str, int]:
        """Per sender, the timestamp of the newest state-changing message whose effect is
        stored here (``PersistentTree.note_applied``): after a crash, a replay of it (or of
        anything older) is refused even if the guard's own marks had not been written yet.
        Ids kept longer than ``APPLIED_KEPT_US`` are let go."""
        db = self.db
        rows = await db.execute_fetchall("SELECT MAX(stamp) FROM applied")
        newest = next(iter(rows))[0] if rows else None
        if newest is not None:
            await db.execute("DELETE FROM applied WHERE stamp < ?", (newest - APPLIED_KEPT_US,))
        marks = await db.execute_fetchall("SELECT sender, MAX(stamp) FROM applied "
                                          "GROUP BY sender")
        return {sender: int(stamp) for sender, stamp in marks}

    # -- reading -----------------------------------------------------------------------------

    async def load(self, key: str, schema: SchemaRegistry, **tree_options: Any) -> ObjectTree | None:
        """The tree stored under ``key`` as of the last write that returned, or ``None``.

        ``tree_options`` go to the ``ObjectTree`` (``max_tombstones``, ``max_leaves``). A
        snapshot or log row that does not read back raises ``CorruptTreeError``.
        """
        async with self._lock:
            snap = [(int(r), bytes(d)) for r, d in await self.db.execute_fetchall(
                "SELECT revision, data FROM snapshots WHERE key = ?", (key,))]
            rows = [(int(r), bytes(d)) for r, d in await self.db.execute_fetchall(
                "SELECT revision, data FROM log WHERE key = ? ORDER BY revision", (key,))]
        if not snap:
            if rows:
                raise CorruptTreeError(key, None, f"{len(rows)} log rows but no snapshot")
            return None
        return _rebuild(key, snap[0], rows, schema, tree_options)

    async def load_many(self, keys: Iterable[str], schema: SchemaRegistry, *,
                        chunk: int = 256, **tree_options: Any
                        ) -> AsyncIterator[tuple[str, ObjectTree | CorruptTreeError]]:
        """``(key, tree)`` for each of ``keys`` the store holds, in order; a key whose rows do
        not read back comes with its ``CorruptTreeError`` instead, so one bad copy does not
        keep the others from loading.

        For a CSMS that starts with a thousand cached copies: two queries per ``chunk`` keys
        instead of two per key, and the garbage collector paused while a chunk is rebuilt
        (each tree allocates thousands of objects that all survive, which would otherwise
        set off full collections over an ever larger heap).
        """
        keys = list(keys)
        for start in range(0, len(keys), chunk):
            part = keys[start:start + chunk]
            marks = ",".join("?" * len(part))
            async with self._lock:
                snaps = {k: (rev, data) for k, rev, data in await self.db.execute_fetchall(
                    f"SELECT key, revision, data FROM snapshots WHERE key IN ({marks})", part)}
                logs: dict[str, list[tuple[int, bytes]]] = {}
                for k, rev, data in await self.db.execute_fetchall(
                        f"SELECT key, revision, data FROM log WHERE key IN ({marks}) "
                        "ORDER BY key, revision", part):
                    logs.setdefault(k, []).append((rev, data))
            loaded: list[tuple[str, ObjectTree | CorruptTreeError]] = []
            with _collector_paused():  # not across a yield: the caller may await meanwhile
                for key in part:
                    rows = logs.get(key, [])
                    if key not in snaps:
                        if rows:
                            loaded.append((key, CorruptTreeError(
                                key, None, f"{len(rows)} log rows but no snapshot")))
                        continue
                    try:
                        loaded.append(
                            (key, _rebuild(key, snaps[key], rows, schema, tree_options)))
                    except CorruptTreeError as exc:
                        loaded.append((key, exc))
            for item in loaded:
                yield item

    async def keys(self) -> list[str]:
        """The stored keys, sorted."""
        async with self._lock:
            return [r[0] for r in await self.db.execute_fetchall(
                "SELECT key FROM snapshots ORDER BY key")]

    async def put_side(self, key: str, data: bytes | None) -> None:
        """Keep (or, with ``None``, drop) a record that is not a tree under ``key``: state an
        actor keeps beside its tree, such as a monitoring task's log across restarts."""
        async with self._lock:
            if data is None:
                await self.db.execute("DELETE FROM side WHERE key = ?", (key,))
            else:
                await self.db.execute("INSERT OR REPLACE INTO side VALUES (?, ?)", (key, data))

    async def get_side(self, key: str) -> bytes | None:
        async with self._lock:
            rows = list(await self.db.execute_fetchall("SELECT data FROM side WHERE key = ?",
                                                       (key,)))
        return bytes(rows[0][0]) if rows else None

    async def log_rows(self, key: str | None = None) -> int:
        """How many log rows the file holds (for ``key``, or in all)."""
        where, args = ("", ()) if key is None else (" WHERE key = ?", (key,))
        async with self._lock:
            rows = await self.db.execute_fetchall(f"SELECT COUNT(*) FROM log{where}", args)
        return int(next(iter(rows))[0])


def _rebuild(key: str, snapshot: tuple[int, bytes], rows: Iterable[tuple[int, bytes]],
             schema: SchemaRegistry, tree_options: dict[str, Any]) -> ObjectTree:
    """A stored snapshot with its log replayed; ``CorruptTreeError`` if any of it fails."""
    snap_revision, data = snapshot
    try:
        tree = unpack_tree(bytes(data), schema, **tree_options)
        if tree.revision != snap_revision:
            raise ValueError(f"it holds revision {tree.revision}")
    except (ModelError, ValueError, TypeError) as exc:
        raise CorruptTreeError(key, snap_revision, f"the snapshot does not restore: {exc}") \
            from exc
    for revision, row in rows:
        try:
            changes, horizon = _decode_changes(bytes(row))
            if changes.to_revision != revision:
                raise ValueError(f"the row holds revision {changes.to_revision}")
            tree.apply_changes(changes)
            if horizon is not None and horizon > tree.horizon:
                tree.compact(horizon)  # what auto-compaction did to the original
        except (ModelError, ValueError, TypeError) as exc:
            raise CorruptTreeError(key, revision, f"the log row does not replay: {exc}") \
                from exc
    return tree


@contextlib.contextmanager
def _collector_paused() -> Iterator[None]:
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


def _refusal(key: str, head: _Head | None, changes: ChangeSet) -> ModelError:
    details = {"key": key, "from": changes.from_revision, "to": changes.to_revision}
    if head is not None and head.epoch != changes.epoch:
        return EpochMismatchError(
            f"tree {key!r} is stored with epoch {head.epoch:x}, the changes are for epoch "
            f"{changes.epoch:x}: pass tree= or call save_snapshot after adopt", details=details)
    held = "is not stored" if head is None else f"is stored up to revision {head.revision}"
    return RevisionGapError(f"tree {key!r} {held}; the changes start after revision "
                            f"{changes.from_revision}: pass tree= or call save_snapshot",
                            details=details)


class PersistentTree:
    """A tree whose every change is recorded under ``key`` (made by ``TreeStore.attach``).

    For authoritative trees and replicas alike. A tree listener cannot await, so it only notes
    the commit and schedules a flush on the event loop. The flush records
    ``tree.changes_since(last recorded revision)`` (exact per-leaf revisions and tombstones,
    several commits coalesced in one row), or a snapshot when that cannot describe what happened
    (``adopt``, a new epoch, a horizon past the recorded revision). ``durable`` flushes at once
    and waits: call it before publishing a revision.
    """

    def __init__(self, store: TreeStore, key: str, tree: ObjectTree) -> None:
        self.store, self.key, self.tree = store, key, tree
        self._loop = asyncio.get_running_loop()
        self._epoch, self._revision = tree.epoch, tree.revision  # what was last submitted
        self._seen = tree.revision
        self._needs_snapshot = self._scheduled = False
        self._pending: asyncio.Future[None] | None = None  # the last submission
        self._applied: list[tuple[str, bytes, int]] = []
        self._unsubscribe = tree.subscribe(self._on_commit)
        tree.on_listener_error = self._listener_failed

    def _listener_failed(self, exc: Exception, event: TransactionCommitted) -> None:
        log.error("tree %r: a listener failed on revision %d (the transaction stands; %d "
                  "failures so far)", self.key, event.revision, self.tree.listener_failures,
                  exc_info=exc)

    def _on_commit(self, event: TransactionCommitted) -> None:
        if event.epoch != self._epoch or event.revision <= self._seen:
            self._needs_snapshot = True  # e.g. adopt at the same revision: no delta says it
        self._seen = max(self._seen, event.revision)
        if not self._scheduled:
            self._scheduled = True
            self._loop.call_soon(self._flush_soon)

    def _flush_soon(self) -> None:
        try:
            self.flush()
        except Exception:
            log.exception("tree %r: could not submit its changes", self.key)

    def flush(self) -> asyncio.Future[None] | None:
        """Submit what changed since the last submission now; the future resolves once it is
        on disk (``None`` when nothing changed)."""
        self._scheduled = False
        tree = self.tree
        if self._needs_snapshot or tree.epoch != self._epoch or self._revision < tree.horizon:
            op = _Op("snapshot", self.key, snapshot=(tree.epoch, tree.revision, pack_tree(tree)))
        elif tree.revision > self._revision:
            op = _Op("record", self.key, changes=tree.changes_since(self._revision), tree=tree,
                     horizon=tree.horizon)
        elif not self._applied:
            return None
        else:  # ids of messages whose effect was submitted before: record them now
            op = _Op("applied", self.key)
        op.applied, self._applied = self._applied, []
        self._pending = future = self.store.submit(op)
        future.add_done_callback(self._written)
        self._needs_snapshot = False
        self._epoch, self._revision, self._seen = tree.epoch, tree.revision, tree.revision
        return future

    def _written(self, future: asyncio.Future[None]) -> None:
        if future.cancelled() or future.exception() is not None:
            self._needs_snapshot = True  # a failed write is retried, whole, by the next flush

    def note_applied(self, sender: str, message_id: bytes, stamp_us: int) -> None:
        """The message ``message_id`` of ``sender`` (timestamped ``stamp_us``) changed the
        tree: its id is written in the same transaction as its effect."""
        self._applied.append((sender, message_id, stamp_us))
        if not self._scheduled:
            self._scheduled = True
            self._loop.call_soon(self._flush_soon)

    async def durable(self, revision: int | None = None) -> None:
        """Return once ``revision`` (default: the tree's current one) is on disk."""
        target = self.tree.revision if revision is None else revision
        self.flush()
        if self._pending is not None:  # it may rewrite a revision already durable (adopt)
            await asyncio.shield(self._pending)
        await self.store.flushed(self.key, target, epoch=self.tree.epoch)

    async def detach(self, *, snapshot: bool = True) -> None:
        """Stop recording after making everything durable: as a fresh snapshot by default (the
        clean-shutdown path, leaving no log to replay), else by flushing the log."""
        self._unsubscribe()
        self.store.release(self)
        await (self.store.save_snapshot(self.key, self.tree) if snapshot else self.durable())


__all__ = ["CorruptTreeError", "PersistentTree", "TreeStore", "changes_of"]
