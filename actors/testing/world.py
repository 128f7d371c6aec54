"""Actors on the in-memory network with real SQLite stores, closed together.

The in-memory transport proves logic, never delivery (that is the XMPP adapter's job, tested
against a real broker); everything else here is real: the endpoints, sessions and stores.
"""

from __future__ import annotations

from contextlib import AsyncExitStack
from pathlib import Path
from typing import TypeVar

from actors.runtime.actor import Actor
from actors.runtime.storage.trees import TreeStore
from broker_bridge import Endpoint, SessionConfig
from broker_bridge.memory import MemoryNetwork

A = TypeVar("A", bound=Actor)


class World:
    """Endpoints on one ``MemoryNetwork`` (``net``), stores under ``root``, and actors, all
    entered into ``stack`` so that closing it stops the actors, then the endpoints and
    stores, in reverse order."""

    def __init__(self, root: Path, stack: AsyncExitStack, *,
                 net: MemoryNetwork | None = None) -> None:
        self.root, self.stack = root, stack
        self.net = net or MemoryNetwork()
        self.endpoints: dict[str, Endpoint] = {}

    async def endpoint(self, name: str, *, config: SessionConfig | None = None) -> Endpoint:
        """A started endpoint on the network (``name`` labels it; actors pick addresses)."""
        endpoint = await self.stack.enter_async_context(
            Endpoint(self.net.transport(name), config=config, name=name))
        self.endpoints[name] = endpoint
        return endpoint

    async def store(self, name: str) -> TreeStore:
        """An open tree store in ``root/<name>.db``."""
        return await self.stack.enter_async_context(TreeStore(self.root / f"{name}.db"))

    async def actor(self, actor: A) -> A:
        """``actor`` started, and stopped with the world."""
        await actor.start()
        self.stack.push_async_callback(actor.stop)
        return actor


__all__ = ["World"]
