"""Schema registry: declared types anywhere, namespaces, vendor extensions, inference."""

from __future__ import annotations

from typing import Annotated

import pytest

from keypath import KeyPath
from object_model import Component, ErrorCode, ModelError, Namespace, SchemaRegistry
from object_model.importers import obis
from object_model.schema import CollectionSchema, LeafSchema, RecordSchema
from object_model.station import station_schema
from object_model.station.vendor_acme import CoolingLoop
from object_model.types import FloatType, float32


@pytest.fixture(scope="module")
def schema() -> SchemaRegistry:
    return station_schema()


def code_of(fn, *args) -> ErrorCode:  # type: ignore[no-untyped-def]
    with pytest.raises(ModelError) as info:
        fn(*args)
    return info.value.code


def test_declared_types_inside_collections(schema: SchemaRegistry) -> None:
    leaf = schema.resolve("evse/7/connector/3/max_current_a")
    assert isinstance(leaf, LeafSchema) and leaf.unit == "A"
    assert leaf.value_type.describe() == {"type": "float32", "min": 0.0, "max": 1000.0}
    assert isinstance(schema.resolve("evse"), CollectionSchema)
    assert isinstance(schema.resolve("evse/7"), RecordSchema)
    deep = schema.type_at("evse/1/power_module/fan/2/temperature_sensor/1/temperature_c")
    assert isinstance(deep, FloatType) and deep.native == "float32"
    assert schema.type_at("evse/1/meter/obis:1-0:1.8.0").describe()["type"] == "float64"
    assert schema.resolve("grid_meter/iec61850:MMXU1/PhV/phsA").unit == "V"


def test_each_kind_of_unknown_gets_its_own_error(schema: SchemaRegistry) -> None:
    assert code_of(schema.resolve, "evse/1/connectr") is ErrorCode.UNKNOWN_PATH
    assert code_of(schema.resolve, "evse/x/status") is ErrorCode.UNKNOWN_PATH
    assert code_of(schema.resolve, "evse/01/status") is ErrorCode.UNKNOWN_PATH
    assert code_of(schema.resolve, "evse/1/status/deeper") is ErrorCode.UNKNOWN_PATH
    assert code_of(schema.resolve, "evse/1/com.other:pump") is ErrorCode.UNKNOWN_NAMESPACE
    assert code_of(schema.resolve, "evse/1/obis:9-9:9.9.9") is ErrorCode.UNKNOWN_PATH
    assert code_of(schema.resolve, "evse//1") is ErrorCode.INVALID_KEYPATH
    with pytest.raises(ModelError) as info:
        schema.resolve("evse/1/connectr")
    assert "did you mean 'connector'" in info.value.text
    assert info.value.path == "evse/1/connectr"


def test_type_inference_from_text(schema: SchemaRegistry) -> None:
    assert schema.parse_value("evse/1/connector/1/max_current_a", "16") == 16.0
    assert schema.parse_value("permissions/may_charge", "false") is False
    assert schema.parse_value("evse/1/phases", "1") == 1
    assert schema.parse_value("evse/1/status", "Charging") == "Charging"
    assert code_of(schema.parse_value, "evse/1/phases", "three") is ErrorCode.WRONG_TYPE
    assert code_of(schema.parse_value, "evse/1/phases", "4") is ErrorCode.OUT_OF_RANGE
    assert code_of(schema.parse_value, "evse/1", "4") is ErrorCode.UNKNOWN_PATH


def test_vendor_extension_exists_only_where_registered(schema: SchemaRegistry) -> None:
    loop = schema.resolve("evse/2/power_module/com.acme:coolingLoop/pressure_bar")
    assert isinstance(loop, LeafSchema) and loop.unit == "bar"
    assert code_of(schema.resolve, "com.acme:coolingLoop") is ErrorCode.UNKNOWN_PATH
    plain = station_schema(vendor_extensions=False)
    assert code_of(plain.resolve, "evse/2/power_module/com.acme:coolingLoop") is (
        ErrorCode.UNKNOWN_NAMESPACE)
    assert schema.type_named("com.acme:CoolingLoop") is CoolingLoop
    assert code_of(schema.type_named, "com.acme:Nope") is ErrorCode.UNKNOWN_PATH
    assert code_of(schema.type_named, "org.x:Nope") is ErrorCode.UNKNOWN_NAMESPACE


def test_two_vendors_never_collide() -> None:
    class Pump(Component):
        rpm: Annotated[float, float32(0, 1e4)] = 0.0

    schema = station_schema()
    schema.register_namespace(Namespace("org.other", "Other vendor", {"Pump": Pump}))
    schema.extend("evse/*/power_module", "org.other:coolingLoop", "org.other:Pump")
    assert schema.resolve("evse/1/power_module/org.other:coolingLoop/rpm")
    assert schema.resolve("evse/1/power_module/com.acme:coolingLoop/pump_speed_rpm")
    with pytest.raises(ValueError, match="already registered"):
        schema.register_namespace(Namespace("org.other", "again"))
    with pytest.raises(ValueError, match="reverse domain"):
        Namespace("Not A Namespace", "bad")
    with pytest.raises(ValueError, match="needs a namespace"):
        schema.extend("evse/*", "pump", Pump)


def test_a_schema_using_an_unregistered_namespace_is_refused() -> None:
    Meter = obis.meter_component("M", ["1-0:1.8.0"])

    class Root(Component):
        meter: Meter | None = None  # type: ignore[valid-type]

    with pytest.raises(ValueError, match="unregistered namespace 'obis'"):
        SchemaRegistry(Root)
    assert SchemaRegistry(Root, [obis.NAMESPACE]).resolve("meter/obis:1-0:1.8.0")


def test_expand_spreads_structured_values(schema: SchemaRegistry) -> None:
    items = list(schema.expand(KeyPath.parse("evse/1/connector/2"),
                               {"type": "cCCS2", "status": None, "locked": True}))
    assert [str(p) for p, _, _ in items] == ["evse/1/connector/2/type", "evse/1/connector/2/locked"]
    assert code_of(lambda: list(schema.expand(KeyPath.parse("evse/1"), 5))) is ErrorCode.WRONG_TYPE


def test_walk_lists_every_declared_node(schema: SchemaRegistry) -> None:
    declared = {where for where, _ in schema.walk()}
    assert "evse/*/connector/*/status" in declared
    assert "evse/*/power_module/com.acme:coolingLoop/leak_detected" in declared
    assert "grid_meter/iec61850:MMXU1/PhV/phsC" in declared
