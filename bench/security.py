"""What end-to-end signing costs: the signature itself, and a session pair's throughput with
and without it.

    python -m bench.security [--json] [--quick]      (also: csms bench security)

* ``sign_us``, ``verify_us``: one Ed25519 signature of an envelope as the guard makes and
  checks it (the envelope encoded without its signature, under the context string), median of
  the batches timed;
* ``verified_envelopes_per_s_per_core``: envelopes one core verifies in a second;
* ``session_envelopes_per_s_<mode>`` and ``transport_throughput_<mode>_over_unsigned``: two
  sans-IO sessions on one core (no broker, no sockets), a sender's queue of unreliable state
  envelopes, batched into frames as a session batches them (500 at a time, up to 512 per
  frame), handed to the receiver: ``unsigned`` (no guard), ``signed``
  (a ``SigningGuard`` at both ends, a signature per envelope), ``frame_signed`` (one per frame
  of up to 512 envelopes, each still proven by its bytes) and ``encrypted`` (writes sealed to
  the receiver with HPKE, each signed). This is the upper bound a link can carry on one core,
  before the broker and the XML stream take their share (``csms bench transport``).

* ``fuzz_inputs``, ``fuzz_crashes``, ``fuzz_seconds``, ``fuzz_by_target``: coverage-guided
  fuzzing of the decoders, a receiving session and the stanza path (``bench.fuzz``), 400,000
  inputs per target (20,000 with ``--quick``); a crash prints what it found.

* ``attacks``, ``refused``, ``state_changed``, ``connections_dropped``, ``attacks_held``,
  ``attacks_failed``: the attack catalogue of ``bench.attacks`` against a running site (real
  TLS broker, signing, certificates): each refused with its expected answer (or silence), a
  log line and a metric, nothing changed, no honest connection lost.

* ``resync_seconds_signed_over_unsigned`` (and ``..._digest_descent``): ``bench.resync`` for
  1,000 stations (40 with ``--quick``), the cloud SIGKILLed and restarted, once unsigned and
  once with everything signed, encrypted where it matters and enrolled with certificates:
  the catch-up's seconds, signed over unsigned.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import tempfile
import time
from typing import Any

from actors.app.signing import Signing
from bench import attacks, fuzz, resync
from broker_bridge.codec import encode_body
from broker_bridge.envelope import Envelope, Priority
from broker_bridge.session import Session, SessionConfig
from broker_bridge.session.signing import SigningGuard
from object_model import PropertyValueUpdate

BODY = encode_body(PropertyValueUpdate(epoch=1, from_revision=41, to_revision=42,
                                       upserts=[("evse/1/meter/obis:1-0:1.8.0", 42, 123456.5)]))
NOW = 1_700_000_000_000_000
FUZZ_RUNS = 400_000  # per target: three targets, 1.2 million inputs a run
FUZZ_QUICK = 20_000
RESYNC_STATIONS = 1000
RESYNC_QUICK = 40


def _guards(*, frames: bool = False) -> tuple[SigningGuard, SigningGuard]:
    """The guards of "a" and "b", made as a process of the demo makes them (one directory,
    keys on disk, unsigned envelopes refused); ``frames``: state traffic signed per frame."""
    with tempfile.TemporaryDirectory() as keys:
        signing = Signing(keys, require=True)
        a, b = signing.guard(["a"]), signing.guard(["b"])
    a.frame_signing = b.frame_signing = frames
    return a, b


def _envelope(n: int) -> Envelope:
    return Envelope(id=n.to_bytes(16, "big"), source="a", destination="b",
                    kind="PropertyValueUpdate", body=BODY, priority=Priority.CRITICAL,
                    timestamp_us=NOW)


def crypto(batches: int, size: int) -> dict[str, float]:
    sender, receiver = _guards()
    sign, verify = [], []
    for b in range(batches):
        envelopes = [_envelope(b * size + i) for i in range(size)]
        began = time.perf_counter()
        sealed = [sender.seal(env, NOW) for env in envelopes]
        sign.append((time.perf_counter() - began) / size * 1e6)
        began = time.perf_counter()
        for env in sealed:
            receiver.open(env, NOW)
        verify.append((time.perf_counter() - began) / size * 1e6)
    verify_us = statistics.median(verify)
    return {"sign_us": round(statistics.median(sign), 1), "verify_us": round(verify_us, 1),
            "verified_envelopes_per_s_per_core": int(1e6 / verify_us)}


MODES = ("unsigned", "signed", "frame_signed", "encrypted")
"""How a session pair carries the bench's envelopes: no guard; a signature per envelope;
one per frame; bodies encrypted to the receiver (and signed, one by one)."""


def session_rate(count: int, mode: str) -> float:
    """Envelopes per second through a sender's and a receiver's session on one core."""
    guard_a, guard_b = (None, None) if mode == "unsigned" else _guards(
        frames=mode == "frame_signed")
    kind = "PropertyValueWrite" if mode == "encrypted" else "PropertyValueUpdate"
    config = SessionConfig(seed=1)  # state envelopes share frames (a 3 ms window)
    a, b = Session(config, ["a"], guard=guard_a), Session(config, ["b"], guard=guard_b)
    began, now, delivered = time.perf_counter(), NOW, 0
    for first in range(0, count, 500):
        for _ in range(first, min(count, first + 500)):
            a.send(source="a", destination="b", kind=kind, body=BODY, now=now,
                   priority=Priority.STATE)
        now += 5_000  # past the window: the batch leaves
        for frame in a.pop_frames(now):
            b.receive_frame(frame.data, now)
        delivered += sum(1 for _ in b.drain_events())
        a.drain_events()
    elapsed = time.perf_counter() - began
    assert delivered >= count, (mode, delivered, count)
    return count / elapsed


def resync_cost(stations: int, say: Any) -> dict[str, Any]:
    """``bench.resync`` unsigned and signed (the cloud killed and restarted, same epoch and
    new epochs): what signing costs a catch-up."""
    out: dict[str, Any] = {"resync_stations": stations}
    figures = {}
    for signed in (False, True):
        say(f"resynchronisation of {stations} stations, {'signed' if signed else 'unsigned'}")
        figures[signed] = asyncio.run(resync.run_resync(stations, sites=max(1, stations // 250),
                                                        signed=signed))
        if not (figures[signed]["consistent"] and figures[signed]["consistent_digest_descent"]):
            raise RuntimeError(f"the {'signed' if signed else 'unsigned'} resync did not "
                               "reach consistency")
    for key in ("seconds", "seconds_digest_descent"):
        unsigned, signed_s = figures[False][key], figures[True][key]
        out[f"resync_{key}_unsigned"], out[f"resync_{key}_signed"] = unsigned, signed_s
        out[f"resync_{key}_signed_over_unsigned"] = round(signed_s / unsigned, 2)
    return out


def measure(quick: bool, say: Any) -> dict[str, Any]:
    say("Ed25519 sign and verify")
    out: dict[str, Any] = crypto(3 if quick else 9, 200 if quick else 1000)
    count = 5_000 if quick else 30_000
    rates: dict[str, list[float]] = {mode: [] for mode in MODES}
    runs = 1 if quick else 3
    for run in range(runs):
        say(f"session throughput, run {run + 1}")
        for mode in MODES:  # every mode in each run: the ratios of one run
            rates[mode].append(session_rate(count, mode))
    for mode in MODES:
        out[f"session_envelopes_per_s_{mode}"] = int(statistics.median(rates[mode]))
    for mode in MODES[1:]:
        ratios = [m / u for m, u in zip(rates[mode], rates["unsigned"], strict=True)]
        out[f"transport_throughput_{mode}_over_unsigned"] = round(statistics.median(ratios), 3)
    out["runs"] = runs
    say("the attacks on a running site")
    attacked = asyncio.run(attacks.measure(lambda name: say(f"attack: {name}")))
    out |= {k: v for k, v in attacked.items() if k != "attack_cases"}
    out["attacks_failed"] = [c["attack"] for c in attacked["attack_cases"] if not c["held"]]
    out |= resync_cost(RESYNC_QUICK if quick else RESYNC_STATIONS, say)
    fuzzed = fuzz.fuzz(list(fuzz.TARGETS), FUZZ_QUICK if quick else FUZZ_RUNS, say)
    out |= {k: v for k, v in fuzzed.items() if k != "fuzz_targets"}
    out["fuzz_by_target"] = {t["target"]: {"inputs": t["inputs"], "crashes": t["crashes"],
                                           "coverage": t["coverage"]}
                             for t in fuzzed["fuzz_targets"]}
    failures = [t["failure"] for t in fuzzed["fuzz_targets"] if t["failure"]]
    if failures:
        print("\n\n".join(failures), file=sys.stderr)
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="csms bench security", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.add_argument("--quick", action="store_true", help="fewer and shorter runs")
    args = parser.parse_args(argv)

    def say(message: str) -> None:
        print(f"  measuring {message}...", file=sys.stderr, flush=True)

    result = measure(args.quick, say)
    if args.json:
        print(json.dumps(result))
    else:
        print("\n".join(f"{key:<44}{value:>12,}" if isinstance(value, (int, float))
                        else f"{key:<44}{value}" for key, value in result.items()))
    return 1 if result["fuzz_crashes"] or result["attacks_failed"] else 0


if __name__ == "__main__":
    raise SystemExit(main())
