"""A simulated charging station's physical behaviour: a pure state machine over its tree.

Theory of operation
-------------------
``StationSimulator.tick(now_us)`` reads the station's ``ObjectTree`` and returns the operations
that bring it to time ``now_us``; the caller applies them as one transaction. Nothing here reads
a clock, sleeps or does I/O, so a day runs in seconds under a fake clock, and the same seed, tick
times and tree give the same operations.

*What lives where.* The tree holds everything a station observes: statuses, the session, meter
registers, temperatures, faults, and the permissions the CSMS wrote (read every tick, so the last
ones keep applying while no CSMS is reachable). The simulator holds only what a station cannot
observe: the random generator, the EVs plugged in (``ev.py``), the grid's voltage and frequency,
sensor noise, and precise values of slow quantities (module temperatures and fan hours,
``thermal.py``) whose tree copies are rounded; these start from the tree's readings.
``changes.py`` turns a tick's writes into operations, keeping only changed values.

*One tick*, in this order:

1. energy: each meter integrates the power it reported at its last reading over the time since
   (zero-order hold), in float64; the session, the EV's battery and the grid meter get the same
   energy. The meter is thus exactly the integral of reported power.
2. repairs and faults: each fault is repaired with probability 1 - exp(-dt / repair mean)
   (memoryless: no timer to store). Faults arrive as a Poisson process: a fan fails (the power
   module derates to half power), a connector fails or the RCD trips (EVSE Faulted, the
   session ends, the EV leaves).
3. departures at the EV's departure time; 4. arrivals (Poisson) at EVSEs that were Available
   when the tick began: Preparing, session Authorising, for one tick.
5. energy transfer (``pebc.py``): each EVSE's power constraints from its EV and permissions,
   and the limits of the envelope in force (``energy/envelope``, a CSMS's), clamped into them.
6. power: the EVs allowed to charge share the station's rating (``ev.share_power``); each gets
   at most min(EV, EVSE rating (halved when derating), permitted ``max_power_w``, connector and
   permitted current × voltage × phases, the envelope's upper limit), and nothing below its
   minimum (6 A per phase); an envelope's positive lower limit is a floor, a negative upper one
   makes a bidirectional EV give power back.
7. readings: meter, session, contactor, statuses, power module, fans, ACME cooling loop,
   enclosure, grid meter, uptime; then each EVSE's energy constraints and plan. Noisy values
   are rounded and reported with a deadband, and only changed values are written (a plan only
   when it moved materially): an idle station writes about one value per tick.

*Permissions.* Charging needs ``may_charge`` at station and EVSE level. ``max_power_w`` and
``max_current_a`` (per phase) at either level cap each EVSE; the station's rating
(``identity/max_power_w``) is shared among the EVSEs. When either level
``needs_authorisation``, the id token is checked against a local whitelist,
``SimulationConfig.authorised_tokens`` (None accepts every token); a rejected driver leaves
after two minutes. ``valid_until`` is the station actor's business, not interpreted here.

*Envelopes.* While an element of ``energy/envelope`` is in force, the EVSE keeps within its
limits; before it starts and after it ends, the permissions alone apply. ``energy/limit_w``
is the upper limit obeyed at the moment.

*Restarts.* A new simulator continues from the tree, but its EVs are gone: a session found active
without an EV is ended on the first tick, as a real station ends a transaction after a power cut,
and power reported before the simulator started is not integrated (the station was off).
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass

from actors.logic.station.changes import Drift, EvseLayout, TickChanges, read_layout
from actors.logic.station.ev import Demand, ElectricVehicle, draw_ev, share_power
from actors.logic.station.pebc import EnergyTransfers, discharge_w
from actors.logic.station.thermal import ThermalModel, ambient_c
from keypath import KeyPath
from object_model.station.components import (
    ConnectorStatus,
    DeviceState,
    EvseStatus,
    SessionState,
)
from object_model.tree import ObjectTree, Operation
from object_model.types import ValueType

US = 1_000_000
WH_US = 3_600 * US  # W·µs in a Wh
ACTIVE = (SessionState.AUTHORISING, SessionState.CHARGING, SessionState.DISCHARGING,
          SessionState.SUSPENDED)
PHASES = ("phsA", "phsB", "phsC")
V_CODES = ("32.7.0", "52.7.0", "72.7.0")
A_CODES = ("31.7.0", "51.7.0", "71.7.0")
W_CODES = ("21.7.0", "41.7.0", "61.7.0")
LINE_OHM = 0.04  # feeder resistance: the EVSE's voltage sags by I × R under load
FAULT_KINDS = (("fan", 0.5), ("connector", 0.3), ("rcd", 0.2))
MMXU, MMTR = "grid_meter/iec61850:MMXU1/", "grid_meter/iec61850:MMTR1/"


@dataclass(frozen=True, slots=True, kw_only=True)
class SimulationConfig:
    """How a simulated station's world behaves.

    EVs arrive at each free EVSE at ``arrivals_per_evse_hour`` (Poisson) and stay a log-normal
    time of mean ``stay_mean_s`` and deviation ``stay_spread_s``. ``iso15118_20_share`` of them
    speak ISO 15118-20, the rest basic IEC 61851. Batteries are normal (``battery_kwh_*``);
    on-board chargers are drawn from ``ac_chargers`` as ``(phases, max A per phase, weight)``,
    DC inlets from ``dc_max_power_kw`` as ``(kW, weight)``; drivers' tokens from ``drivers``
    numbered drivers. Faults arrive at ``faults_per_hour`` per station and are repaired after
    ``repair_mean_s`` on average. The ambient temperature swings daily by ``ambient_swing_c``
    around ``ambient_c``. ``bidirectional_share`` of the ISO 15118-20 EVs may give power back.
    A basic IEC 61851 EV does not say when it leaves: the station assumes it stays
    ``assumed_stay_s``. ``seed`` seeds everything random.
    """

    arrivals_per_evse_hour: float = 0.25
    stay_mean_s: float = 3 * 3600.0
    stay_spread_s: float = 2 * 3600.0
    iso15118_20_share: float = 0.3
    bidirectional_share: float = 0.2
    assumed_stay_s: float = 8 * 3600.0
    battery_kwh_mean: float = 60.0
    battery_kwh_spread: float = 20.0
    ac_chargers: tuple[tuple[int, float, float], ...] = (
        (1, 16.0, 0.15), (1, 32.0, 0.1), (3, 16.0, 0.55), (3, 32.0, 0.2))
    dc_max_power_kw: tuple[tuple[float, float], ...] = ((50.0, 0.3), (100.0, 0.4), (150.0, 0.3))
    drivers: int = 1000
    authorised_tokens: frozenset[str] | None = None
    faults_per_hour: float = 0.01
    repair_mean_s: float = 4 * 3600.0
    ambient_c: float = 15.0
    ambient_swing_c: float = 5.0
    seed: int = 0


class StationSimulator:
    """The physics of one station; ``tick(now_us)`` returns the operations of one transaction."""

    def __init__(self, tree: ObjectTree, config: SimulationConfig, *, now_us: int) -> None:
        self.tree, self.config = tree, config
        self._rng = random.Random(config.seed)
        self._started_us = self._last_us = now_us
        self._cache: dict[str, tuple[KeyPath, ValueType]] = {}
        self._evs: dict[int, ElectricVehicle] = {}
        self._requests: dict[int, ElectricVehicle | None] = {}
        self._departures: set[int] = set()
        self._layout = read_layout(tree)
        self._grid = "grid_meter/iec61850:MMXU1" in tree
        w = TickChanges(tree, self._cache)
        self._volts = [Drift(230.0, 2.0, 900.0, w.get(f"{MMXU}PhV/{ph}", 230.0)) for ph in PHASES]
        self._hz = Drift(50.0, 0.02, 60.0, w.get(f"{MMXU}Hz", 50.0))
        sensors = tree.read("enclosure").get("temperature_sensor", {}) if "enclosure" in tree else {}
        self._heat = ThermalModel(w, self._layout, sorted(int(k) for k in sensors),
                                  self._ambient(now_us))
        self._power_w = 0.0
        self._charging: tuple[int, ...] = ()
        self._energy = EnergyTransfers(assumed_stay_us=int(config.assumed_stay_s * US))
        self._energy_wh = 0.0
        self._sessions = self._faults = self._repairs = 0

    # -- summary ------------------------------------------------------------------------------

    @property
    def charging_evses(self) -> tuple[int, ...]:
        """The EVSEs delivering power after the last tick."""
        return self._charging

    @property
    def power_w(self) -> float:
        """The station's total power after the last tick."""
        return self._power_w

    @property
    def energy_wh_delivered(self) -> float:
        """Energy metered by all EVSEs since the simulator started."""
        return self._energy_wh

    @property
    def sessions_started(self) -> int:
        return self._sessions

    @property
    def faults(self) -> int:
        """Faults that occurred since the simulator started."""
        return self._faults

    @property
    def repairs(self) -> int:
        return self._repairs

    @property
    def evs(self) -> dict[int, ElectricVehicle]:
        """The EVs plugged in, by EVSE (a copy)."""
        return dict(self._evs)

    def plug_in(self, evse_id: int, ev: ElectricVehicle | None = None) -> None:
        """Have an EV (``ev``, else a random one) arrive at ``evse_id`` on the first tick at
        which that EVSE is Available."""
        self._requests[evse_id] = ev

    def depart(self, evse_id: int) -> None:
        """Have the EV at ``evse_id`` (if any) leave on the next tick, whatever its plan."""
        self._departures.add(evse_id)

    # -- the tick -----------------------------------------------------------------------------

    def tick(self, now_us: int) -> list[Operation]:
        """The operations that bring the tree to ``now_us`` (apply them as one transaction)."""
        now_us = max(now_us, self._last_us)  # never back: the meters would count twice
        dt_s = (now_us - self._last_us) / US
        self._last_us = now_us
        rng, w = self._rng, TickChanges(self.tree, self._cache)
        ambient = self._ambient(now_us)
        grid_v = [d.step(rng, dt_s) for d in self._volts]
        hz = self._hz.step(rng, dt_s)
        station = _permissions(w, "")
        free = {e.id for e in self._layout if e.id not in self._evs
                and w.get(f"{e.p}status") == EvseStatus.AVAILABLE}
        grid_wh = sum(self._integrate(w, e, now_us) for e in self._layout)
        self._repair_and_fail(w, dt_s, now_us)
        for e in self._layout:
            ev = self._evs.get(e.id)
            leaving = e.id in self._departures
            self._departures.discard(e.id)
            if ev is not None and (now_us >= ev.departure_at or _faulted(w, e) or leaving):
                self._end_session(w, e, now_us)
            elif ev is None and w.get(f"{e.p}session/state") in ACTIVE:
                self._end_session(w, e, now_us)  # restarted: the EV was lost
        p_arrival = 1.0 - math.exp(-self.config.arrivals_per_evse_hour * dt_s / 3600.0)
        for e in self._layout:
            if e.id in free and not _faulted(w, e) and (
                    e.id in self._requests or rng.random() < p_arrival):
                self._arrive(w, e, now_us)
        volts = {e.id: self._evse_volts(w, e, grid_v) for e in self._layout}
        for e in self._layout:
            may, _, max_w, max_a = _permissions(w, e.p)
            self._energy.constrain(w, e, self._evs.get(e.id), now_us=now_us, may_charge=(
                may and station[0]), max_w=min(max_w, station[2]), max_a=min(max_a, station[3]))
        shares, _ = share_power(self._demands(w, station, volts, now_us),
                                w.get("identity/max_power_w", math.inf))
        shares.update(self._discharges(volts))
        total_w, phase_w, phase_a, charging = 0.0, [0.0] * 3, [0.0] * 3, []
        for e in self._layout:
            share = shares.get(e.id)
            power, pw, pa, loss = self._readings(w, e, share, volts[e.id], hz, now_us)
            self._heat.power_module(w, e, abs(power), loss, ambient, dt_s)
            self._energy.plan(w, e, self._evs.get(e.id), power, now_us,
                              phases=None if share is None else share[1].phases)
            grid_share = (power + loss) / power if e.dc and power else 1.0  # DC: converter losses
            total_w += power * grid_share
            for k in range(3):
                phase_w[k] += pw[k] * grid_share
                phase_a[k] += pa[k] * grid_share
            if power > 0:
                charging.append(e.id)
        self._power_w, self._charging = total_w, tuple(charging)
        self._heat.enclosure(w, rng, ambient, dt_s)
        if self._grid:
            self._grid_meter(w, grid_v, hz, total_w, phase_w, phase_a, grid_wh)
        w.set("diagnostics/uptime", now_us - self._started_us)
        return w.operations()

    def _ambient(self, now_us: int) -> float:
        return ambient_c(self.config.ambient_c, self.config.ambient_swing_c, now_us)

    def _integrate(self, w: TickChanges, e: EvseLayout, now_us: int) -> float:
        """Meter the energy of the power reported at the last reading; returns grid-side Wh."""
        m = f"{e.p}meter/"
        last = w.get(m + "last_reading_at")
        power = w.get(m + "obis:1-0:16.7.0", 0.0)
        if last is None or last < self._started_us or now_us <= last or not power:
            return 0.0
        wh = power * (now_us - last) / WH_US
        register = m + ("obis:1-0:1.8.0" if wh > 0 else "obis:1-0:2.8.0")
        w.set(register, w.get(register, 0.0) + abs(wh))
        if w.get(f"{e.p}session/state") in ACTIVE:  # net; the schema holds no negative session
            w.set(f"{e.p}session/energy_wh", max(0.0, w.get(f"{e.p}session/energy_wh", 0.0) + wh))
        if (ev := self._evs.get(e.id)) is not None:
            ev.store(wh)
        if wh < 0:
            return 0.0  # given back: the grid meter counts what the grid supplies
        self._energy_wh += wh
        return wh * 100.0 / w.get(f"{e.p}power_module/efficiency_percent", 100.0) if e.dc else wh

    def _repair_and_fail(self, w: TickChanges, dt_s: float, now_us: int) -> None:
        rng, cfg = self._rng, self.config
        p_repair = 1.0 - math.exp(-dt_s / cfg.repair_mean_s)
        for e in self._layout:
            for f, _ in e.fans:
                path = f"{e.p}power_module/fan/{f}/state"
                if w.get(path) == DeviceState.FAULT and rng.random() < p_repair:
                    w.set(path, DeviceState.STANDBY)
                    self._repairs += 1
            for c in e.connectors:
                path = f"{e.p}connector/{c}/status"
                if w.get(path) == ConnectorStatus.FAULTED and rng.random() < p_repair:
                    w.set(path, ConnectorStatus.AVAILABLE)
                    self._repairs += 1
            if w.get(f"{e.p}rcd/tripped") and rng.random() < p_repair:
                w.set(f"{e.p}rcd/tripped", False)
                w.set(f"{e.p}rcd/test_passed", True)
                w.set(f"{e.p}rcd/last_test_at", now_us)
                self._repairs += 1
        if not self._layout or rng.random() >= 1.0 - math.exp(-cfg.faults_per_hour * dt_s / 3600):
            return
        kind = rng.choices([k for k, _ in FAULT_KINDS], [p for _, p in FAULT_KINDS])[0]
        e = rng.choice(self._layout)
        if kind == "fan":
            fans = [f for f, _ in e.fans
                    if w.get(f"{e.p}power_module/fan/{f}/state") != DeviceState.FAULT]
            if not fans:
                return
            w.set(f"{e.p}power_module/fan/{rng.choice(fans)}/state", DeviceState.FAULT)
        elif kind == "connector":
            w.set(f"{e.p}connector/{rng.choice(e.connectors)}/status", ConnectorStatus.FAULTED)
        else:
            w.set(f"{e.p}rcd/tripped", True)
            w.set(f"{e.p}rcd/test_passed", False)
        self._faults += 1

    def _end_session(self, w: TickChanges, e: EvseLayout, now_us: int) -> None:
        self._evs.pop(e.id, None)
        s = f"{e.p}session/"
        w.set(s + "state", SessionState.FINISHED)
        w.set(s + "ended_at", now_us)
        w.set(s + "power_w", 0.0)
        for c in e.connectors:
            w.set(f"{e.p}connector/{c}/cable_attached", False)
            w.set(f"{e.p}connector/{c}/locked", False)

    def _arrive(self, w: TickChanges, e: EvseLayout, now_us: int) -> None:
        free = [c for c in e.connectors
                if w.get(f"{e.p}connector/{c}/status") == ConnectorStatus.AVAILABLE]
        if not free:
            return
        ev = self._requests.pop(e.id, None)
        if ev is None:
            ev = draw_ev(self._rng, self.config, now_us=now_us, dc=e.dc, connector=free[0])
        ev.arrived_at, ev.connector, ev.authorised, ev.arrival_soc = now_us, free[0], None, ev.soc
        self._evs[e.id] = ev
        self._sessions += 1
        s = f"{e.p}session/"
        for key, value in (("session_id", f"{e.id}-{now_us // 1000:x}"),
                           ("state", SessionState.AUTHORISING), ("protocol", ev.protocol),
                           ("started_at", now_us), ("energy_wh", 0.0), ("power_w", 0.0),
                           ("id_token", ev.id_token), ("ev_id", ev.ev_id)):
            w.set(s + key, value)
        w.clear(s + "ended_at")
        if ev.iso15118_20:
            w.set(s + "soc_percent", round(ev.soc * 100.0, 1))
            w.set(s + "departure_at", ev.departure_at)
        else:
            w.clear(s + "soc_percent")
            w.clear(s + "departure_at")
        w.set(f"{e.p}connector/{ev.connector}/cable_attached", True)
        w.set(f"{e.p}connector/{ev.connector}/locked", True)

    def _evse_volts(self, w: TickChanges, e: EvseLayout, grid_v: list[float]) -> list[float]:
        """Report the EVSE's phase voltages (grid minus the sag of the last current)."""
        m = f"{e.p}meter/obis:1-0:"
        return [w.report(m + V_CODES[k], grid_v[k] - LINE_OHM * w.get(m + A_CODES[k], 0.0),
                         1, band=0.5) for k in range(3)]

    def _demands(self, w: TickChanges, station: tuple[bool, bool, float, float],
                 volts: dict[int, list[float]], now_us: int) -> dict[int, Demand]:
        out: dict[int, Demand] = {}
        for e in self._layout:
            ev = self._evs.get(e.id)
            if ev is None or ev.arrived_at == now_us:
                continue
            may, needs_auth, max_w, max_a = _permissions(w, e.p)
            if ev.authorised is None:
                tokens = self.config.authorised_tokens
                ev.authorised = not (station[1] or needs_auth) or tokens is None or (
                    ev.id_token in tokens)
                if not ev.authorised:
                    ev.departure_at = min(ev.departure_at, now_us + 120 * US)
            ctl = self._energy.control[e.id]
            if not (ev.authorised and may and station[0]) or ev.full or ctl.limits.upper_w < 0:
                continue
            limit = min(ev.demand_w(), ctl.capacity.rating_w, max_w, station[2],
                        ctl.limits.upper_w)
            conn_a = w.get(f"{e.p}connector/{ev.connector}/max_current_a", 0.0)
            if e.dc:
                out[e.id] = Demand(limit_w=limit, max_current_a=conn_a, volts=ev.battery_voltage(),
                                   phases=1, dc=True, may_switch_phases=False,
                                   floor_w=ctl.limits.floor_w)
            else:
                phases = min(ev.phases, w.get(f"{e.p}phases", 3))
                out[e.id] = Demand(
                    limit_w=limit, max_current_a=min(conn_a, max_a, station[3], ev.max_current_a),
                    volts=max(volts[e.id][:phases]), phases=phases, dc=False,
                    may_switch_phases=ev.iso15118_20, floor_w=ctl.limits.floor_w)
        return out

    def _discharges(self, volts: dict[int, list[float]]) -> dict[int, tuple[float, Demand]]:
        """The EVSEs whose envelope asks for power back, and a bidirectional EV that can
        give it: ``{evse: (negative watts, demand as used)}``."""
        out: dict[int, tuple[float, Demand]] = {}
        for e in self._layout:
            ev, ctl = self._evs.get(e.id), self._energy.control[e.id]
            if ev is None or not ev.authorised or ctl.limits.upper_w >= 0:
                continue
            give = min(discharge_w(ev, ctl.capacity), ev.supply_w())
            if give <= 0:
                continue
            phases = 1 if e.dc else min(ev.phases, ctl.capacity.phases)
            out[e.id] = (max(ctl.limits.upper_w, -give), Demand(
                limit_w=give, max_current_a=ctl.capacity.max_current_a,
                volts=ev.battery_voltage() if e.dc else min(volts[e.id][:phases]),
                phases=phases, dc=e.dc, may_switch_phases=False))
        return out

    def _readings(self, w: TickChanges, e: EvseLayout, share: tuple[float, Demand] | None,
                  volts: list[float], hz: float, now_us: int
                  ) -> tuple[float, list[float], list[float], float]:
        """Write meter, session, contactor, statuses and power module outputs; return
        ``(power, W per phase, A per phase, converter loss)``."""
        ev, m = self._evs.get(e.id), f"{e.p}meter/obis:1-0:"
        amps, pw, pa, out_v, out_a = 0.0, [0.0] * 3, [0.0] * 3, 0.0, 0.0
        if share is not None and e.dc:
            dc_w = math.floor(share[0])
            pw = [float(dc_w // 3)] * 3
            pa = [round(pw[k] / volts[k], 2) for k in range(3)]
            out_v, out_a = share[1].volts, abs(sum(pw)) / share[1].volts
        elif share is not None:
            watts, d = share
            amps = math.floor(min(d.max_current_a, watts / (d.volts * d.phases)) * 100 + 1e-6) / 100
            pa = [amps if k < d.phases else 0.0 for k in range(3)]
            pw = [float(math.floor(volts[k] * pa[k])) for k in range(3)]
            out_v, out_a = sum(volts[: d.phases]) / d.phases, abs(amps)
        power = sum(pw)
        w.set(m + "16.7.0", power)
        for k in range(3):
            w.set(m + W_CODES[k], pw[k])
            w.set(m + A_CODES[k], pa[k])
        w.report(m + "14.7.0", hz, 2, band=0.02)
        w.set(m + "13.7.0", 0.99 if power > 0 else 1.0)
        if w.touched(f"{e.p}meter/"):
            w.set(f"{e.p}meter/last_reading_at", now_us)
        load = abs(power) / max(1.0, w.get(f"{e.p}max_power_w", 1.0))
        eff = (0.955 if e.dc else 0.975) - 0.04 * (1.0 - min(1.0, load)) ** 4
        loss = abs(power) * (1.0 / eff - 1.0)
        pm = f"{e.p}power_module/"
        w.set(pm + "output_power_w", abs(power))
        w.report(pm + "output_voltage_v", out_v, 1)
        w.report(pm + "output_current_a", out_a, 2)
        if power:
            w.report(pm + "efficiency_percent", eff * 100.0, 1)
        closed = power != 0
        if w.get(f"{e.p}contactor/closed") != closed:
            w.set(f"{e.p}contactor/closed", closed)
            w.set(f"{e.p}contactor/operation_count", w.get(f"{e.p}contactor/operation_count", 0) + 1)
        faulted = _faulted(w, e)
        for c in e.connectors:
            path = f"{e.p}connector/{c}/status"
            if w.get(path) != ConnectorStatus.FAULTED:
                w.set(path, ConnectorStatus.AVAILABLE if ev is None else ConnectorStatus.OCCUPIED
                      if c == ev.connector else ConnectorStatus.UNAVAILABLE)
        if ev is not None:
            s = f"{e.p}session/"
            w.set(s + "power_w", power)
            w.set(s + "state", SessionState.AUTHORISING if not ev.authorised
                  else SessionState.CHARGING if power > 0 else SessionState.DISCHARGING
                  if power < 0 else SessionState.SUSPENDED)
            if ev.iso15118_20:
                w.report(s + "soc_percent", ev.soc * 100.0, 1)
        status = w.get(f"{e.p}status")
        if faulted:
            status = EvseStatus.FAULTED
        elif ev is not None:
            status = (EvseStatus.PREPARING if not ev.authorised else EvseStatus.CHARGING
                      if power > 0 else EvseStatus.DISCHARGING if power < 0
                      else EvseStatus.SUSPENDED_EV if ev.full else EvseStatus.SUSPENDED_EVSE)
        elif status not in (EvseStatus.UNAVAILABLE, EvseStatus.RESERVED):
            status = EvseStatus.AVAILABLE
        w.set(f"{e.p}status", status)
        return power, pw, pa, loss

    def _grid_meter(self, w: TickChanges, grid_v: list[float], hz: float, total_w: float,
                    phase_w: list[float], phase_a: list[float], wh: float) -> None:
        for k, ph in enumerate(PHASES):
            w.report(f"{MMXU}PhV/{ph}", grid_v[k], 1, band=0.5)
            w.set(f"{MMXU}W/{ph}", round(phase_w[k]))
            w.report(f"{MMXU}A/{ph}", phase_a[k], 2)
        w.report(f"{MMXU}Hz", hz, 2, band=0.02)
        pf = 0.99 if total_w > 0 else 1.0
        va = round(total_w / pf)
        w.set(f"{MMXU}TotW", round(total_w))
        w.set(f"{MMXU}TotPF", pf)
        w.set(f"{MMXU}TotVA", va)
        w.set(f"{MMXU}TotVAr", round(math.sqrt(max(0.0, va * va - total_w * total_w))))
        if wh > 0:
            w.set(f"{MMTR}SupWh", w.get(f"{MMTR}SupWh", 0.0) + wh)
            w.set(f"{MMTR}TotWh", w.get(f"{MMTR}TotWh", 0.0) + wh)


def _permissions(w: TickChanges, prefix: str) -> tuple[bool, bool, float, float]:
    """``(may_charge, needs_authorisation, max_power_w, max_current_a)`` at ``prefix``."""
    p = prefix + "permissions/"
    return (bool(w.get(p + "may_charge", True)), bool(w.get(p + "needs_authorisation", False)),
            w.get(p + "max_power_w", math.inf), w.get(p + "max_current_a", math.inf))


def _faulted(w: TickChanges, e: EvseLayout) -> bool:
    return bool(w.get(f"{e.p}rcd/tripped")) or any(
        w.get(f"{e.p}connector/{c}/status") == ConnectorStatus.FAULTED for c in e.connectors)
