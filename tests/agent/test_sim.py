"""sim: the traffic generator matches real Asterisk 20 rows; the writers round-trip."""

from __future__ import annotations

import asyncio
import csv
import sqlite3
from contextlib import closing
from datetime import UTC, datetime
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
from sipstack_agent.model import CDR_COLUMNS, CEL_COLUMNS, CelRow
from sipstack_agent.sim.celcsv import write_cel_csv
from sipstack_agent.sim.dialects import db_values, insert_sql, placeholder, quote, row_values
from sipstack_agent.sim.play import play
from sipstack_agent.sim.scenarios import SCENARIOS
from sipstack_agent.sim.timeline import is_linkedid_end, timeline
from sipstack_agent.sim.traffic import TrafficGenerator
from sipstack_agent.sim.writers import PbxWriter, create_sqlite_pbx, write_sqlite
from sipstack_agent.sources.cel_csv import CelCsvParser

from .support.pbxdb import PbxDb
from .support.sample import SAMPLE_DIR

SAMPLE = SAMPLE_DIR / "postgres"


def sample_events(linkedid: str) -> list[tuple[str, str]]:
    with open(SAMPLE / "cel.csv", newline="") as f:
        rows = [r for r in csv.DictReader(f) if r["linkedid"] == linkedid]
    return [(r["eventtype"], r["appname"]) for r in rows]


def test_deterministic() -> None:
    a = TrafficGenerator(42).calls(30)
    b = TrafficGenerator(42).calls(30)
    assert [c.cels for c in a] == [c.cels for c in b]
    assert [c.cdrs for c in a] == [c.cdrs for c in b]
    assert [c.cels for c in TrafficGenerator(43).calls(30)] != [c.cels for c in a]


@pytest.mark.parametrize("scenario", SCENARIOS)
def test_rows_look_like_asterisk(scenario: str) -> None:
    gen = TrafficGenerator(1)
    call = gen.call(scenario)
    e = call.expected
    assert e.scenario == scenario
    assert len(call.cels) == e.cel_count and len(call.cdrs) == e.cdr_count
    for r in call.cels:
        assert set(r) == set(CEL_COLUMNS)
        assert r["linkedid"] == e.linkedid
        assert r["eventtime"].tzinfo is not None
    for r in call.cdrs:
        assert set(r) == set(CDR_COLUMNS)
        assert r["linkedid"] == e.linkedid
        assert r["calldate"].microsecond == 0
    types = [r["eventtype"] for r in call.cels]
    assert types[0] == "CHAN_START" and types[-1] == "LINKEDID_END"
    assert types.count("CHAN_START") == types.count("CHAN_END") == types.count("HANGUP")
    times = [r["eventtime"] for r in call.cels]
    assert times == sorted(times)
    assert e.linkedid == call.cels[0]["uniqueid"]
    # uniqueid <epoch>.<n>, channel <tech>/<peer>-<n:08x> from one counter
    for r in call.cels:
        epoch, seq = r["uniqueid"].split(".")
        assert epoch.isdigit() and seq.isdigit()
        if r["channame"].startswith("SIP/"):
            assert r["channame"].endswith(f"-{int(seq):08x}")


def test_answered_sequence_matches_the_real_capture() -> None:
    """Call (a) of the sample, MixMonitor and all, in one of the two hang-up orders."""
    want = sample_events("1795495160.0")
    for seed in range(40):
        gen = TrafficGenerator(seed, recording_ratio=1.0)
        got = [(r["eventtype"], r["appname"]) for r in gen.call("answered").cels]
        if got == want:
            return
    pytest.fail("no generated answered call has the sample's event sequence")


@pytest.mark.parametrize(
    ("scenario", "linkedid"),
    [("unanswered", "1795495211.6"), ("busy", "1795495228.8"), ("blind_transfer", "1795495237.12")],
)
def test_sequences_match_the_real_capture(scenario: str, linkedid: str) -> None:
    got = [(r["eventtype"], r["appname"]) for r in TrafficGenerator(3).call(scenario).cels]
    assert got == sample_events(linkedid)


def test_internal_sequence_matches_the_capture_in_one_order() -> None:
    want = sample_events("1795495196.4")
    seqs = {
        tuple((r["eventtype"], r["appname"]) for r in TrafficGenerator(s).call("internal").cels)
        for s in range(20)
    }
    assert tuple(want) in seqs


def test_no_linkedid_end_option() -> None:
    call = TrafficGenerator(1, linkedid_end=False).call("queue")
    assert all(r["eventtype"] != "LINKEDID_END" for r in call.cels)
    assert not call.expected.linkedid_end


def test_timeline_orders_commits_and_delays_late_cdrs() -> None:
    calls = TrafficGenerator(2).calls(20, rate=5)
    ws = timeline(calls, late_cdr_seconds=300)
    assert [w.at for w in ws] == sorted(w.at for w in ws)
    assert len(ws) == sum(c.expected.cel_count + c.expected.cdr_count for c in calls)
    last_cel = max(w.at for w in ws if w.kind == "cel")
    assert all(w.at > last_cel for w in ws if w.kind == "cdr")


