"""A power envelope as an OCPP 2.0.1 charging profile (OCPP-NOTES §2.3).

The CSMS's envelope for EVSE ``e`` becomes a ``TxDefaultProfile`` with the fixed id
``200 + e`` at stack level 1 (a re-send replaces, never stacks: K01.FR.05/06), valid over the
envelope's span, one period per element change with its *upper* limit, in W or, for a charger
that takes amperes only, in A per phase at 230 V. A charger takes at most ``max_periods``
periods: the first ``max_periods - 1`` changes go as they are and one tail period carries the
*lowest* upper limit of the rest, so no limit is ever exceeded (the allocation renews the
envelope long before its end). OCPP 2.0.1 cannot express a lower limit or a probability band:
those are dropped here, and the EVSE says so in its tree (``ocpp:capabilities``).
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from object_model.pebc import PowerRangeEnvelope

ENVELOPE_PROFILE_BASE = 200
ENVELOPE_STACK_LEVEL = 1
VOLTS = 230.0


def rfc3339(us: int) -> str:
    """Microseconds since the epoch as an OCPP ``dateTime`` (UTC, millisecond precision)."""
    moment = datetime.fromtimestamp(us / 1e6, tz=UTC)
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def envelope_profile_id(evse: int) -> int:
    return ENVELOPE_PROFILE_BASE + evse


def set_charging_profile(envelope: PowerRangeEnvelope, evse: int, *, phases: int = 3,
                         amperes: bool = False, max_periods: int = 24) -> dict[str, Any]:
    """The ``SetChargingProfileRequest`` carrying ``envelope`` to EVSE ``evse``."""
    start = envelope.elements[0].start_us
    limits = [(e.start_us, e.upper_w) for e in envelope.elements]
    if len(limits) > max_periods:
        tail = min(w for _, w in limits[max_periods - 1:])
        limits = [*limits[:max_periods - 1], (limits[max_periods - 1][0], tail)]
    periods = []
    for at, watts in limits:
        limit = watts / (VOLTS * phases) if amperes else watts
        period: dict[str, Any] = {"startPeriod": (at - start) // 1_000_000,
                                  "limit": round(limit, 1)}
        if amperes:
            period["numberPhases"] = phases
        periods.append(period)
    return {
        "evseId": evse,
        "chargingProfile": {
            "id": envelope_profile_id(evse),
            "stackLevel": ENVELOPE_STACK_LEVEL,
            "chargingProfilePurpose": "TxDefaultProfile",
            "chargingProfileKind": "Absolute",
            "validFrom": rfc3339(start),
            "validTo": rfc3339(envelope.end_us),
            "chargingSchedule": [{
                "id": envelope_profile_id(evse),
                "startSchedule": rfc3339(start),
                "duration": max(1, (envelope.end_us - start) // 1_000_000),
                "chargingRateUnit": "A" if amperes else "W",
                "chargingSchedulePeriod": periods,
            }],
        },
    }


PERMISSIONS_PROFILE_BASE = 100
STATION_PROFILE_ID = 1


def limit_profile(evse: int, watts: float, *, phases: int = 3, amperes: bool = False
                  ) -> dict[str, Any]:
    """The ``SetChargingProfileRequest`` of a standing limit: EVSE ``evse``'s permissions as
    a TxDefaultProfile at stack level 0 (id ``100 + evse``: what the charger falls back to
    when an envelope ends), or with ``evse`` 0 the station's as a ChargingStationMaxProfile
    (id 1). Open-ended: no validity, one period."""
    limit = watts / (VOLTS * phases) if amperes else watts
    period: dict[str, Any] = {"startPeriod": 0, "limit": round(limit, 1)}
    if amperes:
        period["numberPhases"] = phases
    profile_id = STATION_PROFILE_ID if evse == 0 else PERMISSIONS_PROFILE_BASE + evse
    return {"evseId": evse, "chargingProfile": {
        "id": profile_id, "stackLevel": 0,
        "chargingProfilePurpose": "ChargingStationMaxProfile" if evse == 0
        else "TxDefaultProfile",
        "chargingProfileKind": "Relative",
        "chargingSchedule": [{"id": profile_id, "chargingRateUnit": "A" if amperes else "W",
                              "chargingSchedulePeriod": [period]}]}}


def availability(evse: int, operative: bool) -> dict[str, Any]:
    """The ``ChangeAvailabilityRequest`` for EVSE ``evse`` (0: the whole station)."""
    request: dict[str, Any] = {"operationalStatus": "Operative" if operative else "Inoperative"}
    if evse:
        request["evse"] = {"id": evse}
    return request


def clear_envelope_profile(evse: int) -> dict[str, Any]:
    """The ``ClearChargingProfileRequest`` removing EVSE ``evse``'s envelope profile."""
    return {"chargingProfileId": envelope_profile_id(evse)}


__all__ = ["availability", "clear_envelope_profile", "envelope_profile_id", "limit_profile",
           "rfc3339", "set_charging_profile"]
