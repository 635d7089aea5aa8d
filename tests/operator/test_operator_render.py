"""render.py: golden files per spec variant, every child valid for Kubernetes
1.28 and the newest schema kubernetes-validate bundles (strict: unknown
fields fail), the ServiceMonitor valid against its schema, and the
invariants the issue asks for.

Regenerate the golden files after an intended change:

    SIPSTACK_UPDATE_GOLDEN=1 .venv/bin/pytest tests/operator/test_operator_render.py

The ServiceMonitor schema (tests/operator/data/servicemonitor.v1.schema.json)
was generated once from cloudcoil-models-prometheus-operator 0.80.1.0 with
``ServiceMonitor.model_json_schema(by_alias=True)`` plus
``additionalProperties: false`` on every object. cloudcoil is not installed
in the venv: it registers a pytest plugin that breaks every pytest run
without `filelock`. To regenerate: ``pip install --target /tmp/cc --no-deps
cloudcoil==0.6.0 cloudcoil-models-prometheus-operator==0.80.1.0`` and run the
snippet in the schema's ``$comment`` with PYTHONPATH=/tmp/cc.
"""

from __future__ import annotations

import base64
import copy
import json
import os
import pathlib
from typing import Any

import jsonschema
import kubernetes_validate
import pytest
import yaml
from sipstack_operator.cli import dump, render_documents
from sipstack_operator.render import (
    HASH_ANNOTATION,
    MissingSecretError,
    Owner,
    agent_env,
    render,
)
from sipstack_operator.spec import SecretKeyRef, parse_resource

from .operator_testlib import EXAMPLES, GOLDEN, example_crs, load_docs

UPDATE = os.environ.get("SIPSTACK_UPDATE_GOLDEN") == "1"
K8S_VERSIONS = ["1.28", kubernetes_validate.latest_version()]
SM_SCHEMA = json.loads(
    (pathlib.Path(__file__).parent / "data" / "servicemonitor.v1.schema.json").read_text()
)

MINIMAL: dict[str, Any] = {
    "apiVersion": "sipstack.com/v1alpha1",
    "kind": "AsteriskConnector",
    "metadata": {"name": "minimal", "namespace": "telephony"},
    "spec": {
        "region": "us1",
        "apiKeySecretRef": {"name": "sipstack-api"},
        "customerId": 1,
        "database": {"type": "mysql", "host": "db", "name": "asteriskcdrdb", "user": "ro"},
    },
}


def _variant(**spec: Any) -> dict[str, Any]:
    cr = copy.deepcopy(MINIMAL)
    cr["spec"].update(spec)
    return cr


# name -> (CR documents, render options)
VARIANTS: dict[str, tuple[list[dict[str, Any]], dict[str, Any]]] = {
    **{p.stem: (load_docs(p), {}) for p in example_crs()},
    "pbx-east-no-servicemonitor-crd": (
        load_docs(EXAMPLES / "pbx-east.yaml"),
        {"service_monitor_available": False},
    ),
    "minimal": ([MINIMAL], {}),
    "minimal-owned": (
        [
            {
                **MINIMAL,
                "metadata": {**MINIMAL["metadata"], "uid": "0b9c3d6e-8a4f-4c1e-9d2a-5f6e7a8b9c0d"},
            }
        ],
        {},
    ),
    "paused": ([_variant(paused=True)], {}),
    "recordings-delete-after-upload": (
        [
            _variant(
                recordings={
                    "enabled": True,
                    "upload": True,
                    "deleteAfterUpload": True,
                    "paths": ["/recordings", "/recordings/archive"],
                    "volume": {"hostPath": {"path": "/var/spool/asterisk/monitor"}},
                }
            )
        ],
        {},
    ),
}


def rendered(name: str) -> list[dict[str, Any]]:
    crs, options = VARIANTS[name]
    return render_documents(crs, load_docs(EXAMPLES / "secrets.yaml"), **options)


@pytest.mark.parametrize("name", sorted(VARIANTS))
def test_golden(name: str) -> None:
    text = dump(rendered(name))
    path = GOLDEN / f"{name}.yaml"
    if UPDATE or not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
        if not UPDATE:
            pytest.fail(f"golden file {path.name} was missing: written, check it in")
    assert text == path.read_text(), f"render changed: SIPSTACK_UPDATE_GOLDEN=1 to accept ({name})"


@pytest.mark.parametrize("version", K8S_VERSIONS)
@pytest.mark.parametrize("name", sorted(VARIANTS))
def test_children_are_valid_kubernetes(name: str, version: str) -> None:
    for child in rendered(name):
        if child["kind"] == "ServiceMonitor":
            continue
        kubernetes_validate.validate(child, version, strict=True)


