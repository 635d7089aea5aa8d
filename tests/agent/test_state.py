"""StateStore: rows, call groups, evaluations, outbox, prune, durability."""

from __future__ import annotations

import itertools
import os
import signal
import sqlite3
import subprocess
import sys
import textwrap
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from sipstack_agent.model import CdrRow, CelRow, RecordingFile, ShipState
from sipstack_agent.rules.ids import linkedid_sort_key
from sipstack_agent.state import SCHEMA_VERSION, StateStore, StoreError

T0 = datetime(2026, 11, 24, 4, 39, 20, tzinfo=UTC)


def cel(
    eventtype: str,
    uniqueid: str,
    linkedid: str,
    *,
    row_id: int | None = None,
    sec: float = 0,
    **kw: Any,
) -> CelRow:
    return CelRow(
        eventtype=eventtype,
        eventtime=T0 + timedelta(seconds=sec),
        uniqueid=uniqueid,
        linkedid=linkedid,
        row_id=row_id,
        **kw,
    )


@dataclass
class Ev:
    documents: list[dict[str, Any]] = field(default_factory=list)
    ship: ShipState = field(default_factory=ShipState)
    next_check_at: datetime | None = None
    closed: bool = False


def doc(linkedid: str, revision: int, phase: str = "complete") -> dict[str, Any]:
    return {
        "linkedid": linkedid,
        "revision": revision,
        "ship_phase": phase,
        "is_complete": phase == "complete",
    }


@pytest.fixture
async def store(tmp_path: Path):
    s = await StateStore.open(tmp_path / "state" / "agent.db", connector_id="pbx1")
    yield s
    await s.close()


# ----------------------------------------------------------------------------- rows


async def test_fixture_rows_round_trip_exactly(store: StateStore, asterisk_sample: Any) -> None:
    cels = asterisk_sample.cel_rows("postgres")
    cdrs = asterisk_sample.cdr_rows("postgres")
    res = await store.ingest(cels, cdrs, {"sql:cel:cel": {"id": 76}})
    assert (res.new_cels, res.new_cdrs, res.duplicates) == (len(cels), len(cdrs), 0)
    keys = set(await store.due_calls(T0, 100))
    # call g (blind transfer) stays one linkedid in this sample; five calls in all
    assert keys == {"1795495160.0", "1795495196.4", "1795495211.6", "1795495228.8", "1795495237.12"}
    got_cels: list[CelRow] = []
    got_cdrs: list[CdrRow] = []
    for k in keys:
        rec = await store.load_call(k)
        assert rec is not None and rec.call_key == k
        assert all(c.call_linkedid in rec.linkedids for c in rec.cels)
        got_cels += rec.cels
        got_cdrs += rec.cdrs
    assert sorted(got_cels, key=lambda r: r.row_id or 0) == cels
    assert sorted(got_cdrs, key=lambda r: r.row_id or 0) == cdrs
    # microseconds and tz survive
    first = min(got_cels, key=lambda r: r.row_id or 0)
    assert first.eventtime == datetime(2026, 11, 24, 4, 39, 20, 510110, tzinfo=UTC)
    assert first.eventtime.utcoffset() == timedelta(0)
    assert await store.get_position("sql:cel:cel") == {"id": 76}


async def test_odd_values_round_trip(store: StateStore) -> None:
    weird = "caf\udce9 \u00e9\u00e8 \U0001f4de \x00nul ' \" \\"  # surrogateescape'd latin1 byte
    r1 = cel("CHAN_START", "1.1", "", cid_name=weird, extra='{"a": 1}', source="csv")
    r2 = CdrRow(
        calldate=T0,
        uniqueid="1.1",
        linkedid="",
        clid=weird,
        duration=17,
        billsec=15,
        sequence=None,
        extras=(("recordingfile", "x.wav"), ("did", "")),
        row_id=None,
        source="db~1",
    )
    await store.ingest([r1], [r2])
    rec = await store.load_call("1.1")  # empty linkedid -> uniqueid
    assert rec is not None
    assert rec.cels == [r1] and rec.cdrs == [r2]
    assert rec.cels[0].cid_name == weird
    assert rec.cdrs[0].extras == (("recordingfile", "x.wav"), ("did", ""))


