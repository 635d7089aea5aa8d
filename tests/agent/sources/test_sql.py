"""SqlSource against real PostgreSQL, MariaDB and SQLite, as a SELECT-only user."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from sipstack_agent.config import DatabaseSettings, Settings
from sipstack_agent.metrics import Metrics
from sipstack_agent.model import CdrRow, CelRow
from sipstack_agent.sources.sql.convert import decode_text, to_utc
from sipstack_agent.sources.sql.poller import SqlSource
from sipstack_agent.sources.sql.table import SchemaError
from sipstack_agent.state import StateStore

T0 = datetime(2026, 11, 24, 4, 39, 20, tzinfo=UTC)
DIALECTS = ("postgresql", "mysql", "sqlite")
FLAVOR = {"postgresql": "postgres", "mysql": "mariadb", "sqlite": "postgres"}


@pytest.fixture
async def store(tmp_path: Path):
    s = await StateStore.open(tmp_path / "state.db")
    yield s
    await s.close()


def agent_settings(db: DatabaseSettings, **kw: Any) -> Settings:
    kw.setdefault("start_from", "beginning")
    kw.setdefault("poll_interval", 0.05)
    return Settings(database=db, **kw)


def source(
    db: DatabaseSettings, kind: str, store: StateStore, metrics: Metrics | None = None, **kw: Any
) -> SqlSource:
    return SqlSource(agent_settings(db, **kw), kind, store, metrics or Metrics())  # type: ignore[arg-type]


async def stored(store: StateStore) -> tuple[list[CelRow], list[CdrRow]]:
    """Every row in the store (all calls stay dirty: nobody evaluates them here)."""
    cels: list[CelRow] = []
    cdrs: list[CdrRow] = []
    for rec in await store.load_calls(await store.due_calls(datetime.now(UTC), 100_000)):
        cels += rec.cels
        cdrs += rec.cdrs
    key = lambda r: (r.source, r.row_id or 0, r.eventtime if isinstance(r, CelRow) else r.calldate)  # noqa: E731
    return sorted(cels, key=key), sorted(cdrs, key=key)


async def drain(src: SqlSource) -> int:
    total = 0
    for _ in range(1000):
        n = await src.poll_once()
        total += n
        if not src.backlog:
            break
    return total


def cel(
    i: int, linkedid: str = "", *, sec: float = 0, eventtype: str = "CHAN_START", **kw: Any
) -> CelRow:
    lid = linkedid or f"1795495000.{i}"
    return CelRow(
        eventtype=eventtype,
        eventtime=T0 + timedelta(seconds=sec),
        uniqueid=kw.pop("uniqueid", lid),
        linkedid=lid,
        channame=kw.pop("channame", f"SIP/100-{i:08x}"),
        **kw,
    )


def metric(m: Metrics, name: str, labels: dict[str, str] | None = None) -> float:
    v = m.registry.get_sample_value(name, labels or {})
    return 0.0 if v is None else v


# ----------------------------------------------------------------------------- the sample


async def test_real_asterisk_rows_come_back_exactly(
    pbx_db: Any, store: StateStore, asterisk_sample: Any
) -> None:
    settings, writer = pbx_db
    await writer.load_sample()
    flavor = FLAVOR[writer.dialect]
    m = Metrics()
    cel_src = source(settings, "cel", store, m)
    cdr_src = source(settings, "cdr", store, m)
    assert await drain(cel_src) == 76
    assert await drain(cdr_src) == 8
    cels, cdrs = await stored(store)
    assert cels == asterisk_sample.cel_rows(flavor)
    assert cdrs == asterisk_sample.cdr_rows(flavor)
    # times are aware UTC, microseconds kept where the database has them
    if writer.dialect != "mysql":
        assert cels[0].eventtime == datetime(2026, 11, 24, 4, 39, 20, 510110, tzinfo=UTC)
    assert all(c.eventtime.utcoffset() == timedelta(0) for c in cels)
    assert cdrs[0].clid == '"John Smith" <4085551234>' and cdrs[0].sequence == 0
    # nothing new: a poll stores nothing; positions are in the store
    assert await cel_src.poll_once() == 0
    pos = await store.get_position(f"sql:cel:{settings.table_cel}")
    assert pos is not None and pos["mode"] == "id" and pos["id"] == cels[-1].row_id
    assert metric(m, "cels_processed_total", {"source": "db"}) == 76
    assert metric(m, "cdrs_processed_total") == 8
    assert metric(m, "sipstack_linkedid_end_seen") == 1
    assert metric(m, "database_connection_status", {"source": "cel"}) == 1
    assert metric(m, "sipstack_checkpoint_lag_rows", {"table": settings.table_cel}) == 0
    # the newest row read is from 2026-11-24 04:40:55 (sample): its age is the lag in seconds
    lag = metric(m, "sipstack_checkpoint_lag_seconds", {"table": settings.table_cel})
    assert lag == pytest.approx((datetime.now(UTC) - cels[-1].eventtime).total_seconds(), abs=60)
    st = cel_src.status()
    assert st["connected"] and st["position"]["id"] == cels[-1].row_id and st["last_error"] == ""
    await cel_src.close()
    await cdr_src.close()


async def test_paging_budget_and_backlog(pbx_db: Any, store: StateStore) -> None:
    settings, writer = pbx_db
    await writer.insert_cel([cel(i) for i in range(1, 58)])
    m = Metrics()
    src = source(settings, "cel", store, m, batch_size=10, max_records_per_poll=25)
    assert await src.poll_once() == 25
    assert src.backlog
    assert metric(m, "sipstack_checkpoint_lag_rows", {"table": settings.table_cel}) == 57 - 25
    assert await src.poll_once() == 25
    assert await src.poll_once() == 7
    assert not src.backlog
    assert await src.poll_once() == 0
    cels, _ = await stored(store)
    assert [c.row_id for c in cels] == list(range(1, 58))
    await src.close()


# ----------------------------------------------------------------------------- start


@pytest.mark.parametrize("start", ["latest", "beginning", "iso"])
async def test_fresh_start(pbx_db: Any, store: StateStore, start: str) -> None:
    settings, writer = pbx_db
    await writer.insert_cel(
        [cel(i, sec=i * 60) for i in range(1, 11)]
    )  # rows 1..10, a minute apart
    kw: dict[str, Any] = {"start_from": start}
    if start == "iso":
        kw = {"start_from": (T0 + timedelta(seconds=6 * 60)).isoformat()}
    src = source(settings, "cel", store, **kw)
    await drain(src)
    await writer.insert_cel([cel(i, sec=i * 60) for i in range(11, 13)])
    await drain(src)
    cels, _ = await stored(store)
    expected = {"latest": [11, 12], "beginning": list(range(1, 13)), "iso": list(range(6, 13))}[
        start
    ]
    assert [c.row_id for c in cels] == expected
    # a restart with a stored position neither floods history nor re-reads below the anchor
    await src.close()
    src2 = source(settings, "cel", store, **kw)
    assert await drain(src2) == 0
    await src2.close()


async def test_start_from_time_setting(pbx_db: Any, store: StateStore) -> None:
    settings, writer = pbx_db
    await writer.insert_cel([cel(i, sec=i) for i in range(1, 6)])
    src = SqlSource(
        Settings(database=settings, start_from="", start_from_time=T0 + timedelta(seconds=4)),
        "cel",
        store,
        Metrics(),
    )
    await drain(src)
    cels, _ = await stored(store)
    assert [c.row_id for c in cels] == [4, 5]
    await src.close()


# ----------------------------------------------------------------------------- positions


@pytest.mark.parametrize("dialect", ["postgresql", "mysql"])
async def test_out_of_order_commits_are_not_skipped(
    make_pbx_db: Callable[..., Awaitable[Any]], store: StateStore, dialect: str
) -> None:
    settings, writer = await make_pbx_db(dialect)
    await writer.insert_cel([cel(i) for i in range(1, 9)])
    src = source(settings, "cel", store)
    assert await drain(src) == 8
    async with writer.transaction() as slow:
        (id9,) = await slow.insert_cel([cel(9)])  # id 9 allocated, not committed
        (id10,) = await writer.insert_cel([cel(10)])  # id 10 commits first
        assert (id9, id10) == (9, 10)
        assert await drain(src) == 1  # only 10 is visible
        cels, _ = await stored(store)
        assert [c.row_id for c in cels][-1] == 10
        assert 9 not in {c.row_id for c in cels}
    # 9 commits after the checkpoint passed it: the hole re-read finds it
    assert await drain(src) == 1
    cels, _ = await stored(store)
    assert [c.row_id for c in cels] == list(range(1, 11))
    await src.close()


async def test_late_lower_id_found_on_every_dialect(pbx_db: Any, store: StateStore) -> None:
    """Id 10 visible before id 9 (explicit ids: SQLite has one writer at a time)."""
    settings, writer = pbx_db
    await writer.insert_cel([replace(cel(i), row_id=i) for i in range(1, 9)])
    src = source(settings, "cel", store)
    await drain(src)
    await writer.insert_cel([replace(cel(10), row_id=10)])
    assert await drain(src) == 1
    await writer.insert_cel([replace(cel(9), row_id=9)])
    assert await drain(src) == 1
    # and after a restart the overlap re-read finds a row that appeared while the agent was down
    await src.close()
    await writer.insert_cel([replace(cel(11), row_id=11)])
    src2 = source(settings, "cel", store)
    assert await drain(src2) == 1
    cels, _ = await stored(store)
    assert [c.row_id for c in cels] == list(range(1, 12))
    await src2.close()


async def test_overlap_reread_after_restart_finds_rows_committed_meanwhile(
    pbx_db: Any, store: StateStore
) -> None:
    settings, writer = pbx_db
    await writer.insert_cel([replace(cel(i), row_id=i) for i in (1, 2, 3, 5, 6)])
    src = source(settings, "cel", store)
    await drain(src)
    await src.close()  # agent stops; in-memory holes are gone
    await writer.insert_cel([replace(cel(4), row_id=4)])  # the late commit of id 4
    src2 = source(settings, "cel", store)
    assert await drain(src2) == 1
    cels, _ = await stored(store)
    assert [c.row_id for c in cels] == [1, 2, 3, 4, 5, 6]
    await src2.close()


async def test_id_regression_reanchors(pbx_db: Any, store: StateStore) -> None:
    settings, writer = pbx_db
    await writer.insert_cel([cel(i, sec=i) for i in range(1, 21)])
    m = Metrics()
    src = source(settings, "cel", store, m)
    assert await drain(src) == 20
    await writer.truncate(settings.table_cel)  # ids restart at 1
    await writer.insert_cel([cel(100 + i, sec=100 + i) for i in range(1, 4)])
    await drain(src)
    await drain(src)
    assert metric(m, "sipstack_id_regressions_total", {"table": settings.table_cel}) == 1
    cels, _ = await stored(store)
    old = [c for c in cels if c.source == "db"]
    new = [c for c in cels if c.source == "db~1"]
    assert [c.row_id for c in old] == list(range(1, 21))
    assert [c.row_id for c in new] == [1, 2, 3]  # same ids as old rows, not taken for duplicates
    assert [c.linkedid for c in new] == [f"1795495000.{100 + i}" for i in range(1, 4)]
    pos = await store.get_position(f"sql:cel:{settings.table_cel}")
    assert pos is not None and pos["epoch"] == 1 and pos["id"] == 3
    # it stays anchored: more rows flow, no second regression
    await writer.insert_cel([cel(200, sec=200)])
    assert await drain(src) == 1
    assert metric(m, "sipstack_id_regressions_total", {"table": settings.table_cel}) == 1
    await src.close()


# ----------------------------------------------------------------------------- no id


@pytest.mark.parametrize("dialect", DIALECTS)
async def test_table_without_id_reads_by_time(
    make_pbx_db: Callable[..., Awaitable[Any]], store: StateStore, dialect: str
) -> None:
    settings, writer = await make_pbx_db(dialect, with_id=False)
    rows = [cel(i, linkedid="1795495100.1", sec=i // 3, eventtype=f"E{i}") for i in range(1, 10)]
    await writer.insert_cel(rows)
    src = source(settings, "cel", store, lookback_seconds=120)
    assert await drain(src) == 9
    # same-second rows arriving later, and a row older than the newest (late commit)
    await writer.insert_cel([cel(10, linkedid="1795495100.1", sec=2, eventtype="E10")])
    await writer.insert_cel([cel(11, linkedid="1795495100.1", sec=1, eventtype="E11")])
    await drain(src)
    src._time.last_sweep = 0  # the periodic look-back sweep is due
    await drain(src)
    cels, _ = await stored(store)
    assert sorted(c.eventtype for c in cels) == sorted(f"E{i}" for i in range(1, 12)), dialect
    assert all(c.row_id is None for c in cels)
    pos = await store.get_position(f"sql:cel:{settings.table_cel}")
    assert pos is not None and pos["mode"] == "time"
    assert datetime.fromisoformat(pos["time"]) == T0 + timedelta(seconds=3)
    # restart: the look-back re-read is de-duplicated by row hash
    await src.close()
    src2 = source(settings, "cel", store)
    assert await drain(src2) == 0
    await src2.close()


# ----------------------------------------------------------------------------- values


async def test_nulls_become_empty_strings(pbx_db: Any, store: StateStore) -> None:
    settings, writer = pbx_db
    await writer.insert_cel(
        [
            {
                "eventtype": "CHAN_START",
                "eventtime": T0,
                "uniqueid": "1.1",
                "linkedid": "1.1",
                "channame": None,
                "cid_name": None,
                "amaflags": None,
                "extra": None,
            }
        ]
    )
    await writer.insert_cdr(
        [
            {
                "calldate": T0,
                "uniqueid": "1.1",
                "linkedid": "1.1",
                "src": None,
                "dst": None,
                "channel": None,
                "disposition": None,
                "duration": None,
                "billsec": None,
                "sequence": None,
            }
        ]
    )
    src, src2 = source(settings, "cel", store), source(settings, "cdr", store)
    await drain(src)
    await drain(src2)
    (c,), (d,) = await stored(store)
    assert (c.channame, c.cid_name, c.amaflags, c.extra, c.peer) == ("", "", "", "", "")
    assert (d.src, d.dst, d.channel, d.disposition, d.duration, d.billsec, d.sequence) == (
        "",
        "",
        "",
        "",
        0,
        0,
        None,
    )
    await src.close()
    await src2.close()


@pytest.mark.parametrize("dialect", ["mysql", "sqlite"])  # PostgreSQL: the SQL_ASCII test below
async def test_latin1_and_non_utf8_text(
    make_pbx_db: Callable[..., Awaitable[Any]], store: StateStore, dialect: str
) -> None:
    settings, writer = await make_pbx_db(dialect)
    await writer.insert_cel(
        [
            {
                "eventtype": "CHAN_START",
                "eventtime": T0,
                "uniqueid": "1.1",
                "linkedid": "1.1",
                "channame": "SIP/1",
                "cid_name": "Zoë Ærø",
                "appdata": "x",
            },
            {
                "eventtype": "ANSWER",
                "eventtime": T0,
                "uniqueid": "1.1",
                "linkedid": "1.1",
                "channame": "SIP/1",
                "cid_name": b"Ren\xe9 M\xfcller",
                "appdata": b"\xff\xfe",
            },
        ]
    )
    src = source(settings, "cel", store)
    assert await drain(src) == 2
    (a, b), _ = await stored(store)
    assert a.cid_name == "Zoë Ærø"
    assert b.cid_name == "René Müller"  # latin1 bytes (MariaDB latin1 column / raw SQLite bytes)
    assert b.appdata in ("ÿþ",)
    await src.close()


async def test_pg_sql_ascii_database_with_latin1_bytes(
    make_pbx_db: Callable[..., Awaitable[Any]], store: StateStore
) -> None:
    settings, writer = await make_pbx_db("postgresql", pg_sql_ascii=True)
    t = settings.table_cel
    await writer.execute(
        f'INSERT INTO "{t}" (eventtype, eventtime, uniqueid, linkedid, channame, cid_name, '
        "appdata) VALUES ('CHAN_START', '2026-11-24 04:39:20', '1.1', '1.1', 'SIP/1', "
        "E'Ren\\xe9', E'caf\\xc3\\xa9')"
    )
    src = source(settings, "cel", store)
    assert await drain(src) == 1
    (c,), _ = await stored(store)
    assert c.cid_name == "René"  # not UTF-8: latin-1
    assert c.appdata == "café"  # valid UTF-8 bytes stay UTF-8
    await src.close()


@pytest.mark.parametrize("dialect", DIALECTS)
@pytest.mark.parametrize("tz", ["America/Toronto", "Asia/Kolkata"])
async def test_db_timezone_converts_naive_local_times(
    make_pbx_db: Callable[..., Awaitable[Any]], store: StateStore, tz: str, dialect: str
) -> None:
    settings, writer = await make_pbx_db(dialect, timezone=tz)  # writer writes local time in tz
    summer, winter = (
        datetime(2026, 7, 1, 12, 0, 1, tzinfo=UTC),
        datetime(2026, 12, 1, 12, 0, 1, tzinfo=UTC),
    )
    await writer.insert_cel([replace(cel(1), eventtime=summer), replace(cel(2), eventtime=winter)])
    src = source(settings, "cel", store)
    await drain(src)
    cels, _ = await stored(store)
    assert [c.eventtime for c in cels] == [summer, winter], dialect
    raw = await writer.fetch(
        f"SELECT eventtime FROM {writer.quote(settings.table_cel)} ORDER BY id"
    )
    assert str(raw[0][0]).startswith(
        "2026-07-01 08:00:01" if tz == "America/Toronto" else "2026-07-01 17:30:01"
    )
    await src.close()


async def test_optional_cdr_columns_become_extras(
    make_pbx_db: Callable[..., Awaitable[Any]], store: StateStore
) -> None:
    settings, writer = await make_pbx_db("sqlite", cdr_extra_columns=("recordingfile", "did"))
    await writer.insert_cdr(
        [
            {
                **{
                    "calldate": T0,
                    "uniqueid": "1.1",
                    "linkedid": "1.1",
                    "src": "1",
                    "dst": "2",
                    "channel": "c",
                    "disposition": "ANSWERED",
                    "duration": 5,
                    "billsec": 3,
                },
                "recordingfile": "in-1.wav",
                "did": "4155551000",
            }
        ]
    )
    src = source(settings, "cdr", store)
    await drain(src)
    _, (d,) = await stored(store)
    assert d.extras == (("recordingfile", "in-1.wav"), ("did", "4155551000"))
    assert d.extra("recordingfile") == "in-1.wav"
    await src.close()


def test_value_helpers() -> None:
    tz = __import__("zoneinfo").ZoneInfo("Europe/Paris")
    assert (
        decode_text(None) == ""
        and decode_text(b"caf\xc3\xa9") == "café"
        and decode_text(b"caf\xe9") == "café"
    )
    assert decode_text(3) == "3"
    assert to_utc(datetime(2026, 1, 1, 12), tz) == datetime(2026, 1, 1, 11, tzinfo=UTC)
    assert to_utc("2026-01-01 12:00:00.5", tz) == datetime(2026, 1, 1, 11, 0, 0, 500000, tzinfo=UTC)
    assert to_utc("1767268800", tz) == datetime(2026, 1, 1, 12, tzinfo=UTC)  # epoch is UTC already
    assert to_utc(1767268800.25, tz) == datetime(2026, 1, 1, 12, 0, 0, 250000, tzinfo=UTC)
    assert to_utc("garbage", tz) is None and to_utc(None, tz) is None


# ----------------------------------------------------------------------------- schema


async def test_missing_columns_are_named(pbx_db: Any, store: StateStore) -> None:
    settings, writer = pbx_db
    q = writer.quote
    await writer.execute(
        f"CREATE TABLE {q('badcel_' + settings.table_cel[-6:])} "
        "(id INTEGER PRIMARY KEY, eventtype VARCHAR(30), eventtime TIMESTAMP)"
    )
    bad = replace(settings, table_cel="badcel_" + settings.table_cel[-6:])
    src = source(bad, "cel", store)
    with pytest.raises(SchemaError) as e:
        await src.poll_once()
    assert bad.table_cel in str(e.value)
    assert "uniqueid" in str(e.value) and "linkedid" in str(e.value) and "channame" in str(e.value)
    missing = source(replace(settings, table_cel="no_such_table"), "cel", store)
    with pytest.raises(SchemaError, match="not found"):
        await missing.poll_once()
    await missing.close()
    await src.close()


async def test_run_survives_a_missing_table_and_stops(pbx_db: Any, store: StateStore) -> None:
    settings, _ = pbx_db
    m = Metrics()
    src = source(replace(settings, table_cel="no_such_table"), "cel", store, m)
    stop = asyncio.Event()
    task = asyncio.create_task(src.run(stop))
    while metric(m, "sipstack_db_reconnects_total", {"source": "cel"}) < 1:
        await asyncio.sleep(0.01)
    assert not task.done()
    assert metric(m, "database_connection_status", {"source": "cel"}) == 0
    assert "no_such_table" in src.last_error
    stop.set()
    await asyncio.wait_for(task, 30)


async def test_schema_qualified_and_hostile_table_names(pbx_db: Any, store: StateStore) -> None:
    settings, writer = pbx_db
    await writer.insert_cel([cel(1), cel(2)])
    if writer.dialect != "sqlite":
        schema = "public" if writer.dialect == "postgresql" else settings.name
        qualified = replace(settings, table_cel=f"{schema}.{settings.table_cel}")
        src = source(qualified, "cel", store)
        assert await drain(src) == 2
        assert src.position_name == f"sql:cel:{schema}.{settings.table_cel}"
        await src.close()
    hostile = replace(settings, table_cel=f"{settings.table_cel}; DROP TABLE x")
    bad = source(hostile, "cel", store)
    with pytest.raises(SchemaError, match="not a plain SQL identifier"):
        await bad.poll_once()
    await bad.close()
    assert len(await writer.fetch(f"SELECT id FROM {writer.quote(settings.table_cel)}")) == 2


async def test_time_mode_gets_past_a_second_with_more_rows_than_a_poll(
    make_pbx_db: Callable[..., Awaitable[Any]], store: StateStore
) -> None:
    settings, writer = await make_pbx_db("mysql", with_id=False)  # DATETIME: whole seconds
    await writer.insert_cel([cel(i, linkedid="1795495200.1", eventtype=f"E{i}") for i in range(40)])
    await writer.insert_cel([cel(99, linkedid="1795495200.1", sec=1, eventtype="LAST")])
    src = source(settings, "cel", store, batch_size=5, max_records_per_poll=10)
    await drain(src)
    cels, _ = await stored(store)
    assert len(cels) == 41 and cels[-1].eventtype == "LAST"
    await src.close()


async def test_ids_that_never_appear_are_counted_and_logged_when_given_up(
    pbx_db: Any, store: StateStore, monkeypatch: pytest.MonkeyPatch, caplog: Any
) -> None:
    from sipstack_agent.sources.sql import idmode

    settings, writer = pbx_db
    await writer.insert_cel([replace(cel(i), row_id=i) for i in (*range(1, 9), 10)])
    src = source(settings, "cel", store)
    await drain(src)  # id 9: a rolled-back insert, a hole watched for a while

    def dropped(reason: str) -> float:
        labels = {"table": src.table, "reason": reason}
        v = src.metrics.registry.get_sample_value("sipstack_id_holes_dropped_total", labels)
        return v or 0.0

    assert (dropped("window"), dropped("timeout")) == (0, 0)
    caplog.set_level("WARNING", logger="sipstack_agent.sources.sql")
    await writer.insert_cel([replace(cel(400), row_id=400)])
    await drain(src)  # 9 is now below the 200-id overlap window; 201..399 are watched
    assert dropped("window") == 1
    monkeypatch.setattr(idmode, "HOLE_TTL", 0.0)  # as if a minute had passed
    await drain(src)
    assert dropped("timeout") == 199
    lines = [r.getMessage() for r in caplog.records if "never appeared" in r.getMessage()]
    assert any("(9..9, below the POLL_OVERLAP_IDS=200 window)" in m for m in lines)
    assert any("199 skipped id(s)" in m and "201..399, older than 0 s" in m for m in lines)
    await src.close()
