"""Running a scenario: every repetition on every architecture, into one run directory.

A *driver* runs one repetition of one scenario kind on one architecture: it gets the
scenario, the repetition's seeds (``bench.lab.seeds``: the same names for both
architectures, so both face the same schedule of events) and a ``Recorder``, and returns the
repetition's figures; the architectures take turns going first. ``DRIVERS`` maps ``(kind, architecture)`` to a driver; a scenario whose
kind has no driver yet is refused before anything runs, saying so. Progress goes to ``say``
(one line per repetition and architecture); the run directory is rendered into a report at
the end (``bench.lab.report``)."""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench.lab.report import render
from bench.lab.rundir import Event, RunDirectory
from bench.lab.scenario import KINDS, Scenario
from bench.lab.seeds import derive


@dataclass
class Recorder:
    """What one repetition of one architecture records, as ``events.csv`` rows."""

    architecture: str
    repetition: int
    events: list[Event] = field(default_factory=list)

    def __call__(self, t_s: float, kind: str, key: str, value: object) -> None:
        self.events.append(Event(self.architecture, self.repetition, t_s, kind, key,
                                 str(value)))


@dataclass(frozen=True)
class Repetition:
    """One repetition's part of a run: which it is, and its seeds by name."""

    scenario: Scenario
    architecture: str
    number: int

    def seed(self, *names: object) -> int:
        """A seed shared by both architectures of this repetition."""
        return derive(self.scenario.master_seed, self.scenario.kind, self.number, *names)


Driver = Callable[[Repetition, Recorder], Awaitable[dict[str, Any]]]
DRIVERS: dict[tuple[str, str], Driver] = {}
"""The drivers there are, by (scenario kind, architecture)."""


class NoDriverError(LookupError):
    """A scenario this lab cannot run yet."""


def check_runnable(scenario: Scenario, drivers: dict[tuple[str, str], Driver]) -> None:
    missing = [a for a in scenario.architectures if (scenario.kind, a) not in drivers]
    if missing:
        raise NoDriverError(
            f"{scenario.name}: {KINDS[scenario.kind]} has no driver for "
            f"{', '.join(missing)} yet (drivers there are: "
            + (", ".join(f"{k}/{a}" for k, a in sorted(drivers)) or "none") + ")")


async def run(scenario: Scenario, root: Path | str, *, argv: Sequence[str] = (),
              drivers: dict[tuple[str, str], Driver] | None = None,
              say: Callable[[str], None] = print) -> RunDirectory:
    """Run ``scenario`` into a new directory under ``root`` and render its report."""
    drivers = DRIVERS if drivers is None else drivers
    check_runnable(scenario, drivers)
    seeds = {f"{scenario.kind}/{n}": derive(scenario.master_seed, scenario.kind, n)
             for n in range(scenario.repetitions)}
    directory = RunDirectory.create(root, scenario, argv=argv, seeds=seeds)
    say(f"{scenario.name}: {scenario.repetitions} repetitions × "
        f"{', '.join(scenario.architectures)} into {directory.path}")
    for number in range(scenario.repetitions):
        # alternate which goes first: what one run leaves the machine (a warm page cache,
        # a busy disk) must not always fall on the same architecture
        order = scenario.architectures if number % 2 == 0 else scenario.architectures[::-1]
        for architecture in order:
            began = time.monotonic()
            recorder = Recorder(architecture, number)
            figures = await drivers[(scenario.kind, architecture)](
                Repetition(scenario, architecture, number), recorder)
            directory.record(recorder.events)
            directory.summarise(architecture, number, figures)
            say(f"  repetition {number + 1}/{scenario.repetitions} {architecture}: "
                f"{len(recorder.events)} events, {time.monotonic() - began:.1f} s")
    directory.finish()
    report = render(directory.path)
    say(f"report: {report}")
    return directory


__all__ = ["DRIVERS", "Driver", "NoDriverError", "Recorder", "Repetition", "check_runnable",
           "run"]
