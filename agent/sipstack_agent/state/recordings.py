"""Recordings tied to calls: (linkedid, file_path) -> RecordingFile; a change marks the
call dirty so the evaluator ships it."""

from __future__ import annotations

import sqlite3
from collections.abc import Mapping, Sequence
from typing import Any

from ..model import RecordingFile
from .base import StoreBase
from .codec import loads_object, now_ts, rec_to_json
from .grouping import group, mark_dirty
from .watch import replace_watch


def add_recordings(
    conn: sqlite3.Connection, linkedid: str, recs: list[RecordingFile], now: float
) -> int:
    before = conn.total_changes
    conn.executemany(
        "INSERT INTO recordings (linkedid, file_path, data) VALUES (?, ?, ?) "
        "ON CONFLICT(linkedid, file_path) DO UPDATE SET data = excluded.data "
        "WHERE data != excluded.data",
        [(linkedid, r.file_path, rec_to_json(r)) for r in recs],
    )
    changed = conn.total_changes - before
    if changed:
        keys, _, _ = group(conn, {(linkedid, "")}, now)
        mark_dirty(conn, keys, now)
    return changed


class RecordingMethods(StoreBase):
    async def add_recordings(self, linkedid: str, recordings: Sequence[RecordingFile]) -> int:
        """Tie recordings to the call of `linkedid` (created if unknown) and mark it dirty.

        A recording is identified by (linkedid, file_path); adding it again with
        changed fields (size, uploaded) updates it. Returns how many were new or changed.
        """
        return await self._tx(add_recordings, linkedid, list(recordings), now_ts())

    async def recording_watch(self) -> list[dict[str, Any]]:
        """The recording files still being watched (recordings.manager.Watched as JSON)."""
        rows = await self._run(
            lambda c: c.execute("SELECT data FROM recording_watch ORDER BY real_path").fetchall()
        )
        return [loads_object(r[0]) for r in rows]

    async def set_recording_watch(self, items: Sequence[Mapping[str, Any]]) -> None:
        """Replace the watched recording files (one transaction)."""
        await self._tx(replace_watch, list(items))
