"""Counts for /status and metrics: outbox depth and age, dead letters, calls, rows."""

from __future__ import annotations

import sqlite3
from datetime import datetime

from .base import StoreBase
from .codec import ts
from .values import AGE_BUCKETS, StoreStats, age_bucket


def stats(conn: sqlite3.Connection, now: float) -> StoreStats:
    by_kind = dict(conn.execute("SELECT kind, count(*) FROM outbox GROUP BY kind").fetchall())
    oldest = conn.execute("SELECT min(created_at) FROM outbox").fetchone()[0]
    dead = conn.execute("SELECT count(*) FROM dead_letters").fetchone()[0]
    open_calls, dirty, total = conn.execute(
        "SELECT coalesce(sum(closed = 0), 0), coalesce(sum(dirty), 0), count(*) FROM calls"
    ).fetchone()
    cel_rows = conn.execute("SELECT count(*) FROM cel").fetchone()[0]
    cdr_rows = conn.execute("SELECT count(*) FROM cdr").fetchone()[0]
    return StoreStats(
        outbox_depth=sum(by_kind.values()),
        oldest_undelivered_age=max(0.0, now - oldest) if oldest is not None else 0.0,
        dead_letters=dead,
        open_calls=open_calls,
        dirty_calls=dirty,
        calls=total,
        cel_rows=cel_rows,
        cdr_rows=cdr_rows,
        outbox_by_kind=by_kind,
    )


def backlog_detail(conn: sqlite3.Connection, now: float) -> dict[str, dict[str, int]]:
    by_age = dict.fromkeys(AGE_BUCKETS, 0)
    for (created,) in conn.execute("SELECT created_at FROM outbox"):
        by_age[age_bucket(now - created)] += 1
    reasons = conn.execute(
        "SELECT reason, count(*) FROM dead_letters GROUP BY reason ORDER BY reason"
    ).fetchall()
    return {"by_age": by_age, "dead_letters_by_reason": {r or "": n for r, n in reasons}}


class StatsMethods(StoreBase):
    async def stats(self, now: datetime) -> StoreStats:
        return await self._run(stats, ts(now))

    async def backlog_detail(self, now: datetime) -> dict[str, dict[str, int]]:
        """Outbox documents by age bucket and dead letters by reason (for /status)."""
        return await self._run(backlog_detail, ts(now))
