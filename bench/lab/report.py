"""A run's report, rendered from its directory alone (``csms lab report RUN_DIR``).

For every figure in ``summary.json``: its mean over the repetitions with a bootstrap 95 %
interval per architecture (``bench.lab.stats``), and the ratio of the OCPP baseline's to
this system's. Plots (matplotlib, both architectures on one axis):

* ``latency.png``: the distribution (ECDF) of every ``latency`` event (seconds), by key;
* ``recovery.png``: the recovery curves (``consistency`` events: the fraction of keys whose
  view shows the truth over time), each repetition a thin line;
* ``figures.png``: the figures ending in ``_bytes`` or ``_connections`` as bars with their
  intervals.

The same directory renders the same ``report.md`` every time (the bootstrap is seeded from
the run's master seed and each figure's name).
"""

from __future__ import annotations

import math
from collections import defaultdict
from pathlib import Path
from typing import Any

from bench.lab.rundir import Event, RunDirectory
from bench.lab.scenario import KINDS
from bench.lab.seeds import derive
from bench.lab.stats import Estimate, estimate

ARCHITECTURE_NAMES = {"broker": "this system (broker hierarchy)",
                      "ocpp": "OCPP 2.0.1 (point to point)"}


def figures_by_architecture(run: RunDirectory) -> dict[str, dict[str, list[float]]]:
    """``{figure: {architecture: [value per repetition]}}`` of the numeric figures."""
    out: dict[str, dict[str, list[float]]] = defaultdict(lambda: defaultdict(list))
    for architecture, repetitions in sorted(run.summary.items()):
        for _, figures in sorted(repetitions.items(), key=lambda item: int(item[0])):
            for name, value in figures.items():
                if isinstance(value, (int, float)) and not isinstance(value, bool):
                    out[name][architecture].append(float(value))
    return out


def estimates(run: RunDirectory) -> dict[str, dict[str, Estimate]]:
    master = run.scenario.master_seed
    return {name: {arch: estimate(values, derive(master, "bootstrap", name, arch))
                   for arch, values in by_arch.items()}
            for name, by_arch in sorted(figures_by_architecture(run).items())}


def render(path: Path | str) -> Path:
    """Render ``report.md`` and the plots of the run in ``path``; returns the report's path."""
    run = RunDirectory(path)
    scenario, manifest = run.scenario, run.manifest
    table = estimates(run)
    events = list(run.events())
    plots = _plots(run, events, table)
    architectures = [a for a in scenario.architectures if a in run.summary]
    lines = [f"# {scenario.name}: {KINDS[scenario.kind]}", ""]
    if scenario.description:
        lines += [scenario.description, ""]
    lines += [
        f"- commit `{manifest.get('commit')}`, Python {manifest.get('python')}, kernel "
        f"{manifest.get('kernel')}, {manifest.get('cpus')} × {manifest.get('cpu')}, TCP "
        f"{manifest.get('tcp_congestion_control')}",
        f"- master seed {scenario.master_seed}; {scenario.repetitions} repetitions of "
        f"{scenario.duration_s:g} s (the first {scenario.warmup_s:g} s not measured)",
        f"- {scenario.sites.count} site(s) × {scenario.sites.stations} stations; uplink "
        f"{link_text(scenario)}",
        f"- run {manifest.get('started_at')} to {manifest.get('ended_at', '(not finished)')}",
        "", "Means over the repetitions, with bootstrap 95 % intervals.", "",
        "| figure | " + " | ".join(ARCHITECTURE_NAMES.get(a, a) for a in architectures)
        + (" | OCPP / ours |" if {"broker", "ocpp"} <= set(architectures) else ""),
        "| --- |" + " --- |" * (len(architectures)
                                  + ({"broker", "ocpp"} <= set(architectures))),
    ]
    for name, by_arch in table.items():
        cells = [by_arch[a].text() if a in by_arch else "-" for a in architectures]
        if {"broker", "ocpp"} <= set(architectures):
            cells.append(ratio_text(by_arch.get("ocpp"), by_arch.get("broker")))
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    lines += [""] + [f"![{name}](plots/{name}.png)" for name in plots] + [""]
    report = run.path / "report.md"
    report.write_text("\n".join(lines))
    return report


