"""Revocation reaches the running agent (revocation.py), under the real operator
(KopfRunner) and kmock.

A referenced Secret deleted, its key removed, or its opt-in label taken away
while the agent runs: the Deployment is scaled to 0, SecretsResolved (and
Reconciled, AgentAvailable, Ready) turn False with reason SecretRevoked and a
Warning event, the state PVC and the other children stay; when the Secret is
back the Deployment returns to 1 replica. The credential is never copied
into a child, so stopping the pod is all it takes.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

import pytest

from .fake_agent import FakeAgents
from .kmock_emulator import Emulator
from .test_operator_kmock import (
    API_KEY,
    CONNECTORS,
    CR_PATH,
    DB_PASSWORD,
    DEPLOYMENT_PATH,
    DEPLOYMENTS,
    EVENTS,
    PVCS,
    SECRET_PATH,
    SECRETS,
    assert_no_secret_values,
    b64,
    cluster,
    condition,
    connector,
    create,
    delete,
    eventually,
    make_ready,
    obj,
    operator,
    patch,
    pod_hash,
    secret,
    seed,
)

pytestmark = [pytest.mark.kmock(cls=Emulator), pytest.mark.timeout(60)]

__all__ = ["cluster"]  # the fixture, imported for pytest

Step = Callable[[Emulator], Awaitable[None]]


async def delete_secret(cluster: Emulator) -> None:
    await delete(cluster, f"{SECRET_PATH}/pbx-db")


async def recreate_secret(cluster: Emulator) -> None:
    await create(cluster, secret("pbx-db", {"password": "new-db-pass"}))


async def remove_key(cluster: Emulator) -> None:
    await patch(cluster, f"{SECRET_PATH}/pbx-db", {"data": {"password": None, "other": b64("x")}})


async def restore_key(cluster: Emulator) -> None:
    await patch(cluster, f"{SECRET_PATH}/pbx-db", {"data": {"password": b64("new-db-pass")}})


async def remove_label(cluster: Emulator) -> None:
    await patch(cluster, f"{SECRET_PATH}/pbx-db", {"metadata": {"labels": None}})


async def restore_label(cluster: Emulator) -> None:
    labels = {"sipstack.com/connector-secret": "true"}
    await patch(cluster, f"{SECRET_PATH}/pbx-db", {"metadata": {"labels": labels}})


WAYS: dict[str, tuple[Step, Step, str]] = {
    "secret-deleted": (delete_secret, recreate_secret, "Secret 'pbx-db' not found"),
    "key-removed": (remove_key, restore_key, "key 'password' not found in Secret 'pbx-db'"),
    "label-removed": (remove_label, restore_label, "'pbx-db'"),
}


def replicas(cluster: Emulator) -> int | None:
    dep = obj(cluster, DEPLOYMENTS, "pbx-east-agent")
    return None if dep is None else int(dep["spec"]["replicas"])


def events(cluster: Emulator, reason: str) -> list[dict[str, Any]]:
    return [
        o.raw
        for k, o in cluster.objects.items()
        if k[0] == EVENTS and o.raw.get("reason") == reason
    ]


@pytest.mark.parametrize("way", sorted(WAYS))
async def test_revoking_a_secret_stops_the_agent_until_it_is_back(
    cluster: Emulator, agents: FakeAgents, way: str
) -> None:
    revoke, restore, named = WAYS[way]
    agents.set_backlog("telephony", "pbx-east", 0)
    await seed(cluster)
    await create(cluster, connector())
    async with operator():
        await eventually(lambda: pod_hash(cluster, "pbx-east"), what="deployment")
        await make_ready(cluster, "pbx-east")
        await eventually(lambda: condition(cluster, "pbx-east", "Ready")["status"] == "True")
        assert replicas(cluster) == 1
        before = pod_hash(cluster, "pbx-east")

        await revoke(cluster)
        await eventually(lambda: replicas(cluster) == 0, what="scaled to 0")
        cond = await eventually(
            lambda: (
                (c := condition(cluster, "pbx-east", "SecretsResolved"))["status"] == "False" and c
            ),
            what="SecretsResolved False",
        )
        assert cond["reason"] == "SecretRevoked"
        assert named in cond["message"] and "scaled to 0" in cond["message"]
        for kind in ("Ready", "Reconciled", "AgentAvailable"):
            got = condition(cluster, "pbx-east", kind)
            assert (got["status"], got["reason"]) == ("False", "SecretRevoked"), kind
        warning = await eventually(lambda: events(cluster, "SecretRevoked"), what="event")
        assert warning[0]["type"] == "Warning"
        # Nothing lost, nothing else touched: the state claim and the other children stay.
        assert obj(cluster, PVCS, "pbx-east-state") is not None
        assert obj(cluster, SECRETS, "pbx-east-agent-env") is not None
        # The controller plays along (no pods); timer rounds keep the revoked conditions.
        await patch(
            cluster,
            f"{DEPLOYMENT_PATH}/pbx-east-agent/status",
            {"status": {"replicas": 0, "readyReplicas": 0, "availableReplicas": 0}},
        )
        # status.agent.readyReplicas 0: a status refresh ran after the revocation.
        await eventually(
            lambda: obj(cluster, CONNECTORS, "pbx-east")["status"]["agent"]["readyReplicas"] == 0,
            what="a refresh",
        )
        assert condition(cluster, "pbx-east", "AgentAvailable")["reason"] == "SecretRevoked"
        version = obj(cluster, DEPLOYMENTS, "pbx-east-agent")["metadata"]["resourceVersion"]
        await asyncio.sleep(1.0)  # retries and timer rounds
        # Neither scaled again nor re-applied while the Secret is missing.
        assert obj(cluster, DEPLOYMENTS, "pbx-east-agent")["metadata"]["resourceVersion"] == version
        assert condition(cluster, "pbx-east", "AgentAvailable")["reason"] == "SecretRevoked"

        await restore(cluster)
        await eventually(lambda: replicas(cluster) == 1, what="back to 1 replica")
        await eventually(
            lambda: condition(cluster, "pbx-east", "SecretsResolved")["status"] == "True",
            what="SecretsResolved True",
        )
        if way != "label-removed":  # a new password: the pod template changed too
            assert pod_hash(cluster, "pbx-east") != before
        await make_ready(cluster, "pbx-east")
        await eventually(lambda: condition(cluster, "pbx-east", "Ready")["status"] == "True")
        assert_no_secret_values(cluster, API_KEY, DB_PASSWORD, "new-db-pass")


async def test_a_connector_that_never_ran_is_not_revoked(cluster: Emulator) -> None:
    """No agent Deployment yet: nothing to stop, the plain SecretNotFound."""
    await create(cluster, secret("sipstack-api", {"api-key": API_KEY}))
    await create(cluster, connector())
    async with operator():
        cond = await eventually(
            lambda: (
                (c := condition(cluster, "pbx-east", "SecretsResolved"))["status"] == "False" and c
            )
        )
        assert cond["reason"] == "SecretNotFound"
        assert obj(cluster, DEPLOYMENTS, "pbx-east-agent") is None
        assert not events(cluster, "SecretRevoked")


async def test_a_new_reference_to_a_missing_secret_leaves_the_running_agent_alone(
    cluster: Emulator,
) -> None:
    """A typo in a changed secretRef revokes nothing the pod mounts: it keeps running
    with what it has, and the connector says SecretNotFound."""
    await seed(cluster)
    await create(cluster, connector())
    async with operator():
        before = await eventually(lambda: pod_hash(cluster, "pbx-east"), what="deployment")
        ref = {"name": "pbx-db-typo", "key": "password"}
        await patch(
            cluster, f"{CR_PATH}/pbx-east", {"spec": {"database": {"passwordSecretRef": ref}}}
        )
        cond = await eventually(
            lambda: (
                (c := condition(cluster, "pbx-east", "SecretsResolved"))["status"] == "False" and c
            ),
            what="SecretsResolved False",
        )
        assert cond["reason"] == "SecretNotFound" and "'pbx-db-typo'" in cond["message"]
        await asyncio.sleep(1.0)  # retries and timer rounds
        assert replicas(cluster) == 1
        assert pod_hash(cluster, "pbx-east") == before
        assert not events(cluster, "SecretRevoked")
