"""A CSMS's side of tasks: monitoring stations, storing their samples, updating firmware.

A CSMS sets up, controls and cancels tasks on the stations it manages by forwarding
``MonitoringTaskSetup``, ``TaskControl`` and ``FirmwareUpdate`` addressed to
``stations/<id>`` to whoever answers for the station (the station itself, or the site's local
CSMS, which forwards again). The station reports to whoever forwarded the setup; each CSMS on
the way stores the samples (``SampleStore``: SQLite, bounded by count and age, answering
``MonitoringQuery``) and relays each report to the actor that asked for the task (its
*watcher*: an operator's ``csms monitor``, or the cloud), so a report crosses each link once.
Tasks themselves are listed like any other values: ``stations/<id>/tasks/**``.

A firmware image goes the same way: the CSMS that holds it (``BlobServing``) names itself the
source; a CSMS forwarding the update expects the blob from upstream and names itself the
source in turn, so the site's stations fetch from their local CSMS, which fetches each chunk
from the cloud once.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any

import aiosqlite
import msgpack

from actors.runtime.actor import Context, handles
from actors.runtime.replication.resync import Replica
from actors.runtime.services.blobs import BlobServing, BlobStore
from actors.runtime.storage.sqlite import SqliteFile
from broker_bridge import Priority
from keypath import KeyPath
from object_model import MessageBase
from object_model.blobs import FirmwareUpdate
from object_model.errors import (
    AccessDeniedError,
    NotAdmittedError,
    NotPresentError,
    UnknownPathError,
)
from object_model.monitoring import (
    MonitoringHistory,
    MonitoringQuery,
    MonitoringReport,
    MonitoringTaskSetup,
    TaskAction,
    TaskControl,
    TaskStatus,
)

log = logging.getLogger("csms.tasks")

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
                 max_age_s: float = 7 * 86_400) -> None:
        super().__init__(path)
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
        oldest = (time.time() - self.max_age_s) * 1e6
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


class CsmsTasks(BlobServing):
    """The task part of ``CachingCsms`` (see the module docstring)."""

    samples: SampleStore | None = None
    _watchers: dict[tuple[str, str], str]

    async def _open_task_stores(self, beside: Path) -> None:
        """Open the sample and blob stores next to the file ``beside`` (the tree store)."""
        self.samples = await SampleStore(beside.with_name(f"{beside.stem}.samples.db")).open()
        self._watchers = await self.samples.watchers()
        self.blobs = await BlobStore(beside.with_name(f"{beside.stem}.blobs.db")).open()

    async def _close_task_stores(self) -> None:
        for store in (self.samples, self.blobs):
            if store is not None:
                await store.close()

    def _station_of(self, tree: KeyPath, ctx: Context) -> tuple[str, Replica]:
        segs = tree.segments
        if len(segs) != 2 or segs[0] != "stations":
            raise UnknownPathError(
                f"tasks run on stations: address one as stations/<id>, not {tree or 'the CSMS'}",
                path=tree)
        role = ctx.require_role()
        if not self.policy.may_read_below(role, tree):  # type: ignore[attr-defined]
            raise AccessDeniedError(
                f"role {role.value} may not watch or control {tree}", path=tree)
        return segs[1], self.replica_for(segs[1])  # type: ignore[attr-defined,return-value]

    async def _forward(self, replica: Replica, message: MessageBase, ctx: Context) -> MessageBase:
        forwarded = message.model_copy(update={"tree": replica.remote_tree})
        answer = await self.request(replica.source, forwarded,
                                    timeout=ctx.time_left(self.clock.now_us(), 10.0))
        if isinstance(answer, TaskStatus):
            return answer.model_copy(update={"tree": KeyPath.parse(replica.key)})
        return answer

    @handles(MonitoringTaskSetup)
    async def on_monitoring_setup(self, setup: MonitoringTaskSetup, ctx: Context) -> MessageBase:
        station, replica = self._station_of(setup.tree, ctx)
        watcher = setup.reporter.destination or ctx.sender
        # the station reports to us (the sender of what we forward); we store and relay
        forwarded = setup.model_copy(update={
            "reporter": setup.reporter.model_copy(update={"destination": None})})
        answer = await self._forward(replica, forwarded, ctx)
        if watcher != self.address:
            self._watchers[station, setup.task] = watcher
            assert self.samples is not None
            await self.samples.watch(station, setup.task, watcher)
        return answer

    @handles(TaskControl)
    async def on_task_control(self, message: TaskControl, ctx: Context) -> MessageBase:
        station, replica = self._station_of(message.tree, ctx)
        answer = await self._forward(replica, message, ctx)
        if message.action is TaskAction.CANCEL and self._watchers.pop((station, message.task),
                                                                      None):
            assert self.samples is not None
            await self.samples.watch(station, message.task, None)
        return answer

    @handles(FirmwareUpdate)
    async def on_firmware_update(self, message: FirmwareUpdate, ctx: Context) -> MessageBase:
        _, replica = self._station_of(message.tree, ctx)
        holds = self.blobs is not None and await self.blobs.is_complete(message.blob.hash)
        source = message.source or (self.address if holds else ctx.sender)
        if source != self.address:  # we pass the image on: fetch it (once) from upstream
            await self.expect_blob(message.blob, source)
        elif not holds:
            raise NotPresentError(
                f"{self.address} does not hold blob {message.blob.hash.hex()[:16]}...: "
                "store the image here first", details={"hash": message.blob.hash.hex()})
        return await self._forward(replica, message.model_copy(
            update={"source": self.address}), ctx)

    @handles(MonitoringReport)
    async def on_monitoring_report(self, report: MonitoringReport, ctx: Context) -> None:
        segs = report.tree.segments
        key = f"stations/{ctx.sender}" if not segs else str(report.tree)
        replica = self.replicas.get(key)  # type: ignore[attr-defined]
        if replica is None or replica.source != ctx.sender:
            raise NotAdmittedError(
                f"{ctx.sender} reports on {report.tree or 'itself'}, which it does not answer "
                "for here", details={"tree": str(report.tree)})
        station = key.split("/", 1)[1]
        assert self.samples is not None
        await self.samples.add(station, report)
        self._count("monitoring_samples", len(report.samples))  # type: ignore[attr-defined]
        watcher = self._watchers.get((station, report.task))
        if watcher is not None:
            expires = ctx.envelope.expires_us
            left = None if expires is None else max(1, expires - self.clock.now_us())
            self.send(watcher, report.model_copy(update={"tree": KeyPath.parse(key)}),
                      priority=Priority(ctx.envelope.priority), reliable=True,
                      expires_in_us=left)

    @handles(MonitoringQuery)
    async def on_monitoring_query(self, query: MonitoringQuery, ctx: Context) -> MessageBase:
        station, _ = self._station_of(query.tree, ctx)
        assert self.samples is not None
        return await self.samples.query(station, query)


__all__ = ["CsmsTasks", "SampleStore"]
