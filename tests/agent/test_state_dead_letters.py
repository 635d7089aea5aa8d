"""StateStore's dead-letter admin methods on a real SQLite file: requeue as a new
revision (key, ship state, an evaluation in flight discarded), filters, drop,
read-only opening, and a writer beside another connection (WAL, busy_timeout)."""

from __future__ import annotations

import asyncio
import random
import sqlite3
from contextlib import closing
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from sipstack_agent.calls.document import revision_key
from sipstack_agent.model import ShipState
from sipstack_agent.state import AGE_BUCKETS, StateStore, StoreError, age_bucket
from sipstack_agent.state.outbox import outbox_due as outbox_due_sync
from sipstack_agent.state.stats import backlog_detail as backlog_detail_sync
from sipstack_agent.state.stats import stats as stats_sync

from .test_state import Ev, cel, doc


async def dead_call(store: StateStore, linkedid: str, revision: int, reason: str) -> None:
    """A call whose document `revision` the API refused (through the real save/dead path)."""
    await store.ingest([cel("CHAN_START", linkedid, linkedid)], [], {})
    (rec,) = await store.load_calls([linkedid])
    ship = ShipState(revision=revision, last_phase="complete")
    ev = Ev(documents=[{**doc(linkedid, revision), "shipped_at": "x"}], ship=ship, closed=True)
    assert await store.save_evaluation(rec.call_key, ev)
    (item,) = [i for i in await store.outbox_due(datetime.now(UTC) + timedelta(days=1), 100)
               if i.call_key == linkedid]  # fmt: skip
    assert await store.outbox_dead(item.id, 400, "refused", reason)


@pytest.fixture
async def store(tmp_path: Path):
    s = await StateStore.open(tmp_path / "state.db", connector_id="pbx1")
    yield s
    await s.close()


async def test_requeue_is_a_new_revision_and_moves_the_ship_state(store: StateStore) -> None:
    await dead_call(store, "100.1", 3, "http_400")
    await dead_call(store, "200.1", 1, "http_422")
    (d,) = await store.dead_letters_where(reason="http_400")
    assert d["idempotency_key"] == revision_key("pbx1", "100.1", 3)
    # an evaluation of the call is in flight when the operator retries
    (inflight,) = await store.load_calls(["100.1"])
    now = datetime(2026, 12, 1, 9, 0, tzinfo=UTC)
    done = await store.requeue_dead_letters(reason="http_400", now=now)
    assert done == [(d["id"], revision_key("pbx1", "100.1", 4))]
    (item,) = [i for i in await store.outbox_due(now, 10) if i.call_key == "100.1"]
    assert item.idempotency_key == "pbx1:100.1:4"
    assert (
        item.payload["revision"] == 4 and item.payload["shipped_at"] == "2026-12-01T09:00:00+00:00"
    )
    assert item.attempts == 0
    # the stale evaluation is not applied; the call is evaluated again from revision 4
    stale = Ev(documents=[doc("100.1", 4)], ship=replace(inflight.ship, revision=4))
    assert await store.save_evaluation(inflight.call_key, stale) is False
    (again,) = await store.load_calls(["100.1"])
    assert again.ship.revision == 4 and again.dirty
    assert [x["call_key"] for x in await store.dead_letters()] == ["200.1"]
    # ids and reason together; an id that is gone is skipped
    assert await store.requeue_dead_letters([d["id"]]) == []


async def test_requeue_by_id_all_and_drop(store: StateStore) -> None:
    for i, reason in enumerate(["http_400", "http_400", "retry_horizon"]):
        await dead_call(store, f"{300 + i}.1", 1, reason)
    ids = [x["id"] for x in await store.dead_letters_where()]
    assert len(ids) == 3
    assert [k for _, k in await store.requeue_dead_letters([ids[1]])] == ["pbx1:301.1:2"]
    assert await store.drop_dead_letters(reason="nope") == 0
    assert await store.drop_dead_letters(reason="retry_horizon") == 1
    assert [x["id"] for x in await store.dead_letters_where()] == [ids[0]]
    assert await store.drop_dead_letters() == 1
    assert await store.dead_letters() == []


