"""The chart's CRD is the operator's CRD, byte for byte, kept on uninstall."""

from __future__ import annotations

import subprocess
import sys
from typing import Any

import yaml

from .chartlib import CHART, CRD_FILE, ROOT, Helm, by_kind

CHART_COPY = CHART / "files" / CRD_FILE.name
SYNC = ROOT / "tools" / "sync-chart-crd.py"


def test_chart_copy_is_byte_identical(crd: dict[str, Any]):
    assert CHART_COPY.read_bytes() == CRD_FILE.read_bytes(), (
        "charts/sipstack-connector/files/ is stale: run tools/sync-chart-crd.py"
    )


def test_chart_copies_and_schema_are_in_sync(crd: dict[str, Any]):
    proc = subprocess.run(
        [sys.executable, str(SYNC), "--check"], capture_output=True, text=True, check=False
    )
    assert proc.returncode == 0, proc.stderr


def test_rendered_crd_is_the_file_plus_keep(helm: Helm, crd: dict[str, Any]):
    objects = helm.render()
    (rendered,) = [
        o
        for o in by_kind(objects, "CustomResourceDefinition")
        if o["metadata"]["name"] == crd["metadata"]["name"]
    ]
    annotations = rendered["metadata"].pop("annotations")
    assert annotations["helm.sh/resource-policy"] == "keep"
    expected_annotations = dict(crd["metadata"].get("annotations", {}))
    assert {k: v for k, v in annotations.items() if k != "helm.sh/resource-policy"} == (
        expected_annotations
    )
    expected = yaml.safe_load(CRD_FILE.read_text())
    expected["metadata"].pop("annotations", None)
    assert rendered == expected


def test_rendered_crd_text_is_the_file_plus_one_annotation(helm: Helm, crd: dict[str, Any]):
    result = helm.run(*helm.template_args(monitoring=False), "-s", "templates/crd.yaml", check=True)
    header = "---\n# Source: sipstack-connector/templates/crd.yaml\n"
    assert result.stdout.startswith(header)
    body = result.stdout[len(header) :]
    added = "    helm.sh/resource-policy: keep\n"
    assert body.count(added) == 1
    body = body.replace(added, "", 1)
    if not crd["metadata"].get("annotations"):
        body = body.replace("metadata:\n  annotations:\n", "metadata:\n", 1)
    assert body.rstrip("\n") == CRD_FILE.read_text().rstrip("\n")


def test_crd_template_reads_the_copy():
    template = (CHART / "templates" / "crd.yaml").read_text()
    assert '.Files.Get "files/asteriskconnectors.sipstack.com.yaml"' in template
    assert "{{- if .Values.crds.create }}" in template


def test_crds_create_false_leaves_the_crd_out(helm: Helm, crd: dict[str, Any]):
    objects = helm.render(sets=["crds.create=false"])
    assert not by_kind(objects, "CustomResourceDefinition")


def test_packaged_chart_carries_the_copies(helm: Helm, tmp_path, crd: dict[str, Any]):
    helm.run("package", str(CHART), "-d", str(tmp_path), check=True)
    (package,) = tmp_path.glob("sipstack-connector-*.tgz")
    result = helm.run("template", "sipstack", str(package), check=True)
    docs = [d for d in yaml.safe_load_all(result.stdout) if d]
    assert by_kind(docs, "CustomResourceDefinition")
    assert by_kind(docs, "ClusterRole")
