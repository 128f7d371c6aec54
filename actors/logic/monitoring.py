"""Monitoring tasks inside an actor: from committed writes to ``MonitoringReport``s.

Theory of operation. ``Monitors`` holds the monitoring tasks of one tree. Their selectors go
into one ``PatternIndex`` (payload: the task), so a write costs one index lookup per changed
path however many monitors there are, and a path no selector matches costs nothing more
(``stats`` counts both, which the tests and ``csms bench monitoring`` read).

Each task turns what it sees into log entries and reports; no sockets, no clock of its own: the
caller passes ``now_us`` and asks ``next_deadline`` when to call ``due`` again (tests drive
it with a fake clock; the station actor with the wall clock).

1. *Trigger*: ``on_commit`` hands each changed value to the tasks whose selectors match it;
   the trigger decides whether it is an event (always; crossing a threshold while armed;
   moving by the delta since the last value logged). A periodic trigger ignores commits and
   reads every matching value each period in ``due``.
2. *Logger*: an event is an entry ``(path, time, value)`` at once, or, with a sampling
   interval, goes into the path's bucket; ``due`` closes finished intervals into entries
   holding the chosen aggregations. Entries wait in a buffer of bounded bytes (each entry's
   encoded size); when it is full the oldest or the newest entries go first, counted.
3. *Reporter*: ``due`` makes a report when ``interval_s`` has passed since the last one (and
   entries wait) or ``max_entries`` wait, and only while ``link_up``: during an outage
   entries stay in the buffer and leave afterwards, backlog first from the most urgent
   priority class and the newest entries first, one report per task per call, so that the
   control traffic the caller sends meanwhile is never queued behind the whole backlog.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

import msgpack

from keypath import KeyPath, KeyPattern, PatternIndex
from object_model.monitoring import (
    Aggregation,
    Delta,
    DropPolicy,
    MonitoringReport,
    MonitoringTaskSetup,
    OnChange,
    Periodic,
    Sample,
    Threshold,
)
from object_model.tree import TransactionCommitted

SECOND = 1_000_000

Reader = Callable[[KeyPattern], Iterable[tuple[KeyPath, Any]]]
"""The current ``(path, value)`` of every readable leaf matching a pattern."""


@dataclass
class MonitorStats:
    """What the monitors did: ``checked_paths`` changed paths looked up in the index,
    ``matched_paths`` of them watched by at least one task, ``trigger_checks`` task/path
    pairs evaluated, ``events`` that became log input, ``dropped`` entries lost to full
    buffers, ``reports`` made."""

    checked_paths: int = 0
    matched_paths: int = 0
    trigger_checks: int = 0
    events: int = 0
    dropped: int = 0
    reports: int = 0


@dataclass
class Outgoing:
    """A report to send: to ``destination`` at ``priority``, expiring at ``expires_us``."""

    destination: str
    priority: int
    expires_us: int
    report: MonitoringReport


def cached_rights(may_read: Callable[[KeyPath], bool], *,
                  limit: int = 4096) -> Callable[[KeyPath], bool]:
    """``may_read`` remembered per path (a role's rights do not change while a task runs,
    and checking them costs more than the rest of a monitored write)."""
    known: dict[KeyPath, bool] = {}

    def allow(path: KeyPath) -> bool:
        answer = known.get(path)
        if answer is None:
            if len(known) >= limit:
                known.clear()
            answer = known[path] = may_read(path)
        return answer

    return allow


def report_budget(frame_bytes: int) -> int:
    """The entry bytes a report may carry to fit in a frame of ``frame_bytes`` (the link's
    bulk frame), with room for the report's and the envelope's own fields."""
    return max(256, frame_bytes - 256)


def entry_size(sample: Sample) -> int:
    """The bytes an entry takes in a report (its msgpack form), which buffers count."""
    path, at, value = sample
    return len(msgpack.packb([str(path), at, value], use_bin_type=True))


@dataclass
class _Bucket:
    start_us: int
    last: Any = None
    low: float = math.inf
    high: float = -math.inf
    total: float = 0.0
    count: int = 0
    numeric: int = 0

    def add(self, value: Any) -> None:
        self.last = value
        self.count += 1
        if type(value) in (int, float) and math.isfinite(value):
            self.numeric += 1
            self.low, self.high = min(self.low, value), max(self.high, value)
            self.total += value

    def summary(self, aggregations: list[Aggregation]) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for agg in aggregations:
            if agg is Aggregation.LAST:
                out["last"] = self.last
            elif agg is Aggregation.COUNT:
                out["count"] = self.count
            elif self.numeric:  # min, max, mean only of numbers
                out[agg.value] = {Aggregation.MIN: self.low, Aggregation.MAX: self.high,
                                  Aggregation.MEAN: self.total / self.numeric}[agg]
        return out


@dataclass
class MonitoringTask:
    """One monitoring task's state: trigger memory, open buckets, buffered entries."""

    setup: MonitoringTaskSetup
    destination: str
    created_us: int
    allow: Callable[[KeyPath], bool] | None = None  # which paths its owner may see
    paused: bool = False
    seq: int = 0
    buffer: deque[tuple[Sample, int]] = field(default_factory=deque)
    buffered_bytes: int = 0
    dropped: int = 0  # since the last report
    draining: bool = False  # a backlog is leaving, one report per ``due``
    last_report_us: int = 0
    next_period_us: int = 0
    armed: dict[KeyPath, tuple[bool, bool]] = field(default_factory=dict)  # (upper, lower)
    last_logged: dict[KeyPath, Any] = field(default_factory=dict)
    buckets: dict[KeyPath, _Bucket] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.last_report_us = self.created_us
        trigger = self.setup.trigger
        if isinstance(trigger, Periodic):
            self.next_period_us = self.created_us + int(trigger.every_s * SECOND)

    @property
    def id(self) -> str:
        return self.setup.task

    # -- 1. trigger ------------------------------------------------------------------------

    def is_event(self, path: KeyPath, value: Any) -> bool:
        trigger = self.setup.trigger
        if isinstance(trigger, OnChange):
            return True
        if isinstance(trigger, Periodic):
            return False  # read in due(), not on change
        if type(value) not in (int, float) or not math.isfinite(value):
            return False  # thresholds and deltas watch numbers only
        if isinstance(trigger, Threshold):
            return self._crossed(trigger, path, value)
        assert isinstance(trigger, Delta)
        before = self.last_logged.get(path)
        if before is None:
            return True
        step = abs(value - before)
        return ((trigger.absolute is not None and step >= trigger.absolute)
                or (trigger.relative is not None and before != 0
                    and step >= abs(before) * trigger.relative))

    def _crossed(self, trigger: Threshold, path: KeyPath, value: float) -> bool:
        up_armed, down_armed = self.armed.get(path, (True, True))
        fired = False
        if trigger.upper is not None:
            if up_armed and value > trigger.upper:
                up_armed, fired = False, True
            elif not up_armed and value < trigger.upper - trigger.hysteresis:
                up_armed = True
        if trigger.lower is not None:
            if down_armed and value < trigger.lower:
                down_armed, fired = False, True
            elif not down_armed and value > trigger.lower + trigger.hysteresis:
                down_armed = True
        self.armed[path] = (up_armed, down_armed)
        return fired

    # -- 2. logger -------------------------------------------------------------------------

    def log(self, path: KeyPath, value: Any, now_us: int) -> int:
        """Take one event; returns how many entries the buffer dropped."""
        self.last_logged[path] = value
        interval = self.setup.logger.sampling_interval_s
        if not interval:
            return self.keep((path, now_us, value))
        period = int(interval * SECOND)
        dropped = 0
        bucket = self.buckets.get(path)
        if bucket is not None and bucket.start_us + period <= now_us:  # its interval ended
            dropped = self._close(path)
            bucket = None
        if bucket is None:
            bucket = self.buckets[path] = _Bucket(now_us - now_us % period)
        bucket.add(value)
        return dropped

    def close_buckets(self, now_us: int) -> int:
        """Turn the buckets whose interval ended into entries; returns entries dropped."""
        period = int(self.setup.logger.sampling_interval_s * SECOND)
        ended = [p for p, b in self.buckets.items() if b.start_us + period <= now_us]
        return sum(self._close(path) for path in ended)

    def _close(self, path: KeyPath) -> int:
        bucket = self.buckets.pop(path)
        return self.keep((path, bucket.start_us, bucket.summary(self.setup.logger.aggregations)))

    def keep(self, sample: Sample) -> int:
        """Put an entry in the buffer (dropping what the policy says when it is full); how
        many entries were dropped. A restarted station puts back its saved log with it."""
        size = entry_size(sample)
        limit = self.setup.logger.buffer_bytes
        if size > limit:
            self.dropped += 1
            return 1
        dropped = 0
        if self.setup.logger.drop is DropPolicy.NEWEST:
            if self.buffered_bytes + size > limit:
                self.dropped += 1
                return 1
        else:
            while self.buffered_bytes + size > limit:
                _, old = self.buffer.popleft()
                self.buffered_bytes -= old
                dropped += 1
        self.buffer.append((sample, size))
        self.buffered_bytes += size
        self.dropped += dropped
        return dropped

    # -- 3. reporter -----------------------------------------------------------------------

    def report_due(self, now_us: int) -> bool:
        if not self.buffer and not self.dropped:
            return False
        reporter = self.setup.reporter
        return (self.draining or len(self.buffer) >= reporter.max_entries
                or now_us >= self.last_report_us + int(reporter.interval_s * SECOND))

    def make_report(self, now_us: int, max_bytes: int | None = None) -> Outgoing:
        """The next report: the oldest entries after a normal interval, the newest first
        when more than one report's worth waits (a backlog after an outage); at most
        ``max_entries``, and entries of at most ``max_bytes`` (at least one entry)."""
        reporter = self.setup.reporter
        backlog = len(self.buffer) > reporter.max_entries
        take = min(len(self.buffer), reporter.max_entries)
        pop = self.buffer.pop if backlog else self.buffer.popleft
        peek = -1 if backlog else 0
        samples: list[Sample] = []
        size = 0
        while len(samples) < take:
            if max_bytes is not None and samples and size + self.buffer[peek][1] > max_bytes:
                backlog = True  # what is left leaves in the next reports
                break
            sample, entry = pop()
            self.buffered_bytes -= entry
            size += entry
            samples.append(sample)
        report = MonitoringReport(task=self.id, seq=self.seq, samples=samples,
                                  dropped=self.dropped, backlog=bool(self.buffer))
        self.seq += 1
        self.dropped = 0
        self.draining = backlog and bool(self.buffer)  # the rest leaves at the next call
        self.last_report_us = now_us
        return Outgoing(self.destination, reporter.priority,
                        now_us + int(reporter.expiry_s * SECOND), report)


