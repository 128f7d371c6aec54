"""Samples of monitoring tasks, as a CSMS receives them from stations, in one SQLite file.

Bounded by count (the oldest rows leave first) and by age (enforced every thousand samples or
so), and answering ``MonitoringQuery``. It also remembers who watches which task (the actor a
CSMS relays a task's reports to), across restarts.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import aiosqlite
import msgpack

from actors.runtime.storage.sqlite import SqliteFile
from broker_bridge.clock import WALL_CLOCK, Clock
from keypath import KeyPath
from object_model.monitoring import MonitoringHistory, MonitoringQuery, MonitoringReport

_SCHEMA = """
CREATE TABLE IF NOT EXISTS samples (station TEXT NOT NULL, task TEXT NOT NULL, path TEXT NOT NULL,
                                    at INTEGER NOT NULL, value BLOB NOT NULL);
CREATE INDEX IF NOT EXISTS samples_by_task ON samples (station, task, at);
CREATE TABLE IF NOT EXISTS watchers (station TEXT NOT NULL, task TEXT NOT NULL,
                                     watcher TEXT NOT NULL, PRIMARY KEY (station, task));
"""


class SampleStore(SqliteFile):
    """Samples received from stations, newest kept: at most ``max_samples`` rows, none older
    than ``max_age_s``; and who watches which task (kept across restarts)."""

    SCHEMA = _SCHEMA
    WHAT = "sample store"

    def __init__(self, path: Path | str, *, max_samples: int = 1_000_000,
                 max_age_s: float = 7 * 86_400, clock: Clock = WALL_CLOCK) -> None:
        super().__init__(path)
        self.clock = clock
        self.max_samples = max_samples
        self.max_age_s = max_age_s
        self.stored = 0
        self._count = 0

    async def loaded(self, db: aiosqlite.Connection) -> None:
        rows = await db.execute_fetchall("SELECT COUNT(*) FROM samples")
        self._count = int(next(iter(rows))[0])

    async def add(self, station: str, report: MonitoringReport) -> None:
        rows = [(station, report.task, str(path), at, msgpack.packb(value, use_bin_type=True))
                for path, at, value in report.samples]
        await self.db.executemany("INSERT INTO samples VALUES (?, ?, ?, ?, ?)", rows)
        self._count += len(rows)
        self.stored += len(rows)
        if self._count > self.max_samples:
            await self.db.execute(
                "DELETE FROM samples WHERE rowid IN (SELECT rowid FROM samples ORDER BY rowid "
                "LIMIT ?)", (self._count - self.max_samples,))
            self._count = self.max_samples
        oldest = self.clock.now_us() - self.max_age_s * 1e6
        if rows and min(r[3] for r in rows) >= oldest and self.stored % 1024 >= len(rows):
            return  # the age limit is enforced every thousand samples or so
        cursor = await self.db.execute("DELETE FROM samples WHERE at < ?", (int(oldest),))
        self._count -= max(0, cursor.rowcount)

    async def query(self, station: str, query: MonitoringQuery) -> MonitoringHistory:
        sql = "SELECT task, path, at, value FROM samples WHERE station = ? AND at >= ?"
        args: list[Any] = [station, query.since_us]
        if query.task is not None:
            sql += " AND task = ?"
            args.append(query.task)
        sql += " ORDER BY at DESC, rowid DESC"
        samples: list[Any] = []
        more = False
        async with self.db.execute(sql, args) as cursor:
            async for task, path, at, value in cursor:
                key = KeyPath.parse(path)
                if query.pattern is not None and not query.pattern.matches(key):
                    continue
                if len(samples) == query.limit:
                    more = True
                    break
                samples.append((task, key, at, msgpack.unpackb(value, raw=False)))
        return MonitoringHistory(tree=query.tree, samples=samples, more=more)

    async def watch(self, station: str, task: str, watcher: str | None) -> None:
        if watcher is None:
            await self.db.execute("DELETE FROM watchers WHERE station = ? AND task = ?",
                                  (station, task))
        else:
            await self.db.execute("INSERT OR REPLACE INTO watchers VALUES (?, ?, ?)",
                                  (station, task, watcher))

    async def watchers(self) -> dict[tuple[str, str], str]:
        rows = await self.db.execute_fetchall("SELECT station, task, watcher FROM watchers")
        return {(station, task): watcher for station, task, watcher in rows}


__all__ = ["SampleStore"]
