"""Site energy management in the local CSMS: the allocation loop around ``SiteAllocator``.

Every ``interval_s``, and at once whenever an input changes (the resource manager pushed a
new grid envelope, a station's copy shows new PEBC constraints or plan, an operator changed
the fallback limit), the local CSMS reads its copies of the site's stations, allocates the
site's envelope (``actors.logic.energy.allocation``) and gives each station the envelopes of its
EVSEs in one write (CONTROL priority). A station is written only when its envelope changed:
a lower upper limit always goes out, a higher one only when it is worth a message, and every
envelope is renewed well before it runs out. The site's aggregated plan goes to the resource
manager; what cannot be done goes to the resource manager and the cloud as an
``EnergyAlert``, and again (``active=False``) when it is over.

Nothing here involves the cloud: during a cloud outage the allocation goes on unchanged.

While the process cannot keep up (``pace`` stretched), changes of the copies no longer set
off an allocation each: they wait for the next periodic one (``deferred`` counts them), since
with hundreds of stations they come faster than allocations can follow. Changes of the site's
own energy inputs (a grid envelope, the fallback limit) still allocate at once.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any

from actors.csms.own_tree import OwnTree
from actors.csms.replicas import ReplicaSet
from actors.csms.settings import EnergySettings
from actors.logic.energy.allocation import (
    Allocation,
    EvseKey,
    EvseNeed,
    SiteAllocator,
    SiteInputs,
)
from actors.runtime.actor import Messenger
from actors.runtime.replication.replica import station_key
from broker_bridge import Priority
from broker_bridge.clock import Clock
from broker_bridge.pace import Pace
from keypath import KeyPath
from object_model import ModelError
from object_model.energy_messages import AlertEvse, EnergyAlert
from object_model.messages import PropertyValueWrite, WriteItem
from object_model.pebc import (
    EnergyConstraints,
    EnergyTransferPlan,
    PowerConstraints,
    PowerRangeEnvelope,
)
from object_model.tree import ObjectTree, Write

log = logging.getLogger("csms.energy")

POWER = "meter/obis:1-0:16.7.0"


@dataclass(slots=True)
class _Parsed:
    """A station EVSE's PEBC values, parsed once per change (by leaf revision)."""

    revisions: tuple[int, int, int]
    constraints: PowerConstraints | None
    energy: EnergyConstraints | None
    plan: EnergyTransferPlan | None


