"""Fixtures for tests that need a real broker."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest_asyncio

from broker_bridge.prosody import ManagedProsody


@pytest_asyncio.fixture
async def managed_prosody(tmp_path: Path) -> AsyncIterator[ManagedProsody]:
    """A started private Prosody (state in ``tmp_path/broker``), always stopped afterwards.

    Tests using it should carry ``@pytest.mark.broker``.
    """
    broker = ManagedProsody(tmp_path / "broker")
    await broker.start()
    try:
        yield broker
    finally:
        await broker.stop()
