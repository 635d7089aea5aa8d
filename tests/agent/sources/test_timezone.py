"""DB_TIMEZONE=auto against the real servers: the zone a DBA set on PostgreSQL (per
database, per role) or on the MariaDB session, rows written in local time on both
sides of DST changes, and the clock sanity check (one WARN, metrics, `check`).

MariaDB has no per-database or per-user default zone, and SET GLOBAL would change
the server every other test shares: its zone is set per connection (the agent's own
pool class, with `SET time_zone` as the connection's init command).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from sipstack_agent.config import DatabaseSettings, Settings
from sipstack_agent.metrics import Metrics
from sipstack_agent.rules.checks import Status
from sipstack_agent.sources.dialects import dialect_for
from sipstack_agent.sources.sql.check import inspect
from sipstack_agent.sources.sql.drivers import _MyDb
from sipstack_agent.sources.sql.poller import SqlSource
from sipstack_agent.sources.timezone import ZoneResolver, database_zone, start_time
from sipstack_agent.state import StateStore
from sipstack_agent.zones import PbxZone, offset_at

from ..support.servers import ServerDb, pg_zone
from .test_sql import cel, drain, metric, stored

# US DST 2026: spring forward Sun 8 March 02:00 local, fall back Sun 1 November 02:00.
DST_ROWS = (
    datetime(2026, 3, 8, 9, 59, 59, tzinfo=UTC),  # 01:59:59 PST
    datetime(2026, 3, 8, 10, 0, 1, tzinfo=UTC),  # 03:00:01 PDT
    datetime(2026, 11, 1, 7, 59, 59, tzinfo=UTC),  # 00:59:59 PDT
    datetime(2026, 11, 1, 10, 0, 1, tzinfo=UTC),  # 02:00:01 PST
)
SEASONS = (datetime(2026, 1, 15, 12, 0, 1, tzinfo=UTC), datetime(2026, 7, 1, 12, 0, 1, tzinfo=UTC))


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[StateStore]:
    s = await StateStore.open(tmp_path / "state.db")
    yield s
    await s.close()


def settings_for(db: DatabaseSettings, **kw: Any) -> Settings:
    kw.setdefault("start_from", "beginning")
    return Settings(database=replace(db, timezone=kw.pop("timezone", "auto")), **kw)


async def mysql_session_db(db: DatabaseSettings, zone: str) -> _MyDb:
    """The agent's MariaDB pool class, its sessions in `zone` (what SET GLOBAL would give)."""
    import aiomysql

    pool = await aiomysql.create_pool(
        host=db.host, port=db.port, user=db.user, password=db.password, db=db.name,
        use_unicode=False, autocommit=True, minsize=1, maxsize=2,
        init_command=f"SET time_zone = '{zone}'",
    )  # fmt: skip
    return _MyDb(pool, dialect_for("mysql"))


def auto(db: DatabaseSettings) -> DatabaseSettings:
    """The default: DB_TIMEZONE unset (the fixture's writer zone is the PBX's, not ours)."""
    return replace(db, timezone="auto")


async def read_back(src: SqlSource, store: StateStore) -> list[datetime]:
    await drain(src)
    cels, _ = await stored(store)
    return [c.eventtime for c in cels]


# --------------------------------------------------------------------------- PostgreSQL


@pytest.mark.parametrize(
    "zone", ["America/Los_Angeles", "Asia/Tokyo", "Asia/Kolkata", "Australia/Adelaide"]
)
async def test_postgresql_database_zone_reads_local_rows_right_across_dst(
    make_pbx_db: Callable[..., Awaitable[Any]],
    pg_database: ServerDb,
    store: StateStore,
    zone: str,
) -> None:
    pbx = await make_pbx_db("postgresql", timezone=zone)  # the PBX writes local time in zone
    times = [*DST_ROWS, *SEASONS]
    await pbx.writer.insert_cel([replace(cel(i), eventtime=t) for i, t in enumerate(times)])
    async with pg_zone(pg_database, zone):
        src = SqlSource(settings_for(pbx.settings), "cel", store, Metrics())
        assert await read_back(src, store) == times
        assert src.zone == PbxZone(zone, "database", "PostgreSQL TimeZone")
        await src.close()


