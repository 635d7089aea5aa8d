"""Delete without losing calls, under the real operator (KopfRunner) and kmock.

- the state PVC is retained by default (no ownerReference; the emulator's
  garbage collector, like the real one, collects only owned objects) and is
  adopted by a connector re-created with the same name;
- with whenDeleted Delete it is owned and collected with the connector;
- deletion waits for the agent's backlog to reach 0 (read from a local
  server answering /status in the agent's real shape, see fake_agent.py),
  or for spec.drain.timeoutSeconds, with progress in status.drain and events;
- a claim an older operator created with an ownerReference loses it on the
  next reconcile (server-side apply drops the field it no longer applies).
"""

from __future__ import annotations

import asyncio
from typing import Any

import jsonschema
import pytest
from sipstack_operator import drain as dr

from .fake_agent import FakeAgents
from .kmock_emulator import Emulator
from .operator_testlib import strip_for_draft4
from .test_operator_kmock import (
    CONNECTORS,
    CR_PATH,
    DEPLOYMENTS,
    EVENTS,
    NS,
    PVCS,
    SECRETS,
    cluster,
    condition,
    connector,
    create,
    delete,
    eventually,
    make_ready,
    obj,
    operator,
    pod_hash,
    seed,
)

pytestmark = [pytest.mark.kmock(cls=Emulator), pytest.mark.timeout(60)]

__all__ = ["cluster"]  # the fixture, imported for pytest


def drain_of(cluster: Emulator, name: str) -> dict[str, Any]:
    body = obj(cluster, CONNECTORS, name) or {}
    return dict((body.get("status") or {}).get("drain") or {})


def events_for(cluster: Emulator, name: str) -> list[dict[str, Any]]:
    return [
        o.raw
        for k, o in cluster.objects.items()
        if k[0] == EVENTS and (o.raw.get("involvedObject") or {}).get("name") == name
    ]


async def running_agent(cluster: Emulator, name: str) -> None:
    await eventually(lambda: pod_hash(cluster, name), what="deployment")
    await make_ready(cluster, name)
    await eventually(lambda: condition(cluster, name, "Ready")["status"] == "True", what="Ready")


async def test_delete_drains_the_outbox_and_keeps_the_claim_for_the_next_connector(
    cluster: Emulator, agents: FakeAgents
) -> None:
    agents.set_backlog(NS, "pbx-east", 5)
    await seed(cluster)
    await create(cluster, connector(drain={"timeoutSeconds": 60}))
    async with operator():
        await running_agent(cluster, "pbx-east")
        pvc = obj(cluster, PVCS, "pbx-east-state")
        assert pvc is not None
        assert "ownerReferences" not in pvc["metadata"]
        assert pvc["metadata"]["labels"]["sipstack.com/connector"] == "pbx-east"
        claim_uid = pvc["metadata"]["uid"]

        await delete(cluster, f"{CR_PATH}/pbx-east")
        drain = await eventually(
            lambda: (d := drain_of(cluster, "pbx-east")).get("backlog") == 5 and d, what="draining"
        )
        assert drain["phase"] == "Draining"
        assert drain["startedAt"] < drain["deadline"]
        assert "5 document(s) left" in drain["message"]
        ready = condition(cluster, "pbx-east", "Ready")
        assert (ready["status"], ready["reason"]) == ("False", "Draining")
        # The agent keeps running (and delivering) while the connector waits.
        assert obj(cluster, DEPLOYMENTS, "pbx-east-agent") is not None

        agents.set_backlog(NS, "pbx-east", 2)
        await eventually(
            lambda: any(
                e["reason"] == "Draining" and "2 document(s) left" in e["message"]
                for e in events_for(cluster, "pbx-east")
            ),
            what="progress event",
        )
        agents.set_backlog(NS, "pbx-east", 0)
        await eventually(lambda: obj(cluster, CONNECTORS, "pbx-east") is None, what="CR gone")
        assert any(e["reason"] == "Drained" for e in events_for(cluster, "pbx-east"))
        # Owned children are collected; the claim (and the calls in it) stays.
        assert obj(cluster, DEPLOYMENTS, "pbx-east-agent") is None
        assert obj(cluster, SECRETS, "pbx-east-agent-env") is None
        kept = obj(cluster, PVCS, "pbx-east-state")
        assert kept is not None and kept["metadata"]["uid"] == claim_uid

        # Re-created with the same name: the same claim is mounted again.
        await create(cluster, connector(drain={"timeoutSeconds": 60}))
        dep = await eventually(lambda: obj(cluster, DEPLOYMENTS, "pbx-east-agent"), what="again")
        volumes = dep["spec"]["template"]["spec"]["volumes"]
        assert {"name": "state", "persistentVolumeClaim": {"claimName": "pbx-east-state"}} in (
            volumes
        )
        adopted = obj(cluster, PVCS, "pbx-east-state")
        assert adopted is not None and adopted["metadata"]["uid"] == claim_uid
        assert "ownerReferences" not in adopted["metadata"]


