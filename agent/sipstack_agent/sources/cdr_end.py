"""CDR tables without an id column (FreePBX / Issabel `asteriskcdrdb.cdr`).

A CDR row carries its call's *start* (`calldate`) and is written at the call's
*end*, so a reader that follows `calldate` misses the rows of every call
longer than its look-back window. `CdrEndReader` closes that hole twice:

* **End sweep**: rows whose end (`calldate + duration`, computed by the
  database) is at or after the newest end read so far, minus one second on a
  normal poll and minus LOOKBACK_SECONDS every LOOKBACK_SECONDS / 4. The query
  is bounded by the calldate index: `calldate >= since - CDR_MAX_CALL_DURATION`
  (calls longer than that are read only when the calldate reader reaches them).
  The newest end read is the position field `end_time` (saved with the rows);
  `end_floor` is the fresh-start anchor the sweep never reads below.
  CDR only: every poll; with a CEL feed: only the look-back sweeps (the
  lookups below bring the rows of calls known from CEL at their end).
* **Lookups**: the calls the CEL feed says have ended ask for their CDR rows
  by `uniqueid IN (...)` (indexed on FreePBX), at most LOOKUP_BATCH uniqueids
  per query and LOOKUP_QUERIES queries per poll, retried each poll until rows
  come back or CDR_LOOKUP_WAIT has passed.

Rows are de-duplicated by `CdrRow.dedup_key` (the same key as the calldate
reader's rows; the state store drops repeats); the memory of keys already
sent is bounded to the rows ending inside the look-back window.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta, tzinfo
from typing import TYPE_CHECKING, Protocol

from ..model import CdrRow

if TYPE_CHECKING:
    from .sql.drivers import Db
    from .sql.table import TableInfo

__all__ = ["CdrEndReader", "EndHost", "cdr_end"]

LOOKUP_BATCH = 200  # uniqueids per lookup query
LOOKUP_QUERIES = 10  # lookup queries per poll
MAX_PENDING = 20_000  # calls waiting for a lookup (oldest dropped beyond)
LOOKUP_SLACK = timedelta(seconds=60)  # calldate bound of a lookup: call start minus this


def cdr_end(row: CdrRow) -> datetime:
    """When the CDR row's leg ended: calldate + duration."""
    return row.calldate + timedelta(seconds=max(0, row.duration))


class EndHost(Protocol):
    """What the SQL poller lends the reader (its connection, time types and ingest)."""

    def db_time(self, t: datetime, info: TableInfo) -> object: ...
    def row_time(self, value: object, info: TableInfo) -> datetime | None: ...
    def time_zone(self, info: TableInfo) -> tzinfo: ...
    def build_cdr(self, row: tuple[object, ...]) -> CdrRow | None: ...
    async def store_cdrs(self, rows: Sequence[CdrRow], end_time: datetime | None) -> int: ...


@dataclass
class _Pending:
    uniqueids: tuple[str, ...]
    since: datetime
    first: float  # monotonic time of the first request


