"""The scenario drivers: one repetition of a scenario kind on one architecture, on real
namespaces, real brokers and real OCPP-J connections, each in the module of its scenario
(``s1_safety`` ... ``s7_cellular``), each playing its scenario on ``bench.lab.testbed``.

Importing this package registers them in ``bench.lab.runner.DRIVERS`` for both
architectures.
"""

from __future__ import annotations

from bench.lab.drivers.s1_safety import safety_latency
from bench.lab.drivers.s2_outage import uplink_outage
from bench.lab.drivers.s3_relearn import cloud_relearn
from bench.lab.drivers.s4_firmware import firmware_fanout
from bench.lab.drivers.s5_idle import idle_connections
from bench.lab.drivers.s6_storm import reconnect_storm
from bench.lab.drivers.s7_cellular import cellular_day
from bench.lab.runner import DRIVERS, Driver
from bench.lab.testbed import SYSTEMS

BY_KIND: dict[str, Driver] = {
    "safety_latency": safety_latency,
    "uplink_outage": uplink_outage,
    "cloud_relearn": cloud_relearn,
    "firmware_fanout": firmware_fanout,
    "idle_connections": idle_connections,
    "reconnect_storm": reconnect_storm,
    "cellular_day": cellular_day,
}
"""Each scenario kind's driver (the same for both architectures: the testbed hides which)."""

for _kind, _driver in BY_KIND.items():
    for _architecture in SYSTEMS:
        DRIVERS[(_kind, _architecture)] = _driver

__all__ = ["BY_KIND"]
