"""Every attack of bench.attacks against a running site (real TLS broker, signing,
certificates): each refused with its expected answer to the attacker's connection (or
silence), a log line saying why, a metric, nothing changed and no honest connection lost."""

from __future__ import annotations

import pytest

from bench import attacks

pytestmark = pytest.mark.broker


async def test_every_attack_is_refused_logged_counted_and_changes_nothing() -> None:
    result = await attacks.measure()
    failed = [case for case in result["attack_cases"] if not case["held"]]
    assert not failed, failed
    assert result["attacks"] == result["refused"] == result["attacks_held"] >= 15
    assert result["state_changed"] == 0 and result["connections_dropped"] == 0
    silent = {c["attack"] for c in result["attack_cases"] if c["expected"] == "silence"}
    assert {"rogue account, unknown key", "downgrade to unsigned", "replay at once",
            "forged ack", "revoked certificate"} <= silent
