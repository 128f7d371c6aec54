"""What tests, benchmarks and the demo share to drive actors: time moved by hand, waits with a
deadline, an inbox for envelopes, and a world of actors on the in-memory network.

* ``FakeClock``: a ``Clock`` whose time moves only when told (``advance``), for timing logic;
* ``until``: wait for a condition, failing with what was awaited once the deadline passes
  (never a sleep standing in for "it happened");
* ``Inbox``: an endpoint callback that keeps envelopes and session events, with ``wait_for``;
* ``World``: endpoints on one ``MemoryNetwork``, SQLite stores and actors, all closed in
  reverse order by one exit stack.

The managed-Prosody hierarchy (real broker, real processes) is ``actors.app.hierarchy``: it
builds on the application's wiring, a layer above this one.
"""

from actors.testing.clock import FakeClock
from actors.testing.inbox import Inbox
from actors.testing.waiting import until
from actors.testing.world import World

__all__ = ["FakeClock", "Inbox", "World", "until"]