class Monitors:
    """The monitoring tasks of one tree (see the module docstring)."""

    def __init__(self, read: Reader) -> None:
        self.read = read
        self.tasks: dict[str, MonitoringTask] = {}
        self.index: PatternIndex[str] = PatternIndex()
        self.stats = MonitorStats()

    def add(self, setup: MonitoringTaskSetup, destination: str, now_us: int, *,
            allow: Callable[[KeyPath], bool] | None = None) -> MonitoringTask:
        """Start ``setup`` (replacing a task of the same id); reports go to
        ``setup.reporter.destination`` or else ``destination``. ``allow`` filters the paths
        the task may see (its owner's read rights): others never reach its log."""
        self.remove(setup.task)
        task = MonitoringTask(setup, setup.reporter.destination or destination, now_us, allow)
        self.tasks[task.id] = task
        for pattern in setup.selectors:
            self.index.add(pattern, task.id)
        return task

    def remove(self, task_id: str) -> MonitoringTask | None:
        task = self.tasks.pop(task_id, None)
        if task is not None:
            for pattern in task.setup.selectors:
                self.index.remove(pattern, task.id)
        return task

    def on_commit(self, event: TransactionCommitted, now_us: int) -> None:
        """Feed a committed transaction's changed values to the tasks watching them."""
        if not self.tasks:
            return
        stats = self.stats
        for path, value in event.upserts:
            stats.checked_paths += 1
            watchers = self.index.match(path)
            if not watchers:
                continue
            stats.matched_paths += 1
            for task_id in set(watchers):
                task = self.tasks[task_id]
                if task.paused or (task.allow is not None and not task.allow(path)):
                    continue
                stats.trigger_checks += 1
                if task.is_event(path, value):
                    stats.events += 1
                    stats.dropped += task.log(path, value, now_us)

    def due(self, now_us: int, *, link_up: bool = True,
            max_report_bytes: int | None = None) -> list[Outgoing]:
        """Sample periodic tasks, close finished intervals, and make the reports due now (none
        while the link is down: entries wait in their buffers). ``max_report_bytes`` keeps
        reports to what fits a frame of the link (a slow link's bulk frames are small, so
        that a control message never waits behind a long one)."""
        for task in self.tasks.values():
            if task.paused:
                continue
            trigger = task.setup.trigger
            if isinstance(trigger, Periodic) and now_us >= task.next_period_us:
                period = int(trigger.every_s * SECOND)
                for pattern in task.setup.selectors:
                    for path, value in self.read(pattern):
                        if task.allow is not None and not task.allow(path):
                            continue
                        self.stats.events += 1
                        self.stats.dropped += task.log(path, value, now_us)
                missed = (now_us - task.next_period_us) // period
                task.next_period_us += (missed + 1) * period
            if task.setup.logger.sampling_interval_s:
                self.stats.dropped += task.close_buckets(now_us)
        if not link_up:
            return []
        ready = [t for t in self.tasks.values() if not t.paused and t.report_due(now_us)]
        ready.sort(key=lambda t: (t.setup.reporter.priority, t.last_report_us))
        out = [task.make_report(now_us, max_report_bytes) for task in ready]
        self.stats.reports += len(out)
        return out

    def next_deadline(self) -> int | None:
        """When ``due`` has something to do next (µs), or ``None``."""
        times = []
        for task in self.tasks.values():
            if task.paused:
                continue
            if isinstance(task.setup.trigger, Periodic):
                times.append(task.next_period_us)
            if task.buckets:
                period = int(task.setup.logger.sampling_interval_s * SECOND)
                times.append(min(b.start_us for b in task.buckets.values()) + period)
            if task.draining:
                times.append(task.last_report_us)
            elif task.buffer or task.dropped:
                times.append(task.last_report_us + int(task.setup.reporter.interval_s * SECOND))
        return min(times) if times else None
