"""Hand-written CEL/CDR sequences for the cases the sample does not cover."""

from __future__ import annotations

import json
import os
from dataclasses import replace
from datetime import timedelta

import pytest
from sipstack_agent.calls import Evaluation, evaluate, group_linkedids
from sipstack_agent.config import CallSettings, DirectionSettings, TenantSettings, load_settings
from sipstack_agent.model import CdrRow, CelRow, RecordingFile, ShipState
from sipstack_agent.recordings.paths import mixmonitor_candidates

from .helpers import IDENTITY, SETTINGS, T0, Seq, sorted_by_time, validate

NO_LONG = replace(SETTINGS, long_call_update_interval=0)


def run(
    cels: list[CelRow],
    cdrs: list[CdrRow] | None = None,
    *,
    at: float,
    key: str,
    ship: ShipState | None = None,
    settings: CallSettings = SETTINGS,
    recordings: list[RecordingFile] | None = None,
) -> Evaluation:
    ev = evaluate(
        cels,
        cdrs or [],
        recordings or [],
        ship or ShipState(),
        call_key=key,
        now=T0 + timedelta(seconds=at),
        settings=settings,
        identity=IDENTITY,
    )
    for doc in ev.documents:
        validate(doc)
        assert sorted_by_time(doc["call_threads"])
    return ev


def simple_inbound(s: Seq, lid: str = "1700000000.1", *, linkedid_end: bool = True) -> None:
    """Trunk -> 101, answered after 3 s, 20 s talk."""
    ext_uid = lid.split(".")[0] + ".99"
    trunk = "SIP/carrier-00000001"
    ext = "PJSIP/101-00000002"
    kw = {"cid_num": "6135550100", "cid_name": "Caller", "context": "from-pstn"}
    s.cel(0, "CHAN_START", trunk, lid, lid, exten="6135550199", **kw)
    s.cel(0.1, "APP_START", trunk, lid, lid, appname="Dial", appdata="PJSIP/101,30", **kw)
    s.cel(0.2, "CHAN_START", ext, ext_uid, lid, cid_num="101", cid_name="Bob", context="internal")
    s.cel(3, "ANSWER", ext, ext_uid, lid, cid_num="101")
    s.cel(3.01, "ANSWER", trunk, lid, lid, **kw)
    s.cel(3.02, "BRIDGE_ENTER", ext, ext_uid, lid, extra='{"bridge_id":"b1"}')
    s.cel(3.03, "BRIDGE_ENTER", trunk, lid, lid, peer=ext, extra='{"bridge_id":"b1"}')
    s.cel(23, "BRIDGE_EXIT", trunk, lid, lid, peer=ext)
    s.cel(23.01, "BRIDGE_EXIT", ext, ext_uid, lid)
    s.cel(23.02, "HANGUP", ext, ext_uid, lid, extra='{"hangupcause":16,"dialstatus":""}')
    s.cel(23.02, "CHAN_END", ext, ext_uid, lid)
    s.cel(23.03, "HANGUP", trunk, lid, lid, extra='{"hangupcause":16,"dialstatus":"ANSWER"}')
    s.cel(23.03, "CHAN_END", trunk, lid, lid)
    if linkedid_end:
        s.cel(23.03, "LINKEDID_END", trunk, lid, lid)


def test_simple_inbound_sequence() -> None:
    s = Seq()
    simple_inbound(s)
    ev = run(s.rows, at=24, key="1700000000.1")
    doc = ev.documents[0]
    assert (doc["direction"], doc["disposition"], doc["ring_seconds"], doc["talk_seconds"]) == (
        "i",
        "ANSWERED",
        3,
        20,
    )
    assert doc["dnid"] == "6135550199" and doc["dst_number"] == "+16135550199"
    assert "billsec" not in doc  # no CDR row: unknown, omitted rather than null


# --------------------------------------------------------------------------- pickup


