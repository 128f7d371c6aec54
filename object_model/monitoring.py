"""Tasks and generic monitoring: the messages and their configuration (DESIGN.md section 8).

Every long-running operation inside an actor is a *task* living in its tree under
``tasks/<id>`` (kind, state, progress, timestamps, result or error); ``TaskControl`` starts,
pauses, resumes and cancels it. A *monitoring task* makes any key-path observable:

* ``selectors``: key-patterns (``*`` one segment, ``**`` any depth) naming what to watch;
* ``trigger``: when a value counts as an event: on every change, periodically, crossing an
  upper or lower threshold (with hysteresis, so a value wobbling around the limit fires once),
  or moving by an absolute or relative delta since the last value logged;
* ``logger``: how events become log entries: as they come, or aggregated per sampling
  interval (last, min, max, mean, count), in a buffer of bounded bytes that drops its oldest
  or newest entries first when full (counted), optionally kept across restarts and outages;
* ``reporter``: how entries leave: every ``interval_s`` or when ``max_entries`` are waiting, at
  a priority class, to a destination, expiring if undelivered.

Numbers are checked here so that an absurd setup is refused with a detailed ErrorReport before
anything is created; the station adds its own limits (e.g. the buffer bytes it can spare).
"""

from __future__ import annotations

import math
from enum import StrEnum
from typing import Annotated, Any, ClassVar, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from object_model.message_base import ROOT, MessageBase, Path, Pattern

TASK_ID = r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$"
TaskId = Annotated[str, Field(pattern=TASK_ID)]
"""A task's id: its segment under ``tasks/`` (letters, digits, ``_ . -``; up to 64)."""

MAX_SELECTORS = 64
MAX_SAMPLES = 10_000


class TaskState(StrEnum):
    PENDING = "pending"
    RUNNING = "running"
    PAUSED = "paused"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"

    @property
    def finished(self) -> bool:
        return self in (TaskState.SUCCEEDED, TaskState.FAILED, TaskState.CANCELLED)


class TaskAction(StrEnum):
    START = "start"
    PAUSE = "pause"
    RESUME = "resume"
    CANCEL = "cancel"


