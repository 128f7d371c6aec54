"""The actor base: lifecycle, typed routing, request/response, tracked tasks.

An actor is an address on its broker links plus handlers. The links are a ``Router`` over one
or more ``Endpoint``s (a bare ``Endpoint`` is a router of one): the actor is reachable on every
link, and each message leaves on the link its destination routes to. Handlers are declared on
the class with ``@handles`` and take the typed message and a ``Context``::

    class Station(Actor):
        role = Role.STATION

        @handles(PropertyValueRead)
        async def read(self, message: PropertyValueRead, ctx: Context) -> MessageBase:
            ...

Whatever a handler returns goes back to the sender as the answer (correlated with the
request's id); whatever it raises goes back as a detailed ``ErrorReport``. Incoming messages
are handled one at a time, in arrival order, by the actor's inbox task; answers to the actor's
own requests bypass the inbox (so a handler may await a request without deadlock).

An actor that cannot keep up sheds what the design lets it shed, and counts it: while
``INBOX_BULK_LIMIT`` envelopes wait in its inbox, unreliable bulk envelopes (telemetry nobody
was promised) are dropped on arrival (``shed``). Critical, control and state envelopes, and
anything reliable, always wait their turn.
"""

from __future__ import annotations

import asyncio
import fnmatch
import itertools
import logging
import random
from collections.abc import Awaitable, Callable, Coroutine, Mapping
from dataclasses import dataclass
from types import TracebackType
from typing import Any, ClassVar, Protocol, Self, TypeVar

from broker_bridge import Endpoint, Envelope, Priority, Router
from broker_bridge.clock import WALL_CLOCK, Clock
from broker_bridge.codec import decode_body
from broker_bridge.envelope import is_group
from broker_bridge.session import SessionEvent
from object_model import ModelError, Role
from object_model.errors import (
    AccessDeniedError,
    RequestTimeoutError,
    UnsupportedOperationError,
)
from object_model.messages import ErrorReport, MessageBase, error_report

log = logging.getLogger("csms.actor")

INBOX_BULK_LIMIT = 1_000
SHED_LOG_EVERY_S = 10.0  # at most one log line per actor this often about what it shed

M = TypeVar("M", bound=MessageBase)
Handler = Callable[[Any, MessageBase, "Context"], Awaitable[MessageBase | None]]


def handles(*types: type[MessageBase]) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Declare the message types a handler method takes."""

    def mark(method: Callable[..., Any]) -> Callable[..., Any]:
        method._handles = types  # type: ignore[attr-defined]  # a mark on the function, read by Actor.__init_subclass__
        return method

    return mark


class RoleDirectory:
    """Which role each address plays: ``{"cs-*": Role.STATION, "cloud": Role.CLOUD_CSMS}``.

    Plain addresses (admitted peers, thousands of them) are looked up exactly; patterns with
    ``*``, ``?`` or ``[`` are tried in order, the latest added first. An unknown address has no
    role (and so no rights). Pattern results are cached, within ``cache_size`` addresses, so a
    stream of strangers cannot grow memory."""

    def __init__(self, patterns: Mapping[str, Role] | None = None, *,
                 cache_size: int = 10_000) -> None:
        self._exact: dict[str, Role] = {}
        self._patterns: list[tuple[str, Role]] = []
        self._cache: dict[str, Role | None] = {}
        self._cache_size = cache_size
        for pattern, role in (patterns or {}).items():
            if _is_pattern(pattern):
                self._patterns.append((pattern, role))
            else:
                self._exact.setdefault(pattern, role)

    def add(self, pattern: str, role: Role) -> None:
        if _is_pattern(pattern):
            self._patterns.insert(0, (pattern, role))
            self._cache.clear()
        else:
            self._exact[pattern] = role

    def role_of(self, address: str) -> Role | None:
        role = self._exact.get(address)
        if role is not None or not self._patterns:
            return role
        if address not in self._cache:
            if len(self._cache) >= self._cache_size:
                self._cache.clear()
            self._cache[address] = next(
                (role for pattern, role in self._patterns if fnmatch.fnmatchcase(address, pattern)),
                None)
        return self._cache[address]


def _is_pattern(text: str) -> bool:
    return any(c in text for c in "*?[")


@dataclass(frozen=True, slots=True)
class Context:
    """What a handler knows about the message it handles: its envelope, who sent it (and the
    role that gives it here), and the link it came by (answers go back by it)."""

    envelope: Envelope
    sender: str
    role: Role | None
    link: Endpoint | None = None

    @property
    def message_id(self) -> bytes:
        return self.envelope.id

    def time_left(self, now_us: int, cap: float) -> float:
        """Seconds a request made on this message's behalf may wait: what is left of the
        sender's deadline (less a margin for the answer's way back), at most ``cap``."""
        expires = self.envelope.expires_us
        if expires is None:
            return cap
        return max(0.05, min(cap, (expires - now_us) / 1e6 * 0.9))

    def require_role(self) -> Role:
        """The sender's role, or ``ACCESS_DENIED`` for strangers."""
        if self.role is None:
            raise AccessDeniedError(
                f"{self.sender!r} has no role here", details={"sender": self.sender})
        return self.role


