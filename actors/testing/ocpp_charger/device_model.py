"""A charging station's device model as OCPP 2.0.1 defines it (part 1 §4, part 2 §2.1 B),
as pure data: no I/O, no clock.

A *component* (name, optional instance, optionally on an EVSE or one of its connectors) has
*variables* (name, optional instance); each variable has *attributes* (Actual, and where
meaningful Target, MinSet, MaxSet: a value string, a mutability, persistent, constant) and
one set of *characteristics* (dataType, unit, minLimit, maxLimit, valuesList,
supportsMonitoring). Names and instances are matched case-insensitively, as the spec says;
the EVSE and connector a component is on, exactly.

What the CSMS reads and writes goes through ``get`` and ``set``, which answer with OCPP's
statuses (a WriteOnly value is never read back; a ReadOnly one never written; a value is
checked against its dataType, limits and valuesList first); what the charger itself changes
(a power reading, an availability) goes through ``update``, which no mutability stops.
``report`` selects the ``reportData`` of a GetBaseReport, ``select`` that of a GetReport.
Everything in and out is in the spec's own JSON names (camelCase).
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Literal

DataType = Literal["string", "decimal", "integer", "dateTime", "boolean", "OptionList",
                   "SequenceList", "MemberList"]
Mutability = Literal["ReadOnly", "WriteOnly", "ReadWrite"]
AttributeType = Literal["Actual", "Target", "MinSet", "MaxSet"]
ATTRIBUTE_TYPES: tuple[AttributeType, ...] = ("Actual", "Target", "MinSet", "MaxSet")
REPORT_BASES = ("ConfigurationInventory", "FullInventory", "SummaryInventory")
SUMMARY_VARIABLES = frozenset({"availabilitystate", "available", "problem"})
"""What a SummaryInventory holds: each component's availability and problem state."""
NUMERIC: frozenset[str] = frozenset({"integer", "decimal"})
_INTEGER = re.compile(r"[+-]?\d{1,18}")


def _fold(text: str | None) -> str | None:
    return None if text is None else text.casefold()


@dataclass(frozen=True, slots=True, kw_only=True)
class Component:
    """A physical or logical component (ComponentType)."""

    name: str
    instance: str | None = None
    evse: int | None = None
    connector: int | None = None

    @classmethod
    def of(cls, data: Mapping[str, Any]) -> Component:
        """From a ComponentType of a message."""
        evse = data.get("evse") or {}
        return cls(name=str(data["name"]), instance=data.get("instance"),
                   evse=evse.get("id"), connector=evse.get("connectorId"))

    @property
    def key(self) -> tuple[str | None, str | None, int | None, int | None]:
        return _fold(self.name), _fold(self.instance), self.evse, self.connector

    def wire(self) -> dict[str, Any]:
        out: dict[str, Any] = {"name": self.name}
        if self.instance is not None:
            out["instance"] = self.instance
        if self.evse is not None:
            out["evse"] = {"id": self.evse}
            if self.connector is not None:
                out["evse"]["connectorId"] = self.connector
        return out


@dataclass(frozen=True, slots=True, kw_only=True)
class Variable:
    """The reference key of a component's variable (VariableType)."""

    name: str
    instance: str | None = None

    @classmethod
    def of(cls, data: Mapping[str, Any]) -> Variable:
        """From a VariableType of a message."""
        return cls(name=str(data["name"]), instance=data.get("instance"))

    @property
    def key(self) -> tuple[str | None, str | None]:
        return _fold(self.name), _fold(self.instance)

    def wire(self) -> dict[str, Any]:
        out: dict[str, Any] = {"name": self.name}
        if self.instance is not None:
            out["instance"] = self.instance
        return out


@dataclass(slots=True, kw_only=True)
class Attribute:
    """One attribute of a variable (VariableAttributeType)."""

    value: str
    mutability: Mutability = "ReadOnly"
    persistent: bool = False
    constant: bool = False

    def wire(self, kind: AttributeType) -> dict[str, Any]:
        out: dict[str, Any] = {"type": kind}
        if self.mutability != "WriteOnly":  # a WriteOnly value is never reported
            out["value"] = self.value
        out |= {"mutability": self.mutability, "persistent": self.persistent,
                "constant": self.constant}
        return out


