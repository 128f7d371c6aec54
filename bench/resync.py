"""Resynchronisation after a cloud CSMS restart (DESIGN.md section 7), on the managed Prosody.

    python -m bench.resync [--stations 1000] [--changed 1%] [--sites 4] [--seed 1] [--json]
                                                               (also: csms bench resync)

*Scenario.* ``--sites`` local CSMS, each with its share of ``--stations`` simulated stations
on one component connection, all in this process; the cloud CSMS runs in a child process
(``python -m bench.resync cloud --config FILE``: ``actors.app.wiring.start_cloud`` from the same
TOML file ``csms cloud`` reads, plus a stats file with its resync engine's and its link's
counters) so that it can be SIGKILLed and restarted on the same state directory. Stations are
paused (no simulated ticks): only what the bench writes changes.

1. *Initial sync.* Everything starts; an operator polls the cloud with batched discovery
   requests until the root digest of every copy equals the station's visible digest.
2. *Same epoch.* The cloud is SIGKILLed. In every station ``--changed`` of the leaves (of all
   stations together: each station gets the same count, give or take one) are set to new valid
   values in one transaction: readable float leaves (not permissions, which the site manages)
   picked with a seeded RNG, moved by up to 5% (at least 1 unit) and rounded to 0.01, within
   their type's range. The stations publish, the local CSMS copies follow (the cloud misses
   it all), then the cloud restarts and catches up through the sites with ``changes_since``.
3. *New epochs (digest descent).* The cloud is SIGKILLed again. Every station is stopped and
   restarted with a tree of a new epoch (as if its storage had been wiped) holding its current
   content with another ``--changed`` of its leaves changed; each site resynchronises its
   stations by digest descent, then the cloud restarts and, its copies having the old epochs,
   resynchronises every station by digest descent through the sites.

*Figures* (each restart; the ``_digest_descent`` keys are the same for step 3):

``seconds``           from starting the cloud's process until every copy is consistent (the
                      operator's poll that saw the last one: once a second while the cloud's
                      engine is busy, at once when it is idle); ``cloud_start_seconds`` of it
                      is the process start until ``start_cloud`` returned
``floor_bytes``       the floor: for every leaf that differs from what the killed cloud's
                      persisted copy holds (read from a copy of its SQLite file),
                      ``len(msgpack.packb([str(path), value]))`` (a deleted path:
                      ``len(msgpack.packb(str(path)))``), summed over all stations. Same
                      epoch: ``changes_since(persisted revision, visible=True)`` of the
                      station; new epoch: the visible leaves whose value differs
``resync_bytes``      what the cloud's resync engine exchanged (requests and answers), as the
                      deflated frames carry it, before XMPP's base64 (its ``wire_bytes``)
``ratio``             ``resync_bytes / floor_bytes``
``resync_envelope_bytes``  the same exchanges as encoded envelopes, uncompressed
``resync_bytes_counter``   the cloud's persisted ``counters/resync_wire_bytes`` after minus
                      before: a cross-check of ``resync_bytes`` through the operator API
``link_bytes``, ``link_frames``  every frame to or from the cloud's connection after its
                      restart, less the operator's polling: resync, joins, heartbeats, and
                      what the broker had stored for the cloud while it was down (the sites'
                      relayed updates, which may also bring a copy up to date: then that part
                      of the catch-up is not in ``resync_bytes``, see ``updates_applied``);
                      ``link_ratio`` is ``link_bytes / floor_bytes``, the all-in figure
``resync_stanza_bytes_estimate``  ``resync_bytes`` × 4/3 (base64) plus the XML around each
                      stanza (measured on the cloud's sent stanzas) × ``link_frames``: an
                      estimate of what the XML stream carries
``consistent``        true only if, after the restart, every copy's root digest at the cloud
                      equals the station's visible digest (a final poll of all of them)
``ocpp_full_report_bytes`` / ``_deflated_bytes``  what OCPP 2.0.1 spends to re-learn the same
                      stations with GetBaseReport(FullInventory) (``bench.ocpp_baseline``),
                      computed for ``ocpp_estimated_from`` stations spread over the fleet and
                      scaled to all (the trees have the same shape; ~0.1 s each)

Progress goes to stderr. Benchmarks are not pass/fail: the exit status is 0 when both
resynchronisations ended consistent.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import math
import os
import random
import shutil
import signal
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import msgpack

from actors.app.config import load_config
from actors.app.hierarchy import Hierarchy, Say, simulated
from actors.app.signing import Signing
from actors.app.wiring import Running, settle_heap, start_cloud
from actors.csms.cloud import CloudCsms
from actors.logic.station.simulation import SimulationConfig
from actors.runtime.storage.trees import TreeStore
from actors.station.actor import ChargingStation
from actors.station.simulated import SimulatedStation, SimulatorSettings
from actors.testing import until
from bench.ocpp_baseline import full_report_bytes
from keypath import KeyPath
from object_model import ObjectTree, PermissiveSchema, Write
from object_model.csms_model import csms_schema
from object_model.messages import (
    PropertyValueRead,
    PropertyValueReadResponse,
)
from object_model.station import station_schema
from object_model.types import FloatType

OCPP_SAMPLE = 10
COUNTERS = ("resync_wire_bytes", "resync_bytes", "resyncs", "updates", "gaps", "joins")


# -- the cloud, as a child process ------------------------------------------------------------


async def run_cloud_child(config_path: Path, stats_path: Path) -> int:
    """``start_cloud`` from the TOML file, then write the stats file every 0.1 s until
    SIGTERM/SIGINT (a SIGKILL simply ends it)."""
    logging.basicConfig(level=os.environ.get("CSMS_BENCH_LOG", "WARNING"), stream=sys.stderr,
                        format="%(asctime)s %(name)s %(levelname)s %(message)s")
    config = load_config(config_path)
    assert config.cloud is not None, f"{config_path} has no [cloud] section"
    started = time.time()
    running = await start_cloud(config.broker, config.cloud,
                                signing=Signing.of(config.signing))
    ready = time.time()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    try:
        while not stop.is_set():
            _write_stats(stats_path, running, started, ready)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), 0.1)
    finally:
        await running.stop()
    return 0


def _write_stats(path: Path, running: Running, started: float, ready: float) -> None:
    actor = running.actors[0]
    assert isinstance(actor, CloudCsms)
    endpoint = running.endpoint
    engine = actor.copies.resync
    stats = engine.stats
    stats_out = {
        "pid": os.getpid(), "started": started, "ready": ready, "now": time.time(),
        "replicas": len(actor.copies.replicas),
        "resync": {"runs": stats.runs, "failures": stats.failures,
                   "bytes": stats.bytes, "wire_bytes": stats.wire_bytes,
                   "by_mode": {mode: {"runs": runs,
                                      "wire_bytes": round(stats.wire_bytes_by_mode[mode]),
                                      "leaves": stats.leaves_by_mode[mode]}
                               for mode, runs in stats.by_mode.items()},
                   "busy": engine.busy},
        "rejected": actor.rejected,
        # live counts, kept in memory (the own tree gets them every few seconds)
        "counters": {name: int(actor.own.counters[name]) for name in COUNTERS},
        "link": {"frames_sent": endpoint.frames_sent, "bytes_sent": endpoint.bytes_sent,
                 "frames_received": endpoint.session.counters.received_frames,
                 "bytes_received": endpoint.session.counters.received_bytes,
                 "stanza_bytes_sent": getattr(endpoint.transport, "bytes_sent", 0)},
    }
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(stats_out))
    os.replace(tmp, path)


# -- changing stations ------------------------------------------------------------------------


def numeric_leaves(tree: ObjectTree) -> list[tuple[KeyPath, FloatType]]:
    """Readable float leaves (plain numbers a bench may move within their type's range), but
    not operational permissions: the local CSMS would set those back to its site policy."""
    out = []
    for path, _, value in tree.leaves():
        if (type(value) is not float or "permissions" in path.segments
                or not tree.leaf_schema(path).access.readable):
            continue
        kind = tree.schema.type_at(path)
        if isinstance(kind, FloatType):
            out.append((path, kind))
    return out


def new_value(kind: FloatType, old: float, rng: random.Random) -> float:
    """A valid value of ``kind`` different from ``old`` (after float32 rounding)."""
    for _ in range(50):
        span = max(abs(old) * 0.05, 1.0)
        value = min(max(round(old + rng.uniform(-span, span), 2), kind.lo), kind.hi)
        if kind.validate(value) != old:
            return value
    return kind.lo if old != kind.lo else kind.hi


def change_counts(sizes: list[int], fraction: float, rng: random.Random) -> list[int]:
    """How many leaves to change in each tree: ``fraction`` of all leaves together, spread
    evenly (each tree gets the same count, give or take one)."""
    target = round(fraction * sum(sizes))
    base, extra = divmod(target, len(sizes))
    lucky = set(rng.sample(range(len(sizes)), extra))
    return [base + (i in lucky) for i in range(len(sizes))]


def change_tree(tree: ObjectTree, count: int, rng: random.Random) -> int:
    """Set ``count`` random numeric leaves to new values in one transaction; how many
    changed."""
    candidates = numeric_leaves(tree)
    picked = rng.sample(candidates, min(count, len(candidates)))
    if not picked:
        return 0
    event = tree.apply([Write(path, new_value(kind, tree.get(path), rng))
                        for path, kind in picked])
    return len(event.upserts)


def pack_size(path: KeyPath, value: Any) -> int:
    return len(msgpack.packb([str(path), value]))


def floor_since(tree: ObjectTree, revision: int) -> int:
    """The floor for a copy of ``tree`` at ``revision`` (same epoch)."""
    changes = tree.changes_since(revision, visible=True)
    return sum(pack_size(p, v) for p, _, v in changes.upserts) + sum(
        len(msgpack.packb(str(p))) for p, _ in changes.deletes)


def floor_between(copy: ObjectTree, tree: ObjectTree) -> int:
    """The floor for ``copy`` to become ``tree``'s visible content (any epochs)."""
    total = 0
    seen = set()
    for path, _, value in tree.leaves():
        if not tree.leaf_schema(path).access.readable:
            continue
        seen.add(path)
        if not copy.is_leaf(path) or copy.get(path) != value:
            total += pack_size(path, value)
    for path, _, _ in copy.leaves():
        if path not in seen:
            total += len(msgpack.packb(str(path)))
    return total


# -- the hierarchy ----------------------------------------------------------------------------


class ResyncLab(Hierarchy):
    """The shared hierarchy harness, with what this benchmark watches: the cloud runs as
    ``python -m bench.resync cloud`` and writes its figures to ``stats_path``."""

    @property
    def cloud_dir(self) -> Path:
        return self.root / "cloud"

    @property
    def stats_path(self) -> Path:
        return self.root / "cloud-stats.json"

    async def start_cloud_child(self) -> float:
        """Start the cloud's process; returns the wall time it was started at, once its
        ``start_cloud`` returned."""
        self.stats_path.unlink(missing_ok=True)
        spawned = time.time()
        await self.spawn_cloud(("-m", "bench.resync", "cloud"), "--stats",
                               str(self.stats_path), ready=None)

        def started() -> bool:
            self.check_cloud()
            return self.stats_path.exists()

        try:
            await until(started, "the cloud's start", 60)
        except AssertionError:
            raise RuntimeError(f"the cloud did not start within 60 s: {self.cloud_err()}") from None
        return spawned

    def cloud_stats(self) -> dict[str, Any]:
        return json.loads(self.stats_path.read_text())

    async def start_sites(self, stations: int, sites: int) -> None:
        base, extra = divmod(stations, sites)
        # a tick of an hour and no arrivals: nothing changes but what the bench writes
        still = SimulatorSettings(tick_s=3600.0,
                                  simulation=SimulationConfig(arrivals_per_evse_hour=0.0))
        for k in range(1, sites + 1):
            await self.start_site(k, base + (k <= extra), simulator=still, seed=1000 * k,
                                  paused=True)
        self.say(f"{len(self.stations())}/{stations} stations started on {sites} sites")

    def operator_link(self) -> tuple[int, int]:
        """Frames and bytes the operator exchanged (all of it with the cloud)."""
        ep = self.operator_endpoint
        if ep is None:
            return 0, 0
        return (ep.frames_sent + ep.session.counters.received_frames,
                ep.bytes_sent + ep.session.counters.received_bytes)

    async def cloud_counters(self) -> dict[str, int]:
        operator = await self.operator()
        answer = await operator.request("cloud", PropertyValueRead(
            paths=[KeyPath("counters", name) for name in COUNTERS]), timeout=10)
        assert isinstance(answer, PropertyValueReadResponse)
        return {p.segments[-1]: int(v) for p, _, v in answer.values}

    async def wait_cloud_consistent(self, label: str, since: float, timeout: float) -> float:
        """Poll until every cloud copy equals its station; seconds since ``since`` (wall
        time) when the last one was seen consistent.

        A poll of 1,000 copies keeps the cloud busy for tens of milliseconds, so while the
        cloud's stats file shows its resync engine at work the operator asks only once a
        second; as soon as the engine is idle it asks at once (then every 50 ms)."""
        pending = sorted(self.expected_digests())
        total, shown, asked = len(pending), time.monotonic(), -math.inf
        deadline = time.monotonic() + timeout
        while True:
            self.check_cloud()
            engine = self.cloud_stats()["resync"]
            if engine["busy"] and time.monotonic() - asked < 1.0:
                await asyncio.sleep(0.02)
                continue
            asked = time.monotonic()
            expected = self.expected_digests()  # they may still change (site permissions)
            digests = await self.cloud_digests(pending)
            pending = [i for i in pending if digests[i] != expected[i]]
            seen = time.time()
            if not pending:
                pending = [i for i, d in (await self.cloud_digests(sorted(expected))).items()
                           if d != expected[i]]  # all of them again: none went back
            if not pending:
                self.say(f"{label}: {total}/{total} copies consistent after "
                         f"{seen - since:.2f} s")
                return seen - since
            if time.monotonic() - shown >= 1.0:
                shown = time.monotonic()
                self.say(f"{label}: {total - len(pending)}/{total} copies consistent "
                         f"({engine['runs']} resyncs done, {engine['busy']} under way)")
            if time.monotonic() > deadline:
                raise RuntimeError(f"{label}: {len(pending)} of {total} cloud copies still "
                                   f"differ after {timeout:g} s (e.g. {pending[:3]})")
            await asyncio.sleep(0.05)

    async def wait_local_consistent(self, label: str, timeout: float) -> None:
        total = len(self.stations())
        deadline, shown = time.monotonic() + timeout, time.monotonic()
        while (ok := self.local_consistent_count()) < total:
            if time.monotonic() > deadline:
                raise RuntimeError(f"{label}: only {ok}/{total} local copies consistent after "
                                   f"{timeout:g} s")
            if time.monotonic() - shown >= 1.0:
                shown = time.monotonic()
                self.say(f"{label}: {ok}/{total} local copies consistent")
            await asyncio.sleep(0.05)
        self.say(f"{label}: {total}/{total} local copies consistent")

    async def wait_cloud_quiet(self, timeout: float = 15.0) -> dict[str, Any]:
        """Until the cloud has no resync running and its counters held still for 1 s (so
        that what it holds is on disk); returns its last stats."""
        deadline = time.monotonic() + timeout
        last, since = None, time.monotonic()
        while True:
            self.check_cloud()
            stats = self.cloud_stats()
            state = (stats["resync"]["busy"], stats["resync"]["runs"], stats["counters"],
                     stats["replicas"], stats["link"]["frames_received"])
            if state != last:
                last, since = state, time.monotonic()
            elif stats["resync"]["busy"] == 0 and time.monotonic() - since >= 1.0:
                return stats
            if time.monotonic() > deadline:
                return stats
            await asyncio.sleep(0.1)

    async def persisted_copies(self) -> tuple[dict[str, ObjectTree], dict[str, int]]:
        """The killed cloud's persisted copies and counters (from a copy of its files)."""
        copy = self.root / "cloud-db-copy"
        shutil.rmtree(copy, ignore_errors=True)
        copy.mkdir()
        for name in ("trees.db", "trees.db-wal", "trees.db-shm"):
            if (self.cloud_dir / name).exists():
                shutil.copy(self.cloud_dir / name, copy / name)
        trees: dict[str, ObjectTree] = {}
        async with TreeStore(copy / "trees.db") as store:
            for station in self.stations():
                tree = await store.load(f"stations/{station.address}", PermissiveSchema())
                if tree is not None:
                    trees[station.address] = tree
            own = await store.load("self", csms_schema())
        counters = {name: int(own.get(f"counters/{name}")) if own is not None else 0
                    for name in COUNTERS}
        shutil.rmtree(copy, ignore_errors=True)
        return trees, counters

    async def renew_epochs(self, fraction: float, rng: random.Random) -> int:
        """Restart every station with a tree of a new epoch holding its content with
        ``fraction`` of the leaves changed (as if its storage had been wiped and it had
        re-learnt almost everything); returns how many leaves changed."""
        stations = self.stations()
        counts = change_counts([len(s.tree) for s in stations], fraction, rng)  # type: ignore[arg-type]
        changed, done, total = 0, 0, len(stations)
        schema = station_schema()
        for site in self.sites:
            for index, old in enumerate(list(site.stations)):
                assert old.tree is not None
                await old.stop()  # detaches its tree from the store
                fresh = ObjectTree(schema, epoch=rng.getrandbits(63))
                fresh.apply([Write(p, v) for p, _, v in old.tree.leaves()])
                changed += change_tree(fresh, counts[done], rng)
                await old.store.save_snapshot(old.address, fresh)
                hardware = SimulatedStation(simulated(old).settings)
                hardware.paused = True
                host = site.hosts[0]
                station = ChargingStation(old.address, host.endpoint, store=old.store,
                                          settings=old.settings, hardware=hardware,
                                          credentials=old.credentials)
                await station.start()
                assert station.tree is not None and station.tree.epoch == fresh.epoch
                host.actors[index] = station
                done += 1
                if done % 100 == 0 or done == total:
                    self.say(f"{done}/{total} stations restarted with a new epoch")
        settle_heap()  # as start_stations does for the trees it loads
        return changed


# -- one measured restart ---------------------------------------------------------------------


async def measure_restart(h: ResyncLab, label: str, floor: int, counter_base: dict[str, int],
                          timeout: float) -> dict[str, Any]:
    """Start the cloud and measure its resynchronisation until every copy is consistent."""
    h.say(f"{label}: restarting the cloud CSMS")
    op_frames0, op_bytes0 = h.operator_link()
    spawned = await h.start_cloud_child()
    seconds = await h.wait_cloud_consistent(label, spawned, timeout)
    stats = await h.wait_cloud_quiet()
    consistent = await h.cloud_consistent()
    counters = await h.cloud_counters()
    stats = h.cloud_stats()
    op_frames1, op_bytes1 = h.operator_link()
    link = stats["link"]
    frames = (link["frames_sent"] + link["frames_received"]) - (op_frames1 - op_frames0)
    link_bytes = (link["bytes_sent"] + link["bytes_received"]) - (op_bytes1 - op_bytes0)
    xml = ((link["stanza_bytes_sent"] - link["bytes_sent"] * 4 / 3) / link["frames_sent"]
           if link["frames_sent"] else 0.0)
    wire = stats["resync"]["wire_bytes"]
    return {
        "seconds": round(seconds, 3),
        "cloud_start_seconds": round(stats["ready"] - spawned, 3),
        "resync_bytes": round(wire),
        "resync_envelope_bytes": round(stats["resync"]["bytes"]),
        "resync_bytes_counter": counters["resync_wire_bytes"] - counter_base["resync_wire_bytes"],
        "resync_stanza_bytes_estimate": round(wire * 4 / 3 + xml * frames),
        "floor_bytes": floor,
        "ratio": round(wire / floor, 3) if floor else None,
        "link_bytes": link_bytes,
        "link_frames": frames,
        "link_ratio": round(link_bytes / floor, 3) if floor else None,
        "resyncs": stats["resync"]["runs"],
        "resync_failures": stats["resync"]["failures"],
        "resync_modes": stats["resync"]["by_mode"],
        "updates_applied": counters["updates"] - counter_base["updates"],
        "site_joins": counters["joins"] - counter_base["joins"],
        "messages_refused": stats["rejected"],
        "consistent": consistent,
    }


def ocpp_figures(stations: list[ChargingStation]) -> dict[str, Any]:
    step = max(1, len(stations) // OCPP_SAMPLE)
    sample = stations[::step][:OCPP_SAMPLE]
    figures = [full_report_bytes(s.tree, s.address) for s in sample]  # type: ignore[arg-type]
    scale = len(stations) / len(sample)
    return {
        "ocpp_full_report_bytes": round(sum(f["json_bytes"] for f in figures) * scale),
        "ocpp_full_report_deflated_bytes": round(sum(f["deflated_bytes"] for f in figures)
                                                 * scale),
        "ocpp_estimated_from": len(sample),
    }


async def run_resync(stations: int = 1000, changed: float = 0.01, sites: int = 4,
                     seed: int = 1, state_dir: Path | None = None, progress: Say | None = None,
                     timeout: float = 600.0, signed: bool = False) -> dict[str, Any]:
    """Run the whole scenario (see the module docstring); returns the figures. ``signed``:
    every actor signs (state traffic of the sites' uplinks one signature per frame),
    joins and writes are encrypted, stations enroll with certificates, as in the demo."""
    if stations < 1 or sites < 1 or sites > stations:
        raise ValueError("need at least one station per site")
    if not 0 < changed <= 1:
        raise ValueError("--changed must be in (0, 1]")
    say = progress or (lambda _: None)
    rng = random.Random(seed)
    with tempfile.TemporaryDirectory(prefix="csms-bench-resync-") as tmp:
        root = Path(state_dir) if state_dir is not None else Path(tmp)
        root.mkdir(parents=True, exist_ok=True)
        began = time.monotonic()
        h = await ResyncLab.start(root, sites=sites, say=say, signing=signed,
                                  certificates=signed)
        try:
            await h.start_cloud_child()
            await h.start_sites(stations, sites)
            started = time.monotonic() - began
            sync_start = time.time()
            await h.wait_cloud_consistent("initial sync", sync_start, timeout)
            initial = time.time() - sync_start
            await h.wait_cloud_quiet()
            leaves = sum(len(s.tree) for s in h.stations())  # type: ignore[arg-type]

            # same epoch: changes_since
            await h.kill_cloud()
            counts = change_counts([len(s.tree) for s in h.stations()], changed, rng)  # type: ignore[arg-type]
            n_changed = sum(change_tree(s.tree, c, rng)  # type: ignore[arg-type]
                            for s, c in zip(h.stations(), counts, strict=True))
            say(f"changed {n_changed} of {leaves} leaves ({n_changed / leaves:.2%}), one "
                f"transaction per station")
            copies, base = await h.persisted_copies()
            floor = sum(floor_since(s.tree, copies[s.address].revision)  # type: ignore[arg-type]
                        if s.address in copies else floor_between(ObjectTree(PermissiveSchema()),
                                                                  s.tree)  # type: ignore[arg-type]
                        for s in h.stations())
            await h.wait_local_consistent("same epoch", timeout)
            same = await measure_restart(h, "same epoch", floor, base, timeout)
            await h.wait_cloud_quiet()

            # new epochs: digest descent
            await h.kill_cloud()
            n_changed_descent = await h.renew_epochs(changed, rng)
            copies, base = await h.persisted_copies()
            empty = ObjectTree(PermissiveSchema())
            floor_descent = sum(floor_between(copies.get(s.address, empty), s.tree)  # type: ignore[arg-type]
                                for s in h.stations())
            await h.wait_local_consistent("new epochs", timeout)
            descent = await measure_restart(h, "new epochs", floor_descent, base, timeout)

            say(f"OCPP 2.0.1 GetBaseReport for {OCPP_SAMPLE} stations...")
            ocpp = ocpp_figures(h.stations())
        finally:
            say("stopping...")
            await h.close()
    figures: dict[str, Any] = {
        "stations": stations, "sites": sites, "leaves": leaves, "signed": signed,
        "changed_fraction": changed, "changed_leaves": n_changed,
        "changed_leaves_digest_descent": n_changed_descent,
        "start_seconds": round(started, 2), "initial_sync_seconds": round(initial, 2),
    }
    figures |= same
    figures |= {f"{key}_digest_descent": value for key, value in descent.items()}
    figures |= ocpp
    figures["ocpp_vs_resync"] = (round(ocpp["ocpp_full_report_deflated_bytes"]
                                       / same["resync_bytes"], 1)
                                 if same["resync_bytes"] else None)
    return figures


# -- the command line ----------------------------------------------------------------------


def parse_fraction(text: str) -> float:
    text = text.strip()
    try:
        value = float(text[:-1]) / 100 if text.endswith("%") else float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a fraction: {text!r} (say 1% or 0.01)") from None
    if not 0 < value <= 1 or math.isnan(value):
        raise argparse.ArgumentTypeError(f"{text!r} is not within (0, 100%]")
    return value


def _modes(by_mode: dict[str, dict[str, int]]) -> str:
    return " ".join(f"{mode[0]}{entry['runs']}" for mode, entry in sorted(by_mode.items()))


def render(f: dict[str, Any]) -> str:
    rows = [
        ("", "same epoch", "new epochs"),
        ("resync", "changes_since", "digest descent"),
        ("changed leaves", f["changed_leaves"], f["changed_leaves_digest_descent"]),
        ("seconds to consistency", f["seconds"], f["seconds_digest_descent"]),
        ("  of which cloud start", f["cloud_start_seconds"],
         f["cloud_start_seconds_digest_descent"]),
        ("resync bytes (wire)", f["resync_bytes"], f["resync_bytes_digest_descent"]),
        ("floor bytes", f["floor_bytes"], f["floor_bytes_digest_descent"]),
        ("ratio to floor", f["ratio"], f["ratio_digest_descent"]),
        ("resync envelope bytes", f["resync_envelope_bytes"],
         f["resync_envelope_bytes_digest_descent"]),
        ("stanza bytes (estimate)", f["resync_stanza_bytes_estimate"],
         f["resync_stanza_bytes_estimate_digest_descent"]),
        ("all link bytes", f["link_bytes"], f["link_bytes_digest_descent"]),
        ("link frames", f["link_frames"], f["link_frames_digest_descent"]),
        ("resync runs by mode", _modes(f["resync_modes"]),
         _modes(f["resync_modes_digest_descent"])),
        ("site (re)joins", f["site_joins"], f["site_joins_digest_descent"]),
        ("messages refused", f["messages_refused"], f["messages_refused_digest_descent"]),
        ("consistent", f["consistent"], f["consistent_digest_descent"]),
    ]
    lines = [f"{f['stations']} stations on {f['sites']} sites, {f['leaves']} leaves; started in "
             f"{f['start_seconds']} s, initial sync {f['initial_sync_seconds']} s"]
    lines += [f"{a!s:<26}{b!s:>18}{c!s:>18}" for a, b, c in rows]
    lines.append("(modes: c changes_since, d digest descent, f full fetch, r relabel)")
    lines.append(f"OCPP 2.0.1 GetBaseReport for the same stations: "
                 f"{f['ocpp_full_report_bytes']} bytes, {f['ocpp_full_report_deflated_bytes']} "
                 f"deflated ({f['ocpp_vs_resync']}x the same-epoch resync; estimated from "
                 f"{f['ocpp_estimated_from']} stations)")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["cloud"]:
        child = argparse.ArgumentParser(prog="python -m bench.resync cloud")
        child.add_argument("--config", required=True)
        child.add_argument("--stats", required=True)
        args = child.parse_args(argv[1:])
        return asyncio.run(run_cloud_child(Path(args.config), Path(args.stats)))
    parser = argparse.ArgumentParser(prog="python -m bench.resync", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--stations", type=int, default=1000)
    parser.add_argument("--changed", type=parse_fraction, default=0.01,
                        help="fraction of the leaves changed: 1%% or 0.01 (default 1%%)")
    parser.add_argument("--sites", type=int, default=4, help="local CSMS (default 4)")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--state-dir", default=None,
                        help="keep broker and stores here (default: a temporary directory)")
    parser.add_argument("--timeout", type=float, default=600.0,
                        help="give up waiting for consistency after this many seconds")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.add_argument("--signed", action="store_true",
                        help="everything signed, encrypted where it matters, certificates")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.ERROR, stream=sys.stderr)

    def say(message: str) -> None:
        print(f"  {message}", file=sys.stderr, flush=True)

    figures = asyncio.run(run_resync(args.stations, args.changed, args.sites, args.seed,
                                     Path(args.state_dir) if args.state_dir else None, say,
                                     args.timeout, args.signed))
    print(json.dumps(figures) if args.json else render(figures))
    return 0 if figures["consistent"] and figures["consistent_digest_descent"] else 1


if __name__ == "__main__":
    with contextlib.suppress(KeyboardInterrupt):
        raise SystemExit(main())
    os._exit(130)

