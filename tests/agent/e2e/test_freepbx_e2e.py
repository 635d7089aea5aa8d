"""The real agent on FreePBX's tables: a 3 h call observed live ships complete with
its CDR rows (fetched by uniqueid from the id-less `cdr` table) and the recording
FreePBX names in `cdr.recordingfile` (found under RECORDING_PATHS/YYYY/MM/DD)."""

from __future__ import annotations

import asyncio
import os
import sys
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from sipstack_agent.demo import agent_env
from sipstack_agent.receiver import Receiver
from sipstack_agent.sim.timeline import timeline
from sipstack_agent.sim.traffic import TrafficGenerator

from .helpers import API_KEY, db_env, runs, start_agent, wait_anchored, wait_until

pytestmark = pytest.mark.timeout(180)


@pytest.fixture
async def receiver(tmp_path: Path) -> Any:
    r = Receiver(tmp_path / "receiver.db", api_key=API_KEY)
    await r.start("127.0.0.1", 0)
    yield r
    await r.stop()


def cdr_threads(doc: dict[str, Any]) -> int:
    return sum(1 for t in doc.get("call_threads", ()) if t.get("event") == "CDR")


@pytest.mark.parametrize("dialect", ["mysql", "postgresql", "sqlite"])
async def test_three_hour_call_ships_with_its_cdr_and_recordingfile(
    dialect: str, make_pbx_db: Callable[..., Awaitable[Any]], receiver: Receiver, tmp_path: Path
) -> None:
    pbx = await make_pbx_db(dialect, freepbx=True)
    now = datetime.now(UTC)
    gen = TrafficGenerator(7, recording_ratio=0.0, ring=(2, 3), talk=(3 * 3600, 3 * 3600))
    call = gen.call("answered", now - timedelta(hours=3, seconds=4))
    e = call.expected
    monitor = tmp_path / "monitor"
    day = monitor / e.start.strftime("%Y/%m/%d")
    day.mkdir(parents=True)
    (day / "freepbx-named-recording.wav").write_bytes(b"RIFF" + b"\0" * 2000)
    for r in call.cdrs:  # what FreePBX's dialplan adds to every CDR row
        r.update(did=e.dst_number.lstrip("+")[-10:], cnam="Caller Lookup",
                 recordingfile="freepbx-named-recording.wav")  # fmt: skip
    writes = timeline([call])
    split = now - timedelta(minutes=1)
    early = [w for w in writes if w.at < split]
    late = [w for w in writes if w.at >= split]
    assert early and late and all(w.kind == "cel" for w in early)
    state = tmp_path / "state"
    agent = start_agent(
        pbx.settings,
        receiver.calls_url,
        state,
        START_FROM="latest",
        # a sweep every 150 s: within this test only the lookup by uniqueid brings the CDR
        POLL_LOOKBACK_SECONDS="600",
        CDR_LOOKUP_WAIT="30",
        RECORDING_PATHS=str(monitor),
        RECORDING_STABILITY_CHECK_COUNT="1",
        RECORDING_STABILITY_CHECK_INTERVAL="0.2",
        RECORDING_POLL_INTERVAL="0.5",
    )
    try:
        await wait_anchored(agent, state)  # the agent anchors at the (empty) tables' end
        for _kind, rows in runs(early):  # the call's start, 3 h ago, as the agent sees it now
            await pbx.writer.insert_cel(rows)
        assert await wait_until(lambda: bool(receiver.docs_for(e.linkedid)), 30), agent.log_tail()
        for kind, rows in runs(late):  # ... and its end: CEL, then FreePBX's CDR rows
            await (pbx.writer.insert_cel(rows) if kind == "cel" else pbx.writer.insert_cdr(rows))

        def done() -> bool:
            d = receiver.latest_complete(e.linkedid)
            recs = d.get("recording_files", []) if d is not None else []
            return bool(recs) and all(r["file_size"] > 0 for r in recs)

        assert await wait_until(done, 60), agent.log_tail()
    finally:
        assert await asyncio.to_thread(agent.terminate, 15) == 0
    docs = receiver.docs_for(e.linkedid)
    complete = [d for d in docs if d["ship_phase"] == "complete"]
    assert complete[0]["is_complete"] is True
    assert cdr_threads(complete[0]) == e.cdr_count  # its CDR rows were there at completion
    assert complete[0]["duration_seconds"] >= 3 * 3600
    assert complete[0]["billsec"] >= 3 * 3600 - 5  # from the CDR row
    last = complete[-1]
    (rec,) = last["recording_files"]
    assert rec["source"] == "database" and rec["file_path"].endswith(
        e.start.strftime("%Y/%m/%d") + "/freepbx-named-recording.wav"
    )
    assert receiver.rejects() == []


