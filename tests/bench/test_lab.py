"""The lab's own machinery: scenarios, seeds, the oracle, the statistics, run directories and
their reports (the drivers that run scenarios on real namespaces come with their scenarios)."""

from __future__ import annotations

import json
import random
from pathlib import Path
from typing import Any

import pytest

from bench.lab import rbsr, results, traces
from bench.lab import report as lab_report
from bench.lab.oracle import Oracle, from_events
from bench.lab.rundir import RunDirectory
from bench.lab.runner import NoDriverError, Recorder, Repetition, run
from bench.lab.scenario import KINDS, ScenarioError, load
from bench.lab.seeds import derive
from bench.lab.stats import estimate, percentile

SCENARIO = """
name = "s1-test"
kind = "safety_latency"
repetitions = 3
master_seed = 42
duration_s = 30
warmup_s = 5

[sites]
count = 1
stations = 4

[link]
up_kbit = 2000
buffer_ms = 300
delay_ms = 40
jitter_ms = 10

[[outages]]
at_s = 10
for_s = 5
"""


def scenario_file(tmp_path: Path, text: str = SCENARIO) -> Path:
    path = tmp_path / "scenario.toml"
    path.write_text(text)
    return path


def test_a_scenario_is_read_checked_and_written_back_resolved(tmp_path: Path) -> None:
    scenario = load(scenario_file(tmp_path))
    assert scenario.kind in KINDS and scenario.architectures == ("broker", "ocpp")
    assert scenario.link.profile().up_bps == 2_000_000
    again = tmp_path / "again.toml"
    again.write_text(scenario.to_toml())
    assert load(again) == scenario  # the resolved form reads back the same
    assert load(scenario_file(tmp_path), repetitions=1).repetitions == 1
    for broken, complaint in (
            (SCENARIO.replace('"safety_latency"', '"mystery"'), "not one of"),
            (SCENARIO + "\n[[outages]]\nat_s = 12\nfor_s = 1\n", "before the one before"),
            (SCENARIO.replace("for_s = 5", "for_s = 50"), "after the run"),
            (SCENARIO.replace("up_kbit", "upp_kbit"), "link.upp_kbit"),
            (SCENARIO + "\nrepetitions = 2\n", "outages.0.repetitions")):
        with pytest.raises(ScenarioError, match=complaint):
            load(scenario_file(tmp_path, broken))


def test_seeds_are_named_not_counted() -> None:
    assert derive(1, "S1", 0, "telemetry") == derive(1, "S1", 0, "telemetry")
    assert derive(1, "S1", 0, "telemetry") != derive(1, "S1", 1, "telemetry")
    assert derive(1, "S1", 0, "telemetry") != derive(2, "S1", 0, "telemetry")
    assert 0 <= derive(7, "x") < 2**63


def test_the_oracle_sees_a_lost_update_and_a_stale_view() -> None:
    oracle = Oracle()
    oracle.truth(1.0, "cs-1/evse/1/status", "Charging")
    oracle.seen(1.2, "cs-1/evse/1/status", "Charging")  # 0.2 s behind
    oracle.truth(2.0, "cs-1/evse/1/status", "Available")
    oracle.truth(2.5, "cs-1/evse/1/status", "Preparing")
    oracle.seen(4.0, "cs-1/evse/1/status", "Preparing")  # skipped Available: caught up
    oracle.truth(3.0, "cs-2/evse/1/status", "Faulted")  # never shown: lost
    oracle.truth(1.0, "cs-3/meter", 10)
    oracle.seen(1.0, "cs-3/meter", 10)
    assert oracle.lost() == ["cs-2/evse/1/status"]
    stale = oracle.staleness()
    assert stale.unresolved == 1  # the lost one
    assert stale.delays_s == pytest.approx([0.0, 0.2, 1.5, 2.0])
    assert oracle.fraction_consistent(3.5) == pytest.approx(1 / 3)
    assert oracle.fraction_consistent(4.0) == pytest.approx(2 / 3)
    assert oracle.consistent_at(2.0, fraction=0.6) == 2.0  # cs-2 had nothing to show yet
    assert oracle.consistent_at(3.0, fraction=0.6) == 4.0
    assert oracle.consistent_at(2.0, fraction=0.99) is None  # cs-2 never caught up
    curve = oracle.recovery_curve(0.0, 4.0, 1.0)
    assert [t for t, _ in curve] == [0.0, 1.0, 2.0, 3.0, 4.0] and curve[-1][1] == pytest.approx(2 / 3)
    # the same from recorded events, in any order
    replay = from_events([(4.0, "seen", "k", 1), (1.0, "truth", "k", 1)])
    assert replay.lost() == [] and replay.staleness().delays_s == [3.0]


