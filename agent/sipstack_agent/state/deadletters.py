"""Dead letters: documents the API refused for good, listed, requeued (a call document as
a new revision of its call) or dropped."""

from __future__ import annotations

import dataclasses
import sqlite3
from collections.abc import Sequence
from datetime import datetime
from typing import Any

from ..calls.document import as_revision, next_revision, revision_key
from .base import StoreBase
from .codec import dt, dt_or_none, dumps, loads_object, now_ts, ship_from_json, ship_to_json, ts
from .query import SqlValue

_DEAD_BODY_MAX = 64 * 1024

_DEAD_COLS = (
    "id", "outbox_id", "kind", "call_key", "idempotency_key", "payload",
    "attempts", "status", "body", "reason", "created_at", "dead_at",
)  # fmt: skip


def _dead_row(r: Sequence[SqlValue]) -> dict[str, Any]:
    d: dict[str, Any] = dict(zip(_DEAD_COLS, r, strict=True))
    d["payload"] = loads_object(d["payload"])
    d["created_at"] = dt_or_none(d["created_at"])
    d["dead_at"] = dt_or_none(d["dead_at"])
    return d


def _dead_filter(ids: Sequence[int], reason: str | None) -> tuple[str, tuple[SqlValue, ...]]:
    parts: list[str] = []
    args: list[SqlValue] = []
    if ids:
        parts.append(f"id IN ({','.join('?' * len(ids))})")
        args.extend(int(i) for i in ids)
    if reason is not None:
        parts.append("reason = ?")
        args.append(reason)
    return ("WHERE " + " AND ".join(parts)) if parts else "", tuple(args)


def move_to_dead(
    conn: sqlite3.Connection, item_id: int, status: int | None, body: str, reason: str, t: float
) -> bool:
    cur = conn.execute(
        "INSERT INTO dead_letters (outbox_id, kind, call_key, idempotency_key, payload, "
        "attempts, status, body, reason, created_at, dead_at) "
        "SELECT id, kind, call_key, idempotency_key, payload, attempts + 1, ?, ?, ?, "
        "created_at, ? FROM outbox WHERE id = ?",
        (status, (body or "")[:_DEAD_BODY_MAX], reason, t, item_id),
    )
    conn.execute("DELETE FROM outbox WHERE id = ?", (item_id,))
    return cur.rowcount == 1


def current_key(conn: sqlite3.Connection, linkedid: str) -> str:
    """The key of the call `linkedid` belongs to now: its link, else (a pruned call) its
    tombstone's, else itself. A key merged away resolves to its survivor."""
    for table in ("links", "tombstones"):
        r = conn.execute(f"SELECT call_key FROM {table} WHERE linkedid = ?", (linkedid,)).fetchone()
        if r is not None:
            return str(r[0])
    return linkedid


def _requeue_call(
    conn: sqlite3.Connection,
    call_key: str,
    payload: dict[str, Any],
    now: float,
    connector_id: str,
    floor: int,
) -> tuple[dict[str, Any], str] | None:
    """A call document as its linkedid's next revision (payload, key); None: superseded.

    Revisions are per linkedid. A linkedid merged into another call is superseded: the
    survivor's documents carry its rows and name its revisions in `supersedes`
    (grouping.merge_calls records every revision issued for it), and nothing more is
    sent under it (docs/calls.md). Otherwise the last revision issued for it is the
    larger of its ship state's (its call, else its tombstone when the call was pruned)
    and its other dead letters'; the document goes out as the next one, or is dropped
    when it is older than that."""
    linkedid = str(payload.get("linkedid", call_key))
    if current_key(conn, linkedid) != linkedid:
        return None
    row = conn.execute("SELECT ship FROM calls WHERE call_key = ?", (linkedid,)).fetchone()
    table = "calls" if row is not None else "tombstones"
    if row is None:
        row = conn.execute(
            "SELECT ship FROM tombstones WHERE linkedid = ? AND call_key = linkedid", (linkedid,)
        ).fetchone()
    ship = ship_from_json(row[0] if row else None)
    # its dead letters are under its key, beside those of the linkedids merged into it
    # (merge_calls moves a merged-away key's outbox rows to the survivor's key)
    dead = [
        loads_object(p)
        for (p,) in conn.execute(
            "SELECT payload FROM dead_letters WHERE kind = 'call' AND call_key = ?", (linkedid,)
        ).fetchall()
    ]
    revs = [int(d.get("revision", 0)) for d in dead if str(d.get("linkedid")) == linkedid]
    latest = max([ship.revision, *revs])
    if int(payload.get("revision", 0)) < latest:
        return None
    revision = next_revision(latest, floor)
    moved = ship_to_json(dataclasses.replace(ship, revision=revision))
    if table == "calls":  # an evaluation in flight is discarded (epoch) and done again
        conn.execute(
            "UPDATE calls SET ship = ?, epoch = epoch + 1, gen = gen + 1, dirty = 1 "
            "WHERE call_key = ?",
            (moved, linkedid),
        )
    elif row is not None:  # a new row of the pruned call continues from this revision
        conn.execute("UPDATE tombstones SET ship = ? WHERE linkedid = ?", (moved, linkedid))
    payload = as_revision(payload, revision, dt(now))
    return payload, revision_key(connector_id, linkedid, revision)