async def test_postgresql_role_zone_wins_over_the_server_default(
    make_pbx_db: Callable[..., Awaitable[Any]], pg_database: ServerDb, store: StateStore
) -> None:
    pbx = await make_pbx_db("postgresql", timezone="Europe/Berlin")
    await pbx.writer.insert_cel([replace(cel(i), eventtime=t) for i, t in enumerate(SEASONS)])
    async with pg_zone(pg_database, "Europe/Berlin", role=True):
        metrics = Metrics()
        src = SqlSource(settings_for(pbx.settings), "cel", store, metrics)
        assert await read_back(src, store) == list(SEASONS)
        assert (src.zone.name, src.zone.found) == ("Europe/Berlin", "database")  # type: ignore[union-attr]
        labels = {"zone": "Europe/Berlin", "found": "database"}
        assert metric(metrics, "sipstack_pbx_timezone", labels) == 1
        await src.close()


async def test_postgresql_posix_offset_zone_is_read_as_a_fixed_offset_with_a_warning(
    make_pbx_db: Callable[..., Awaitable[Any]],
    pg_database: ServerDb,
    store: StateStore,
    caplog: pytest.LogCaptureFixture,
) -> None:
    pbx = await make_pbx_db("postgresql", timezone="Asia/Kolkata")  # no DST: +05:30 all year
    await pbx.writer.insert_cel([replace(cel(i), eventtime=t) for i, t in enumerate(SEASONS)])
    async with pg_zone(pg_database, "<+05:30>-05:30"):
        src = SqlSource(settings_for(pbx.settings), "cel", store, Metrics())
        with caplog.at_level(logging.WARNING, "sipstack_agent.sources.timezone"):
            assert await read_back(src, store) == list(SEASONS)
        assert (src.zone.name, src.zone.found) == ("+05:30", "offset")  # type: ignore[union-attr]
        (warn,) = [r.getMessage() for r in caplog.records]
        assert "fixed offset +05:30" in warn and "DB_TIMEZONE=Asia/Kolkata" in warn
        await src.close()


async def test_an_explicit_db_timezone_wins_over_the_database(
    make_pbx_db: Callable[..., Awaitable[Any]], pg_database: ServerDb, store: StateStore
) -> None:
    pbx = await make_pbx_db("postgresql", timezone="America/Toronto")
    await pbx.writer.insert_cel([replace(cel(i), eventtime=t) for i, t in enumerate(SEASONS)])
    async with pg_zone(pg_database, "Asia/Tokyo"):
        settings = settings_for(pbx.settings, timezone="America/Toronto")
        src = SqlSource(settings, "cel", store, Metrics())
        assert await read_back(src, store) == list(SEASONS)
        assert src.zone == PbxZone("America/Toronto", "configured", "DB_TIMEZONE")
        await src.close()


# --------------------------------------------------------------------------- MariaDB


@pytest.mark.parametrize(
    ("session", "zone", "found"),
    [
        ("America/Los_Angeles", "America/Los_Angeles", "database"),
        ("Australia/Adelaide", "Australia/Adelaide", "database"),
        ("SYSTEM", "UTC", "database"),  # the test server runs in UTC
        ("+05:30", "+05:30", "offset"),
    ],
)
async def test_mariadb_session_zone_reads_local_rows_right(
    make_pbx_db: Callable[..., Awaitable[Any]],
    store: StateStore,
    caplog: pytest.LogCaptureFixture,
    session: str,
    zone: str,
    found: str,
) -> None:
    # a fixed offset has no DST: that PBX is in Kolkata (+05:30 all year)
    pbx = await make_pbx_db("mysql", timezone="Asia/Kolkata" if found == "offset" else zone)
    times = [t.replace(microsecond=0) for t in (*DST_ROWS, *SEASONS)]
    await pbx.writer.insert_cel([replace(cel(i), eventtime=t) for i, t in enumerate(times)])
    db = await mysql_session_db(pbx.settings, session)
    try:
        src = SqlSource(settings_for(pbx.settings), "cel", store, Metrics(), db=db)
        with caplog.at_level(logging.WARNING, "sipstack_agent.sources.timezone"):
            assert await read_back(src, store) == times
        assert (src.zone.name, src.zone.found) == (zone, found)  # type: ignore[union-attr]
    finally:
        await db.close()
    warned = [r.getMessage() for r in caplog.records]
    assert bool(warned) == (found == "offset")
    if warned:
        assert "DB_TIMEZONE=Asia/Kolkata" in warned[0]


