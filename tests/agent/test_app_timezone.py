"""app.Agent in-process with DB_TIMEZONE unset on a PBX host in Tokyo (TZ): the CDR
rows of a SQLite PBX and the CEL lines of cel_custom's Master.csv are Tokyo local time;
the agent reads both in the host's zone, ships the right call_time, and every
document says which zone it used and how it was found."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from sipstack_agent.app import Agent
from sipstack_agent.config import load_settings
from sipstack_agent.model import CEL_COLUMNS
from sipstack_agent.receiver import Receiver
from sipstack_agent.sim.timeline import timeline
from sipstack_agent.sim.traffic import TrafficGenerator
from sipstack_agent.sim.writers import create_sqlite_pbx, write_sqlite

KEY = "sk_" + "z" * 32
TOKYO = ZoneInfo("Asia/Tokyo")


def csv_line(row: dict[str, Any]) -> str:
    """One cel_custom record (CSV_QUOTE of every column, eventtime in PBX-local time)."""
    values = []
    for c in CEL_COLUMNS:
        v = row.get(c, "")
        if isinstance(v, datetime):
            v = v.astimezone(TOKYO).strftime("%Y-%m-%d %H:%M:%S.%f")
        values.append('"' + str("" if v is None else v).replace('"', '""') + '"')
    return ",".join(values) + "\n"


@pytest.fixture
async def receiver(tmp_path: Path) -> Any:
    r = Receiver(tmp_path / "recv.db", api_key=KEY)
    await r.start("127.0.0.1", 0)
    yield r
    await r.stop()


async def test_sqlite_and_csv_pbx_in_the_hosts_zone(
    tmp_path: Path, receiver: Receiver, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TZ", "Asia/Tokyo")
    start = datetime.now(UTC) - timedelta(minutes=20)
    calls = TrafficGenerator(4, start=start).calls(6, rate=1, start=start)
    writes = timeline(calls)
    pbx = tmp_path / "asterisk.db"
    create_sqlite_pbx(str(pbx))
    write_sqlite(str(pbx), [w for w in writes if w.kind == "cdr"], tz="Asia/Tokyo")
    master = tmp_path / "Master.csv"
    master.write_text("".join(csv_line(w.row) for w in writes if w.kind == "cel"))
    settings = load_settings(
        {
            "API_KEY": KEY,
            "API_URL": receiver.calls_url,
            "DB_TYPE": "sqlite",
            "DB_NAME": str(pbx),
            "CEL_MODE": "csv",
            "CEL_CSV_PATH": str(master),
            "STATE_DIR": str(tmp_path / "state"),
            "START_FROM": "beginning",
            "CDR_POLL_INTERVAL": "0.2",
            "CEL_CSV_POLL_INTERVAL": "0.2",
            "MONITORING_PORT": "0",
            "RECORDING_PATHS": str(tmp_path),
        }
    )
    agent = Agent(settings)
    stop = asyncio.Event()
    task = asyncio.create_task(agent.run(stop))
    want = {c.expected.linkedid: c.expected for c in calls}
    try:
        for _ in range(300):
            docs = receiver.latest_complete_all()
            if set(want) <= set(docs):
                break
            await asyncio.sleep(0.1)
    finally:
        stop.set()
        await asyncio.wait_for(task, 15)
    docs = receiver.latest_complete_all()
    assert set(docs) == set(want)
    for lid, e in want.items():
        d = docs[lid]
        assert abs((datetime.fromisoformat(d["call_time"]) - e.start).total_seconds()) < 1.5
        assert (d["timezone"], d["timezone_source"]) == ("Asia/Tokyo", "host")
        assert any(t["event"] != "CDR" for t in d["call_threads"])  # CEL from the CSV
        assert "force_completed" not in d
    assert agent.zone.current is not None and agent.zone.current.detail == "TZ=Asia/Tokyo"
    assert (
        agent.metrics.registry.get_sample_value(
            "sipstack_pbx_timezone", {"zone": "Asia/Tokyo", "found": "host"}
        )
        == 1
    )
