"""Scale on this machine (issue 13, point 5): thousands of stations on ten sites, each site a
process with its own broker, one cloud, and a reconnect storm when the cloud's broker dies.

    python -m bench.scale [--sites 10] [--stations-per-site 500] [--json] [--quick]
                                                            (also: csms bench scale)

*Deployment* (every process on loopback, in the root namespace: on one machine only the
number of processes matters, not their addresses)::

    this process ── stdin/stdout ──┬── site k (python -m bench.scale site, one per site)
                                   │     its Prosody (child) ◄── component: 500 stations
                                   │                         ◄── local-sitek (site link)
                                   │     local-sitek's uplink ──────────────┐ one c2s each
                                   ├── cloud CSMS (python -m bench.scale cloud) ──┤
                                   └── the cloud's Prosody (child) ◄─────────────┘

Each site process runs the site's Prosody, its local CSMS (its site link and **one** uplink
connection to the cloud's broker) and its stations on one component connection
(``bench.sites``; ``--accounts``: each station on an account and connection of its own).
The cloud CSMS runs in a process of its own on the cloud's Prosody, which this process
runs, SIGKILLs and starts again. This process asks every site and the cloud what they hold
over their standard input and output, never over a broker.

*Phases and figures.*

1. *Connect.* The site processes start together, stations paused (their trees hold still).
   ``connect_all_s``: from starting the site processes until every station is admitted at its
   local CSMS (``online``), every site is joined to the cloud, and every cloud copy's root
   digest equals its station's (``cached_at_cloud``); ``sites_started_s`` of it until every
   site process had started its broker, local CSMS and stations; ``connect_cpu_s`` the CPU
   seconds each process kind spent meanwhile. Every tree is built, and copied twice.
2. *Steady.* Stations tick every ``--tick-s`` (default 10 s: 5,000 stations offer 500
   updates/s; at 1 s the simulated stations alone need more than this machine's two cores);
   once every site's periodic work is back on pace (a site that lagged while it connected
   ticks coarser until it has been calm a while; ``pace_at_steady``: 1 when it is) and
   after ``--warmup-s``, for ``--steady-s``: ``updates_per_s_sustained`` (PropertyValueUpdates
   the cloud CSMS applied per second, its ``updates`` counter) beside
   ``updates_per_s_offered`` (revisions the stations made per second) and
   ``cloud_cpu_ms_per_update``; ``cpu_share`` per process kind and ``broker_cpu_share`` (CPU
   seconds of every Prosody over the wall time; 2.0 is both cores), ``machine_cpu_share``
   (everything the machine ran, other people's work included); ``rss_mb`` and
   ``rss_mb_per_1000_stations`` per process kind at the end of it (site process, site
   Prosody, cloud CSMS, cloud Prosody); ``steady_backlog``: what waits in the sites then
   (a local CSMS's inbox that grows is a site that does not keep up).
3. *Storm.* With the stations still ticking, the cloud's Prosody is SIGKILLed; after
   ``--outage-s`` (the sites' copies move on, the cloud's cannot) the stations are paused and
   the broker is started again on the same state. Every local CSMS's uplink reconnects (its
   backoff is jittered) and rejoins; the cloud admits the joins through its admission limit
   (``--join-rate`` of work per second, each join costing 1 plus 1 per copy to
   resynchronise; ``BUSY`` for the rest, who come back when told, with jitter).
   ``reconnect_storm_s``: from starting the broker until every site is joined again and every
   cloud copy is consistent. ``storm_peak_joins_per_s`` and
   ``storm_peak_join_cost_per_s``: the most joins (and their cost: stations taken on for
   resynchronisation) the cloud admitted within one second; ``storm_refused`` the joins
   told to wait, ``storm_resyncs`` the resynchronisations the cloud ran (those a join
   announced, and those the cloud found later from a gap in what a site relays).
4. *Restart.* Every site process is stopped and started again on its state (``restart_all_s``
   and the same join figures): the fleet coming back with (almost) nothing to catch up.

Needs Prosody (``make setup``). Benchmarks are not pass/fail; the exit status is 0 when every
station ended online and cached.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import os
import secrets
import signal
import sys
import tempfile
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from actors.app.config import BrokerConfig, CloudConfig
from actors.app.hierarchy import Hierarchy, broker_config, cloud_domain
from actors.app.wiring import start_cloud, tune_gc
from actors.csms.cloud import CloudCsms
from actors.csms.settings import CloudSettings
from bench.procfs import machine_busy_seconds, total_cpu_seconds, total_rss_bytes
from bench.sites import Answer, ChildProcess, Handler, RunningSite, SiteProcess, run_site, serve
from broker_bridge.prosody import ManagedProsody

log = logging.getLogger("bench.scale")
MB = 1024 * 1024
KINDS = ("site_process", "site_broker", "cloud_csms", "cloud_broker")


def _quiet(message: str) -> None:
    """Say nothing."""


@dataclass(frozen=True)
class Run:
    """One run's shape (see the module docstring)."""

    sites: int = 10
    stations_per_site: int = 500
    tick_s: float = 10.0
    warmup_s: float = 5.0
    pace_timeout_s: float = 180.0  # the longest the steady phase waits for the sites' pace
    steady_s: float = 30.0
    outage_s: float = 10.0
    join_rate_per_s: float | None = CloudSettings().join_rate_per_s
    join_burst: float = CloudSettings().join_burst
    accounts: bool = False
    restart: bool = True
    timeout_s: float = 300.0
    say: Callable[[str], None] = field(default=_quiet, compare=False)

    @property
    def stations(self) -> int:
        return self.sites * self.stations_per_site


