"""Attacks on a running site, each judged from outside: did the victim refuse it, answer the
connection it came from with the expected code (or keep silent where an answer would help the
attacker), log it, count it in a metric, change nothing, and keep every honest connection?

    python -m bench.attacks [--json]          (csms bench security runs them too)

The range: a site on a managed Prosody with TLS (its local CSMS, three stations on one
component host), everything signing, certificates from the operator's root, stations enrolled
with one-time tokens; the stations hold still, so any change of their trees or the CSMS's
policy is the attack's doing. The attackers: ``mallory``, a rogue account on the site's broker
with no certificate; a broker that replays what the operator sent (the operator's account,
re-sending captured bytes); a compromised station (one of the host's stations, or the host
itself speaking for another site's domain); a thief holding a station's enrollment token.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import msgpack
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from actors.app.hierarchy import Hierarchy
from actors.app.wiring import xmpp_settings
from actors.runtime.services.enrollment import Credentials
from actors.testing import until
from broker_bridge.codec import (
    decode_body,
    decode_envelope,
    decode_frame,
    encode_body,
    encode_envelope,
    encode_frame,
)
from broker_bridge.envelope import ChunkInfo, Envelope, Priority
from broker_bridge.ids import MessageIds
from broker_bridge.session.certificates import CertificateDirectory
from broker_bridge.session.signing import SigningGuard
from broker_bridge.xmpp import XmppTransport
from keypath import KeyPath
from object_model import ErrorCode, ModelError
from object_model.access import Role
from object_model.messages import (
    Ack,
    JoinNetworkRequest,
    PropertyValueRead,
    PropertyValueWrite,
    WriteItem,
)

SILENCE = "silence"
LOCAL = "local-site1"


@dataclass
class Outcome:
    """One attack, as the victim and the attacker's connection saw it."""

    attack: str
    expected: str  # an ErrorCode value answered to the attacker's connection, or "silence"
    answered: list[str] = field(default_factory=list)
    refused: bool = False
    state_changed: bool = False
    connections_dropped: int = 0
    logged: bool = False
    counted: bool = False
    log: list[str] = field(default_factory=list)  # what the victim logged (the first lines)

    @property
    def held(self) -> bool:
        """Refused as expected, with a log line and a metric, nothing changed or dropped."""
        return (self.refused and not self.state_changed and not self.connections_dropped
                and self.logged and self.counted)


@dataclass
class Case:
    """One attack: what it does (``run``), what the attacker's connection (``answers_to``,
    mallory's by default) should get back, and what the victim's log should say."""

    name: str
    expected: str
    run: Callable[[], Awaitable[Any]]
    log: str
    answers_to: RawLink | None = None


class _Log(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.INFO)
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(record.getMessage())


class RawLink:
    """A connection that sends what it is given, and keeps what reaches it; ``tap``: one an
    endpoint of ours also uses (it still gets every frame)."""

    def __init__(self, transport: XmppTransport, *, tap: bool = False) -> None:
        self.transport = transport
        self.received: list[Envelope] = []
        passed_on = transport.on_frame if tap else None

        def frame(origin: Any, data: bytes) -> None:
            self._frame(data)
            if passed_on is not None:
                passed_on(origin, data)

        transport.on_frame = frame
        if not tap:
            transport.on_link = lambda up: None
            transport.on_writable = lambda: None

    def _frame(self, data: bytes) -> None:
        try:
            items = decode_frame(data)
        except ModelError:
            return
        for item in items:
            try:
                self.received.append(decode_envelope(item))
            except ModelError:
                continue

    def send(self, destination: str, *envelopes: Envelope | bytes) -> None:
        items = [e if isinstance(e, bytes) else encode_envelope(e) for e in envelopes]
        self.transport.send_frame(destination, encode_frame(items))

    def reports(self, since: int) -> list[str]:
        codes = []
        for env in self.received[since:]:
            if env.kind == "ErrorReport":
                try:
                    codes.append(decode_body(env.kind, env.body).code.value)  # type: ignore[attr-defined]
                except ModelError:
                    codes.append("undecodable")
        return codes


