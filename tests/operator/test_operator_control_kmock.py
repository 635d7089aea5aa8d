"""The control token Secret `<name>-control` (kmock + KopfRunner): generated once,
kept across reconciles and operator restarts, owned by the connector (collected
with it), mounted as a file into the agent pod; a foreign Secret of that name is
never adopted."""

from __future__ import annotations

import base64
from typing import Any

import pytest
from kmock_emulator import Emulator
from test_operator_kmock import (
    CONNECTORS,
    CR_PATH,
    DEPLOYMENTS,
    NS,
    SECRETS,
    cluster,
    condition,
    connector,
    create,
    delete,
    eventually,
    obj,
    operator,
    patch,
    pod_hash,
    secret,
    seed,
)

pytestmark = [pytest.mark.kmock(cls=Emulator), pytest.mark.timeout(90)]
__all__ = ["cluster"]  # the fixture, imported for pytest


def token_of(cluster: Emulator, name: str = "pbx-east") -> str | None:
    body = obj(cluster, SECRETS, f"{name}-control")
    if body is None:
        return None
    return base64.b64decode(body["data"]["token"]).decode()


def batch_size(cluster: Emulator) -> str | None:
    env = obj(cluster, SECRETS, "pbx-east-agent-env") or {}
    raw = (env.get("data") or {}).get("CDR_BATCH_SIZE")
    return base64.b64decode(raw).decode() if raw else None


async def test_the_control_token_is_made_once_and_kept(cluster: Emulator) -> None:
    await seed(cluster)
    await create(cluster, connector())
    async with operator():
        await eventually(lambda: obj(cluster, DEPLOYMENTS, "pbx-east-agent"), what="children")
        token = token_of(cluster)
        assert token is not None
        assert len(token) >= 40 and " " not in token  # 32 random bytes, URL-safe
        cr = obj(cluster, CONNECTORS, "pbx-east")
        assert cr is not None
        control = obj(cluster, SECRETS, "pbx-east-control")
        assert control is not None
        assert control["metadata"]["ownerReferences"][0]["uid"] == cr["metadata"]["uid"]
        # The agent reads it from the mounted file CONTROL_TOKEN_FILE names.
        env = obj(cluster, SECRETS, "pbx-east-agent-env")
        assert env is not None
        assert base64.b64decode(env["data"]["CONTROL_TOKEN_FILE"]).decode() == (
            "/etc/sipstack/control/token"
        )
        assert "CONTROL_TOKEN" not in env["data"]
        dep = obj(cluster, DEPLOYMENTS, "pbx-east-agent")
        assert dep is not None
        volumes = dep["spec"]["template"]["spec"]["volumes"]
        assert {"secretName": "pbx-east-control"}.items() <= next(
            v["secret"] for v in volumes if v["name"] == "control-token"
        ).items()
        first_hash = pod_hash(cluster, "pbx-east")

        # A spec change reconciles again: same token.
        await patch(cluster, f"{CR_PATH}/pbx-east", {"spec": {"shipping": {"batchSize": 77}}})
        await eventually(lambda: batch_size(cluster) == "77", what="the new batch size applied")
        assert token_of(cluster) == token
        assert pod_hash(cluster, "pbx-east") != first_hash  # the spec change rolls it

    # A restarted operator reconciles (resume) and keeps it too.
    async with operator():
        await patch(cluster, f"{CR_PATH}/pbx-east", {"spec": {"shipping": {"batchSize": 78}}})
        await eventually(lambda: batch_size(cluster) == "78", what="reconciled after restart")
        assert token_of(cluster) == token

        # Deleted by hand: a new one at the next reconcile (and the pod rolls with it).
        await delete(cluster, f"/api/v1/namespaces/{NS}/secrets/pbx-east-control")
        await patch(cluster, f"{CR_PATH}/pbx-east", {"spec": {"shipping": {"batchSize": 79}}})
        new = await eventually(lambda: token_of(cluster), what="a new control Secret")
        assert new != token


async def test_a_foreign_control_secret_is_not_adopted(cluster: Emulator) -> None:
    await seed(cluster)
    foreign: dict[str, Any] = secret("pbx-east-control", {"token": "someone-elses-token-0123456"})
    await create(cluster, foreign)
    await create(cluster, connector())
    async with operator():
        ready = await eventually(
            lambda: (
                (c := condition(cluster, "pbx-east", "Reconciled"))
                and c["reason"] == "NotOwned"
                and c
            ),
            what="Reconciled NotOwned",
        )
        assert "Secret pbx-east-control" in ready["message"]
        assert token_of(cluster) == "someone-elses-token-0123456"
