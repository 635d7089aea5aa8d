"""FreePBX's id-less CDR table: ended calls wait (bounded) for their CDR rows, and
FreePBX's extra CDR columns (did, cnum, cnam, dst_cnam) fill what CEL does not say."""

from __future__ import annotations

from dataclasses import replace
from datetime import timedelta

from sipstack_agent.calls import evaluate
from sipstack_agent.model import CdrRow, ShipState

from .helpers import IDENTITY, SETTINGS, T0, Seq, validate
from .test_scenarios import NO_LONG, run, simple_inbound

KEY = "1700000000.1"
WAIT = replace(NO_LONG, cdr_wait=15.0)


def freepbx_cdr(**extras: str) -> CdrRow:
    return CdrRow(
        calldate=T0,
        uniqueid=KEY,
        linkedid=KEY,
        clid='"" <6135550100>',
        src="6135550100",
        dst="101",
        channel="SIP/carrier-00000001",
        dstchannel="PJSIP/101-00000002",
        duration=23,
        billsec=20,
        disposition="ANSWERED",
        extras=tuple(extras.items()),
    )


def test_an_ended_call_waits_for_its_cdr_rows_then_ships_them_in_the_first_document() -> None:
    s = Seq()
    simple_inbound(s)
    first = run(s.rows, at=24, key=KEY, settings=WAIT)
    assert first.documents == [] and not first.call.is_complete and first.call.awaiting_cdr
    assert first.next_check_at == T0 + timedelta(seconds=24 + 15)
    # the lookup brings the CDR row two seconds later: complete now, with it
    done = run(s.rows, [freepbx_cdr()], at=26, key=KEY, settings=WAIT, ship=first.ship)
    (doc,) = done.documents
    assert doc["ship_phase"] == "complete" and doc["completion_reason"] == "linkedid_end"
    assert doc["billsec"] == 20 and doc["revision"] == 1
    assert not done.call.awaiting_cdr


def test_the_wait_is_bounded_a_call_without_cdr_completes_after_it() -> None:
    s = Seq()
    simple_inbound(s)
    first = run(s.rows, at=24, key=KEY, settings=WAIT)
    still = run(s.rows, at=38, key=KEY, settings=WAIT, ship=first.ship)
    assert still.documents == [] and still.call.awaiting_cdr
    late = run(s.rows, at=39, key=KEY, settings=WAIT, ship=still.ship)
    (doc,) = late.documents
    assert doc["ship_phase"] == "complete" and "billsec" not in doc
    assert not late.call.awaiting_cdr


def test_no_wait_without_lookups_nor_in_cdr_only_mode() -> None:
    s = Seq()
    simple_inbound(s)
    assert run(s.rows, at=24, key=KEY, settings=NO_LONG).call.is_complete
    cdr_only = replace(WAIT, cdr_only=True)
    ev = run([], [freepbx_cdr()], at=100, key=KEY, settings=cdr_only)
    assert ev.call.is_complete and not ev.call.awaiting_cdr


def test_a_backlog_call_waits_in_real_time_not_in_row_time() -> None:
    """Rows from hours ago, read now: the wait counts from when they arrived."""
    s = Seq()
    simple_inbound(s)
    ev = evaluate(
        s.rows, [], [], ShipState(), call_key=KEY, now=T0 + timedelta(hours=3),
        settings=WAIT, identity=IDENTITY,
    )  # fmt: skip
    assert ev.documents == [] and ev.call.awaiting_cdr


def test_freepbx_did_cnum_cnam_fill_in_what_cel_lacks() -> None:
    s = Seq()
    trunk, lid = "PJSIP/carrier-00000001", KEY
    s.cel(0, "CHAN_START", trunk, lid, lid, exten="s", context="from-pstn")
    s.cel(0.1, "ANSWER", trunk, lid, lid)
    s.cel(5, "HANGUP", trunk, lid, lid, extra='{"hangupcause":16}')
    s.cel(5, "CHAN_END", trunk, lid, lid)
    s.cel(5, "LINKEDID_END", trunk, lid, lid)
    row = replace(
        freepbx_cdr(did="6135550199", cnum="6135550100", cnam="ACME Corp", dst_cnam="Sales"),
        clid="",
        src="",
        dst="s",
        dstchannel="",
    )
    (doc,) = run(s.rows, [row], at=10, key=KEY, settings=NO_LONG).documents
    validate(doc)
    assert doc["dnid"] == "6135550199"  # CEL: exten "s", no cid_dnid
    assert doc["src_number"] == "+16135550100" and doc["src_name"] == "ACME Corp"
    # CEL's own caller id wins where it has one
    s2 = Seq()
    simple_inbound(s2)
    named = freepbx_cdr(did="6135550000", cnam="Other")
    (doc2,) = run(s2.rows, [named], at=30, key=KEY, settings=NO_LONG).documents
    assert doc2["src_name"] == "Caller"
    assert doc2["dnid"] == "6135550000"  # the routed DID beats CHAN_START's exten guess


def test_cdr_only_freepbx_row_names_the_extension_rung() -> None:
    row = freepbx_cdr(did="6135550199", cnam="ACME Corp", dst_cnam="Sales Desk")
    (doc,) = run([], [row], at=100, key=KEY, settings=replace(SETTINGS, cdr_only=True)).documents
    assert doc["src_name"] == "ACME Corp"
    assert doc["dnid"] == "6135550199"
    assert doc.get("dst_name") == "Sales Desk"
