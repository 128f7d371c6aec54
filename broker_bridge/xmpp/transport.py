"""The XMPP transport: frames over a client account or a component, kept connected.

Two ways to be on the broker:

* ``XmppTransport.client(settings, account, password)``: one account, one connection (a CSMS,
  a resource manager, or one station per account in per-actor deployments);
* ``XmppTransport.component(settings, domain, secret)``: one XEP-0114 connection that sends
  and receives for every JID under its domain, so one process hosts thousands of stations,
  each with its own address.

Broadcasts go to a MUC room per group: the sender's connection carries one copy, the broker
fans it out. A connection joins each room once (under one nickname) and the endpoint fans out to
its local members; the sender's own echo is dropped here.

The link is kept up by a reconnect loop with full-jitter exponential backoff (the cure for
reconnect storms; ``broker_bridge.backoff``, waiting on the transport's clock with its own
random generator); slixmpp's own unjittered retries are cancelled. Clients use a fixed resource,
so a session that hibernates on the broker after a crash is taken over, not orphaned. Given
several nodes of a clustered broker (``XmppSettings.alternates``), each lost connection or failed
attempt moves the next attempt to the next node: a transport stays on a node while it works and
leaves a dead one after one backoff delay.
"""

from __future__ import annotations

import array
import asyncio
import base64
import contextlib
import fcntl
import logging
import random
import socket
import termios
from collections.abc import Callable
from typing import Any

from broker_bridge.backoff import Backoff
from broker_bridge.clock import WALL_CLOCK, Clock
from broker_bridge.envelope import is_group
from broker_bridge.transport import FrameCallback, LinkCallback, Origin, WritableCallback
from broker_bridge.xmpp.addresses import AddressBook, XmppSettings
from broker_bridge.xmpp.stream import NS, ClientStream, ComponentStream

log = logging.getLogger("csms.bridge.xmpp")


class BrokerUnreachableError(ConnectionError):
    """The first connection did not come up in time; the message says where it tried."""


def _nothing(*_: object) -> None:
    pass


