"""The charging-station device model: components, schema, access policy, initial state."""

from object_model.station.components import (
    ChargingSession,
    Connector,
    ConnectorStatus,
    ConnectorType,
    Evse,
    EvseStatus,
    OperationalPermissions,
    SessionState,
    Station,
)
from object_model.station.model import (
    new_station,
    new_station_tree,
    shared_station_schema,
    station_access_policy,
    station_schema,
    station_writes,
)

__all__ = [
    "ChargingSession",
    "Connector",
    "ConnectorStatus",
    "ConnectorType",
    "Evse",
    "EvseStatus",
    "OperationalPermissions",
    "SessionState",
    "Station",
    "new_station",
    "new_station_tree",
    "shared_station_schema",
    "station_access_policy",
    "station_schema",
    "station_writes",
]
