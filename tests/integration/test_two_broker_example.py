"""docs/deployment.md's two-broker walk-through, run as written: every ``csms`` line of its
shell block, as real processes, from a directory that holds the repository's ``deploy/``.

The brokers, the cloud, the site's local CSMS and its stations are separate processes; the
site's stations are on the site's broker only, the local CSMS holds its site link and one
uplink connection to the cloud's broker, and the operator reads the station's state both from
the cloud's copy and from the station itself."""

from __future__ import annotations

import asyncio
import os
import re
import shlex
import signal
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from actors.app.hierarchy import die_with_parent

pytestmark = [pytest.mark.broker, pytest.mark.slow]

REPO = Path(__file__).resolve().parents[2]


def walk_through() -> list[list[str]]:
    """The commands of the doc's "Two brokers on one machine" shell block."""
    text = (REPO / "docs" / "deployment.md").read_text()
    section = text.split("### Two brokers on one machine", 1)[1]
    block = re.search(r"```sh\n(.*?)```", section, re.S)
    assert block is not None, "the walk-through lost its shell block"
    return [shlex.split(line) for line in block.group(1).splitlines() if line.startswith("csms ")]


def csms(args: list[str]) -> list[str]:
    return [sys.executable, "-m", "actors.app.cli", *args[1:]]


@pytest.fixture
async def site(tmp_path: Path) -> AsyncIterator[tuple[Path, list[list[str]]]]:
    (tmp_path / "deploy").symlink_to(REPO / "deploy")
    commands = walk_through()
    servers = [c for c in commands if c[1] != "get"]
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    processes: list[asyncio.subprocess.Process] = []
    try:
        for command in servers:
            processes.append(await asyncio.create_subprocess_exec(
                *csms(command), cwd=tmp_path, env=env, stdin=asyncio.subprocess.DEVNULL,
                stdout=asyncio.subprocess.PIPE,
                stderr=(tmp_path / f"{command[1]}-{len(processes)}.err").open("wb"),
                preexec_fn=die_with_parent()))
            ready = b"Ctrl-C to stop" if command[1] == "broker" else b"running"
            assert processes[-1].stdout is not None
            while True:  # the brokers describe themselves first, then say how to stop them
                line = await asyncio.wait_for(processes[-1].stdout.readline(), 60)
                assert line, f"{command[:2]} exited: {_errors(tmp_path)}"
                if ready in line:
                    break
        yield tmp_path, [c for c in commands if c[1] == "get"]
    finally:
        for process in reversed(processes):  # stations first, the brokers last
            if process.returncode is None:
                process.send_signal(signal.SIGTERM)
                try:
                    await asyncio.wait_for(process.wait(), 15)
                except TimeoutError:
                    process.kill()
                    await process.wait()


def _errors(root: Path) -> str:
    return "\n".join(f"{p.name}: {p.read_text()[-800:]}" for p in sorted(root.glob("*.err")))


async def test_the_two_broker_walk_through_runs_as_written(site) -> None:  # type: ignore[no-untyped-def]
    root, gets = site
    assert [c[4] for c in gets] == ["cloud", "cs-site1-1", "cloud"]
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    answers: list[str] = [""] * len(gets)

    async def ask(index: int) -> bool:
        process = await asyncio.create_subprocess_exec(
            *csms(gets[index]), cwd=root, env=env, stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE)
        out, err = await asyncio.wait_for(process.communicate(), 60)
        answers[index] = (out + err).decode()
        return process.returncode == 0

    # the cloud's copy appears once the station joined its site and the site joined the cloud
    for index in range(len(gets)):
        deadline = asyncio.get_running_loop().time() + 60
        while not await ask(index):
            assert asyncio.get_running_loop().time() < deadline, (answers, _errors(root))
            await asyncio.sleep(0.5)  # a poll of a separate process, not a wait on our state
    cloud, station, charger = answers
    assert cloud.startswith("stations/cs-site1-1/evse/1/status = "), answers
    assert station.startswith("evse/1/status = "), answers
    # the same value, read from the cloud's copy and from the station on its site's broker
    assert cloud.split(" = ")[1].split()[0] == station.split(" = ")[1].split()[0]
    # the gateway's charger is a station actor the cloud holds a copy of, offline until it
    # connects
    assert charger.startswith("stations/ocpp-site1-1/network/link/online = false"), answers
