"""What OCPP 2.0.1 spends to (re-)learn and monitor the same stations as our object model.

    python -m bench.ocpp_baseline [--json] [--items-per-message N]

Every leaf of a station tree becomes one OCPP component/variable; the figures are the OCPP-J
frames a charger and a CSMS exchange for ``GetBaseReport(FullInventory)`` (the only OCPP way to
re-learn a whole device model), each payload validated against the ``ocpp`` package's OCPP 2.0.1
JSON schemas (an invalid payload raises ``ValueError``).

Mapping rules (``ocpp_address``):
* The record holding a leaf picks the component (``evse/*/connector/*`` → ``Connector``,
  ``evse/*/meter`` → ``FiscalMetering``, ``clock`` → ``ClockCtrlr``...); EVSE-level
  components carry ``evse: {id}``, connector-level ones ``evse: {id, connectorId}``.
  Repeated elements without an OCPP address of their own use the component ``instance``
  (``NetworkConfiguration`` "0"/"1", ``AirCoolingSystem`` "Fan2", ``TemperatureSensor``
  "Fan2.1" / "Enclosure1", ``ElectricalFeed`` "MMXU1").
* Standardised variable names where one obviously fits (``AvailabilityState``, ``SupplyPhases``,
  ``ConnectorType``, ``Temperature``, ``FanSpeed``, ``Problem``, ``Tripped``, ``TimeZone``...);
  rated maxima are the same variable with instance "Maximum" (``Power[Maximum]``); OBIS
  registers use the OCPP measurand as variable and the OBIS code as instance; IEC 61850 data
  objects keep their names, the phase as instance; anything else is the leaf's name in
  CamelCase without its unit suffix (a custom variable, as OCPP allows).
* Values are text: booleans "true"/"false", timestamps RFC 3339 UTC, durations decimal seconds,
  float32 leaves their shortest single-precision text; enumerations are ``OptionList`` with
  their ``valuesList``. Characteristics hold only what OCPP requires (``dataType``,
  ``supportsMonitoring``) plus ``unit`` and ``valuesList``: no limits, so OCPP's figure is a
  lower bound.
* Access: ``read`` → ReadOnly, ``read_write`` → ReadWrite, ``write`` → WriteOnly without value
  (``supportsMonitoring`` false), ``none`` leaves are not reported at all (OCPP has no
  "hidden" mutability; a secret nobody may read or write is not part of the device model).
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import json
import math
import re
import struct
import time
import uuid
import zlib
from datetime import UTC, datetime, timedelta
from typing import Any

from ocpp.messages import get_validator

from keypath import KeyPath
from object_model import ObjectTree
from object_model.access import PropertyAccessKind as Access
from object_model.schema import LeafSchema
from object_model.station import new_station_tree
from object_model.types import BoolType, DurationType, EnumType, FloatType, IntType, TimestampType

OCPP_VERSION = "2.0.1"
ITEMS_PER_MESSAGE = 20  # DeviceDataCtrlr.ItemsPerMessage[GetReport]: a typical charger setting
HEARTBEAT_INTERVAL_S = 300
_CALL, _RESULT = 2, 3

# The component of a record: generic record path (ids as "*") → "Name[instance template]";
# templates take the record's ids in order ({0} = first id).
COMPONENTS: dict[str, str] = {
    "identity": "ChargingStation", "identity/location": "ChargingStation",
    "firmware": "Controller", "diagnostics": "Controller", "network": "OCPPCommCtrlr",
    "network/profiles/*": "NetworkConfiguration[{0}]", "network/link": "DataLink",
    "clock": "ClockCtrlr", "security": "SecurityCtrlr", "permissions": "OperationalPermissions",
    "evse/*": "EVSE", "evse/*/connector/*": "Connector", "evse/*/meter": "FiscalMetering",
    "evse/*/session": "ChargingSession", "evse/*/permissions": "OperationalPermissions",
    "evse/*/power_module": "AcDcConverter", "evse/*/power_module/fan/*": "AirCoolingSystem[Fan{1}]",
    "evse/*/power_module/fan/*/temperature_sensor/*": "TemperatureSensor[Fan{1}.{2}]",
    "evse/*/contactor": "PowerContactor", "evse/*/rcd": "RCD", "enclosure": "Enclosure",
    "enclosure/temperature_sensor/*": "TemperatureSensor[Enclosure{0}]",
}

# Variable names: "[Component|]Variable[[Instance]]", by generic leaf path, then by leaf name.
VARIABLES: dict[str, str] = {
    "identity/station_id": "SecurityCtrlr|Identity", "identity/hardware_revision": "ECVariant",
    "firmware/version": "FirmwareVersion", "firmware/built_at": "VersionDate",
    "firmware/bootloader_version": "VersionNumber[Bootloader]",
    "network/active_profile": "ActiveNetworkProfile",
    "network/profiles/*/transport": "OcppInterface",
    "network/profiles/*/apn_user": "ApnUserName",
    "network/link/online": "Active", "network/link/rtt_ms": "RoundTripTime",
    "network/link/ip_address": "NetworkAddress[IP]",
    "network/link/mac_address": "NetworkAddress[MAC]",
    "clock/ntp_server": "NtpServerUri", "evse/*/phases": "SupplyPhases",
    "evse/*/connector/*/type": "ConnectorType",
    "evse/*/connector/*/locked": "ConnectorPlugRetentionLock|Active",
    "evse/*/session/session_id": "TransactionId",
    "evse/*/session/protocol": "ConnectedEV|ProtocolAgreed",
    "evse/*/session/soc_percent": "ConnectedEV|StateOfCharge",
    "evse/*/session/ev_id": "ConnectedEV|VehicleId",
    "evse/*/session/departure_at": "ConnectedEV|DepartureTime",
    "evse/*/power_module/output_power_w": "Power",
    "evse/*/power_module/output_voltage_v": "Voltage",
    "evse/*/power_module/output_current_a": "Current",
    "evse/*/power_module/fan/*/speed_rpm": "FanSpeed",
    "enclosure/door_open": "CaseAccessSensor|Active", "enclosure/heater_on": "Heater|Active",
    "enclosure/tilt_detected": "TiltSensor|Active",
    "enclosure/humidity_percent": "HumiditySensor|Humidity",
    "status": "AvailabilityState", "max_power_w": "Power[Maximum]",
    "max_current_a": "Current[Maximum]", "max_voltage_v": "Voltage[Maximum]",
    "max_temperature_c": "Temperature[Maximum]", "temperature_c": "Temperature",
    "power_w": "Power", "fault": "Problem",
}

# OBIS registers: the OCPP measurand they carry (the OBIS code becomes the variable instance).
OBIS_MEASURANDS = {
    "1.8.0": "Energy.Active.Import.Register", "2.8.0": "Energy.Active.Export.Register",
    "16.7.0": "Power.Active.Import", "21.7.0": "Power.Active.Import",
    "41.7.0": "Power.Active.Import", "61.7.0": "Power.Active.Import",
    "32.7.0": "Voltage", "52.7.0": "Voltage", "72.7.0": "Voltage",
    "31.7.0": "Current.Import", "51.7.0": "Current.Import", "71.7.0": "Current.Import",
    "14.7.0": "Frequency", "13.7.0": "Power.Factor", "96.1.0": "SerialNumber",
}
UNITS = {"°C": "Celsius", "%": "Percent"}  # OCPP UnitOfMeasure spellings; others unchanged
_UNIT_SUFFIXES = ("_l_per_min", "_percent", "_dbm", "_rpm", "_bar", "_wh", "_ms", "_w", "_a",
                  "_v", "_c")
VENDOR_COMPONENTS = {"coolingLoop": "LiquidCoolingSystem"}
_SPEC = re.compile(r"(?:(\w+)\|)?([\w.]+)(?:\[(.+)\])?")
_MUTABILITY = {Access.READ: "ReadOnly", Access.READ_WRITE: "ReadWrite", Access.WRITE: "WriteOnly"}
_f32 = struct.Struct("<f")


def ocpp_address(path: KeyPath | str) -> tuple[dict[str, Any], dict[str, Any]]:
    """OCPP ``(component, variable)`` of a leaf of a station tree (see the module's rules)."""
    segs = KeyPath.parse(str(path)).segments
    generic = [("*" if s.isdigit() else s) for s in segs]
    ids = [s for s in segs if s.isdigit()]
    ns = next((i for i, s in enumerate(segs) if ":" in s), None)
    prefix, _, name = segs[ns].partition(":") if ns is not None else ("", "", "")
    comp: tuple[str | None, ...] = (None, None)
    if prefix == "obis":  # the OCPP measurand, the OBIS code as instance
        record = "/".join(generic[:ns])
        var = (OBIS_MEASURANDS.get(name.split(":")[-1], "Register"), name)
    elif prefix == "iec61850":  # the logical node as instance, data object, phase as instance
        rest = [*segs[ns + 1 :], None]  # type: ignore[operator]
        comp, var = ("ElectricalFeed", name), (rest[0], rest[1])
    elif prefix:  # a vendor record: named after its standard counterpart, vendor as instance
        comp = (VENDOR_COMPONENTS.get(name, _camel(name)), prefix)
        var = (_camel(segs[-1]), None)
    else:
        record, leaf = "/".join(generic[:-1]), segs[-1]
        spec = VARIABLES.get("/".join(generic)) or VARIABLES.get(leaf) or _camel(leaf)
        comp_name, *var = _SPEC.fullmatch(spec).groups()  # type: ignore[union-attr]
        comp = (comp_name, None)
    if comp[0] is None:
        fallback = _camel(record.replace("/*", "").split("/")[-1]) + "[{}]" * len(ids)
        spec = COMPONENTS.get(record) or fallback.replace("][", ".")
        _, comp_name, inst = _SPEC.fullmatch(spec).groups()  # type: ignore[union-attr]
        comp = (comp_name, inst.format(*ids) if inst else None)
    component: dict[str, Any] = {"name": comp[0]}
    if comp[1]:
        component["instance"] = comp[1]
    if segs[0] == "evse" and len(segs) > 2:
        component["evse"] = {"id": int(segs[1])}
        if segs[2] == "connector" and len(segs) > 4:
            component["evse"]["connectorId"] = int(segs[3])
    return component, ({"name": var[0], "instance": var[1]} if var[1] else {"name": var[0]})


def _camel(name: str) -> str:
    for suffix in _UNIT_SUFFIXES:
        if name.endswith(suffix):
            name = name[: -len(suffix)]
            break
    return "".join(part[:1].upper() + part[1:] for part in name.split("_") if part)


def rfc3339(micros: int) -> str:
    """Microseconds since the epoch as RFC 3339 UTC text (fractions only when present)."""
    moment = datetime(1970, 1, 1, tzinfo=UTC) + timedelta(microseconds=micros)
    frac = f".{moment.microsecond:06d}".rstrip("0") if moment.microsecond else ""
    return moment.strftime("%Y-%m-%dT%H:%M:%S") + frac + "Z"


OCPP_VALUE_CHARS = 2500
"""The longest ``variableAttribute.value`` OCPP 2.0.1 allows."""


def ocpp_value(leaf: LeafSchema, value: Any) -> tuple[str, dict[str, Any]]:
    """A value as OCPP text, with its ``variableCharacteristics`` (dataType, unit, valuesList)."""
    vt = leaf.value_type
    chars: dict[str, Any] = {}
    if isinstance(vt, BoolType) or type(value) is bool:
        text, kind = ("true" if value else "false"), "boolean"
    elif isinstance(vt, TimestampType):
        text, kind = rfc3339(value), "dateTime"
    elif isinstance(vt, DurationType):
        text, kind, chars["unit"] = _decimal(value / 1e6, False), "decimal", "s"
    elif isinstance(vt, EnumType):
        text, kind, chars["valuesList"] = str(value), "OptionList", ",".join(vt.values)
    elif isinstance(vt, IntType) or type(value) is int:
        text, kind = str(value), "integer"
    elif isinstance(vt, FloatType) or type(value) is float:
        text, kind = _decimal(value, getattr(vt, "single", False)), "decimal"
    elif type(value) is str:
        text, kind = value, "string"
    elif type(value) is bytes:  # OCPP has no bytes: base64 text; a certificate, by its hash
        text, kind = base64.b64encode(value).decode(), "string"
        if len(text) > OCPP_VALUE_CHARS:  # what GetInstalledCertificateIds tells of it
            text = hashlib.sha256(value).hexdigest()
    else:  # complex or untyped values: compact JSON text
        text, kind = json.dumps(value, separators=(",", ":"), default=str), "string"
    if leaf.unit:
        chars["unit"] = UNITS.get(leaf.unit, leaf.unit)
    return text, {"dataType": kind, **chars}


def _decimal(value: float, single: bool) -> str:
    """Shortest text that reads back as the same float32 (``single``) or float64."""
    if single and math.isfinite(value):
        for digits in range(6, 10):
            text = f"{value:.{digits}g}"
            if _f32.unpack(_f32.pack(float(text)))[0] == value:
                return repr(float(text))
    return repr(float(value))


def report_data(tree: ObjectTree) -> list[dict[str, Any]]:
    """One OCPP ``ReportData`` per leaf of ``tree`` whose access is not ``none``, in tree order
    (``ValueError`` when two leaves map to the same component/variable)."""
    out, seen = [], {}
    for path, _, value in tree.leaves():
        leaf = tree.schema.resolve(path)
        if leaf.access is Access.NONE:
            continue
        component, variable = ocpp_address(path)
        key = json.dumps([component, variable], sort_keys=True)
        if key in seen:
            raise ValueError(f"{path} and {seen[key]} both map to {key}")
        seen[key] = path
        text, chars = ocpp_value(leaf, value)  # type: ignore[arg-type]
        attribute: dict[str, Any] = {"type": "Actual", "mutability": _MUTABILITY[leaf.access]}
        if leaf.access.readable:  # a value too long for OCPP fails the schema check
            attribute["value"] = text
        out.append({"component": component, "variable": variable,
                    "variableAttribute": [attribute],
                    "variableCharacteristics": {**chars,
                                                "supportsMonitoring": leaf.access.readable}})
    return out


# -- frames, validation, sizes --------------------------------------------------------------------


def validate(action: str, payload: dict[str, Any], *, response: bool = False) -> None:
    """Check ``payload`` against the ``ocpp`` package's OCPP 2.0.1 schema of ``action``'s request
    (or response), date-time fields included; raise ``ValueError`` listing every error."""
    validator = get_validator(_RESULT if response else _CALL, action, OCPP_VERSION)
    errors = [f"{'/'.join(map(str, e.absolute_path))}: {e.message}"
              for e in validator.iter_errors(payload)]
    errors += [f"{where}: {text!r} is not RFC 3339" for where, text in _datetimes(payload)
               if not _RFC3339.fullmatch(text)]
    if errors:
        kind = "Response" if response else "Request"
        raise ValueError(f"invalid {action}{kind}: " + "; ".join(errors[:10]))


_RFC3339 = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?(Z|[+-]\d\d:\d\d)")
_DATETIME_FIELDS = {"generatedAt", "timestamp", "currentTime"}  # format: date-time in 2.0.1


def _datetimes(node: Any, where: str = "") -> list[tuple[str, str]]:
    if isinstance(node, list):
        return [hit for i, item in enumerate(node) for hit in _datetimes(item, f"{where}/{i}")]
    if not isinstance(node, dict):
        return []
    hits = [(f"{where}/{k}", v) for k, v in node.items() if k in _DATETIME_FIELDS]
    return hits + [hit for k, v in node.items() for hit in _datetimes(v, f"{where}/{k}")]


def _encode(frame: list[Any]) -> bytes:
    return json.dumps(frame, separators=(",", ":"), ensure_ascii=False).encode()


def json_bytes(frame: list[Any]) -> int:
    """Bytes of an OCPP-J frame as a WebSocket text message carries it (compact JSON)."""
    return len(_encode(frame))


def _call(station_id: str, action: str, n: int, payload: dict[str, Any]) -> list[Any]:
    """A validated CALL; its id is a deterministic UUID, as long as the random ones chargers use."""
    validate(action, payload)
    return [_CALL, str(uuid.uuid5(uuid.NAMESPACE_URL, f"ocpp:{station_id}:{action}:{n}")),
            action, payload]


def _result(call: list[Any], payload: dict[str, Any]) -> list[Any]:
    validate(call[2], payload, response=True)
    return [_RESULT, call[1], payload]


def _now(now_us: int | None) -> str:
    return rfc3339((time.time_ns() // 1000 if now_us is None else now_us) // 1_000_000 * 1_000_000)


def full_report_messages(tree: ObjectTree, *, station_id: str, request_id: int = 1,
                         items_per_message: int = ITEMS_PER_MESSAGE,
                         now_us: int | None = None) -> list[list[Any]]:
    """The NotifyReport CALL frames a charger sends for ``GetBaseReport(FullInventory)``:
    at most ``items_per_message`` reportData each, ``seqNo`` 0.., ``tbc`` on all but the last."""
    data, generated_at, n = report_data(tree), _now(now_us), items_per_message
    chunks = [data[i : i + n] for i in range(0, len(data), n)]
    return [_call(station_id, "NotifyReport", seq,
                  {"requestId": request_id, "generatedAt": generated_at, "reportData": chunk,
                   "seqNo": seq, **({"tbc": True} if seq < len(chunks) - 1 else {})})
            for seq, chunk in enumerate(chunks)]


def minimal_exchange(tree: ObjectTree, *, station_id: str,
                     now_us: int | None = None) -> list[tuple[str, list[Any]]]:
    """BootNotification and one StatusNotification per connector, with the CSMS's answers, as
    ``(sender, frame)`` with sender "cs" (charger) or "csms"; texts cut to OCPP's lengths."""
    ts, get = _now(now_us), (lambda p: str(tree.get(p)) if p in tree else "")
    reason = get("diagnostics/last_boot_reason")
    station = {"model": get("identity/model")[:20] or "unknown",
               "vendorName": get("identity/vendor_name")[:50] or "unknown",
               "serialNumber": get("identity/serial_number")[:25],
               "firmwareVersion": get("firmware/version")[:50]}
    boot = _call(station_id, "BootNotification", 0,
                 {"chargingStation": {k: v for k, v in station.items() if v},
                  "reason": reason if reason in BOOT_REASONS else "Unknown"})
    out = [("cs", boot), ("csms", _result(boot, {"currentTime": ts, "status": "Accepted",
                                                 "interval": HEARTBEAT_INTERVAL_S}))]
    for n, (path, _, status) in enumerate(tree.find("evse/*/connector/*/status")):
        call = _call(station_id, "StatusNotification", n,
                     {"timestamp": ts, "connectorStatus": status,
                      "evseId": int(path.segments[1]), "connectorId": int(path.segments[3])})
        out += [("cs", call), ("csms", _result(call, {}))]
    return out


BOOT_REASONS = {"ApplicationReset", "FirmwareUpdate", "LocalReset", "PowerUp", "RemoteReset",
                "ScheduledReset", "Triggered", "Unknown", "Watchdog"}


def full_report_exchange(tree: ObjectTree, *, station_id: str, request_id: int = 1,
                         items_per_message: int = ITEMS_PER_MESSAGE,
                         now_us: int | None = None) -> list[tuple[str, list[Any]]]:
    """The whole exchange in wire order: GetBaseReport and its answer, then each NotifyReport
    and the CSMS's empty CALLRESULT; ``(sender, frame)`` pairs."""
    get = _call(station_id, "GetBaseReport", 0,
                {"requestId": request_id, "reportBase": "FullInventory"})
    out = [("csms", get), ("cs", _result(get, {"status": "Accepted"}))]
    for frame in full_report_messages(tree, station_id=station_id, request_id=request_id,
                                      items_per_message=items_per_message, now_us=now_us):
        out += [("cs", frame), ("csms", _result(frame, {}))]
    return out


def deflated_sizes(exchange: list[tuple[str, list[Any]]]) -> list[int]:
    """permessage-deflate (RFC 7692) with context takeover: one raw-deflate stream per direction,
    each message flushed with Z_SYNC_FLUSH and its trailing 00 00 ff ff removed."""
    streams: dict[str, Any] = {}
    sizes = []
    for sender, frame in exchange:
        stream = streams.setdefault(sender, zlib.compressobj(wbits=-15))
        data = stream.compress(_encode(frame)) + stream.flush(zlib.Z_SYNC_FLUSH)
        assert data.endswith(b"\x00\x00\xff\xff")
        sizes.append(len(data) - 4)
    return sizes


def full_report_bytes(tree: ObjectTree, station_id: str, *,
                      items_per_message: int = ITEMS_PER_MESSAGE,
                      now_us: int | None = None) -> dict[str, Any]:
    """Bytes OCPP 2.0.1 spends to re-learn ``tree``: the full report exchange (payload bytes of
    all WebSocket messages, both directions), deflated, and the minimal boot exchange."""
    exchange = full_report_exchange(tree, station_id=station_id,
                                    items_per_message=items_per_message, now_us=now_us)
    sizes = [len(_encode(frame)) for _, frame in exchange]
    minimal = minimal_exchange(tree, station_id=station_id, now_us=now_us)
    reports = [f for _, f in exchange if f[0] == _CALL and f[2] == "NotifyReport"]
    variables = sum(len(f[3]["reportData"]) for f in reports)
    return {
        "messages": len(reports),
        "report_data": variables,
        "items_per_message": items_per_message,
        "json_bytes": sum(sizes),
        "json_bytes_per_variable": round(sum(sizes) / max(variables, 1), 1),
        "deflated_bytes": sum(deflated_sizes(exchange)),
        "minimal_bytes": sum(len(_encode(f)) for _, f in minimal),
        "minimal_deflated_bytes": sum(deflated_sizes(minimal)),
    }


def event_data(path: KeyPath | str, value: Any, *, tree: ObjectTree, at_us: int,
               trigger: str = "Delta", event_id: int = 1, monitor_id: int = 1) -> dict[str, Any]:
    """One OCPP ``EventData``: a custom monitor on ``path`` fired with ``value`` at ``at_us``
    (timestamp to the millisecond; ``value`` is checked against the leaf's type first)."""
    leaf = tree.schema.resolve(path)
    text, _ = ocpp_value(leaf, leaf.value_type.validate(value))  # type: ignore[union-attr]
    component, variable = ocpp_address(path)
    return {"eventId": event_id, "timestamp": rfc3339(at_us // 1000 * 1000), "trigger": trigger,
            "actualValue": text, "component": component, "variable": variable,
            "variableMonitoringId": monitor_id, "eventNotificationType": "CustomMonitor"}


def notify_events_message(events: list[dict[str, Any]], *, station_id: str, seq: int = 0,
                          now_us: int | None = None) -> list[Any]:
    """The NotifyEvent CALL carrying ``events`` (``event_data`` entries; validated)."""
    return _call(station_id, "NotifyEvent", events[0]["eventId"],
                 {"generatedAt": _now(now_us), "seqNo": seq, "eventData": events})


def notify_event_message(path: KeyPath | str, value: Any, *, tree: ObjectTree, station_id: str,
                         trigger: str = "Delta", event_id: int = 1, monitor_id: int = 1,
                         now_us: int | None = None) -> list[Any]:
    """The NotifyEvent CALL a charger sends when a custom monitor on ``path`` fires with
    ``value`` (validated; ``value`` is checked against the leaf's type first)."""
    at = (time.time_ns() // 1000 if now_us is None else now_us) // 1_000_000 * 1_000_000
    event = event_data(path, value, tree=tree, at_us=at, trigger=trigger, event_id=event_id,
                       monitor_id=monitor_id)
    return notify_events_message([event], station_id=station_id, now_us=now_us)


def notify_event_bytes(path: KeyPath | str, value: Any, *, tree: ObjectTree, station_id: str,
                       trigger: str = "Delta", now_us: int | None = None) -> int:
    """Bytes of the NotifyEvent CALL reporting one monitored change of ``path`` (the CSMS's
    ``[3, id, {}]`` answer adds 45 more)."""
    return len(_encode(notify_event_message(path, value, tree=tree, station_id=station_id,
                                            trigger=trigger, now_us=now_us)))


def measure(items_per_message: int = ITEMS_PER_MESSAGE) -> dict[str, Any]:
    """The figures for a 2-EVSE and a 3-EVSE AC station and per-sample NotifyEvent bytes."""
    now = 1_750_000_000_000_000
    out: dict[str, Any] = {}
    for evses in (2, 3):
        station = f"cs-{evses}evse" if evses != 2 else "cs-1"
        tree = new_station_tree(station, evse_count=evses)
        out[f"full_report_{evses}_evse"] = {"leaves": len(tree), **full_report_bytes(
            tree, station, items_per_message=items_per_message, now_us=now)}
    tree = new_station_tree("cs-1")
    out["notify_event_bytes"] = {
        path: notify_event_bytes(path, value, tree=tree, station_id="cs-1", now_us=now)
        for path, value in (("evse/1/meter/obis:1-0:1.8.0", 1963712.5),
                            ("evse/1/power_module/temperature_c", 41.5),
                            ("evse/1/connector/1/status", "Occupied"))
    }
    return out


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", action="store_true", help="print the figures as JSON")
    parser.add_argument("--items-per-message", type=int, default=ITEMS_PER_MESSAGE)
    args = parser.parse_args(argv)
    figures = measure(args.items_per_message)
    if args.json:
        print(json.dumps(figures, indent=2))
        return
    for key, table in figures.items():
        print(f"OCPP 2.0.1 {key.replace('_', ' ')}:")
        for name, value in table.items():
            print(f"  {name:40} {value:>10,}")


if __name__ == "__main__":
    main()
