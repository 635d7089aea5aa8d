"""SqlSource under faults: connections killed, server away, kill -9, read-only sessions."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import logging
import os
import signal
import subprocess
import sys
import textwrap
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from sipstack_agent.config import DatabaseSettings, Settings
from sipstack_agent.metrics import Metrics
from sipstack_agent.model import CelRow
from sipstack_agent.sources.sql import poller as sqlmod
from sipstack_agent.sources.sql.drivers import connect
from sipstack_agent.sources.sql.poller import SqlSource
from sipstack_agent.state import StateStore

T0 = datetime(2026, 11, 24, 4, 39, 20, tzinfo=UTC)
AGENT_DIR = Path(__file__).resolve().parents[3] / "agent"


def cel(i: int) -> CelRow:
    lid = f"1795496000.{i}"
    return CelRow("CHAN_START", T0 + timedelta(seconds=i), lid, lid, channame=f"SIP/1-{i}")


def metric(m: Metrics, name: str, labels: dict[str, str] | None = None) -> float:
    v = m.registry.get_sample_value(name, labels or {})
    return 0.0 if v is None else v


async def stored_ids(store: StateStore) -> list[int]:
    recs = await store.load_calls(await store.due_calls(datetime.now(UTC), 100_000))
    return sorted(c.row_id or 0 for r in recs for c in r.cels)


async def until(cond: Callable[[], Awaitable[bool]], what: str, limit: float = 60.0) -> None:
    """Wait for a condition (a generous safety limit, not a timing assertion)."""
    loop = asyncio.get_running_loop()
    end = loop.time() + limit
    while not await cond():
        if loop.time() > end:
            raise AssertionError(f"never happened: {what}")
        await asyncio.sleep(0.02)


@pytest.fixture
async def store(tmp_path: Path):
    s = await StateStore.open(tmp_path / "state.db")
    yield s
    await s.close()


@pytest.fixture
def fast_backoff(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sqlmod, "BACKOFF_INITIAL", 0.02)
    monkeypatch.setattr(sqlmod, "BACKOFF_CAP", 0.1)


@pytest.mark.parametrize("dialect", ["postgresql", "mysql"])
async def test_connections_killed_mid_run_lose_nothing(
    make_pbx_db: Callable[..., Awaitable[Any]], store: StateStore, dialect: str, fast_backoff: None
) -> None:
    settings, writer = await make_pbx_db(dialect)
    m = Metrics()
    src = SqlSource(
        Settings(database=settings, start_from="beginning", poll_interval=0.02), "cel", store, m
    )
    stop = asyncio.Event()
    task = asyncio.create_task(src.run(stop))
    try:
        await writer.insert_cel([cel(i) for i in range(1, 11)])
        await until(lambda: _count_is(store, 10), "first 10 rows stored")
        for rnd in range(1, 4):
            killed = await writer.kill_connections(settings.user)
            assert killed >= 1  # the agent really had a session
            await writer.insert_cel([cel(i) for i in range(rnd * 10 + 1, rnd * 10 + 11)])
            await until(lambda n=rnd: _count_is(store, (n + 1) * 10), f"round {rnd} stored")
        assert not task.done()
        assert await stored_ids(store) == list(range(1, 41))  # each row exactly once
        assert metric(m, "database_connection_status", {"source": "cel"}) == 1
        pos = await store.get_position(f"sql:cel:{settings.table_cel}")
        assert pos is not None and pos["id"] == 40
    finally:
        stop.set()
        await asyncio.wait_for(task, 30)


async def _count_is(store: StateStore, n: int) -> bool:
    return len(await stored_ids(store)) >= n


async def test_unreachable_server_is_retried_logged_once_and_keeps_position(
    store: StateStore, fast_backoff: None, caplog: pytest.LogCaptureFixture
) -> None:
    await store.set_position("sql:cel:cel", {"mode": "id", "id": 1234, "epoch": 0})
    db = DatabaseSettings(
        type="postgresql", host="127.0.0.1", port=1, user="x", name="x", connect_timeout=1
    )
    m = Metrics()
    src = SqlSource(Settings(database=db), "cel", store, m)
    stop = asyncio.Event()
    caplog.set_level(logging.DEBUG, logger="sipstack_agent.sources.sql")
    task = asyncio.create_task(src.run(stop))

    async def retried() -> bool:
        return metric(m, "sipstack_db_reconnects_total", {"source": "cel"}) >= 4

    await until(retried, "4 reconnect attempts")
    assert not task.done()
    assert metric(m, "database_connection_status", {"source": "cel"}) == 0
    warnings = [r for r in caplog.records if r.levelno >= logging.WARNING]
    assert len(warnings) == 1 and "reconnecting" in warnings[0].getMessage()
    stop.set()
    await asyncio.wait_for(task, 30)
    assert await store.get_position("sql:cel:cel") == {"mode": "id", "id": 1234, "epoch": 0}


@pytest.mark.parametrize("dialect", ["postgresql", "mysql", "sqlite"])
async def test_sessions_are_read_only_even_for_a_privileged_user(
    make_pbx_db: Callable[..., Awaitable[Any]], dialect: str, admin_db_settings: Any
) -> None:
    settings, writer = await make_pbx_db(dialect)
    admin = admin_db_settings(settings)
    db = await connect(admin, 1)
    t = db.dialect.q(settings.table_cel)
    try:
        if dialect == "postgresql":
            assert (await db.fetch("SHOW default_transaction_read_only"))[0][0] == "on"
        with pytest.raises(Exception, match=r"(?i)read.?only|readonly"):
            await db.fetch(
                f"INSERT INTO {t} (eventtype, eventtime, uniqueid, linkedid, channame) "
                "VALUES ('X', '2026-01-01 00:00:00', '1', '1', 'c')"
            )
    finally:
        await db.close()
    assert await writer.fetch(f"SELECT count(*) FROM {t}") == [(0,)]


_CHILD = textwrap.dedent(
    """
    import asyncio, json, sys
    from sipstack_agent.config import DatabaseSettings, Settings
    from sipstack_agent.metrics import Metrics
    from sipstack_agent.sources.sql.poller import SqlSource
    from sipstack_agent.state import StateStore

    async def main():
        db = DatabaseSettings(**json.loads(sys.argv[2]))
        store = await StateStore.open(sys.argv[1])
        settings = Settings(database=db, start_from="beginning", batch_size=50,
                            max_records_per_poll=100)
        src = SqlSource(settings, "cel", store, Metrics())
        while True:
            n = await src.poll_once()
            print(n, flush=True)   # the parent kills us after the first poll stored rows
            await asyncio.sleep(0.2)

    asyncio.run(main())
    """
)


async def test_kill_9_in_the_middle_of_a_backlog_loses_nothing(pbx_db: Any, tmp_path: Path) -> None:
    settings, writer = pbx_db
    await writer.insert_cel([cel(i) for i in range(1, 501)])
    path = tmp_path / "state.db"
    env = {**os.environ, "PYTHONPATH": str(AGENT_DIR)}
    args = [sys.executable, "-c", _CHILD, str(path), json.dumps(dataclasses.asdict(settings))]
    proc = subprocess.Popen(args, stdout=subprocess.PIPE, env=env)
    try:
        assert proc.stdout is not None
        first = await asyncio.to_thread(proc.stdout.readline)
        assert int(first) == 100
        proc.send_signal(signal.SIGKILL)
        await asyncio.to_thread(proc.wait, 30)
    finally:
        if proc.poll() is None:
            proc.kill()
    store = await StateStore.open(path)
    try:
        pos = await store.get_position(f"sql:cel:{settings.table_cel}")
        assert pos is not None and 100 <= pos["id"] < 500  # killed mid-backlog
        done = len(await stored_ids(store))
        assert done == pos["id"]  # rows and position moved together
        src = SqlSource(Settings(database=settings), "cel", store, Metrics())
        while await src.poll_once() or src.backlog:
            pass
        await src.close()
        assert await stored_ids(store) == list(range(1, 501))  # none lost, none twice
    finally:
        await store.close()


@pytest.mark.parametrize("dialect", ["postgresql", "mysql"])
async def test_database_restart_mid_run_loses_nothing(
    make_pbx_db: Callable[..., Awaitable[Any]],
    store: StateStore,
    dialect: str,
    fast_backoff: None,
    tcp_proxy: Any,
    caplog: pytest.LogCaptureFixture,
) -> None:
    settings, writer = await make_pbx_db(dialect)
    proxy = await tcp_proxy(settings.host, settings.port)
    via_proxy = dataclasses.replace(settings, host="127.0.0.1", port=proxy.port)
    m = Metrics()
    src = SqlSource(
        Settings(database=via_proxy, start_from="beginning", poll_interval=0.02), "cel", store, m
    )
    caplog.set_level(logging.INFO, logger="sipstack_agent.sources.sql")
    stop = asyncio.Event()
    task = asyncio.create_task(src.run(stop))
    name = f"sql:cel:{settings.table_cel}"
    try:
        await writer.insert_cel([cel(i) for i in range(1, 11)])
        await until(lambda: _count_is(store, 10), "first 10 rows stored")
        await proxy.cut()  # the database goes away
        await writer.insert_cel([cel(i) for i in range(11, 21)])  # Asterisk keeps writing

        async def down() -> bool:
            return (
                metric(m, "database_connection_status", {"source": "cel"}) == 0
                and metric(m, "sipstack_db_reconnects_total", {"source": "cel"}) >= 3
            )

        await until(down, "outage noticed and retried")
        assert not task.done()
        assert (await store.get_position(name) or {})["id"] == 10  # position kept
        await proxy.resume()  # the database is back
        await until(lambda: _count_is(store, 20), "rows written during the outage stored")
        assert await stored_ids(store) == list(range(1, 21))
        assert metric(m, "database_connection_status", {"source": "cel"}) == 1
    finally:
        stop.set()
        await asyncio.wait_for(task, 30)
    msgs = [
        r.getMessage() for r in caplog.records if r.name.startswith("sipstack_agent.sources.sql.")
    ]
    assert sum("database unavailable" in x for x in msgs) == 1  # logged once per outage
    assert sum("reachable again" in x for x in msgs) == 1


@pytest.mark.parametrize("dialect", ["postgresql", "mysql"])
async def test_sslmode_reaches_the_driver(
    make_pbx_db: Callable[..., Awaitable[Any]], dialect: str
) -> None:
    settings, writer = await make_pbx_db(dialect)
    if dialect == "postgresql":
        server_tls = (await writer.fetch("SHOW ssl"))[0][0] == "on"
    else:
        server_tls = str((await writer.fetch("SELECT @@have_ssl"))[0][0]).upper() == "YES"
    plain = await connect(dataclasses.replace(settings, sslmode="disable"), 1)
    assert await plain.fetch("SELECT 1") == [(1,)]
    await plain.close()
    required = dataclasses.replace(settings, sslmode="require")
    if server_tls:
        db = await connect(required, 1)
        assert await db.fetch("SELECT 1") == [(1,)]
        await db.close()
    else:
        # never silently in clear text when TLS is required
        with pytest.raises(Exception, match=r"(?i)ssl|tls"):
            await connect(required, 1)
