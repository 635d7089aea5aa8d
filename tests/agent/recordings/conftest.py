"""Fixtures of the recordings tests: a clock, metrics, a real store (helpers: helpers.py)."""

from __future__ import annotations

from pathlib import Path

import pytest
from sipstack_agent.metrics import Metrics
from sipstack_agent.state import StateStore

from .helpers import FakeClock


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def metrics() -> Metrics:
    return Metrics()


@pytest.fixture
async def store(tmp_path: Path):
    s = await StateStore.open(tmp_path / "state" / "state.db", connector_id="test-agent")
    try:
        yield s
    finally:
        await s.close()
