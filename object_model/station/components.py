"""The components of a charging station's device model.

Components nest freely (a power module holds fans that hold temperature sensors); nothing forces
a value into OCPP's ``component.variable`` pattern. Access kinds follow the split IEC 63110 draws
between hardware control (the station's own, read-only to others) and business decisions (the
CSMS's, written into ``permissions``): most of a station is ``read``; what a CSMS or operator may
set is marked ``read_write``; secrets are ``write`` or ``none``.
"""

from __future__ import annotations

from enum import StrEnum
from typing import Annotated

from pydantic import Field

from object_model.access import PropertyAccessKind as Access
from object_model.importers import iec61850, obis
from object_model.monitoring import TASK_ID, TaskState
from object_model.pebc import (
    EnergyConstraints,
    EnergyTransferPlan,
    PowerConstraints,
    PowerRangeEnvelope,
)
from object_model.schema import Component, Ids, Unit
from object_model.types import (
    BOOL,
    DURATION,
    TIMESTAMP,
    float32,
    float64,
    int8,
    string,
    uint8,
    uint16,
    uint32,
    uint64,
)

Text = Annotated[str, string(100)]
Name = Annotated[str, string(64)]
Timestamp = Annotated[int, TIMESTAMP]
Watts = Annotated[float, float32(0, 1e6), Unit("W")]
SignedWatts = Annotated[float, float32(-1e6, 1e6), Unit("W")]
Amps = Annotated[float, float32(0, 1000), Unit("A")]
Volts = Annotated[float, float32(0, 1500), Unit("V")]
Celsius = Annotated[float, float32(-60, 250), Unit("°C")]
Percent = Annotated[float, float32(0, 100), Unit("%")]


class ConnectorType(StrEnum):
    TYPE2_SOCKET = "sType2"
    TYPE2_CABLE = "cType2"
    CCS1 = "cCCS1"
    CCS2 = "cCCS2"
    CHADEMO = "cChaoJi"
    NACS = "cNACS"
    GBT_DC = "cGBT"


class ConnectorStatus(StrEnum):
    AVAILABLE = "Available"
    OCCUPIED = "Occupied"
    RESERVED = "Reserved"
    UNAVAILABLE = "Unavailable"
    FAULTED = "Faulted"


class EvseStatus(StrEnum):
    AVAILABLE = "Available"
    PREPARING = "Preparing"
    CHARGING = "Charging"
    DISCHARGING = "Discharging"
    SUSPENDED_EV = "SuspendedEV"
    SUSPENDED_EVSE = "SuspendedEVSE"
    FINISHING = "Finishing"
    RESERVED = "Reserved"
    UNAVAILABLE = "Unavailable"
    FAULTED = "Faulted"


class SessionState(StrEnum):
    IDLE = "Idle"
    AUTHORISING = "Authorising"
    CHARGING = "Charging"
    DISCHARGING = "Discharging"
    SUSPENDED = "Suspended"
    FINISHED = "Finished"


class ChargingProtocol(StrEnum):
    NONE = "None"
    IEC61851 = "IEC61851"
    ISO15118_2 = "ISO15118-2"
    ISO15118_20 = "ISO15118-20"
    CHADEMO = "CHAdeMO"


class CurrentKind(StrEnum):
    AC = "AC"
    DC = "DC"


class LinkTransport(StrEnum):
    ETHERNET = "ethernet"
    WIFI = "wifi"
    CELLULAR = "cellular"


class FirmwareStatus(StrEnum):
    IDLE = "Idle"
    DOWNLOADING = "Downloading"
    DOWNLOADED = "Downloaded"
    VERIFYING = "Verifying"
    INSTALLING = "Installing"
    INSTALLED = "Installed"
    FAILED = "Failed"


class DeviceState(StrEnum):
    OFF = "Off"
    STANDBY = "Standby"
    RUNNING = "Running"
    DERATED = "Derated"
    FAULT = "Fault"


# -- identity, firmware, network ---------------------------------------------------------------


class GeoLocation(Component):
    """Where the station stands."""

    latitude: Annotated[float, float64(-90, 90)] | None = None
    longitude: Annotated[float, float64(-180, 180)] | None = None
    address: Annotated[str, string(200)] | None = None


class Identity(Component):
    """Who the station is; fixed at manufacture except the operator's name and location."""

    station_id: Name
    vendor_name: Name
    model: Name
    serial_number: Name
    hardware_revision: Name = "A"
    manufactured_at: Timestamp = 0
    evse_count: Annotated[int, uint8(1, 128)] = 1
    max_power_w: Watts = 22000.0
    display_name: Annotated[Text, Access.READ_WRITE] = ""
    location: Annotated[GeoLocation, Access.READ_WRITE] = GeoLocation()


