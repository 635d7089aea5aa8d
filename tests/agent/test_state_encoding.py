"""The state store's row encoding (schema v3: a JSON array per row) and the migration of a
v2 state file, whose rows are JSON objects, with the real Asterisk 20 rows of the fixtures."""

from __future__ import annotations

import dataclasses
import json
import sqlite3
from contextlib import closing
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from sipstack_agent.model import CdrRow, CelRow
from sipstack_agent.state import SCHEMA_VERSION, StateStore

from .recordings.helpers import CALL_A, fixture_cdrs, fixture_cels

# The stored array is positional: these orders are what schema v3 wrote. A change to the
# models' fields needs a new schema version that re-encodes the stored rows.
CEL_V3 = (
    "eventtype", "eventtime", "uniqueid", "linkedid", "channame", "cid_name", "cid_num",
    "cid_ani", "cid_rdnis", "cid_dnid", "exten", "context", "appname", "appdata", "amaflags",
    "accountcode", "peer", "userdeftype", "extra", "row_id", "source", "source_pos",
    "peeraccount",
)  # fmt: skip
CDR_V3 = (
    "calldate", "uniqueid", "linkedid", "clid", "src", "dst", "dcontext", "channel",
    "dstchannel", "lastapp", "lastdata", "duration", "billsec", "disposition", "amaflags",
    "accountcode", "userfield", "sequence", "peeraccount", "extras", "row_id", "source",
)  # fmt: skip


def _v2_object(row: CelRow | CdrRow) -> str:
    """A row as schema v2 stored it: a JSON object of its non-empty fields."""
    d: dict[str, Any] = {}
    for f in dataclasses.fields(row):
        v = getattr(row, f.name)
        if v in ("", ()) and f.name not in ("eventtype", "uniqueid", "linkedid"):
            continue
        if isinstance(v, datetime):
            v = v.isoformat()
        elif f.name == "extras":
            v = [list(p) for p in v]
        d[f.name] = v
    return json.dumps(d, separators=(",", ":"))


def _rows() -> tuple[list[CelRow], list[CdrRow]]:
    cels = fixture_cels()
    cels[0] = replace(cels[0], cid_name="Jos\udce9 M\u00fcller", extra='{"x":"\\"quoted\\""}')
    cdrs = fixture_cdrs(recordingfile="in-4155551000-4085551234-20261124-043920-1795495160.0.wav")
    return cels, cdrs


def test_the_stored_field_orders_are_the_models() -> None:
    assert tuple(f.name for f in dataclasses.fields(CelRow)) == CEL_V3
    assert tuple(f.name for f in dataclasses.fields(CdrRow)) == CDR_V3


async def test_rows_are_stored_as_arrays_and_read_back_exactly(tmp_path: Path) -> None:
    cels, cdrs = _rows()
    store = await StateStore.open(tmp_path / "state.db")
    try:
        await store.ingest(cels, cdrs, {})
        rec = await store.load_call(CALL_A)
    finally:
        await store.close()
    assert rec is not None and rec.cels == cels and rec.cdrs == cdrs
    with closing(sqlite3.connect(tmp_path / "state.db")) as c:
        data = [d for (d,) in c.execute("SELECT data FROM cel UNION ALL SELECT data FROM cdr")]
    assert data and all(d.startswith("[") for d in data)
    assert all(d.isascii() for d in data)  # the lone surrogate is kept as a \\udce9 escape


async def test_a_v2_state_file_is_migrated_rows_and_all(tmp_path: Path) -> None:
    cels, cdrs = _rows()
    path = tmp_path / "state.db"
    store = await StateStore.open(path)
    try:
        await store.ingest(cels, cdrs, {"sql:cel": {"id": cels[-1].row_id}})
        due_before = await store.due_calls(datetime.now(UTC) + timedelta(days=1))
    finally:
        await store.close()
    with closing(sqlite3.connect(path)) as c:  # turn it into the file a v2 agent left
        for table, rows in (("cel", cels), ("cdr", cdrs)):
            by_key = {r.dedup_key: r for r in rows}
            for seq, key in c.execute(f"SELECT seq, dedup_key FROM {table}").fetchall():
                c.execute(
                    f"UPDATE {table} SET data = ? WHERE seq = ?", (_v2_object(by_key[key]), seq)
                )
        c.execute("PRAGMA user_version = 2")
        c.commit()
        assert all(d.startswith("{") for (d,) in c.execute("SELECT data FROM cel"))

    store = await StateStore.open(path)
    try:
        assert await store.schema_version() == SCHEMA_VERSION == 6
        rec = await store.load_call(CALL_A)
        assert rec is not None and rec.cels == cels and rec.cdrs == cdrs
        assert await store.get_position("sql:cel") == {"id": cels[-1].row_id}
        assert await store.due_calls(datetime.now(UTC) + timedelta(days=1)) == due_before
        again = await store.ingest(cels, cdrs, {})  # the migrated rows still deduplicate
        assert (again.new_cels, again.new_cdrs, again.duplicates) == (0, 0, len(cels) + len(cdrs))
    finally:
        await store.close()
    with closing(sqlite3.connect(path)) as c:
        data = [d for (d,) in c.execute("SELECT data FROM cel UNION ALL SELECT data FROM cdr")]
    assert len(data) == len(cels) + len(cdrs) and all(d.startswith("[") for d in data)
