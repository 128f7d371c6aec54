"""A run directory: everything a run leaves, from which its report is rendered again.

```
<root>/<scenario>-<UTC time>/
    scenario.toml     the scenario as resolved (every default written out)
    manifest.json     commit, package versions, kernel, CPU, Python, the master seed and
                      every seed derived, the command line, start and end times
    events.csv        long format: architecture, repetition, t_s, kind, key, value
    summary.json      per architecture, per repetition: the figures the run measured
    plots/*.png       rendered by ``bench.lab.report`` (again whenever asked)
    report.md         likewise
```

``events.csv`` holds what each repetition recorded as it ran (latencies, truth and view
changes for the oracle, bytes counted on the uplink...); ``summary.json`` the figures computed
from them at the end of each repetition. Both are plain data: nothing in a report depends on
anything but them.
"""

from __future__ import annotations

import csv
import io
import json
import os
import platform
import subprocess
import sys
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Any

from bench.lab.scenario import Scenario, load

EVENT_FIELDS = ("architecture", "repetition", "t_s", "kind", "key", "value")
PACKAGES = ("csms63110", "pydantic", "msgpack", "slixmpp", "websockets", "ocpp", "cryptography",
            "matplotlib")


@dataclass(frozen=True)
class Event:
    architecture: str
    repetition: int
    t_s: float
    kind: str
    key: str
    value: str


class RunDirectory:
    """One run's directory (see the module docstring)."""

    def __init__(self, path: Path | str) -> None:
        self.path = Path(path)

    @classmethod
    def create(cls, root: Path | str, scenario: Scenario, *, argv: Iterable[str] = (),
               seeds: dict[str, int] | None = None) -> RunDirectory:
        stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
        path = Path(root) / f"{scenario.name}-{stamp}"
        suffix = 1
        while path.exists():
            suffix += 1
            path = Path(root) / f"{scenario.name}-{stamp}-{suffix}"
        path.mkdir(parents=True)
        run = cls(path)
        (path / "scenario.toml").write_text(scenario.to_toml())
        run._write_json("manifest.json", manifest(scenario, argv=list(argv), seeds=seeds or {}))
        with (path / "events.csv").open("w", newline="") as out:
            csv.writer(out).writerow(EVENT_FIELDS)
        run._write_json("summary.json", {})
        return run

    def _write_json(self, name: str, data: Any) -> None:
        tmp = self.path / f".{name}.tmp"
        tmp.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n")
        os.replace(tmp, self.path / name)

    @property
    def scenario(self) -> Scenario:
        return load(self.path / "scenario.toml")

    @property
    def manifest(self) -> dict[str, Any]:
        return dict(json.loads((self.path / "manifest.json").read_text()))

    def finish(self) -> None:
        """Note in the manifest when the run ended."""
        data = self.manifest
        data["ended_at"] = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
        self._write_json("manifest.json", data)

    def record(self, events: Iterable[Event]) -> None:
        """Append events to ``events.csv``."""
        buffer = io.StringIO()
        writer = csv.writer(buffer)
        for e in events:
            writer.writerow((e.architecture, e.repetition, repr(round(e.t_s, 6)), e.kind, e.key,
                             e.value))
        with (self.path / "events.csv").open("a", newline="") as out:
            out.write(buffer.getvalue())

    def events(self) -> Iterator[Event]:
        with (self.path / "events.csv").open(newline="") as source:
            for row in csv.DictReader(source):
                yield Event(row["architecture"], int(row["repetition"]), float(row["t_s"]),
                            row["kind"], row["key"], row["value"])

    @property
    def summary(self) -> dict[str, dict[str, dict[str, Any]]]:
        """``{architecture: {repetition: {figure: value}}}`` (repetitions as text keys)."""
        return dict(json.loads((self.path / "summary.json").read_text()))

    def summarise(self, architecture: str, repetition: int, figures: dict[str, Any]) -> None:
        data = self.summary
        data.setdefault(architecture, {})[str(repetition)] = figures
        self._write_json("summary.json", data)


def manifest(scenario: Scenario, *, argv: list[str], seeds: dict[str, int]) -> dict[str, Any]:
    """What a reader needs to trust and repeat a run."""
    versions: dict[str, str | None] = {}
    for name in PACKAGES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = None
    return {
        "scenario": scenario.name, "kind": scenario.kind,
        "commit": _commit(), "packages": versions,
        "python": sys.version.split()[0], "kernel": platform.release(),
        "machine": platform.machine(), "cpu": _cpu(), "cpus": os.cpu_count(),
        "tcp_congestion_control": _read("/proc/sys/net/ipv4/tcp_congestion_control"),
        "master_seed": scenario.master_seed, "seeds": seeds, "argv": argv,
        "started_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }


def _commit() -> str | None:
    try:
        done = subprocess.run(["git", "describe", "--always", "--dirty", "--abbrev=12"],
                              capture_output=True, text=True, timeout=5,
                              cwd=Path(__file__).resolve().parents[2])
    except (OSError, subprocess.TimeoutExpired):
        return None
    return done.stdout.strip() or None


def _cpu() -> str | None:
    for line in (_read("/proc/cpuinfo") or "").splitlines():
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return platform.processor() or None


def _read(path: str) -> str | None:
    try:
        return Path(path).read_text().strip()
    except OSError:
        return None


__all__ = ["EVENT_FIELDS", "Event", "RunDirectory", "manifest"]
