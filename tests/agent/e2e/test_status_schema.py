"""The real agent's GET /status, read over HTTP, follows
schemas/agent_status.v1.schema.json while it ships, while the API answers
500 or 401, and while the API is gone."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import aiohttp
import jsonschema
import pytest
from sipstack_agent.receiver import Receiver
from sipstack_agent.sim.timeline import SimCall
from sipstack_agent.sim.traffic import TrafficGenerator
from sipstack_agent.status_schema import AGENT_STATUS_SCHEMA, STATUS_SCHEMA_VERSION

from .helpers import API_KEY, all_complete, free_port, play_calls, start_agent, wait_until

pytestmark = pytest.mark.timeout(180)

VALIDATOR = jsonschema.Draft202012Validator(
    AGENT_STATUS_SCHEMA, format_checker=jsonschema.Draft202012Validator.FORMAT_CHECKER
)


def live_calls(n: int, seed: int) -> list[SimCall]:
    start = datetime.now(UTC) + timedelta(seconds=0.3)
    gen = TrafficGenerator(seed, start=start, ring=(0.2, 0.6), talk=(0.3, 1.5))
    return gen.calls(n, rate=5.0, start=start)


class StatusReader:
    """GETs /status, validates every answer against the schema, keeps the last one."""

    def __init__(self, session: aiohttp.ClientSession, url: str) -> None:
        self.session = session
        self.url = url
        self.last: dict[str, Any] = {}
        self.seen = 0

    async def read(self) -> dict[str, Any]:
        async with self.session.get(self.url) as resp:
            assert resp.status == 200, await resp.text()
            doc = await resp.json()
        VALIDATOR.validate(doc)
        self.last = doc
        self.seen += 1
        return doc

    async def until(self, pred: Callable[[dict[str, Any]], bool], timeout: float) -> bool:
        deadline = asyncio.get_running_loop().time() + timeout
        while asyncio.get_running_loop().time() < deadline:
            try:
                if pred(await self.read()):
                    return True
            except aiohttp.ClientConnectionError:
                pass  # not listening yet
            await asyncio.sleep(0.2)
        return False


async def test_status_follows_its_schema_healthy_and_failing(
    make_pbx_db: Callable[..., Awaitable[Any]], tmp_path: Path
) -> None:
    pbx = await make_pbx_db("sqlite")
    receiver = Receiver(tmp_path / "receiver.db", api_key=API_KEY)
    await receiver.start("127.0.0.1", 0)
    port = free_port()
    state = tmp_path / "state"
    agent = start_agent(
        pbx.settings,
        receiver.calls_url,
        state,
        MONITORING_PORT=str(port),
        MONITORING_HOST="127.0.0.1",
        START_FROM="latest",
        CALL_IDLE_TIMEOUT="3",
    )

    async def write_live(n: int, seed: int) -> list[SimCall]:
        calls = live_calls(n, seed)
        await play_calls(pbx.writer, calls)
        return calls

    try:
        async with aiohttp.ClientSession() as http:
            status = StatusReader(http, f"http://127.0.0.1:{port}/status")
            assert await status.until(lambda d: "shipper" in d, 30), agent.log_tail()
            assert status.last["schema_version"] == STATUS_SCHEMA_VERSION == 1
            assert status.last["shipper"]["last_success_at"] is None

            # Healthy: calls written live are shipped; the backlog drains.
            calls = await write_live(8, seed=81)
            assert await wait_until(all_complete(receiver, calls), 60), agent.log_tail()
            assert await status.until(
                lambda d: (
                    d["backlog"]["outbox_depth"] == 0
                    and d["shipper"]["last_success_at"] is not None
                ),
                30,
            )
            healthy = status.last
            assert healthy["shipper"]["last_error"] is None
            assert healthy["shipper"]["delivered"] >= len(calls)
            assert healthy["ready_problems"] == []
            assert set(healthy["stages"]) >= {"evaluator", "shipper"}
            assert healthy["checkpoints"], "the CDR source saved its position"

            # The API fails: 500, then 401, then it is gone.
            receiver.set_faults(fail_status=500)
            await write_live(3, seed=82)
            assert await status.until(
                lambda d: (d["shipper"]["last_error"] or "").startswith("HTTP 500"), 30
            ), agent.log_tail()
            assert status.last["backlog"]["outbox_depth"] > 0
            assert status.last["shipper"]["retried"] > 0

            receiver.set_faults(fail_status=401)
            assert await status.until(lambda d: d["shipper"]["auth_failed"], 60), agent.log_tail()
            assert status.last["shipper"]["last_error"].startswith("HTTP 401")
            assert any("api key rejected" in p for p in status.last["ready_problems"])
            assert API_KEY not in str(status.last)

            await receiver.stop()
            await write_live(1, seed=83)
            assert await status.until(
                lambda d: not (d["shipper"]["last_error"] or "").startswith("HTTP"), 60
            ), agent.log_tail()
            assert status.last["backlog"]["outbox_depth"] > 0
            assert status.seen > 5
    finally:
        await asyncio.to_thread(agent.terminate, 15)
        await receiver.stop()
