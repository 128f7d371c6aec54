"""Prometheus metrics of an actor process (DESIGN.md section 8).

Theory of operation
-------------------
Nothing is instrumented for Prometheus. The objects already count what they do in plain
attributes, where counting costs a dict increment at most: the session counts messages by kind
and priority and the latency of what it delivers (``Session.traffic``), its queues what waits
and what left, the endpoint frames, bytes and reconnects, each actor what it handled, and the
resynchronisation engine its runs. ``ActorCollector`` reads those numbers when Prometheus
scrapes and turns them into metric families; between scrapes it costs nothing.

The HTTP server (prometheus_client's, in a daemon thread, with its own ``CollectorRegistry``
rather than the process-wide default one) answers in its own thread, while the numbers change on
the event loop. So a scrape asks the loop to read them all between two steps of the actors
(``call_soon_threadsafe``) and waits for that, at most ``timeout`` seconds: every scrape sees
one moment, and no dict changes size while it is read. Called on the loop itself (or with no
loop given), the collector reads at once.

This is the only module that imports ``prometheus_client`` (tests/layering.py checks it);
lower layers know nothing of it.

Metrics
-------
Per endpoint (one broker connection), labelled ``endpoint`` (its name: the actor's address, or a
station host's component); priorities are labelled ``critical``, ``control``, ``state``, ``bulk``:

* ``csms_messages_sent_total{kind,priority}``: messages queued to send, each once whatever its
  retransmissions and chunks (the session's acks and error reports included);
* ``csms_messages_received_total{kind,priority}``: messages received, each once;
* ``csms_message_latency_seconds{priority}`` (histogram): from the sender's timestamp to
  delivery here (queues, outbox, retransmissions and broker included; across machines, their
  clocks' difference too);
* ``csms_queued_envelopes{priority}``, ``csms_queued_bytes`` (gauges): what waits to leave;
* ``csms_unacknowledged_envelopes`` (gauge): reliable envelopes sent and not yet acknowledged;
* ``csms_frames_sent_total``, ``csms_sent_bytes_total``, ``csms_frames_received_total``,
  ``csms_received_bytes_total``: frames to and from the broker, and their bytes;
* ``csms_expired_envelopes_total{priority}``, ``csms_shed_envelopes_total``: dropped unsent,
  expired or because the queues were full;
* ``csms_session_events_total{event}``: retransmits, duplicates, acked, abandoned, rejected,
  forged, error_reports_sent, error_reports_suppressed, gaps, resets;
* ``csms_broker_reconnects_total``: times the link came back after it was lost;
* ``csms_broker_connected`` (gauge): 1 while the link is up;
* ``csms_loop_lag_seconds`` (gauge): how late the event loop runs the endpoint's timers
  (smoothed), and ``csms_pace_stretch`` (gauge): how many times coarser the periodic work of
  its actors runs because of it (``broker_bridge.pace``; 1: on time).

Per actor, labelled ``actor`` (its address):

* ``csms_actor_handled_total``, ``csms_actor_rejected_total``: messages its handlers took, and
  refused with an ErrorReport;
* ``csms_actor_late_answers_total``: answers that came after the request gave up waiting;
* ``csms_actor_inbox_envelopes`` (gauge): envelopes waiting for its handlers;
* ``csms_actor_shed_envelopes_total``: unreliable bulk envelopes it dropped on arrival
  because its inbox was too deep (it could not keep up);
* ``csms_actor_pauses_total``: times it asked a sender to hold its state and bulk envelopes
  because its handlers fell behind (``actors.runtime.backpressure``; the senders count the
  holds they honoured as the session event ``paused``);
* ``csms_coarsened_total{work}``: periodic work folded while the loop lagged: ``ticks`` of a
  simulated station, ``updates`` (commits that went out in another's notification),
  ``allocations`` (copy changes a local CSMS left to its next periodic allocation).

Per actor that keeps a ``ResyncEngine`` as ``resync`` (the local and cloud CSMS):

* ``csms_resyncs_total{mode}``, ``csms_resync_failures_total``: runs completed, runs failed;
* ``csms_resync_duration_seconds`` (summary: ``_count`` and ``_sum``): the completed runs;
* ``csms_resync_bytes_total``, ``csms_resync_wire_bytes_total``: what they exchanged, encoded
  and as frames carry it;
* ``csms_resyncs_running`` (gauge): runs going on or waiting for a slot.

Per actor that keeps a ``Counter`` as ``counters`` (the CSMS's own counters, as in its tree's
``counters/...``; byte counts left out, see above):

* ``csms_csms_events_total{event}``: joins, rejected_joins, updates, gaps, drifts,
  rejected_claims, resyncs...
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import dataclasses
import threading
from collections import Counter
from collections.abc import Iterable, Sequence
from types import TracebackType
from typing import Any, Protocol
from wsgiref.simple_server import WSGIServer

from prometheus_client import start_http_server
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
    SummaryMetricFamily,
)
from prometheus_client.registry import Collector, CollectorRegistry

from actors.csms.local import LocalCsms
from actors.runtime.actor import Actor
from actors.runtime.replication.resync import ResyncEngine
from actors.station.actor import ChargingStation
from actors.station.simulated import SimulatedStation
from broker_bridge import Endpoint, Priority
from broker_bridge.session import LatencyHistogram, SessionCounters

PRIORITY = {p: p.name.lower() for p in Priority}

# session counters exported under their own names rather than as csms_session_events_total
_NOT_EVENTS = {"received_frames", "received_bytes", "delivered"}
SESSION_EVENTS = tuple(f.name for f in dataclasses.fields(SessionCounters)
                       if f.name not in _NOT_EVENTS)


class Hosted(Protocol):
    """Actors sharing one endpoint (``actors.app.wiring.Running`` is one)."""

    @property
    def endpoint(self) -> Endpoint: ...

    @property
    def actors(self) -> Sequence[Actor]: ...


def _histogram_buckets(histogram: LatencyHistogram) -> list[tuple[str, float]]:
    """Cumulative ``(le, count)`` pairs in seconds, ending with ``+Inf``."""
    out: list[tuple[str, float]] = []
    total = 0
    for bound, count in zip(histogram.bounds, histogram.counts, strict=False):
        total += count
        out.append((f"{bound / 1e6:g}", total))
    out.append(("+Inf", total + histogram.counts[-1]))
    return out


_E, _EP, _A = ("endpoint",), ("endpoint", "priority"), ("actor",)
_EKP = ("endpoint", "kind", "priority")
_C, _G, _H, _S = CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily, SummaryMetricFamily
Family = CounterMetricFamily | GaugeMetricFamily | HistogramMetricFamily | SummaryMetricFamily

# the families of a scrape: (key, class, name, help, labels); counters get ``_total`` when served
FAMILIES: tuple[tuple[str, type[Family], str, str, tuple[str, ...]], ...] = (
    ("sent", _C, "csms_messages_sent", "Messages queued to send, each once", _EKP),
    ("received", _C, "csms_messages_received", "Messages received, each once", _EKP),
    ("latency", _H, "csms_message_latency_seconds",
     "From the sender's timestamp to delivery here", _EP),
    ("queued", _G, "csms_queued_envelopes", "Envelopes waiting to leave", _EP),
    ("queued_bytes", _G, "csms_queued_bytes", "Bytes waiting to leave", _E),
    ("unacked", _G, "csms_unacknowledged_envelopes",
     "Reliable envelopes sent and not yet acknowledged", _E),
    ("frames_sent", _C, "csms_frames_sent", "Frames handed to the broker", _E),
    ("bytes_sent", _C, "csms_sent_bytes", "Bytes of the frames sent", _E),
    ("frames_received", _C, "csms_frames_received", "Frames from the broker", _E),
    ("bytes_received", _C, "csms_received_bytes", "Bytes of the frames received", _E),
    ("expired", _C, "csms_expired_envelopes",
     "Envelopes that expired before they could leave", _EP),
    ("shed", _C, "csms_shed_envelopes",
     "Unreliable envelopes dropped because the queues were full", _E),
    ("session_events", _C, "csms_session_events", "What the session counted",
     ("endpoint", "event")),
    ("reconnects", _C, "csms_broker_reconnects",
     "Times the broker link came back after it was lost", _E),
    ("connected", _G, "csms_broker_connected", "1 while the broker link is up", _E),
    ("loop_lag", _G, "csms_loop_lag_seconds", "How late the event loop runs timers, smoothed",
     _E),
    ("pace", _G, "csms_pace_stretch",
     "How many times coarser periodic work runs because the event loop lags", _E),
    ("handled", _C, "csms_actor_handled", "Messages the actor's handlers took", _A),
    ("rejected", _C, "csms_actor_rejected", "Messages the actor refused with an ErrorReport",
     _A),
    ("late", _C, "csms_actor_late_answers",
     "Answers that came after the request gave up waiting", _A),
    ("inbox", _G, "csms_actor_inbox_envelopes", "Envelopes waiting for the actor's handlers",
     _A),
    ("actor_shed", _C, "csms_actor_shed_envelopes",
     "Unreliable bulk envelopes dropped on arrival because the inbox was too deep", _A),
    ("actor_pauses", _C, "csms_actor_pauses",
     "Times the actor asked a sender to hold its state and bulk envelopes", _A),
    ("coarsened", _C, "csms_coarsened", "Periodic work folded because the event loop lagged",
     ("actor", "work")),
    ("resyncs", _C, "csms_resyncs", "Resynchronisations completed", ("actor", "mode")),
    ("resync_failures", _C, "csms_resync_failures", "Resynchronisation runs that failed", _A),
    ("resync_duration", _S, "csms_resync_duration_seconds",
     "Time of the completed resynchronisations", _A),
    ("resync_bytes", _C, "csms_resync_bytes",
     "Encoded bytes the resynchronisations exchanged", _A),
    ("resync_wire_bytes", _C, "csms_resync_wire_bytes",
     "Bytes the resynchronisations exchanged, as frames carry them", _A),
    ("resyncs_running", _G, "csms_resyncs_running",
     "Resynchronisations going on or waiting for a slot", _A),
    ("csms_events", _C, "csms_csms_events", "A CSMS's own counters", ("actor", "event")),
    ("firmware_refused", _C, "csms_firmware_refused",
     "Firmware images a station refused: unsigned, badly signed, not its own, or a rollback",
     _A),
)


class _Families:
    """The metric families of one scrape, filled endpoint by endpoint and actor by actor."""

    def __init__(self) -> None:
        self._families: dict[str, Family] = {
            key: cls(name, text, labels=labels) for key, cls, name, text, labels in FAMILIES}

    def add(self, key: str, labels: list[str], *values: Any) -> None:
        """A sample (a histogram: buckets and sum; a summary: count and sum)."""
        self._families[key].add_metric(labels, *values)

    def add_endpoint(self, endpoint: Endpoint) -> None:
        add, name = self.add, endpoint.name
        session = endpoint.session
        traffic = session.traffic
        for (kind, priority), count in dict(traffic.sent).items():
            add("sent", [name, kind, PRIORITY[priority]], count)
        for (kind, priority), count in dict(traffic.received).items():
            add("received", [name, kind, PRIORITY[priority]], count)
        for priority, histogram in traffic.latency.items():
            add("latency", [name, PRIORITY[priority]], _histogram_buckets(histogram),
                histogram.sum_us / 1e6)
        for priority, depth in session.queue_depth().items():
            add("queued", [name, PRIORITY[priority]], depth)
        add("queued_bytes", [name], session.queued_bytes)
        add("unacked", [name], session.pending_count)
        add("frames_sent", [name], endpoint.frames_sent)
        add("bytes_sent", [name], endpoint.bytes_sent)
        counters = session.counters
        add("frames_received", [name], counters.received_frames)
        add("bytes_received", [name], counters.received_bytes)
        queue = session.queue_counters
        for priority, count in dict(queue.expired).items():
            add("expired", [name, PRIORITY[priority]], count)
        add("shed", [name], queue.dropped_overflow)
        for event in SESSION_EVENTS:
            add("session_events", [name, event], getattr(counters, event))
        add("reconnects", [name], endpoint.reconnects)
        add("connected", [name], 1 if endpoint.transport.connected else 0)
        add("loop_lag", [name], endpoint.pace.lag_s)
        add("pace", [name], endpoint.pace.stretch)

    def add_actor(self, actor: Actor) -> None:
        add, address = self.add, actor.address
        add("handled", [address], actor.handled)
        add("rejected", [address], actor.rejected)
        add("late", [address], actor.late_answers)
        add("inbox", [address], actor.inbox_depth)
        add("actor_shed", [address], actor.shed)
        add("actor_pauses", [address], actor.backpressure.pauses)
        for work, count in _coarsened(actor):
            add("coarsened", [address, work], count)
        engine = getattr(getattr(actor, "copies", None), "resync", None)  # a CSMS's copies
        if isinstance(engine, ResyncEngine):
            stats = engine.stats
            for mode, runs in dict(stats.by_mode).items():
                add("resyncs", [address, mode], runs)
            add("resync_failures", [address], stats.failures)
            add("resync_duration", [address], stats.runs, stats.seconds)
            add("resync_bytes", [address], stats.bytes)
            add("resync_wire_bytes", [address], stats.wire_bytes)
            add("resyncs_running", [address], engine.busy)
        if isinstance(actor, ChargingStation) and actor.tasks is not None:
            add("firmware_refused", [address], actor.tasks.firmware_refused)
        counters = getattr(getattr(actor, "own", None), "counters", None)  # a CSMS's own tree
        if isinstance(counters, Counter):
            for event, count in dict(counters).items():
                if not event.endswith("_bytes"):  # exported as csms_resync_*bytes_total
                    add("csms_events", [address, event], count)

    def all(self) -> list[Metric]:
        """The families that have samples."""
        return [f for f in self._families.values() if f.samples]


def _coarsened(actor: Actor) -> list[tuple[str, int]]:
    """What ``actor`` folded while the loop lagged: a station's ticks and updates, a local
    CSMS's allocations."""
    out = []
    if isinstance(actor, ChargingStation):
        if isinstance(actor.hardware, SimulatedStation):
            out.append(("ticks", actor.hardware.ticks_coarsened))
        if actor.publisher is not None:
            out.append(("updates", actor.publisher.coalesced))
    elif isinstance(actor, LocalCsms):
        out.append(("allocations", actor.energy.deferred))
    return out


