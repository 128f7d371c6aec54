"""What the simulated charger has: its device model, the OCPP 2.0.1 controller components
(part 2, appendix 3) with the variables a small AC charger reports, plus an ``EVSE`` per EVSE
and a ``Connector`` per connector.

ReadWrite variables whose value the charger acts on: OCPPCommCtrlr.HeartbeatInterval (the
heartbeat period; a BootNotification's interval sets it too), OCPPCommCtrlr.MessageTimeout
(Default; how long it waits for an answer, from its next connection),
SampledDataCtrlr.TxUpdatedInterval (the period of TransactionEvent Updated; 0: none),
SmartChargingCtrlr.Enabled (false: SetChargingProfile is Rejected), TxCtrlr.EVConnectionTimeOut
(how long a remote start waits for an EV), SecurityCtrlr.BasicAuthPassword (WriteOnly: the
password of its next connection). OCPPCommCtrlr.NetworkProfileConnectionAttempts takes effect
after a reboot only (its set is answered RebootRequired). The other ReadWrite variables are
kept and reported, with no effect. Readings (EVSE.Power, the AvailabilityStates, Entries,
ClockCtrlr.DateTime) are the charger's to update (``DeviceModel.update``).
"""

from __future__ import annotations

from dataclasses import dataclass

from actors.testing.ocpp_charger.device_model import (
    Attribute,
    AttributeType,
    Characteristics,
    Component,
    ComponentVariable,
    DataType,
    DeviceModel,
    Mutability,
    Variable,
)

MEASURANDS = "Energy.Active.Import.Register,Power.Active.Import"
"""What its TransactionEvents carry."""
AVAILABILITY = "Available,Occupied,Reserved,Unavailable,Faulted"


@dataclass(frozen=True, slots=True, kw_only=True)
class Nameplate:
    """What the charger's inventory is made from."""

    identity: str
    vendor: str
    model: str
    evses: int
    rating_w: float
    heartbeat_s: int = 900
    report_s: int = 5
    message_timeout_s: int = 30
    items_per_message: int = 8
    amperes: bool = False
    max_periods: int = 24
    autostart: bool = True
    security_profile: int = 1


def _var(component: Component, name: str, data_type: DataType, value: object, *,
         mutability: Mutability = "ReadOnly", instance: str | None = None,
         unit: str | None = None, min_limit: float | None = None,
         max_limit: float | None = None, values_list: str | None = None,
         monitoring: bool = False, constant: bool = False, persistent: bool = True,
         also: dict[AttributeType, Attribute] | None = None,
         reboot: bool = False) -> ComponentVariable:
    text = ("true" if value else "false") if isinstance(value, bool) else str(value)
    attributes: dict[AttributeType, Attribute] = {"Actual": Attribute(
        value=text, mutability=mutability, persistent=persistent, constant=constant)}
    attributes.update(also or {})
    return ComponentVariable(
        component=component, variable=Variable(name=name, instance=instance),
        characteristics=Characteristics(data_type=data_type, unit=unit, min_limit=min_limit,
                                        max_limit=max_limit, values_list=values_list,
                                        supports_monitoring=monitoring),
        attributes=attributes, reboot_required=reboot)


