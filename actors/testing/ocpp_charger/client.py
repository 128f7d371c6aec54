"""The charger's OCPP-J endpoint: the ``ocpp`` package's ``ChargePoint`` over one WebSocket,
kept in a small box.

* Payloads in and out are the spec's JSON (camelCase): a handler reads the call as it came
  on the wire (``payload``), not the package's snake_case rewrite of it, and answers a dict
  that becomes the package's result dataclass (``answer``); ``send`` turns a dict into the
  package's call dataclass.
* A handler only decides and answers: nothing in it waits on a call of the charger's own (the
  package's reader would wait with it). What follows an answer (the pages of a report, a
  triggered message, the events of a remote start) is a ``Followup`` it returns, started
  only once the answer is on the wire, so the CSMS always gets the answer first.
* Every message the charger sends and every call it gets is journalled on the charger.
"""

from __future__ import annotations

import contextlib
import json
import re
from collections.abc import Awaitable, Callable, Coroutine, Mapping
from typing import TYPE_CHECKING, Any

from ocpp.v201 import ChargePoint, call, call_result

if TYPE_CHECKING:
    from actors.testing.ocpp_charger.charger import SimulatedCharger

Payload = dict[str, Any]
Followup = Callable[[], Coroutine[Any, Any, None]]
Answer = tuple[Payload, Followup | None]
Handler = Callable[["SimulatedCharger", Payload], Answer]

_CAMEL = re.compile(r"(?<!^)(?=[A-Z])")


def _fields(payload: Payload) -> dict[str, Any]:
    """A payload's top-level names as the package's dataclass fields (nested dicts keep
    the spec's names: the package passes camelCase through unchanged)."""
    return {_CAMEL.sub("_", name).lower(): value for name, value in payload.items()}


def request(action: str, payload: Payload) -> Any:
    """The package's call dataclass of ``action`` carrying ``payload``."""
    return getattr(call, action)(**_fields(payload))


def answer(action: str, payload: Payload) -> Any:
    """The package's result dataclass of ``action`` carrying ``payload``."""
    return getattr(call_result, action)(**_fields(payload))


class Client(ChargePoint):
    """One connection of ``owner`` to its CSMS."""

    def __init__(self, owner: SimulatedCharger, connection: Any, *,
                 handlers: Mapping[str, Handler], response_timeout: float) -> None:
        super().__init__(owner.identity, connection, response_timeout=response_timeout)
        self.owner = owner
        self.payloads: dict[str, Payload] = {}  # call id -> the call's payload as sent
        self.followups: dict[str, Followup] = {}
        self._actions: dict[str, str] = {}  # call id -> action, for the journal of answers
        # the package's own schema check costs ~2 ms a message; the tests validate what is
        # sent. Any other action is answered NotImplemented by the package.
        self.route_map = {action: {"_on_action": self._handler(action, handler),
                                   "_skip_schema_validation": True}
                          for action, handler in handlers.items()}

    def _handler(self, action: str, handler: Handler) -> Callable[..., Awaitable[Any]]:
        async def handle(call_unique_id: str, **_: Any) -> Any:
            result, followup = handler(self.owner, self.payloads[call_unique_id])
            if followup is not None:
                self.followups[call_unique_id] = followup
            return answer(action, result)

        return handle

    async def send(self, action: str, payload: Payload) -> Any:
        """Call ``action`` at the CSMS; its result dataclass (None for a CALLERROR)."""
        self.owner.journal_sent(action, payload)
        return await self.call(request(action, payload), skip_schema_validation=True)

    async def route_message(self, raw_msg: str) -> None:
        message = None
        with contextlib.suppress(ValueError):
            message = json.loads(raw_msg)
        ident = None
        if isinstance(message, list) and len(message) == 4 and message[0] == 2 and \
                isinstance(message[3], dict):
            ident, action, payload = str(message[1]), str(message[2]), message[3]
            self.payloads[ident], self._actions[ident] = payload, action
            self.owner.journal_received(action, payload)
        try:
            await super().route_message(raw_msg)
        finally:
            if ident is not None:
                self.payloads.pop(ident, None)
                self._actions.pop(ident, None)
                followup = self.followups.pop(ident, None)
                if followup is not None:  # the answer is on the wire: now what follows it
                    self.owner.spawn(followup(), f"after {action}")

    async def _send(self, message: str) -> None:
        parsed = json.loads(message)
        if parsed[0] == 3:
            self.owner.journal_answered(self._actions.get(parsed[1], "?"), parsed[2])
        elif parsed[0] == 4:
            self.owner.journal_answered(self._actions.get(parsed[1], "?"),
                                        {"error": parsed[2], "description": parsed[3]})
        await super()._send(message)


__all__ = ["Answer", "Client", "Followup", "Handler", "Payload", "answer", "request"]
