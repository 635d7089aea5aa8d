"""Call groups: every linkedid belongs to one call (key: its smallest linkedid); groups
that share a uniqueid merge, and a call is marked dirty when it gets new rows."""

from __future__ import annotations

import dataclasses
import sqlite3
from collections.abc import Collection, Iterable, Mapping, Sequence

from ..model import SHIP_MERGED_FROM, SHIP_SUPERSEDED, ShipState
from ..rules.ids import group_pairs, linkedid_sort_key
from .codec import ship_from_json, ship_to_json
from .query import chunks, marks, select_in


def group(
    conn: sqlite3.Connection, pairs: set[tuple[str, str]], now: float
) -> tuple[set[str], int, dict[str, str]]:
    """Attach (linkedid, uniqueid) pairs to call groups; merge groups sharing a uniqueid.

    Returns the keys of the calls touched, the number of groups merged away and the
    call key of each linkedid of `pairs`.
    """
    lids = {lid for lid, _ in pairs}
    uids = {uid for _, uid in pairs if uid}
    chan_lid: dict[str, str] = dict(
        select_in(conn, "SELECT uniqueid, linkedid FROM chans WHERE uniqueid IN ({in})", uids)
    )
    link_key: dict[str, str] = dict(
        select_in(
            conn,
            "SELECT linkedid, call_key FROM links WHERE linkedid IN ({in})",
            lids | set(chan_lid.values()),
        )
    )
    existing_keys = set(link_key.values())
    # (call key, uniqueid) edges; only those of a uniqueid seen with two or more keys
    # can merge calls, so the core groups those alone (every other key is its own group)
    key_uid: list[tuple[str, str]] = []
    uid_key: dict[str, str] = {}  # uniqueid -> the first key it was seen with
    shared: set[str] = set()  # uniqueids seen with more than one key
    new_links: list[str] = []
    new_chans: dict[str, str] = {}
    for lid, uid in sorted(pairs):
        kl = link_key.get(lid)
        if kl is None:
            kl = link_key[lid] = lid
            new_links.append(lid)
        if not uid:
            continue
        key_uid.append((kl, uid))
        if uid_key.setdefault(uid, kl) != kl:
            shared.add(uid)
        ul = chan_lid.get(uid)
        ku = link_key.get(ul) if ul is not None else None
        if ku is None:
            # never seen (or its call was pruned): remember where it first appeared
            chan_lid[uid] = lid
            new_chans[uid] = lid
        elif ku != kl:
            key_uid.append((ku, uid))
            shared.add(uid)

    survivor_of: dict[str, str] = {}
    merges = 0
    for keys in group_pairs([(k, uid) for k, uid in key_uid if uid in shared]):
        survivor = min(keys, key=linkedid_sort_key)
        for k in keys:
            survivor_of[k] = survivor
        old = sorted(k for k in keys if k in existing_keys)
        if len(keys) > 1 and old and old != [survivor]:
            merges += len([k for k in old if k != survivor])
            merge_calls(conn, survivor, old, now)
    if new_links:
        conn.executemany(
            "INSERT INTO links (linkedid, call_key) VALUES (?, ?)",
            [(lid, survivor_of.get(lid, lid)) for lid in new_links],
        )
    if new_chans:
        conn.executemany(
            "INSERT OR REPLACE INTO chans (uniqueid, linkedid) VALUES (?, ?)",
            list(new_chans.items()),
        )
    key_of = {lid: survivor_of.get(link_key[lid], link_key[lid]) for lid in lids}
    return set(key_of.values()), merges, key_of