class Firmware(Component):
    """Installed firmware and the state of any update."""

    version: Name
    bootloader_version: Name = "1.0.0"
    built_at: Timestamp = 0
    update_status: FirmwareStatus = FirmwareStatus.IDLE
    last_update_at: Timestamp | None = None
    # the station refuses unsigned images whatever is written: nobody may turn that off
    signature_required: Annotated[bool, BOOL, Access.READ] = True
    # the counter of the installed image's signed manifest: no image below it is installed
    counter: Annotated[int, uint32()] = 0


class NetworkProfile(Component):
    """One way of reaching the broker; the CSMS may rewrite profiles (secrets are write-only)."""

    transport: LinkTransport = LinkTransport.ETHERNET
    broker_host: Annotated[str, string(255)] = "localhost"
    broker_port: Annotated[int, uint16(1, 65535)] = 5222
    xmpp_domain: Annotated[str, string(255)] = "localhost"
    security_profile: Annotated[int, uint8(0, 3)] = 2
    use_tls: bool = True
    connect_timeout: Annotated[int, DURATION] = 30_000_000
    priority: Annotated[int, uint8()] = 0
    apn: Annotated[str, string(100)] | None = None
    apn_user: Annotated[str, string(100)] | None = None
    apn_password: Annotated[str, string(100), Access.WRITE] | None = None
    ssid: Annotated[str, string(32)] | None = None
    wifi_password: Annotated[str, string(64), Access.WRITE] | None = None


class LinkStatus(Component):
    """The live state of the station's uplink."""

    online: bool = False
    transport: LinkTransport = LinkTransport.ETHERNET
    ip_address: Annotated[str, string(45)] = ""
    mac_address: Annotated[str, string(17)] = ""
    signal_strength_dbm: Annotated[int, int8()] | None = None
    rtt_ms: Annotated[float, float32(0, 1e6), Unit("ms")] = 0.0
    reconnects: Annotated[int, uint32()] = 0
    last_connected_at: Timestamp | None = None


class Network(Component):
    """Connection profiles (CSMS-managed) and the live link."""

    active_profile: Annotated[int, uint8(0, 7), Access.READ_WRITE] = 0
    profiles: Annotated[dict[int, NetworkProfile], Ids(uint8(0, 7), 8), Access.READ_WRITE] = {}
    link: LinkStatus = LinkStatus()


class Clock(Component):
    time_zone: Annotated[str, string(64), Access.READ_WRITE] = "UTC"
    ntp_server: Annotated[str, string(255), Access.READ_WRITE] = "pool.ntp.org"
    synchronised: bool = True
    drift_ms: Annotated[float, float32(-1e9, 1e9), Unit("ms")] = 0.0


class Security(Component):
    """Credentials: the provisioning secret is never readable, not even by the CSMS. The
    certificate the station holds (its key id, expiry, and the chain itself: whoever reads it
    checks it against the operator's root and seals secrets to the station's key with it),
    and the revocation list its CSMS gave it (signed by the operator's root; only a newer one
    replaces it) and its number."""

    certificate_serial: Name = ""
    certificate_expires_at: Timestamp = 0
    certificate: Annotated[bytes, Access.READ] = b""
    failed_logins: Annotated[int, uint32()] = 0
    provisioning_secret: Annotated[str, string(128), Access.NONE] | None = None
    revocations: Annotated[bytes, Access.READ_WRITE] = b""
    revocation_number: Annotated[int, uint64()] = 0


# -- power electronics and thermal -------------------------------------------------------------


class TemperatureSensor(Component):
    temperature_c: Celsius = 25.0
    max_temperature_c: Annotated[float, float32(-60, 250), Unit("°C"), Access.READ_WRITE] = 85.0
    fault: bool = False


class Fan(Component):
    state: DeviceState = DeviceState.STANDBY
    speed_rpm: Annotated[int, uint16(), Unit("rpm")] = 0
    duty_percent: Annotated[int, uint8(0, 100), Unit("%")] = 0
    operating_hours: Annotated[float, float32(0, 1e7), Unit("h")] = 0.0
    temperature_sensor: Annotated[dict[int, TemperatureSensor], Ids(uint8(1, 4), 4)] = {}


class PowerModule(Component):
    """The converter feeding one EVSE, with its cooling."""

    state: DeviceState = DeviceState.STANDBY
    output_power_w: Watts = 0.0
    output_voltage_v: Volts = 0.0
    output_current_a: Amps = 0.0
    efficiency_percent: Percent = 96.0
    temperature_c: Celsius = 25.0
    derating_active: bool = False
    fan: Annotated[dict[int, Fan], Ids(uint8(1, 8), 8)] = {}