class Messenger(Protocol):
    """The part of an actor its components use: who it is, its clock and randomness, how it
    talks to peers and how it runs tracked tasks. Components take this, never the actor."""

    address: str
    clock: Clock
    rng: random.Random

    def send(self, destination: str, message: MessageBase, *,
             priority: Priority = Priority.CONTROL, reliable: bool = False,
             expires_in_us: int | None = None, correlation: bytes | None = None,
             stream: str | None = None) -> Envelope: ...

    async def request(self, destination: str, message: MessageBase, *, timeout: float = 10.0,
                      priority: Priority = Priority.CONTROL, reliable: bool = False
                      ) -> MessageBase: ...

    async def exchange(self, destination: str, message: MessageBase, *, timeout: float = 10.0,
                       priority: Priority = Priority.CONTROL, reliable: bool = False
                       ) -> tuple[MessageBase, Envelope, Envelope]: ...

    def spawn(self, coro: Coroutine[Any, Any, Any], name: str) -> asyncio.Task[Any]: ...

    def defer(self, ctx: Context, work: Awaitable[MessageBase], name: str) -> None: ...


class Actor:
    """Base of every actor. Subclasses set ``role`` and declare handlers with ``@handles``."""

    role: ClassVar[Role]
    _routes: ClassVar[dict[str, str]] = {}

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        routes: dict[str, str] = {}
        for base in reversed(cls.__mro__[1:]):
            routes.update(getattr(base, "_routes", {}))
        for name, value in vars(cls).items():
            for message_type in getattr(value, "_handles", ()):
                routes[message_type.model_fields["kind"].default] = name
        cls._routes = routes

    def __init__(self, address: str, links: Router | Endpoint, *,
                 roles: RoleDirectory | None = None, clock: Clock | None = None,
                 rng: random.Random | None = None) -> None:
        self.address = address
        self.links = links if isinstance(links, Router) else Router(links)
        self.roles = roles or RoleDirectory()
        self.clock: Clock = clock or WALL_CLOCK
        self.rng = rng or random.Random()  # jitter of the actor's retries; seed it in tests
        # highest priority first, in arrival order within a priority: when the handlers fall
        # behind (a busy CPU), a critical envelope overtakes the backlog here as it does in
        # the sender's queues
        self._inbox: asyncio.PriorityQueue[tuple[int, int, Envelope, Endpoint | None]] = (
            asyncio.PriorityQueue())
        self._arrivals = itertools.count()
        self._pending: dict[bytes, tuple[asyncio.Future[Any], str]] = {}
        self._tasks: set[asyncio.Task[Any]] = set()
        self._running = False
        self._started = self._stopped = False
        self.handled = 0
        self.rejected = 0
        self.late_answers = 0
        self.shed = 0  # unreliable bulk envelopes dropped because the inbox was too deep
        self._shed_said_at: float | None = None

    @property
    def endpoint(self) -> Endpoint:
        """The default link (the only one unless the actor was given a ``Router`` with routes);
        messages leave through ``links``, which picks the link per destination."""
        return self.links.default

    # -- lifecycle ------------------------------------------------------------------------------

    async def start(self) -> Self:
        """Register on every link, run ``on_start``, then start the inbox.

        Envelopes that arrive while ``on_start`` runs (loading state, joining) wait in the
        inbox: no handler sees an actor whose state is not loaded yet. Answers to requests
        ``on_start`` makes are delivered directly, so it may talk to peers.
        """
        await self.links.register_each(self.address, self._arrival_on, self._session_event)
        self._running = self._started = True
        try:
            await self.on_start()
        except BaseException:
            await self.stop()
            raise
        if self._running:  # not halted meanwhile
            self.spawn(self._serve(), "inbox")
        return self

    def halt(self) -> None:
        """Stop intake now: no more envelopes are handled, and the actor's tasks (its inbox,
        ticks, publishing, loops) are cancelled. ``stop`` finishes the job. A process that
        stops many actors halts them all first, so that none keeps working (and loading the
        event loop) while the others flush their state."""
        self._running = False
        for task in list(self._tasks):
            task.cancel()

    async def stop(self) -> None:
        """Halt, wait for the actor's tasks to end, run ``on_stop`` (flush state), then stop
        taking envelopes at all and cancel pending requests."""
        if not self._started or self._stopped:
            return
        self._stopped = True
        self.halt()
        try:
            await asyncio.gather(*self._tasks, return_exceptions=True)
            await self.on_stop()
        finally:
            self.links.unregister(self.address)
            for task in list(self._tasks):  # spawned by on_stop, if anything was
                task.cancel()
            await asyncio.gather(*self._tasks, return_exceptions=True)
            for future, _ in self._pending.values():
                future.cancel()
            self._pending.clear()

    async def on_start(self) -> None:
        """Override: start background work."""

    async def on_stop(self) -> None:
        """Override: make state durable (the actor's tasks have ended; its links still
        carry what it sends)."""

    async def __aenter__(self) -> Self:
        return await self.start()

    async def __aexit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                        tb: TracebackType | None) -> None:
        await self.stop()

    @property
    def inbox_depth(self) -> int:
        """Envelopes waiting for the actor's handlers."""
        return self._inbox.qsize()

    def spawn(self, coro: Coroutine[Any, Any, Any], name: str) -> asyncio.Task[Any]:
        """Run ``coro`` as a tracked task: cancelled at stop, failures logged, never lost."""
        task = asyncio.create_task(coro, name=f"{self.address}:{name}")
        self._tasks.add(task)
        task.add_done_callback(self._task_done)
        return task

    def _task_done(self, task: asyncio.Task[Any]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.error("%s: task %s failed", self.address, task.get_name(),
                      exc_info=task.exception())

    # -- sending -------------------------------------------------------------------------------

    def send(self, destination: str, message: MessageBase, *,
             priority: Priority = Priority.CONTROL, reliable: bool = False,
             expires_in_us: int | None = None, correlation: bytes | None = None,
             stream: str | None = None) -> Envelope:
        return self.links.send(source=self.address, destination=destination, message=message,
                               priority=priority, reliable=reliable, expires_in_us=expires_in_us,
                               correlation=correlation, stream=stream)

    async def request(self, destination: str, message: MessageBase, *, timeout: float = 10.0,
                      priority: Priority = Priority.CONTROL, reliable: bool = False) -> MessageBase:
        """Send ``message`` and wait for the answer; an ``ErrorReport`` answer is raised as the
        error it reports, silence as ``TIMEOUT``."""
        answer, _, _ = await self.exchange(destination, message, timeout=timeout,
                                           priority=priority, reliable=reliable)
        return answer

    async def exchange(self, destination: str, message: MessageBase, *, timeout: float = 10.0,
                       priority: Priority = Priority.CONTROL, reliable: bool = False
                       ) -> tuple[MessageBase, Envelope, Envelope]:
        """``request``, also returning the request and answer envelopes (to count bytes)."""
        env = self.send(destination, message, priority=priority, reliable=reliable,
                        expires_in_us=int(timeout * 1e6))
        future: asyncio.Future[tuple[MessageBase, Envelope]] = (
            asyncio.get_running_loop().create_future())
        self._pending[env.id] = (future, destination)
        try:
            async with asyncio.timeout(timeout):
                answer, answer_env = await future
        except TimeoutError:
            raise RequestTimeoutError(
                f"no answer from {destination!r} to {type(message).__name__} within {timeout:g} s",
                details={"destination": destination}) from None
        finally:
            self._pending.pop(env.id, None)
        if isinstance(answer, ErrorReport):
            raise answer.to_exception()
        return answer, env, answer_env

    # -- receiving ----------------------------------------------------------------------------

    def _arrival_on(self, link: Endpoint) -> Callable[[Envelope], None]:
        return lambda env: self._arrived(env, link)

    def _arrived(self, env: Envelope, link: Endpoint | None = None) -> None:
        if env.correlation is not None:
            pending = self._pending.get(env.correlation)
            if pending is not None:
                future = pending[0]
                if not future.done():
                    try:
                        future.set_result((decode_body(env.kind, env.body), env))
                    except ModelError as exc:
                        future.set_exception(exc)
                return
            if env.kind != "ErrorReport":
                # an answer to a request that gave up waiting: nobody wants it, and answering
                # it would only start a ping-pong of errors
                self.late_answers += 1
                log.debug("%s: dropped a late %s from %s", self.address, env.kind, env.source)
                return
        if not self._running:
            return
        if (env.priority is Priority.BULK and not env.reliable
                and self._inbox.qsize() >= INBOX_BULK_LIMIT):
            self._shed(env)
            return
        self._inbox.put_nowait((env.priority, next(self._arrivals), env, link))

    def _shed(self, env: Envelope) -> None:
        self.shed += 1
        now = self.clock.monotonic()
        if self._shed_said_at is None or now - self._shed_said_at >= SHED_LOG_EVERY_S:
            self._shed_said_at = now
            log.warning("%s: cannot keep up (%d envelopes waiting): shedding unreliable bulk "
                        "envelopes, %d so far (the last a %s from %s)", self.address,
                        self._inbox.qsize(), self.shed, env.kind, env.source)

    async def _serve(self) -> None:
        inbox = self._inbox
        while True:
            _, _, env, link = await inbox.get()
            await self._handle(env, link)
            if not inbox.empty():
                # a get() from a queue that holds something does not yield: without this,
                # a backlog of slow handlers would keep the loop from reading the sockets,
                # and a critical envelope would wait outside, behind the rest, for all of it
                await asyncio.sleep(0)

    async def _handle(self, env: Envelope, link: Endpoint | None = None) -> None:
        # the broker vouches for the source of direct envelopes, not for that of broadcasts
        # (anyone in a room may pick any nickname): a broadcast carries no rights
        role = None if is_group(env.destination) else self.roles.role_of(env.source)
        ctx = Context(env, env.source, role, link)
        try:
            message = decode_body(env.kind, env.body)
            method = self._routes.get(env.kind)
            if method is None:
                if isinstance(message, ErrorReport):
                    await self.on_error_report(message, ctx)
                    return
                raise UnsupportedOperationError(
                    f"{self.address} does not handle {env.kind}",
                    details={"kind": env.kind, "handled": sorted(self._routes)})
            answer = await getattr(self, method)(message, ctx)
            self.handled += 1
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            self._refuse(ctx, exc)
            return
        if answer is not None:
            self._answer(ctx, answer, env.priority)

    def _refuse(self, ctx: Context, exc: Exception) -> None:
        """Count and log a failed handling, and answer it with its ErrorReport (not to an
        ErrorReport or Ack: that would start a ping-pong of errors)."""
        env = ctx.envelope
        self.rejected += 1
        if not isinstance(exc, ModelError):
            log.exception("%s: handling %s from %s failed", self.address, env.kind, env.source,
                          exc_info=exc)
        else:
            log.info("%s: rejected %s from %s: %s", self.address, env.kind, env.source, exc)
        if env.kind not in ("ErrorReport", "Ack"):
            self._answer(ctx, error_report(exc, answers=env.id),
                         min(env.priority, Priority.CONTROL))

    def defer(self, ctx: Context, work: Awaitable[MessageBase], name: str) -> None:
        """Answer ``ctx``'s message with what ``work`` returns (or the ErrorReport of what it
        raises) when it is done, while the inbox goes on: for a handler whose answer waits on
        another peer that may, in turn, be waiting on this actor (return ``None`` after)."""

        async def run() -> None:
            try:
                answer = await work
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                self._refuse(ctx, exc)
                return
            self._answer(ctx, answer, ctx.envelope.priority)

        self.spawn(run(), name)

    def _answer(self, ctx: Context, answer: MessageBase, priority: Priority) -> None:
        """Send ``answer`` to the sender of ``ctx``'s message, by the link it came by (a peer
        on the cloud broker is answered there, whatever the routes say); a failure to send
        (the endpoint is stopping, the answer cannot be encoded) is logged, and the inbox
        goes on."""
        env = ctx.envelope
        try:
            links = self.links if ctx.link is None else ctx.link
            links.send(source=self.address, destination=env.source, message=answer,
                       correlation=env.id, priority=priority)
        except Exception:
            log.exception("%s: could not answer %s from %s", self.address, env.kind,
                          env.source)

    async def on_error_report(self, report: ErrorReport, ctx: Context) -> None:
        """An ErrorReport that answers no pending request (e.g. about a notification we sent)."""
        log.warning("%s: %s reports %s: %s", self.address, ctx.sender, report.code.value,
                    report.text)

    def _session_event(self, event: SessionEvent) -> None:
        self.on_session_event(event)

    def on_session_event(self, event: SessionEvent) -> None:
        """Override: gaps, stream resets and abandoned envelopes of this actor's streams."""
