"""The durable outbox: what must survive a kill -9 of an endpoint's process (aiosqlite).

Sender side: every reliable envelope is written here before it may leave (the session's
``take_unpersisted``/``mark_persisted`` handshake) and deleted when acknowledged or abandoned;
with it, each stream's epoch and next sequence number, so a restarted sender continues its
streams instead of resetting them. Receiver side: the dedupe window (ids delivered, bounded)
and each stream's position, written before acknowledgements go out, so an acknowledged envelope
is never delivered twice across a restart.

SQLite in WAL mode with ``synchronous=NORMAL`` survives the death of the process (the data is
in the operating system's cache when the transaction ends); only a power cut can lose the last
transactions, which the sender's retransmissions and the receiver's resynchronisation cover.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType

import aiosqlite

from broker_bridge.codec import decode_envelope, encode_envelope
from broker_bridge.envelope import Envelope
from broker_bridge.session import Receipts
from broker_bridge.session.inbound import StreamKey, seen_key

_SCHEMA = """
CREATE TABLE IF NOT EXISTS outbox (
    id BLOB PRIMARY KEY, envelope BLOB NOT NULL, destination TEXT NOT NULL
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS out_streams (
    source TEXT, destination TEXT, stream TEXT, epoch INTEGER NOT NULL, next_seq INTEGER NOT NULL,
    PRIMARY KEY (source, destination, stream)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS in_streams (
    source TEXT, destination TEXT, stream TEXT, epoch INTEGER NOT NULL, expected INTEGER NOT NULL,
    PRIMARY KEY (source, destination, stream)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS seen (n INTEGER PRIMARY KEY AUTOINCREMENT, id BLOB NOT NULL UNIQUE);
CREATE TABLE IF NOT EXISTS guard_marks (sender TEXT PRIMARY KEY, stamp INTEGER NOT NULL)
    WITHOUT ROWID;
"""


@dataclass
class OutboxState:
    """Everything a restarted endpoint needs to carry on."""

    out_streams: dict[StreamKey, tuple[int, int]]
    unacked: list[Envelope]
    in_streams: dict[StreamKey, tuple[int, int]]
    seen: list[bytes]
    marks: dict[str, int]  # the envelope guard's (``EnvelopeGuard.marks``)


class Outbox:
    """One endpoint's durable state in one SQLite file."""

    def __init__(self, path: Path | str, *, dedupe_window: int = 100_000) -> None:
        self.path = Path(path)
        self.dedupe_window = dedupe_window
        self._db: aiosqlite.Connection | None = None
        self.writes = 0

    async def open(self) -> Outbox:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._db = await aiosqlite.connect(self.path)
        await self._db.execute("PRAGMA journal_mode=WAL")
        await self._db.execute("PRAGMA synchronous=NORMAL")
        await self._db.executescript(_SCHEMA)
        await self._db.commit()
        return self

    async def close(self) -> None:
        if self._db is not None:
            await self._db.close()
            self._db = None

    async def __aenter__(self) -> Outbox:
        return await self.open()

    async def __aexit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                        tb: TracebackType | None) -> None:
        await self.close()

    @property
    def db(self) -> aiosqlite.Connection:
        if self._db is None:
            raise RuntimeError("the outbox is not open")
        return self._db

    async def load(self) -> OutboxState:
        """What was persisted before the last stop or crash."""
        db = self.db
        out_streams = {(s, d, n): (e, q) async for s, d, n, e, q in await db.execute(
            "SELECT source, destination, stream, epoch, next_seq FROM out_streams")}
        unacked = [decode_envelope(row[0]) async for row in await db.execute(
            "SELECT envelope FROM outbox")]
        in_streams = {(s, d, n): (e, x) async for s, d, n, e, x in await db.execute(
            "SELECT source, destination, stream, epoch, expected FROM in_streams")}
        seen = [row[0] async for row in await db.execute("SELECT id FROM seen ORDER BY n")]
        marks = {s: t async for s, t in await db.execute("SELECT sender, stamp FROM guard_marks")}
        return OutboxState(out_streams, unacked, in_streams, seen, marks)

    async def save_marks(self, marks: dict[str, int]) -> None:
        """The envelope guard's marks (one commit)."""
        await self.db.executemany("INSERT OR REPLACE INTO guard_marks VALUES (?, ?)",
                                  list(marks.items()))
        await self.db.commit()
        self.writes += 1

    async def save_outgoing(self, envelopes: Iterable[Envelope],
                            streams: dict[StreamKey, tuple[int, int]]) -> None:
        """Persist reliable envelopes and the stream states that numbered them (one commit)."""
        db = self.db
        await db.executemany(
            "INSERT OR REPLACE INTO outbox (id, envelope, destination) VALUES (?, ?, ?)",
            [(e.id, encode_envelope(e), e.destination) for e in envelopes])
        await db.executemany(
            "INSERT OR REPLACE INTO out_streams VALUES (?, ?, ?, ?, ?)",
            [(*key, epoch, next_seq) for key, (epoch, next_seq) in streams.items()])
        await db.commit()
        self.writes += 1

    async def forget(self, ids: Iterable[bytes]) -> None:
        """Acknowledged or abandoned envelopes leave the outbox."""
        await self.db.executemany("DELETE FROM outbox WHERE id = ?", [(i,) for i in ids])
        await self.db.commit()
        self.writes += 1

    async def save_receipts(self, receipts: Receipts) -> None:
        """Persist delivered ids (bounded window) and stream positions (one commit)."""
        db = self.db
        await db.executemany("INSERT OR IGNORE INTO seen (id) VALUES (?)",
                             [(seen_key(source, i),) for i, source, _ in receipts.ids])
        await db.executemany(
            "INSERT OR REPLACE INTO in_streams VALUES (?, ?, ?, ?, ?)",
            [(*key, epoch, expected) for key, (epoch, expected) in receipts.positions.items()])
        await db.execute("DELETE FROM seen WHERE n <= (SELECT MAX(n) FROM seen) - ?",
                         (self.dedupe_window,))
        await db.commit()
        self.writes += 1

    async def unacked_count(self) -> int:
        async with self.db.execute("SELECT COUNT(*) FROM outbox") as cursor:
            row = await cursor.fetchone()
        return int(row[0]) if row else 0
