"""The real agent process with its STATE_DIR on a real 8 MiB tmpfs that runs full, and
with a state.db whose pages were overwritten with garbage, against a real PBX database."""

from __future__ import annotations

import asyncio
import json
import os
import sqlite3
import stat
import urllib.error
import urllib.request
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest
from sipstack_agent.demo import AgentProcess, agent_env
from sipstack_agent.receiver import Receiver
from sipstack_agent.sim.timeline import SimCall, timeline
from sipstack_agent.sim.traffic import TrafficGenerator
from sipstack_agent.statefaults import DISK_FULL_PROBLEM

from .helpers import (
    API_KEY,
    all_complete,
    assert_keys_across_rebuild,
    assert_revisions_once,
    db_env,
    free_port,
    runs,
    wait_until,
    write_calls,
)
from .test_e2e import receiver

if TYPE_CHECKING:
    from ..support.smallfs import SmallFs

pytestmark = pytest.mark.timeout(240)
__all__ = ["receiver"]


def calls_at(n: int, seed: int, hours_ago: float) -> list[SimCall]:
    start = datetime.now(UTC) - timedelta(hours=hours_ago)
    gen = TrafficGenerator(seed, start=start, ring=(0.5, 3), talk=(1, 20))
    return gen.calls(n, rate=5.0, start=start)


def agent(pbx: Any, url: str, state: Path, log: Path, port: int, **extra: str) -> AgentProcess:
    env = agent_env(
        api_url=url,
        state_dir=str(state),
        db=db_env(pbx.settings),
        api_key=API_KEY,
        extra={"CONNECTOR_ID": "e2e", "CDR_POLL_INTERVAL": "0.3", "LOG_LEVEL": "INFO",
               "MONITORING_PORT": str(port), "MONITORING_HOST": "127.0.0.1", **extra},
    )  # fmt: skip
    proc = AgentProcess(env, log)  # the log outside STATE_DIR: it must not fill up too
    proc.start()
    return proc


def readyz(port: int) -> tuple[int, list[str]]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=3) as r:
            return r.status, json.loads(r.read())["reasons"]
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read())["reasons"]
    except OSError:
        return 0, []


def metric(port: int, name: str) -> float | None:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=3) as r:
            text = r.read().decode()
    except OSError:
        return None
    for line in text.splitlines():
        if line.startswith(name + " ") or line.startswith(name + "{"):
            return float(line.rsplit(" ", 1)[1])
    return None


async def test_state_disk_full_pauses_reading_and_every_call_arrives(
    make_pbx_db: Callable[..., Awaitable[Any]],
    receiver: Receiver,
    small_fs: SmallFs,
    tmp_path: Path,
) -> None:
    pbx = await make_pbx_db("postgresql")
    first, second = calls_at(20, seed=41, hours_ago=2), calls_at(150, seed=42, hours_ago=1)
    await write_calls(pbx.writer, first)
    state, port = small_fs.path / "state", free_port()
    # SQLite's own SQLITE_FULL, with no reserve in the way (a disk another process
    # filled; the reserve's own path: test_state_full_outbox_e2e.py)
    log = tmp_path / "agent.log"
    proc = agent(pbx, receiver.calls_url, state, log, port, STATE_MIN_FREE_MB="0")
    try:
        assert await wait_until(all_complete(receiver, first, state_dir=state), 90), proc.log_tail()
        filler = await asyncio.to_thread(small_fs.fill)
        await write_calls(pbx.writer, second)

        def full() -> bool:
            code, reasons = readyz(port)
            return code == 503 and DISK_FULL_PROBLEM in reasons

        assert await wait_until(full, 60), (readyz(port), proc.log_tail())
        assert metric(port, "sipstack_state_disk_full") == 1.0
        log_text = (tmp_path / "agent.log").read_text()
        assert "state disk full" in log_text and "database unavailable" not in log_text
        assert proc.alive()

        filler.unlink()  # space is back: reading resumes, nothing was lost
        done = all_complete(receiver, first + second, state_dir=state)
        assert await wait_until(done, 120), proc.log_tail()
        assert metric(port, "sipstack_state_disk_full") == 0.0
        assert "state disk has space again" in (tmp_path / "agent.log").read_text()
    finally:
        rc = await asyncio.to_thread(proc.terminate, 15)
    assert rc == 0, proc.log_tail()
    assert_revisions_once(receiver)
    assert receiver.rejects() == []


