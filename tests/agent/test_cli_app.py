"""app.Agent in-process: wiring, supervision (a failing stage restarts, supervisor.py), a call whose
evaluation raises is parked and the rest flows, status/readiness, graceful stop."""

from __future__ import annotations

import asyncio
import logging
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import jsonschema
import pytest
from sipstack_agent import evaluator as evaluator_mod
from sipstack_agent.app import Agent
from sipstack_agent.config import load_settings
from sipstack_agent.receiver import Receiver
from sipstack_agent.sim.timeline import timeline
from sipstack_agent.sim.traffic import TrafficGenerator
from sipstack_agent.sim.writers import create_sqlite_pbx, write_sqlite
from sipstack_agent.supervisor import StageState

KEY = "sk_" + "e" * 32


@pytest.fixture
async def receiver(tmp_path: Path) -> Any:
    r = Receiver(tmp_path / "recv.db", api_key=KEY)
    await r.start("127.0.0.1", 0)
    yield r
    await r.stop()


def settings_for(pbx: Path, url: str, tmp_path: Path, **extra: str) -> Any:
    env = {
        "API_KEY": KEY,
        "API_URL": url,
        "DB_TYPE": "sqlite",
        "DB_NAME": str(pbx),
        "CEL_MODE": "db",
        "STATE_DIR": str(tmp_path / "state"),
        "START_FROM": "beginning",
        "CDR_POLL_INTERVAL": "0.2",
        "MONITORING_PORT": "0",
        "RECORDING_PATHS": str(tmp_path),
        **extra,
    }
    return load_settings(env)


def make_pbx(tmp_path: Path, n: int = 20) -> tuple[Path, list[Any]]:
    pbx = tmp_path / "asterisk.db"
    create_sqlite_pbx(str(pbx))
    start = datetime.now(UTC) - timedelta(minutes=30)
    calls = TrafficGenerator(8, start=start).calls(n, rate=2, start=start)
    write_sqlite(str(pbx), timeline(calls))
    return pbx, calls


async def wait_for(pred: Any, timeout: float) -> bool:
    deadline = asyncio.get_running_loop().time() + timeout
    while asyncio.get_running_loop().time() < deadline:
        if pred():
            return True
        await asyncio.sleep(0.05)
    return bool(pred())


async def test_agent_in_process_ships_all_and_stops(tmp_path: Path, receiver: Receiver) -> None:
    pbx, calls = make_pbx(tmp_path)
    agent = Agent(settings_for(pbx, receiver.calls_url, tmp_path))
    stop = asyncio.Event()
    task = asyncio.create_task(agent.run(stop))
    try:
        assert await wait_for(lambda: receiver.count_complete_calls() >= len(calls), 30)
        status = await agent.status()
        assert {"stages", "checkpoints", "backlog", "shipper"} <= set(status)
        assert set(status["stages"]) >= {"source:cdr", "source:cel", "evaluator", "shipper"}
        ok, problems = await agent.ready()
        assert ok, problems
        assert agent.metrics.linkedid_end_seen._value.get() == 1
    finally:
        stop.set()
        await asyncio.wait_for(task, 15)


