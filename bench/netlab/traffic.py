"""Test traffic for the lab: an echo server and a bulk sender to run in a namespace, and the
probes that measure them from the other side.

    python -m bench.netlab.traffic serve --bind 198.19.1.2 --port 7000    # TCP and UDP echo
    python -m bench.netlab.traffic echo-to --to 198.18.0.1:9000     # echo on a connection it opens
    python -m bench.netlab.traffic upload --to 198.18.0.1:9000 --bytes 500000

``serve`` prints ``ready`` once both sockets listen. ``echo-to`` opens the connection, as a
site's local CSMS opens its uplink, and echoes what comes back on it until it closes. ``upload`` sends its bytes, half-closes and
waits for the receiver to close (so every byte arrived), then prints one JSON line.
In-process, `udp_echo_probe` measures round trips and order against an echo server, and
`TcpSink` receives a bulk transfer and measures its rate.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import select
import socket
import struct
import threading
import time
from dataclasses import dataclass, field
from types import TracebackType
from typing import cast

_PROBE = struct.Struct("!IQ")  # sequence number, send time in ns


class _UdpEcho(asyncio.DatagramProtocol):
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.DatagramTransport, transport)

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        self.transport.sendto(data, addr)


async def _echo_stream(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()
    except ConnectionError:
        pass
    finally:
        writer.close()


async def serve(bind: str, port: int) -> None:
    """Echo TCP streams and UDP datagrams on ``bind``:``port`` until killed."""
    server = await asyncio.start_server(_echo_stream, bind, port)
    await asyncio.get_running_loop().create_datagram_endpoint(_UdpEcho, local_addr=(bind, port))
    print("ready", flush=True)
    async with server:
        await server.serve_forever()


async def echo_to(host: str, port: int) -> None:
    """Connect to ``host``:``port`` and echo what arrives until the peer closes."""
    reader, writer = await asyncio.open_connection(host, port)
    await _echo_stream(reader, writer)


def upload(host: str, port: int, size: int) -> dict[str, float]:
    """Send ``size`` bytes to ``host``:``port`` and wait until the receiver has closed."""
    chunk = b"\0" * 65536
    started = time.monotonic()
    with socket.create_connection((host, port), timeout=60) as connection:
        left = size
        while left:
            left -= connection.send(chunk[:left])
        connection.shutdown(socket.SHUT_WR)
        while connection.recv(4096):  # the sink closes once it has read everything
            pass
    return {"bytes": size, "seconds": time.monotonic() - started}


@dataclass(slots=True)
class EchoProbe:
    """What came back from `udp_echo_probe`."""

    sent: int
    rtts_s: dict[int, float] = field(default_factory=dict)  # sequence number -> round trip
    arrival_order: list[int] = field(default_factory=list)

    @property
    def loss(self) -> float:
        return 1 - len(self.rtts_s) / self.sent

    @property
    def in_order(self) -> bool:
        return all(a < b for a, b in zip(self.arrival_order, self.arrival_order[1:], strict=False))

    def rtt_percentile_s(self, q: float) -> float:
        """The ``q``-th percentile (0 < q <= 100, nearest rank) of the round trips back."""
        rtts = sorted(self.rtts_s.values())
        return rtts[max(0, math.ceil(q / 100 * len(rtts)) - 1)]


def udp_echo_probe(host: str, port: int, *, count: int, interval_s: float, size: int = 64,
                   bind: str | None = None, linger_s: float = 2.0) -> EchoProbe:
    """Send ``count`` numbered datagrams, one per ``interval_s``, to a UDP echo server.

    Replies are collected while sending and for up to ``linger_s`` after the last one (less
    once all are back). Returns each round trip and the order in which replies came back.
    """
    result = EchoProbe(sent=count)
    padding = b"\0" * max(0, size - _PROBE.size)
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        if bind is not None:
            sock.bind((bind, 0))
        sock.connect((host, port))
        sock.setblocking(False)
        start = time.monotonic()
        for seq in range(count):
            sock.send(_PROBE.pack(seq, time.monotonic_ns()) + padding)
            _collect(sock, result, until=start + (seq + 1) * interval_s)
        deadline = time.monotonic() + linger_s
        while len(result.rtts_s) < count and time.monotonic() < deadline:
            _collect(sock, result, until=min(deadline, time.monotonic() + 0.05))
    return result


def _collect(sock: socket.socket, result: EchoProbe, until: float) -> None:
    """Read replies until the monotonic time ``until``."""
    while (left := until - time.monotonic()) > 0:
        if not select.select([sock], [], [], left)[0]:
            return
        while True:
            try:
                data = sock.recv(65536)
            except (BlockingIOError, ConnectionRefusedError):
                break
            seq, sent_ns = _PROBE.unpack_from(data)
            result.rtts_s[seq] = (time.monotonic_ns() - sent_ns) / 1e9
            result.arrival_order.append(seq)


class TcpSink:
    """Accepts one TCP connection in a thread, reads it to the end and times the bytes.

    Use as a context manager; `wait` returns once the sender has finished.
    """

    def __init__(self, host: str, port: int = 0) -> None:
        self._listener = socket.create_server((host, port))
        self.port = self._listener.getsockname()[1]
        self.received = 0
        self._first: tuple[float, int] | None = None  # when the first bytes came, how many
        self._last_at = 0.0
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._receive, name="TcpSink", daemon=True)
        self._thread.start()

    def _receive(self) -> None:
        try:
            connection, _ = self._listener.accept()
            with connection:
                while data := connection.recv(65536):
                    self._last_at = time.monotonic()
                    self._first = self._first or (self._last_at, len(data))
                    self.received += len(data)
        except OSError:
            pass  # closed while waiting
        finally:
            self._done.set()

    def wait(self, timeout: float) -> None:
        if not self._done.wait(timeout):
            raise TimeoutError(f"the sender did not finish within {timeout} s "
                               f"({self.received} bytes received)")

    def rate_bps(self) -> float:
        """Goodput after the first bytes up to the last, in bits per second."""
        if self._first is None or self._last_at == self._first[0]:
            raise ValueError("too few bytes arrived to measure a rate")
        first_at, first_bytes = self._first
        return (self.received - first_bytes) * 8 / (self._last_at - first_at)

    def __enter__(self) -> TcpSink:
        return self

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None,
                 traceback: TracebackType | None) -> None:
        self._listener.close()
        self._thread.join(5)


def _address(text: str) -> tuple[str, int]:
    host, _, port = text.rpartition(":")
    return host, int(port)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.netlab.traffic")
    commands = parser.add_subparsers(dest="command", required=True)
    serve_parser = commands.add_parser("serve", help="TCP and UDP echo")
    serve_parser.add_argument("--bind", required=True)
    serve_parser.add_argument("--port", type=int, default=7000)
    echo_to_parser = commands.add_parser("echo-to", help="TCP echo on an outgoing connection")
    echo_to_parser.add_argument("--to", type=_address, required=True, metavar="HOST:PORT")
    upload_parser = commands.add_parser("upload", help="send bytes to a TCP sink")
    upload_parser.add_argument("--to", type=_address, required=True, metavar="HOST:PORT")
    upload_parser.add_argument("--bytes", type=int, required=True)
    args = parser.parse_args(argv)
    if args.command == "serve":
        asyncio.run(serve(args.bind, args.port))
    elif args.command == "echo-to":
        host, port = args.to
        asyncio.run(echo_to(host, port))
    else:
        host, port = args.to
        print(json.dumps(upload(host, port, args.bytes)), flush=True)


if __name__ == "__main__":
    main()
