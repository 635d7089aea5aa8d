"""fake_agent.py answers /status in the real agent's shape: checked against a real
agent (sipstack_agent.app.Agent on a simulated SQLite PBX, shipping to the local
receiver), and the operator reads the backlog of both the same way."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import jsonschema
from sipstack_agent.app import Agent
from sipstack_agent.config import load_settings
from sipstack_agent.receiver import Receiver
from sipstack_agent.sim.timeline import timeline
from sipstack_agent.sim.traffic import TrafficGenerator
from sipstack_agent.sim.writers import create_sqlite_pbx, write_sqlite
from sipstack_operator import status as st

from .fake_agent import agent_status_doc

KEY = "sk_" + "f" * 32


async def real_status(tmp_path: Path) -> dict[str, Any]:
    receiver = Receiver(tmp_path / "recv.db", api_key=KEY)
    await receiver.start("127.0.0.1", 0)
    pbx = tmp_path / "asterisk.db"
    create_sqlite_pbx(str(pbx))
    start = datetime.now(UTC) - timedelta(minutes=30)
    calls = TrafficGenerator(8, start=start).calls(5, rate=2, start=start)
    write_sqlite(str(pbx), timeline(calls))
    settings = load_settings(
        {
            "API_KEY": KEY,
            "API_URL": receiver.calls_url,
            "DB_TYPE": "sqlite",
            "DB_NAME": str(pbx),
            "CEL_MODE": "db",
            "STATE_DIR": str(tmp_path / "state"),
            "START_FROM": "beginning",
            "CDR_POLL_INTERVAL": "0.2",
            "MONITORING_PORT": "0",
        }
    )
    agent = Agent(settings)
    stop = asyncio.Event()
    task = asyncio.create_task(agent.run(stop))
    try:
        for _ in range(600):
            if receiver.count_complete_calls() >= len(calls):
                break
            await asyncio.sleep(0.05)
        # What health.py's /status answers: the version, then Agent.status().
        return {"version": settings.identity.version, **await agent.status()}
    finally:
        stop.set()
        await asyncio.wait_for(task, 15)
        await receiver.stop()


async def test_the_fake_has_the_real_agents_shape(tmp_path: Path) -> None:
    real = await real_status(tmp_path)
    fake = agent_status_doc("telephony/pbx-east", 3)
    validator = jsonschema.Draft202012Validator(st.agent_status_schema())
    validator.validate(real)  # the real agent and the fake follow the one schema
    validator.validate(fake)
    assert isinstance(real["backlog"]["outbox_depth"], int)
    # The operator's reading (drain and status timer) of both.
    assert st.agent_fields(real)["backlog"] == real["backlog"]["outbox_depth"]
    assert st.agent_fields(fake)["backlog"] == 3
