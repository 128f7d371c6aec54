"""Two simple allocations to measure ours against, on the same day and the same interface.

* ``equal_share``: every EV plugged in gets the same share of the site limit now (what
  EVerest's energy manager does). It knows no on/off gap: a share below an EV's 6 A is
  simply not drawn, and no energy deadline.
* ``first_come_first_served``: EVs in order of arrival get all they can take until the
  site limit is used up; the next gets what is left.

Both plan only the present (one envelope element, renewed every cycle) and trust the PV
forecast's 95 % band like ours, so the comparison is about sharing, not about safety.
"""

from __future__ import annotations

from collections.abc import Sequence

from actors.logic.energy.allocation import Allocation, EvseKey, EvseNeed, SiteInputs
from object_model.pebc import (
    EnergyTransferPlan,
    EnvelopeElement,
    PlanElement,
    PowerRangeEnvelope,
)

RENEW_US = 60_000_000


def equal_share(now_us: int, needs: Sequence[EvseNeed], site: SiteInputs) -> Allocation:
    limit = max(0.0, site.limit_at(now_us)[0])
    active = [n for n in needs if n.active(now_us)]
    share = limit / len(active) if active else 0.0
    return _allocation(now_us, needs, limit, {n.key: min(share, n.cap_w(now_us))
                                              for n in active})


def first_come_first_served(now_us: int, needs: Sequence[EvseNeed], site: SiteInputs
                            ) -> Allocation:
    limit = left = max(0.0, site.limit_at(now_us)[0])
    grants = {}
    for n in sorted((n for n in needs if n.active(now_us)), key=lambda n: (n.arrived_us, n.key)):
        grants[n.key] = min(left, n.cap_w(now_us))
        left -= grants[n.key]
    return _allocation(now_us, needs, limit, grants)


def _allocation(now_us: int, needs: Sequence[EvseNeed], limit: float,
                grants: dict[EvseKey, float]) -> Allocation:
    envelopes = {}
    for n in needs:
        upper = grants.get(n.key, 0.0)
        envelopes[n.key] = PowerRangeEnvelope(
            elements=[EnvelopeElement(start_us=now_us, lower_w=0.0, upper_w=upper)],
            end_us=now_us + RENEW_US)
    total = sum(grants.values())
    plan = EnergyTransferPlan(elements=[PlanElement(start_us=now_us, power={"expected_w": total})],
                              end_us=now_us + RENEW_US)
    return Allocation(at_us=now_us, site_limit_w=limit, envelopes=envelopes,
                      granted_w=dict(grants), lower_limits_w=0.0, plan=plan)
