"""The state store, the evaluator and the watermark board together (no PBX, no process).

- A call held for the sources' watermarks is due again exactly when the low
  watermark reaches its `wait_mark` (the evaluator re-reads it then, no polling).
- After a merge, the surviving call keeps its own revisions (Idempotency-Key is
  per linkedid) and every later document names what it supersedes.
- The v1 state file of an older agent is migrated.
"""

from __future__ import annotations

import sqlite3
from contextlib import closing
from dataclasses import replace
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from sipstack_agent.app import Agent
from sipstack_agent.calls.derive import cdr_end
from sipstack_agent.calls.settle import NOTHING_READ, end_point
from sipstack_agent.config import CallSettings, Identity, Settings
from sipstack_agent.model import CdrRow, CelRow
from sipstack_agent.state import SCHEMA_VERSION, Deferral, StateStore
from sipstack_agent.state.schema import SCHEMA_V1
from sipstack_agent.watermarks import READ_THROUGH_SLACK, Watermarks

from .calls.helpers import Seq
from .calls.live_sequences import commit_order, committed_at, pickup


def _agent(tmp_path: Path, **calls: Any) -> Agent:
    settings = replace(
        Settings(),
        state_dir=str(tmp_path),
        calls=replace(CallSettings(), **calls),
        identity=Identity(connector_id="t"),
    )
    return Agent(settings)


async def _docs(store: StateStore) -> list[dict[str, Any]]:
    far = committed_at(pickup(Seq()).cels[-1]) + timedelta(days=1)
    return [i.payload for i in await store.outbox_due(far, 1000, kind="call")]


def _split(rows: list[CelRow | CdrRow]) -> tuple[list[CelRow], list[CdrRow]]:
    return [r for r in rows if isinstance(r, CelRow)], [r for r in rows if isinstance(r, CdrRow)]


async def test_held_call_is_due_when_the_low_watermark_reaches_it(tmp_path: Path) -> None:
    agent = _agent(tmp_path)
    board = agent.watermarks
    board.register("sql:cel:cel")
    board.register("sql:cdr:cdr")
    call = pickup(Seq())
    store = await StateStore.open(tmp_path / "state.db", connector_id="t")
    agent.store = store
    try:
        now = call.last_cel_at + timedelta(hours=1)  # a backlog: every timeout has passed
        # The CDR poller ran ahead: the whole CDR table is read, the CEL poller is behind.
        await store.ingest([], call.cdrs, {})
        board.publish("sql:cdr:cdr", caught_up_at=now)
        board.publish("sql:cel:cel", newest=call.cels[0].eventtime - timedelta(minutes=1))
        keys = await store.due_calls(now, 100, watermark=board.low())
        assert keys == [call.key]
        assert await agent.evaluate_keys(keys, now) == 0  # held: no CDR-only document
        assert await store.due_calls(now, 100, watermark=board.low()) == []
        # The CEL poller reads the call's rows (page by page): it becomes dirty, is
        # evaluated, and is held again until the CEL poller has read past its end.
        cels, _ = _split(commit_order(call.cels, []))
        await store.ingest(cels, [], {})
        board.publish("sql:cel:cel", newest=call.last_cel_at)  # minus the slack: not past it
        assert await agent.evaluate_keys(await store.due_calls(now, 100), now) == 0
        assert await store.due_calls(now, 100, watermark=board.low()) == []
        board.publish("sql:cel:cel", newest=call.last_cel_at + READ_THROUGH_SLACK * 2)
        keys = await store.due_calls(now, 100, watermark=board.low())
        assert keys == [call.key]
        assert await agent.evaluate_keys(keys, now) == 1
        (doc,) = await _docs(store)
        assert (doc["linkedid"], doc["revision"], doc["ship_phase"]) == (call.key, 1, "complete")
        events = [t["event"] for t in doc["call_threads"]]
        assert events.count("CDR") == len(call.cdrs) and len(events) > len(call.cdrs)
        # without a holding source every waiting call is due (none is waiting any more)
        assert await store.due_calls(now, 100, watermark=None) == []
    finally:
        await store.close()