def merge_calls(conn: sqlite3.Connection, survivor: str, keys: Sequence[str], now: float) -> None:
    """Merge existing calls `keys` (survivor may or may not be among them) into survivor."""
    rows = select_in(
        conn,
        "SELECT call_key, ship, next_check_at, created_at, epoch, gen, last_event, has_end "
        "FROM calls WHERE call_key IN ({in})",
        keys,
    )
    ships = [(k, ship_from_json(s)) for k, s, *_ in rows]
    # Revisions are per linkedid (Idempotency-Key connector:linkedid:revision): the
    # surviving key keeps its own ship state (a new one when it had none), and the
    # documents already sent for the merged-away keys are named in "superseded" so
    # that every later document of the survivor says which ones it replaces.
    ship = next((st for k, st in ships if k == survivor), ShipState())
    superseded: dict[str, int] = {}
    for k, st in ships:
        for lid, rev in (st.extra.get(SHIP_SUPERSEDED) or {}).items():
            superseded[str(lid)] = max(int(rev), superseded.get(str(lid), 0))
        if k != survivor and st.revision > 0:
            superseded[k] = max(st.revision, superseded.get(k, 0))
    merged_from = sorted(
        {k for k in keys if k != survivor}
        | {k for _, s in ships for k in s.extra.get(SHIP_MERGED_FROM, [])}
    )
    extra = {**ship.extra, SHIP_MERGED_FROM: merged_from}
    if superseded:
        extra[SHIP_SUPERSEDED] = dict(sorted(superseded.items()))
    ship = dataclasses.replace(ship, extra=extra)
    timers = [r[2] for r in rows if r[2] is not None]
    created = min((r[3] for r in rows), default=now)
    epoch = max((r[4] for r in rows), default=0) + 1
    gen = max((r[5] for r in rows), default=0) + 1
    last_event = max((r[6] for r in rows if r[6] is not None), default=None)
    has_end = max((r[7] for r in rows), default=0)
    others = [k for k in keys if k != survivor]
    # dead_letters keep the key they were refused under (no index on it: a merge would
    # read them all); a retry finds the call through links (deadletters.current_key)
    for chunk in chunks(others):
        m = marks(len(chunk))
        conn.execute(f"UPDATE links SET call_key = ? WHERE call_key IN ({m})", (survivor, *chunk))
        conn.execute(f"UPDATE outbox SET call_key = ? WHERE call_key IN ({m})", (survivor, *chunk))
        conn.execute(f"DELETE FROM calls WHERE call_key IN ({m})", tuple(chunk))
    conn.execute(
        "INSERT INTO calls (call_key, dirty, gen, epoch, next_check_at, ship, closed, "
        "closed_at, created_at, last_row_at, last_event, has_end) "
        "VALUES (?, 1, ?, ?, ?, ?, 0, NULL, ?, ?, ?, ?) "
        "ON CONFLICT(call_key) DO UPDATE SET dirty = 1, gen = excluded.gen, "
        "epoch = excluded.epoch, next_check_at = excluded.next_check_at, "
        "ship = excluded.ship, closed = 0, closed_at = NULL, "
        "created_at = excluded.created_at, last_row_at = excluded.last_row_at, "
        "last_event = excluded.last_event, has_end = excluded.has_end",
        (
            survivor,
            gen,
            epoch,
            min(timers) if timers else None,
            ship_to_json(ship),
            created,
            now,
            last_event,
            has_end,
        ),
    )


def mark_dirty(
    conn: sqlite3.Connection,
    keys: Iterable[str],
    now: float,
    *,
    tombstones: bool = True,
    last_event: Mapping[str, float] | None = None,
    ended: Collection[str] = (),
) -> None:
    """Mark calls dirty (created when new). `tombstones=False`: the caller knows there are
    none, so no call can continue a pruned one's revisions. `last_event`: the newest
    time (UTC epoch, `calls.settle.end_point`) of each call's new rows; a call's column
    keeps the largest it was told. `ended`: calls a LINKEDID_END row was stored for."""
    keys = list(keys)
    ends = last_event or {}
    # A call pruned after delivery that gets a new row continues its revisions.
    if tombstones:
        conn.executemany(
            "INSERT OR IGNORE INTO calls (call_key, dirty, gen, created_at, last_row_at, ship) "
            "SELECT t.call_key, 1, 0, ?, ?, t.ship FROM tombstones t WHERE t.linkedid = ? "
            "AND t.call_key = t.linkedid",
            [(now, now, k) for k in keys],
        )
    conn.executemany(
        "INSERT INTO calls (call_key, dirty, gen, created_at, last_row_at, last_event, has_end) "
        "VALUES (?, 1, 1, ?, ?, ?, ?) "
        "ON CONFLICT(call_key) DO UPDATE SET dirty = 1, gen = gen + 1, "
        "last_row_at = excluded.last_row_at, last_event = max("
        "coalesce(calls.last_event, excluded.last_event), "
        "coalesce(excluded.last_event, calls.last_event)), "
        "has_end = max(calls.has_end, excluded.has_end)",
        [(k, now, now, ends.get(k), int(k in ended)) for k in keys],
    )
