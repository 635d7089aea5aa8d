"""The chart grants the operator exactly the rules of operator/sipstack_operator/data/rbac.yaml."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import kubernetes_validate
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


def namespaced_rules(operator_rbac: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The operator's rules a Role can carry (none on the cluster-scoped peering)."""
    rules = rules_of(operator_rbac, "ClusterRole") + rules_of(operator_rbac, "Role")
    return [r for r in rules if "clusterkopfpeerings" not in r["resources"]]


def test_default_scope_is_the_release_namespace_only(
    helm: Helm, operator_rbac: list[dict[str, Any]]
):
    """No values: a Role and RoleBinding in the release's namespace, nothing cluster-wide."""
    objects = release_objects(helm.render([CI_DIR / "single-pbx-values.yaml"]))
    assert not by_kind(objects, "ClusterRole") and not by_kind(objects, "ClusterRoleBinding")
    (role,) = by_kind(objects, "Role")
    (binding,) = by_kind(objects, "RoleBinding")
    (sa,) = by_kind(objects, "ServiceAccount")
    assert role["metadata"]["namespace"] == binding["metadata"]["namespace"] == NAMESPACE
    assert canonical(role["rules"]) == canonical(namespaced_rules(operator_rbac))
    assert binding["roleRef"] == {
        "apiGroup": "rbac.authorization.k8s.io",
        "kind": "Role",
        "name": role["metadata"]["name"],
    }
    assert binding["subjects"] == [
        {"kind": "ServiceAccount", "name": sa["metadata"]["name"], "namespace": NAMESPACE}
    ]
    (deployment,) = by_kind(objects, "Deployment")
    args = deployment["spec"]["template"]["spec"]["containers"][0]["args"]
    assert f"--namespace={NAMESPACE}" in args and "--all-namespaces" not in args


def test_secrets_are_never_listed_or_watched(helm: Helm):
    for sets in (["operator.clusterWide=true"], []):
        objects = helm.render([CI_DIR / "single-pbx-values.yaml"], sets=sets)
        for role in by_kind(objects, "ClusterRole") + by_kind(objects, "Role"):
            for rule in role["rules"]:
                if "secrets" in rule["resources"]:
                    assert not {"list", "watch"} & set(rule["verbs"]), rule


def test_cluster_wide_only_when_asked(
    helm: Helm, operator_rbac: list[dict[str, Any]], write_values: Callable[[Any], Path]
):
    objects = release_objects(
        helm.render(
            [CI_DIR / "single-pbx-values.yaml", write_values({"operator": {"clusterWide": True}})]
        )
    )
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
    (deployment,) = by_kind(objects, "Deployment")
    assert "--all-namespaces" in deployment["spec"]["template"]["spec"]["containers"][0]["args"]


def test_watched_namespaces_get_roles_only(helm: Helm, operator_rbac: list[dict[str, Any]]):
    objects = release_objects(helm.render([CI_DIR / "fleet-50-values.yaml"]))
    assert not by_kind(objects, "ClusterRole") and not by_kind(objects, "ClusterRoleBinding")
    roles = by_kind(objects, "Role")
    bindings = by_kind(objects, "RoleBinding")
    assert [r["metadata"]["namespace"] for r in roles] == [NAMESPACE, "pbx-fleet"]
    assert [b["metadata"]["namespace"] for b in bindings] == [NAMESPACE, "pbx-fleet"]
    for role in roles:
        assert canonical(role["rules"]) == canonical(namespaced_rules(operator_rbac))
    for binding in bindings:
        assert binding["roleRef"]["kind"] == "Role"


def test_rendered_rbac_is_valid(helm: Helm, write_values: Callable[[Any], Path]):
    for extra in ({}, {"operator": {"clusterWide": True}}):
        objects = helm.render([CI_DIR / "fleet-50-values.yaml", write_values(extra)])
        rbac = [o for o in objects if o["apiVersion"].startswith("rbac.authorization.k8s.io")]
        assert len(rbac) >= 2
        for obj in rbac:
            kubernetes_validate.validate(obj, "1.30", strict=True)


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
        assert not parsed.all_namespaces
        assert parsed.namespace in ([NAMESPACE], [NAMESPACE, "pbx-fleet"])


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
