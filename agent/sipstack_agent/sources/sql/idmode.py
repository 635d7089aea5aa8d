"""Id mode: tables with an id column, read `id > N ORDER BY id` page after page.

Ids can commit out of order (id 10 visible before 9): the ids skipped inside the
last `overlap_ids` below the checkpoint are remembered as holes and re-read until
they appear or are older than HOLE_TTL. A max(id) below the checkpoint (table
truncated or restored) re-anchors at id 0 in a new epoch (see the package docstring)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from datetime import UTC, datetime
from typing import Any

from ...watermarks import PAGE_WAIT_MAX
from .base import Hole, PollerBase
from .convert import iso, parse_iso, to_utc
from .table import TableInfo

__all__ = ["HOLE_TTL", "IdModeReading"]

log = logging.getLogger(__name__)

HOLE_TTL = 60.0  # seconds an out-of-order hole is watched


class IdModeReading(PollerBase):
    """The id-mode half of SqlSource."""

    async def _poll_ids(self, info: TableInfo) -> int:
        assert self._db is not None and self._pos is not None and info.id_col
        d = self.dialect
        db = self._db
        batch = max(1, self.settings.batch_size)
        budget = max(batch, self.settings.max_records_per_poll)
        overlap = max(0, self.settings.overlap_ids)
        stored = 0
        read = 0
        min_time = parse_iso(self._pos.get("min_time"))
        sql = d.select_after_id(
            info.cols_sql, info.table, info.id_col, info.time_col, min_time=bool(min_time)
        )

        # 1. holes (ids skipped by out-of-order commits) and the post-(re)connect overlap
        cp = int(self._pos["id"])
        lo_hi: tuple[int, int] | None = None
        floor = int(self._pos.get("floor", 0))
        if self._reread_overlap and overlap and cp > floor:
            lo_hi = (max(floor + 1, cp - overlap + 1), cp)
        elif self._holes:
            self._track_holes(cp, [], cp, overlap)  # expire the old ones
            if self._holes:
                lo_hi = (min(self._holes), max(self._holes))
        self._reread_overlap = False
        if lo_hi is not None:
            rows = await db.fetch(d.select_id_range(info.cols_sql, info.table, info.id_col), lo_hi)
            rows = [r for r in rows if int(r[0]) not in self._recent]
            if min_time is not None:
                rows = self._filter_min_time(rows, info, min_time)
            if rows:
                stored += await self._store(rows, cp, info)
            for r in rows:
                self._holes.pop(int(r[0]), None)

        # 2. new rows, page after page; the next page is fetched while this one is stored
        def page_args(after: int, limit: int) -> list[Any]:
            args: list[Any] = [after]
            if min_time is not None:
                args.append(self._db_time(min_time, info))
            args.append(limit)
            return args

        # The first page starts AT the checkpoint row (id > cp - 1, one row more): while
        # that row is there, max(id) >= cp is proven without a second statement, so an
        # idle poll costs this one indexed query. Only when it is gone and nothing is
        # newer (max(id) < cp: table truncated or restored) is max(id) asked (step 3).
        cp = int(self._pos["id"])
        limit = min(batch, budget)
        anchored = cp > 0
        rows = await db.fetch(
            sql, page_args(cp - 1, limit + 1) if anchored else page_args(cp, limit)
        )
        cp_row_seen = False
        if anchored:
            cp_row_seen = bool(rows) and int(rows[0][0]) == cp
            rows = rows[1:] if cp_row_seen else rows[:limit]
        full = False
        while rows:
            read += len(rows)
            new_cp = int(rows[-1][0])
            full = len(rows) >= limit
            nxt: asyncio.Task[list[tuple[Any, ...]]] | None = None
            if full and read < budget:
                limit = min(batch, budget - read)
                nxt = asyncio.ensure_future(db.fetch(sql, page_args(new_cp, limit)))
            try:
                self._track_holes(cp, [int(r[0]) for r in rows], new_cp, overlap)
                stored += await self._store(rows, new_cp, info)
                if nxt is not None and self._marks is not None:
                    await self._page_done()
            except BaseException:
                if nxt is not None:
                    nxt.cancel()
                    with contextlib.suppress(BaseException):
                        await nxt
                raise
            if nxt is None:
                break
            cp = new_cp
            rows = await nxt
            if not rows:
                full = False
        self.backlog = full
        self.rows_read += read

        # 3. max(id), only for the lag of a backlog and when the checkpoint row vanished
        cp = int(self._pos["id"])
        if full or (anchored and not cp_row_seen and not read):
            max_id = await self._max_id(info)
            if max_id < cp:
                await self._reanchor(info, max_id, cp)
            else:
                self._lag_rows.set(max_id - cp)
        else:
            self._lag_rows.set(0)  # the last page was not full: all committed rows are read
        return stored

    def _filter_min_time(
        self, rows: list[tuple[Any, ...]], info: TableInfo, min_time: datetime
    ) -> list[tuple[Any, ...]]:
        i = info.wanted.index("eventtime" if self.kind == "cel" else "calldate")
        tz = self._time_tz(info)
        return [r for r in rows if (to_utc(r[i], tz) or min_time) >= min_time]

    def _track_holes(self, cp: int, ids: list[int], new_cp: int, overlap: int) -> None:
        """Remember ids skipped between cp and the ids read; give up (counted, logged)
        on those older than HOLE_TTL or below the overlap window."""
        if not overlap:
            return
        window_lo = new_cp - overlap
        now = time.monotonic()
        got = set(ids)
        prev = cp
        for i in ids:
            if i - prev > 1:
                for h in range(max(prev + 1, window_lo + 1), i):
                    if h not in got:
                        self._holes.setdefault(h, Hole(now))
            prev = i
        self._recent.update(got)
        if len(self._recent) > 4 * overlap + 1000:
            self._recent = {i for i in self._recent if i > window_lo}
        for reason, gone in (
            ("timeout", [h for h, v in self._holes.items() if now - v.first_seen > HOLE_TTL]),
            ("window", [h for h in self._holes if h <= window_lo]),
        ):
            if not gone:
                continue
            for h in gone:
                self._holes.pop(h, None)
            self.metrics.id_holes_dropped.labels(table=self.table, reason=reason).inc(len(gone))
            log.warning(
                "%s: %d skipped id(s) of %r never appeared (%d..%d, %s); a row committed "
                "that late is not read (rolled-back inserts also leave such holes)",
                self.position_name,
                len(gone),
                self.table,
                min(gone),
                max(gone),
                f"older than {HOLE_TTL:.0f} s"
                if reason == "timeout"
                else f"below the POLL_OVERLAP_IDS={overlap} window",
            )

    async def _reanchor(self, info: TableInfo, max_id: int, cp: int) -> None:
        assert self._pos is not None
        epoch = int(self._pos.get("epoch", 0)) + 1
        newest = self._newest_time
        log.warning(
            "%s: max(id) of %r went down from checkpoint %d to %d (table truncated or "
            "restored?): re-anchoring at id 0, rows from %s on (epoch %d)",
            self.position_name,
            self.table,
            cp,
            max_id,
            newest.isoformat() if newest else "the beginning",
            epoch,
        )
        self.metrics.id_regressions.labels(table=self.table).inc()
        self._pos = {
            **self._pos,
            "id": 0,
            "floor": 0,
            "epoch": epoch,
            "min_time": iso(newest),
            "reanchored_at": datetime.now(UTC).isoformat(),
        }
        self._holes.clear()
        self._recent.clear()
        await self.store.set_position(self.position_name, self._pos)
        self._lag_rows.set(max_id)
        self.backlog = True

    async def _page_done(self) -> None:
        """A backlog page is stored and the next is being fetched. Its watermark is
        published now, not only at the end of the poll: the calls the page ends are
        released, and the evaluator leaves the newest pages' calls for later (`behind`).
        The next page is stored once the evaluator has caught up with this one."""
        assert self._marks is not None
        if self._read_newest is not None:
            self._marks.publish(self.position_name, newest=self._read_newest, behind=True)
        self._marks.page_stored()
        await self._marks.wait_evaluated(PAGE_WAIT_MAX)

    async def _store(self, rows: list[tuple[Any, ...]], new_cp: int, info: TableInfo) -> int:
        assert self._builder is not None and self._pos is not None
        built = [self._builder(r) for r in rows]
        good = [b for b in built if b is not None]
        if len(good) < len(built):
            self.metrics.rows_discarded.labels(reason="bad_time").inc(len(built) - len(good))
        pos = dict(self._pos)
        if new_cp > int(pos["id"]):
            pos["id"] = new_cp
        return await self._ingest(good, pos)