async def test_dedup_and_overlap_rereads_do_not_redirty(store: StateStore) -> None:
    rows = [cel("CHAN_START", "1.1", "1.1", row_id=i) for i in range(1, 6)]
    assert (await store.ingest(rows, [])).new_cels == 5
    rec = await store.load_call("1.1")
    assert rec is not None
    assert await store.save_evaluation("1.1", Ev(ship=ShipState(revision=0)))
    assert await store.due_calls(T0, 10) == []
    res = await store.ingest(rows[2:] + rows[2:], [])  # overlap re-read, and duplicates in a batch
    assert (res.new_cels, res.duplicates, res.dirty_calls) == (0, 6, 0)
    assert await store.due_calls(T0, 10) == []
    res = await store.ingest([*rows, cel("HANGUP", "1.1", "1.1", row_id=6)], [])
    assert (res.new_cels, res.duplicates) == (1, 5)
    assert await store.due_calls(T0, 10) == ["1.1"]
    assert len((await store.load_call("1.1")).cels) == 6  # type: ignore[union-attr]


async def test_a_mixed_batch_groups_only_its_new_rows(store: StateStore) -> None:
    """Stored rows in a batch are told apart from new ones (by seq past the batch's start),
    interleaved: only the calls of new rows are marked dirty."""
    a = [cel("CHAN_START", "1.1", "1.1", row_id=i) for i in (1, 2)]
    await store.ingest(a, [])
    rec = await store.load_call("1.1")
    assert rec is not None and await store.save_evaluation("1.1", Ev(ship=ShipState()))
    b = [cel("CHAN_START", "2.1", "2.1", row_id=i) for i in (3, 4)]
    res = await store.ingest([b[0], a[0], b[1], a[1]], [])
    assert (res.new_cels, res.duplicates, res.dirty_calls) == (2, 2, 1)
    assert await store.due_calls(T0, 10) == ["2.1"]
    rec = await store.load_call("2.1")
    assert rec is not None and rec.cels == b


async def test_positions(store: StateStore) -> None:
    assert await store.get_position("x") is None
    await store.set_position("x", {"id": 5, "epoch": 0})
    await store.ingest([], [], {"x": {"id": 9}, "y": {"t": "2026-01-01T00:00:00+00:00"}})
    assert await store.get_position("x") == {"id": 9}
    assert await store.positions() == {"x": {"id": 9}, "y": {"t": "2026-01-01T00:00:00+00:00"}}


async def test_failed_ingest_rolls_back_rows_and_position(store: StateStore) -> None:
    await store.set_position("p", {"id": 1})

    bad = cel("CHAN_START", "1.1", "1.1", row_id=1)
    object.__setattr__(bad, "eventtime", "not a datetime")  # serialisation will fail
    with pytest.raises(AttributeError):
        await store.ingest([cel("CHAN_START", "2.1", "2.1", row_id=2), bad], [], {"p": {"id": 2}})
    assert await store.get_position("p") == {"id": 1}
    assert await store.due_calls(T0, 10) == []


# ----------------------------------------------------------------------------- grouping


async def test_odd_digit_linkedids_merge_without_raising(store: StateStore) -> None:
    # "²" and Arabic-Indic digits pass str.isdigit() but are no Asterisk ids:
    # the merge inside ingest orders them after the numeric key (rules.ids)
    await store.ingest([cel("CHAN_START", "9.1", "²", row_id=1)], [])
    await store.ingest([cel("CHAN_START", "9.2", "١٢٣", row_id=2)], [])
    res = await store.ingest(
        [cel("BRIDGE_ENTER", "9.1", "9.5", row_id=3), cel("BRIDGE_ENTER", "9.2", "9.5", row_id=4)],
        [],
    )
    assert res.merges == 2
    assert await store.due_calls(T0, 10) == ["9.5"]
    rec = await store.load_call("²")
    assert rec is not None and rec.linkedids == ["9.5", "²", "١٢٣"]