def test_db_values_per_dialect() -> None:
    call = TrafficGenerator(1, start=datetime(2026, 1, 5, 15, 0, 0, 123456, tzinfo=UTC)).call()
    row = call.cels[0]
    pg = db_values("cel", row, "postgresql", "America/Toronto")
    my = db_values("cel", row, "mysql", "America/Toronto")
    lite = db_values("cel", row, "sqlite", "America/Toronto")
    i = CEL_COLUMNS.index("eventtime")
    assert pg[i] == datetime(2026, 1, 5, 10, 0, 0, 123456)
    assert my[i] == datetime(2026, 1, 5, 10, 0, 0)
    assert lite[i] == "2026-01-05 10:00:00.123456"
    assert insert_sql("postgresql", "cel", "cel").count("$") == len(CEL_COLUMNS)


@pytest.mark.parametrize(
    ("dialect", "first", "raw", "table", "eventtime"),
    [
        ("postgresql", "$1", "$2", '"cel"', datetime(2026, 1, 5, 10, 0, 0, 123456)),
        ("mysql", "%s", "UNHEX(%s)", "`cel`", datetime(2026, 1, 5, 10, 0, 0)),
        ("sqlite", "?", "CAST(? AS TEXT)", '"cel"', "2026-01-05 10:00:00.123456"),
    ],
)
def test_the_dialect_table(
    dialect: str, first: str, raw: str, table: str, eventtime: object
) -> None:
    assert placeholder(dialect, 1) == first
    assert placeholder(dialect, 2, b"\xe9") == raw
    assert quote(dialect, "cel") == table
    t = datetime(2026, 1, 5, 15, 0, 0, 123456, tzinfo=UTC)
    row = {"eventtime": t, "amaflags": "3", "row_id": 7}
    values = row_values("cel", row, dialect, ZoneInfo("America/Toronto"))
    assert values == {"eventtime": eventtime, "amaflags": 3, "id": 7}
    empty = row_values("cdr", {"sequence": "", "src": ""}, dialect, ZoneInfo("UTC"))
    assert empty == {"sequence": None, "src": ""}


async def test_one_writer_for_simulated_and_recorded_rows(pbx_db: PbxDb) -> None:
    settings, writer = pbx_db
    cel = writer.quote(settings.table_cel)
    calls = TrafficGenerator(7, oddities=True).calls(5)
    writes = timeline(calls)
    await writer.write(writes)
    count = f"SELECT count(*) FROM {cel}"
    assert (await writer.fetch(count))[0][0] == sum(c.expected.cel_count for c in calls)
    assert await writer.insert_cel([{**writes[0].row, "row_id": 10_000}]) == [10_000]
    await writer.truncate(settings.table_cel)
    assert (await writer.fetch(count))[0][0] == 0
    async with writer.transaction() as tx:
        assert await tx.insert_cel([writes[0].row]) == [1]  # ids start at 1 again
    assert (await writer.fetch(count))[0][0] == 1


def test_cel_csv_writer_reads_back_through_the_agents_parser(tmp_path: Path) -> None:
    writes = timeline(TrafficGenerator(3, oddities=True).calls(10))
    path = tmp_path / "Master.csv"
    n = write_cel_csv(path, writes, tz="America/Toronto")
    items = CelCsvParser(timezone="America/Toronto").parse_lines(path.read_bytes())
    cels = [w.row for w in writes if w.kind == "cel"]
    assert n == len(cels) == len(items)
    assert all(isinstance(r, CelRow) for r in items)
    fields = ("eventtype", "eventtime", "cid_name", "uniqueid", "linkedid", "extra")
    got = [tuple(getattr(r, f) for f in fields) for r in items]
    assert got == [tuple(c[f] for f in fields) for c in cels]


def test_sqlite_writer_round_trip(tmp_path: Path) -> None:
    path = str(tmp_path / "pbx.db")
    create_sqlite_pbx(path)
    create_sqlite_pbx(path)  # idempotent
    calls = TrafficGenerator(4, oddities=True).calls(25)
    write_sqlite(path, timeline(calls))
    with closing(sqlite3.connect(path)) as c:
        n_cel = c.execute("SELECT count(*) FROM cel").fetchone()[0]
        n_cdr = c.execute("SELECT count(*) FROM cdr").fetchone()[0]
        lids = {r[0] for r in c.execute("SELECT DISTINCT linkedid FROM cel")}
    assert n_cel == sum(x.expected.cel_count for x in calls)
    assert n_cdr == sum(x.expected.cdr_count for x in calls)
    assert lids == {x.expected.linkedid for x in calls}


async def test_async_writer_and_play(tmp_path: Path) -> None:
    path = str(tmp_path / "pbx.db")
    w = await PbxWriter.connect("sqlite", database=path)
    await w.create_tables()
    await w.create_tables()
    start = datetime.now(UTC)
    calls = TrafficGenerator(5, start=start, ring=(0.05, 0.1), talk=(0.05, 0.1)).calls(
        10, rate=50, start=start
    )
    committed = await play(timeline(calls), w.write, t0=start, mark=is_linkedid_end, speed=2)
    await w.close()
    assert set(committed) == {c.expected.linkedid for c in calls}
    with closing(sqlite3.connect(path)) as c:
        assert c.execute("SELECT count(*) FROM cel").fetchone()[0] == sum(
            x.expected.cel_count for x in calls
        )
    await asyncio.sleep(0)
