"""Object-tree benchmark: validated writes, change history, snapshots, pattern matching.

    python -m bench.tree [--json] [--quick]

Figures (one core, this process):
  single_leaf_writes_per_s   one-write transactions on a station tree, digests included
  tx_leaf_writes_per_s       leaf writes in 100-write transactions
  changes_since_us           median cost of changes_since() returning 3 changed leaves (1%)
  changes_since_30_us        the same returning 30 changed leaves (10%)
  snapshot_bytes / _us       snapshot of a ~300-leaf station, and time to take it
  restore_us                 time to restore (and validate) that snapshot
  pattern_match_us_median    PatternIndex.match against 10,000 registered patterns
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import sys
import time
from collections.abc import Callable
from typing import Any

from keypath import KeyPath, KeyPattern, PatternIndex
from object_model import ObjectTree, Write
from object_model.station import new_station_tree, station_schema


def _timed(fn: Callable[[], object], repeat: int) -> list[float]:
    out = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        out.append(time.perf_counter() - t0)
    return out


def _writable_floats(tree: ObjectTree) -> list[tuple[KeyPath, float, float]]:
    """Float leaves with a range, so that writes stay valid: (path, low, high)."""
    out = []
    for path, _, value in tree.leaves():
        if type(value) is not float:
            continue
        vt = tree.schema.type_at(path)
        lo = max(getattr(vt, "lo", -1e6), -1e6)
        hi = min(getattr(vt, "hi", 1e6), 1e6)
        out.append((path, lo, hi))
    return out


def measure(quick: bool = False, progress: Callable[[str], None] = lambda _: None
            ) -> dict[str, Any]:
    rng = random.Random(7)
    scale = 0.2 if quick else 1.0
    tree = new_station_tree("cs-bench", evse_count=3)
    floats = _writable_floats(tree)

    def make_writes(n: int) -> list[Write]:
        writes = []
        for i in range(n):
            path, lo, hi = floats[i % len(floats)]
            writes.append(Write(path, lo + (hi - lo) * rng.random()))
        return writes

    progress("single-leaf transactions")
    n_single = int(100_000 * scale)
    single = make_writes(n_single)
    t0 = time.perf_counter()
    for w in single:
        tree.apply((w,))
    single_rate = n_single / (time.perf_counter() - t0)

    progress("100-write transactions")
    n_tx = int(500_000 * scale)
    batched = make_writes(n_tx)
    t0 = time.perf_counter()
    for i in range(0, n_tx, 100):
        tree.apply(batched[i : i + 100])
    tx_rate = n_tx / (time.perf_counter() - t0)

    progress("changes_since")
    station = new_station_tree("cs-history", evse_count=3)
    station_floats = _writable_floats(station)

    def changes_cost(changed: int) -> float:
        samples = []
        for _ in range(int(2000 * scale) or 50):
            base = station.revision
            picks = rng.sample(station_floats, changed)
            station.apply([Write(p, lo + (hi - lo) * rng.random()) for p, lo, hi in picks])
            t0 = time.perf_counter()
            result = station.changes_since(base)
            samples.append(time.perf_counter() - t0)
            assert len(result.upserts) == changed
        return statistics.median(samples) * 1e6

    changes_3 = changes_cost(max(1, len(station) // 100))
    changes_30 = changes_cost(max(1, len(station) // 10))

    progress("snapshot and restore")
    blob = station.snapshot()
    snap_us = statistics.median(_timed(station.snapshot, 50)) * 1e6
    schema = station_schema()
    restore_us = statistics.median(_timed(lambda: ObjectTree.restore(blob, schema), 30)) * 1e6

    progress("PatternIndex with 10,000 patterns")
    index, probes = _pattern_workload(rng, 10_000)
    samples = []
    for path in probes:
        t0 = time.perf_counter()
        index.match(path)
        samples.append(time.perf_counter() - t0)
    match_us = statistics.median(samples) * 1e6
    p99_us = sorted(samples)[int(len(samples) * 0.99)] * 1e6

    return {
        "single_leaf_writes_per_s": round(single_rate),
        "tx_leaf_writes_per_s": round(tx_rate),
        "changes_since_us": round(changes_3, 2),
        "changes_since_30_us": round(changes_30, 2),
        "station_leaves": len(station),
        "snapshot_bytes": len(blob),
        "snapshot_us": round(snap_us, 1),
        "restore_us": round(restore_us, 1),
        "patterns": len(index),
        "pattern_match_us_median": round(match_us, 2),
        "pattern_match_us_p99": round(p99_us, 2),
        "python": sys.version.split()[0],
    }


def _pattern_workload(rng: random.Random, count: int) -> tuple[PatternIndex[int], list[KeyPath]]:
    """A monitoring-like mix at a cloud CSMS: most patterns are rooted at one station, some use
    '*' for EVSEs, a few are global ('**/temperature_c')."""
    stations = [f"cs-{i:04d}" for i in range(1000)]
    leaves = [str(p) for p, _, _ in new_station_tree("cs-x").leaves()]
    index: PatternIndex[int] = PatternIndex()
    for i in range(count):
        station = rng.choice(stations)
        leaf = rng.choice(leaves)
        shape = rng.random()
        if shape < 0.6:
            text = f"stations/{station}/{leaf}"
        elif shape < 0.85:
            segs = leaf.split("/")
            if segs[0] == "evse":
                segs[1] = "*"
            text = f"stations/{station}/" + "/".join(segs)
        elif shape < 0.98:
            text = f"stations/{station}/{leaf.split('/')[0]}/**"
        else:
            text = "**/" + leaf.split("/")[-1]
        index.add(KeyPattern.parse(text), i)
    probes = [KeyPath.parse(f"stations/{rng.choice(stations)}/{rng.choice(leaves)}")
              for _ in range(20_000)]
    return index, probes


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.tree", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.add_argument("--quick", action="store_true", help="fewer iterations (smoke run)")
    args = parser.parse_args(argv)
    progress = (lambda _: None) if args.json else (lambda m: print(f"  measuring {m}...",
                                                                   file=sys.stderr))
    result = measure(args.quick, progress)
    if args.json:
        print(json.dumps(result))
        return 0
    targets = {"tx_leaf_writes_per_s": (">=", 100_000), "pattern_match_us_median": ("<=", 20)}
    print(f"{'figure':<28}{'value':>14}  target")
    for key, value in result.items():
        target = targets.get(key)
        note = ""
        if target:
            ok = value >= target[1] if target[0] == ">=" else value <= target[1]
            note = f"{target[0]} {target[1]:,}  {'met' if ok else 'MISSED'}"
        shown = f"{value:,}" if isinstance(value, (int, float)) else str(value)
        print(f"{key:<28}{shown:>14}  {note}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
