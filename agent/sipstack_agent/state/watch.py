"""The recording files still being watched for stability (recordings.manager.Watched as
JSON), one row per real path: their own table since schema 5 (before, one position)."""

from __future__ import annotations

import sqlite3
from collections.abc import Mapping, Sequence
from typing import Any

from .codec import dumps

WATCH_POSITION = "recordings.watch"  # where schema 4 kept the watched recording files


def replace_watch(conn: sqlite3.Connection, items: Sequence[Mapping[str, Any]]) -> None:
    conn.execute("DELETE FROM recording_watch")
    conn.executemany(
        "INSERT OR REPLACE INTO recording_watch (real_path, data) VALUES (?, ?)",
        [(str(w.get("real_path", "")), dumps(dict(w))) for w in items],
    )