async def test_agent_started_on_a_full_state_disk_waits_instead_of_crash_looping(
    make_pbx_db: Callable[..., Awaitable[Any]],
    receiver: Receiver,
    small_fs: SmallFs,
    tmp_path: Path,
) -> None:
    pbx = await make_pbx_db("sqlite")
    calls = calls_at(20, seed=61, hours_ago=1)
    await write_calls(pbx.writer, calls)
    state = small_fs.path / "state"
    state.mkdir()
    filler = await asyncio.to_thread(small_fs.fill)
    log = tmp_path / "agent.log"
    proc = agent(pbx, receiver.calls_url, state, log, free_port())
    try:
        waiting = await wait_until(lambda: "state disk full" in log.read_text(), 30)
        assert waiting, proc.log_tail()
        assert proc.alive()  # it waits, it does not exit (and restart, and exit...)
        filler.unlink()
        assert await wait_until(all_complete(receiver, calls, state_dir=state), 90), proc.log_tail()
    finally:
        rc = await asyncio.to_thread(proc.terminate, 15)
    assert rc == 0, proc.log_tail()
    assert_revisions_once(receiver)


def garble(path: Path) -> None:
    """Random bytes over pages 2-4 of the real state file (the header page kept)."""
    page = sqlite3.connect(path).execute("PRAGMA page_size").fetchone()[0]
    with open(path, "r+b") as f:
        f.seek(page)
        f.write(os.urandom(3 * page))


async def test_corrupt_state_file_is_quarantined_and_calls_are_read_again(
    make_pbx_db: Callable[..., Awaitable[Any]], receiver: Receiver, tmp_path: Path
) -> None:
    pbx = await make_pbx_db("postgresql")
    first, second = calls_at(40, seed=51, hours_ago=3), calls_at(30, seed=52, hours_ago=2)
    await write_calls(pbx.writer, first)
    state, port = tmp_path / "state", free_port()
    proc = agent(pbx, receiver.calls_url, state, tmp_path / "agent.log", port)
    try:
        assert await wait_until(all_complete(receiver, first, state_dir=state), 90), proc.log_tail()
    finally:
        assert await asyncio.to_thread(proc.terminate, 15) == 0, proc.log_tail()
    garble(state / "state.db")
    await write_calls(pbx.writer, second)  # written while the agent is down

    proc = agent(pbx, receiver.calls_url, state, tmp_path / "agent2.log", port)
    try:
        done = all_complete(receiver, first + second, state_dir=state)
        assert await wait_until(done, 120), proc.log_tail()
        assert metric(port, "sipstack_state_quarantined_total") == 1.0
    finally:
        assert await asyncio.to_thread(proc.terminate, 15) == 0, proc.log_tail()
    log_text = (tmp_path / "agent2.log").read_text()
    assert "state file corrupt: moved to" in log_text, log_text[-3000:]
    moved = [p for p in state.iterdir() if p.name.startswith("state.db.corrupt-")]
    assert moved and all(stat.S_IMODE(p.stat().st_mode) == 0o600 for p in moved)
    # every call read again from the PBX arrives again under a key above the rebuilt
    # store's floor: none the old file may have used
    floor = rebuilt_floor(state)
    assert {r["linkedid"] for r in receiver.receipts() if r["revision"] > floor} >= {
        c.expected.linkedid for c in first
    }
    assert_keys_across_rebuild(receiver, floor)


def rebuilt_floor(state: Path) -> int:
    """The revision floor the rebuild took (state/floor.py), beside the state file."""
    return int((state / "state.db.floor").read_text())


async def write_rows(writer: Any, calls: list[SimCall], kind: str) -> None:
    """Only the CDR (or only the CEL) rows of `calls`, in commit order."""
    for k, rows in runs(timeline(calls)):
        if k == kind:
            await (writer.insert_cel(rows) if kind == "cel" else writer.insert_cdr(rows))


