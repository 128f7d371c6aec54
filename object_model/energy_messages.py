"""Messages of site energy management: allocation alerts and S2 payloads.

``EnergyAlert`` is how a local CSMS says that its site's energy cannot be managed as asked:
the EVSEs' lower limits alone exceed the site's limit, an EV's energy need cannot be met in
time, the site's envelope ran out. It goes to the resource manager and the cloud, reliably,
and names each EVSE concerned with its reason; ``active=False`` says the situation ended.
Nothing is ever overrun silently: whatever was shed is in the alert.

``S2Message`` carries one S2 (EN 50491-12-2) message as its JSON text, so that a site energy
manager speaking S2 can reach the resource manager over the broker. The resource manager
checks it with the S2 models themselves.
"""

from __future__ import annotations

from enum import StrEnum
from typing import Annotated, ClassVar, Literal

from pydantic import Field

from object_model.message_base import MessageBase

Name = Annotated[str, Field(max_length=128)]
Text = Annotated[str, Field(max_length=1000)]
Watts = Annotated[float, Field(ge=-1e9, le=1e9, allow_inf_nan=False)]
MAX_S2_BYTES = 64 * 1024


class AlertCode(StrEnum):
    """Why a site's energy cannot be managed as asked (stable wire identifiers)."""

    LOWER_LIMITS_EXCEED_SITE = "lower_limits_exceed_site"  # shed: these get less than needed
    ENERGY_UNREACHABLE = "energy_unreachable"  # an EC's least energy cannot arrive in time
    SITE_LOWER_UNMET = "site_lower_unmet"  # the site cannot draw the envelope's lower limit
    NO_ENVELOPE = "no_envelope"  # the grid envelope expired or never came: fallback limit


class AlertEvse(MessageBase):
    """One EVSE an alert concerns, and why."""

    station: Name
    evse: int = Field(ge=0, le=65535)
    reason: AlertCode
    needed_w: Watts = 0.0
    granted_w: Watts = 0.0
    shortfall_wh: float = Field(default=0.0, ge=0, le=1e12)
    text: Text = ""


class EnergyAlert(MessageBase):
    """A site's energy management cannot do what it is asked (see the module docstring)."""

    kind: Literal["EnergyAlert"] = "EnergyAlert"
    wire_id: ClassVar[int] = 22
    site: Name
    at_us: int = Field(ge=0)
    codes: list[AlertCode] = Field(max_length=8)
    text: Text
    site_limit_w: Watts
    lower_limits_w: Watts = 0.0
    active: bool = True
    evses: list[AlertEvse] = Field(default_factory=list, max_length=1000)


class S2Message(MessageBase):
    """One S2 message as JSON text (the resource manager validates it with s2-python)."""

    kind: Literal["S2Message"] = "S2Message"
    wire_id: ClassVar[int] = 23
    payload: str = Field(max_length=MAX_S2_BYTES)


__all__ = ["MAX_S2_BYTES", "AlertCode", "AlertEvse", "EnergyAlert", "S2Message"]