def _controllers(plate: Nameplate) -> list[ComponentVariable]:
    station = Component(name="ChargingStation")
    comm = Component(name="OCPPCommCtrlr")
    smart = Component(name="SmartChargingCtrlr")
    tx = Component(name="TxCtrlr")
    sampled = Component(name="SampledDataCtrlr")
    monitoring = Component(name="MonitoringCtrlr")
    device = Component(name="DeviceDataCtrlr")
    security = Component(name="SecurityCtrlr")
    auth = Component(name="AuthCtrlr")
    clock = Component(name="ClockCtrlr")
    rw: Mutability = "ReadWrite"
    items = plate.items_per_message
    return [
        _var(station, "AvailabilityState", "OptionList", "Available",
             values_list=AVAILABILITY, persistent=False),
        _var(station, "Available", "boolean", True, persistent=False),
        _var(station, "Problem", "boolean", False, persistent=False),
        _var(station, "Model", "string", plate.model, constant=True, max_limit=20),
        _var(station, "VendorName", "string", plate.vendor, constant=True, max_limit=50),
        _var(station, "SupplyPhases", "integer", 3, constant=True, min_limit=0, max_limit=3),
        _var(comm, "HeartbeatInterval", "integer", plate.heartbeat_s, mutability=rw,
             unit="s", min_limit=1),
        _var(comm, "MessageTimeout", "integer", plate.message_timeout_s, mutability=rw,
             instance="Default", unit="s", min_limit=1, max_limit=600),
        _var(comm, "NetworkProfileConnectionAttempts", "integer", 3, mutability=rw,
             min_limit=1, max_limit=100, reboot=True),
        _var(comm, "OfflineThreshold", "integer", 60, mutability=rw, unit="s", min_limit=0),
        _var(comm, "FileTransferProtocols", "MemberList", "HTTP,HTTPS",
             values_list="HTTP,HTTPS", constant=True),
        _var(smart, "Enabled", "boolean", True, mutability=rw),
        _var(smart, "Available", "boolean", True),
        _var(smart, "RateUnit", "MemberList", "A" if plate.amperes else "W,A",
             values_list="W,A", constant=True),
        _var(smart, "PeriodsPerSchedule", "integer", plate.max_periods, constant=True),
        _var(smart, "ProfileStackLevel", "integer", 8, constant=True),
        _var(smart, "Entries", "integer", 0, instance="ChargingProfiles", persistent=False),
        _var(tx, "EVConnectionTimeOut", "integer", 60, mutability=rw, unit="s", min_limit=1),
        _var(tx, "StopTxOnEVSideDisconnect", "boolean", True, constant=True),
        _var(tx, "StopTxOnInvalidId", "boolean", True, mutability=rw),
        _var(tx, "TxStartPoint", "MemberList",
             "EVConnected" if plate.autostart else "Authorized",
             values_list="EVConnected,Authorized,PowerPathClosed", constant=True),
        _var(tx, "TxStopPoint", "MemberList", "EVConnected,Authorized",
             values_list="EVConnected,Authorized,PowerPathClosed", constant=True),
        _var(sampled, "Enabled", "boolean", True),
        _var(sampled, "TxUpdatedInterval", "integer", plate.report_s, mutability=rw,
             unit="s", min_limit=0),
        _var(sampled, "TxStartedMeasurands", "MemberList", MEASURANDS,
             values_list=MEASURANDS, constant=True),
        _var(sampled, "TxUpdatedMeasurands", "MemberList", MEASURANDS,
             values_list=MEASURANDS, constant=True),
        _var(sampled, "TxEndedMeasurands", "MemberList", MEASURANDS,
             values_list=MEASURANDS, constant=True),
        _var(monitoring, "Enabled", "boolean", True),
        _var(monitoring, "Available", "boolean", True),
        _var(monitoring, "ItemsPerMessage", "integer", items,
             instance="SetVariableMonitoring", constant=True),
        _var(monitoring, "ItemsPerMessage", "integer", items,
             instance="ClearVariableMonitoring", constant=True),
        *(_var(device, "ItemsPerMessage", "integer", items, instance=instance, constant=True)
          for instance in ("GetReport", "GetVariables", "SetVariables")),
        _var(security, "SecurityProfile", "integer", plate.security_profile, min_limit=0,
             max_limit=3),
        _var(security, "BasicAuthPassword", "string", "", mutability="WriteOnly",
             max_limit=40),
        _var(security, "Identity", "string", plate.identity, constant=True, max_limit=48),
        _var(security, "OrganizationName", "string", plate.vendor, constant=True),
        _var(auth, "AuthorizeRemoteStart", "boolean", False, constant=True),
        _var(clock, "DateTime", "dateTime", "1970-01-01T00:00:00Z", persistent=False),
        _var(clock, "TimeSource", "SequenceList", "Heartbeat",
             values_list="Heartbeat,NTP,GPS,RealTimeClock", constant=True),
    ]


def _evse(plate: Nameplate, number: int) -> list[ComponentVariable]:
    evse = Component(name="EVSE", evse=number)
    connector = Component(name="Connector", evse=number, connector=1)
    rating = Attribute(value=f"{plate.rating_w:.1f}", constant=True, persistent=True)
    return [
        _var(evse, "Available", "boolean", True, persistent=False),
        _var(evse, "AvailabilityState", "OptionList", "Available", values_list=AVAILABILITY,
             persistent=False, monitoring=True),
        _var(evse, "Power", "decimal", "0.0", unit="W", min_limit=0,
             max_limit=plate.rating_w, monitoring=True, persistent=False,
             also={"MaxSet": rating}),
        _var(evse, "SupplyPhases", "integer", 3, constant=True, min_limit=0, max_limit=3),
        _var(connector, "Available", "boolean", True, persistent=False),
        _var(connector, "AvailabilityState", "OptionList", "Available",
             values_list=AVAILABILITY, persistent=False, monitoring=True),
        _var(connector, "ConnectorType", "string", "cType2", constant=True),
        _var(connector, "SupplyPhases", "integer", 3, constant=True, min_limit=0, max_limit=3),
    ]


def inventory(plate: Nameplate) -> DeviceModel:
    """The device model of a charger of ``plate``."""
    return DeviceModel([*_controllers(plate),
                        *(e for n in range(1, plate.evses + 1) for e in _evse(plate, n))])


__all__ = ["MEASURANDS", "Nameplate", "inventory"]