@pytest.mark.parametrize("name", sorted(VARIANTS))
def test_service_monitors_match_their_schema(name: str) -> None:
    monitors = [c for c in rendered(name) if c["kind"] == "ServiceMonitor"]
    for sm in monitors:
        jsonschema.Draft202012Validator(SM_SCHEMA).validate(sm)


def test_the_service_monitor_schema_rejects_unknown_fields() -> None:
    sm = next(c for c in rendered("pbx-east") if c["kind"] == "ServiceMonitor")
    sm["spec"]["endpoints"][0]["intervall"] = "30s"
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.Draft202012Validator(SM_SCHEMA).validate(sm)


def test_kubernetes_validate_is_strict() -> None:
    dep = next(c for c in rendered("minimal") if c["kind"] == "Deployment")
    dep["spec"]["template"]["spec"]["containers"][0]["envfrom"] = []
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(dep, "1.28", strict=True)


# --------------------------------------------------------------------------- invariants

SECRETS = {
    ("sipstack-api", "api-key"): "sk_0123456789abcdef0123456789abcdef",
    ("pbx-db", "password"): "pw",
    ("pbx-db", "ca.crt"): "-----BEGIN CERTIFICATE-----\n",
}


def _spec(**spec: Any) -> Any:
    cr = _variant(**spec)
    return parse_resource(cr)


