"""Install, upgrade and uninstall as Helm really runs them, checked on the real helm's output.

The rules come from Helm's source (helm/helm, v4):
- pkg/action/install.go: the files of a chart's crds/ folder are created first
  (and waited for) and the REST mapper is reset; only then are the templates
  rendered and mapped (KubeClient.Build). A kind that is neither served nor in
  crds/ fails the whole install with "resource mapping not found ... ensure
  CRDs are installed first". crds/ files are never upgraded or deleted.
- pkg/action/hooks.go: the hooks of one event run sorted by weight (then name);
  each is created and, for a Job, waited for until it completes; a failure
  stops the operation. hook-succeeded deletions run after all hooks of the
  event succeeded; before-hook-creation deletes a leftover first.
- pkg/action/uninstall.go: pre-delete hooks run before any release object is
  deleted; then the objects are deleted in UninstallOrder
  (pkg/release/v1/util/kind_sorter.go), where unknown kinds come last.
"""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from .chartlib import (
    CHART_CRD,
    CI_DIR,
    CI_VALUES,
    KUBECTL,
    NAMESPACE,
    RELEASE,
    Helm,
    by_kind,
    hook_events,
    release_objects,
)

# pkg/release/v1/util/kind_sorter.go (helm v4, commit e9b85e4).
UNINSTALL_ORDER = [
    "ValidatingWebhookConfiguration", "MutatingWebhookConfiguration", "APIService", "Ingress",
    "IngressClass", "Service", "CronJob", "Job", "StatefulSet", "HorizontalPodAutoscaler",
    "Deployment", "ReplicaSet", "ReplicationController", "Pod", "DaemonSet", "RoleBindingList",
    "RoleBinding", "RoleList", "Role", "ClusterRoleBindingList", "ClusterRoleBinding",
    "ClusterRoleList", "ClusterRole", "CustomResourceDefinition", "PersistentVolumeClaim",
    "PersistentVolume", "StorageClass", "ConfigMap", "SecretList", "Secret", "ServiceAccount",
    "PodDisruptionBudget", "PodSecurityPolicy", "LimitRange", "ResourceQuota", "NetworkPolicy",
    "Namespace", "PriorityClass",
]  # fmt: skip
CLOSED_SERVER = "https://127.0.0.1:1"
HELM_DEFAULT_TIMEOUT_SECONDS = 300  # `helm uninstall --timeout` default: 5m0s
SUPPORT_KINDS = {"ServiceAccount", "ClusterRole", "ClusterRoleBinding", "Role", "RoleBinding"}


