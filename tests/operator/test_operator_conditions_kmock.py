"""Conditions that tell the truth, under the real operator (KopfRunner) and kmock.

- a failed apply turns Reconciled and Ready False (reason ApplyFailed) and
  the status timer keeps Ready False while it lasts, even with a ready agent;
- a Secret rotation whose apply fails is retried with backoff (kopf never
  retries an event handler; the status timer does) until the pod template's
  hash changed (the agent reads the rotated Secret as a mounted file).

Faults are injected with the emulator's `fail_apply` (an API Status error
for each server-side apply of one object), as an admission webhook, a quota
or an etcd timeout would answer.
"""

from __future__ import annotations

from typing import Any

import pytest

from .fake_agent import FakeAgents
from .kmock_emulator import Emulator
from .test_operator_kmock import (
    CONNECTORS,
    CR_PATH,
    EVENTS,
    NS,
    SECRET_PATH,
    b64,
    cluster,
    condition,
    connector,
    create,
    eventually,
    make_ready,
    obj,
    operator,
    patch,
    pod_hash,
    seed,
)

pytestmark = [pytest.mark.kmock(cls=Emulator), pytest.mark.timeout(60)]

__all__ = ["cluster"]  # the fixture, imported for pytest


def status_of(cluster: Emulator, name: str) -> dict[str, Any]:
    return dict((obj(cluster, CONNECTORS, name) or {}).get("status") or {})


async def wait_ready(cluster: Emulator, name: str) -> None:
    await eventually(
        lambda: condition(cluster, name, "Ready")["status"] == "True", what=f"{name} Ready"
    )


async def timer_has_run(cluster: Emulator, agents: FakeAgents, name: str, depth: int) -> None:
    """Proof that a status refresh ran after now: the new backlog reached the CR."""
    agents.set_backlog(NS, name, depth)
    await eventually(lambda: status_of(cluster, name).get("backlog") == depth, what="refresh")


async def test_failed_apply_keeps_ready_false_across_timer_ticks(
    cluster: Emulator, agents: FakeAgents
) -> None:
    agents.set_backlog(NS, "pbx-east", 0)
    await seed(cluster)
    await create(cluster, connector())
    async with operator():
        await eventually(lambda: pod_hash(cluster, "pbx-east"), what="deployment")
        await make_ready(cluster, "pbx-east")
        await wait_ready(cluster, "pbx-east")
        reconciled = condition(cluster, "pbx-east", "Reconciled")
        assert (reconciled["status"], reconciled["reason"]) == ("True", "Applied")
        assert reconciled["observedGeneration"] == 1
        before = pod_hash(cluster, "pbx-east")

        cluster.fail_apply(
            "deployments",
            "pbx-east-agent",
            422,
            'admission webhook "policy.example.com" denied the request: image not allowed',
        )
        await patch(cluster, f"{CR_PATH}/pbx-east", {"spec": {"shipping": {"batchSize": 100}}})
        failed = await eventually(
            lambda: (
                (c := condition(cluster, "pbx-east", "Reconciled"))["status"] == "False"
                and c["observedGeneration"] == 2
                and c
            ),
            what="Reconciled False for generation 2",
        )
        assert failed["reason"] == "ApplyFailed"
        assert "HTTP 422" in failed["message"] and "image not allowed" in failed["message"]
        assert failed["observedGeneration"] == 2
        ready = condition(cluster, "pbx-east", "Ready")
        assert (ready["status"], ready["reason"]) == ("False", "ApplyFailed")
        # The agent is healthy meanwhile, and the timer keeps refreshing: Ready stays False.
        for depth in (3, 4, 5):
            await timer_has_run(cluster, agents, "pbx-east", depth)
            assert condition(cluster, "pbx-east", "AgentAvailable")["status"] == "True"
            assert condition(cluster, "pbx-east", "Ready")["status"] == "False"
        assert pod_hash(cluster, "pbx-east") == before

        cluster.heal_apply("deployments", "pbx-east-agent")
        await wait_ready(cluster, "pbx-east")  # kopf's retry of the update handler
        reconciled = condition(cluster, "pbx-east", "Reconciled")
        assert (reconciled["status"], reconciled["observedGeneration"]) == ("True", 2)
        assert pod_hash(cluster, "pbx-east") != before
        events = [o.raw for k, o in cluster.objects.items() if k[0] == EVENTS]
        assert any(e["reason"] == "ApplyFailed" and e["type"] == "Warning" for e in events)


