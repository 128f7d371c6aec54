"""The resource manager's tree: a site's grid connection as the site energy manager sees it.

An operator (or the site energy manager, directly or in S2 messages) sets the inputs under
``grid``: the fuse limit, DSO curtailments (each a window with a lower import limit), a PV
surplus forecast with its uncertainty bands, and, from S2, an instruction's envelope and the
constraints it must respect. The resource manager computes ``grid/envelope`` from them (the
import limit over time, without the PV: the local CSMS adds the PV's 95 % band itself, which
is where safety is at stake) and pushes it to its local CSMS. The local CSMS writes back the
site's aggregated plan (``site/plan``); its alerts are kept under ``site/alerts``.
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
from object_model.types import TIMESTAMP, float32, string, uint32, uint64

Timestamp = Annotated[int, TIMESTAMP]
Watts = Annotated[float, float32(0, 1e8), Unit("W")]
Text = Annotated[str, string(500)]
CURTAILMENT_ID = r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$"


class Curtailment(Component):
    """A DSO curtailment: from ``start_at`` to ``end_at`` the site imports at most ``limit_w``."""

    start_at: Timestamp
    end_at: Timestamp
    limit_w: Watts
    reason: Text = ""


class GridConnection(Component):
    """The grid connection's inputs (written by operators and the site energy manager) and
    the envelope computed from them."""

    fuse_limit_w: Annotated[Watts, Access.READ_WRITE] = 100_000.0
    curtailments: Annotated[dict[str, Curtailment], Ids(string(64, CURTAILMENT_ID), 64),
                            Access.READ_WRITE] = {}
    pv_forecast: Annotated[EnergyTransferPlan | None, Access.READ_WRITE] = None
    instruction: Annotated[PowerRangeEnvelope | None, Access.READ_WRITE] = None
    power_constraints: Annotated[PowerConstraints | None, Access.READ_WRITE] = None
    energy_constraints: Annotated[EnergyConstraints | None, Access.READ_WRITE] = None
    envelope: PowerRangeEnvelope | None = None
    horizon_s: Annotated[int, uint32(60, 7 * 86_400), Unit("s"), Access.READ_WRITE] = 86_400
    pushed_at: Timestamp | None = None
    pushes: Annotated[int, uint64()] = 0


class AlertEntry(Component):
    at: Timestamp
    codes: Annotated[str, string(200)]
    text: Text
    site_limit_w: Annotated[float, float32(-1e9, 1e9), Unit("W")] = 0.0
    evses: Annotated[int, uint32()] = 0
    active: bool = True


class SiteView(Component):
    """What the local CSMS reports back: the site's plan and its alerts."""

    csms: Annotated[str, string(128)] = ""
    plan: Annotated[EnergyTransferPlan | None, Access.READ_WRITE] = None
    plan_received_at: Timestamp | None = None
    alerts: Annotated[dict[int, AlertEntry], Ids(uint32(), 100)] = {}
    alerts_total: Annotated[int, uint64()] = 0


class ResourceManagerState(Component):
    name: Annotated[str, string(128)] = ""
    grid: GridConnection = GridConnection()
    site: SiteView = SiteView()


def resource_manager_schema() -> SchemaRegistry:
    return SchemaRegistry(ResourceManagerState)


def resource_manager_access_policy() -> AccessPolicy:
    """Operators set the grid's inputs and read everything; the local CSMS reads the grid and
    writes the site's plan; the cloud reads."""
    return AccessPolicy({
        Role.OPERATOR: Grant(read=("**",), write=("grid/**",)),
        Role.LOCAL_CSMS: Grant(read=("**",), write=("site/plan",)),
        Role.CLOUD_CSMS: Grant(read=("**",)),
        Role.RESOURCE_MANAGER: Grant(read=("**",), write=("grid/**",)),
    })


__all__ = ["AlertEntry", "Curtailment", "GridConnection", "ResourceManagerState", "SiteView",
           "resource_manager_access_policy", "resource_manager_schema"]
