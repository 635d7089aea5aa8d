"""Calls active while the AMI CEL feed was down: flagged `gap`, completed from CDR rows."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from sipstack_agent.calls import evaluate
from sipstack_agent.calls.assemble import in_gaps
from sipstack_agent.config import CallSettings, Identity
from sipstack_agent.model import CdrRow, CelRow, ShipState

T0 = datetime(2026, 11, 24, 4, 39, 20, tzinfo=UTC)
LID = "1795495160.0"
SETTINGS = CallSettings(idle_timeout=30.0)
IDENTITY = Identity(connector_id="t", hostname="pbx")


def cel(kind: str, at: float, uid: str = LID, chan: str = "SIP/pstn-in-00000000") -> CelRow:
    return CelRow(
        eventtype=kind,
        eventtime=T0 + timedelta(seconds=at),
        uniqueid=uid,
        linkedid=LID,
        channame=chan,
        exten="101",
        context="from-pstn",
        cid_num="4085551234",
        source="ami",
    )


def cdr() -> CdrRow:
    return CdrRow(
        calldate=T0,
        uniqueid=LID,
        linkedid=LID,
        src="4085551234",
        dst="101",
        channel="SIP/pstn-in-00000000",
        dstchannel="SIP/101-00000001",
        duration=17,
        billsec=15,
        disposition="ANSWERED",
    )


# The call started, then the AMI connection dropped: its end events were never seen.
CELS = [
    cel("CHAN_START", 0),
    cel("CHAN_START", 0.1, uid="1795495160.1", chan="SIP/101-00000001"),
    cel("ANSWER", 2, uid="1795495160.1", chan="SIP/101-00000001"),
]
GAP = [(T0 + timedelta(seconds=5), T0 + timedelta(seconds=60))]


def run(cels, cdrs, gaps, now):
    return evaluate(
        cels,
        cdrs,
        [],
        ShipState(),
        call_key=LID,
        now=now,
        settings=SETTINGS,
        identity=IDENTITY,
        gaps=gaps,
    )


def test_in_gaps_overlap_rules() -> None:
    now = T0 + timedelta(hours=1)
    assert in_gaps(GAP, T0, T0 + timedelta(seconds=10), now)
    assert not in_gaps(GAP, T0, T0 + timedelta(seconds=4), now)
    assert not in_gaps(GAP, T0 + timedelta(seconds=61), T0 + timedelta(seconds=70), now)
    # An open gap (reconnect not yet happened) extends to now.
    assert in_gaps([(T0 + timedelta(seconds=5), None)], T0 + timedelta(minutes=30), now, now)


def test_gap_call_waits_for_its_cdr_rows() -> None:
    # Without CDR rows the gap call stays open even long after its last CEL row.
    ev = run(CELS, [], GAP, T0 + timedelta(minutes=10))
    assert not ev.call.is_complete
    assert ev.call.gap
    # Only a long-call `update` may go out, flagged; never a `complete`.
    assert all(d["ship_phase"] != "complete" and d["is_complete"] is False for d in ev.documents)
    assert all(d["gap"] is True for d in ev.documents)


def test_gap_call_completes_from_cdr_and_is_flagged() -> None:
    ev = run(CELS, [cdr()], GAP, T0 + timedelta(minutes=10))
    assert ev.call.is_complete
    assert ev.call.completion_reason == "gap_cdr_idle_timeout"
    (doc,) = ev.documents
    assert doc["gap"] is True
    assert doc["ship_phase"] == "complete"
    assert doc["disposition"] == "ANSWERED"
    assert doc["billsec"] == 15


def test_call_outside_any_gap_is_not_flagged() -> None:
    callee = {"uid": "1795495160.1", "chan": "SIP/101-00000001"}
    cels = [
        *CELS,
        cel("HANGUP", 3),
        cel("CHAN_END", 3),
        cel("HANGUP", 3, **callee),
        cel("CHAN_END", 3, **callee),
        cel("LINKEDID_END", 3.1),
    ]
    ev = run(cels, [cdr()], [(T0 + timedelta(hours=2), None)], T0 + timedelta(seconds=60))
    assert ev.call.is_complete
    assert not ev.call.gap
    assert "gap" not in ev.documents[0]