async def test_delete_policy_and_drain_timeout(cluster: Emulator, agents: FakeAgents) -> None:
    agents.set_backlog(NS, "pbx-east", 4)  # never drains
    await seed(cluster)
    await create(cluster, connector(state={"whenDeleted": "Delete"}, drain={"timeoutSeconds": 1}))
    async with operator():
        await running_agent(cluster, "pbx-east")
        cr = obj(cluster, CONNECTORS, "pbx-east")
        pvc = obj(cluster, PVCS, "pbx-east-state")
        assert pvc is not None and cr is not None
        assert [o["uid"] for o in pvc["metadata"]["ownerReferences"]] == [cr["metadata"]["uid"]]

        await delete(cluster, f"{CR_PATH}/pbx-east")
        await eventually(lambda: obj(cluster, CONNECTORS, "pbx-east") is None, what="CR gone")
        timed_out = [e for e in events_for(cluster, "pbx-east") if e["reason"] == "DrainTimedOut"]
        assert timed_out and timed_out[0]["type"] == "Warning"
        assert "4 document(s) still in the outbox after 1 s" in timed_out[0]["message"]
        assert "deleted with the connector" in timed_out[0]["message"]
        assert agents.requests[(NS, "pbx-east")] >= 2  # looked more than once before giving up
        assert obj(cluster, PVCS, "pbx-east-state") is None


def unreadable_events(cluster: Emulator, name: str) -> list[dict[str, Any]]:
    return [e for e in events_for(cluster, name) if e["reason"] == "DrainUnreadable"]


async def test_an_agent_whose_status_cannot_be_read_is_not_waited_for(
    cluster: Emulator, agents: FakeAgents, crd_schema: dict[str, Any], monkeypatch: Any
) -> None:
    monkeypatch.setattr(dr, "UNREADABLE_GRACE_SECONDS", 2)
    agents.set_backlog(NS, "pbx-east", 5)
    await seed(cluster)
    await create(cluster, connector(drain={"timeoutSeconds": 600}))
    async with operator():
        await running_agent(cluster, "pbx-east")
        await delete(cluster, f"{CR_PATH}/pbx-east")
        drain = await eventually(
            lambda: (d := drain_of(cluster, "pbx-east")).get("backlog") == 5 and d, what="draining"
        )
        assert drain["startedAt"] <= drain["lastReadAt"] < drain["deadline"]
        # The status the drain wrote is valid for the CRD's status schema (lastReadAt is in it).
        full = obj(cluster, CONNECTORS, "pbx-east")
        assert full is not None
        full.pop("metadata")
        jsonschema.Draft4Validator(strip_for_draft4(crd_schema)).validate(full)

        # Readable and not drained: the grace does not apply, it keeps waiting.
        await asyncio.sleep(3.0)
        drain = drain_of(cluster, "pbx-east")
        assert (drain["phase"], drain["backlog"]) == ("Draining", 5)
        assert "deletion proceeds in at most 5" in drain["message"]  # of 600 s
        read_before = drain["lastReadAt"]

        agents.set_unreadable(NS, "pbx-east")
        unread = await eventually(
            lambda: (
                "no backlog read" in (d := drain_of(cluster, "pbx-east")).get("message", "") and d
            ),
            what="unreadable, still draining",
        )
        assert unread["phase"] == "Draining" and "backlog" not in unread
        assert unread["lastReadAt"] >= read_before  # kept: the last look that read one
        await eventually(lambda: obj(cluster, CONNECTORS, "pbx-east") is None, what="CR gone")
        await eventually(lambda: unreadable_events(cluster, "pbx-east"), what="event")
        event = unreadable_events(cluster, "pbx-east")[0]
        assert event["type"] == "Warning"
        assert "no backlog could be read from the agent's /status for " in event["message"]
        assert "(limit 2 s)" in event["message"]
        assert "stays in PVC pbx-east-state (whenDeleted Retain)" in event["message"]
        assert not [e for e in events_for(cluster, "pbx-east") if e["reason"] == "DrainTimedOut"]
        assert obj(cluster, PVCS, "pbx-east-state") is not None


