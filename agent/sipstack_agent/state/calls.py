"""Calls out and back: the calls due for evaluation, their rows loaded in batches, and
each evaluation saved (documents into the outbox with the call's ship state) at once."""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence
from datetime import datetime

from ..calls.document import outbox_rows, revision_key
from ..rules.ids import linkedid_sort_key
from .base import StoreBase
from .codec import (
    cdr_decode,
    cel_decode,
    dt_or_none,
    now_ts,
    rec_from_json,
    ship_from_json,
    ship_to_json,
    ts,
)
from .query import SqlValue, select_in
from .room import Need
from .values import CallRecord, Deferral, EvaluationLike, Loaded

_LOADED_MAX = 200_000  # loads never saved are forgotten past this (saves then clear dirty)


def due_calls(
    conn: sqlite3.Connection,
    now: float,
    limit: int,
    mark: float | None,
    defer: tuple[float, float, float] | None = None,
) -> list[str]:
    if defer is None:
        dirty = conn.execute(
            "SELECT call_key FROM calls WHERE dirty = 1 ORDER BY last_row_at LIMIT ?", (limit,)
        )
    else:
        ended, still_open, at_most = defer
        dirty = conn.execute(
            "SELECT call_key FROM calls WHERE dirty = 1 AND (last_event IS NULL "
            "OR (last_event <= ? AND (has_end = 1 OR last_event <= ?)) "
            "OR last_row_at <= ?) ORDER BY last_row_at LIMIT ?",
            # last_row_at is the store's own clock
            (ended, still_open, now_ts() - at_most, limit),
        )
    keys = [k for (k,) in dirty]
    seen = set(keys)
    queries = [
        (
            "SELECT call_key FROM calls WHERE next_check_at IS NOT NULL AND next_check_at <= ? "
            "ORDER BY next_check_at LIMIT ?",
            (now, limit),
        ),
        (
            "SELECT call_key FROM calls WHERE wait_mark IS NOT NULL AND wait_mark <= ? "
            "ORDER BY wait_mark LIMIT ?",
            (mark if mark is not None else float("inf"), limit),
        ),
    ]
    for sql, args in queries:
        if len(keys) >= limit:
            break
        for (k,) in conn.execute(sql, args):
            if k not in seen:
                keys.append(k)
                seen.add(k)
                if len(keys) >= limit:
                    break
    return keys


def load_calls(conn: sqlite3.Connection, call_keys: list[str], loaded: Loaded) -> list[CallRecord]:
    # A few IN (...) queries for the whole batch, not five per call.
    cols = "SELECT call_key, ship, closed, dirty, next_check_at, gen, epoch FROM calls "
    rows = {r[0]: r for r in select_in(conn, cols + "WHERE call_key IN ({in})", call_keys)}
    missing = [k for k in dict.fromkeys(call_keys) if k not in rows]
    alias: dict[str, str] = {}
    if missing:
        alias = dict(
            select_in(
                conn, "SELECT linkedid, call_key FROM links WHERE linkedid IN ({in})", missing
            )
        )
        targets = {ck for ck in alias.values() if ck not in rows}
        if targets:
            rows.update(
                (r[0], r) for r in select_in(conn, cols + "WHERE call_key IN ({in})", targets)
            )
    keys: dict[str, None] = {}  # the calls to load, in the order asked
    for key in call_keys:
        ck = key if key in rows else alias.get(key)
        if ck is not None and ck in rows:
            keys.setdefault(ck, None)
    if not keys:
        return []
    lids_of: dict[str, list[str]] = {ck: [] for ck in keys}
    owner: dict[str, str] = {}
    for lid, ck in select_in(
        conn, "SELECT linkedid, call_key FROM links WHERE call_key IN ({in})", keys
    ):
        lids_of[ck].append(lid)
        owner[lid] = ck
    cel_of: dict[str, list[tuple[int, str]]] = {ck: [] for ck in keys}
    for seq, lid, d in select_in(
        conn, "SELECT seq, linkedid, data FROM cel WHERE linkedid IN ({in})", owner
    ):
        cel_of[owner[lid]].append((seq, d))
    cdr_of: dict[str, list[tuple[int, str]]] = {ck: [] for ck in keys}
    for seq, lid, d in select_in(
        conn, "SELECT seq, linkedid, data FROM cdr WHERE linkedid IN ({in})", owner
    ):
        cdr_of[owner[lid]].append((seq, d))
    rec_of: dict[str, list[tuple[str, str, str]]] = {ck: [] for ck in keys}
    for lid, path, d in select_in(
        conn, "SELECT linkedid, file_path, data FROM recordings WHERE linkedid IN ({in})", owner
    ):
        rec_of[owner[lid]].append((lid, path, d))
    out: list[CallRecord] = []
    for ck in keys:
        _, ship, closed, dirty, next_check_at, gen, epoch = rows[ck]
        if len(loaded) > _LOADED_MAX:
            loaded.clear()
        loaded[ck] = (gen, epoch)
        out.append(
            CallRecord(
                call_key=ck,
                cels=[cel_decode(d) for _, d in sorted(cel_of[ck])],
                cdrs=[cdr_decode(d) for _, d in sorted(cdr_of[ck])],
                recordings=[rec_from_json(d) for *_, d in sorted(rec_of[ck])],
                ship=ship_from_json(ship),
                linkedids=sorted(lids_of[ck], key=linkedid_sort_key),
                closed=bool(closed),
                dirty=bool(dirty),
                next_check_at=dt_or_none(next_check_at),
                gen=gen,
                epoch=epoch,
            )
        )
    return out


