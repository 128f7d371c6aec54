"""Where actor and group addresses live on an XMPP broker.

Actors know each other by address (``cs-17``, ``local-site1``); only this module knows that
``cs-17`` is the JID ``cs-17@stations.csms.local`` (a station hosted by a component) and
``local-site1`` is ``local-site1@csms.local`` (a client account), or that ``group:site1`` is
the room ``site1@rooms.csms.local``. Routes send address patterns to domains; everything else
lives on the main domain.
"""

from __future__ import annotations

import fnmatch
import ipaddress
from collections.abc import Callable
from dataclasses import dataclass, field

from broker_bridge.envelope import GROUP_PREFIX, is_group, valid_address


@dataclass(frozen=True)
class XmppSettings:
    """How to reach the broker and how addresses map onto it.

    ``routes`` are ``(address pattern, domain)`` pairs tried in order (``("cs-*",
    "stations.csms.local")``); addresses that match none live on ``domain``. ``sm_window`` is how
    many stanzas pass between stream-management ack requests (100 to 1,000 keeps the broker's cost
    low); ``write_buffer_high`` is the socket buffer level above which the transport reports no
    budget, so queued envelopes wait in the session's priority queues, not in the kernel.

    On a slow link the kernel is the queue to keep short (NETWORK-FACTS.md section 2): bytes
    handed to a TCP socket leave in order, behind everything already there, and the kernel's
    send buffer grows to megabytes. ``send_window_bytes`` bounds what may be in the kernel,
    not yet sent or sent and not yet acknowledged by the peer (``SIOCOUTQ``), plus asyncio's
    buffer: beyond it the transport reports no budget and looks again every
    ``window_poll_s``. Bytes sent and unacknowledged are in the bottleneck's queue or on the
    way, so this bounds the modem's queue too. ``notsent_lowat`` sets ``TCP_NOTSENT_LOWAT``
    (the kernel takes no more while more than that is unsent). Both off (``None``) by default;
    an uplink turns them on.

    ``dead_after_s`` notices a dead path (a cut uplink drops everything: no reset, no error)
    within that many seconds: TCP gives up on data unacknowledged for that long
    (``TCP_USER_TIMEOUT``) and probes an idle connection (keep-alive) often enough, where
    the kernel's defaults wait some 15 minutes. Off (``None``) by default.

    ``alternates`` are more nodes of the same broker (a cluster), as ``(host, c2s_port,
    component_port)``: ``servers`` is ``host`` and its ports followed by them, and a transport
    that loses its node, or cannot reach it, moves to the next one in that ring. With none, it
    always comes back to ``host``.
    """

    host: str = "127.0.0.1"
    c2s_port: int = 5222
    component_port: int = 5347
    domain: str = "csms.local"
    muc_domain: str = "rooms.csms.local"
    routes: tuple[tuple[str, str], ...] = ()
    tls: bool = False
    cafile: str | None = None
    sm_window: int = 256
    write_buffer_high: int = 64 * 1024
    send_window_bytes: int | None = None
    notsent_lowat: int | None = None
    window_poll_s: float = 0.005
    dead_after_s: float | None = None
    resource: str = "bridge"
    reconnect_base_s: float = 0.05
    reconnect_cap_s: float = 5.0
    connect_timeout_s: float = 10.0
    close_timeout_s: float = 3.0
    max_stanza_bytes: int = 250 * 1024
    extra_domains: tuple[str, ...] = field(default=())
    alternates: tuple[tuple[str, int, int], ...] = ()

    def __post_init__(self) -> None:
        if self.sm_window < 1:
            raise ValueError("sm_window must be at least 1")
        if self.send_window_bytes is not None and self.send_window_bytes < 4096:
            raise ValueError("send_window_bytes must be at least 4096 (or None: no window)")
        # settings that crossed JSON arrive with lists: keep them hashable and comparable
        object.__setattr__(self, "alternates", tuple(
            (str(host), int(c2s), int(component)) for host, c2s, component in self.alternates))

    @property
    def servers(self) -> tuple[tuple[str, int, int], ...]:
        """Every node to try, in order: ``(host, c2s_port, component_port)``, then the
        ``alternates``."""
        return ((self.host, self.c2s_port, self.component_port), *self.alternates)


def is_loopback(host: str) -> bool:
    """Whether ``host`` is this machine's loopback (the only place plaintext is allowed)."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


class AddressBook:
    """Maps addresses to JIDs and rooms, and JIDs back to addresses."""

    def __init__(self, settings: XmppSettings) -> None:
        self.settings = settings
        self._cache: dict[str, str] = {}
        self._domains = {settings.domain, *(d for _, d in settings.routes),
                         *settings.extra_domains}

    def domain_of(self, address: str) -> str:
        """The XMPP domain an actor address lives on."""
        for pattern, domain in self.settings.routes:
            if fnmatch.fnmatchcase(address, pattern):
                return domain
        return self.settings.domain

    def jid(self, address: str) -> str:
        """The bare JID of an actor, or the room JID of a group."""
        jid = self._cache.get(address)
        if jid is None:
            if not valid_address(address):
                raise ValueError(f"invalid address {address!r}")
            if is_group(address):
                jid = f"{address[len(GROUP_PREFIX):]}@{self.settings.muc_domain}"
            else:
                jid = f"{address}@{self.domain_of(address)}"
            if len(self._cache) < 100_000:
                self._cache[address] = jid
        return jid

    def address_of(self, jid: str) -> str | None:
        """The address behind a JID (room occupants by their nickname), if it is one of ours:
        ``cs-17@stations.csms.local`` is ``cs-17`` only if ``cs-17`` lives on that domain."""
        bare, _, resource = jid.partition("/")
        local, at, domain = bare.partition("@")
        if not at:
            return None
        if domain == self.settings.muc_domain:
            return resource if valid_address(resource) and not is_group(resource) else None
        if (domain in self._domains and valid_address(local) and not is_group(local)
                and self.domain_of(local) == domain):
            return local
        return None

    def may_send_as(self, jid: str) -> Callable[[str], bool] | None:
        """Which envelope sources a direct stanza from ``jid`` may carry, given what the broker
        authenticated: a client account (on the main domain) only its own address; a component
        any address that lives on its domain. ``None`` for JIDs that are none of ours."""
        bare = jid.partition("/")[0]
        _, at, domain = bare.partition("@")
        if not at or domain not in self._domains:
            return None
        if domain == self.settings.domain:
            own = self.address_of(bare)
            if own is None:
                return None
            return own.__eq__
        return lambda source: valid_address(source) and self.domain_of(source) == domain
