"""A CSMS's own tree: the stations and sites it manages, its site policy, its counters.

The copies of station trees are not in here: in a CSMS's aggregate view they sit at
``stations/<id>/...`` beside this tree (whose own station registry is ``managed/<id>``), each with its own epoch and revisions. This tree holds
what the CSMS itself knows about them (who answers for a station, whether it is online, which
revision the copy holds), and it is published, persisted and resynchronised like any other.
"""

from __future__ import annotations

from typing import Annotated

from object_model.access import AccessPolicy, Grant, Role
from object_model.access import PropertyAccessKind as Access
from object_model.pebc import (
    EnergyConstraints,
    EnergyTransferPlan,
    PowerConstraints,
    PowerRangeEnvelope,
)
from object_model.schema import Component, Ids, SchemaRegistry, Unit
from object_model.station.model import OPERATOR_WRITES
from object_model.types import TIMESTAMP, float32, string, uint32, uint64

Address = Annotated[str, string(128, pattern=r"[A-Za-z0-9][A-Za-z0-9._-]*")]
Timestamp = Annotated[int, TIMESTAMP]
Counter = Annotated[int, uint64()]


class StationEntry(Component):
    """One managed station: where its copy comes from and how it stands."""

    source: Address
    remote_tree: Annotated[str, string(255)] = ""
    site: Annotated[str, string(128)] = ""
    admitted_at: Timestamp | None = None
    online: bool = False
    epoch: Annotated[str, string(16)] = ""
    revision: Counter = 0
    resyncs: Annotated[int, uint32()] = 0
    last_resync_mode: Annotated[str, string(16)] = ""


class SiteEntry(Component):
    """One site (a local CSMS) managed by a cloud CSMS."""

    admitted_at: Timestamp | None = None
    online: bool = False
    stations: Annotated[int, uint32()] = 0
    energy_alerts: Annotated[int, uint32()] = 0
    last_energy_alert: Annotated[str, string(500)] = ""


class SitePolicy(Component):
    """The operational permissions a CSMS gives the stations it admits (operators may change
    them; the change is passed on to every station)."""

    may_charge: bool = True
    may_discharge: bool = False
    needs_authorisation: bool = False
    max_power_w: Annotated[float, float32(0, 1e6), Unit("W")] = 22000.0


Watts = Annotated[float, float32(-1e8, 1e8), Unit("W")]


class SiteGrid(Component):
    """What the site's resource manager says about the grid connection (it writes these;
    ``updated_at`` tells how fresh they are)."""

    source: Annotated[str, string(128)] = ""
    envelope: PowerRangeEnvelope | None = None
    pv_forecast: EnergyTransferPlan | None = None
    power_constraints: PowerConstraints | None = None
    energy_constraints: EnergyConstraints | None = None
    updated_at: Timestamp | None = None


class SiteEnergy(Component):
    """The site's energy management: the grid's limits (from the resource manager), what the
    last allocation gave, the site's aggregated plan and the alerts raised. With no valid
    envelope the allocation keeps within ``fallback_limit_w`` (an operator's setting)."""

    grid: Annotated[SiteGrid, Access.READ_WRITE] = SiteGrid()
    fallback_limit_w: Annotated[float, float32(0, 1e8), Unit("W"), Access.READ_WRITE] = 0.0
    limit_w: Watts = 0.0
    power_w: Watts = 0.0
    allocated_w: Watts = 0.0
    plan: EnergyTransferPlan | None = None
    allocations: Counter = 0
    alerts: Counter = 0
    last_alert: Annotated[str, string(500)] = ""
    last_alert_at: Timestamp | None = None


class Counters(Component):
    """What the CSMS did since its storage was created (kept in memory, copied here when
    the own tree is read and every few seconds)."""

    joins: Counter = 0
    rejected_joins: Counter = 0
    rejected_claims: Counter = 0  # a site (or station) claimed a station bound elsewhere
    updates: Counter = 0
    gaps: Counter = 0
    drifts: Counter = 0  # a copy's digest differed from its source's after an update
    resyncs: Counter = 0
    resync_bytes: Counter = 0
    resync_wire_bytes: Counter = 0
    resync_requests: Counter = 0  # the requests those resynchronisations took


class Security(Component):
    """The revocation list the CSMS holds (signed by the operator's root, numbered: only a
    newer one replaces it; ``actors.csms.revocations``) and its number."""

    revocations: Annotated[bytes, Access.READ_WRITE] = b""
    revocation_number: Counter = 0
    revoked: Annotated[int, uint32()] = 0


class CsmsState(Component):
    """A CSMS's whole own state."""

    name: Annotated[str, string(128)] = ""
    role: Annotated[str, string(32)] = ""
    managed: Annotated[dict[str, StationEntry], Ids(string(128), 100_000)] = {}
    sites: Annotated[dict[str, SiteEntry], Ids(string(128), 10_000)] = {}
    policy: Annotated[SitePolicy, Access.READ_WRITE] = SitePolicy()
    energy: SiteEnergy = SiteEnergy()
    counters: Counters = Counters()
    security: Security = Security()


def csms_schema() -> SchemaRegistry:
    return SchemaRegistry(CsmsState)


def csms_access_policy() -> AccessPolicy:
    """Who may read and write what in a CSMS's aggregate view (``managed/...``, ``policy/...``
    and the rest for its own tree, ``stations/<id>/...`` for its copies; writes to copies are passed on to the
    station, which applies its own access kinds too)."""
    station_settings = tuple(f"stations/*/{path}" for path in OPERATOR_WRITES)
    return AccessPolicy(
        {
            Role.CLOUD_CSMS: Grant(read=("**",), write=("stations/**", "policy/**",
                                                         "security/revocations")),
            # a site reads the policy its cloud sets; it writes nothing at the cloud (a
            # site's writes to its own stations go to the stations through the site itself)
            Role.LOCAL_CSMS: Grant(read=("policy/**",)),
            Role.OPERATOR: Grant(read=("**",), write=(*station_settings, "policy/**",
                                                      "energy/fallback_limit_w",
                                                      "security/revocations")),
            # the site's resource manager tells the grid's limits and reads the site's energy
            Role.RESOURCE_MANAGER: Grant(
                read=("stations/*/evse/*/meter/**", "stations/*/evse/*/energy/**",
                      "stations/*/evse/*/status", "stations/*/identity/max_power_w",
                      "policy/**", "energy/**"),
                write=("energy/grid/**",)),
        }
    )