def pickup_rows() -> Seq:
    """Trunk rings 101; 102 dials *8 (own linkedid L2), picks up, joins L1."""
    s = Seq()
    l1, l2 = "1700000009.9", "1700000009.10"  # numerically .9 < .10 (as strings '.10' < '.9')
    trunk, r101, p102 = "SIP/carrier-0000000a", "SIP/101-0000000b", "SIP/102-0000000c"
    s.cel(
        0,
        "CHAN_START",
        trunk,
        l1,
        l1,
        cid_num="6135550100",
        exten="6135550199",
        context="from-pstn",
    )
    s.cel(0.1, "APP_START", trunk, l1, l1, appname="Dial", appdata="SIP/101")
    s.cel(0.2, "CHAN_START", r101, "1700000009.11", l1, cid_num="101")
    s.cel(4, "CHAN_START", p102, l2, l2, cid_num="102", exten="*8", context="internal")
    s.cel(4.1, "ANSWER", p102, l2, l2, cid_num="102")
    s.cel(4.2, "APP_START", p102, l2, l2, appname="Pickup", appdata="")
    s.cel(4.3, "LINKEDID_END", p102, l2, l2)
    s.cel(4.3, "PICKUP", p102, l2, l1, extra='{"pickup_channel":"SIP/101-0000000b"}')
    s.cel(4.4, "HANGUP", r101, "1700000009.11", l1, extra='{"hangupcause":26}')
    s.cel(4.4, "CHAN_END", r101, "1700000009.11", l1)
    s.cel(4.5, "BRIDGE_ENTER", p102, l2, l1)
    s.cel(4.6, "BRIDGE_ENTER", trunk, l1, l1, peer=p102)
    s.cel(30, "BRIDGE_EXIT", trunk, l1, l1, peer=p102)
    s.cel(30, "BRIDGE_EXIT", p102, l2, l1)
    s.cel(30.1, "HANGUP", p102, l2, l1, extra='{"hangupcause":16}')
    s.cel(30.1, "CHAN_END", p102, l2, l1)
    s.cel(30.2, "HANGUP", trunk, l1, l1, extra='{"hangupcause":16,"dialstatus":"ANSWER"}')
    s.cel(30.2, "CHAN_END", trunk, l1, l1)
    s.cel(30.2, "LINKEDID_END", trunk, l1, l1)
    return s


def test_pickup_is_one_call_keyed_by_smallest_linkedid() -> None:
    s = pickup_rows()
    assert group_linkedids(s.rows) == [frozenset({"1700000009.9", "1700000009.10"})]
    ev = run(s.rows, at=31, key="1700000009.9")
    assert ev.call.is_complete and ev.call.completion_reason == "linkedid_end"
    doc = ev.documents[0]
    assert doc["linkedid"] == "1700000009.9"
    assert doc["linkedids"] == ["1700000009.9", "1700000009.10"]
    assert doc["direction"] == "i" and doc["answered"] is True
    assert ev.call.derived.answered_by == ("102",)
    assert doc["dst_extension"] == "102"
    assert any(i["event"] == "PICKUP" for i in doc["call_threads"])


def test_pickup_own_linkedid_alone_does_not_complete() -> None:
    """Before the picker joins, its own linkedid has LINKEDID_END but a live channel."""
    s = pickup_rows()
    own = [r for r in s.rows if r.linkedid == "1700000009.10"]
    ev = run(own, at=4.5, key="1700000009.10")
    assert not ev.call.is_complete and ev.documents == []
    assert ev.next_check_at is not None and ev.next_check_at > T0 + timedelta(seconds=4.5)
    assert not ev.closed


# --------------------------------------------------------------------------- attended transfer


