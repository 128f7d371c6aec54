"""Every seed of a run derived from one master seed, so the same master seed replays the run.

A seed is named by where it is used (``derive(master, "S1", "ocpp", 3, "telemetry")``): the
same names give the same seed, different names independent ones, and adding a new use of a
seed never shifts the others (a counter drawn from one generator would)."""

from __future__ import annotations

import hashlib
import random


def derive(master: int, *names: object) -> int:
    """The 63-bit seed for ``names`` under ``master``."""
    text = "\x1f".join([str(master), *(str(name) for name in names)])
    return int.from_bytes(hashlib.blake2b(text.encode(), digest_size=8).digest(), "big") >> 1


def rng(master: int, *names: object) -> random.Random:
    """A generator seeded with ``derive(master, *names)``."""
    return random.Random(derive(master, *names))


__all__ = ["derive", "rng"]