@dataclass
class CdrEndReader:
    max_call_duration: float  # CDR_MAX_CALL_DURATION
    lookback: float  # POLL_LOOKBACK_SECONDS
    batch_size: int
    budget: int  # rows per poll (MAX_RECORDS_PER_POLL)
    lookup_wait: float  # CDR_LOOKUP_WAIT: how long an ended call's lookup is retried
    cel_feed: bool  # a CEL source exists: sweep only every lookback / 4
    seen: dict[str, datetime] = field(default_factory=dict)  # dedup_key -> row end
    pending: dict[str, _Pending] = field(default_factory=dict)
    last_sweep: float = 0.0
    backlog: bool = False
    lookups: int = 0  # lookup queries sent (for /status and tests)
    lookup_rows: int = 0

    # ------------------------------------------------------------ positions

    async def fresh_fields(
        self, db: Db, info: TableInfo, host: EndHost, now: datetime
    ) -> dict[str, str]:
        """`end_time`/`end_floor` of a fresh start: just after the newest end in the table."""
        d = db.dialect
        rows = await db.fetch(d.select_max(info.table, info.time_col))
        newest = host.row_time(rows[0][0], info) if rows else None
        end: datetime | None = None
        if newest is not None:
            lower = newest - timedelta(seconds=self.max_call_duration)
            q = d.select_max_cdr_end(
                info.table, info.time_col, _col(info, "duration"), epoch=info.time_is_epoch
            )
            got = await db.fetch(q, (host.db_time(lower, info),))
            end = host.row_time(got[0][0], info) if got else None
        t = (end or now - timedelta(seconds=self.lookback)) + timedelta(microseconds=1)
        return {"end_time": t.isoformat(), "end_floor": t.isoformat()}

    @staticmethod
    def upgraded_fields(pos: dict[str, object], lookback: float) -> dict[str, str]:
        """A position written before end sweeps existed: cover the old look-back again."""
        t = _parse(pos.get("time")) or datetime.now(UTC)
        floor = _parse(pos.get("floor_time")) or t
        start = max(t - timedelta(seconds=lookback), floor)
        return {"end_time": start.isoformat(), "end_floor": floor.isoformat()}

    # ------------------------------------------------------------ end sweep

    def due(self, now_m: float, poll_interval: float) -> tuple[bool, bool]:
        """(run now, with the full look-back)."""
        every = max(self.lookback / 4, poll_interval, 1.0)
        full = now_m - self.last_sweep >= every
        return (full or not self.cel_feed), full

    async def sweep(
        self, db: Db, info: TableInfo, pos: dict[str, object], host: EndHost, *, full: bool
    ) -> int:
        """Read the rows that ended since the newest end read (see the module doc)."""
        if full:
            self.last_sweep = time.monotonic()
        newest = _parse(pos.get("end_time")) or datetime.now(UTC)
        floor = _parse(pos.get("end_floor"))
        since = newest - timedelta(seconds=self.lookback if full else 1.0)
        if floor is not None and since < floor:
            since = floor
        tz = host.time_zone(info)
        sql = db.dialect.select_cdr_ended_since(
            info.cols_sql,
            info.table,
            info.time_col,
            _col(info, "duration"),
            epoch=info.time_is_epoch,
        )
        batch = max(1, self.batch_size)
        limit = batch
        read = stored = 0
        full_page = False
        while read < max(batch, self.budget):
            lo_end = _whole_second(since)
            lower = (
                lo_end
                - timedelta(seconds=self.max_call_duration)
                - _dst_slack(tz, lo_end, self.max_call_duration)
            )
            lo_param = lo_end - _dst_slack(tz, lo_end, self.max_call_duration)
            rows = await db.fetch(
                sql, (host.db_time(lower, info), host.db_time(lo_param, info), limit)
            )
            read += len(rows)
            if not rows:
                full_page = False
                break
            built = [b for b in (host.build_cdr(r) for r in rows) if b is not None]
            last = max((cdr_end(b) for b in built), default=since)
            if floor is not None:  # (the query's bounds are whole seconds)
                built = [b for b in built if cdr_end(b) >= floor]
            ends = [cdr_end(b) for b in built]
            full_page = len(rows) >= limit
            if full_page and _whole_second(last) <= lo_end:
                read -= len(rows)  # one second holds more rows than a page: widen
                limit *= 2
                continue
            fresh = [b for b in built if b.dedup_key not in self.seen]
            for b, e in zip(built, ends, strict=True):
                self.seen[b.dedup_key] = e
            top = max([newest, *ends])
            if fresh or top > newest:
                stored += await host.store_cdrs(fresh, top)
                newest = top
            if not full_page:
                break
            since = last
            limit = batch
        self.backlog = full_page
        self._forget(newest)
        return stored

    def _forget(self, newest: datetime) -> None:
        horizon = newest - timedelta(seconds=self.lookback + 5)
        self.seen = {k: e for k, e in self.seen.items() if e >= horizon}

    # ------------------------------------------------------------ lookups

    def request(self, call_key: str, uniqueids: Sequence[str], since: datetime) -> None:
        """Ask for the CDR rows of an ended call (retried until found or CDR_LOOKUP_WAIT)."""
        uids = tuple(dict.fromkeys(u for u in uniqueids if u))[:LOOKUP_BATCH]
        if not uids:
            return
        old = self.pending.get(call_key)
        first = old.first if old is not None else time.monotonic()
        self.pending[call_key] = _Pending(uids, since, first)
        while len(self.pending) > MAX_PENDING:
            del self.pending[next(iter(self.pending))]

    async def lookup(self, db: Db, info: TableInfo, host: EndHost) -> int:
        """One round of lookups for the pending calls; returns rows stored."""
        now_m = time.monotonic()
        for key in [k for k, p in self.pending.items() if now_m - p.first > self.lookup_wait]:
            del self.pending[key]
        stored = 0
        keys = list(self.pending)
        uid_col = _col(info, "uniqueid")
        queries = 0
        while keys and queries < LOOKUP_QUERIES:
            group: list[str] = []
            uids: list[str] = []
            while keys and len(uids) + len(self.pending[keys[0]].uniqueids) <= LOOKUP_BATCH:
                k = keys.pop(0)
                group.append(k)
                uids.extend(self.pending[k].uniqueids)
            if not group:  # (a single call never exceeds LOOKUP_BATCH: see request)
                break
            since = min(self.pending[k].since for k in group) - LOOKUP_SLACK
            sql = db.dialect.select_by_uniqueids(
                info.cols_sql, info.table, uid_col, info.time_col, len(uids)
            )
            rows = await db.fetch(sql, (*uids, host.db_time(since, info)))
            queries += 1
            self.lookups += 1
            built = [b for b in (host.build_cdr(r) for r in rows) if b is not None]
            found = {b.uniqueid for b in built}
            for k in group:
                if found.intersection(self.pending[k].uniqueids):
                    del self.pending[k]
            fresh = [b for b in built if b.dedup_key not in self.seen]
            for b in built:
                self.seen[b.dedup_key] = cdr_end(b)
            if fresh:
                self.lookup_rows += len(fresh)
                stored += await host.store_cdrs(fresh, None)
        return stored