class XmppTransport:
    """A ``Transport`` over an XMPP broker (see the module docstring).

    ``clock`` waits between reconnect attempts; ``rng`` draws their jitter (seed it to replay
    a run; by default each transport has its own, so a crowd of them spreads out)."""

    def __init__(self, settings: XmppSettings, *, account: str | None = None,
                 password: str | None = None, component: str | None = None,
                 secret: str | None = None, name: str | None = None,
                 clock: Clock | None = None, rng: random.Random | None = None) -> None:
        if (account is None) == (component is None):
            raise ValueError("give either an account (client) or a component domain")
        self.settings = settings
        self.clock: Clock = clock or WALL_CLOCK
        self.backoff = Backoff(min(settings.reconnect_base_s, settings.reconnect_cap_s),
                               settings.reconnect_cap_s)
        self._rng = rng or random.Random()
        self.book = AddressBook(settings)
        self.account = account
        self.component_domain = component
        self.name = name or account or component or "xmpp"
        self.on_frame: FrameCallback = _nothing
        self.on_link: LinkCallback = _nothing
        self.on_writable: WritableCallback = _nothing
        self._stream: ClientStream | ComponentStream
        if account is not None:
            jid = f"{account}@{settings.domain}/{settings.resource}"
            self._stream = ClientStream(jid, password or "", tls=settings.tls,
                                        cafile=settings.cafile,
                                        window=settings.sm_window, sink=self._arrived,
                                        on_resume=self._resumed, presence=self._presence_seen)
            self._own = f"{account}@{settings.domain}"
            self._nick = account
        else:
            assert component is not None
            self._stream = ComponentStream(component, secret or "", settings.host,
                                           settings.component_port, sink=self._arrived,
                                           on_resume=self._resumed, presence=self._presence_seen)
            self._own = f"{self.name}@{component}"
            self._nick = f"{self.name}".replace("@", "-")
        self._local: set[str] = set()
        self._origins: dict[tuple[str, bool], Origin] = {}
        self._rooms: dict[str, str] = {}  # group -> room JID, joined (or to join on connect)
        self._joined: dict[str, asyncio.Event] = {}  # room JID -> set when the room confirms
        self._up = False
        self._stopping = False
        self._lost = asyncio.Event()
        self._first_up = asyncio.Event()
        self._loop_task: asyncio.Task[None] | None = None
        self._fd: int | None = None  # the TCP socket, for the send window
        self._outq = array.array("i", [0])
        self._poll: asyncio.TimerHandle | None = None
        self._server = 0  # index in settings.servers of the node to connect to
        self.frames_sent = 0
        self.bytes_sent = 0
        self.frames_received = 0
        self.reconnects = 0
        self.dropped_oversize = 0
        self.frames_refused = 0  # from JIDs that are none of ours
        stream = self._stream
        stream.add_event_handler("session_start", self._session_started)
        stream.add_event_handler("session_resumed", self._session_resumed)
        stream.add_event_handler("disconnected", self._disconnected)

    @classmethod
    def client(cls, settings: XmppSettings, account: str, password: str,
               name: str | None = None, *, clock: Clock | None = None,
               rng: random.Random | None = None) -> XmppTransport:
        return cls(settings, account=account, password=password, name=name, clock=clock, rng=rng)

    @classmethod
    def component(cls, settings: XmppSettings, domain: str, secret: str,
                  name: str = "bridge", *, clock: Clock | None = None,
                  rng: random.Random | None = None) -> XmppTransport:
        return cls(settings, component=domain, secret=secret, name=name, clock=clock, rng=rng)

    # -- lifecycle -----------------------------------------------------------------------------

    async def start(self, *, wait: bool = True) -> None:
        """Connect; with ``wait``, raise ``BrokerUnreachableError`` if the first connection
        fails within the timeout (afterwards, and always without ``wait``, link losses are
        retried for ever and reported via ``on_link``)."""
        self._loop_task = asyncio.create_task(self._keep_connected(), name=f"{self.name}-link")
        if not wait:
            return
        try:
            async with asyncio.timeout(self.settings.connect_timeout_s):
                await self._first_up.wait()
        except TimeoutError:
            await self.stop()
            where = ", ".join(f"{host}:{c2s if self.account else component}"
                              for host, c2s, component in self.settings.servers)
            failure = getattr(self._stream, "failure", None)
            raise BrokerUnreachableError(
                f"{self.name}: no XMPP session with {where} after "
                f"{self.settings.connect_timeout_s:g} s; " + (
                    failure if failure else "is the broker running and are the credentials "
                    "right? (`csms broker` runs one)")) from None

    async def stop(self) -> None:
        """Leave rooms, close cleanly (nothing lost, nothing duplicated), stop reconnecting.

        The clean close (goodbye, ping barrier, last ack, stream close) gets
        ``close_timeout_s`` in all; past that the connection is aborted, as a crash would
        (the broker then keeps what it could not hand over, and the outbox what was not
        acknowledged)."""
        self._stopping = True
        self._lost.set()
        if self._up:
            goodbye = [self._presence(room, unavailable=True) for room in self._rooms.values()]
            if self.account is not None:
                goodbye.append("<presence type='unavailable'/>")
            timeout = self.settings.close_timeout_s
            try:
                async with asyncio.timeout(timeout):
                    await self._stream.close_cleanly(goodbye, timeout)
            except TimeoutError:
                log.warning("%s: no clean close within %g s; aborting the connection",
                            self.name, timeout)
        if self._loop_task is not None:
            self._loop_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._loop_task
        with contextlib.suppress(Exception):
            self._stream.cancel_connection_attempt()
            self._stream.abort()
        self._up = False

    # -- Transport -----------------------------------------------------------------------------

    @property
    def connected(self) -> bool:
        return self._up

    def budget(self, *, urgent: bool = False) -> int | None:
        """Room below our limits: zero while asyncio has paused writing (a
        ``resume_writing``, hence ``on_writable``, follows) or, but for ``urgent`` frames,
        while the kernel holds a whole ``send_window_bytes`` (then ``on_writable`` follows
        within ``window_poll_s``)."""
        if not self._up or self._stream.write_paused:
            return 0
        buffered = self._stream.write_buffer_size()
        room = self.settings.write_buffer_high - buffered
        window = self.settings.send_window_bytes
        if window is not None and not urgent:
            room = min(room, window - buffered - self._in_kernel())
            if room <= 0:
                self._look_again()
                return 0
        return max(1, room)

    def _in_kernel(self) -> int:
        """Bytes in the socket not yet acknowledged by the peer (sent or not)."""
        fd = self._fd
        if fd is None:
            return 0
        try:
            fcntl.ioctl(fd, termios.TIOCOUTQ, self._outq)  # SIOCOUTQ on a TCP socket
        except OSError:
            return 0
        return self._outq[0]

    def _look_again(self) -> None:
        if self._poll is None or self._poll.cancelled():
            loop = asyncio.get_running_loop()
            self._poll = loop.call_later(self.settings.window_poll_s, self._window_moved)

    def _window_moved(self) -> None:
        self._poll = None
        if self._up:
            self.on_writable()

    def send_frame(self, destination: str, data: bytes) -> None:
        if not self._up:
            return
        text = base64.b64encode(data).decode("ascii")
        if is_group(destination):
            room = self._ensure_room(destination)
            stanza = (f"<message to='{room}'{self._from()} type='groupchat'>"
                      f"<f xmlns='{NS}'>{text}</f></message>")
        else:
            stanza = (f"<message to='{self.book.jid(destination)}'{self._from()} type='normal'>"
                      f"<f xmlns='{NS}'>{text}</f></message>")
        if len(stanza) > self.settings.max_stanza_bytes:
            # the broker would kill the connection and lose what follows; the session's frame
            # size makes this impossible unless it is misconfigured
            self.dropped_oversize += 1
            log.error("%s: dropped a %d-byte stanza (limit %d): lower frame_bytes", self.name,
                      len(stanza), self.settings.max_stanza_bytes)
            return
        self._stream.send_tracked(stanza)
        self.frames_sent += 1
        self.bytes_sent += len(stanza)

    async def add_address(self, address: str) -> None:
        if self.account is not None:
            if address != self.account:
                raise ValueError(f"a client transport carries only its account's address "
                                 f"({self.account}), not {address!r}")
        else:
            domain = self.book.domain_of(address)
            if domain != self.component_domain:
                raise ValueError(f"{address!r} routes to {domain}, not to this component "
                                 f"({self.component_domain}); add a route for it")
        self._local.add(address)

    async def join_group(self, group: str) -> None:
        """Join the group's room and wait until the room confirms (its self-presence), so that a
        broadcast sent after this returns reaches us."""
        room = self._ensure_room(group)
        if self._up:
            try:
                async with asyncio.timeout(self.settings.connect_timeout_s):
                    await self._joined[room].wait()
            except TimeoutError:
                raise ConnectionError(f"{self.name}: the room {room} did not confirm our join "
                                      f"within {self.settings.connect_timeout_s:g} s") from None

    # -- internals -----------------------------------------------------------------------------

    def _from(self) -> str:
        # a client's 'from' is stamped by the broker; a component must name a JID of its domain
        return f" from='{self._own}'" if self.component_domain is not None else ""

    def _presence(self, room: str, *, unavailable: bool = False) -> str:
        kind = " type='unavailable'" if unavailable else ""
        body = "" if unavailable else (
            "<x xmlns='http://jabber.org/protocol/muc'><history maxstanzas='0'/></x>")
        return f"<presence to='{room}/{self._nick}'{self._from()}{kind}>{body}</presence>"

    def _ensure_room(self, group: str) -> str:
        room = self._rooms.get(group)
        if room is None:
            room = self._rooms[group] = self.book.jid(group)
            self._joined[room] = asyncio.Event()
            if self._up:  # the join is ordered before anything sent to the room after it
                self._stream.send_tracked(self._presence(room))
        return room

    def _arrived(self, sender: str, recipient: str, kind: str, text: str | None) -> None:
        if kind == "groupchat" and sender.rpartition("/")[2] == self._nick:
            return  # the broker echoes our own broadcasts back
        origin = self._origin_of(sender, kind == "groupchat")
        if origin is None:
            self.frames_refused += 1
            log.warning("%s: dropped a frame from %s, which is none of ours", self.name, sender)
            return
        self.frames_received += 1
        try:
            data = base64.b64decode(text or "", validate=True)
        except (ValueError, TypeError):
            data = (text or "").encode("utf-8", "replace")  # let the session reject it
        self.on_frame(origin, data)

    def _origin_of(self, jid: str, broadcast: bool) -> Origin | None:
        """Who a stanza comes from, in the session's terms (kept per sender). A room message
        names its sender only by the nickname it chose: the broker does not vouch for it, so
        only group envelopes may ride in it (see docs/deployment.md on broadcasts)."""
        key = (jid if broadcast else jid.partition("/")[0], broadcast)
        origin = self._origins.get(key)
        if origin is None:
            address = self.book.address_of(jid)
            if broadcast:
                origin = Origin(address, None, broadcast=True)
            else:
                may_send_as = self.book.may_send_as(jid)
                if may_send_as is None:
                    return None
                origin = Origin(address, may_send_as)
            if len(self._origins) >= 100_000:
                self._origins.clear()
            self._origins[key] = origin
        return origin

    def _resumed(self) -> None:
        self.on_writable()

    def _presence_seen(self, sender: str, kind: str) -> None:
        room, _, nick = sender.partition("/")
        if nick != self._nick or room not in self._joined:
            return  # only our own occupant's presence tells us about our membership
        if kind == "unavailable":
            self._joined[room].clear()
        elif kind != "error":
            self._joined[room].set()

    def _session_started(self, _: Any) -> None:
        transport = self._stream.transport
        if transport is not None:  # pause at our high-water mark, resume at a quarter of it
            high = self.settings.write_buffer_high
            transport.set_write_buffer_limits(high=high, low=high // 4)
            self._tune_socket(transport.get_extra_info("socket"))
        if self.account is not None:
            self._stream.send_tracked("<presence/>")  # the broker delivers stored messages now
        for room in self._rooms.values():
            self._stream.send_tracked(self._presence(room))
        self._set_up(True)

    def _session_resumed(self, _: Any) -> None:
        transport = self._stream.transport
        if transport is not None:
            self._tune_socket(transport.get_extra_info("socket"))
        self._set_up(True)

    def _tune_socket(self, sock: socket.socket | None) -> None:
        """Keep the kernel's queue short (see ``XmppSettings``) on a TCP socket."""
        self._fd = None
        if sock is None or sock.family not in (socket.AF_INET, socket.AF_INET6):
            return
        self._fd = sock.fileno()
        lowat = self.settings.notsent_lowat
        if lowat is not None:
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NOTSENT_LOWAT, lowat)
        dead = self.settings.dead_after_s
        if dead is not None:
            idle = max(1, int(dead / 3))
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_USER_TIMEOUT, int(dead * 1000))
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPIDLE, idle)
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPINTVL, idle)
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPCNT, 3)

    def _disconnected(self, _: Any) -> None:
        self._fd = None
        for event in self._joined.values():
            event.clear()  # rooms must confirm us again after the next connect
        if self._up:
            self._set_up(False)
        self._lost.set()

    def _set_up(self, up: bool) -> None:
        self._up = up
        if up:
            self._first_up.set()
            self._lost.clear()
        self.on_link(up)

    async def _keep_connected(self) -> None:
        failed_attempts = 0
        while not self._stopping:
            if await self._attempt():
                failed_attempts = 0
                await self._lost.wait()
                if self._stopping:
                    return
                self.reconnects += 1
                log.warning("%s: lost the broker connection; reconnecting", self.name)
            else:
                failed_attempts += 1
            # a node we lost or could not reach: try the next one of the cluster, if any
            self._server = (self._server + 1) % len(self.settings.servers)
            # the lost connection counts as a failure too: the first retry after a loss waits
            # up to reconnect_base_s, each failed attempt doubles that, up to reconnect_cap_s
            # (full jitter: no synchronised storms)
            await self.clock.sleep(self.backoff.delay(failed_attempts + 1, self._rng))

    async def _attempt(self) -> bool:
        stream = self._stream
        done: asyncio.Future[bool] = asyncio.get_running_loop().create_future()

        def ok(_: Any) -> None:
            if not done.done():
                done.set_result(True)

        def failed(_: Any) -> None:
            stream.cancel_connection_attempt()  # we own the retry policy
            if not done.done():
                done.set_result(False)

        handlers: list[tuple[str, Callable[[Any], None]]] = [
            ("session_start", ok), ("session_resumed", ok), ("connection_failed", failed),
            ("disconnected", failed), ("failed_all_auth", failed)]
        for event, handler in handlers:
            stream.add_event_handler(event, handler)
        try:
            host, c2s_port, component_port = self.settings.servers[self._server]
            stream.connect(host, c2s_port if self.account is not None else component_port)
            try:
                async with asyncio.timeout(self.settings.connect_timeout_s):
                    return await done
            except TimeoutError:
                stream.cancel_connection_attempt()
                stream.abort()
                return False
        finally:
            for event, handler in handlers:
                stream.del_event_handler(event, handler)

    @property
    def bounces(self) -> int:
        return self._stream.bounces
