"""The ``csms`` command line."""

from __future__ import annotations

import argparse
import os
import sys

BENCHMARKS = {"tree": "object trees: validated writes, history, snapshots, pattern matching"}


def _bench(args: argparse.Namespace) -> int:
    # Benchmarks live in bench/, a layer above actors: run them as their own process rather
    # than importing them, so the layer rules hold.
    argv = [sys.executable, "-m", f"bench.{args.name}", *args.rest]
    os.execv(sys.executable, argv)
    return 0  # not reached


def _demo(_: argparse.Namespace) -> int:
    print(
        "csms demo is not built yet. It arrives with issue #4 (actors, state resynchronisation\n"
        "and the local/cloud hierarchy): it will start the managed Prosody broker, a cloud CSMS,\n"
        "two local CSMS and ten simulated stations per site, and show a live table of stations\n"
        "online and charging, site power, energy, messages per second and resyncs.\n"
        "What runs today: the object model (make test) and its benchmark (csms bench tree)."
    )
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="csms", description="An IEC 63110-style charging station management system."
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    demo = sub.add_parser("demo", help="run a whole local-plus-cloud hierarchy (issue #4)")
    demo.set_defaults(func=_demo)
    bench = sub.add_parser("bench", help="run a benchmark and print its figures")
    bench.add_argument("name", choices=sorted(BENCHMARKS),
                       help="; ".join(f"{k}: {v}" for k, v in BENCHMARKS.items()))
    bench.add_argument("rest", nargs=argparse.REMAINDER, help="options of the benchmark (--json)")
    bench.set_defaults(func=_bench)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return int(args.func(args))


if __name__ == "__main__":
    raise SystemExit(main())
