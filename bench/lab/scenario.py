"""A lab scenario: one TOML file, run the same way on both architectures.

```toml
name = "s1-safety-behind-telemetry"
kind = "safety_latency"            # one of KINDS
architectures = ["broker", "ocpp"] # this system; the OCPP 2.0.1 baseline
repetitions = 5
master_seed = 1                    # every seed of the run comes from it (bench.lab.seeds)
duration_s = 60
warmup_s = 10                      # nothing is measured before

[sites]
count = 1
stations = 10                      # per site

[link]                             # each site's uplink (bench.netlab.profile.LinkProfile)
up_kbit = 2000
down_kbit = 8000
buffer_ms = 300
loss_percent = 1.0
delay_ms = 40
jitter_ms = 10
trace = ""                         # a capacity trace (bench/lab/traces/*.csv), else fixed rates

[[outages]]                        # the uplink cut at at_s for for_s seconds
at_s = 20
for_s = 60
kind = "drop"                      # drop (a dead zone), reset (TCP resets), down (link down)

[parameters]                       # the kind's own (each kind's PARAMETERS says which)
telemetry_bytes_per_s = 30000
safety_messages = 20
```

Everything is checked when the file is read: an unknown key, a kind that does not exist, an
outage beyond the run or overlapping another are refused with the place they are at.
"""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from bench.netlab.profile import LinkProfile

KINDS: dict[str, str] = {
    "safety_latency": "S1: a safety message behind telemetry on a saturated uplink",
    "uplink_outage": "S2: a site uplink outage, then catch-up",
    "cloud_relearn": "S3: a cloud CSMS crash and state re-learn",
    "firmware_fanout": "S4: a firmware image to N stations of one site",
    "idle_connections": "S5: upstream TCP connections and idle bytes per site",
    "reconnect_storm": "S6: a reconnect storm after a cloud restart",
    "cellular_day": "S7: an hour of normal operation on a poor cellular link",
}
"""The scenario kinds (issue 16's S1 to S7)."""

Architecture = Literal["broker", "ocpp"]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Sites(_Strict):
    count: int = Field(1, ge=1, le=10)
    stations: int = Field(10, ge=1, le=1000)


class Link(_Strict):
    """A site's uplink, as the lab's routers impair it."""

    up_kbit: float | None = Field(None, gt=0)
    down_kbit: float | None = Field(None, gt=0)
    buffer_ms: float | None = Field(None, gt=0)
    loss_percent: float = Field(0.0, ge=0, lt=100)
    delay_ms: float = Field(0.0, ge=0)
    jitter_ms: float = Field(0.0, ge=0)
    trace: str = ""

    def profile(self) -> LinkProfile:
        def bps(kbit: float | None) -> int | None:
            return None if kbit is None else int(kbit * 1000)

        return LinkProfile(up_bps=bps(self.up_kbit), down_bps=bps(self.down_kbit),
                           buffer_ms=self.buffer_ms, loss=self.loss_percent / 100,
                           delay_ms=self.delay_ms, jitter_ms=self.jitter_ms)


class Outage(_Strict):
    at_s: float = Field(ge=0)
    for_s: float = Field(gt=0)
    kind: Literal["drop", "reset", "down"] = "drop"


class Scenario(_Strict):
    """See the module docstring."""

    name: str = Field(pattern=r"^[a-z0-9][a-z0-9-]{0,63}$")
    kind: str
    description: str = ""
    architectures: tuple[Architecture, ...] = ("broker", "ocpp")
    repetitions: int = Field(5, ge=1, le=100)
    master_seed: int = Field(1, ge=0, lt=2**63)
    duration_s: float = Field(60.0, gt=0, le=24 * 3600)
    warmup_s: float = Field(10.0, ge=0)
    sites: Sites = Sites()
    link: Link = Link()
    outages: tuple[Outage, ...] = ()
    parameters: dict[str, float | int | str | bool] = {}

    @model_validator(mode="after")
    def _consistent(self) -> Scenario:
        if self.kind not in KINDS:
            raise ValueError(f"kind {self.kind!r} is not one of {', '.join(KINDS)}")
        if not self.architectures or len(set(self.architectures)) != len(self.architectures):
            raise ValueError("architectures: broker, ocpp or both, each once")
        if self.warmup_s >= self.duration_s:
            raise ValueError(f"warmup_s {self.warmup_s:g} leaves nothing of duration_s "
                             f"{self.duration_s:g} to measure")
        end = 0.0
        for outage in sorted(self.outages, key=lambda o: o.at_s):
            if outage.at_s < end:
                raise ValueError(f"the outage at {outage.at_s:g} s begins before the one "
                                 f"before it ends ({end:g} s)")
            end = outage.at_s + outage.for_s
            if end > self.duration_s:
                raise ValueError(f"the outage at {outage.at_s:g} s ends at {end:g} s, after "
                                 f"the run ({self.duration_s:g} s)")
        return self

    def to_toml(self) -> str:
        """The scenario as resolved (every default written out), as TOML."""
        return dumps_toml(self.model_dump(mode="json"))


class ScenarioError(ValueError):
    """A scenario file that cannot be run, saying where and why."""


def load(path: Path | str, **overrides: Any) -> Scenario:
    """The scenario in ``path`` (``overrides`` replace top-level keys: ``repetitions=1``)."""
    path = Path(path)
    try:
        raw = tomllib.loads(path.read_text())
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise ScenarioError(f"{path}: {exc}") from None
    raw.update({k: v for k, v in overrides.items() if v is not None})
    try:
        return Scenario.model_validate(raw)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(part) for part in first["loc"]) or "the file"
        raise ScenarioError(f"{path}: {where}: {first['msg']}") from None


def dumps_toml(data: dict[str, Any]) -> str:
    """Plain data as TOML: scalars and lists of scalars first, then tables, then arrays of
    tables (the subset a scenario uses)."""
    lines: list[str] = []
    tables: list[tuple[str, dict[str, Any]]] = []
    arrays: list[tuple[str, list[dict[str, Any]]]] = []
    for key, value in data.items():
        if isinstance(value, dict):
            tables.append((key, value))
        elif isinstance(value, list) and value and all(isinstance(v, dict) for v in value):
            arrays.append((key, value))
        elif value is not None:
            lines.append(f"{key} = {_scalar(value)}")
    for key, table in tables:
        lines += ["", f"[{key}]", *(f"{k} = {_scalar(v)}" for k, v in table.items()
                                    if v is not None)]
    for key, items in arrays:
        for item in items:
            lines += ["", f"[[{key}]]", *(f"{k} = {_scalar(v)}" for k, v in item.items()
                                          if v is not None)]
    return "\n".join(lines) + "\n"


def _scalar(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, str):
        return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(_scalar(v) for v in value) + "]"
    raise TypeError(f"no TOML for {type(value).__name__}")


__all__ = ["KINDS", "Link", "Outage", "Scenario", "ScenarioError", "Sites", "dumps_toml", "load"]
