"""The write-through cache (state/rowcache.py): `load_calls` returns exactly what a store
without it returns, through merges, duplicates, late rows, evictions, a failed ingest,
prune and a restart; and it does serve hits."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from sipstack_agent.model import CdrRow, CelRow, RecordingFile, ShipState
from sipstack_agent.state import StateStore

T0 = datetime(2026, 11, 24, 4, 39, 20, tzinfo=UTC)
PLUS = ZoneInfo("Europe/Berlin")  # read back as a fixed offset: equal, not the same tzinfo


@dataclass
class Ev:
    documents: list[dict[str, Any]] = field(default_factory=list)
    ship: ShipState = field(default_factory=ShipState)
    next_check_at: datetime | None = None
    closed: bool = False


def _row(i: int, lid: int, uid: int, cdr: bool, odd_time: bool) -> CelRow | CdrRow:
    t = T0 + timedelta(seconds=i)
    if odd_time:
        t = t.astimezone(PLUS)  # read back with another tzinfo object: never cached
    if cdr:
        return CdrRow(calldate=t, uniqueid=f"5.{uid}", linkedid=f"5.{lid}", row_id=i)
    return CelRow(
        eventtype="CHAN_START", eventtime=t, uniqueid=f"5.{uid}", linkedid=f"5.{lid}", row_id=i
    )


_op = st.one_of(
    st.tuples(
        st.just("ingest"),
        st.lists(
            st.tuples(
                st.integers(0, 40),  # row id (a repeat is a duplicate)
                st.integers(0, 9),
                st.integers(0, 9),
                st.booleans(),
                st.integers(0, 15).map(lambda n: n == 0),
            ),
            min_size=1,
            max_size=12,
        ),
    ),
    st.tuples(st.just("evaluate"), st.booleans()),
    st.tuples(st.just("prune"), st.just(None)),
    st.tuples(st.just("fail"), st.integers(0, 9)),
    st.tuples(st.just("recording"), st.integers(0, 9)),
    st.tuples(st.just("restart"), st.just(None)),
)


async def _apply(store: StateStore, op: tuple[str, Any], step: int) -> None:
    kind, arg = op
    if kind == "ingest":
        rows = [_row(*r) for r in arg]
        await store.ingest(
            [r for r in rows if isinstance(r, CelRow)], [r for r in rows if isinstance(r, CdrRow)]
        )
    elif kind == "evaluate":
        keys = sorted(await store.due_calls(T0 + timedelta(days=1), 100))
        await store.load_calls(keys)
        await store.save_evaluations([(k, Ev(closed=arg)) for k in keys], now=T0)
    elif kind == "prune":
        await store.prune(T0 + timedelta(days=1), 3600)
    elif kind == "fail":
        bad = CelRow("CHAN_START", T0, f"5.{arg}", f"5.{arg}", row_id=1000 + step)
        object.__setattr__(bad, "eventtime", "not a datetime")
        good = CelRow("HANGUP", T0, f"5.{arg}", f"5.{arg}", row_id=2000 + step)
        with pytest.raises(AttributeError):
            await store.ingest([good, bad], [])
    elif kind == "recording":
        rec = RecordingFile(f"r{step}.wav", f"/r/r{step}.wav", "filesystem")
        await store.add_recordings(f"5.{arg}", [rec])


async def _everything(store: StateStore) -> list[Any]:
    keys = sorted(await store.due_calls(T0 + timedelta(days=1), 1000))
    keys += [f"5.{i}" for i in range(10)]  # known or not, merged away or not
    recs = await store.load_calls(keys)
    # datetimes compare equal across tzinfo objects: compare those too
    return [
        (r, [c.eventtime.tzinfo for c in r.cels], [d.calldate.tzinfo for d in r.cdrs]) for r in recs
    ]


@settings(max_examples=80, deadline=None)
@given(ops=st.lists(_op, min_size=1, max_size=14), cap=st.sampled_from([3, 10, 1000]))
async def test_load_calls_is_the_same_with_and_without_the_cache(
    tmp_path_factory: pytest.TempPathFactory, ops: list[tuple[str, Any]], cap: int
) -> None:
    path = tmp_path_factory.mktemp("cache") / "state.db"
    cached = await StateStore.open(path)
    cached.row_cache.cap = cap
    plain = await StateStore.open(":memory:")
    plain.row_cache.cap = 0
    try:
        for step, op in enumerate(ops):
            if op[0] == "restart":  # a restart starts with an empty cache
                await cached.close()
                cached = await StateStore.open(path)
                cached.row_cache.cap = cap
                continue
            await _apply(cached, op, step)
            await _apply(plain, op, step)
            assert await _everything(cached) == await _everything(plain)
            assert cached.row_cache.rows <= cap
    finally:
        await cached.close()
        await plain.close()


async def test_rows_just_stored_are_served_from_memory(tmp_path: Path) -> None:
    store = await StateStore.open(tmp_path / "state.db")
    try:
        rows = [CelRow("CHAN_START", T0, f"6.{i}", f"6.{i % 3}", row_id=i) for i in range(9)]
        await store.ingest(rows, [CdrRow(calldate=T0, uniqueid="6.0", linkedid="6.0", row_id=1)])
        before = store.row_cache.stats()
        recs = await store.load_calls(["6.0", "6.1", "6.2"])
        after = store.row_cache.stats()
        assert (after.hits - before.hits, after.misses - before.misses) == (3, 0)
        assert [c.row_id for c in recs[0].cels] == [0, 3, 6] and len(recs[0].cdrs) == 1
        assert recs[0].cels[0] is rows[0]  # the ingested object itself, not read back
    finally:
        await store.close()
    store = await StateStore.open(tmp_path / "state.db")  # a restart reads the store
    try:
        (rec,) = await store.load_calls(["6.0"])
        assert [c.row_id for c in rec.cels] == [0, 3, 6] and rec.cels[0] is not rows[0]
        assert rec.cels == recs[0].cels and store.row_cache.stats().misses == 1
    finally:
        await store.close()


async def test_a_pruned_call_s_rows_leave_the_cache(tmp_path: Path) -> None:
    store = await StateStore.open(tmp_path / "state.db")
    try:
        await _apply(store, ("ingest", [(1, 1, 1, False, False), (2, 1, 1, True, False)]), 0)
        await _apply(store, ("evaluate", True), 1)
        await _apply(store, ("prune", None), 2)
        assert store.row_cache.rows == 0
        await _apply(store, ("ingest", [(3, 1, 1, False, False)]), 3)  # the same linkedid
        (rec,) = await store.load_calls(["5.1"])
        assert [c.row_id for c in rec.cels] == [3] and rec.cdrs == []
    finally:
        await store.close()


async def test_rows_in_another_zone_are_read_back_as_the_store_has_them(tmp_path: Path) -> None:
    store = await StateStore.open(tmp_path / "state.db")
    try:
        await _apply(store, ("ingest", [(1, 1, 1, False, False), (2, 1, 1, False, True)]), 0)
        (rec,) = await store.load_calls(["5.1"])
        assert [type(c.eventtime.tzinfo) for c in rec.cels] == [type(UTC), type(UTC)]
        assert rec.cels[1].eventtime == T0 + timedelta(seconds=2)
    finally:
        await store.close()