# -- the children -----------------------------------------------------------------------------


def site_commands(running: RunningSite) -> dict[str, Handler]:
    """What this benchmark asks a site besides ``bench.sites``'s commands: ``census``, the
    counts without the digests (cheap enough to ask every few seconds while stations tick),
    and ``digests``, each station's root digest, to compare with the cloud's copies."""

    async def census(cmd: dict[str, Any]) -> Answer:
        stations = running.site.stations
        return {"stations": len(stations), "admitted": sum(s.admitted for s in stations),
                "revisions": sum(s.tree.revision for s in stations if s.tree is not None),
                "joined": running.local.upstream_joined()}

    async def digests(cmd: dict[str, Any]) -> Answer:
        return {"digests": {s.address: s.tree.digest(visible=True).hex()
                            for s in running.site.stations if s.tree is not None}}

    async def backlog(cmd: dict[str, Any]) -> Answer:
        local, stations = running.local, running.site.stations
        copies = local.copies
        return {"local_inbox": local.inbox_depth,
                "local_relays_waiting": len(copies._relays),
                "local_resyncs_busy": copies.resync.busy,
                "local_copies_synced": sum(r.synced for r in copies.replicas.values()),
                "uplink_queued": sum(running.uplink.session.queue_depth().values()),
                "site_link_queued": sum(local.links.default.session.queue_depth().values()),
                "station_inboxes": sum(s.inbox_depth for s in stations),
                "host_queued": sum(sum(host.endpoint.session.queue_depth().values())
                                   for host in running.site.hosts)}

    return {"census": census, "digests": digests, "backlog": backlog}


async def run_cloud(spec: dict[str, Any]) -> int:
    """The cloud CSMS's process: ``start_cloud`` on ``spec["broker"]`` with ``spec["cloud"]``,
    answering ``digests`` (every copy's root digest), ``stats`` and ``stop``."""
    logging.basicConfig(level=os.environ.get("CSMS_BENCH_LOG", "WARNING"), stream=sys.stderr,
                        format="%(asctime)s %(name)s %(levelname)s %(message)s")
    tune_gc()
    running = await start_cloud(BrokerConfig(**spec["broker"]), CloudConfig(**spec["cloud"]))
    cloud = running.actors[0]
    assert isinstance(cloud, CloudCsms)
    try:
        async def digests(cmd: dict[str, Any]) -> Answer:
            return {"digests": {key.split("/", 1)[1]: replica.tree.digest().hex()
                                for key, replica in cloud.copies.replicas.items()
                                if key.startswith("stations/")}}

        async def stats(cmd: dict[str, Any]) -> Answer:
            return cloud_stats(cloud, running.endpoint.session.counters.received_frames)

        await serve({"digests": digests, "stats": stats}, ready={"pid": os.getpid()})
    finally:
        await running.stop()
    return 0