def helm_uninstall_order(objects: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """sortManifestsByKind(..., UninstallOrder): stable, unknown kinds last (by kind name)."""
    rank = {kind: i for i, kind in enumerate(UNINSTALL_ORDER)}
    return sorted(
        objects,
        key=lambda o: (
            o["kind"] not in rank,
            rank.get(o["kind"], 0),
            "" if o["kind"] in rank else o["kind"],
        ),
    )


def weight(obj: dict[str, Any]) -> int:
    return int(obj["metadata"].get("annotations", {}).get("helm.sh/hook-weight", "0"))


def delete_policies(obj: dict[str, Any]) -> set[str]:
    value = obj["metadata"]["annotations"].get("helm.sh/hook-delete-policy", "")
    return {p.strip() for p in value.split(",") if p.strip()}


def hooks_of(objects: list[dict[str, Any]], event: str) -> list[dict[str, Any]]:
    """The hooks Helm runs for one event, in its order (weight, then name)."""
    found = [o for o in objects if event in hook_events(o)]
    return sorted(found, key=lambda o: (weight(o), o["metadata"]["name"]))


def crd_kinds() -> dict[str, str]:
    crd = yaml.safe_load(CHART_CRD.read_text())
    return {crd["spec"]["names"]["kind"]: crd["spec"]["group"]}


@pytest.mark.parametrize("values", CI_VALUES)
def test_no_release_holds_a_crd_and_its_objects(helm: Helm, values: str):
    """Helm's mapping rule: what the release manifest holds must map before anything exists."""
    objects = release_objects(helm.render([CI_DIR / values], tests=False))
    kinds = {o["kind"] for o in objects}
    assert "CustomResourceDefinition" not in kinds
    for kind, group in crd_kinds().items():
        users = [o for o in objects if o["kind"] == kind]
        if users:
            # ... so they map only because Helm creates crds/ before mapping the templates.
            assert {o["apiVersion"].split("/")[0] for o in users} == {group}
    custom = {o["apiVersion"] for o in objects if "." in o["apiVersion"].split("/")[0]}
    served_elsewhere = {"monitoring.coreos.com/v1"}  # checked by the Capabilities guard
    builtin = {"apps/v1", "batch/v1", "rbac.authorization.k8s.io/v1"}
    assert custom - builtin - served_elsewhere <= {f"{g}/v1alpha1" for g in crd_kinds().values()}


def test_dry_run_install_keeps_the_crd_out_of_the_manifest(helm: Helm):
    result = helm.run(
        "install",
        RELEASE,
        str(CI_DIR.parent),
        "--dry-run=client",
        "--namespace",
        NAMESPACE,
        "-f",
        str(CI_DIR / "single-pbx-values.yaml"),
    )
    assert result.returncode == 0, result.output
    _, _, rest = result.stdout.partition("\nHOOKS:\n")
    hooks_text, _, manifest_text = rest.partition("\nMANIFEST:\n")
    manifest_text = manifest_text.split("\nNOTES:\n", 1)[0]
    manifest = [d for d in yaml.safe_load_all(manifest_text) if d]
    hooks = [d for d in yaml.safe_load_all(hooks_text) if d]
    assert by_kind(manifest, "AsteriskConnector")
    assert not by_kind(manifest, "CustomResourceDefinition")
    assert {o["metadata"]["name"] for o in by_kind(hooks, "Job")} == {
        "sipstack-crd-upgrade",
        "sipstack-connector-cleanup",
    }


@pytest.mark.parametrize("values", CI_VALUES)
def test_every_hook_job_has_its_support_created_before_it(helm: Helm, values: str):
    objects = helm.render([CI_DIR / values], tests=False)
    hooks = [o for o in objects if hook_events(o)]
    assert hooks
    for job in by_kind(hooks, "Job"):
        events = hook_events(job)
        pod = job["spec"]["template"]["spec"]
        assert pod["restartPolicy"] == "Never"
        assert pod["securityContext"]["runAsNonRoot"] is True
        needed = {("ServiceAccount", pod["serviceAccountName"])}
        needed |= {
            ("ConfigMap", v["configMap"]["name"]) for v in pod["volumes"] if "configMap" in v
        }
        bindings = [
            o
            for o in hooks
            if o["kind"] in ("RoleBinding", "ClusterRoleBinding")
            and any(s["name"] == pod["serviceAccountName"] for s in o["subjects"])
        ]
        assert bindings, f"{job['metadata']['name']}: no RBAC for its ServiceAccount"
        needed |= {(b["kind"], b["metadata"]["name"]) for b in bindings}
        needed |= {(b["roleRef"]["kind"], b["roleRef"]["name"]) for b in bindings}
        for kind, name in needed:
            support = [o for o in hooks if o["kind"] == kind and o["metadata"]["name"] == name]
            assert support, f"{job['metadata']['name']} needs {kind} {name} as a hook"
            for obj in support:
                assert hook_events(obj) == events, f"{kind} {name}: same events as the Job"
                assert weight(obj) < weight(job), f"{kind} {name} must run before the Job"
                assert delete_policies(obj) == {"before-hook-creation", "hook-succeeded"}
        # A failed Job stays for `kubectl logs`; the next run replaces it.
        assert delete_policies(job) == {"before-hook-creation", "hook-succeeded"}
        assert not [o for o in hooks if events & hook_events(o) and weight(o) > weight(job)]


def test_crd_upgrade_job_applies_the_crd_server_side(helm: Helm):
    objects = helm.render([CI_DIR / "single-pbx-values.yaml"], tests=False)
    crd = yaml.safe_load(CHART_CRD.read_text())
    (job,) = [j for j in by_kind(objects, "Job") if j["metadata"]["name"].endswith("crd-upgrade")]
    assert hook_events(job) == {"pre-install", "pre-upgrade"}
    (container,) = job["spec"]["template"]["spec"]["containers"]
    assert container["command"] == ["kubectl"]
    args = container["args"]
    assert args[:3] == ["apply", "--server-side", "--force-conflicts"]
    (mount,) = [m for m in container["volumeMounts"] if m["name"] == "crds"]
    assert f"--filename={mount['mountPath']}/{CHART_CRD.name}" in args
    (role,) = [
        r
        for r in by_kind(objects, "ClusterRole")
        if r["metadata"]["name"] == job["metadata"]["name"]
    ]
    assert role["rules"] == [
        {
            "apiGroups": ["apiextensions.k8s.io"],
            "resources": ["customresourcedefinitions"],
            "resourceNames": [crd["metadata"]["name"]],
            "verbs": ["get", "patch"],
        }
    ]


def test_crd_upgrade_follows_the_operator(helm: Helm, write_values):
    off = write_values({"operator": {"enabled": False}})
    objects = helm.render([CI_DIR / "single-pbx-values.yaml", off], tests=False)
    assert not [o for o in objects if "pre-upgrade" in hook_events(o)]


@pytest.mark.parametrize("values", CI_VALUES)
def test_uninstall_removes_connectors_while_the_operator_runs(helm: Helm, values: str):
    objects = helm.render([CI_DIR / values], tests=False)
    manifest = release_objects(objects)
    connectors = by_kind(manifest, "AsteriskConnector")
    assert connectors
    # Why a hook is needed: Helm's own order deletes the operator and its RBAC first.
    order = [o["kind"] for o in helm_uninstall_order(manifest)]
    if "Deployment" in order:
        assert order.index("Deployment") < order.index("AsteriskConnector")
        assert order.index("Role") < order.index("AsteriskConnector")
    # The pre-delete hook runs before any of that and deletes exactly these connectors.
    pre_delete = hooks_of(objects, "pre-delete")
    (job,) = by_kind(pre_delete, "Job")
    assert pre_delete[-1] is job
    pod = job["spec"]["template"]["spec"]
    deleted: set[tuple[str, str]] = set()
    for container in pod["containers"]:
        assert container["command"] == ["kubectl"]
        args = container["args"]
        assert args[:2] == ["delete", "asteriskconnectors.sipstack.com"]
        assert "--wait=true" in args and "--ignore-not-found" in args
        (ns,) = [a.split("=", 1)[1] for a in args if a.startswith("--namespace=")]
        (timeout,) = [a.split("=", 1)[1] for a in args if a.startswith("--timeout=")]
        assert duration_seconds(timeout) < HELM_DEFAULT_TIMEOUT_SECONDS
        deleted |= {(ns, a) for a in args[2:] if not a.startswith("--")}
        (role,) = [
            r
            for r in by_kind(pre_delete, "Role")
            if r["metadata"]["namespace"] == ns
            and r["metadata"]["name"] == pod["serviceAccountName"]
        ]
        assert role["rules"][0]["verbs"] == ["get", "list", "watch", "delete"]
        assert role["rules"][0]["resources"] == ["asteriskconnectors"]
    assert deleted == {(c["metadata"]["namespace"], c["metadata"]["name"]) for c in connectors}
    assert job["spec"]["backoffLimit"] == 0
    # Nothing the connectors need goes away in pre-delete: only hook-owned objects are created.
    assert {o["kind"] for o in pre_delete} <= SUPPORT_KINDS | {"Job"}


def test_cleanup_covers_every_namespace_of_the_fleet(helm: Helm):
    objects = helm.render([CI_DIR / "two-namespaces-values.yaml"], tests=False)
    pre_delete = hooks_of(objects, "pre-delete")
    (job,) = by_kind(pre_delete, "Job")
    containers = job["spec"]["template"]["spec"]["containers"]
    namespaces = [a for c in containers for a in c["args"] if a.startswith("--namespace=")]
    assert namespaces == ["--namespace=telephony-ca", "--namespace=telephony-us"]
    assert sorted(r["metadata"]["namespace"] for r in by_kind(pre_delete, "Role")) == [
        "telephony-ca",
        "telephony-us",
    ]
    assert {c["image"] for c in containers} == {"registry.example.com/mirror/kubectl:v1.34.1"}


def test_no_connectors_no_cleanup_hook(helm: Helm, write_values):
    objects = helm.render([write_values({"connectors": []})], tests=False)
    assert not hooks_of(objects, "pre-delete")


def duration_seconds(text: str) -> float:
    units = {"ms": 0.001, "s": 1, "m": 60, "h": 3600}
    import re

    parts = re.findall(r"([0-9.]+)(ms|s|m|h)", text)
    assert "".join(n + u for n, u in parts) == text, text
    return sum(float(n) * units[u] for n, u in parts)


def kubectl_containers(objects: list[dict[str, Any]]) -> list[tuple[str, list[str]]]:
    found = []
    for job in by_kind(objects, "Job"):
        for container in job["spec"]["template"]["spec"]["containers"]:
            found.append((job["metadata"]["name"], container["args"]))
    return found


@pytest.fixture(scope="module")
def kubectl() -> Path:
    if not KUBECTL.exists():
        pytest.skip("tools/fetch-helm.sh did not fetch kubectl")
    return KUBECTL


def test_real_kubectl_accepts_the_hook_arguments(helm: Helm, kubectl: Path, tmp_path: Path):
    """Each Job's arguments, given to the real kubectl: flags parse, files exist.

    The API server is a closed local port: kubectl gets as far as its first request
    (discovery), which it only makes once its flags and files are accepted.
    """
    objects = helm.render([CI_DIR / "fleet-50-values.yaml"], tests=False)
    containers = kubectl_containers(objects)
    assert len(containers) == 2
    for job, args in containers:
        args = [a.replace(f"/crds/{CHART_CRD.name}", str(CHART_CRD)) for a in args]
        proc = subprocess.run(
            [str(kubectl), *args, f"--server={CLOSED_SERVER}", "--token=t", "-v=6"],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
            env={"HOME": str(tmp_path), "PATH": "/usr/bin:/bin"},
        )
        message = proc.stderr
        assert "unknown flag" not in message and "Usage:" not in message, f"{job}: {message}"
        assert "does not exist" not in message, f"{job}: {message}"
        assert f"{CLOSED_SERVER}/" in message, f"{job}: {message}"
        assert "connection refused" in message, f"{job}: {message}"