class _Config(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


def _finite(value: float | None, what: str) -> None:
    if value is not None and not math.isfinite(value):
        raise ValueError(f"{what} must be a finite number")


# -- triggers -------------------------------------------------------------------------------------


class OnChange(_Config):
    """Every change of a watched value is an event."""

    kind: Literal["on_change"] = "on_change"


class Periodic(_Config):
    """Every ``every_s`` seconds, each watched value is an event (changed or not)."""

    kind: Literal["periodic"] = "periodic"
    every_s: float = Field(ge=0.1, le=86_400)


class Threshold(_Config):
    """A value crossing above ``upper`` or below ``lower`` is an event; it fires again only
    after coming back by ``hysteresis`` (below ``upper - hysteresis``, above
    ``lower + hysteresis``)."""

    kind: Literal["threshold"] = "threshold"
    upper: float | None = None
    lower: float | None = None
    hysteresis: float = Field(0.0, ge=0)

    @model_validator(mode="after")
    def _sane(self) -> Threshold:
        if self.upper is None and self.lower is None:
            raise ValueError("a threshold needs an upper or a lower limit (or both)")
        for name in ("upper", "lower", "hysteresis"):
            _finite(getattr(self, name), name)
        if self.upper is not None and self.lower is not None and self.lower >= self.upper:
            raise ValueError(f"lower ({self.lower}) must be below upper ({self.upper})")
        return self


class Delta(_Config):
    """A value that moved by at least ``absolute`` (or by the fraction ``relative`` of the
    last logged value) since the last one logged is an event; the first value always is."""

    kind: Literal["delta"] = "delta"
    absolute: float | None = Field(None, gt=0)
    relative: float | None = Field(None, gt=0, le=100)

    @model_validator(mode="after")
    def _sane(self) -> Delta:
        if self.absolute is None and self.relative is None:
            raise ValueError("a delta trigger needs an absolute or a relative step")
        _finite(self.absolute, "absolute")
        return self


Trigger = Annotated[OnChange | Periodic | Threshold | Delta, Field(discriminator="kind")]


# -- logging and reporting ------------------------------------------------------------------------


class Aggregation(StrEnum):
    LAST = "last"
    MIN = "min"
    MAX = "max"
    MEAN = "mean"
    COUNT = "count"


class DropPolicy(StrEnum):
    """Which entries a full buffer gives up first."""

    OLDEST = "oldest"  # keep the latest picture
    NEWEST = "newest"  # keep the start of an incident


class LoggerConfig(_Config):
    """``sampling_interval_s`` 0: each event is an entry as it comes; otherwise events are
    aggregated per path over each interval into one entry holding ``aggregations``."""

    sampling_interval_s: float = Field(0.0, ge=0, le=86_400)
    aggregations: list[Aggregation] = Field(default_factory=lambda: [Aggregation.LAST],
                                            min_length=1, max_length=5)
    buffer_bytes: int = Field(65_536, ge=1_024, le=64 * 1024 * 1024)
    drop: DropPolicy = DropPolicy.OLDEST
    persistent: bool = False

    @model_validator(mode="after")
    def _sane(self) -> LoggerConfig:
        if 0 < self.sampling_interval_s < 0.1:
            raise ValueError("sampling_interval_s is 0 (every event) or at least 0.1 s")
        if len(set(self.aggregations)) != len(self.aggregations):
            raise ValueError("aggregations repeat")
        return self


class ReporterConfig(_Config):
    """Reports leave every ``interval_s`` (or as soon as ``max_entries`` wait) at ``priority``
    (0 critical .. 3 bulk), to ``destination`` (default: who set the task up), and expire
    ``expiry_s`` after they were made."""

    interval_s: float = Field(10.0, ge=0.05, le=86_400)
    max_entries: int = Field(100, ge=1, le=MAX_SAMPLES)
    priority: int = Field(3, ge=0, le=3)
    destination: str | None = Field(None, min_length=1, max_length=256)
    expiry_s: float = Field(3_600.0, ge=1, le=7 * 86_400)


# -- messages -------------------------------------------------------------------------------------


class MonitoringTaskSetup(MessageBase):
    """Create (or replace) the monitoring task ``task`` on the receiver; answered by
    ``TaskStatus``, or an ErrorReport that says what is wrong, having created nothing."""

    kind: Literal["MonitoringTaskSetup"] = "MonitoringTaskSetup"
    wire_id: ClassVar[int] = 13
    tree: Path = ROOT
    task: TaskId
    selectors: list[Pattern] = Field(min_length=1, max_length=MAX_SELECTORS)
    trigger: Trigger = Field(default_factory=OnChange)
    logger: LoggerConfig = Field(default_factory=LoggerConfig)
    reporter: ReporterConfig = Field(default_factory=ReporterConfig)


class TaskControl(MessageBase):
    """Start, pause, resume or cancel the task ``task``; answered by ``TaskStatus``."""

    kind: Literal["TaskControl"] = "TaskControl"
    wire_id: ClassVar[int] = 14
    tree: Path = ROOT
    task: TaskId
    action: TaskAction


class TaskStatus(MessageBase):
    """Where task ``task`` stands after a setup or control: its ``kind`` and ``state``, and
    the ``revision`` of the receiver's tree that holds that state (``tasks/<task>``)."""

    kind: Literal["TaskStatus"] = "TaskStatus"
    wire_id: ClassVar[int] = 21
    tree: Path = ROOT
    task: TaskId
    task_kind: str = Field(max_length=64)
    state: TaskState
    revision: int = Field(0, ge=0)


Sample = tuple[Path, int, Any]
"""``(path, time in µs since the epoch, value)``; aggregated entries hold a map of the
aggregations (``{"min": 1.0, "max": 4.0, "count": 7}``) and the start of their interval."""


class MonitoringReport(MessageBase):
    """Entries of the monitoring task ``task``, numbered by ``seq`` per task; ``dropped``
    counts entries the buffer gave up since the last report, ``backlog`` says more wait."""

    kind: Literal["MonitoringReport"] = "MonitoringReport"
    wire_id: ClassVar[int] = 15
    tree: Path = ROOT
    task: TaskId
    seq: int = Field(ge=0)
    samples: list[Sample] = Field(default_factory=list, max_length=MAX_SAMPLES)
    dropped: int = Field(0, ge=0)
    backlog: bool = False


StoredSample = tuple[TaskId, Path, int, Any]
"""A sample a CSMS stored: ``(task, path, time in µs, value)``."""


class MonitoringQuery(MessageBase):
    """Ask a CSMS for the samples it stored of ``tree`` (a station's copy), newest first:
    of one ``task`` or all, of paths matching ``pattern`` or all, taken at or after
    ``since_us``; answered by ``MonitoringHistory``."""

    kind: Literal["MonitoringQuery"] = "MonitoringQuery"
    wire_id: ClassVar[int] = 16
    tree: Path
    task: TaskId | None = None
    pattern: Pattern | None = None
    since_us: int = Field(0, ge=0)
    limit: int = Field(1_000, ge=1, le=MAX_SAMPLES)


class MonitoringHistory(MessageBase):
    """Stored samples, newest first; ``more`` when the limit cut some off."""

    kind: Literal["MonitoringHistory"] = "MonitoringHistory"
    wire_id: ClassVar[int] = 17
    tree: Path = ROOT
    samples: list[StoredSample] = Field(default_factory=list, max_length=MAX_SAMPLES)
    more: bool = False
