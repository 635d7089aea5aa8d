"""The real Asterisk 20 sample (shared/fixtures/asterisk20-sample) assembled as its README says."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta

import pytest
from sipstack_agent.calls import Evaluation, evaluate, group_linkedids
from sipstack_agent.model import CdrRow, CelRow, ShipState

from .fixtures import CALL_A, CALL_C, CALL_D, CALL_E, CALL_G, load_cdr, load_cel
from .helpers import IDENTITY, SETTINGS, sorted_by_time, validate

FLAVOURS = ("postgres", "mariadb", "csv")


def _rows(flavour: str) -> tuple[list[CelRow], list[CdrRow]]:
    cdr_flavour = "postgres" if flavour == "csv" else flavour  # cel_custom has no CDR file
    return load_cel(flavour), load_cdr(cdr_flavour)


def _evaluate(flavour: str, key: str) -> Evaluation:
    cels, cdrs = _rows(flavour)
    groups = group_linkedids([*cels, *cdrs])
    group = next(g for g in groups if key in g)
    my_cels = [c for c in cels if c.call_linkedid in group]
    my_cdrs = [c for c in cdrs if c.call_linkedid in group]
    now = max(c.eventtime for c in my_cels) + timedelta(seconds=1)
    return evaluate(
        my_cels,
        my_cdrs,
        [],
        ShipState(),
        call_key=key,
        now=now,
        settings=SETTINGS,
        identity=IDENTITY,
    )


@dataclass(frozen=True)
class Expected:
    key: str
    direction: str
    disposition: str
    answered: bool
    cdr_count: int
    ring: int
    talk: int | None
    answered_by: tuple[str, ...]
    src_number: str
    dst_number: str
    dst_extension: str
    src_extension: str = ""
    src_name: str = ""
    dst_name: str = ""


EXPECTED = [
    Expected(
        CALL_A,
        "i",
        "ANSWERED",
        True,
        1,
        2,
        15,
        ("101",),
        "+14085551234",
        "+14155551000",
        "101",
        src_name="John Smith",
        dst_name="Bob Brown",
    ),
    Expected(
        CALL_C,
        "x",
        "ANSWERED",
        True,
        1,
        2,
        10,
        ("101",),
        "100",
        "101",
        "101",
        src_extension="100",
        src_name="Alice Anders",
        dst_name="Bob Brown",
    ),
    Expected(
        CALL_D,
        "i",
        "NO ANSWER",
        False,
        2,
        15,
        None,
        (),
        "+16505550001",
        "+14155551001",
        "102",
        src_name="Mary Major",
        dst_name="Carol Clark",
    ),
    Expected(
        CALL_E,
        "i",
        "BUSY",
        False,
        2,
        0,
        None,
        (),
        "+16505550002",
        "+14155551002",
        "103",
        src_name="Ned Nolan",
        dst_name="Dave Dunn",
    ),
    Expected(
        CALL_G,
        "i",
        "ANSWERED",
        True,
        2,
        2,
        25,
        ("101", "104"),
        "+16505550004",
        "+14155551004",
        "101",
        src_name="Paul Price",
        dst_name="Bob Brown",
    ),
]


@pytest.mark.parametrize("flavour", FLAVOURS)
def test_sample_has_five_calls(flavour: str) -> None:
    cels, cdrs = _rows(flavour)
    groups = group_linkedids([*cels, *cdrs])
    assert groups == [frozenset({k}) for k in (CALL_A, CALL_C, CALL_D, CALL_E, CALL_G)]


@pytest.mark.parametrize("flavour", FLAVOURS)
@pytest.mark.parametrize("exp", EXPECTED, ids=lambda e: e.key)
def test_sample_call(flavour: str, exp: Expected) -> None:
    ev = _evaluate(flavour, exp.key)
    call, d = ev.call, ev.call.derived
    assert call.is_complete and call.completion_reason == "linkedid_end" and ev.closed
    assert len(ev.documents) == 1
    doc = ev.documents[0]
    validate(doc)
    assert doc["ship_phase"] == "complete" and doc["revision"] == 1
    assert doc["linkedid"] == exp.key and doc["linkedids"] == [exp.key]
    assert doc["direction"] == exp.direction, doc["direction_reason"]
    assert doc["disposition"] == exp.disposition
    assert doc["answered"] is exp.answered
    assert len(call.cdrs) == exp.cdr_count
    assert sum(1 for i in doc["call_threads"] if i["event"] == "CDR") == exp.cdr_count
    assert doc["call_threads_count"] == len(doc["call_threads"])
    assert sorted_by_time(doc["call_threads"])
    tolerance = 1 if flavour == "mariadb" else 0
    assert abs(doc["ring_seconds"] - exp.ring) <= tolerance
    if exp.talk is None:
        assert "talk_seconds" not in doc and "answer_time" not in doc
    else:
        assert abs(doc["talk_seconds"] - exp.talk) <= tolerance
    assert d.answered_by == exp.answered_by
    assert doc["src_number"] == exp.src_number
    assert doc["dst_number"] == exp.dst_number
    assert doc["dst_extension"] == exp.dst_extension
    assert doc.get("src_extension", "") == exp.src_extension
    assert doc.get("src_name", "") == exp.src_name
    assert doc.get("dst_name", "") == exp.dst_name
    assert doc["call_time"].endswith("+00:00") and doc["shipped_at"].endswith("+00:00")
    # No Local/ channel anywhere in the sample: every channel is a party.
    assert all(ch.is_party for ch in call.channels)


@pytest.mark.parametrize("flavour", FLAVOURS)
def test_call_a_recording_from_mixmonitor(flavour: str) -> None:
    ev = _evaluate(flavour, CALL_A)
    recs = ev.documents[0]["recording_files"]
    assert recs == [
        {
            "filename": "in-4155551000-4085551234-20261124-043920-1795495160.0.wav",
            "file_path": "/var/spool/asterisk/monitor/"
            "in-4155551000-4085551234-20261124-043920-1795495160.0.wav",
            "file_size": 0,
            "source": "cel_mixmonitor",
            "started_at": recs[0]["started_at"],
            "uploaded": False,
        }
    ]
    assert recs[0]["started_at"].startswith("2026-11-24T04:39:20")
    assert ev.documents[0]["dnid"] == "4155551000"
    assert ev.documents[0]["billsec"] == 15
    assert ev.documents[0]["hangup_cause"] == 16


@pytest.mark.parametrize("flavour", FLAVOURS)
def test_call_g_blind_transfer(flavour: str) -> None:
    ev = _evaluate(flavour, CALL_G)
    doc = ev.documents[0]
    assert [(t["type"], t["from"], t["to"]) for t in doc["transfers"]] == [("blind", "101", "104")]
    assert doc["transfers"][0]["at"].startswith("2026-11-24T04:40:43")
    assert doc["billsec"] == 20  # max CDR billsec, not the sum
    assert doc["duration_seconds"] == 27
    xfer = [i for i in doc["call_threads"] if i["event"] == "BLINDTRANSFER"]
    assert xfer[0]["extra"]["extension"] == "104"
    # Bridge events carry their peer where Asterisk wrote one.
    assert any(i.get("peer") == "SIP/104-0000000e" for i in doc["call_threads"])


@pytest.mark.parametrize("flavour", FLAVOURS)
def test_call_e_busy_cause(flavour: str) -> None:
    doc = _evaluate(flavour, CALL_E).documents[0]
    assert doc["hangup_cause"] == 17
    assert doc["duration_seconds"] == 0
    assert "recording_files" not in doc and "transfers" not in doc and "queue" not in doc


def test_threads_select_only_contract_events() -> None:
    doc = _evaluate("postgres", CALL_A).documents[0]
    events = [i["event"] for i in doc["call_threads"]]
    assert "CHAN_END" not in events  # not in the contract's list
    assert events[0] == "CDR" or events[0] == "CHAN_START"
    apps = {i.get("app") for i in doc["call_threads"] if i["event"] in ("APP_START", "APP_END")}
    assert apps == {"MixMonitor", "Dial"}
    # Same second: CDR (calldate 04:39:20) sorts before the CEL row at 04:39:20.51.
    assert doc["call_threads"][0]["event"] == "CDR"


def test_mariadb_same_second_rows_keep_id_order() -> None:
    doc = _evaluate("mariadb", CALL_A).documents[0]
    cel_items = [i for i in doc["call_threads"] if i["event"] != "CDR"]
    first_second = [i["event"] for i in cel_items if i["time"] == "2026-11-24T04:39:20+00:00"]
    assert first_second == ["CHAN_START", "APP_START", "APP_END", "APP_START", "CHAN_START"]


def test_postgres_and_mariadb_agree() -> None:
    for key in (CALL_A, CALL_C, CALL_D, CALL_E, CALL_G):
        pg = _evaluate("postgres", key).documents[0]
        my = _evaluate("mariadb", key).documents[0]
        for field in (
            "direction",
            "disposition",
            "answered",
            "call_threads_count",
            "billsec",
            "src_number",
            "dst_number",
            "linkedids",
            "call_time",
        ):
            assert pg.get(field) == my.get(field), (key, field)