@dataclass(frozen=True, slots=True, kw_only=True)
class Characteristics:
    """The fixed, read-only parameters of a variable (VariableCharacteristicsType)."""

    data_type: DataType
    unit: str | None = None
    min_limit: float | None = None
    max_limit: float | None = None  # for strings and lists: the longest value
    values_list: str | None = None  # OptionList, MemberList, SequenceList: the CSV of values
    supports_monitoring: bool = False

    def wire(self) -> dict[str, Any]:
        out: dict[str, Any] = {"dataType": self.data_type}
        if self.unit is not None:
            out["unit"] = self.unit
        if self.min_limit is not None:
            out["minLimit"] = self.min_limit
        if self.max_limit is not None:
            out["maxLimit"] = self.max_limit
        if self.values_list is not None:
            out["valuesList"] = self.values_list
        out["supportsMonitoring"] = self.supports_monitoring
        return out

    def check(self, value: str) -> tuple[str | None, str]:
        """``(value as kept, "")`` if ``value`` fits, else ``(None, why)``: a reasonCode."""
        kind = self.data_type
        if kind in NUMERIC:
            if kind == "integer":
                if not _INTEGER.fullmatch(value.strip()):
                    return None, "InvalidValue"
                number: float = int(value)
                kept = str(int(value))
            else:
                try:
                    number = float(value)
                except ValueError:
                    return None, "InvalidValue"
                if not math.isfinite(number):
                    return None, "InvalidValue"
                kept = value.strip()
            if (self.min_limit is not None and number < self.min_limit) or (
                    self.max_limit is not None and number > self.max_limit):
                return None, "ValueOutOfRange"
            return kept, ""
        if self.max_limit is not None and len(value) > self.max_limit:
            return None, "ValueTooLong"
        if kind == "boolean":
            if value.lower() not in ("true", "false"):
                return None, "InvalidValue"
            return value.lower(), ""
        if kind == "dateTime":
            try:
                datetime.fromisoformat(value.replace("Z", "+00:00"))
            except ValueError:
                return None, "InvalidValue"
            return value, ""
        if kind in ("OptionList", "MemberList", "SequenceList"):
            allowed = (self.values_list or "").split(",")
            if kind == "OptionList":
                return (value, "") if value in allowed else (None, "InvalidValue")
            members = value.split(",") if value else []
            if any(m not in allowed for m in members) or len(set(members)) != len(members):
                return None, "InvalidValue"
        return value, ""


@dataclass(slots=True, kw_only=True)
class ComponentVariable:
    """One variable of one component, with its attributes and characteristics.

    ``reboot_required``: a value set is kept but takes effect only after a reboot (its set is
    answered RebootRequired)."""

    component: Component
    variable: Variable
    characteristics: Characteristics
    attributes: dict[AttributeType, Attribute] = field(default_factory=dict)
    reboot_required: bool = False

    @property
    def configurable(self) -> bool:
        return any(a.mutability != "ReadOnly" for a in self.attributes.values())

    def report(self) -> dict[str, Any]:
        """Its ReportDataType."""
        return {"component": self.component.wire(), "variable": self.variable.wire(),
                "variableAttribute": [self.attributes[kind].wire(kind) for kind in
                                      ATTRIBUTE_TYPES if kind in self.attributes],
                "variableCharacteristics": self.characteristics.wire()}


@dataclass(frozen=True, slots=True)
class Outcome:
    """The answer to one get or set: an OCPP status, the value read, the reasonCode."""

    status: str
    value: str | None = None
    reason: str | None = None


ComponentRef = Component | str
VariableRef = Variable | str


def _component(ref: ComponentRef) -> Component:
    return Component(name=ref) if isinstance(ref, str) else ref


def _variable(ref: VariableRef) -> Variable:
    return Variable(name=ref) if isinstance(ref, str) else ref


