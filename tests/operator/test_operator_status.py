"""status.py: conditions change lastTransitionTime only on a status change,
transitions become events, the agent's /status maps onto the CR status, and
nothing that looks like an API key survives."""

from __future__ import annotations

import json
from typing import Any

import aiohttp
import jsonschema
import pytest
from aiohttp import web
from sipstack_operator import status as st

from .operator_testlib import (
    AGENT_STATUS_SCHEMA_COPY,
    AGENT_STATUS_SCHEMA_SOURCE,
    agent_status_doc,
)


def _merge(old: Any, *conds: st.Condition, now: str = "2026-01-01T00:00:00Z") -> Any:
    return st.merge_conditions(old, conds, now=now, generation=3)


def test_first_write_is_a_transition() -> None:
    merged, transitions = _merge(None, st.Condition("Ready", "False", "AgentNotReady", "waiting"))
    assert merged == [
        {
            "type": "Ready",
            "status": "False",
            "reason": "AgentNotReady",
            "message": "waiting",
            "lastTransitionTime": "2026-01-01T00:00:00Z",
            "observedGeneration": 3,
        }
    ]
    assert [t.event_type for t in transitions] == ["Warning"]


def test_time_moves_only_on_status_change() -> None:
    first, _ = _merge(None, st.Condition("Ready", "False", "A", "m"))
    same, transitions = _merge(first, st.Condition("Ready", "False", "A", "m"), now="later")
    assert same == first and transitions == []
    reason, transitions = _merge(first, st.Condition("Ready", "False", "B", "m2"), now="later")
    assert reason[0]["lastTransitionTime"] == "2026-01-01T00:00:00Z"
    assert (reason[0]["reason"], reason[0]["message"]) == ("B", "m2")
    assert len(transitions) == 1  # a new reason is worth an event
    flipped, transitions = _merge(
        first, st.Condition("Ready", "True", "AgentReady", ""), now="later"
    )
    assert flipped[0]["lastTransitionTime"] == "later"
    assert transitions[0].event_type == "Normal"


def test_conditions_are_ordered_and_others_kept() -> None:
    merged, _ = _merge(
        [{"type": "Custom", "status": "True"}],
        st.Condition("MonitoringConfigured", "True", "x"),
        st.Condition("Ready", "True", "x"),
    )
    assert [c["type"] for c in merged] == ["Ready", "MonitoringConfigured", "Custom"]


def test_ready_needs_reconciled_secrets_and_agent() -> None:
    applied = st.reconciled_condition(3, ["Secret x-agent-env", "Deployment x-agent"])
    assert (applied.type, applied.status, applied.reason) == ("Reconciled", "True", "Applied")
    assert applied.message == "applied generation 3: Secret x-agent-env, Deployment x-agent"
    ok = st.Condition("SecretsResolved", "True", "SecretsFound")
    agent = st.agent_condition({"status": {"readyReplicas": 1}}, paused=False)
    good = {"Reconciled": applied, "SecretsResolved": ok, "AgentAvailable": agent}
    assert st.ready_condition(good, paused=False).status == "True"
    bad = st.Condition("SecretsResolved", "False", "SecretNotFound", "Secret 'x' not found")
    ready = st.ready_condition({**good, "SecretsResolved": bad}, paused=False)
    assert (ready.status, ready.reason) == ("False", "SecretNotFound")
    paused = st.ready_condition({}, paused=True)
    assert (paused.status, paused.reason) == ("False", "Paused")
    assert st.Transition("Ready", "False", "Paused", "").event_type == "Normal"
    assert st.ready_condition({}, paused=False).status == "Unknown"


def test_ready_stays_false_while_the_last_apply_failed() -> None:
    """A healthy agent does not make Ready True when the desired state was not applied."""
    failed = st.Condition("Reconciled", "False", "ApplyFailed", "HTTP 422: denied")
    ok = st.Condition("SecretsResolved", "True", "SecretsFound")
    agent = st.agent_condition({"status": {"readyReplicas": 1}}, paused=False)
    conds = {"Reconciled": failed, "SecretsResolved": ok, "AgentAvailable": agent}
    ready = st.ready_condition(conds, paused=False)
    assert (ready.status, ready.reason, ready.message) == (
        "False",
        "ApplyFailed",
        "HTTP 422: denied",
    )
    # Paused does not hide a failed apply either.
    assert st.ready_condition(conds, paused=True).reason == "ApplyFailed"
    # Without a Reconciled condition yet (an old status): not known, never True.
    assert (
        st.ready_condition({"SecretsResolved": ok, "AgentAvailable": agent}, paused=False).status
        == "Unknown"
    )


