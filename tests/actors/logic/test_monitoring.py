"""Monitoring tasks on a fake clock: each trigger kind, aggregation and buffer policy, the
reporter's timing and backlog order, and what a write costs with a hundred monitors."""

from __future__ import annotations

from typing import Any

import pytest
from pydantic import ValidationError

from actors.logic.monitoring import SECOND, Monitors, entry_size, report_budget
from broker_bridge import Priority
from broker_bridge.codec import encode_body
from broker_bridge.session import Session, SessionConfig
from keypath import KeyPath, KeyPattern
from object_model import ObjectTree, Write
from object_model.monitoring import MonitoringTaskSetup, TaskState, TaskStatus
from object_model.station import new_station_tree

T0 = 1_800_000_000 * SECOND
POWER = "evse/1/meter/obis:1-0:16.7.0"
POWER_2 = "evse/2/meter/obis:1-0:16.7.0"
VOLTS = "evse/1/meter/obis:1-0:32.7.0"


class Station:
    """A station tree with monitors fed from its commits, on a clock the test moves."""

    def __init__(self) -> None:
        self.tree: ObjectTree = new_station_tree("cs-1", epoch=1)
        self.now = T0
        self.monitors = Monitors(self._read)
        self.tree.subscribe(lambda event: self.monitors.on_commit(event, self.now))

    def _read(self, pattern: KeyPattern) -> list[tuple[KeyPath, Any]]:
        return [(path, value) for path, _, value in self.tree.find(pattern)]

    def setup(self, **fields: Any) -> None:
        self.monitors.add(MonitoringTaskSetup(task=fields.pop("task", "t"), **fields),
                          "csms", self.now)

    def write(self, path: str, value: Any, *, after_s: float = 0.0) -> None:
        self.now += int(after_s * SECOND)
        self.tree.write(path, value)

    def reports(self, *, after_s: float = 0.0, link_up: bool = True) -> list[Any]:
        self.now += int(after_s * SECOND)
        return self.monitors.due(self.now, link_up=link_up)

    def values(self, *, after_s: float = 0.0) -> list[Any]:
        return [s[2] for out in self.reports(after_s=after_s) for s in out.report.samples]


@pytest.fixture
def station() -> Station:
    return Station()


def test_on_change_reports_every_change_after_the_interval(station: Station) -> None:
    station.setup(selectors=[POWER], reporter={"interval_s": 5, "priority": 1})
    for watts in (100.0, 200.0, 300.0):
        station.write(POWER, watts, after_s=1)
    station.write("identity/display_name", "not watched")
    assert station.reports() == []  # 3 s in: not yet
    assert station.monitors.next_deadline() == T0 + 5 * SECOND
    (out,) = station.reports(after_s=2)
    assert (out.destination, out.priority, out.report.seq) == ("csms", 1, 0)
    assert [(str(p), t, v) for p, t, v in out.report.samples] == [
        (POWER, T0 + i * SECOND, v) for i, v in ((1, 100.0), (2, 200.0), (3, 300.0))]
    assert station.reports(after_s=10) == []  # nothing new, nothing sent


def test_threshold_fires_once_per_crossing_with_hysteresis(station: Station) -> None:
    station.setup(selectors=[POWER], trigger={"kind": "threshold", "upper": 7000,
                                              "lower": 1000, "hysteresis": 500},
                  reporter={"interval_s": 1})
    for watts in (6000.0, 7100.0, 7200.0, 6800.0, 7300.0, 6400.0, 7050.0, 900.0, 1200.0,
                  800.0, 1600.0, 900.0):
        station.write(POWER, watts)
    # 7100 fires; 6800 is within the hysteresis, so 7300 does not; 6400 re-arms, 7050 fires;
    # 900 fires low; 1200 does not re-arm (needs > 1500), 800 is silent; 1600 re-arms, 900
    assert station.values(after_s=1) == [7100.0, 7050.0, 900.0, 900.0]


def test_delta_absolute_and_relative(station: Station) -> None:
    station.setup(task="abs", selectors=[POWER],
                  trigger={"kind": "delta", "absolute": 100}, reporter={"interval_s": 1})
    station.setup(task="rel", selectors=[VOLTS],
                  trigger={"kind": "delta", "relative": 0.05}, reporter={"interval_s": 1})
    for watts in (1000.0, 1050.0, 1099.0, 1100.0, 1150.0, 1000.0):
        station.write(POWER, watts)
    for volts in (230.0, 235.0, 242.0, 230.0, 218.0):
        station.write(VOLTS, volts)
    by_task = {out.report.task: [s[2] for s in out.report.samples]
               for out in station.reports(after_s=1)}
    assert by_task["abs"] == [1000.0, 1100.0, 1000.0]  # each step measured from the last logged
    assert by_task["rel"] == [230.0, 242.0, 218.0]  # 5% of 230 is 11.5; of 242, 12.1