class DeviceModel:
    """The component-variables of one charging station (see the module docstring)."""

    def __init__(self, entries: Iterable[ComponentVariable]) -> None:
        self._entries: dict[tuple[Any, Any], ComponentVariable] = {}
        self._components: set[Any] = set()
        for entry in entries:
            key = (entry.component.key, entry.variable.key)
            if key in self._entries:
                raise ValueError(f"{entry.component} {entry.variable} is defined twice")
            self._entries[key] = entry
            self._components.add(entry.component.key)

    def __iter__(self) -> Iterator[ComponentVariable]:
        return iter(self._entries.values())

    def __len__(self) -> int:
        return len(self._entries)

    def find(self, component: ComponentRef, variable: VariableRef
             ) -> ComponentVariable | Outcome:
        """The component-variable, or the Outcome naming what is unknown."""
        c, v = _component(component), _variable(variable)
        entry = self._entries.get((c.key, v.key))
        if entry is not None:
            return entry
        if c.key not in self._components:
            return Outcome("UnknownComponent")
        return Outcome("UnknownVariable")

    def get(self, component: ComponentRef, variable: VariableRef,
            attribute: str = "Actual") -> Outcome:
        """GetVariables for one item: Accepted with the value, UnknownComponent,
        UnknownVariable, NotSupportedAttributeType, or Rejected for a WriteOnly value."""
        found = self._attribute(component, variable, attribute)
        if isinstance(found, Outcome):
            return found
        if found[1].mutability == "WriteOnly":
            return Outcome("Rejected", reason="WriteOnly")
        return Outcome("Accepted", found[1].value)

    def set(self, component: ComponentRef, variable: VariableRef, value: str,
            attribute: str = "Actual") -> Outcome:
        """SetVariables for one item: Accepted (or RebootRequired) once kept; Rejected for a
        ReadOnly attribute or a value its characteristics refuse; UnknownComponent,
        UnknownVariable, NotSupportedAttributeType."""
        found = self._attribute(component, variable, attribute)
        if isinstance(found, Outcome):
            return found
        entry, held = found
        if held.mutability == "ReadOnly":
            return Outcome("Rejected", reason="ReadOnly")
        kept, why = entry.characteristics.check(value)
        if kept is None:
            return Outcome("Rejected", reason=why)
        held.value = kept
        return Outcome("RebootRequired" if entry.reboot_required else "Accepted", kept)

    def _attribute(self, component: ComponentRef, variable: VariableRef, attribute: str
                   ) -> tuple[ComponentVariable, Attribute] | Outcome:
        """The variable and its attribute, or the Outcome naming what is unknown."""
        entry = self.find(component, variable)
        if isinstance(entry, Outcome):
            return entry
        found = entry.attributes.get(attribute)  # type: ignore[call-overload]
        if found is None:
            return Outcome("NotSupportedAttributeType")
        return entry, found

    def value(self, component: ComponentRef, variable: VariableRef,
              attribute: AttributeType = "Actual") -> str:
        """The value the charger holds (whatever its mutability); KeyError if it has none."""
        entry = self.find(component, variable)
        if isinstance(entry, Outcome) or attribute not in entry.attributes:
            raise KeyError(f"{component} {variable} {attribute}")
        return entry.attributes[attribute].value

    def number(self, component: ComponentRef, variable: VariableRef) -> float:
        """The Actual value of a numeric variable."""
        return float(self.value(component, variable))

    def update(self, component: ComponentRef, variable: VariableRef, value: object,
               attribute: AttributeType = "Actual") -> None:
        """The charger's own change of a value (a reading, a state): no mutability stops it."""
        entry = self.find(component, variable)
        if isinstance(entry, Outcome) or attribute not in entry.attributes:
            raise KeyError(f"{component} {variable} {attribute}")
        if isinstance(value, bool):
            text = "true" if value else "false"
        elif isinstance(value, float):
            text = f"{value:.1f}"
        else:
            text = str(value)
        entry.attributes[attribute].value = text

    def report(self, base: str) -> list[dict[str, Any]] | None:
        """The reportData of a GetBaseReport of ``base`` (None: a base it does not know):
        FullInventory everything, ConfigurationInventory what the CSMS may set,
        SummaryInventory each component's availability and problem state."""
        if base == "FullInventory":
            chosen = list(self)
        elif base == "ConfigurationInventory":
            chosen = [e for e in self if e.configurable]
        elif base == "SummaryInventory":
            chosen = [e for e in self if _fold(e.variable.name) in SUMMARY_VARIABLES]
        else:
            return None
        return [e.report() for e in chosen]

    def select(self, component_variables: Sequence[Mapping[str, Any]] | None = None,
               criteria: Sequence[str] | None = None) -> list[dict[str, Any]]:
        """The reportData of a GetReport: the component-variables each ``componentVariable``
        names (a component without a variable: all its variables; a component without
        an EVSE: that component on every EVSE), of the components meeting every one of
        ``criteria`` (Active, Available, Enabled, Problem: a component meets one when its
        variable of that name is "true")."""
        chosen = list(self)
        if component_variables:
            chosen = [e for e in chosen if any(_names(e, cv) for cv in component_variables)]
        for criterion in criteria or ():
            meeting = {e.component.key for e in self
                       if _fold(e.variable.name) == _fold(criterion)
                       and e.attributes.get("Actual", Attribute(value="")).value == "true"}
            chosen = [e for e in chosen if e.component.key in meeting]
        return [e.report() for e in chosen]


def _names(entry: ComponentVariable, wanted: Mapping[str, Any]) -> bool:
    component = wanted["component"]
    c = entry.component
    if _fold(component["name"]) != _fold(c.name):
        return False
    if "instance" in component and _fold(component["instance"]) != _fold(c.instance):
        return False
    evse = component.get("evse")
    if evse is not None and (evse["id"] != c.evse or (
            "connectorId" in evse and evse["connectorId"] != c.connector)):
        return False
    variable = wanted.get("variable")
    if variable is None:
        return True
    return _fold(variable["name"]) == _fold(entry.variable.name) and (
        "instance" not in variable or _fold(variable["instance"]) == _fold(
            entry.variable.instance))


__all__ = ["ATTRIBUTE_TYPES", "REPORT_BASES", "Attribute", "AttributeType", "Characteristics",
           "Component", "ComponentVariable", "DataType", "DeviceModel", "Mutability", "Outcome",
           "Variable"]
