"""Monitoring benchmark: CPU per monitored write, reports delivered per second, bytes per sample.

    python -m bench.monitoring [--stations 1000] [--seconds 10] [--warmup 3] [--no-broker]
                               [--json]                     (also: csms bench monitoring)

Every station has the same ten monitoring tasks (``monitor_setups``): power on change, voltage
and phase currents by delta, session energy by delta, the energy register every minute, the
power module's output sampled per second (min/max/mean), temperatures against a threshold,
EVSE and connector status on change, and safety flags (one entry per report, critical). Reports
leave every second or as soon as ten entries wait.

1. *CPU per write* (this process, one core, no broker): ``--stations`` station trees, each with
   a ``Monitors`` engine fed by its tree as the station actor feeds it (read rights checked per
   path, wall-clock time per commit). One-leaf transactions go round the stations, to watched
   paths (``MONITORED``: most of them events) and to paths no task watches (``UNMONITORED``),
   timed with and without the engines subscribed, alternately, median of ``ROUNDS``.
   ``us_per_monitored_write`` / ``us_per_unmonitored_write`` are the difference (what
   monitoring adds to a write); ``us_per_report`` is ``Monitors.due`` making the reports those
   writes filled, ``us_per_report_encode`` encoding each one's body, and
   ``us_per_monitored_write_all_in`` all of it per monitored write.
2. *Reports per second* (``bench.monitoring_delivery``): the managed Prosody; ``--stations``
   station actors (paused simulations) on one component connection, a sink CSMS on its own
   account that admits them and sets up the ten tasks on each, then one transaction per
   station per pass of live values (``tick_writes``) as fast as this process manages (waiting
   while the stations' send queue is long), for ``--seconds`` after a warm-up: first with the
   stations publishing their changes to the sink as they do (``PropertyValueUpdate``), then
   with publishing off, so only reports travel. ``reports_per_s`` is reports the sink received
   per second in the first window. Stations and sink share this process's one core, so the
   figure is what that core carries end to end (its CPU share and Prosody's are printed).
   Measured on the live connections: ``station_frame_bytes_per_sample``, all the stations'
   connection sent (frames batched and deflated by the session, before base64; with
   publishing, the updates too) per sample received, and ``ack_bytes_per_report``, what the
   sink sent (its acknowledgements) per report.
3. *Bytes per sample*: real reports of the power task (a random walk of both EVSEs' power,
   100 ms apart) with 10 samples and with 1 sample each, 50 of each. Ours: ``bytes_per_sample``
   is the frame as our session sends it (deflated when that saves a tenth, which a 10-sample
   report does), before XMPP's base64 and stanza; ``envelope_bytes_per_sample`` the encoded
   envelope uncompressed. OCPP 2.0.1: the NotifyEvent CALL carrying the same values as
   ``EventData`` (``bench.ocpp_baseline``, schema-validated), as the WebSocket text message
   (``ocpp_notify_event_bytes_per_sample``) and with permessage-deflate and context takeover
   (``ocpp_notify_event_deflated_bytes_per_sample``: that stream compresses each message
   against all earlier ones, our frames are compressed one by one). Both need an answer:
   OCPP a CALLRESULT per message (``ocpp_call_result_bytes``), ours an acknowledgement the
   sink's session batches (``ack_bytes_per_report`` measured in step 2).

Progress goes to stderr, figures to stdout (``--json``: one object).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import statistics
import sys
import time
from collections.abc import Callable
from typing import Any

from actors.logic.monitoring import Monitors, cached_rights
from actors.logic.tree_access import TreeAccess
from bench.ocpp_baseline import (
    deflated_sizes,
    event_data,
    json_bytes,
    notify_events_message,
)
from bench.transport import _settle_heap as settle_heap
from broker_bridge.codec import decode_frame, encode_body
from broker_bridge.envelope import Priority
from broker_bridge.session import Session
from keypath import KeyPath, KeyPattern
from object_model import ObjectTree, Role, Write
from object_model.monitoring import (
    Aggregation,
    Delta,
    LoggerConfig,
    MonitoringReport,
    MonitoringTaskSetup,
    OnChange,
    Periodic,
    ReporterConfig,
    Threshold,
    Trigger,
)
from object_model.station import new_station_tree, station_access_policy

SECOND = 1_000_000
NOW = 1_750_000_000_000_000
ROLE = Role.LOCAL_CSMS
ROUNDS = 5
PASSES = 80  # one write per station per pass, per timed phase (ten visits of each path)
SAMPLE_REPORTS = 50
Say = Callable[[str], None]


def _task(name: str, *selectors: str, trigger: Trigger | None = None,
          logger: LoggerConfig | None = None, priority: int = 3,
          max_entries: int = 10) -> MonitoringTaskSetup:
    return MonitoringTaskSetup(
        task=name, selectors=[KeyPattern.parse(s) for s in selectors],
        trigger=trigger or OnChange(), logger=logger or LoggerConfig(),
        reporter=ReporterConfig(interval_s=1.0, max_entries=max_entries, priority=priority))


def monitor_setups(power_entries: int = 10) -> list[MonitoringTaskSetup]:
    """The ten monitoring tasks every station gets (``power_entries``: the power task's
    entries per report)."""
    meter = "evse/*/meter/obis:1-0:"
    return [
        _task("power", f"{meter}16.7.0", max_entries=power_entries),
        _task("voltage", f"{meter}32.7.0", trigger=Delta(absolute=1.0)),
        _task("currents", f"{meter}31.7.0", f"{meter}51.7.0", f"{meter}71.7.0",
              trigger=Delta(relative=0.05)),
        _task("session-energy", "evse/*/session/energy_wh", trigger=Delta(absolute=100.0)),
        _task("energy-register", f"{meter}1.8.0", trigger=Periodic(every_s=60.0)),
        _task("output-power", "evse/*/power_module/output_power_w",
              logger=LoggerConfig(sampling_interval_s=1.0, aggregations=[
                  Aggregation.MIN, Aggregation.MAX, Aggregation.MEAN])),
        _task("temperatures", "enclosure/temperature_sensor/*/temperature_c",
              "evse/*/power_module/temperature_c",
              "evse/*/power_module/fan/*/temperature_sensor/*/temperature_c",
              trigger=Threshold(upper=60.0, hysteresis=5.0), priority=1),
        _task("evse-status", "evse/*/status", priority=2),
        _task("connector-status", "evse/*/connector/*/status", priority=2),
        _task("safety", "enclosure/door_open", "enclosure/tilt_detected", "evse/*/rcd/tripped",
              "evse/*/contactor/welded_detected", priority=0, max_entries=1),
    ]


# Writes by visit number ``v`` (each visit changes the value; most fire their trigger).
Plan = list[tuple[KeyPath, Callable[[int], Any]]]
MONITORED: Plan = [(KeyPath.parse(p), f) for p, f in (
    ("evse/1/meter/obis:1-0:16.7.0", lambda v: 7000.0 + 400 * (v % 2)),  # on change
    ("evse/2/meter/obis:1-0:16.7.0", lambda v: 3600.0 + 200 * (v % 2)),
    ("evse/1/meter/obis:1-0:32.7.0", lambda v: 228.0 + 2 * (v % 2)),  # delta 1 V: fires
    ("evse/1/meter/obis:1-0:31.7.0", lambda v: 10.0 + 2 * (v % 2)),  # delta 5 %: fires
    ("evse/1/session/energy_wh", lambda v: 150.0 * (v + 1)),  # delta 100 Wh: fires
    ("evse/1/power_module/output_power_w", lambda v: 7200.0 + 100 * (v % 2)),  # sampled
    ("evse/1/connector/1/status", lambda v: ("Available", "Occupied")[v % 2]),
    ("enclosure/temperature_sensor/1/temperature_c", lambda v: 20.0 + v % 2),  # below 60 °C
)]
UNMONITORED: Plan = [(KeyPath.parse(p), f) for p, f in (
    ("diagnostics/cpu_load_percent", lambda v: 5.0 + v % 2),
    ("enclosure/humidity_percent", lambda v: 40.0 + v % 2),
    ("network/link/rtt_ms", lambda v: 20.0 + v % 2),
    ("grid_meter/iec61850:MMXU1/TotW", lambda v: 1000.0 + 10 * (v % 2)),
)]


def _now_us() -> int:
    return time.time_ns() // 1000


# -- 1. CPU per write -------------------------------------------------------------------------


class _Station:
    """A station tree and its monitoring engine, fed as ``StationTasks`` feeds it."""

    def __init__(self, station_id: str, setups: list[MonitoringTaskSetup]) -> None:
        self.tree = new_station_tree(station_id, now_us=NOW)
        access = TreeAccess(self.tree, station_access_policy())
        self.monitors = Monitors(lambda pattern: [(p, v) for p, _, v in self.tree.find(pattern)])
        for setup in setups:
            self.monitors.add(setup, "csms", _now_us(),
                              allow=cached_rights(lambda path: access.may_read(ROLE, path)))
        self.woken = False
        self._unsubscribe: Callable[[], None] | None = None

    def _feed(self, event: Any) -> None:
        monitors = self.monitors
        before = monitors.stats.events
        monitors.on_commit(event, _now_us())
        if monitors.stats.events != before:
            self.woken = True  # the actor's report loop would wake up

    def watch(self, on: bool) -> None:
        if on and self._unsubscribe is None:
            self._unsubscribe = self.tree.subscribe(self._feed)
        elif not on and self._unsubscribe is not None:
            self._unsubscribe()
            self._unsubscribe = None


class _Visits:
    """Per-path visit counters, so that every write changes its value."""

    def __init__(self) -> None:
        self.count: dict[KeyPath, int] = {}

    def plan(self, paths: Plan, passes: int) -> list[tuple[KeyPath, Any]]:
        out = []
        for k in range(passes):
            path, value = paths[k % len(paths)]
            visit = self.count.get(path, 0)
            self.count[path] = visit + 1
            out.append((path, value(visit)))
        return out


def _time_writes(stations: list[_Station], plan: list[tuple[KeyPath, Any]]) -> float:
    """Seconds per write of ``plan`` (each write once on every station, one transaction)."""
    trees = [s.tree for s in stations]
    settle_heap()
    t0 = time.perf_counter()
    for path, value in plan:
        for tree in trees:
            tree.apply((Write(path, value),))
    return (time.perf_counter() - t0) / (len(plan) * len(trees))


class _Clock:
    """Time for ``due``: ahead of the wall clock by whole seconds, so that each call finds
    the reporting interval over (never going back)."""

    def __init__(self) -> None:
        self.at = _now_us()

    def tick(self) -> int:
        self.at = max(self.at, _now_us()) + SECOND
        return self.at


def _drain(stations: list[_Station], clock: _Clock) -> tuple[float, list[MonitoringReport]]:
    """Make every report the buffered entries fill (``due`` until the buffers are empty);
    returns the seconds ``due`` took and the reports."""
    reports: list[MonitoringReport] = []
    spent = 0.0
    for station in stations:
        monitors = station.monitors
        for _ in range(1000):
            now = clock.tick()
            t0 = time.perf_counter()
            out = monitors.due(now)
            spent += time.perf_counter() - t0
            reports += [o.report for o in out]
            if not any(t.buffer or t.buckets for t in monitors.tasks.values()):
                break
    return spent, reports


def measure_cpu(stations: int, *, rounds: int = ROUNDS, passes: int = PASSES,
                say: Say = lambda _: None) -> dict[str, Any]:
    """Step 1 of the module docstring."""
    say(f"building {stations} station trees with 10 monitoring tasks each")
    setups = monitor_setups()
    fleet = [_Station(f"cs-{i}", setups) for i in range(1, stations + 1)]
    visits, clock = _Visits(), _Clock()
    times: dict[str, list[float]] = {k: [] for k in (
        "bare_monitored", "bare_unmonitored", "with_monitored", "with_unmonitored")}
    due_s, encode_s, report_count, sample_count, monitored_writes = 0.0, 0.0, 0, 0, 0
    events = checks_unmonitored = 0
    for r in range(rounds):
        say(f"round {r + 1}/{rounds}: {2 * passes * stations:,} writes without monitors, "
            f"{2 * passes * stations:,} with")
        for s in fleet:
            s.watch(False)
        times["bare_monitored"].append(_time_writes(fleet, visits.plan(MONITORED, passes)))
        times["bare_unmonitored"].append(_time_writes(fleet, visits.plan(UNMONITORED, passes)))
        for s in fleet:
            s.watch(True)
        before = sum(s.monitors.stats.trigger_checks for s in fleet)
        times["with_unmonitored"].append(_time_writes(fleet, visits.plan(UNMONITORED, passes)))
        checks_unmonitored += sum(s.monitors.stats.trigger_checks for s in fleet) - before
        before = sum(s.monitors.stats.events for s in fleet)
        times["with_monitored"].append(_time_writes(fleet, visits.plan(MONITORED, passes)))
        events += sum(s.monitors.stats.events for s in fleet) - before
        monitored_writes += passes * stations
        settle_heap()
        spent, reports = _drain(fleet, clock)
        t0 = time.perf_counter()
        for report in reports:
            encode_body(report)
        encode_s += time.perf_counter() - t0
        due_s += spent
        report_count += len(reports)
        sample_count += sum(len(rep.samples) for rep in reports)
    us = {k: statistics.median(v) * 1e6 for k, v in times.items()}
    monitored = us["with_monitored"] - us["bare_monitored"]
    per_report = due_s / max(report_count, 1) * 1e6
    per_encode = encode_s / max(report_count, 1) * 1e6
    return {
        "stations": stations,
        "monitors_per_station": len(setups),
        "writes_per_phase": passes * stations,
        "rounds": rounds,
        "us_per_monitored_write": round(monitored, 3),
        "us_per_unmonitored_write": round(us["with_unmonitored"] - us["bare_unmonitored"], 3),
        "us_per_write_monitored_paths_with_monitors": round(us["with_monitored"], 3),
        "us_per_write_monitored_paths_without_monitors": round(us["bare_monitored"], 3),
        "us_per_write_unmonitored_paths_with_monitors": round(us["with_unmonitored"], 3),
        "us_per_write_unmonitored_paths_without_monitors": round(us["bare_unmonitored"], 3),
        "events_per_monitored_write": round(events / max(monitored_writes, 1), 3),
        "trigger_checks_per_unmonitored_write": checks_unmonitored / (rounds * passes
                                                                      * stations),
        "reports_made": report_count,
        "samples_per_report": round(sample_count / max(report_count, 1), 2),
        "us_per_report": round(per_report, 3),
        "us_per_report_encode": round(per_encode, 3),
        "us_per_monitored_write_all_in": round(
            monitored + (due_s + encode_s) / max(monitored_writes, 1) * 1e6, 3),
    }


# -- 3. bytes per sample ------------------------------------------------------------------------


def power_reports(entries: int, count: int = SAMPLE_REPORTS,
                  seed: int = 1) -> tuple[ObjectTree, list[MonitoringReport]]:
    """``count`` reports of the power task with ``entries`` samples each: both EVSEs' power
    walking randomly (float32 as the meter gives it), one change every 100 ms."""
    rng = random.Random(seed)
    tree = new_station_tree("cs-1", now_us=NOW)
    setup = next(s for s in monitor_setups(entries) if s.task == "power")
    monitors = Monitors(lambda pattern: [(p, v) for p, _, v in tree.find(pattern)])
    monitors.add(setup, "csms", NOW)
    power = [7_400.0, 11_000.0]
    reports: list[MonitoringReport] = []
    now = NOW
    while len(reports) < count:
        now += SECOND // 10 + rng.randrange(-2_000, 2_000)  # meters are not exact either
        evse = rng.randrange(2)
        power[evse] = min(22_000.0, max(0.0, power[evse] + rng.uniform(-250, 250)))
        monitors.on_commit(tree.write(f"evse/{evse + 1}/meter/obis:1-0:16.7.0",
                                      round(power[evse], 1)), now)
        reports += [o.report for o in monitors.due(now)]
    return tree, reports[:count]


def our_bytes(reports: list[MonitoringReport]) -> tuple[list[int], list[int]]:
    """Frame bytes and envelope bytes of each report, sent alone by a session as the station
    sends it (reliable, bulk, expiring in an hour)."""
    session = Session(local=["cs-1"])
    frames, envelopes = [], []
    now = NOW
    for report in reports:
        now += SECOND
        session.send(source="cs-1", destination="csms", kind="MonitoringReport",
                     body=encode_body(report), now=now, priority=Priority.BULK, reliable=True,
                     expires_us=now + 3600 * SECOND)
        out = session.pop_frames(now + SECOND)  # past the bulk batching window
        assert len(out) == 1
        frames.append(len(out[0].data))
        envelopes += [len(e) for e in decode_frame(out[0].data)]
    return frames, envelopes


def ocpp_messages(tree: ObjectTree, reports: list[MonitoringReport]) -> list[list[Any]]:
    """The NotifyEvent CALLs carrying the same samples (one per report; ``Delta`` trigger:
    OCPP's on-change monitor is a delta monitor)."""
    frames, event_id = [], 0
    for report in reports:
        events = []
        for path, at, value in report.samples:
            event_id += 1
            events.append(event_data(path, value, tree=tree, at_us=at, event_id=event_id))
        frames.append(notify_events_message(events, station_id="cs-1", seq=0,
                                            now_us=report.samples[-1][1]))
    return frames


def measure_bytes() -> dict[str, Any]:
    """Step 3 of the module docstring: per sample, 10 and 1 samples per report."""
    out: dict[str, Any] = {}
    for entries in (10, 1):
        tree, reports = power_reports(entries)
        samples = sum(len(r.samples) for r in reports)
        frames, envelopes = our_bytes(reports)
        calls = ocpp_messages(tree, reports)
        deflated = deflated_sizes([("cs", c) for c in calls])
        out[f"samples_per_report_{entries}"] = {
            "reports": len(reports),
            "bytes_per_sample": round(sum(frames) / samples, 1),
            "envelope_bytes_per_sample": round(sum(envelopes) / samples, 1),
            "ocpp_notify_event_bytes_per_sample": round(
                sum(json_bytes(c) for c in calls) / samples, 1),
            "ocpp_notify_event_deflated_bytes_per_sample": round(sum(deflated) / samples, 1),
        }
    headline = out["samples_per_report_10"]
    return {**{k: v for k, v in headline.items() if k != "reports"},
            "ocpp_call_result_bytes": json_bytes([3, "a" * 36, {}]), **out}


# -- the command line -------------------------------------------------------------------------


def _print(out: dict[str, Any]) -> None:
    cpu = out["cpu"]
    print(f"CPU per write, {cpu['stations']:,} station trees x {cpu['monitors_per_station']} "
          f"monitors (median of {cpu['rounds']} rounds of {cpu['writes_per_phase']:,} writes)")
    for label, key in (("watched path", "monitored_paths"),
                       ("unwatched path", "unmonitored_paths")):
        bare = cpu[f"us_per_write_{key}_without_monitors"]
        wm = cpu[f"us_per_write_{key}_with_monitors"]
        print(f"  write to a {label:<15} {bare:8.2f} us without monitors, {wm:8.2f} us with: "
              f"+{wm - bare:.2f} us")
    print(f"  events per watched write  {cpu['events_per_monitored_write']:8.2f}   trigger checks "
          f"per unwatched write {cpu['trigger_checks_per_unmonitored_write']:g}")
    print(f"  making a report           {cpu['us_per_report']:8.2f} us ({cpu['samples_per_report']}"
          f" samples on average), encoding it {cpu['us_per_report_encode']:.2f} us")
    print(f"  all in, per watched write {cpu['us_per_monitored_write_all_in']:8.2f} us")
    if "delivery" in out:
        for name, row in out["delivery"].items():
            print(f"Delivery through Prosody, {row['stations']:,} station actors, "
                  f"{row['seconds']:g} s, {name.replace('_', ' ')}")
            print(f"  {row['reports_per_s']:>9,.0f} reports/s  {row['samples_per_s']:>9,.0f} "
                  f"samples/s  ({row['samples_per_report']} samples/report; "
                  f"{row['transactions_per_s']:,.0f} station transactions/s; "
                  f"{row['updates_per_s']:,.0f} PropertyValueUpdates/s)")
            print(f"  {row['reports_made']:,} reports made and {row['delivered']:,} received in "
                  f"the window; {'all' if row['delivered_all'] else 'NOT all'} delivered "
                  f"{row['drain_seconds']:.1f} s after it")
            print(f"  this process {row['process_cpu_percent']:.0f}% CPU, Prosody "
                  f"{row['broker_cpu_percent']:.0f}%; the stations sent "
                  f"{row['station_frame_bytes_per_sample']} frame bytes per sample (all they "
                  f"sent), the sink {row['ack_bytes_per_report']} bytes of acks per report")
    b = out["bytes"]
    print("Bytes per sample (power task; ours: frames as the session sends them, before XMPP)")
    for entries in (10, 1):
        row = b[f"samples_per_report_{entries}"]
        print(f"  {entries:>2} sample(s)/report: ours {row['bytes_per_sample']:7.1f} "
              f"(envelope {row['envelope_bytes_per_sample']:.1f})   OCPP NotifyEvent "
              f"{row['ocpp_notify_event_bytes_per_sample']:7.1f} "
              f"(permessage-deflate {row['ocpp_notify_event_deflated_bytes_per_sample']:.1f})")
    print(f"  OCPP adds a CALLRESULT of {b['ocpp_call_result_bytes']} bytes per NotifyEvent")


def measure(stations: int, seconds: float, *, broker: bool = True, warmup: float = 3.0,
            say: Say = lambda _: None) -> dict[str, Any]:
    """All three steps (the second only with ``broker``); the headline figures first, then
    each step's in full."""
    out: dict[str, Any] = {"cpu": measure_cpu(stations, say=say)}
    if broker:
        from bench.monitoring_delivery import measure_delivery  # it imports this module

        out["delivery"] = asyncio.run(measure_delivery(stations, seconds, warmup=warmup,
                                                       say=say))
    say("bytes per sample")
    out["bytes"] = measure_bytes()
    cpu, b = out["cpu"], out["bytes"]
    flat = {"stations": stations,
            "us_per_monitored_write": cpu["us_per_monitored_write"],
            "us_per_unmonitored_write": cpu["us_per_unmonitored_write"],
            "us_per_monitored_write_all_in": cpu["us_per_monitored_write_all_in"],
            "bytes_per_sample": b["bytes_per_sample"],
            "envelope_bytes_per_sample": b["envelope_bytes_per_sample"],
            "ocpp_notify_event_bytes_per_sample": b["ocpp_notify_event_bytes_per_sample"],
            "ocpp_notify_event_deflated_bytes_per_sample":
                b["ocpp_notify_event_deflated_bytes_per_sample"]}
    if broker:
        delivery = out["delivery"]
        flat["reports_per_s"] = delivery["publishing"]["reports_per_s"]
        flat["samples_per_s"] = delivery["publishing"]["samples_per_s"]
        flat["reports_per_s_without_publishing"] = delivery["reports_only"]["reports_per_s"]
        flat["delivery_stations"] = delivery["publishing"]["stations"]
    return {**flat, **out}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.monitoring",
                                     description=__doc__.splitlines()[0],
                                     epilog=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.add_argument("--stations", type=int, default=1000, help="stations (default 1000)")
    parser.add_argument("--seconds", type=float, default=10.0,
                        help="each delivery window after its warm-up (default 10)")
    parser.add_argument("--warmup", type=float, default=3.0,
                        help="driving before each delivery window (default 3)")
    parser.add_argument("--no-broker", action="store_true",
                        help="skip the delivery run through Prosody (steps 1 and 3 only)")
    args = parser.parse_args(argv)

    def say(message: str) -> None:
        print(f"  {message}...", file=sys.stderr, flush=True)

    out = measure(args.stations, args.seconds, broker=not args.no_broker, warmup=args.warmup,
                  say=say)
    if args.json:
        print(json.dumps(out))
    else:
        _print(out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
