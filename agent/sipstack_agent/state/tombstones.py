"""Tombstones of pruned, delivered calls: one per linkedid, the digests of its rows and
its call's last ship state. A re-read row found here is a duplicate; a new row of the
call continues its revisions (`grouping.mark_dirty`)."""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence
from typing import TypeVar

from ..model import CdrRow, CelRow
from .codec import row_digest
from .query import select_in

_Row = TypeVar("_Row", CelRow, CdrRow)


def has_tombstones(conn: sqlite3.Connection) -> bool:
    """Whether any call was pruned (most batches then skip the tombstone lookups)."""
    return bool(conn.execute("SELECT EXISTS (SELECT 1 FROM tombstones)").fetchone()[0])


def drop_delivered(conn: sqlite3.Connection, by_key: dict[str, _Row]) -> None:
    """Remove from `by_key` the rows of pruned calls that were already delivered."""
    lids = {r.call_linkedid for r in by_key.values()}
    if not lids:
        return
    gone: dict[str, set[str]] = {
        lid: set(rows.split())
        for lid, rows in select_in(
            conn, "SELECT linkedid, rows FROM tombstones WHERE linkedid IN ({in})", lids
        )
    }
    if gone:
        for k in [k for k, r in by_key.items() if row_digest(k) in gone.get(r.call_linkedid, ())]:
            del by_key[k]


def write_tombstones(conn: sqlite3.Connection, lids: Sequence[str], now: float) -> None:
    """Remember what was delivered of the linkedids about to be pruned."""
    rows: dict[str, list[str]] = {lid: [] for lid in lids}
    for table in ("cel", "cdr"):
        for lid, key in select_in(
            conn, f"SELECT linkedid, dedup_key FROM {table} WHERE linkedid IN ({{in}})", lids
        ):
            rows[lid].append(row_digest(key))
    conn.executemany(
        "INSERT INTO tombstones (linkedid, call_key, ship, rows, pruned_at) "
        "SELECT l.linkedid, l.call_key, c.ship, ?, ? FROM links l "
        "JOIN calls c ON c.call_key = l.call_key WHERE l.linkedid = ? "
        "ON CONFLICT(linkedid) DO UPDATE SET call_key = excluded.call_key, "
        "ship = excluded.ship, rows = excluded.rows || ' ' || tombstones.rows, "
        "pruned_at = excluded.pruned_at",
        [(" ".join(r), now, lid) for lid, r in rows.items()],
    )