class ActorCollector(Collector):
    """A Prometheus collector reading the counters of the actors and endpoints in ``hosts``
    (read again at each scrape: actors added later are included). Give the event loop they run
    on as ``loop`` when scrapes come from another thread (see the module docstring)."""

    def __init__(self, hosts: Iterable[Hosted], *, loop: asyncio.AbstractEventLoop | None = None,
                 timeout: float = 5.0) -> None:
        self.hosts = hosts
        self.loop = loop
        self.timeout = timeout

    def read(self) -> list[Metric]:
        """The metric families now; call it on the actors' event loop."""
        families = _Families()
        endpoints: set[int] = set()
        for host in list(self.hosts):
            actors = list(host.actors)
            # the host's link, and every link of its actors (a local CSMS may hold two)
            for endpoint in [host.endpoint, *(e for a in actors for e in a.links.endpoints)]:
                if id(endpoint) not in endpoints:
                    endpoints.add(id(endpoint))
                    families.add_endpoint(endpoint)
            for actor in actors:
                families.add_actor(actor)
        return families.all()

    def collect(self) -> list[Metric]:
        loop = self.loop
        if loop is None or _running_loop() is loop:
            return self.read()
        result: concurrent.futures.Future[list[Metric]] = concurrent.futures.Future()

        def read_on_loop() -> None:
            if not result.set_running_or_notify_cancel():
                return  # the scrape gave up waiting
            try:
                result.set_result(self.read())
            except BaseException as exc:
                result.set_exception(exc)

        loop.call_soon_threadsafe(read_on_loop)
        try:
            return result.result(self.timeout)
        finally:
            result.cancel()