# -- EVSE ---------------------------------------------------------------------------------------


class Connector(Component):
    type: ConnectorType = ConnectorType.TYPE2_SOCKET
    status: ConnectorStatus = ConnectorStatus.AVAILABLE
    max_current_a: Amps = 32.0
    max_voltage_v: Volts = 400.0
    locked: bool = False
    cable_attached: bool = False


class OperationalPermissions(Component):
    """Business decisions the CSMS hands down (IEC 63110 OperationalPermissionKind): the station
    keeps obeying the last ones it got while no CSMS is reachable."""

    may_charge: bool = True
    may_discharge: bool = False
    needs_authorisation: bool = True
    max_power_w: Watts = 22000.0
    max_current_a: Amps = 32.0
    valid_until: Timestamp | None = None
    reason: Text = ""


class ChargingSession(Component):
    """The current (or last) energy transfer session of an EVSE."""

    session_id: Name = ""
    state: SessionState = SessionState.IDLE
    protocol: ChargingProtocol = ChargingProtocol.NONE
    started_at: Timestamp | None = None
    ended_at: Timestamp | None = None
    energy_wh: Annotated[float, float64(0, 1e12), Unit("Wh")] = 0.0
    power_w: SignedWatts = 0.0
    soc_percent: Percent | None = None
    id_token: Name = ""
    ev_id: Name = ""
    departure_at: Timestamp | None = None


class Contactor(Component):
    """The main contactor switching the EVSE's power path."""

    closed: bool = False
    operation_count: Annotated[int, uint32()] = 0
    welded_detected: bool = False


class ResidualCurrentDevice(Component):
    """The RCD (type B / 6 mA DC detection) protecting the EVSE."""

    tripped: bool = False
    test_passed: bool = True
    last_test_at: Timestamp | None = None


FISCAL_METER_CODES = [
    "1-0:1.8.0", "1-0:2.8.0", "1-0:16.7.0",
    "1-0:21.7.0", "1-0:41.7.0", "1-0:61.7.0",
    "1-0:32.7.0", "1-0:52.7.0", "1-0:72.7.0",
    "1-0:31.7.0", "1-0:51.7.0", "1-0:71.7.0",
    "1-0:14.7.0", "1-0:13.7.0", "0-0:96.1.0",
]

FiscalMeter = obis.meter_component(
    "FiscalMeter",
    FISCAL_METER_CODES,
    doc="A calibrated meter exposing OBIS-coded registers.",
    extra={
        "signed_readings": (bool, True),
        "public_key_id": (Name, ""),
        "last_reading_at": (Timestamp | None, None),
    },
)


class EvseEnergy(Component):
    """The EVSE's energy transfer in the generic PEBC types (IEC 63110 / IEC 63402): the
    station maps whatever the EV speaks (IEC 61851, ISO 15118-20) to these, so a CSMS never
    needs to know. ``envelope`` is the CSMS's: the power range the EVSE must keep to (the
    station refuses one outside ``power_constraints``); ``limit_w`` is the upper limit the
    station obeys at this moment (the envelope's, its permissions' or its rating's)."""

    power_constraints: PowerConstraints | None = None
    energy_constraints: EnergyConstraints | None = None
    plan: EnergyTransferPlan | None = None
    envelope: Annotated[PowerRangeEnvelope | None, Access.READ_WRITE] = None
    limit_w: SignedWatts | None = None


class Evse(Component):
    """One EVSE: connectors, fiscal meter, session, permissions, energy transfer (PEBC) and
    power electronics."""

    status: EvseStatus = EvseStatus.AVAILABLE
    current_kind: CurrentKind = CurrentKind.AC
    phases: Annotated[int, uint8(1, 3)] = 3
    max_power_w: Watts = 22000.0
    connector: Annotated[dict[int, Connector], Ids(uint8(1, 4), 4)] = {}
    meter: FiscalMeter = Field(default_factory=FiscalMeter)  # type: ignore[valid-type]  # a model made at run time
    session: ChargingSession = ChargingSession()
    permissions: Annotated[OperationalPermissions, Access.READ_WRITE] = OperationalPermissions()
    energy: EvseEnergy = EvseEnergy()
    power_module: PowerModule = PowerModule()
    contactor: Contactor = Contactor()
    rcd: ResidualCurrentDevice = ResidualCurrentDevice()


# -- enclosure and grid connection ---------------------------------------------------------------


