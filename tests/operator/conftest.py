"""Fixtures of the operator tests."""

from __future__ import annotations

import os

# Read by sipstack_operator.handlers at import (the timer interval is fixed
# when the decorator runs): fast timers and retries for the tests.
os.environ.setdefault("SIPSTACK_STATUS_INTERVAL", "0.3")
os.environ.setdefault("SIPSTACK_RETRY_BASE", "0.5")
os.environ.setdefault("SIPSTACK_RETRY_CAP", "2")
os.environ.setdefault("SIPSTACK_METRICS_PORT", "0")  # tests that scrape it pick a free port

import dataclasses
from collections.abc import AsyncIterator
from typing import Any

import pytest

from .fake_agent import FakeAgents, serve_agents
from .operator_testlib import CRD_PATH, EXAMPLES, load_docs


@pytest.fixture(scope="session")
def crd() -> dict[str, Any]:
    return load_docs(CRD_PATH)[0]


@pytest.fixture(scope="session")
def crd_schema(crd: dict[str, Any]) -> dict[str, Any]:
    return crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]


@pytest.fixture(scope="session")
def example_secrets() -> list[dict[str, Any]]:
    return load_docs(EXAMPLES / "secrets.yaml")


@pytest.fixture()
async def agents(monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[FakeAgents]:
    """The agents' /status (fake_agent.py) for an operator started after this fixture.

    Without it the operator cannot read any agent's /status: a running agent's
    backlog is unknown, so deleting its connector drains until
    spec.drain.timeoutSeconds (600 s by default).
    """
    from sipstack_operator import handlers  # imported late: it reads the env set above

    async with serve_agents() as fake:
        monkeypatch.setattr(
            handlers,
            "CONFIG",
            dataclasses.replace(
                handlers.CONFIG, agent_status_url=fake.url_template, agent_status_timeout=1.0
            ),
        )
        yield fake
