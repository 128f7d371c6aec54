"""The gateway benchmark's quick run: real chargers, a real gateway process SIGKILLed in the
middle of their transactions, and nothing lost, doubled or mis-billed."""

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
    assert figures["profiles_confirmed"] == 20
    assert figures["transactions"] == 40
    assert (figures["lost"], figures["duplicates"], figures["energy_mismatch_wh"]) == (0, 0, 0)
    assert figures["reconnect_all_s"] > 0 and figures["gateway_cpu_share"] > 0
