"""An OCPP 2.0.1 charger's device model in the station's tree (``ocpp:dm``), both ways.

Sans-IO: payloads in, tree operations or payloads out.

* ``key_of`` / ``parts_of``: a component or variable as OCPP names it (name, instance, EVSE,
  connector) and its key in the tree (``Connector@1.2``, ``ItemsPerMessage#GetReport``), one
  spelling each way; ``%``, ``#``, ``@`` and what is not printable ASCII are percent-encoded.
* ``report_ops``: NotifyReport ``reportData`` (and GetVariables results) as writes of
  ``ocpp:dm/<component>/<variable>``, bounded (``MAX_VARIABLES``, and what the tree's
  collections hold: a charger that reports more is cut off, and says so in the log, rather
  than fill the gateway's memory or have its page refused); what the
  gateway needs of it (rate unit, periods per schedule, items per SetVariables, monitoring)
  as ``ocpp:charger`` leaves.
* ``event_ops``: NotifyEvent ``eventData`` as writes of the variables' actual values, so the
  station's own monitors see them.
* ``settings_of``: what a write of ``ocpp:dm/.../value`` leaves asks of the charger, checked
  against what it reported (a ReadOnly value, a variable it never reported, one the gateway
  owns are refused here, before anything is sent) as SetVariables items.
* ``monitor_requests``: what of a monitoring task the charger can watch itself, as
  SetVariableMonitoring items (a threshold, an absolute delta, on change, periodic) on the
  variables it said it can monitor.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from keypath import KeyPath
from object_model.errors import (
    AccessDeniedError,
    InvalidValueError,
    UnknownPathError,
)
from object_model.monitoring import Delta, MonitoringTaskSetup, OnChange, Periodic, Threshold
from object_model.station.ocpp_namespace import (
    ATTRIBUTES,
    CHARGER,
    COMPONENT_KEY_CHARS,
    DEVICE_MODEL,
    MAX_COMPONENTS,
    MAX_VARIABLES_PER_COMPONENT,
    VALUE_CHARS,
    VARIABLE_KEY_CHARS,
)
from object_model.tree import Delete, ObjectTree, Operation, Write

MAX_VARIABLES = 2048
"""The most variables a charger's device model may hold in its tree."""

FIELDS = {field: kind for kind, field in ATTRIBUTES.items()}
"""A variable's attribute field in the tree -> OCPP's attribute type."""

OWNED = {("securityctrlr", None), ("ocppcommctrlr", "networkconfigurationpriority"),
         ("ocppcommctrlr", "networkprofileconnectionattempts"),
         ("ocppcommctrlr", "activenetworkprofile")}
"""Settings the gateway keeps for itself: the charger's credentials and how it reaches the
gateway (``None``: every variable of the component), in lower case (OCPP's names are
case-insensitive). Written through ``csms set``, they could cut the charger off or hand its
login to whoever wrote them."""

_UNSAFE = re.compile(r"[^\x21-\x7e]|[%#@]")


def _encode(text: str) -> str:
    return _UNSAFE.sub(lambda m: "".join(f"%{b:02X}" for b in m.group().encode()), text)


def _decode(text: str) -> str:
    return re.sub(r"(%[0-9A-F]{2})+", lambda m: bytes.fromhex(
        m.group().replace("%", "")).decode("utf-8", "replace"), text)


def component_key(component: dict[str, Any]) -> str:
    key = _encode(component["name"])
    if component.get("instance"):
        key += "#" + _encode(component["instance"])
    evse = component.get("evse")
    if evse is not None:
        key += f"@{int(evse['id'])}"
        if evse.get("connectorId") is not None:
            key += f".{int(evse['connectorId'])}"
    return key


def variable_key(variable: dict[str, Any]) -> str:
    key = _encode(variable["name"])
    if variable.get("instance"):
        key += "#" + _encode(variable["instance"])
    return key


