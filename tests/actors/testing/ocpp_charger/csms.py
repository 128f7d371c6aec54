"""An independent CSMS for the simulated charger's tests: a ``websockets`` server with the
``ocpp`` package's ``ChargePoint`` as the central system's side of each connection.

Every message the charger sends (its calls, its answers to ours, its CALLERRORs) is kept in
``Csms.log`` in the order it came and checked against the OCA's JSON schema of its action
(``ocpp/v201/schemas``, compiled with ``jsonschema_rs``, formats checked): what fails is in
``Csms.violations``, which every test asserts empty. The ``ocpp`` package's own validation is
on as well (its ``@on`` handlers and ``call``).
"""

from __future__ import annotations

import contextlib
import json
import ssl
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import cache
from pathlib import Path
from typing import Any

import jsonschema_rs
import ocpp
import websockets
from ocpp.routing import on
from ocpp.v201 import ChargePoint, call_result
from websockets.asyncio.server import Server, ServerConnection

from actors.testing import until

SCHEMAS = Path(ocpp.__file__).parent / "v201" / "schemas"


@cache
def _validator(name: str) -> Any:
    return jsonschema_rs.validator_for(json.loads((SCHEMAS / f"{name}.json").read_text()),
                                       validate_formats=True)


def schema_errors(action: str, direction: str, payload: Any) -> list[str]:
    """What is wrong with ``payload`` as ``action``'s ``direction`` (Request, Response)."""
    if not (SCHEMAS / f"{action}{direction}.json").exists():
        return [f"{action} is no OCPP 2.0.1 action"]
    return [f"{action}{direction} /{'/'.join(map(str, e.instance_path))}: {e.message}"
            for e in _validator(f"{action}{direction}").iter_errors(payload)]


@dataclass(frozen=True, slots=True)
class Message:
    """One message from the charger: a call of its own ("call"), an answer to one of ours
    ("result") or a CALLERROR ("error")."""

    kind: str
    action: str
    payload: dict[str, Any]
    connection: int  # which connection of the charger's (1, 2, ...)


def now_stamp() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


class CentralSystem(ChargePoint):
    """The CSMS's side of one connection."""

    def __init__(self, identity: str, connection: ServerConnection, csms: Csms,
                 number: int) -> None:
        super().__init__(identity, connection, response_timeout=5)
        self.csms, self.number = csms, number
        self._asked: dict[str, str] = {}  # our call's id -> its action

    async def route_message(self, raw_msg: str) -> None:
        message = json.loads(raw_msg)
        if message[0] == 2:
            self.csms.keep(Message("call", message[2], message[3], self.number), "Request")
        elif message[0] == 3:
            action = self._asked.pop(message[1], "?")
            self.csms.keep(Message("result", action, message[2], self.number), "Response")
        elif message[0] == 4:
            action = self._asked.pop(message[1], "?")
            self.csms.keep(Message("error", action, {"code": message[2]}, self.number), None)
        await super().route_message(raw_msg)

    async def _send(self, message: str) -> None:
        parsed = json.loads(message)
        if parsed[0] == 2:
            self._asked[parsed[1]] = parsed[2]
        await super()._send(message)

    @on("BootNotification")
    async def on_boot(self, **_: Any) -> Any:
        if self.csms.before_boot_answer is not None:
            await self.csms.before_boot_answer()
        status = self.csms.boot_statuses.pop(0) if self.csms.boot_statuses else "Accepted"
        return call_result.BootNotification(current_time=now_stamp(),
                                            interval=self.csms.interval, status=status)

    @on("Heartbeat")
    async def on_heartbeat(self, **_: Any) -> Any:
        return call_result.Heartbeat(current_time=now_stamp())

    @on("StatusNotification")
    async def on_status(self, **_: Any) -> Any:
        return call_result.StatusNotification()

    @on("TransactionEvent")
    async def on_transaction(self, id_token: Any = None, **_: Any) -> Any:
        return call_result.TransactionEvent(
            id_token_info={"status": "Accepted"} if id_token else None)

    @on("MeterValues")
    async def on_meter_values(self, **_: Any) -> Any:
        return call_result.MeterValues()

    @on("NotifyReport")
    async def on_report(self, **_: Any) -> Any:
        return call_result.NotifyReport()

    @on("NotifyEvent")
    async def on_event(self, **_: Any) -> Any:
        return call_result.NotifyEvent()

    @on("FirmwareStatusNotification")
    async def on_firmware(self, **_: Any) -> Any:
        return call_result.FirmwareStatusNotification()

    @on("NotifyEVChargingNeeds")
    async def on_needs(self, **_: Any) -> Any:
        return call_result.NotifyEVChargingNeeds(status="Accepted")