def attended_transfer_rows() -> Seq:
    """Inbound to 101 through Local/ channels; 101 consults 104 (new linkedid) and transfers."""
    s = Seq()
    l1, l5 = "1700000100.1", "1700000100.5"
    trunk = "SIP/carrier-00000011"
    la1, la2 = "Local/101@from-internal-00000001;1", "Local/101@from-internal-00000001;2"
    b101, c101 = "SIP/101-00000012", "SIP/101-00000013"
    lb1, lb2 = "Local/104@from-internal-00000002;1", "Local/104@from-internal-00000002;2"
    e104 = "SIP/104-00000014"
    s.cel(
        0,
        "CHAN_START",
        trunk,
        l1,
        l1,
        cid_num="+442071234567",
        exten="6135550199",
        context="from-trunk",
    )
    s.cel(0.1, "CHAN_START", la1, "1700000100.2", l1)
    s.cel(0.1, "CHAN_START", la2, "1700000100.3", l1)
    s.cel(0.2, "CHAN_START", b101, "1700000100.4", l1, cid_num="101", cid_name="Bob")
    s.cel(2, "ANSWER", b101, "1700000100.4", l1)
    s.cel(2, "ANSWER", la2, "1700000100.3", l1)
    s.cel(2, "ANSWER", la1, "1700000100.2", l1)
    s.cel(2.1, "ANSWER", trunk, l1, l1)
    s.cel(2.2, "BRIDGE_ENTER", trunk, l1, l1, peer=la1)
    s.cel(2.3, "LOCAL_OPTIMIZE", la1, "1700000100.2", l1)
    # 101 consults 104 on a second channel with its own linkedid.
    s.cel(10, "CHAN_START", c101, l5, l5, cid_num="101", exten="104", context="from-internal")
    s.cel(10.1, "CHAN_START", lb1, "1700000100.6", l5)
    s.cel(10.1, "CHAN_START", lb2, "1700000100.7", l5)
    s.cel(10.2, "CHAN_START", e104, "1700000100.8", l5, cid_num="104", cid_name="Erin")
    s.cel(14, "ANSWER", e104, "1700000100.8", l5)
    s.cel(14.1, "ANSWER", lb1, "1700000100.6", l5)
    extra = {
        "bridge1_id": "b1",
        "channel2_name": c101,
        "channel2_uniqueid": l5,
        "bridge2_id": "b2",
        "transferee_channel_name": trunk,
        "transferee_channel_uniqueid": l1,
        "transfer_target_channel_name": e104,
        "transfer_target_channel_uniqueid": "1700000100.8",
    }
    s.cel(20, "ATTENDEDTRANSFER", b101, "1700000100.4", l1, extra=json.dumps(extra))
    for uid, chan, lid in (
        ("1700000100.4", b101, l1),
        ("1700000100.2", la1, l1),
        ("1700000100.3", la2, l1),
        (l5, c101, l5),
        ("1700000100.6", lb1, l5),
        ("1700000100.7", lb2, l5),
    ):
        s.cel(20.1, "HANGUP", chan, uid, lid)
        s.cel(20.1, "CHAN_END", chan, uid, lid)
    # 104 is now bridged with the caller: its linkedid becomes the caller's.
    s.cel(20.2, "BRIDGE_ENTER", e104, "1700000100.8", l1, peer=trunk)
    s.cel(20.2, "LINKEDID_END", c101, l5, l5)
    s.cel(50, "HANGUP", e104, "1700000100.8", l1)
    s.cel(50, "CHAN_END", e104, "1700000100.8", l1)
    s.cel(50.1, "HANGUP", trunk, l1, l1, extra='{"hangupcause":16,"dialstatus":"ANSWER"}')
    s.cel(50.1, "CHAN_END", trunk, l1, l1)
    s.cel(50.1, "LINKEDID_END", trunk, l1, l1)
    return s


def test_attended_transfer_with_local_channels() -> None:
    s = attended_transfer_rows()
    assert group_linkedids(s.rows) == [frozenset({"1700000100.1", "1700000100.5"})]
    ev = run(s.rows, at=60, key="1700000100.1")
    call, doc = ev.call, ev.documents[0]
    assert call.is_complete
    assert [(t["type"], t["from"], t["to"]) for t in doc["transfers"]] == [
        ("attended", "101", "104")
    ]
    # Local/ channels are never parties: the answering parties are 101 then 104.
    assert call.derived.answered_by == ("101", "104")
    assert {c.kind for c in call.channels if c.name.startswith("Local/")} == {"local"}
    assert doc["direction"] == "i" and doc["src_number"] == "+442071234567"
    assert doc["dst_extension"] == "101" and doc["dst_name"] == "Bob"
    assert "LOCAL_OPTIMIZE" not in {i["event"] for i in doc["call_threads"]}
    assert doc["talk_seconds"] == 48 and doc["ring_seconds"] == 2


