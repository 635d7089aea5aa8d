"""Time mode: tables without an id, read `time >= newest - 1 s`, swept every
lookback/4 seconds `time >= newest - lookback_seconds`, de-duplicated by row hash;
an id-less CDR table also reads ended calls by uniqueid (sources/cdr_end.py)."""

from __future__ import annotations

import time
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta, tzinfo
from typing import Any

from ...model import CdrRow, CelRow
from .base import PollerBase
from .convert import iso, parse_iso, to_utc
from .table import TableInfo

__all__ = ["TimeModeReading"]


class TimeModeReading(PollerBase):
    """The time-mode half of SqlSource, and the host of the id-less CDR reader."""

    async def _poll_time(self, info: TableInfo) -> int:
        assert self._db is not None and self._pos is not None
        d = self.dialect
        db = self._db
        batch = max(1, self.settings.batch_size)
        budget = max(batch, self.settings.max_records_per_poll)
        lookback = max(0.0, self.settings.lookback_seconds)
        newest = parse_iso(self._pos["time"]) or datetime.now(UTC)
        now_m = time.monotonic()
        sweep = self._reread_overlap or now_m - self._time.last_sweep >= max(lookback / 4, 1.0)
        self._reread_overlap = False
        since = newest - timedelta(seconds=lookback if sweep else 1.0)
        floor = parse_iso(self._pos.get("floor_time"))
        if floor is not None and since < floor:
            since = floor
        if sweep:
            self._time.last_sweep = now_m
        sql = d.select_after_time(info.cols_sql, info.table, info.time_col)
        stored = read = 0
        limit = batch
        i_time = info.wanted.index("eventtime" if self.kind == "cel" else "calldate")
        tz = self._time_tz(info)
        full = False
        while read < budget:
            rows = await db.fetch(sql, (self._db_time(since, info), limit))
            read += len(rows)
            if not rows:
                break
            times = [to_utc(r[i_time], tz) for r in rows]
            last = max((t for t in times if t is not None), default=since)
            full = len(rows) >= limit
            if full and last <= since:
                # a page of rows sharing one timestamp: widen (not counted against the
                # budget, so a second with more rows than max_records_per_poll still passes)
                read -= len(rows)
                limit *= 2
                continue
            stored += await self._store_time(rows)
            if not full:
                break
            since = last
            limit = batch
        self.backlog = full
        self.rows_read += read
        # forget hashes older than the look-back window
        horizon = (parse_iso(self._pos["time"]) or newest) - timedelta(seconds=lookback + 5)
        if len(self._time.seen) > 1000:
            self._time.seen = {k: t for k, t in self._time.seen.items() if t >= horizon}
        self._lag_rows.set(0 if not full else budget)
        if self._end is not None:
            stored += await self._poll_cdr_end(info)
        return stored

    # ------------------------------------------------------------ id-less CDR (cdr_end.py)

    @property
    def cdr_lookup_active(self) -> bool:
        """CDR rows of ended calls are fetched by uniqueid (id-less CDR table, CEL feed)."""
        return (
            self._end is not None
            and self._end.cel_feed
            and self.info is not None
            and (not self.info.id_col)
        )

    def _time_mode_mark(self) -> datetime | None:
        """Time mode: read through the position's time, or the newest call end read (CDR)."""
        pos = self._pos or {}
        known = [t for t in (parse_iso(pos.get("time")), parse_iso(pos.get("end_time"))) if t]
        return max(known) if known else None

    def request_cdr_lookup(self, call_key: str, uniqueids: Sequence[str], since: datetime) -> None:
        if self._end is not None:
            self._end.request(call_key, uniqueids, since)

    async def _poll_cdr_end(self, info: TableInfo) -> int:
        assert self._end is not None and self._db is not None and self._pos is not None
        run, full = self._end.due(time.monotonic(), self.settings.poll_interval)
        stored = 0
        if run:
            stored += await self._end.sweep(self._db, info, self._pos, self, full=full)
            self.backlog = self.backlog or self._end.backlog
        if self._end.pending:
            stored += await self._end.lookup(self._db, info, self)
        return stored

    def db_time(self, t: datetime, info: TableInfo) -> object:
        return self._db_time(t, info)

    def row_time(self, value: object, info: TableInfo) -> datetime | None:
        return to_utc(value, self._time_tz(info))

    def time_zone(self, info: TableInfo) -> tzinfo:
        return self._time_tz(info)

    def build_cdr(self, row: tuple[object, ...]) -> CdrRow | None:
        assert self._builder is not None
        built = self._builder(row)
        if built is None:
            self.metrics.rows_discarded.labels(reason="bad_time").inc()
        return built if isinstance(built, CdrRow) else None

    async def store_cdrs(self, rows: Sequence[CdrRow], end_time: datetime | None) -> int:
        assert self._pos is not None
        pos = dict(self._pos)
        if end_time is not None:
            pos["end_time"] = end_time.isoformat()
        return await self._ingest(rows, pos)

    async def _store_time(self, rows: list[tuple[Any, ...]]) -> int:
        assert self._builder is not None and self._pos is not None
        built = [self._builder(r) for r in rows]
        good = [b for b in built if b is not None]
        if len(good) < len(built):
            self.metrics.rows_discarded.labels(reason="bad_time").inc(len(built) - len(good))
        fresh = [b for b in good if b.dedup_key not in self._time.seen]
        newest = parse_iso(self._pos["time"])
        for b in good:
            t = b.eventtime if isinstance(b, CelRow) else b.calldate
            self._time.seen[b.dedup_key] = t
            if newest is None or t > newest:
                newest = t
        pos = {**self._pos, "time": iso(newest)}
        if not fresh and pos == self._pos:
            return 0
        n = await self._ingest(fresh, pos)
        return n