async def test_backlog_detail_by_age_and_reason(store: StateStore) -> None:
    now = datetime.now(UTC)
    for n, age in enumerate([5, 30, 600, 7200, 200000]):
        await store.enqueue("call", f"k{n}", {"n": n}, now=now - timedelta(seconds=age))
    await dead_call(store, "400.1", 1, "http_400")
    got = await store.backlog_detail(now)
    assert tuple(got["by_age"]) == AGE_BUCKETS
    assert got["by_age"] == {
        "under_a_minute": 2,
        "under_an_hour": 1,
        "under_a_day": 1,
        "over_a_day": 1,
    }
    assert got["dead_letters_by_reason"] == {"http_400": 1}


async def test_outbox_counts_come_from_the_index_and_match_age_bucket(
    store: StateStore, tmp_path: Path
) -> None:
    """stats() and backlog_detail() count the outbox from the covering index outbox_kind
    (a deep outbox of 4 KB documents is never read for them), bucket by `age_bucket`'s
    own rule, and name the oldest document of every kind."""
    now = datetime.now(UTC)
    rng = random.Random(7)
    ages = [rng.choice([0.5, 59, 61, 3599, 3601, 86399, 86401, 10**6]) for _ in range(60)]
    for n, age in enumerate(ages):
        kind = "recording" if n % 3 == 0 else "call"
        await store.enqueue(kind, f"k{n}", {"n": n}, now=now - timedelta(seconds=age))
    want = {b: 0 for b in AGE_BUCKETS}
    for age in ages:
        want[age_bucket(age)] += 1
    assert (await store.backlog_detail(now))["by_age"] == want
    st = await store.stats(now)
    assert st.outbox_by_kind == {"call": 40, "recording": 20}
    assert st.outbox_depth == 60
    assert abs(st.oldest_undelivered_age - max(ages)) < 1
    with closing(sqlite3.connect(store.path)) as c:  # the statements they run, planned
        ran: list[str] = []
        c.set_trace_callback(ran.append)
        assert stats_sync(c, now.timestamp()).outbox_by_kind == st.outbox_by_kind
        assert backlog_detail_sync(c, now.timestamp())["by_age"] == want
        c.set_trace_callback(None)
        on_outbox = [q for q in ran if "FROM outbox" in q]
        assert len(on_outbox) >= 2
        for q in on_outbox:
            plan = " ".join(str(r) for r in c.execute("EXPLAIN QUERY PLAN " + q))
            assert "COVERING INDEX" in plan, (q, plan)


async def test_the_shippers_take_due_documents_from_an_index_not_a_sort(
    store: StateStore, tmp_path: Path
) -> None:
    """outbox_due for one kind (each shipper's query, every pass) walks the index
    outbox_kind_due in order: no sort of every queued document, which made an API
    outage's outbox drain in time growing with the square of its depth (0.16.0)."""
    now = datetime.now(UTC)
    for n in range(300):
        kind = "recording" if n % 5 == 0 else "call"
        await store.enqueue(kind, f"k{n}", {"n": n}, now=now - timedelta(seconds=n))
    due = await store.outbox_due(now, 10, kind="call")
    # the oldest due first (due times descend with n), every one of its kind
    assert [i.payload["n"] for i in due] == [299, 298, 297, 296, 294, 293, 292, 291, 289, 288]
    with closing(sqlite3.connect(store.path)) as c:
        # without statistics (a new file) and with those PRAGMA optimize leaves behind
        for analyze in (False, True):
            if analyze:
                c.execute("ANALYZE")
            ran: list[str] = []
            c.set_trace_callback(ran.append)
            for kind in ("call", "recording", None):
                outbox_due_sync(c, now.timestamp(), 10, kind, None, set())
            c.set_trace_callback(None)
            assert len(ran) == 3
            for q in ran:
                plan = " ".join(str(r[-1]) for r in c.execute("EXPLAIN QUERY PLAN " + q))
                assert "TEMP B-TREE" not in plan, (analyze, q, plan)
                assert "outbox_kind_due" in plan or "outbox_due" in plan, (analyze, q, plan)