class _Answer:
    """One row as MariaDB answers the zone query (system_time_zone cannot be changed on
    the shared test server: it is the server process's TZ at start-up)."""

    def __init__(self, *row: object) -> None:
        self.row = row

    async def fetch(self, sql: str, args: tuple[object, ...] = ()) -> list[tuple[object, ...]]:
        assert "@@system_time_zone" in sql
        return [self.row]


@pytest.mark.parametrize(
    ("row", "zone", "found"),
    [
        (("SYSTEM", "PST", -28800), "-08:00", "offset"),  # an abbreviation: no IANA zone
        (("SYSTEM", "IST", 19800), "+05:30", "offset"),
        (("SYSTEM", "EST", -18000), "-05:00", "offset"),  # IANA has "EST", but without DST
        (("SYSTEM", "Europe/Berlin", None), "Europe/Berlin", "database"),
        (("SYSTEM", "UTC", 0), "UTC", "database"),
        (("Asia/Tokyo", "UTC", 32400), "Asia/Tokyo", "database"),
        (("Asia/Tokyo", "UTC", 0), "+00:00", "offset"),  # the name does not match the offset
    ],
)
async def test_mariadb_system_zone_names(row: tuple[object, ...], zone: str, found: str) -> None:
    if row[2] is None:  # Berlin's offset today (+01:00 or +02:00)
        row = (*row[:2], offset_at("Europe/Berlin", datetime.now(UTC)))
    z = await database_zone(_Answer(*row), "mysql")
    assert (z.name, z.found) == (zone, found)


# --------------------------------------------------------------------------- SQLite