async def test_linkedids_sharing_a_uniqueid_merge_transitively(store: StateStore) -> None:
    # Three linkedids: 100.10 (ch 100.10), 100.9 (ch 100.9, 100.11), 100.20 (ch 100.20)
    await store.ingest([cel("CHAN_START", "100.10", "100.10", row_id=1)], [])
    await store.ingest([cel("CHAN_START", "100.9", "100.9", row_id=2)], [])
    await store.ingest([cel("CHAN_START", "100.20", "100.20", row_id=3)], [])
    assert sorted(await store.due_calls(T0, 10)) == ["100.10", "100.20", "100.9"]
    # give 100.10 a ship state and an undelivered document
    await store.load_call("100.10")
    assert await store.save_evaluation(
        "100.10",
        Ev([doc("100.10", 1, "initial")], ShipState(revision=1, last_phase="initial")),
        now=T0,
    )
    # channel 100.10 appears under linkedid 100.9 (pickup): merge, key = 100.9 (9 < 10 numerically)
    res = await store.ingest([cel("BRIDGE_ENTER", "100.10", "100.9", row_id=4)], [])
    assert res.merges == 1
    assert await store.find_call("100.10") == "100.9"
    assert sorted(await store.due_calls(T0, 10)) == ["100.20", "100.9"]
    rec = await store.load_call("100.9")
    assert rec is not None
    assert rec.linkedids == ["100.9", "100.10"]
    assert {c.row_id for c in rec.cels} == {1, 2, 4}
    # revisions are per linkedid: 100.9 starts its own, and names what it supersedes
    assert rec.ship.revision == 0
    assert rec.ship.extra["merged_from"] == ["100.10"]
    assert rec.ship.extra["superseded"] == {"100.10": 1}
    (item,) = await store.outbox_due(T0 + timedelta(days=1), 10)
    assert item.call_key == "100.9"  # outbox follows the merge
    # transitively: 100.20's channel shows up under 100.10 (already merged into 100.9)
    await store.ingest([cel("HANGUP", "100.20", "100.10", row_id=5)], [])
    assert await store.due_calls(T0, 10) == ["100.9"]
    rec = await store.load_call("100.20")  # an old key resolves to the surviving call
    assert rec is not None and rec.call_key == "100.9"
    assert rec.linkedids == ["100.9", "100.10", "100.20"]
    assert {c.row_id for c in rec.cels} == {1, 2, 3, 4, 5}
    assert (await store.stats(T0)).calls == 1


async def test_merge_inside_one_batch_and_smaller_new_key(store: StateStore) -> None:
    await store.ingest([cel("CHAN_START", "50.2", "50.2", row_id=1)], [])
    # a new, smaller linkedid arrives with a channel of the existing call: it becomes the key
    cdr = CdrRow(calldate=T0, uniqueid="50.2", linkedid="50.1", row_id=7)
    res = await store.ingest([cel("CHAN_START", "50.1", "50.1", row_id=2)], [cdr])
    assert res.merges == 1
    assert await store.due_calls(T0, 10) == ["50.1"]
    rec = await store.load_call("50.1")
    assert rec is not None and rec.linkedids == ["50.1", "50.2"] and rec.cdrs == [cdr]


async def test_evaluation_of_a_call_merged_meanwhile_is_discarded(store: StateStore) -> None:
    await store.ingest([cel("CHAN_START", "7.2", "7.2", row_id=1)], [])
    await store.ingest([cel("CHAN_START", "7.1", "7.1", row_id=2)], [])
    rec = await store.load_call("7.1")
    assert rec is not None
    await store.ingest([cel("BRIDGE_ENTER", "7.2", "7.1", row_id=3)], [])  # 7.2 merges into 7.1
    assert not await store.save_evaluation(
        "7.1", Ev([doc("7.1", 1)], ShipState(revision=1), closed=True)
    )
    assert (await store.stats(T0)).outbox_depth == 0
    assert await store.due_calls(T0, 10) == ["7.1"]
    # the merged-away key is gone
    assert not await store.save_evaluation("7.2", Ev([doc("7.2", 1)]))