_COMPONENT = re.compile(r"^([^#@]+)(?:#([^#@]+))?(?:@(\d+)(?:\.(\d+))?)?$")
_VARIABLE = re.compile(r"^([^#@]+)(?:#([^#@]+))?$")


def parts_of(component: str, variable: str) -> tuple[dict[str, Any], dict[str, Any]]:
    """The OCPP ``component`` and ``variable`` objects of two tree keys (``UNKNOWN_PATH`` for
    a key that is not one)."""
    c, v = _COMPONENT.match(component), _VARIABLE.match(variable)
    if c is None or v is None:
        raise UnknownPathError(f"{component}/{variable} is not a component and variable key",
                               path=f"{DEVICE_MODEL}/{component}/{variable}")
    comp: dict[str, Any] = {"name": _decode(c.group(1))}
    if c.group(2):
        comp["instance"] = _decode(c.group(2))
    if c.group(3):
        comp["evse"] = {"id": int(c.group(3))}
        if c.group(4):
            comp["evse"]["connectorId"] = int(c.group(4))
    var: dict[str, Any] = {"name": _decode(v.group(1))}
    if v.group(2):
        var["instance"] = _decode(v.group(2))
    return comp, var


# -- charger -> tree ---------------------------------------------------------------------------


def _attribute(raw: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {"mutability": raw.get("mutability", "ReadWrite")}
    if "value" in raw and out["mutability"] != "WriteOnly":
        out["value"] = str(raw["value"])[:VALUE_CHARS]
    for flag in ("persistent", "constant"):
        if flag in raw:
            out[flag] = bool(raw[flag])
    return out


def _variable(item: dict[str, Any], now_us: int) -> dict[str, Any]:
    record: dict[str, Any] = {"reported_at": now_us}
    traits = item.get("variableCharacteristics")
    if traits is not None:
        record["data_type"] = traits["dataType"]
        record["supports_monitoring"] = bool(traits.get("supportsMonitoring", False))
        for ours, theirs, size in (("unit", "unit", 16), ("values_list", "valuesList", 1000)):
            if theirs in traits:
                record[ours] = str(traits[theirs])[:size]
        for ours, theirs in (("min_limit", "minLimit"), ("max_limit", "maxLimit")):
            if theirs in traits and abs(float(traits[theirs])) <= 1e15:
                record[ours] = float(traits[theirs])
    for raw in item.get("variableAttribute", ()):
        record[ATTRIBUTES[raw.get("type", "Actual")]] = _attribute(raw)
    return record


@dataclass(frozen=True)
class ReportOutcome:
    """What a page of a report does to the tree, and the variables it names."""

    ops: list[Operation]
    keys: set[tuple[str, str]]
    dropped: int  # beyond ``MAX_VARIABLES``


def report_ops(tree: ObjectTree, items: Sequence[dict[str, Any]], now_us: int) -> ReportOutcome:
    """A NotifyReport page's ``reportData`` as writes of the charger's device model. What
    the tree cannot hold is left out (counted in ``dropped``), never a reason to refuse the
    page: more than ``MAX_VARIABLES`` in all, ``MAX_VARIABLES_PER_COMPONENT`` in a component
    or ``MAX_COMPONENTS``, a key that is empty or too long once encoded."""
    held = _held(tree)
    count = sum(map(len, held.values()))
    ops: list[Operation] = []
    keys: set[tuple[str, str]] = set()
    dropped = 0
    for item in items:
        key = component_key(item["component"]), variable_key(item["variable"])
        variables = held.get(key[0])
        if variables is None or key[1] not in variables:
            if count >= MAX_VARIABLES or not 0 < len(key[0]) <= COMPONENT_KEY_CHARS or \
                    not 0 < len(key[1]) <= VARIABLE_KEY_CHARS or (
                        len(held) >= MAX_COMPONENTS if variables is None
                        else len(variables) >= MAX_VARIABLES_PER_COMPONENT):
                dropped += 1
                continue
            held.setdefault(key[0], set()).add(key[1])
            count += 1
        keys.add(key)
        ops.append(Write(f"{DEVICE_MODEL}/{_path_key(key[0])}/{_path_key(key[1])}",
                         _variable(item, now_us)))
    return ReportOutcome(ops, keys, dropped)


def _path_key(key: str) -> str:
    return str(KeyPath(key))  # escaped where the key-path syntax needs it


def _held(tree: ObjectTree) -> dict[str, set[str]]:
    """The variable keys of each component key the tree holds (by the tree's children: a
    page costs no read of the whole model)."""
    return {component: {variable for variable, _, _ in tree.children(_MODEL / component)}
            for component, _, _ in tree.children(_MODEL)}


_MODEL = KeyPath(DEVICE_MODEL)


def known_variables(tree: ObjectTree) -> set[tuple[str, str]]:
    return {(c, v) for c, variables in _held(tree).items() for v in variables}


def forgotten(tree: ObjectTree, reported: set[tuple[str, str]]) -> list[Operation]:
    """After a full inventory: deletes of what the charger no longer has."""
    ops: list[Operation] = []
    for component, variable in sorted(known_variables(tree) - reported):
        ops.append(Delete(f"{DEVICE_MODEL}/{_path_key(component)}/{_path_key(variable)}"))
    return ops


def actual(tree: ObjectTree, component: str, variable: str) -> str | None:
    path = f"{DEVICE_MODEL}/{_path_key(component)}/{_path_key(variable)}/actual/value"
    return str(tree.get(path)) if path in tree else None


def capabilities(tree: ObjectTree) -> list[Operation]:
    """What the gateway takes from the device model it holds: the rate units and periods a
    profile may use, how many settings one SetVariables carries, whether it monitors."""
    ops: list[Operation] = [Write(f"{CHARGER}/variables", len(known_variables(tree)))]
    unit = actual(tree, "SmartChargingCtrlr", "RateUnit")
    if unit is not None:
        units = {u.strip() for u in unit.split(",")}
        ops.append(Write(f"{CHARGER}/rate_unit", "W,A" if {"W", "A"} <= units
                         else "A" if "A" in units else "W"))
    for variable, leaf, ceiling in (("PeriodsPerSchedule", "periods_per_schedule", 1024),
                                    ("ItemsPerMessage#SetVariables", "items_per_set", 1024)):
        component = "SmartChargingCtrlr" if leaf == "periods_per_schedule" else \
            "DeviceDataCtrlr"
        value = actual(tree, component, variable)
        if value is not None and value.strip().isdigit() and 1 <= int(value) <= ceiling:
            ops.append(Write(f"{CHARGER}/{leaf}", int(value)))
    enabled = actual(tree, "MonitoringCtrlr", "Enabled")
    available = actual(tree, "MonitoringCtrlr", "Available")
    ops.append(Write(f"{CHARGER}/monitoring", "true" in (
        (enabled or "").lower(), (available or "").lower())))
    return ops


def event_ops(tree: ObjectTree, events: Iterable[dict[str, Any]]) -> list[Operation]:
    """NotifyEvent ``eventData``: each ``actualValue`` written to its variable's actual value
    where the device model has that variable (what it has not reported stays out, and so
    does the value of a WriteOnly one)."""
    ops: list[Operation] = []
    for event in events:
        base = f"{DEVICE_MODEL}/{_path_key(component_key(event['component']))}/" \
               f"{_path_key(variable_key(event['variable']))}"
        mutability = f"{base}/actual/mutability"
        if mutability in tree and tree.get(mutability) != "WriteOnly":
            ops.append(Write(f"{base}/actual/value", str(event["actualValue"])[:VALUE_CHARS]))
    return ops


# -- tree -> charger ---------------------------------------------------------------------------


def settings_of(tree: ObjectTree, writes: Sequence[tuple[KeyPath, Any]]
                ) -> list[tuple[KeyPath, dict[str, Any]]]:
    """The SetVariables items (``setVariableData``) that ``writes`` of ``ocpp:dm/.../value``
    leaves ask for, each with its leaf. Refused before anything is sent: a variable the charger
    never reported (``UNKNOWN_PATH``), a ReadOnly attribute (``ACCESS_DENIED``), a WriteOnly
    one (``ACCESS_DENIED``: the tree, which every reader of the station sees, would hold the
    secret), one the gateway keeps (``ACCESS_DENIED``), a value that is not a string
    (``INVALID_VALUE``)."""
    items: list[tuple[KeyPath, dict[str, Any]]] = []
    for path, value in writes:
        segs = path.segments
        component, variable, field = segs[1], segs[2], segs[3]
        mutability = f"{DEVICE_MODEL}/{_path_key(component)}/{_path_key(variable)}/{field}/" \
                     "mutability"
        if mutability not in tree:
            raise UnknownPathError(f"the charger reported no {field} attribute of "
                                   f"{component}.{variable}", path=path)
        comp, var = parts_of(component, variable)
        name, variable_name = comp["name"].lower(), var["name"].lower()
        if (name, None) in OWNED or (name, variable_name) in OWNED:
            raise AccessDeniedError(f"{comp['name']}.{var['name']} is the gateway's to set: "
                                    "it holds the charger's credentials and links", path=path)
        if tree.get(mutability) == "ReadOnly":
            raise AccessDeniedError(f"{component}.{variable} is ReadOnly on the charger",
                                    path=path, details={"mutability": "ReadOnly"})
        if tree.get(mutability) == "WriteOnly":  # a secret: the tree would show it to all
            raise AccessDeniedError(f"{component}.{variable} is WriteOnly on the charger: "
                                    "its value would be shown to every reader of the station",
                                    path=path, details={"mutability": "WriteOnly"})
        if not isinstance(value, str):
            raise InvalidValueError("a device-model value is a string, as the charger spells "
                                    "it", path=path)
        items.append((path, {"attributeType": FIELDS[field], "attributeValue": value,
                             "component": comp, "variable": var}))
    return items


def monitor_requests(tree: ObjectTree, setup: MonitoringTaskSetup, matched: Iterable[KeyPath],
                     severity: int) -> list[dict[str, Any]]:
    """SetVariableMonitoring items (``setMonitoringData``) for the actual values of
    ``matched`` that the charger can monitor, in the way ``setup``'s trigger asks (a relative
    delta has no OCPP monitor: it stays with the station's own monitors)."""
    trigger = setup.trigger
    kinds: list[tuple[str, float]] = []
    if isinstance(trigger, OnChange):
        kinds = [("Delta", 0.0)]
    elif isinstance(trigger, Delta) and trigger.absolute is not None:
        kinds = [("Delta", trigger.absolute)]
    elif isinstance(trigger, Periodic):
        kinds = [("Periodic", trigger.every_s)]
    elif isinstance(trigger, Threshold):
        kinds = [(kind, limit) for kind, limit in (("UpperThreshold", trigger.upper),
                                                    ("LowerThreshold", trigger.lower))
                 if limit is not None]
    items: list[dict[str, Any]] = []
    for path in sorted(set(matched)):
        segs = path.segments
        if len(segs) != 5 or segs[0] != DEVICE_MODEL or segs[3:] != ("actual", "value"):
            continue
        monitorable = f"{DEVICE_MODEL}/{_path_key(segs[1])}/{_path_key(segs[2])}/" \
                      "supports_monitoring"
        if monitorable not in tree or not tree.get(monitorable):
            continue
        comp, var = parts_of(segs[1], segs[2])
        items += [{"value": value, "type": kind, "severity": severity, "transaction": False,
                   "component": comp, "variable": var} for kind, value in kinds]
    return items


__all__ = ["MAX_VARIABLES", "OWNED", "ReportOutcome", "actual", "capabilities",
           "component_key", "event_ops", "forgotten", "known_variables", "monitor_requests",
           "parts_of", "report_ops", "settings_of", "variable_key"]
