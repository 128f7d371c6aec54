"""The gateway's parts on their own: what identity a request path names, what a basic
``Authorization`` header says, failed logins and admission shares, the firmware download
server."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import socket
import ssl
from pathlib import Path
from typing import Any

import pytest
import websockets
from websockets.datastructures import Headers
from websockets.exceptions import InvalidStatus
from websockets.typing import Subprotocol

from actors.station.ocpp.downloads import MAX_CONNECTIONS, Downloads, DownloadServer
from actors.station.ocpp.gateway import (
    PER_IDENTITY,
    Admitted,
    FailedLogins,
    OcppGateway,
    basic_auth,
    identity_of,
    same_secret,
    server_context,
)
from actors.testing import until
from actors.testing.clock import FakeClock
from broker_bridge.pki import CertificateAuthority
from object_model.blobs import BlobRef
from tests.actors.station.ocpp_peer import attached

PASSWORD = "correct-horse-battery"


@pytest.mark.parametrize(("path", "identity"), [
    ("/ocpp/cs-1", "cs-1"),
    ("/ocpp/cs%2D1", "cs-1"),  # percent-decoded (Part 4 §3.1.1)
    ("/ocpp/cs-1?x=1", "cs-1"),
    ("/ocpp/", None),
    ("/ocpp", None),
    ("/other/cs-1", None),
    ("/ocpp/a:b", None),  # no colon: it would break basic auth
    ("/ocpp/a%2Fb", None),  # an encoded slash is no identity either
    ("/ocpp/" + "x" * 49, None),  # at most 48 characters
    ("/ocpp/" + "x" * 48, "x" * 48),
])
def test_the_identity_is_the_last_segment_decoded_and_bounded(path: str,
                                                              identity: str | None) -> None:
    assert identity_of(path) == identity


def test_basic_auth_is_read_or_empty_never_an_error() -> None:
    def header(value: str) -> Headers:
        return Headers({"Authorization": value})

    token = base64.b64encode(b"cs-1:pass:word").decode()
    assert basic_auth(header(f"Basic {token}")) == ("cs-1", "pass:word")
    assert basic_auth(header(f"basic {token}")) == ("cs-1", "pass:word")
    for value in ("Bearer abc", "Basic !!!", "Basic " + base64.b64encode(b"\xff").decode(), ""):
        assert basic_auth(header(value)) == ("", "")
    assert basic_auth(Headers()) == ("", "")


def test_a_host_that_keeps_failing_logins_is_held_off_for_the_window() -> None:
    failures = FailedLogins(limit=3, window_s=60.0, hosts=2)
    for _ in range(3):
        assert not failures.blocked("10.0.0.9", 100.0)
        failures.failed("10.0.0.9", 100.0)
    assert failures.blocked("10.0.0.9", 159.0)  # within the minute: no more guesses
    assert not failures.blocked("10.0.0.7", 159.0)  # another host is not held off
    assert not failures.blocked("10.0.0.9", 160.0)  # the window passed
    for host in ("a", "b", "c"):  # bounded: the oldest host is forgotten
        failures.failed(host, 200.0)
    assert set(failures._seen) == {"b", "c"}


def test_passwords_compare_whatever_their_length() -> None:
    assert same_secret("correct-horse-battery", "correct-horse-battery")
    assert not same_secret("correct-horse-batter", "correct-horse-battery")
    assert not same_secret("", "correct-horse-battery")


def offered(image: bytes, chunk_size: int = 4096) -> tuple[BlobRef, Any]:
    """An image as the blob cache holds it: its ref, and a reader of its chunks."""
    pieces = [image[i:i + chunk_size] for i in range(0, len(image), chunk_size)]
    ref = BlobRef(hash=hashlib.sha256(image).digest(), size=len(image), chunk_size=chunk_size,
                  chunk_hashes=[hashlib.sha256(piece).digest() for piece in pieces])

    async def chunk(index: int) -> bytes | None:
        return pieces[index] if 0 <= index < len(pieces) else None

    return ref, chunk


async def get(port: int, path: str, *headers: str, method: str = "GET"
              ) -> tuple[int, dict[str, str], bytes]:
    """One HTTP/1.1 request to the download server: status, headers, body."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write((f"{method} {path} HTTP/1.1\r\nHost: gw\r\n"
                  + "".join(f"{h}\r\n" for h in headers) + "\r\n").encode())
    head = (await reader.readuntil(b"\r\n\r\n")).decode().split("\r\n")
    body = await reader.read()
    writer.close()
    fields = dict(line.split(": ", 1) for line in head[1:] if ": " in line)
    return int(head[0].split()[1]), fields, body


