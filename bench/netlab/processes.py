"""The lab's processes: started in a namespace, recorded by PID, stopped on teardown.

Coroutine servers cannot move into another network namespace from inside one Python process
(a namespace belongs to a thread, and asyncio's sockets to the loop's), so whatever runs in a
site or router is its own process. `ip netns exec NS cmd` execs ``cmd`` in place, so the PID of
the process we start is the command's own; each gets its own session (Ctrl-C in the terminal
reaches only the controller, which then stops them in order), and stopping signals the whole
process group, so a command's children go with it. Output goes to one log file per process.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from bench.netlab.commands import NetlabError, in_netns

_POLL_S = 0.02
_CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


@dataclass(eq=False)
class Process:
    """One process the lab started: where it runs, its PID and its output."""

    name: str
    netns: str | None
    log_path: Path
    popen: subprocess.Popen[bytes] = field(repr=False)

    @property
    def pid(self) -> int:
        return self.popen.pid

    def alive(self) -> bool:
        return self.popen.poll() is None

    def output(self) -> str:
        """Everything it has written so far (standard output and error)."""
        return self.log_path.read_text(errors="replace")

    def wait_output(self, text: str, timeout: float) -> str:
        """Wait until a line of its output contains ``text``; returns that line."""
        deadline = time.monotonic() + timeout
        while True:
            for line in self.output().splitlines():
                if text in line:
                    return line
            if not self.alive():
                raise NetlabError(f"{self.name} exited ({self.popen.returncode}) before printing "
                                  f"{text!r}; its output:\n{self.output()[-2000:]}")
            if time.monotonic() > deadline:
                raise NetlabError(f"{self.name} did not print {text!r} within {timeout} s; "
                                  f"its output:\n{self.output()[-2000:]}")
            time.sleep(_POLL_S)

    def wait(self, timeout: float) -> int:
        """Wait for it to exit; returns its exit status."""
        try:
            return self.popen.wait(timeout)
        except subprocess.TimeoutExpired:
            raise NetlabError(f"{self.name} still running after {timeout} s") from None

    def cpu_seconds(self) -> float:
        """User plus system CPU time so far (from /proc; its children not included)."""
        try:
            with open(f"/proc/{self.pid}/stat", encoding="ascii") as stat:
                fields = stat.read().rsplit(")", 1)[1].split()
        except FileNotFoundError:
            raise NetlabError(f"{self.name} (pid {self.pid}) has exited") from None
        return (int(fields[11]) + int(fields[12])) / _CLOCK_TICKS  # utime, stime

    def send(self, line: str) -> None:
        """Write one line to its standard input (if it was started with ``stdin=True``)."""
        if self.popen.stdin is None:
            raise NetlabError(f"{self.name} was started without a standard input pipe")
        self.popen.stdin.write(line.encode() + b"\n")
        self.popen.stdin.flush()

    def stop(self, timeout: float = 3.0) -> int:
        """SIGTERM to its process group, SIGKILL after ``timeout``; returns its exit status."""
        self.terminate()
        return self.reap(time.monotonic() + timeout)

    def terminate(self) -> None:
        if self.alive():
            _signal_group(self.pid, signal.SIGTERM)

    def reap(self, deadline: float) -> int:
        """Wait until ``deadline`` for it to exit, then kill what is left of its group."""
        try:
            self.popen.wait(max(0.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            _signal_group(self.pid, signal.SIGKILL)
            self.popen.wait()
        _signal_group(self.pid, signal.SIGKILL)  # children it left behind in its group
        if self.popen.stdin is not None:
            self.popen.stdin.close()
        return self.popen.returncode


def _signal_group(pgid: int, signum: int) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pgid, signum)


class ProcessTable:
    """Starts processes and remembers them, so that teardown stops each one it started."""

    def __init__(self, log_dir: Path) -> None:
        self.log_dir = log_dir
        self.processes: list[Process] = []

    def spawn(self, argv: Sequence[str], *, netns: str | None, name: str,
              stdin: bool = False) -> Process:
        """Start ``argv`` in ``netns`` (the root namespace when None), logging to ``name``.log.

        A name already used in this lab gets a suffix (-2, -3, ...).
        """
        taken = {process.name for process in self.processes}
        name = next(candidate for n in range(1, len(taken) + 2)
                    if (candidate := name if n == 1 else f"{name}-{n}") not in taken)
        log_path = self.log_dir / f"{name}.log"
        with open(log_path, "wb") as log:
            try:
                popen = subprocess.Popen(
                    in_netns(netns, argv), stdout=log, stderr=subprocess.STDOUT,
                    stdin=subprocess.PIPE if stdin else subprocess.DEVNULL,
                    start_new_session=True)
            except FileNotFoundError as error:
                raise NetlabError(f"cannot start {name}: {error}") from None
        process = Process(name, netns, log_path, popen)
        self.processes.append(process)
        return process

    def stop_all(self, timeout: float = 3.0) -> None:
        """SIGTERM to every process, then SIGKILL to those still there after ``timeout``."""
        for process in reversed(self.processes):  # the last started first: clients before servers
            process.terminate()
        deadline = time.monotonic() + timeout
        for process in reversed(self.processes):
            process.reap(deadline)