def test_agent_condition_from_the_deployment() -> None:
    assert st.agent_condition(None, paused=False).reason == "DeploymentMissing"
    assert st.agent_condition({"status": {}}, paused=False).reason == "AgentNotReady"
    stuck = {
        "status": {
            "conditions": [
                {"type": "Progressing", "status": "False", "reason": "ProgressDeadlineExceeded"}
            ]
        }
    }
    assert st.agent_condition(stuck, paused=False).reason == "ProgressDeadlineExceeded"
    assert st.agent_condition({"status": {"readyReplicas": 1}}, paused=True).reason == "Paused"


def test_monitoring_condition() -> None:
    assert st.monitoring_condition(enabled=False, available=False).status == "True"
    missing = st.monitoring_condition(enabled=True, available=False)
    assert (missing.status, missing.reason) == ("False", "ServiceMonitorCRDMissing")
    assert st.monitoring_condition(enabled=True, available=True).reason == "ServiceMonitorApplied"


def test_agent_fields_read_the_schema_shape() -> None:
    doc = agent_status_doc(
        backlog={"outbox_depth": 12},
        shipper={
            "outbox_depth": 3,
            "last_success_at": "2026-11-25T21:00:00.123456+00:00",
            "last_error": "HTTP 401 with key sk_0123456789abcdef0123456789abcdef",
        },
    )
    fields = st.agent_fields(doc)
    assert fields["backlog"] == 12  # every kind waiting, not only the call shipper's
    assert fields["lastShippedAt"] == "2026-11-25T21:00:00Z"
    assert "0123456789abcdef0123456789abcdef" not in fields["lastError"]
    assert fields["lastError"].endswith("sk_…cdef")


def test_agent_fields_for_the_fleet_table() -> None:
    """Dead letters, the agent's version and the newest row of the source furthest behind."""
    doc = agent_status_doc(
        version="0.15.0",
        backlog={"dead_letters": 4, "dead_letters_by_reason": {"http_400": 3, "http_422": 1}},
        sources={
            "sql:cdr": {"connected": True, "newest_row_at": "2026-11-25T21:00:05+00:00"},
            "sql:cel": {"connected": True, "newest_row_at": "2026-11-25T15:59:58-05:00"},
            "cel_ami": {"connected": None, "newest_row_at": None},
        },
    )
    fields = st.agent_fields(doc)
    assert fields["deadLetters"] == 4
    assert fields["deadLettersByReason"] == {"http_400": 3, "http_422": 1}
    assert fields["agentVersion"] == "0.15.0"
    assert fields["newestRowAt"] == "2026-11-25T20:59:58Z"  # the CEL source lags most
    assert "resend" not in fields  # no resend yet


def test_the_resend_progress_comes_from_the_agents_cursor() -> None:
    cursor = {
        "window": json.dumps(["2026-11-24T00:00:00+00:00", "2026-11-25T00:00:00-05:00", []]),
        "run": 2,
        "read_through": "2026-11-24T09:15:00+00:00",
        "sent": 1412,
        "done": False,
    }
    fields = st.agent_fields(agent_status_doc(checkpoints={"resend": cursor}))
    assert fields["resend"] == {
        "since": "2026-11-24T00:00:00Z",
        "until": "2026-11-25T05:00:00Z",
        "readThrough": "2026-11-24T09:15:00Z",
        "sent": 1412,
        "done": False,
    }
    for odd in ({**cursor, "window": "x"}, {**cursor, "sent": "9"}, {**cursor, "done": None}):
        assert "resend" not in st.agent_fields(agent_status_doc(checkpoints={"resend": odd}))


def test_agent_fields_before_the_first_delivery() -> None:
    doc = agent_status_doc(shipper={"last_success_at": None, "last_error": None})
    assert st.agent_fields(doc) == {
        "backlog": 0,
        "deadLetters": 0,
        "deadLettersByReason": {},
        "agentVersion": "x",
        "lastError": "",
    }


UNKNOWN_COUNTS = {"backlog": None, "deadLetters": None, "deadLettersByReason": None}


def test_agent_fields_while_the_store_is_not_open() -> None:
    doc = agent_status_doc()
    del doc["backlog"], doc["shipper"], doc["checkpoints"]
    # the counts are unknown (None: the merge patch removes an earlier read's values)
    assert st.agent_fields(doc) == {**UNKNOWN_COUNTS, "agentVersion": "x"}


