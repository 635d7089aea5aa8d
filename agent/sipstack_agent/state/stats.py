"""Counts for /status and metrics: outbox depth and age, dead letters, calls, rows."""

from __future__ import annotations

import sqlite3
from datetime import datetime

from .base import StoreBase
from .codec import ts
from .values import StoreStats, age_counts


def stats(conn: sqlite3.Connection, now: float) -> StoreStats:
    # one scan of the covering index outbox_kind (kind, created_at), never of the documents
    kinds = conn.execute("SELECT kind, count(*), min(created_at) FROM outbox GROUP BY kind")
    by_kind: dict[str, int] = {}
    oldest: float | None = None
    for kind, n, first in kinds:
        by_kind[kind] = n
        oldest = first if oldest is None or first < oldest else oldest
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
    def younger_than(t: float) -> int:  # a covering scan of outbox_kind, in C
        return int(
            conn.execute(
                "SELECT count(*) FROM outbox INDEXED BY outbox_kind WHERE created_at > ?", (t,)
            ).fetchone()[0]
        )

    total = int(conn.execute("SELECT count(*) FROM outbox").fetchone()[0])
    by_age = age_counts(now, younger_than, total)
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
