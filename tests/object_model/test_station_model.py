"""The charging-station device model."""

from __future__ import annotations

from object_model.station import new_station, new_station_tree, station_writes


def test_a_two_evse_station_has_two_to_four_hundred_leaves() -> None:
    for dc in (False, True):
        tree = new_station_tree("cs-1", evse_count=2, dc=dc)
        assert 200 <= len(tree) <= 400, len(tree)


def test_the_model_nests_components_and_namespaces() -> None:
    tree = new_station_tree("cs-1")
    paths = {str(p) for p, _, _ in tree.leaves()}
    for expected in (
        "identity/serial_number",
        "firmware/version",
        "network/profiles/1/apn",
        "evse/2/connector/1/max_current_a",
        "evse/1/power_module/fan/2/temperature_sensor/1/temperature_c",
        "evse/1/power_module/com.acme:coolingLoop/flow_l_per_min",
        "evse/1/meter/obis:1-0:1.8.0",
        "evse/1/meter/obis:1-0:31.7.0",
        "evse/1/permissions/may_discharge",
        "permissions/needs_authorisation",
        "grid_meter/iec61850:MMXU1/PhV/phsA",
        "grid_meter/iec61850:MMTR1/TotWh",
    ):
        assert expected in paths, expected
    assert tree.get("evse/1/connector/1/type") == "sType2"


def test_stations_are_deterministic_per_seed_and_differ_between_ids() -> None:
    a = new_station_tree("cs-1", epoch=1)
    b = new_station_tree("cs-1", epoch=2)
    c = new_station_tree("cs-2", epoch=1)
    assert a.digest() == b.digest()
    assert a.digest() != c.digest()


def test_dc_stations_have_two_connectors_per_evse() -> None:
    station = new_station("cs-9", dc=True)
    assert all(len(e.connector) == 2 for e in station.evse.values())
    writes = station_writes(station)
    assert len(writes) == 1 + len(station.evse)