def save_evaluations(
    conn: sqlite3.Connection,
    items: Sequence[tuple[str, EvaluationLike, tuple[int, int] | None]],
    now: float,
    connector_id: str,
) -> int:
    applied = 0
    outbox: list[tuple[SqlValue, ...]] = []
    updates: list[tuple[SqlValue, ...]] = []
    # One IN (...) query for the batch (the updates are written after the loop, so a key
    # asked twice sees the same row either way).
    current = {
        r[0]: r[1:]
        for r in select_in(
            conn,
            "SELECT call_key, gen, epoch, closed, closed_at FROM calls WHERE call_key IN ({in})",
            dict.fromkeys(k for k, _, _ in items),
        )
    }
    for call_key, ev, seen in items:
        row = current.get(call_key)
        if row is None:
            continue
        gen, epoch, was_closed, closed_at = row
        if seen is not None and seen[1] != epoch:
            continue  # merged meanwhile: stale view of the call
        still_dirty = 1 if (seen is not None and seen[0] != gen) else 0
        texts = outbox_rows(ev.documents, getattr(ev, "outbox_texts", None))
        for doc, text in zip(ev.documents, texts, strict=True):
            ikey = revision_key(connector_id, doc["linkedid"], int(doc["revision"]))
            outbox.append(("call", call_key, ikey, text, now, now))
        if ev.closed:
            if not was_closed or ev.documents or closed_at is None:
                closed_at = now
        else:
            closed_at = None
        nca = ts(ev.next_check_at) if ev.next_check_at is not None else None
        wait = getattr(ev, "wait_mark", None)  # calls.Evaluation has it; stand-ins may not
        updates.append(
            (
                still_dirty,
                nca,
                ts(wait) if isinstance(wait, datetime) else None,
                ship_to_json(ev.ship),
                int(bool(ev.closed)),
                closed_at,
                call_key,
            )
        )
        applied += 1
    if outbox:
        conn.executemany(
            "INSERT OR IGNORE INTO outbox (kind, call_key, idempotency_key, payload, "
            "created_at, next_attempt_at) VALUES (?, ?, ?, ?, ?, ?)",
            outbox,
        )
    if updates:
        conn.executemany(
            "UPDATE calls SET dirty = ?, next_check_at = ?, wait_mark = ?, ship = ?, "
            "closed = ?, closed_at = ? WHERE call_key = ?",
            updates,
        )
    return applied


class CallMethods(StoreBase):
    async def due_calls(
        self,
        now: datetime,
        limit: int = 1000,
        *,
        watermark: datetime | None = None,
        defer: Deferral | None = None,
    ) -> list[str]:
        """Dirty calls (oldest activity first), then calls whose timer is due, then
        calls waiting for a watermark (`wait_mark`) that `watermark` has reached.

        `watermark` is the sources' low watermark (calls.settle.low_watermark);
        None means no source holds calls back, so every waiting call is due.
        `defer` (while a source reads a backlog, `Deferral`): a dirty call whose
        newest row is past it is left for later, unless its rows arrived
        `defer.at_most` seconds ago; its evaluation could only hold it for the
        watermark, or find it still open.
        """
        mark = None if watermark is None else ts(watermark)
        later = None if defer is None else (ts(defer.ended), ts(defer.open), defer.at_most)
        return await self._run(due_calls, ts(now), limit, mark, later)

    async def load_call(self, call_key: str) -> CallRecord | None:
        """Rows, recordings and ship state of a call (None when it no longer exists).

        A key merged away meanwhile resolves to its surviving call.
        """
        recs = await self.load_calls([call_key])
        return recs[0] if recs else None

    async def load_calls(self, call_keys: Sequence[str]) -> list[CallRecord]:
        """Batch form of load_call (one thread hop); unknown keys are skipped."""
        recs = await self._run(load_calls, list(call_keys), self._loaded)
        for rec in recs:
            rec.revision_floor = self.revision_floor
        return recs

    async def save_evaluation(
        self, call_key: str, ev: EvaluationLike, *, now: datetime | None = None
    ) -> bool:
        """Persist an evaluation of a call loaded with load_call: ONE transaction.

        Documents go to the outbox (kind 'call', Idempotency-Key
        f"{connector_id}:{linkedid}:{revision}", duplicates ignored), the ship
        state, timer and closed flag are saved and the dirty flag is cleared,
        unless rows arrived since load_call (then the call stays dirty).

        Returns False (and stores nothing) when the call was merged into
        another group or pruned since it was loaded: the evaluation saw only
        part of the call; the merged call is dirty and will be evaluated again.
        """
        return await self.save_evaluations([(call_key, ev)], now=now) == 1

    async def save_evaluations(
        self, items: Sequence[tuple[str, EvaluationLike]], *, now: datetime | None = None
    ) -> int:
        """Batch form of save_evaluation (one transaction); returns how many were applied."""
        batch = [(k, ev, self._loaded.pop(k, None)) for k, ev in items]
        t = ts(now) if now else now_ts()
        return await self._tx_growing(Need.DOCUMENTS, save_evaluations, batch, t, self.connector_id)
