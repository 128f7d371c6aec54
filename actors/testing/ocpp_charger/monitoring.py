"""Variable monitors (OCPP 2.0.1 use cases N04, N06, N07), as pure data: the time they run
in is passed in (``now_s``: the charger's clock's monotonic seconds).

A monitor watches the Actual value of one component-variable whose characteristics say
``supportsMonitoring``:

* UpperThreshold / LowerThreshold (numeric variables): an Alerting event when the value rises
  above / drops below ``value``, and one with ``cleared`` when it is back;
* Delta: an event when the value moved by more than ``value`` from the value at the last
  event (or at the monitor's setting): with 0, at every change; on a non-numeric variable,
  at every change whatever ``value``;
* Periodic: an event every ``value`` seconds from its setting.

``observe`` evaluates every monitor against the model as it is now and returns the eventData
of what triggered; the caller sends them (NotifyEvent). A monitor with ``transaction`` is
active only while a transaction runs on its component's EVSE (any EVSE for a component of the
station). PeriodicClockAligned is not supported (UnsupportedMonitorType).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from actors.testing.ocpp_charger.device_model import (
    NUMERIC,
    Component,
    ComponentVariable,
    DeviceModel,
    Outcome,
    Variable,
)

SUPPORTED = frozenset({"UpperThreshold", "LowerThreshold", "Delta", "Periodic"})
MONITOR_TYPES = SUPPORTED | {"PeriodicClockAligned"}


@dataclass(slots=True, kw_only=True)
class Monitor:
    """One monitor set by the CSMS and its state."""

    id: int
    kind: str
    value: float
    severity: int
    transaction: bool
    component: Component
    variable: Variable
    reference: str | None = None  # Delta: the value at its last event (or its setting)
    alerting: bool = False  # thresholds: the condition holds (an event was sent)
    due: float | None = None  # Periodic: when its next event is


def _number(text: str | None) -> float | None:
    try:
        number = float(text) if text is not None else math.nan
    except ValueError:
        return None
    return number if math.isfinite(number) else None


class Monitors:
    """The custom monitors of one charger (see the module docstring)."""

    def __init__(self, model: DeviceModel) -> None:
        self.model = model
        self.by_id: dict[int, Monitor] = {}
        self._next_id = 1
        self._next_event = 1

    def set(self, data: Mapping[str, Any], now_s: float) -> dict[str, Any]:
        """SetVariableMonitoring for one SetMonitoringData: its SetMonitoringResult."""
        result: dict[str, Any] = {"type": data["type"], "severity": data["severity"],
                                  "component": data["component"],
                                  "variable": data["variable"]}

        def refused(status: str, reason: str | None = None) -> dict[str, Any]:
            return result | {"status": status} | (
                {"statusInfo": {"reasonCode": reason}} if reason else {})

        component, variable = Component.of(data["component"]), Variable.of(data["variable"])
        entry = self.model.find(component, variable)
        if isinstance(entry, Outcome):
            return refused(entry.status)
        kind, value, severity = str(data["type"]), float(data["value"]), int(data["severity"])
        numeric = entry.characteristics.data_type in NUMERIC
        if not entry.characteristics.supports_monitoring or kind not in SUPPORTED or (
                kind in ("UpperThreshold", "LowerThreshold") and not numeric):
            return refused("UnsupportedMonitorType")
        if "Actual" not in entry.attributes or \
                entry.attributes["Actual"].mutability == "WriteOnly":
            return refused("Rejected", "NoReadableValue")
        if not 0 <= severity <= 9:
            return refused("Rejected", "SeverityOutOfRange")
        if not math.isfinite(value) or (kind == "Delta" and value < 0) or (
                kind == "Periodic" and value <= 0):
            return refused("Rejected", "ValueOutOfRange")
        given = data.get("id")
        if given is not None:  # an id replaces the monitor it names, and only that
            old = self.by_id.get(int(given))
            if old is None or old.component.key != component.key or \
                    old.variable.key != variable.key:
                return refused("Rejected", "UnknownMonitorId")
            ident = old.id
        else:
            if any(m.component.key == component.key and m.variable.key == variable.key
                   and m.kind == kind and m.severity == severity
                   for m in self.by_id.values()):
                return refused("Duplicate")
            ident, self._next_id = self._next_id, self._next_id + 1
        self.by_id[ident] = Monitor(
            id=ident, kind=kind, value=value, severity=severity,
            transaction=bool(data.get("transaction", False)), component=component,
            variable=variable, reference=entry.attributes["Actual"].value,
            due=now_s + value if kind == "Periodic" else None)
        return result | {"status": "Accepted", "id": ident}

    def clear(self, ids: Sequence[int]) -> list[dict[str, Any]]:
        """ClearVariableMonitoring: a ClearMonitoringResult per id (Accepted, NotFound)."""
        return [{"status": "Accepted" if self.by_id.pop(int(i), None) else "NotFound",
                 "id": int(i)} for i in ids]

    def next_due(self) -> float | None:
        """When the next Periodic monitor is due (None: none is set)."""
        dues = [m.due for m in self.by_id.values() if m.due is not None]
        return min(dues) if dues else None

    def observe(self, now_s: float, at: str, transactions: Mapping[int, str]
                ) -> list[dict[str, Any]]:
        """The eventData (EventDataType) of every monitor that triggers now; ``at`` is the
        timestamp they carry, ``transactions`` the running transaction of each EVSE."""
        events: list[dict[str, Any]] = []
        for monitor in list(self.by_id.values()):
            entry = self.model.find(monitor.component, monitor.variable)
            if isinstance(entry, Outcome):
                continue
            actual = entry.attributes["Actual"].value
            evse = monitor.component.evse
            transaction = transactions.get(evse) if evse is not None else None
            if monitor.transaction and not (transaction if evse is not None
                                            else transactions):
                monitor.reference = actual  # inactive: no change builds up meanwhile
                if monitor.due is not None:
                    monitor.due = now_s + monitor.value
                continue
            trigger, cleared = self._trigger(monitor, entry, actual, now_s)
            if trigger is None:
                continue
            event: dict[str, Any] = {
                "eventId": self._next_event, "timestamp": at, "trigger": trigger,
                "actualValue": actual[:2500], "eventNotificationType": "CustomMonitor",
                "component": monitor.component.wire(), "variable": monitor.variable.wire(),
                "variableMonitoringId": monitor.id}
            if cleared is not None:
                event["cleared"] = cleared
            if transaction is not None:
                event["transactionId"] = transaction
            self._next_event += 1
            events.append(event)
        return events

    @staticmethod
    def _trigger(monitor: Monitor, entry: ComponentVariable, actual: str, now_s: float
                 ) -> tuple[str | None, bool | None]:
        """What ``monitor`` reports now (trigger, cleared), updating its state."""
        if monitor.kind == "Periodic":
            if monitor.due is None or now_s < monitor.due:
                return None, None
            while monitor.due <= now_s:  # a late wake-up reports once, not every period missed
                monitor.due += monitor.value
            return "Periodic", None
        if monitor.kind == "Delta":
            numeric = entry.characteristics.data_type in NUMERIC
            now, then = _number(actual), _number(monitor.reference)
            if numeric and now is not None and then is not None:
                moved = abs(now - then) > monitor.value
            else:
                moved = actual != monitor.reference
            if not moved:
                return None, None
            monitor.reference = actual
            return "Delta", None
        number = _number(actual)
        if number is None:
            return None, None
        beyond = number > monitor.value if monitor.kind == "UpperThreshold" \
            else number < monitor.value
        if beyond == monitor.alerting:
            return None, None
        monitor.alerting = beyond
        return "Alerting", not beyond


__all__ = ["MONITOR_TYPES", "Monitor", "Monitors"]
