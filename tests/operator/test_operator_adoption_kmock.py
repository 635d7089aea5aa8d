"""Server-side apply with force would take over any object that happens to have
a child's name (and garbage collection would delete it with the connector): the
operator refuses to adopt what this connector does not own (reason NotOwned).
The real operator (KopfRunner) against kmock (kmock_emulator.py)."""

from __future__ import annotations

import copy
from typing import Any

import pytest

from .kmock_emulator import Emulator
from .test_operator_kmock import (
    DEPLOYMENTS,
    NS,
    PVCS,
    cluster,
    condition,
    connector,
    create,
    delete,
    eventually,
    names,
    obj,
    operator,
    seed,
)

__all__ = ["cluster"]  # the fixture, re-exported

pytestmark = [pytest.mark.kmock(cls=Emulator), pytest.mark.timeout(60)]

SOMEONE_ELSES_DEPLOYMENT: dict[str, Any] = {
    "apiVersion": "apps/v1",
    "kind": "Deployment",
    "metadata": {"name": "pbx-east-agent", "namespace": NS, "labels": {"team": "billing"}},
    "spec": {
        "replicas": 3,
        "selector": {"matchLabels": {"app": "billing"}},
        "template": {
            "metadata": {"labels": {"app": "billing"}},
            "spec": {"containers": [{"name": "billing", "image": "billing:1"}]},
        },
    },
}
DEPLOYMENT_PATH = f"/apis/apps/v1/namespaces/{NS}/deployments"
PVC_PATH = f"/api/v1/namespaces/{NS}/persistentvolumeclaims"


async def post(cluster: Emulator, path: str, body: dict[str, Any]) -> None:
    async with cluster.post(path, json=body) as resp:
        assert resp.status < 300, await resp.text()


async def test_an_object_with_a_childs_name_is_not_adopted(cluster: Emulator) -> None:
    await seed(cluster)
    await post(cluster, DEPLOYMENT_PATH, copy.deepcopy(SOMEONE_ELSES_DEPLOYMENT))
    before = obj(cluster, DEPLOYMENTS, "pbx-east-agent")
    await create(cluster, connector())
    async with operator():
        ready = await eventually(
            lambda: (c := condition(cluster, "pbx-east", "Ready"))["reason"] == "NotOwned" and c,
            what="Ready NotOwned",
        )
        reconciled = condition(cluster, "pbx-east", "Reconciled")
        assert ready["status"] == "False" and reconciled is not None
        assert (reconciled["status"], reconciled["reason"]) == ("False", "NotOwned")
        assert "Deployment pbx-east-agent already exists and is not owned" in ready["message"]
        # Nothing applied at all, and the other team's Deployment is untouched.
        assert names(cluster, PVCS) == []
        assert obj(cluster, DEPLOYMENTS, "pbx-east-agent") == before

        # Once the name is free, the retry applies the connector's own children.
        await delete(cluster, f"{DEPLOYMENT_PATH}/pbx-east-agent")
        await eventually(
            lambda: condition(cluster, "pbx-east", "Reconciled")["status"] == "True",
            timeout=20,
            what="applied after the name was freed",
        )
        deployment = obj(cluster, DEPLOYMENTS, "pbx-east-agent")
        assert deployment is not None
        (owner,) = deployment["metadata"]["ownerReferences"]
        assert owner["kind"] == "AsteriskConnector" and owner["name"] == "pbx-east"


async def test_a_retained_state_claim_is_taken_back(cluster: Emulator) -> None:
    """The PVC a deleted connector left behind (whenDeleted Retain: no owner, the
    connector label) belongs to the connector of that name."""
    await seed(cluster)
    retained = {
        "apiVersion": "v1",
        "kind": "PersistentVolumeClaim",
        "metadata": {
            "name": "pbx-east-state",
            "namespace": NS,
            "labels": {"sipstack.com/connector": "pbx-east"},
        },
        "spec": {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": "1Gi"}}},
    }
    await post(cluster, PVC_PATH, retained)
    foreign = copy.deepcopy(retained)
    foreign["metadata"]["name"] = "pbx-west-state"
    foreign["metadata"]["labels"] = {"sipstack.com/connector": "someone-else"}
    await post(cluster, PVC_PATH, foreign)
    await create(cluster, connector())
    await create(cluster, connector("pbx-west"))
    async with operator():
        await eventually(
            lambda: condition(cluster, "pbx-east", "Reconciled")["status"] == "True",
            what="pbx-east applied onto its retained claim",
        )
        west = await eventually(
            lambda: (
                (c := condition(cluster, "pbx-west", "Reconciled"))["reason"] == "NotOwned" and c
            ),
            what="pbx-west refused",
        )
        assert "PersistentVolumeClaim pbx-west-state" in west["message"]
        assert "pbx-west-agent" not in names(cluster, DEPLOYMENTS)
