"""Blobs between actors: fetching a blob from a peer, and serving chunks to peers.

``fetch_blob`` brings a blob into a ``BlobStore`` from a peer, ``window`` chunk requests in
flight at bulk priority, retrying what times out (the peer or the broker may be restarting)
until ``give_up_s`` of no progress. The timeout is long on purpose: when a whole site asks at
once after a broker restart, answers queue behind each other, and a short timeout would have
every station give up on answers already on their way and ask again, forever.

``BlobService`` answers ``BlobChunkRequest``s from an actor's store and, for a blob it was told
comes from upstream (``expect``), fetches a missing chunk upstream once however many receivers
ask for it at the same time: a local CSMS sends a site's 50 stations a firmware image that
crossed the uplink once.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

from actors.runtime.actor import Context, Messenger
from actors.runtime.storage.blobs import BlobStore
from broker_bridge import Priority
from object_model import ErrorCode, MessageBase, ModelError
from object_model.blobs import BlobChunk, BlobChunkRequest, BlobRef
from object_model.errors import (
    BusyError,
    InvalidMessageError,
    InvalidValueError,
    NotPresentError,
    RequestTimeoutError,
)

log = logging.getLogger("csms.blobs")


async def fetch_blob(actor: Messenger, store: BlobStore, ref: BlobRef, source: str, *,
                     window: int = 4, timeout: float = 30.0, give_up_s: float = 300.0,
                     on_progress: Callable[[int, int], None] | None = None,
                     max_bad_chunks: int = 8) -> int:
    """Fetch the chunks of ``ref`` that ``store`` lacks from ``source`` and check the whole;
    returns how many chunks were fetched. Raises ``TIMEOUT`` after ``give_up_s`` without a
    chunk arriving, and the source's error if it says it has no such blob."""
    await store.begin(ref)
    todo = await store.missing(ref.hash)
    fetched = bad = 0
    last_progress = actor.clock.monotonic()
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
                if actor.clock.monotonic() - last_progress > give_up_s:
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
            last_progress = actor.clock.monotonic()
            if on_progress is not None:
                on_progress(done, ref.chunks)

    while True:
        await asyncio.gather(*(worker() for _ in range(max(1, min(window, queue.qsize())))))
        if await store.finish(ref.hash):
            return fetched
        for index in await store.missing(ref.hash):  # a chunk rotted meanwhile
            queue.put_nowait(index)


class BlobService:
    """Serves chunks from ``store`` for ``actor``; fetches upstream the chunks of expected
    blobs. ``served_bytes`` counts chunk bytes answered, ``upstream_chunks`` chunks fetched."""

    def __init__(self, actor: Messenger, store: BlobStore) -> None:
        self.actor, self.address, self.store = actor, actor.address, store
        self.served_bytes = 0
        self.upstream_chunks = 0
        self._upstream: dict[bytes, str] = {}
        self._inflight: dict[tuple[bytes, int], asyncio.Future[bytes]] = {}

    async def expect(self, ref: BlobRef, upstream: str) -> None:
        """Chunks of ``ref`` this actor lacks are to be fetched from ``upstream``."""
        await self.store.begin(ref)
        if not await self.store.is_complete(ref.hash):
            self._upstream[ref.hash] = upstream

    async def serve(self, message: BlobChunkRequest, ctx: Context) -> MessageBase | None:
        """Answer a chunk request: at once from the store, or (``None`` now, the chunk
        later) once it came from upstream."""
        ctx.require_role()
        data = await self.store.chunk(message.hash, message.index)
        if data is not None:
            return self._served(message, data)
        # fetching upstream takes a round trip, during which upstream may be waiting on us
        # (forwarding the next update through us): the inbox must go on meanwhile
        self.actor.defer(ctx, self._served_from_upstream(message, ctx), f"blob-{message.index}")
        return None

    def _served(self, message: BlobChunkRequest, data: bytes) -> BlobChunk:
        self.served_bytes += len(data)
        return BlobChunk(hash=message.hash, index=message.index, data=data)

    async def _served_from_upstream(self, message: BlobChunkRequest, ctx: Context) -> BlobChunk:
        return self._served(message, await self._from_upstream(message.hash, message.index,
                                                              ctx))

    async def _from_upstream(self, blob: bytes, index: int, ctx: Context) -> bytes:
        upstream = self._upstream.get(blob)
        if upstream is None or self.store.ref(blob) is None:
            raise NotPresentError(
                f"{self.address} has no blob {blob.hex()[:16]}... (chunk {index})",
                details={"hash": blob.hex(), "index": index})
        key = (blob, index)
        waiting = self._inflight.get(key)
        if waiting is None:  # the first asker fetches; the others wait for the same answer
            waiting = self._inflight[key] = asyncio.get_running_loop().create_future()
            waiting.add_done_callback(lambda f: f.cancelled() or f.exception())  # retrieved
            self.actor.spawn(self._fetch_chunk(blob, index, upstream, waiting),
                             f"upstream-{index}")
        wait = ctx.time_left(self.actor.clock.now_us(), 30.0)
        try:
            async with asyncio.timeout(wait):
                return await asyncio.shield(waiting)
        except TimeoutError:  # the fetch goes on: the asker's retry will find the chunk here
            raise BusyError(
                f"chunk {index} of blob {blob.hex()[:16]}... is still on its way from "
                f"{upstream}: ask again", details={"hash": blob.hex(), "index": index}) from None

    async def _fetch_chunk(self, blob: bytes, index: int, upstream: str,
                           waiting: asyncio.Future[bytes]) -> None:
        try:
            for _ in range(3):
                answer = await self.actor.request(
                    upstream, BlobChunkRequest(hash=blob, index=index), timeout=10,
                    priority=Priority.BULK)
                assert isinstance(answer, BlobChunk)
                self.upstream_chunks += 1
                if await self.store.put_chunk(blob, index, answer.data):
                    waiting.set_result(answer.data)
                    if not await self.store.missing(blob):
                        await self.store.finish(blob)
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


__all__ = ["BlobService", "fetch_blob"]
