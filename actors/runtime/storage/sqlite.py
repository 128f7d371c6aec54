"""One SQLite file an actor keeps beside its tree store (samples, blobs): opened in WAL mode
with its schema, closed once, usable as an async context manager."""

from __future__ import annotations

from pathlib import Path
from typing import Self

import aiosqlite


class SqliteFile:
    """Base of the small stores; subclasses set ``SCHEMA`` and extend ``loaded``."""

    SCHEMA = ""
    WHAT = "store"

    def __init__(self, path: Path | str) -> None:
        self.path = Path(path)
        self._db: aiosqlite.Connection | None = None

    async def open(self) -> Self:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        db = await aiosqlite.connect(self.path, isolation_level=None)
        try:
            await db.execute("PRAGMA journal_mode=WAL")
            await db.execute("PRAGMA synchronous=NORMAL")
            await db.executescript(self.SCHEMA)
            await self.loaded(db)
        except BaseException:
            await db.close()
            raise
        self._db = db
        return self

    async def loaded(self, db: aiosqlite.Connection) -> None:
        """Override: read what the store keeps in memory once the file is open."""

    async def close(self) -> None:
        if self._db is not None:
            await self._db.close()
            self._db = None

    async def __aenter__(self) -> Self:
        return await self.open()

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    @property
    def db(self) -> aiosqlite.Connection:
        if self._db is None:
            raise RuntimeError(f"{self.WHAT} {self.path} is not open")
        return self._db