async def test_a_backlog_leaves_a_call_past_the_watermark_for_a_later_page(
    tmp_path: Path,
) -> None:
    """While a source reads a backlog page by page, a call whose newest row is past the
    low watermark is not evaluated (the evaluation could only hold it, and would be done
    again): it is due once a page moves the watermark past it, and evaluated once."""
    agent = _agent(tmp_path)
    board = agent.watermarks
    board.register("sql:cel:cel")
    board.register("sql:cdr:cdr")
    seq = Seq()
    call = pickup(seq)
    store = await StateStore.open(tmp_path / "state.db", connector_id="t")
    agent.store = store
    ev = agent.evaluator
    try:
        now = call.last_cel_at + timedelta(hours=1)
        board.publish("sql:cdr:cdr", caught_up_at=now)
        await store.ingest(*_split(commit_order(call.cels, call.cdrs)), {})
        newest = max([c.eventtime for c in call.cels] + [cdr_end(d) for d in call.cdrs])
        with closing(sqlite3.connect(tmp_path / "state.db")) as c:
            (stored,) = c.execute("SELECT last_event FROM calls").fetchone()
        assert stored == end_point(newest).timestamp()
        # the page with the call's last rows is stored; the watermark is still before it
        board.publish("sql:cel:cel", newest=call.cels[1].eventtime, behind=True)
        low = board.low()
        assert low is not None
        assert ev.defer_point(low) == Deferral(low, low - timedelta(seconds=30), 21600.0)
        # a source registered but not read yet holds the watermark at NOTHING_READ: the
        # deferral is floored there (an agent starting on a backlog once raised
        # OverflowError and restarted its evaluator)
        board.register("ami")
        assert board.low() == NOTHING_READ
        assert ev.defer_point(NOTHING_READ) == Deferral(NOTHING_READ, NOTHING_READ, 21600.0)
        board.release("ami")
        assert await store.due_calls(now, 100, watermark=low, defer=ev.defer_point(low)) == []
        # live (no source behind) the same call is evaluated at once, as always
        board.publish("sql:cel:cel", behind=False)
        assert ev.defer_point(board.low()) is None
        assert await store.due_calls(now, 100, watermark=board.low()) == [call.key]
        # the next page passes its end: due, and shipped complete by its first evaluation
        board.publish("sql:cel:cel", newest=newest + READ_THROUGH_SLACK * 2, behind=True)
        low = board.low()
        keys = await store.due_calls(now, 100, watermark=low, defer=ev.defer_point(low))
        assert keys == [call.key]
        assert await agent.evaluate_keys(keys, now) == 1 and ev.evaluated_total == 1
        (doc,) = await _docs(store)
        assert doc["ship_phase"] == "complete"
        # a source stuck mid-backlog only delays a call, at most CALL_MAX_AGE after its
        # rows (as long as a hold for the watermark lasts)
        late = pickup(seq, at=600.0)
        await store.ingest(*_split(commit_order(late.cels, late.cdrs)), {})
        defer = ev.defer_point(low)
        assert defer is not None and defer.at_most == agent.evaluator.call_settings.max_age
        assert await store.due_calls(now, 100, watermark=low, defer=defer) == []
        stuck = replace(defer, at_most=0.0)  # as if the rows were CALL_MAX_AGE old
        assert await store.due_calls(now, 100, watermark=low, defer=stuck) == [late.key]
    finally:
        await store.close()


async def test_a_backlog_leaves_an_open_call_for_a_later_page(tmp_path: Path) -> None:
    """In a backlog, a call whose LINKEDID_END is not stored yet is left for later until
    the watermark is CALL_IDLE_TIMEOUT past its newest row (its end, or its idle timeout,
    is in rows not read yet); its LINKEDID_END makes it due as an ended call."""
    agent = _agent(tmp_path, idle_timeout=20.0)
    board = agent.watermarks
    board.register("sql:cel:cel")
    seq = Seq()
    ended_call, open_call = pickup(seq), pickup(seq, at=60.0)
    assert ended_call.key != open_call.key
    store = await StateStore.open(tmp_path / "state.db", connector_id="t")
    agent.store = store
    ev = agent.evaluator
    try:
        now = ended_call.last_cel_at + timedelta(hours=1)
        head = [r for r in open_call.cels if r.eventtype != "LINKEDID_END"]
        assert len(head) < len(open_call.cels)
        await store.ingest(head, [], {})
        await store.ingest(ended_call.cels, [], {})
        newest = max(r.eventtime for r in head)
        assert newest > ended_call.last_cel_at

        def due_at(mark: datetime) -> Any:
            board.publish("sql:cel:cel", newest=mark + READ_THROUGH_SLACK, behind=True)
            low = board.low()
            return store.due_calls(now, 100, watermark=low, defer=ev.defer_point(low))

        # the mark past both calls' newest rows: the ended call is due, the open one is
        # left for later until the mark is the idle timeout past its newest row
        assert await due_at(newest + timedelta(seconds=1)) == [ended_call.key]
        assert await due_at(newest + timedelta(seconds=19)) == [ended_call.key]
        assert set(await due_at(newest + timedelta(seconds=21))) == {
            ended_call.key,
            open_call.key,
        }
    finally:
        await store.close()


