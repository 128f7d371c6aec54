"""``csms bench energy`` runs a tiny site's day and reports sound figures (how fast is for the
benchmark's own runs, not asserted here)."""

from __future__ import annotations

import json
import math
import subprocess
import sys

import pytest

from bench import energy

KEYS = {"evses", "algorithm", "ms_per_cycle", "ms_per_cycle_p95", "energy_delivered_share",
        "max_overrun_w", "overrun_steps", "ec_feasible", "ec_met", "ecs_missed_unreported",
        "ecs_reported", "sessions", "steps", "step_s", "wall_s"}


def test_a_tiny_day_gives_one_sound_row_per_algorithm(capsys: pytest.CaptureFixture[str]
                                                      ) -> None:
    assert energy.main(["--evses", "6", "--step-s", "600", "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert isinstance(rows, list)
    assert [r["algorithm"] for r in rows] == ["ours", "equal", "fcfs", "ours-expected-pv"]
    for r in rows:
        assert set(r) == KEYS, r["algorithm"]
        assert r["evses"] == 6 and r["step_s"] == 600
        assert r["steps"] == 24 * 3600 // 600
        for key in KEYS - {"algorithm"}:
            assert isinstance(r[key], int | float) and math.isfinite(r[key]) and r[key] >= 0, key
        assert 0 < r["energy_delivered_share"] <= 1
        assert r["ms_per_cycle_p95"] >= r["ms_per_cycle"]
        assert r["ec_met"] >= r["ec_feasible"] - r["ecs_missed_unreported"]
        assert r["ecs_reported"] == 0 or r["algorithm"].startswith("ours")
        assert r["sessions"] > 0
    ours = rows[0]
    assert ours["max_overrun_w"] == 0 and ours["overrun_steps"] == 0
    assert ours["ecs_missed_unreported"] == 0


def test_the_step_grows_with_the_site_unless_given(capsys: pytest.CaptureFixture[str]) -> None:
    assert energy.default_step_s(30) == 30
    assert energy.default_step_s(3000) > energy.default_step_s(300)
    assert energy.main(["--evses", "4,5", "--step-s", "1200"]) == 0
    captured = capsys.readouterr()
    assert "ours-expected-pv" in captured.out and "ms/cycle" in captured.out
    assert "4 EVSEs, ours" in captured.err  # progress, one line per run
    assert captured.out.count("ours-expected-pv") == 2  # its row (4 EVSEs only) and its note


def test_the_command_line_names_the_benchmark() -> None:
    result = subprocess.run([sys.executable, "-m", "actors.app.cli", "bench", "energy", "--help"],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0 and "--evses" in result.stdout
