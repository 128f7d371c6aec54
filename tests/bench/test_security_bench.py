"""bench.security's short version: the figures exist, are plausible, and signing costs
throughput (the ratio is below 1) without stopping it."""

from __future__ import annotations

import json

import pytest

from bench import security

pytestmark = pytest.mark.broker  # the attacks run on a real broker

def test_the_quick_run_measures_signing_and_its_cost(capsys) -> None:  # type: ignore[no-untyped-def]
    assert security.main(["--json", "--quick"]) == 0
    figures = json.loads(capsys.readouterr().out)
    assert 1 < figures["sign_us"] < 5_000 and 1 < figures["verify_us"] < 5_000
    assert figures["verified_envelopes_per_s_per_core"] > 100
    assert figures["session_envelopes_per_s_signed"] > 100
    assert 0 < figures["transport_throughput_signed_over_unsigned"] < 1
    assert 0 < figures["transport_throughput_encrypted_over_unsigned"] < 1
    # a signature per frame costs far less than one per envelope
    assert (figures["transport_throughput_frame_signed_over_unsigned"]
            > 2 * figures["transport_throughput_signed_over_unsigned"])
    # and the fuzzing ran every target and found nothing
    assert figures["fuzz_inputs"] == 3 * 20_000 and figures["fuzz_crashes"] == 0
    assert set(figures["fuzz_by_target"]) == {"decode", "session", "stanza"}
    # and every attack on the running site held
    assert figures["attacks"] == figures["refused"] >= 15 and figures["attacks_failed"] == []
    assert figures["state_changed"] == 0 and figures["connections_dropped"] == 0
    # and a signed resynchronisation reached consistency too (its cost is a ratio)
    assert figures["resync_stations"] == 40 and figures["resync_seconds_signed_over_unsigned"] > 0