def requeue(
    conn: sqlite3.Connection, dead_id: int, now: float, connector_id: str, floor: int = 0
) -> str | None:
    """The new key; "" when superseded (dropped); None when the dead letter is gone."""
    r = conn.execute(
        "SELECT kind, call_key, idempotency_key, payload FROM dead_letters WHERE id = ?",
        (dead_id,),
    ).fetchone()
    if r is None:
        return None  # retried or dropped meanwhile
    kind, call_key, key, payload = str(r[0]), str(r[1]), str(r[2]), loads_object(r[3])
    if kind == "call":
        sent = _requeue_call(conn, call_key, payload, now, connector_id, floor)
        if sent is None:
            conn.execute("DELETE FROM dead_letters WHERE id = ?", (dead_id,))
            return ""
        payload, key = sent
    # the outbox row goes to the call the key belongs to now (as merge_calls moves them)
    owner = current_key(conn, call_key) if call_key else call_key
    conn.execute("DELETE FROM outbox WHERE idempotency_key = ?", (key,))
    conn.execute(
        "INSERT INTO outbox (kind, call_key, idempotency_key, payload, created_at, "
        "next_attempt_at) VALUES (?, ?, ?, ?, ?, ?)",
        (kind, owner, key, dumps(payload), now, now),
    )
    conn.execute("DELETE FROM dead_letters WHERE id = ?", (dead_id,))
    return key


class DeadLetterMethods(StoreBase):
    async def outbox_dead(
        self,
        item_id: int,
        status: int | None,
        body: str,
        reason: str,
        *,
        now: datetime | None = None,
    ) -> bool:
        """Move an outbox item to the dead letters (False when it was not in the outbox)."""
        t = ts(now) if now else now_ts()
        return await self._tx(move_to_dead, item_id, status, body, reason, t)

    async def dead_letters(self, limit: int = 100) -> list[dict[str, Any]]:
        """Most recent dead letters (for /status and operators)."""
        return await self._dead_rows("ORDER BY id DESC LIMIT ?", (limit,))

    async def dead_letter(self, dead_id: int) -> dict[str, Any] | None:
        """One dead letter by id (as `dead_letters` gives them), None when there is none."""
        rows = await self._dead_rows("WHERE id = ?", (dead_id,))
        return rows[0] if rows else None

    async def dead_letters_where(
        self, *, ids: Sequence[int] = (), reason: str | None = None
    ) -> list[dict[str, Any]]:
        """Dead letters by id and/or reason (both empty: all), oldest first."""
        where, args = _dead_filter(ids, reason)
        return await self._dead_rows(where + " ORDER BY id", args)

    async def _dead_rows(self, where: str, args: tuple[SqlValue, ...]) -> list[dict[str, Any]]:
        def q(conn: sqlite3.Connection) -> list[dict[str, Any]]:
            cur = conn.execute(f"SELECT {', '.join(_DEAD_COLS)} FROM dead_letters {where}", args)
            return [_dead_row(r) for r in cur.fetchall()]

        return await self._run(q)

    async def requeue_dead_letters(
        self, ids: Sequence[int] = (), *, reason: str | None = None, now: datetime | None = None
    ) -> list[tuple[int, str | None]]:
        """Put dead letters (by id and/or reason; both empty: all) back in the outbox, oldest
        first, one short transaction each. A call document goes back as a NEW revision of
        its call (its own Idempotency-Key), and the call's ship state moves to that
        revision (an evaluation in flight is discarded and done again), so later revisions
        follow it. A call document its linkedid has a later revision of (queued, delivered
        or itself dead), or of a linkedid merged into another call since (the survivor's
        documents supersede it), is superseded: it is dropped, not sent (it would reuse a
        key or overwrite newer content). Other kinds go back under the call their key
        belongs to now. Returns (dead letter id, new Idempotency-Key, or None when
        superseded)."""
        t = ts(now) if now else now_ts()
        done: list[tuple[int, str | None]] = []
        for row in await self.dead_letters_where(ids=ids, reason=reason):
            outcome = await self._tx(
                requeue, int(row["id"]), t, self.connector_id, self.revision_floor
            )
            if outcome is not None:
                done.append((int(row["id"]), outcome or None))
        return done

    async def drop_dead_letters(self, ids: Sequence[int] = (), *, reason: str | None = None) -> int:
        """Delete dead letters (by id and/or reason; both empty: all); returns how many."""
        where, args = _dead_filter(ids, reason)
        return await self._tx(
            lambda c: c.execute(f"DELETE FROM dead_letters {where}", args).rowcount
        )
