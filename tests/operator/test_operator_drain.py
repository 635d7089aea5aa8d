"""drain.decide: one look at a deleted connector's agent -> wait, or proceed and why."""

from __future__ import annotations

import pytest
from sipstack_operator import drain as dr
from sipstack_operator.spec import SpecError, parse_spec


def _decide(**kw: object) -> dr.DrainStep:
    args: dict[str, object] = {
        "timeout_seconds": 600,
        "elapsed_seconds": 10.0,
        "agent_running": True,
        "backlog": 5,
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
    unknown = _decide(backlog=None)
    assert not unknown.done and "an unknown number of document(s)" in unknown.message


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