def cloud_stats(cloud: CloudCsms, frames_received: int) -> Answer:
    """What the cloud counted: updates applied, joins, resyncs, admissions (each with its
    time on the cloud's clock, ``now``)."""
    admission = cloud.admission.stats
    engine = cloud.copies.resync
    return {
        "now": cloud.clock.monotonic(),
        "counters": {name: int(cloud.own.counters[name])
                     for name in ("updates", "joins", "gaps", "resyncs")},
        "replicas": len(cloud.copies.replicas),
        "frames_received": frames_received,
        "resync": {"runs": engine.stats.runs, "failures": engine.stats.failures,
                   "busy": engine.busy},
        "admission": {"admitted": admission.admitted, "refused": admission.refused,
                      "cost": admission.cost_admitted,
                      "recent": [[a.at, a.cost] for a in admission.recent]},
    }


# -- this process -----------------------------------------------------------------------------


@dataclass
class Census:
    """Where the stations are, as the sites and the cloud say."""

    stations: int
    online: int
    cached: int
    sites_joined: int

    def complete(self, run: Run) -> bool:
        return (self.stations == run.stations and self.online == run.stations
                and self.cached == run.stations and self.sites_joined == run.sites)


@dataclass
class Lab:
    """The processes of a run."""

    root: Path
    broker: ManagedProsody
    cloud: ChildProcess
    passwords: dict[str, str]
    sites: list[SiteProcess] = field(default_factory=list)
    broker_pids: list[int] = field(default_factory=list)  # the sites' Prosody

    async def census(self) -> Census:
        """Where the stations are. The digests (every station's, and every cloud copy's: a
        few hundred kilobytes to make, send and compare) are asked only once every station
        is online and every site joined: asked all along, the asking costs the processes
        measured a share of the CPU they connect with."""
        counts = await self.counts()
        if counts["admitted"] < counts["stations"] or counts["sites_joined"] < len(self.sites):
            return Census(stations=counts["stations"], online=counts["admitted"], cached=0,
                          sites_joined=counts["sites_joined"])
        answers = await asyncio.gather(*(site.ask("digests") for site in self.sites))
        copies = (await self.cloud.ask("digests"))["digests"]
        truth = {a: d for answer in answers for a, d in answer["digests"].items()}
        return Census(stations=len(truth), online=counts["admitted"],
                      cached=sum(copies.get(a) == d for a, d in truth.items()),
                      sites_joined=counts["sites_joined"])

    async def counts(self) -> dict[str, int]:
        """Stations, admitted, revisions and sites joined, without digests."""
        answers = await asyncio.gather(*(site.ask("census") for site in self.sites))
        return {"stations": sum(a["stations"] for a in answers),
                "admitted": sum(a["admitted"] for a in answers),
                "revisions": sum(a["revisions"] for a in answers),
                "sites_joined": sum(bool(a["joined"]) for a in answers)}

    async def pause(self, paused: bool) -> None:
        await asyncio.gather(*(site.ask("pause", paused=paused) for site in self.sites))

    def pids(self) -> dict[str, list[int]]:
        """The processes of each kind."""
        return {"site_process": [site.pid for site in self.sites],
                "site_broker": list(self.broker_pids),
                "cloud_csms": [self.cloud.pid],
                "cloud_broker": [pid] if (pid := self.broker.pid) is not None else []}

    def cpu(self) -> dict[str, float]:
        return {kind: total_cpu_seconds(pids) for kind, pids in self.pids().items()}

    def rss_mb(self) -> dict[str, float]:
        return {kind: total_rss_bytes(pids) / MB for kind, pids in self.pids().items()}

    async def stop_sites(self) -> None:
        """Stop every site process (each stops its actors, then its broker)."""
        await asyncio.gather(*(site.stop(timeout=60) for site in self.sites),
                             return_exceptions=True)
        self.sites, self.broker_pids = [], []

    async def close(self) -> None:
        await self.stop_sites()
        with contextlib.suppress(Exception):
            await self.cloud.stop()
        await self.broker.stop()


