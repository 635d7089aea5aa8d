"""Read the PBX's rows again between two instants, page by page (`resend`).

Used by `sipstack-agent resend`: the same discovery, row builders, time
parameters and SELECT (`Dialect.select_after_time`) as the live poller
(sources/sql/); a page of rows sharing one timestamp widens the page. Rows are
yielded in pages of at most about `page_rows`; rows seen twice at a page's
boundary second are the same rows (the state store de-duplicates them)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime, tzinfo
from typing import Any

from ..config import CsvSettings
from ..model import CdrRow, CelRow
from .cel_csv import MAX_RECORD_BYTES, CelCsvParser
from .sql.convert import db_param, row_builder, to_utc
from .sql.drivers import Db
from .sql.table import TableInfo

__all__ = ["CsvWindow", "read_between"]


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


class CsvWindow:
    """The CEL CSV file (CEL_MODE=csv) read again front to back, in time pages: the
    same parser as the live tail (sources/cel_csv/parser.py), one chunk at a time; rows
    read past the page's end wait for the next page (about one chunk held)."""

    def __init__(self, settings: CsvSettings, timezone: str, *, chunk: int = 1 << 20) -> None:
        self.path = settings.path
        self.parser = CelCsvParser(settings.columns or None, timezone)
        self.chunk = max(chunk, 2 * MAX_RECORD_BYTES)
        self._offset = 0
        self._eof = False
        self._held: list[CelRow] = []

    def _read(self) -> list[CelRow]:
        with open(self.path, "rb") as f:
            f.seek(self._offset)
            data = f.read(self.chunk)
        final = len(data) < self.chunk
        res = self.parser.parse_chunk(data, self._offset, final=final)
        self._offset += res.consumed if not final else len(data)
        self._eof = final
        return res.rows

    async def page(self, end: datetime) -> list[CelRow]:
        """The rows with time < `end` not returned yet (file order)."""
        while not self._eof and all(r.eventtime < end for r in self._held):
            self._held.extend(await asyncio.to_thread(self._read))
        out = [r for r in self._held if r.eventtime < end]
        self._held = [r for r in self._held if r.eventtime >= end]
        return out