class Csms:
    """The server (``async with``); ``call`` asks the charger on its latest connection."""

    def __init__(self, *, boot_statuses: Iterable[str] = (), interval: int = 300,
                 tls: ssl.SSLContext | None = None) -> None:
        self.tls = tls  # a server context: wss://
        self.boot_statuses = list(boot_statuses)  # the next BootNotifications' answers
        self.before_boot_answer: Callable[[], Awaitable[None]] | None = None
        self.interval = interval
        self.log: list[Message] = []
        self.violations: list[str] = []
        self.sides: list[CentralSystem] = []
        self.paths: list[str] = []
        self._server: Server | None = None

    async def __aenter__(self) -> Csms:
        self._server = await websockets.serve(self._serve, "127.0.0.1", 0, ssl=self.tls,
                                              subprotocols=["ocpp2.0.1"])  # type: ignore[list-item]
        return self

    async def __aexit__(self, *_: object) -> None:
        assert self._server is not None
        self._server.close()
        await self._server.wait_closed()

    @property
    def url(self) -> str:
        assert self._server is not None
        port = next(iter(self._server.sockets)).getsockname()[1]
        return f"{'wss' if self.tls else 'ws'}://127.0.0.1:{port}/ocpp/"

    async def _serve(self, connection: ServerConnection) -> None:
        assert connection.request is not None
        self.paths.append(connection.request.path)
        side = CentralSystem(connection.request.path.rsplit("/", 1)[-1], connection, self,
                             len(self.sides) + 1)
        self.sides.append(side)
        with contextlib.suppress(websockets.ConnectionClosed):
            await side.start()

    def keep(self, message: Message, direction: str | None) -> None:
        self.log.append(message)
        if direction is not None:
            self.violations += schema_errors(message.action, direction, message.payload)

    def close_all(self) -> None:
        """Drop every charger's connection at once (the link dies)."""
        for side in self.sides:
            side._connection.transport.abort()

    async def call(self, payload: Any, **options: Any) -> Any:
        """Our call on the charger's latest connection: its result dataclass."""
        return await self.sides[-1].call(payload, **options)

    def calls(self, action: str, connection: int | None = None) -> list[dict[str, Any]]:
        """The payloads of the charger's calls of ``action`` so far."""
        return [m.payload for m in self.log if m.kind == "call" and m.action == action
                and (connection is None or m.connection == connection)]

    def index(self, kind: str, action: str, start: int = 0) -> int:
        """Where in the log the first such message from ``start`` on is (-1: none)."""
        return next((i for i, m in enumerate(self.log) if i >= start and m.kind == kind
                     and m.action == action), -1)

    async def wait_call(self, action: str, count: int = 1, timeout: float = 5.0,
                        **matching: Any) -> list[dict[str, Any]]:
        """Wait until the charger has sent ``count`` calls of ``action`` whose top-level
        fields equal ``matching``; those calls."""

        def found() -> list[dict[str, Any]]:
            return [p for p in self.calls(action)
                    if all(p.get(k) == v for k, v in matching.items())]

        await until(lambda: len(found()) >= count,
                    f"{count} {action} {matching or ''} from the charger", timeout)
        return found()

    async def wait_connections(self, count: int, timeout: float = 5.0) -> None:
        await until(lambda: len(self.sides) >= count, f"{count} connections", timeout)


__all__ = ["Csms", "Message", "schema_errors"]
