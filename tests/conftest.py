"""Shared test settings and fixtures."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack
from pathlib import Path

import pytest
from hypothesis import HealthCheck, settings

from actors.testing import World

settings.register_profile(
    "default", deadline=None, suppress_health_check=[HealthCheck.too_slow], max_examples=200
)
settings.register_profile("ci", deadline=None, suppress_health_check=[HealthCheck.too_slow],
                          max_examples=400, derandomize=True)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "default"))


@pytest.fixture
async def world(tmp_path: Path) -> AsyncIterator[World]:
    """Actors on the in-memory network with real stores in ``tmp_path``, all closed after."""
    async with AsyncExitStack() as stack:
        yield World(tmp_path, stack)
