"""Access kinds per node and the role policy of station trees."""

from __future__ import annotations

import pytest

from keypath import KeyPath
from object_model import ErrorCode, ModelError, PropertyAccessKind, Role
from object_model.station import station_access_policy, station_schema

SCHEMA = station_schema()
POLICY = station_access_policy()


def check(op: str, role: Role, path: str) -> ErrorCode | None:
    p = KeyPath.parse(path)
    access = SCHEMA.resolve(p).access
    try:
        if op == "read":
            POLICY.check_read(role, p, access)
        else:
            POLICY.check_write(role, p, access)
    except ModelError as exc:
        return exc.code
    return None


@pytest.mark.parametrize(
    ("op", "role", "path", "expected"),
    [
        ("read", Role.LOCAL_CSMS, "evse/1/meter/obis:1-0:1.8.0", None),
        ("write", Role.LOCAL_CSMS, "evse/1/meter/obis:1-0:1.8.0", ErrorCode.NOT_WRITABLE),
        ("write", Role.LOCAL_CSMS, "evse/1/permissions/max_power_w", None),
        ("write", Role.CLOUD_CSMS, "network/profiles/0/broker_host", None),
        ("write", Role.OPERATOR, "network/profiles/0/broker_host", ErrorCode.ACCESS_DENIED),
        ("write", Role.OPERATOR, "network/profiles/0/wifi_password", None),
        ("read", Role.OPERATOR, "network/profiles/0/wifi_password", ErrorCode.NOT_READABLE),
        ("write", Role.OPERATOR, "security/certificate", ErrorCode.NOT_WRITABLE),
        ("write", Role.OPERATOR, "identity/display_name", None),
        ("write", Role.OPERATOR, "identity/serial_number", ErrorCode.NOT_WRITABLE),
        ("read", Role.RESOURCE_MANAGER, "evse/2/meter/obis:1-0:16.7.0", None),
        ("read", Role.RESOURCE_MANAGER, "identity/serial_number", ErrorCode.ACCESS_DENIED),
        ("write", Role.RESOURCE_MANAGER, "evse/1/permissions/may_charge", ErrorCode.ACCESS_DENIED),
        ("read", Role.STATION, "evse/1/status", ErrorCode.ACCESS_DENIED),
        ("write", Role.STATION, "evse/1/permissions/may_charge", ErrorCode.ACCESS_DENIED),
        ("read", Role.LOCAL_CSMS, "security/provisioning_secret", ErrorCode.NOT_READABLE),
        ("write", Role.LOCAL_CSMS, "security/provisioning_secret", ErrorCode.NOT_WRITABLE),
        ("read", Role.CLOUD_CSMS, "network/profiles/1/apn_password", ErrorCode.NOT_READABLE),
        ("write", Role.CLOUD_CSMS, "network/profiles/1/apn_password", None),
        ("write", Role.LOCAL_CSMS, "evse/1/power_module/com.acme:coolingLoop/pump_setpoint_percent",
         None),
    ],
)
def test_access_rules(op: str, role: Role, path: str, expected: ErrorCode | None) -> None:
    assert check(op, role, path) is expected


def test_access_kinds_inherit_and_override() -> None:
    assert SCHEMA.resolve("evse/1/permissions").access is PropertyAccessKind.READ_WRITE
    assert SCHEMA.resolve("evse/1/permissions/may_charge").access is PropertyAccessKind.READ_WRITE
    assert SCHEMA.resolve("evse/1/status").access is PropertyAccessKind.READ
    assert SCHEMA.resolve("network/profiles/3/wifi_password").access is PropertyAccessKind.WRITE
    assert PropertyAccessKind.NONE.readable is False and PropertyAccessKind.WRITE.writable


def test_may_read_below_prunes_for_limited_roles() -> None:
    assert POLICY.may_read_below(Role.RESOURCE_MANAGER, KeyPath.parse("evse/1"))
    assert not POLICY.may_read_below(Role.RESOURCE_MANAGER, KeyPath.parse("network"))
    assert not POLICY.may_read_below(Role.STATION, KeyPath.root())
