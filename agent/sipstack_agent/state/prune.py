"""Bounded clean-up: closed, delivered calls (leaving tombstones), old dead letters and
expired tombstones."""

from __future__ import annotations

import sqlite3
from datetime import datetime

from .base import StoreBase
from .codec import ts
from .query import chunks, marks, select_in
from .tombstones import write_tombstones
from .values import Loaded, PruneResult


def prune(
    conn: sqlite3.Connection,
    now: float,
    keep_closed_for: float,
    keep_dead_for: float,
    max_calls: int,
    keep_delivered_for: float,
    loaded: Loaded,
) -> PruneResult:
    keys = [
        k
        for (k,) in conn.execute(
            "SELECT c.call_key FROM calls c WHERE c.closed = 1 AND c.dirty = 0 "
            "AND c.closed_at <= ? "
            "AND NOT EXISTS (SELECT 1 FROM outbox o WHERE o.call_key = c.call_key) "
            "LIMIT ?",
            (now - keep_closed_for, max_calls),
        )
    ]
    cel_n = cdr_n = 0
    if keys:
        lids = [
            lid
            for (lid,) in select_in(
                conn, "SELECT linkedid FROM links WHERE call_key IN ({in})", keys
            )
        ]
        write_tombstones(conn, lids, now)
        for chunk in chunks(lids):
            m = marks(len(chunk))
            cel_n += conn.execute(f"DELETE FROM cel WHERE linkedid IN ({m})", tuple(chunk)).rowcount
            cdr_n += conn.execute(f"DELETE FROM cdr WHERE linkedid IN ({m})", tuple(chunk)).rowcount
            conn.execute(f"DELETE FROM recordings WHERE linkedid IN ({m})", tuple(chunk))
            conn.execute(f"DELETE FROM chans WHERE linkedid IN ({m})", tuple(chunk))
            conn.execute(f"DELETE FROM links WHERE linkedid IN ({m})", tuple(chunk))
        for chunk in chunks(keys):
            conn.execute(f"DELETE FROM calls WHERE call_key IN ({marks(len(chunk))})", tuple(chunk))
        for k in keys:
            loaded.pop(k, None)
    dead_n = conn.execute(
        "DELETE FROM dead_letters WHERE dead_at < ?", (now - keep_dead_for,)
    ).rowcount
    # A tombstone holds its call's last revision: it stays while the call has a dead letter
    # (kept keep_dead_for, longer than it), or retrying that one could reuse a delivered key.
    tomb_n = conn.execute(
        "DELETE FROM tombstones WHERE pruned_at < ? AND NOT EXISTS (SELECT 1 FROM dead_letters "
        "d WHERE d.kind = 'call' AND d.call_key = tombstones.call_key)",
        (now - keep_delivered_for,),
    ).rowcount
    return PruneResult(
        calls=len(keys),
        cel_rows=cel_n,
        cdr_rows=cdr_n,
        dead_letters=dead_n,
        tombstones_expired=tomb_n,
    )


class PruneMethods(StoreBase):
    async def prune(
        self,
        now: datetime,
        keep_closed_for: float = 3600.0,
        *,
        keep_dead_for: float = 30 * 86400.0,
        max_calls: int = 5000,
        keep_delivered_for: float = 7 * 86400.0,
    ) -> PruneResult:
        """Delete closed calls (rows, links, recordings) whose documents were all delivered
        (or dead-lettered) and that closed more than keep_closed_for seconds ago; dead
        letters older than keep_dead_for. At most max_calls calls per call (bounded work).

        A pruned call leaves a tombstone per linkedid (row digests + last ship state) for
        keep_delivered_for seconds, and for as long as the call has a dead letter: a
        re-read of its rows (overlap, restart, CSV from 0) is a duplicate, and a new row
        or a retried dead letter continues its revisions.
        """
        return await self._tx(
            prune, ts(now), keep_closed_for, keep_dead_for, max_calls, keep_delivered_for,
            self._loaded,
        )  # fmt: skip