async def test_readonly_open_creates_nothing_and_cannot_write(tmp_path: Path) -> None:
    with pytest.raises(StoreError, match="no state store"):
        await StateStore.open_readonly(tmp_path / "missing.db")
    assert list(tmp_path.iterdir()) == []
    rw = await StateStore.open(tmp_path / "state.db", connector_id="pbx1")
    await dead_call(rw, "500.1", 2, "http_400")
    ro = await StateStore.open_readonly(tmp_path / "state.db")
    try:
        assert [x["call_key"] for x in await ro.dead_letters()] == ["500.1"]
        with pytest.raises(sqlite3.OperationalError, match="readonly"):
            await ro.drop_dead_letters()
    finally:
        await ro.close()
        await rw.close()


async def test_writer_waits_for_another_connections_transaction(tmp_path: Path) -> None:
    """A retry while the agent holds the write lock waits (busy_timeout), then commits."""
    path = tmp_path / "state.db"
    agent = await StateStore.open(path, connector_id="pbx1")
    await dead_call(agent, "600.1", 1, "http_400")
    admin = await StateStore.open(path, connector_id="pbx1")
    other = sqlite3.connect(path, timeout=10, isolation_level=None)
    try:
        other.execute("BEGIN IMMEDIATE")
        other.execute("UPDATE positions SET updated_at = 0")
        task = asyncio.create_task(admin.requeue_dead_letters())
        await asyncio.sleep(0.3)
        assert not task.done()  # waiting for the lock, not failing
        other.execute("COMMIT")
        assert [k for _, k in await task] == ["pbx1:600.1:2"]
        assert other.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    finally:
        other.close()
        await admin.close()
        await agent.close()


async def test_a_superseded_revision_is_dropped_not_sent(store: StateStore) -> None:
    """Resending revision 1 after revision 2 would overwrite newer content at the API."""
    # 700.1: revisions 1 and 2 both refused; 800.1: revision 1 refused, revision 2 queued
    await dead_call(store, "700.1", 1, "http_400")
    (rec,) = await store.load_calls(["700.1"])
    ev = Ev(documents=[doc("700.1", 2)], ship=replace(rec.ship, revision=2), closed=True)
    assert await store.save_evaluation(rec.call_key, ev)
    (item,) = [i for i in await store.outbox_due(datetime.now(UTC), 10) if i.call_key == "700.1"]
    assert await store.outbox_dead(item.id, 400, "refused", "http_400")
    await dead_call(store, "800.1", 1, "http_400")
    (rec,) = await store.load_calls(["800.1"])
    ev = Ev(documents=[doc("800.1", 2)], ship=replace(rec.ship, revision=2), closed=True)
    assert await store.save_evaluation(rec.call_key, ev)
    ids = {(x["call_key"], x["payload"]["revision"]): x["id"] for x in await store.dead_letters()}
    done = dict(await store.requeue_dead_letters())
    assert done == {
        ids[("700.1", 1)]: None,
        ids[("700.1", 2)]: "pbx1:700.1:3",
        ids[("800.1", 1)]: None,
    }
    assert await store.dead_letters() == []
    queued = {i.idempotency_key for i in await store.outbox_due(datetime.now(UTC), 10)}
    assert queued == {"pbx1:700.1:3", "pbx1:800.1:2"}


async def _queue(store: StateStore, linkedid: str, revision: int, *, closed: bool = False) -> int:
    """Revision `revision` of call `linkedid` saved to the outbox; its outbox id."""
    (rec,) = await store.load_calls([linkedid])
    ship = replace(rec.ship, revision=revision)
    ev = Ev(documents=[doc(linkedid, revision)], ship=ship, closed=closed)
    assert await store.save_evaluation(rec.call_key, ev)
    (item,) = [
        i
        for i in await store.outbox_due(datetime.now(UTC) + timedelta(days=1), 100)
        if i.payload["linkedid"] == linkedid and i.payload["revision"] == revision
    ]
    return item.id


