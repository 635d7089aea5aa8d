"""Fixtures of the operator tests."""

from __future__ import annotations

import os

# Read by sipstack_operator.handlers at import (the timer interval is fixed
# when the decorator runs): fast timers and retries for the tests.
os.environ.setdefault("SIPSTACK_STATUS_INTERVAL", "0.3")
os.environ.setdefault("SIPSTACK_RETRY_BASE", "0.5")
os.environ.setdefault("SIPSTACK_RETRY_CAP", "2")
os.environ.setdefault("SIPSTACK_METRICS_PORT", "0")  # tests that scrape it pick a free port

from typing import Any

import pytest
from operator_testlib import CRD_PATH, EXAMPLES, load_docs


@pytest.fixture(scope="session")
def crd() -> dict[str, Any]:
    return load_docs(CRD_PATH)[0]


@pytest.fixture(scope="session")
def crd_schema(crd: dict[str, Any]) -> dict[str, Any]:
    return crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]


@pytest.fixture(scope="session")
def example_secrets() -> list[dict[str, Any]]:
    return load_docs(EXAMPLES / "secrets.yaml")
