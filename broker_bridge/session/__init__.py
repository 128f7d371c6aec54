"""The sans-IO session: priorities, batching, chunking, acknowledgements, ordering, and the
guard through which security plugs in.

No sockets, no clock: time is passed in and deadlines are returned. See ``core`` for the theory
of operation.
"""

from broker_bridge.session.config import MS, SECOND, SessionConfig
from broker_bridge.session.core import Receipts, Session, SessionCounters
from broker_bridge.session.events import (
    EnvelopeAbandoned,
    EnvelopeReceived,
    EnvelopesAcked,
    Frame,
    GapDetected,
    InputRejected,
    SessionEvent,
    StreamReset,
)
from broker_bridge.session.guard import NULL_GUARD, EnvelopeGuard, NullGuard
from broker_bridge.session.traffic import LatencyHistogram, TrafficCounters

__all__ = [
    "MS",
    "NULL_GUARD",
    "SECOND",
    "EnvelopeAbandoned",
    "EnvelopeGuard",
    "EnvelopeReceived",
    "EnvelopesAcked",
    "Frame",
    "GapDetected",
    "InputRejected",
    "LatencyHistogram",
    "NullGuard",
    "Receipts",
    "Session",
    "SessionConfig",
    "SessionCounters",
    "SessionEvent",
    "StreamReset",
    "TrafficCounters",
]
