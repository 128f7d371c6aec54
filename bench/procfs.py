"""What a process costs, read from Linux's ``/proc``: resident memory and CPU time.

A benchmark that runs its actors and brokers as processes of their own measures them from
outside, the way an operator's monitoring would: ``VmRSS`` (resident set: what the process
holds in RAM now, shared libraries included) and user plus system CPU seconds since it
started. A process that has exited reads as ``None``.
"""

from __future__ import annotations

import os
from collections.abc import Iterable

_TICKS = os.sysconf("SC_CLK_TCK")


def rss_bytes(pid: int) -> int | None:
    """The resident set of process ``pid``, in bytes."""
    try:
        with open(f"/proc/{pid}/status", encoding="ascii") as status:
            for line in status:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError):
        return None
    return None


def cpu_seconds(pid: int) -> float | None:
    """User plus system CPU seconds process ``pid`` has used."""
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii") as stat:
            text = stat.read()
    except OSError:
        return None
    # the command name (field 2) is in parentheses and may hold spaces: count after it
    fields = text[text.rindex(")") + 2:].split()
    return (int(fields[11]) + int(fields[12])) / _TICKS


def total_cpu_seconds(pids: Iterable[int]) -> float:
    """CPU seconds of every process of ``pids`` that still runs, summed."""
    return sum(cpu for pid in pids if (cpu := cpu_seconds(pid)) is not None)


def total_rss_bytes(pids: Iterable[int]) -> int:
    """Resident bytes of every process of ``pids`` that still runs, summed."""
    return sum(rss for pid in pids if (rss := rss_bytes(pid)) is not None)


def machine_busy_seconds() -> float:
    """CPU seconds every core of the machine has spent not idle, since boot (``/proc/stat``):
    what everyone used, other people's processes included."""
    with open("/proc/stat", encoding="ascii") as stat:
        fields = [int(x) for x in stat.readline().split()[1:]]
    idle = fields[3] + (fields[4] if len(fields) > 4 else 0)  # idle and iowait
    return (sum(fields[:8]) - idle) / _TICKS


__all__ = ["cpu_seconds", "machine_busy_seconds", "rss_bytes", "total_cpu_seconds",
           "total_rss_bytes"]