# --------------------------------------------------------------------------- queue


def queue_rows(answered: bool) -> Seq:
    s = Seq()
    lid = "1700000200.1"
    trunk = "SIP/carrier-00000021"
    s.cel(
        0,
        "CHAN_START",
        trunk,
        lid,
        lid,
        cid_num="6135550100",
        exten="6135550123",
        context="from-pstn",
    )
    s.cel(0.1, "ANSWER", trunk, lid, lid)  # Queue() answers the caller first
    s.cel(0.2, "APP_START", trunk, lid, lid, appname="Queue", appdata="sales,t,,,300")
    s.cel(0.3, "CHAN_START", "Local/101@from-queue-00000001;1", "1700000200.2", lid)
    s.cel(0.3, "CHAN_START", "Local/101@from-queue-00000001;2", "1700000200.3", lid)
    s.cel(
        0.4, "CHAN_START", "PJSIP/101-00000022", "1700000200.4", lid, cid_num="101", cid_name="Bob"
    )
    end = 40.0
    if answered:
        s.cel(12.2, "ANSWER", "PJSIP/101-00000022", "1700000200.4", lid)
        s.cel(12.2, "ANSWER", "Local/101@from-queue-00000001;1", "1700000200.2", lid)
        s.cel(12.3, "BRIDGE_ENTER", trunk, lid, lid, peer="Local/101@from-queue-00000001;1")
    for uid, chan in (
        ("1700000200.4", "PJSIP/101-00000022"),
        ("1700000200.3", "Local/101@from-queue-00000001;2"),
        ("1700000200.2", "Local/101@from-queue-00000001;1"),
    ):
        s.cel(end, "HANGUP", chan, uid, lid)
        s.cel(end, "CHAN_END", chan, uid, lid)
    s.cel(end + 0.1, "APP_END", trunk, lid, lid, appname="Queue", appdata="sales,t,,,300")
    s.cel(end + 0.2, "HANGUP", trunk, lid, lid, extra='{"hangupcause":16,"dialstatus":""}')
    s.cel(end + 0.2, "CHAN_END", trunk, lid, lid)
    s.cel(end + 0.2, "LINKEDID_END", trunk, lid, lid)
    return s


def test_queue_answered() -> None:
    doc = run(queue_rows(True).rows, at=50, key="1700000200.1").documents[0]
    assert doc["queue"] == {"name": "sales", "wait_seconds": 12, "answered_by": "101"}
    assert doc["answered"] is True and doc["disposition"] == "ANSWERED"
    assert doc["ring_seconds"] == 12 and doc["dst_extension"] == "101"
    apps = [i.get("app") for i in doc["call_threads"] if i["event"] == "APP_START"]
    assert apps == ["Queue"]


def test_queue_abandoned() -> None:
    doc = run(queue_rows(False).rows, at=50, key="1700000200.1").documents[0]
    assert doc["queue"] == {"name": "sales", "wait_seconds": 40}
    # The caller was answered by Queue() itself, which is not an answer by a party.
    assert doc["answered"] is False and doc["disposition"] == "NO ANSWER"


# --------------------------------------------------------------------------- completion


def test_missing_linkedid_end_completes_after_idle_timeout() -> None:
    s = Seq()
    simple_inbound(s, linkedid_end=False)
    ev = run(s.rows, at=30, key="1700000000.1", settings=NO_LONG)
    assert not ev.call.is_complete and ev.documents == []
    assert ev.next_check_at == T0 + timedelta(seconds=23.03 + 30)
    ev2 = run(s.rows, at=53.1, key="1700000000.1", ship=ev.ship, settings=NO_LONG)
    assert ev2.call.is_complete and ev2.call.completion_reason == "idle_timeout"
    assert [d["ship_phase"] for d in ev2.documents] == ["complete"]
    assert ev2.documents[0]["end_time"] == (T0 + timedelta(seconds=23.03)).isoformat()
    assert ev2.closed and ev2.next_check_at is None


