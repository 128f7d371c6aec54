"""The blob cache: content-addressed blobs in chunks, fetched only where missing, kept LRU.

``BlobStore`` keeps blobs (named by SHA-256) as chunks in one SQLite file: a blob being
fetched is *partial* (its ``BlobRef`` and the chunks so far), so a transfer interrupted by a
crash, a broker restart or a pause resumes with the chunks it lacks. Every chunk is checked
against its hash when it is stored and again when it is read (a chunk that rotted on disk is
dropped and fetched again); a complete blob is checked whole. Complete blobs beyond
``capacity_bytes`` leave in least-recently-used order; partial ones stay until finished.

``fetch_blob`` brings a blob into a store from a peer, ``window`` chunk requests in flight at
bulk priority, retrying what times out (the peer or the broker may be restarting) until
``give_up_s`` of no progress. The timeout is long on purpose: when a whole site asks at once
after a broker restart, answers queue behind each other, and a short timeout would have every
station give up on answers already on their way and ask again, forever. ``BlobServing`` answers ``BlobChunkRequest``s from an actor's
store and, for a blob it was told comes from upstream (``expect_blob``), fetches a missing
chunk upstream once however many receivers ask for it at the same time: a local CSMS sends a
site's 50 stations a firmware image that crossed the uplink once.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import time
from collections.abc import Callable
from pathlib import Path

import aiosqlite
import msgpack

from actors.runtime.actor import Actor, Context, handles
from actors.runtime.storage.sqlite import SqliteFile
from broker_bridge import Priority
from object_model import ErrorCode, MessageBase, ModelError
from object_model.blobs import MAX_CHUNKS, BlobChunk, BlobChunkRequest, BlobRef
from object_model.errors import (
    BusyError,
    InvalidMessageError,
    InvalidValueError,
    NotPresentError,
    RequestTimeoutError,
)

log = logging.getLogger("csms.blobs")

_SCHEMA = """
CREATE TABLE IF NOT EXISTS blobs (hash BLOB PRIMARY KEY, ref BLOB NOT NULL, size INTEGER NOT NULL,
                                  complete INTEGER NOT NULL DEFAULT 0, used INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS chunks (hash BLOB NOT NULL, idx INTEGER NOT NULL, data BLOB NOT NULL,
                                   PRIMARY KEY (hash, idx));
"""


def make_ref(data: bytes, *, chunk_size: int = 64 * 1024,
             media_type: str = "application/octet-stream") -> BlobRef:
    """The ``BlobRef`` of ``data``."""
    if len(data) > chunk_size * MAX_CHUNKS:
        raise ValueError(f"a blob holds at most {MAX_CHUNKS} chunks of {chunk_size} bytes")
    hashes = [hashlib.sha256(data[i:i + chunk_size]).digest()
              for i in range(0, len(data), chunk_size)]
    return BlobRef(hash=hashlib.sha256(data).digest(), size=len(data), chunk_size=chunk_size,
                   chunk_hashes=hashes, media_type=media_type)


class BlobStore(SqliteFile):
    """Blobs in one SQLite file (see the module docstring). ``corrupt_chunks`` counts chunks
    that failed their hash (arriving or on disk)."""

    SCHEMA = _SCHEMA
    WHAT = "blob store"

    def __init__(self, path: Path | str, *, capacity_bytes: int = 512 * 1024 * 1024) -> None:
        super().__init__(path)
        self.capacity_bytes = capacity_bytes
        self.corrupt_chunks = 0
        self._refs: dict[bytes, BlobRef] = {}

    async def loaded(self, db: aiosqlite.Connection) -> None:
        for raw in await db.execute_fetchall("SELECT ref FROM blobs"):
            ref = BlobRef.model_validate(msgpack.unpackb(raw[0]))
            self._refs[ref.hash] = ref

    def ref(self, blob: bytes) -> BlobRef | None:
        return self._refs.get(blob)

    async def put(self, data: bytes, *, chunk_size: int = 64 * 1024,
                  media_type: str = "application/octet-stream") -> BlobRef:
        """Keep ``data`` (complete) and return its ``BlobRef``: how an origin offers a blob."""
        ref = make_ref(data, chunk_size=chunk_size, media_type=media_type)
        await self.begin(ref)
        await self.db.executemany(
            "INSERT OR REPLACE INTO chunks VALUES (?, ?, ?)",
            [(ref.hash, i, data[i * chunk_size:(i + 1) * chunk_size]) for i in range(ref.chunks)])
        await self.db.execute("UPDATE blobs SET complete = 1 WHERE hash = ?", (ref.hash,))
        await self._evict(keep=ref.hash)
        return ref

    async def begin(self, ref: BlobRef) -> None:
        """Expect ``ref``'s chunks (idempotent: a partial blob keeps what it has)."""
        if ref.hash in self._refs:
            await self._touch(ref.hash)
            return
        self._refs[ref.hash] = ref
        await self.db.execute("INSERT OR IGNORE INTO blobs VALUES (?, ?, ?, 0, ?)",
                              (ref.hash, msgpack.packb(ref.model_dump()), ref.size,
                               time.time_ns()))

    async def missing(self, blob: bytes) -> list[int]:
        """The chunk indexes not held yet (all of them for an unknown blob)."""
        ref = self._refs.get(blob)
        if ref is None:
            return []
        rows = await self.db.execute_fetchall("SELECT idx FROM chunks WHERE hash = ?", (blob,))
        held = {row[0] for row in rows}
        return [i for i in range(ref.chunks) if i not in held]

    async def put_chunk(self, blob: bytes, index: int, data: bytes) -> bool:
        """Store a chunk if it matches its hash; False (counted) if it does not."""
        ref = self._refs.get(blob)
        if ref is None or not 0 <= index < ref.chunks:
            raise InvalidValueError(
                f"chunk {index} of a blob this store does not expect",
                details={"hash": blob.hex(), "index": index})
        if (len(data) != ref.chunk_length(index)
                or hashlib.sha256(data).digest() != ref.chunk_hashes[index]):
            self.corrupt_chunks += 1
            return False
        await self.db.execute("INSERT OR REPLACE INTO chunks VALUES (?, ?, ?)",
                              (blob, index, data))
        return True

    async def chunk(self, blob: bytes, index: int) -> bytes | None:
        """Chunk ``index`` if held and intact; a corrupt one is dropped (fetch it again)."""
        ref = self._refs.get(blob)
        if ref is None or not 0 <= index < ref.chunks:
            return None
        rows = await self.db.execute_fetchall(
            "SELECT data FROM chunks WHERE hash = ? AND idx = ?", (blob, index))
        if not rows:
            return None
        data = rows[0][0]
        if hashlib.sha256(data).digest() != ref.chunk_hashes[index]:
            self.corrupt_chunks += 1
            log.warning("%s: chunk %d of blob %s is corrupt on disk; dropped", self.path,
                        index, blob.hex()[:16])
            await self.db.execute("DELETE FROM chunks WHERE hash = ? AND idx = ?", (blob, index))
            await self.db.execute("UPDATE blobs SET complete = 0 WHERE hash = ?", (blob,))
            return None
        return bytes(data)

    async def finish(self, blob: bytes) -> bool:
        """Check a blob with every chunk present as a whole; True when it is complete."""
        ref = self._refs[blob]
        if await self.missing(blob):
            return False
        digest = hashlib.sha256()
        for index in range(ref.chunks):
            data = await self.chunk(blob, index)
            if data is None:
                return False
            digest.update(data)
        if digest.digest() != blob:  # chunks matching their hashes, a whole that does not:
            await self.forget(blob)   # the ref itself is forged
            raise InvalidValueError(
                f"blob {blob.hex()[:16]}...: its chunks match their hashes but not the blob "
                "hash; the offer is inconsistent, so the blob was discarded",
                details={"hash": blob.hex()})
        await self.db.execute("UPDATE blobs SET complete = 1, used = ? WHERE hash = ?",
                              (time.time_ns(), blob))
        await self._evict(keep=blob)
        return True

    async def read(self, blob: bytes) -> bytes:
        ref = self._refs[blob]
        parts = [await self.chunk(blob, i) for i in range(ref.chunks)]
        if any(p is None for p in parts):
            raise NotPresentError(f"blob {blob.hex()[:16]}... is incomplete")
        return b"".join(parts)  # type: ignore[arg-type]

    async def is_complete(self, blob: bytes) -> bool:
        rows = await self.db.execute_fetchall("SELECT complete FROM blobs WHERE hash = ?",
                                              (blob,))
        return bool(rows and rows[0][0])

    async def forget(self, blob: bytes) -> None:
        self._refs.pop(blob, None)
        await self.db.execute("DELETE FROM chunks WHERE hash = ?", (blob,))
        await self.db.execute("DELETE FROM blobs WHERE hash = ?", (blob,))

    async def _touch(self, blob: bytes) -> None:
        await self.db.execute("UPDATE blobs SET used = ? WHERE hash = ?", (time.time_ns(), blob))

    async def _evict(self, keep: bytes) -> None:
        rows = await self.db.execute_fetchall(
            "SELECT hash, size FROM blobs WHERE complete = 1 ORDER BY used DESC")
        total = 0
        for blob, size in rows:
            total += size
            if total > self.capacity_bytes and blob != keep:
                log.info("%s: evicting blob %s (%d bytes, least recently used)", self.path,
                         blob.hex()[:16], size)
                await self.forget(blob)
                total -= size


async def fetch_blob(actor: Actor, store: BlobStore, ref: BlobRef, source: str, *,
                     window: int = 4, timeout: float = 30.0, give_up_s: float = 300.0,
                     on_progress: Callable[[int, int], None] | None = None,
                     max_bad_chunks: int = 8) -> int:
    """Fetch the chunks of ``ref`` that ``store`` lacks from ``source`` and check the whole;
    returns how many chunks were fetched. Raises ``TIMEOUT`` after ``give_up_s`` without a
    chunk arriving, and the source's error if it says it has no such blob."""
    await store.begin(ref)
    todo = await store.missing(ref.hash)
    fetched = bad = 0
    last_progress = time.monotonic()
    done = ref.chunks - len(todo)
    queue: asyncio.Queue[int] = asyncio.Queue()
    for index in todo:
        queue.put_nowait(index)

    async def worker() -> None:
        nonlocal fetched, bad, last_progress, done
        while not queue.empty():
            index = queue.get_nowait()
            try:
                answer = await actor.request(source, BlobChunkRequest(hash=ref.hash, index=index),
                                             timeout=timeout, priority=Priority.BULK)
            except ModelError as exc:
                if exc.code not in (ErrorCode.TIMEOUT, ErrorCode.BUSY):
                    raise
                if time.monotonic() - last_progress > give_up_s:
                    raise RequestTimeoutError(
                        f"no chunk of blob {ref.hash.hex()[:16]}... from {source} for "
                        f"{give_up_s:g} s; {done} of {ref.chunks} chunks are kept for a retry",
                        details={"source": source, "have": done, "chunks": ref.chunks}) from None
                queue.put_nowait(index)  # the peer or the broker is restarting: again
                continue
            if not isinstance(answer, BlobChunk) or answer.index != index:
                raise InvalidMessageError(
                    f"{source} answered a chunk request with {type(answer).__name__}")
            if not await store.put_chunk(ref.hash, index, answer.data):
                bad += 1
                log.warning("%s: chunk %d of blob %s from %s failed its hash; fetching it "
                            "again", actor.address, index, ref.hash.hex()[:16], source)
                if bad > max_bad_chunks:
                    raise InvalidValueError(
                        f"{bad} chunks from {source} failed their hashes: giving up",
                        details={"source": source, "bad_chunks": bad})
                queue.put_nowait(index)
                continue
            fetched += 1
            done += 1
            last_progress = time.monotonic()
            if on_progress is not None:
                on_progress(done, ref.chunks)

    while True:
        await asyncio.gather(*(worker() for _ in range(max(1, min(window, queue.qsize())))))
        if await store.finish(ref.hash):
            return fetched
        for index in await store.missing(ref.hash):  # a chunk rotted meanwhile
            queue.put_nowait(index)


class BlobServing(Actor):
    """Serves chunks from ``self.blobs``; fetches upstream the chunks of expected blobs.

    ``served_bytes`` counts chunk bytes answered, ``upstream_chunks`` chunks fetched."""

    blobs: BlobStore | None = None

    def __init__(self, *args: object, **kwargs: object) -> None:
        super().__init__(*args, **kwargs)  # type: ignore[arg-type]
        self.served_bytes = 0
        self.upstream_chunks = 0
        self._upstream: dict[bytes, str] = {}
        self._inflight: dict[tuple[bytes, int], asyncio.Future[bytes]] = {}

    async def expect_blob(self, ref: BlobRef, upstream: str) -> None:
        """Chunks of ``ref`` this actor lacks are to be fetched from ``upstream``."""
        assert self.blobs is not None
        await self.blobs.begin(ref)
        if not await self.blobs.is_complete(ref.hash):
            self._upstream[ref.hash] = upstream

    @handles(BlobChunkRequest)
    async def on_blob_chunk(self, message: BlobChunkRequest, ctx: Context) -> MessageBase | None:
        ctx.require_role()
        data = None if self.blobs is None else await self.blobs.chunk(message.hash,
                                                                      message.index)
        if data is not None:
            return self._served(message, data)
        # fetching upstream takes a round trip, during which upstream may be waiting on us
        # (forwarding the next update through us): the inbox must go on meanwhile
        self.defer(ctx, self._served_from_upstream(message, ctx), f"blob-{message.index}")
        return None

    def _served(self, message: BlobChunkRequest, data: bytes) -> BlobChunk:
        self.served_bytes += len(data)
        return BlobChunk(hash=message.hash, index=message.index, data=data)

    async def _served_from_upstream(self, message: BlobChunkRequest, ctx: Context) -> BlobChunk:
        return self._served(message, await self._from_upstream(message.hash, message.index,
                                                              ctx))

    async def _from_upstream(self, blob: bytes, index: int, ctx: Context) -> bytes:
        upstream = self._upstream.get(blob)
        if upstream is None or self.blobs is None or self.blobs.ref(blob) is None:
            raise NotPresentError(
                f"{self.address} has no blob {blob.hex()[:16]}... (chunk {index})",
                details={"hash": blob.hex(), "index": index})
        key = (blob, index)
        waiting = self._inflight.get(key)
        if waiting is None:  # the first asker fetches; the others wait for the same answer
            waiting = self._inflight[key] = asyncio.get_running_loop().create_future()
            waiting.add_done_callback(lambda f: f.cancelled() or f.exception())  # retrieved
            self.spawn(self._fetch_chunk(blob, index, upstream, waiting), f"upstream-{index}")
        wait = ctx.time_left(self.clock.now_us(), 30.0)
        try:
            async with asyncio.timeout(wait):
                return await asyncio.shield(waiting)
        except TimeoutError:  # the fetch goes on: the asker's retry will find the chunk here
            raise BusyError(
                f"chunk {index} of blob {blob.hex()[:16]}... is still on its way from "
                f"{upstream}: ask again", details={"hash": blob.hex(), "index": index}) from None

    async def _fetch_chunk(self, blob: bytes, index: int, upstream: str,
                           waiting: asyncio.Future[bytes]) -> None:
        assert self.blobs is not None
        try:
            for _ in range(3):
                answer = await self.request(upstream, BlobChunkRequest(hash=blob, index=index),
                                            timeout=10, priority=Priority.BULK)
                assert isinstance(answer, BlobChunk)
                self.upstream_chunks += 1
                if await self.blobs.put_chunk(blob, index, answer.data):
                    waiting.set_result(answer.data)
                    if not await self.blobs.missing(blob):
                        await self.blobs.finish(blob)
                    return
            raise InvalidValueError(
                f"chunk {index} of blob {blob.hex()[:16]}... from {upstream} failed its hash "
                "three times", details={"hash": blob.hex(), "index": index})
        except Exception as exc:
            if not waiting.done():
                waiting.set_exception(exc)
        finally:
            self._inflight.pop((blob, index), None)
            if not waiting.done():
                waiting.cancel()


__all__ = ["BlobServing", "BlobStore", "fetch_blob", "make_ref"]
