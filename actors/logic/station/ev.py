"""Electric vehicles visiting a simulated station, and how the station shares power among them.

An EV is what a station cannot see in its own tree: the battery's capacity and state of
charge, the on-board charger's limits and when the driver comes back. The simulator keeps the
EVs currently plugged in as ``ElectricVehicle`` objects; everything the station *can* observe
(session, meter, statuses) it writes to the tree.

Two kinds of EV are modelled:

* **basic IEC 61851** — PWM signalling only: no identity, no state of charge, no departure
  time. Its on-board charger cannot draw less than 6 A per phase, so an offer below
  ``6 A × phases`` suspends it (the on/off gap of IEC 61851).
* **ISO 15118-20** — reports its EVCCID, state of charge and planned departure, authorises
  with a contract (Plug & Charge eMAID) and may switch a three-phase charger to one phase
  when the offer is below 6 A on three phases (ISO 15118-20 AC dynamic mode). It asks for at
  least enough energy to reach ``min_soc`` (EVMinimumEnergyRequest) and at most enough for
  ``target_soc``; a bidirectional one (``may_discharge``) can give energy back down to
  ``min_soc``.

Power is shared by water-filling (``share_power``): every EV gets an equal share of the
station's budget, capped by its own limit; what a capped EV leaves goes to the others. An EV
whose share falls below its minimum first tries one phase, then is suspended and its share
redistributed.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any

from object_model.station.components import ChargingProtocol

if TYPE_CHECKING:
    from actors.logic.station.simulation import SimulationConfig

NOMINAL_V = 230.0
MIN_AC_CURRENT_A = 6.0  # IEC 61851-1: the lowest current a PWM signal may offer
MIN_DC_POWER_W = 1000.0
BATTERY_EFFICIENCY = 0.93  # share of metered energy that ends up in the battery
TAPER_FROM_SOC = 0.8  # constant power up to here, then linear down to 10 % at full


@dataclass(slots=True, kw_only=True)
class ElectricVehicle:
    """One EV plugged into an EVSE (``authorised`` is None until the station decided)."""

    ev_id: str
    id_token: str
    protocol: ChargingProtocol
    battery_wh: float
    phases: int
    max_current_a: float
    max_power_w: float
    soc: float
    target_soc: float
    arrived_at: int
    departure_at: int
    connector: int = 1
    authorised: bool | None = None
    min_soc: float = 0.0
    may_discharge: bool = False
    arrival_soc: float = 0.0  # set by the station when the EV arrives

    def __post_init__(self) -> None:
        self.arrival_soc = self.arrival_soc or self.soc

    @property
    def iso15118_20(self) -> bool:
        return self.protocol is ChargingProtocol.ISO15118_20

    @property
    def full(self) -> bool:
        return self.soc >= self.target_soc - 1e-9

    def demand_w(self) -> float:
        """The power the EV would take now if offered without limit."""
        if self.full:
            return 0.0
        if self.soc < TAPER_FROM_SOC:
            return self.max_power_w
        return self.max_power_w * max(0.1, (1.0 - self.soc) / (1.0 - TAPER_FROM_SOC))

    def store(self, energy_wh: float) -> None:
        """Put metered energy into the battery (with the charger's losses); negative energy
        was given back, and took more than that out of the battery."""
        battery_wh = energy_wh * (BATTERY_EFFICIENCY if energy_wh >= 0 else 1 / BATTERY_EFFICIENCY)
        self.soc = min(self.target_soc, self.soc + battery_wh / self.battery_wh)

    def supply_w(self) -> float:
        """The power the EV would give back now if asked (0: it may not, or is at its
        minimum state of charge)."""
        if not (self.iso15118_20 and self.may_discharge) or self.soc <= self.min_soc + 1e-9:
            return 0.0
        return self.max_power_w

    def battery_voltage(self) -> float:
        """DC link voltage of a 400 V-class battery at the current state of charge."""
        return 330.0 + 90.0 * self.soc


def draw_ev(rng: random.Random, config: SimulationConfig, *, now_us: int, dc: bool,
            connector: int = 1) -> ElectricVehicle:
    """A random EV arriving now, drawn from the configured mix."""
    iso = rng.random() < config.iso15118_20_share
    battery_kwh = min(200.0, max(15.0, rng.gauss(config.battery_kwh_mean,
                                                 config.battery_kwh_spread)))
    if dc:
        kw = _weighted(rng, [(kw, w) for kw, w in config.dc_max_power_kw])
        phases, max_current, max_power = 3, 1000.0, kw * 1000.0
    else:
        phases, max_current = _weighted(rng, [((p, a), w) for p, a, w in config.ac_chargers])
        max_power = phases * max_current * NOMINAL_V
    stay_s = max(300.0, _lognormal(rng, config.stay_mean_s, config.stay_spread_s))
    driver = rng.randrange(config.drivers)
    ev_id = f"{rng.getrandbits(48):012X}" if iso else ""
    soc = rng.uniform(0.1, 0.7)
    target = rng.choice((0.8, 0.9, 1.0)) if iso else 1.0
    # drawn from the EV's own id, not the station's generator, so that adding these two
    # did not change every EV a given seed produced before
    own = random.Random(ev_id)
    return ElectricVehicle(
        ev_id=ev_id,
        id_token=driver_token(driver, iso=iso),
        protocol=ChargingProtocol.ISO15118_20 if iso else ChargingProtocol.IEC61851,
        battery_wh=battery_kwh * 1000.0,
        phases=phases,
        max_current_a=max_current,
        max_power_w=max_power,
        soc=soc,
        target_soc=target,
        arrived_at=now_us,
        departure_at=now_us + int(stay_s * 1e6),
        connector=connector,
        min_soc=min(target, own.uniform(0.3, 0.6)) if iso else 0.0,
        may_discharge=iso and own.random() < config.bidirectional_share,
    )


def driver_token(driver: int, *, iso: bool) -> str:
    """The id token driver number ``driver`` presents: a contract id (eMAID) for Plug & Charge,
    else the UID of an RFID card."""
    if iso:
        return f"BE-ACM-C{driver:08d}"
    return f"04{(driver * 2654435761) % (1 << 48):012X}"


def _weighted(rng: random.Random, choices: list[tuple[Any, float]]) -> Any:
    return rng.choices([c for c, _ in choices], weights=[w for _, w in choices])[0]


def _lognormal(rng: random.Random, mean: float, spread: float) -> float:
    """A log-normal draw with the given mean and standard deviation."""
    sigma2 = math.log1p((spread / mean) ** 2)
    return rng.lognormvariate(math.log(mean) - sigma2 / 2, math.sqrt(sigma2))


# -- sharing power -------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True, kw_only=True)
class Demand:
    """What one EVSE could deliver to its EV now: ``limit_w`` caps power, ``max_current_a``
    caps current per phase (AC), and below ``min_w`` the EV cannot charge; ``floor_w`` is
    the least it must draw (an envelope's lower limit), as far as its cap allows."""

    limit_w: float
    max_current_a: float
    volts: float
    phases: int
    dc: bool
    may_switch_phases: bool
    floor_w: float = 0.0

    @property
    def cap_w(self) -> float:
        return min(self.limit_w, self.max_current_a * self.volts * self.phases)

    @property
    def min_w(self) -> float:
        return MIN_DC_POWER_W if self.dc else MIN_AC_CURRENT_A * self.volts * self.phases


def share_power(demands: dict[int, Demand], budget_w: float
                ) -> tuple[dict[int, tuple[float, Demand]], set[int]]:
    """Share ``budget_w`` among the EVSEs: ``({evse: (watts, demand as used)}, {suspended})``.

    The demand as used may differ from the one given: an ISO 15118-20 EV that switched to one
    phase. Each EVSE gets at least its minimum or nothing, and at least its floor (within its
    cap) even beyond the budget: the floor is a CSMS's order, which knows the budget too.
    """
    active = dict(demands)
    suspended: set[int] = set()
    while True:
        shares = _water_fill({k: d.cap_w for k, d in active.items()}, budget_w)
        short = [k for k, d in active.items()
                 if max(shares[k], min(d.floor_w, d.cap_w)) < d.min_w - 1e-6]
        if not short:
            return {k: (max(shares[k], min(d.floor_w, d.cap_w)), d)
                    for k, d in active.items()}, suspended
        worst = max(short, key=lambda k: (active[k].min_w - shares[k], k))
        d = active[worst]
        if d.may_switch_phases and d.phases > 1:
            active[worst] = replace(d, phases=1)
        else:
            del active[worst]
            suspended.add(worst)


def _water_fill(caps: dict[int, float], budget: float) -> dict[int, float]:
    shares: dict[int, float] = {}
    left = dict(caps)
    budget = max(0.0, budget)
    while left:
        fair = budget / len(left)
        capped = {k: c for k, c in left.items() if c <= fair}
        if not capped:
            shares.update(dict.fromkeys(left, fair))
            break
        for k, c in capped.items():
            shares[k] = max(0.0, c)
            budget -= max(0.0, c)
            del left[k]
    return shares