def test_running_call_does_not_idle_complete() -> None:
    s = Seq()
    simple_inbound(s)
    live = [r for r in s.rows if r.eventtime < T0 + timedelta(seconds=10)]
    ev = run(live, at=100, key="1700000000.1", settings=NO_LONG)
    assert not ev.call.is_complete and ev.call.idle_deadline is None
    # Only max age can force it now.
    assert ev.next_check_at == ev.call.max_age_deadline


def crash_rows() -> Seq:
    s = Seq()
    lid = "1700000300.1"
    s.cel(0, "CHAN_START", "SIP/carrier-00000031", lid, lid, cid_num="6135550100")
    s.cel(0.2, "CHAN_START", "SIP/101-00000032", "1700000300.2", lid, cid_num="101")
    s.cel(2, "ANSWER", "SIP/101-00000032", "1700000300.2", lid)
    s.cel(2, "ANSWER", "SIP/carrier-00000031", lid, lid)
    s.cel(2.1, "BRIDGE_ENTER", "SIP/carrier-00000031", lid, lid, peer="SIP/101-00000032")
    return s


def test_crash_without_end_events_is_force_completed_at_max_age() -> None:
    s = crash_rows()
    settings = replace(NO_LONG, max_age=3600)
    ev = run(s.rows, at=1800, key="1700000300.1", settings=settings)
    assert not ev.call.is_complete and ev.documents == []
    assert ev.next_check_at == T0 + timedelta(seconds=2.1 + 3600)
    ev2 = run(s.rows, at=3603, key="1700000300.1", ship=ev.ship, settings=settings)
    assert ev2.call.is_complete and ev2.call.forced
    doc = ev2.documents[0]
    assert doc["completion_reason"] == "max_age" and doc["force_completed"] is True
    assert doc["is_complete"] is True and doc["answered"] is True
    assert doc["end_time"] == (T0 + timedelta(seconds=2.1)).isoformat()


def test_long_call_updates_in_complete_mode() -> None:
    s = crash_rows()  # a call that is still talking (no end yet)
    settings = replace(SETTINGS, long_call_update_interval=600)
    ev = run(s.rows, at=300, key="1700000300.1", settings=settings)
    assert ev.documents == [] and ev.next_check_at == T0 + timedelta(seconds=600)
    ev = run(s.rows, at=600, key="1700000300.1", ship=ev.ship, settings=settings)
    assert [(d["ship_phase"], d["revision"], d["is_complete"]) for d in ev.documents] == [
        ("update", 1, False)
    ]
    assert ev.next_check_at == T0 + timedelta(seconds=1200)
    # Nothing new by the next interval: no document (unchanged content).
    ev = run(s.rows, at=1200, key="1700000300.1", ship=ev.ship, settings=settings)
    assert ev.documents == []
    s.cel(1250, "BRIDGE_EXIT", "SIP/carrier-00000031", "1700000300.1", "1700000300.1")
    ev = run(s.rows, at=1800, key="1700000300.1", ship=ev.ship, settings=settings)
    assert [(d["ship_phase"], d["revision"]) for d in ev.documents] == [("update", 2)]


def test_late_cdr_gives_new_complete_revision() -> None:
    s = Seq()
    simple_inbound(s)
    key = "1700000000.1"
    ev1 = run(s.rows, at=24, key=key)
    assert [(d["ship_phase"], d["revision"]) for d in ev1.documents] == [("complete", 1)]
    same = run(s.rows, at=60, key=key, ship=ev1.ship)
    assert same.documents == [] and same.closed
    s.cdr(
        0,
        key,
        key,
        src="6135550100",
        dst="6135550199",
        channel="SIP/carrier-00000001",
        dstchannel="PJSIP/101-00000002",
        duration=23,
        billsec=20,
        disposition="ANSWERED",
    )
    ev2 = run(s.rows, s.cdrs, at=320, key=key, ship=same.ship)
    assert [(d["ship_phase"], d["revision"]) for d in ev2.documents] == [("complete", 2)]
    assert ev2.documents[0]["billsec"] == 20
    assert ev2.ship.revision == 2 and ev2.closed