class Range:
    """The site under attack (see the module docstring)."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.ids = MessageIds()
        self.log = _Log()
        self.outcomes: list[Outcome] = []

    async def open(self) -> Range:
        h = self.h = await Hierarchy.start(self.root, signing=True, certificates=True)
        try:
            await h.start_site(1, 3, cloud=False)
            await until(lambda: all(s.admitted for s in h.stations()), "stations enrolled", 60)
            h.pause()
            broker = h.site_broker(1)
            broker.create_accounts({"mallory": "mallory-password"})
            settings = xmpp_settings(h.site_config(1))
            self.mallory = await self._raw(XmppTransport.client(
                settings, "mallory", "mallory-password", name="mallory"))
            self.replayer = await self._raw(XmppTransport.client(
                settings, "operator", h.passwords["operator"], name="replayer"))
            assert h.signing is not None
            self.operator = h.signing.guard(["operator"])
            logging.getLogger().addHandler(self.log)
            logging.getLogger().setLevel(logging.INFO)
        except BaseException:
            await h.close()
            raise
        return self

    async def _raw(self, transport: XmppTransport) -> RawLink:
        link = RawLink(transport)
        await transport.start()
        return link

    async def close(self) -> None:
        logging.getLogger().removeHandler(self.log)
        for link in (self.mallory, self.replayer):
            await link.transport.stop()
        await self.h.close()

    # -- looking at the victim ---------------------------------------------------------------

    @property
    def local(self) -> Any:
        return self.h.site(1).local_csms

    def state(self) -> bytes:
        """What no attack may change: every station's tree, the CSMS's policy and
        registry, and the certificates it issued."""
        parts: list[Any] = [s.tree.digest() for s in self.h.stations() if s.tree is not None]
        parts.append(self.local.own.tree.read("policy"))
        parts.append(sorted(self.local.copies.replicas))
        enroller = self.local.enroller
        parts.append(None if enroller is None else (enroller.enrolled, enroller.renewed))
        return msgpack.packb(parts, default=str)

    def _counters(self) -> int:
        total = 0
        for endpoint in (self.local.endpoint, *(h.endpoint for h in self.h.site(1).hosts)):
            c = endpoint.session.counters
            total += c.rejected + c.refused_by_guard + c.forged
        total += self.local.own.counters["rejected_joins"]
        return total

    def _reconnects(self) -> int:
        endpoints = [self.local.endpoint, *(h.endpoint for h in self.h.site(1).hosts)]
        return sum(getattr(e.transport, "reconnects", 0) for e in endpoints)

    # -- one attack --------------------------------------------------------------------------

    async def quiet(self) -> None:
        """Wait until the site holds still (the last updates of the paused stations
        arrived): what changes after this, an attack changed."""
        last, since = self.state(), time.monotonic()
        while time.monotonic() - since < 1.0:
            await asyncio.sleep(0.1)
            now = self.state()
            if now != last:
                last, since = now, time.monotonic()

    async def attack(self, case: Case) -> Outcome:
        """Run ``case`` and judge it (see ``Outcome``)."""
        name, expected, answers_to = case.name, case.expected, case.answers_to
        answers_to = answers_to or self.mallory
        await self.quiet()
        state, counted, dropped = self.state(), self._counters(), self._reconnects()
        logged, seen = len(self.log.lines), len(answers_to.received)
        outcome = Outcome(name, expected)
        look = lambda: answers_to.reports(seen)  # noqa: E731
        try:
            await case.run()
        except ModelError as exc:  # an actor's own request answered with a refusal
            outcome.answered.append(exc.code.value)
        await until(lambda: self._counters() > counted, f"{name}: the victim's counters", 20)
        if expected != SILENCE:
            await until(lambda: expected in (outcome.answered + look()),
                        f"{name}: the answer {expected}", 20)
        else:  # give an answer time to come, if one were sent
            await asyncio.sleep(0.3)
        if not outcome.answered:
            outcome.answered = look()
        outcome.counted = self._counters() > counted
        outcome.refused = outcome.counted and (
            expected in outcome.answered if expected != SILENCE else not outcome.answered)
        outcome.state_changed = self.state() != state
        outcome.connections_dropped = self._reconnects() - dropped
        new_lines = self.log.lines[logged:]
        matching = [line for line in new_lines if case.log in line]
        outcome.log = [line[:200] for line in (matching or new_lines)[:2]]
        outcome.logged = bool(matching)
        self.outcomes.append(outcome)
        return outcome

    def envelope(self, kind: str, message: Any, *, source: str, destination: str = LOCAL,
                 stamp: int | None = None, **fields: Any) -> Envelope:
        return Envelope(id=self.ids.new(time.time_ns() // 1000), source=source, destination=destination,
                        kind=kind, body=encode_body(message), priority=Priority.CONTROL,
                        timestamp_us=stamp if stamp is not None else time.time_ns() // 1000,
                        **fields)


READ = PropertyValueRead(paths=[KeyPath.parse("policy/max_power_w")])
WRITE = PropertyValueWrite(writes=[WriteItem(path=KeyPath.parse("policy/max_power_w"),
                                             value=1.0)])


async def run_all(r: Range, say: Callable[[str], None] = lambda message: None
                  ) -> list[Outcome]:
    """Every attack of the catalogue against ``r``, in order."""
    now = lambda: time.time_ns() // 1000  # noqa: E731
    mallory, replayer = r.mallory, r.replayer

    host = r.h.site(1).hosts[0].endpoint
    assert isinstance(host.transport, XmppTransport) and r.h.signing is not None
    inside = RawLink(host.transport, tap=True)  # what reaches the station host
    compromised = SigningGuard({"cs-site1-1": r.h.signing.store.key("cs-site1-1")},
                               r.h.signing.directory)

    async def garbage() -> None:
        mallory.send(LOCAL, os.urandom(300))

    async def type_confused() -> None:
        fields = [1, r.ids.new(now()), ["a", "list"], LOCAL, 1, now(), 1, b""]
        mallory.transport.send_frame(LOCAL, encode_frame([msgpack.packb(fields)]))

    async def oversized() -> None:
        mallory.send(LOCAL, r.envelope("PropertyValueWrite", WRITE, source="mallory",
                                       chunk=ChunkInfo(0, 4096, 4096 * 60_000)))

    async def forged_source() -> None:
        mallory.send(LOCAL, r.envelope("PropertyValueWrite", WRITE, source="cs-site1-1"))

    async def rogue_key() -> None:
        rogue = SigningGuard({"mallory": Ed25519PrivateKey.generate()},
                             CertificateDirectory([]))
        mallory.send(LOCAL, rogue.seal(r.envelope("PropertyValueRead", READ,
                                                  source="mallory"), now()))

    async def downgrade() -> None:
        replayer.send(LOCAL, r.envelope("PropertyValueRead", READ, source="operator"))

    captured = r.operator.seal(r.envelope("PropertyValueRead", READ,
                                          source="operator"), now())

    async def replay() -> None:
        replayer.send(LOCAL, captured)  # the genuine one: answered
        await until(lambda: any(e.correlation == captured.id for e in replayer.received),
                    "the genuine read's answer", 20)
        replayer.send(LOCAL, captured)  # the broker's replay

    async def stale() -> None:
        old = r.envelope("PropertyValueRead", READ, source="operator",
                         stamp=now() - 600_000_000)
        replayer.send(LOCAL, r.operator.seal(old, now()))

    async def forged_ack() -> None:  # a compromised station settles what went elsewhere
        pending = r.local.endpoint.session.send(
            source=LOCAL, destination="cs-site1-3", kind="PropertyValueRead",
            body=encode_body(READ), now=now(), reliable=True)
        inside.send(LOCAL, compromised.seal(r.envelope("Ack", Ack(message_ids=[pending.id]),
                                                       source="cs-site1-1"), now()))

    async def flood() -> None:
        kid_owner = r.operator.seal(r.envelope("PropertyValueRead", READ,
                                               source="operator"), now())
        bad = [encode_envelope(kid_owner._replace(id=r.ids.new(now()), signature=(
            kid_owner.signature or b"")[:8] + os.urandom(64))) for _ in range(2000)]
        for first in range(0, len(bad), 200):
            replayer.transport.send_frame(LOCAL, encode_frame(bad[first:first + 200]))

    async def chunk_streams() -> None:  # a compromised station opens partial after partial
        for _ in range(120):
            inside.send(LOCAL, compromised.seal_chunk(r.envelope(
                "PropertyValueWrite", WRITE, source="cs-site1-1",
                chunk=ChunkInfo(0, 64, 64 * 65_000))))

    async def rogue_chunks() -> None:  # never reach a reassembly: checked one by one first
        for _ in range(120):
            mallory.send(LOCAL, r.envelope("PropertyValueWrite", WRITE, source="mallory",
                                           chunk=ChunkInfo(0, 64, 64 * 65_000)))

    station = next(s for s in r.h.stations() if s.address == "cs-site1-1")

    async def outside_subtree() -> None:
        await station.request(LOCAL, WRITE, timeout=10)

    async def other_domain() -> None:
        inside.send(LOCAL, r.envelope("PropertyValueRead", READ, source="cs-site2-1"))

    assert r.local.enroller is not None
    token = await r.local.enroller.book.add_token("cs-site1-9")
    assert r.h.signing is not None and r.h.commissioning is not None

    def thief(folder: str) -> tuple[Credentials, SigningGuard]:
        key = Ed25519PrivateKey.generate()
        directory = CertificateDirectory([r.h.signing.anchor])  # type: ignore[union-attr, list-item]
        credentials = Credentials("cs-site1-9", key, None, directory, r.root / folder)
        credentials.token_path.parent.mkdir(parents=True, exist_ok=True)
        credentials.token_path.write_text(token)
        return credentials, SigningGuard({"cs-site1-9": key}, r.h.signing.directory,  # type: ignore[union-attr]
                                         encrypt_kinds=frozenset({"JoinNetworkRequest"}))

    async def join_with(folder: str) -> None:
        credentials, guard = thief(folder)
        join = JoinNetworkRequest(role=Role.STATION, **credentials.join_fields(LOCAL))  # type: ignore[arg-type]
        inside.send(LOCAL, guard.seal(r.envelope("JoinNetworkRequest", join,
                                                 source="cs-site1-9"), now()))

    # a thief enrolls first with a stolen token (it works once: that is not refused)...
    await join_with("thief")
    await until(lambda: r.local.enroller.enrolled >= 4, "the thief's enrollment", 20)

    async def reused_token() -> None:  # ...and the owner's own use of it is refused
        await join_with("genuine")

    # the operator revokes cs-site1-2 (the list reaches the site and its stations)...
    r.local.own.tree.write("security/revocations",
                           r.h.commissioning.revocation_list(1, ["cs-site1-2"]))
    await until(lambda: all(s.tree is not None
                            and s.tree.get("security/revocation_number") == 1
                            for s in r.h.stations()), "the stations took the list", 20)

    async def revoked() -> None:  # ...which then speaks up
        victim = next(s for s in r.h.stations() if s.address == "cs-site1-2")
        victim.send(LOCAL, READ)

    catalogue = [
        Case("garbage frame", ErrorCode.MALFORMED_MESSAGE.value, garbage, "malformed_message"),
        Case("type-confused envelope", ErrorCode.MALFORMED_MESSAGE.value, type_confused,
             "invalid source address"),
        Case("oversized message", ErrorCode.MESSAGE_TOO_LARGE.value, oversized,
             "message_too_large"),
        Case("forged source", ErrorCode.ACCESS_DENIED.value, forged_source,
             "may not send as it"),
        Case("rogue account, unknown key", SILENCE, rogue_key, "nobody vouched for"),
        Case("downgrade to unsigned", SILENCE, downgrade,
             "an unsigned envelope claiming 'operator'", replayer),
        Case("replay at once", SILENCE, replay, "was seen before", replayer),
        Case("replay of an old envelope", ErrorCode.STALE.value, stale, "stale: timestamped",
             replayer),
        Case("forged ack", SILENCE, forged_ack, "envelope(s) sent to another actor", inside),
        Case("flood of signatures to verify", SILENCE, flood, "does not verify", replayer),
        Case("many chunk streams", ErrorCode.REASSEMBLY_OVERFLOW.value, chunk_streams,
             "reassembly_overflow", inside),
        Case("unsigned chunks from a rogue account", SILENCE, rogue_chunks,
             "an unsigned chunk claiming 'mallory'"),
        Case("station writing outside its subtree", ErrorCode.ACCESS_DENIED.value,
             outside_subtree, "may not write policy"),
        # refused, logged, counted; unanswered: the host's connection has no address of its
        # own that an answer could reach
        Case("component speaking for another domain", SILENCE, other_domain,
             "'cs-site2-1' came from a connection that may not send as it", inside),
        # the owner's join with the spent token: its address is the thief's now, so its new
        # key is refused before the enrollment looks at the token (the log says why)
        Case("reused enrollment token", SILENCE, reused_token, "holds a valid key", inside),
        Case("revoked certificate", SILENCE, revoked, "is revoked", inside),
    ]
    for case in catalogue:
        say(case.name)
        await r.attack(case)
    return r.outcomes


def figures(outcomes: list[Outcome]) -> dict[str, Any]:
    return {"attacks": len(outcomes), "refused": sum(o.refused for o in outcomes),
            "state_changed": sum(o.state_changed for o in outcomes),
            "connections_dropped": sum(o.connections_dropped for o in outcomes),
            "attacks_held": sum(o.held for o in outcomes),
            "attack_cases": [asdict(o) | {"held": o.held} for o in outcomes]}


async def measure(say: Callable[[str], None] = lambda message: None) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="csms-attacks-") as tmp:
        r = await Range(Path(tmp)).open()
        try:
            return figures(await run_all(r, say))
        finally:
            await r.close()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.attacks", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    result = asyncio.run(measure(lambda m: print(f"  attacking: {m}...", file=sys.stderr,
                                                 flush=True)))
    if args.json:
        print(json.dumps(result))
    else:
        for case in result["attack_cases"]:
            print(f"{'held' if case['held'] else 'FAILED':<8}{case['attack']:<42}"
                  f"expected {case['expected']:<22} answered "
                  f"{','.join(sorted(set(case['answered']))) or '-'}")
            for line in case["log"][:1]:
                print(f"        log: {line}")
        print({k: v for k, v in result.items() if k != "attack_cases"})
    return 0 if result["attacks_held"] == result["attacks"] else 1


if __name__ == "__main__":
    raise SystemExit(main())
