"""``csms demo`` as a real process, loaded until its event loop lags, stops within 10 s of
SIGTERM or Ctrl-C with status 0 and leaves no broker behind; a signal during its start cuts
the start short; a second signal exits at once and says so. ``csms cloud`` applying a site's
updates stops as fast.

The load: two sites of 150 stations in one process, at 600 times real time, and a machine
busier than the demo can keep up with: the demo's event loop is pinned to one core beside a
busy process of higher priority until the demo says so itself ("the event loop lags"). A fast
machine with nothing else running keeps up with the demo alone only sometimes, so the
contention makes the saturation sure rather than hoped for; it ends before the signal, leaving
the demo's own backlog. The 10 s is what the issue asks of an operator's Ctrl-C, measured from
the signal to the process's exit: a deadline, not a benchmark."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import subprocess
import sys
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from actors.app.hierarchy import Hierarchy
from actors.testing import until
from bench.stopping import brokers_of
from tests.integration.conftest import site_simulator

pytestmark = pytest.mark.broker

STOP_DEADLINE_S = 10.0
# more than this machine keeps up with: 300 stations living ten minutes a second (a fresh CI
# machine with nothing else running saturated only sometimes at 120 times real time)
LOAD = ("--sites", "2", "--stations", "150", "--speed", "600")


class Demo:
    """A ``csms demo`` process; its stderr read line by line as it comes."""

    def __init__(self, state: Path) -> None:
        self.state = state
        self.lines: list[str] = []
        self.process: asyncio.subprocess.Process | None = None
        self._reader: asyncio.Task[None] | None = None

    async def start(self) -> Demo:
        self.process = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "actors.app.cli", "demo", *LOAD, "--json",
            "--state-dir", str(self.state), stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
        self._reader = asyncio.create_task(self._read())  # never let the pipe fill
        return self

    async def _read(self) -> None:
        assert self.process is not None and self.process.stderr is not None
        async for line in self.process.stderr:
            self.lines.append(line.decode(errors="replace"))

    def said(self, text: str) -> bool:
        return any(text in line for line in self.lines)

    async def stop_with(self, sig: signal.Signals) -> tuple[int, float]:
        """Send ``sig``; the exit status and the seconds from the signal to the exit."""
        assert self.process is not None
        loop = asyncio.get_running_loop()
        sent = loop.time()
        self.process.send_signal(sig)
        try:
            status = await asyncio.wait_for(self.process.wait(), 60)
        except TimeoutError:
            self.process.kill()
            raise AssertionError(f"still running 60 s after {sig.name}: {self.tail()}") from None
        return status, loop.time() - sent

    async def summary(self) -> dict[str, object]:
        assert self.process is not None and self.process.stdout is not None
        return json.loads(await self.process.stdout.read())

    def tail(self) -> str:
        return "".join(self.lines[-30:])

    async def close(self) -> None:
        if self.process is not None and self.process.returncode is None:
            self.process.kill()
            await self.process.wait()
        if self._reader is not None:
            with contextlib.suppress(asyncio.CancelledError):
                await self._reader


@contextlib.contextmanager
def contended(pid: int) -> Iterator[None]:
    """Pin every thread of process ``pid`` to one core, lower its priority (nice 5), and run
    a busy process of normal priority on that core, for the duration; the busy process is
    killed on leaving. The demo's brokers, its children, keep the whole machine."""
    core = min(os.sched_getaffinity(pid))
    for thread in os.listdir(f"/proc/{pid}/task"):
        with contextlib.suppress(ProcessLookupError):  # a thread that ended meanwhile
            os.sched_setaffinity(int(thread), {core})
            os.setpriority(os.PRIO_PROCESS, int(thread), 5)
    hog = subprocess.Popen([sys.executable, "-c", "while True: pass"])
    try:
        os.sched_setaffinity(hog.pid, {core})
        yield
    finally:
        hog.kill()
        hog.wait()


@pytest.fixture
async def demo(tmp_path: Path) -> AsyncIterator[Demo]:
    running = await Demo(tmp_path / "demo").start()
    try:
        yield running
    finally:
        await running.close()


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
async def test_a_saturated_demo_stops_cleanly_within_10_s(demo: Demo, sig: signal.Signals
                                                          ) -> None:
    await until(lambda: demo.said("running: 304 stations"), "the demo started", 120,
                every=0.1)
    assert demo.process is not None
    with contended(demo.process.pid):
        await until(lambda: demo.said("the event loop lags"), "the demo saturated its loop",
                    120, every=0.1)
    assert brokers_of(demo.state), "the demo's broker runs"
    status, seconds = await demo.stop_with(sig)
    assert status == 0, demo.tail()
    assert seconds < STOP_DEADLINE_S, f"{seconds:.1f} s to stop: {demo.tail()}"
    assert not demo.said("exiting now"), "the clean stop was forced"
    summary = await demo.summary()
    assert summary["stopped_by"] == sig.name and summary["stations"] == 304  # 4: OCPP
    assert summary["load"]["pace"] > 1  # type: ignore[index]  # it coarsened its work
    assert brokers_of(demo.state) == []


async def test_a_signal_during_the_start_cuts_it_short(demo: Demo) -> None:
    await until(lambda: demo.said("100 stations started"), "the stations starting", 120,
                every=0.05)
    status, seconds = await demo.stop_with(signal.SIGTERM)
    assert status == 0, demo.tail()
    assert seconds < STOP_DEADLINE_S, f"{seconds:.1f} s to stop: {demo.tail()}"
    assert await demo.summary() == {"started": False, "stopped_by": "SIGTERM"}
    assert brokers_of(demo.state) == []


async def test_a_second_signal_exits_at_once_and_says_so(demo: Demo) -> None:
    await until(lambda: demo.said("100 stations started"), "the stations starting", 120,
                every=0.05)
    assert demo.process is not None
    demo.process.send_signal(signal.SIGINT)  # the two arrive together, in either order
    status, seconds = await demo.stop_with(signal.SIGTERM)
    assert status in (128 + signal.SIGINT, 128 + signal.SIGTERM), demo.tail()
    assert seconds < STOP_DEADLINE_S
    assert demo.said("a second signal (SIG"), demo.tail()
    assert demo.said("exiting now, without finishing the clean stop")
    # the broker dies with the process (PR_SET_PDEATHSIG), even without a clean stop
    await until(lambda: brokers_of(demo.state) == [], "the broker gone", 10)
    assert os.path.exists(demo.state / "stations-site1-0" / "trees.db")


async def test_a_cloud_process_applying_a_sites_updates_stops_within_10_s(tmp_path: Path
                                                                         ) -> None:
    h = await Hierarchy.start(tmp_path)
    try:
        await h.spawn_cloud()  # `csms cloud --config cloud.toml`
        await h.start_site(1, 150, simulator=site_simulator(), seed=3)

        async def busy() -> bool:
            return await h.cloud_counter("updates") > 1000

        await until(busy, "the cloud applying the site's updates", 120, every=0.5)
        process = h.cloud_process
        assert process is not None
        loop = asyncio.get_running_loop()
        sent = loop.time()
        process.send_signal(signal.SIGTERM)
        status = await asyncio.wait_for(process.wait(), 60)
        seconds = loop.time() - sent
        h.cloud_process = None
        assert status == 0, h.cloud_err()
        assert seconds < STOP_DEADLINE_S, f"{seconds:.1f} s to stop: {h.cloud_err()}"
    finally:
        await h.close()
