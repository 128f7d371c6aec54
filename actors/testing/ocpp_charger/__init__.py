"""A simulated OCPP 2.0.1 charger: a real OCPP-J client (the ``ocpp`` package's
``ChargePoint`` over ``websockets``) with a behaviour of ours that follows the specification,
for the demo and the tests to put real OCPP traffic through the gateway.

It boots (and, answered Pending or Rejected, waits the interval, serving the CSMS meanwhile,
or boots at once when TriggerMessage asks), reports its connectors, and on each EVSE with a
transaction charges at ``min(EV demand, the limit in force)``: the limit is the charger's own
composite of the profiles it was sent (TxProfile over TxDefaultProfile, highest stack level
first, under the station's ChargingStationMaxProfile), as a charger computes it. Every
TxUpdatedInterval it sends a TransactionEvent with its energy register and power, and a
Heartbeat every HeartbeatInterval. When its connection drops it connects again with a
jittered backoff (OCPP's RetryBackOff), and its register survives: the gateway's baseline and
de-duplication see the same meter. It lives in ``clock``'s time (the demo's site time runs
fast: its chargers charge as fast, as its simulated stations do); its timers (heartbeat,
sampling, boot retries, monitors) run on ``clock``'s sleeps.

It serves: SetChargingProfile, ClearChargingProfile, ChangeAvailability; its device model
(GetBaseReport, GetReport, GetVariables, SetVariables: ``inventory`` lists the ~40 variables
plus 8 per EVSE); monitors (SetVariableMonitoring, ClearVariableMonitoring, then NotifyEvent);
UpdateFirmware (an http(s) download, then a reboot into the new version: ``firmware``);
Reset; RequestStartTransaction / RequestStopTransaction; UnlockConnector; TriggerMessage.
With ``ev_energy_wh`` its EVs tell their charging needs (NotifyEVChargingNeeds).

Modules: ``device_model`` and ``monitoring`` (pure: the device model and its monitors),
``inventory`` (what this charger has), ``charging`` (EVSEs and the limit profiles set),
``firmware`` (fetching an image, its version), ``client`` (the ``ocpp`` package in its box),
``handlers`` (the CSMS's calls), ``charger`` (``SimulatedCharger``: its state, its
connection's life, what it sends unasked).

Everything it does can be watched: ``sent`` / ``received`` / ``answered`` (the latest
messages, as the spec's JSON), ``counts`` (its own calls by action), ``registration``,
``boot_reasons``, ``heartbeats``, ``calls_received``, ``connections``, ``firmware_version`` /
``firmware_sha256`` / ``firmware_status``, ``charging_needs``, ``evses``, ``model``,
``monitors``.
"""

from actors.testing.ocpp_charger.charger import SimulatedCharger
from actors.testing.ocpp_charger.charging import Evse
from actors.testing.ocpp_charger.device_model import DeviceModel

__all__ = ["DeviceModel", "Evse", "SimulatedCharger"]
