"""The blob cache: content-addressed blobs in chunks, kept least-recently-used first out.

``BlobStore`` keeps blobs (named by SHA-256) as chunks in one SQLite file: a blob being
fetched is *partial* (its ``BlobRef`` and the chunks so far), so a transfer interrupted by a
crash, a broker restart or a pause resumes with the chunks it lacks. Every chunk is checked
against its hash when it is stored and again when it is read (a chunk that rotted on disk is
dropped and fetched again); a complete blob is checked whole. Complete blobs beyond
``capacity_bytes`` leave in least-recently-used order; partial ones stay until finished.
Fetching and serving blobs between actors is ``actors.runtime.services.blob_service``.
"""

from __future__ import annotations

import hashlib
import logging
from pathlib import Path

import aiosqlite
import msgpack

from actors.runtime.storage.sqlite import SqliteFile
from broker_bridge.clock import WALL_CLOCK, Clock
from object_model.blobs import MAX_CHUNKS, BlobRef
from object_model.errors import InvalidValueError, NotPresentError

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

    def __init__(self, path: Path | str, *, capacity_bytes: int = 512 * 1024 * 1024,
                 clock: Clock = WALL_CLOCK) -> None:
        super().__init__(path)
        self.capacity_bytes = capacity_bytes
        self.clock = clock  # when a blob was last used (least recently used leaves first)
        self.corrupt_chunks = 0
        self._refs: dict[bytes, BlobRef] = {}

    async def loaded(self, db: aiosqlite.Connection) -> None:
        for raw in await db.execute_fetchall("SELECT ref FROM blobs"):
            ref = BlobRef.model_validate(msgpack.unpackb(raw[0]))
            self._refs[ref.hash] = ref

    def _used_ns(self) -> int:
        """When a blob is used, in the unit ``used`` has always been stored in (ns)."""
        return self.clock.now_us() * 1000

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
                               self._used_ns()))

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
        rows = list(await self.db.execute_fetchall(
            "SELECT data FROM chunks WHERE hash = ? AND idx = ?", (blob, index)))
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
                              (self._used_ns(), blob))
        await self._evict(keep=blob)
        return True

    async def read(self, blob: bytes) -> bytes:
        ref = self._refs[blob]
        parts = []
        for index in range(ref.chunks):
            part = await self.chunk(blob, index)
            if part is None:
                raise NotPresentError(f"blob {blob.hex()[:16]}... is incomplete")
            parts.append(part)
        return b"".join(parts)

    async def is_complete(self, blob: bytes) -> bool:
        rows = list(await self.db.execute_fetchall(
            "SELECT complete FROM blobs WHERE hash = ?", (blob,)))
        return bool(rows and rows[0][0])

    async def forget(self, blob: bytes) -> None:
        self._refs.pop(blob, None)
        await self.db.execute("DELETE FROM chunks WHERE hash = ?", (blob,))
        await self.db.execute("DELETE FROM blobs WHERE hash = ?", (blob,))

    async def _touch(self, blob: bytes) -> None:
        await self.db.execute("UPDATE blobs SET used = ? WHERE hash = ?", (self._used_ns(), blob))

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



__all__ = ["BlobStore", "make_ref"]