def test_periodic_reads_the_value_whether_or_not_it_changed(station: Station) -> None:
    station.write(POWER, 50.0)
    station.setup(selectors=[POWER, POWER_2],
                  trigger={"kind": "periodic", "every_s": 2}, reporter={"interval_s": 6})
    assert station.monitors.next_deadline() == T0 + 2 * SECOND
    station.reports(after_s=2)
    station.write(POWER, 60.0, after_s=1)  # a change is not an event of a periodic task
    station.reports(after_s=1)
    (out,) = station.reports(after_s=2)
    mine = [(t - T0) // SECOND for p, t, _ in out.report.samples if str(p) == POWER]
    assert mine == [2, 4, 6]
    assert [v for p, _, v in out.report.samples if str(p) == POWER] == [50.0, 60.0, 60.0]
    assert {str(p) for p, _, _ in out.report.samples} == {POWER, POWER_2}


def test_sampling_interval_aggregates_per_path(station: Station) -> None:
    station.setup(selectors=[POWER], reporter={"interval_s": 30},
                  logger={"sampling_interval_s": 10,
                          "aggregations": ["last", "min", "max", "mean", "count"]})
    start = T0  # a multiple of 10 s: intervals start at T0
    for watts in (10.0, 40.0, 20.0, 30.0):  # at 1..4 s
        station.write(POWER, watts, after_s=1)
    station.write(POWER, 5.0, after_s=7)  # at 11 s: the next interval
    (out,) = station.reports(after_s=19)  # at 30 s both intervals have ended
    assert [(t, v) for _, t, v in out.report.samples] == [
        (start, {"last": 30.0, "min": 10.0, "max": 40.0, "mean": 25.0, "count": 4}),
        (start + 10 * SECOND, {"last": 5.0, "min": 5.0, "max": 5.0, "mean": 5.0,
                               "count": 1})]


@pytest.mark.parametrize("policy", ["oldest", "newest"])
def test_a_full_buffer_drops_by_policy_and_counts(station: Station, policy: str) -> None:
    size = entry_size((KeyPath.parse(POWER), T0, 1.0))
    station.setup(selectors=[POWER], reporter={"interval_s": 1, "max_entries": 1000},
                  logger={"buffer_bytes": 1024, "drop": policy})
    per_buffer = 1024 // size
    for i in range(1, 101):
        station.write(POWER, float(i))
    (out,) = station.reports(after_s=1)
    values = [int(v) for _, _, v in out.report.samples]
    assert len(values) == per_buffer and out.report.dropped == 100 - per_buffer
    assert values == list(range(101 - per_buffer, 101) if policy == "oldest"
                          else range(1, per_buffer + 1))
    assert station.monitors.stats.dropped == 100 - per_buffer


def test_an_outage_keeps_entries_and_drains_the_backlog_newest_and_most_urgent_first(
        station: Station) -> None:
    station.setup(task="bulk", selectors=[POWER], reporter={"interval_s": 1, "max_entries": 10})
    station.setup(task="alarm", selectors=["evse/1/status"],
                  reporter={"interval_s": 1, "max_entries": 10, "priority": 0})
    for i in range(1, 26):
        station.write(POWER, float(i))
    station.write("evse/1/status", "Faulted")
    assert station.reports(after_s=5, link_up=False) == []
    first = station.reports()
    assert [o.report.task for o in first] == ["alarm", "bulk"]  # critical first
    bulk = first[1].report
    assert [s[2] for s in bulk.samples] == [float(i) for i in range(25, 15, -1)]
    assert bulk.backlog and first[0].report.backlog is False
    rest = [s[2] for o in station.reports() + station.reports() for s in o.report.samples]
    assert sorted(rest) == [float(i) for i in range(1, 16)]


def test_a_hundred_monitors_cost_nothing_on_unwatched_writes(station: Station) -> None:
    for i in range(100):
        station.setup(task=f"m{i}", selectors=[f"evse/{1 + i // 10 % 2}/meter/**"]
                      if i % 10 == 0 else [f"evse/*/connector/{1 + i % 2}/status",
                                           "grid_meter/**"])
    assert len(station.tree) > 200
    stats = station.monitors.stats
    station.write("identity/display_name", "unwatched")
    station.write("identity/location/latitude", 1.5)
    assert (stats.matched_paths, stats.trigger_checks, stats.events) == (0, 0, 0)
    station.write(POWER, 11.0)
    assert stats.matched_paths == 1 and stats.trigger_checks == 5  # m0, m20, m40, m60, m80
    outs = station.reports(after_s=10)
    assert sorted(o.report.task for o in outs) == ["m0", "m20", "m40", "m60", "m80"]
    assert all(o.priority == 3 for o in outs)  # the configured (default: bulk) class


def test_paused_and_removed_tasks_do_nothing(station: Station) -> None:
    station.setup(selectors=[POWER], reporter={"interval_s": 1})
    station.monitors.tasks["t"].paused = True
    station.write(POWER, 1.0)
    assert station.reports(after_s=2) == []
    station.monitors.remove("t")
    station.write(POWER, 2.0)
    assert station.monitors.stats.checked_paths == 1 and len(station.monitors.index) == 0


@pytest.mark.parametrize("bad", [
    {"selectors": []},
    {"selectors": ["evse/**/x/**/y"] * 65},
    {"selectors": ["evse/1/"]},
    {"selectors": [POWER], "trigger": {"kind": "threshold"}},
    {"selectors": [POWER], "trigger": {"kind": "threshold", "upper": 1, "lower": 2}},
    {"selectors": [POWER], "trigger": {"kind": "periodic", "every_s": 0.001}},
    {"selectors": [POWER], "trigger": {"kind": "delta"}},
    {"selectors": [POWER], "trigger": {"kind": "sometimes"}},
    {"selectors": [POWER], "logger": {"buffer_bytes": 10**12}},
    {"selectors": [POWER], "logger": {"sampling_interval_s": 0.01}},
    {"selectors": [POWER], "logger": {"aggregations": ["median"]}},
    {"selectors": [POWER], "reporter": {"priority": 7}},
    {"selectors": [POWER], "reporter": {"interval_s": 0}},
    {"selectors": [POWER], "task": "../etc"},
])
def test_absurd_setups_are_refused_before_anything_exists(bad: dict[str, Any]) -> None:
    with pytest.raises(ValidationError):
        MonitoringTaskSetup(**{"task": "t", **bad})


def test_writes_of_one_transaction_are_seen_together(station: Station) -> None:
    station.setup(selectors=["evse/*/meter/obis:1-0:16.7.0"], reporter={"interval_s": 1})
    station.tree.apply([Write(POWER, 1.0), Write(POWER_2, 2.0)])
    (out,) = station.reports(after_s=1)
    assert [(str(p), v) for p, _, v in out.report.samples] == [
        (POWER, 1.0), (POWER_2, 2.0)]


def _control_wait(session: Session, now: int, feed: Any = None) -> int:
    """How long (µs, on the session's clock) a control envelope sent at ``now`` waits before
    its frame leaves, while ``feed(now)`` keeps queueing whatever the caller drains."""
    session.send(source="cs-1", destination="csms", kind="TaskStatus",
                 body=encode_body(TaskStatus(task="t", task_kind="monitoring",
                                             state=TaskState.RUNNING)),
                 now=now, priority=Priority.CONTROL)
    sent = now
    while True:
        if feed is not None:
            feed(now)
        frames = session.pop_frames(now)
        if any(f.priority is Priority.CONTROL for f in frames):
            return now - sent
        now = max(now + 100, session.next_deadline() or now + 100)


def test_a_backlog_drains_without_delaying_control_by_more_than_one_frame(
        station: Station) -> None:
    """After an outage the station drains a backlog of bulk reports through a 50 kB/s link;
    a control message sent meanwhile waits at most one bulk frame's link time longer than on
    an idle link (reports are cut to the link's small bulk frames while draining)."""
    config = SessionConfig(seed=1, rate_bytes_per_s=50_000, burst_bytes=4_000, compress=False,
                           max_frame_delay_us=2_000)
    station.setup(task="all", selectors=["evse/*/meter/**"],
                  logger={"buffer_bytes": 1024 * 1024},
                  reporter={"interval_s": 1, "max_entries": 200, "priority": 3})
    for i in range(3000):  # 50 minutes offline: 3 registers changing each second
        station.tree.apply([Write(f"evse/{1 + i % 2}/meter/obis:1-0:{c}", i % 1000 + 0.5)
                            for c in ("16.7.0", "32.7.0", "31.7.0")])
        station.now += SECOND
    assert station.reports(link_up=False) == []
    assert len(station.monitors.tasks["all"].buffer) == 9000

    idle = Session(config, ["cs-1"])
    idle.link_up(station.now)
    baseline = _control_wait(idle, station.now)

    draining = Session(config, ["cs-1"])
    draining.link_up(station.now)

    def drain(now: int) -> None:
        # the station's loop: the next report leaves when few bulk envelopes wait
        if draining.queue_depth().get(Priority.BULK, 0) <= 4:
            for out in station.monitors.due(now, max_report_bytes=report_budget(
                    config.frame_limit(Priority.BULK))):
                draining.send(source="cs-1", destination=out.destination,
                              kind="MonitoringReport", body=encode_body(out.report),
                              now=now, priority=Priority(out.priority))

    now = station.now
    waits, behind, frame_bytes = [], [], [0]

    def pop(now: int) -> None:
        frames = draining.pop_frames(now)
        frame_bytes[0] = max([frame_bytes[0]] + [len(f.data) for f in frames
                                                 if f.priority is Priority.BULK])

    for _ in range(3):  # control messages at three moments of the drain
        for _ in range(10):
            drain(now)
            pop(now)
            now = max(now + 100, draining.next_deadline() or now + 100)
        behind.append(draining.queue_depth().get(Priority.BULK, 0)
                      + len(station.monitors.tasks["all"].buffer))
        waits.append(_control_wait(draining, now, drain))
    assert min(behind) > 0  # each control came while the backlog was still leaving
    frame_time = frame_bytes[0] * SECOND // 50_000
    assert frame_bytes[0] <= 1_100  # the link's bulk frames: ~20 ms each
    assert max(waits) <= baseline + frame_time, (baseline, frame_time, waits)
