"""The idle cost of the SQL poller on a real PostgreSQL, from the server's own log.

PostgreSQL logs every statement of the agent's SELECT-only role
(`log_statement = 'all'`, `log_min_duration_statement = 0` on that role);
the test counts what an idle poll sent. Counts of statements, not timings.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from sipstack_agent.config import Settings
from sipstack_agent.metrics import Metrics
from sipstack_agent.scratchdb import LoggedStatement, StatementLog
from sipstack_agent.sources.sql.poller import SqlSource
from sipstack_agent.state import StateStore

POLLS = 5


@pytest.fixture
async def store(tmp_path: Path):
    s = await StateStore.open(tmp_path / "state.db")
    yield s
    await s.close()


def by_table(statements: list[LoggedStatement], tables: tuple[str, ...]) -> Counter[str]:
    out: Counter[str] = Counter()
    for s in statements:
        named = [t for t in tables if f'"{t}"' in s.text]
        out[named[0] if named else s.text] += 1
    return out


async def logged(log: StatementLog, role: str, db: str, want: int) -> list[LoggedStatement]:
    """The statements since the mark (waits briefly for the server to write them)."""
    got = log.since_mark(role, db)
    for _ in range(20):
        if len(got) >= want:
            break
        await asyncio.sleep(0.1)
        got = log.since_mark(role, db)
    await asyncio.sleep(0.2)  # anything beyond what we expect shows up too
    return log.since_mark(role, db)


async def test_idle_poll_is_one_indexed_query_per_table(
    make_pbx_db: Callable[..., Awaitable[Any]],
    pg_statement_log: Callable[[str], Awaitable[StatementLog]],
    asterisk_sample: Any,
    store: StateStore,
) -> None:
    settings, writer = await make_pbx_db("postgresql")
    log = await pg_statement_log(settings.user)  # before the agent's sessions open
    # the real sample, ids as a live table hands them out (no gaps: no holes to watch)
    await writer.insert_cel([replace(r, row_id=None) for r in asterisk_sample.cel_rows("postgres")])
    await writer.insert_cdr([replace(r, row_id=None) for r in asterisk_sample.cdr_rows("postgres")])
    cfg = Settings(database=settings, start_from="beginning", poll_interval=0.05)
    srcs = [SqlSource(cfg, kind, store, Metrics()) for kind in ("cel", "cdr")]  # type: ignore[arg-type]
    tables = (settings.table_cel, settings.table_cdr)
    try:
        assert [await s.poll_once() for s in srcs] == [76, 8]

        log.mark()
        for _ in range(POLLS):
            assert [await s.poll_once() for s in srcs] == [0, 0]
        idle = by_table(await logged(log, settings.user, settings.name, 2 * POLLS), tables)
        assert idle == {settings.table_cel: POLLS, settings.table_cdr: POLLS}

        # a trickle of new rows (a page that is not full) costs the same one query
        log.mark()
        more = asterisk_sample.cel_rows("postgres")[:3]
        await writer.insert_cel([replace(r, row_id=None) for r in more])
        assert [await s.poll_once() for s in srcs] == [3, 0]
        trickle = by_table(await logged(log, settings.user, settings.name, 2), tables)
        assert trickle == {settings.table_cel: 1, settings.table_cdr: 1}
    finally:
        for s in srcs:
            await s.close()


async def test_checkpoint_row_gone_asks_max_id_and_reanchors(
    make_pbx_db: Callable[..., Awaitable[Any]],
    pg_statement_log: Callable[[str], Awaitable[StatementLog]],
    asterisk_sample: Any,
    store: StateStore,
) -> None:
    """The one case the single query cannot decide alone: nothing at or after the
    checkpoint. Then max(id) is asked (and the table re-anchored when it went down)."""
    settings, writer = await make_pbx_db("postgresql")
    log = await pg_statement_log(settings.user)
    rows = [replace(r, row_id=None) for r in asterisk_sample.cel_rows("postgres")]
    await writer.insert_cel(rows[:10])
    m = Metrics()
    src = SqlSource(
        Settings(database=settings, start_from="beginning", poll_interval=0.05), "cel", store, m
    )
    try:
        assert await src.poll_once() == 10
        await src.poll_once()
        await writer.truncate(settings.table_cel)  # ids restart at 1
        await writer.insert_cel(rows[10:13])
        log.mark()
        await src.poll_once()
        texts = [s.text for s in await logged(log, settings.user, settings.name, 2)]
        assert len(texts) == 2 and texts[1].startswith("SELECT max(")
        assert (
            m.registry.get_sample_value(
                "sipstack_id_regressions_total", {"table": settings.table_cel}
            )
            == 1
        )
        assert src.position is not None and src.position["epoch"] == 1
        assert await src.poll_once() == 3  # rows 1..3 of the new epoch
    finally:
        await src.close()