def test_agent_fields_ignore_other_versions_and_garbage() -> None:
    assert st.agent_fields(None) == UNKNOWN_COUNTS
    assert st.agent_fields({**agent_status_doc(), "schema_version": 2}) == UNKNOWN_COUNTS
    unversioned = agent_status_doc()
    del unversioned["schema_version"]
    assert st.agent_fields(unversioned) == UNKNOWN_COUNTS
    odd = agent_status_doc()
    odd["backlog"]["outbox_depth"] = True
    odd["shipper"]["last_success_at"] = "yesterday"
    odd["backlog"]["dead_letters"] = -1
    odd["backlog"]["dead_letters_by_reason"] = {"http_400": "3"}
    odd["version"] = 15
    odd["sources"] = {"sql:cdr": {"connected": True, "newest_row_at": "noon"}}
    assert st.agent_fields(odd) == {
        "backlog": None,
        "deadLetters": None,
        "deadLettersByReason": {},
        "lastError": "x",
    }


def test_the_operator_reads_the_version_its_schema_copy_declares() -> None:
    assert AGENT_STATUS_SCHEMA_COPY.read_bytes() == AGENT_STATUS_SCHEMA_SOURCE.read_bytes(), (
        "operator/sipstack_operator/data is stale: run tools/sync-chart-crd.py"
    )
    assert st.agent_status_schema() == json.loads(AGENT_STATUS_SCHEMA_SOURCE.read_text())
    assert agent_status_doc()["schema_version"] == st.AGENT_STATUS_VERSION == 1


def test_fixtures_cannot_take_a_shape_of_their_own() -> None:
    with pytest.raises(jsonschema.ValidationError):
        agent_status_doc(outbox_depth=7)  # the flat key the operator used to read
    with pytest.raises(jsonschema.ValidationError):
        agent_status_doc(shipper={"last_success_at": 0})


def test_status_patch_only_when_changed() -> None:
    old = {"backlog": 1, "agent": {"readyReplicas": 1}}
    assert st.status_patch(old, dict(old)) is None
    assert st.status_patch(old, {**old, "backlog": 2}) == {"backlog": 2}


def test_scrub_truncates() -> None:
    assert len(st.scrub("x" * 5000)) == st.MAX_MESSAGE


async def test_fetch_agent_status_bounds_what_it_reads() -> None:
    doc = agent_status_doc()
    big = {**doc, "ready_problems": ["x" * 1024] * 300}  # ~300 KiB

    async def small(_: web.Request) -> web.StreamResponse:
        return web.json_response(doc)

    async def sized(_: web.Request) -> web.StreamResponse:
        return web.json_response(big)

    async def chunked(request: web.Request) -> web.StreamResponse:
        resp = web.StreamResponse()
        resp.enable_chunked_encoding()
        await resp.prepare(request)
        for _ in range(300):
            await resp.write(b" " * 1024)  # no Content-Length to go by
        await resp.write(json.dumps(doc).encode())
        await resp.write_eof()
        return resp

    app = web.Application()
    app.router.add_get("/small", small)
    app.router.add_get("/sized", sized)
    app.router.add_get("/chunked", chunked)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    try:
        async with aiohttp.ClientSession() as session:
            url = f"http://127.0.0.1:{port}"
            assert await st.fetch_agent_status(session, url + "/small") == doc
            assert await st.fetch_agent_status(session, url + "/sized") is None
            assert await st.fetch_agent_status(session, url + "/chunked") is None
            got = await st.fetch_agent_status(session, url + "/chunked", max_bytes=1024 * 1024)
            assert got == doc
    finally:
        await runner.cleanup()


def test_agent_condition_reads_the_agents_own_readiness() -> None:
    dep = {"status": {"readyReplicas": 1}}
    healthy = {"ready_problems": [], "backlog": {"outbox_depth": 0}}
    assert st.agent_condition(dep, paused=False, agent_doc=healthy).status == "True"
    sick = {"ready_problems": ["source:cdr: source not connected", "api: 401 sk_0123456789abcdef"]}
    cond = st.agent_condition(dep, paused=False, agent_doc=sick)
    assert (cond.status, cond.reason) == ("False", "AgentProblems")
    assert "source:cdr: source not connected" in cond.message
    assert "0123456789abcdef" not in cond.message  # scrubbed
    # /status unreachable: the Deployment alone decides (no flapping on a network blip).
    assert st.agent_condition(dep, paused=False, agent_doc=None).status == "True"
