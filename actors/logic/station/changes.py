"""Reading and writing a station tree for the simulator, one tick at a time.

``TickChanges`` collects the writes of one tick by key-path text and turns them into the
operations of one transaction, keeping only values that differ from the tree (after the
schema's normalisation, e.g. float32 rounding), so that the transaction stays small and never
fails validation at apply time: every value is validated when it is set. Readings are rounded
and may be reported with a deadband, the way real meters and sensors report, so that noise
does not rewrite a value on every tick. ``Drift`` is that noise; ``EvseLayout`` is the shape of
one EVSE as found in the tree.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass
from typing import Any

from keypath import KeyPath
from object_model.errors import NotPresentError
from object_model.station.vendor_acme import COOLING_LOOP
from object_model.tree import Delete, ObjectTree, Operation, Write
from object_model.types import ValueType

_ABSENT: Any = object()
_DELETE: Any = object()
_NOTHING: Any = object()  # declared but holding no value


@dataclass(slots=True)
class Drift:
    """Ornstein-Uhlenbeck noise: wanders around ``mean`` with deviation ``sd``, forgetting its
    past in about ``tau_s``; exact for any step, so the tick length does not change it."""

    mean: float
    sd: float
    tau_s: float
    value: float

    def step(self, rng: random.Random, dt_s: float) -> float:
        a = math.exp(-dt_s / self.tau_s)
        noise = self.sd * math.sqrt(1.0 - a * a) * rng.gauss(0.0, 1.0)
        self.value = self.mean + (self.value - self.mean) * a + noise
        return self.value


@dataclass(frozen=True, slots=True)
class EvseLayout:
    """What one EVSE has: connectors, fans with their sensors, an ACME cooling loop or not."""

    id: int
    dc: bool
    connectors: tuple[int, ...]
    fans: tuple[tuple[int, tuple[int, ...]], ...]  # (fan id, its temperature sensor ids)
    cooling: bool

    @property
    def p(self) -> str:
        """The key-path prefix of the EVSE, ``evse/<id>/``."""
        return f"evse/{self.id}/"


def read_layout(tree: ObjectTree) -> list[EvseLayout]:
    """The EVSEs of a station tree, in id order."""
    evses = tree.read("evse") if "evse" in tree else {}
    out = []
    for key, evse in sorted(evses.items(), key=lambda kv: int(kv[0])):
        module = evse.get("power_module", {})
        fans = sorted(module.get("fan", {}).items(), key=lambda kv: int(kv[0]))
        out.append(EvseLayout(
            id=int(key),
            dc=evse.get("current_kind") == "DC",
            connectors=tuple(sorted(int(c) for c in evse.get("connector", {}))),
            fans=tuple((int(f), tuple(sorted(int(s) for s in fan.get("temperature_sensor", {}))))
                       for f, fan in fans),
            cooling=COOLING_LOOP in module,
        ))
    return out


class TickChanges:
    """The writes of one tick: read-your-writes, and only changed values become operations.

    ``cache`` maps key-path text to its parsed path and value type; share it between ticks.
    """

    def __init__(self, tree: ObjectTree, cache: dict[str, tuple[KeyPath, ValueType]]) -> None:
        self._tree, self._cache = tree, cache
        self._pending: dict[str, Any] = {}
        self._seen: dict[str, Any] = {}  # the tree's values, read once per tick

    def _leaf(self, path: str) -> tuple[KeyPath, ValueType]:
        hit = self._cache.get(path)
        if hit is None:
            kp = KeyPath.parse(path)
            hit = self._cache[path] = (kp, self._tree.value_type(kp))
        return hit

    def _stored(self, path: str, default: Any) -> Any:
        value = self._seen.get(path, _ABSENT)
        if value is _ABSENT:
            try:
                value = self._tree.get(self._leaf(path)[0])
            except NotPresentError:
                value = _NOTHING
            self._seen[path] = value
        return default if value is _NOTHING else value

    def get(self, path: str, default: Any = None) -> Any:
        """The value at ``path`` as this tick left it so far (``default`` when none)."""
        value = self._pending.get(path, _ABSENT)
        if value is _ABSENT:
            return self._stored(path, default)
        return default if value is _DELETE else value

    def set(self, path: str, value: Any) -> Any:
        """Write ``value`` (validated now); returns it as the tree will hold it."""
        value = self._leaf(path)[1].validate(value)
        if self.get(path, _ABSENT) != value:
            self._pending[path] = value
        return value

    def report(self, path: str, value: float, digits: int, band: float = 0.0) -> float:
        """Report a reading rounded to ``digits``, unless it is within ``band`` of the value
        reported before; returns the value reported now."""
        value = round(value, digits)
        current = self.get(path)
        if band and current is not None and abs(current - value) < band:
            return float(current)
        return float(self.set(path, value))

    def clear(self, path: str) -> None:
        """Remove an optional value."""
        if self.get(path, _ABSENT) is not _ABSENT:
            self._pending[path] = _DELETE

    def touched(self, prefix: str) -> bool:
        """Whether this tick wrote anything under ``prefix`` (key-path text)."""
        return any(p.startswith(prefix) for p in self._pending)

    def operations(self) -> list[Operation]:
        """The operations of the transaction, in the order their paths were first written."""
        ops: list[Operation] = []
        for path, value in self._pending.items():
            stored = self._stored(path, _ABSENT)
            if value is _DELETE:
                if stored is not _ABSENT:
                    ops.append(Delete(self._leaf(path)[0]))
            elif stored is _ABSENT or stored != value:
                ops.append(Write(self._leaf(path)[0], value))
        return ops