# ----------------------------------------------------------------------------- evaluations


async def test_save_evaluation_enqueues_and_clears_dirty(store: StateStore) -> None:
    await store.ingest([cel("CHAN_START", "1.1", "1.1", row_id=1)], [])
    rec = await store.load_call("1.1")
    assert rec is not None and rec.dirty and rec.ship == ShipState()
    ship = ShipState(
        revision=1,
        last_phase="initial",
        last_enqueued_at=T0,
        last_fingerprint="f",
        extra={"x": [1]},
    )
    check = T0 + timedelta(seconds=30)
    assert await store.save_evaluation("1.1", Ev([doc("1.1", 1, "initial")], ship, check), now=T0)
    assert await store.due_calls(T0, 10) == []
    assert await store.due_calls(check, 10) == ["1.1"]  # the timer
    rec = await store.load_call("1.1")
    assert rec is not None and rec.ship == ship and rec.next_check_at == check and not rec.dirty
    (item,) = await store.outbox_due(T0, 10)
    assert item.kind == "call" and item.idempotency_key == "pbx1:1.1:1"
    assert item.payload == doc("1.1", 1, "initial") and item.attempts == 0


async def test_rows_arriving_between_load_and_save_keep_the_call_dirty(store: StateStore) -> None:
    await store.ingest([cel("CHAN_START", "1.1", "1.1", row_id=1)], [])
    await store.load_call("1.1")
    await store.ingest([cel("ANSWER", "1.1", "1.1", row_id=2)], [])
    assert await store.save_evaluation("1.1", Ev([doc("1.1", 1, "initial")], ShipState(revision=1)))
    assert await store.due_calls(T0, 10) == ["1.1"]
    assert (await store.stats(T0)).outbox_depth == 1


async def test_batch_load_and_save(store: StateStore) -> None:
    await store.ingest([cel("CHAN_START", f"9.{i}", f"9.{i}", row_id=i) for i in range(5)], [])
    keys = await store.due_calls(T0, 3)
    assert len(keys) == 3
    recs = await store.load_calls([*keys, "nope"])
    assert [r.call_key for r in recs] == keys
    n = await store.save_evaluations(
        [(r.call_key, Ev([doc(r.call_key, 1)], ShipState(revision=1), closed=True)) for r in recs]
    )
    assert n == 3
    st = await store.stats(T0)
    assert (st.outbox_depth, st.open_calls, st.dirty_calls, st.calls) == (3, 2, 2, 5)


async def test_a_large_batch_load_gives_each_call_its_own_rows_in_arrival_order(
    store: StateStore,
) -> None:
    # 450 calls (more linkedids than one IN (...) chunk), rows arriving interleaved, and
    # one pickup merging 500.9 into 500.8: asked by either linkedid, loaded once.
    n = 450
    rows = [
        cel(ev, f"500.{i}", f"500.{i}", row_id=k * n + i, sec=k)
        for k, ev in enumerate(("CHAN_START", "ANSWER", "HANGUP"))
        for i in range(n)
    ]
    rows.append(cel("CHAN_START", "500.9", "500.8", row_id=10 * n))
    await store.ingest(rows, [CdrRow(T0, "500.3", "500.3", row_id=1)])
    r = RecordingFile("b.wav", "/mon/b.wav", "filesystem", 1, T0, False, "500.5")
    await store.add_recordings("500.5", [r])
    keys = [f"500.{i}" for i in reversed(range(n))]
    recs = await store.load_calls(keys)
    assert [x.call_key for x in recs] == list(
        dict.fromkeys("500.8" if k == "500.9" else k for k in keys)
    )
    by = {x.call_key: x for x in recs}
    for i in range(n):
        key = "500.8" if i == 9 else f"500.{i}"
        mine = [c for c in rows if c.call_linkedid == key or (i in (8, 9) and c.linkedid in
                ("500.8", "500.9"))]  # fmt: skip
        assert by[key].cels == sorted(mine, key=lambda c: c.row_id or 0), key
    assert by["500.8"].linkedids == ["500.8", "500.9"]
    assert [c.uniqueid for c in by["500.3"].cdrs] == ["500.3"] and not by["500.4"].cdrs
    assert by["500.5"].recordings == [r] and not by["500.6"].recordings
    assert await store.load_calls(["500.9"]) == [by["500.8"]]


