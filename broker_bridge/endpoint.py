"""The endpoint: one session, its transport and its outbox, pumped by asyncio.

Actors register their addresses and a callback; they send with ``send`` (synchronous: the
envelope is queued in the session and the pump takes it from there). One pump task does all the
I/O in a fixed order each round: run timers, persist what must be durable (reliable envelopes
before they leave, receipts before acks go out, in one commit each, so persistence batches
itself under load), hand frames to the transport within its budget, then dispatch events. It
sleeps until the session's next deadline or until something wakes it (a send, a frame, a link
change, the transport draining).

A second task watches how late the event loop runs the endpoint's timers and keeps ``pace``
(``broker_bridge.pace``): the actors on the endpoint read it to coarsen their periodic work
while the process cannot keep up.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from types import TracebackType

from broker_bridge.clock import WALL_CLOCK, Clock
from broker_bridge.codec import encode_body
from broker_bridge.envelope import Envelope, Priority, is_group
from broker_bridge.outbox import Outbox
from broker_bridge.pace import Pace
from broker_bridge.session import (
    EnvelopeAbandoned,
    EnvelopeGuard,
    EnvelopeReceived,
    EnvelopesAcked,
    GapDetected,
    InputRejected,
    Session,
    SessionConfig,
    SessionEvent,
    StreamReset,
)
from broker_bridge.transport import Origin, Transport
from object_model.messages import MessageBase

log = logging.getLogger("csms.bridge")

LAG_PROBE_S = 0.25  # how often the endpoint measures the event loop's lag
MARKS_EVERY_S = 1.0  # how often the envelope guard's marks may be committed to the outbox

EnvelopeHandler = Callable[[Envelope], None]
EventHandler = Callable[[SessionEvent], None]


@dataclass
class _Local:
    address: str
    on_envelope: EnvelopeHandler
    on_event: EventHandler | None


class EndpointClosedError(RuntimeError):
    """The endpoint is stopping or stopped: nothing more can be sent."""


class Endpoint:
    """Actors' access to the broker: ``register`` an address, ``send`` messages.

    ``guard`` seals what the session sends and opens what it receives (``session.guard``);
    by default nothing is signed or checked. ``pace`` follows the event loop's lag while the
    endpoint runs (see the module docstring)."""

    def __init__(self, transport: Transport, *, config: SessionConfig | None = None,
                 outbox_path: Path | str | None = None, clock: Clock | None = None,
                 name: str = "endpoint", guard: EnvelopeGuard | None = None,
                 pace: Pace | None = None) -> None:
        config = config or SessionConfig()
        if outbox_path is not None and not config.durable:
            config = replace(config, durable=True)
        self.config = config
        self.name = name
        self.transport = transport
        self.clock: Clock = clock or WALL_CLOCK
        self.session = Session(config, guard=guard)
        self.outbox = Outbox(outbox_path, dedupe_window=config.dedupe_window) if outbox_path else None
        self._locals: dict[str, _Local] = {}
        self._groups: dict[str, set[str]] = defaultdict(set)
        self._wake = asyncio.Event()
        self._pump_task: asyncio.Task[None] | None = None
        self._lag_task: asyncio.Task[None] | None = None
        self.pace = pace or Pace()
        self._closing = False
        self._opened = False
        self._idle = asyncio.Event()
        self.frames_sent = 0
        self.bytes_sent = 0
        self._marks_saved_at = float("-inf")
        self.reconnects = 0  # times the link came back after it was lost
        self._link_up: bool | None = None  # None: never up yet
        self._link_listeners: list[Callable[[bool], None]] = []
        transport.on_frame = self._on_frame
        transport.on_link = self._on_link
        transport.on_writable = self._wake.set

    # -- lifecycle ------------------------------------------------------------------------------

    async def start(self, *, wait: bool = True) -> Endpoint:
        """``open`` (if not done yet), connect, start pumping; ``wait=False`` returns before
        the link is up (what is sent meanwhile waits in the session, reliable envelopes in
        the outbox), for a link that may be down when the process starts."""
        await self.open()
        self.session.link_is_up = False
        await self.transport.start(wait=wait)
        self._pump_task = asyncio.create_task(self._pump(), name=f"{self.name}-pump")
        self._lag_task = asyncio.create_task(self._watch_lag(), name=f"{self.name}-lag")
        return self

    async def open(self) -> Endpoint:
        """Open the outbox and carry on where the last run stopped, without connecting yet:
        actors may register and queue envelopes (numbered after the last run's) before the
        link comes up, so that what the broker kept for them finds them there."""
        if self._opened:
            return self
        self._opened = True
        now = self.clock.now_us()
        if self.outbox is not None:
            await self.outbox.open()
            state = await self.outbox.load()
            self.session.restore_incoming(state.in_streams, state.seen)
            self.session.guard.restore(state.marks)
            for address in {e.source for e in state.unacked} | {k[0] for k in state.out_streams}:
                self.session.add_local(address)
            self.session.restore_outgoing(state.out_streams, state.unacked, now)
            if state.unacked:
                log.info("%s: resending %d unacknowledged envelopes from the outbox",
                         self.name, len(state.unacked))
        return self

    async def stop(self, flush_timeout: float = 5.0) -> None:
        """Stop taking sends, flush queues and wait for acknowledgements (within the timeout;
        what is left stays in the outbox for next time), then disconnect."""
        if self._closing:
            return
        self._closing = True
        if self._pump_task is None:  # never connected
            if self.outbox is not None and self._opened:
                await self._persist(final=True)  # what the actors queued meanwhile
                await self.outbox.close()
            return
        with contextlib.suppress(TimeoutError):
            await self.flush(flush_timeout)
        for task in (self._pump_task, self._lag_task):
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        await self.transport.stop()
        if self.outbox is not None:
            await self._persist(final=True)
            await self.outbox.close()

    async def __aenter__(self) -> Endpoint:
        return await self.start()

    async def __aexit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                        tb: TracebackType | None) -> None:
        await self.stop()

    async def flush(self, timeout: float = 5.0) -> None:
        """Wait until every queued envelope left, every reliable one was acknowledged and every
        acknowledgement owed went out."""
        async with asyncio.timeout(timeout):
            while not self.session.idle:
                self._idle.clear()
                self._wake.set()
                await self._idle.wait()

    # -- actors -----------------------------------------------------------------------------

    async def register(self, address: str, on_envelope: EnvelopeHandler,
                       on_event: EventHandler | None = None) -> None:
        """Host the actor ``address`` here: envelopes for it go to ``on_envelope``; gaps, stream
        resets and abandoned envelopes of its streams go to ``on_event``."""
        self.session.add_local(address)
        self._locals[address] = _Local(address, on_envelope, on_event)
        await self.transport.add_address(address)

    def unregister(self, address: str) -> None:
        """Stop hosting ``address``: envelopes still arriving for it are refused with
        ``UNKNOWN_ACTOR`` (so reliable senders learn it is gone instead of losing them)."""
        self.session.remove_local(address)
        self._locals.pop(address, None)
        for members in self._groups.values():
            members.discard(address)

    async def join_group(self, group: str, address: str) -> None:
        """Deliver broadcasts to ``group`` to the local actor ``address`` too."""
        if address not in self._locals:
            raise KeyError(f"{address!r} is not registered here")
        first = not self._groups[group]
        self._groups[group].add(address)
        self.session.join_group(group)
        if first:
            await self.transport.join_group(group)

    def send(self, *, source: str, destination: str, message: MessageBase | None = None,
             kind: str | None = None, body: bytes | None = None,
             priority: Priority = Priority.CONTROL, reliable: bool = False,
             expires_in_us: int | None = None, correlation: bytes | None = None,
             stream: str | None = None) -> Envelope:
        """Queue a message (a catalogue ``message``, or ``kind`` and an encoded ``body``)."""
        if self._closing:
            raise EndpointClosedError(f"{self.name} is stopping")
        if message is not None:
            kind = type(message).__name__
            body = encode_body(message)
        if kind is None or body is None:
            raise ValueError("give a message, or a kind and a body")
        now = self.clock.now_us()
        env = self.session.send(
            source=source, destination=destination, kind=kind, body=body, now=now,
            priority=priority, reliable=reliable,
            expires_us=None if expires_in_us is None else now + expires_in_us,
            correlation=correlation, stream=stream)
        self._wake.set()
        return env

    def pause_sender(self, local: str, peer: str, hold_s: float, *,
                     credit_bytes: int = 0) -> None:
        """Ask ``peer`` to hold its state and bulk envelopes for ``local`` for ``hold_s``
        seconds (``0``: to send them again now) but for ``credit_bytes`` of them; nothing once
        the endpoint is stopping."""
        if self._closing:
            return
        self.session.pause_sender(local, peer, int(hold_s * 1e6), self.clock.now_us(),
                                  credit_bytes=credit_bytes)
        self._wake.set()

    @property
    def link_up(self) -> bool:
        """Whether the link to the broker is up now."""
        return bool(self._link_up)

    def on_link_change(self, listener: Callable[[bool], None]) -> Callable[[], None]:
        """Call ``listener(up)`` each time the link goes up or down; returns the undo."""
        self._link_listeners.append(listener)
        return lambda: self._link_listeners.remove(listener)

    # -- transport callbacks -------------------------------------------------------------------

    def _on_frame(self, origin: Origin, data: bytes) -> None:
        self.session.receive_frame(data, self.clock.now_us(), origin)
        self._wake.set()

    def _on_link(self, up: bool) -> None:
        now = self.clock.now_us()
        if up:
            log.info("%s: link up", self.name)
            if self._link_up is False:
                self.reconnects += 1
            self._link_up = True
            self.session.link_up(now)
        else:
            if not self._closing:
                log.warning("%s: link down; holding %d pending envelopes", self.name,
                            self.session.pending_count)
            if self._link_up:
                self._link_up = False
            self.session.link_down(now)
        self._wake.set()
        for listener in list(self._link_listeners):
            try:
                listener(up)
            except Exception:
                log.exception("%s: a link listener failed", self.name)

    # -- the loop's lag ---------------------------------------------------------------------------

    async def _watch_lag(self) -> None:
        """Measure how late a timer of ``LAG_PROBE_S`` fires, for ever, into ``pace``; say
        when the process falls behind and when it has caught up. In the event loop's own
        time, not the endpoint's clock: lag is how late the loop runs what is due, which a
        fake clock moved by hand (or the demo's faster site time) says nothing about."""
        loop = asyncio.get_running_loop()
        while True:
            started = loop.time()
            await asyncio.sleep(LAG_PROBE_S)  # the probe itself: how late does it wake?
            now = loop.time()
            change = self.pace.observe(now - started - LAG_PROBE_S, now)
            if change is None:
                continue
            if change.after > change.before:
                log.warning("%s: the event loop lags %.2f s behind: periodic work (ticks, "
                            "publishing, allocations) now runs %dx coarser", self.name,
                            change.lag_s, change.after)
            else:
                log.info("%s: the event loop lags %.2f s: periodic work back to %dx", self.name,
                         change.lag_s, change.after)

    # -- the pump -------------------------------------------------------------------------------

    async def _pump(self) -> None:
        while True:
            self._wake.clear()
            try:
                progressed = await self._round()
            except asyncio.CancelledError:
                raise
            except Exception:  # a bug must not silently stop all traffic
                log.exception("%s: pump round failed; continuing", self.name)
                progressed = False
                await asyncio.sleep(0.05)
            if self.session.idle:
                self._idle.set()
            if self._wake.is_set():
                await asyncio.sleep(0)  # always let the transport and the actors run
                continue
            deadline = self.session.next_deadline()
            timeout = None if deadline is None else max(0.0, (deadline - self.clock.now_us()) / 1e6)
            if timeout == 0.0 and not progressed:
                # frames are due but the link takes none (back-pressure, or down): wait for it
                # to drain (on_writable) or come up (on_link), re-checking now and then
                timeout = 0.05
            if timeout is None or timeout > 0:
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(timeout):
                        await self._wake.wait()
            else:
                await asyncio.sleep(0)

    async def _round(self) -> bool:
        """One pass over everything; True when it moved something (frames or events)."""
        session = self.session
        session.handle_timer(self.clock.now_us())
        if self.outbox is not None:
            await self._persist()
        sent = 0
        if self.transport.connected:
            transport = self.transport
            for frame in session.pop_frames(self.clock.now_us(), transport.budget(),
                                            urgent=transport.budget(urgent=True)):
                self.transport.send_frame(frame.destination, frame.data)
                sent += 1
                self.bytes_sent += len(frame.data)
            self.frames_sent += sent
        forget: list[bytes] = []
        events = session.drain_events()
        for event in events:
            self._dispatch(event, forget)
        if forget and self.outbox is not None:
            await self.outbox.forget(forget)
        return bool(sent or events)

    async def _persist(self, final: bool = False) -> None:
        assert self.outbox is not None
        envelopes, streams = self.session.take_unpersisted()
        if envelopes:
            await self.outbox.save_outgoing(envelopes, streams)
            self.session.mark_persisted([e.id for e in envelopes], self.clock.now_us())
        receipts = self.session.take_receipts()
        if receipts.ids or receipts.positions:
            await self.outbox.save_receipts(receipts)
            self.session.mark_receipts_persisted(receipts, self.clock.now_us())
        now = self.clock.monotonic()
        if final or now - self._marks_saved_at >= MARKS_EVERY_S:  # a commit a second at most
            marks = self.session.guard.marks()
            if marks is not None:
                self._marks_saved_at = now
                await self.outbox.save_marks(marks)

    def _dispatch(self, event: SessionEvent, forget: list[bytes]) -> None:
        if isinstance(event, EnvelopeReceived):
            env = event.envelope
            targets = self._groups.get(env.destination, ()) if is_group(env.destination) else (
                env.destination,)
            for address in targets:
                local = self._locals.get(address)
                if local is None:
                    continue
                try:
                    local.on_envelope(env)
                except Exception:
                    log.exception("%s: handler of %s failed on %s", self.name, address, env.kind)
        elif isinstance(event, EnvelopesAcked):
            forget.extend(event.ids)
        elif isinstance(event, EnvelopeAbandoned):
            forget.append(event.envelope.id)
            log.warning("%s: gave up on %s to %s: %s", self.name, event.envelope.kind,
                        event.envelope.destination, event.reason)
            self._notify(event.envelope.source, event)
        elif isinstance(event, (GapDetected, StreamReset)):
            log.warning("%s: %s", self.name, event)
            self._notify(event.destination, event)
        elif isinstance(event, InputRejected):
            log.warning("%s: rejected input from %s: %s: %s", self.name, event.sender,
                        event.code.value, event.text)

    def _notify(self, address: str, event: SessionEvent) -> None:
        local = self._locals.get(address)
        if local is not None and local.on_event is not None:
            try:
                local.on_event(event)
            except Exception:
                log.exception("%s: event handler of %s failed", self.name, address)
