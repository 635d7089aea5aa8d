"""drain.decide: one look at a deleted connector's agent -> wait, or proceed and why."""

from __future__ import annotations

from typing import Any

import pytest
from sipstack_operator import drain as dr
from sipstack_operator.spec import SpecError, parse_spec

from .operator_testlib import ROOT


def _decide(**kw: object) -> dr.DrainStep:
    args: dict[str, object] = {
        "timeout_seconds": 600,
        "elapsed_seconds": 10.0,
        "agent_running": True,
        "backlog": 5,
        "unread_seconds": 0.0,
        "claim": "pbx-east-state",
        "retained": True,
    }
    args.update(kw)
    return dr.decide(**args)  # type: ignore[arg-type]


def test_waits_while_documents_are_left() -> None:
    step = _decide()
    assert (step.phase, step.done, step.backlog) == ("Draining", False, 5)
    assert step.message == (
        "waiting for the agent to deliver its outbox: 5 document(s) left, "
        "deletion proceeds in at most 590 s"
    )
    unknown = _decide(backlog=None, unread_seconds=15.0)
    assert (unknown.phase, unknown.backlog) == ("Draining", None)
    assert unknown.message == (
        "waiting for the agent to deliver its outbox: an unknown number of document(s) left "
        "(no backlog read from its /status for 15 s), deletion proceeds in at most 45 s"
    )


def test_proceeds_when_drained_timed_out_or_nothing_can_drain() -> None:
    drained = _decide(backlog=0)
    assert (drained.phase, drained.done, drained.event_type) == ("Drained", True, "Normal")
    late = _decide(elapsed_seconds=600.0, backlog=3)
    assert (late.phase, late.done, late.event_reason, late.event_type) == (
        "TimedOut",
        True,
        "DrainTimedOut",
        "Warning",
    )
    assert late.message == (
        "3 document(s) still in the outbox after 600 s; "
        "what is left stays in PVC pbx-east-state (whenDeleted Retain)"
    )
    lost = _decide(elapsed_seconds=700.0, retained=False)
    assert "PVC pbx-east-state is deleted with the connector" in lost.message
    stopped = _decide(agent_running=False)
    assert (stopped.phase, stopped.event_reason) == ("Skipped", "DrainSkipped")
    assert "the agent is not running" in stopped.message
    assert _decide(timeout_seconds=0).phase == "Skipped"


def test_an_unreadable_status_ends_the_wait_after_the_grace() -> None:
    grace = dr.UNREADABLE_GRACE_SECONDS
    assert 0 < grace < 600  # shorter than the default timeout, or it would change nothing
    just_before = _decide(backlog=None, elapsed_seconds=100.0, unread_seconds=grace - 0.5)
    assert just_before.phase == "Draining"
    assert just_before.message.endswith("deletion proceeds in at most 0 s")
    gave_up = _decide(backlog=None, elapsed_seconds=100.0, unread_seconds=float(grace))
    assert (gave_up.phase, gave_up.done, gave_up.backlog) == ("TimedOut", True, None)
    assert (gave_up.event_reason, gave_up.event_type) == ("DrainUnreadable", "Warning")
    assert gave_up.message == (
        f"no backlog could be read from the agent's /status for {grace} s "
        f"(limit {grace} s) although its pod is ready: nothing shows it is draining, "
        "not waiting for the rest of the 600 s; an unknown number of document(s) may be left; "
        "what is left stays in PVC pbx-east-state (whenDeleted Retain)"
    )
    deleted = _decide(backlog=None, unread_seconds=grace + 30.0, retained=False)
    assert "PVC pbx-east-state is deleted with the connector" in deleted.message
    # A readable backlog keeps the whole timeout, whatever came before it.
    reading = _decide(backlog=5, elapsed_seconds=300.0, unread_seconds=grace * 3.0)
    assert reading.phase == "Draining"
    assert reading.message.endswith("5 document(s) left, deletion proceeds in at most 300 s")
    # The timeout stays the outer bound: it ends the wait first when it is shorter.
    short = _decide(timeout_seconds=20, backlog=None, elapsed_seconds=5.0, unread_seconds=5.0)
    assert short.message.endswith("deletion proceeds in at most 15 s")
    late = _decide(timeout_seconds=20, backlog=None, elapsed_seconds=20.0, unread_seconds=20.0)
    assert (late.phase, late.event_reason) == ("TimedOut", "DrainTimedOut")
    assert late.message.startswith("an unknown number of document(s) still in the outbox after 20")
    # Nothing running, or no drain asked: skipped before any grace counts.
    assert _decide(agent_running=False, backlog=None, unread_seconds=999.0).phase == "Skipped"
    assert _decide(timeout_seconds=0, backlog=None, unread_seconds=999.0).phase == "Skipped"


def test_the_crd_and_the_docs_state_the_grace(crd_schema: dict[str, Any]) -> None:
    drain = crd_schema["properties"]["status"]["properties"]["drain"]["properties"]
    assert f"for {dr.UNREADABLE_GRACE_SECONDS} s" in drain["lastReadAt"]["description"]
    assert drain["lastReadAt"]["format"] == "date-time"
    docs = (ROOT / "docs" / "operator.md").read_text()
    assert f"{dr.UNREADABLE_GRACE_SECONDS} s" in docs and "DrainUnreadable" in docs


def test_spec_fields_and_their_defaults() -> None:
    base = {
        "region": "us1",
        "apiKeySecretRef": {"name": "k"},
        "customerId": 1,
        "database": {"type": "mysql", "host": "h", "name": "n", "user": "u"},
    }
    spec = parse_spec("pbx", "ns", base)
    assert (spec.state.when_deleted, spec.state.retained) == ("Retain", True)
    assert spec.drain.timeout_seconds == 600
    spec = parse_spec(
        "pbx", "ns", {**base, "state": {"whenDeleted": "Delete"}, "drain": {"timeoutSeconds": 0}}
    )
    assert (spec.state.retained, spec.drain.timeout_seconds) == (False, 0)
    with pytest.raises(SpecError, match=r"spec.state.whenDeleted must be one of Retain, Delete"):
        parse_spec("pbx", "ns", {**base, "state": {"whenDeleted": "Keep"}})
    with pytest.raises(SpecError, match=r"spec.drain.timeoutSeconds must be at least 0"):
        parse_spec("pbx", "ns", {**base, "drain": {"timeoutSeconds": -1}})