async def test_check_command_describes_the_freepbx_plan(
    make_pbx_db: Callable[..., Awaitable[Any]], tmp_path: Path
) -> None:
    """`sipstack-agent check` (the real command) on FreePBX's MariaDB tables."""
    pbx = await make_pbx_db("mysql", freepbx=True)
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith(("DB_", "CEL_", "CDR_"))},
        **agent_env(api_url="http://127.0.0.1:9/x", state_dir=str(tmp_path / "s"),
                    db=db_env(pbx.settings), api_key=API_KEY,
                    extra={"CDR_MAX_CALL_DURATION": "18000"}),
    }  # fmt: skip
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "sipstack_agent.cli", "check", "--no-api", env=env, cwd=tmp_path,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
    )  # fmt: skip
    out = (await asyncio.wait_for(proc.communicate(), 60))[0].decode()
    (line,) = [ln for ln in out.splitlines() if "cdr reading" in ln]
    assert line.startswith("OK ") and "FreePBX/Issabel layout" in line, out
    assert "CDR_MAX_CALL_DURATION=18000 s" in line and "uniqueid IN (...)" in line
    assert "recordingfile" in line and "did -> dnid" in line


@pytest.mark.parametrize("dialect", ["mysql", "postgresql", "sqlite"])
async def test_cdr_only_three_hour_call_written_at_hangup_ships(
    dialect: str, make_pbx_db: Callable[..., Awaitable[Any]], receiver: Receiver, tmp_path: Path
) -> None:
    """CDR only (CEL_MODE empty), look-back 20 s: the row of a 3 h call, written when it
    hangs up, ships; FreePBX's did / cnam say what the row's own columns do not."""
    pbx = await make_pbx_db(dialect, freepbx=True)
    state = tmp_path / "state"
    agent = start_agent(pbx.settings, receiver.calls_url, state, START_FROM="latest",
                        CEL_MODE="", POLL_LOOKBACK_SECONDS="20")  # fmt: skip
    lid = "1796000000.7"
    try:
        await wait_anchored(agent, state, ("cdr",))
        start = datetime.now(UTC).replace(microsecond=0) - timedelta(hours=3)
        await pbx.writer.insert_cdr(
            [
                {
                    "calldate": start, "clid": "", "src": "6135550100", "dst": "s",
                    "dcontext": "from-trunk", "channel": "PJSIP/trunk-00000007",
                    "dstchannel": "PJSIP/101-00000008", "lastapp": "Dial",
                    "lastdata": "PJSIP/101,,tr", "duration": 3 * 3600, "billsec": 3 * 3600 - 6,
                    "disposition": "ANSWERED", "amaflags": 3, "uniqueid": lid, "linkedid": lid,
                    "sequence": 7, "did": "6135550199", "cnum": "6135550100",
                    "cnam": "ACME Corp", "recordingfile": "",
                }
            ]
        )  # fmt: skip
        assert await wait_until(lambda: receiver.latest_complete(lid) is not None, 60), (
            agent.log_tail()
        )
    finally:
        assert await asyncio.to_thread(agent.terminate, 15) == 0
    doc = receiver.latest_complete(lid)
    assert doc is not None and cdr_threads(doc) == 1
    assert doc["billsec"] == 3 * 3600 - 6 and doc["duration_seconds"] == 3 * 3600
    assert doc["dnid"] == "6135550199" and doc["src_name"] == "ACME Corp"
    assert doc["direction"] == "i"
    assert receiver.rejects() == []