class SiteEnergy:
    """The local CSMS's site energy management (see the module docstring), planned in
    ``clock``'s time (the site's: the stations' and the resource manager's): ``site`` names
    the site in alerts, ``resource_manager`` gets the site's plan and alerts, ``cloud`` the
    alerts while ``upstream_joined()``."""

    def __init__(self, actor: Messenger, *, own: OwnTree, copies: ReplicaSet, clock: Clock,
                 settings: EnergySettings, site: str, resource_manager: str | None,
                 cloud: str | None, upstream_joined: Callable[[], bool],
                 pace: Pace | None = None) -> None:
        self.actor, self.address, self.clock = actor, actor.address, clock
        self.pace = pace or Pace()
        self.deferred = 0  # copy changes left to the periodic allocation (the loop lagged)
        self.own, self.copies, self.site = own, copies, site
        self.energy_settings = settings
        self.allocator = SiteAllocator(settings.allocator)
        self.last_allocation: Allocation | None = None
        self._rm, self._cloud, self._upstream_joined = resource_manager, cloud, upstream_joined
        self._energy_wake = asyncio.Event()
        self._parsed: dict[EvseKey, _Parsed] = {}
        self._sent: dict[EvseKey, PowerRangeEnvelope] = {}
        self._next: Allocation | None = None
        self._delivering = False
        self._alerted: frozenset[Any] = frozenset()
        self._plan_sent: tuple[float, int] | None = None
        self._unmanaged_said = False
        self.current_alert: EnergyAlert | None = None

    def start(self) -> None:
        """Allocate from now on (the own tree must be open), if enabled."""
        if self.energy_settings.enabled:
            self.own.tree.subscribe(self._own_energy_changed)
            self.actor.spawn(self._energy_loop(), "energy")

    def energy_input_changed(self) -> None:
        """Allocate again as soon as possible."""
        self._energy_wake.set()

    def _own_energy_changed(self, event: Any) -> None:
        for path, _ in getattr(event, "upserts", ()):
            s = str(path)
            if s.startswith(("energy/grid/", "energy/fallback_limit_w")):
                self._energy_wake.set()
                return
        if any(str(p).startswith("energy/grid/") for p in getattr(event, "deletes", ())):
            self._energy_wake.set()

    def copy_energy_changed(self, paths: list[str]) -> None:
        """A copy changed: allocate again if a PEBC value or an EVSE's status moved (at the
        next periodic allocation while the process lags)."""
        if any(("/energy/" in p and not p.endswith(("/envelope", "/limit_w"))) or
               p.endswith("/status") for p in paths):
            if self.pace.behind:
                self.deferred += 1
            else:
                self._energy_wake.set()

    async def _energy_loop(self) -> None:
        interval = self.energy_settings.interval_s
        while True:
            await self.clock.wait(self._energy_wake, interval)
            self._energy_wake.clear()
            try:
                self.allocate_site()
            except Exception:  # a bug here must not stop the site's energy management
                log.exception("%s: allocation failed", self.address)

    # -- one cycle -------------------------------------------------------------------------------

    def allocate_site(self) -> Allocation | None:
        """Allocate now, send what changed, record the result; returns the allocation
        (None while the site has no limit at all: no envelope and no fallback limit, so
        the stations keep their permissions)."""
        now = self.clock.now_us()
        limits = self._site_inputs(0.0)
        # no limit, nothing to allocate: say so before reading every copy (with hundreds of
        # stations that read is most of a site's CPU, and every status change asks for it)
        if limits.fallback_limit_w <= 0 and (
                limits.envelope is None or limits.envelope.at(now) is None):
            if not self._unmanaged_said:
                self._unmanaged_said = True
                log.info("%s: no grid envelope from a resource manager and no fallback limit "
                         "(energy/fallback_limit_w): the stations keep their permissions",
                         self.address)
            return None
        self._unmanaged_said = False
        needs, power_w, unmanaged_w, offline = self._site_needs()
        inputs = replace(limits, unmanaged_w=unmanaged_w + self._reserved_w(now, offline))
        result = self.allocator.allocate(now, needs, inputs)
        self.last_allocation = result
        self._send_envelopes(result)
        own = self.own.tree
        own.apply([
            Write("energy/limit_w", _clip(result.site_limit_w)),
            Write("energy/power_w", _clip(power_w)),
            Write("energy/allocated_w", _clip(result.allocated_w)),
            Write("energy/plan", result.plan.model_dump()),
            Write("energy/allocations", (own.get("energy/allocations") + 1) % 2**64),
        ])
        self._report_plan(result, now)
        self._alert(result, now)
        return result

    def _site_inputs(self, unmanaged_w: float) -> SiteInputs:
        grid = self.own.tree.read("energy/grid")
        envelope = grid.get("envelope")
        pv = grid.get("pv_forecast")
        return SiteInputs(
            envelope=PowerRangeEnvelope.model_validate(envelope) if envelope else None,
            pv_forecast=EnergyTransferPlan.model_validate(pv) if pv else None,
            fallback_limit_w=float(self.own.tree.get("energy/fallback_limit_w")),
            unmanaged_w=unmanaged_w, pv_band=self.energy_settings.pv_band)

    def _site_needs(self) -> tuple[list[EvseNeed], float, float, set[str]]:
        """``(needs, site power, unmanaged power, offline stations)``: the needs of every
        EVSE of every online, synced copy that shows PEBC constraints; the site's metered
        power; the power of EVSEs that show none (counted against the limit); the stations
        the allocation cannot reach."""
        needs: list[EvseNeed] = []
        power = unmanaged = 0.0
        offline: set[str] = set()
        for replica in self.copies.replicas.values():
            station = replica.station
            if not replica.synced or not self.copies.is_online(replica):
                offline.add(station)
                continue
            tree = replica.tree
            managed = set()
            for path, _, _ in tree.find("evse/*/energy/power_constraints"):
                evse = int(path.segments[1])
                parsed = self._parse(tree, station, evse)
                if parsed is None or parsed.constraints is None:
                    continue
                managed.add(evse)
                base = f"evse/{evse}/"
                delivered = _number(tree, base + "session/energy_wh")
                started = _number(tree, base + "session/started_at")
                needs.append(EvseNeed(key=(station, evse), constraints=parsed.constraints,
                                      energy=parsed.energy, delivered_wh=delivered,
                                      plan=parsed.plan, arrived_us=int(started)))
            for path, _, value in tree.find(f"evse/*/{POWER}"):
                if isinstance(value, (int, float)):
                    power += value
                    if int(path.segments[1]) not in managed:
                        unmanaged += value
        return needs, power, unmanaged, offline

    def _parse(self, tree: ObjectTree, station: str, evse: int) -> _Parsed | None:
        base = f"evse/{evse}/energy/"
        raw: list[Any] = []
        seen: list[int] = []
        for name in ("power_constraints", "energy_constraints", "plan"):
            try:
                value, revision = tree.entry(base + name)
            except ModelError:
                value, revision = None, 0
            raw.append(value)
            seen.append(revision)
        revisions = (seen[0], seen[1], seen[2])
        key = (station, evse)
        cached = self._parsed.get(key)
        if cached is not None and cached.revisions == revisions:
            return cached
        try:
            parsed = _Parsed(
                revisions,
                PowerConstraints.model_validate(raw[0]) if raw[0] else None,
                EnergyConstraints.model_validate(raw[1]) if raw[1] else None,
                EnergyTransferPlan.model_validate(raw[2]) if raw[2] else None)
        except ValueError as exc:  # a station reporting nonsense is left out, and said so
            log.warning("%s: %s evse %d reports PEBC values that do not validate (%s); "
                        "not allocating to it", self.address, station, evse, exc)
            parsed = _Parsed(revisions, None, None, None)
        self._parsed[key] = parsed
        return parsed

    # -- envelopes to the stations -----------------------------------------------------------------

    def _send_envelopes(self, result: Allocation) -> None:
        """Deliver the allocation's envelopes (one delivery at a time; a newer allocation
        waiting for it replaces an older one)."""
        self._next = result
        if not self._delivering:
            self._delivering = True
            self.actor.spawn(self._deliver(), "envelopes")

    async def _deliver(self) -> None:
        """Lower limits first: every station whose limit falls anywhere ahead is written, and
        only when all of them have acknowledged are the raised limits sent, so the site's
        sum of upper limits never exceeds its limit, not even between two writes."""
        try:
            while self._next is not None:
                result, self._next = self._next, None
                now = self.clock.now_us()
                lowering, raising = self._changes(result, now)
                done = await asyncio.gather(*(self._write_station(s, e)
                                              for s, e in lowering.items()))
                if not all(done):
                    log.warning("%s: %d station(s) did not take a lower limit; raised limits "
                                "wait for the next allocation", self.address,
                                done.count(False))
                    continue
                await asyncio.gather(*(self._write_station(s, e) for s, e in raising.items()))
        finally:
            self._delivering = False

    def _changes(self, result: Allocation, now: int
                 ) -> tuple[dict[str, dict[int, PowerRangeEnvelope]],
                            dict[str, dict[int, PowerRangeEnvelope]]]:
        """The envelopes worth sending, by station: those of stations with a limit that
        falls, and those of stations whose limits only rise."""
        renew = self.energy_settings.allocator.horizon_s * 1e6 / 2
        lowering: dict[str, dict[int, PowerRangeEnvelope]] = {}
        raising: dict[str, dict[int, PowerRangeEnvelope]] = {}
        for (station, evse), envelope in result.envelopes.items():
            old = self._sent.get((station, evse))
            verdict = _compare(old, envelope, now, renew, self.energy_settings.min_raise_w)
            if verdict == "lower":
                lowering.setdefault(station, {})[evse] = envelope
            elif verdict == "raise":
                raising.setdefault(station, {})[evse] = envelope
        for station in lowering:  # one write per station: its raises go with its decreases
            lowering[station].update(raising.pop(station, {}))
        return lowering, raising

    async def _write_station(self, station: str, envelopes: dict[int, PowerRangeEnvelope]
                             ) -> bool:
        replica = self.copies.replicas.get(station_key(station))
        if replica is None:
            return True
        writes = [WriteItem(path=KeyPath.parse(f"evse/{evse}/energy/envelope"),
                            value=env.model_dump()) for evse, env in sorted(envelopes.items())]
        try:
            await self.actor.request(replica.source,
                                     PropertyValueWrite(tree=replica.remote_tree, writes=writes),
                                     timeout=self.energy_settings.write_timeout_s,
                                     priority=Priority.CONTROL)
        except ModelError as exc:  # sent again at the next allocation
            log.warning("%s: %s did not take its envelopes (%s); sent again at the next "
                        "allocation", self.address, station, exc)
            return False
        for evse, env in envelopes.items():
            self._sent[(station, evse)] = env
        return True

    def _reserved_w(self, now: int, offline: set[str]) -> float:
        """What stations the allocation cannot reach may still draw: the upper limits they
        were last given (they obey those until they end)."""
        total = 0.0
        for (station, _), env in self._sent.items():
            if station in offline and (element := env.at(now)) is not None:
                total += max(0.0, element.upper_w)
        return total

    # -- the resource manager and the cloud ----------------------------------------------------------

    def _report_plan(self, result: Allocation, now: int) -> None:
        """The site's plan to the resource manager, when it moved or every 30 s."""
        if not self._rm:
            return
        first = result.plan.elements[0].power.expected_w
        last = self._plan_sent
        if last is not None and abs(last[0] - first) < max(500.0, 0.02 * abs(last[0])) \
                and now - last[1] < 30e6:
            return
        self._plan_sent = (first, now)
        self.actor.spawn(self._write_plan(result.plan), "plan")

    async def _write_plan(self, plan: EnergyTransferPlan) -> None:
        assert self._rm is not None
        try:
            await self.actor.request(self._rm, PropertyValueWrite(
                writes=[WriteItem(path=KeyPath.parse("site/plan"), value=plan.model_dump())]),
                timeout=10, priority=Priority.STATE)
        except ModelError as exc:
            self._plan_sent = None
            log.info("%s: the site plan did not reach %s (%s); again at the next allocation",
                     self.address, self._rm, exc)

    def _alert(self, result: Allocation, now: int) -> None:
        """An ``EnergyAlert`` when what cannot be done changes (and when it is over)."""
        signature = frozenset({*result.codes, *((f.key, f.reason) for f in result.shortfalls)})
        if signature == self._alerted:
            return
        self._alerted = signature
        active = bool(result.codes)
        evses = [AlertEvse(station=f.key[0], evse=f.key[1], reason=f.reason,
                           needed_w=f.needed_w, granted_w=f.granted_w,
                           shortfall_wh=f.shortfall_wh, text=f.text[:1000])
                 for f in result.shortfalls[:1000]]
        codes = sorted(result.codes)
        own = self.own.tree
        text = (f"site {own.get('name')}: " + ", ".join(codes) +
                f"; limit {result.site_limit_w / 1000:.1f} kW, lower limits "
                f"{result.lower_limits_w / 1000:.1f} kW, {len(evses)} EVSE(s) short"
                if active else "site energy management is back to normal")
        alert = EnergyAlert(site=self.site, at_us=now, codes=codes, text=text[:1000],
                            site_limit_w=_clip(result.site_limit_w),
                            lower_limits_w=_clip(result.lower_limits_w), active=active,
                            evses=evses)
        (log.warning if active else log.info)("%s: %s", self.address, text)
        own.apply([Write("energy/alerts", (own.get("energy/alerts") + 1) % 2**64),
                        Write("energy/last_alert", text[:500]),
                        Write("energy/last_alert_at", now)])
        self.current_alert = alert
        if self._rm:
            self.actor.send(self._rm, alert, priority=Priority.CONTROL, reliable=True)
        self.alert_upstream()

    def alert_upstream(self) -> None:
        """Tell the cloud the site's current alert (again after joining it: an alert raised
        while it was unreachable must still reach it)."""
        alert = self.current_alert
        if alert is not None and self._cloud and self._upstream_joined():
            self.actor.send(self._cloud, alert, priority=Priority.CONTROL, reliable=True)