async def test_a_partial_revision_1_is_not_kept_after_a_rebuild(
    make_pbx_db: Callable[..., Awaitable[Any]], receiver: Receiver, tmp_path: Path
) -> None:
    """Revision 1 of every call was delivered with CDR rows only (the CEL table written
    later); the file breaks, the restart rebuilds and reads both tables again: the full
    document arrives under a new key, not as a replay of revision 1 (which the API would
    drop, keeping the partial one), and no key is ever sent with two contents."""
    pbx = await make_pbx_db("postgresql")
    calls = calls_at(25, seed=81, hours_ago=2)
    await write_rows(pbx.writer, calls, "cdr")
    state, port = tmp_path / "state", free_port()
    proc = agent(pbx, receiver.calls_url, state, tmp_path / "agent.log", port, CEL_MODE="none")
    try:
        partial = all_complete(receiver, calls, cel=False, state_dir=state)
        assert await wait_until(partial, 90), proc.log_tail()
    finally:
        assert await asyncio.to_thread(proc.terminate, 15) == 0, proc.log_tail()
    docs = receiver.latest_complete_all()
    assert all(
        t["event"] == "CDR" for c in calls for t in docs[c.expected.linkedid]["call_threads"]
    )
    assert_revisions_once(receiver)
    await write_rows(pbx.writer, calls, "cel")
    garble(state / "state.db")

    proc = agent(pbx, receiver.calls_url, state, tmp_path / "agent2.log", port)
    try:
        done = all_complete(receiver, calls, state_dir=state)  # with their CEL events
        assert await wait_until(done, 120), proc.log_tail()
    finally:
        assert await asyncio.to_thread(proc.terminate, 15) == 0, proc.log_tail()
    floor = rebuilt_floor(state)
    latest = receiver.latest_complete_all()
    assert all(latest[c.expected.linkedid]["revision"] > floor for c in calls)
    assert_keys_across_rebuild(receiver, floor)


def garble_while_open(path: Path) -> None:
    """Random bytes over the root page of the call groups (`links`) of a running agent's
    state file (after a checkpoint, so no newer copy of it sits in the WAL), then one write
    from this connection: the agent's next transaction drops its page cache and reads the
    garbage, as it would read a page the disk lost. Every ingest of new rows reads that
    page before it commits, so whichever source reads the next calls finds it."""
    with sqlite3.connect(path, timeout=10) as c:
        c.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        page = c.execute("PRAGMA page_size").fetchone()[0]
        sql = "SELECT rootpage FROM sqlite_master WHERE name = 'links'"
        (root,) = c.execute(sql).fetchone()
    with open(path, "r+b") as f:
        f.seek((root - 1) * page)
        f.write(os.urandom(page))
    with sqlite3.connect(path, timeout=10) as c:
        c.execute("INSERT INTO positions (name, value, updated_at) VALUES ('e2e', '{}', 0)")


async def test_a_page_that_breaks_at_runtime_stops_the_agent_and_the_restart_recovers(
    make_pbx_db: Callable[..., Awaitable[Any]], receiver: Receiver, tmp_path: Path
) -> None:
    """Not a stage restarting in a loop against the broken file: one CRITICAL line, exit
    code 1 (the pod restarts), and the next start quarantines the file and reads the PBX
    tables again: every call arrives."""
    pbx = await make_pbx_db("postgresql")
    first, second = calls_at(30, seed=71, hours_ago=3), calls_at(30, seed=72, hours_ago=2)
    await write_calls(pbx.writer, first)
    state, port = tmp_path / "state", free_port()
    log = tmp_path / "agent.log"
    proc = agent(pbx, receiver.calls_url, state, log, port)
    try:
        assert await wait_until(all_complete(receiver, first, state_dir=state), 90), proc.log_tail()
        await asyncio.to_thread(garble_while_open, state / "state.db")
        await write_calls(pbx.writer, second)  # the agent reads them into the broken file
        assert await wait_until(lambda: not proc.alive(), 60), proc.log_tail()
    finally:
        rc = await asyncio.to_thread(proc.terminate, 15)
    assert rc == 1, proc.log_tail()
    text = log.read_text()
    assert text.count("The agent stops (exit code 1)") == 1, text[-3000:]
    assert "restarting in" not in text, text[-3000:]
    assert (state / "state.db.corrupt").exists()

    proc = agent(pbx, receiver.calls_url, state, tmp_path / "agent2.log", port)
    try:
        done = all_complete(receiver, first + second, state_dir=state)
        assert await wait_until(done, 120), proc.log_tail()
        assert metric(port, "sipstack_state_quarantined_total") == 1.0
    finally:
        assert await asyncio.to_thread(proc.terminate, 15) == 0, proc.log_tail()
    assert "state file corrupt: moved to" in (tmp_path / "agent2.log").read_text()
    assert not (state / "state.db.corrupt").exists()
    assert_keys_across_rebuild(receiver, rebuilt_floor(state))
