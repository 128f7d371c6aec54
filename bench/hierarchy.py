"""A real hierarchy over real, impaired uplinks (issue 13; DESIGN.md section 5).

    python -m bench.hierarchy [--json] [--quick] [--sites 2] [--stations 20] [--outage-s 300]
                                                            (also: csms bench hierarchy)

*Deployment.* Each site is a network namespace behind a router (``bench.netlab``): the site's
own Prosody, its resource manager, its local CSMS and a host of simulated stations run in one
process there (``python -m bench.hierarchy site``), the stations and the resource manager on
the site's broker only. The cloud's Prosody, the cloud CSMS and a probe sink run in this
process, in the root namespace, at the lab's cloud address. Each local CSMS holds its site
link and **one** connection across its site's uplink to the cloud's broker. This process asks a
site for its ground truth over the site process's standard input and output (not the network:
the oracle must work while the uplink is cut).

*Phases and figures.*

1. *Joined.* Every station joined its site and is cached at its local CSMS and at the cloud
   (root digests equal). ``upstream_connections_per_site``: established TCP connections from
   the site to beyond its LAN (``ss`` in the site's namespace), the largest over the sites.
2. *Priority.* From site 1, a probe connection configured like an uplink (``ours``: priority
   queues, a 24 kB send window, 4 kB state and bulk frames and ``TCP_NOTSENT_LOWAT``;
   ``paced``: the same, told the link's rate, paced at 90 % of it; ``fifo``: one queue, no
   window)
   sends a 100-byte critical envelope every 20 ms to the sink, alone (``idle``) or while bulk
   telemetry saturates the uplink (2 Mbit/s, 50 ms each way, a 300 ms tbf buffer); then over
   a clean uplink to a sink whose CPU is saturated (every bulk envelope costs it 2 ms of
   work: the receiver is the bottleneck). ``critical_p99_ms_*``: p99 of write-to-handler
   latency (same machine, same clock) over ``--samples`` critical envelopes each.
3. *Outage.* Site 1's uplink is cut (nft ``drop`` in its router: a dead zone) for
   ``--outage-s`` while its stations charge and a reliable stream of 5 envelopes/s runs from
   its local CSMS's uplink to the sink. Meanwhile the site must admit a new station, go on
   charging and allocating energy, and obey a curtailment from its resource manager
   (``site_kept_charging``: all four seen). Then every site's stations are paused, the uplink
   restored, and ``catch_up_s`` is the time until every cloud copy equals its station again
   (``consistent``; it includes waiting for the uplink's next reconnect attempt, up to the 5 s
   cap of its jittered backoff); ``resync_bytes_over_floor`` is everything the cloud received
   meanwhile (``catch_up_bytes``, deflated frames: the resynchronisation, the rejoin, relays
   and heartbeats) over the floor (each changed leaf once, ``bench.resync.floor_since``);
   ``resync_bytes`` is the resync engine's share of it;
   ``lost`` and ``duplicates`` count the reliable stream's envelopes the sink never got or
   got twice (after every one was sent and acknowledged).

Needs root (network namespaces); without them it says why and exits with status 2.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import secrets
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from actors.app.config import UplinkConfig
from actors.app.hierarchy import Hierarchy, broker_config, cloud_domain
from actors.app.wiring import session_config, xmpp_settings
from actors.runtime.actor import Actor, Context, RoleDirectory, handles
from bench.netlab import Lab, LinkProfile, netns_available
from bench.resync import floor_since
from bench.sites import Handler, RunningSite, SiteProcess, poll, run_site
from broker_bridge import Endpoint, Priority, SessionConfig
from broker_bridge.prosody import ManagedProsody
from broker_bridge.xmpp import XmppTransport
from keypath import KeyPath
from object_model import Role, Write
from object_model.messages import PropertyValueUpdate

SATURATED = LinkProfile(up_bps=2_000_000, down_bps=8_000_000, buffer_ms=300, delay_ms=50)
CLEAN = LinkProfile()
PROBE_EVERY_S = 0.02
BUSY_WORK_S = 0.002
BULK_PAYLOAD = 1200  # bytes of telemetry in each bulk envelope
SPEED = 60.0  # site time runs a minute per second


def _percentile(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


# -- the cloud's side: a sink for probes and reliable streams ----------------------------------


@dataclass
class Tally:
    critical_ms: list[float] = field(default_factory=list)
    bulk: int = 0
    reliable: dict[str, list[int]] = field(default_factory=dict)  # stream -> numbers, as seen


class Sink(Actor):
    """Takes probe envelopes: critical ones are timed, bulk ones cost ``work_s`` of CPU each
    (a CSMS applying updates), reliable ones are counted per stream."""

    role = Role.OPERATOR

    def __init__(self, address: str, links: Endpoint) -> None:
        super().__init__(address, links, roles=RoleDirectory({"*": Role.STATION}))
        self.tally = Tally()
        self.work_s = 0.0

    @handles(PropertyValueUpdate)
    async def on_probe(self, message: PropertyValueUpdate, ctx: Context) -> None:
        env = ctx.envelope
        if env.priority is Priority.CRITICAL:
            self.tally.critical_ms.append(time.time() * 1000 - env.timestamp_us / 1000)
        elif env.reliable:
            self.tally.reliable.setdefault(str(message.tree), []).append(message.to_revision)
        else:
            self.tally.bulk += 1
            if self.work_s:
                end = time.perf_counter() + self.work_s  # CPU work, not a wait: the load
                while time.perf_counter() < end:
                    pass


# -- a site, in its namespace (the child process) -----------------------------------------------


def site_commands(running: RunningSite) -> dict[str, Handler]:
    """What this benchmark asks a site process besides ``bench.sites``'s own commands."""
    k, spec = running.number, running.spec
    site, local, uplink = running.site, running.local, running.uplink
    rm, site_time = running.resource_manager, running.site_time
    assert rm is not None and site_time is not None, "a hierarchy site has a fast RM"
    probes: list[Endpoint] = []
    reliable_task: asyncio.Task[None] | None = None

    async def close() -> None:
        for endpoint in probes:
            await endpoint.stop(flush_timeout=0.2)

    running.closing.append(close)

    async def curtail(cmd: dict[str, Any]) -> None:
        start = site_time.now_us()
        entry = "grid/curtailments/dso-1"
        rm.tree.apply([Write(f"{entry}/start_at", start),
                       Write(f"{entry}/end_at", start + 24 * 3_600_000_000),
                       Write(f"{entry}/limit_w", float(cmd["limit_w"])),
                       Write(f"{entry}/reason", "bench curtailment")])

    async def floor(cmd: dict[str, Any]) -> dict[str, Any]:
        return {"floor": sum(floor_since(s.tree, cmd["revisions"][s.address])
                             for s in site.stations
                             if s.tree is not None and s.address in cmd["revisions"])}

    async def reliable(cmd: dict[str, Any]) -> None:
        nonlocal reliable_task

        async def stream(count: int, rate: float) -> None:
            for i in range(1, count + 1):
                uplink.send(source=local.address, destination="probe", message=(
                    PropertyValueUpdate(tree=KeyPath("rel", f"site{k}"), epoch=1,
                                        from_revision=i - 1, to_revision=i)),
                            priority=Priority.STATE, reliable=True, stream="bench")
                await asyncio.sleep(1 / rate)  # the stream's pace
        reliable_task = asyncio.create_task(stream(cmd["count"], cmd["rate"]))

    async def reliable_done(cmd: dict[str, Any]) -> dict[str, Any]:
        return {"sent": bool(reliable_task and reliable_task.done()),
                "pending": uplink.session.pending_count}

    async def run_probe(cmd: dict[str, Any]) -> dict[str, Any]:
        return await probe(cmd, spec, probes)

    return {"curtail": curtail, "floor": floor, "reliable": reliable,
            "reliable_done": reliable_done, "probe": run_probe}