def _compare(old: PowerRangeEnvelope | None, new: PowerRangeEnvelope, now: int,
             renew_us: float, min_raise_w: float) -> str:
    """``"lower"`` when ``new`` lowers an upper limit (or raises a lower one) anywhere ahead
    of ``old`` or ``old`` is missing; ``"raise"`` when it only raises by ``min_raise_w`` or
    more, or ``old`` is within ``renew_us`` of its end; else ``"same"``."""
    if old is None:
        return "lower"
    points = sorted({now, *(e.start_us for e in new.elements if e.start_us > now),
                     *(e.start_us for e in old.elements if e.start_us > now)})
    verdict = "raise" if old.end_us - now < renew_us else "same"
    for t in points:
        a, b = old.at(t), new.at(t)
        if b is None:
            break
        if a is None:  # old has ended (or not begun): the station falls back to permissions
            return "lower"
        if b.upper_w < a.upper_w - 1e-3 or b.lower_w > a.lower_w + 1e-3:
            return "lower"
        if b.upper_w - a.upper_w >= min_raise_w or a.lower_w - b.lower_w >= min_raise_w:
            verdict = "raise"
    return verdict


def _number(tree: ObjectTree, path: str) -> float:
    try:
        value = tree.get(path)
    except ModelError:
        return 0.0
    return float(value) if isinstance(value, (int, float)) else 0.0


def _clip(watts: float) -> float:
    return max(-1e8, min(1e8, watts))
