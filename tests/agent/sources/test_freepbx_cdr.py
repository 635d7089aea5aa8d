"""FreePBX / Issabel CDR tables without an id column: no CDR row is missed, however
long the call, against real MariaDB (FreePBX's DDL), PostgreSQL and SQLite.

Calls of several hours are simulated by back-dating: a row whose calldate is 3 h
ago is inserted now, while the poller runs, exactly as Asterisk writes the CDR of
a 3 h call when it hangs up.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from sipstack_agent.config import DatabaseSettings, Settings
from sipstack_agent.metrics import Metrics
from sipstack_agent.model import CDR_OPTIONAL_COLUMNS, CdrRow
from sipstack_agent.rules.checks import Status
from sipstack_agent.sources.sql.check import inspect
from sipstack_agent.sources.sql.poller import SqlSource
from sipstack_agent.state import StateStore

DIALECTS = ("postgresql", "mysql", "sqlite")


@pytest.fixture
async def store(tmp_path: Path):
    s = await StateStore.open(tmp_path / "state.db")
    yield s
    await s.close()


def cdr(uid: str, start: datetime, duration: int, **kw: Any) -> CdrRow:
    base: dict[str, Any] = {
        "src": "6135550199",
        "dst": "100",
        "channel": f"PJSIP/trunk-{uid}",
        "dstchannel": "PJSIP/100-0001",
        "disposition": "ANSWERED",
        "billsec": max(0, duration - 5),
        "lastapp": "Dial",
        "dcontext": "from-trunk",
        "amaflags": "3",  # Asterisk writes every column (FreePBX's are NOT NULL)
        "sequence": 0,
    }
    extras = tuple((k, str(kw.pop(k))) for k in CDR_OPTIONAL_COLUMNS if k in kw)
    base.update(kw)
    base.setdefault("linkedid", uid)
    return CdrRow(calldate=start.replace(microsecond=0), uniqueid=uid, duration=duration,
                  extras=extras, **base)  # fmt: skip


def make_source(db: DatabaseSettings, store: StateStore, **kw: Any) -> SqlSource:
    kw.setdefault("start_from", "latest")
    kw.setdefault("poll_interval", 0.05)
    kw.setdefault("lookback_seconds", 20.0)
    return SqlSource(Settings(database=db, **kw), "cdr", store, Metrics())


async def stored_uniqueids(store: StateStore) -> list[str]:
    recs = await store.load_calls(await store.due_calls(datetime.now(UTC), 100_000))
    return sorted(c.uniqueid for r in recs for c in r.cdrs)


async def wait_for(pred: Callable[[], Awaitable[bool]], timeout: float = 30.0) -> bool:
    loop = asyncio.get_running_loop()
    end = loop.time() + timeout
    while loop.time() < end:
        if await pred():
            return True
        await asyncio.sleep(0.05)
    return await pred()


@pytest.mark.parametrize("dialect", DIALECTS)
async def test_cdr_only_long_calls_written_live_are_all_read(
    dialect: str, make_pbx_db: Callable[..., Awaitable[Any]], store: StateStore
) -> None:
    """CDR only, look-back 20 s: rows of a 70 s, a 1 h and a 3 h call, written while the
    poller runs, all arrive; a short call too; nothing arrives twice."""
    pbx = await make_pbx_db(dialect, freepbx=True, timezone="America/Toronto")
    now = datetime.now(UTC)
    await pbx.writer.insert_cdr([cdr("1700000000.1", now - timedelta(hours=2), 60)])  # history
    src = make_source(pbx.settings, store, cel_mode="none")
    stop = asyncio.Event()
    task = asyncio.create_task(src.run(stop))
    try:
        assert await wait_for(lambda: asyncio.sleep(0, src.connected))
        rows = [
            cdr("1700000001.1", now - timedelta(seconds=3), 3),
            cdr("1700000002.1", now - timedelta(seconds=70), 70),
            cdr("1700000003.1", now - timedelta(hours=1), 3600),
            cdr("1700000004.1", now - timedelta(hours=3), 3 * 3600, did="6135550100"),
        ]
        for r in rows:  # one commit each, a poll or two apart
            await pbx.writer.insert_cdr([r])
            await asyncio.sleep(0.15)
        want = sorted(r.uniqueid for r in rows)
        assert await wait_for(lambda: _has(store, want)), (src.status(), src.last_error)
    finally:
        stop.set()
        await task
    got = await stored_uniqueids(store)
    assert got == want  # the history row (ended before the start) is not shipped
    (long_call,) = [
        c
        for r in await store.load_calls([await store.find_call("1700000004.1") or ""])
        for c in r.cdrs
    ]
    assert long_call.extra("did") == "6135550100"
    assert long_call.duration == 3 * 3600


async def _has(store: StateStore, want: list[str]) -> bool:
    return set(want) <= set(await stored_uniqueids(store))


@pytest.mark.parametrize("dialect", DIALECTS)
async def test_restart_after_a_long_call_ended_meanwhile_reads_it(
    dialect: str, make_pbx_db: Callable[..., Awaitable[Any]], store: StateStore
) -> None:
    """The end position is durable: a 3 h call that ends while the agent is stopped is
    read after the restart (its calldate is far behind every position)."""
    pbx = await make_pbx_db(dialect, freepbx=True)
    now = datetime.now(UTC)
    await pbx.writer.insert_cdr([cdr("1700000100.1", now - timedelta(seconds=30), 20)])
    src = make_source(pbx.settings, store, cel_mode="none", start_from="beginning")
    await src.poll_once()
    await src.close()
    assert await stored_uniqueids(store) == ["1700000100.1"]
    pos = await store.get_position(src.position_name)
    assert pos is not None and "end_time" in pos
    await pbx.writer.insert_cdr([cdr("1700000101.1", now - timedelta(hours=3), 3 * 3600 - 5)])
    src2 = make_source(pbx.settings, store, cel_mode="none", start_from="beginning")
    await src2.poll_once()
    await src2.close()
    assert await stored_uniqueids(store) == ["1700000100.1", "1700000101.1"]


@pytest.mark.parametrize("dialect", DIALECTS)
async def test_lookup_by_uniqueid_fetches_the_rows_of_an_ended_call(
    dialect: str, make_pbx_db: Callable[..., Awaitable[Any]], store: StateStore
) -> None:
    """With a CEL feed the end sweep runs only every look-back / 4: the rows of a call
    CEL reported ended are fetched at once by uniqueid."""
    pbx = await make_pbx_db(dialect, freepbx=True)
    src = make_source(pbx.settings, store, cel_mode="db", lookback_seconds=600.0)
    await src.poll_once()  # anchors; the first (full) sweep runs now
    assert src.cdr_lookup_active
    start = datetime.now(UTC) - timedelta(hours=3)
    legs = [
        cdr("1700000200.1", start, 3 * 3600, linkedid="1700000200.1"),
        cdr("1700000200.2", start + timedelta(seconds=4), 3 * 3600 - 4, linkedid="1700000200.1",
            channel="PJSIP/100-0002", sequence=2),
    ]  # fmt: skip
    await pbx.writer.insert_cdr(legs)
    await src.poll_once()
    assert await stored_uniqueids(store) == []  # not swept yet (look-back / 4 = 150 s)
    src.request_cdr_lookup("1700000200.1", ["1700000200.1", "1700000200.2"], start)
    await src.poll_once()
    assert await stored_uniqueids(store) == ["1700000200.1", "1700000200.2"]
    assert src._end is not None and not src._end.pending and src._end.lookups == 1
    await src.poll_once()  # done: no second query
    assert src._end.lookups == 1
    await src.close()


async def test_lookup_of_a_call_without_cdr_is_retried_then_given_up(
    make_pbx_db: Callable[..., Awaitable[Any]], store: StateStore
) -> None:
    pbx = await make_pbx_db("sqlite", freepbx=True)
    src = make_source(pbx.settings, store, cel_mode="db", cdr_lookup_wait=0.3)
    await src.poll_once()
    src.request_cdr_lookup("1700000300.1", ["1700000300.1"], datetime.now(UTC))
    await src.poll_once()
    await src.poll_once()
    assert src._end is not None and src._end.lookups == 2 and src._end.pending
    await asyncio.sleep(0.35)
    await src.poll_once()
    assert not src._end.pending
    assert src._end.lookups == 2
    await src.close()


@pytest.mark.parametrize("dialect", DIALECTS)
async def test_check_recognises_the_freepbx_layout_and_says_what_it_does(
    dialect: str, make_pbx_db: Callable[..., Awaitable[Any]]
) -> None:
    pbx = await make_pbx_db(dialect, freepbx=True)
    settings = Settings(database=pbx.settings, cdr_max_call_duration=7200, cel_mode="db")
    res = {r.name: r for r in await inspect(pbx.settings, settings=settings)}
    plan = res["cdr reading"]
    assert plan.status is Status.OK
    assert "FreePBX/Issabel layout" in plan.detail and "no id column" in plan.detail
    assert "CDR_MAX_CALL_DURATION=7200 s" in plan.detail
    assert "uniqueid IN (...)" in plan.detail and "CDR_LOOKUP_WAIT=15 s" in plan.detail
    assert "recordingfile -> the recording under RECORDING_PATHS/YYYY/MM/DD/" in plan.detail
    assert "did -> dnid" in plan.detail and "cnum/cnam" in plan.detail
    assert res["cdr indexes"].status is Status.OK and "uniqueid" in res["cdr indexes"].detail
    cdr_only = Settings(database=pbx.settings, cel_mode="none")
    res = {r.name: r for r in await inspect(pbx.settings, cel=False, settings=cdr_only)}
    assert "every poll" in res["cdr reading"].detail
    assert "uniqueid IN" not in res["cdr reading"].detail


async def test_check_on_an_id_less_table_without_a_uniqueid_index_warns(
    make_pbx_db: Callable[..., Awaitable[Any]],
) -> None:
    pbx = await make_pbx_db("mysql", with_id=False)  # calldate and linkedid indexed only
    res = {r.name: r for r in await inspect(pbx.settings)}
    idx = res["cdr indexes"]
    assert idx.status is Status.WARN and "uniqueid" in idx.detail
    assert f"CREATE INDEX {pbx.settings.table_cdr}_uniqueid_idx" in idx.hint
    assert "FreePBX" not in res["cdr reading"].detail


@pytest.mark.parametrize("dialect", DIALECTS)
async def test_end_sweep_pages_ties_and_keeps_a_bounded_memory(
    dialect: str, make_pbx_db: Callable[..., Awaitable[Any]], store: StateStore
) -> None:
    """1500 calls ending 3 s apart (simulated clock running ahead) and 60 sharing one
    end second, read in pages of 50: all stored once; the memory of row keys keeps only
    the rows ending inside the look-back window."""
    pbx = await make_pbx_db(dialect, freepbx=True)
    src = make_source(pbx.settings, store, cel_mode="none", batch_size=50,
                      max_records_per_poll=400)  # fmt: skip
    await src.poll_once()
    now = datetime.now(UTC).replace(microsecond=0)
    rows = [cdr(f"1700001000.{i}", now - timedelta(hours=2), 7200 + 3 * i) for i in range(1500)]
    tie = now + timedelta(seconds=3 * 1500 + 60)
    rows += [cdr(f"1700002000.{i}", tie - timedelta(seconds=30 + i), 30 + i) for i in range(60)]
    await pbx.writer.insert_cdr(rows)
    for _ in range(50):
        await src.poll_once()
        if not src.backlog:
            break
    assert await stored_uniqueids(store) == sorted(r.uniqueid for r in rows)
    assert src._end is not None and len(src._end.seen) <= 60 + 20 // 3 + 3
    await src.poll_once()  # nothing new: nothing stored again
    assert len(await stored_uniqueids(store)) == len(rows)
    await src.close()


@pytest.mark.parametrize("dialect", DIALECTS)
async def test_a_call_across_a_dst_change_is_not_missed(
    dialect: str, make_pbx_db: Callable[..., Awaitable[Any]], store: StateStore
) -> None:
    """PBX in local time: 01:30 EST + 1 h is 03:30 EDT, but naive SQL arithmetic says 02:30.
    The sweep widens its bound by the DST shift, so the row is still read."""
    pbx = await make_pbx_db(dialect, freepbx=True, timezone="America/Toronto")
    src = make_source(pbx.settings, store, cel_mode="none")
    await src.poll_once()
    before = datetime(2027, 3, 14, 6, 30, tzinfo=UTC)  # 01:30 EST
    await pbx.writer.insert_cdr([cdr("1800000000.1", before + timedelta(minutes=30), 1740)])
    await src.poll_once()  # the newest end is now 07:29 UTC (03:29 EDT)
    await pbx.writer.insert_cdr([cdr("1800000001.1", before, 3600)])  # ends 07:30 UTC
    await src.poll_once()
    assert await stored_uniqueids(store) == ["1800000000.1", "1800000001.1"]
    await src.close()