class Enclosure(Component):
    door_open: bool = False
    tilt_detected: bool = False
    humidity_percent: Percent = 40.0
    heater_on: bool = False
    temperature_sensor: Annotated[dict[int, TemperatureSensor], Ids(uint8(1, 8), 8)] = {}


GridMmxu = iec61850.logical_node("MMXU")
GridMmtr = iec61850.logical_node("MMTR")


class GridMeter(Component):
    """The station's grid connection meter, modelled with IEC 61850 logical nodes."""

    mmxu: GridMmxu | None = Field(default=None, alias=iec61850.segment("MMXU1"))  # type: ignore[valid-type]  # made at run time
    mmtr: GridMmtr | None = Field(default=None, alias=iec61850.segment("MMTR1"))  # type: ignore[valid-type]  # made at run time


class LogLevel(StrEnum):
    ERROR = "error"
    WARNING = "warning"
    INFO = "info"
    DEBUG = "debug"


class Diagnostics(Component):
    """Controller health."""

    uptime: Annotated[int, DURATION] = 0
    boot_count: Annotated[int, uint32()] = 1
    last_boot_reason: Name = "PowerUp"
    cpu_load_percent: Percent = 5.0
    memory_used_percent: Percent = 30.0
    storage_used_percent: Percent = 20.0
    log_level: Annotated[LogLevel, Access.READ_WRITE] = LogLevel.INFO


class TaskEntry(Component):
    """A long-running operation of the station (a monitoring task, a firmware update): what
    it is, where it stands, how it ended. Read-only remotely: ``TaskControl`` changes it."""

    kind: Name
    state: TaskState = TaskState.PENDING
    progress_percent: Percent = 0.0
    owner: Annotated[str, string(256)] = ""
    created_at: Timestamp = 0
    updated_at: Timestamp = 0
    started_at: Timestamp | None = None
    finished_at: Timestamp | None = None
    detail: Annotated[str, string(200)] = ""
    result: Annotated[str, string(200)] = ""
    error_code: Name = ""
    error: Annotated[str, string(500)] = ""
    spec: Annotated[str, string(65_536)] = ""


Register = Annotated[float, float64(0, 1e12), Unit("Wh")]


class TransactionRecord(Component):
    """One charging transaction as the station (an OCPP charger, through its gateway)
    reported it, kept in the tree so every CSMS's copy has it after any outage. Energy is the
    last register minus the baseline (``baseline_wh``: see ``actors.logic.ocpp.transactions``);
    ``seen`` holds 8-byte digests of the events applied, so a repeat is acknowledged and
    ignored."""

    transaction_id: Annotated[str, string(36)]
    evse: Annotated[int, uint16(0, 128)] = 0
    state: SessionState = SessionState.CHARGING
    started_at: Timestamp = 0
    ended_at: Timestamp | None = None
    updated_at: Timestamp = 0
    id_token: Name = ""
    baseline_wh: Register | None = None
    begin_register_wh: Register | None = None  # the Transaction.Begin sample
    begin_refused: bool = False  # not plausible: the baseline is the lowest other register
    prior_register_wh: Register | None = None  # the EVSE's meter before it started
    low_register_wh: Register | None = None  # the lowest (but Begin) the transaction reported
    low_register_at: Timestamp | None = None
    last_register_wh: Register | None = None  # the latest by time, at last_register_at
    last_register_at: Timestamp | None = None
    energy_wh: Annotated[float, float64(0, 1e12), Unit("Wh")] = 0.0
    stopped_reason: Name = ""
    remote_start_id: Annotated[int, uint32()] | None = None
    max_seq_no: Annotated[int, uint32()] = 0
    events: Annotated[int, uint32()] = 0
    offline_events: Annotated[int, uint32()] = 0
    seen: bytes = b""


class Station(Component):
    """A charging station's whole device model."""

    identity: Identity
    firmware: Firmware
    network: Network = Network()
    clock: Clock = Clock()
    security: Security = Security()
    permissions: Annotated[OperationalPermissions, Access.READ_WRITE] = OperationalPermissions()
    evse: Annotated[dict[int, Evse], Ids(uint16(1, 128), 128)] = {}
    enclosure: Enclosure = Enclosure()
    grid_meter: GridMeter = GridMeter()
    diagnostics: Diagnostics = Diagnostics()
    tasks: Annotated[dict[str, TaskEntry], Ids(string(64, TASK_ID), 256)] = {}
    transactions: Annotated[dict[str, TransactionRecord],
                            Ids(string(20, r"^t[0-9a-f]{16}$"), 64)] = {}
