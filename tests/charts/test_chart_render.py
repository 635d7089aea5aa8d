"""helm lint and helm template for every ci/ values file, and what they render."""

from __future__ import annotations

import json
from typing import Any

import jsonschema
import kubernetes_validate
import pytest
from sipstack_operator import cli as operator_cli

from .chartlib import (
    CHART,
    CI_DIR,
    CI_VALUES,
    KUBE_VERSION,
    NAMESPACE,
    RELEASE,
    Helm,
    by_kind,
    hook_events,
    release_objects,
)

NEWEST = str(kubernetes_validate.latest_version())
K8S_VERSIONS = ["1.28", ".".join(NEWEST.split(".")[:2])]
CUSTOM_GROUPS = ("sipstack.com/", "monitoring.coreos.com/")


def render_ci(helm: Helm, name: str, monitoring: bool) -> list[dict[str, Any]]:
    return helm.render([CI_DIR / name], monitoring=monitoring)


def test_ci_values_files_exist():
    assert set(CI_VALUES) >= {
        "single-pbx-values.yaml",
        "fleet-50-values.yaml",
        "monitoring-off-values.yaml",
    }


@pytest.mark.parametrize("values", CI_VALUES)
def test_helm_lint_strict(helm: Helm, values: str):
    result = helm.run(
        "lint", "--strict", "--kube-version", KUBE_VERSION, str(CHART), "-f", str(CI_DIR / values)
    )
    assert result.returncode == 0, result.output
    assert "0 chart(s) failed" in result.output


def test_helm_lint_strict_defaults(helm: Helm):
    result = helm.run("lint", "--strict", str(CHART))
    assert result.returncode == 0, result.output


@pytest.mark.parametrize("monitoring", [True, False], ids=["monitoring-api", "no-monitoring-api"])
@pytest.mark.parametrize("values", CI_VALUES)
def test_builtin_objects_are_valid_kubernetes(helm: Helm, values: str, monitoring: bool):
    objects = render_ci(helm, values, monitoring)
    assert objects
    seen: set[str] = set()
    for obj in objects:
        if obj["apiVersion"].startswith(CUSTOM_GROUPS):
            continue
        key = json.dumps(obj, sort_keys=True)
        if key in seen:
            continue
        seen.add(key)
        for version in K8S_VERSIONS:
            try:
                kubernetes_validate.validate(obj, version, strict=True)
            except kubernetes_validate.ValidationError as error:
                raise AssertionError(
                    f"{obj['kind']}/{obj['metadata']['name']} invalid for {version}: {error}"
                ) from error


@pytest.mark.parametrize("monitoring", [True, False], ids=["monitoring-api", "no-monitoring-api"])
@pytest.mark.parametrize("values", CI_VALUES)
def test_connectors_match_the_crd_schema(
    helm: Helm, crd: dict[str, Any], values: str, monitoring: bool
):
    version = next(v for v in crd["spec"]["versions"] if v["storage"])
    validator = jsonschema.Draft4Validator(version["schema"]["openAPIV3Schema"])
    connectors = by_kind(render_ci(helm, values, monitoring), "AsteriskConnector")
    assert connectors
    for obj in connectors:
        assert obj["apiVersion"] == f"{crd['spec']['group']}/{version['name']}"
        errors = sorted(validator.iter_errors(obj), key=lambda e: list(e.path))
        assert not errors, "\n".join(
            f"{obj['metadata']['name']}: {'/'.join(map(str, e.path))}: {e.message}" for e in errors
        )
        # The CRD's CEL rule on the name (children <name>-agent-env, ...).
        assert len(obj["metadata"]["name"]) <= 55


@pytest.mark.parametrize("values", CI_VALUES)
def test_monitoring_objects_only_with_the_monitoring_api(helm: Helm, values: str):
    without = render_ci(helm, values, monitoring=False)
    assert not [o for o in without if o["apiVersion"].startswith("monitoring.coreos.com/")]
    with_api = render_ci(helm, values, monitoring=True)
    kinds = {o["kind"] for o in with_api}
    if values == "monitoring-off-values.yaml":
        assert not kinds & {"ServiceMonitor", "PrometheusRule"}
    else:
        assert {"ServiceMonitor", "PrometheusRule"} <= kinds


def test_operator_deployment(helm: Helm):
    objects = release_objects(render_ci(helm, "single-pbx-values.yaml", True))
    (deployment,) = by_kind(objects, "Deployment")
    spec = deployment["spec"]
    assert spec["replicas"] == 2  # peering: one active, one standby (test_chart_peering.py)
    assert spec["strategy"]["type"] == "RollingUpdate"
    pod = spec["template"]["spec"]
    (container,) = pod["containers"]
    assert container["args"][0] == "run"
    assert "--namespace=sipstack-system" in container["args"]
    assert "--all-namespaces" not in container["args"]
    liveness = [a for a in container["args"] if a.startswith("--liveness=")]
    assert liveness == ["--liveness=http://0.0.0.0:8080/healthz"]
    for probe in ("livenessProbe", "readinessProbe", "startupProbe"):
        assert container[probe]["httpGet"] == {"path": "/healthz", "port": "health"}
    assert container["securityContext"]["readOnlyRootFilesystem"] is True
    assert container["securityContext"]["capabilities"]["drop"] == ["ALL"]
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["runAsUser"] == 10001
    assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    (sa,) = by_kind(objects, "ServiceAccount")
    assert pod["serviceAccountName"] == sa["metadata"]["name"]