async def test_recordings(store: StateStore) -> None:
    await store.ingest([cel("CHAN_START", "1.1", "1.1", row_id=1)], [])
    await store.load_call("1.1")
    await store.save_evaluation("1.1", Ev())
    r = RecordingFile("a.wav", "/mon/a.wav", "filesystem", 1234, T0, False, "1.1")
    assert await store.add_recordings("1.1", [r]) == 1
    assert await store.due_calls(T0, 10) == ["1.1"]
    await store.load_call("1.1")
    await store.save_evaluation("1.1", Ev())
    assert await store.add_recordings("1.1", [r]) == 0  # unchanged: not dirty again
    assert await store.due_calls(T0, 10) == []
    r2 = replace(r, uploaded=True)
    assert await store.add_recordings("1.1", [r2]) == 1
    rec = await store.load_call("1.1")
    assert rec is not None and rec.recordings == [r2]
    # a recording for an unknown linkedid creates its call
    assert await store.add_recordings("2.1", [replace(r, file_path="/mon/b.wav")]) == 1
    assert "2.1" in await store.due_calls(T0, 10)


# ----------------------------------------------------------------------------- outbox


async def test_outbox_lifecycle(store: StateStore) -> None:
    assert await store.enqueue("recording", "pbx1:rec:1", {"f": "a.wav"}, "1.1", now=T0)
    assert not await store.enqueue("recording", "pbx1:rec:1", {"f": "other"}, "1.1", now=T0)
    await store.enqueue(
        "call", "pbx1:2.1:1", {"linkedid": "2.1"}, "2.1", now=T0 + timedelta(seconds=1)
    )
    await store.enqueue(
        "call", "pbx1:3.1:1", {"linkedid": "3.1"}, "3.1", now=T0 + timedelta(seconds=2)
    )
    now = T0 + timedelta(seconds=10)
    st = await store.stats(now)
    assert st.outbox_depth == 3 and st.outbox_by_kind == {"call": 2, "recording": 1}
    assert st.oldest_undelivered_age == pytest.approx(10.0)
    assert [i.idempotency_key for i in await store.outbox_due(now, 10, kind="call")] == [
        "pbx1:2.1:1",
        "pbx1:3.1:1",
    ]
    items = await store.outbox_due(now, 10)
    assert [i.payload for i in items] == [{"f": "a.wav"}, {"linkedid": "2.1"}, {"linkedid": "3.1"}]
    rec_item, a, b = items
    # retry: not due until its time, attempts counted, error kept
    later = now + timedelta(seconds=5)
    await store.outbox_retry(a.id, later, "503 Service Unavailable")
    assert a.id not in [i.id for i in await store.outbox_due(now, 10)]
    (again,) = [i for i in await store.outbox_due(later, 10) if i.id == a.id]
    assert (
        again.attempts == 1
        and again.last_error == "503 Service Unavailable"
        and again.next_attempt_at == later
    )
    # lease: handed out once
    leased = await store.outbox_due(now, 10, lease=60)
    assert {i.id for i in leased} == {rec_item.id, b.id}
    assert await store.outbox_due(now, 10) == []
    assert [i.id for i in await store.outbox_due(now, 10, exclude=[a.id, b.id])] == []
    await store.outbox_delivered(rec_item.id)
    assert await store.outbox_dead(b.id, 400, "bad document", "http_400", now=now)
    assert not await store.outbox_dead(b.id, 400, "again", "http_400")
    st = await store.stats(later)
    assert st.outbox_depth == 1 and st.dead_letters == 1
    (dl,) = await store.dead_letters()
    assert (dl["status"], dl["body"], dl["reason"], dl["idempotency_key"]) == (
        400,
        "bad document",
        "http_400",
        "pbx1:3.1:1",
    )
    assert dl["payload"] == {"linkedid": "3.1"} and dl["attempts"] == 1
    await store.outbox_delivered([a.id])
    assert (await store.stats(later)).outbox_depth == 0


