"""Assembling a station's schema, access policy and initial state."""

from __future__ import annotations

import functools
import random
from typing import Any

from object_model.access import AccessPolicy, Grant, Role
from object_model.importers import iec61850, obis
from object_model.schema import SchemaRegistry
from object_model.station import ocpp_namespace, vendor_acme
from object_model.station.components import (
    ChargingSession,
    Clock,
    Connector,
    ConnectorType,
    CurrentKind,
    Enclosure,
    Evse,
    Fan,
    Firmware,
    GeoLocation,
    GridMeter,
    GridMmtr,
    GridMmxu,
    Identity,
    LinkStatus,
    Network,
    NetworkProfile,
    PowerModule,
    Security,
    Station,
    TemperatureSensor,
)
from object_model.tree import ObjectTree, Write


def station_schema(*, vendor_extensions: bool = True) -> SchemaRegistry:
    """The schema of our simulated stations: the standard model, the OBIS and IEC 61850
    namespaces and (by default) ACME's cooling loop extension."""
    namespaces = [obis.NAMESPACE, iec61850.NAMESPACE, ocpp_namespace.NAMESPACE]
    if vendor_extensions:
        namespaces.append(vendor_acme.NAMESPACE)
    registry = SchemaRegistry(Station, namespaces)
    ocpp_namespace.install(registry)
    if vendor_extensions:
        vendor_acme.install(registry)
    return registry


@functools.cache
def shared_station_schema(*, vendor_extensions: bool = True) -> SchemaRegistry:
    """``station_schema``, compiled once per process and shared by every station tree made
    here (compiling it takes milliseconds, and a host starts hundreds of stations). Never
    ``extend`` it: make your own with ``station_schema``."""
    return station_schema(vendor_extensions=vendor_extensions)


LINK_CREDENTIALS = tuple(f"network/profiles/*/{name}" for name in (
    "ssid", "wifi_password", "apn", "apn_user", "apn_password"))
"""What an operator may write of a station's network profiles: the secrets are write-only,
sealed to the station by their writer (``actors.logic.sealed_values``)."""


OCPP_SETTINGS = "ocpp:dm/*/*/*/value"
"""An OCPP charger's device-model settings: an operator may write them (SetVariables); the
charger says which it takes, and the gateway keeps those it owns (``actors.logic.ocpp``)."""


OPERATOR_WRITES = ("identity/display_name", "identity/location/**", "permissions/**",
                   "evse/*/permissions/**", *LINK_CREDENTIALS, OCPP_SETTINGS)
"""What an operator may write of a station (at the station, and through any CSMS)."""


@functools.cache
def station_access_policy() -> AccessPolicy:
    """Who may read and write what in a station's tree (the nodes' access kinds apply too);
    one instance, shared by every station of a process.

    The local and cloud CSMS manage the station: they read everything readable and write
    everything writable. An operator reads everything but only writes names, locations,
    permissions and the credentials of the station's links (``LINK_CREDENTIALS``: not where
    the links lead). The site's resource manager sees energy data only. Another station sees
    nothing.
    """
    readable_energy = (
        "identity/max_power_w",
        "evse/*/max_power_w",
        "evse/*/phases",
        "evse/*/status",
        "evse/*/meter/**",
        "evse/*/session/power_w",
        "evse/*/session/energy_wh",
        "evse/*/energy/**",
        "grid_meter/**",
    )
    manage = Grant(read=("**",), write=("**",))
    return AccessPolicy(
        {
            Role.LOCAL_CSMS: manage,
            Role.CLOUD_CSMS: manage,
            Role.OPERATOR: Grant(read=("**",), write=OPERATOR_WRITES),
            Role.RESOURCE_MANAGER: Grant(read=readable_energy),
        }
    )


