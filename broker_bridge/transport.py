"""The Transport protocol: what moves frames between endpoints, whatever the broker.

A transport carries opaque frames to actor or group addresses and reports frames, link state
and write readiness back through three callbacks the endpoint sets. It owns every broker detail
(JIDs, stanzas, rooms, accounts); nothing of those crosses this interface.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol, runtime_checkable


@dataclass(frozen=True, slots=True)
class Origin:
    """Who sent a frame, as far as the transport can tell.

    ``address``: where to answer a frame too broken to name its sender (``None``: nowhere).
    ``may_send_as``: the envelope sources the connection behind the frame may use, as the
    broker authenticated it (a client account sends only as itself; a component as any
    address of its domain); ``None`` when the transport vouches for nothing.
    ``broadcast``: the frame came through a group; only group envelopes may ride in it.
    Transports keep one ``Origin`` per sender, not one per frame.
    """

    address: str | None = None
    may_send_as: Callable[[str], bool] | None = None
    broadcast: bool = False


UNKNOWN_ORIGIN = Origin()

FrameCallback = Callable[[Origin, bytes], None]
"""``(who sent it, frame bytes)``"""
LinkCallback = Callable[[bool], None]
WritableCallback = Callable[[], None]


@runtime_checkable
class Transport(Protocol):
    """Moves frames for the actors of one endpoint."""

    on_frame: FrameCallback
    on_link: LinkCallback
    on_writable: WritableCallback

    async def start(self, *, wait: bool = True) -> None:
        """Connect (and keep reconnecting when the link drops, reporting it via ``on_link``);
        with ``wait``, return once the first connection is up (or raise if it cannot be
        made), otherwise at once (a link that may well be down when its process starts)."""

    async def stop(self) -> None:
        """Disconnect cleanly (flushing what the transport already accepted)."""

    def send_frame(self, destination: str, data: bytes) -> None:
        """Hand one frame to the link; never blocks (see ``budget``)."""

    def budget(self, *, urgent: bool = False) -> int | None:
        """Bytes the link can take now without queueing (back-pressure); ``None``: unlimited.
        ``urgent``: the room for critical and control frames, which a send window does not
        hold back (they are few and small; the window bounds what *they* would wait behind,
        so it applies to state and bulk)."""

    async def add_address(self, address: str) -> None:
        """Make a local actor reachable at ``address``."""

    async def join_group(self, group: str) -> None:
        """Receive frames sent to the broadcast address ``group``."""

    @property
    def connected(self) -> bool:
        """Whether frames can be sent now."""
