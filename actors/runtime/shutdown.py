"""Stopping a process of actors on Ctrl-C or SIGTERM: within seconds, however loaded it is,
with what must be durable kept durable.

Theory of operation
-------------------
A process whose event loop is saturated (a thousand stations ticking, a CSMS applying their
updates) must still stop within seconds of a signal. What kept it from stopping, and what this
module does instead:

* the signal handler only set an event that nobody looked at until the start (minutes, under
  load) had finished: ``StopSignals.guard`` runs the start so that the first signal cancels
  it, and the start undoes what it had started. Whatever it had started halts first, the
  moment the signal arrives (``halt_when_stopping``): a start cut short while hundreds of
  actors already ran would otherwise undo its last part with all the others still loading
  the loop;
* the stop went actor by actor, each awaiting its own write, while every other actor went on
  ticking, publishing and applying updates: ``shut_down`` *halts* every actor first (their
  inboxes, ticks, publishers and loops are cancelled at once, and the loop is free), then lets
  them all make their state durable together, so that a thousand trees reach the disk in a few
  group commits rather than a thousand transactions in a row;
* each endpoint's flush and each clean close waited for its own timeout in turn: they run
  concurrently, within what is left of one deadline;
* the stores are closed last, whatever happened before: a store writes everything it has
  accepted before it closes. What an actor had not handed to its store by then is recovered as
  after a crash (a tree from its log; a CSMS's copies by resynchronisation): nothing that was
  acknowledged as durable is lost.

A second signal, or a clean stop that overruns ``grace_s`` (a stage that ignores its deadline,
or a thread that keeps the interpreter from exiting), ends the process at once and says so on
stderr; a managed broker dies with it (``broker_bridge.prosody``: PR_SET_PDEATHSIG).
"""

from __future__ import annotations

import asyncio
import contextvars
import logging
import os
import signal
import sys
import threading
from collections.abc import Awaitable, Callable, Sequence
from types import TracebackType
from typing import Any, NoReturn, Protocol, Self, TypeVar

from actors.runtime.actor import Actor
from broker_bridge import Endpoint
from broker_bridge.clock import WALL_CLOCK, Clock

log = logging.getLogger("csms.shutdown")

T = TypeVar("T")

STOP_WITHIN_S = 6.0
"""The clean stop's own budget (halt, flush, disconnect, close the stores)."""
FORCE_AFTER_S = 9.5
"""From the first signal to a forced exit, if the clean stop has not ended the process."""
ENDPOINT_FLUSH_S = 1.0
"""At most this long for an endpoint's queues to leave and its acknowledgements to come."""
CUT_SHORT_S = 1.0
"""How long work cut short at its deadline gets to unwind (its ``finally`` blocks)."""


_GUARD: contextvars.ContextVar[StopSignals | None] = contextvars.ContextVar(
    "csms_stop_guard", default=None)


def halt_when_stopping(halt: Callable[[], None]) -> None:
    """Have ``halt`` run the moment a stop is requested, before the guarded work unwinds.
    For whatever starts actors: under ``StopSignals.guard`` (the guard is found through the
    context the work runs in), ``halt`` is kept until the signal; elsewhere nothing happens,
    since nothing can cut the start short."""
    guard = _GUARD.get()
    if guard is not None:
        guard.on_stop(halt)


class StopRequested(Exception):
    """A stop was asked for (a signal) while guarded work ran; the work was cancelled."""


def _stderr(message: str) -> None:
    os.write(2, (message + "\n").encode(errors="replace"))  # safe from any thread