def new_station(
    station_id: str,
    *,
    evse_count: int = 2,
    dc: bool = False,
    now_us: int = 0,
    seed: int | None = None,
) -> Station:
    """A realistic factory-fresh station model (values as a real one reports after boot).

    Deterministic for a given ``seed`` (default: derived from ``station_id``); ``now_us`` is the
    current time in microseconds, passed in because this layer never reads the clock.
    """
    rng = random.Random(seed if seed is not None else station_id)
    serial = f"AC{rng.randrange(10**8):08d}"
    max_evse_w = 150_000.0 if dc else 22_000.0
    evses = {
        i: _new_evse(rng, i, dc=dc, max_power_w=max_evse_w) for i in range(1, evse_count + 1)
    }
    return Station(
        identity=Identity(
            station_id=station_id,
            vendor_name="ACME Charging",
            model="Volt DC-150" if dc else "Volt AC-22",
            serial_number=serial,
            hardware_revision="C",
            manufactured_at=max(0, now_us - 400 * 86_400_000_000),
            evse_count=evse_count,
            max_power_w=max_evse_w * evse_count,
            display_name=f"Station {station_id}",
            location=GeoLocation(
                latitude=round(50.8 + rng.random(), 6),
                longitude=round(4.3 + rng.random(), 6),
                address=f"{rng.randrange(1, 200)} Rue de la Loi, Brussels",
            ),
        ),
        firmware=Firmware(version="4.2.1", bootloader_version="1.3.0",
                          built_at=max(0, now_us - 90 * 86_400_000_000)),
        network=Network(
            active_profile=0,
            profiles={
                0: NetworkProfile(transport="ethernet", broker_host="broker.site.local",
                                  xmpp_domain="site.local"),
                1: NetworkProfile(transport="cellular", broker_host="broker.cloud.example",
                                  xmpp_domain="cloud.example", priority=1,
                                  apn="iot.example", apn_user="station"),
            },
            link=LinkStatus(online=False, transport="ethernet",
                            ip_address=f"10.0.{rng.randrange(256)}.{rng.randrange(1, 255)}",
                            mac_address=":".join(f"{rng.randrange(256):02x}" for _ in range(6))),
        ),
        clock=Clock(time_zone="Europe/Brussels"),
        security=Security(certificate_serial=f"{rng.getrandbits(64):016x}",
                          certificate_expires_at=now_us + 365 * 86_400_000_000),
        evse=evses,
        enclosure=Enclosure(
            temperature_sensor={1: TemperatureSensor(temperature_c=round(18 + 4 * rng.random(), 1)),
                                2: TemperatureSensor(temperature_c=round(18 + 4 * rng.random(), 1))},
        ),
        # the logical nodes' fields are made at run time, unknown to the type checker: pass data
        grid_meter=GridMeter(
            mmxu=GridMmxu.model_validate({
                "TotW": 0.0, "TotVAr": 0.0, "TotVA": 0.0, "TotPF": 1.0, "Hz": 50.0,
                "PhV": {"phsA": 230.0, "phsB": 230.0, "phsC": 230.0},
                "A": {"phsA": 0.0, "phsB": 0.0, "phsC": 0.0},
                "W": {"phsA": 0.0, "phsB": 0.0, "phsC": 0.0}}),
            mmtr=GridMmtr.model_validate({"TotWh": 0.0, "SupWh": 0.0, "DmdWh": 0.0}),
        ),
    )


def _new_evse(rng: random.Random, evse_id: int, *, dc: bool, max_power_w: float) -> Evse:
    connectors = (
        {1: Connector(type=ConnectorType.CCS2, max_current_a=200.0, max_voltage_v=920.0),
         2: Connector(type=ConnectorType.CHADEMO, max_current_a=125.0, max_voltage_v=500.0)}
        if dc
        else {1: Connector(type=ConnectorType.TYPE2_SOCKET, max_current_a=32.0)}
    )
    fans = {
        f: Fan(temperature_sensor={1: TemperatureSensor(temperature_c=round(25 + 5 * rng.random(), 1))})
        for f in (1, 2)
    }
    meter: dict[str, Any] = {
        "obis:0-0:96.1.0": f"MTR{rng.randrange(10**7):07d}",
        "obis:1-0:1.8.0": round(rng.uniform(1e5, 5e6), 1),
        "obis:1-0:2.8.0": 0.0,
        "obis:1-0:16.7.0": 0.0,
        "obis:1-0:14.7.0": 50.0,
        "obis:1-0:13.7.0": 1.0,
        "public_key_id": f"key-{evse_id}",
    }
    for code in ("32.7.0", "52.7.0", "72.7.0"):
        meter[f"obis:1-0:{code}"] = round(rng.uniform(228, 232), 1)
    for code in ("31.7.0", "51.7.0", "71.7.0", "21.7.0", "41.7.0", "61.7.0"):
        meter[f"obis:1-0:{code}"] = 0.0
    return Evse.model_validate({
        "current_kind": CurrentKind.DC if dc else CurrentKind.AC,
        "phases": 3,
        "max_power_w": max_power_w,
        "connector": connectors,
        "meter": meter,
        "session": ChargingSession(),
        "permissions": {"max_power_w": max_power_w,
                        "max_current_a": 200.0 if dc else 32.0},
        "power_module": PowerModule(fan=fans),
    })


def station_writes(station: Station, *, vendor_extensions: bool = True) -> list[Write]:
    """The writes that load ``station`` into an empty tree (one transaction)."""
    writes = [Write("", station.model_dump(by_alias=True, exclude_none=True))]
    if vendor_extensions:
        for evse_id in station.evse:
            writes.append(
                Write(f"evse/{evse_id}/power_module/{vendor_acme.COOLING_LOOP}",
                      vendor_acme.CoolingLoop().model_dump())
            )
    return writes


def new_station_tree(
    station_id: str, *, evse_count: int = 2, dc: bool = False, now_us: int = 0,
    seed: int | None = None, epoch: int | None = None, vendor_extensions: bool = True,
) -> ObjectTree:
    """A station tree loaded with ``new_station``: the usual way to get a realistic tree."""
    tree = ObjectTree(shared_station_schema(vendor_extensions=vendor_extensions), epoch=epoch)
    station = new_station(station_id, evse_count=evse_count, dc=dc, now_us=now_us, seed=seed)
    tree.apply(station_writes(station, vendor_extensions=vendor_extensions))
    return tree