async def wait_complete(lab: Lab, run: Run, what: str, since: float) -> tuple[float, Census]:
    """Poll until every station is online and cached and every site joined; seconds since
    ``since`` (monotonic) when that was seen, and the last census."""
    shown = time.monotonic()
    while True:
        census = await lab.census()
        seen = time.monotonic()
        if census.complete(run):
            run.say(f"{what}: complete after {seen - since:.1f} s")
            return seen - since, census
        if seen - since > run.timeout_s:
            raise RuntimeError(f"{what}: not complete within {run.timeout_s:g} s: {census}")
        if seen - shown >= 2.0:
            shown = seen
            run.say(f"{what}: {census.online}/{run.stations} online, {census.cached} cached at "
                    f"the cloud, {census.sites_joined}/{run.sites} sites joined "
                    f"({seen - since:.0f} s)")
        await asyncio.sleep(0.25)  # a poll of other processes


def peak_per_second(admissions: list[tuple[float, int]], *, weighted: bool) -> int:
    """The most admissions (``weighted``: the most cost) within one second, over windows
    starting at each admission (``(time, cost)`` pairs in time order)."""
    best, total, j = 0, 0, 0
    for i, (start, _) in enumerate(admissions):
        while j < len(admissions) and admissions[j][0] < start + 1.0:
            total += admissions[j][1] if weighted else 1
            j += 1
        best = max(best, total)
        total -= admissions[i][1] if weighted else 1
    return best


def _per_1000(values: Mapping[str, float], stations: int) -> dict[str, float]:
    return {kind: round(value / stations * 1000, 1) for kind, value in values.items()}


async def start_lab(run: Run, root: Path) -> Lab:
    """The cloud's broker and the cloud CSMS's process (the sites come later)."""
    names = ["cloud", "operator", *(f"{kind}-site{k}" for k in range(1, run.sites + 1)
                                    for kind in ("local", "rm"))]
    passwords = {n: secrets.token_urlsafe(12) for n in names}
    broker = ManagedProsody(root / "broker-cloud", domain=cloud_domain(), component_domains=())
    run.say("starting the cloud's broker and the cloud CSMS...")
    await broker.start()
    try:
        broker.create_accounts({n: p for n, p in passwords.items() if not n.startswith("rm-")})
        h = Hierarchy(root, broker, {}, passwords)
        cloud_cfg = h.cloud_config().model_copy(update={
            "join_rate_per_s": run.join_rate_per_s, "join_burst": run.join_burst})
        spec = {"broker": h.config.model_dump(mode="json"),
                "cloud": cloud_cfg.model_dump(mode="json")}
        cloud = await ChildProcess.start("the cloud CSMS", ["-m", "bench.scale", "cloud",
                                                           json.dumps(spec)], root / "cloud.err")
    except BaseException:
        await broker.stop()
        raise
    return Lab(root, broker, cloud, passwords)


async def start_sites(lab: Lab, run: Run) -> None:
    """Every site's process, started together; returns when all are ready."""
    uplink = broker_config(lab.broker).model_dump(mode="json", exclude_defaults=True)

    async def one(k: int) -> SiteProcess:
        return await SiteProcess.start_site({
            "site": k, "stations": run.stations_per_site, "cloud": uplink,
            "passwords": lab.passwords, "root": str(lab.root / f"site{k}"), "paused": True,
            "seed": k, "tick_s": run.tick_s, "accounts": run.accounts,
        }, lab.root / f"site{k}.err", module="bench.scale", ready_timeout=run.timeout_s)

    started = await asyncio.gather(*(one(k) for k in range(1, run.sites + 1)),
                                   return_exceptions=True)
    lab.sites = [s for s in started if isinstance(s, SiteProcess)]
    for outcome in started:
        if isinstance(outcome, BaseException):
            raise outcome
    for site in lab.sites:
        pid = (await site.ask("pids"))["broker"]
        if pid is not None:
            lab.broker_pids.append(pid)


