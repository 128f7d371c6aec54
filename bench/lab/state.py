"""The state both architectures are judged on: each EVSE's charging session.

A key per EVSE (``<station>/evse<e>``) whose value is ``"<session id>|open"`` while its
session runs, ``"<session id>|ended"`` once it ended, and ``""`` before any session. The
truth is read from the station itself (the simulated station's own tree:
``stations_sessions``; the simulated charger's own EVSEs, in ``bench.lab.ocpp_arch``); the
view from the copies a CSMS holds (``view``). Both trees use the station model's ``evse/<e>/session/{session_id,state}``, which
our gateway fills from OCPP's TransactionEvents, so one reader serves both. ``Dynamics`` and
``live`` say how the sessions come and go, alike on both.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

ENDED = frozenset({"Finished", "Idle"})


@dataclass(frozen=True)
class Dynamics:
    """How the stations' EVSEs live when a scenario wants them to (``live``): an EV arrives
    after an idle EVSE waited ``idle_mean_s`` on average, and stays ``session_mean_s`` on
    average (wall-clock seconds, exponential)."""

    idle_mean_s: float = 60.0
    session_mean_s: float = 120.0


async def live(dynamics: Dynamics, rng: random.Random, arrive: Callable[[], None],
               leave: Callable[[], None]) -> None:
    """One EVSE's life until cancelled: idle for a while, an EV arrives, stays a while,
    leaves (exponential, means from ``dynamics``). Both architectures' stations live by it,
    each EVSE with the generator of the same seed, so they see the same EVs at the same
    moments."""
    while True:
        await asyncio.sleep(rng.expovariate(1 / dynamics.idle_mean_s))  # the EV's schedule
        arrive()
        await asyncio.sleep(rng.expovariate(1 / dynamics.session_mean_s))
        leave()


def session_value(session_id: str | None, open_: bool) -> str:
    return f"{session_id}|{'open' if open_ else 'ended'}" if session_id else ""


def current(values: Mapping[str, str]) -> dict[str, str]:
    """What runs now at each EVSE: its open session, else nothing (what ended before is
    history, which a CSMS that lost its state cannot know)."""
    return {key: value if value.endswith("|open") else "" for key, value in values.items()}


def tree_sessions(address: str, tree: Any) -> dict[str, str]:
    """Each EVSE's session in a station tree (the station's own, or a CSMS's copy of it)."""
    out: dict[str, str] = {}
    for evse, _, _ in tree.children("evse"):
        base = f"evse/{evse}/session"
        session = tree.get(f"{base}/session_id") if f"{base}/session_id" in tree else None
        state = tree.get(f"{base}/state") if f"{base}/state" in tree else None
        out[f"{address}/evse{evse}"] = session_value(session, state not in ENDED)
    return out


def view(replicas: Mapping[str, Any], prefix: str = "stations/") -> dict[str, str]:
    """Every EVSE's session as the copies ``replicas`` (a CSMS's, by key) show it."""
    out: dict[str, str] = {}
    for key, replica in replicas.items():
        if key.startswith(prefix) and replica.synced:
            out.update(tree_sessions(key[len(prefix):], replica.tree))
    return out


def task_states(replicas: Mapping[str, Any], task: str, prefix: str = "stations/"
                ) -> dict[str, str]:
    """Each station's state of task ``task`` (``""``: none yet) as a CSMS's copies show it."""
    out: dict[str, str] = {}
    for key, replica in replicas.items():
        if key.startswith(prefix):
            path = f"tasks/{task}/state"
            out[key[len(prefix):]] = str(replica.tree.get(path)) if path in replica.tree else ""
    return out


def stations_sessions(stations: Iterable[Any]) -> dict[str, str]:
    """Every EVSE's session in stations' own trees."""
    out: dict[str, str] = {}
    for station in stations:
        if station.tree is not None:
            out.update(tree_sessions(station.address, station.tree))
    return out


__all__ = ["ENDED", "Dynamics", "current", "live", "session_value", "stations_sessions", "task_states", "tree_sessions", "view"]
