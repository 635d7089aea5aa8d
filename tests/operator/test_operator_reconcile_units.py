"""Small pure parts of reconcile.py and handlers.py."""

from __future__ import annotations

import base64

from sipstack_operator import revocation as rv
from sipstack_operator.config import OperatorConfig
from sipstack_operator.render import render
from sipstack_operator.secretrefs import decode_secret
from sipstack_operator.spec import parse_resource

from .operator_testlib import EXAMPLES, load_docs


def test_retry_delay_backs_off_to_a_cap() -> None:
    config = OperatorConfig(retry_base=10, retry_cap=300)
    assert [config.retry_delay(r) for r in range(7)] == [10, 20, 40, 80, 160, 300, 300]
    assert config.retry_delay(10_000) == 300


def test_config_from_env() -> None:
    config = OperatorConfig.from_env(
        {"SIPSTACK_AGENT_IMAGE": "registry/agent:1", "SIPSTACK_STATUS_INTERVAL": "12"}
    )
    assert config.default_image == "registry/agent:1"
    assert config.status_interval == 12.0
    assert config.agent_status_url == "http://{service}.{namespace}.svc:8000/status"


def test_decode_secret() -> None:
    obj = {
        "data": {"a": base64.b64encode(b"x").decode(), "bin": base64.b64encode(b"\xff").decode()},
        "stringData": {"b": "y"},
    }
    assert decode_secret(obj) == {"a": "x", "bin": "", "b": "y"}


def test_revocation_knows_the_keys_the_running_pod_mounts() -> None:
    """revocation.py: the Deployment's secret volumes name what a revocation can hit."""
    cr = load_docs(EXAMPLES / "pbx-ami.yaml")[0]
    cr["spec"]["database"]["caSecretRef"] = {"name": "pbx-ca", "key": "ca.crt"}
    spec = parse_resource(cr)
    values = {(r.name, r.key): "v" for r in spec.secret_refs()}
    (deployment,) = [c for c in render(spec, values) if c["kind"] == "Deployment"]
    refs = {(r.name, r.key) for r in spec.secret_refs()}
    assert ("pbx-ca", "ca.crt") in refs
    control = (f"{spec.name}-control", "token")  # the operator's own Secret, re-made if gone
    assert rv.mounted_keys(deployment) == refs | {control}  # credentials, the DB CA, control
    deployment["metadata"]["ownerReferences"] = [{"uid": "u-1"}]
    (gone,) = sorted(refs)[:1]
    assert rv.revoked_keys(deployment, "u-1", [gone, ("typo", "key")]) == {gone}
    assert rv.revoked_keys(deployment, "u-2", [gone]) == set()  # not ours
    assert rv.revoked_keys(None, "u-1", [gone]) == set()  # never ran