async def measure(run: Run, root: Path | None = None) -> dict[str, Any]:
    """Run the three phases (see the module docstring); returns the figures."""
    say = run.say
    with tempfile.TemporaryDirectory(prefix="bench-scale-") as tmp:
        base = Path(root) if root is not None else Path(tmp)
        base.mkdir(parents=True, exist_ok=True)
        lab = await start_lab(run, base)
        try:
            return await _phases(lab, run)
        finally:
            say("stopping...")
            await lab.close()


async def _phases(lab: Lab, run: Run) -> dict[str, Any]:
    out: dict[str, Any] = {"sites": run.sites, "stations": run.stations,
                           "station_links": "accounts" if run.accounts else "component"}
    out |= await connect(lab, run)
    out |= await steady(lab, run)
    out |= await storm(lab, run)
    if run.restart:
        out |= await restart(lab, run)
    out["join_rate_per_s"], out["join_burst"] = run.join_rate_per_s, run.join_burst
    return out


async def connect(lab: Lab, run: Run) -> dict[str, Any]:
    """Phase 1: every site process started together, until all is joined and cached."""
    run.say(f"starting {run.sites} site processes of {run.stations_per_site} stations each...")
    t0, cpu0 = time.monotonic(), lab.cpu()
    await start_sites(lab, run)
    out: dict[str, Any] = {"sites_started_s": round(time.monotonic() - t0, 2)}
    run.say(f"every site process started after {out['sites_started_s']} s")
    connect_s, census = await wait_complete(lab, run, "connect", t0)
    out["connect_all_s"] = round(connect_s, 2)
    # the site processes and their brokers did not exist at t0: all they used is the connect's
    out["connect_cpu_s"] = _cpu_since(lab, cpu0)
    out["online"], out["cached_at_cloud"] = census.online, census.cached
    out["rss_mb_connected"] = {k: round(v, 1) for k, v in lab.rss_mb().items()}
    return out


async def steady(lab: Lab, run: Run) -> dict[str, Any]:
    """Phase 2: stations ticking; what the cloud applies, CPU and memory."""
    run.say(f"stations ticking every {run.tick_s:g} s; {run.warmup_s:g} s warm-up, then "
            f"{run.steady_s:g} s measured...")
    await lab.pause(False)
    # a site that lagged while it connected runs its periodic work coarser until it has
    # been calm for a while (broker_bridge.pace): measure the fleet ticking as planned
    paces: list[int] = []

    async def on_time() -> bool:
        paces[:] = [(await site.ask("status"))["pace"] for site in lab.sites]
        return max(paces) == 1

    waited = time.monotonic()
    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(run.pace_timeout_s):
            while not await on_time():
                await asyncio.sleep(1.0)  # the sites' pace relaxes in steps of seconds
    run.say(f"  sites on pace after {time.monotonic() - waited:.0f} s (stretch {max(paces)})")
    await asyncio.sleep(run.warmup_s)  # the wall time the phase is made of
    before, counts0, cpu0 = await lab.cloud.ask("stats"), await lab.counts(), lab.cpu()
    busy0, wall0 = machine_busy_seconds(), time.monotonic()
    await asyncio.sleep(run.steady_s)
    after, counts1, cpu1 = await lab.cloud.ask("stats"), await lab.counts(), lab.cpu()
    busy1, wall = machine_busy_seconds(), time.monotonic() - wall0
    backlogs = await asyncio.gather(*(site.ask("backlog") for site in lab.sites))
    updates = after["counters"]["updates"] - before["counters"]["updates"]
    cpu = {kind: round((cpu1[kind] - cpu0[kind]) / wall, 3) for kind in KINDS}
    rss = lab.rss_mb()
    return {
        "pace_at_steady": max(paces),  # 1: every site's periodic work on time
        "updates_per_s_sustained": round(updates / wall, 1),
        "updates_per_s_offered": round((counts1["revisions"] - counts0["revisions"]) / wall, 1),
        "frames_per_s_at_cloud": round(
            (after["frames_received"] - before["frames_received"]) / wall, 1),
        "cloud_cpu_ms_per_update": round((cpu1["cloud_csms"] - cpu0["cloud_csms"]) * 1000
                                         / updates, 3) if updates else None,
        "cpu_share": cpu,
        "broker_cpu_share": round(cpu["site_broker"] + cpu["cloud_broker"], 3),
        "machine_cpu_share": round((busy1 - busy0) / wall, 3),
        "rss_mb": {k: round(v, 1) for k, v in rss.items()},
        "rss_mb_per_1000_stations": _per_1000(rss, run.stations),
        # what waits in the sites at the end of it (summed over the sites)
        "steady_backlog": {key: sum(b[key] for b in backlogs) for key in backlogs[0]},
    }