async def test_sqlite_auto_reads_the_agent_hosts_zone(
    make_pbx_db: Callable[..., Awaitable[Any]],
    store: StateStore,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    monkeypatch.setenv("TZ", "Asia/Kolkata")
    pbx = await make_pbx_db("sqlite", timezone="Asia/Kolkata")
    await pbx.writer.insert_cel([replace(cel(i), eventtime=t) for i, t in enumerate(SEASONS)])
    with caplog.at_level(logging.INFO, "sipstack_agent.sources.timezone"):
        src = SqlSource(settings_for(pbx.settings), "cel", store, Metrics())
    assert await read_back(src, store) == list(SEASONS)
    assert src.zone == PbxZone("Asia/Kolkata", "host", "TZ=Asia/Kolkata")
    (line,) = [r.getMessage() for r in caplog.records]
    assert "agent host's zone Asia/Kolkata" in line and "set DB_TIMEZONE" in line
    await src.close()


# --------------------------------------------------------------------------- sanity check


def now_rows(n: int, *, start: int = 0) -> list[Any]:
    t = datetime.now(UTC)
    return [replace(cel(start + i), eventtime=t - timedelta(seconds=n - i)) for i in range(n)]


async def test_rows_in_the_future_give_one_warning_a_metric_and_the_likely_zone(
    make_pbx_db: Callable[..., Awaitable[Any]],
    store: StateStore,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A Tokyo PBX writing into a database left in UTC: every row is 9 h ahead."""
    pbx = await make_pbx_db("postgresql", timezone="Asia/Tokyo")
    metrics = Metrics()
    src = SqlSource(settings_for(pbx.settings), "cel", store, metrics)
    labels = {"table": pbx.settings.table_cel}
    with caplog.at_level(logging.WARNING, "sipstack_agent.sources.timezone"):
        for k in range(3):
            await pbx.writer.insert_cel(now_rows(3, start=10 * k))
            await drain(src)
    (warn,) = [r.getMessage() for r in caplog.records]
    assert "9.0 h in the future" in warn and "UTC (database: PostgreSQL TimeZone)" in warn
    assert "set DB_TIMEZONE=Asia/Tokyo" in warn
    assert metric(metrics, "sipstack_timezone_suspect", labels) == 1
    assert 8.9 * 3600 < metric(metrics, "sipstack_clock_skew_seconds", labels) < 9.1 * 3600
    await src.close()


async def test_live_rows_that_arrive_hours_old_warn_but_a_backfill_does_not(
    make_pbx_db: Callable[..., Awaitable[Any]],
    store: StateStore,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A Los Angeles PBX, DB_TIMEZONE left at UTC: a backlog of yesterday's rows is read
    quietly (START_FROM=beginning); rows written now look 8 h old on arrival."""
    pbx = await make_pbx_db("postgresql", timezone="America/Los_Angeles")
    yesterday = datetime.now(UTC) - timedelta(days=1)
    await pbx.writer.insert_cel(
        [replace(cel(i), eventtime=yesterday + timedelta(seconds=i)) for i in range(5)]
    )
    metrics = Metrics()
    settings = settings_for(pbx.settings, timezone="UTC", batch_size=2)
    src = SqlSource(settings, "cel", store, metrics)
    labels = {"table": pbx.settings.table_cel}
    with caplog.at_level(logging.WARNING, "sipstack_agent.sources.timezone"):
        await drain(src)
        await src.poll_once()  # caught up, nothing new
        assert caplog.records == []
        assert metric(metrics, "sipstack_timezone_suspect", labels) == 0
        await pbx.writer.insert_cel(now_rows(2, start=100))
        await src.poll_once()
        await pbx.writer.insert_cel(now_rows(2, start=200))
        await src.poll_once()
    (warn,) = [r.getMessage() for r in caplog.records]
    assert "8.0 h old" in warn and "UTC-08:00" in warn
    assert "set DB_TIMEZONE=America/Los_Angeles" in warn
    assert metric(metrics, "sipstack_timezone_suspect", labels) == 1
    assert metric(metrics, "sipstack_clock_skew_seconds", labels) < -7.9 * 3600
    await src.close()


async def test_live_rows_in_the_right_zone_clear_the_suspicion(
    make_pbx_db: Callable[..., Awaitable[Any]], pg_database: ServerDb, store: StateStore
) -> None:
    pbx = await make_pbx_db("postgresql", timezone="America/Los_Angeles")
    metrics = Metrics()
    async with pg_zone(pg_database, "America/Los_Angeles"):
        src = SqlSource(settings_for(pbx.settings, start_from="latest"), "cel", store, metrics)
        await src.poll_once()
        await pbx.writer.insert_cel(now_rows(3))
        await src.poll_once()
        labels = {"table": pbx.settings.table_cel}
        assert metric(metrics, "sipstack_timezone_suspect", labels) == 0
        assert -60 < metric(metrics, "sipstack_clock_skew_seconds", labels) <= 0
        await src.close()


# --------------------------------------------------------------------------- check


async def test_check_names_the_zone_and_how_it_was_found(
    make_pbx_db: Callable[..., Awaitable[Any]], pg_database: ServerDb
) -> None:
    pbx = await make_pbx_db("postgresql", timezone="America/Los_Angeles")
    await pbx.writer.insert_cel(now_rows(3))
    async with pg_zone(pg_database, "America/Los_Angeles"):
        res = {r.name: r for r in await inspect(auto(pbx.settings), cdr=False, live_wait=0)}
    zone = res["pbx time zone"]
    assert (
        zone.status is Status.OK
        and zone.detail == "America/Los_Angeles (database: PostgreSQL TimeZone)"
    )
    assert (
        res["cel times"].status is Status.OK
        and "s ago), read in America/Los_Angeles" in res["cel times"].detail
    )


async def test_check_fails_on_rows_in_the_future_with_the_fix(
    make_pbx_db: Callable[..., Awaitable[Any]],
) -> None:
    pbx = await make_pbx_db("mysql", timezone="Europe/Berlin")
    await pbx.writer.insert_cel(now_rows(3))
    res = {r.name: r for r in await inspect(auto(pbx.settings), cdr=False, live_wait=0)}
    times = res["cel times"]
    assert times.failed
    assert "in the future read in UTC (database" in times.detail
    assert times.hint.startswith("set DB_TIMEZONE=Europe/") and "+01:00" in times.hint


async def test_check_fails_when_rows_written_during_it_look_hours_old(
    make_pbx_db: Callable[..., Awaitable[Any]],
) -> None:
    """West of UTC the newest row of an idle table proves nothing: `check` watches for
    rows written while it runs and judges those."""
    pbx = await make_pbx_db("postgresql", timezone="America/Los_Angeles")
    await pbx.writer.insert_cel(now_rows(2))  # looks 8 h old: an idle PBX could do that

    async def pbx_keeps_writing() -> None:
        await asyncio.sleep(0.5)
        await pbx.writer.insert_cel(now_rows(2, start=50))

    writer = asyncio.ensure_future(pbx_keeps_writing())
    res = {r.name: r for r in await inspect(auto(pbx.settings), cdr=False, live_wait=2.0)}
    await writer
    times = res["cel times"]
    assert times.failed and "8.0 h old" in times.detail
    assert times.hint.startswith("set DB_TIMEZONE=America/Los_Angeles")
    idle = {r.name: r for r in await inspect(auto(pbx.settings), cdr=False, live_wait=0)}
    assert (
        idle["cel times"].status is Status.OK
    )  # without live rows an old newest row is not an error


async def test_resolver_waiters_get_the_zone_the_source_found(
    make_pbx_db: Callable[..., Awaitable[Any]], pg_database: ServerDb, store: StateStore
) -> None:
    pbx = await make_pbx_db("postgresql", timezone="Asia/Tokyo")
    resolver = ZoneResolver(replace(pbx.settings, timezone="auto"))
    assert resolver.current is None
    seen: list[PbxZone] = []
    resolver.subscribe(seen.append)
    stop = asyncio.Event()
    waiter = asyncio.ensure_future(resolver.wait(stop))
    async with pg_zone(pg_database, "Asia/Tokyo"):
        src = SqlSource(settings_for(pbx.settings), "cel", store, Metrics(), zone=resolver)
        await src.poll_once()
    got = await waiter
    assert got is not None and got.name == "Asia/Tokyo" and seen == [got]
    assert await ZoneResolver(replace(pbx.settings, timezone="auto")).wait(_set()) is None
    await src.close()


def _set() -> asyncio.Event:
    e = asyncio.Event()
    e.set()
    return e


def test_start_from_without_offset_is_pbx_time_in_the_zone_found() -> None:
    la = PbxZone("America/Los_Angeles", "database", "PostgreSQL TimeZone")
    naive = Settings(start_from="2026-07-01T08:00:00")  # as load_settings keeps it with auto
    assert start_time(naive, la) == datetime(2026, 7, 1, 15, 0, tzinfo=UTC)
    winter = Settings(start_from="2026-01-15T08:00:00")
    assert start_time(winter, la) == datetime(2026, 1, 15, 16, 0, tzinfo=UTC)
    aware = Settings(start_from="2026-07-01T08:00:00+00:00")
    assert start_time(aware, la) == datetime(2026, 7, 1, 8, 0, tzinfo=UTC)
    assert start_time(Settings(start_from="beginning"), la) is None


async def test_csv_check_names_the_zone_for_events_in_the_future(tmp_path: Path) -> None:
    from sipstack_agent.config import CsvSettings
    from sipstack_agent.model import CEL_COLUMNS
    from sipstack_agent.sources.cel_csv import check_csv

    local = datetime.now(UTC).astimezone(ZoneInfo("Asia/Tokyo")).strftime("%Y-%m-%d %H:%M:%S.%f")
    row = {c: "" for c in CEL_COLUMNS} | {"eventtype": "CHAN_START", "eventtime": local,
                                          "uniqueid": "1.1", "linkedid": "1.1"}  # fmt: skip
    master = tmp_path / "Master.csv"
    master.write_text(",".join(f'"{row[c]}"' for c in CEL_COLUMNS) + "\n")
    res = {r.name: r for r in await check_csv(CsvSettings(path=str(master)), "UTC", found="host")}
    line = res["cel_csv timezone"]
    assert line.failed and "9.0 h in the future read in UTC (host)" in line.detail
    assert line.hint.startswith("set DB_TIMEZONE=Asia/Tokyo")
    res = {r.name: r for r in await check_csv(CsvSettings(path=str(master)), "Asia/Tokyo")}
    assert "cel_csv timezone" not in res and not res["cel_csv recent lines"].failed
