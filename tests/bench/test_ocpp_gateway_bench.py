"""The gateway benchmark's quick run: real chargers under the site's energy management, a
power cut at the resource manager confirmed by every charger without the site's limit ever
exceeded after a raise, a real gateway process SIGKILLed in the middle of their transactions,
and nothing lost, doubled or mis-billed."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

pytestmark = pytest.mark.broker


def test_the_quick_run_boots_charges_survives_a_kill_and_bills_exactly() -> None:
    done = subprocess.run([sys.executable, "-m", "actors.app.cli", "bench", "ocpp", "--quick",
                           "--json"], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    figures = json.loads(done.stdout)
    assert figures["booted"] == figures["chargers"] == 20
    assert figures["cached_at_local"] == figures["cached_at_cloud"] == 20
    assert figures["profiles_confirmed"] >= 2 * 40  # an envelope per EVSE, then the cut's
    assert figures["max_confirmed_over_site_w"] == 0
    assert 0 < figures["profile_p99_ms"] <= figures["profile_max_ms"]
    assert figures["transactions"] == 40
    assert (figures["lost"], figures["duplicates"], figures["energy_mismatch_wh"]) == (0, 0, 0)
    assert figures["reconnect_all_s"] > 0 and figures["gateway_cpu_share"] > 0
    # the cloud caught up after the kill by changes_since, never by a full re-read
    assert set(figures["cloud_resyncs_by_mode"]) <= {"changes"}
    assert figures["cloud_caught_up_s"] >= figures["reconnect_all_s"]
