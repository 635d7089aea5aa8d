"""DB_TABLE_RECORDINGS in real PostgreSQL, MariaDB and SQLite, read by a SELECT-only user."""

from __future__ import annotations

import os
import sqlite3
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
from sipstack_agent.config import DatabaseSettings, RecordingSettings
from sipstack_agent.metrics import Metrics
from sipstack_agent.recordings.detect import RecordingsTable, build_query
from sipstack_agent.recordings.manager import RecordingManager
from sipstack_agent.sim.dialects import placeholder
from sipstack_agent.sim.writers import PbxWriter
from sipstack_agent.state import StateStore

from ..support.pbxdb import admin_opener
from ..support.servers import ServerDb
from .helpers import CALL_A, REAL_WAV, FakeClock, copy_real_wav, fixture_cels, sample

# (linkedid, uniqueid, filename, file_path, created_at) - PBX-local naive times
NAME = REAL_WAV.name


def _rows(root: Path) -> list[tuple[Any, ...]]:
    day = str(root / "2026" / "11" / "24")
    return [
        (CALL_A, CALL_A, NAME, day, datetime(2026, 11, 24, 4, 39, 20)),
        ("1795499999.9", "1795499999.9", "other.wav", day, datetime(2026, 11, 24, 5, 0, 0)),
    ]


async def _fill(dialect: str, db: ServerDb, rows: list[tuple[Any, ...]], table: str) -> None:
    ddl_cols = {
        "postgresql": "id BIGSERIAL PRIMARY KEY, call_linkedid TEXT, uniqueid TEXT, "
        "filename TEXT, path TEXT, created TIMESTAMP",
        "mysql": "id BIGINT AUTO_INCREMENT PRIMARY KEY, call_linkedid VARCHAR(80), "
        "uniqueid VARCHAR(80), filename VARCHAR(255), path VARCHAR(1024), created DATETIME",
    }
    insert = "INSERT INTO {t} (call_linkedid, uniqueid, filename, path, created) VALUES ({ph})"
    phs = ", ".join(placeholder(dialect, i) for i in range(1, 6))
    writer = PbxWriter(dialect, await admin_opener(dialect, db, Path())(), owns=True)
    try:
        await writer.execute(f"CREATE TABLE {table} ({ddl_cols[dialect]})")
        for row in rows:
            await writer.execute(insert.format(t=table, ph=phs), *row)
    finally:
        await writer.close()


COLUMNS = (
    "linkedid=call_linkedid",
    "uniqueid=uniqueid",
    "filename=filename",
    "file_path=path",
    "created_at=created",
)


async def _run_manager(
    tmp_path: Path, settings_db: DatabaseSettings, store: StateStore, clock: FakeClock
) -> tuple[RecordingManager, Metrics]:
    root = tmp_path / "monitor"
    metrics = Metrics()
    mgr = RecordingManager(
        RecordingSettings(
            paths=(str(root),),
            stability_check_count=1,
            stability_check_interval=1.0,
            columns=COLUMNS,
        ),
        store,
        metrics,
        database=settings_db,
        clock=clock,
    )
    # the CEL rows without the MixMonitor row: the table is the only named source
    cels = [c for c in fixture_cels() if c.appname != "MixMonitor"]
    await mgr.on_call(CALL_A, cels, [], complete=True)
    for _ in range(4):
        await mgr.poll_once()
        clock.advance(1.0)
    return mgr, metrics


@pytest.mark.parametrize("dialect", ["postgresql", "mysql"])
async def test_recordings_table_on_a_server(
    dialect: str,
    request: pytest.FixtureRequest,
    tmp_path: Path,
    store: StateStore,
    clock: FakeClock,
) -> None:
    db = request.getfixturevalue("pg_database" if dialect == "postgresql" else "mysql_database")
    root = tmp_path / "monitor"
    wav = copy_real_wav(root / "2026" / "11" / "24")
    table = f"rec_{dialect[:2]}_{os.getpid()}"
    await _fill(dialect, db, _rows(root), table)
    # the agent connects as the SELECT-only user of the fixture
    settings_db = db.settings(table_recordings=table)
    mgr, metrics = await _run_manager(tmp_path, settings_db, store, clock)
    assert mgr.table_errors == 0, mgr.last_table_error
    rec = await store.load_call(CALL_A)
    assert rec is not None
    assert [(r.file_path, r.source, r.file_size) for r in rec.recordings] == [
        (os.path.realpath(wav), "database", REAL_WAV.stat().st_size)
    ]
    assert rec.recordings[0].started_at is not None
    assert rec.recordings[0].started_at.isoformat() == "2026-11-24T04:39:20+00:00"
    assert sample(metrics, "recordings_detected_total", {"source": "database"}) == 1


async def test_recordings_table_in_sqlite_read_only(
    tmp_path: Path, store: StateStore, clock: FakeClock
) -> None:
    root = tmp_path / "monitor"
    wav = copy_real_wav(root / "2026" / "11" / "24")
    path = tmp_path / "pbx.sqlite"
    con = sqlite3.connect(path)
    con.execute(
        "CREATE TABLE recordings (id INTEGER PRIMARY KEY, call_linkedid TEXT, uniqueid TEXT, "
        "filename TEXT, path TEXT, created TEXT)"
    )
    con.executemany(
        "INSERT INTO recordings (call_linkedid, uniqueid, filename, path, created) "
        "VALUES (?, ?, ?, ?, ?)",
        [(*r[:4], r[4].isoformat(sep=" ")) for r in _rows(root)],
    )
    con.commit()
    con.close()
    before = path.stat().st_mtime_ns
    settings_db = DatabaseSettings(type="sqlite", name=str(path), table_recordings="recordings")
    mgr, _ = await _run_manager(tmp_path, settings_db, store, clock)
    assert mgr.table_errors == 0, mgr.last_table_error
    rec = await store.load_call(CALL_A)
    assert rec is not None
    assert [r.file_path for r in rec.recordings] == [os.path.realpath(wav)]
    assert path.stat().st_mtime_ns == before  # opened read-only


async def test_table_outage_is_counted_and_retried(
    tmp_path: Path, store: StateStore, clock: FakeClock
) -> None:
    settings_db = DatabaseSettings(
        type="postgresql",
        host="127.0.0.1",
        port=1,
        name="x",
        table_recordings="recordings",
        connect_timeout=1.0,
    )
    mgr, metrics = await _run_manager(tmp_path, settings_db, store, clock)
    assert mgr.table_errors >= 1
    assert sample(metrics, "sipstack_db_reconnects_total", {"source": "recordings"}) >= 1


def test_query_text_per_dialect() -> None:
    m = {"linkedid": "linkedid", "uniqueid": "uniqueid", "filename": "filename"}
    assert build_query("cdr.recs", m, "postgresql", 2, 1) == (
        'SELECT "linkedid" AS linkedid, "uniqueid" AS uniqueid, "filename" AS filename '
        'FROM "cdr"."recs" WHERE "linkedid" IN ($1, $2) OR "uniqueid" IN ($3)'
    )
    assert "`linkedid` IN (%s)" in build_query("recs", m, "mysql", 1, 0)
    assert '"uniqueid" IN (?, ?)' in build_query("recs", m, "sqlite", 0, 2)
    with pytest.raises(ValueError, match="DB_TABLE_RECORDINGS"):
        build_query("recs; DROP TABLE cdr", m, "sqlite", 1, 0)
    with pytest.raises(ValueError, match="RECORDINGS_COLUMNS"):
        RecordingsTable(DatabaseSettings(table_recordings="r"), ("linkedid", "x y"))
