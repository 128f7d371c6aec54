"""bench.fuzz's short version: every target runs under libFuzzer on seeds of every frame shape
and finds nothing, and a crash planted in a target is found and reported with its input
(the harness can fail)."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

pytest.importorskip("atheris", reason="atheris (a test dependency: make setup) is not "
                    "installed")


def fuzz(*args: str, **env: str) -> dict:  # type: ignore[type-arg]
    done = subprocess.run([sys.executable, "-m", "bench.fuzz", "--json", *args],
                          capture_output=True, text=True, timeout=600,
                          env=dict(os.environ, **env))
    assert done.stdout, done.stderr[-2000:]
    return json.loads(done.stdout)  # type: ignore[no-any-return]


def test_every_target_survives_a_short_run() -> None:
    result = fuzz("--runs", "30000")
    assert [t["target"] for t in result["fuzz_targets"]] == ["decode", "session", "stanza"]
    assert result["fuzz_crashes"] == 0, [t["failure"] for t in result["fuzz_targets"]]
    assert result["fuzz_inputs"] == 3 * 30_000
    assert all(t["coverage"] > 100 for t in result["fuzz_targets"])


def test_a_planted_crash_is_found_and_its_input_reported() -> None:
    result = fuzz("decode", "--runs", "2000", CSMS_FUZZ_PLANT="PLANTED-CRASH")
    assert result["fuzz_crashes"] == 1
    failure = result["fuzz_targets"][0]["failure"]
    assert "a planted crash" in failure and "PLANTED-CRASH" in failure
