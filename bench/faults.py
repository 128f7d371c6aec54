"""Reliability under faults: two actors in two OS processes exchange reliable envelopes in both
directions through the managed Prosody while the broker (and optionally the sender) is killed
with SIGKILL and restarted mid-stream.

    python -m bench.faults [--count 10000] [--broker-kills 2] [--kill-sender] [--json]

Prints ``sent``, ``delivered``, ``lost``, ``duplicates``, ``order_violations`` (counted at the
application, per direction, summed), ``broker_kills``, ``sender_kills`` and ``seconds``. With
``--kill-sender`` the killed peer's own receiving side is reported apart
(``redelivered_after_receiver_kill``): delivery is exactly once across broker and sender
crashes, at least once across a crash of the receiver itself.

Each peer numbers its messages by the sequence number its stream assigns (persisted in the outbox
together with the envelope), so a sender restarted after a kill knows exactly where it was and
"exactly once" can be judged from the payloads alone.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import itertools
import json
import os
import signal
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from broker_bridge.codec import decode_body
from broker_bridge.endpoint import Endpoint
from broker_bridge.envelope import Envelope, Priority
from broker_bridge.prosody import ManagedProsody
from broker_bridge.session import SECOND, SessionConfig
from broker_bridge.xmpp import XmppSettings, XmppTransport
from object_model import PropertyValueUpdate

STREAM = "bench"
PASSWORD = "bench-secret"


# -- one peer (a child process) -------------------------------------------------------------


async def run_peer(name: str, peer: str, count: int, rate: float, outbox: Path,
                   settings: XmppSettings, received_log: Path, done_file: Path,
                   timeout: float) -> int:
    """Send ``count`` envelopes, receive ``count``, then report completion (``done_file``) and
    keep serving (acknowledging late retransmissions of the other side) until told to stop by
    a ``.stop`` file next to it: a peer that left early would strand the other's last acks."""
    config = SessionConfig(retransmit_initial_us=SECOND // 2, retransmit_max_us=2 * SECOND)
    endpoint = Endpoint(XmppTransport.client(settings, name, PASSWORD), config=config,
                        outbox_path=outbox, name=name)
    received = 0
    got_all = asyncio.Event()
    with received_log.open("a", buffering=1) as log:

        def on_envelope(env: Envelope) -> None:
            nonlocal received
            if env.kind != "PropertyValueUpdate":
                return
            log.write(f"{decode_body(env.kind, env.body).epoch}\n")  # type: ignore[attr-defined]
            received += 1
            if received >= count:
                got_all.set()

        await endpoint.start()
        await endpoint.register(name, on_envelope)
        key = (name, peer, STREAM)
        next_seq = endpoint.session.stream_states().get(key, (0, 1))[1]
        started = time.monotonic()
        # an already-received count from a previous life of this process
        received = sum(1 for _ in received_log.open()) if received_log.exists() else 0
        if received >= count:
            got_all.set()
        try:
            async with asyncio.timeout(timeout):
                interval = 1.0 / rate
                while next_seq <= count:
                    endpoint.send(source=name, destination=peer, reliable=True, stream=STREAM,
                                  priority=Priority.STATE,
                                  message=PropertyValueUpdate(epoch=next_seq, from_revision=0,
                                                              to_revision=1))
                    next_seq += 1
                    lag = started + (next_seq - 1) * interval - time.monotonic()
                    if lag > 0:
                        await asyncio.sleep(lag)
                    elif next_seq % 50 == 0:
                        await asyncio.sleep(0)
                await got_all.wait()
                while endpoint.session.pending_count:
                    await asyncio.sleep(0.05)
                done_file.write_text("done")
                stop_file = done_file.with_suffix(".stop")
                while not stop_file.exists():
                    await asyncio.sleep(0.05)
        finally:
            await endpoint.stop(flush_timeout=2)
    return 0


# -- the orchestrator -------------------------------------------------------------------------


@dataclasses.dataclass
class _Peer:
    name: str
    peer: str
    dir: Path
    process: asyncio.subprocess.Process | None = None

    @property
    def received(self) -> Path:
        return self.dir / "received.log"

    @property
    def done(self) -> Path:
        return self.dir / "done"

    @property
    def stop(self) -> Path:
        return self.dir / "done.stop"

    def received_count(self) -> int:
        if not self.received.exists():
            return 0
        with self.received.open("rb") as f:
            return sum(1 for _ in f)


async def _spawn(p: _Peer, count: int, rate: float, settings: XmppSettings,
                 timeout: float) -> None:
    cfg = json.dumps(dataclasses.asdict(settings))
    p.process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "bench.faults", "peer", "--name", p.name, "--peer", p.peer,
        "--count", str(count), "--rate", str(rate), "--outbox", str(p.dir / "outbox.db"),
        "--settings", cfg, "--received", str(p.received), "--done", str(p.done),
        "--timeout", str(timeout),
        stdout=asyncio.subprocess.DEVNULL, stderr=(p.dir / "stderr.log").open("ab"))


def _judge(log: Path, count: int, *, repeats_allowed: bool = False) -> dict[str, int]:
    """Figures for one direction. With ``repeats_allowed`` (a receiver that was itself killed)
    repeats are reported as redeliveries and order is judged on first deliveries."""
    seqs = [int(line) for line in log.read_text().split()] if log.exists() else []
    unique = set(seqs)
    repeats = len(seqs) - len(unique)
    if repeats_allowed:
        seqs = list(dict.fromkeys(seqs))
    return {
        "delivered": len(unique & set(range(1, count + 1))),
        "lost": count - len(unique & set(range(1, count + 1))),
        "order_violations": sum(1 for a, b in itertools.pairwise(seqs) if b <= a),
        "redelivered_after_receiver_kill" if repeats_allowed else "duplicates": repeats,
    }