# ----------------------------------------------------------------------------- prune


async def test_prune_only_closed_delivered_and_old_calls(store: StateStore) -> None:
    for i in range(1, 5):
        await store.ingest(
            [cel("CHAN_START", f"1.{i}", f"1.{i}", row_id=i)],
            [CdrRow(calldate=T0, uniqueid=f"1.{i}", linkedid=f"1.{i}", row_id=i)],
        )
    for k in await store.due_calls(T0, 10):
        await store.load_call(k)
        closed = k != "1.4"  # 1.4 stays open
        await store.save_evaluation(
            k, Ev([doc(k, 1)], ShipState(revision=1), closed=closed), now=T0
        )
    items = {i.call_key: i for i in await store.outbox_due(T0, 10)}
    await store.outbox_delivered(items["1.1"].id)
    await store.outbox_dead(items["1.2"].id, 400, "", "http_400")
    # 1.3: still undelivered; 1.4: open
    assert (await store.prune(T0 + timedelta(seconds=3599), 3600)).calls == 0  # too young
    res = await store.prune(T0 + timedelta(seconds=3601), 3600)
    assert (res.calls, res.cel_rows, res.cdr_rows) == (2, 2, 2)
    st = await store.stats(T0)
    assert (st.calls, st.cel_rows, st.cdr_rows) == (2, 2, 2)
    assert await store.load_call("1.1") is None and await store.find_call("1.1") is None
    assert await store.load_call("1.3") is not None
    # a late CDR of a kept closed call makes it dirty again and blocks its pruning
    await store.outbox_delivered(items["1.3"].id)
    await store.ingest([], [CdrRow(calldate=T0, uniqueid="1.3", linkedid="1.3", row_id=99)])
    assert (await store.prune(T0 + timedelta(days=1), 3600)).calls == 0
    rec = await store.load_call("1.3")
    assert rec is not None and rec.closed and len(rec.cdrs) == 2
    await store.save_evaluation("1.3", Ev([], ShipState(revision=1), closed=True), now=T0)
    assert (await store.prune(T0 + timedelta(days=1), 3600)).calls == 1
    # dead letters are kept for keep_dead_for
    assert (await store.prune(T0 + timedelta(days=1), 3600)).dead_letters == 0
    assert (await store.prune(datetime.now(UTC) + timedelta(days=31), 3600)).dead_letters == 1


async def test_pruned_call_rows_do_not_leak_into_a_new_call(store: StateStore) -> None:
    await store.ingest([cel("CHAN_START", "1.1", "1.1", row_id=1)], [])
    await store.load_call("1.1")
    await store.save_evaluation("1.1", Ev(closed=True), now=T0)
    assert (await store.prune(T0 + timedelta(hours=2))).calls == 1
    # the same uniqueid again (very late row): a fresh call, only the new row
    await store.ingest([cel("HANGUP", "1.1", "1.1", row_id=2)], [])
    rec = await store.load_call("1.1")
    assert rec is not None and [c.row_id for c in rec.cels] == [2] and rec.ship == ShipState()


# ----------------------------------------------------------------------------- file


async def test_wal_schema_version_and_newer_schema_refused(tmp_path: Path) -> None:
    path = tmp_path / "s.db"
    s = await StateStore.open(path)
    assert await s.schema_version() == SCHEMA_VERSION
    await s.close()
    con = sqlite3.connect(path)
    assert con.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    con.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
    con.close()
    with pytest.raises(StoreError, match="newer"):
        await StateStore.open(path)


_CHILD = textwrap.dedent(
    """
    import asyncio, sys, time
    from datetime import datetime, timezone
    from sipstack_agent.model import CelRow
    from sipstack_agent.state import StateStore

    async def main():
        store = await StateStore.open(sys.argv[1])
        t = datetime(2026, 1, 1, tzinfo=timezone.utc)
        for batch in range(20):
            rows = [CelRow("CHAN_START", t, f"1.{batch}", f"1.{batch}", row_id=batch * 100 + i)
                    for i in range(100)]
            await store.ingest(rows, [], {"sql:cel:cel": {"id": batch * 100 + 99}})
        await store.enqueue("call", "k1", {"linkedid": "1.0"}, "1.0")
        print("ingested", flush=True)
        time.sleep(600)   # block the loop: the parent kills us here

    asyncio.run(main())
    """
)