def _col(info: TableInfo, logical: str) -> str:
    return info.select[info.wanted.index(logical)]


def _parse(value: object) -> datetime | None:
    if not value:
        return None
    dt = datetime.fromisoformat(str(value))
    return dt if dt.tzinfo else dt.replace(tzinfo=UTC)


def _whole_second(t: datetime) -> datetime:
    return t.replace(microsecond=0)


def _dst_slack(tz: tzinfo, t: datetime, span: float) -> timedelta:
    """Naive local arithmetic (calldate + duration) is off by a DST change inside the span."""
    a = t.astimezone(tz).utcoffset() or timedelta(0)
    b = (t - timedelta(seconds=span)).astimezone(tz).utcoffset() or timedelta(0)
    return abs(a - b)


# --------------------------------------------------------------------------- check

FREEPBX_MARKERS = ("recordingfile", "did", "cnum", "cnam")


def reading_plan(
    columns: Sequence[str],
    db_name: str,
    table: str,
    *,
    max_call_duration: float,
    lookback: float,
    lookup_wait: float,
    cel_feed: bool,
) -> str:
    """What `sipstack-agent check` says the agent will do with an id-less CDR table."""
    cols = {c.lower() for c in columns}
    extras = [c for c in FREEPBX_MARKERS if c in cols]
    name = f"{db_name}.{table}" if db_name and "." not in table else table
    if extras:
        layout = f"FreePBX/Issabel layout ({name}: no id column, {', '.join(extras)})"
    else:
        layout = f"{name}: no id column"
    every = f"every {max(lookback / 4, 1.0):g} s" if cel_feed else "every poll"
    parts = [
        f"{layout}. CDR rows are read by call end (calldate + duration) {every}, "
        f"over calls up to CDR_MAX_CALL_DURATION={max_call_duration:g} s long "
        f"(calldate >= newest end - {max_call_duration:g} s - POLL_LOOKBACK_SECONDS={lookback:g})"
    ]
    if cel_feed and lookup_wait > 0:
        parts.append(
            f"the CDR rows of each call CEL reports ended are fetched by uniqueid IN (...) "
            f"and the call waits up to CDR_LOOKUP_WAIT={lookup_wait:g} s for them"
        )
    elif cel_feed:
        parts.append("CDR_LOOKUP_WAIT=0: ended calls do not wait for their CDR rows")
    uses = []
    if "recordingfile" in cols:
        uses.append("recordingfile -> the recording under RECORDING_PATHS/YYYY/MM/DD/")
    if "did" in cols:
        uses.append("did -> dnid (when CEL has no cid_dnid)")
    if "cnum" in cols or "cnam" in cols:
        uses.append("cnum/cnam -> caller number/name where CEL has none")
    if "dst_cnam" in cols:
        uses.append("dst_cnam -> dst_name")
    if uses:
        parts.append("; ".join(uses))
    return "; ".join(parts)
