"""data/rbac.yaml grants exactly what the operator uses: the calls declared in
sipstack_operator.api (API_CALLS through @uses on KubeApi's methods,
KOPF_CALLS for kopf's own work, ADMISSION_CALLS for blockOwnerDeletion)."""

from __future__ import annotations

import ast
import importlib.resources
import pathlib

import kubernetes_validate
import sipstack_operator
import yaml
from sipstack_operator import api, handlers  # noqa: F401 - handlers: every module imported
from sipstack_operator.api import ADMISSION_CALLS, API_CALLS, KOPF_CALLS, ApiCall


def granted() -> set[ApiCall]:
    text = importlib.resources.files("sipstack_operator").joinpath("data/rbac.yaml").read_text()
    role = yaml.safe_load(text)
    calls: set[ApiCall] = set()
    for rule in role["rules"]:
        assert "resourceNames" not in rule and "nonResourceURLs" not in rule
        for group in rule["apiGroups"]:
            for resource in rule["resources"]:
                for verb in rule["verbs"]:
                    assert "*" not in (group, resource, verb), "no wildcards"
                    calls.add(ApiCall(group, resource, verb))
    return calls


def test_rbac_is_a_valid_cluster_role() -> None:
    text = importlib.resources.files("sipstack_operator").joinpath("data/rbac.yaml").read_text()
    kubernetes_validate.validate(yaml.safe_load(text), "1.28", strict=True)


def test_rbac_grants_exactly_the_calls_made() -> None:
    used = API_CALLS | KOPF_CALLS | ADMISSION_CALLS
    assert granted() - used == set(), "granted but never used"
    assert used - granted() == set(), "used but not granted"


def test_every_kube_api_method_declares_its_calls() -> None:
    """Each public KubeApi method that talks to the API carries @uses (or is discovery)."""
    source = pathlib.Path(api.__file__).read_text()
    tree = ast.parse(source)
    kube = next(n for n in tree.body if isinstance(n, ast.ClassDef) and n.name == "KubeApi")
    for fn in kube.body:
        if not isinstance(fn, ast.AsyncFunctionDef) or fn.name.startswith("_"):
            continue
        decorated = any(
            isinstance(d, ast.Call) and getattr(d.func, "id", "") == "uses"
            for d in fn.decorator_list
        )
        body = ast.unparse(fn)
        talks = "self._call(" in body or "self._get(" in body
        if fn.name in ("has_resource", "service_monitors_available"):
            continue  # discovery: allowed to every authenticated user (system:discovery)
        assert decorated or not talks, f"KubeApi.{fn.name} calls the API without @uses"


def test_only_kube_api_talks_to_the_api() -> None:
    """No other module of the package builds its own API client; the kubectl plugin,
    which calls with the user's credentials (not the operator's RBAC), only in
    kubectl/cluster.py."""
    package = pathlib.Path(sipstack_operator.__file__).parent
    for path in package.rglob("*.py"):
        rel = path.relative_to(package).as_posix()
        if rel in ("api.py", "kubectl/cluster.py"):
            continue
        text = path.read_text()
        # ApiException only (what a failed call raises), never a client.
        assert "kubernetes.client" not in text or rel in ("reconcile.py", "errors.py"), rel
        assert "ApiClient(" not in text, rel
