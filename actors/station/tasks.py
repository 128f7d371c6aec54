"""A station's tasks: monitoring and firmware updates, living at ``tasks/<id>`` in its tree.

``StationTasks`` is the station actor's component that runs them:

* ``MonitoringTaskSetup`` is checked against the station's model and limits before anything
  is created (every selector must be able to match a declared value and the asker must be
  allowed to read what it matches; buffers, sampling rates and report intervals must be
  within ``TaskLimits``); a refusal is a detailed ErrorReport. Accepted, it becomes an entry
  under ``tasks/`` and a task of the ``Monitors`` engine, which every committed transaction
  feeds. One loop sends the reports that are due, at the task's priority with its expiry;
  while the station is not joined to its CSMS or has no broker link, entries stay in their
  buffers and the backlog leaves afterwards without crowding out control traffic (the loop
  waits while the link's bulk queue is long). Logs marked ``persistent`` are kept in the
  station's store across restarts.
* ``FirmwareUpdate`` starts a task that fetches the image through the blob cache (only the
  chunks it lacks, each checked), verifies it, installs it (simulated) and reports. A station
  that restarts finds its unfinished tasks in its tree: monitoring goes on, a download
  resumes with the chunks it has; what cannot resume fails, saying why.
* ``RemoteOperation`` (a reset, a remote start or stop, an unlock, a triggered message, a
  change of availability) becomes a task of its operation's name whose result is the
  hardware's answer; where the answer only promises the effect, the task runs until the
  hardware sees it (at most ``operation_effect_s``). A restart fails an unfinished one: its
  outcome is not known.
* ``TaskControl`` pauses, resumes or cancels any of them.

The hardware does the physical part (``actors.station.hardware``): it installs a verified
image, carries out operations, and is told which monitoring tasks run (an OCPP charger
reports some values only when asked to).
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import msgpack
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from actors.logic.firmware_trust import check_image
from actors.logic.monitoring import Monitors, Outgoing, cached_rights, report_budget
from actors.logic.tasks import TaskBook
from actors.logic.tree_access import TreeAccess
from actors.runtime.actor import Context, Messenger
from actors.runtime.services.blob_service import fetch_blob
from actors.runtime.storage.blobs import BlobStore
from actors.runtime.storage.trees import PersistentTree, TreeStore
from actors.station.hardware import FirmwareImage, StationHardware
from broker_bridge import Endpoint, Priority
from keypath import KeyPath, KeyPattern
from object_model import ErrorCode, MessageBase, ModelError, ObjectTree, Role, Write
from object_model.blobs import BlobRef, FirmwareUpdate
from object_model.errors import UnknownPathError, error_class
from object_model.monitoring import (
    MonitoringTaskSetup,
    Periodic,
    TaskAction,
    TaskControl,
    TaskState,
    TaskStatus,
)
from object_model.operations import OperationKind, RemoteOperation
from object_model.station.components import FirmwareStatus
from object_model.tree import TransactionCommitted

log = logging.getLogger("csms.station.tasks")

MONITORING = "monitoring"
FIRMWARE = "firmware_update"
OPERATIONS = frozenset(kind.value for kind in OperationKind)
MANAGERS = frozenset({Role.LOCAL_CSMS, Role.CLOUD_CSMS})
OPERATING = KeyPath("permissions", "may_charge")
"""Who may write it may operate the station (the business decisions operations act on)."""


@dataclass(frozen=True)
class TaskLimits:
    """What a station grants monitoring tasks, and how it runs firmware updates."""

    max_monitoring_tasks: int = 64
    max_buffer_bytes: int = 1024 * 1024
    total_buffer_bytes: int = 8 * 1024 * 1024
    max_samples_per_s: float = 500.0
    min_report_interval_s: float = 1.0
    max_bulk_queue: int = 64  # a backlog waits while this many bulk envelopes are queued
    save_logs_every_s: float = 5.0
    install_s: float = 2.0
    blob_capacity_bytes: int = 64 * 1024 * 1024
    blob_window: int = 4
    operation_effect_s: float = 300.0  # how long an operation waits for its promised effect


def _refuse(code: ErrorCode, text: str, **details: Any) -> ModelError:
    return error_class(code)(text, details=details)


class StationTasks:
    """Runs a station's tasks (see the module docstring). ``link`` is the endpoint towards
    the station's CSMS, ``joined`` whether the CSMS has admitted the station."""

    def __init__(self, actor: Messenger, *, tree: ObjectTree, access: TreeAccess,
                 persisted: PersistentTree, store: TreeStore, link: Endpoint,
                 joined: Callable[[], bool], limits: TaskLimits, hardware: StationHardware,
                 firmware_keys: dict[bytes, Ed25519PublicKey] | None = None) -> None:
        self.actor, self.address, self.clock = actor, actor.address, actor.clock
        self.hardware = hardware
        self.tree, self.access, self.persisted, self.store = tree, access, persisted, store
        self.link, self.joined, self.limits = link, joined, limits
        self.firmware_keys = firmware_keys or {}  # whose signed images it installs
        self.firmware_refused = 0
        self.book = TaskBook(tree, self.clock.now_us)
        self.monitors = Monitors(self._read_matching)
        self.blobs: BlobStore | None = None
        self._jobs: dict[str, asyncio.Task[Any]] = {}
        self._monitor_wake = asyncio.Event()
        self._report_deadline: int | None = None  # when the report loop wakes by itself
        self._logs_dirty = False
        self._unsubscribe = tree.subscribe(self._feed_monitors)

    async def start(self) -> None:
        """Resume what was going on when the station stopped, then start reporting."""
        for task_id, entry in list(self.book.unfinished()):
            try:
                if entry["kind"] == MONITORING:
                    self._restore_monitor(task_id, entry)
                elif entry["kind"] == FIRMWARE:
                    self._resume_firmware(task_id, entry)
                elif entry["kind"] in OPERATIONS:
                    raise _refuse(ErrorCode.INVALID_STATE,
                                  "the station restarted while it ran: its outcome is not "
                                  "known; read the station's state, then ask again")
                else:
                    raise _refuse(ErrorCode.UNSUPPORTED_OPERATION,
                                  f"this firmware does not run {entry['kind']!r} tasks")
            except ModelError as exc:
                log.warning("%s: task %s cannot resume: %s", self.address, task_id, exc)
                self.book.update(task_id, state=TaskState.FAILED, error=exc)
        await self._restore_logs()
        self.actor.spawn(self._report_loop(), "monitoring")

    def link_changed(self) -> None:
        """The station joined (or the link came back): a backlog of reports may leave now."""
        self._monitor_wake.set()

    async def _restore_logs(self) -> None:
        for task in self.monitors.tasks.values():
            if task.setup.logger.persistent:
                raw = await self.store.get_side(self._log_key(task.id))
                if raw:
                    seq, samples = msgpack.unpackb(raw)
                    task.seq = seq
                    for path, at, value in samples:
                        task.keep((KeyPath.parse(path), at, value))

    async def stop(self) -> None:
        self._unsubscribe()
        for job in self._jobs.values():
            job.cancel()
        await asyncio.gather(*self._jobs.values(), return_exceptions=True)
        await self._save_logs()
        if self.blobs is not None:
            await self.blobs.close()

    # -- monitoring ---------------------------------------------------------------------------

    def _read_matching(self, pattern: KeyPattern) -> list[tuple[KeyPath, Any]]:
        return [(path, value) for path, _, value in self.tree.find(pattern)]

    def _feed_monitors(self, event: TransactionCommitted) -> None:
        before = self.monitors.stats.events
        self.monitors.on_commit(event, self.clock.now_us())
        if self.monitors.stats.events != before and (
                self._report_deadline is None or any(
                    len(t.buffer) >= t.setup.reporter.max_entries
                    for t in self.monitors.tasks.values())):
            self._monitor_wake.set()  # else the loop wakes at its deadline anyway

    def check_monitoring(self, setup: MonitoringTaskSetup, role: Role) -> None:
        """Refuse ``setup`` with a detailed error unless this station can run it for
        ``role``; nothing is created either way."""
        limits = self.limits
        matched: set[KeyPath] = set()
        for selector in setup.selectors:
            try:
                self.tree.schema.check_pattern(selector)
            except ModelError as exc:
                raise type(exc)(f"selector {selector}: {exc.text}", path=str(selector),
                                details={"selector": str(selector), **exc.details}) from None
            matched.update(path for path, _, _ in self.tree.find(selector))
        readable = [p for p in matched if self.access.may_read(role, p)]
        if matched and not readable:
            raise _refuse(ErrorCode.ACCESS_DENIED,
                          f"role {role.value} may read none of the {len(matched)} values the "
                          "selectors match", role=role.value)
        logger, reporter = setup.logger, setup.reporter
        if logger.buffer_bytes > limits.max_buffer_bytes:
            raise _refuse(ErrorCode.LIMIT_EXCEEDED,
                          f"buffer_bytes {logger.buffer_bytes} is more than this station gives "
                          f"one task ({limits.max_buffer_bytes})",
                          field="logger.buffer_bytes", asked=logger.buffer_bytes,
                          limit=limits.max_buffer_bytes)
        others = [t for t in self.monitors.tasks.values() if t.id != setup.task]
        if len(others) >= limits.max_monitoring_tasks:
            raise _refuse(ErrorCode.LIMIT_EXCEEDED,
                          f"{len(others)} monitoring tasks run here already (at most "
                          f"{limits.max_monitoring_tasks}): cancel one first",
                          limit=limits.max_monitoring_tasks)
        used = sum(t.setup.logger.buffer_bytes for t in others)
        if used + logger.buffer_bytes > limits.total_buffer_bytes:
            raise _refuse(ErrorCode.LIMIT_EXCEEDED,
                          f"buffer_bytes {logger.buffer_bytes}: only "
                          f"{max(0, limits.total_buffer_bytes - used)} of this station's "
                          f"{limits.total_buffer_bytes} buffer bytes are free",
                          field="logger.buffer_bytes", asked=logger.buffer_bytes,
                          free=max(0, limits.total_buffer_bytes - used))
        if isinstance(setup.trigger, Periodic):
            rate = len(readable) / setup.trigger.every_s
            if rate > limits.max_samples_per_s:
                raise _refuse(ErrorCode.LIMIT_EXCEEDED,
                              f"sampling {len(readable)} values every {setup.trigger.every_s:g} "
                              f"s is {rate:.0f} samples/s; this station takes at most "
                              f"{limits.max_samples_per_s:g}/s: sample less often or watch "
                              "fewer values", field="trigger.every_s", samples_per_s=rate,
                              limit=limits.max_samples_per_s)
        if reporter.interval_s < limits.min_report_interval_s:
            raise _refuse(ErrorCode.LIMIT_EXCEEDED,
                          f"reporter.interval_s {reporter.interval_s:g} is below this "
                          f"station's minimum of {limits.min_report_interval_s:g} s",
                          field="reporter.interval_s", asked=reporter.interval_s,
                          limit=limits.min_report_interval_s)

    async def setup_monitoring(self, setup: MonitoringTaskSetup, ctx: Context) -> MessageBase:
        role = ctx.require_role()
        _own_tree(self.address, setup.tree)
        self.check_monitoring(setup, role)
        spec = json.dumps({"role": role.value, "destination": ctx.sender,
                           "setup": setup.model_dump(mode="json")}, separators=(",", ":"))
        self.book.create(setup.task, MONITORING, owner=ctx.sender, spec=spec)
        self._add_monitor(setup, ctx.sender, role)
        await self._hardware_watches(setup.task, setup)
        await self.persisted.durable()
        log.info("%s: monitoring task %s for %s watches %s", self.address, setup.task,
                 ctx.sender, ", ".join(map(str, setup.selectors)))
        return self._status(setup.task)

    def _add_monitor(self, setup: MonitoringTaskSetup, destination: str, role: Role) -> None:
        self.monitors.add(setup, destination, self.clock.now_us(),
                          allow=cached_rights(lambda path: self.access.may_read(role, path)))
        self._monitor_wake.set()

    def _restore_monitor(self, task_id: str, entry: dict[str, Any]) -> None:
        spec = json.loads(entry["spec"])
        setup = MonitoringTaskSetup.model_validate(spec["setup"])
        self._add_monitor(setup, spec["destination"], Role(spec["role"]))
        if entry["state"] == TaskState.PAUSED.value:
            self.monitors.tasks[task_id].paused = True
        self._jobs[f"watch:{task_id}"] = self.actor.spawn(
            self._hardware_watches(task_id, setup), f"watch:{task_id}")

    async def _hardware_watches(self, task_id: str, setup: MonitoringTaskSetup | None) -> None:
        """Tell the hardware what the task watches (or that it ended); what it says goes in
        the task's detail."""
        try:
            said = await self.hardware.watch(task_id, setup)
        except Exception:  # the task runs on what the hardware reports anyway
            log.exception("%s: the hardware could not take monitoring task %s", self.address,
                          task_id)
            return
        finally:
            self._jobs.pop(f"watch:{task_id}", None)
        if said and setup is not None and task_id in self.book:
            self.book.update(task_id, detail=said)

    @property
    def link_up(self) -> bool:
        """Whether reports can reach the CSMS now (joined, and connected to the broker)."""
        return self.joined() and self.link.transport.connected

    async def _report_loop(self) -> None:
        limits = self.limits
        saved_at = self.clock.now_us()
        while True:
            now = self.clock.now_us()
            budget = report_budget(self.link.session.config.frame_limit(Priority.BULK))
            for out in self.monitors.due(now, link_up=self.link_up, max_report_bytes=budget):
                self._send_report(out, now)
            if self._logs_dirty and now - saved_at >= limits.save_logs_every_s * 1e6:
                saved_at = now
                await self._save_logs()
            deadline = self.monitors.next_deadline()
            waiting = any(t.buffer for t in self.monitors.tasks.values())
            if deadline is not None and deadline <= now and self.link_up:
                # a backlog is leaving: let the queue drain to a few envelopes first, so a
                # control message sent meanwhile finds at most those ahead of it
                while self.link.session.queue_depth().get(Priority.BULK, 0) > \
                        limits.max_bulk_queue:
                    await self.clock.sleep(0.02)
                continue
            timeout = None if deadline is None else max(0.0, (deadline - now) / 1e6)
            if waiting and not self.link_up:
                timeout = 1.0  # the link may come back: look again
            self._report_deadline = None if timeout is None else now + int(timeout * 1e6)
            self._monitor_wake.clear()
            await self.clock.wait(self._monitor_wake, timeout)

    def _send_report(self, out: Outgoing, now: int) -> None:
        self._logs_dirty = True
        try:
            self.actor.send(out.destination, out.report, priority=Priority(out.priority),
                      reliable=True, expires_in_us=max(1, out.expires_us - now))
        except Exception:  # the endpoint is stopping: the entries are lost with this report
            log.exception("%s: could not send report %d of task %s", self.address,
                          out.report.seq, out.report.task)

    def _log_key(self, task_id: str) -> str:
        return f"monitoring-log/{self.address}/{task_id}"

    async def _save_logs(self) -> None:
        for task in self.monitors.tasks.values():
            if task.setup.logger.persistent:
                samples = [[str(p), at, v] for (p, at, v), _ in task.buffer]
                await self.store.put_side(self._log_key(task.id),
                                          msgpack.packb([task.seq, samples], use_bin_type=True))
        self._logs_dirty = False

    # -- task control ---------------------------------------------------------------------------

    async def control(self, message: TaskControl, ctx: Context) -> MessageBase:
        role = ctx.require_role()
        _own_tree(self.address, message.tree)
        entry = self.book.get(message.task)
        if role not in MANAGERS and ctx.sender != entry["owner"]:
            raise _refuse(ErrorCode.ACCESS_DENIED,
                          f"task {message.task} belongs to {entry['owner']}; only it or a CSMS "
                          "may control it", task=message.task)
        target = self.book.target_of(message.task, message.action)
        if entry["kind"] == MONITORING:
            if message.action is TaskAction.CANCEL:
                self.monitors.remove(message.task)
                await self.store.put_side(self._log_key(message.task), None)
                await self._hardware_watches(message.task, None)
            elif message.task in self.monitors.tasks:
                self.monitors.tasks[message.task].paused = target is TaskState.PAUSED
            self._monitor_wake.set()
        else:  # a download, an install or an operation waiting on its effect
            job = self._jobs.pop(message.task, None)
            if job is not None:
                job.cancel()
                await asyncio.gather(job, return_exceptions=True)
        self.book.update(message.task, state=target,
                         detail=f"{message.action.value} by {ctx.sender}")
        if entry["kind"] == FIRMWARE and target is TaskState.RUNNING:
            self._resume_firmware(message.task, self.book.get(message.task))
        await self.persisted.durable()
        return self._status(message.task)

    # -- remote operations ------------------------------------------------------------------------

    async def operate(self, message: RemoteOperation, ctx: Context) -> MessageBase:
        """Carry out ``message`` as a task (see the module docstring): the answer is the
        task's status once the hardware answered (failed, with its refusal, when it refused)."""
        role = ctx.require_role()
        _own_tree(self.address, message.tree)
        if not self.access.policy.may_write(role, OPERATING):
            raise _refuse(ErrorCode.ACCESS_DENIED,
                          f"role {role.value} may not operate this station "
                          f"({message.operation.value})", role=role.value)
        if message.task in self._jobs:
            raise _refuse(ErrorCode.BUSY, f"task {message.task} is still going: cancel it or "
                          "choose another id", task=message.task)
        kind = message.operation.value
        self.book.create(message.task, kind, owner=ctx.sender, detail=message.describe(),
                         spec=message.model_dump_json(exclude={"kind", "tree", "task"}))
        log.info("%s: %s asks %s (task %s)", self.address, ctx.sender, message.describe(),
                 message.task)
        try:
            answer = await self.hardware.operate(message)
        except ModelError as exc:
            log.info("%s: %s refused: %s", self.address, message.describe(), exc)
            self.book.update(message.task, state=TaskState.FAILED, error=exc)
        else:
            if answer.effect is None:
                self.book.update(message.task, state=TaskState.SUCCEEDED, result=answer.result)
            else:
                self.book.update(message.task, result=answer.result,
                                 detail=f"{answer.result}: waiting for the effect")
                self._jobs[message.task] = self.actor.spawn(
                    self._await_effect(message.task, answer.result, answer.effect),
                    f"operation:{message.task}")
        await self.persisted.durable()
        return self._status(message.task)

    async def _await_effect(self, task_id: str, answered: str, effect: Awaitable[str]) -> None:
        try:
            async with asyncio.timeout(self.limits.operation_effect_s):
                seen = await effect
        except TimeoutError:
            self.book.update(task_id, state=TaskState.FAILED, error=_refuse(
                ErrorCode.TIMEOUT, f"answered {answered}, but the effect was not seen "
                f"within {self.limits.operation_effect_s:g} s"))
        except ModelError as exc:
            self.book.update(task_id, state=TaskState.FAILED, error=exc)
        else:
            self.book.update(task_id, state=TaskState.SUCCEEDED, result=seen[:200],
                             detail="done")
        finally:
            self._jobs.pop(task_id, None)

    def _status(self, task_id: str) -> TaskStatus:
        entry = self.book.get(task_id)
        return TaskStatus(task=task_id, task_kind=entry["kind"], state=TaskState(entry["state"]),
                          revision=self.tree.revision)

    # -- firmware updates ---------------------------------------------------------------------

    async def update_firmware(self, message: FirmwareUpdate, ctx: Context) -> MessageBase:
        role = ctx.require_role()
        _own_tree(self.address, message.tree)
        if role not in MANAGERS:
            raise _refuse(ErrorCode.ACCESS_DENIED,
                          f"role {role.value} may not update this station's firmware",
                          role=role.value)
        running = [t for t, e in self.book.unfinished(FIRMWARE) if t != message.task]
        if message.task in self._jobs:  # its download runs: a second image may not replace it
            running.insert(0, message.task)
        if running:
            raise _refuse(ErrorCode.BUSY, f"firmware update {running[0]} is still going: "
                          "cancel it or wait", task=running[0])
        try:
            manifest = check_image(
                message, self.firmware_keys, vendor=str(self.tree.get("identity/vendor_name")),
                model=str(self.tree.get("identity/model")),
                installed_counter=self._installed_counter())
        except ModelError as exc:
            log.warning("%s: refused firmware %s from %s: %s", self.address, message.version,
                        ctx.sender, exc)
            self.firmware_refused += 1
            raise
        blobs = await self._blob_store()
        await blobs.begin(message.blob)  # the station keeps the ref: a restart resumes
        spec = json.dumps({"hash": message.blob.hash.hex(), "version": message.version,
                           "source": message.source or ctx.sender, "size": message.blob.size,
                           "counter": manifest.counter})
        self.book.create(message.task, FIRMWARE, owner=ctx.sender, spec=spec,
                         detail="downloading")
        await self.persisted.durable()
        self._resume_firmware(message.task, self.book.get(message.task))
        return self._status(message.task)

    def _resume_firmware(self, task_id: str, entry: dict[str, Any]) -> None:
        if entry["state"] == TaskState.PAUSED.value:
            return
        self._jobs[task_id] = self.actor.spawn(
            self._update_firmware(task_id, json.loads(entry["spec"])), f"firmware:{task_id}")

    async def _blob_store(self) -> BlobStore:
        if self.blobs is None:
            path = self.store.path.parent / "blobs" / f"{self.address}.sqlite"
            self.blobs = await BlobStore(path, capacity_bytes=self.limits.blob_capacity_bytes,
                                         clock=self.clock).open()
        return self.blobs

    async def _update_firmware(self, task_id: str, spec: dict[str, Any]) -> None:
        blobs = await self._blob_store()
        ref: BlobRef | None = blobs.ref(bytes.fromhex(spec["hash"]))
        try:
            if ref is None:
                raise _refuse(ErrorCode.NOT_PRESENT,
                              "the image's description was lost with the station's blob "
                              "store: start the update again", hash=spec["hash"])
            self._firmware_status(FirmwareStatus.DOWNLOADING)
            shown = [-1]

            def progress(done: int, total: int) -> None:
                percent = int(90 * done / max(1, total))
                if percent != shown[0]:
                    shown[0] = percent
                    self.book.update(task_id, progress=percent,
                                     detail=f"downloaded {done} of {total} chunks")

            await fetch_blob(self.actor, blobs, ref, spec["source"], window=self.limits.blob_window,
                             on_progress=progress)
            installed = self._installed_counter()
            if spec.get("counter", 0) < installed:  # another image went in meanwhile
                raise _refuse(ErrorCode.STALE, f"image {spec['version']} (counter "
                              f"{spec.get('counter', 0)}) is older than what was installed "
                              f"meanwhile (counter {installed}): no rollback")
            self._firmware_status(FirmwareStatus.INSTALLING)
            self.book.update(task_id, progress=90, detail=f"verified; installing "
                             f"{spec['version']}")

            def installing(percent: float, doing: str) -> None:
                self.book.update(task_id, progress=90 + max(0.0, min(percent, 100.0)) / 10,
                                 detail=doing)

            image_hash = ref.hash

            async def chunk(index: int) -> bytes | None:
                return await blobs.chunk(image_hash, index)

            version = await self.hardware.install(FirmwareImage(
                version=spec["version"], counter=spec.get("counter", 0), blob=ref, chunk=chunk,
                install_s=self.limits.install_s), installing)
            self.tree.apply([Write("firmware/version", version[:64]),
                             Write("firmware/counter", spec.get("counter", 0)),
                             Write("firmware/update_status", FirmwareStatus.INSTALLED.value),
                             Write("firmware/last_update_at", self.clock.now_us())])
            self.book.update(task_id, state=TaskState.SUCCEEDED,
                             result=f"installed {version}", detail="done")
            log.info("%s: firmware %s installed (task %s)", self.address, version, task_id)
        except ModelError as exc:
            log.warning("%s: firmware update %s failed: %s", self.address, task_id, exc)
            self._firmware_status(FirmwareStatus.FAILED)
            self.book.update(task_id, state=TaskState.FAILED, error=exc)
        finally:
            self._jobs.pop(task_id, None)

    def _installed_counter(self) -> int:
        try:
            return int(self.tree.get("firmware/counter"))
        except ModelError:  # a tree from before counters: nothing signed installed yet
            return 0

    def _firmware_status(self, status: FirmwareStatus) -> None:
        self.tree.write("firmware/update_status", status.value)


def _own_tree(address: str, tree: KeyPath) -> None:
    if tree.segments:
        raise UnknownPathError(f"{address} serves one tree: address it with tree ''", path=tree)
