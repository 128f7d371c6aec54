"""What the charger charges at: its EVSEs' state and the limit its charging profiles set
(OCPP 2.0.1 part 2 §K: the composite schedule, simplified), as pure data.

Profiles are kept as they came (the spec's JSON). One with the id of a kept one replaces it,
as does one of the same purpose and stack level on the same EVSE (K01). The limit
of an EVSE now: its TxProfile (for its running transaction) of the highest stack level that
has a period now, else its TxDefaultProfile so (one for EVSE 0 applies to every EVSE that has
none of its own), else the rating; under the station's ChargingStationMaxProfile and
ChargingStationExternalConstraints. A limit in A is ``A x 230 V x phases`` (3 unless the
period says). Absolute schedules run from ``startSchedule``, Relative ones from the start of
the transaction, Recurring ones modulo their day or week.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

VOLTS = 230.0
RECURRENCE_S = {"Daily": 86_400.0, "Weekly": 604_800.0}
STATION_PURPOSES = ("ChargingStationMaxProfile", "ChargingStationExternalConstraints")


@dataclass(slots=True)
class Evse:
    """One EVSE, with its one connector (number 1), and what is plugged into it."""

    number: int
    demand_w: float  # what the EV plugged in draws at most; 0: none plugged in
    register_wh: float  # its energy meter (it survives reconnects and reboots)
    transaction: str | None = None
    seq: int = 0  # the next TransactionEvent's seqNo (0: its Started is still to be sent)
    power_w: float = 0.0
    operative: bool = True
    started_at: datetime | None = None
    metered_at: datetime | None = None  # when register_wh was last brought up to date
    remote_start_id: int | None = None
    id_token: dict[str, Any] | None = None
    connect_deadline: float | None = None  # a remote start without an EV: its time-out
    profiles: dict[int, dict[str, Any]] = field(default_factory=dict)  # id -> profile

    @property
    def plugged(self) -> bool:
        return self.demand_w > 0

    @property
    def charging_state(self) -> str:
        if not self.plugged:
            return "Idle"
        return "Charging" if self.power_w > 0 else "SuspendedEVSE"

    def meter(self, now: datetime) -> None:
        """Bring the register up to ``now`` at the power drawn since it was last."""
        if self.metered_at is not None and now > self.metered_at:
            self.register_wh += self.power_w * (now - self.metered_at).total_seconds() / 3600
        self.metered_at = now


def keep(profiles: dict[int, dict[str, Any]], profile: dict[str, Any],
         everywhere: Iterable[dict[int, dict[str, Any]]]) -> None:
    """Keep ``profile`` in ``profiles``, replacing one of its id anywhere, and one of its
    purpose and stack level here."""
    for kept in everywhere:
        kept.pop(profile["id"], None)
    for ident, other in list(profiles.items()):
        if other["chargingProfilePurpose"] == profile["chargingProfilePurpose"] and \
                other["stackLevel"] == profile["stackLevel"]:
            del profiles[ident]
    profiles[profile["id"]] = profile


def _stamp(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


def _period_limit_w(profile: Mapping[str, Any], now: datetime,
                    started_at: datetime | None) -> float | None:
    """The limit ``profile`` sets now, in W (None: none now)."""
    if "validFrom" in profile and _stamp(profile["validFrom"]) > now:
        return None
    if "validTo" in profile and _stamp(profile["validTo"]) <= now:
        return None
    schedule = profile["chargingSchedule"][0]
    kind = profile.get("chargingProfileKind", "Absolute")
    if kind == "Relative":
        origin = started_at or now
    else:
        origin = _stamp(schedule["startSchedule"]) if "startSchedule" in schedule else now
    offset = (now - origin).total_seconds()
    if kind == "Recurring":
        offset %= RECURRENCE_S.get(profile.get("recurrencyKind", "Daily"), 86_400.0)
    if offset < 0 or ("duration" in schedule and offset >= schedule["duration"]):
        return None
    period = None
    for candidate in schedule["chargingSchedulePeriod"]:
        if candidate["startPeriod"] <= offset:
            period = candidate
    if period is None:
        return None
    limit = float(period["limit"])
    if schedule["chargingRateUnit"] == "A":
        return limit * VOLTS * int(period.get("numberPhases", 3))
    return limit


def _top(profiles: Iterable[Mapping[str, Any]], purpose: str, now: datetime,
         started_at: datetime | None) -> float | None:
    for profile in sorted((p for p in profiles if p["chargingProfilePurpose"] == purpose),
                          key=lambda p: p["stackLevel"], reverse=True):
        limit = _period_limit_w(profile, now, started_at)
        if limit is not None:
            return limit
    return None


def limit_w(evse: Evse, station: Mapping[int, Mapping[str, Any]], rating_w: float,
            now: datetime) -> float:
    """The limit in force on ``evse`` now (see the module docstring); ``station``: the
    profiles of EVSE 0."""
    tx = [p for p in evse.profiles.values()
          if evse.transaction and p.get("transactionId", evse.transaction) == evse.transaction]
    limit = _top(tx, "TxProfile", now, evse.started_at)
    if limit is None:
        limit = _top(evse.profiles.values(), "TxDefaultProfile", now, evse.started_at)
    if limit is None:
        limit = _top(station.values(), "TxDefaultProfile", now, evse.started_at)
    limits = [rating_w, limit if limit is not None else rating_w]
    for purpose in STATION_PURPOSES:
        cap = _top(station.values(), purpose, now, evse.started_at)
        if cap is not None:
            limits.append(cap)
    return max(0.0, min(limits))


__all__ = ["STATION_PURPOSES", "VOLTS", "Evse", "keep", "limit_w"]
