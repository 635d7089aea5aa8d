"""The state store's row encoding (schema v3: a JSON array per row), the migration of a
v2 state file, whose rows are JSON objects, and the orjson codec reading what the
standard library's wrote, with the real Asterisk 20 rows of the fixtures."""

from __future__ import annotations

import dataclasses
import json
import sqlite3
from contextlib import closing
from dataclasses import replace
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

from sipstack_agent.model import CdrRow, CelRow
from sipstack_agent.state import SCHEMA_VERSION, StateStore
from sipstack_agent.state.codec import cdr_decode, cdr_encode, cel_decode, cel_encode

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


def _stdlib_array(row: CelRow | CdrRow) -> str:
    """A row as the standard library's codec stored it (schema v4/v5 before orjson)."""
    a: list[Any] = []
    for f in dataclasses.fields(row):
        v = getattr(row, f.name)
        a.append(v.isoformat() if isinstance(v, datetime) else v)
    return json.dumps(a, separators=(",", ":"))


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
    assert r"Jos\udce9 M\u00fcller" in data[0]  # the lone surrogate is kept as an escape


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
        assert await store.schema_version() == SCHEMA_VERSION == 8
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


def _odd_rows() -> tuple[list[CelRow], list[CdrRow]]:
    """Rows where orjson's text differs from the standard library's, or where only the
    standard library's codec can be used: non-ASCII text, a lone surrogate, integers
    over 64 bits, times not in UTC (naive, another offset), microseconds."""
    cels, cdrs = _rows()
    plus = timezone(timedelta(hours=5, minutes=30))
    odd_cels = [
        replace(cels[1], cid_name="Jos\u00e9 M\u00fcller \u65e5\u672c", appdata="\U0001f600"),
        replace(cels[2], row_id=2**70),
        replace(cels[3], row_id=-(2**63) - 1),
        replace(cels[4], eventtime=cels[4].eventtime.replace(tzinfo=None)),
        replace(cels[5], eventtime=cels[5].eventtime.astimezone(plus)),
        replace(cels[6], eventtime=cels[6].eventtime.replace(microsecond=7)),
        replace(cels[7], extra='\x7f\u2028"\\\n'),
    ]
    odd_cdrs = [
        replace(cdrs[0], clid="\u00e9", extras=(("did", "\u00fc"), ("cnam", "a\udcff"))),
        replace(cdrs[0], duration=2**64, billsec=2**65, sequence=2**66, row_id=2**67),
        replace(cdrs[0], calldate=cdrs[0].calldate.astimezone(plus)),
    ]
    # rows of their own (their own dedup keys), unless the change is the id
    cels += [r if r.row_id != cels[i + 1].row_id else replace(r, row_id=90_000 + i)
             for i, r in enumerate(odd_cels)]  # fmt: skip
    cdrs += [r if r.row_id != cdrs[0].row_id else replace(r, row_id=90_000 + i)
             for i, r in enumerate(odd_cdrs)]  # fmt: skip
    return cels, cdrs


def test_the_orjson_codec_reads_what_the_standard_library_wrote() -> None:
    cels, cdrs = _odd_rows()
    for cel in cels:
        old = _stdlib_array(cel)
        back = cel_decode(old)
        assert back == cel and back.eventtime.utcoffset() == cel.eventtime.utcoffset()
        assert type(back.row_id) is type(cel.row_id)  # 2**70 == float(2**70)
        new = cel_encode(cel)
        assert cel_decode(new) == cel and json.loads(new) == json.loads(old)
        if new.isascii():  # the same text but for UTF-8 kept as it is
            assert new == old
    for cdr in cdrs:
        old = _stdlib_array(cdr)
        back = cdr_decode(old)
        assert back == cdr and back.calldate.utcoffset() == cdr.calldate.utcoffset()
        new = cdr_encode(cdr)
        assert cdr_decode(new) == cdr and json.loads(new) == json.loads(old)
        if new.isascii():
            assert new == old
        assert type(back.duration) is int and type(back.row_id) is int
    assert all(type(cel_decode(cel_encode(c)).row_id) is type(c.row_id) for c in cels)


async def test_a_file_written_by_the_standard_library_codec_reads_back_identically(
    tmp_path: Path,
) -> None:
    cels, cdrs = _odd_rows()
    path = tmp_path / "state.db"
    store = await StateStore.open(path)
    try:
        await store.ingest(cels, cdrs, {})
        new_text = await store.load_call(CALL_A)
    finally:
        await store.close()
    with closing(sqlite3.connect(path)) as c:
        stored = [d for (d,) in c.execute("SELECT data FROM cel UNION ALL SELECT data FROM cdr")]
        assert not all(d.isascii() for d in stored)  # orjson keeps UTF-8 as it is
        for table, rows in (("cel", cels), ("cdr", cdrs)):
            by_key: dict[str, CelRow | CdrRow] = {r.dedup_key: r for r in rows}
            for seq, key in c.execute(f"SELECT seq, dedup_key FROM {table}").fetchall():
                c.execute(
                    f"UPDATE {table} SET data = ? WHERE seq = ?", (_stdlib_array(by_key[key]), seq)
                )
        c.commit()
    store = await StateStore.open(path)
    try:
        old_text = await store.load_call(CALL_A)
        again = await store.ingest(cels, cdrs, {})  # dedup keys unchanged
    finally:
        await store.close()
    assert new_text is not None and old_text is not None
    assert old_text.cels == new_text.cels == cels and old_text.cdrs == new_text.cdrs == cdrs
    assert (again.new_cels, again.new_cdrs) == (0, 0)
