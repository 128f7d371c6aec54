"""The broker bridge: envelopes, the sans-IO session, the outbox, transports, the router over
several broker links and the managed broker. Actors see ``Envelope``s and typed messages only;
no broker detail leaves this package.
"""

from broker_bridge.endpoint import Endpoint, EndpointClosedError
from broker_bridge.envelope import Envelope, Priority, is_group
from broker_bridge.router import Router
from broker_bridge.session import SessionConfig
from broker_bridge.transport import Transport

__all__ = ["Endpoint", "EndpointClosedError", "Envelope", "Priority", "Router", "SessionConfig",
           "Transport", "is_group"]