async def test_a_firmware_download_is_served_by_its_token_only_while_offered() -> None:
    now = [1000.0]
    downloads = Downloads(lambda: now[0])
    server = await DownloadServer(downloads, public_host="gw.site1").start()
    image = bytes(range(256)) * 40
    ref, chunk = offered(image)
    try:
        url, token = downloads.offer("ocpp-1", ref, chunk, ttl_s=60.0)
        assert url.startswith(f"http://gw.site1:{server.port}/firmware/") and len(token) >= 20
        path = f"/firmware/{token}"
        status, headers, body = await get(server.port, path)
        assert (status, body) == (200, image) and headers["Content-Length"] == str(len(image))
        status, headers, body = await get(server.port, path, "Range: bytes=5000-")
        assert (status, body) == (206, image[5000:])  # across chunks, to the end
        assert headers["Content-Range"] == f"bytes 5000-{len(image) - 1}/{len(image)}"
        # found attacking it: a header named in lower case was not read (the whole image
        # was sent), and 5,000 digits raised out of the server (HTTP 500, a traceback)
        status, _, body = await get(server.port, path, "range: bytes=4095-4096")
        assert (status, body) == (206, image[4095:4097])
        assert (await get(server.port, path, f"Range: bytes={'9' * 5000}-"))[0] == 416
        assert (await get(server.port, path, "Range: bytes=20000-"))[0] == 416
        assert (await get(server.port, path, method="HEAD"))[2] == b""
        assert (await get(server.port, path, method="POST"))[0] == 405
        assert (await get(server.port, "/firmware/guessed"))[0] == 404
        assert (await get(server.port, "/ocpp/cs-1"))[0] == 404
        assert downloads.fetches(token) == 3
        now[0] += 61  # expired
        assert (await get(server.port, path))[0] == 404
        _, token2 = downloads.offer("ocpp-1", ref, chunk)
        downloads.withdraw(token2)
        assert (await get(server.port, f"/firmware/{token2}"))[0] == 404
    finally:
        await server.stop()


async def test_failed_logins_hold_off_that_identity_not_the_chargers_sharing_the_host() -> None:
    """Found attacking the gateway: the failed-login limit was by host alone, so anyone who
    knew one charger's identity could lock out every charger behind the same address (a
    site's NAT, a carrier's) with ten bad passwords a minute."""
    chargers = {identity: Admitted(attached()[0], PASSWORD) for identity in ("cs-1", "cs-2")}
    gateway = await OcppGateway(chargers, ping_interval_s=5.0).start()

    async def connect(identity: str, password: str) -> Any:
        token = base64.b64encode(f"{identity}:{password}".encode()).decode()
        return await websockets.connect(f"{gateway.url}{identity}", subprotocols=[
            Subprotocol("ocpp2.0.1")], additional_headers={"Authorization": f"Basic {token}"},
            open_timeout=5)

    try:
        statuses = []
        for _ in range(11):
            with pytest.raises(InvalidStatus) as refused:
                await connect("cs-1", "guessed-password-1")
            statuses.append(refused.value.response.status_code)
        assert statuses == [401] * 10 + [429]
        with pytest.raises(InvalidStatus) as held:  # the identity guessed at is held off
            await connect("cs-1", PASSWORD)
        assert held.value.response.status_code == 429
        other = await connect("cs-2", PASSWORD)  # the charger beside it is not
        assert other.subprotocol == "ocpp2.0.1"
        await other.close()
    finally:
        await gateway.stop()
        for admitted in chargers.values():
            await admitted.charger.link.stop()


async def test_a_download_url_serves_two_fetches_at_a_time() -> None:
    """Found attacking the gateway: every fetch of a download URL took a copy of the whole
    image into the gateway's memory until the charger had read it (40 stalled fetches of a
    20 MB image: 680 MB more). The image streams now (a chunk at a time per fetch), and a
    third fetch at once is answered 503."""
    downloads = Downloads(lambda: 0.0)
    server = await DownloadServer(downloads).start()
    ref, chunk = offered(bytes(8_000_000), chunk_size=65_536)
    _, token = downloads.offer("cs-1", ref, chunk)

    async def fetch() -> tuple[int, asyncio.StreamWriter]:
        reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
        writer.get_extra_info("socket").setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        writer.write(f"GET /firmware/{token} HTTP/1.1\r\nHost: gw\r\n\r\n".encode())
        status = int((await reader.readline()).split()[1])
        return status, writer  # and reads no more: a stalled fetch

    opened = []
    try:
        for expected in (200, 200, 503):
            status, writer = await fetch()
            opened.append(writer)
            assert status == expected
        opened[0].close()
        await until(lambda: downloads.serving(token) < 2, "the first fetch over")
        status, writer = await fetch()
        opened.append(writer)
        assert status == 200
    finally:
        for writer in opened:
            writer.close()
        await server.stop()


@pytest.mark.slow
async def test_a_firmware_image_reaches_a_charger_on_a_slow_link_whole() -> None:
    """Found attacking the gateway: an image larger than the socket's send buffer that a
    charger could not take in within about ten seconds (a cellular link and a 30 MB image in
    the field; 12 MB at 100 kB/s here) was cut short, sent as the body of a refused WebSocket
    handshake. It streams from a server of its own now, as slowly as the charger reads."""
    image = bytes(range(256)) * (12 * 4096)
    downloads = Downloads(lambda: 0.0)
    server = await DownloadServer(downloads).start()
    ref, chunk = offered(image, chunk_size=65_536)
    _, token = downloads.offer("cs-1", ref, chunk)
    try:
        reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
        writer.get_extra_info("socket").setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 16_384)
        writer.write(f"GET /firmware/{token} HTTP/1.1\r\nHost: gw\r\n\r\n".encode())
        slow_until = asyncio.get_running_loop().time() + 11.0
        received = b""
        while chunk_read := await reader.read(16_384):
            received += chunk_read
            if asyncio.get_running_loop().time() < slow_until:
                await asyncio.sleep(0.16)  # the link's speed for a while, not a wait
        writer.close()
        assert received.endswith(image), f"{len(received)} bytes for an image of {len(image)}"
    finally:
        await server.stop()


