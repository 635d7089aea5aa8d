"""The chart grants the operator exactly the rules of operator/sipstack_operator/data/rbac.yaml."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml
from sipstack_operator import cli as operator_cli

from .chartlib import CHART, CI_DIR, NAMESPACE, RBAC_FILE, Helm, by_kind, release_objects


def canonical(rules: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Order-insensitive form of a rule list."""
    out = []
    for rule in rules:
        out.append({k: sorted(v) if isinstance(v, list) else v for k, v in rule.items()})
    return sorted(out, key=lambda r: yaml.safe_dump(r, sort_keys=True))


@pytest.fixture(scope="module")
def operator_rbac() -> list[dict[str, Any]]:
    if not RBAC_FILE.exists():
        pytest.skip("operator/sipstack_operator/data/rbac.yaml does not exist yet")
    return [d for d in yaml.safe_load_all(RBAC_FILE.read_text()) if d]


def rules_of(docs: list[dict[str, Any]], kind: str) -> list[dict[str, Any]]:
    return [rule for d in docs if d.get("kind") == kind for rule in d.get("rules", [])]


def test_chart_copy_is_byte_identical(operator_rbac: list[dict[str, Any]]):
    copy = CHART / "files" / "rbac.yaml"
    assert copy.read_bytes() == RBAC_FILE.read_bytes(), "run tools/sync-chart-crd.py"


def test_cluster_wide_rules_equal_the_operators(helm: Helm, operator_rbac: list[dict[str, Any]]):
    objects = release_objects(helm.render([CI_DIR / "single-pbx-values.yaml"]))
    expected = rules_of(operator_rbac, "ClusterRole") + rules_of(operator_rbac, "Role")
    assert expected
    (cluster_role,) = by_kind(objects, "ClusterRole")
    assert canonical(cluster_role["rules"]) == canonical(expected)
    assert not by_kind(objects, "Role") and not by_kind(objects, "RoleBinding")
    (binding,) = by_kind(objects, "ClusterRoleBinding")
    (sa,) = by_kind(objects, "ServiceAccount")
    assert binding["roleRef"]["name"] == cluster_role["metadata"]["name"]
    assert binding["subjects"] == [
        {"kind": "ServiceAccount", "name": sa["metadata"]["name"], "namespace": NAMESPACE}
    ]


def test_watched_namespaces_get_role_bindings_only(helm: Helm, operator_rbac: list[dict[str, Any]]):
    objects = release_objects(helm.render([CI_DIR / "fleet-50-values.yaml"]))
    expected = rules_of(operator_rbac, "ClusterRole") + rules_of(operator_rbac, "Role")
    (cluster_role,) = by_kind(objects, "ClusterRole")
    assert canonical(cluster_role["rules"]) == canonical(expected)
    assert not by_kind(objects, "ClusterRoleBinding")
    bindings = by_kind(objects, "RoleBinding")
    assert [b["metadata"]["namespace"] for b in bindings] == ["pbx-fleet"]
    assert bindings[0]["roleRef"] == {
        "apiGroup": "rbac.authorization.k8s.io",
        "kind": "ClusterRole",
        "name": cluster_role["metadata"]["name"],
    }


def test_operator_rules_are_namespaced_resources(operator_rbac: list[dict[str, Any]]):
    """One ClusterRole bound by RoleBindings is only safe when no rule is cluster-scoped."""
    cluster_scoped = {"namespaces", "nodes", "customresourcedefinitions", "clusterroles"}
    for rule in rules_of(operator_rbac, "ClusterRole"):
        assert not set(rule["resources"]) & cluster_scoped, rule
        assert "nonResourceURLs" not in rule


def test_operator_args_are_accepted_by_its_cli(helm: Helm):
    for values in ("single-pbx-values.yaml", "fleet-50-values.yaml"):
        (deployment,) = by_kind(helm.render([CI_DIR / values]), "Deployment")
        args = deployment["spec"]["template"]["spec"]["containers"][0]["args"]
        parsed = operator_cli.build_parser().parse_args(args)
        assert parsed.command == "run"
        assert parsed.liveness == "http://0.0.0.0:8080/healthz"
        assert parsed.all_namespaces or parsed.namespace == ["pbx-fleet"]


def test_no_wildcards(helm: Helm, operator_rbac: list[dict[str, Any]]):
    objects = helm.render([CI_DIR / "single-pbx-values.yaml"])
    for role in by_kind(objects, "ClusterRole") + by_kind(objects, "Role"):
        for rule in role["rules"]:
            for field in ("apiGroups", "resources", "verbs"):
                assert "*" not in rule.get(field, []), rule


def test_rbac_create_false(helm: Helm, write_values: Callable[[Any], Path]):
    objects = release_objects(helm.render([write_values({"rbac": {"create": False}})]))
    kinds = {o["kind"] for o in objects}
    assert not kinds & {"ClusterRole", "ClusterRoleBinding", "Role", "RoleBinding"}