async def _merge_9_5_into_9_1(store: StateStore) -> None:
    await store.ingest([cel("BRIDGE_EXIT", "9.5", "9.1", row_id=99)], [])
    rec = await store.load_call("9.5")
    assert rec is not None and rec.call_key == "9.1"


async def test_a_dead_letter_of_a_call_merged_away_is_superseded(store: StateStore) -> None:
    """9.5's revision 1 was refused, its revision 2 delivered, then 9.5 merged into 9.1:
    requeueing revision 1 would reuse the key of revision 2 (the merged-away key has no
    ship state left) and send stale content under a linkedid the survivor replaces."""
    await store.ingest([cel("CHAN_START", "9.1", "9.1", row_id=1)], [])
    await _queue(store, "9.1", 1)
    await dead_call(store, "9.5", 1, "http_400")
    await store.outbox_delivered(await _queue(store, "9.5", 2))
    await _merge_9_5_into_9_1(store)
    (rec,) = await store.load_calls(["9.1"])
    assert rec.ship.extra["superseded"] == {"9.5": 2}  # the survivor names both revisions
    (d,) = await store.dead_letters()
    assert await store.requeue_dead_letters() == [(d["id"], None)]
    assert await store.dead_letters() == []
    queued = {i.idempotency_key for i in await store.outbox_due(datetime.now(UTC), 10)}
    assert queued == {"pbx1:9.1:1"}  # nothing more under 9.5
    (after,) = await store.load_calls(["9.1"])
    assert after.ship == rec.ship  # the survivor's revisions are its own, untouched


async def test_merged_away_dead_letters_under_the_survivor_key(store: StateStore) -> None:
    """A merged-away call's queued document moves to the survivor's key and is refused
    there: it is superseded, and it does not count as a revision of the survivor (whose
    own refused revision 1 goes out as 2, not dropped because of 9.5's revision 3)."""
    await dead_call(store, "9.1", 1, "http_400")
    await store.ingest([cel("CHAN_START", "9.5", "9.5", row_id=2)], [])
    late = await _queue(store, "9.5", 3)
    await _merge_9_5_into_9_1(store)
    assert await store.outbox_dead(late, 422, "refused", "http_422")
    ids = {x["payload"]["linkedid"]: x["id"] for x in await store.dead_letters()}
    assert {x["call_key"] for x in await store.dead_letters()} == {"9.1"}
    done = dict(await store.requeue_dead_letters())
    assert done == {ids["9.1"]: "pbx1:9.1:2", ids["9.5"]: None}
    (item,) = await store.outbox_due(datetime.now(UTC), 10)
    assert (item.call_key, item.idempotency_key) == ("9.1", "pbx1:9.1:2")
    (rec,) = await store.load_calls(["9.1"])
    assert rec.ship.revision == 2 and rec.ship.extra["superseded"] == {"9.5": 3}


async def test_a_dead_letter_of_a_pruned_call_continues_its_tombstone(
    store: StateStore,
) -> None:
    """A pruned call's revisions live on in its tombstone: a refused revision older than
    a delivered one is superseded, the newest refused one goes out above all of them,
    and a later row of the call continues from there (no key used twice)."""
    await dead_call(store, "500.1", 1, "http_400")
    await store.outbox_delivered(await _queue(store, "500.1", 2, closed=True))
    await dead_call(store, "600.1", 1, "http_400")
    later = datetime.now(UTC) + timedelta(hours=2)
    assert (await store.prune(later, keep_closed_for=0)).calls == 2
    assert await store.load_calls(["500.1", "600.1"]) == []
    ids = {x["payload"]["linkedid"]: x["id"] for x in await store.dead_letters()}
    done = dict(await store.requeue_dead_letters())
    assert done == {ids["500.1"]: None, ids["600.1"]: "pbx1:600.1:2"}
    await store.ingest([cel("HANGUP", "600.1", "600.1", row_id=7, sec=5)], [])
    (rec,) = await store.load_calls(["600.1"])
    assert rec.ship.revision == 2  # its next document is revision 3