def _running_loop() -> asyncio.AbstractEventLoop | None:
    try:
        return asyncio.get_running_loop()
    except RuntimeError:
        return None


class MetricsServer:
    """A running ``/metrics`` endpoint (prometheus_client's WSGI server in a daemon thread).
    ``stop`` (or leaving ``async with``) shuts it down."""

    def __init__(self, httpd: WSGIServer, thread: threading.Thread) -> None:
        self._httpd = httpd
        self._thread = thread

    @property
    def port(self) -> int:
        """The port it listens on (the one chosen, when started on port 0)."""
        return self._httpd.server_port

    def _shutdown(self) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()
        self._thread.join(timeout=5.0)

    async def stop(self) -> None:
        # shutdown() waits for the serving thread's next poll: wait in a thread, not on the loop
        await asyncio.to_thread(self._shutdown)

    async def __aenter__(self) -> MetricsServer:
        return self

    async def __aexit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                        tb: TracebackType | None) -> None:
        await self.stop()


def serve_metrics(port: int, collector: Collector, host: str = "127.0.0.1") -> MetricsServer:
    """Serve ``collector``'s metrics on ``http://host:port/metrics`` (any path answers) from
    a registry of its own. Port 0 picks a free port (see ``MetricsServer.port``)."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(collector)
    httpd, thread = start_http_server(port, addr=host, registry=registry)
    return MetricsServer(httpd, thread)