def test_late_row_after_idle_completion_stays_complete() -> None:
    s = Seq()
    simple_inbound(s, linkedid_end=False)
    key = "1700000000.1"
    ev1 = run(s.rows, at=100, key=key)
    assert ev1.call.completion_reason == "idle_timeout"
    # A straggler of a new channel arrives: the call stays complete, one more revision.
    s.cel(101, "CHAN_START", "SIP/105-00000009", "1700000000.50", key)
    ev2 = run(s.rows, at=102, key=key, ship=ev1.ship)
    assert [(d["ship_phase"], d["revision"], d["is_complete"]) for d in ev2.documents] == [
        ("complete", 2, True)
    ]
    assert ev2.documents[0]["completion_reason"] == "idle_timeout"


def test_empty_linkedid_falls_back_to_uniqueid() -> None:
    s = Seq()
    uid = "1700000400.1"
    s.cel(0, "CHAN_START", "SIP/100-00000041", uid, "", cid_num="100", exten="101")
    s.cel(5, "HANGUP", "SIP/100-00000041", uid, "")
    s.cel(5, "CHAN_END", "SIP/100-00000041", uid, "")
    s.cel(5, "LINKEDID_END", "SIP/100-00000041", uid, "")
    assert group_linkedids(s.rows) == [frozenset({uid})]
    ev = run(s.rows, at=6, key=uid)
    assert ev.call.is_complete and ev.documents[0]["linkedid"] == uid
    assert ev.documents[0]["linkedids"] == [uid]
    assert ev.documents[0]["disposition"] == "NO ANSWER"


def test_cdr_only_mode() -> None:
    s = Seq()
    key = "1700000500.1"
    s.cdr(
        0,
        key,
        key,
        clid='"Caller" <6135550100>',
        src="6135550100",
        dst="6135550199",
        dcontext="from-pstn",
        channel="SIP/carrier-00000051",
        dstchannel="SIP/101-00000052",
        lastapp="Dial",
        duration=25,
        billsec=20,
        disposition="ANSWERED",
    )
    settings = replace(SETTINGS, cdr_only=True)
    ev = run([], s.cdrs, at=30, key=key, settings=settings)
    assert not ev.call.is_complete
    assert ev.next_check_at == T0 + timedelta(seconds=55)
    ev2 = run([], s.cdrs, at=56, key=key, ship=ev.ship, settings=settings)
    assert ev2.call.is_complete and ev2.call.completion_reason == "cdr_idle_timeout"
    doc = ev2.documents[0]
    assert (doc["direction"], doc["disposition"], doc["billsec"]) == ("i", "ANSWERED", 20)
    assert (doc["ring_seconds"], doc["talk_seconds"], doc["src_name"]) == (5, 20, "Caller")
    assert doc["dst_extension"] == "101" and doc["duration_seconds"] == 25
    assert doc["call_threads_count"] == 1 and doc["call_threads"][0]["event"] == "CDR"


def test_pbx_clock_ahead_does_not_hold_calls_back() -> None:
    """Event times 5 h in the future (wrong DB_TIMEZONE): idle counts from arrival."""
    s = Seq(t0=T0 + timedelta(hours=5))
    simple_inbound(s, linkedid_end=False)
    ev = run(s.rows, at=0, key="1700000000.1", settings=NO_LONG)
    assert not ev.call.is_complete and ev.next_check_at == T0 + timedelta(seconds=30)
    ev2 = run(s.rows, at=31, key="1700000000.1", ship=ev.ship, settings=NO_LONG)
    assert ev2.call.is_complete and len(ev2.documents) == 1


