"""Read one PBX table again between two instants, in time order, page by page.

Used by `sipstack-agent resend`: the same discovery, row builders, time
parameters and SELECT (`Dialect.select_after_time`) as the live poller
(sources/sql.py); a page of rows sharing one timestamp widens the page. Rows are
yielded in pages of at most about `page_rows`; rows seen twice at a page's
boundary second are the same rows (the state store de-duplicates them)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime, tzinfo
from typing import Any

from ..model import CdrRow, CelRow
from .sql import Db, TableInfo, db_param, row_builder, to_utc

__all__ = ["read_between"]


async def read_between(
    db: Db,
    info: TableInfo,
    tz: tzinfo,
    start: datetime,
    end: datetime,
    *,
    page_rows: int = 1000,
    source: Callable[[], str] = lambda: "resend",
) -> AsyncIterator[list[CelRow | CdrRow]]:
    """Rows of `info.table` with start <= time < end (UTC instants), oldest first."""
    d = db.dialect
    sql = d.select_after_time(info.cols_sql, info.table, info.time_col)
    build = row_builder(info, tz, source)
    i_time = info.wanted.index("eventtime" if info.kind == "cel" else "calldate")
    time_tz = UTC if info.time_is_aware else tz
    since, limit = start, max(1, page_rows)
    while since < end:
        param = db_param(since, info, tz, d.name)
        rows: list[tuple[Any, ...]] = await db.fetch(sql, (param, limit))
        if not rows:
            return
        times = [to_utc(r[i_time], time_tz) for r in rows]
        last = max((t for t in times if t is not None), default=since)
        full = len(rows) >= limit
        if full and last <= since:
            limit *= 2  # one second holds more rows than a page
            continue
        page = [b for r, t in zip(rows, times, strict=True) if t is not None and t < end
                if (b := build(r)) is not None]  # fmt: skip
        if page:
            yield page
        if not full or last >= end:
            return
        since, limit = last, max(1, page_rows)
