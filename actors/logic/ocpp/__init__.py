"""OCPP 2.0.1 for the gateway, sans-IO: the OCPP-J frames (``rpc``), what a charger's
messages mean for a station's tree (``inbound``, ``transactions``) and what a write to the
tree asks of the charger (``profiles``). ``actors.station.ocpp`` runs them on WebSockets."""