def test_watch_namespaces_scope_the_operator(helm: Helm):
    objects = render_ci(helm, "fleet-50-values.yaml", True)
    (deployment,) = by_kind(objects, "Deployment")
    args = deployment["spec"]["template"]["spec"]["containers"][0]["args"]
    assert "--namespace=pbx-fleet" in args
    assert "--all-namespaces" not in args


def test_helm_test_hook_checks_the_operator(helm: Helm):
    objects = render_ci(helm, "single-pbx-values.yaml", True)
    hooks = [
        o
        for o in by_kind(objects, "Pod")
        if o["metadata"].get("annotations", {}).get("helm.sh/hook") == "test"
    ]
    assert len(hooks) == 1
    (service,) = by_kind(objects, "Service")
    command = "\n".join(hooks[0]["spec"]["containers"][0]["command"])
    assert f"http://{service['metadata']['name']}.{NAMESPACE}.svc:8080/healthz" in command
    without = helm.render([CI_DIR / "single-pbx-values.yaml"], tests=False)
    assert not by_kind(without, "Pod")


def test_fleet_of_50(helm: Helm):
    objects = render_ci(helm, "fleet-50-values.yaml", True)
    connectors = by_kind(objects, "AsteriskConnector")
    assert len(connectors) == 50
    assert len({c["metadata"]["name"] for c in connectors}) == 50
    assert {c["metadata"]["namespace"] for c in connectors} == {"pbx-fleet"}
    first = next(c for c in connectors if c["metadata"]["name"] == "pbx-01")
    # connectorDefaults merged under the item, the item's keys win.
    assert first["spec"]["region"] == "us1"
    assert first["spec"]["database"]["type"] == "mysql"
    assert first["spec"]["database"]["host"] == "10.20.0.1"
    assert first["spec"]["apiKeySecretRef"] == {"name": "pbx-01-credentials", "key": "api-key"}
    assert first["spec"]["database"]["passwordSecretRef"] == {
        "name": "pbx-01-credentials",
        "key": "db-password",
    }
    seventh = next(c for c in connectors if c["metadata"]["name"] == "pbx-07")
    assert seventh["spec"]["database"]["type"] == "postgresql"
    # Existing secrets are referenced, never created.
    assert not by_kind(objects, "Secret")


def test_create_secret_is_a_quick_start(helm: Helm):
    objects = render_ci(helm, "monitoring-off-values.yaml", False)
    (secret,) = by_kind(objects, "Secret")
    (connector,) = by_kind(objects, "AsteriskConnector")
    assert secret["metadata"]["name"] == "lab-pbx-credentials"
    assert set(secret["stringData"]) == {"api-key", "db-password"}
    assert connector["spec"]["apiKeySecretRef"] == {"name": "lab-pbx-credentials", "key": "api-key"}
    text = (CHART / "templates" / "connectors.yaml").read_text()
    assert "NOT for production" in text


def test_notes_tell_the_next_command(helm: Helm):
    result = helm.run(
        "install",
        RELEASE,
        str(CHART),
        "--dry-run=client",
        "--namespace",
        NAMESPACE,
        "-f",
        str(CI_DIR / "single-pbx-values.yaml"),
    )
    assert result.returncode == 0, result.output
    notes = result.stdout.split("NOTES:", 1)[1]
    assert f"kubectl -n {NAMESPACE} rollout status deployment/" in notes
    assert f"helm test {RELEASE}" in notes
    assert "kubectl get asteriskconnectors" in notes
    assert "kubectl -n sipstack-system create secret generic pbx-east-credentials" in notes
    assert f"helm uninstall {RELEASE} -n {NAMESPACE}` first runs a Job" in notes


def test_every_object_is_labelled(helm: Helm):
    for obj in render_ci(helm, "single-pbx-values.yaml", True):
        if obj["kind"] == "CustomResourceDefinition":
            continue
        labels = obj["metadata"].get("labels", {})
        assert labels.get("app.kubernetes.io/managed-by") == "Helm", obj["metadata"]["name"]
        assert labels.get("app.kubernetes.io/part-of") == "sipstack-connector-asterisk"


def test_connector_only_release(helm: Helm, write_values):
    path = write_values(
        {
            "operator": {"enabled": False},
            "serviceMonitor": {"enabled": False},
            "prometheusRule": {"enabled": False},
            "grafanaDashboard": {"enabled": False},
        }
    )
    objects = helm.render([CI_DIR / "single-pbx-values.yaml", path])
    assert {o["kind"] for o in release_objects(objects)} == {"AsteriskConnector"}
    # Its hooks: only the pre-delete cleanup of its own connectors (no CRD upgrade).
    assert {e for o in objects for e in hook_events(o)} == {"pre-delete"}


@pytest.mark.parametrize("values", CI_VALUES)
def test_the_operator_accepts_every_rendered_connector(helm: Helm, values: str):
    """Chart output -> `sipstack-operator render`: no SpecError, valid children."""
    objects = render_ci(helm, values, True)
    connectors = by_kind(objects, "AsteriskConnector")
    children = operator_cli.render_documents(connectors, by_kind(objects, "Secret"))
    deployments = by_kind(children, "Deployment")
    assert len(deployments) == len(connectors)
    sample = children if len(connectors) <= 2 else children[:8]
    for child in sample:
        if child["apiVersion"].startswith(CUSTOM_GROUPS):
            continue
        kubernetes_validate.validate(child, K8S_VERSIONS[-1], strict=True)
