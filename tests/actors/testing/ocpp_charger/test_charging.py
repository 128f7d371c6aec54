"""The limit the simulated charger's profiles set."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from actors.testing.ocpp_charger.charging import Evse, keep, limit_w

NOW = datetime(2025, 6, 1, 12, tzinfo=UTC)


def _profile(ident: int, purpose: str, stack: int, limit: float, unit: str = "W",
             **more: Any) -> dict[str, Any]:
    return {"id": ident, "stackLevel": stack, "chargingProfilePurpose": purpose,
            "chargingProfileKind": "Absolute", "chargingSchedule": [{
                "id": ident, "chargingRateUnit": unit,
                "chargingSchedulePeriod": [{"startPeriod": 0, "limit": limit}]}]} | more


def test_tx_profiles_beat_defaults_the_highest_stack_wins_under_the_station_maximum() -> None:
    evse = Evse(1, 11_000.0, 0.0)
    station: dict[int, dict[str, Any]] = {}
    assert limit_w(evse, station, 22_000.0, NOW) == 22_000.0
    everywhere = [station, evse.profiles]
    keep(evse.profiles, _profile(1, "TxDefaultProfile", 0, 9_000), everywhere)
    keep(evse.profiles, _profile(2, "TxDefaultProfile", 1, 16, "A"), everywhere)
    assert limit_w(evse, station, 22_000.0, NOW) == 16 * 230 * 3
    evse.transaction, evse.started_at = "t", NOW
    keep(evse.profiles, _profile(3, "TxProfile", 0, 5_000, transactionId="t"), everywhere)
    assert limit_w(evse, station, 22_000.0, NOW) == 5_000
    keep(station, _profile(4, "ChargingStationMaxProfile", 0, 4_000), everywhere)
    assert limit_w(evse, station, 22_000.0, NOW) == 4_000
    # same purpose and stack level replaces; an expired profile no longer counts
    keep(evse.profiles, _profile(5, "TxDefaultProfile", 1, 7_000), everywhere)
    assert set(evse.profiles) == {1, 3, 5}
    keep(station, _profile(4, "ChargingStationMaxProfile", 0, 4_000,
                           validTo=(NOW - timedelta(seconds=1)).isoformat()), everywhere)
    evse.transaction = "another"
    assert limit_w(evse, station, 22_000.0, NOW) == 7_000


def test_a_schedule_runs_from_its_start_and_ends_with_its_duration() -> None:
    evse = Evse(1, 11_000.0, 0.0)
    profile = _profile(1, "TxDefaultProfile", 0, 6_000)
    schedule = profile["chargingSchedule"][0]
    schedule["startSchedule"] = NOW.isoformat()
    schedule["duration"] = 600
    schedule["chargingSchedulePeriod"].append({"startPeriod": 300, "limit": 3_000})
    evse.profiles[1] = profile
    assert [limit_w(evse, {}, 22_000.0, NOW + timedelta(seconds=s))
            for s in (-1, 0, 299, 300, 599, 600)] == [22_000.0, 6_000, 6_000, 3_000, 3_000,
                                                       22_000.0]
