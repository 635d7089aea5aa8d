"""The chart runs the operator with kopf peering: replicas, peering CRDs, env, RBAC."""

from __future__ import annotations

import kubernetes_validate
import pytest
import yaml

from .chartlib import CHART, CI_DIR, ROOT, Helm, by_kind

PEERING_FILE = ROOT / "crds" / "kopfpeerings.kopf.dev.yaml"


def helm_hook(obj: dict) -> bool:
    return "helm.sh/hook" in (obj["metadata"].get("annotations") or {})


def env_of(deployment: dict) -> dict:
    (container,) = deployment["spec"]["template"]["spec"]["containers"]
    return {e["name"]: e for e in container["env"]}


def test_peering_crds_are_shipped_in_crds_kept_and_valid(helm: Helm):
    """Like our CRD, kopf's live in the chart's crds/ (created before the templates
    are mapped, never deleted); a cluster that already has them keeps its own."""
    objects = helm.render([CI_DIR / "single-pbx-values.yaml"], include_crds=True)
    crds = {o["metadata"]["name"]: o for o in by_kind(objects, "CustomResourceDefinition")}
    expected = [d for d in yaml.safe_load_all(PEERING_FILE.read_text()) if d]
    assert {d["metadata"]["name"] for d in expected} == {
        "kopfpeerings.kopf.dev",
        "clusterkopfpeerings.kopf.dev",
    }
    for doc in expected:
        assert crds[doc["metadata"]["name"]] == doc
        assert doc["metadata"]["annotations"]["helm.sh/resource-policy"] == "keep"
        kubernetes_validate.validate(doc, "1.30", strict=True)
    assert (CHART / "crds" / PEERING_FILE.name).read_bytes() == PEERING_FILE.read_bytes()
    templates = helm.render([CI_DIR / "single-pbx-values.yaml"])
    assert not by_kind(templates, "CustomResourceDefinition")  # none among the templates


def test_two_replicas_peer_by_default(helm: Helm):
    objects = helm.render([CI_DIR / "single-pbx-values.yaml"])
    (deployment,) = by_kind(objects, "Deployment")
    spec = deployment["spec"]
    assert spec["replicas"] == 2
    assert spec["strategy"] == {
        "type": "RollingUpdate",
        "rollingUpdate": {"maxSurge": 1, "maxUnavailable": 0},
    }
    args = spec["template"]["spec"]["containers"][0]["args"]
    assert "--standalone" not in args
    env = env_of(deployment)
    assert env["POD_NAME"]["valueFrom"] == {"fieldRef": {"fieldPath": "metadata.name"}}
    assert env["SIPSTACK_PEERING"]["value"] == deployment["metadata"]["name"]
    (role,) = [
        r for r in by_kind(objects, "Role") if not helm_hook(r)
    ]  # the operator's (the CRD upgrade Job's own role is a hook)
    peering = [r for r in role["rules"] if r["apiGroups"] == ["kopf.dev"]]
    # Namespaced by default: a KopfPeering in each served namespace, no cluster-scoped rule.
    assert [r["resources"] for r in peering] == [["kopfpeerings"]]
    assert set(peering[0]["verbs"]) == {"list", "watch", "patch", "create"}


def test_standalone_is_one_replica_recreate(helm: Helm):
    objects = helm.render(
        [CI_DIR / "single-pbx-values.yaml"],
        sets=["operator.standalone=true", "operator.replicas=1"],
    )
    (deployment,) = by_kind(objects, "Deployment")
    assert deployment["spec"]["replicas"] == 1
    assert deployment["spec"]["strategy"] == {"type": "Recreate"}
    assert "--standalone" in deployment["spec"]["template"]["spec"]["containers"][0]["args"]
    assert "SIPSTACK_PEERING" not in env_of(deployment)


def test_standalone_with_two_replicas_is_refused(helm: Helm):
    args = helm.template_args([CI_DIR / "single-pbx-values.yaml"], monitoring=True)
    result = helm.run(*args, "--set", "operator.standalone=true")
    assert result.returncode != 0
    assert "operator.standalone runs without peering: set operator.replicas to 1" in result.output


@pytest.mark.parametrize("bad", ["operator.replicas=0", "operator.standalone=maybe"])
def test_schema_checks_the_new_values(helm: Helm, bad: str):
    args = helm.template_args([CI_DIR / "single-pbx-values.yaml"], monitoring=True)
    result = helm.run(*args, "--set", bad)
    assert result.returncode != 0
    assert bad.split("=")[0].split(".")[-1] in result.output
