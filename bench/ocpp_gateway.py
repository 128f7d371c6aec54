"""The OCPP 2.0.1 gateway under load (issue 15): hundreds of real OCPP-J chargers on one
gateway process, booting, charging, taking envelopes as charging profiles, and a gateway
killed with SIGKILL in the middle of it.

    python -m bench.ocpp_gateway [--chargers 500] [--soak-s 60] [--json] [--quick]
                                                         (also: csms bench ocpp_gateway)

*Deployment*: this process runs the brokers (the cloud's and the site's, managed Prosody), the
cloud and the site's local CSMS, and the chargers: ``ocpp`` package ``ChargePoint`` clients
over ``websockets`` with a behaviour of ours (each EVSE charges, sends a TransactionEvent
every ``--event-s``, answers SetChargingProfile Accepted, and keeps the truth of its energy).
The gateway (``csms gateway --config``) is a process of its own, measured from outside.

*Figures.* ``booted`` of ``chargers`` (ramped over ``--ramp-s``), ``boot_p99_ms`` (connect to
BootNotification answered); ``cached_at_local`` (copies synchronised at the local CSMS) and
``cached_at_cloud``; ``events_per_s`` in the soak, ``gateway_cpu_share`` (of one core) and
``gateway_rss_mb`` over it. The site's resource manager gives a fuse of 1.2 times what the
EVSEs draw, and the local CSMS allocates it (every EVSE an envelope, a charging profile);
then a power cut at the resource manager halves the site's limit: ``profile_p99_ms`` and
``profile_max_ms`` from the resource manager's write to each EVSE's charger answering its
new profile, ``max_confirmed_over_site_w`` the most the sum of the limits the chargers
confirmed ever stood above the site's limit after a raise, or at the end (0: lowered
first, raised after, and within it); ``transactions``, ``energy_mismatch_wh`` (records against what the
chargers delivered), ``duplicates`` and ``lost``; ``reconnect_all_s`` (the gateway SIGKILLed
and started again until every charger is back online at the local CSMS; the gateway admits
50 a second after a burst of 100, and ``reconnects_deferred`` counts the 503s it answered);
``cloud_caught_up_s`` until the cloud's copies equal the stations' trees again, and
``cloud_resyncs_by_mode`` how (``changes``: by ``changes_since``; none: the updates the local
CSMS relayed sufficed).

Needs Prosody (``make setup``). Not pass/fail: the exit status is 0 when the run completed.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import inspect
import json
import os
import random
import signal
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import websockets
from ocpp.routing import on
from ocpp.v201 import ChargePoint, call, call_result
from websockets.exceptions import InvalidStatus

from actors.app.config import ChargerEntry, Config, GatewayConfig, write_config
from actors.app.hierarchy import Hierarchy, die_with_parent, gateway_domain
from bench.procfs import cpu_seconds, rss_bytes
from keypath import KeyPath
from object_model.messages import PropertyValueWrite, WriteItem

US = 1_000_000
EVSE_W = 11_000.0


def stamp(us: int) -> str:
    return datetime.fromtimestamp(us / US, tz=UTC).isoformat(
        timespec="milliseconds").replace("+00:00", "Z")


def p99(values: list[float]) -> float:
    if not values:
        return 0.0
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(0.99 * len(ordered)))]


class Ledger:
    """The limits the chargers confirmed, summed at every confirmation (the bench sees every
    charger's answers, so the sum is exact at each moment). After a cut (``cut``), a raise
    that leaves the sum above the site's limit is a violation (``over_w``: the most above);
    ``answered`` holds when each EVSE first answered a profile after the cut."""

    def __init__(self) -> None:
        self.limits: dict[tuple[str, int], float] = {}
        self.total = 0.0
        self.cut_at: float | None = None
        self.site_limit_w = float("inf")
        self.over_w = 0.0
        self.answered: dict[tuple[str, int], float] = {}

    def cut(self, limit_w: float) -> None:
        self.cut_at, self.site_limit_w = time.perf_counter(), limit_w
        self.answered.clear()

    def confirmed(self, key: tuple[str, int], limit_w: float) -> None:
        old = self.limits.get(key, EVSE_W * 2)  # an EVSE without a profile: its rating
        self.limits[key] = limit_w
        self.total += limit_w - old
        if self.cut_at is None:
            return
        self.answered.setdefault(key, time.perf_counter())
        if limit_w > old and self.total > self.site_limit_w:
            self.over_w = max(self.over_w, self.total - self.site_limit_w)


class BenchCharger(ChargePoint):
    """A charger of the bench: it answers profiles Accepted and keeps their limit (the first
    period's: the allocation's envelopes start now) in the ``ledger``."""

    def __init__(self, owner: Charger, connection: Any) -> None:
        super().__init__(owner.identity, connection, response_timeout=30)
        self.owner = owner
        self.profiles = 0

    @on("SetChargingProfile", skip_schema_validation=True)
    async def on_profile(self, evse_id: int, charging_profile: dict[str, Any],
                         **_: Any) -> call_result.SetChargingProfile:
        self.profiles += 1
        periods = charging_profile["charging_schedule"][0]["charging_schedule_period"]
        if charging_profile.get("stack_level") == 1:  # an envelope's (the permissions' is 0)
            self.owner.limit_w[evse_id] = float(periods[0]["limit"])
            self.owner.ledger.confirmed((self.owner.identity, evse_id), float(periods[0]["limit"]))
        return call_result.SetChargingProfile(status="Accepted")


@dataclass
class Charger:
    """One charger's state across its connections."""

    identity: str
    password: str
    evses: int
    ledger: Ledger
    client: BenchCharger | None = None
    connection: Any = None
    task: asyncio.Task[None] | None = None
    registers: dict[int, float] = field(default_factory=dict)
    begin: dict[int, float] = field(default_factory=dict)
    seq: dict[int, int] = field(default_factory=dict)
    delivered: dict[str, float] = field(default_factory=dict)  # transaction -> Wh (truth)
    refused: int = 0  # connects the gateway deferred (503)
    limit_w: dict[int, float] = field(default_factory=dict)  # confirmed, by EVSE

    def power_w(self, evse: int) -> float:
        """What the EVSE draws: its EV's demand, within the limit it confirmed."""
        return min(EVSE_W, self.limit_w.get(evse, EVSE_W))

    def transaction(self, evse: int) -> str:
        return f"{self.identity}-e{evse}"

    async def connect(self, url: str) -> None:
        """Connect, coming back when the gateway says so (503 with Retry-After: it admits
        chargers at a bounded rate), with jitter, as OCPP's RetryBackOff does."""
        token = base64.b64encode(f"{self.identity}:{self.password}".encode()).decode()
        while True:
            try:
                self.connection = await websockets.connect(
                    f"{url}{self.identity}", subprotocols=["ocpp2.0.1"],  # type: ignore[list-item]
                    additional_headers={"Authorization": f"Basic {token}"}, open_timeout=30)
                break
            except InvalidStatus as exc:
                if exc.response.status_code != 503:
                    raise
                self.refused += 1
                after = float(exc.response.headers.get("Retry-After", "1"))
                await asyncio.sleep(after * random.uniform(1.0, 2.0))  # the gateway's word
        self.client = BenchCharger(self, self.connection)
        self.task = asyncio.create_task(self.client.start())

    async def send(self, payload: Any) -> Any:
        assert self.client is not None
        return await self.client.call(payload, skip_schema_validation=True)

    async def close(self) -> None:
        if self.task is not None:
            self.task.cancel()
        if self.connection is not None:
            with contextlib.suppress(Exception):
                await self.connection.close()

    async def event(self, evse: int, kind: str, now_us: int) -> None:
        seq = self.seq.get(evse, 0)
        self.seq[evse] = seq + 1
        register = self.registers.setdefault(evse, 10_000.0 * evse)
        context = {"Started": "Transaction.Begin", "Ended": "Transaction.End"}.get(
            kind, "Sample.Periodic")
        if kind == "Started":
            self.begin[evse] = register
        transaction = self.transaction(evse)
        info: dict[str, Any] = {"transaction_id": transaction, "charging_state": "Charging"}
        if kind == "Ended":
            info = {"transaction_id": transaction, "stopped_reason": "EVDisconnected"}
        await self.send(call.TransactionEvent(
            event_type=kind, timestamp=stamp(now_us), trigger_reason="MeterValuePeriodic",
            seq_no=seq, transaction_info=info,
            evse={"id": evse, "connector_id": 1} if kind == "Started" else None,
            meter_value=[{"timestamp": stamp(now_us), "sampled_value": [
                {"value": register, "context": context},
                {"value": 0.0 if kind == "Ended" else self.power_w(evse), "context": context,
                 "measurand": "Power.Active.Import"}]}]))
        self.delivered[transaction] = register - self.begin[evse]


async def ramp(chargers: list[Charger], url: str, ramp_s: float) -> list[float]:
    """Connect and boot every charger, spread over ``ramp_s``; boot times in ms."""
    times: list[float] = []
    step = ramp_s / max(1, len(chargers))

    async def one(i: int, charger: Charger) -> None:
        await asyncio.sleep(i * step)  # the ramp: a schedule, not a wait on a condition
        began = time.perf_counter()
        await charger.connect(url)
        await charger.send(call.BootNotification(
            charging_station={"model": "Bench 22", "vendor_name": "Bench",
                              "serial_number": charger.identity},
            reason="PowerUp"))
        times.append((time.perf_counter() - began) * 1e3)

    await asyncio.gather(*(one(i, c) for i, c in enumerate(chargers)))
    return times


async def soak(chargers: list[Charger], soak_s: float, event_s: float) -> int:
    """Every EVSE charges and reports every ``event_s`` for ``soak_s``; events sent."""
    sent = 0
    now = time.time_ns() // 1000
    for charger in chargers:  # Started on every EVSE
        for evse in range(1, charger.evses + 1):
            await charger.event(evse, "Started", now)
            sent += 1
    rounds = max(1, int(soak_s / event_s))
    gap = event_s / max(1, len(chargers))
    for _ in range(rounds):
        began = time.monotonic()

        async def one(i: int, charger: Charger) -> int:
            await asyncio.sleep(i * gap)  # spread over the interval, as chargers are
            count = 0
            for evse in range(1, charger.evses + 1):
                charger.registers[evse] += charger.power_w(evse) * event_s / 3600
                await charger.event(evse, "Updated", time.time_ns() // 1000)
                count += 1
            return count

        sent += sum(await asyncio.gather(*(one(i, c) for i, c in enumerate(chargers))))
        await asyncio.sleep(max(0.0, event_s - (time.monotonic() - began)))
    return sent


async def start_gateway(config: Path, root: Path) -> asyncio.subprocess.Process:
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "actors.app.cli", "gateway", "--config", str(config),
        stdout=asyncio.subprocess.PIPE, stderr=(root / "gateway.err").open("ab"),
        stdin=asyncio.subprocess.DEVNULL, preexec_fn=die_with_parent())
    assert process.stdout is not None
    while True:
        line = await asyncio.wait_for(process.stdout.readline(), 120)
        if not line:
            raise RuntimeError(f"the gateway exited: {(root / 'gateway.err').read_text()[-800:]}")
        if b"running" in line:
            return process


async def run(*, chargers: int, evses: int, ramp_s: float, soak_s: float, event_s: float,
              say: Any = print) -> dict[str, Any]:
    root = Path(tempfile.mkdtemp(prefix="bench-ocpp-"))
    h = await Hierarchy.start(root, say=say)
    gateway: asyncio.subprocess.Process | None = None
    ledger = Ledger()
    fleet = [Charger(f"ocpp-site1-{i}", f"bench-password-{i:06d}", evses, ledger)
             for i in range(1, chargers + 1)]
    out: dict[str, Any] = {"chargers": chargers, "evses": chargers * evses}
    drawn_w = chargers * evses * EVSE_W
    try:
        await h.start_cloud()
        await h.start_resource_manager(1, fuse_limit_w=1.2 * drawn_w)
        site = await h.start_site(1, resource_manager=True)
        local = site.local_csms
        port = 19_000 + os.getpid() % 1000
        ep = h.site_brokers[1].endpoint
        config = write_config(Config(broker=h.site_config(1), gateway=GatewayConfig(
            component=gateway_domain(1), component_secret=ep.component_secret,
            csms="local-site1", provisioning_secret=h.provisioning(1),
            state_dir=str(root / "gateway"), port=port,
            chargers={c.identity: ChargerEntry(password=c.password, evse_count=evses,
                                               onboarding=False)
                      for c in fleet})), root / "gateway.toml")
        say(f"starting the gateway for {chargers} chargers...")
        gateway = await start_gateway(config, root)
        url = f"ws://127.0.0.1:{port}/ocpp/"

        def synced() -> int:
            return sum(r.synced for k, r in local.copies.replicas.items()
                       if k.startswith("stations/ocpp-"))

        async def until(check: Any, what: str, timeout: float) -> float:
            began = time.monotonic()
            while True:
                done = check()
                if inspect.isawaitable(done):  # the cloud's consistency is asked for
                    done = await done
                if done:
                    return time.monotonic() - began
                if time.monotonic() - began > timeout:
                    raise RuntimeError(f"{what}: not within {timeout:g} s")
                await asyncio.sleep(0.2)  # a poll of another process's effect

        await until(lambda: synced() == chargers, "every charger's actor at the local CSMS", 120)
        say(f"booting {chargers} chargers over {ramp_s:g} s...")
        boots = await ramp(fleet, url, ramp_s)
        out |= {"booted": len(boots), "boot_p99_ms": round(p99(boots), 1),
                "boot_median_ms": round(statistics.median(boots), 1)}
        await until(h.cloud_consistent, "the cloud's copies", 120)
        out["cached_at_local"] = synced()
        out["cached_at_cloud"] = sum(1 for k in h.cloud_actor.copies.replicas
                                     if k.startswith("stations/ocpp-"))
        say(f"soak: every EVSE reports every {event_s:g} s for {soak_s:g} s...")
        cpu0, t0 = cpu_seconds(gateway.pid) or 0.0, time.monotonic()
        sent = await soak(fleet, soak_s, event_s)
        elapsed = time.monotonic() - t0
        out["events_per_s"] = round(sent / elapsed, 1)
        out["gateway_cpu_share"] = round(((cpu_seconds(gateway.pid) or 0.0) - cpu0) / elapsed, 3)
        out["gateway_rss_mb"] = round((rss_bytes(gateway.pid) or 0) / 2**20, 1)
        say("every EVSE holds its envelope; a power cut at the resource manager to half of "
            "what the site draws...")
        await until(lambda: len(ledger.limits) == chargers * evses,
                    "every EVSE's envelope confirmed", 120)
        cut_w = drawn_w / 2
        operator = await h.operator()
        start = time.time_ns() // 1000
        ledger.cut(cut_w)
        await operator.request("rm-site1", PropertyValueWrite(writes=[WriteItem(
            path=KeyPath.parse("grid/curtailments/bench"),
            value={"start_at": start, "end_at": start + 3_600 * US, "limit_w": cut_w,
                   "reason": "bench: a power cut"})]), timeout=10)
        await until(lambda: ledger.total <= cut_w, "every charger confirmed the cut", 120)
        await asyncio.sleep(2 * h.site(1).local_csms.energy.energy_settings.interval_s)  # a
        # while at the new limit: what the allocation does next counts too
        latencies = [(at - (ledger.cut_at or at)) * 1e3 for at in ledger.answered.values()]
        out |= {"profiles_confirmed": sum(c.client.profiles for c in fleet if c.client),
                "profile_p99_ms": round(p99(latencies), 1),
                "profile_max_ms": round(max(latencies, default=0.0), 1),
                "max_confirmed_over_site_w": round(
                    max(ledger.over_w, ledger.total - cut_w, 0.0), 1)}
        say("the gateway SIGKILLed and started again; chargers reconnect...")
        modes_before = dict(h.cloud_actor.copies.resync.stats.by_mode)
        gateway.send_signal(signal.SIGKILL)
        await gateway.wait()
        for charger in fleet:
            await charger.close()
        killed = time.monotonic()
        gateway = await start_gateway(config, root)
        await ramp(fleet, url, ramp_s / 2)  # each reconnects (with its own backoff's jitter)
        await until(lambda: all(
            local.copies.replicas[f"stations/{c.identity}"].tree.get("network/link/online")
            is True for c in fleet), "every charger online again", 120)
        out["reconnect_all_s"] = round(time.monotonic() - killed, 2)
        out["reconnects_deferred"] = sum(c.refused for c in fleet)
        await until(h.cloud_consistent, "the cloud caught up", 120)
        out["cloud_caught_up_s"] = round(time.monotonic() - killed, 2)
        modes = h.cloud_actor.copies.resync.stats.by_mode
        out["cloud_resyncs_by_mode"] = {mode: runs - modes_before.get(mode, 0)
                                        for mode, runs in modes.items()
                                        if runs > modes_before.get(mode, 0)}
        say("ending every transaction...")
        now = time.time_ns() // 1000
        for charger in fleet:
            for evse in range(1, evses + 1):
                await charger.event(evse, "Ended", now)
        await until(lambda: _records_done(local, fleet), "every record at the local CSMS", 60)
        out |= _judge(local, fleet)
    finally:
        for charger in fleet:
            await charger.close()
        if gateway is not None and gateway.returncode is None:
            gateway.send_signal(signal.SIGTERM)
            try:
                await asyncio.wait_for(gateway.wait(), 20)
            except TimeoutError:
                gateway.kill()
        await h.close()
    return out


def _records(local: Any, charger: Charger) -> dict[str, Any]:
    copy = local.copies.replicas[f"stations/{charger.identity}"].tree
    return dict(copy.read("transactions")) if "transactions" in copy else {}


def _records_done(local: Any, fleet: list[Charger]) -> bool:
    return all(sum(r.get("state") == "Finished" for r in _records(local, c).values())
               == len(c.delivered) for c in fleet)


def _judge(local: Any, fleet: list[Charger]) -> dict[str, Any]:
    mismatch = duplicates = lost = transactions = 0.0
    for charger in fleet:
        records = _records(local, charger).values()
        by_id: dict[str, list[dict[str, Any]]] = {}
        for record in records:
            by_id.setdefault(record["transaction_id"], []).append(record)
        for transaction, truth in charger.delivered.items():
            transactions += 1
            found = by_id.get(transaction, [])
            if not found:
                lost += 1
                continue
            duplicates += len(found) - 1
            mismatch += abs(found[0].get("energy_wh", 0.0) - truth)
    return {"transactions": int(transactions), "energy_mismatch_wh": round(mismatch, 3),
            "duplicates": int(duplicates), "lost": int(lost)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="csms bench ocpp_gateway", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--chargers", type=int, default=500)
    parser.add_argument("--evses", type=int, default=2)
    parser.add_argument("--ramp-s", type=float, default=10.0)
    parser.add_argument("--soak-s", type=float, default=60.0)
    parser.add_argument("--event-s", type=float, default=10.0)
    parser.add_argument("--quick", action="store_true",
                        help="20 chargers, a 4 s soak (what the test suite runs)")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    if args.quick:
        args.chargers, args.soak_s, args.event_s, args.ramp_s = 20, 4.0, 2.0, 1.0

    def say(text: str) -> None:
        print(text, file=sys.stderr, flush=True)

    figures = asyncio.run(run(chargers=args.chargers, evses=args.evses, ramp_s=args.ramp_s,
                              soak_s=args.soak_s, event_s=args.event_s, say=say))
    if args.json:
        print(json.dumps(figures))
    else:
        print("\n".join(f"{k:<24}{v}" for k, v in figures.items()))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
