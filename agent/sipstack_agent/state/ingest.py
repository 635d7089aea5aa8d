"""Rows in: new CEL/CDR rows (by dedup_key) stored with their sources' positions, their
calls grouped and marked dirty, in one transaction."""

from __future__ import annotations

import sqlite3
from collections.abc import Mapping, Sequence
from typing import Any

from ..model import CdrRow, CelRow
from .base import StoreBase
from .codec import cdr_encode, cel_encode, now_ts
from .grouping import group, mark_dirty
from .positions import Positions, set_positions
from .query import select_in
from .tombstones import drop_delivered
from .values import IngestResult


def ingest_rows(
    conn: sqlite3.Connection,
    cels: Sequence[CelRow],
    cdrs: Sequence[CdrRow],
    positions: Positions,
    now: float,
) -> IngestResult:
    cel_by_key: dict[str, CelRow] = {}
    for c in cels:
        cel_by_key.setdefault(c.dedup_key, c)
    cdr_by_key: dict[str, CdrRow] = {}
    for d in cdrs:
        cdr_by_key.setdefault(d.dedup_key, d)
    for k, *_ in select_in(conn, "SELECT dedup_key FROM cel WHERE dedup_key IN ({in})", cel_by_key):
        del cel_by_key[k]
    for k, *_ in select_in(conn, "SELECT dedup_key FROM cdr WHERE dedup_key IN ({in})", cdr_by_key):
        del cdr_by_key[k]
    drop_delivered(conn, cel_by_key)
    drop_delivered(conn, cdr_by_key)
    new_cels = list(cel_by_key.items())
    new_cdrs = list(cdr_by_key.items())
    duplicates = len(cels) + len(cdrs) - len(new_cels) - len(new_cdrs)

    dirty: set[str] = set()
    merges = 0
    if new_cels or new_cdrs:
        if new_cels:
            conn.executemany(
                "INSERT OR IGNORE INTO cel (dedup_key, linkedid, data) VALUES (?, ?, ?)",
                [(k, r.call_linkedid, cel_encode(r)) for k, r in new_cels],
            )
        if new_cdrs:
            conn.executemany(
                "INSERT OR IGNORE INTO cdr (dedup_key, linkedid, data) VALUES (?, ?, ?)",
                [(k, r.call_linkedid, cdr_encode(r)) for k, r in new_cdrs],
            )
        pairs: set[tuple[str, str]] = {(r.call_linkedid, r.uniqueid) for _, r in new_cels}
        pairs.update((r.call_linkedid, r.uniqueid) for _, r in new_cdrs)
        dirty, merges = group(conn, pairs, now)
        mark_dirty(conn, dirty, now)
    set_positions(conn, positions, now)
    return IngestResult(len(new_cels), len(new_cdrs), duplicates, len(dirty), merges)


class IngestMethods(StoreBase):
    async def ingest(
        self,
        cels: Sequence[CelRow] = (),
        cdrs: Sequence[CdrRow] = (),
        positions: Mapping[str, Mapping[str, Any]] | None = None,
    ) -> IngestResult:
        """Store new rows (by dedup_key), mark their calls dirty, save positions: one commit."""
        return await self._tx(ingest_rows, cels, cdrs, positions or {}, now_ts())

    async def find_call(self, linkedid: str) -> str | None:
        """The call key a linkedid currently belongs to (None when unknown)."""
        row = await self._run(
            lambda c: c.execute(
                "SELECT call_key FROM links WHERE linkedid = ?", (linkedid,)
            ).fetchone()
        )
        return None if row is None else str(row[0])
