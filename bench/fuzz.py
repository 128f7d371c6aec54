"""Coverage-guided fuzzing (atheris, libFuzzer) of what hostile bytes reach first.

    python -m bench.fuzz [TARGET ...] [--runs N] [--json]      (csms bench security runs it)

Targets (each in a child process of its own: libFuzzer owns the process it runs in):

* ``decode``: a frame, its envelopes and their bodies, as ``decode_frame``,
  ``decode_envelope`` and ``decode_body`` take them; only ``ModelError`` may escape, and an
  envelope that decodes encodes and decodes again to itself;
* ``session``: a receiving session with a signing guard (a strict receiver that knows one
  signer), fed frames from a client account, a component, a room and an unknown origin; no
  exception may escape ``receive_frame``, the answers it queues must pop as frames, and its
  memory stays within its bounds;
* ``stanza``: the XML element path of our XMPP streams (``_spawn_event``: frames, presences,
  stream-management acks and requests, bounces) into the transport's frame handling and a
  session, from any well-formed XML the broker could relay.

Seeds are valid frames made by our own encoders (every shape: plain, reliable, chunked,
compressed, signed, sealed, batched), since random bytes rarely form a frame. Prints, per
target: inputs run, crashes (0 expected), seconds, and the coverage libFuzzer reached.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

TARGETS = ("decode", "session", "stanza")
NOW = 1_750_000_000_000_000


# -- the child: one target under libFuzzer ---------------------------------------------------


def _seeds() -> list[bytes]:
    """Valid frames of every shape, made by our encoders."""
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    from broker_bridge.codec import encode_body, encode_envelope, encode_frame
    from broker_bridge.envelope import Envelope, Priority
    from broker_bridge.session import Session, SessionConfig
    from broker_bridge.session.signing import SigningGuard, StaticKeys
    from keypath import KeyPath
    from object_model.access import Role
    from object_model.messages import (
        Ack,
        Batch,
        ErrorReport,
        JoinNetworkRequest,
        PropertyValueUpdate,
        PropertyValueWrite,
        WriteItem,
    )

    update = PropertyValueUpdate(epoch=1, from_revision=1, to_revision=2,
                                 upserts=[("evse/1/status", 2, "charging")])
    write = PropertyValueWrite(writes=[WriteItem(path=KeyPath.parse("evse/1/permissions"
                                                                    "/max_power_w"),
                                                 value=11000.0)])
    bodies = [update, write, Ack(message_ids=[bytes(16)]),
              ErrorReport(code="bad_signature", text="x"),
              JoinNetworkRequest(role=Role.STATION, proof=bytes(32)),
              Batch(items=[write, write])]
    key = Ed25519PrivateKey.from_private_bytes(bytes(range(32)))
    guard = SigningGuard({"a": key}, StaticKeys({"a": key.public_key()}))
    seeds = []
    for n, body in enumerate(bodies):
        env = Envelope(id=n.to_bytes(16, "big"), source="a", destination="b",
                       kind=body.kind, body=encode_body(body), priority=Priority.CONTROL,
                       timestamp_us=NOW)
        seeds.append(encode_frame([encode_envelope(env)]))
        seeds.append(encode_frame([encode_envelope(guard.seal(env, NOW))], compress=True))
    config = SessionConfig(seed=1, frame_bytes=10 * 1024,
                           batch_windows_us={p: 0 for p in Priority})
    sender = Session(config, ["a"], guard=guard)
    sender.send(source="a", destination="b", kind="PropertyValueUpdate",
                body=encode_body(update), now=NOW, reliable=True)
    sender.send(source="a", destination="b", kind="PropertyValueWrite",
                body=encode_body(PropertyValueWrite(writes=[
                    WriteItem(path=KeyPath.parse("identity/display_name"), value="x" * 30_000)])),
                now=NOW, reliable=True)  # chunked
    seeds += [frame.data for frame in sender.pop_frames(NOW)]
    return seeds


def _decode_target() -> Any:
    from broker_bridge.codec import decode_body, decode_envelope, decode_frame, encode_envelope
    from object_model.errors import ModelError

    planted = os.environ.get("CSMS_FUZZ_PLANT", "").encode()  # the harness's own test

    def target(data: bytes) -> None:
        if planted and planted in data:
            raise RuntimeError("a planted crash: the harness reports what it finds")
        try:
            items = decode_frame(data)
        except ModelError:
            return
        for item in items:
            try:
                env = decode_envelope(item)
            except ModelError:
                continue
            again = decode_envelope(encode_envelope(env))
            if again != env:
                raise AssertionError(f"an envelope changed through encode and decode: {env}")
            with contextlib.suppress(ModelError):
                decode_body(env.kind, env.body)

    return target


def _receiver() -> Any:
    """A strict receiving session ``b`` that knows signer ``a``, and the origins it hears."""
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    from broker_bridge.session import Session, SessionConfig
    from broker_bridge.session.signing import SigningGuard, StaticKeys
    from broker_bridge.transport import UNKNOWN_ORIGIN, Origin

    key = Ed25519PrivateKey.from_private_bytes(bytes(range(32)))
    guard = SigningGuard({"b": Ed25519PrivateKey.generate()},
                         StaticKeys({"a": key.public_key()}), require_signatures=False)
    config = SessionConfig(seed=1, reassembly_max_bytes=4 * 1024 * 1024,
                           reassembly_max_bytes_per_peer=1024 * 1024)
    session = Session(config, ["b"], guard=guard)
    session.join_group("group:site1")
    origins = [Origin("a", lambda source: source == "a"),
               Origin("host", lambda source: source.startswith("cs-")),
               Origin(None, None, broadcast=True), UNKNOWN_ORIGIN]
    return session, origins


def _session_target() -> Any:
    state: dict[str, Any] = {"runs": 0}

    def target(data: bytes) -> None:
        if state["runs"] % 5000 == 0:  # a fresh receiver now and then: state stays bounded
            state["session"], state["origins"] = _receiver()
        state["runs"] += 1
        session, origins = state["session"], state["origins"]
        origin = origins[data[0] % len(origins)] if data else origins[0]
        now = NOW + state["runs"] * 1000
        session.receive_frame(data[1:], now, origin)
        session.handle_timer(now)
        for frame in session.pop_frames(now):
            if not frame.data:
                raise AssertionError("an empty frame queued")
        session.drain_events()
        if session.reassembling_bytes > session.config.reassembly_max_bytes:
            raise AssertionError("reassembly grew past its bound")

    return target


def _stanza_target() -> Any:
    import xml.etree.ElementTree as ET

    from broker_bridge.xmpp.stream import ClientStream

    session, _ = _receiver()
    stream = ClientStream("b@site1", "x", tls=True, window=8, on_resume=lambda: None,
                          presence=lambda sender, kind: None,
                          sink=lambda sender, recipient, kind, text: _into(session, sender,
                                                                           kind, text))
    stream.send_raw = lambda data: None  # type: ignore[method-assign]  # no connection

    def target(data: bytes) -> None:
        try:
            element = ET.fromstring(data)
        except (ET.ParseError, ValueError):
            return  # expat's domain, not ours: the broker sends well-formed XML
        if not stream.take(element):
            return  # slixmpp's (roster, iq, errors of its own): not fuzzed here
        session.pop_frames(NOW)
        session.drain_events()

    return target


def _into(session: Any, sender: str, kind: str, text: str | None) -> None:
    import base64

    from broker_bridge.transport import Origin

    try:
        data = base64.b64decode(text or "", validate=True)
    except ValueError:
        data = (text or "").encode("utf-8", "replace")
    origin = Origin(None, None, broadcast=True) if kind == "groupchat" else Origin(
        sender, lambda source: source == sender.partition("@")[0])
    session.receive_frame(data, NOW, origin)


def child(target_name: str, libfuzzer_args: list[str]) -> None:
    import atheris

    with atheris.instrument_imports(include=["broker_bridge", "object_model", "keypath"]):
        import broker_bridge.codec
        import broker_bridge.session
        import broker_bridge.session.signing
        import broker_bridge.xmpp.stream  # noqa: F401
        import object_model.messages  # noqa: F401
    target = {"decode": _decode_target, "session": _session_target,
              "stanza": _stanza_target}[target_name]()
    atheris.Setup([sys.argv[0], *libfuzzer_args], target)
    atheris.Fuzz()


# -- the parent: corpus, runs, figures ---------------------------------------------------------

_DONE = re.compile(r"Done (\d+) runs in (\d+) second")
_COVERAGE = re.compile(r"cov: (\d+) ft: (\d+)")


def run_target(name: str, runs: int, workdir: Path) -> dict[str, Any]:
    """One target for ``runs`` inputs; its figures."""
    corpus = workdir / f"corpus-{name}"
    corpus.mkdir(parents=True, exist_ok=True)
    if name == "stanza":
        import base64

        seeds = [f"<message xmlns='jabber:client' from='a@site1' to='b@site1'><f xmlns="
                 f"'urn:csms63110:frame:1'>{base64.b64encode(s).decode()}</f></message>".encode()
                 for s in _seeds()]
        seeds += [b"<a xmlns='urn:xmpp:sm:3' h='7'/>", b"<r xmlns='urn:xmpp:sm:3'/>",
                  b"<presence xmlns='jabber:client' from='a@site1' type='unavailable'/>"]
    elif name == "session":
        seeds = [bytes([k]) + s for s in _seeds() for k in range(4)]
    else:
        seeds = _seeds()
    if os.environ.get("CSMS_FUZZ_PLANT"):
        seeds.append(os.environ["CSMS_FUZZ_PLANT"].encode())
    for n, seed in enumerate(seeds):
        (corpus / f"seed-{n}").write_bytes(seed)
    began = time.monotonic()
    done = subprocess.run(
        [sys.executable, "-m", "bench.fuzz", "--child", name, f"-runs={runs}",
         f"-artifact_prefix={workdir}/crash-{name}-", "-max_len=65536", "-rss_limit_mb=2048",
         str(corpus)], capture_output=True, text=True, env=dict(os.environ, PYTHONHASHSEED="0"))
    seconds = time.monotonic() - began
    log = done.stdout + done.stderr  # atheris prints the Python exception on stdout
    ran = _DONE.findall(log)
    coverage = _COVERAGE.findall(log)
    crashed = done.returncode != 0
    return {"target": name, "inputs": int(ran[-1][0]) if ran else 0,
            "crashes": int(crashed), "seconds": round(seconds, 1),
            "coverage": int(coverage[-1][0]) if coverage else 0,
            "features": int(coverage[-1][1]) if coverage else 0,
            "failure": _failure(log) if crashed else None}


def _failure(log: str) -> str:
    """What a crashed run found: the Python exception and the input (libFuzzer prints it
    in base64 last)."""
    start = log.find("Uncaught Python exception")
    found = log[start:start + 2500] if start >= 0 else ""
    return (found + "\n...\n" + log[-400:]).strip()


def fuzz(targets: list[str], runs: int, say: Any = lambda message: None) -> dict[str, Any]:
    results = []
    with tempfile.TemporaryDirectory(prefix="csms-fuzz-") as tmp:
        for name in targets:
            say(f"fuzzing {name} for {runs:,} inputs")
            results.append(run_target(name, runs, Path(tmp)))
    return {"fuzz_inputs": sum(r["inputs"] for r in results),
            "fuzz_crashes": sum(r["crashes"] for r in results),
            "fuzz_seconds": round(sum(r["seconds"] for r in results), 1),
            "fuzz_targets": results}


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["--child"]:
        child(argv[1], argv[2:])
        return 0
    parser = argparse.ArgumentParser(prog="python -m bench.fuzz", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("targets", nargs="*", metavar="TARGET",
                        help=f"of {', '.join(TARGETS)} (default: all)")
    parser.add_argument("--runs", type=int, default=400_000, help="inputs per target")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    unknown = sorted(set(args.targets) - set(TARGETS))
    if unknown:
        parser.error(f"unknown target {', '.join(unknown)}: choose from {', '.join(TARGETS)}")
    result = fuzz(args.targets or list(TARGETS), args.runs,
                  lambda message: print(f"  {message}...", file=sys.stderr, flush=True))
    if args.json:
        print(json.dumps(result))
    else:
        for r in result["fuzz_targets"]:
            print(f"{r['target']:<10}{r['inputs']:>12,} inputs {r['crashes']:>3} crashes "
                  f"{r['seconds']:>8} s  coverage {r['coverage']:,}")
            if r["failure"]:
                print(r["failure"])
    return 1 if result["fuzz_crashes"] else 0


if __name__ == "__main__":
    raise SystemExit(main())