def test_outbound_call_strips_dial_prefix() -> None:
    s = Seq()
    lid = "1700000600.1"
    s.cel(
        0,
        "CHAN_START",
        "PJSIP/100-00000061",
        lid,
        lid,
        cid_num="100",
        cid_name="Alice",
        exten="96135550123",
        context="from-internal",
    )
    s.cel(0.1, "CHAN_START", "PJSIP/pstn-out-00000062", "1700000600.2", lid)
    s.cel(4, "ANSWER", "PJSIP/pstn-out-00000062", "1700000600.2", lid)
    s.cel(9, "HANGUP", "PJSIP/pstn-out-00000062", "1700000600.2", lid)
    s.cel(9, "CHAN_END", "PJSIP/pstn-out-00000062", "1700000600.2", lid)
    s.cel(9.1, "HANGUP", "PJSIP/100-00000061", lid, lid)
    s.cel(9.1, "CHAN_END", "PJSIP/100-00000061", lid, lid)
    s.cel(9.1, "LINKEDID_END", "PJSIP/100-00000061", lid, lid)
    settings = replace(
        SETTINGS,
        direction=DirectionSettings(default_country_code="1", strip_dial_prefixes=("9",)),
    )
    doc = run(s.rows, at=10, key=lid, settings=settings).documents[0]
    assert doc["direction"] == "o", doc["direction_reason"]
    assert doc["dst_number"] == "+16135550123"
    assert doc["src_extension"] == "100" and doc["src_extension_name"] == "Alice"
    assert "dst_extension" not in doc


def test_progressive_phases() -> None:
    s = Seq()
    simple_inbound(s)
    rows = s.rows
    key = "1700000000.1"
    settings = replace(SETTINGS, shipping_mode="progressive", ship_update_min_interval=30)
    ev = run(rows[:2], at=0.5, key=key, settings=settings)
    assert [(d["ship_phase"], d["revision"]) for d in ev.documents] == [("initial", 1)]
    assert not ev.closed
    # New rows within the minimum interval: held back, re-check when it expires.
    ev = run(rows[:6], at=5, key=key, ship=ev.ship, settings=settings)
    assert ev.documents == []
    assert ev.next_check_at == T0 + timedelta(seconds=30.5)
    ev = run(rows[:6], at=30.5, key=key, ship=ev.ship, settings=settings)
    assert [(d["ship_phase"], d["revision"]) for d in ev.documents] == [("update", 2)]
    # Unchanged content: nothing.
    ev = run(rows[:6], at=70, key=key, ship=ev.ship, settings=settings)
    assert ev.documents == []
    ev = run(rows, at=71, key=key, ship=ev.ship, settings=settings)
    assert [(d["ship_phase"], d["revision"], d["is_complete"]) for d in ev.documents] == [
        ("complete", 3, True)
    ]
    assert ev.closed and ev.next_check_at is None
    ev = run(rows, at=90, key=key, ship=ev.ship, settings=settings)
    assert ev.documents == [] and ev.ship.revision == 3


def test_recordings_from_store_win_over_cel_names() -> None:
    s = Seq()
    simple_inbound(s)
    lid = "1700000000.1"
    s.cel(
        3.5,
        "APP_START",
        "SIP/carrier-00000001",
        lid,
        lid,
        appname="MixMonitor",
        appdata="2026/11/24/rec-1700000000.1,b",
    )
    found = RecordingFile(
        filename="rec-1700000000.1.wav",
        file_path="/var/spool/asterisk/monitor/2026/11/24/rec-1700000000.1.wav",
        source="filesystem",
        file_size=48044,
        uploaded=True,
    )
    doc = run(s.rows, at=30, key=lid, recordings=[found]).documents[0]
    assert doc["recording_files"] == [found.as_document()]
    only_cel = run(s.rows, at=30, key=lid).documents[0]["recording_files"]
    assert only_cel[0]["file_path"] == "/var/spool/asterisk/monitor/2026/11/24/rec-1700000000.1"
    assert only_cel[0]["source"] == "cel_mixmonitor"