async def run_faults(count: int = 10_000, broker_kills: int = 2, kill_sender: bool = False,
                     rate: float = 1500.0, state_dir: Path | None = None,
                     timeout: float = 180.0, progress: Any = None) -> dict[str, Any]:
    """Run the scenario; returns the figures (see the module docstring)."""
    say = progress or (lambda _: None)
    with tempfile.TemporaryDirectory() as tmp:
        base = state_dir or Path(tmp)
        peers = [_Peer("peer-a", "peer-b", base / "a"), _Peer("peer-b", "peer-a", base / "b")]
        for p in peers:
            p.dir.mkdir(parents=True, exist_ok=True)
        broker = ManagedProsody(base / "broker")
        await broker.start()
        broker.create_accounts({p.name: PASSWORD for p in peers})
        settings = broker.xmpp_settings()
        started = time.monotonic()
        kills = sender_kills = 0
        try:
            for p in peers:
                await _spawn(p, count, rate, settings, timeout)
            total = 2 * count
            kill_points = [total * (i + 1) // (broker_kills + 1) for i in range(broker_kills)]
            sender_point = total // 2 if kill_sender else None
            async with asyncio.timeout(timeout):
                while not all(p.done.exists() for p in peers):
                    got = sum(p.received_count() for p in peers)
                    if kill_points and got >= kill_points[0]:
                        kill_points.pop(0)
                        say(f"killing the broker (SIGKILL) at {got}/{total} delivered")
                        broker.kill()
                        kills += 1
                        await asyncio.sleep(0.2)  # a moment with no broker at all
                        await broker.restart()
                    if sender_point is not None and got >= sender_point:
                        sender_point = None
                        victim = peers[0]
                        say(f"killing {victim.name} (SIGKILL) at {got}/{total} delivered")
                        assert victim.process is not None
                        victim.process.send_signal(signal.SIGKILL)
                        await victim.process.wait()
                        sender_kills += 1
                        await _spawn(victim, count, rate, settings, timeout)
                    for p in peers:
                        if (p.process is not None and p.process.returncode not in (None, 0)
                                and not p.done.exists()):
                            err = (p.dir / "stderr.log").read_text()[-2000:]
                            raise RuntimeError(f"{p.name} exited with {p.process.returncode}:\n"
                                               f"{err}")
                    await asyncio.sleep(0.05)
                for p in peers:  # both complete: let them go
                    p.stop.write_text("stop")
                for p in peers:
                    assert p.process is not None
                    await p.process.wait()
        finally:
            for p in peers:
                if p.process is not None and p.process.returncode is None:
                    p.process.kill()
                    await p.process.wait()
            await broker.stop()
        seconds = time.monotonic() - started
        figures = {"sent": 2 * count, "delivered": 0, "lost": 0, "duplicates": 0,
                   "order_violations": 0, "redelivered_after_receiver_kill": 0}
        for p in peers:
            # The killed peer also receives: what it delivered in its last milliseconds, before
            # the receipt reached its disk, comes again after the restart (at least once across
            # a receiver crash, by design), so its side is judged apart from the survivor's.
            judged = _judge(p.received, count, repeats_allowed=bool(sender_kills) and p is peers[0])
            for key, value in judged.items():
                figures[key] += value
        return figures | {"broker_kills": kills, "sender_kills": sender_kills,
                          "seconds": round(seconds, 2)}


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["peer"]:
        parser = argparse.ArgumentParser(prog="python -m bench.faults peer")
        for flag in ("--name", "--peer", "--outbox", "--settings", "--received", "--done"):
            parser.add_argument(flag, required=True)
        parser.add_argument("--count", type=int, required=True)
        parser.add_argument("--rate", type=float, default=1500)
        parser.add_argument("--timeout", type=float, default=180)
        args = parser.parse_args(argv[1:])
        raw = json.loads(args.settings)
        raw["routes"] = tuple(tuple(r) for r in raw["routes"])
        raw["extra_domains"] = tuple(raw["extra_domains"])
        return asyncio.run(run_peer(args.name, args.peer, args.count, args.rate,
                                    Path(args.outbox), XmppSettings(**raw), Path(args.received),
                                    Path(args.done), args.timeout))
    parser = argparse.ArgumentParser(prog="python -m bench.faults", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--count", type=int, default=10_000, help="envelopes per direction")
    parser.add_argument("--broker-kills", type=int, default=2)
    parser.add_argument("--kill-sender", action="store_true", help="also SIGKILL one peer")
    parser.add_argument("--rate", type=float, default=1500, help="envelopes/s per direction")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    args = parser.parse_args(argv)
    say = (lambda _: None) if args.json else (lambda m: print(f"  {m}", file=sys.stderr))
    say(f"{args.count} reliable envelopes each way at {args.rate:g}/s; "
        f"{args.broker_kills} broker kill(s){' and a sender kill' if args.kill_sender else ''}")
    figures = asyncio.run(run_faults(args.count, args.broker_kills, args.kill_sender, args.rate,
                                     progress=say))
    if args.json:
        print(json.dumps(figures))
    else:
        for key, value in figures.items():
            print(f"{key:<18}{value:>10}")
    ok = figures["lost"] == figures["duplicates"] == figures["order_violations"] == 0
    return 0 if ok else 1


if __name__ == "__main__":
    with contextlib.suppress(KeyboardInterrupt):
        raise SystemExit(main())
    os._exit(130)
