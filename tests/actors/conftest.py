"""Fixtures shared by the actor tests."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import AsyncExitStack
from pathlib import Path

import pytest

from tests.actors.station.site import Site


@pytest.fixture
async def site(tmp_path: Path) -> AsyncIterator[Site]:
    """A station's world on the in-memory transport: its CSMS, its store, its peers."""
    async with AsyncExitStack() as stack:
        yield Site(tmp_path, stack)
