"""One charger's OCPP-J link: the RPC pipe over the WebSocket the gateway hands it.

*One call in flight per direction* (Part 4 §4.1.1): our calls wait their turn on a lock, and
the charger's are served in the order they come, while one of ours is outstanding, by the
same loop that reads our answers; no handler of the charger's calls waits on a call of ours:
what must follow an answer (the report a boot asks for, the effect of a remote start) is
queued with ``after_answer`` and runs once the answer is sent. A result that comes late
(after the call timed out) is logged, never matched to a newer call.

*A new connection replaces the old one*: the call in flight on the old one fails at once
(``INVALID_STATE``, reason ``offline``), as does any call while no connection is open, so
nothing waits on a timeout for a charger that is gone.

*The charger's errors are answered as OCPP asks*: bad JSON ``RpcFrameworkError``, a payload
off its schema ``FormatViolation``, an action OCPP 2.0.1 does not have ``NotImplemented``,
one not served ``NotSupported``, what the tree refuses ``PropertyConstraintViolation``, a
store failure ``InternalError`` (the charger sends it again); the connection stays up.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any, Protocol

from actors.logic.ocpp import rpc
from actors.logic.ocpp.rpc import Call, CallError, CallResult, RpcError, printable
from actors.station.ocpp import schemas
from object_model import ModelError
from object_model.errors import InvalidStateError, InvalidValueError, RequestTimeoutError

log = logging.getLogger("csms.ocpp")

CALL_TIMEOUT_S = 4.0  # within the CSMS's 5 s for a write to be answered

Handler = Callable[[str, dict[str, Any]], Awaitable[dict[str, Any]]]
"""Serves one of the charger's calls: action and payload (schema-checked) to the answer."""


class Connection(Protocol):
    """What the link needs of a WebSocket (``websockets``' server connection has it)."""

    async def send(self, message: str) -> None: ...

    async def recv(self) -> str | bytes: ...

    async def close(self, code: int = 1000, reason: str = "") -> None: ...