async def test_merged_calls_keep_their_newest_row_and_their_end(tmp_path: Path) -> None:
    from .test_state import cel

    store = await StateStore.open(tmp_path / "state.db", connector_id="t")
    try:
        await store.ingest([cel("CHAN_START", "9.1", "9.1", row_id=1)], [])
        await store.ingest([cel("LINKEDID_END", "9.5", "9.5", row_id=2)], [])
        await store.ingest([cel("BRIDGE_EXIT", "9.5", "9.1", row_id=3)], [])  # 9.5 joins 9.1
        with closing(sqlite3.connect(tmp_path / "state.db")) as c:
            rows = c.execute("SELECT call_key, last_event, has_end FROM calls").fetchall()
        assert [(k, e is not None, h) for k, e, h in rows] == [("9.1", True, 1)]
    finally:
        await store.close()


async def test_the_defer_point_leaves_room_for_ship_complete_after(tmp_path: Path) -> None:
    agent = _agent(tmp_path, ship_complete_after=3.0)
    agent.store = await StateStore.open(tmp_path / "state.db", connector_id="t")
    try:
        board, ev = agent.watermarks, agent.evaluator
        board.register("a")
        t = pickup(Seq()).last_cel_at
        board.publish("a", newest=t, behind=True)
        low = t - READ_THROUGH_SLACK - timedelta(seconds=3)
        assert ev.defer_point(board.low()) == Deferral(low, low - timedelta(seconds=30), 21600.0)
        board.release("a")  # a source that holds nothing is not behind
        assert not board.behind() and ev.defer_point(board.low()) is None
    finally:
        await agent.store.close()


async def test_a_merge_after_an_initial_document_supersedes_it(tmp_path: Path) -> None:
    """Progressive mode ships the picker's own linkedid at first sight; the merged call's
    documents keep their own revisions and say which document they replace."""
    agent = _agent(tmp_path, shipping_mode="progressive", ship_update_min_interval=0.0)
    call = pickup(Seq())
    own = call.linkedids[1]
    store = await StateStore.open(tmp_path / "state.db", connector_id="t")
    agent.store = store
    try:
        rows = commit_order(call.cels, call.cdrs)
        # the picker's channel (uniqueid = its own linkedid) shows up under the caller's
        joins = next(r for r in rows if r.uniqueid == own and r.call_linkedid == call.key)
        before: list[dict[str, Any]] = []
        for row in rows:  # one ingest + evaluation per row, at its time
            if row is joins:
                before = await _docs(store)
            at = committed_at(row)
            await store.ingest(*_split([row]), {})
            await agent.evaluate_keys(await store.due_calls(at, 100), at)
        end = call.last_cel_at + timedelta(seconds=1)
        await agent.evaluate_keys(await store.due_calls(end, 100), end)
        docs = await _docs(store)
        own_revs = [d["revision"] for d in before if d["linkedid"] == own]
        assert own_revs and own_revs == list(range(1, len(own_revs) + 1))
        # after the merge nothing more for the picker's linkedid
        assert [d["revision"] for d in docs if d["linkedid"] == own] == own_revs
        revs = [d["revision"] for d in docs if d["linkedid"] == call.key]
        assert revs == list(range(1, len(revs) + 1))  # per-linkedid revisions: 1..n
        merged = [d for d in docs if d["linkedid"] == call.key and own in d["linkedids"]]
        assert merged
        assert all(d["supersedes"] == [{"linkedid": own, "revision": own_revs[-1]}] for d in merged)
        assert docs[-1]["ship_phase"] == "complete" and docs[-1]["linkedid"] == call.key
    finally:
        await store.close()