async def test_kill_9_after_ingest_returns_loses_nothing(tmp_path: Path) -> None:
    path = tmp_path / "state.db"
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2] / "agent")}
    proc = subprocess.Popen(
        [sys.executable, "-c", _CHILD, str(path)], stdout=subprocess.PIPE, env=env
    )
    try:
        assert proc.stdout is not None
        assert proc.stdout.readline().strip() == b"ingested"
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == -signal.SIGKILL
    assert Path(str(path) + "-wal").exists()  # nothing was checkpointed by a clean close
    store = await StateStore.open(path)
    try:
        assert await store.get_position("sql:cel:cel") == {"id": 1999}
        st = await store.stats(T0)
        assert st.cel_rows == 2000 and st.calls == 20 and st.outbox_depth == 1
        assert len(await store.due_calls(T0, 100)) == 20
    finally:
        await store.close()


# ----------------------------------------------------------------------------- grouping, property


def _expected_groups(pairs: list[tuple[str, str]]) -> dict[str, frozenset[str]]:
    parent: dict[str, str] = {}

    def find(x: str) -> str:
        parent.setdefault(x, x)
        while parent[x] != x:
            x = parent[x]
        return x

    first_lid: dict[str, str] = {}
    for lid, uid in pairs:
        find(lid)
        if uid in first_lid:
            a, b = find(lid), find(first_lid[uid])
            if a != b:
                parent[a] = b
        else:
            first_lid[uid] = lid
    groups: dict[str, set[str]] = {}
    for x in list(parent):
        groups.setdefault(find(x), set()).add(x)
    return {min(g, key=linkedid_sort_key): frozenset(g) for g in groups.values()}


@settings(max_examples=40, deadline=None)
@given(
    pairs=st.lists(st.tuples(st.integers(0, 12), st.integers(0, 12)), min_size=1, max_size=40),
    cuts=st.lists(st.integers(1, 40), max_size=5),
)
async def test_groups_match_union_find_for_any_batching(
    pairs: list[tuple[int, int]], cuts: list[int]
) -> None:
    rows = [
        cel("CHAN_START", f"1700.{u}", f"1700.{lid}", row_id=i) for i, (lid, u) in enumerate(pairs)
    ]
    store = await StateStore.open(":memory:")
    try:
        bounds = sorted({0, len(rows), *(c for c in cuts if c < len(rows))})
        for a, b in itertools.pairwise(bounds):
            await store.ingest(rows[a:b], [])
        expected = _expected_groups([(r.linkedid, r.uniqueid) for r in rows])
        keys = await store.due_calls(T0, 1000)
        assert sorted(keys) == sorted(expected)
        for rec in await store.load_calls(keys):
            assert frozenset(rec.linkedids) == expected[rec.call_key]
            assert rec.linkedids[0] == rec.call_key
            assert sorted(c.row_id or 0 for c in rec.cels) == sorted(
                i for i, r in enumerate(rows) if r.linkedid in expected[rec.call_key]
            )
    finally:
        await store.close()


async def test_state_files_are_private_to_the_agent(tmp_path: Path) -> None:
    """Raw CDR/CEL rows are personal data: state.db, its WAL and SHM are 0600."""
    import stat

    path = tmp_path / "state" / "state.db"
    store = await StateStore.open(path)
    try:
        await store.set_position("x", {"id": 1})  # a write: the WAL and SHM exist now
        names = [path, Path(f"{path}-wal"), Path(f"{path}-shm")]
        assert [stat.S_IMODE(p.stat().st_mode) for p in names] == [0o600] * 3
    finally:
        await store.close()
    path.chmod(0o644)  # as an older agent left it
    store = await StateStore.open(path)
    await store.close()
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