async def test_the_unreadable_grace_survives_an_operator_restart(
    cluster: Emulator, agents: FakeAgents, monkeypatch: Any
) -> None:
    grace = 5  # longer than the first operator takes to stop
    monkeypatch.setattr(dr, "UNREADABLE_GRACE_SECONDS", grace)
    agents.set_backlog(NS, "pbx-east", 5)
    await seed(cluster)
    await create(cluster, connector(drain={"timeoutSeconds": 600}))
    async with operator():
        await running_agent(cluster, "pbx-east")
        await delete(cluster, f"{CR_PATH}/pbx-east")
        await eventually(lambda: drain_of(cluster, "pbx-east").get("backlog") == 5, what="read")
        agents.set_unreadable(NS, "pbx-east")
        await eventually(
            lambda: "no backlog read" in drain_of(cluster, "pbx-east").get("message", ""),
            what="unreadable, still draining",
        )
    drain = drain_of(cluster, "pbx-east")
    assert drain["phase"] == "Draining" and "backlog" not in drain
    last_read = drain["lastReadAt"]
    # Stopped for longer than twice the grace: a new operator counts from lastReadAt,
    # not from its own first look (which would wait the grace again, after every restart).
    await asyncio.sleep(2 * grace + 1)
    async with operator():
        await eventually(lambda: obj(cluster, CONNECTORS, "pbx-east") is None, what="CR gone")
        await eventually(lambda: unreadable_events(cluster, "pbx-east"), what="event")
    message = unreadable_events(cluster, "pbx-east")[0]["message"]
    seconds = int(message.split("/status for ")[1].split(" s")[0])
    assert seconds >= 2 * grace + 1, (last_read, message)


async def test_delete_without_a_running_agent_does_not_wait(
    cluster: Emulator, agents: FakeAgents
) -> None:
    agents.set_backlog(NS, "pbx-east", 9)
    await seed(cluster)
    await create(cluster, connector(paused=True, drain={"timeoutSeconds": 600}))
    async with operator():
        await eventually(lambda: obj(cluster, DEPLOYMENTS, "pbx-east-agent"), what="deployment")
        await delete(cluster, f"{CR_PATH}/pbx-east")
        await eventually(lambda: obj(cluster, CONNECTORS, "pbx-east") is None, what="CR gone")

        def skipped_events() -> list[dict]:
            return [e for e in events_for(cluster, "pbx-east") if e["reason"] == "DrainSkipped"]

        await eventually(skipped_events, what="DrainSkipped event")  # events post async
        skipped = skipped_events()
        assert skipped and "the agent is not running" in skipped[0]["message"]
        assert "stays in PVC pbx-east-state" in skipped[0]["message"]
        assert obj(cluster, PVCS, "pbx-east-state") is not None


async def test_a_claim_owned_by_an_older_operator_is_released(cluster: Emulator) -> None:
    await seed(cluster)
    await create(cluster, connector())
    cr = obj(cluster, CONNECTORS, "pbx-east")
    assert cr is not None
    owner = {
        "apiVersion": "sipstack.com/v1alpha1",
        "kind": "AsteriskConnector",
        "name": "pbx-east",
        "uid": cr["metadata"]["uid"],
        "controller": True,
        "blockOwnerDeletion": True,
    }
    old_claim = {
        "apiVersion": "v1",
        "kind": "PersistentVolumeClaim",
        "metadata": {"name": "pbx-east-state", "namespace": NS, "ownerReferences": [owner]},
        "spec": {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": "1Gi"}}},
    }
    path = f"/api/v1/namespaces/{NS}/persistentvolumeclaims/pbx-east-state"
    async with cluster.patch(
        path,
        json=old_claim,
        params={"fieldManager": "sipstack-operator", "force": "true"},
        headers={"Content-Type": "application/apply-patch+yaml"},
    ) as resp:
        assert resp.status < 300, await resp.text()
    uid = obj(cluster, PVCS, "pbx-east-state")["metadata"]["uid"]
    async with operator():
        released = await eventually(
            lambda: (
                (p := obj(cluster, PVCS, "pbx-east-state"))
                and "ownerReferences" not in p["metadata"]
                and p
            ),
            what="owner reference removed",
        )
    assert released["metadata"]["uid"] == uid
    assert released["metadata"]["labels"]["sipstack.com/connector"] == "pbx-east"