async def storm(lab: Lab, run: Run) -> dict[str, Any]:
    """Phase 3: the cloud's broker SIGKILLed while stations tick, then started again."""
    run.say(f"SIGKILLing the cloud's broker; starting it again in {run.outage_s:g} s...")
    lab.broker.kill()
    await asyncio.sleep(run.outage_s)  # the outage: stations tick, the cloud's copies fall behind
    await lab.pause(True)
    before, cpu0 = await lab.cloud.ask("stats"), lab.cpu()
    t0 = time.monotonic()
    await lab.broker.start()
    out: dict[str, Any] = {"cloud_broker_start_s": round(time.monotonic() - t0, 2)}
    seconds, census = await wait_complete(lab, run, "storm", t0)
    out["reconnect_storm_s"] = round(seconds, 2)
    out |= _joins("storm", before, await lab.cloud.ask("stats"))
    out["storm_cpu_s"] = _cpu_since(lab, cpu0)
    out["online"], out["cached_at_cloud"] = census.online, census.cached
    return out


async def restart(lab: Lab, run: Run) -> dict[str, Any]:
    """Phase 4: every site process stopped and started again on its state (stations paused):
    the whole fleet reconnecting, with nothing to catch up but what their start changed."""
    run.say("stopping every site process, then starting them again on their state...")
    await lab.stop_sites()
    before = await lab.cloud.ask("stats")
    t0, cpu0 = time.monotonic(), lab.cpu()
    await start_sites(lab, run)
    seconds, census = await wait_complete(lab, run, "restart", t0)
    out: dict[str, Any] = {"restart_all_s": round(seconds, 2)}
    out |= _joins("restart", before, await lab.cloud.ask("stats"))
    out["restart_cpu_s"] = _cpu_since(lab, cpu0)
    out["online"], out["cached_at_cloud"] = census.online, census.cached
    return out


def _joins(phase: str, before: Answer, after: Answer) -> dict[str, Any]:
    """What the cloud admitted and refused between two of its stats, and resynchronised."""
    admitted = [(at, cost) for at, cost in after["admission"]["recent"] if at >= before["now"]]
    return {
        f"{phase}_joins": len(admitted),
        f"{phase}_peak_joins_per_s": peak_per_second(admitted, weighted=False),
        f"{phase}_peak_join_cost_per_s": peak_per_second(admitted, weighted=True),
        f"{phase}_join_cost": sum(cost for _, cost in admitted),
        f"{phase}_refused": after["admission"]["refused"] - before["admission"]["refused"],
        f"{phase}_resyncs": after["resync"]["runs"] - before["resync"]["runs"],
    }


def _cpu_since(lab: Lab, before: Mapping[str, float]) -> dict[str, float]:
    """CPU seconds per process kind since ``before`` (processes started since count whole;
    those stopped since are not counted)."""
    now = lab.cpu()
    return {kind: round(max(0.0, now[kind] - before.get(kind, 0.0)), 1) for kind in KINDS}


# -- the command line -----------------------------------------------------------------------


def render(f: dict[str, Any]) -> str:
    """The figures as a table: one line each, then those per process kind in columns."""
    lines = [f"{f['stations']} stations on {f['sites']} sites (a process and a Prosody each; "
             f"stations on {f['station_links']} connections), one cloud CSMS process, one "
             f"cloud Prosody"]
    lines += [f"{key:<32}{value}" for key, value in f.items()
              if not isinstance(value, dict) and key not in ("stations", "sites")]
    lines.append(f"{'':<32}" + "".join(f"{kind:>14}" for kind in KINDS))
    lines += [f"{key:<32}" + "".join(f"{value[kind]:>14}" for kind in KINDS)
              for key, value in f.items() if isinstance(value, dict) and KINDS[0] in value]
    lines += [f"{key:<32}{json.dumps(value)}" for key, value in f.items()
              if isinstance(value, dict) and KINDS[0] not in value]
    return "\n".join(lines)


