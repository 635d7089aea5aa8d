"""The outbox: documents waiting for a 2xx, leased to the shipper, retried, delivered;
and `resend`'s documents queued again as new revisions of their calls."""

from __future__ import annotations

import dataclasses
import sqlite3
from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime
from typing import Any

from ..calls.document import as_revision, resend_revision, revision_key
from .base import StoreBase
from .codec import dt, dumps, now_ts, ship_from_json, ship_to_json, ts
from .positions import Positions, set_positions
from .query import SqlValue
from .values import OutboxItem


def outbox_due(
    conn: sqlite3.Connection,
    now: float,
    limit: int,
    kind: str | None,
    lease: float | None,
    exclude: set[int],
) -> list[OutboxItem]:
    sql = (
        "SELECT id, kind, call_key, idempotency_key, payload, attempts, created_at, "
        "next_attempt_at, last_error FROM outbox WHERE next_attempt_at <= ?"
    )
    args: list[SqlValue] = [now]
    if kind is not None:
        sql += " AND kind = ?"
        args.append(kind)
    sql += " ORDER BY next_attempt_at, id LIMIT ?"
    args.append(limit + len(exclude))
    items: list[OutboxItem] = []
    for r in conn.execute(sql, args):
        if r[0] in exclude:
            continue
        items.append(
            OutboxItem(
                id=r[0],
                kind=r[1],
                call_key=r[2],
                idempotency_key=r[3],
                payload_text=r[4],
                attempts=r[5],
                created_at=dt(r[6]),
                next_attempt_at=dt(r[7]),
                last_error=r[8],
            )
        )
        if len(items) >= limit:
            break
    if lease is not None and items:
        conn.executemany(
            "UPDATE outbox SET next_attempt_at = ? WHERE id = ?",
            [(now + lease, it.id) for it in items],
        )
    return items


def resend_one(
    conn: sqlite3.Connection,
    doc: dict[str, Any],
    run: int,
    now: float,
    connector_id: str,
    floor: int = 0,
) -> str:
    linkedid = str(doc["linkedid"])
    link = conn.execute("SELECT call_key FROM links WHERE linkedid = ?", (linkedid,)).fetchone()
    call_key = str(link[0]) if link else linkedid
    row = conn.execute("SELECT ship FROM calls WHERE call_key = ?", (call_key,)).fetchone()
    ship = ship_from_json(row[0] if row else None)
    revision = resend_revision(ship.revision if row else None, run, floor)
    payload = as_revision(doc, revision, dt(now))
    key = revision_key(connector_id, linkedid, revision)
    if row is not None:  # an evaluation in flight is discarded (epoch) and done again
        conn.execute(
            "UPDATE calls SET ship = ?, epoch = epoch + 1, gen = gen + 1, dirty = 1 "
            "WHERE call_key = ?",
            (ship_to_json(dataclasses.replace(ship, revision=revision)), call_key),
        )
    conn.execute(
        "INSERT OR IGNORE INTO outbox (kind, call_key, idempotency_key, payload, "
        "created_at, next_attempt_at) VALUES ('call', ?, ?, ?, ?, ?)",
        (call_key, key, dumps(payload), now, now),
    )
    return str(key)


class OutboxMethods(StoreBase):
    async def enqueue(
        self,
        kind: str,
        idempotency_key: str,
        payload: Mapping[str, Any],
        call_key: str = "",
        *,
        now: datetime | None = None,
    ) -> bool:
        """Generic outbox insert; False when the idempotency key is already queued."""
        t = ts(now) if now else now_ts()

        def ins(conn: sqlite3.Connection) -> bool:
            cur = conn.execute(
                "INSERT OR IGNORE INTO outbox (kind, call_key, idempotency_key, payload, "
                "created_at, next_attempt_at) VALUES (?, ?, ?, ?, ?, ?)",
                (kind, call_key, idempotency_key, dumps(dict(payload)), t, t),
            )
            return cur.rowcount == 1

        return await self._tx(ins)

    async def outbox_due(
        self,
        now: datetime,
        limit: int = 100,
        kind: str | None = None,
        *,
        lease: float | None = None,
        exclude: Iterable[int] = (),
    ) -> list[OutboxItem]:
        """Items whose next_attempt_at <= now, oldest first.

        `lease` (seconds): push the returned items' next_attempt_at to now+lease
        in the same transaction so a second call does not hand them out again
        (a crash makes them due again when the lease expires). `exclude`: ids
        the caller already has in flight.
        """
        return await self._tx(outbox_due, ts(now), limit, kind, lease, set(exclude))

    async def outbox_delivered(self, item_id: int | Sequence[int]) -> None:
        ids = [item_id] if isinstance(item_id, int) else list(item_id)
        await self._tx(
            lambda c: c.executemany("DELETE FROM outbox WHERE id = ?", [(i,) for i in ids])
        )

    async def outbox_retry(self, item_id: int, next_attempt_at: datetime, error: str) -> None:
        await self._tx(
            lambda c: c.execute(
                "UPDATE outbox SET attempts = attempts + 1, next_attempt_at = ?, last_error = ? "
                "WHERE id = ?",
                (ts(next_attempt_at), error[:2000], item_id),
            )
        )

    async def enqueue_resend(
        self,
        docs: Sequence[Mapping[str, Any]],
        positions: Positions,
        *,
        run: int,
        now: datetime | None = None,
    ) -> list[str]:
        """One short transaction: `docs` (complete documents read again by `resend`) into
        the outbox, each as the call's next revision (calls.document.resend_revision) with
        its own Idempotency-Key, the call's ship state moved to it; `positions` (the
        resend cursor) saved with them. Returns the new keys."""
        t = ts(now) if now else now_ts()
        cid, floor = self.connector_id, self.revision_floor

        def body(conn: sqlite3.Connection) -> list[str]:
            keys = [resend_one(conn, dict(d), run, t, cid, floor) for d in docs]
            set_positions(conn, positions, t)
            return keys

        return await self._tx(body)