async def test_a_tombstone_lasts_as_long_as_its_calls_dead_letters(
    store: StateStore, tmp_path: Path
) -> None:
    """Tombstones expire after 7 days, dead letters after 30: a refused revision retried on
    day 8 must still see the later revision that was delivered (else it would go out under
    that revision's key, with other content). The tombstone goes with the last dead letter."""
    await dead_call(store, "700.1", 1, "http_400")
    await store.outbox_delivered(await _queue(store, "700.1", 2, closed=True))
    await dead_call(store, "800.1", 1, "http_400")  # a call refused, nothing delivered
    await store.ingest([cel("CHAN_START", "900.1", "900.1", row_id=9)], [], {})
    await store.outbox_delivered(await _queue(store, "900.1", 1, closed=True))  # no dead letter
    now = datetime.now(UTC)
    assert (await store.prune(now + timedelta(hours=2), keep_closed_for=0)).calls == 3
    week = 7 * 86400.0
    day8 = await store.prune(now + timedelta(days=8), keep_delivered_for=week)
    assert day8.tombstones_expired == 1  # 900.1's; 700.1 and 800.1 have dead letters
    ids = {x["payload"]["linkedid"]: x["id"] for x in await store.dead_letters()}
    done = dict(await store.requeue_dead_letters(now=now + timedelta(days=8)))
    # 700.1's revision 2 was delivered: its refused revision 1 is superseded, not sent as 2
    assert done == {ids["700.1"]: None, ids["800.1"]: "pbx1:800.1:2"}
    await store.outbox_delivered([i.id for i in await store.outbox_due(now + timedelta(days=9), 9)])
    with closing(sqlite3.connect(tmp_path / "state.db")) as c:
        left = {lid for (lid,) in c.execute("SELECT linkedid FROM tombstones")}
        plan = " ".join(str(r[-1]) for r in c.execute(
            "EXPLAIN QUERY PLAN SELECT 1 FROM dead_letters WHERE kind = 'call' AND call_key = ?",
            ("700.1",),
        ))  # fmt: skip
    assert left == {"700.1", "800.1"}
    assert "INDEX dead_letters_call (kind=? AND call_key=?)" in plan
    # 800.1's dead letter went back to the outbox (and was delivered); 700.1's was dropped:
    # with no dead letter left, their tombstones expire at the next prune
    assert await store.dead_letters() == []
    later = await store.prune(now + timedelta(days=9), keep_delivered_for=week)
    assert later.tombstones_expired == 2


async def test_a_requeued_recording_follows_its_call_into_the_survivor(
    store: StateStore,
) -> None:
    """As merge_calls moves outbox rows: the upload counts against the call that holds
    it now (prune keeps the call while it is queued), under the same key."""
    await store.ingest([cel("CHAN_START", "9.1", "9.1", row_id=1)], [])
    await store.ingest([cel("CHAN_START", "9.5", "9.5", row_id=2)], [])
    assert await store.enqueue("recording", "pbx1:rec:a.wav", {"linkedid": "9.5"}, "9.5")
    (item,) = await store.outbox_due(datetime.now(UTC) + timedelta(days=1), 10)
    assert await store.outbox_dead(item.id, 413, "too large", "http_413")
    await _merge_9_5_into_9_1(store)
    (d,) = await store.dead_letters()
    assert await store.requeue_dead_letters() == [(d["id"], "pbx1:rec:a.wav")]
    (again,) = await store.outbox_due(datetime.now(UTC) + timedelta(days=1), 10)
    assert (again.kind, again.call_key, again.payload) == ("recording", "9.1", {"linkedid": "9.5"})
