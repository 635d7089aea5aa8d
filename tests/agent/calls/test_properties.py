"""Property tests: any CEL/CDR sequence -> no crash, documents satisfy the contract."""

from __future__ import annotations

import itertools
import json
from dataclasses import replace
from datetime import timedelta

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sipstack_agent.calls import evaluate, group_linkedids, smallest_linkedid
from sipstack_agent.config import CallSettings
from sipstack_agent.model import CdrRow, CelRow, ShipState

from .helpers import IDENTITY, SETTINGS, T0, sorted_by_time, validate

EVENT_TYPES = [
    "CHAN_START",
    "CHAN_END",
    "ANSWER",
    "HANGUP",
    "BRIDGE_ENTER",
    "BRIDGE_EXIT",
    "APP_START",
    "APP_END",
    "LINKEDID_END",
    "BLINDTRANSFER",
    "ATTENDEDTRANSFER",
    "PICKUP",
    "FORWARD",
    "PARK_START",
    "PARK_END",
    "LOCAL_OPTIMIZE",
    "DTMF",
    "IVR_CHOICE",
    "USER_DEFINED",
    "",
]
CHANNELS = [
    "SIP/pstn-in-00000001",
    "SIP/101-00000002",
    "PJSIP/102-00000003",
    "PJSIP/carrier-0000000a",
    "Local/104@from-internal-00000001;1",
    "Local/104@from-internal-00000001;2",
    "DAHDI/1-1",
    "IAX2/peer-12",
    "",
    "garbage",
    "SIP/",
]
IDS = ["1700000000.1", "1700000000.2", "1700000000.10", "1700000001.0", "x", ""]
APPS = ["Dial", "Queue", "MixMonitor", "VoiceMail", "Playback", ""]
EXTRAS = [
    "",
    "{not json",
    '{"hangupcause":16,"dialstatus":"ANSWER"}',
    '{"hangupcause":"x","dialstatus":7}',
    '{"extension":"104","context":"internal","transferee_channel_name":"SIP/101-00000002"}',
    '{"transfer_target_channel_name":"Local/104@x-0001;1","channel2_name":"SIP/1"}',
    '{"digit":"5"}',
    "[1,2,3]",
    '{"a": NaN}',
]
texts = st.text(max_size=12) | st.sampled_from(["", "101", "4165550100", "s", "+442071234567"])

cel_rows = st.builds(
    CelRow,
    eventtype=st.sampled_from(EVENT_TYPES) | st.text(max_size=8),
    eventtime=st.integers(min_value=-5, max_value=4000).map(lambda s: T0 + timedelta(seconds=s)),
    uniqueid=st.sampled_from(IDS),
    linkedid=st.sampled_from(IDS),
    channame=st.sampled_from(CHANNELS) | st.text(max_size=10),
    cid_name=texts,
    cid_num=texts,
    cid_dnid=texts,
    exten=texts,
    context=st.sampled_from(["from-pstn", "internal", "from-internal", ""]) | st.text(max_size=6),
    appname=st.sampled_from(APPS),
    appdata=texts,
    accountcode=texts,
    peer=st.sampled_from(CHANNELS),
    extra=st.sampled_from(EXTRAS) | st.text(max_size=10),
    row_id=st.none() | st.integers(min_value=1, max_value=10_000),
)
cdr_rows = st.builds(
    CdrRow,
    calldate=st.integers(min_value=-5, max_value=4000).map(lambda s: T0 + timedelta(seconds=s)),
    uniqueid=st.sampled_from(IDS),
    linkedid=st.sampled_from(IDS),
    clid=texts,
    src=texts,
    dst=texts,
    channel=st.sampled_from(CHANNELS),
    dstchannel=st.sampled_from(CHANNELS),
    duration=st.integers(min_value=-1, max_value=5000),
    billsec=st.integers(min_value=-1, max_value=5000),
    disposition=st.sampled_from(["ANSWERED", "NO ANSWER", "BUSY", "FAILED", "CONGESTION", "", "?"]),
    row_id=st.none() | st.integers(min_value=1, max_value=10_000),
)
modes = st.sampled_from(
    [
        SETTINGS,
        replace(SETTINGS, shipping_mode="progressive", ship_update_min_interval=10),
        replace(SETTINGS, long_call_update_interval=120, max_age=1800),
        replace(SETTINGS, cdr_only=True),
        replace(SETTINGS, long_call_update_interval=0, idle_timeout=0),
    ]
)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    cels=st.lists(cel_rows, max_size=40),
    cdrs=st.lists(cdr_rows, max_size=4),
    steps=st.lists(st.integers(min_value=0, max_value=3000), min_size=1, max_size=6),
    call_settings=modes,
)
def test_any_rows_give_valid_documents(
    cels: list[CelRow], cdrs: list[CdrRow], steps: list[int], call_settings: CallSettings
) -> None:
    rows: list[CelRow | CdrRow] = [*cels, *cdrs]
    groups = group_linkedids(rows)
    grouped: set[str] = set().union(*groups) if groups else set()
    assert all(r.call_linkedid in grouped for r in rows if r.call_linkedid)
    for group in groups:
        key = smallest_linkedid(group)
        my_cels = [c for c in cels if c.call_linkedid in group]
        my_cdrs = [c for c in cdrs if c.call_linkedid in group]
        ship = ShipState()
        revisions: list[int] = []
        now = T0
        # Rows arrive over time: each step reveals a longer prefix of the rows.
        for i, step in enumerate(steps):
            now = now + timedelta(seconds=step)
            n = len(my_cels) * (i + 1) // len(steps)
            ev = evaluate(
                my_cels[:n],
                my_cdrs,
                [],
                ship,
                call_key=key,
                now=now,
                settings=call_settings,
                identity=IDENTITY,
            )
            for doc in ev.documents:
                validate(doc)
                json.dumps(doc, allow_nan=False).encode("utf-8")
                assert sorted_by_time(doc["call_threads"])
                assert doc["call_threads_count"] == len(doc["call_threads"])
                assert doc["linkedid"] == key
                revisions.append(doc["revision"])
            assert ev.ship.revision == (revisions[-1] if revisions else 0)
            if ev.next_check_at is not None:
                assert ev.next_check_at > now
            assert ev.closed == ev.call.is_complete
            if ev.closed:
                assert ev.next_check_at is None
                assert ev.ship.last_phase == "complete"
            ship = ev.ship
        assert revisions == list(range(1, len(revisions) + 1))
        assert all(a < b for a, b in itertools.pairwise(revisions))


@settings(max_examples=150, deadline=None)
@given(cels=st.lists(cel_rows, min_size=1, max_size=30), seed=st.randoms())
def test_row_order_does_not_change_the_call(cels: list[CelRow], seed: object) -> None:
    """The store may hand rows in any order: the document is the same."""
    ids = itertools.count(1)
    cels = [
        replace(c, row_id=next(ids), linkedid="1.1", uniqueid=c.uniqueid or "1.1") for c in cels
    ]
    shuffled = list(cels)
    seed.shuffle(shuffled)  # type: ignore[attr-defined]
    now = T0 + timedelta(hours=10)
    docs = [
        evaluate(
            rows, [], [], ShipState(), call_key="1.1", now=now, settings=SETTINGS, identity=IDENTITY
        ).documents
        for rows in (cels, shuffled)
    ]
    assert docs[0] == docs[1]
    assert len(docs[0]) == 1 and docs[0][0]["is_complete"] is True  # 10 h later: complete