async def test_revisions_stay_per_linkedid_when_both_calls_had_shipped(tmp_path: Path) -> None:
    from .test_state import Ev, cel, doc

    store = await StateStore.open(tmp_path / "state.db", connector_id="t")
    try:
        await store.ingest([cel("CHAN_START", "9.1", "9.1", row_id=1)], [])
        await store.ingest([cel("CHAN_START", "9.5", "9.5", row_id=2)], [])
        for key, rev in (("9.1", 1), ("9.5", 2)):
            rec = await store.load_call(key)
            assert rec is not None
            ship = replace(rec.ship, revision=rev, last_phase="update")
            assert await store.save_evaluation(key, Ev([doc(key, rev, "update")], ship))
        await store.ingest([cel("BRIDGE_EXIT", "9.5", "9.1", row_id=3)], [])  # 9.5 joins 9.1
        rec = await store.load_call("9.5")
        assert rec is not None and rec.call_key == "9.1"
        assert rec.ship.revision == 1 and rec.ship.last_phase == "update"
        assert rec.ship.extra["superseded"] == {"9.5": 2}
    finally:
        await store.close()


async def test_a_v1_state_file_is_migrated(tmp_path: Path) -> None:
    path = tmp_path / "state.db"
    with closing(sqlite3.connect(path)) as c:
        for stmt in SCHEMA_V1.split(";"):
            if stmt.strip():
                c.execute(stmt)
        c.execute(
            "INSERT INTO calls (call_key, dirty, next_check_at, created_at, last_row_at) "
            "VALUES ('1.1', 0, NULL, 0, 0)"
        )
        c.execute("PRAGMA user_version = 1")
        c.commit()
    store = await StateStore.open(path)
    try:
        assert await store.schema_version() == SCHEMA_VERSION == 8
        assert await store.due_calls(committed_at(pickup(Seq()).cels[0]), 10, watermark=None) == []
    finally:
        await store.close()
    with closing(sqlite3.connect(path)) as c:
        cols = {r[1] for r in c.execute("PRAGMA table_info(calls)")}
        tables = {r[0] for r in c.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
    assert "wait_mark" in cols
    assert "tombstones" in tables


def test_the_board_moves_forward_and_wakes_the_evaluator() -> None:
    woken: list[int] = []
    board = Watermarks(on_change=lambda: woken.append(1))
    call = pickup(Seq())
    t = call.last_cel_at
    assert board.low() is None  # nothing registered: nothing holds
    board.register("a")
    board.register("b")
    assert board.low() is not None and board.low() < t  # registered, silent: holds all
    board.publish("a", caught_up_at=t)
    board.publish("b", newest=t + timedelta(minutes=1))
    assert board.low() == t
    board.publish("a", caught_up_at=t - timedelta(hours=1))  # never backwards
    assert board.low() == t and len(woken) == 2
    board.release("a")  # e.g. AMI disconnected: what it misses is a gap, it holds nothing
    assert board.low() == t + timedelta(minutes=1) - READ_THROUGH_SLACK
    board.publish("a", caught_up_at=t + timedelta(hours=1))
    assert board.low() == t + timedelta(minutes=1) - READ_THROUGH_SLACK
    assert board.marks()["a"].holds and len(woken) == 4


@pytest.mark.parametrize("marked", [6, 7])
async def test_a_file_marked_back_for_a_rollback_opens_again(tmp_path: Path, marked: int) -> None:
    """docs/upgrade.md: before rolling an agent back to 0.15.x (0.16.x) the file is marked
    schema 6 (7) by hand (v7 and v8 only add columns and indexes); the next start of this
    version upgrades it again, finding what is already there."""
    path = tmp_path / "state.db"
    store = await StateStore.open(path)
    await store.close()
    with closing(sqlite3.connect(path)) as c:
        c.execute(f"PRAGMA user_version = {marked}")
        c.commit()
    store = await StateStore.open(path)
    try:
        assert await store.schema_version() == SCHEMA_VERSION == 8
    finally:
        await store.close()
    with closing(sqlite3.connect(path)) as c:
        cols = [r[1] for r in c.execute("PRAGMA table_info(calls)")]
        indexes = [r[1] for r in c.execute("PRAGMA index_list(dead_letters)")]
        indexes += [r[1] for r in c.execute("PRAGMA index_list(outbox)")]
    assert cols.count("last_event") == 1
    assert indexes.count("dead_letters_call") == indexes.count("outbox_kind_due") == 1
