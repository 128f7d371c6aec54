"""A simulated OCPP 2.0.1 charger: a real OCPP-J client (the ``ocpp`` package's
``ChargePoint`` over ``websockets``) with a small behaviour of ours, for the demo and the
tests to put real OCPP traffic through the gateway.

It boots, reports its connectors, and on each EVSE with an EV plugged in charges at
``min(EV demand, the limit in force)``: the limit is the charger's own composite of the
profiles it was sent (the envelope's TxDefaultProfile at stack 1 over the permissions' at
stack 0, under a ChargingStationMaxProfile), as a charger computes it. Every ``report_s`` it
sends a TransactionEvent with its energy register and power. It answers SetChargingProfile,
ClearChargingProfile and ChangeAvailability. When its connection drops it connects again
with a jittered backoff (OCPP's RetryBackOff), and its register survives: the gateway's
baseline and de-duplication see the same meter. It lives in ``clock``'s time (the demo's site
time runs fast: its chargers charge as fast, as its simulated stations do).
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import logging
import random
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import websockets
from ocpp.routing import on
from ocpp.v201 import ChargePoint, call, call_result

from broker_bridge.clock import WALL_CLOCK, Clock

log = logging.getLogger("csms.ocpp.simulated")

VOLTS = 230.0


def _stamp(moment: datetime) -> str:
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")


@dataclass
class _Evse:
    demand_w: float
    register_wh: float
    transaction: str | None = None
    seq: int = 0
    power_w: float = 0.0
    profiles: dict[int, dict[str, Any]] = field(default_factory=dict)  # stack level -> profile


class _Client(ChargePoint):
    def __init__(self, owner: SimulatedCharger, connection: Any) -> None:
        super().__init__(owner.identity, connection, response_timeout=30)
        self.owner = owner

    @on("SetChargingProfile", skip_schema_validation=True)
    async def on_profile(self, evse_id: int, charging_profile: dict[str, Any],
                         **_: Any) -> call_result.SetChargingProfile:
        self.owner.take_profile(evse_id, charging_profile)
        return call_result.SetChargingProfile(status="Accepted")

    @on("ClearChargingProfile", skip_schema_validation=True)
    async def on_clear(self, charging_profile_id: int | None = None,
                       **_: Any) -> call_result.ClearChargingProfile:
        found = self.owner.clear_profile(charging_profile_id)
        return call_result.ClearChargingProfile(status="Accepted" if found else "Unknown")

    @on("ChangeAvailability", skip_schema_validation=True)
    async def on_availability(self, operational_status: str,
                              **_: Any) -> call_result.ChangeAvailability:
        self.owner.operative = operational_status == "Operative"
        return call_result.ChangeAvailability(status="Accepted")


class SimulatedCharger:
    """One charger (see the module docstring); ``run`` until cancelled."""

    def __init__(self, identity: str, password: str, url: str, *, evses: int = 2,
                 rating_w: float = 22_000.0, demand_w: float = 11_000.0,
                 plugged: int = 1, report_s: float = 5.0, seed: int = 0,
                 clock: Clock = WALL_CLOCK) -> None:
        self.identity, self.password, self.url = identity, password, url
        self.clock = clock
        self.rating_w, self.report_s = rating_w, report_s
        self.rng = random.Random(seed)
        self.evses = {e: _Evse(demand_w if e <= plugged else 0.0,
                               self.rng.uniform(1_000, 50_000)) for e in range(1, evses + 1)}
        self.station_limit_w = rating_w
        self.operative = True
        self.connected = False
        self.connections = 0

    # -- what it was told ----------------------------------------------------------------------

    def take_profile(self, evse: int, profile: dict[str, Any]) -> None:
        schedule = profile["charging_schedule"][0]
        if evse == 0:
            self.station_limit_w = self._watts(schedule, schedule[
                "charging_schedule_period"][0]["limit"])
            return
        self.evses[evse].profiles[int(profile["stack_level"])] = profile

    def clear_profile(self, profile_id: int | None) -> bool:
        found = False
        for evse in self.evses.values():
            for level, profile in list(evse.profiles.items()):
                if profile_id is None or profile["id"] == profile_id:
                    del evse.profiles[level]
                    found = True
        return found

    def _watts(self, schedule: dict[str, Any], limit: float) -> float:
        if schedule.get("charging_rate_unit") == "A":
            return limit * VOLTS * 3
        return float(limit)

    def limit_w(self, evse: _Evse, now: datetime) -> float:
        """The limit in force: the highest stack level's profile valid now, under the
        station's maximum."""
        for level in sorted(evse.profiles, reverse=True):
            profile = evse.profiles[level]
            valid_to = profile.get("valid_to")
            if valid_to and datetime.fromisoformat(valid_to) <= now:
                continue
            schedule = profile["charging_schedule"][0]
            start = schedule.get("start_schedule")
            offset = (now - datetime.fromisoformat(start)).total_seconds() if start else 0.0
            limit = None
            for period in schedule["charging_schedule_period"]:
                if period["start_period"] <= offset:
                    limit = period["limit"]
            if limit is not None:
                return min(self._watts(schedule, limit), self.station_limit_w)
        return min(self.rating_w, self.station_limit_w)

    # -- running -------------------------------------------------------------------------------

    def now(self) -> datetime:
        return datetime.fromtimestamp(self.clock.now_us() / 1e6, tz=UTC)

    async def run(self) -> None:
        delay = 1.0
        while True:
            try:
                await self._session()
                delay = 1.0
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.debug("%s: connection lost (%s)", self.identity, exc)
            self.connected = False
            await asyncio.sleep(delay * self.rng.uniform(0.5, 1.5))  # RetryBackOff, jittered
            delay = min(delay * 2, 30.0)

    async def _session(self) -> None:
        token = base64.b64encode(f"{self.identity}:{self.password}".encode()).decode()
        async with websockets.connect(
                f"{self.url}{self.identity}", subprotocols=["ocpp2.0.1"],  # type: ignore[list-item]
                additional_headers={"Authorization": f"Basic {token}"},
                open_timeout=10, close_timeout=1) as connection:
            client = _Client(self, connection)
            reader = asyncio.create_task(client.start())
            try:
                await self._speak(client)
            finally:
                reader.cancel()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await reader

    async def _speak(self, client: _Client) -> None:
        await client.call(call.BootNotification(
            charging_station={"model": "Sim 22", "vendor_name": "Simulated",
                              "serial_number": self.identity, "firmware_version": "1.0.0"},
            reason="PowerUp"), skip_schema_validation=True)
        self.connected, self.connections = True, self.connections + 1
        now = self.now()
        for number, evse in self.evses.items():
            await client.call(call.StatusNotification(
                timestamp=_stamp(now), evse_id=number, connector_id=1,
                connector_status="Occupied" if evse.demand_w else "Available"),
                skip_schema_validation=True)
        last = now
        while True:
            now = self.now()
            hours = (now - last).total_seconds() / 3600
            last = now
            for number, evse in self.evses.items():
                if not evse.demand_w:
                    continue
                evse.register_wh += evse.power_w * hours
                evse.power_w = min(evse.demand_w, self.limit_w(evse, now)) if self.operative \
                    else 0.0
                await self._report(client, number, evse, now)
            await asyncio.sleep(self.report_s)  # the charger's own sampling interval

    async def _report(self, client: _Client, number: int, evse: _Evse, now: datetime) -> None:
        kind = "Updated"
        if evse.transaction is None:
            evse.transaction, evse.seq, kind = f"{self.identity}-{number}-{now:%H%M%S}", 0, \
                "Started"
        context = "Transaction.Begin" if kind == "Started" else "Sample.Periodic"
        await client.call(call.TransactionEvent(
            event_type=kind, timestamp=_stamp(now), trigger_reason="MeterValuePeriodic",
            seq_no=evse.seq, transaction_info={
                "transaction_id": evse.transaction,
                "charging_state": "Charging" if evse.power_w > 0 else "SuspendedEVSE"},
            evse={"id": number, "connector_id": 1} if kind == "Started" else None,
            meter_value=[{"timestamp": _stamp(now), "sampled_value": [
                {"value": round(evse.register_wh, 1), "context": context},
                {"value": round(evse.power_w, 1), "context": context,
                 "measurand": "Power.Active.Import"}]}]), skip_schema_validation=True)
        evse.seq += 1


__all__ = ["SimulatedCharger"]
