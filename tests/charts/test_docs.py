"""The YAML in the install, fleet and monitoring guides is valid and renders."""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import jsonschema
import kubernetes_validate
import pytest
import yaml
from sipstack_operator import cli as operator_cli

from .chartlib import CHART, ROOT, Helm, by_kind

DOCS = ROOT / "docs"


def yaml_blocks(name: str) -> list[Any]:
    text = (DOCS / name).read_text()
    return [yaml.safe_load(b) for b in re.findall(r"```yaml\n(.*?)```", text, re.S)]


def crd_validator(crd: dict[str, Any]) -> jsonschema.Draft4Validator:
    version = next(v for v in crd["spec"]["versions"] if v["storage"])
    return jsonschema.Draft4Validator(version["schema"]["openAPIV3Schema"])


@pytest.mark.parametrize("name", ["install.md", "fleet.md"])
def test_values_in_the_guides_render_valid_connectors(
    helm: Helm, crd: dict[str, Any], write_values: Callable[[Any], Path], name: str
):
    blocks = [b for b in yaml_blocks(name) if isinstance(b, dict) and "connectors" in b]
    assert blocks, f"docs/{name} has no values example"
    validator = crd_validator(crd)
    for values in blocks:
        objects = helm.render([write_values(values)])
        connectors = by_kind(objects, "AsteriskConnector")
        assert len(connectors) == len(values["connectors"])
        for obj in connectors:
            errors = [e.message for e in validator.iter_errors(obj)]
            assert not errors, f"docs/{name}: {obj['metadata']['name']}: {errors}"


def test_kubectl_path_deployment_is_valid():
    (deployment,) = [b for b in yaml_blocks("install.md") if b.get("kind") == "Deployment"]
    for version in ("1.28", "1.30"):
        kubernetes_validate.validate(deployment, version, strict=True)
    container = deployment["spec"]["template"]["spec"]["containers"][0]
    parsed = operator_cli.build_parser().parse_args(container["args"])
    assert parsed.command == "run"
    chart_values = yaml.safe_load((CHART / "values.yaml").read_text())
    assert container["image"].startswith(chart_values["operator"]["image"]["repository"] + ":")


def test_kubectl_path_uses_the_operators_rbac_file():
    text = (DOCS / "install.md").read_text()
    assert "kubectl apply -f operator/sipstack_operator/data/rbac.yaml" in text
    assert "kubectl apply --server-side -f crds/asteriskconnectors.sipstack.com.yaml" in text
    rbac = ROOT / "operator" / "sipstack_operator" / "data" / "rbac.yaml"
    if rbac.exists():
        (role,) = [d for d in yaml.safe_load_all(rbac.read_text()) if d]
        assert f"--clusterrole={role['metadata']['name']}" in text


def test_guides_link_each_other():
    for name in ("install.md", "fleet.md", "upgrade.md", "monitoring.md"):
        assert (DOCS / name).exists()
    install = (DOCS / "install.md").read_text()
    assert "(fleet.md)" in install and "(monitoring.md)" in install


def test_lifecycle_docs_name_the_rendered_hooks(helm: Helm):
    """The Job names and the kubectl image the guides tell users to look at are the chart's."""
    objects = helm.render([CHART / "ci" / "single-pbx-values.yaml"], tests=False)
    jobs = {j["metadata"]["name"]: j for j in by_kind(objects, "Job")}
    assert set(jobs) == {"sipstack-crd-upgrade", "sipstack-connector-cleanup"}
    install, upgrade = (DOCS / "install.md").read_text(), (DOCS / "upgrade.md").read_text()
    assert "logs job/sipstack-connector-cleanup" in install
    assert "logs job/sipstack-crd-upgrade" in upgrade
    image = {c["image"] for j in jobs.values() for c in j["spec"]["template"]["spec"]["containers"]}
    assert image == {"registry.k8s.io/kubectl:v1.34.1"}
    assert "`registry.k8s.io/kubectl:v1.34.1`" in install
    (timeout,) = {
        a.split("=", 1)[1]
        for a in jobs["sipstack-connector-cleanup"]["spec"]["template"]["spec"]["containers"][0][
            "args"
        ]
        if a.startswith("--timeout=")
    }
    assert f"--timeout={timeout}" in install
    for text in (install, (ROOT / "README.md").read_text()):
        assert "helm install sipstack charts/sipstack-connector" in text
    assert "helm uninstall sipstack -n sipstack-system" in install
    assert "helm upgrade sipstack charts/sipstack-connector -n sipstack-system" in upgrade