def _child(kind: str, spec: dict[str, Any]) -> int:
    """Run a site's or the cloud's process; with ``CSMS_BENCH_PROFILE`` set to a directory,
    under cProfile, its statistics written there as ``<kind><n>.prof`` when it stops."""
    run = (run_site(spec, site_commands) if kind == "site" else run_cloud(spec))
    folder = os.environ.get("CSMS_BENCH_PROFILE")
    if not folder:
        return asyncio.run(run)
    import cProfile

    profile = cProfile.Profile()
    try:
        return profile.runcall(asyncio.run, run)
    finally:
        profile.dump_stats(Path(folder) / f"{kind}{spec.get('site', '')}.prof")


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] in (["site"], ["cloud"]):
        return _child(argv[0], json.loads(argv[1]))
    parser = argparse.ArgumentParser(prog="csms bench scale", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sites", type=int, default=None, help="default 10 (quick: 2)")
    parser.add_argument("--stations-per-site", type=int, default=None,
                        help="default 500 (quick: 100)")
    parser.add_argument("--tick-s", type=float, default=None,
                        help="each station ticks (and publishes) this often (default 10 s: "
                             "5,000 stations offer 500 updates/s; quick: 1 s)")
    parser.add_argument("--steady-s", type=float, default=None, help="default 30 (quick: 10)")
    parser.add_argument("--warmup-s", type=float, default=5.0)
    parser.add_argument("--outage-s", type=float, default=None,
                        help="how long the cloud's broker is down (default 10 s: every station "
                             "ticks meanwhile; quick: 2)")
    parser.add_argument("--join-rate", type=float, default=Run.join_rate_per_s,
                        help="the cloud's admission limit, in join cost per second (a join "
                             "costs 1 plus 1 per copy to resynchronise; 0: no limit; default "
                             "%(default)s, the cloud's)")
    parser.add_argument("--join-burst", type=float, default=Run.join_burst)
    parser.add_argument("--accounts", action="store_true",
                        help="each station on an account and connection of its own, not on "
                             "its site's component connection")
    parser.add_argument("--no-restart", action="store_true",
                        help="skip the last phase (every site process restarted on its state)")
    parser.add_argument("--timeout-s", type=float, default=300.0)
    parser.add_argument("--state-dir", default=None,
                        help="keep every process's state and log here (default: a temporary "
                             "directory)")
    parser.add_argument("--quick", action="store_true",
                        help="2 sites of 100 stations ticking every second, 10 s steady, 2 s "
                             "outage")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    args = parser.parse_args(argv)
    quick = args.quick
    run = Run(sites=args.sites or (2 if quick else 10),
              stations_per_site=args.stations_per_site or (100 if quick else 500),
              tick_s=args.tick_s or (1.0 if quick else 10.0), warmup_s=args.warmup_s,
              steady_s=args.steady_s if args.steady_s is not None else (10.0 if quick else 30.0),
              outage_s=args.outage_s if args.outage_s is not None else (2.0 if quick else 10.0),
              join_rate_per_s=args.join_rate or None, join_burst=args.join_burst,
              accounts=args.accounts, restart=not args.no_restart, timeout_s=args.timeout_s,
              say=lambda message: print(f"  {message}", file=sys.stderr, flush=True))
    logging.basicConfig(level=logging.ERROR, stream=sys.stderr)
    figures = asyncio.run(_main(run, Path(args.state_dir) if args.state_dir else None))
    print(json.dumps(figures) if args.json else render(figures))
    return 0 if figures["online"] == figures["cached_at_cloud"] == run.stations else 1


async def _main(run: Run, root: Path | None) -> dict[str, Any]:
    """``measure``, stopped cleanly (every child and broker) on Ctrl-C or SIGTERM."""
    task = asyncio.current_task()
    assert task is not None
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, task.cancel)
    return await measure(run, root)


if __name__ == "__main__":
    try:
        sys.exit(main())
    except asyncio.CancelledError:
        print("csms bench scale: interrupted; everything it started is stopped",
              file=sys.stderr)
        sys.exit(130)