def test_odd_text_and_null_like_fields() -> None:
    s = Seq()
    lid = "weird-id"
    s.cel(0, "CHAN_START", "", "u1", lid, cid_name="Jos\udce9", cid_num="", exten="s")
    s.cel(1, "IVR_CHOICE", "", "u1", lid, userdeftype="IVR_CHOICE", extra="{not json")
    s.cel(2, "hangup", "", "u1", lid, extra='{"hangupcause": "NaN"}')
    s.cel(2, "ANSWER", "???", "u2", lid, extra="[1,2]")
    s.cel(2.5, "BRIDGE_ENTER", "SIP/x", "u2", lid, extra='{"a": NaN}')
    s.cel(3, "CHAN_END", "", "u1", lid)
    ev = run(s.rows, at=1000, key=lid)
    doc = ev.documents[0]
    text = json.dumps(doc, allow_nan=False)  # strict JSON, encodable
    text.encode("utf-8")
    events = [i["event"] for i in doc["call_threads"]]
    assert "IVR_CHOICE" not in events and "HANGUP" in events
    by_event = {i["event"]: i for i in doc["call_threads"]}
    assert "extra" not in by_event["ANSWER"]  # a JSON array is not an extra object
    assert by_event["HANGUP"]["extra"] == {"hangupcause": "NaN"}
    assert by_event["BRIDGE_ENTER"]["extra"] == {"a": "nan"}  # NaN is not strict JSON
    assert "hangup_cause" not in doc
    assert doc["linkedid"] == "weird-id"
    assert doc["src_name"] == "Jos\ufffd"


def test_freepbx_cdr_recordingfile_and_did_tenant() -> None:
    s = Seq()
    key = "1700000700.1"
    s.cdr(
        0,
        key,
        key,
        clid='"Caller" <6135550100>',
        src="6135550100",
        dst="6135550199",
        channel="PJSIP/carrier-00000071",
        dstchannel="PJSIP/101-00000072",
        duration=30,
        billsec=25,
        disposition="ANSWERED",
        accountcode="ac9",
        extras=(("recordingfile", "in-6135550199-6135550100-20261124-120000-1700000700.1.wav"),),
    )
    tenants = TenantSettings(did_map=(("+16135550199", "acme"),), accountcode_map=(("ac9", "b"),))
    settings = replace(SETTINGS, cdr_only=True, tenants=tenants, timezone="America/Toronto")
    doc = run([], s.cdrs, at=100, key=key, settings=settings).documents[0]
    assert doc["tenant"] == "acme"  # the DID map wins over the accountcode map
    assert doc["timezone"] == "America/Toronto"
    assert doc["recording_files"][0]["source"] == "database"
    assert doc["recording_files"][0]["file_path"] == (
        # FreePBX's layout: monitor/YYYY/MM/DD/ of the PBX-local date
        "/var/spool/asterisk/monitor/2026/11/24/"
        "in-6135550199-6135550100-20261124-120000-1700000700.1.wav"
    )
    by_code = replace(settings, tenants=TenantSettings(accountcode_map=(("ac9", "globex"),)))
    assert run([], s.cdrs, at=100, key=key, settings=by_code).documents[0]["tenant"] == "globex"


@pytest.mark.parametrize(
    "appdata",
    [
        '"q-1700000000.1.wav",b',  # quoted relative name: quotes are dialplan syntax
        "q-1700000000.1.wav,b",
        '"/srv/rec/q-1700000000.1.wav"',
    ],
)
def test_document_names_the_file_the_uploader_looks_for(appdata: str) -> None:
    loaded = load_settings(
        {"API_KEY": "sk_" + "k" * 32, "DB_TYPE": "postgresql", "DB_NAME": "a",
         "RECORDING_PATHS": "/srv/rec,/other"}
    )  # fmt: skip
    settings = replace(SETTINGS, monitor_dir=loaded.calls.monitor_dir)  # as config computed
    s = Seq()
    simple_inbound(s)
    lid = "1700000000.1"
    s.cel(3.5, "APP_START", "SIP/c-1", lid, lid, appname="MixMonitor", appdata=appdata)
    uploaded = mixmonitor_candidates(
        appdata, loaded.recordings.paths, loaded.recordings.extensions
    )[0]
    assert uploaded == "/srv/rec/q-1700000000.1.wav"
    (named,) = run(s.rows, at=30, key=lid, settings=settings).documents[0]["recording_files"]
    assert named["file_path"] == uploaded
    found = RecordingFile(
        filename=os.path.basename(uploaded),
        file_path=uploaded,
        source="cel_mixmonitor",
        file_size=48044,
        uploaded=True,
    )
    doc = run(s.rows, at=30, key=lid, settings=settings, recordings=[found]).documents[0]
    assert doc["recording_files"] == [found.as_document()]  # one file, not two names for it
