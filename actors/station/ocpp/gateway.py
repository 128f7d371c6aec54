"""The OCPP 2.0.1 gateway's server: chargers connect at ``/ocpp/<identity>`` (OCPP-J, Part 4)
and each is served by the ``OcppCharger`` of its station actor.

*Admission, before anything is created* (OCPP-NOTES §1): the identity is the last path
segment, percent-decoded; one the gateway does not know is refused with HTTP 404; the
basic-auth user must be the identity and the password its own (compared in constant time),
else HTTP 401 (security profile 1; with ``ssl``, profile 2: basic auth over TLS); a host
that failed ten logins as one identity within a minute is refused (HTTP 429) as that
identity without a check until the minute passes (other identities behind the same
address are not held off). With a
client CA (profile 3, ``server_context``), a charger shows a certificate of that CA instead
(no client certificate: no TLS handshake at all), whose common name must be its identity,
else HTTP 401. The
subprotocol ``ocpp2.0.1`` is negotiated; a client that does not offer it gets a handshake
without a subprotocol and is closed at once (1002, Part 4 §3.1.2).

*One connection per identity*: a new one replaces the old, which is closed. *Liveness* is
WebSocket pings (``ping_interval_s``; closed after as long again without a pong).

*Firmware downloads* are served by a ``DownloadServer`` of their own port (streamed with flow
control: ``actors.station.ocpp.downloads``), started and stopped with the gateway.

*A bounded admission rate* (OCPP-NOTES rule 11): after the gateway restarts, every charger
comes back within its reconnect backoff. Admitted chargers take a token of a bucket
(``connects_per_s``, ``connect_burst``: ``actors.runtime.services.admission``); one that finds
it empty is answered HTTP 503 with ``Retry-After`` and connects again later. Only chargers
that proved their identity take tokens: a stranger cannot lock the others out. A charger
that connects again within a minute of its last admission takes no token (the old
connection is replaced: it adds no load), but at most ``PER_IDENTITY`` connections a minute
are admitted for one identity (beyond, it alone is answered 503): a charger reconnecting in
a loop cannot lock the others out.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import hashlib
import hmac
import logging
import math
import ssl
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from http import HTTPStatus
from pathlib import Path
from urllib.parse import unquote

from websockets.asyncio.server import Server, ServerConnection, serve
from websockets.datastructures import Headers
from websockets.http11 import Request, Response
from websockets.typing import Subprotocol

from actors.runtime.services.admission import AdmissionLimiter
from actors.station.ocpp.charger import OcppCharger
from actors.station.ocpp.downloads import DownloadServer
from broker_bridge.clock import WALL_CLOCK, Clock
from object_model.errors import BusyError

log = logging.getLogger("csms.ocpp.gateway")

SUBPROTOCOL = "ocpp2.0.1"
PREFIX = "/ocpp/"
MAX_IDENTITY = 48
MAX_MESSAGE_BYTES = 1 << 20
CLOSE_TIMEOUT_S = 1.0  # a closing handshake a charger does not answer: dropped after this
STOP_TIMEOUT_S = 2.0
PER_IDENTITY = 6  # admissions of one charger within a minute


@dataclass(frozen=True)
class Admitted:
    """A charger the gateway serves, and the password it logs in with."""

    charger: OcppCharger
    password: str | None  # None: it shows a client certificate (security profile 3)


class OcppGateway:
    """See the module docstring."""

    def __init__(self, chargers: Mapping[str, Admitted], *, host: str = "127.0.0.1",
                 port: int = 0, ssl_context: ssl.SSLContext | None = None,
                 ping_interval_s: float = 30.0, connects_per_s: float | None = 50.0,
                 connect_burst: float = 100.0, clock: Clock = WALL_CLOCK,
                 downloads: DownloadServer | None = None) -> None:
        self.chargers = dict(chargers)
        self.downloads = downloads
        self.host, self.port = host, port
        self.ssl_context = ssl_context
        self.ping_interval_s = ping_interval_s
        self.clock = clock
        self.admission = AdmissionLimiter(connects_per_s, connect_burst,
                                          now=clock.monotonic())
        self.client_certificates = (ssl_context is not None
                                    and ssl_context.verify_mode == ssl.CERT_REQUIRED)
        self.server: Server | None = None
        self.refused: dict[int, int] = {}  # HTTP status -> upgrades refused with it
        self._failures = FailedLogins()
        self._connects: dict[str, list[float]] = {}  # identity -> its recent admissions

    async def start(self) -> OcppGateway:
        self.server = await serve(
            self._serve, self.host, self.port, ssl=self.ssl_context,
            process_request=self._admit, select_subprotocol=_select,
            subprotocols=[Subprotocol(SUBPROTOCOL)],
            ping_interval=self.ping_interval_s, ping_timeout=self.ping_interval_s,
            close_timeout=CLOSE_TIMEOUT_S, max_size=MAX_MESSAGE_BYTES)
        sockets = list(self.server.sockets)
        if sockets and not self.port:
            self.port = sockets[0].getsockname()[1]
        if self.downloads is not None:
            await self.downloads.start()
        log.info("OCPP gateway on %s:%d (%d chargers)", self.host, self.port,
                 len(self.chargers))
        return self

    async def stop(self) -> None:
        """Stop taking connections and close those open (each charger is told, and connects
        again later), within seconds however loaded the process is."""
        server, self.server = self.server, None
        if server is None:
            return
        server.close()
        if self.downloads is not None:
            await self.downloads.stop()
        try:
            await asyncio.wait_for(server.wait_closed(), STOP_TIMEOUT_S)
        except TimeoutError:
            log.warning("OCPP gateway: connections still closing after %g s: left to the "
                        "process's end", STOP_TIMEOUT_S)

    @property
    def url(self) -> str:
        scheme = "wss" if self.ssl_context is not None else "ws"
        return f"{scheme}://{self.host}:{self.port}{PREFIX}"

    def _refuse(self, connection: ServerConnection, status: HTTPStatus, why: str,
                identity: str) -> Response:
        self.refused[status.value] = self.refused.get(status.value, 0) + 1
        log.warning("OCPP upgrade for %r refused (%d): %s", identity[:64], status.value, why)
        response = connection.respond(status, f"{why}\n")
        if status is HTTPStatus.UNAUTHORIZED:
            response.headers["WWW-Authenticate"] = 'Basic realm="ocpp", charset="UTF-8"'
        return response

    async def _admit(self, connection: ServerConnection, request: Request) -> Response | None:
        identity = identity_of(request.path)
        if identity is None:
            return self._refuse(connection, HTTPStatus.NOT_FOUND,
                                f"connect at {PREFIX}<identity>", request.path)
        admitted = self.chargers.get(identity)
        if admitted is None:
            return self._refuse(connection, HTTPStatus.NOT_FOUND, "unknown charger", identity)
        if self.client_certificates:
            shown = certificate_name(connection)
            if shown != identity:
                return self._refuse(connection, HTTPStatus.UNAUTHORIZED,
                                    f"a client certificate naming {identity}, not {shown!r}",
                                    identity)
        else:
            host = _host_of(connection)
            # by identity and host: a stranger guessing at one charger's password holds off
            # neither that charger elsewhere nor the chargers behind the same address (NAT)
            guessed = f"{identity} from {host}"
            if self._failures.blocked(guessed, self.clock.monotonic()):
                return self._refuse(connection, HTTPStatus.TOO_MANY_REQUESTS,
                                    f"too many failed logins as {identity} from {host}: "
                                    "wait a minute", identity)
            user, password = basic_auth(request.headers)
            if admitted.password is None or user != identity or not same_secret(
                    password, admitted.password):
                self._failures.failed(guessed, self.clock.monotonic())
                return self._refuse(connection, HTTPStatus.UNAUTHORIZED,
                                    "basic auth as the charger's identity, with its password",
                                    identity)
        now = self.clock.monotonic()
        recent = [at for at in self._connects.get(identity, ()) if now - at < 60.0]
        if len(recent) >= PER_IDENTITY:  # its share is spent: the others' tokens stay
            retry = max(1, math.ceil(60.0 - (now - recent[0])))
            response = self._refuse(connection, HTTPStatus.SERVICE_UNAVAILABLE,
                                    f"{identity} connected {len(recent)} times within a "
                                    f"minute: again in {retry} s", identity)
            response.headers["Retry-After"] = str(retry)
            return response
        try:
            if not recent:  # a reconnect within the minute takes no token of the others'
                self.admission.admit(1, now, identity)
            self._connects[identity] = [*recent, now]
        except BusyError as exc:
            retry = max(1, math.ceil(float(exc.details.get("retry_after_s", 1.0))))
            response = self._refuse(connection, HTTPStatus.SERVICE_UNAVAILABLE,
                                    f"too many chargers connecting: again in {retry} s",
                                    identity)
            response.headers["Retry-After"] = str(retry)
            return response
        return None

    async def _serve(self, connection: ServerConnection) -> None:
        identity = identity_of(connection.request.path) if connection.request else None
        admitted = self.chargers.get(identity or "")
        if admitted is None:  # admitted at the upgrade: cannot happen
            await connection.close(1008, "unknown charger")
            return
        if connection.subprotocol != SUBPROTOCOL:
            log.warning("%s: connected without the ocpp2.0.1 subprotocol: closed", identity)
            await connection.close(1002, f"the subprotocol is {SUBPROTOCOL}")
            return
        log.info("%s: connected from %s", identity, connection.remote_address)
        await admitted.charger.serve(connection)


class FailedLogins:
    """Failed logins by key (the gateway's: an identity and the remote host): after
    ``limit`` within ``window_s``, that key's next attempts are refused (HTTP 429) without a
    password being checked, until the window passes: a password is not guessed at the
    gateway's speed. Bounded: at most ``hosts`` keys are remembered (the oldest forgotten
    first)."""

    def __init__(self, limit: int = 10, window_s: float = 60.0, hosts: int = 4096) -> None:
        self.limit, self.window_s, self.hosts = limit, window_s, hosts
        self._seen: dict[str, tuple[float, int]] = {}  # host -> (window start, failures)

    def blocked(self, host: str, now: float) -> bool:
        start, count = self._seen.get(host, (now, 0))
        if now - start >= self.window_s:
            self._seen.pop(host, None)
            return False
        return count >= self.limit

    def failed(self, host: str, now: float) -> None:
        start, count = self._seen.pop(host, (now, 0))
        if now - start >= self.window_s:
            start, count = now, 0
        self._seen[host] = (start, count + 1)
        while len(self._seen) > self.hosts:
            self._seen.pop(next(iter(self._seen)))


def same_secret(given: str, expected: str) -> bool:
    """Whether two passwords are equal, in time that says nothing of either (not even the
    length: digests of both are compared)."""
    return hmac.compare_digest(hashlib.sha256(given.encode()).digest(),
                               hashlib.sha256(expected.encode()).digest())


def _host_of(connection: ServerConnection) -> str:
    address = connection.remote_address
    return str(address[0]) if isinstance(address, tuple) and address else "?"


def _select(connection: ServerConnection, offered: Sequence[Subprotocol]
            ) -> Subprotocol | None:
    """``ocpp2.0.1`` when offered, else none (and ``_serve`` closes the connection)."""
    return Subprotocol(SUBPROTOCOL) if SUBPROTOCOL in offered else None


def identity_of(path: str) -> str | None:
    """The charger identity of a request path ``/ocpp/<identity>`` (Part 4 §3.1.1: at most
    48 characters, no ``:``), or ``None``."""
    path = path.split("?", 1)[0]
    if not path.startswith(PREFIX):
        return None
    identity = unquote(path[len(PREFIX):])
    if not identity or len(identity) > MAX_IDENTITY or ":" in identity or "/" in identity:
        return None
    return identity


def server_context(certfile: str | Path, keyfile: str | Path,
                   client_cafile: str | Path | None = None) -> ssl.SSLContext:
    """The gateway's TLS: TLS 1.2 at least (TC_A_06); with ``client_cafile``, chargers must
    show a certificate that CA issued (security profile 3)."""
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.load_cert_chain(certfile, keyfile)
    if client_cafile is not None:
        context.verify_mode = ssl.CERT_REQUIRED
        context.load_verify_locations(client_cafile)
    return context


def certificate_name(connection: ServerConnection) -> str | None:
    """The common name of the client certificate ``connection`` showed (verified by the TLS
    handshake against the client CA), or ``None``."""
    transport = getattr(connection, "transport", None)
    peer = transport.get_extra_info("peercert") if transport is not None else None
    for rdn in (peer or {}).get("subject", ()):
        for key, value in rdn:
            if key == "commonName":
                return str(value)
    return None


def basic_auth(headers: Headers) -> tuple[str, str]:
    """The user and password of a basic ``Authorization`` header (empty when absent or
    malformed)."""
    value = headers.get("Authorization", "")
    scheme, _, encoded = value.partition(" ")
    if scheme.lower() != "basic":
        return "", ""
    try:
        text = base64.b64decode(encoded.strip(), validate=True).decode("utf-8")
    except (binascii.Error, UnicodeDecodeError):
        return "", ""
    user, _, password = text.partition(":")
    return user, password


__all__ = ["SUBPROTOCOL", "Admitted", "FailedLogins", "OcppGateway", "basic_auth",
           "certificate_name", "identity_of", "same_secret", "server_context"]
