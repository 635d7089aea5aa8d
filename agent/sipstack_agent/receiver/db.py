"""The receiver's SQLite store (stdlib sqlite3; short synchronous statements).

One row per accepted request; a replay of an Idempotency-Key is not stored
again. `received_at` is wall-clock unix time (float seconds) so benchmarks
can measure latency from the PBX row commit to the store.
"""

from __future__ import annotations

import json
import sqlite3
import time
from pathlib import Path
from typing import Any

SCHEMA = """
CREATE TABLE IF NOT EXISTS calls (
    id INTEGER PRIMARY KEY,
    idempotency_key TEXT UNIQUE,
    linkedid TEXT NOT NULL,
    revision INTEGER,
    ship_phase TEXT,
    is_complete INTEGER NOT NULL DEFAULT 0,
    shipped_at TEXT,
    received_at REAL NOT NULL,
    body TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS calls_linkedid ON calls(linkedid, revision, id);
CREATE TABLE IF NOT EXISTS recordings (
    id INTEGER PRIMARY KEY,
    idempotency_key TEXT UNIQUE,
    recording_id TEXT,
    linkedid TEXT,
    file_name TEXT,
    file_size INTEGER,
    bytes_received INTEGER,
    content_type TEXT,
    stored_path TEXT,
    sha256 TEXT,
    fields TEXT,
    received_at REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS recordings_linkedid ON recordings(linkedid);
CREATE TABLE IF NOT EXISTS rejects (
    id INTEGER PRIMARY KEY,
    endpoint TEXT,
    status INTEGER,
    reason TEXT,
    idempotency_key TEXT,
    received_at REAL NOT NULL
);
"""


