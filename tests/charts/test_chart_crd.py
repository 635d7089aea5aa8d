"""The chart's CRD is the operator's CRD, byte for byte, in the chart's crds/ folder."""

from __future__ import annotations

import subprocess
import sys
from typing import Any

import pytest
import yaml

from .chartlib import (
    CHART,
    CHART_CRD,
    CI_DIR,
    CI_VALUES,
    CRD_FILE,
    ROOT,
    Helm,
    by_kind,
    hook_events,
)

SYNC = ROOT / "tools" / "sync-chart-crd.py"


def test_chart_copy_is_byte_identical(crd: dict[str, Any]):
    assert CHART_CRD.read_bytes() == CRD_FILE.read_bytes(), (
        "charts/sipstack-connector/crds/ is stale: run tools/sync-chart-crd.py"
    )


def test_chart_copies_and_schema_are_in_sync(crd: dict[str, Any]):
    proc = subprocess.run(
        [sys.executable, str(SYNC), "--check"], capture_output=True, text=True, check=False
    )
    assert proc.returncode == 0, proc.stderr


PEERING_FILE = CRD_FILE.parent / "kopfpeerings.kopf.dev.yaml"


def test_the_crd_lives_in_crds_only():
    """One home: no template renders the CRD (Helm would map it with the connectors)."""
    for path in (CHART / "templates").rglob("*"):
        if path.is_file():
            assert "kind: CustomResourceDefinition" not in path.read_text(), path
    assert sorted(p.name for p in (CHART / "crds").iterdir()) == sorted(
        [CRD_FILE.name, PEERING_FILE.name]
    )


@pytest.mark.parametrize("values", CI_VALUES)
def test_include_crds_adds_exactly_the_file(helm: Helm, crd: dict[str, Any], values: str):
    without = helm.render([CI_DIR / values])
    assert not by_kind(without, "CustomResourceDefinition")
    with_crds = helm.render([CI_DIR / values], include_crds=True)
    (rendered,) = [
        o
        for o in by_kind(with_crds, "CustomResourceDefinition")
        if o["metadata"]["name"] == crd["metadata"]["name"]
    ]
    assert rendered == crd
    assert not hook_events(rendered)
    assert len(with_crds) == len(without) + 3  # ours + kopf's two peering CRDs


def test_crd_upgrade_hook_carries_the_file_verbatim(helm: Helm, crd: dict[str, Any]):
    objects = helm.render([CI_DIR / "single-pbx-values.yaml"])
    (config_map,) = [
        o for o in by_kind(objects, "ConfigMap") if o["metadata"]["name"].endswith("-crd-upgrade")
    ]
    assert config_map["data"] == {CRD_FILE.name: CRD_FILE.read_text()}


def test_packaged_chart_carries_the_crd(helm: Helm, tmp_path, crd: dict[str, Any]):
    helm.run("package", str(CHART), "-d", str(tmp_path), check=True)
    (package,) = tmp_path.glob("sipstack-connector-*.tgz")
    result = helm.run("template", "sipstack", str(package), "--include-crds", check=True)
    docs = [d for d in yaml.safe_load_all(result.stdout) if d]
    assert crd in by_kind(docs, "CustomResourceDefinition")
    assert by_kind(docs, "ClusterRole")
