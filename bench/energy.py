"""Energy benchmark: our site allocation against equal sharing and first come, first served,
over the same simulated day.

    python -m bench.energy [--evses 30,300,3000] [--seed 1] [--step-s S] [--json]
                                                            (also: csms bench energy)

For each site size (``--evses``), one simulated day (``actors.logic.energy.day.SiteDay``: commuters,
visitors and residents, half ISO 15118-20 and half IEC 61851, a fuse, a DSO curtailment from
17:00 to 19:00 and a PV surplus around noon that wanders inside its forecast's 95 % band) is
run three times, once per allocation, on a fake clock:

* ``ours``: ``SiteAllocator().allocate`` (lower limits first, the on/off gap with hysteresis,
  weighted water-filling, PV planned on its 95 % band);
* ``equal``: ``equal_share``, every EV plugged in gets the same share (what EVerest's energy
  manager does);
* ``fcfs``: ``first_come_first_served``, EVs in order of arrival take all they can.

For context, the smallest size (30 EVSEs by default) is also run as ``ours-expected-pv``: ours
planning on the PV forecast's expected value instead of its 95 % band (``DayConfig(pv_band=0)``),
to show the overrun that the band avoids.

Per (evses, algorithm) row: ``ms_per_cycle`` (median wall time of one allocation, all EVSEs,
over the day's cycles) and ``ms_per_cycle_p95``; ``energy_delivered_share`` (energy delivered
over energy the EVs asked for and could have taken in their stay); ``max_overrun_w`` and
``overrun_steps`` (the site's power above what the grid connection really allowed: must be 0
for ours). Of the energy constraints (least energy by departure) that fell due:
``ec_feasible``, those the allocation did not report it could not meet; ``ecs_reported``,
those it did (energy unreachable, or shed when the lower limits exceed the site: only ours
reports); ``ec_met``, those met, reported or not; ``ecs_missed_unreported``, EVs that left
without their least energy, unsaid. Then ``sessions``, ``steps`` and ``step_s`` (the
simulated cycles and their length) and ``wall_s`` (the run's wall time, the simulation of the
EVs included).

*Step*: 30 s up to 300 EVSEs and 120 s above (``default_step_s``), so that the default run
(30, 300 and 3,000 EVSEs) takes a few minutes on two cores; ``--step-s`` sets one step for
all sizes. A coarser step changes the day a little (EVs draw at each step's limits for longer,
and the on/off hold times of 60 s are always over by the next cycle), not the cost of one
allocation.

Progress goes to stderr (a line per run, and one per simulated hour in runs that take long),
figures to stdout (``--json``: a JSON list of the rows, nothing else).
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from collections.abc import Callable
from typing import Any

from actors.logic.energy.allocation import SiteAllocator
from actors.logic.energy.day import Allocate, DayConfig, DayResult, H, SiteDay
from actors.logic.energy.references import equal_share, first_come_first_served

SIZES = (30, 300, 3000)
ALGORITHMS: dict[str, Callable[[], Allocate]] = {  # a fresh one per day: ours keeps state
    "ours": lambda: SiteAllocator().allocate,
    "equal": lambda: equal_share,
    "fcfs": lambda: first_come_first_served,
}
EXPECTED_PV = "ours-expected-pv"
PROGRESS_EVERY_S = 5.0  # within a run, a progress line at most this often (at an hour's turn)
Say = Callable[[str], None]


def default_step_s(evses: int) -> float:
    """The simulated step for a site of ``evses`` (see the module docstring)."""
    return 30.0 if evses <= 300 else 120.0


def _p95(values: list[float]) -> float:
    ordered = sorted(values)
    return ordered[max(0, math.ceil(0.95 * len(ordered)) - 1)] if ordered else 0.0


def row(evses: int, algorithm: str, step_s: float, result: DayResult,
        wall_s: float) -> dict[str, Any]:
    """One run's figures (the keys of the module docstring)."""
    return {
        "evses": evses,
        "algorithm": algorithm,
        "ms_per_cycle": round(result.ms_per_cycle, 3),
        "ms_per_cycle_p95": round(1000 * _p95(result.alloc_s), 3),
        "energy_delivered_share": round(result.delivered_share, 4),
        "max_overrun_w": round(result.max_overrun_w, 1),
        "overrun_steps": result.overrun_steps,
        "ec_feasible": result.ec_feasible,
        "ec_met": result.ec_met,
        "ecs_missed_unreported": len(result.unmet_unreported),
        "ecs_reported": len(result.reported),
        "sessions": result.sessions,
        "steps": result.steps,
        "step_s": step_s,
        "wall_s": round(wall_s, 1),
    }