async def test_one_charger_reconnecting_in_a_loop_does_not_lock_the_others_out() -> None:
    """Found attacking the gateway: a charger with its own valid credentials that reconnects
    as fast as it can takes every token of the admission bucket (each connection replacing
    the last, and writing ``network/link/*`` up to the cloud), so the chargers coming back
    after an outage are answered 503 meanwhile."""
    chargers = {identity: Admitted(attached()[0], PASSWORD) for identity in ("cs-1", "cs-2")}
    gateway = await OcppGateway(chargers, connects_per_s=1.0, connect_burst=3,
                                clock=FakeClock()).start()

    async def connect(identity: str) -> Any:
        token = base64.b64encode(f"{identity}:{PASSWORD}".encode()).decode()
        return await websockets.connect(f"{gateway.url}{identity}", subprotocols=[
            Subprotocol("ocpp2.0.1")], additional_headers={"Authorization": f"Basic {token}"},
            open_timeout=5)

    opened = []
    try:
        for _ in range(PER_IDENTITY):  # no time passes: a loop as fast as it is answered
            opened.append(await connect("cs-1"))
        opened.append(await connect("cs-2"))  # the others' tokens are still there
        with pytest.raises(InvalidStatus) as spent:  # and the looping charger's share ends
            opened.append(await connect("cs-1"))
        assert spent.value.response.status_code == 503
        assert int(spent.value.response.headers["Retry-After"]) > 0
    finally:
        for connection in opened:
            await connection.close()
        await gateway.stop()
        for admitted in chargers.values():
            await admitted.charger.link.stop()


async def test_firmware_downloads_are_https_with_the_gateway_s_certificate(tmp_path: Path
                                                                          ) -> None:
    """With TLS the download server shows the gateway's certificate and asks no client
    certificate (the token is the credential, even when chargers log in with certificates:
    security profile 3); a client that does not trust the CA gets no TLS session."""
    ca = CertificateAuthority(tmp_path / "ca", "the gateway's CA")
    issued = ca.issue_server(tmp_path / "gateway", "gateway", ["localhost"], ["127.0.0.1"])
    downloads = Downloads(lambda: 0.0)
    server = await DownloadServer(downloads, ssl_context=server_context(
        issued.certificate, issued.key)).start()
    image = bytes(range(256)) * 100
    ref, chunk = offered(image)
    url, _ = downloads.offer("cs-1", ref, chunk)
    assert url.startswith("https://")
    try:
        trusting = ssl.create_default_context(cafile=str(ca.directory / "ca.crt"))
        reader, writer = await asyncio.open_connection("127.0.0.1", server.port, ssl=trusting,
                                                       server_hostname="localhost")
        writer.write(f"GET {url.split(str(server.port), 1)[1]} HTTP/1.1\r\nHost: gw\r\n\r\n"
                     .encode())
        answer = await reader.read()
        writer.close()
        assert answer.startswith(b"HTTP/1.1 200 OK") and answer.endswith(image)
        with pytest.raises(ssl.SSLError):  # the default trust store does not know our CA
            await asyncio.open_connection("127.0.0.1", server.port,
                                          ssl=ssl.create_default_context(),
                                          server_hostname="localhost")
    finally:
        await server.stop()


async def test_idle_connections_to_the_download_server_cannot_pile_up() -> None:
    """A stranger opening connections and sending nothing holds at most MAX_CONNECTIONS of
    them (each until HEAD_S); the next is closed unanswered, and a fetch works again once
    they are gone."""
    downloads = Downloads(lambda: 0.0)
    server = await DownloadServer(downloads).start()
    ref, chunk = offered(bytes(range(256)) * 20)
    _, token = downloads.offer("cs-1", ref, chunk)
    idle = []
    try:
        for _ in range(MAX_CONNECTIONS):
            idle.append(await asyncio.open_connection("127.0.0.1", server.port))
        await until(lambda: len(server._fetches) == MAX_CONNECTIONS, "the idle ones held")
        reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
        writer.write(f"GET /firmware/{token} HTTP/1.1\r\n\r\n".encode())
        try:
            answer = await reader.read()
        except ConnectionResetError:  # closed with the request unread: a reset
            answer = b""
        assert answer == b""  # closed unanswered
        writer.close()
        for _, idle_writer in idle:
            idle_writer.close()
        idle.clear()
        await until(lambda: not server._fetches, "the idle ones gone")
        assert (await get(server.port, f"/firmware/{token}"))[0] == 200
    finally:
        for _, idle_writer in idle:
            idle_writer.close()
        await server.stop()
