"""Capacity traces: an uplink whose rates change over time, replayed by the lab's routers.

A trace is a CSV file in ``bench/lab/traces/`` (a scenario names it: ``[link] trace =
"cellular-synthetic"``) with a header and one row per step::

    t_s,down_kbit,up_kbit
    0,5800,1400
    1,6100,1350

Each row holds from its ``t_s`` until the next; a rate of 0 is a dead zone (the uplink drops
everything, as a modem out of coverage does). The trace loops when a run is longer. Any
measured trace in this form can be dropped in beside the shipped one.

``cellular-synthetic.csv`` is **synthetic**, made by ``synthesize`` (``python -m
bench.lab.traces``): a Markov chain over four coverage states of a rooftop LTE modem (good,
fair, poor, dead; their rates and mean dwell times in ``STATES``, in the range NETWORK-FACTS.md
section 3 reports for field sites), with each second's rates drawn around the state's
(log-normal, 25 %). It is data, not a measurement: a reader who has a measured trace should
prefer it.
"""

from __future__ import annotations

import argparse
import asyncio
import csv
import dataclasses
import itertools
import math
import random
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from bench.netlab import LinkProfile

FOLDER = Path(__file__).resolve().parent / "traces"


@dataclass(frozen=True)
class Step:
    t_s: float
    down_kbit: float
    up_kbit: float


@dataclass(frozen=True)
class State:
    down_kbit: float
    up_kbit: float
    mean_dwell_s: float
    next: tuple[str, ...]


STATES = {
    "good": State(6000, 1500, 90, ("fair",)),
    "fair": State(1500, 400, 40, ("good", "poor")),
    "poor": State(300, 80, 20, ("fair", "fair", "dead")),
    "dead": State(0, 0, 5, ("poor",)),
}


def synthesize(seed: int, seconds: int, start: str = "good") -> list[Step]:
    """A trace of ``seconds`` one-second steps (see the module docstring)."""
    rng = random.Random(seed)
    steps: list[Step] = []
    state, left = start, rng.expovariate(1 / STATES[start].mean_dwell_s)
    for t in range(seconds):
        while left <= 0:
            state = rng.choice(STATES[state].next)
            left = rng.expovariate(1 / STATES[state].mean_dwell_s)
        rates = STATES[state]
        noise = math.exp(rng.gauss(0, 0.25))
        steps.append(Step(t, round(rates.down_kbit * noise), round(rates.up_kbit * noise)))
        left -= 1
    return steps


def load(name: str) -> list[Step]:
    """The trace ``name`` (``bench/lab/traces/<name>.csv``)."""
    path = FOLDER / f"{name}.csv"
    if not path.is_file():
        known = ", ".join(sorted(p.stem for p in FOLDER.glob("*.csv"))) or "none"
        raise FileNotFoundError(f"no trace {name!r} in {FOLDER} (there are: {known})")
    with path.open(newline="") as source:
        steps = [Step(float(row["t_s"]), float(row["down_kbit"]), float(row["up_kbit"]))
                 for row in csv.DictReader(source)]
    if not steps or steps[0].t_s != 0 or any(b.t_s <= a.t_s
                                              for a, b in itertools.pairwise(steps)):
        raise ValueError(f"{path}: steps must start at 0 s and go forward")
    return steps


def at(steps: list[Step], t_s: float) -> Step:
    """The step in force ``t_s`` seconds into a run (the trace loops)."""
    period = steps[-1].t_s + (steps[-1].t_s - steps[-2].t_s if len(steps) > 1 else 1.0)
    t = t_s % period
    current = steps[0]
    for step in steps:
        if step.t_s > t:
            break
        current = step
    return current


async def replay(steps: list[Step], base: LinkProfile, apply: Callable[[LinkProfile], None],
                 cut: Callable[[bool], None], clock: Callable[[], float]) -> None:
    """Apply the trace's rates on ``base`` (its buffer, loss, delay) as ``clock`` moves,
    until cancelled; a dead step cuts the link (``cut(True)``) until the next live one."""
    shown: Step | None = None
    dead = False
    while True:
        step = at(steps, clock())
        if step != shown:
            shown = step
            # tc and nft run off the event loop: what shares it is being timed
            if step.down_kbit <= 0 or step.up_kbit <= 0:
                if not dead:
                    await asyncio.to_thread(cut, True)
                    dead = True
            else:
                await asyncio.to_thread(apply, dataclasses.replace(
                    base, up_bps=int(step.up_kbit * 1000), down_bps=int(step.down_kbit * 1000)))
                if dead:
                    await asyncio.to_thread(cut, False)
                    dead = False
        await asyncio.sleep(0.25)  # a step lasts a second or more


def write(path: Path, steps: list[Step]) -> None:
    with path.open("w", newline="") as out:
        writer = csv.writer(out)
        writer.writerow(["t_s", "down_kbit", "up_kbit"])
        for step in steps:
            writer.writerow([f"{step.t_s:g}", f"{step.down_kbit:g}", f"{step.up_kbit:g}"])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Write the synthetic cellular trace.")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--seconds", type=int, default=3600)
    parser.add_argument("--out", type=Path, default=FOLDER / "cellular-synthetic.csv")
    args = parser.parse_args(argv)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    write(args.out, synthesize(args.seed, args.seconds))
    print(args.out)
    return 0


__all__ = ["STATES", "Step", "at", "load", "replay", "synthesize"]


if __name__ == "__main__":
    raise SystemExit(main())
