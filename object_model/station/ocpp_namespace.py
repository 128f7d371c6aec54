"""The ``ocpp`` namespace: what an OCPP 2.0.1 charger has that the standard model does not.

A charger behind the OCPP gateway is a station like any other: its sessions, meters, status
and permissions live at the standard key-paths. What only OCPP has goes under ``ocpp:``:

* ``ocpp:dm/<component>/<variable>/<attribute>/value``: the charger's own device model (OCPP 2.0.1 Part 2,
  §B "Device model"), as it reported it (NotifyReport, NotifyEvent). A component key is its
  name, ``#instance`` when it has one, ``@evse`` or ``@evse.connector`` when it belongs to one
  (``EVSE@1``, ``Connector@1.2``, ``OCPPCommCtrlr``); a variable key its name and
  ``#instance`` (``ItemsPerMessage#GetReport``). ``%``, ``#``, ``@`` and what is not printable
  ASCII are percent-encoded in a name or instance (``actors.logic.ocpp.device_model``). Each
  variable holds its characteristics and its attributes (``actual``, ``target``, ``min_set``,
  ``max_set``), each attribute its value as the charger spells it and its mutability. An
  attribute's ``value`` is writable in the schema; whether the charger takes it is the
  charger's to say (``csms set`` becomes SetVariables).
* ``ocpp:charger``: the gateway's view of the charger: its registration state, what its
  device model says it can take (rate unit, periods per schedule, items per SetVariables),
  and whether a setting waits for a reboot.
* ``evse/<e>/ocpp:limits``: what this EVSE cannot honour because OCPP 2.0.1 cannot say it: a
  lower power limit, an energy transfer plan's probability bands.
"""

from __future__ import annotations

from typing import Annotated

from object_model.access import PropertyAccessKind as Access
from object_model.schema import Component, Ids, Namespace, SchemaRegistry, compile_node
from object_model.types import TIMESTAMP, float64, string, uint16

PREFIX = "ocpp"
DEVICE_MODEL = f"{PREFIX}:dm"
CHARGER = f"{PREFIX}:charger"
LIMITS = f"{PREFIX}:limits"
ATTRIBUTES = {"Actual": "actual", "Target": "target", "MinSet": "min_set",
              "MaxSet": "max_set"}
"""OCPP's attribute types and their fields in a variable."""
MAX_COMPONENTS = 512
MAX_VARIABLES_PER_COMPONENT = 256
COMPONENT_KEY_CHARS = 160  # a key, percent-encoded: 50 characters of OCPP name, and more
VARIABLE_KEY_CHARS = 120
VALUE_CHARS = 2500  # OCPP 2.0.1 attribute values: string(2500)

Word = Annotated[str, string(50)]


class Attribute(Component):
    """One attribute of a variable: its value as the charger spells it (``None``: it did not
    say, as for a WriteOnly one) and whether the charger lets it be read and written."""

    value: Annotated[str, string(VALUE_CHARS), Access.READ_WRITE] | None = None
    mutability: Annotated[str, string(10, r"^(ReadOnly|WriteOnly|ReadWrite)$")] = "ReadWrite"
    persistent: bool | None = None
    constant: bool | None = None


class Variable(Component):
    """One variable of a component: its characteristics and attributes."""

    data_type: Annotated[str, string(20)] = "string"
    unit: Annotated[str, string(16)] | None = None
    min_limit: Annotated[float, float64(-1e15, 1e15)] | None = None
    max_limit: Annotated[float, float64(-1e15, 1e15)] | None = None
    values_list: Annotated[str, string(1000)] | None = None
    supports_monitoring: bool = False
    reported_at: Annotated[int, TIMESTAMP] | None = None
    actual: Attribute | None = None
    target: Attribute | None = None
    min_set: Attribute | None = None
    max_set: Attribute | None = None


DeviceModel = Annotated[dict[str, Annotated[dict[str, Variable], Ids(
    string(VARIABLE_KEY_CHARS), MAX_VARIABLES_PER_COMPONENT)]], Ids(
    string(COMPONENT_KEY_CHARS), MAX_COMPONENTS)]
"""The charger's device model: components by key, each its variables by key."""


class ChargerStatus(Component):
    """What the gateway knows of the charger beyond the standard model."""

    registration: Annotated[str, string(10, r"^(Accepted|Pending|Rejected)$")] = "Accepted"
    inventory_at: Annotated[int, TIMESTAMP] | None = None  # when its device model was learned
    inventory_firmware: Word = ""  # the firmware version it was learned for
    variables: Annotated[int, uint16()] = 0
    rate_unit: Annotated[str, string(10, r"^(W|A|W,A|A,W)$")] = "W,A"
    periods_per_schedule: Annotated[int, uint16(1, 1024)] = 24
    items_per_set: Annotated[int, uint16(1, 1024)] = 8
    monitoring: bool = False
    reboot_required: bool = False


class EvseLimits(Component):
    """What this EVSE cannot honour: OCPP 2.0.1 charging profiles carry upper limits only."""

    lower_limit: bool = False
    probability_bands: bool = False


NAMESPACE = Namespace(PREFIX, "OCPP 2.0.1: what a charger behind the gateway has beyond the "
                      "standard model", {"ChargerStatus": ChargerStatus,
                                         "EvseLimits": EvseLimits})


def install(registry: SchemaRegistry) -> None:
    """Attach the namespace's subtrees to a station schema that has it registered."""
    registry.extend("", DEVICE_MODEL, compile_node(
        DeviceModel, [], Access.READ, "the charger's OCPP device model, by component"))
    registry.extend("", CHARGER, f"{PREFIX}:ChargerStatus")
    registry.extend("evse/*", LIMITS, f"{PREFIX}:EvseLimits")


__all__ = ["ATTRIBUTES", "CHARGER", "COMPONENT_KEY_CHARS", "DEVICE_MODEL", "LIMITS",
           "MAX_COMPONENTS", "MAX_VARIABLES_PER_COMPONENT", "NAMESPACE", "VALUE_CHARS",
           "VARIABLE_KEY_CHARS", "install"]
