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
from object_model.schema import Component, Ids, SchemaRegistry, Unit
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


class SitePolicy(Component):
    """The operational permissions a CSMS gives the stations it admits (operators may change
    them; the change is passed on to every station)."""

    may_charge: bool = True
    may_discharge: bool = False
    needs_authorisation: bool = False
    max_power_w: Annotated[float, float32(0, 1e6), Unit("W")] = 22000.0


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


class CsmsState(Component):
    """A CSMS's whole own state."""

    name: Annotated[str, string(128)] = ""
    role: Annotated[str, string(32)] = ""
    managed: Annotated[dict[str, StationEntry], Ids(string(128), 100_000)] = {}
    sites: Annotated[dict[str, SiteEntry], Ids(string(128), 10_000)] = {}
    policy: Annotated[SitePolicy, Access.READ_WRITE] = SitePolicy()
    counters: Counters = Counters()


def csms_schema() -> SchemaRegistry:
    return SchemaRegistry(CsmsState)


def csms_access_policy() -> AccessPolicy:
    """Who may read and write what in a CSMS's aggregate view (``managed/...``, ``policy/...``
    and the rest for its own tree, ``stations/<id>/...`` for its copies; writes to copies are passed on to the
    station, which applies its own access kinds too)."""
    station_settings = (
        "stations/*/permissions/**",
        "stations/*/evse/*/permissions/**",
        "stations/*/identity/display_name",
        "stations/*/identity/location/**",
    )
    return AccessPolicy(
        {
            Role.CLOUD_CSMS: Grant(read=("**",), write=("stations/**", "policy/**")),
            # a site reads the policy its cloud sets; it writes nothing at the cloud (a
            # site's writes to its own stations go to the stations through the site itself)
            Role.LOCAL_CSMS: Grant(read=("policy/**",)),
            Role.OPERATOR: Grant(read=("**",), write=(*station_settings, "policy/**")),
            Role.RESOURCE_MANAGER: Grant(read=(
                "stations/*/evse/*/meter/**", "stations/*/evse/*/energy/**",
                "stations/*/evse/*/status", "stations/*/identity/max_power_w", "policy/**")),
        }
    )