async def test_failing_evaluation_is_parked_and_the_rest_flows(
    tmp_path: Path, receiver: Receiver, monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:  # fmt: skip
    pbx, calls = make_pbx(tmp_path)
    bad = calls[3].expected.linkedid
    real = evaluator_mod.evaluate

    def flaky(*args: Any, **kw: Any) -> Any:
        if kw["call_key"] == bad:
            raise RuntimeError("boom")
        return real(*args, **kw)

    monkeypatch.setattr(evaluator_mod, "evaluate", flaky)
    agent = Agent(settings_for(pbx, receiver.calls_url, tmp_path))
    stop = asyncio.Event()
    task = asyncio.create_task(agent.run(stop))
    try:
        assert await wait_for(lambda: receiver.count_complete_calls() >= len(calls) - 1, 30)
        await asyncio.sleep(0.5)
        assert bad not in receiver.linkedids()
        # parked for 60 s (re-evaluated only when more of its rows arrive), no hot loop
        assert 1 <= agent.evaluation_errors <= 3
    finally:
        stop.set()
        await asyncio.wait_for(task, 15)
    assert any("evaluating call" in r.message for r in caplog.records)


async def test_supervisor_restarts_a_failing_stage(caplog: pytest.LogCaptureFixture) -> None:
    agent = Agent(load_settings({"API_KEY": KEY, "DB_TYPE": "sqlite", "DB_NAME": "/x"}))
    runs = 0
    stop = asyncio.Event()

    async def stage() -> None:
        nonlocal runs
        runs += 1
        if runs == 1:
            raise ValueError("first run fails")
        await stop.wait()

    st = StageState("demo-stage")
    caplog.set_level(logging.ERROR)
    task = asyncio.create_task(agent.supervisor.supervise(st, stage, stop))
    assert await wait_for(lambda: runs == 2, 5)
    assert st.restarts == 1 and st.running and "first run fails" in (st.last_error or "")
    assert any("stage demo-stage failed" in r.message for r in caplog.records)
    stop.set()
    await asyncio.wait_for(task, 5)


async def test_unreachable_database_keeps_running_not_ready(
    tmp_path: Path, receiver: Receiver
) -> None:
    s = load_settings(
        {
            "API_KEY": KEY,
            "API_URL": receiver.calls_url,
            "DB_TYPE": "postgresql",
            "DB_HOST": "127.0.0.1",
            "DB_PORT": "9",
            "DB_NAME": "nope",
            "CEL_MODE": "db",
            "STATE_DIR": str(tmp_path / "state"),
            "MONITORING_PORT": "0",
            "DB_CONNECT_TIMEOUT": "1",
        }
    )
    agent = Agent(s)
    stop = asyncio.Event()
    task = asyncio.create_task(agent.run(stop))
    try:
        await asyncio.sleep(1.5)
        assert not task.done()
        ok, problems = await agent.ready()
        assert not ok and any("not connected" in p for p in problems), problems
    finally:
        stop.set()
        await asyncio.wait_for(task, 15)


async def test_recording_uploader_is_a_supervised_stage_in_status_and_readiness(
    tmp_path: Path, receiver: Receiver, monkeypatch: pytest.MonkeyPatch
) -> None:
    """RECORDING_UPLOAD=true: the outbox's recording worker runs as a stage of its own;
    its state is in /status, and a failing worker is restarted and makes the agent not
    ready (it used to be a task of the recordings stage that nothing reported)."""
    from sipstack_agent.shipping import RecordingShipper
    from sipstack_agent.status_schema import AGENT_STATUS_SCHEMA

    pbx, calls = make_pbx(tmp_path, n=4)
    agent = Agent(settings_for(pbx, receiver.calls_url, tmp_path, RECORDING_UPLOAD="true"))
    stop = asyncio.Event()
    task = asyncio.create_task(agent.run(stop))
    try:
        assert await wait_for(lambda: receiver.count_complete_calls() >= len(calls), 30)
        status = await agent.status()
        jsonschema.Draft202012Validator(AGENT_STATUS_SCHEMA).validate(status)
        assert status["stages"]["recording_uploader"]["running"] is True
        assert status["recording_uploader"]["url"] == receiver.recording_url
        assert status["recording_uploader"]["auth_failed"] is False
        assert not any(name.startswith("recordings") for name in status["checkpoints"])
    finally:
        stop.set()
        await asyncio.wait_for(task, 15)

    async def broken(self: RecordingShipper, stop: asyncio.Event) -> None:
        raise OSError("uploader broke")

    monkeypatch.setattr(RecordingShipper, "run", broken)
    agent = Agent(settings_for(pbx, receiver.calls_url, tmp_path, RECORDING_UPLOAD="true"))
    stop = asyncio.Event()
    task = asyncio.create_task(agent.run(stop))
    try:
        stage = "stage recording_uploader restarting: OSError: uploader broke"
        assert await wait_for(lambda: stage in agent.report.readiness_problems(), 10)
        ok, problems = await agent.ready()
        assert not ok and stage in problems
        assert (await agent.status())["stages"]["recording_uploader"]["restarts"] >= 1
    finally:
        stop.set()
        await asyncio.wait_for(task, 15)