async def test_secret_rotation_whose_apply_fails_is_retried_until_it_lands(
    cluster: Emulator, agents: FakeAgents
) -> None:
    agents.set_backlog(NS, "pbx-east", 0)
    await seed(cluster)
    await create(cluster, connector())
    async with operator():
        await eventually(lambda: pod_hash(cluster, "pbx-east"), what="deployment")
        await make_ready(cluster, "pbx-east")
        await wait_ready(cluster, "pbx-east")
        before = pod_hash(cluster, "pbx-east")

        cluster.fail_apply("deployments", "pbx-east-agent", 500, "etcdserver: request timed out")
        await patch(cluster, f"{SECRET_PATH}/pbx-db", {"data": {"password": b64("rotated!")}})
        failed = await eventually(
            lambda: (c := condition(cluster, "pbx-east", "Reconciled"))["status"] == "False" and c,
            what="Reconciled False",
        )
        assert failed["reason"] == "ApplyFailed" and "etcdserver" in failed["message"]
        # Retried (more than the one attempt of the Secret event), still failing: still False.
        await eventually(
            lambda: cluster.apply_fault_hits[("deployments", "pbx-east-agent")] >= 3,
            what="retries",
        )
        await timer_has_run(cluster, agents, "pbx-east", 9)
        assert condition(cluster, "pbx-east", "Ready")["status"] == "False"
        assert pod_hash(cluster, "pbx-east") == before

        cluster.heal_apply("deployments", "pbx-east-agent")
        await eventually(lambda: pod_hash(cluster, "pbx-east") != before, what="rolled")
        await wait_ready(cluster, "pbx-east")
        assert condition(cluster, "pbx-east", "Reconciled")["reason"] == "Applied"


async def test_missing_secret_is_reported_by_reconciled(cluster: Emulator) -> None:
    await create(cluster, connector())  # neither Secret exists
    async with operator():
        cond = await eventually(
            lambda: (c := condition(cluster, "pbx-east", "Reconciled"))["status"] == "False" and c,
            what="Reconciled False",
        )
        assert cond["reason"] == "SecretNotFound"
        assert "'pbx-db'" in cond["message"] and "'sipstack-api'" in cond["message"]
        assert condition(cluster, "pbx-east", "Ready")["reason"] == "SecretNotFound"
        await seed(cluster)
        await eventually(
            lambda: condition(cluster, "pbx-east", "Reconciled")["status"] == "True",
            what="Reconciled True",
        )
        assert condition(cluster, "pbx-east", "Ready")["reason"] == "AgentNotReady"


async def test_problems_the_agent_reports_turn_ready_false(
    cluster: Emulator, agents: FakeAgents
) -> None:
    agents.set_backlog(NS, "pbx-east", 0)
    await seed(cluster)
    await create(cluster, connector())
    async with operator():
        await eventually(lambda: pod_hash(cluster, "pbx-east"), what="deployment")
        await make_ready(cluster, "pbx-east")
        await wait_ready(cluster, "pbx-east")
        agents.set_problems(NS, "pbx-east", ["source:cdr: source not connected"])
        cond = await eventually(
            lambda: (
                (c := condition(cluster, "pbx-east", "AgentAvailable"))["status"] == "False" and c
            ),
            what="AgentAvailable False",
        )
        assert cond["reason"] == "AgentProblems"
        assert cond["message"] == "the agent reports: source:cdr: source not connected"
        assert condition(cluster, "pbx-east", "Ready")["reason"] == "AgentProblems"
        assert condition(cluster, "pbx-east", "Reconciled")["status"] == "True"
        agents.set_problems(NS, "pbx-east", [])
        await wait_ready(cluster, "pbx-east")