class ReceiverDB:
    def __init__(self, path: str | Path | None = None) -> None:
        self.path = str(path) if path else ":memory:"
        if path:
            Path(path).parent.mkdir(parents=True, exist_ok=True)
        self.conn = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None)
        self.conn.row_factory = sqlite3.Row
        if self.path != ":memory:":
            self.conn.execute("PRAGMA journal_mode=WAL")
        self.conn.execute("PRAGMA synchronous=OFF")
        self.conn.executescript(SCHEMA)

    def close(self) -> None:
        self.conn.close()

    # -- writes

    def insert_call(self, doc: dict[str, Any], body: str, idempotency_key: str | None) -> bool:
        """Store a document; False when its Idempotency-Key was seen before."""
        cur = self.conn.execute(
            "INSERT OR IGNORE INTO calls (idempotency_key, linkedid, revision, ship_phase,"
            " is_complete, shipped_at, received_at, body) VALUES (?,?,?,?,?,?,?,?)",
            (
                idempotency_key,
                str(doc.get("linkedid", "")),
                doc.get("revision") if isinstance(doc.get("revision"), int) else None,
                str(doc.get("ship_phase", "")),
                1 if doc.get("is_complete") is True else 0,
                str(doc.get("shipped_at", "")),
                time.time(),
                body,
            ),
        )
        return cur.rowcount == 1

    def call_body(self, idempotency_key: str) -> str | None:
        """The body first stored under this Idempotency-Key (None when unseen)."""
        row = self.conn.execute(
            "SELECT body FROM calls WHERE idempotency_key = ?", (idempotency_key,)
        ).fetchone()
        return None if row is None else str(row[0])

    def has_recording_key(self, key: str) -> bool:
        row = self.conn.execute(
            "SELECT 1 FROM recordings WHERE idempotency_key = ?", (key,)
        ).fetchone()
        return row is not None

    def insert_recording(self, key: str, fields: dict[str, str], **cols: Any) -> bool:
        cur = self.conn.execute(
            "INSERT OR IGNORE INTO recordings (idempotency_key, recording_id, linkedid, file_name,"
            " file_size, bytes_received, content_type, stored_path, sha256, fields, received_at)"
            " VALUES (?,?,?,?,?,?,?,?,?,?,?)",
            (
                key,
                fields.get("recording_id"),
                fields.get("linkedid"),
                fields.get("file_name"),
                cols.get("file_size"),
                cols.get("bytes_received"),
                cols.get("content_type"),
                cols.get("stored_path"),
                cols.get("sha256"),
                json.dumps(fields),
                time.time(),
            ),
        )
        return cur.rowcount == 1

    def insert_reject(
        self, endpoint: str, status: int, reason: str, idempotency_key: str | None
    ) -> None:
        self.conn.execute(
            "INSERT INTO rejects (endpoint, status, reason, idempotency_key, received_at)"
            " VALUES (?,?,?,?,?)",
            (endpoint, status, reason[:1000], idempotency_key, time.time()),
        )

    # -- queries

    def count_documents(self) -> int:
        return int(self.conn.execute("SELECT count(*) FROM calls").fetchone()[0])

    def count_unique_calls(self) -> int:
        return int(self.conn.execute("SELECT count(DISTINCT linkedid) FROM calls").fetchone()[0])

    def count_complete_calls(self) -> int:
        return int(
            self.conn.execute(
                "SELECT count(DISTINCT linkedid) FROM calls WHERE is_complete = 1"
            ).fetchone()[0]
        )

    def count_recordings(self) -> int:
        return int(self.conn.execute("SELECT count(*) FROM recordings").fetchone()[0])

    def linkedids(self) -> list[str]:
        rows = self.conn.execute("SELECT DISTINCT linkedid FROM calls ORDER BY linkedid")
        return [r[0] for r in rows]

    def docs_for(self, linkedid: str) -> list[dict[str, Any]]:
        rows = self.conn.execute(
            "SELECT body FROM calls WHERE linkedid = ? ORDER BY revision, id", (linkedid,)
        )
        return [json.loads(r[0]) for r in rows]

    def latest_complete(self, linkedid: str) -> dict[str, Any] | None:
        row = self.conn.execute(
            "SELECT body FROM calls WHERE linkedid = ? AND is_complete = 1"
            " ORDER BY revision DESC, id DESC LIMIT 1",
            (linkedid,),
        ).fetchone()
        return json.loads(row[0]) if row else None

    def latest_per_linkedid(self, complete_only: bool = False) -> dict[str, dict[str, Any]]:
        where = "WHERE is_complete = 1" if complete_only else ""
        rows = self.conn.execute(
            f"SELECT linkedid, body FROM calls {where} ORDER BY linkedid, revision, id"
        )
        out: dict[str, dict[str, Any]] = {}
        for r in rows:
            out[r[0]] = json.loads(r[1])  # later rows (higher revision) win
        return out

    def receipts(self) -> list[dict[str, Any]]:
        """(linkedid, revision, ship_phase, is_complete, shipped_at, received_at) per document."""
        rows = self.conn.execute(
            "SELECT linkedid, revision, ship_phase, is_complete, shipped_at, received_at,"
            " idempotency_key FROM calls ORDER BY id"
        )
        return [
            {
                "linkedid": r[0],
                "revision": r[1],
                "ship_phase": r[2],
                "is_complete": bool(r[3]),
                "shipped_at": r[4],
                "received_at": r[5],
                "idempotency_key": r[6],
            }
            for r in rows
        ]

    def first_complete_received_at(self) -> dict[str, float]:
        rows = self.conn.execute(
            "SELECT linkedid, min(received_at) FROM calls WHERE is_complete = 1 GROUP BY linkedid"
        )
        return {r[0]: float(r[1]) for r in rows}

    def recordings(self) -> list[dict[str, Any]]:
        rows = self.conn.execute(
            "SELECT idempotency_key, recording_id, linkedid, file_name, file_size, bytes_received,"
            " content_type, stored_path, sha256, fields, received_at FROM recordings ORDER BY id"
        )
        return [
            {
                "idempotency_key": r[0],
                "recording_id": r[1],
                "linkedid": r[2],
                "file_name": r[3],
                "file_size": r[4],
                "bytes_received": r[5],
                "content_type": r[6],
                "stored_path": r[7],
                "sha256": r[8],
                "fields": json.loads(r[9]) if r[9] else {},
                "received_at": r[10],
            }
            for r in rows
        ]

    def rejects(self) -> list[dict[str, Any]]:
        rows = self.conn.execute(
            "SELECT endpoint, status, reason, idempotency_key, received_at FROM rejects ORDER BY id"
        )
        return [dict(r) for r in rows]