def test_the_bootstrap_interval_holds_the_mean_and_repeats_itself() -> None:
    values = [1.0, 1.2, 0.9, 1.1, 1.05]
    first, second = estimate(values, seed=5), estimate(values, seed=5)
    assert first == second and first.low <= first.mean <= first.high and first.n == 5
    assert first.high - first.low < 0.3
    single = estimate([2.0], seed=1)
    assert (single.low, single.high, single.n) == (2.0, 2.0, 1)
    assert estimate([], seed=1).n == 0
    assert percentile([3, 1, 2, 4], 50) == 2 and percentile([3, 1, 2, 4], 99) == 4


async def synthetic(repetition: Repetition, record: Recorder) -> dict[str, Any]:
    """A driver of this test: latencies and a recovery drawn from the repetition's seeds (a
    real driver measures them; the runner and the report must not care which)."""
    draw = random.Random(repetition.seed("latency"))
    scale = 0.05 if repetition.architecture == "broker" else 0.4
    latencies = [draw.expovariate(1 / scale) for _ in range(50)]
    for i, latency in enumerate(latencies):
        record(i * 0.5, "latency", "safety", round(latency, 6))
    for step in range(11):
        record(step * 1.0, "consistency", "all", min(1.0, step / (5 if scale < 0.1 else 9)))
    return {"safety_p99_s": percentile(latencies, 99), "uplink_connections":
            1 if repetition.architecture == "broker" else 4,
            "idle_bytes": 1000 * (1 + scale)}


async def test_a_run_leaves_a_directory_that_renders_the_same_report_again(
        tmp_path: Path) -> None:
    scenario = load(scenario_file(tmp_path))
    drivers = {(scenario.kind, "broker"): synthetic, (scenario.kind, "ocpp"): synthetic}
    said: list[str] = []
    first = await run(scenario, tmp_path / "runs", drivers=drivers, say=said.append,
                      argv=["lab", "run"])
    assert len(said) == 2 + 2 * scenario.repetitions  # progress per repetition
    manifest = first.manifest
    assert manifest["master_seed"] == 42 and len(manifest["seeds"]) == 3
    assert manifest["kernel"] and manifest["packages"]["pydantic"] and manifest["ended_at"]
    assert load(first.path / "scenario.toml") == scenario
    report = (first.path / "report.md").read_text()
    assert "| safety_p99_s |" in report and "OCPP / ours" in report
    for plot in ("latency", "recovery", "figures"):
        assert (first.path / "plots" / f"{plot}.png").stat().st_size > 1000
    # the data alone renders the same report
    (first.path / "report.md").unlink()
    lab_report.render(first.path)
    assert (first.path / "report.md").read_text() == report
    # the same master seed, the same events
    second = await run(scenario, tmp_path / "runs", drivers=drivers, say=said.append)
    assert (second.path / "events.csv").read_text() == (first.path / "events.csv").read_text()
    assert json.loads((second.path / "summary.json").read_text()) == first.summary
    assert second.path != first.path


