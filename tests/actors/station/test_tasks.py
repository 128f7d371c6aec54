"""Monitoring tasks and the Task abstraction on a station actor, over the in-memory transport
with real SQLite stores (delivery through the real broker: test_monitoring_hierarchy)."""

from __future__ import annotations

import asyncio
import dataclasses
from typing import Any

import msgpack
import pytest

from actors.station.tasks import TaskLimits
from actors.testing import until
from broker_bridge import Priority
from broker_bridge.codec import _compact
from keypath import KeyPath, KeyPattern
from object_model import ErrorCode, ModelError, Role, Write
from object_model.monitoring import (
    LoggerConfig,
    MonitoringTaskSetup,
    Periodic,
    ReporterConfig,
    TaskAction,
    TaskControl,
    Threshold,
)
from tests.actors.station.site import Csms, Site

POWER = "evse/1/meter/obis:1-0:16.7.0"
VOLTS = "evse/1/meter/obis:1-0:32.7.0"


def setup(task: str, *selectors: str, **kwargs: Any) -> MonitoringTaskSetup:
    kwargs.setdefault("reporter", ReporterConfig(interval_s=1, priority=2))
    return MonitoringTaskSetup(task=task, selectors=[KeyPattern.parse(s) for s in selectors],
                               **kwargs)


async def test_a_monitoring_task_lives_in_the_tree_and_reports_at_its_priority(
        site: Site) -> None:
    csms = await site.start_csms()
    station = await site.station()
    await csms.request("cs-1", setup("power", POWER))
    entry = station.tree.read("tasks/power")
    assert entry["kind"] == "monitoring" and entry["state"] == "running"
    assert entry["owner"] == "csms"

    station.tree.write(POWER, 7_400.0)
    await until(lambda: bool(csms.samples("power")), "a report")
    report, priority = csms.reports[0]
    assert priority is Priority.STATE  # the configured class (1), not the default bulk
    assert [(str(p), v) for p, _, v in report.samples] == [(POWER, 7_400.0)]


async def test_a_hundred_monitors_cost_nothing_on_a_write_they_do_not_watch(site: Site) -> None:
    csms = await site.start_csms()
    station = await site.station(limits=TaskLimits(max_monitoring_tasks=100, install_s=0))
    assert len(station.tree) >= 230  # the whole station: ~300 values, most visible
    for i in range(100):
        selector = POWER if i == 0 else f"evse/{i % 2 + 1}/connector/*/status"
        await csms.request("cs-1", setup(f"m{i}", selector))
    stats = station.monitors.stats
    before = dataclasses.replace(stats)
    station.tree.write("enclosure/humidity_percent", 55.0)
    assert stats.checked_paths == before.checked_paths + 1  # one index lookup, no more
    assert (stats.matched_paths, stats.trigger_checks, stats.events) == (
        before.matched_paths, before.trigger_checks, before.events)

    station.tree.write(POWER, 3_000.0)
    assert stats.matched_paths == before.matched_paths + 1
    assert stats.trigger_checks == before.trigger_checks + 1  # only m0 watches it
    await until(lambda: bool(csms.samples("m0")), "m0 reported")
    assert csms.reports[-1][1] is Priority.STATE
    assert not csms.samples("m1")


async def send_setup(station: Csms, body: dict[str, Any]) -> ModelError:
    """Send a MonitoringTaskSetup as raw fields (as a faulty peer might) and return the
    refusal."""
    plain = MonitoringTaskSetup(task="t", selectors=[KeyPattern.parse(POWER)]).model_dump(
        mode="json")
    plain.update(body)
    for part in ("trigger", "logger", "reporter"):  # the rest of a part stays valid
        if part in body:
            plain[part] = {**MonitoringTaskSetup.model_fields[part].get_default(
                call_default_factory=True).model_dump(mode="json"), **body[part]}
    env = station.endpoint.send(source=station.address, destination="cs-1",
                                kind="MonitoringTaskSetup",
                                body=msgpack.packb(_compact(plain), use_bin_type=True))
    future = asyncio.get_running_loop().create_future()
    station._pending[env.id] = (future, "cs-1")
    answer, _ = await asyncio.wait_for(future, 5)
    station._pending.pop(env.id, None)
    return answer.to_exception()


