"""The router: which broker link carries a message, for actors that hold more than one.

A local CSMS holds two links (DESIGN.md section 5): its site broker, where its stations and
resource manager are, and one client connection across the uplink to the cloud broker. Each
link is an ``Endpoint`` with its own session, outbox, link state and write budget, so an outage
of one holds only that link's envelopes (reliable ones wait in its outbox and leave when it
comes back) and never delays the other's.

Destinations are matched against ``(pattern, endpoint)`` routes in order (``fnmatchcase``:
``cloud*``, ``group:cloud-*``); the first match wins and anything unmatched takes the default
endpoint. A router over one endpoint is exactly that endpoint. The actor is registered on every
endpoint, so peers reach it over whichever link they share with it; a group is joined on the
endpoint its address routes to, since that is where broadcasts to it travel.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from fnmatch import fnmatchcase

from broker_bridge.endpoint import Endpoint, EnvelopeHandler, EventHandler
from broker_bridge.envelope import Envelope, Priority
from object_model.messages import MessageBase

_CACHE_SIZE = 10_000


class Router:
    """Destination patterns to endpoints, with a default (see the module docstring)."""

    def __init__(self, default: Endpoint, routes: Sequence[tuple[str, Endpoint]] = ()) -> None:
        self._default = default
        self._routes = tuple(routes)
        distinct = {id(default): default}
        for _, endpoint in self._routes:
            distinct.setdefault(id(endpoint), endpoint)
        self._endpoints = tuple(distinct.values())
        self._chosen: dict[str, Endpoint] = {}

    @property
    def default(self) -> Endpoint:
        """The endpoint of every destination no route matches."""
        return self._default

    @property
    def routes(self) -> tuple[tuple[str, Endpoint], ...]:
        """``(pattern, endpoint)`` pairs, tried in order."""
        return self._routes

    @property
    def endpoints(self) -> tuple[Endpoint, ...]:
        """Every endpoint once, the default first (to start, stop or watch them all)."""
        return self._endpoints

    def endpoint_for(self, destination: str) -> Endpoint:
        """The endpoint that carries envelopes to ``destination`` (an actor or group address)."""
        if not self._routes:
            return self._default
        endpoint = self._chosen.get(destination)
        if endpoint is None:
            endpoint = next((e for pattern, e in self._routes if fnmatchcase(destination, pattern)),
                            self._default)
            if len(self._chosen) >= _CACHE_SIZE:  # a stream of new addresses cannot grow it
                self._chosen.clear()
            self._chosen[destination] = endpoint
        return endpoint

    async def register(self, address: str, on_envelope: EnvelopeHandler,
                       on_event: EventHandler | None = None) -> None:
        """Host ``address`` on every endpoint (see ``Endpoint.register``); if one refuses, the
        others are undone and the error raised."""
        await self.register_each(address, lambda endpoint: on_envelope, on_event)

    async def register_each(self, address: str,
                            handler_for: Callable[[Endpoint], EnvelopeHandler],
                            on_event: EventHandler | None = None) -> None:
        """``register``, with a handler of its own for each endpoint (``handler_for``), so
        that what arrives knows the link it came by (and answers go back by it)."""
        done: list[Endpoint] = []
        try:
            for endpoint in self._endpoints:
                await endpoint.register(address, handler_for(endpoint), on_event)
                done.append(endpoint)
        except BaseException:
            for endpoint in done:
                endpoint.unregister(address)
            raise

    def unregister(self, address: str) -> None:
        """Stop hosting ``address`` on every endpoint."""
        for endpoint in self._endpoints:
            endpoint.unregister(address)

    async def join_group(self, group: str, address: str) -> None:
        """Deliver broadcasts to ``group`` to ``address``, on the endpoint ``group`` routes to."""
        await self.endpoint_for(group).join_group(group, address)

    def send(self, *, source: str, destination: str, message: MessageBase | None = None,
             kind: str | None = None, body: bytes | None = None,
             priority: Priority = Priority.CONTROL, reliable: bool = False,
             expires_in_us: int | None = None, correlation: bytes | None = None,
             stream: str | None = None) -> Envelope:
        """``Endpoint.send`` on the endpoint that carries envelopes to ``destination``."""
        return self.endpoint_for(destination).send(
            source=source, destination=destination, message=message, kind=kind, body=body,
            priority=priority, reliable=reliable, expires_in_us=expires_in_us,
            correlation=correlation, stream=stream)


__all__ = ["Router"]