async def probe(cmd: dict[str, Any], spec: dict[str, Any], probes: list[Endpoint]
                ) -> dict[str, Any]:
    """Critical envelopes every 20 ms for ``seconds``, with bulk saturating the link when
    ``bulk``, on a connection configured as ``mode`` (``ours`` or ``fifo``)."""
    k, mode = spec["site"], cmd["mode"]
    cfg = UplinkConfig(**spec["cloud"])
    if mode == "fifo":
        cfg = cfg.model_copy(update={"send_window_bytes": None, "notsent_lowat": None})
    elif mode == "paced":  # the uplink's rate is known: pace at 90 % of it
        cfg = cfg.model_copy(update={"rate_kbit": SATURATED.up_bps / 1000})
    config = session_config(cfg) if mode != "fifo" else SessionConfig(priorities=False)
    name = f"probe-site{k}"
    transport = XmppTransport.client(xmpp_settings(cfg), name, spec["passwords"][name],
                                     name=f"{name}-{mode}")
    endpoint = await Endpoint(transport, config=config, name=name).start()
    probes.append(endpoint)
    await endpoint.register(name, lambda env: None)
    critical = PropertyValueUpdate(tree=KeyPath("critical"), epoch=1, from_revision=0,
                                   to_revision=1)
    filler = os.urandom(BULK_PAYLOAD // 2).hex()  # telemetry that does not compress away
    start = time.monotonic()
    sent = 0
    while time.monotonic() - start < cmd["seconds"]:
        if cmd["bulk"]:
            # keep a backlog of bulk in the session: the link, never the producer, limits
            while sum(endpoint.session.queue_depth().values()) < cmd.get("backlog", 400):
                endpoint.send(source=name, destination="probe", message=PropertyValueUpdate(
                    tree=KeyPath("bulk"), epoch=1, from_revision=0, to_revision=1,
                    upserts=[("telemetry", 1, filler)]), priority=Priority.BULK)
        endpoint.send(source=name, destination="probe", message=critical,
                      priority=Priority.CRITICAL)
        sent += 1
        await asyncio.sleep(PROBE_EVERY_S)  # the probe's pace
    await endpoint.stop(flush_timeout=0.2)
    probes.remove(endpoint)
    return {"sent": sent}


# -- the lab (this process) -------------------------------------------------------------------


@dataclass
class Run:
    sites: int
    stations: int
    outage_s: float
    samples: int
    say: Callable[[str], None]
    prefix: str = "hb"  # the lab's: runs with different prefixes may overlap


async def measure(run: Run) -> dict[str, Any]:
    say = run.say
    reason = netns_available()
    if reason is not None:
        raise SystemExit(f"bench hierarchy needs network namespaces: {reason}")
    out: dict[str, Any] = {"sites": run.sites, "stations": run.stations * run.sites,
                           "outage_s": run.outage_s}
    root = Path(tempfile.mkdtemp(prefix="bench-hierarchy-"))
    with Lab(run.prefix, seed=1, log_dir=root / "lab") as lab:
        lab_sites = {k: lab.add_site(k, CLEAN) for k in range(1, run.sites + 1)}
        names = ["cloud", "operator", "probe",
                 *(f"{kind}-site{k}" for k in lab_sites for kind in ("local", "rm", "probe"))]
        passwords = {n: secrets.token_urlsafe(12) for n in names}
        broker = ManagedProsody(root / "broker-cloud", domain=cloud_domain(),
                                component_domains=(), host=lab.cloud_address)
        say("starting the cloud's broker and the cloud CSMS...")
        await broker.start()
        broker.create_accounts({n: p for n, p in passwords.items() if not n.startswith("rm-")})
        h = Hierarchy(root, broker, {}, passwords)
        sites: dict[int, SiteProcess] = {}
        sink_endpoint = await Endpoint(XmppTransport.client(
            xmpp_settings(h.config), "probe", passwords["probe"]), name="probe").start()
        sink = Sink("probe", sink_endpoint)
        try:
            await sink.start()
            cloud = await h.start_cloud()
            # what differs from the defaults only: an uplink keeps its own (the send window)
            cloud_cfg = broker_config(broker).model_dump(mode="json", exclude_defaults=True)
            for k, lab_site in lab_sites.items():
                say(f"starting site {k} in its namespace ({run.stations} stations)...")
                sites[k] = await SiteProcess.start_site({
                    "site": k, "stations": run.stations, "cloud": cloud_cfg,
                    "passwords": passwords, "host": lab_site.address,
                    "root": str(root / f"site{k}"), "fuse_limit_w": 11_000.0 * run.stations,
                    "speed": SPEED, "arrivals_per_evse_hour": 2.0,
                }, root / f"site{k}.err", module="bench.hierarchy",
                    namespace=lab_site.namespace)

            async def digests() -> dict[str, str]:
                out: dict[str, str] = {}
                for site in sites.values():
                    out.update((await site.ask("status"))["digests"])
                return out

            async def cloud_consistent() -> bool:
                truth = await digests()
                copies = cloud.copies.replicas
                return all(f"stations/{a}" in copies and
                           copies[f"stations/{a}"].tree.digest().hex() == d
                           for a, d in truth.items())

            async def all_joined() -> bool:
                for site in sites.values():
                    status = await site.ask("status")
                    if status["admitted"] < len(status["digests"]) or not status["joined"]:
                        return False
                return True

            say("waiting until every station is joined and cached at the cloud...")
            await poll("every station joined", all_joined, 120)
            for site in sites.values():
                await site.ask("pause")
            await poll("every copy at the cloud consistent", cloud_consistent, 120)
            out["cached_at_cloud"] = len(cloud.copies.replicas)
            out["upstream_connections_per_site"] = max(
                len(s.uplink_tcp_connections()) for s in lab_sites.values())
            for site in sites.values():
                await site.ask("pause", paused=False)

            # -- priority ---------------------------------------------------------------
            seconds = run.samples * PROBE_EVERY_S
            one, lab_one = sites[1], lab_sites[1]
            for key, profile, mode, bulk, work in (
                    ("critical_p99_ms_idle_uplink", SATURATED, "ours", False, 0.0),
                    ("critical_p99_ms_saturated_uplink", SATURATED, "ours", True, 0.0),
                    ("critical_p99_ms_saturated_uplink_paced", SATURATED, "paced", True, 0.0),
                    ("critical_p99_ms_saturated_uplink_fifo", SATURATED, "fifo", True, 0.0),
                    ("critical_p99_ms_idle_receiver", CLEAN, "ours", False, 0.0),
                    ("critical_p99_ms_busy_receiver", CLEAN, "ours", True, BUSY_WORK_S)):
                say(f"{key}: {run.samples} critical envelopes...")
                lab_one.set_profile(profile)
                sink.tally = Tally()
                sink.work_s = work
                up_before, t0 = lab_one.counters().up.bytes, time.monotonic()
                await one.ask("probe", timeout=seconds + 120, mode=mode, bulk=bulk,
                              seconds=seconds)
                uplink_kbit = (lab_one.counters().up.bytes - up_before) * 8 / 1000 / (
                    time.monotonic() - t0)
                with contextlib.suppress(RuntimeError):  # what arrived is what is counted
                    await poll("the probes", _async(lambda: len(sink.tally.critical_ms)
                                                    >= 0.95 * run.samples), 60, every=0.2)
                values = sink.tally.critical_ms
                out[key] = round(_percentile(values, 0.99), 1)
                out[key.replace("p99", "p50")] = round(_percentile(values, 0.5), 1)
                out[key.replace("critical_p99_ms", "samples")] = len(values)
                if bulk:  # what crossed the uplink meanwhile (its router's counters)
                    out[key.replace("critical_p99_ms", "uplink_kbit")] = round(uplink_kbit)
                sink.work_s = 0.0
            lab_one.set_profile(CLEAN)

            # -- outage ---------------------------------------------------------------
            say(f"cutting site 1's uplink for {run.outage_s:g} s...")
            before = await one.ask("status")
            sink.tally = Tally()
            count = int(5 * (run.outage_s + 10))
            await one.ask("reliable", count=count, rate=5.0)
            await asyncio.sleep(2)  # some of the stream crosses before the cut
            lab_one.outage("drop")
            cut_at = time.monotonic()
            await one.ask("add_station", name=f"cs-site1-{run.stations + 1}")
            await poll("the new station admitted during the outage", _async_site(
                one, lambda s: s["admitted"] == run.stations + 1), 60)
            limit = max(11_000.0, 0.5 * before["power_w"])
            await one.ask("curtail", limit_w=limit)
            try:
                curtailed_after = await poll("the curtailment obeyed", _async_site(
                    one, lambda s: s["limit_w"] <= limit and s["power_w"] <= limit + 1), 60)
            except RuntimeError as exc:
                raise RuntimeError(f"{exc}: limit {limit}, {await one.ask('status')}") from None
            remaining = run.outage_s - (time.monotonic() - cut_at)
            if remaining > 0:
                await asyncio.sleep(remaining)  # the outage lasts as long as asked
            during = await one.ask("status")
            out["uplink_down_noticed"] = not during["joined"]
            kept = {"charged": during["energy_wh"] > before["energy_wh"],
                    "allocated": during["allocations"] != before["allocations"],
                    "admitted": during["admitted"] == run.stations + 1,
                    "curtailed": curtailed_after >= 0}  # the poll raises if it never was
            out["site_kept_charging"] = all(kept.values())
            out["site_during_outage"] = kept
            out["curtailment_obeyed_s"] = round(curtailed_after, 2)
            for site in sites.values():  # what the cloud receives now is site 1's catch-up
                await site.ask("pause")
            revisions = {key.split("/", 1)[1]: r.tree.revision
                         for key, r in cloud.copies.replicas.items()
                         if key.startswith("stations/cs-site1-")}
            floor = (await one.ask("floor", revisions=revisions))["floor"]
            resync_before = cloud.copies.resync.stats.wire_bytes
            received_before = cloud.endpoint.session.counters.received_bytes
            say("restoring the uplink...")
            lab_one.restore()
            out["catch_up_s"] = round(await poll("the cloud's copies consistent again",
                                                 cloud_consistent, 600, every=0.25), 2)
            out["consistent"] = await cloud_consistent()
            resync = cloud.copies.resync.stats.wire_bytes - resync_before
            received = cloud.endpoint.session.counters.received_bytes - received_before
            out["floor_bytes"] = floor
            out["resync_bytes"] = int(resync)
            # everything the cloud received to catch up (resynchronisation, and relayed
            # updates that TCP kept through a short cut; the other sites' stations are paused
            # too, and send only heartbeats), as deflated frames
            out["catch_up_bytes"] = received
            out["resync_bytes_over_floor"] = round(received / floor, 2) if floor else None
            await poll("the reliable stream sent and acknowledged", _async_site(
                one, lambda s: True, "reliable_done", lambda a: a["sent"] and a["pending"] == 0),
                       300)
            seen = sink.tally.reliable.get("rel/site1", [])
            out["reliable_sent"] = count
            out["lost"] = count - len(set(seen))
            out["duplicates"] = len(seen) - len(set(seen))
            out["in_order"] = seen == sorted(seen)
        finally:
            for site in sites.values():
                await site.stop()
            await sink.stop()
            await sink_endpoint.stop(flush_timeout=0.5)
            await h.close()
    return out


def _async(check: Callable[[], bool]) -> Callable[[], Any]:
    async def run() -> bool:
        return check()
    return run


def _async_site(site: SiteProcess, check: Callable[[dict[str, Any]], bool],
                cmd: str = "status", answer: Callable[[dict[str, Any]], bool] | None = None
                ) -> Callable[[], Any]:
    async def run() -> bool:
        reply = await site.ask(cmd)
        return (answer or check)(reply)
    return run


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["site"]:
        return asyncio.run(run_site(json.loads(argv[1]), site_commands))
    parser = argparse.ArgumentParser(prog="csms bench hierarchy", description=__doc__.split(
        "\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sites", type=int, default=2)
    parser.add_argument("--stations", type=int, default=20, help="stations per site")
    parser.add_argument("--outage-s", type=float, default=None, help="default 300 (quick: 30)")
    parser.add_argument("--samples", type=int, default=None,
                        help="critical envelopes per priority figure (default 1000; quick: 200)")
    parser.add_argument("--quick", action="store_true",
                        help="a 30 s outage and 200 samples: about the suite's short version")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    if args.outage_s is None:
        args.outage_s = 30.0 if args.quick else 300.0
    if args.samples is None:
        args.samples = 200 if args.quick else 1000

    def say(message: str) -> None:
        print(message, file=sys.stderr, flush=True)

    reason = netns_available()
    if reason is not None:
        print(f"csms bench hierarchy: needs network namespaces: {reason}", file=sys.stderr)
        return 2
    out = asyncio.run(measure(Run(args.sites, args.stations, args.outage_s, args.samples, say)))
    if args.json:
        print(json.dumps(out))
    else:
        print("\n".join(f"{k:<40}{v}" for k, v in out.items()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