@pytest.mark.parametrize("bad, code, says", [
    ({"task": "t", "selectors": ["evse/*/meter/**["]}, ErrorCode.INVALID_MESSAGE, "selectors"),
    ({"task": "t", "selectors": ["evse/1/statuz"]}, ErrorCode.UNKNOWN_PATH, "did you mean"),
    ({"task": "t", "selectors": ["evse/*/meter/**"],
      "trigger": {"kind": "periodic", "every_s": 0.001}}, ErrorCode.INVALID_MESSAGE, "every_s"),
    ({"task": "t", "selectors": ["**"], "trigger": {"kind": "periodic", "every_s": 0.1}},
     ErrorCode.LIMIT_EXCEEDED, "samples/s"),
    ({"task": "t", "selectors": [POWER], "logger": {"buffer_bytes": 4 * 1024 * 1024}},
     ErrorCode.LIMIT_EXCEEDED, "buffer_bytes"),
    ({"task": "t", "selectors": [POWER], "reporter": {"interval_s": 0.1}},
     ErrorCode.LIMIT_EXCEEDED, "interval_s"),
    ({"task": "../x", "selectors": [POWER]}, ErrorCode.INVALID_MESSAGE, "task"),
])
async def test_a_bad_setup_is_refused_in_detail_and_creates_nothing(
        site: Site, bad: dict[str, Any], code: ErrorCode, says: str) -> None:
    csms = await site.start_csms()
    station = await site.station()
    revision = station.tree.revision
    error = await send_setup(csms, bad)
    assert error.code is code, error
    assert says in error.text or says in str(error.details), error
    assert station.tree.revision == revision
    assert "tasks/t/kind" not in station.tree and not station.monitors.tasks


async def test_monitoring_shows_a_role_only_what_it_may_read(site: Site) -> None:
    csms = await site.start_csms()
    rm = await site.stack.enter_async_context(Csms("rm", await site.endpoint("rm")))
    station = await site.station(trusted={"rm": Role.RESOURCE_MANAGER})
    with pytest.raises(ModelError) as refused:
        await rm.request("cs-1", setup("net", "network/**"))
    assert refused.value.code is ErrorCode.ACCESS_DENIED
    await rm.request("cs-1", setup("all", "**"))  # allowed: it sees the energy values only
    station.tree.apply_writes = None

    station.tree.apply([Write(POWER, 1_000.0), Write("identity/display_name", "secret-ish"),
                        Write("network/profiles/1/apn_password", "hunter2")])
    await until(lambda: bool(rm.samples("all")), "the RM's report")
    assert {str(p) for p, _, _ in rm.samples("all")} == {POWER}
    assert csms.samples("all") == []


async def test_task_control_pauses_resumes_and_cancels(site: Site) -> None:
    csms = await site.start_csms()
    station = await site.station()
    await csms.request("cs-1", setup("v", VOLTS))
    await csms.request("cs-1", TaskControl(task="v", action=TaskAction.PAUSE))
    assert station.tree.get("tasks/v/state") == "paused"
    station.tree.write(VOLTS, 231.0)
    assert station.monitors.stats.events == 0
    with pytest.raises(ModelError) as refused:
        await csms.request("cs-1", TaskControl(task="v", action=TaskAction.PAUSE))
    assert refused.value.code is ErrorCode.INVALID_STATE
    assert refused.value.details["state"] == "paused"
    await csms.request("cs-1", TaskControl(task="v", action=TaskAction.RESUME))
    station.tree.write(VOLTS, 232.0)
    await until(lambda: bool(csms.samples("v")), "a report after resuming")
    await csms.request("cs-1", TaskControl(task="v", action=TaskAction.CANCEL))
    assert station.tree.get("tasks/v/state") == "cancelled"
    assert "v" not in station.monitors.tasks
    with pytest.raises(ModelError) as refused:
        await csms.request("cs-1", TaskControl(task="nope", action=TaskAction.CANCEL))
    assert refused.value.code is ErrorCode.UNKNOWN_PATH