def run_day(evses: int, algorithm: str, *, seed: int, step_s: float,
            say: Say = lambda _: None) -> dict[str, Any]:
    """One simulated day of ``evses`` with ``algorithm`` (a key of ``ALGORITHMS``, or
    ``EXPECTED_PV``)."""
    expected_pv = algorithm == EXPECTED_PV
    allocate = ALGORITHMS["ours" if expected_pv else algorithm]()
    config = DayConfig(evses=evses, seed=seed, step_s=step_s, pv_band=0 if expected_pv else 95)
    started = time.perf_counter()
    last_said = started

    def progress(now: int, _site_w: float, _allowed_w: float) -> None:
        nonlocal last_said
        wall = time.perf_counter()
        if now % H == 0 and now and wall - last_said >= PROGRESS_EVERY_S:
            say(f"{evses:,} EVSEs, {algorithm}: {now // H:02d}:00 simulated, "
                f"{wall - started:.0f} s")
            last_said = wall

    day = SiteDay(config, allocate)
    result = day.run(progress, timer=time.perf_counter)
    return row(evses, algorithm, step_s, result, time.perf_counter() - started)


def measure(sizes: list[int], *, seed: int = 1, step_s: float | None = None,
            say: Say = lambda _: None) -> list[dict[str, Any]]:
    """Every size with every algorithm (and ``EXPECTED_PV`` at the smallest size), in that
    order; ``step_s`` None: ``default_step_s`` per size."""
    rows = []
    for evses in sizes:
        step = step_s if step_s is not None else default_step_s(evses)
        names = [*ALGORITHMS, *([EXPECTED_PV] if evses == min(sizes) else [])]
        for name in names:
            out = run_day(evses, name, seed=seed, step_s=step, say=say)
            say(f"{evses:,} EVSEs, {name}: {out['ms_per_cycle']:.2f} ms/cycle, "
                f"{out['energy_delivered_share']:.1%} delivered, max overrun "
                f"{out['max_overrun_w']:,.0f} W ({out['wall_s']:.0f} s)")
            rows.append(out)
    return rows


# -- the command line -------------------------------------------------------------------------

COLUMNS = (  # header, key, format
    ("EVSEs", "evses", "{:,}"),
    ("algorithm", "algorithm", "{}"),
    ("step s", "step_s", "{:g}"),
    ("ms/cycle", "ms_per_cycle", "{:.2f}"),
    ("p95 ms", "ms_per_cycle_p95", "{:.2f}"),
    ("delivered", "energy_delivered_share", "{:.1%}"),
    ("max overrun W", "max_overrun_w", "{:,.0f}"),
    ("overrun steps", "overrun_steps", "{:,}"),
    ("EC met", "ec_met", "{:,}"),
    ("feasible", "ec_feasible", "{:,}"),
    ("missed unsaid", "ecs_missed_unreported", "{:,}"),
    ("reported", "ecs_reported", "{:,}"),
    ("sessions", "sessions", "{:,}"),
    ("wall s", "wall_s", "{:.1f}"),
)


def _print(rows: list[dict[str, Any]]) -> None:
    print("Site allocation over a simulated day (ms/cycle: median allocation time; delivered: "
          "of the energy asked for; missed unsaid: EVs that left without their least energy, "
          "not reported; reported: sessions the allocation said it could not serve)")
    cells = [[fmt.format(r[key]) for _, key, fmt in COLUMNS] for r in rows]
    widths = [max([len(header)] + [len(line[i]) for line in cells])
              for i, (header, _, _) in enumerate(COLUMNS)]

    def line(values: list[str]) -> str:  # the algorithm's name left, figures right
        return "  ".join(v.ljust(w) if i == 1 else v.rjust(w)
                         for i, (v, w) in enumerate(zip(values, widths, strict=True)))

    print(line([header for header, _, _ in COLUMNS]))
    for values in cells:
        print(line(values))
    if any(r["algorithm"] == EXPECTED_PV for r in rows):
        print(f"{EXPECTED_PV}: ours planning on the expected PV instead of its 95 % band "
              "(for context: the overrun the band avoids)")


def _sizes(text: str) -> list[int]:
    sizes = [int(part) for part in text.split(",") if part.strip()]
    if not sizes or min(sizes) < 1:
        raise argparse.ArgumentTypeError(f"not a list of positive EVSE counts: {text!r}")
    return sizes


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.energy",
                                     description=__doc__.splitlines()[0],
                                     epilog=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--json", action="store_true", help="print a JSON list of the rows")
    parser.add_argument("--evses", type=_sizes, default=list(SIZES),
                        help="site sizes, comma-separated (default 30,300,3000)")
    parser.add_argument("--seed", type=int, default=1, help="the day's seed (default 1)")
    parser.add_argument("--step-s", type=float, default=None,
                        help="simulated step for all sizes (default: 30 s up to 300 EVSEs, "
                             "120 s above)")
    args = parser.parse_args(argv)

    def say(message: str) -> None:
        print(f"  {message}", file=sys.stderr, flush=True)

    rows = measure(args.evses, seed=args.seed, step_s=args.step_s, say=say)
    if args.json:
        print(json.dumps(rows))
    else:
        _print(rows)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