def _by_kind(children: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {c["kind"]: c for c in children}


def test_children_names_labels_and_owner() -> None:
    children = render(_spec(), SECRETS, owner=Owner(name="minimal", uid="u-1"))
    kinds = _by_kind(children)
    assert [(c["kind"], c["metadata"]["name"]) for c in children] == [
        ("Secret", "minimal-agent-env"),
        ("Secret", "minimal-control"),
        ("PersistentVolumeClaim", "minimal-state"),
        ("Deployment", "minimal-agent"),
        ("Service", "minimal-metrics"),
    ]
    assert kinds["Deployment"]["metadata"]["name"] == "minimal-agent"
    assert kinds["PersistentVolumeClaim"]["metadata"]["name"] == "minimal-state"
    assert kinds["Service"]["metadata"]["name"] == "minimal-metrics"
    for child in children:
        labels = child["metadata"]["labels"]
        assert labels["app.kubernetes.io/instance"] == "minimal"
        assert labels["app.kubernetes.io/managed-by"] == "sipstack-operator"
        if child["kind"] == "PersistentVolumeClaim":
            continue  # retained by default: see test_state_claim_retention
        assert child["metadata"]["ownerReferences"][0]["uid"] == "u-1"
        assert child["metadata"]["ownerReferences"][0]["controller"] is True


def test_state_claim_retention() -> None:
    """Retain (default): no owner, so GC keeps the claim; Delete: owned like the rest."""
    owner = Owner(name="minimal", uid="u-1")
    retained = _by_kind(render(_spec(), SECRETS, owner=owner))["PersistentVolumeClaim"]
    assert "ownerReferences" not in retained["metadata"]
    assert retained["metadata"]["labels"]["sipstack.com/connector"] == "minimal"
    assert retained["metadata"]["name"] == "minimal-state"
    spec = _spec(state={"whenDeleted": "Delete"})
    deleted = _by_kind(render(spec, SECRETS, owner=owner))["PersistentVolumeClaim"]
    assert deleted["metadata"]["ownerReferences"] == [owner.reference()]
    assert deleted["metadata"]["labels"]["sipstack.com/connector"] == "minimal"


def test_deployment_shape() -> None:
    dep = _by_kind(render(_spec(), SECRETS))["Deployment"]
    spec = dep["spec"]
    assert spec["replicas"] == 1
    assert spec["strategy"] == {"type": "Recreate"}
    pod = spec["template"]["spec"]
    (container,) = pod["containers"]
    assert container["envFrom"] == [{"secretRef": {"name": "minimal-agent-env"}}]
    assert container["livenessProbe"]["httpGet"]["path"] == "/healthz"
    assert container["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert container["ports"] == [{"name": "metrics", "containerPort": 8000, "protocol": "TCP"}]
    sc = container["securityContext"]
    assert sc["runAsNonRoot"] is True
    assert sc["readOnlyRootFilesystem"] is True
    assert sc["allowPrivilegeEscalation"] is False
    assert sc["capabilities"] == {"drop": ["ALL"]}
    assert sc["seccompProfile"] == {"type": "RuntimeDefault"}
    assert pod["securityContext"]["runAsUser"] == 10001
    mounts = {m["mountPath"]: m["name"] for m in container["volumeMounts"]}
    assert mounts == {
        "/data": "state",
        "/tmp": "tmp",
        "/etc/sipstack/secrets": "secrets",
        "/etc/sipstack/control": "control-token",
    }
    assert container["resources"] == {
        "requests": {"cpu": "50m", "memory": "128Mi"},
        "limits": {"memory": "512Mi"},
    }
    assert len(spec["template"]["metadata"]["annotations"][HASH_ANNOTATION]) == 64


def test_control_token_is_a_mounted_file_of_its_own_secret() -> None:
    """The token is passed in, lands only in <name>-control, and reaches the agent as
    the file CONTROL_TOKEN_FILE names (never as an environment value)."""
    token = "t0ken-of-the-operator-0123456789abcdef"
    children = render(_spec(), SECRETS, owner=Owner(name="minimal", uid="u-1"), control_token=token)
    by_name = {c["metadata"]["name"]: c for c in children}
    control = by_name["minimal-control"]
    assert base64.b64decode(control["data"]["token"]).decode() == token
    assert control["metadata"]["ownerReferences"][0]["uid"] == "u-1"  # collected with the CR
    env = {k: base64.b64decode(v).decode() for k, v in by_name["minimal-agent-env"]["data"].items()}
    assert env["CONTROL_TOKEN_FILE"] == "/etc/sipstack/control/token"
    assert "CONTROL_TOKEN" not in env and token not in json.dumps(by_name["minimal-agent"])
    pod = by_name["minimal-agent"]["spec"]["template"]["spec"]
    volume = next(v for v in pod["volumes"] if v["name"] == "control-token")
    assert volume["secret"] == {
        "secretName": "minimal-control",
        "items": [{"key": "token", "path": "token"}],
        "defaultMode": 0o440,
    }
    # A new token (the Secret was deleted and re-created) rolls the pod.
    other = render(_spec(), SECRETS, control_token=token + "x")
    assert (
        _by_kind(other)["Deployment"]["spec"]["template"]["metadata"]["annotations"][
            HASH_ANNOTATION
        ]
        != by_name["minimal-agent"]["spec"]["template"]["metadata"]["annotations"][HASH_ANNOTATION]
    )


def test_paused_scales_to_zero() -> None:
    assert _by_kind(render(_spec(paused=True), SECRETS))["Deployment"]["spec"]["replicas"] == 0


def _hash(spec: Any, secrets: dict[tuple[str, str], str]) -> str:
    dep = _by_kind(render(spec, secrets))["Deployment"]
    return str(dep["spec"]["template"]["metadata"]["annotations"][HASH_ANNOTATION])


def test_hash_follows_spec_and_secret_values() -> None:
    base = _hash(_spec(), SECRETS)
    assert _hash(_spec(), dict(SECRETS)) == base  # deterministic
    assert _hash(_spec(shipping={"batchSize": 10}), SECRETS) != base
    rotated = {**SECRETS, ("sipstack-api", "api-key"): "sk_ffffffffffffffffffffffffffffffff"}
    assert _hash(_spec(), rotated) != base
    # The CA bundle is mounted (not in the env) but still rolls the pod.
    db = {
        "type": "postgresql",
        "host": "db",
        "name": "cdr",
        "user": "ro",
        "sslMode": "verify-full",
        "caSecretRef": {"name": "pbx-db"},
    }
    with_ca = _hash(_spec(database=db), SECRETS)
    new_ca = {**SECRETS, ("pbx-db", "ca.crt"): "-----BEGIN CERTIFICATE-----\nnew\n"}
    assert _hash(_spec(database=db), new_ca) != with_ca


def test_env_has_every_agent_variable() -> None:
    cr = load_docs(EXAMPLES / "pbx-ami.yaml")[0]
    spec = parse_resource(cr)
    secrets = {
        ("sipstack-api", "api-key"): "sk_x",
        ("pbx-central-secrets", "db-password"): "dbpw",
        ("pbx-central-secrets", "ami-password"): "amipw",
    }
    env = agent_env(spec)
    assert env["CONNECTOR_ID"] == "telephony/pbx-central"
    assert env["API_KEY_FILE"] == "/etc/sipstack/secrets/api-key"
    assert env["DB_PASSWORD_FILE"] == "/etc/sipstack/secrets/db-password"
    assert env["AMI_PASSWORD_FILE"] == "/etc/sipstack/secrets/ami-password"
    assert not {"API_KEY", "DB_PASSWORD", "AMI_PASSWORD"} & set(env)
    assert secrets  # the values only reach the hash: test_secrets_are_mounted_files
    assert env["AMI_TLS"] == "true"
    assert env["AMI_PORT"] == "5039"
    assert env["DB_PORT"] == "5432"
    assert "ACCOUNTCODE_TENANT_MAP" not in env  # a file: see test_tenant_maps_travel_as_files
    assert env["ACCOUNTCODE_TENANT_MAP_FILE"] == (
        "/etc/sipstack/tenant-maps/accountcode-tenant-map.json"
    )
    assert env["STATE_DIR"] == "/data"
    assert env["MONITORING_PORT"] == "8000"
    assert env["LOG_FORMAT"] == "json"
    assert env["API_URL"].startswith("https://ingest.internal")
    assert env["HOST_HOSTNAME"] == "pbx-central"  # defaults to the name


def test_csv_and_recordings_mounts() -> None:
    cr = load_docs(EXAMPLES / "pbx-csv.yaml")[0]
    dep = _by_kind(rendered("pbx-csv"))["Deployment"]
    container = dep["spec"]["template"]["spec"]["containers"][0]
    mount = next(m for m in container["volumeMounts"] if m["name"] == "cel-csv")
    assert mount == {
        "name": "cel-csv",
        "mountPath": "/var/log/asterisk/cel-custom",
        "readOnly": True,
    }
    vol = next(v for v in dep["spec"]["template"]["spec"]["volumes"] if v["name"] == "cel-csv")
    assert vol["persistentVolumeClaim"] == cr["spec"]["cel"]["csvVolume"]["persistentVolumeClaim"]

    ro = _by_kind(rendered("pbx-east"))["Deployment"]["spec"]["template"]["spec"]
    rec = next(m for m in ro["containers"][0]["volumeMounts"] if m["name"] == "recordings")
    assert rec["readOnly"] is True
    rw = _by_kind(rendered("recordings-delete-after-upload"))["Deployment"]["spec"]["template"][
        "spec"
    ]
    rec = next(m for m in rw["containers"][0]["volumeMounts"] if m["name"] == "recordings")
    assert rec == {"name": "recordings", "mountPath": "/recordings", "readOnly": False}


def test_missing_secret_names_the_key_not_a_value() -> None:
    with pytest.raises(MissingSecretError) as err:
        render(_spec(), {})
    assert err.value.ref == SecretKeyRef("sipstack-api", "api-key")
    assert "sipstack-api" in str(err.value)


def test_no_secret_value_in_any_child() -> None:
    """The credentials stay in the user's Secrets: no child holds a copy."""
    children = render_documents(
        load_docs(EXAMPLES / "pbx-ami.yaml"), load_docs(EXAMPLES / "secrets.yaml")
    )
    values = [
        "sk_0123456789abcdef0123456789abcdef",
        "example-central-db-password",
        "example-central-ami-secret",
    ]
    for child in children:
        texts = [yaml.safe_dump(child)]
        if child["kind"] == "Secret":
            texts += [base64.b64decode(v).decode() for v in child["data"].values()]
        for value in values:
            assert all(value not in text for text in texts), child["kind"]


def test_secrets_are_mounted_files() -> None:
    """A read-only projected volume of the referenced keys (mode 0440: root:fsGroup),
    the env naming only the files; the same Secret's keys share one source."""
    spec = parse_resource(load_docs(EXAMPLES / "pbx-ami.yaml")[0])
    pod = _by_kind(render(spec, AMI_SECRETS))["Deployment"]["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    mount = next(m for m in container["volumeMounts"] if m["name"] == "secrets")
    assert mount == {"name": "secrets", "mountPath": "/etc/sipstack/secrets", "readOnly": True}
    volume = next(v for v in pod["volumes"] if v["name"] == "secrets")
    assert volume == {
        "name": "secrets",
        "projected": {
            "defaultMode": 0o440,
            "sources": [
                {
                    "secret": {
                        "name": "sipstack-api",
                        "items": [{"key": "api-key", "path": "api-key"}],
                    }
                },
                {
                    "secret": {
                        "name": "pbx-central-secrets",
                        "items": [
                            {"key": "db-password", "path": "db-password"},
                            {"key": "ami-password", "path": "ami-password"},
                        ],
                    }
                },
            ],
        },
    }
    assert pod["securityContext"]["fsGroup"] == 10001  # the group that reads mode 0440
    assert "optional" not in json.dumps(volume)  # a pod without its Secret does not start


def test_rotating_any_secret_value_rolls_the_pod() -> None:
    spec = parse_resource(load_docs(EXAMPLES / "pbx-ami.yaml")[0])
    base = _hash(spec, AMI_SECRETS)
    for ref in AMI_SECRETS:
        assert _hash(spec, {**AMI_SECRETS, ref: "rotated"}) != base, ref


AMI_SECRETS = {
    ("sipstack-api", "api-key"): "sk_x",
    ("pbx-central-secrets", "db-password"): "dbpw",
    ("pbx-central-secrets", "ami-password"): "amipw",
}