class StopSignals:
    """SIGINT and SIGTERM for a long-running command, as an async context manager.

    The first signal asks for a clean stop: ``requested`` is set, work running under
    ``guard`` is cancelled, and a watchdog gives the clean stop ``grace_s`` seconds, until the
    process has exited (asyncio's teardown and the interpreter's exit included). A second
    signal, or the watchdog, exits at once with status 128 + the first signal's number,
    saying so through ``say`` (a line on stderr by default)."""

    def __init__(self, *, grace_s: float = FORCE_AFTER_S,
                 say: Callable[[str], None] = _stderr,
                 signals: Sequence[signal.Signals] = (signal.SIGINT, signal.SIGTERM)) -> None:
        self.grace_s = grace_s
        self.say = say
        self.signals = tuple(signals)
        self.requested = asyncio.Event()
        self.signal: signal.Signals | None = None
        self._guarded: set[asyncio.Future[Any]] = set()
        self._halts: list[Callable[[], None]] = []
        self._watchdog: threading.Timer | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    async def __aenter__(self) -> Self:
        self._loop = asyncio.get_running_loop()
        for sig in self.signals:
            self._loop.add_signal_handler(sig, self._received, sig)
        return self

    async def __aexit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                        tb: TracebackType | None) -> None:
        assert self._loop is not None
        for sig in self.signals:
            self._loop.remove_signal_handler(sig)
            if self.signal is not None:  # what is left of the exit: a signal still forces it
                signal.signal(sig, lambda number, _: self._force(
                    f"a second signal ({signal.Signals(number).name})"))
        # the watchdog stays armed: the process has yet to exit, and it must within grace_s

    def disarm(self) -> None:
        """Cancel the watchdog (for a caller that goes on living after the stop: a test)."""
        if self._watchdog is not None:
            self._watchdog.cancel()
            self._watchdog = None

    def on_stop(self, halt: Callable[[], None]) -> None:
        """Call ``halt`` at the first signal (at once if it came already)."""
        if self.requested.is_set():
            _call(halt)
        else:
            self._halts.append(halt)

    async def guard(self, work: Awaitable[T]) -> T:
        """``work``'s result, unless a stop is asked for first: then what ``work`` registered
        with ``halt_when_stopping`` halts, ``work`` is cancelled (and given the time to undo
        what it started) and ``StopRequested`` raised."""
        token = _GUARD.set(self)
        try:
            task = asyncio.ensure_future(work)  # the task runs in a copy of this context
        finally:
            _GUARD.reset(token)
        if self.requested.is_set():
            task.cancel()
        self._guarded.add(task)
        try:
            return await task
        except asyncio.CancelledError:
            current = asyncio.current_task()
            if current is not None and current.cancelling():
                raise  # we were cancelled ourselves, not by a signal
            raise StopRequested(f"stopped by {self._name()}") from None
        finally:
            self._guarded.discard(task)

    async def wait(self) -> signal.Signals:
        """Wait for the first signal; which it was."""
        await self.requested.wait()
        assert self.signal is not None
        return self.signal

    def _received(self, sig: signal.Signals) -> None:
        if self.signal is not None:
            self._force(f"a second signal ({sig.name})")
            return
        self.signal = sig
        self.say(f"csms: {sig.name}: stopping cleanly (at most {self.grace_s:g} s; a second "
                 "Ctrl-C or SIGTERM exits at once)")
        self.requested.set()
        halts, self._halts = self._halts, []
        for halt in halts:
            _call(halt)
        for task in list(self._guarded):
            task.cancel()
        self._watchdog = threading.Timer(
            self.grace_s, self._force, (f"the clean stop took over {self.grace_s:g} s",))
        self._watchdog.daemon = True
        self._watchdog.start()

    def _force(self, why: str) -> None:
        self.say(f"csms: {why}: exiting now, without finishing the clean stop (what was "
                 "written stays written; the next start recovers the rest)")
        _flush_stdio()
        os._exit(128 + int(self.signal or signal.SIGTERM))

    def _name(self) -> str:
        return self.signal.name if self.signal is not None else "a signal"


def exit_process(code: int) -> NoReturn:
    """End the process now, after a clean stop: flush the logs and the standard streams, then
    exit without freeing the heap object by object (a thousand trees and copies take seconds
    to free so, measured: 2.3 s for 700 stations; the operating system frees them at once).
    Only for a process whose stores and connections are closed."""
    logging.shutdown()
    _flush_stdio()
    os._exit(code)


def _flush_stdio() -> None:
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except Exception:  # a stream in any state must not keep us alive
            continue


def _call(halt: Callable[[], None]) -> None:
    try:
        halt()
    except Exception:
        log.exception("halting on a stop request failed")


class Closable(Protocol):
    """A store that writes what it accepted, then closes, within ``timeout`` seconds."""

    async def close(self, timeout: float) -> None: ...


async def shut_down(actors: Sequence[Actor], endpoints: Sequence[Endpoint],
                    stores: Sequence[Closable], *, within: float = STOP_WITHIN_S,
                    clock: Clock = WALL_CLOCK) -> None:
    """Stop ``actors``, then ``endpoints``, then ``stores``, all within ``within`` seconds
    (see the module docstring). A stage that fails or overruns is logged and the next still
    runs: the stores are always closed."""
    deadline = clock.monotonic() + within

    def left(share: float = 1.0) -> float:
        return max(0.0, (deadline - clock.monotonic()) * share)

    began = clock.monotonic()
    for actor in actors:
        actor.halt()
    await _all("stopping actor", [(a.address, a.stop()) for a in actors], left(0.5))
    actors_done = clock.monotonic()
    flush = min(ENDPOINT_FLUSH_S, left(0.3))
    # an endpoint stop is not cut short: cancelled, it would leave its outbox open
    await _all("stopping endpoint", [(e.name, e.stop(flush_timeout=flush)) for e in endpoints],
               None)
    endpoints_done = clock.monotonic()
    await _all("closing store", [(str(getattr(s, "path", s)), s.close(max(1.0, left())))
                                 for s in stores], None)
    log.info("stopped %d actors in %.2f s, %d endpoints in %.2f s, %d stores in %.2f s",
             len(actors), actors_done - began, len(endpoints), endpoints_done - actors_done,
             len(stores), clock.monotonic() - endpoints_done)


async def _all(what: str, work: Sequence[tuple[str, Awaitable[None]]],
               timeout: float | None) -> None:
    """Run ``work`` concurrently; log failures, and cancel (and log) what is not done within
    ``timeout`` seconds."""
    if not work:
        return
    tasks = {asyncio.ensure_future(job): name for name, job in work}
    done, late = await asyncio.wait(set(tasks), timeout=timeout)
    for task in late:
        task.cancel()
    if late:
        log.warning("%s: %d did not finish within %.1f s and were cut short: %s", what,
                    len(late), timeout or 0.0, ", ".join(sorted(tasks[t] for t in late)[:10]))
        await asyncio.wait(late, timeout=CUT_SHORT_S)
    for task in done:
        if not task.cancelled() and task.exception() is not None:
            log.error("%s %s failed", what, tasks[task], exc_info=task.exception())


__all__ = ["FORCE_AFTER_S", "STOP_WITHIN_S", "Closable", "StopRequested", "StopSignals",
           "exit_process", "halt_when_stopping", "shut_down"]