async def test_a_task_and_its_persistent_log_survive_a_restart(site: Site) -> None:
    csms = await site.start_csms()
    station = await site.station()
    await csms.request("cs-1", setup("kept", VOLTS, logger=LoggerConfig(persistent=True),
                                     reporter=ReporterConfig(interval_s=3600)))
    for volts in (229.0, 230.0, 231.0):
        station.tree.write(VOLTS, volts)
    await station.stop()  # the entries have not been reported yet (hourly reports)
    assert not csms.samples("kept")

    again = await site.restart(station)
    assert again.tree.get("tasks/kept/state") == "running"
    task = again.monitors.tasks["kept"]
    assert [v for (_, _, v), _ in task.buffer] == [229.0, 230.0, 231.0]
    again.tree.write(VOLTS, 232.0)  # and it goes on watching
    assert [v for (_, _, v), _ in task.buffer][-1] == 232.0


async def test_while_the_link_is_down_entries_wait_within_the_budget(site: Site) -> None:
    csms = await site.start_csms()
    station = await site.station()
    await csms.request("cs-1", setup("volts", VOLTS, logger=LoggerConfig(buffer_bytes=1024),
                                     reporter=ReporterConfig(interval_s=1, max_entries=10)))
    site.endpoints["cs-1"].transport.set_link(False)
    for i in range(100):
        station.tree.write(VOLTS, 200.0 + i)
    task = station.monitors.tasks["volts"]
    assert task.buffered_bytes <= 1024 and task.dropped > 0  # the oldest went, counted
    kept = [v for (_, _, v), _ in task.buffer]
    assert kept == [200.0 + i for i in range(100 - len(kept), 100)]
    assert not csms.samples("volts")

    site.endpoints["cs-1"].transport.set_link(True)
    await until(lambda: len(csms.samples("volts")) == len(kept), "the backlog reported")
    assert sum(r.dropped for r, _ in csms.reports) == 100 - len(kept)
    first = csms.reports[0][0]
    assert first.backlog and first.samples[0][2] == 299.0  # newest first after an outage
    assert sorted(s[2] for s in csms.samples("volts")) == kept


async def test_periodic_sampling_runs_on_the_station(site: Site) -> None:
    csms = await site.start_csms()
    station = await site.station()
    await csms.request("cs-1", setup("tick", "evse/*/status", trigger=Periodic(every_s=0.2)))
    await until(lambda: len(csms.samples("tick")) >= 4, "two periods of two EVSEs")
    assert {str(p) for p, _, _ in csms.samples("tick")} == {"evse/1/status", "evse/2/status"}
    assert station.tree.get("tasks/tick/state") == "running"


async def test_a_threshold_task_reports_crossings_only(site: Site) -> None:
    csms = await site.start_csms()
    station = await site.station()
    await csms.request("cs-1", setup("hot", "enclosure/temperature_sensor/*/temperature_c",
                                     trigger=Threshold(upper=60, hysteresis=5)))
    for t in (50.0, 61.0, 62.0, 58.0, 61.0, 54.0, 61.5):
        station.tree.write("enclosure/temperature_sensor/1/temperature_c", t)
    await until(lambda: len(csms.samples("hot")) == 2, "two crossings")
    assert [s[2] for s in csms.samples("hot")] == [61.0, 61.5]
    assert KeyPath.parse("enclosure/temperature_sensor/1/temperature_c") == \
        csms.samples("hot")[0][0]
