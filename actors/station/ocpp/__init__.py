"""The OCPP 2.0.1 gateway: a charger behind an OCPP-J WebSocket as a station's hardware
(``charger``), the server the chargers connect to (``gateway``), and the official JSON
schemas every message is checked against (``schemas``). What the messages mean is
``actors.logic.ocpp``; docs/ocpp-gateway.md is the operator's side."""
