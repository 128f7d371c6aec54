"""``python -m bench.lab run SCENARIO.toml`` / ``report RUN_DIR`` / ``calibrate`` / ``results
RUN_DIR...`` (also ``csms lab ...``)."""

from __future__ import annotations

import argparse
import asyncio
import sys

import bench.lab.drivers  # noqa: F401  (registers the drivers)
from bench.lab import calibration, results
from bench.lab.report import render
from bench.lab.runner import NoDriverError, run
from bench.lab.scenario import KINDS, ScenarioError, load


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="csms lab", description="Run a scenario on this system and on the OCPP 2.0.1 "
        "baseline over the same impaired links, and report (docs/lab.md). Kinds: "
        + "; ".join(KINDS.values()))
    sub = parser.add_subparsers(dest="command", required=True)
    running = sub.add_parser("run", help="run a scenario into a new run directory")
    running.add_argument("scenario", help="a scenario file (bench/lab/scenarios/*.toml)")
    running.add_argument("--out", default="runs", help="where run directories go (runs/)")
    running.add_argument("--repetitions", type=int, help="instead of the scenario's")
    running.add_argument("--seed", type=int, help="the master seed, instead of the scenario's")
    reporting = sub.add_parser("report", help="render a run directory's plots and report.md "
                               "from its data, without running anything")
    reporting.add_argument("run_dir")
    sub.add_parser("calibrate", help="the bytes of one small publish in each protocol, "
                   "against the published table", add_help=False)
    sub.add_parser("results", help="write bench/lab/RESULTS.md from run directories",
                   add_help=False)
    if argv is None:
        argv = sys.argv[1:]
    if argv[:1] == ["calibrate"]:
        return calibration.main(argv[1:])
    if argv[:1] == ["results"]:
        return results.main(argv[1:])
    args = parser.parse_args(argv)

    def say(text: str) -> None:
        print(text, file=sys.stderr, flush=True)

    try:
        if args.command == "report":
            print(render(args.run_dir))
            return 0
        scenario = load(args.scenario, repetitions=args.repetitions, master_seed=args.seed)
        directory = asyncio.run(run(scenario, args.out, argv=sys.argv, say=say))
    except (ScenarioError, NoDriverError, FileNotFoundError) as exc:
        print(f"csms lab: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("csms lab: stopped; the run directory holds what finished", file=sys.stderr)
        return 130
    print(directory.path)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