def link_text(scenario: Any) -> str:
    link = scenario.link
    parts = []
    if link.up_kbit:
        parts.append(f"{link.up_kbit:g} kbit/s up")
    if link.down_kbit:
        parts.append(f"{link.down_kbit:g} kbit/s down")
    if link.buffer_ms:
        parts.append(f"{link.buffer_ms:g} ms buffer")
    if link.delay_ms:
        parts.append(f"{link.delay_ms:g} ± {link.jitter_ms:g} ms each way")
    if link.loss_percent:
        parts.append(f"{link.loss_percent:g} % loss")
    if link.trace:
        parts.append(f"trace {link.trace}")
    if scenario.outages:
        parts.append(", ".join(f"cut at {o.at_s:g} s for {o.for_s:g} s ({o.kind})"
                               for o in scenario.outages))
    return "; ".join(parts) or "unimpaired"


def ratio_text(theirs: Estimate | None, ours: Estimate | None) -> str:
    if theirs is None or ours is None or not ours.mean or math.isnan(ours.mean):
        return "-"
    return f"{theirs.mean / ours.mean:.3g}"


def _plots(run: RunDirectory, events: list[Event], table: dict[str, dict[str, Estimate]]
           ) -> list[str]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    folder = run.path / "plots"
    folder.mkdir(exist_ok=True)
    made: list[str] = []
    colours = {"broker": "tab:blue", "ocpp": "tab:orange"}
    latencies: dict[tuple[str, str], list[float]] = defaultdict(list)
    curves: dict[tuple[str, int], list[tuple[float, float]]] = defaultdict(list)
    for e in events:
        if e.kind == "latency":
            latencies[(e.architecture, e.key)].append(float(e.value))
        elif e.kind == "consistency":
            curves[(e.architecture, e.repetition)].append((e.t_s, float(e.value)))
    if latencies:
        fig, ax = plt.subplots(figsize=(7, 4))
        for (arch, key), values in sorted(latencies.items()):
            ordered = sorted(values)
            ax.step(ordered, [(i + 1) / len(ordered) for i in range(len(ordered))],
                    where="post", color=colours.get(arch), label=f"{arch}: {key}",
                    linestyle="-" if key == sorted({k for _, k in latencies})[0] else "--")
        ax.set_xscale("log")
        ax.set_xlabel("latency (s)")
        ax.set_ylabel("fraction of messages")
        ax.legend(fontsize="small")
        ax.grid(True, which="both", alpha=0.3)
        _save(fig, folder / "latency.png")
        made.append("latency")
    if curves:
        fig, ax = plt.subplots(figsize=(7, 4))
        labelled: set[str] = set()
        for (arch, _), points in sorted(curves.items()):
            points.sort()
            ax.plot([t for t, _ in points], [f for _, f in points], color=colours.get(arch),
                    linewidth=0.8, alpha=0.7,
                    label=None if arch in labelled else ARCHITECTURE_NAMES.get(arch, arch))
            labelled.add(arch)
        ax.set_xlabel("time (s)")
        ax.set_ylabel("fraction of keys consistent")
        ax.set_ylim(0, 1.02)
        ax.legend(fontsize="small")
        ax.grid(True, alpha=0.3)
        _save(fig, folder / "recovery.png")
        made.append("recovery")
    bars = [(name, by_arch) for name, by_arch in table.items()
            if name.endswith(("_bytes", "_connections"))]
    if bars:
        fig, axes = plt.subplots(1, len(bars), figsize=(3.2 * len(bars), 3.5), squeeze=False)
        for ax, (name, by_arch) in zip(axes[0], bars, strict=True):
            archs = sorted(by_arch)
            means = [by_arch[a].mean for a in archs]
            errors = [[by_arch[a].mean - by_arch[a].low for a in archs],
                      [by_arch[a].high - by_arch[a].mean for a in archs]]
            ax.bar(archs, means, yerr=errors, color=[colours.get(a) for a in archs], capsize=4)
            ax.set_title(name, fontsize="small")
        fig.tight_layout()
        _save(fig, folder / "figures.png")
        made.append("figures")
    return made


def _save(fig: Any, path: Path) -> None:
    import matplotlib.pyplot as plt

    fig.savefig(path, dpi=110, metadata={"Software": None})
    plt.close(fig)


__all__ = ["ARCHITECTURE_NAMES", "estimates", "figures_by_architecture", "link_text", "ratio_text",
           "render"]