async def test_a_scenario_without_a_driver_is_refused_before_anything_runs(
        tmp_path: Path) -> None:
    scenario = load(scenario_file(tmp_path))
    with pytest.raises(NoDriverError, match="no driver for broker, ocpp yet"):
        await run(scenario, tmp_path / "runs", drivers={}, say=lambda _: None)
    assert not (tmp_path / "runs").exists()
    directory = RunDirectory.create(tmp_path / "runs", scenario)
    assert directory.summary == {} and list(directory.events()) == []


def test_the_shipped_scenarios_are_valid() -> None:
    folder = Path(__file__).resolve().parents[2] / "bench" / "lab" / "scenarios"
    shipped = sorted(folder.glob("*.toml"))
    assert shipped
    for path in shipped:
        scenario = load(path)
        assert path.stem == scenario.name and scenario.description


def test_the_shipped_trace_is_what_its_generator_makes(tmp_path: Path) -> None:
    shipped = traces.load("cellular-synthetic")
    assert len(shipped) == 3600 and shipped[0].t_s == 0
    assert shipped == traces.synthesize(7, 3600)  # the file is data its docstring explains
    assert any(s.up_kbit == 0 for s in shipped)  # dead zones happen
    assert traces.at(shipped, 3600.5) == shipped[0]  # it loops


async def test_results_md_holds_every_run_s_table_its_plots_and_the_calibration(
        tmp_path: Path) -> None:
    scenario = load(scenario_file(tmp_path))
    drivers = {(scenario.kind, "broker"): synthetic, (scenario.kind, "ocpp"): synthetic}
    directory = await run(scenario, tmp_path / "runs", drivers=drivers, say=lambda _: None)
    calibration = {"body_bytes": 12, "messages": 10, "published": {"mqtt": 28},
                   "ours_xmpp": {"bytes": 182.0, "bytes_back": 0.0},
                   "mqtt": "mosquitto is not installed"}
    out = results.publish([directory.path], calibration, folder=tmp_path / "results",
                          out=tmp_path / "RESULTS.md")
    text = out.read_text()
    assert "## s1-test:" in text and "| safety_p99_s |" in text and "| OCPP / ours |" in text
    kept = tmp_path / "results" / "s1-test"
    assert (kept / "plots" / "latency.png").is_file()
    assert "(results/s1-test/plots/latency.png)" in text
    assert "| ours: envelope in an XMPP message stanza | 182 |" in text
    assert "(mosquitto is not installed)" in text  # what did not run says so
    # the copy renders the same report as the run it came from
    assert lab_report.render(kept).read_text().split("\n")[5:] == \
        (directory.path / "report.md").read_text().split("\n")[5:]


def test_range_based_reconciliation_finds_exactly_the_differences_in_about_three_round_trips(
        ) -> None:
    a, b = rbsr.difference_sets(200_000, 1, seed=3)
    one = rbsr.reconcile(a, b)
    assert len(one.differing) == 1 and one.differing == {k for k in a if a[k] != b[k]}
    assert 3.0 <= one.round_trips <= 3.5 and one.bytes < 2_500  # the paper: ~3, ~1.5 kB at 1e6
    a, b = rbsr.difference_sets(50_000, 500, seed=4)
    many = rbsr.reconcile(a, b)
    assert many.differing == {k for k in a if a[k] != b[k]}
    assert many.bytes > 100 * one.bytes  # each difference costs its range's items
    same = rbsr.reconcile(a, dict(a))
    assert same.differing == frozenset() and same.messages == 1  # one fingerprint agrees


def test_a_view_read_before_the_truth_noticed_its_change_is_not_stale() -> None:
    oracle = Oracle()
    oracle.truth(0.0, "k", "a")  # the first poll: a baseline
    oracle.seen(0.1, "k", "a")
    oracle.seen(1.9, "k", "b")  # the view was read first
    oracle.truth(2.0, "k", "b")
    oracle.truth(3.0, "k", "c")
    oracle.seen(3.4, "k", "c")
    assert oracle.staleness(since=0.0).delays_s == pytest.approx([0.0, 0.4])
    assert oracle.staleness().delays_s == pytest.approx([0.0, 0.1, 0.4])  # with the baseline
