"""Firmware images the gateway serves to its chargers over HTTP(S), one URL per update.

An UpdateFirmware names a URL; our images are content-addressed blobs in the station's blob
cache. ``Downloads.offer`` makes a URL for one image and one charger: a random token of 128
bits in the path (the URL is the credential, as OCPP expects of it), good for ``ttl_s``,
withdrawn when the update ends. The gateway's server answers ``GET /firmware/<token>`` on
the same port and TLS as the chargers' WebSockets (``OcppGateway``): 200 with the image, 206
for a ``Range`` (a charger resuming a download), 404 for a token that is not (or no longer)
offered, 416 for a range outside the image, 503 while ``MAX_FETCHES`` fetches of the URL are
under way (each holds a copy of the image in memory until the charger has read it: whoever
holds the URL must not fill the memory of the process serving every charger). Nothing else
is served.
"""

from __future__ import annotations

import logging
import re
import secrets
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from http import HTTPStatus

log = logging.getLogger("csms.ocpp.downloads")

PATH = "/firmware/"
TTL_S = 3600.0
MAX_FETCHES = 2  # at once, per URL


@dataclass
class Offer:
    identity: str
    read: Callable[[], Awaitable[bytes]]
    expires_at: float
    fetched: int = 0
    serving: int = 0  # fetches whose answer has not left yet


@dataclass(frozen=True)
class Served:
    """What the server answers a download: status, headers, body."""

    status: HTTPStatus
    headers: dict[str, str]
    body: bytes
    token: str | None = None  # a fetch under way: ``Downloads.sent`` once the answer left


class Downloads:
    """The images on offer (see the module docstring). ``base`` is the URL the chargers
    reach the gateway's server at (``http://host:port``), set when it starts."""

    def __init__(self, monotonic: Callable[[], float]) -> None:
        self.monotonic = monotonic
        self.base = ""
        self._offers: dict[str, Offer] = {}
        self.served = self.refused = 0

    def offer(self, identity: str, read: Callable[[], Awaitable[bytes]],
              ttl_s: float = TTL_S) -> tuple[str, str]:
        """A URL for one image and one charger, and its token (to withdraw it)."""
        token = secrets.token_urlsafe(16)
        self._offers[token] = Offer(identity, read, self.monotonic() + ttl_s)
        return f"{self.base}{PATH}{token}", token

    def withdraw(self, token: str) -> None:
        self._offers.pop(token, None)

    def fetches(self, token: str) -> int:
        offer = self._offers.get(token)
        return 0 if offer is None else offer.fetched

    def serving(self, token: str) -> int:
        offer = self._offers.get(token)
        return 0 if offer is None else offer.serving

    def sent(self, token: str) -> None:
        """A fetch ``serve`` answered with ``token`` is over (its connection closed)."""
        offer = self._offers.get(token)
        if offer is not None:
            offer.serving = max(0, offer.serving - 1)

    async def serve(self, path: str, headers: dict[str, str]) -> Served:
        """The answer to ``GET path`` (``path`` starts with ``PATH``)."""
        token = path[len(PATH):].split("?", 1)[0]
        offer = self._offers.get(token)
        if offer is not None and offer.expires_at < self.monotonic():
            self._offers.pop(token, None)
            offer = None
        if offer is None:
            self.refused += 1
            log.warning("firmware download of an unknown or expired URL refused")
            return Served(HTTPStatus.NOT_FOUND, {}, b"no such download\n")
        if offer.serving >= MAX_FETCHES:
            self.refused += 1
            log.warning("%s: a firmware download refused: %d under way already",
                        offer.identity, offer.serving)
            return Served(HTTPStatus.SERVICE_UNAVAILABLE, {"Retry-After": "10"},
                          b"too many downloads of this image at once\n")
        data = await offer.read()
        # header names are case-insensitive; digits bounded (an int of 5,000 raised)
        wanted = next((value for name, value in headers.items() if name.lower() == "range"), "")
        if wanted:
            found = re.fullmatch(r"bytes=(\d{1,18})-(\d{0,18})", wanted.strip())
            start = int(found.group(1)) if found else len(data)
            end = min(len(data) - 1, int(found.group(2))) if found and found.group(2) else \
                len(data) - 1
            if found is None or start >= len(data) or end < start:
                self.refused += 1
                return Served(HTTPStatus.REQUESTED_RANGE_NOT_SATISFIABLE,
                              {"Content-Range": f"bytes */{len(data)}"}, b"")
            offer.fetched += 1
            offer.serving += 1
            self.served += 1
            return Served(HTTPStatus.PARTIAL_CONTENT, {
                "Content-Range": f"bytes {start}-{end}/{len(data)}",
                "Content-Type": "application/octet-stream"}, data[start:end + 1], token)
        offer.fetched += 1
        offer.serving += 1
        self.served += 1
        log.info("%s: firmware image served (%d bytes)", offer.identity, len(data))
        return Served(HTTPStatus.OK, {"Content-Type": "application/octet-stream",
                                      "Accept-Ranges": "bytes"}, data, token)


__all__ = ["MAX_FETCHES", "PATH", "Downloads", "Served"]
