"""Firmware images the gateway serves to its chargers over HTTP(S), one URL per update.

An UpdateFirmware names a URL; our images are content-addressed blobs in the station's blob
cache. ``Downloads.offer`` makes a URL for one image and one charger: a random token of 128
bits in the path (the URL is the credential, as OCPP expects of it), good for ``ttl_s``,
withdrawn when the update ends.

``DownloadServer`` answers ``GET /firmware/<token>`` (and ``HEAD``) on a port of its own,
with the gateway's TLS certificate when it has one (no client certificate asked: the token
is the credential). It *streams*: the image leaves chunk by chunk as the blob cache holds it,
each written only once the charger has taken the last (``drain``), so a charger on a slow
cellular link gets the whole image however long it takes, and the gateway holds one chunk
per fetch, never the image. A fetch that makes no progress for ``IDLE_S`` is dropped (the
charger resumes with ``Range``). Answers: 200 with the image, 206 for a ``Range``, 404 for a
token not (or no longer) offered or any other path, 405 for another method, 416 for a range
outside the image, 503 while ``MAX_FETCHES`` fetches of the URL are under way, 400 for a
request that is not HTTP/1.x within ``HEAD_BYTES`` and ``HEAD_S``. One request per
connection, and at most ``MAX_CONNECTIONS`` at once (more are closed unanswered: idle
connections cannot pile up, however many a stranger opens).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
import secrets
import ssl
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from http import HTTPStatus

from object_model.blobs import BlobRef

log = logging.getLogger("csms.ocpp.downloads")

PATH = "/firmware/"
TTL_S = 3600.0
MAX_FETCHES = 2  # at once, per URL
HEAD_BYTES = 8192
HEAD_S = 10.0
IDLE_S = 60.0
MAX_CONNECTIONS = 64  # at once: beyond, a connection is closed unanswered

Chunk = Callable[[int], Awaitable[bytes | None]]
"""Reads chunk ``index`` of an image (``None``: not held)."""


@dataclass
class Offer:
    identity: str
    blob: BlobRef
    chunk: Chunk
    expires_at: float
    fetched: int = 0
    serving: int = 0  # fetches under way


@dataclass(frozen=True)
class Plan:
    """How to answer one request: a status and headers, and for 200/206 the offer and the
    bytes ``first``..``last`` of its image to stream."""

    status: HTTPStatus
    headers: dict[str, str]
    offer: Offer | None = None
    first: int = 0
    last: int = -1


class Downloads:
    """The images on offer (see the module docstring). ``base`` is the URL the chargers
    reach the download server at (``http://host:port``), set when it starts."""

    def __init__(self, monotonic: Callable[[], float]) -> None:
        self.monotonic = monotonic
        self.base = ""
        self._offers: dict[str, Offer] = {}
        self.served = self.refused = 0
        self.bytes_sent = 0

    def offer(self, identity: str, blob: BlobRef, chunk: Chunk,
              ttl_s: float = TTL_S) -> tuple[str, str]:
        """A URL for one image and one charger, and its token (to withdraw it)."""
        token = secrets.token_urlsafe(16)
        self._offers[token] = Offer(identity, blob, chunk, self.monotonic() + ttl_s)
        return f"{self.base}{PATH}{token}", token

    def withdraw(self, token: str) -> None:
        self._offers.pop(token, None)

    def fetches(self, token: str) -> int:
        offer = self._offers.get(token)
        return 0 if offer is None else offer.fetched

    def serving(self, token: str) -> int:
        """Fetches of the URL under way."""
        offer = self._offers.get(token)
        return 0 if offer is None else offer.serving

    def plan(self, path: str, headers: dict[str, str]) -> Plan:
        """How to answer ``GET path`` with ``headers`` (names in lower case)."""
        token = path[len(PATH):].split("?", 1)[0] if path.startswith(PATH) else ""
        offer = self._offers.get(token)
        if offer is not None and offer.expires_at < self.monotonic():
            self._offers.pop(token, None)
            offer = None
        if offer is None:
            self.refused += 1
            log.warning("firmware download of an unknown or expired URL refused")
            return Plan(HTTPStatus.NOT_FOUND, {})
        if offer.serving >= MAX_FETCHES:
            self.refused += 1
            log.warning("%s: a firmware download refused: %d under way already",
                        offer.identity, offer.serving)
            return Plan(HTTPStatus.SERVICE_UNAVAILABLE, {"Retry-After": "10"})
        size = offer.blob.size
        wanted = headers.get("range", "").strip()
        if not wanted:
            return Plan(HTTPStatus.OK, {"Accept-Ranges": "bytes"}, offer, 0, size - 1)
        found = re.fullmatch(r"bytes=(\d{1,18})-(\d{0,18})", wanted)  # an int of 5,000 digits
        start = int(found.group(1)) if found else size
        end = min(size - 1, int(found.group(2))) if found and found.group(2) else size - 1
        if found is None or start >= size or end < start:
            self.refused += 1
            return Plan(HTTPStatus.REQUESTED_RANGE_NOT_SATISFIABLE,
                        {"Content-Range": f"bytes */{size}"})
        return Plan(HTTPStatus.PARTIAL_CONTENT, {"Content-Range": f"bytes {start}-{end}/{size}"},
                    offer, start, end)


class DownloadServer:
    """Serves ``downloads`` (see the module docstring) on ``host:port`` (0: any free port)."""

    def __init__(self, downloads: Downloads, *, host: str = "127.0.0.1", port: int = 0,
                 ssl_context: ssl.SSLContext | None = None, public_host: str | None = None
                 ) -> None:
        self.downloads, self.host, self.port = downloads, host, port
        self.ssl_context, self.public_host = ssl_context, public_host
        self.server: asyncio.Server | None = None
        self._fetches: set[asyncio.Task[None]] = set()

    async def start(self) -> DownloadServer:
        self.server = await asyncio.start_server(self._serve, self.host, self.port,
                                                 ssl=self.ssl_context, limit=HEAD_BYTES)
        if not self.port:
            self.port = self.server.sockets[0].getsockname()[1]
        scheme = "https" if self.ssl_context is not None else "http"
        self.downloads.base = f"{scheme}://{self.public_host or self.host}:{self.port}"
        log.info("firmware downloads on %s", self.downloads.base)
        return self

    async def stop(self) -> None:
        server, self.server = self.server, None
        if server is None:
            return
        server.close()
        for fetch in list(self._fetches):
            fetch.cancel()
        await asyncio.gather(*self._fetches, return_exceptions=True)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(server.wait_closed(), 2.0)

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        if len(self._fetches) >= MAX_CONNECTIONS:
            self.downloads.refused += 1
            log.warning("firmware downloads: %d connections open, one more closed",
                        len(self._fetches))
            writer.close()
            return
        self._fetches.add(task)
        try:
            await self._answer(reader, writer)
        except (ConnectionError, TimeoutError, asyncio.IncompleteReadError,
                asyncio.LimitOverrunError, ssl.SSLError) as exc:
            log.info("a firmware download ended early: %s", type(exc).__name__)
        finally:
            self._fetches.discard(task)
            writer.close()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(writer.wait_closed(), 1.0)

    async def _answer(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        async with asyncio.timeout(HEAD_S):
            head = await reader.readuntil(b"\r\n\r\n")
        lines = head.decode("latin-1").split("\r\n")
        parts = lines[0].split(" ")
        if len(parts) != 3 or not parts[2].startswith("HTTP/1."):
            await _respond(writer, HTTPStatus.BAD_REQUEST, {})
            return
        method, path = parts[0], parts[1]
        if method not in ("GET", "HEAD"):
            await _respond(writer, HTTPStatus.METHOD_NOT_ALLOWED, {"Allow": "GET, HEAD"})
            return
        headers = {}
        for line in lines[1:]:
            name, colon, value = line.partition(":")
            if colon:
                headers[name.strip().lower()] = value.strip()
        plan = self.downloads.plan(path, headers)
        offer = plan.offer
        if offer is None:
            await _respond(writer, plan.status, plan.headers)
            return
        length = plan.last - plan.first + 1
        await _respond(writer, plan.status, {**plan.headers, "Content-Length": str(length),
                                             "Content-Type": "application/octet-stream"},
                       final=False)
        if method == "HEAD":
            return
        offer.fetched += 1
        offer.serving += 1
        self.downloads.served += 1
        try:
            await self._stream(writer, offer, plan.first, plan.last)
        finally:
            offer.serving -= 1

    async def _stream(self, writer: asyncio.StreamWriter, offer: Offer, first: int,
                      last: int) -> None:
        size = offer.blob.chunk_size
        for index in range(first // size, last // size + 1):
            data = await offer.chunk(index)
            if data is None:  # evicted or corrupt meanwhile: the charger asks again
                log.warning("%s: chunk %d of its image is no longer held: download cut",
                            offer.identity, index)
                return
            begin = index * size
            piece = data[max(0, first - begin):last - begin + 1]
            writer.write(piece)
            async with asyncio.timeout(IDLE_S):  # a charger that takes nothing is dropped
                await writer.drain()
            self.downloads.bytes_sent += len(piece)
        log.info("%s: firmware image served (bytes %d-%d)", offer.identity, first, last)


async def _respond(writer: asyncio.StreamWriter, status: HTTPStatus, headers: dict[str, str],
                   *, final: bool = True) -> None:
    lines = [f"HTTP/1.1 {status.value} {status.phrase}", "Connection: close",
             *(f"{name}: {value}" for name, value in headers.items())]
    if final:
        lines.append("Content-Length: 0")
    writer.write(("\r\n".join(lines) + "\r\n\r\n").encode("latin-1"))
    await writer.drain()


__all__ = ["IDLE_S", "MAX_CONNECTIONS", "MAX_FETCHES", "PATH", "DownloadServer", "Downloads", "Plan"]
