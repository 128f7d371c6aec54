"""``csms bench resync`` runs end to end on a small hierarchy and reports sound figures (the
targets are for the benchmark's own runs, not asserted here)."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import pytest

from bench.resync import change_counts, parse_fraction, run_resync

pytestmark = pytest.mark.broker

KEYS = {
    "stations", "seconds", "resync_bytes", "floor_bytes", "ratio", "seconds_digest_descent",
    "ratio_digest_descent", "ocpp_full_report_bytes", "ocpp_full_report_deflated_bytes",
    "consistent", "consistent_digest_descent", "resync_envelope_bytes",
    "resync_stanza_bytes_estimate", "ocpp_estimated_from",
}


def _processes_under(path: Path) -> list[str]:
    """Command lines of live processes that mention ``path`` (the cloud, the broker)."""
    found = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            cmdline = (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode()
        except OSError:
            continue
        if str(path) in cmdline:
            found.append(cmdline)
    return found


async def test_a_small_run_reports_consistent_resyncs_and_leaves_nothing_behind(
        tmp_path: Path) -> None:
    state = tmp_path / "bench"
    figures = await run_resync(stations=20, changed=0.01, sites=2, seed=3, state_dir=state,
                               timeout=120)
    assert figures.keys() >= KEYS
    json.dumps(figures)  # one JSON object
    assert figures["stations"] == 20
    assert figures["consistent"] is True and figures["consistent_digest_descent"] is True
    for key in ("ratio", "ratio_digest_descent", "seconds", "seconds_digest_descent"):
        assert isinstance(figures[key], float) and figures[key] > 0 and math.isfinite(figures[key])
    assert figures["resync_bytes"] > 0 and figures["floor_bytes"] > 0
    assert figures["resync_bytes_digest_descent"] > 0 and figures["floor_bytes_digest_descent"] > 0
    assert figures["ocpp_full_report_deflated_bytes"] > 0
    assert figures["changed_leaves"] == round(0.01 * figures["leaves"])
    assert not _processes_under(state)


def test_the_changed_share_is_spread_evenly_and_parsed_both_ways() -> None:
    import random

    counts = change_counts([237] * 1000, 0.01, random.Random(1))
    assert sum(counts) == 2370 and set(counts) == {2, 3}
    assert parse_fraction("1%") == pytest.approx(0.01) == parse_fraction("0.01")


def test_the_command_line_names_the_benchmark() -> None:
    result = subprocess.run([sys.executable, "-m", "actors.app.cli", "bench", "resync", "--help"],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0 and "--stations" in result.stdout
