"""Fixtures of the operator tests: paths, example documents, and a kmock
cluster (see emulator.py) with a kubeconfig pointing at it."""

from __future__ import annotations

import os

# Read by sipstack_operator.handlers at import (the timer interval is fixed
# when the decorator runs): fast timers and retries for the tests.
os.environ.setdefault("SIPSTACK_STATUS_INTERVAL", "0.3")
os.environ.setdefault("SIPSTACK_RETRY_BASE", "0.5")
os.environ.setdefault("SIPSTACK_RETRY_CAP", "2")

import pathlib
from typing import Any

import pytest
import yaml

ROOT = pathlib.Path(__file__).resolve().parents[2]
CRD_PATH = ROOT / "crds" / "asteriskconnectors.sipstack.com.yaml"
EXAMPLES = ROOT / "examples"
GOLDEN = pathlib.Path(__file__).resolve().parent / "golden"


def load_docs(path: pathlib.Path) -> list[dict[str, Any]]:
    return [d for d in yaml.safe_load_all(path.read_text()) if isinstance(d, dict)]


@pytest.fixture(scope="session")
def crd() -> dict[str, Any]:
    return load_docs(CRD_PATH)[0]


@pytest.fixture(scope="session")
def crd_schema(crd: dict[str, Any]) -> dict[str, Any]:
    return crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]


@pytest.fixture(scope="session")
def example_secrets() -> list[dict[str, Any]]:
    return load_docs(EXAMPLES / "secrets.yaml")


def example_crs() -> list[pathlib.Path]:
    return sorted(p for p in EXAMPLES.glob("*.yaml") if p.name != "secrets.yaml")
