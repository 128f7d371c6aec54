"""``csms bench monitoring`` runs at a tiny size and reports sound figures (how fast is for the
benchmark's own runs, not asserted here)."""

from __future__ import annotations

import json
import math
import subprocess
import sys

import pytest

pytest.importorskip("ocpp")

from bench import monitoring
from bench.monitoring_delivery import measure_delivery, tick_writes
from object_model.station import new_station_tree

KEYS = {"reports_per_s", "us_per_monitored_write", "us_per_unmonitored_write",
        "bytes_per_sample", "ocpp_notify_event_bytes_per_sample"}


def _positive(value: object) -> bool:
    return isinstance(value, int | float) and math.isfinite(value) and value > 0


def test_the_in_process_part_reports_sound_figures(capsys: pytest.CaptureFixture[str]) -> None:
    assert monitoring.main(["--no-broker", "--stations", "20", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out.keys() >= KEYS - {"reports_per_s"}  # that one needs the broker
    cpu = out["cpu"]
    assert cpu["stations"] == 20 and cpu["monitors_per_station"] == 10
    for key in ("us_per_monitored_write", "us_per_monitored_write_all_in", "us_per_report",
                "us_per_report_encode", "us_per_write_monitored_paths_with_monitors",
                "us_per_write_monitored_paths_without_monitors",
                "us_per_write_unmonitored_paths_with_monitors",
                "us_per_write_unmonitored_paths_without_monitors"):
        assert _positive(cpu[key]), key
    assert math.isfinite(out["us_per_unmonitored_write"])
    assert 0 < cpu["events_per_monitored_write"] <= 1
    assert cpu["trigger_checks_per_unmonitored_write"] == 0  # one index lookup, nothing more
    assert cpu["reports_made"] > 0 and cpu["samples_per_report"] >= 1
    b = out["bytes"]
    for entries in (10, 1):
        row = b[f"samples_per_report_{entries}"]
        assert all(_positive(v) for v in row.values())
        assert row["bytes_per_sample"] < row["ocpp_notify_event_bytes_per_sample"]
    assert out["bytes_per_sample"] == b["samples_per_report_10"]["bytes_per_sample"]
    assert out["bytes_per_sample"] < out["ocpp_notify_event_bytes_per_sample"]


def test_ten_sample_reports_carry_ten_samples_and_one_sample_reports_one() -> None:
    for entries in (10, 1):
        _, reports = monitoring.power_reports(entries, count=5)
        assert [len(r.samples) for r in reports] == [entries] * 5
        assert [r.seq for r in reports] == list(range(5))


def test_every_tick_is_a_valid_transaction_that_the_monitors_see() -> None:
    tree = new_station_tree("cs-1")
    for k in range(41):
        tree.apply(tick_writes(k, 3))  # raises if a value is out of its type's range
    # started at k=0, stopped at k=20, started again at k=40
    assert tree.get("evse/1/status") == "Charging"
    assert tree.get("evse/1/connector/1/status") == "Occupied"


@pytest.mark.broker
async def test_a_tiny_delivery_run_delivers_reports_through_prosody() -> None:
    out = await measure_delivery(5, 1.0, warmup=0.5)
    for window in ("publishing", "reports_only"):
        row = out[window]
        assert row["stations"] == 5
        assert _positive(row["reports_per_s"]) and _positive(row["samples_per_s"])
        assert row["delivered_all"] is True
    assert out["publishing"]["updates_per_s"] > 0
    assert out["reports_only"]["updates_per_s"] == 0


def test_the_command_line_names_the_benchmark() -> None:
    result = subprocess.run([sys.executable, "-m", "actors.app.cli", "bench", "monitoring",
                             "--help"], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0 and "--no-broker" in result.stdout
