"""A connector that tries to use the operator's rights beyond the install's
allow-list is refused (Ready/Reconciled False, reason NotAllowed, the rule in
the message) and nothing is applied: the real operator (KopfRunner) against
kmock (kmock_emulator.py)."""

from __future__ import annotations

import base64
import dataclasses
from typing import Any

import pytest
from sipstack_operator import handlers
from sipstack_operator.config import OperatorConfig

from .kmock_emulator import Emulator
from .test_operator_kmock import (
    DEPLOYMENTS,
    NS,
    SECRETS,
    cluster,
    condition,
    connector,
    create,
    eventually,
    names,
    obj,
    operator,
    secret,
    seed,
)

__all__ = ["cluster"]  # the fixture, re-exported

pytestmark = [pytest.mark.kmock(cls=Emulator), pytest.mark.timeout(60)]

HOSTILE: list[tuple[str, dict[str, Any], str]] = [
    (
        "attacker API host",
        {"apiUrl": "https://collector.attacker.example/v1/mqs/connectors/asterisk/calls"},
        "API host 'collector.attacker.example' is not allowed (SIPSTACK_ALLOWED_API_HOSTS",
    ),
    (
        "image from another repository",
        {"image": "docker.io/attacker/miner:1.0"},
        "image 'docker.io/attacker/miner:1.0' is not from an allowed repository",
    ),
    (
        "hostPath volume",
        {
            "recordings": {
                "enabled": True,
                "paths": ["/var/spool/asterisk/monitor"],
                "volume": {"hostPath": {"path": "/"}},
            }
        },
        "spec.recordings.volume: volume type 'hostPath' is not allowed",
    ),
    (
        "plaintext http:// to a non-loopback API host",
        {"apiUrl": "http://api-us1.sipstack.com/v1/calls", "apiAllowInsecureHttp": True},
        "spec.apiAllowInsecureHttp: plaintext http:// to the API is not allowed by this install",
    ),
    (
        "service-account token as the API key",
        {"apiKeySecretRef": {"name": "default-token", "key": "token"}},
        "Secret 'default-token' does not carry the label sipstack.com/connector-secret=true",
    ),
]


@pytest.mark.parametrize(("what", "spec", "message"), HOSTILE, ids=[h[0] for h in HOSTILE])
async def test_a_connector_outside_the_allow_list_is_refused(
    cluster: Emulator, what: str, spec: dict[str, Any], message: str
) -> None:
    await seed(cluster)
    token = secret("default-token", {"token": "eyJhbGciOi.sa-token"}, labelled=False)
    token["type"] = "kubernetes.io/service-account-token"
    await create(cluster, token)
    await create(cluster, connector(**spec))
    async with operator():
        ready = await eventually(
            lambda: (c := condition(cluster, "pbx-east", "Ready"))["reason"] == "NotAllowed" and c,
            what=f"Ready NotAllowed ({what})",
        )
        reconciled = condition(cluster, "pbx-east", "Reconciled")
        assert reconciled is not None
        assert (ready["status"], reconciled["status"], reconciled["reason"]) == (
            "False",
            "False",
            "NotAllowed",
        )
        assert message in ready["message"]
        # Nothing applied: no agent, no env Secret with the borrowed value.
        assert names(cluster, DEPLOYMENTS) == []
        assert names(cluster, SECRETS) == ["default-token", "pbx-db", "sipstack-api"]


async def test_labelling_the_secret_later_lets_the_connector_in(cluster: Emulator) -> None:
    """The refusal is not sticky: the status timer re-reads the Secret by name."""
    await create(cluster, secret("pbx-db", {"password": "pw"}))
    await create(cluster, secret("sipstack-api", {"api-key": "sk_x"}, labelled=False))
    await create(cluster, connector())
    async with operator():
        await eventually(
            lambda: condition(cluster, "pbx-east", "Ready")["reason"] == "NotAllowed",
            what="refused",
        )
        assert names(cluster, DEPLOYMENTS) == []
        async with cluster.patch(
            f"/api/v1/namespaces/{NS}/secrets/sipstack-api",
            json={"metadata": {"labels": {"sipstack.com/connector-secret": "true"}}},
            headers={"Content-Type": "application/merge-patch+json"},
        ) as resp:
            assert resp.status < 300
        await eventually(lambda: names(cluster, DEPLOYMENTS) == ["pbx-east-agent"], what="applied")
        # The status is written after the last child is applied: wait for it too.
        await eventually(
            lambda: condition(cluster, "pbx-east", "Reconciled")["status"] == "True",
            what="Reconciled True",
        )


async def test_an_install_that_allows_insecure_http_applies_it(
    cluster: Emulator, monkeypatch: pytest.MonkeyPatch
) -> None:
    """operator.allow.insecureHttp (SIPSTACK_ALLOW_INSECURE_HTTP=true): the agent gets
    the plaintext URL and API_ALLOW_INSECURE_HTTP."""
    allowed = OperatorConfig.from_env({"SIPSTACK_ALLOW_INSECURE_HTTP": "true"}).allow
    monkeypatch.setattr(handlers, "CONFIG", dataclasses.replace(handlers.CONFIG, allow=allowed))
    await seed(cluster)
    url = "http://api-us1.sipstack.com/v1/calls"
    await create(cluster, connector(apiUrl=url, apiAllowInsecureHttp=True))
    async with operator():
        await eventually(lambda: names(cluster, DEPLOYMENTS) == ["pbx-east-agent"], what="applied")
        await eventually(
            lambda: condition(cluster, "pbx-east", "Reconciled")["status"] == "True",
            what="Reconciled True",
        )
    data = obj(cluster, SECRETS, "pbx-east-agent-env")["data"]
    env = {k: base64.b64decode(data[k]).decode() for k in ("API_URL", "API_ALLOW_INSECURE_HTTP")}
    assert env == {"API_URL": url, "API_ALLOW_INSECURE_HTTP": "true"}
