"""Rows in: new CEL/CDR rows (by dedup_key) stored with their sources' positions, their
calls grouped and marked dirty, in one transaction."""

from __future__ import annotations

import contextlib
import sqlite3
from collections.abc import Callable, Mapping, Sequence
from datetime import datetime
from typing import Any, TypeVar

from ..calls.derive import cdr_end, event_name
from ..calls.settle import end_point
from ..model import CdrRow, CelRow
from .base import StoreBase
from .codec import cdr_encode, cel_encode, now_ts, ts
from .grouping import group, mark_dirty
from .positions import Positions, set_positions
from .room import Need
from .tombstones import drop_delivered, has_tombstones
from .values import IngestResult

_Row = TypeVar("_Row", CelRow, CdrRow)


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
    tombstones = has_tombstones(conn)
    if tombstones:
        drop_delivered(conn, cel_by_key)
        drop_delivered(conn, cdr_by_key)
    new_cels = _insert_new(conn, "cel", cel_by_key, cel_encode)
    new_cdrs = _insert_new(conn, "cdr", cdr_by_key, cdr_encode)
    duplicates = len(cels) + len(cdrs) - len(new_cels) - len(new_cdrs)

    dirty: set[str] = set()
    merges = 0
    if new_cels or new_cdrs:
        pairs: set[tuple[str, str]] = {(r.call_linkedid, r.uniqueid) for r in new_cels}
        pairs.update((r.call_linkedid, r.uniqueid) for r in new_cdrs)
        dirty, merges, key_of = group(conn, pairs, now)
        ends = _last_events(new_cels, new_cdrs, key_of)
        ended = {
            key_of.get(c.call_linkedid, c.call_linkedid)
            for c in new_cels
            if event_name(c.eventtype) == "LINKEDID_END"
        }
        mark_dirty(conn, dirty, now, tombstones=tombstones, last_event=ends, ended=ended)
    set_positions(conn, positions, now)
    return IngestResult(len(new_cels), len(new_cdrs), duplicates, len(dirty), merges)


def _last_events(
    cels: Sequence[CelRow], cdrs: Sequence[CdrRow], key_of: Mapping[str, str]
) -> dict[str, float]:
    """The newest time of each call's new rows (CEL eventtime, CDR end), as the point a
    source's watermark must pass (`end_point`), UTC epoch."""
    newest: dict[str, tuple[float, datetime]] = {}  # as calls.derive's last_event
    times: list[tuple[str, datetime | CdrRow]] = [(c.call_linkedid, c.eventtime) for c in cels]
    times.extend((d.call_linkedid, d) for d in cdrs)
    for lid, t in times:
        try:
            at = cdr_end(t) if isinstance(t, CdrRow) else t
            e = ts(at)
        except (OverflowError, ValueError):  # a duration or time past datetime's range
            continue  # only an optimisation is lost: the other rows still say it
        key = key_of.get(lid, lid)
        old = newest.get(key)
        if old is None or e > old[0]:
            newest[key] = (e, at)
    out: dict[str, float] = {}
    for key, (_, at) in newest.items():
        with contextlib.suppress(OverflowError):  # the last second datetime can hold
            out[key] = ts(end_point(at))
    return out


def _insert_new(
    conn: sqlite3.Connection, table: str, by_key: dict[str, _Row], encode: Callable[[_Row], str]
) -> list[_Row]:
    """Insert the rows not stored yet (one executemany); returns them in batch order.

    Rows already stored are ignored by the UNIQUE dedup_key. When some were, the new
    ones are the rows past the largest `seq` before the insert (rowids only grow, and
    this transaction is the only writer).
    """
    if not by_key:
        return []
    top = conn.execute(f"SELECT max(seq) FROM {table}").fetchone()[0]
    before = conn.total_changes
    conn.executemany(
        f"INSERT OR IGNORE INTO {table} (dedup_key, linkedid, data) VALUES (?, ?, ?)",
        [(k, r.call_linkedid, encode(r)) for k, r in by_key.items()],
    )
    if conn.total_changes - before == len(by_key):
        return list(by_key.values())
    fresh = {
        k
        for (k,) in conn.execute(
            f"SELECT dedup_key FROM {table} WHERE seq > ?", (-1 if top is None else top,)
        )
    }
    return [r for k, r in by_key.items() if k in fresh]


class IngestMethods(StoreBase):
    async def ingest(
        self,
        cels: Sequence[CelRow] = (),
        cdrs: Sequence[CdrRow] = (),
        positions: Mapping[str, Mapping[str, Any]] | None = None,
    ) -> IngestResult:
        """Store new rows (by dedup_key), mark their calls dirty, save positions: one commit."""
        return await self._tx_growing(Need.ROWS, ingest_rows, cels, cdrs, positions or {}, now_ts())

    async def find_call(self, linkedid: str) -> str | None:
        """The call key a linkedid currently belongs to (None when unknown)."""
        row = await self._run(
            lambda c: c.execute(
                "SELECT call_key FROM links WHERE linkedid = ?", (linkedid,)
            ).fetchone()
        )
        return None if row is None else str(row[0])
