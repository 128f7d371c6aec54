"""How fast a loaded ``csms demo`` stops on a signal, and what it coarsened or shed to keep up.

    python -m bench.stopping [--sites 5] [--stations 200] [--load-s 60] [--signal TERM|INT]
                             [--during-start N] [--json]

Starts ``csms demo`` as its own process, waits until it runs and lets it run ``--load-s``
seconds (or, with ``--during-start N``, waits until N of its stations run, N a multiple of
100, to cut its start short), sends the signal and measures the wall time until the process has exited. Prints
``sites``, ``stations``, ``start_s`` (until it said it runs), ``stop_s`` (signal to exit),
``exit_status``, ``forced`` (whether the clean stop overran and was forced), ``orphan_brokers``
(Prosody processes of its state directory left behind) and the demo's ``load`` figures:
``loop_lag_s``, ``loop_lag_max_s``, ``pace``, ``inbox_max``, ``ticks_coarsened``,
``updates_coalesced``, ``allocations_deferred``, ``shed`` (dropped by policy: unreliable
bulk, then state from a full send queue) and ``expired`` (envelopes whose sender's deadline
passed before they could leave). A figure, not a pass/fail test
(``tests/integration/test_stopping.py`` holds the deadline).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import signal
import sys
import tempfile
import time
from pathlib import Path
from typing import Any


def brokers_of(state: Path) -> list[int]:
    """Prosody processes whose command line names a file under ``state``."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode()
        except OSError:
            continue
        if "prosody" in cmdline and str(state) in cmdline:
            found.append(int(entry.name))
    return found


async def measure(sites: int, stations: int, load_s: float, sig: signal.Signals,
                  during_start: int | None, state: Path) -> dict[str, Any]:
    began = time.monotonic()
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "actors.app.cli", "demo", "--sites", str(sites), "--stations",
        str(stations), "--json", "--state-dir", str(state), stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    assert process.stdout is not None and process.stderr is not None
    ready = asyncio.Event()
    lines: list[str] = []
    wanted = f"{during_start} stations started" if during_start else "running:"

    async def read() -> None:
        assert process.stderr is not None
        async for raw in process.stderr:  # all of it, always: a full pipe would block the demo
            line = raw.decode(errors="replace")
            lines.append(line)
            if wanted in line:
                ready.set()

    reader = asyncio.create_task(read())
    try:
        await asyncio.wait_for(ready.wait(), 1800)
        start_s = time.monotonic() - began
        if not during_start:
            await asyncio.sleep(load_s)  # not a wait on a condition: the load runs this long
        sent = time.monotonic()
        process.send_signal(sig)
        status = await asyncio.wait_for(process.wait(), 120)
        stop_s = time.monotonic() - sent
        summary = json.loads(await process.stdout.read() or b"{}")
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()
        await reader
    return {"sites": sites, "stations": sites * stations, "start_s": round(start_s, 1),
            "stop_s": round(stop_s, 2), "exit_status": status,
            "forced": any("exiting now" in line for line in lines),
            "orphan_brokers": len(brokers_of(state)), "started": summary.get("started", True),
            **summary.get("load", {})}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.stopping", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sites", type=int, default=5)
    parser.add_argument("--stations", type=int, default=200, help="per site")
    parser.add_argument("--load-s", type=float, default=60.0,
                        help="seconds of running before the signal")
    parser.add_argument("--signal", choices=("TERM", "INT"), default="TERM")
    parser.add_argument("--during-start", type=int, metavar="N",
                        help="signal once N stations run (a multiple of 100), cutting the "
                             "start short")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="bench-stopping-") as tmp:
        result = asyncio.run(measure(args.sites, args.stations, args.load_s,
                                     signal.Signals[f"SIG{args.signal}"], args.during_start,
                                     Path(tmp) / "demo"))
    if args.json:
        print(json.dumps(result))
    else:
        print("\n".join(f"{key:<22}{value}" for key, value in result.items()))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
