"""Transport benchmark through the managed Prosody (both processes on this machine).

    python -m bench.transport [--json] [--quick]      (also: csms bench transport)

Runs, with senders in a child process and the receiver in this one:

* raw ceiling: slixmpp connections writing pre-built frames (no session, no codec), i.e. what
  the broker and the XML stream carry at most (``raw_ceiling_per_s``);
* unbatched envelopes/s (batching windows 0: one envelope per stanza) with N = 1, 50 and 500
  sending connections, and batched messages/s (default windows);
* latency p50/p99 at a steady 2,000 envelopes/s from N senders;
* priorities: bulk telemetry saturating a 500 kB/s rate-limited link while a critical envelope
  is sent every 100 ms; critical latency unloaded, under the flood, and under the flood with
  priorities off (FIFO).

Bodies are encoded once and sent as bytes: the bridge carries them opaquely (the receiver here
does not decode them either), and message encoding is the object model's cost, measured by
``bench.tree``. Everything else (envelopes, ids, session, frames, XML, the broker) is paid per
message.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import dataclasses
import gc
import json
import os
import random
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from broker_bridge.codec import encode_body, encode_envelope, encode_frame
from broker_bridge.endpoint import Endpoint
from broker_bridge.envelope import Envelope, Priority
from broker_bridge.prosody import ManagedProsody
from broker_bridge.session import SessionConfig
from broker_bridge.xmpp import XmppSettings, XmppTransport
from broker_bridge.xmpp.stream import NS, ClientStream
from object_model import PropertyValueUpdate

RX = "bench-rx"
PASSWORD = "bench"
BODY = encode_body(PropertyValueUpdate(epoch=1, from_revision=41, to_revision=42,
                                       upserts=[("evse/1/meter/obis:1-0:1.8.0", 42, 123456.5)]))
NO_BATCHING = {p: 0 for p in Priority}


def _settle_heap() -> None:
    """Free what earlier phases left and freeze the rest out of full collections before a
    timed phase, as a long-running actor process does once it is set up
    (``actors.app.wiring.settle_heap``): otherwise a full collection over the previous phases'
    leftovers (50-110 ms here, measured with ``gc.callbacks``) lands in a 10-second latency
    window and becomes its p99."""
    gc.collect()
    gc.freeze()


def _percentile(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


# -- the sender process ------------------------------------------------------------------------


async def _connected_stream(settings: XmppSettings, account: str) -> ClientStream:
    done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
    stream = ClientStream(f"{account}@{settings.domain}/bench", PASSWORD, tls=False,
                          window=settings.sm_window, sink=lambda *a: None, on_resume=lambda: None,
                          presence=lambda *a: None)
    stream.add_event_handler("session_start", lambda _: done.done() or done.set_result(None))
    stream.connect(settings.host, settings.c2s_port)
    await asyncio.wait_for(done, 20)
    stream.send_tracked("<presence/>")  # without it the broker stores our messages offline
    return stream


async def run_senders(mode: str, senders: int, count: int, settings: XmppSettings,
                      rate: float, seconds: float, fifo: bool) -> None:
    names = [f"bench-tx-{i}" for i in range(senders)]
    if mode == "raw":
        streams = await asyncio.gather(*(_connected_stream(settings, n) for n in names))
        env = Envelope(id=os.urandom(16), source=names[0], destination=RX,
                       kind="PropertyValueUpdate", body=BODY)
        text = base64.b64encode(encode_frame([encode_envelope(env)])).decode()
        stanza = f"<message to='{RX}@{settings.domain}' type='normal'><f xmlns='{NS}'>{text}</f></message>"
        _settle_heap()
        print("ready", flush=True)
        await asyncio.get_running_loop().run_in_executor(None, sys.stdin.readline)
        per = count // senders
        for i in range(per):
            for stream in streams:
                stream.send_tracked(stanza)
            if i % 20 == 0:
                while any(s.write_paused for s in streams):
                    await asyncio.sleep(0.001)
                await asyncio.sleep(0)
        for stream in streams:
            await stream.close_cleanly([], 5)
        print("done", flush=True)
        return
    if mode == "priority":
        config = SessionConfig(rate_bytes_per_s=rate, burst_bytes=4096, priorities=not fifo,
                               max_queued_bytes=4 * 1024 * 1024)
    elif mode == "batched":
        config = SessionConfig()
    else:
        config = SessionConfig(batch_windows_us=NO_BATCHING)
    endpoints = [Endpoint(XmppTransport.client(settings, n, PASSWORD), config=config, name=n)
                 for n in names]
    await asyncio.gather(*(e.start() for e in endpoints))
    for name, endpoint in zip(names, endpoints, strict=True):
        await endpoint.register(name, lambda env: None)
    print("ready", flush=True)
    await asyncio.get_running_loop().run_in_executor(None, sys.stdin.readline)
    message = PropertyValueUpdate(epoch=1, from_revision=41, to_revision=42,
                                  upserts=[("evse/1/meter/obis:1-0:1.8.0", 42, 123456.5)])
    kind, body = "PropertyValueUpdate", encode_body(message)
    if mode in ("unbatched", "batched"):
        per = count // senders
        for i in range(per):
            for name, endpoint in zip(names, endpoints, strict=True):
                endpoint.send(source=name, destination=RX, kind=kind, body=body,
                              priority=Priority.STATE)
            if i % max(1, 500 // senders) == 0:
                await asyncio.sleep(0)
                # a well-behaved producer: keep the queues bounded instead of piling up
                while sum(endpoints[0].session.queue_depth().values()) > 20_000:
                    await asyncio.sleep(0.001)
    elif mode == "paced":
        start = time.monotonic()
        n = 0
        while time.monotonic() - start < seconds:
            for name, endpoint in zip(names, endpoints, strict=True):
                endpoint.send(source=name, destination=RX, kind=kind, body=body,
                              priority=Priority.STATE)
                n += 1
                lag = start + n / rate - time.monotonic()
                if lag > 0:
                    await asyncio.sleep(lag)
    elif mode in ("priority", "unloaded"):
        endpoint, name = endpoints[0], names[0]
        rng = random.Random(1)

        def bulk() -> bytes:  # telemetry with fresh readings: realistic, not endlessly compressible
            return encode_body(PropertyValueUpdate(
                epoch=2, from_revision=0, to_revision=1,
                upserts=[(f"evse/1/monitor/{i}", 1, rng.uniform(0, 400)) for i in range(8)]))

        critical = PropertyValueUpdate(epoch=3, from_revision=0, to_revision=1)
        start = time.monotonic()
        next_critical = start + 0.05
        while time.monotonic() - start < seconds:
            if mode == "priority" and endpoint.session.queue_depth()[Priority.BULK] < 2000:
                for _ in range(200):  # offered load well above the link's rate
                    endpoint.send(source=name, destination=RX, kind=kind, body=bulk(),
                                  priority=Priority.BULK)
            if time.monotonic() >= next_critical:
                endpoint.send(source=name, destination=RX, message=critical,
                              priority=Priority.CRITICAL)
                next_critical += 0.1
            await asyncio.sleep(0.002)
    for endpoint in endpoints:
        await endpoint.stop(flush_timeout=5 if mode != "priority" else 0.1)
    print("done", flush=True)


# -- the receiving side (this process) ---------------------------------------------------------


@dataclasses.dataclass
class Arrivals:
    count: int = 0
    first: float = 0.0
    last: float = 0.0
    latencies_ms: list[float] = dataclasses.field(default_factory=list)
    critical_ms: list[float] = dataclasses.field(default_factory=list)

    def note(self, timestamp_us: int | None = None, critical: bool = False) -> None:
        now = time.time()
        if self.count == 0:
            self.first = now
        self.count += 1
        self.last = now
        if timestamp_us is not None:
            latency = now * 1000 - timestamp_us / 1000
            (self.critical_ms if critical else self.latencies_ms).append(latency)

    def rate(self) -> float:
        span = self.last - self.first
        return self.count / span if span > 0 else float("nan")


async def _phase(settings: XmppSettings, mode: str, senders: int, count: int = 0, *,
                 rate: float = 0, seconds: float = 0, fifo: bool = False,
                 expect: int | None = None) -> Arrivals:
    arrivals = Arrivals()
    cfg = json.dumps(dataclasses.asdict(settings))
    if mode == "raw":
        receiver: Any = await _connected_stream(settings, RX)
        receiver._sink = lambda *a: arrivals.note()
    else:
        receiver = Endpoint(XmppTransport.client(settings, RX, PASSWORD), name=RX)
        await receiver.start()

        def on_envelope(env: Envelope) -> None:
            critical = env.priority is Priority.CRITICAL
            timed = mode in ("paced", "priority", "unloaded") and (critical or mode == "paced")
            arrivals.note(env.timestamp_us if timed else None, critical)

        await receiver.register(RX, on_envelope)
    child = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "bench.transport", "senders", mode, str(senders), str(count), cfg,
        str(rate), str(seconds), "fifo" if fifo else "prio",
        stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE)
    try:
        assert child.stdout is not None and child.stdin is not None
        line = await asyncio.wait_for(child.stdout.readline(), 120)
        if line.strip() != b"ready":
            raise RuntimeError(f"sender process failed to start ({mode}, {senders})")
        _settle_heap()
        child.stdin.write(b"go\n")
        await child.stdin.drain()
        await asyncio.wait_for(child.stdout.readline(), seconds + 300)
        target = expect if expect is not None else count
        deadline = time.monotonic() + 10
        while arrivals.count < target and time.monotonic() < deadline:
            before = arrivals.count
            await asyncio.sleep(0.2)
            if arrivals.count == before and mode in ("paced", "priority", "unloaded"):
                break
    finally:
        if child.returncode is None:
            child.kill()
        await child.wait()
        if mode == "raw":
            await receiver.close_cleanly([], 5)
        else:
            await receiver.stop(flush_timeout=1)
    return arrivals


async def measure(quick: bool = False, progress: Any = print) -> dict[str, Any]:
    scale = 0.25 if quick else 1.0
    with tempfile.TemporaryDirectory() as tmp:
        broker = ManagedProsody(Path(tmp) / "broker")
        await broker.start()
        try:
            broker.create_accounts({RX: PASSWORD} | {f"bench-tx-{i}": PASSWORD
                                                     for i in range(500)})
            settings = broker.xmpp_settings()
            out: dict[str, Any] = {}
            progress("raw ceiling (slixmpp frames, no session)")
            raw = await _phase(settings, "raw", 1, int(40_000 * scale))
            out["raw_ceiling_per_s"] = round(raw.rate())
            out["unbatched"] = {}
            for n in (1, 50, 500):
                progress(f"unbatched envelopes, {n} sender(s)")
                got = await _phase(settings, "unbatched", n, int(30_000 * scale) // n * n)
                out["unbatched"][n] = {"envelopes_per_s": round(got.rate()),
                                       "received": got.count}
            out["unbatched_envelopes_per_s"] = out["unbatched"][1]["envelopes_per_s"]
            progress("batched messages, 1 sender")
            batched = await _phase(settings, "batched", 1, int(300_000 * scale))
            out["batched_messages_per_s"] = round(batched.rate())
            out["latency"] = {}
            for n in (1, 50, 500):
                progress(f"latency at 2,000 envelopes/s, {n} sender(s)")
                paced = await _phase(settings, "paced", n, rate=2000, seconds=3 * scale + 1,
                                     expect=10**9)
                out["latency"][n] = {"p50_ms": round(_percentile(paced.latencies_ms, 0.5), 3),
                                     "p99_ms": round(_percentile(paced.latencies_ms, 0.99), 3)}
            out["p50_ms"] = out["latency"][1]["p50_ms"]
            out["p99_ms"] = out["latency"][1]["p99_ms"]
            seconds = 8 * scale + 2
            for key, mode, fifo in (("unloaded", "unloaded", False), ("flood", "priority", False),
                                    ("flood_fifo", "priority", True)):
                progress(f"critical latency, {key.replace('_', ' ')} (500 kB/s link)")
                got = await _phase(settings, mode, 1, rate=500_000, seconds=seconds, fifo=fifo,
                                   expect=10**9)
                out[f"critical_p50_ms_{key}"] = round(_percentile(got.critical_ms, 0.5), 3)
                out[f"critical_p99_ms_{key}"] = round(_percentile(got.critical_ms, 0.99), 3)
                out[f"critical_samples_{key}"] = len(got.critical_ms)
            out["unbatched_share_of_raw"] = round(out["unbatched_envelopes_per_s"]
                                                  / out["raw_ceiling_per_s"], 3)
            out["flood_over_unloaded_p99"] = round(out["critical_p99_ms_flood"]
                                                   / out["critical_p99_ms_unloaded"], 2)
            out["fifo_over_unloaded_p99"] = round(out["critical_p99_ms_flood_fifo"]
                                                  / out["critical_p99_ms_unloaded"], 1)
            return out
        finally:
            await broker.stop()


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["senders"]:
        mode, senders, count, cfg, rate, seconds, order = argv[1:8]
        raw = json.loads(cfg)
        raw["routes"] = tuple(tuple(r) for r in raw["routes"])
        raw["extra_domains"] = tuple(raw["extra_domains"])
        asyncio.run(run_senders(mode, int(senders), int(count), XmppSettings(**raw),
                                float(rate), float(seconds), order == "fifo"))
        return 0
    parser = argparse.ArgumentParser(prog="python -m bench.transport", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.add_argument("--quick", action="store_true", help="a quarter of the work (smoke run)")
    args = parser.parse_args(argv)
    say = (lambda _: None) if args.json else (lambda m: print(f"  measuring {m}...",
                                                              file=sys.stderr))
    out = asyncio.run(measure(args.quick, say))
    if args.json:
        print(json.dumps(out))
        return 0
    print(f"raw ceiling (slixmpp, no session)     {out['raw_ceiling_per_s']:>9,} stanzas/s")
    for n, row in out["unbatched"].items():
        lat = out["latency"][n]
        print(f"unbatched, {n:>3} sender(s)            {row['envelopes_per_s']:>9,} envelopes/s"
              f"   latency at 2k/s p50 {lat['p50_ms']:.2f} ms  p99 {lat['p99_ms']:.2f} ms")
    print(f"batched, 1 sender                     {out['batched_messages_per_s']:>9,} messages/s")
    for key in ("unloaded", "flood", "flood_fifo"):
        print(f"critical, {key.replace('_', ' '):<12} p50 {out[f'critical_p50_ms_{key}']:>8.2f} ms"
              f"   p99 {out[f'critical_p99_ms_{key}']:>8.2f} ms"
              f"   ({out[f'critical_samples_{key}']} samples)")
    print(f"unbatched / raw = {out['unbatched_share_of_raw']:.0%} (target >= 60%); "
          f"flood / unloaded p99 = {out['flood_over_unloaded_p99']}x (target <= 2x); "
          f"FIFO / unloaded p99 = {out['fifo_over_unloaded_p99']}x")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
