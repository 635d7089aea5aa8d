"""The control token Secret `<name>-control` (kmock + KopfRunner): generated once,
kept across reconciles and operator restarts, owned by the connector (collected
with it), mounted as a file into the agent pod; a foreign Secret of that name is
never adopted. Requests the relay must not send: one found Running at start (the
operator stopped mid-call), malformed ones (the end-to-end relay with the real
agent: test_operator_relay_real_agent.py)."""

from __future__ import annotations

import base64
import json
from typing import Any

import pytest
from sipstack_operator.controlreq import REQUEST_ANNOTATION

from .kmock_emulator import Emulator
from .test_operator_kmock import (
    CONNECTORS,
    CR_PATH,
    DEPLOYMENTS,
    EVENTS,
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
        await eventually(lambda: pod_hash(cluster, "pbx-east") != first_hash, what="rolled")

    # A restarted operator reconciles (resume) and keeps it too.
    async with operator():
        second_hash = pod_hash(cluster, "pbx-east")
        await patch(cluster, f"{CR_PATH}/pbx-east", {"spec": {"shipping": {"batchSize": 78}}})
        await eventually(lambda: batch_size(cluster) == "78", what="reconciled after restart")
        # The Deployment is applied last: the reconcile is over.
        await eventually(lambda: pod_hash(cluster, "pbx-east") != second_hash, what="rolled")
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


def annotate(request: str) -> dict[str, Any]:
    return {"metadata": {"annotations": {REQUEST_ANNOTATION: request}}}


def last_request(cluster: Emulator) -> dict[str, Any]:
    return dict(((obj(cluster, CONNECTORS, "pbx-east") or {}).get("status") or {})["lastRequest"])


def request_events(cluster: Emulator) -> list[dict[str, Any]]:
    return [
        o.raw
        for k, o in cluster.objects.items()
        if k[0] == EVENTS and str(o.raw.get("reason", "")).startswith("Request")
    ]


async def test_a_request_found_running_at_start_is_failed_not_sent_again(
    cluster: Emulator,
) -> None:
    """The operator stopped while relaying: the restarted one marks it Failed (at most once)."""
    await seed(cluster)
    body = connector()
    body["metadata"]["annotations"] = {
        REQUEST_ANNOTATION: json.dumps({"id": "r-1", "action": "dead-letters-list", "args": {}})
    }
    await create(cluster, body)
    await patch(
        cluster,
        f"{CR_PATH}/pbx-east/status",
        {"status": {"lastRequest": {"id": "r-1", "action": "dead-letters-list",
                                    "outcome": "Running", "message": "relaying"}}},
    )  # fmt: skip
    async with operator():
        last = await eventually(
            lambda: (r := last_request(cluster))["outcome"] == "Failed" and r,
            what="lastRequest Failed",
        )
        assert last["id"] == "r-1" and "interrupted" in last["message"]
        (event,) = await eventually(lambda: request_events(cluster), what="the event")
        assert (event["type"], event["reason"]) == ("Warning", "RequestFailed")


async def test_an_invalid_request_is_recorded_once_and_sent_nowhere(cluster: Emulator) -> None:
    await seed(cluster)
    await create(cluster, connector())
    async with operator():
        await eventually(lambda: obj(cluster, DEPLOYMENTS, "pbx-east-agent"), what="children")
        bad = {"id": "r-2", "action": "resend", "args": {"since": "yesterday"}}
        await patch(cluster, f"{CR_PATH}/pbx-east", annotate(json.dumps(bad)))
        last = await eventually(
            lambda: (r := last_request(cluster))["id"] == "r-2" and r, what="lastRequest r-2"
        )
        assert (last["action"], last["outcome"]) == ("resend", "Invalid")
        assert "args.since" in last["message"] and "ISO-8601" in last["message"]
        await patch(cluster, f"{CR_PATH}/pbx-east", annotate("not json"))
        last = await eventually(
            lambda: (r := last_request(cluster))["id"].startswith("invalid-") and r,
            what="lastRequest of the unparsable one",
        )
        assert (last["action"], last["outcome"]) == ("unknown", "Invalid")
        events = await eventually(
            lambda: len(e := request_events(cluster)) == 2 and e, what="two events"
        )
        assert {e["reason"] for e in events} == {"RequestInvalid"}
