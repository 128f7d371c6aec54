"""Calibration against published tables: the bytes one small publish costs on the wire.

    python -m bench.lab.calibration [--json] [--messages 200]     (also: csms lab calibrate)

One publish of a 12-byte body, in each protocol as it is used here, from a client to its
server through a counting TCP proxy of ours on loopback (``Counter``: it relays both ways and
counts what each side wrote, the TCP payload). Each client connects and logs in first; then
it sends ``--messages`` publishes, one at a time, and the figure is the bytes it wrote for
them divided by their number (what the server wrote back meanwhile, acknowledgements and
receipts, is the ``_back`` figure):

* ``ours_xmpp`` / ``ours_xmpp_tls``: our envelope (a ``PropertyValueUpdate`` of one leaf holding
  the 12 bytes: how a station publishes a value) in a frame in an XMPP ``<message>`` stanza, to
  a managed Prosody, without and with TLS (STARTTLS, as our links run);
* ``ocpp_json`` / ``ocpp_json_deflate``: an OCPP-J CALL (``DataTransfer`` whose ``data`` is the
  12 bytes) over a WebSocket, without and with permessage-deflate (context kept from one
  message to the next, as ``websockets`` negotiates it), to a ``websockets`` server;
* ``mqtt``: an MQTT 3.1.1 PUBLISH at QoS 0 on topic ``cs/1/v`` (paho-mqtt) to Debian's
  mosquitto; ``mqtt_qos1`` the same at QoS 1 (a PUBACK back).

With ``--resync``, also our resynchronisation against range-based set reconciliation on the
same difference sets (``resync_against_rbsr``).

``PUBLISHED`` holds the table the issue quotes (MQTT 28 B, 68 B with TLS; XMPP pubsub 491 B,
308 B with TLS): the report sets ours beside it. What is missing here (mosquitto not
installed, say) is reported as such, never guessed.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import importlib
import json
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

BODY = b"0123456789ab"  # the 12-byte body
PUBLISHED = {"mqtt": 28, "mqtt_tls": 68, "xmpp_pubsub": 491, "xmpp_pubsub_tls": 308}


@dataclass
class Counter:
    """A TCP proxy on loopback that counts what each side writes."""

    target: tuple[str, int]
    up: int = 0  # client -> server
    down: int = 0
    port: int = 0
    _server: asyncio.Server | None = None

    async def start(self) -> Counter:
        self._server = await asyncio.start_server(self._relay, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def _relay(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            upstream_reader, upstream_writer = await asyncio.open_connection(*self.target)
        except OSError:
            writer.close()
            return

        async def pipe(src: asyncio.StreamReader, dst: asyncio.StreamWriter, up: bool) -> None:
            try:
                while data := await src.read(65536):
                    if up:
                        self.up += len(data)
                    else:
                        self.down += len(data)
                    dst.write(data)
                    await dst.drain()
            except (ConnectionError, asyncio.IncompleteReadError):
                pass
            finally:
                with contextlib.suppress(Exception):
                    dst.close()

        await asyncio.gather(pipe(reader, upstream_writer, True),
                             pipe(upstream_reader, writer, False))

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._server.wait_closed(), 2)


async def per_message(counter: Counter, send: Callable[[int], Awaitable[None]],
                      messages: int, settle: Callable[[], Awaitable[None]]) -> dict[str, float]:
    """Bytes each way per message: ``send(i)`` each, ``settle()`` once all are handed on."""
    await settle()
    up0, down0 = counter.up, counter.down
    for i in range(messages):
        await send(i)
    await settle()
    return {"bytes": round((counter.up - up0) / messages, 1),
            "bytes_back": round((counter.down - down0) / messages, 1)}


async def _quiet(seconds: float = 0.5) -> None:
    await asyncio.sleep(seconds)  # lets the last writes through the proxy: bytes, not time


async def ours(messages: int, tls: bool) -> dict[str, float]:
    from broker_bridge import Endpoint, Priority
    from broker_bridge.prosody import ManagedProsody
    from broker_bridge.xmpp import XmppTransport
    from keypath import KeyPath
    from object_model.messages import PropertyValueUpdate

    root = Path(tempfile.mkdtemp(prefix="calibrate-xmpp-"))
    broker = ManagedProsody(root / "broker", component_domains=(), tls=tls)
    await broker.start()
    counter = await Counter(("127.0.0.1", broker.endpoint.c2s_port)).start()
    endpoints: list[Any] = []
    try:
        broker.create_accounts({"pub": "pub-password-1", "sub": "sub-password-1"})
        received: list[object] = []
        sub = await Endpoint(XmppTransport.client(broker.xmpp_settings(), "sub",
                                                  "sub-password-1"), name="sub").start()
        endpoints.append(sub)
        await sub.register("sub", received.append)
        pub = await Endpoint(XmppTransport.client(broker.xmpp_settings(c2s_port=counter.port),
                                                  "pub", "pub-password-1"), name="pub").start()
        endpoints.append(pub)
        await pub.register("pub", lambda env: None)

        async def send(i: int) -> None:
            pub.send(source="pub", destination="sub", message=PropertyValueUpdate(
                tree=KeyPath("v"), epoch=1, from_revision=i, to_revision=i + 1,
                upserts=[("v", 1, BODY.decode())]), priority=Priority.STATE)
            deadline = time.monotonic() + 10
            while len(received) <= i and time.monotonic() < deadline:
                await asyncio.sleep(0.005)  # one at a time: each its own stanza

        return await per_message(counter, send, messages, _quiet)
    finally:
        for endpoint in endpoints:
            await endpoint.stop(flush_timeout=0.5)
        await counter.stop()
        await broker.stop()
        shutil.rmtree(root, ignore_errors=True)


async def ocpp(messages: int, deflate: bool) -> dict[str, float]:
    import websockets

    async def serve(connection: Any) -> None:
        async for raw in connection:
            call = json.loads(raw)
            await connection.send(json.dumps([3, call[1], {"status": "Accepted"}]))

    server = await websockets.serve(serve, "127.0.0.1", 0,
                                    subprotocols=["ocpp2.0.1"],  # type: ignore[list-item]
                                    compression="deflate" if deflate else None)
    port = next(iter(server.sockets)).getsockname()[1]
    counter = await Counter(("127.0.0.1", port)).start()
    try:
        async with websockets.connect(f"ws://127.0.0.1:{counter.port}/ocpp/CP-1",
                                      subprotocols=["ocpp2.0.1"],  # type: ignore[list-item]
                                      compression="deflate" if deflate else None) as client:
            async def send(i: int) -> None:
                await client.send(json.dumps([2, f"{i:08d}", "DataTransfer", {
                    "vendorId": "lab", "data": BODY.decode()}], separators=(",", ":")))
                await client.recv()  # one call in flight

            return await per_message(counter, send, messages, _quiet)
    finally:
        await counter.stop()
        server.close()


async def mqtt(messages: int, qos: int) -> dict[str, float] | str:
    started = await _mosquitto()
    if isinstance(started, str):
        return started
    broker, port, root = started
    import paho.mqtt.client as paho

    counter = await Counter(("127.0.0.1", port)).start()
    client = paho.Client(paho.CallbackAPIVersion.VERSION2, client_id="cs-1")
    try:
        client.connect("127.0.0.1", counter.port)
        client.loop_start()

        async def send(i: int) -> None:
            info = client.publish("cs/1/v", BODY, qos=qos)
            while not info.is_published():
                await asyncio.sleep(0.002)  # paho's own thread sends it

        return await per_message(counter, send, messages, _quiet)
    finally:
        client.loop_stop()
        client.disconnect()
        await counter.stop()
        broker.terminate()
        broker.wait(5)
        shutil.rmtree(root, ignore_errors=True)


SHAPES = {"point_to_point": (1, 1), "fan_in": (10, 1), "fan_out": (1, 10)}
"""The published broker scenarios, scaled: (publishers, subscribers); every publisher's
message goes to every subscriber."""


async def broker_paths(messages: int = 2000) -> dict[str, Any]:
    """Our broker path (envelopes between endpoints through a managed Prosody, plain) against
    Mosquitto (paho-mqtt, QoS 0) on each of ``SHAPES``: each publisher sends ``messages``
    12-byte bodies as fast as its client takes them, and the figure is the messages delivered
    per second until the last arrived (60 s at most), and the ratio ours / Mosquitto, measured
    in the same run."""
    out: dict[str, Any] = {"messages_per_publisher": messages}
    for shape, (publishers, subscribers) in SHAPES.items():
        ours_rate = await _ours_rate(publishers, subscribers, messages)
        theirs = await _mosquitto_rate(publishers, subscribers, messages)
        row: dict[str, Any] = {"ours_per_s": ours_rate, "mosquitto_per_s": theirs}
        if not isinstance(theirs, str) and theirs:
            row["ours_over_mosquitto"] = round(ours_rate / theirs, 3)
        out[shape] = row
    return out


async def _ours_rate(publishers: int, subscribers: int, messages: int) -> float:
    from broker_bridge import Endpoint, Priority
    from broker_bridge.prosody import ManagedProsody
    from broker_bridge.xmpp import XmppTransport
    from keypath import KeyPath
    from object_model.messages import PropertyValueUpdate

    root = Path(tempfile.mkdtemp(prefix="calibrate-path-"))
    broker = ManagedProsody(root / "broker", component_domains=(), tls=False)
    await broker.start()
    names = [f"pub{i}" for i in range(publishers)] + [f"sub{i}" for i in range(subscribers)]
    broker.create_accounts({n: f"{n}-password-1" for n in names})
    got = [0]
    endpoints: dict[str, Any] = {}
    try:
        for name in names:
            endpoint = await Endpoint(XmppTransport.client(
                broker.xmpp_settings(), name, f"{name}-password-1"), name=name).start()
            endpoints[name] = endpoint
            await endpoint.register(name, lambda env: got.__setitem__(0, got[0] + 1))
        update = PropertyValueUpdate(tree=KeyPath("v"), epoch=1, from_revision=0,
                                     to_revision=1, upserts=[("v", 1, BODY.decode())])
        expected = publishers * subscribers * messages
        began = time.perf_counter()
        for i in range(messages):
            for p in range(publishers):
                for s in range(subscribers):
                    endpoints[f"pub{p}"].send(source=f"pub{p}", destination=f"sub{s}",
                                              message=update, priority=Priority.STATE)
            if i % 100 == 99:
                await asyncio.sleep(0)  # let the sessions write
        deadline = began + 60
        while got[0] < expected and time.perf_counter() < deadline:
            await asyncio.sleep(0.01)  # the deliveries, counted as they come
        return round(got[0] / (time.perf_counter() - began), 1)
    finally:
        for endpoint in endpoints.values():
            await endpoint.stop(flush_timeout=0.5)
        await broker.stop()
        shutil.rmtree(root, ignore_errors=True)


async def _mosquitto_rate(publishers: int, subscribers: int, messages: int) -> float | str:
    started = await _mosquitto()
    if isinstance(started, str):
        return started
    broker, port, root = started
    try:
        import threading

        import paho.mqtt.client as paho
        lock, got = threading.Lock(), [0]

        def on_message(client: Any, userdata: Any, message: Any) -> None:
            with lock:
                got[0] += 1

        subs, pubs = [], []
        for s in range(subscribers):
            client = paho.Client(paho.CallbackAPIVersion.VERSION2, client_id=f"sub{s}")
            client.on_message = on_message
            client.connect("127.0.0.1", port)
            client.subscribe(f"cs/to/sub{s}", qos=0)
            client.loop_start()
            subs.append(client)
        for p in range(publishers):
            client = paho.Client(paho.CallbackAPIVersion.VERSION2, client_id=f"pub{p}")
            client.connect("127.0.0.1", port)
            client.loop_start()
            pubs.append(client)
        await asyncio.sleep(0.5)  # the subscriptions in place: paho's threads, not ours
        expected = publishers * subscribers * messages
        began = time.perf_counter()
        for _ in range(messages):
            for client in pubs:
                for s in range(subscribers):
                    client.publish(f"cs/to/sub{s}", BODY, qos=0)
        deadline = began + 60
        while got[0] < expected and time.perf_counter() < deadline:
            await asyncio.sleep(0.01)  # the deliveries, counted by paho's threads
        rate = round(got[0] / (time.perf_counter() - began), 1)
        for client in subs + pubs:
            client.loop_stop()
            client.disconnect()
        return rate
    finally:
        broker.terminate()
        broker.wait(5)
        shutil.rmtree(root, ignore_errors=True)


async def _mosquitto() -> tuple[subprocess.Popen[bytes], int, Path] | str:
    """Debian's mosquitto on a free loopback port, once it listens; or why not."""
    binary = shutil.which("mosquitto") or shutil.which("/usr/sbin/mosquitto")
    if binary is None:
        return "mosquitto is not installed (make setup installs it)"
    try:
        import paho.mqtt.client  # noqa: F401
    except ImportError:
        return "paho-mqtt is not installed (make setup installs the lab extra)"
    root = Path(tempfile.mkdtemp(prefix="calibrate-mqtt-"))
    probe = await asyncio.start_server(lambda r, w: None, "127.0.0.1", 0)
    port = probe.sockets[0].getsockname()[1]
    probe.close()
    await probe.wait_closed()
    (root / "mosquitto.conf").write_text(f"listener {port} 127.0.0.1\nallow_anonymous true\n"
                                         "persistence false\nmax_queued_messages 0\n")
    broker = subprocess.Popen([binary, "-c", str(root / "mosquitto.conf")],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    for _ in range(100):
        try:
            _, writer = await asyncio.open_connection("127.0.0.1", port)
        except OSError:
            await asyncio.sleep(0.05)  # mosquitto binding its port
            continue
        writer.close()
        return broker, port, root
    broker.kill()
    return f"mosquitto did not listen on {port} within 5 s"


DIFFERENCES = ("1", "10", "100", "1%", "10%")  # the difference sets


async def resync_against_rbsr(stations: int = 1250, differences: tuple[str, ...] = DIFFERENCES,
                              say: Callable[[str], None] = lambda _: None) -> dict[str, Any]:
    """Our resync (``bench.resync``: the cloud CSMS SIGKILLed, ``d`` leaves changed over all
    its stations' trees, restarted; same epoch by ``changes_since``, then new epochs by digest
    descent) against range-based set reconciliation (``bench.lab.rbsr``) on the same ``n``
    leaves and ``d`` differences. ``stations`` of 241 leaves: 1,250 make n = 301,250."""
    from bench.lab.rbsr import difference_sets, reconcile

    # bench.resync is a benchmark of its own, outside what the type checker covers
    run_resync = importlib.import_module("bench.resync").run_resync

    leaves_per_station = 241
    n = stations * leaves_per_station
    out: dict[str, Any] = {"n": n, "stations": stations, "by_difference": {}}
    for text in differences:
        d = round(float(text[:-1]) / 100 * n) if text.endswith("%") else int(text)
        say(f"resync against RBSR: d = {text} ({d} of {n} leaves)...")
        ours = await run_resync(stations=stations, changed=d / n, sites=4, seed=1,
                                progress=say)
        a, b = difference_sets(ours["leaves"], ours["changed_leaves"], seed=1)
        model = reconcile(a, b)
        out["by_difference"][text] = {
            "d": ours["changed_leaves"], "n": ours["leaves"],
            "ours_changes_since_bytes": ours["resync_bytes"],
            "ours_changes_since_link_bytes": ours["link_bytes"],
            "ours_digest_descent_bytes": ours["resync_bytes_digest_descent"],
            "ours_digest_descent_link_bytes": ours["link_bytes_digest_descent"],
            "floor_bytes": ours["floor_bytes"],
            "rbsr_bytes": model.bytes, "rbsr_round_trips": model.round_trips,
        }
    return out


async def measure(messages: int = 200) -> dict[str, Any]:
    out: dict[str, Any] = {"body_bytes": len(BODY), "messages": messages,
                           "published": PUBLISHED}
    out["ours_xmpp"] = await ours(messages, tls=False)
    out["ours_xmpp_tls"] = await ours(messages, tls=True)
    out["ocpp_json"] = await ocpp(messages, deflate=False)
    out["ocpp_json_deflate"] = await ocpp(messages, deflate=True)
    out["mqtt"] = await mqtt(messages, qos=0)
    out["mqtt_qos1"] = await mqtt(messages, qos=1)
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="csms lab calibrate", description=__doc__.split(
        "\n\n")[1], formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--messages", type=int, default=200)
    parser.add_argument("--resync", action="store_true",
                        help="also our resync against range-based set reconciliation "
                        "(n = 301,250 leaves; d = 1, 10, 100, 1 %%, 10 %%: minutes)")
    parser.add_argument("--paths", action="store_true",
                        help="also our broker path against Mosquitto (fan-in, fan-out, point "
                        "to point; rates: run it alone on the machine)")
    parser.add_argument("--stations", type=int, default=1250,
                        help="with --resync: stations of 241 leaves each")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    out = asyncio.run(measure(args.messages))
    if args.paths:
        out["paths"] = asyncio.run(broker_paths())
    if args.resync:
        out["resync"] = asyncio.run(resync_against_rbsr(
            args.stations, say=lambda text: print(text, file=sys.stderr, flush=True)))
    if args.json:
        print(json.dumps(out))
        return 0
    for name, value in out.items():
        print(f"{name:<22}{value}")
    return 0


if __name__ == "__main__":
    sys.exit(main())


__all__ = ["BODY", "DIFFERENCES", "PUBLISHED", "SHAPES", "Counter", "broker_paths", "measure",
           "resync_against_rbsr"]
