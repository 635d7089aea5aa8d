"""Fixtures of the chart tests (see chartlib.py)."""

from __future__ import annotations

import os
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from .chartlib import CRD_FILE, ROOT, Helm


@pytest.fixture(scope="session")
def helm(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Helm]:
    script = ROOT / "tools" / "fetch-helm.sh"
    proc = subprocess.run(
        ["bash", str(script)], capture_output=True, text=True, timeout=300, check=False
    )
    if proc.returncode != 0:
        message = f"tools/fetch-helm.sh failed: {proc.stderr.strip()[-2000:]}"
        if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
            pytest.fail(message)
        pytest.skip(message)
    binary = Path(proc.stdout.strip().splitlines()[-1])
    yield Helm(binary, tmp_path_factory.mktemp("helm-home"))


@pytest.fixture(scope="session")
def crd() -> dict[str, Any]:
    if not CRD_FILE.exists():
        pytest.skip(f"{CRD_FILE.relative_to(ROOT)} does not exist yet")
    return yaml.safe_load(CRD_FILE.read_text())


@pytest.fixture(scope="session")
def write_values(tmp_path_factory: pytest.TempPathFactory) -> Callable[[Any], Path]:
    folder = tmp_path_factory.mktemp("values")
    counter = iter(range(1_000_000))

    def write(values: Any) -> Path:
        path = folder / f"values-{next(counter)}.yaml"
        path.write_text(yaml.safe_dump(values, sort_keys=False))
        return path

    return write