class OcppLink:
    """See the module docstring. ``handle`` serves the charger's calls; ``opened`` and
    ``closed`` are told when a connection starts and ends being the charger's."""

    def __init__(self, identity: str, handle: Handler, *,
                 opened: Callable[[], None], closed: Callable[[], None]) -> None:
        self.identity = identity
        self._handle, self._opened, self._closed = handle, opened, closed
        self.connection: Connection | None = None
        self._calls = asyncio.Lock()
        self._pending: tuple[str, asyncio.Future[dict[str, Any]]] | None = None
        self._ids = itertools.count(1)
        self._after: list[Coroutine[Any, Any, None]] = []
        self._followers: set[asyncio.Task[None]] = set()
        self.served = self.refused = 0  # the charger's calls answered, and with an error

    @property
    def online(self) -> bool:
        return self.connection is not None

    async def serve(self, connection: Connection) -> None:
        """Speak OCPP-J over ``connection`` until it closes (or a newer one replaces it)."""
        old, self.connection = self.connection, connection
        if old is not None:  # a new connection for the identity replaces the old one
            log.info("%s: a new connection replaces the old one", self.identity)
            self._fail_pending("its connection was replaced")  # sent on the old one
            with contextlib.suppress(Exception):
                await old.close(1000, "replaced by a new connection")
        self._opened()
        try:
            while True:
                try:
                    text = await connection.recv()
                except Exception:  # closed, one way or another
                    return
                await self._take(connection, text)
        finally:
            if self.connection is connection:
                self.connection = None
                self._fail_pending("the charger disconnected")
                self._closed()

    def after_answer(self, work: Coroutine[Any, Any, None]) -> None:
        """Run ``work`` once the answer to the call being served has been sent (a call of
        ours must not be made from inside a handler: the charger waits for our answer)."""
        self._after.append(work)

    async def stop(self) -> None:
        """Cancel what runs after answers (the station is stopping)."""
        for task in list(self._followers):
            task.cancel()
        await asyncio.gather(*self._followers, return_exceptions=True)

    async def _take(self, connection: Connection, text: str | bytes) -> None:
        try:
            frame = rpc.parse(text)
        except RpcError as exc:
            log.info("%s: refused a message: %s", self.identity, exc)
            self.refused += 1
            if exc.answered:
                await self._send(connection, exc.answer())
            elif exc.message_id is not None:  # our call's answer, malformed: it failed
                self._settle(CallError(exc.message_id, exc.code, exc.description))
            return
        if isinstance(frame, Call):
            await self._serve_call(connection, frame)
            self._follow()
        else:
            self._settle(frame)

    def _follow(self) -> None:
        after, self._after = self._after, []
        for work in after:
            task = asyncio.create_task(self._guarded(work))
            self._followers.add(task)
            task.add_done_callback(self._followers.discard)

    async def _guarded(self, work: Coroutine[Any, Any, None]) -> None:
        try:
            await work
        except ModelError as exc:
            log.warning("%s: %s", self.identity, exc)
        except Exception:
            log.exception("%s: what followed an answer failed", self.identity)

    async def _serve_call(self, connection: Connection, call: Call) -> None:
        try:
            schemas.check(call.action, "Request", call.payload, call.id)
            answer = await self._handle(call.action, call.payload)
            schemas.check(call.action, "Response", answer, call.id)
        except RpcError as exc:
            self._refuse(call, exc)
            await self._send(connection, CallError(call.id, exc.code, exc.description[:255],
                                                   exc.details))
            return
        except (ValueError, KeyError, TypeError, ArithmeticError) as exc:  # what the
            # schema lets through (a date it cannot parse, a multiplier of 10^400...)
            self._refuse(call, exc)
            await self._send(connection, CallError(call.id, rpc.FORMAT_VIOLATION,
                                                   f"{type(exc).__name__}: {exc}"[:255]))
            return
        except ModelError as exc:  # the tree refused what it says
            self._refuse(call, exc)
            await self._send(connection, CallError(call.id, rpc.PROPERTY_CONSTRAINT_VIOLATION,
                                                   str(exc)[:255]))
            return
        except Exception as exc:  # a store failure: the charger sends it again
            self.refused += 1
            self._after.clear()
            log.exception("%s: serving %s failed", self.identity, call.action)
            await self._send(connection, CallError(
                call.id, rpc.INTERNAL_ERROR, f"{type(exc).__name__}"[:255]))
            return
        self.served += 1
        await self._send(connection, CallResult(call.id, answer))

    def _refuse(self, call: Call, exc: Exception) -> None:
        self.refused += 1
        self._after.clear()  # nothing follows a refusal
        log.info("%s: %s refused: %s", self.identity, call.action, exc)

    async def _send(self, connection: Connection, frame: rpc.Frame) -> None:
        with contextlib.suppress(Exception):  # a closed socket: the charger sends again
            await connection.send(rpc.encode(frame))

    def _settle(self, frame: CallResult | CallError) -> None:
        pending = self._pending
        if pending is None or pending[0] != frame.id or pending[1].done():
            log.warning("%s: an answer to no call of ours in flight (%s): dropped",
                        self.identity, printable(frame.id, 36))
            return
        future = pending[1]
        if isinstance(frame, CallResult):
            future.set_result(frame.payload)
        else:
            code = printable(frame.code, 40)
            future.set_exception(InvalidValueError(
                f"{self.identity} answered {code}: {printable(frame.description, 255)}",
                details={"ocpp_error": code}))

    def _fail_pending(self, why: str) -> None:
        if self._pending is not None and not self._pending[1].done():
            self._pending[1].set_exception(offline(self.identity, why))

    async def call(self, action: str, payload: dict[str, Any],
                   timeout_s: float = CALL_TIMEOUT_S) -> dict[str, Any]:
        """Call ``action`` on the charger and return its answer (one call in flight: the
        next waits its turn). ``INVALID_STATE`` at once when it is not connected."""
        schemas.check(action, "Request", payload)
        async with self._calls:
            connection = self.connection
            if connection is None:
                raise offline(self.identity, "it is not connected")
            message_id = f"{self.identity[:20]}-{next(self._ids)}"
            future: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
            self._pending = (message_id, future)
            try:
                await connection.send(rpc.encode(Call(message_id, action, payload)))
                async with asyncio.timeout(timeout_s):
                    answer = await future
            except TimeoutError:
                raise RequestTimeoutError(f"{self.identity} did not answer {action} within "
                                          f"{timeout_s:g} s") from None
            finally:
                self._pending = None
        try:
            schemas.check(action, "Response", answer)
        except RpcError as exc:
            raise InvalidValueError(f"{self.identity} answered {action} off its schema: "
                                    f"{exc.description}") from None
        return answer


def offline(identity: str, why: str) -> ModelError:
    return InvalidStateError(f"{identity} is offline ({why}): nothing was sent to it",
                             details={"reason": "offline"})


__all__ = ["CALL_TIMEOUT_S", "Connection", "Handler", "OcppLink", "offline"]
